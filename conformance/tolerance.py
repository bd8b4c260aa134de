"""The tolerance model (spec section 5.2): how far an implementation computing in dtype ``u``
may be from the exact golden value.

Forward pass (out, lse): a per-element bound derived from what a legitimate kernel rounds,
scaled by the magnitudes of the values it averages, plus an aggregate criterion against
refmask's own naive computation in ``u``.

For query row i of head (b, h), with the golden (float64) softmax weights ``p_ij`` before
dropout, the dropout factor ``d_ij`` (``keep / (1 - rate)``, else 1), the sink weight
``p_sink_i``, the kv head's values ``v_j``, the golden output ``o_i`` and lse:

    a_ij   = |scale| sum_k |q_ik k_jk|,   r_ij = |scale| sqrt(sum_k (q_ik k_jk)^2),
    t_ij   = scale q_i . k_j,   c_ij = sech^2(t_ij / cap)   (1 without softcap)
    delta_ij = c_ij (min(eps(u) a_ij, C eps(u) r_ij) + sqrt(Dqk) eps(acc) a_ij)
             + (eps(u) + 2 eps(acc)) (c_ij |t_ij| + |cap tanh(t_ij / cap)| + |bias_ij|
                                      + |alibi_ij|)       the score error of a legitimate kernel
    N_i    = log(sum_j p_ij exp(delta_ij) + p_sink_i)     bound on the log-normaliser's growth
    M_i    = -log(sum_j p_ij exp(-delta_ij) + p_sink_i)   ... and on its shrinking
    R_id   = eps(u) |o_id| + min(eps(u) sum_j |p_ij d_ij v_jd|,
                                 C sqrt(sum_j (eps(u) p_ij d_ij v_jd)^2))
             + sqrt(n_i) eps(acc) sum_j |p_ij d_ij v_jd|         rounding of P, o; summation
    S_id   = exp(M_i) min(sum_j p_ij expm1(delta_ij) |d_ij v_jd - o_id|,
                          C sqrt(sum_j (p_ij expm1(delta_ij) (d_ij v_jd - o_id))^2))
                                                                  score errors, exactly centred
    w_out  = R + S
    w_lse  = min(N_i, C sqrt(sum_j (p_ij expm1(delta_ij))^2)) + eps(u) |lse_i|
             + sqrt(n_i) eps(acc)

``eps`` is the machine epsilon (2^-52, 2^-23, 2^-10, 2^-7), ``acc`` the accumulation dtype
(float32 for float16/bfloat16, else ``u``), ``n_i`` the number of kept keys. A kernel that
rounds q and k (e.g. pre-scaled by sqrt(scale)) or the scores to ``u`` perturbs each score by
at most ``delta_ij``; by ``p'_j / p_j = exp(e_j) / sum_k p_k exp(e_k)`` with ``|e_j| <= delta_j``
the output moves *exactly* by

    o'_i - o_i = sum_j p_j expm1(e_j) (d_j v_j - o_i) / Z,   Z = sum_j p_j exp(e_j) + p_sink

(``o = sum_j p_j d_j v_j`` and ``Z - 1 = sum_j p_j expm1(e_j)``), and ``1 / Z <= exp(M_i)``:
the first form of ``S``, with no first-order term for the shift of the normaliser, whose
effect on a centred sum is nil -- tight where a row's winner is far ahead, saturating (as it
must) only at near-ties of large scores. Rounding q and k (pre-scaled by sqrt(scale)) moves
the Dqk products of a score independently of each other, so the score error is itself a
walk over Dqk terms (``r_ij``: ~sqrt(Dqk) times below the worst case ``a_ij`` for the MLA
head dims 192 and 576); rounding the score (torch math rounds the product, then the scaled
product) and the few score-sized steps in acc that follow cost ``(eps + 2 eps(acc)) |score|``.
Rounding P to ``u`` before ``P @ V`` and rounding the output cost at most the first form of
``R``. The roundings of different keys are independent, so over many keys they add up like
a random walk: the second forms, with C = C_SIGMA = 3
(about five standard deviations of a sum of uniform errors), bound them far more tightly on
long rows (a 2048-key row's output is ~45x smaller than the sum of its terms) and never
exceed the worst case for sums of up to 9 terms. No term grows with |lse|: the output
tolerance is proportional to the values averaged.

    per element:  |X_i - X_g| <= F_ELEMENT * w      (and NaN/inf exactly where X_g has them)
    aggregate:    rms((X_i - X_g) / w) <= max(F_AGGREGATE * rms((X_n - X_g) / w), AGGREGATE_FLOOR)

over the entries where X_g is finite and w > 0, with X_n refmask's naive result in ``u``; the
aggregate criterion applies to the output (the LSE is judged per element).
The aggregate criterion is FlexAttention's (``rmse(impl) <= fudge * rmse(same-dtype eager)``)
in the norm weighted by the per-element model, so a near-tie row does not drown the rest; it
catches a uniform relative error well inside the per-element bound.

Gradients (dq, dk, dv, dbias, dsinks) are judged the same way -- per element against
``F_ELEMENT * w`` and in weighted RMS against refmask's naive gradient, with the floor
GRADIENT_AGGREGATE_FLOOR -- under the gradient model of :mod:`.gradient_model`: ``w`` scaled
by the magnitudes of the terms each gradient sums, never by |lse|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numba
import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from refmask.case import Case

#: Safety factor of the per-element forward bound over the modelled error w.
F_ELEMENT = 2.0
#: Independent roundings of many terms add up like a random walk: a sum of terms each at
#: most t_j in magnitude is bounded by min(sum t_j, C_SIGMA * sqrt(sum t_j^2)) -- the
#: worst case for few terms, 3 standard deviations' worth (~5 sigma for uniform errors) for
#: many.
C_SIGMA = 3.0
#: Aggregate criterion: an implementation's weighted RMS error may be this many times
#: refmask's naive same-dtype one ...
F_AGGREGATE = 2.0
#: ... or this much (in units of w) where the naive error happens to be ~0.
AGGREGATE_FLOOR = 0.1
#: ... for gradients (:mod:`.gradient_model`), whose smallest tensors (dv of a 3-key window
#: over 4 rows) hold a handful of elements: a float64 kernel pre-scaling q and k reached 0.098.
GRADIENT_AGGREGATE_FLOOR = 0.125

#: Machine epsilon of each dtype: 2**-(mantissa bits).
EPS = {"float64": 2.0 ** -52, "float32": 2.0 ** -23, "float16": 2.0 ** -10,
       "bfloat16": 2.0 ** -7}
#: Smallest normal number of each dtype: a kernel may flush what falls below it in its
#: accumulation dtype (fast exp/exp2 with flush-to-zero), and rounds into the subnormals below
#: it in the output dtype.
TINY = {"float64": 2.0 ** -1022, "float32": 2.0 ** -126, "float16": 2.0 ** -14,
        "bfloat16": 2.0 ** -126}
#: The dtype a legitimate kernel accumulates in (sums, dot products, exp).
ACCUMULATION = {"float64": "float64", "float32": "float32", "float16": "float32",
                "bfloat16": "float32"}


@dataclass(frozen=True)
class TensorCheck:
    """The comparison of one tensor: errors, the tolerance, and where it first went wrong.

    tolerance: the largest per-element tolerance (the array is in ``ForwardModel``);
    worst_ratio: max |X_i - X_g| / tol over the finite entries (<= 1 passes);
    aggregate / aggregate_limit: the weighted RMS error and its limit (forward only).
    """

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
    worst_ratio: float = 0.0
    aggregate: float | None = None
    aggregate_limit: float | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name, "ok": self.ok, "max_abs": _finite(self.max_abs),
            "max_rel": _finite(self.max_rel), "max_ulps": _finite(self.max_ulps),
            "tolerance": self.tolerance, "naive_error": self.naive_error,
            "first_bad": None if self.first_bad is None else list(self.first_bad),
            "nonfinite_mismatch": self.nonfinite_mismatch, "reason": self.reason,
            "worst_ratio": _finite(self.worst_ratio),
            "aggregate": None if self.aggregate is None else _finite(self.aggregate),
            "aggregate_limit": self.aggregate_limit,
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


# --- the forward model ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ForwardModel:
    """The modelled worst-case error ``w`` of a legitimate kernel, per element (module
    docstring): ``out`` (B, Hq, Tq, Dv) and ``lse`` (B, Hq, Tq), float64, BHTD; the score
    stages a case asks for (``scores_<stage>``) and, when gradients are judged, the gradient
    model's weights (``dq``, ``dk``, ``dv``, ``dbias``, ``dsinks``; :mod:`.gradient_model`)."""

    out: np.ndarray
    lse: np.ndarray
    scores: dict = field(default_factory=dict)
    grads: dict = field(default_factory=dict)


