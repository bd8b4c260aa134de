"""What the onnxruntime adapters share: availability, building the one-node ``Attention``
model, and the split of a case's mask into ONNX's native inputs.

onnx and onnxruntime are imported only inside these functions.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime


INSTALL_HINT = "pip install 'refmask[onnx]'"
IR_VERSION = 10  # the IR version of opsets 23/24 (onnx 1.18+)

#: case dtype -> onnx.TensorProto element type name
ELEMENT_TYPES = {"float64": "DOUBLE", "float32": "FLOAT", "float16": "FLOAT16",
                 "bfloat16": "BFLOAT16"}


def _import():
    import onnx
    import onnxruntime

    return onnx, onnxruntime


@functools.cache
def unavailable_for(opset: int) -> str | None:
    """Why onnxruntime cannot run ``Attention`` at ``opset`` here, or None (checked once by
    building and running a tiny float32 model)."""
    try:
        onnx, ort = _import()
    except ImportError as error:
        return f"onnx/onnxruntime are not installed ({INSTALL_HINT}): {error}"
    try:
        onnx.defs.get_schema("Attention", opset, "")
    except Exception as error:  # noqa: BLE001 - the message is the reason
        return f"onnx {onnx.__version__} has no Attention schema for opset {opset}: {error}"
    q = np.zeros((1, 1, 1, 1), np.float32)
    try:
        probe = session(opset, [("Q", "FLOAT"), ("K", "FLOAT"), ("V", "FLOAT")], {}, "FLOAT",
                        ("Y",))
        probe.run(None, {"Q": q, "K": q, "V": q})
    except Exception as error:  # noqa: BLE001
        return (f"onnxruntime {ort.__version__} cannot run Attention (opset {opset}) on "
                f"CPUExecutionProvider: {error}")
    return None


@functools.cache
def dtype_unsupported(opset: int, dtype: str) -> str | None:
    """Why onnxruntime cannot run Attention at ``opset`` in ``dtype`` on CPU (its
    NOT_IMPLEMENTED message for a plain Q/K/V model), or None."""
    import ml_dtypes  # noqa: F401 - bfloat16 numpy arrays

    from refmask.case import numpy_dtype

    element = ELEMENT_TYPES[dtype]
    x = np.zeros((1, 1, 1, 1), numpy_dtype(dtype))
    try:
        probe = session(opset, [("Q", element), ("K", element), ("V", element)], {}, element,
                        ("Y",))
        probe.run(None, {"Q": x, "K": x, "V": x})
    except Exception as error:  # noqa: BLE001
        if "NOT_IMPLEMENTED" in str(error):
            _, ort = _import()
            return (f"onnxruntime {ort.__version__} has no CPU implementation of Attention "
                    f"(opset {opset}) for {dtype}: {error}")
        raise
    return None


def session(opset: int, inputs: list, attributes: dict, element: str,
            outputs: tuple) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for a one-node ``Attention`` model.

    inputs: the node's inputs in order as ``(name, TensorProto type name)``, with ``("", None)``
    for an omitted optional input; element: the TensorProto type name of the outputs;
    outputs: the node's output names in order, "" for an omitted optional output.
    """
    onnx, ort = _import()
    from onnx import TensorProto, helper

    graph_inputs = [helper.make_tensor_value_info(name, getattr(TensorProto, kind), None)
                    for name, kind in inputs if name]
    node = helper.make_node("Attention", [name for name, _ in inputs], list(outputs),
                            **attributes)
    graph = helper.make_graph(
        [node], "refmask_attention", graph_inputs,
        [helper.make_tensor_value_info(name, getattr(TensorProto, element), None)
         for name in outputs if name])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


