"""What the Keras adapters share: loading Keras 3 on TensorFlow, layouts, the additive bias,
and the split of a case's mask into switchable parts and a dense rest.

Keras is imported only by :func:`load_keras`. If keras has not been imported yet, the
TensorFlow backend is selected with ``KERAS_BACKEND=tensorflow`` (and TensorFlow's C++ info
logging is quietened with ``TF_CPP_MIN_LOG_LEVEL=2``), both only when unset; a Keras already
running on another backend makes these adapters unavailable rather than silently checking
that backend.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from refmask.case import Case


INSTALL_HINT = "pip install 'refmask[tf]'"
BACKEND = "tensorflow"


def load_keras() -> ModuleType:
    """The keras module, on the TensorFlow backend (raises ImportError when missing)."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", BACKEND)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def unavailable() -> str | None:
    """Why Keras 3 on TensorFlow cannot run here, or None."""
    try:
        import tensorflow  # noqa: F401

        keras = load_keras()
    except ImportError as error:
        return f"tensorflow/keras are not installed ({INSTALL_HINT}): {error}"
    if not keras.__version__.startswith("3"):
        return f"keras {keras.__version__} is not Keras 3 ({INSTALL_HINT})"
    backend = keras.backend.backend()
    if backend != BACKEND:
        return (f"keras runs on the {backend} backend; these adapters check Keras 3 on "
                f"TensorFlow (set KERAS_BACKEND=tensorflow before importing keras)")
    return None


def to_bthd(case: Case, x: np.ndarray) -> np.ndarray:
    """A case tensor in Keras' (B, T, H, D) order."""
    return x if case.layout == "BTHD" else np.swapaxes(x, 1, 2)


def bthd_to_bhtd(x: Any) -> np.ndarray:
    """A (B, T, H, D) result as float64 (B, H, T, D)."""
    return np.swapaxes(np.asarray(x, dtype=np.float64), 1, 2)


def unsupported_common(case: Case, backend: str) -> str | None:
    """Score features no Keras attention here has (checked against keras 3.15.1)."""
    if case.softcap is not None:
        return (f"{backend}: attn_logits_soft_cap is only supported by Keras on JAX/TPU "
                "(keras/src/ops/nn.py raises otherwise)")
    if case.sinks:
        return f"{backend} has no attention sinks"
    if case.dropout_rate is not None:
        return f"{backend} takes no given dropout mask (its dropout draws its own)"
    return None