@numba.njit(cache=True)
def _centred_sums(spread, factor, v, o):
    """``sum_j spread_rj |factor_rj v_jd - o_rd|`` and ``sum_j (spread_rj (factor_rj v_jd -
    o_rd))^2`` for every (r, d), skipping zero weights."""
    rows, keys = spread.shape
    dim = v.shape[1]
    total = np.zeros((rows, dim))
    squares = np.zeros((rows, dim))
    for r in range(rows):
        for j in range(keys):
            weight = spread[r, j]
            if weight == 0.0:
                continue
            f = factor[r, j]
            for d in range(dim):
                term = weight * abs(f * v[j, d] - o[r, d])
                total[r, d] += term
                squares[r, d] += term * term
    return total, squares


def _row_blocks(rows: int, keys: int, dim: int, budget: int = 1 << 23):
    step = max(1, budget // max(1, keys * max(1, dim)))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def _walk(total, root):
    """``min(total, C_SIGMA * root)``: a sum of independent terms bounded by ``t_j``, with
    ``total = sum t_j`` and ``root = sqrt(sum t_j^2)`` -- the worst case for up to 9 terms, a
    random walk's ~5 standard deviations beyond."""
    return np.minimum(total, C_SIGMA * root)


def _score_error(q, k, scale, softcap, additive, eps, eps_acc):
    """``delta_ij``, the bound on the error of score (i, j) of a legitimate kernel, (R, Tk):

        delta = sech^2(t / cap) (walk(eps |scale| |q_i| . |k_j|, eps |scale| ||q_i * k_j||_2)
                                 + sqrt(Dqk) eps(acc) |scale| |q_i| . |k_j|)
                + (eps + 2 eps(acc)) (sech^2(t / cap) |t| + |cap tanh(t / cap)| + |bias_ij|
                                      + |alibi_ij|)

    with t = scale q_i . k_j (sech^2 = 1 and no tanh term without softcap). Rounding q and k
    to u (pre-scaled by sqrt(scale)) moves product k by <= eps |scale q_k k_jk|,
    independently for each k: the walk bounds their sum. Accumulating the Dqk products in acc
    costs sqrt(Dqk) eps(acc) per unit of sum |products|. Rounding the score to u (torch
    math: the product, then the scaled product; the softcapped, the biased score) costs eps
    times what is rounded, and the few steps in acc that follow (scale, softcap's divide,
    tanh and multiply, adding the bias, subtracting the row maximum) 2 eps(acc) (4 unit
    roundoffs).
    """
    t = scale * (q @ k.T)
    size = abs(scale) * (np.abs(q) @ np.abs(k).T)
    spread = abs(scale) * np.sqrt(q ** 2 @ (k ** 2).T)
    products = _walk(eps * size, eps * spread) + math.sqrt(q.shape[-1]) * eps_acc * size
    score = np.abs(t)
    if softcap is not None:
        tanh_t = np.tanh(t / softcap)
        products = products * (1.0 - tanh_t ** 2)
        score = score * (1.0 - tanh_t ** 2) + softcap * np.abs(tanh_t)
    if additive is not None:
        score = score + additive
    return products + (eps + 2.0 * eps_acc) * score


def forward_model(*, q: np.ndarray, k: np.ndarray, v: np.ndarray, probs: np.ndarray,
                  dropout_factor: np.ndarray | None,
                  scale: float, softcap: float | None, additive: np.ndarray | None,
                  out: np.ndarray, lse: np.ndarray, dtype: str) -> ForwardModel:
    """``w_out`` and ``w_lse`` from the golden weights and the case's float64 inputs.

    q (B, Hq, Tq, Dqk); k, v (B, Hq, Tk, D) with the kv heads already expanded to query
    heads; probs (B, Hq, Tq, Tk) the golden softmax weights *before* dropout (0 on masked
    keys and empty rows; a sink's weight is ``p_sink_i = 1 - sum_j p_ij``); dropout_factor
    (B, Hq, Tq, Tk) or None; additive: |bias| + |alibi| (B, Hq, Tq, Tk) or None; out, lse:
    the golden values.
    """
    eps, eps_acc = EPS[dtype], EPS[ACCUMULATION[dtype]]
    batch, heads, q_len, _ = q.shape
    k_len = v.shape[2]
    w_out = np.zeros(out.shape)
    w_lse = np.zeros(lse.shape)
    if q_len == 0 or k_len == 0:
        return ForwardModel(w_out, w_lse)
    out0 = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    lse0 = np.where(np.isfinite(lse), lse, 0.0)
    for b in range(batch):
        for h in range(heads):
            for rows in _row_blocks(q_len, k_len, 1):
                qr, kh, vh = q[b, h, rows], k[b, h], v[b, h]
                extra = None if additive is None else additive[b, h, rows]
                delta = _score_error(qr, kh, scale, softcap, extra, eps, eps_acc)
                p = np.nan_to_num(probs[b, h, rows])
                norm = np.log1p((p * np.expm1(delta)).sum(axis=-1))      # N_i
                norm_rms = np.sqrt(((p * np.expm1(delta)) ** 2).sum(axis=-1))
                factor = (np.ones_like(p) if dropout_factor is None
                          else dropout_factor[b, h, rows])
                pd = p * factor
                kept = (p > 0).sum(axis=-1)
                o = out0[b, h, rows]
                magnitude = pd @ np.abs(vh)
                rounding = eps * np.abs(o) + _walk(eps * magnitude,
                                                   eps * np.sqrt(pd ** 2 @ vh ** 2)) + (
                    np.sqrt(kept)[:, None] * eps_acc * magnitude)
                worst, squares = _centred_sums(
                    np.ascontiguousarray(p * np.expm1(delta)), np.ascontiguousarray(factor),
                    np.ascontiguousarray(vh), np.ascontiguousarray(o))
                low = (p * -np.expm1(-delta)).sum(axis=-1)              # 1 - Z_min
                growth = 1.0 / np.maximum(1.0 - low, np.finfo(np.float64).tiny)   # 1 / Z_min
                score = growth[:, None] * _walk(worst, np.sqrt(squares))
                w_out[b, h, rows] = rounding + score
                w_lse[b, h, rows] = np.where(
                    kept > 0, _walk(norm, norm_rms)
                    + eps * np.abs(lse0[b, h, rows]) + np.sqrt(kept) * eps_acc, 0.0)
    return ForwardModel(w_out, w_lse)


def weighted_rms(error: np.ndarray, weight: np.ndarray, golden: np.ndarray) -> float:
    """``rms(error / weight)`` over the entries where ``golden`` is finite and weight > 0;
    non-finite errors count as +inf; 0 when there are no such entries."""
    use = np.isfinite(golden) & (weight > 0)
    if not use.any():
        return 0.0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ratio = np.abs(error[use]) / weight[use]
    if not np.isfinite(ratio).all():
        return math.inf
    return float(np.sqrt(np.mean(ratio ** 2)))


def _nonfinite_mismatch(actual: np.ndarray, golden: np.ndarray) -> np.ndarray:
    return (np.isnan(actual) != np.isnan(golden)) | (np.isinf(actual) != np.isinf(golden)) | (
        np.isinf(golden) & np.isinf(actual) & (np.sign(actual) != np.sign(golden)))


def _errors(name: str, actual: np.ndarray, golden: np.ndarray, dtype: str):
    finite = np.isfinite(golden) & np.isfinite(actual)
    diff = np.zeros(golden.shape)
    diff[finite] = np.abs(actual[finite] - golden[finite])
    max_abs = float(diff.max()) if diff.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = np.where(finite, diff / np.maximum(np.abs(golden), np.finfo(np.float64).tiny), 0.0)
    max_rel = float(rel.max()) if rel.size else 0.0
    ulps = ulp_distance(np.where(finite, actual, 0.0), np.where(finite, golden, 0.0), dtype)
    max_ulps = float(ulps.max()) if ulps.size else 0.0
    return diff, max_abs, max_rel, max_ulps


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


def _refused(name: str, why: str) -> TensorCheck:
    return TensorCheck(name, False, np.inf, np.inf, np.inf, 0.0, 0.0, None, 0, why,
                       worst_ratio=np.inf)


def _shape_mismatch(name: str, actual: np.ndarray, golden: np.ndarray) -> TensorCheck:
    return TensorCheck(name, False, np.inf, np.inf, np.inf, 0.0, 0.0, None, 0,
                       f"{name} has shape {actual.shape}, expected {golden.shape}",
                       worst_ratio=np.inf)


def check_forward(name: str, actual: ArrayLike, golden: np.ndarray, naive: np.ndarray | None,
                  weight: np.ndarray, dtype: str, *, aggregate: bool = True,
                  floor: float = AGGREGATE_FLOOR) -> TensorCheck:
    """Compare ``actual`` (out or lse) with ``golden`` under the forward model ``weight``
    (w of :class:`ForwardModel`): per element and, when ``aggregate`` and ``naive`` is given,
    in weighted RMS against refmask's naive error (the limit never below ``floor``: 0.1 for
    out, GRADIENT_AGGREGATE_FLOOR for gradients). ``actual`` must be a real floating array
    (float16/32/64, bfloat16): anything else fails the check, never cast."""
    actual, why = _real_array(name, actual)
    if why:
        return _refused(name, why)
    if actual.shape != golden.shape:
        return _shape_mismatch(name, actual, golden)
    tol = F_ELEMENT * weight
    nonfinite_bad = _nonfinite_mismatch(actual, golden)
    diff, max_abs, max_rel, max_ulps = _errors(name, actual, golden, dtype)
    bad = nonfinite_bad | (diff > tol)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(diff > 0, diff / np.where(tol > 0, tol, 0.0), 0.0)
    worst = float(np.nanmax(ratios)) if ratios.size else 0.0
    e_naive = max_finite_error(naive, golden) if naive is not None else 0.0
    agg = limit = None
    if aggregate and naive is not None:
        with np.errstate(invalid="ignore"):
            agg = weighted_rms(np.where(np.isfinite(actual), actual - golden, np.inf), weight,
                               golden)
            naive_agg = weighted_rms(np.where(np.isfinite(naive), naive - golden, 0.0), weight,
                                     golden)
        limit = max(F_AGGREGATE * naive_agg, floor)
    first_bad = tuple(int(x) for x in np.argwhere(bad)[0]) if bad.any() else None
    reason = ""
    if nonfinite_bad.any():
        where = tuple(int(x) for x in np.argwhere(nonfinite_bad)[0])
        reason = (f"{name}{list(where)} is {actual[where]} where the reference is "
                  f"{golden[where]}")
    elif bad.any():
        where = first_bad
        reason = (f"{name}: max error {max_abs:.3g}; at {list(where)} the error "
                  f"{diff[where]:.3g} exceeds the tolerance {tol[where]:.3g} "
                  f"({worst:.3g}x)")
    elif agg is not None and agg > limit:
        reason = (f"{name}: the weighted RMS error {agg:.3g} exceeds {limit:.3g} "
                  f"(max of {F_AGGREGATE:g} x refmask's naive {dtype} error, {floor:g}): "
                  "a systematic error inside the per-element bound")
    ok = not reason
    return TensorCheck(name, ok, max_abs if not nonfinite_bad.any() else np.inf, max_rel,
                       max_ulps, float(tol.max()) if tol.size else 0.0, e_naive, first_bad,
                       int(nonfinite_bad.sum()), reason,
                       worst_ratio=worst if not nonfinite_bad.any() else np.inf,
                       aggregate=agg, aggregate_limit=limit)


def ulp_distance(a: np.ndarray, b: np.ndarray, dtype: str) -> np.ndarray:
    """Units in the last place between ``a`` and ``b`` after rounding both to ``dtype``.

    Floats of one sign are ordered like their bit patterns, so mapping negative patterns to
    ``-(pattern & ~sign)`` makes the distance a plain integer difference.
    """
    from refmask.case import numpy_dtype, round_float64

    np_dtype = numpy_dtype(dtype)
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[np_dtype.itemsize]
    magnitude = np.int64((1 << (8 * np_dtype.itemsize - 1)) - 1)

    def ordered(x):
        with np.errstate(over="ignore", invalid="ignore"):
            raw = round_float64(x, np_dtype).view(bits).astype(np.int64)
        return np.where(raw < 0, -(raw & magnitude), raw)

    return np.abs(ordered(a) - ordered(b)).astype(np.float64)


def _case_terms(case: Case, inputs: dict, changes: dict | None = None) -> tuple:
    """``(terms, result)``: what the forward and score models read, from refmask's exact
    float64 path on the case's inputs -- q (after the temperature), k, v (kv heads expanded),
    scale, softcap, the golden weights before dropout (probs), the dropout factor and
    |bias| + |alibi| (additive), all BHTD float64 -- and that path's result (out, lse).
    ``changes``: keyword arguments of refmask.attention that replace the case's (an
    alternative's mask, scale, empty_rows, alibi, softcap or sinks)."""
    from refmask.adapters.common.translate import float64_inputs
    from refmask.attention import attention
    from refmask.case import attention_kwargs

    values = float64_inputs(inputs)
    kwargs = attention_kwargs(case, values)
    kwargs.update({"dropout_keep": None, "dropout_rate": None, "layout": "BHTD",
                   "mask": case.mask, **(changes or {})})

    def bhtd(x):
        return np.swapaxes(x, 1, 2) if case.layout == "BTHD" else x

    q, k, v = bhtd(values["q"]), bhtd(values["k"]), bhtd(values["v"])
    group = max(1, case.q_heads // max(1, case.kv_heads))
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scale = kwargs.get("scale")
    scale = scale if scale is not None else 1.0 / math.sqrt(max(case.qk_dim, 1))
    with np.errstate(all="ignore"):
        result = attention(q, k, v, **kwargs, return_probs=True, path="exact")
        if "query_scale" in values:  # the rows the product reads (spec 3.2.3)
            q = q * values["query_scale"][None, None, :, None]
        probs = np.asarray(result.probs, np.float64)
        factor = None
        if "dropout_keep" in values:
            factor = values["dropout_keep"] / (1.0 - case.dropout_rate)
            factor = np.broadcast_to(factor, probs.shape)
        additive = None
        if "bias" in values:
            additive = np.abs(np.broadcast_to(values["bias"], probs.shape))
        if kwargs.get("alibi") is not None:
            alibi = np.abs(kwargs["alibi"].bias(case.batch, case.q_heads, case.q_len,
                                                case.k_len))
            additive = alibi if additive is None else additive + alibi
    return dict(q=q, k=k, v=v, probs=probs, dropout_factor=factor, scale=scale,
                softcap=kwargs.get("softcap"), additive=additive), result


def case_forward_model(case: Case, inputs: dict, golden: dict, *,
                       terms: dict | None = None) -> ForwardModel:
    """The :class:`ForwardModel` of a conformance case: golden weights from refmask's exact
    float64 path on the case's inputs (``terms``, :func:`_case_terms`'s, when already
    computed), golden out/lse (BHTD) from ``golden``; with the score stages the case asks for
    (:func:`score_model`). The gradient model is :mod:`.gradient_model`'s."""
    if terms is None:
        terms, _ = _case_terms(case, inputs)
    with np.errstate(all="ignore"):
        model = forward_model(**terms, out=golden["out"], lse=golden["lse"], dtype=case.dtype)
        scores = score_model(case, terms) if case.scores else {}
    return ForwardModel(model.out, model.lse, scores)


def score_model(case: Case, terms: dict) -> dict:
    """The modelled error ``w`` of each score stage the case asks for (spec 5.2, scores),
    keyed ``scores_<stage>``, (B, Hq, Tq, Tk):

        raw         a_t_ij (eps(u) + sqrt(Dqk) eps(acc)),  a_t = |scale| sum_k |q_ik k_jk|
        softcapped  a_c_ij (eps(u) + sqrt(Dqk) eps(acc)),  a_c = a_t sech^2(t/cap) + |c_ij|
        masked      delta_ij                                (of the out model)
        probs       e_ij + (eps(u) + sqrt(n_i) eps(acc)) p_ij,   e_ij = p_ij expm1(delta_ij + N_i)

(``p'_j / p_j = exp(e_j) / Z`` lies in [exp(-delta_j - N_i), exp(delta_j + M_i)] and
N_i >= M_i, so e_ij bounds the change of weight j.)

    ``terms`` is what :func:`_case_terms` returns. -inf (masked) and NaN entries are judged by
    placement only."""
    eps, eps_acc = EPS[case.dtype], EPS[ACCUMULATION[case.dtype]]
    q, k, scale, cap = terms["q"], terms["k"], terms["scale"], terms["softcap"]
    per_score = eps + math.sqrt(case.qk_dim) * eps_acc
    a_t = abs(scale) * np.einsum("bhid,bhjd->bhij", np.abs(q), np.abs(k))
    a_c = a_t
    if cap is not None:
        tanh_t = np.tanh(scale * np.einsum("bhid,bhjd->bhij", q, k) / cap)
        a_c = a_t * (1.0 - tanh_t ** 2) + cap * np.abs(tanh_t)
    additive = terms["additive"]
    delta = np.zeros(a_t.shape)
    for b, h in np.ndindex(*a_t.shape[:2]):
        delta[b, h] = _score_error(q[b, h], k[b, h], scale, cap,
                                   None if additive is None else additive[b, h], eps, eps_acc)
    p = np.nan_to_num(terms["probs"])
    norm = np.log1p((p * np.expm1(delta)).sum(axis=-1, keepdims=True))
    kept = (p > 0).sum(axis=-1, keepdims=True)
    weights = {"raw": a_t * per_score, "softcapped": a_c * per_score, "masked": delta,
               "probs": p * np.expm1(delta + norm) + (eps + np.sqrt(kept) * eps_acc) * p}
    return {f"scores_{stage}": weights[stage] for stage in case.scores}
