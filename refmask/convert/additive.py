"""(c) Dense keep <-> additive float masks (0 where kept, a negative fill where dropped).

| fill | who uses it |
|---|---|
| ``-inf`` | SDPA and ONNX float masks |
| ``finfo(dtype).min`` | HF eager, Flax |
| ``-1e9`` | Keras |
| ``-0.7 * finfo(dtype).max`` | JAX xla |

Any array-API array in, one of the same namespace out (ml_dtypes bfloat16 for NumPy). A fill
that overflows the dtype, NaN and ``+inf`` are errors, and a finite non-zero entry is a bias,
not a mask, unless ``threshold=`` says where "dropped" starts.
"""

from __future__ import annotations

import math
import numbers

import array_api_compat
import numpy as np

from .._typing import Array, DType
from .._validate import check_bool_dtype
from ._common import POLARITY_HINT, as_array, first_index

try:  # optional: bfloat16 (and the other ml_dtypes floats) for additive masks
    import ml_dtypes
except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
    ml_dtypes = None

__all__ = [
    "keep_to_additive",
    "additive_to_keep",
]


def _numpy_float_dtype(where: str, name: str, dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{where}: {name} must be a floating dtype, got {dtype!r}") from error
    if np.issubdtype(resolved, np.floating):
        return resolved
    if ml_dtypes is not None and resolved.kind == "V":
        try:
            ml_dtypes.finfo(resolved)
            return resolved
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{where}: {name} must be a floating dtype (float16, float32, float64 or "
                    f"ml_dtypes bfloat16), got {resolved}")


def _numpy_finfo(dtype: np.dtype):
    return np.finfo(dtype) if np.issubdtype(dtype, np.floating) else ml_dtypes.finfo(dtype)


def _fill_value(where: str, fill, dtype, finfo_min: float, cast) -> float:
    """The additive value for dropped pairs, checked to be negative and representable."""
    if isinstance(fill, str):
        if fill == "finfo_min":
            return float(finfo_min)
        if fill != "-inf":
            raise ValueError(f"{where}: fill must be '-inf', 'finfo_min' or a negative float, "
                             f"got {fill!r}")
        value = -math.inf
    elif isinstance(fill, (bool, np.bool_)) or not isinstance(fill, numbers.Real):
        raise TypeError(f"{where}: fill must be '-inf', 'finfo_min' or a negative float, got "
                        f"{fill!r} ({type(fill).__name__})")
    else:
        value = float(fill)
        if math.isnan(value) or value >= 0:
            raise ValueError(f"{where}: fill must be < 0 (a dropped key must lose score), got "
                             f"{fill!r}")
    stored = cast(value)
    if math.isinf(value) and not (math.isinf(stored) and stored < 0):
        raise ValueError(f"{where}: dtype {dtype} has no -inf (fill='-inf' becomes {stored}); "
                         "use fill='finfo_min'")
    if not math.isinf(value) and not math.isfinite(stored):
        raise ValueError(f"{where}: fill={fill!r} overflows {dtype} to {stored}; pass "
                         "fill='-inf' explicitly or a value >= finfo(dtype).min")
    return stored


def keep_to_additive(keep: Array, dtype: DType, fill: str | float = "-inf") -> Array:
    """Dense keep -> additive mask: ``additive = 0 where keep else fill``.

    keep: bool array, True = attend (any array-API namespace).
    dtype: the floating result dtype -- float16/32/64 or ml_dtypes bfloat16 for NumPy input,
    a dtype of the input's namespace otherwise.
    fill: ``"-inf"`` (SDPA, ONNX), ``"finfo_min"`` = ``finfo(dtype).min`` (HF eager, Flax), or a
    negative float such as ``-1e9`` (Keras) or ``-0.7 * finfo(dtype).max`` (JAX xla). A fill
    that overflows the dtype to -inf (``-1e9`` in float16) is an error, not a silent -inf.
    """
    where = "keep_to_additive"
    array, xp = as_array(keep)
    check_bool_dtype(where, "keep", array, xp, hint=POLARITY_HINT)
    if xp is None:
        resolved = _numpy_float_dtype(where, "dtype", dtype)

        def cast(value):
            with np.errstate(over="ignore"):
                return float(np.asarray(value, dtype=np.float64).astype(resolved))

        value = _fill_value(where, fill, resolved, _numpy_finfo(resolved).min, cast)
        out = np.full(array.shape, value, dtype=resolved)
        out[array] = 0
        return out
    if not xp.isdtype(dtype, "real floating"):
        raise TypeError(f"{where}: dtype must be a real floating dtype of the input's "
                        f"namespace, got {dtype!r}")
    device = array_api_compat.device(array)

    def cast(value):
        return float(xp.asarray(value, dtype=dtype, device=device))

    value = _fill_value(where, fill, dtype, xp.finfo(dtype).min, cast)
    return xp.where(array, xp.asarray(0, dtype=dtype, device=device),
                    xp.asarray(value, dtype=dtype, device=device))


def additive_to_keep(additive: Array, *, threshold: float | None = None) -> Array:
    """Additive mask -> dense keep.

    Without ``threshold`` (exact 0 / -inf masks): ``keep = (additive == 0)``, ``-inf`` is
    dropped, and any other finite value is an error -- "additive mask has finite non-zero
    entries, it is a bias not a mask" -- because a finite value changes the softmax instead
    of removing the key.

    With ``threshold`` (finite-fill masks): ``keep = (additive > threshold)``. The threshold
    must be < 0; pick one between the fill and the smallest genuine bias, e.g.
    ``finfo(dtype).min / 2`` for ``finfo.min`` masks (this also catches two summed ``finfo.min``
    masks, which are ``-inf`` or ``2 * finfo.min``), ``-1e8`` for Keras ``-1e9`` masks.

    NaN anywhere and ``+inf`` anywhere are errors (neither means "kept" or "dropped").
    additive: real floating array (any array-API namespace; ml_dtypes bfloat16 for NumPy).
    """
    where = "additive_to_keep"
    array, xp = as_array(additive)
    if xp is None:
        _numpy_float_dtype(where, "additive", array.dtype)
        ops = np
    else:
        if not xp.isdtype(array.dtype, "real floating"):
            raise TypeError(f"{where}: additive must hold real floats, got dtype {array.dtype}")
        ops = xp

    def report(bad) -> str:
        if xp is None:
            index = first_index(np.asarray(bad))
            return f" (e.g. {float(array[index])!r} at index {index})"
        return f" ({int(xp.sum(xp.astype(bad, xp.int64)))} entries)"

    nan = ops.isnan(array)
    if bool(ops.any(nan)):
        raise ValueError(f"{where}: additive holds NaN{report(nan)}; NaN is neither kept nor "
                         "dropped")
    posinf = ops.isinf(array) & (array > 0)
    if bool(ops.any(posinf)):
        raise ValueError(f"{where}: additive holds +inf{report(posinf)}, which is not a mask "
                         "value")
    if threshold is None:
        bias = ops.isfinite(array) & (array != 0)
        if bool(ops.any(bias)):
            raise ValueError(f"{where}: additive mask has finite non-zero entries{report(bias)}, "
                             "it is a bias not a mask; pass threshold= (e.g. finfo(dtype).min / "
                             "2) to treat values <= threshold as dropped")
        return array == 0
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"{where}: threshold must be a float < 0 or None, got {threshold!r}")
    if math.isnan(float(threshold)) or float(threshold) >= 0:
        raise ValueError(f"{where}: threshold must be < 0 (0 is the kept value), got "
                         f"{threshold!r}")
    return array > float(threshold)
