"""Helpers shared by the conversion modules of :mod:`refmask.convert` (not public)."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from ..masks import Mask

POLARITY_HINT = "refmask never guesses the polarity of 0/1 or float masks"


def as_array(x: Any) -> tuple[Any, Any]:
    """``(array, xp)``: xp is None for NumPy (lists and scalars become NumPy arrays)."""
    if isinstance(x, (np.ndarray, np.generic)) or not array_api_compat.is_array_api_obj(x):
        return np.asarray(x), None
    return x, array_api_compat.array_namespace(x)


def first_index(bad: np.ndarray) -> tuple[int, ...]:
    """The index of the first True of ``bad`` (row-major), as Python ints."""
    return tuple(int(v) for v in np.argwhere(bad)[0])


def check_mask(where: str, mask: Any) -> Mask:
    """``mask`` must be a refmask Mask (a dense array is refused here)."""
    if not isinstance(mask, Mask):
        raise TypeError(f"{where}: mask must be a refmask Mask, got {type(mask).__name__}")
    return mask


def check_mask_sizes(where: str, mask: Mask, batch: int, heads: int) -> None:
    """A mask built for a fixed batch size or head count must be asked for exactly those."""
    if mask.batch_size is not None and mask.batch_size != batch:
        raise ValueError(f"{where}: mask is defined for batch size {mask.batch_size}, got "
                         f"batch={batch}")
    if mask.num_heads is not None and mask.num_heads != heads:
        raise ValueError(f"{where}: mask is defined for {mask.num_heads} heads, got "
                         f"heads={heads}")
