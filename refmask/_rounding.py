"""Rounding float64 values to a case dtype once, correctly, on every machine.

``np.float64(x).astype(bfloat16)`` is not the same function in every ml_dtypes release: before
0.7 it converted through float32, rounding twice (x -> float32 -> bfloat16), so a value just
above a bfloat16 midpoint that float32 rounds *onto* the midpoint went to the even neighbour
instead of up; 0.7 rounds once. The golden inputs must be the same bits everywhere (spec 5.1:
"rounded once to the case dtype"), so refmask rounds float64 -> bfloat16 itself:

    y = round_to_nearest_even_bfloat16(x)     (one rounding of the exact x)

by way of f = float32(x) (exact or correctly rounded by NumPy) and the rule: if f is not a
bfloat16 midpoint, or f == x, round f to nearest even (the same as rounding x, since the two
roundings cannot disagree away from a midpoint); if f is a midpoint and f != x, round toward x
(away from zero when |x| > |f|, toward zero otherwise). NaN stays NaN (quiet, sign kept),
±inf and overflow give ±inf, subnormals follow the same rule (bfloat16's subnormal grid is a
subset of float32's). float16 and float32 use NumPy's conversion, which rounds once.
"""

from __future__ import annotations

import numpy as np


def round_float64(x, dtype: np.dtype) -> np.ndarray:
    """``x`` (float64, any shape) rounded once to nearest-even in ``dtype`` (a NumPy dtype:
    float64, float32, float16 or ml_dtypes' bfloat16)."""
    x = np.asarray(x, dtype=np.float64)
    dtype = np.dtype(dtype)
    if dtype.name != "bfloat16":
        return x.astype(dtype)
    with np.errstate(over="ignore"):  # beyond float32's range is beyond bfloat16's: inf
        f = x.astype(np.float32)
    bits = f.view(np.uint32).astype(np.uint64)
    nearest_even = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    on_midpoint = ((bits & 0xFFFF) == 0x8000) & (f.astype(np.float64) != x)
    toward_x = np.where(np.abs(x) > np.abs(f.astype(np.float64)), (bits >> 16) + 1, bits >> 16)
    out = np.where(on_midpoint, toward_x, nearest_even)
    out = np.where(np.isnan(x), (bits >> 16) | 0x7FC0, out)
    return out.astype(np.uint16).view(dtype)
