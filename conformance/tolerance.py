"""The tolerance model: how far an implementation computing in dtype ``u`` may be from the
exact golden value, derived from the error refmask itself makes computing naively in ``u``.

For one output tensor X (out, lse, dq, ...) of a case in dtype u, with golden X_g (exact,
correctly rounded float64), refmask's naive result X_n (``refmask.attention`` run with inputs
and arithmetic in u) and the implementation's X_i:

    e_naive = max |X_n - X_g|                    over the entries where X_g is finite
    kappa   = max(1, max |lse_g|)                the softmax's sensitivity to score rounding
    tol     = fudge * e_naive + floor_ulps * eps(u) * kappa * max(1, max |X_g|)
    pass   iff  max |X_i - X_g| <= tol  and  X_i is NaN / +inf / -inf exactly where X_g is

fudge = 4 for the forward (out, lse) and 8 for gradients; floor_ulps = 8. The floor keeps
float64 meaningful (e_naive can be 0 there) and lets a kernel that accumulates in a wider type
pass even where refmask's naive result happens to be lucky. kappa accounts for kernels that
recompute ``p = exp(s - lse)`` from a stored LSE (FlashAttention-style backward): rounding
``s`` or ``lse`` of magnitude |lse| perturbs ``p`` by about |lse| eps relatively, whatever the
summation order; kappa is 1 to 3 for ordinary cases and large only for large-magnitude scores.

The model follows the peers' own practice (PyTorch SDPA tests: ``<= max(1e-5, 5 * err_ref)``;
FlashAttention: ``<= 2 * err_pt``; FlexAttention: fudge 10 / 1.1) but uses refmask's naive
error in the *same* dtype as the yardstick, so no magic atol per dtype is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

FUDGE_FORWARD = 4.0
FUDGE_BACKWARD = 8.0
FLOOR_ULPS = 8.0

#: Unit roundoff (machine epsilon) of each dtype: 2**-(mantissa bits).
EPS = {"float64": 2.0 ** -52, "float32": 2.0 ** -23, "float16": 2.0 ** -10,
       "bfloat16": 2.0 ** -7}


@dataclass(frozen=True)
class TensorCheck:
    """The comparison of one tensor: errors, the tolerance, and where it first went wrong."""

    name: str
    ok: bool
    max_abs: float
    max_rel: float
    max_ulps: float
    tolerance: float
    naive_error: float
    first_bad: tuple | None
    nonfinite_mismatch: int
    reason: str = ""

    def to_json(self) -> dict:
        return {
            "name": self.name, "ok": self.ok, "max_abs": _finite(self.max_abs),
            "max_rel": _finite(self.max_rel), "max_ulps": _finite(self.max_ulps),
            "tolerance": self.tolerance, "naive_error": self.naive_error,
            "first_bad": None if self.first_bad is None else list(self.first_bad),
            "nonfinite_mismatch": self.nonfinite_mismatch, "reason": self.reason,
        }


def _finite(x: float):
    return x if np.isfinite(x) else str(x)


def max_finite_error(a: np.ndarray, golden: np.ndarray) -> float:
    """``max |a - golden|`` over the entries where ``golden`` is finite (0 if there are none)."""
    finite = np.isfinite(golden)
    if not finite.any():
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(np.asarray(a, np.float64)[finite] - golden[finite])
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(diff.max())


def score_sensitivity(lse_golden: np.ndarray) -> float:
    """kappa = max(1, max |lse|) over the finite golden LSE entries."""
    finite = lse_golden[np.isfinite(lse_golden)]
    return max(1.0, float(np.abs(finite).max())) if finite.size else 1.0


def tolerance(golden: np.ndarray, naive: np.ndarray, dtype: str, *, backward: bool,
              kappa: float = 1.0) -> tuple:
    """``(tol, e_naive)`` for one tensor, as the module docstring defines them."""
    e_naive = max_finite_error(naive, golden)
    if not np.isfinite(e_naive):
        e_naive = 0.0  # a naive overflow says nothing about the achievable accuracy
    finite = golden[np.isfinite(golden)]
    magnitude = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    fudge = FUDGE_BACKWARD if backward else FUDGE_FORWARD
    return fudge * e_naive + FLOOR_ULPS * EPS[dtype] * kappa * magnitude, e_naive


def ulp_distance(a: np.ndarray, b: np.ndarray, dtype: str) -> np.ndarray:
    """Units in the last place between ``a`` and ``b`` after rounding both to ``dtype``.

    Floats of one sign are ordered like their bit patterns, so mapping negative patterns to
    ``-(pattern & ~sign)`` makes the distance a plain integer difference.
    """
    from .cases import numpy_dtype

    np_dtype = numpy_dtype(dtype)
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[np_dtype.itemsize]
    magnitude = np.int64((1 << (8 * np_dtype.itemsize - 1)) - 1)

    def ordered(x):
        raw = np.asarray(x, np.float64).astype(np_dtype).view(bits).astype(np.int64)
        return np.where(raw < 0, -(raw & magnitude), raw)

    return np.abs(ordered(a) - ordered(b)).astype(np.float64)


def _real_array(name: str, actual) -> tuple:
    """``(float64 array, "")`` for a real floating array, else ``(None, why it is refused)``."""
    try:
        array = np.asarray(actual)
    except Exception as error:  # noqa: BLE001 - whatever the backend returned is its verdict
        return None, f"{name} is not convertible to an array ({type(error).__name__}: {error})"
    dtype = array.dtype
    real = dtype.kind == "f" or (dtype.kind == "V" and dtype.name == "bfloat16")
    if not real:
        return None, (f"{name} has dtype {dtype} ({type(actual).__name__}); an attention output "
                      "must be a real floating array (complex, integer, bool and object outputs "
                      "are refused, never cast)")
    return np.asarray(array, dtype=np.float64), ""


def check_tensor(name: str, actual: ArrayLike, golden: np.ndarray, naive: np.ndarray, dtype: str, *,
                 backward: bool = False, kappa: float = 1.0,
                 tol: float | None = None) -> TensorCheck:
    """Compare ``actual`` with ``golden`` under the model; ``tol`` overrides the tolerance.

    ``actual`` must be an array of a real floating dtype (float16/32/64, bfloat16): anything
    else (complex, integer, bool, object, not an array) fails the check, never cast."""
    actual, why = _real_array(name, actual)
    if why:
        return TensorCheck(name, False, np.inf, np.inf, np.inf, 0.0, 0.0, None, 0, why)
    if actual.shape != golden.shape:
        return TensorCheck(name, False, np.inf, np.inf, np.inf, 0.0, 0.0, None, 0,
                           f"{name} has shape {actual.shape}, expected {golden.shape}")
    tol_model, e_naive = tolerance(golden, naive, dtype, backward=backward, kappa=kappa)
    tol = tol_model if tol is None else tol
    nonfinite_bad = (np.isnan(actual) != np.isnan(golden)) | (
        np.isinf(actual) != np.isinf(golden)) | (
        np.isinf(golden) & np.isinf(actual) & (np.sign(actual) != np.sign(golden)))
    finite = np.isfinite(golden) & np.isfinite(actual)
    diff = np.zeros(golden.shape)
    diff[finite] = np.abs(actual[finite] - golden[finite])
    bad = nonfinite_bad | (diff > tol)
    max_abs = float(diff.max()) if diff.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(finite, diff / np.maximum(np.abs(golden), np.finfo(np.float64).tiny), 0.0)
    max_rel = float(rel.max()) if rel.size else 0.0
    ulps = ulp_distance(np.where(finite, actual, 0.0), np.where(finite, golden, 0.0), dtype)
    max_ulps = float(ulps.max()) if ulps.size else 0.0
    first_bad = tuple(int(x) for x in np.argwhere(bad)[0]) if bad.any() else None
    reason = ""
    if nonfinite_bad.any():
        where = tuple(int(x) for x in np.argwhere(nonfinite_bad)[0])
        reason = (f"{name}{list(where)} is {actual[where]} where the reference is "
                  f"{golden[where]}")
    elif bad.any():
        reason = f"{name}: max error {max_abs:.3g} exceeds the tolerance {tol:.3g}"
    return TensorCheck(name, not bad.any(), max_abs if not nonfinite_bad.any() else np.inf,
                       max_rel, max_ulps, tol, e_naive, first_bad, int(nonfinite_bad.sum()),
                       reason)
