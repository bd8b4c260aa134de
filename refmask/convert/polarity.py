"""(a)/(b) Dense keep <-> dense drop: the two polarities of a bool mask.

| representation | who uses it |
|---|---|
| dense bool keep (B, H, Tq, Tk), True = attend | SDPA, flex create_mask, JAX, Keras, ONNX |
| dense bool drop, True = NOT allowed | torch ``nn.MultiheadAttention`` |

``drop = NOT keep``. Any array-API array in (NumPy, torch, JAX, ``array_api_strict``), an array
of the same namespace out; 0/1 integer and float masks are refused (their polarity is a
convention refmask does not guess).
"""

from __future__ import annotations

import numpy as np

from .._typing import Array
from .._validate import check_bool_dtype
from ._common import POLARITY_HINT, as_array

__all__ = [
    "keep_to_drop",
    "drop_to_keep",
]


def keep_to_drop(keep: Array) -> Array:
    """Dense keep -> dense drop (``nn.MultiheadAttention`` polarity): ``drop = NOT keep``.

    keep: bool array of any shape, True = attend (any array-API namespace).
    Returns a bool array of the same shape and namespace, True = NOT allowed.
    """
    array, xp = as_array(keep)
    check_bool_dtype("keep_to_drop", "keep", array, xp, hint=POLARITY_HINT)
    return np.logical_not(array) if xp is None else xp.logical_not(array)


def drop_to_keep(drop: Array) -> Array:
    """Dense drop (``nn.MultiheadAttention``, True = NOT allowed) -> keep: ``keep = NOT drop``."""
    array, xp = as_array(drop)
    check_bool_dtype("drop_to_keep", "drop", array, xp, meaning="NOT allowed",
                     hint=POLARITY_HINT)
    return np.logical_not(array) if xp is None else xp.logical_not(array)
