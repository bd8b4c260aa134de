"""ONNX adapters: the ``Attention`` operator (opset 23 and 24) as a one-node model run by
onnxruntime on CPU. onnx and onnxruntime are imported only when an adapter runs."""

from .attention import make_adapter

ADAPTERS = (make_adapter(23), make_adapter(24))

__all__ = ["ADAPTERS"]
