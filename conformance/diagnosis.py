"""Diagnosis (spec 5.4): every applicable alternative judged against a failing output, the
best one named with runners-up, lower internal precisions tried, and an unexplained failure
localised in mask terms."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from refmask import masks as m
from refmask.adapters.common import Output
from refmask.adapters.common.translate import float64_inputs
from refmask.case import Case, to_bhtd

from .alternatives import alternative
from .explanations import Explanation, composable, compose, explanations
from .fits import Fit, fits
from .tolerance import (
    AGGREGATE_FLOOR,
    C_SIGMA,
    EPS,
    F_AGGREGATE,
    F_ELEMENT,
    ForwardModel,
    weighted_rms,
)

#: Precisions a float64 / float32 result may have been computed in internally.
LOWER_PRECISIONS = {"float64": ("float32", "bfloat16", "float16"),
                    "float32": ("bfloat16", "float16"), "float16": (), "bfloat16": ()}
#: A single alternative this close (residual in units of the tolerance) needs no pairs.
EXCELLENT = 0.25
#: Alternatives within this factor of the best residual are listed as runners-up.
RUNNER_UP_FACTOR = 2.0


@dataclass(frozen=True)
class Match:
    explanation: Explanation
    residual: float
    kind: str
    precision: str | None = None

    @property
    def name(self) -> str:
        return self.explanation.name + (f" + computed_in={self.precision}"
                                        if self.precision else "")


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` found: the best match (or None), runners-up, a localisation."""

    best: Match | None
    runners_up: tuple = ()
    localisation: str = ""
    closest: tuple = ()
    evaluated: int = 0
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        def one(match):
            return {"name": match.name, "kind": match.kind,
                    "residual": _json_float(match.residual),
                    "fix": match.explanation.fix}
        return {"best": None if self.best is None else one(self.best),
                "runners_up": [one(x) for x in self.runners_up],
                "closest": [one(x) for x in self.closest],
                "localisation": self.localisation, "evaluated": self.evaluated}


def _json_float(x: float):
    return x if np.isfinite(x) else str(x)


def _rows_changed(alt: np.ndarray, golden: np.ndarray, weight: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        differs = ~((np.abs(alt - golden) <= F_ELEMENT * weight) | (
            np.isnan(alt) & np.isnan(golden)) | (alt == golden))
    return differs


def _alt_weight(alt: np.ndarray, weights: np.ndarray, golden: np.ndarray,
                weight: np.ndarray, v: np.ndarray, eps: float) -> tuple:
    """(w, changed rows) for an alternative: the golden model, and on the rows the alternative
    changes at least the rounding part R of spec 5.2 for the alternative's own weights a_ij:
    ``eps |o| + min(eps sum_j |a_ij v_jd|, C sqrt(sum_j (eps a_ij v_jd)^2))``."""
    changed = _rows_changed(alt, golden, weight).any(axis=-1, keepdims=True)
    if not changed.any():
        return weight, changed
    a = np.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0)
    with np.errstate(all="ignore"):
        rounding = eps * (np.abs(np.nan_to_num(alt, nan=0.0, posinf=0.0, neginf=0.0))
                          + np.minimum(np.abs(a) @ np.abs(v),
                                       C_SIGMA * np.sqrt(a ** 2 @ v ** 2)))
    return np.where(changed, np.maximum(weight, rounding), weight), changed


def residual(actual: np.ndarray, target: np.ndarray, weight: np.ndarray,
             ignore_rows: np.ndarray | None = None) -> float:
    """max |actual - target| / (F_ELEMENT w) over comparable entries; inf for NaN/inf
    placed differently; ``ignore_rows`` (broadcastable bool) are not compared."""
    actual = np.asarray(actual, np.float64)
    if actual.shape != target.shape:
        return math.inf
    use = np.ones(target.shape, bool) if ignore_rows is None else ~np.broadcast_to(
        ignore_rows, target.shape)
    a, t, w = actual[use], target[use], weight[use]
    special = (np.isnan(a) != np.isnan(t)) | (np.isinf(a) != np.isinf(t)) | (
        np.isinf(a) & np.isinf(t) & (np.sign(a) != np.sign(t)))
    if special.any():
        return math.inf
    finite = np.isfinite(t)
    if not finite.any():
        return 0.0
    diff = np.abs(a[finite] - t[finite])
    tol = F_ELEMENT * w[finite]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / tol)
    return float(np.nanmax(np.where(np.isnan(ratio), np.inf, ratio)))


class _Judge:
    """Compares one output with alternatives under the model of one precision."""

    def __init__(self, output, golden: dict, model: ForwardModel, naive_agg: float,
                 precision: str, v: np.ndarray):
        self.output, self.golden, self.model = output, golden, model
        self.naive_agg, self.eps, self.v = naive_agg, EPS[precision], v

    def judge(self, alt_out, alt_lse, alt_weights, lse_free: bool) -> float:
        """The residual of the output against one alternative (<= 1: it matches)."""
        w_out, changed = _alt_weight(alt_out, alt_weights, self.golden["out"], self.model.out,
                                     self.v, self.eps)
        r = residual(self.output.out, alt_out, w_out)
        if np.isfinite(r):
            # the aggregate criterion where the golden model holds (rows the alternative
            # keeps as the spec computes them)
            agg = weighted_rms(np.asarray(self.output.out, np.float64) - alt_out,
                               np.where(changed, 0.0, w_out), alt_out)
            limit = max(F_AGGREGATE * self.naive_agg, AGGREGATE_FLOOR)
            r = max(r, agg / limit)
        if self.output.lse is not None and alt_lse is not None and np.isfinite(r):
            w_lse = np.where(_rows_changed(alt_lse, self.golden["lse"], self.model.lse),
                             np.maximum(self.model.lse, self.eps * (
                                 1.0 + np.abs(np.nan_to_num(alt_lse, posinf=0, neginf=0)))),
                             self.model.lse)
            ignore = np.isneginf(alt_lse) if lse_free else None
            r = max(r, residual(self.output.lse, alt_lse, w_lse, ignore))
        return r

    def judge_noise(self, alt_out, alt_lse) -> float:
        """The residual against a rounding process (``Explanation.noise``; <= 1: it matches).

        ``alt`` is one summation order of the process; the output, from another order, must
        have an error of the same size and place: its weighted RMS error against the golden
        output within a factor NOISE_BAND of the alternative's, and every entry within the
        tolerance plus NOISE_ENVELOPE times the largest deviation of the alternative in its
        row (a row the process leaves exact leaves no room). The LSE likewise, where given.
        """
        r = noise_residual(self.output.out, self.golden["out"], alt_out, self.model.out)
        if self.output.lse is not None and alt_lse is not None and np.isfinite(r):
            r = max(r, noise_residual(self.output.lse, self.golden["lse"], alt_lse,
                                      self.model.lse))
        return r


#: Two summation orders of one rounding process (sequential, blocked, a tree of tiles) give
#: RMS errors within about this factor of each other (a blocked sum of n terms in blocks of
#: b has ~sqrt(b) fewer roundings per term than a sequential one; the kernels of
#: tests/test_accumulation_names.py sum sequentially and in blocks of 16).
NOISE_BAND = 4.0
#: How far past the alternative's own largest deviation (in its row) an entry may be.
NOISE_ENVELOPE = 4.0
#: The summation orders tried for a rounding process: blocks of 1 (sequential, the record's
#: own alternative), 4, 16 and 64 terms summed exactly, then accumulated in the low precision
#: (tiled kernels); the best order is the match.
NOISE_BLOCKS = (1, 4, 16, 64)


#: An error that one global factor explains (actual - golden ~ c golden) beyond this share of
#: its variance is systematic -- a scaled output, not a summation process whose own error is
#: not systematic (share below half of this).
NOISE_SYSTEMATIC = 0.9


def _systematic_share(x: np.ndarray, golden: np.ndarray) -> float:
    """The share of the variance of ``x - golden`` explained by ``c * golden`` (least squares
    over the finite entries; 0 when there is no error)."""
    use = np.isfinite(golden) & np.isfinite(x)
    d, g = (np.asarray(x, np.float64) - golden)[use], golden[use]
    dd, gg = float(d @ d), float(g @ g)
    if dd == 0 or gg == 0:
        return 0.0
    return float(d @ g) ** 2 / (dd * gg)


def noise_residual(actual: object, golden: np.ndarray, alt: np.ndarray,
                   weight: np.ndarray) -> float:
    """``max(band / NOISE_BAND, envelope)`` of :meth:`_Judge.judge_noise`; inf when the output
    is exact where the alternative is not; the ordinary residual against the golden value
    where the alternative stays within the tolerance (the LSE under a P @ V accumulation)."""
    actual = np.asarray(actual, np.float64)
    if actual.shape != golden.shape:
        return math.inf
    if residual(alt, golden, weight) <= 1.0:  # the process keeps this tensor within tolerance
        return residual(actual, golden, weight)
    with np.errstate(invalid="ignore"):
        e_actual = weighted_rms(actual - golden, weight, golden)
        e_alt = weighted_rms(alt - golden, weight, golden)
    if not (np.isfinite(e_actual) and np.isfinite(e_alt)) or e_actual == 0:
        return math.inf
    if _systematic_share(actual, golden) > NOISE_SYSTEMATIC > 2 * _systematic_share(alt, golden):
        return math.inf  # one factor explains the output's error, not the process's: no noise
    band = max(e_actual / e_alt, e_alt / e_actual) / NOISE_BAND
    deviation = np.nan_to_num(np.abs(alt - golden), nan=0.0, posinf=0.0)
    # out (B, H, T, D): the row's largest deviation; lse (B, H, T): each row its own
    row_max = deviation.max(axis=-1, keepdims=True) if deviation.ndim == 4 else deviation
    envelope = weight + NOISE_ENVELOPE * row_max / F_ELEMENT
    return max(band, residual(actual, golden, np.broadcast_to(envelope, golden.shape)))


def _values(case: Case, values: dict) -> np.ndarray:
    """v (B, Hq, Tk, Dv) with the kv heads expanded to query heads."""
    v = to_bhtd(case, values["v"])
    return np.repeat(v, max(1, case.q_heads // max(1, case.kv_heads)), axis=1)


def diagnose(case: Case, inputs: dict, output: Output, golden: dict, model: ForwardModel,
             naive_agg: float, *, declared: Iterable[str] = (),
             model_for: Callable[[str], ForwardModel] | None = None,
             top: int = 6) -> Diagnosis:
    """Every applicable alternative (singles, pairs with the closest singles and with the
    backend's declared conventions, mask edits with every empty-row policy), judged against
    ``output``; the best match at the case's precision, else at a lower internal precision.

    ``model_for(dtype) -> ForwardModel`` gives the model of another precision (for
    ``computed_in``); ``naive_agg`` is refmask's naive weighted RMS error of the case.
    """
    values = float64_inputs(inputs)
    declared_names = sorted(declared)
    with np.errstate(all="ignore"):
        spec_out, spec_lse, _ = alternative(case, values)
    cache: dict[str, tuple] = {}

    def compute(explanation):
        if explanation.name not in cache:
            try:
                with np.errstate(all="ignore"):
                    cache[explanation.name] = alternative(case, values,
                                                          **explanation.changes(case))
            except (ValueError, TypeError, KeyError, IndexError):
                cache[explanation.name] = None
        return cache[explanation.name]

    def differs(explanation):
        """False for an alternative that computes exactly the spec's result on this case."""
        alt = compute(explanation)
        if alt is not None and explanation.lse_free_on_empty_rows:
            return True  # compared differently (the LSE of empty rows is free)
        return alt is not None and not (
            np.array_equal(alt[0], spec_out, equal_nan=True)
            and np.array_equal(alt[1], spec_lse, equal_nan=True))

    applicable = [e for e in explanations() if _safe_applies(e, case) and differs(e)]
    # rounding processes are matched by the size of their error, a weaker test than entry by
    # entry: they are judged only when nothing exact (named, lower precision, fitted) matches
    singles = [e for e in applicable if not e.noise]
    noise = [e for e in applicable if e.noise]
    declared = [e for e in singles if e.name in declared_names]

    v = _values(case, values)
    judge = _Judge(output, golden, model, naive_agg, case.dtype, v)

    def score(explanation, judge):
        alt = compute(explanation)
        if alt is None:
            return math.inf
        if explanation.noise:  # ``alt`` is the sequential order (block 1)
            orders = [alt, *(_alt(case, values, {**explanation.changes(case),
                                                 "accumulate_block": block})
                             for block in NOISE_BLOCKS if block > 1)]
            return min(judge.judge_noise(out, lse) for out, lse, _ in orders)
        return judge.judge(alt[0], alt[1], alt[2], explanation.lse_free_on_empty_rows)

    scored = [(score(e, judge), e) for e in singles]
    scored.sort(key=lambda x: x[0])
    results = {e.name: (r, e) for r, e in scored}
    pairs = {}
    if not scored or scored[0][0] > EXCELLENT:
        closest = [e for _, e in scored[:top]]
        masks = [e for e in singles if e.slot == "mask"]
        empties = [e for e in singles if e.slot == "empty_rows"]
        for first in [*closest, *declared, *masks]:
            partners = singles if first in closest or first in declared else empties
            for second in partners:
                if first is second or not composable(first, second):
                    continue
                a, b = sorted((first, second), key=lambda e: singles.index(e))
                pairs.setdefault((a.name, b.name), compose(a, b))
        for e in pairs.values():
            results[e.name] = (score(e, judge), e)
    candidates = [*singles, *pairs.values()]
    evaluated = len(results)
    best = _pick(results, case, values, model, compute, declared_names, None)
    if best[0] is None and model_for is not None:
        for precision in LOWER_PRECISIONS[case.dtype]:
            low = _Judge(output, golden, model_for(precision), naive_agg, precision, v)
            spec = Explanation("spec", "bug", "free", "the spec's own result", "", lambda c: True,
                               lambda c: {})
            low_results = {"spec": (score(spec, low), spec)}
            for e in candidates:
                low_results[e.name] = (score(e, low), e)
            best = _pick(low_results, case, values, model, compute, declared_names,
                         precision)
            if best[0] is not None:
                break
    if best[0] is None:
        def judged(changes):
            return judge.judge(*_alt(case, values, changes), lse_free=False)
        best = (_fitted_head_map(case, values, output, judge)
                or _fitted_key_range(case, judged) or _fitted(case, values, judged), [])
    if best[0] is None:
        best = (_fitted_output_factor(case, values, output, judge), [])
    if best[0] is None and noise:
        noise_results = {e.name: (score(e, judge), e) for e in noise}
        results.update(noise_results)
        evaluated = len(results)
        best = _pick(noise_results, case, values, model, compute, declared_names, None)
    ranked = sorted(results.values(), key=lambda x: x[0])
    closest_matches = tuple(Match(e, r, e.kind) for r, e in ranked[:3] if np.isfinite(r))
    return Diagnosis(best=best[0], runners_up=tuple(best[1]), closest=closest_matches,
                     evaluated=evaluated)


#: Fitted factors: a grid of 2^(k/4), |k| <= FIT_STEPS (f in [1/64, 64]), refined by golden
#: section; only for cases of at most FIT_SIZE score entries (each step recomputes the case).
FIT_STEPS = 24
FIT_SIZE = 1 << 20
#: A fitted factor within 2^(+-FIT_MIN_LOG2) of 1 names nothing (a rounding of the value).
FIT_MIN_LOG2 = 1.0 / 64
#: How many local minima of the grid are refined.
FIT_BASINS = 3


def _alt(case: Case, values: dict, changes: dict) -> tuple:
    with np.errstate(all="ignore"):
        return alternative(case, values, **changes)


def _fitted(case: Case, values: dict, score: Callable[[dict], float]) -> Match | None:
    """The first :func:`.explanations.fits` parameter whose best factor f (the smallest
    residual over the grid, refined) makes the output match: a bug named
    ``<name>=fitted(<value in words>)``; None when none matches."""
    if case.batch * case.q_heads * case.q_len * case.k_len > FIT_SIZE:
        return None
    for fit in fits():
        if not _safe_applies_fit(fit, case):
            continue

        memo: dict[float, float] = {}

        def at(log_f, fit=fit, memo=memo):
            if log_f not in memo:
                try:
                    memo[log_f] = score(fit.changes(case, 2.0 ** log_f))
                except (ValueError, TypeError, KeyError, IndexError):
                    memo[log_f] = math.inf
            return memo[log_f]
        grid = [(at(k / 4), k / 4) for k in range(-FIT_STEPS, FIT_STEPS + 1)]
        # the residual is not unimodal in f (a max over elements): every local minimum of
        # the grid, f = 1 included, is refined, the FIT_BASINS lowest first
        basins = sorted(grid[n] for n in range(len(grid)) if np.isfinite(grid[n][0]) and all(
            grid[n][0] <= grid[m][0] for m in (n - 1, n + 1) if 0 <= m < len(grid)))
        if not basins:
            continue
        r, x = min(_golden(at, x0) for _, x0 in basins[:FIT_BASINS])
        f = 2.0 ** x
        if r <= 1.0 and abs(x) >= FIT_MIN_LOG2:
            words = fit.describe(case, f)
            return Match(Explanation(
                f"{fit.name}=fitted({f:.3g}x)", "fitted", fit.name,
                f"matches the spec with the {fit.name.replace('_', ' ')} multiplied by "
                f"{f:.4g}: {words} (no named bug has this value)", fit.fix,
                lambda c: True, lambda c, fit=fit, f=f: fit.changes(c, f)), r, "fitted")
    return None


def _fitted_output_factor(case: Case, values: dict, output, judge: _Judge) -> Match | None:
    """The whole output c times the spec's (a stray normalisation, a dropout rescale on a
    path without dropout, a wrong constant), c by least squares over the finite entries,
    when nothing named matches and c then matches."""
    spec_out, spec_lse, weights = _alt(case, values, {})
    actual = np.asarray(output.out, np.float64)
    use = np.isfinite(spec_out) & np.isfinite(actual)
    denominator = float(spec_out[use] @ spec_out[use]) if use.any() else 0.0
    if denominator == 0:
        return None
    c = float(actual[use] @ spec_out[use]) / denominator
    if not np.isfinite(c) or c == 1.0:
        return None
    r = judge.judge(c * spec_out, spec_lse, weights, lse_free=False)
    if r > 1.0 or judge.judge(spec_out, spec_lse, weights, lse_free=False) <= 1.0:
        return None
    return Match(Explanation(
        f"out=scaled({c:.4g}x)", "fitted", "output",
        f"the output is {c:.4g} times the spec's in every row (the softmax weights or the "
        "result multiplied by a stray constant)", "find the constant the output is multiplied "
        "by (a normalisation, a dropout rescale, a scale applied twice) and remove it",
        lambda c_: True, lambda c_: {}), r, "fitted")


def _fitted_head_map(case: Case, values: dict, output, judge: _Judge) -> Match | None:
    """The kv head each query head reads, fitted head by head when no named alternative
    matches (any GQA / MHA head mapping bug: tile order, a wrong group size, reversed or
    shifted heads): query head h gets the kv head m whose all-heads-read-m alternative fits
    head h best; the map names the failure when the whole output then matches."""
    if case.kv_heads < 2 or case.q_len == 0 or case.k_len == 0:
        return None
    spec_map = [h // (case.q_heads // case.kv_heads) for h in range(case.q_heads)]
    head = np.arange(case.q_heads)[None, :, None]
    out = np.asarray(output.out, np.float64)
    lse = None if output.lse is None else np.asarray(output.lse, np.float64)
    alts = [_alt(case, values, {"kv_map": [m] * case.q_heads}) for m in range(case.kv_heads)]

    def head_residual(h, alt):
        """The residual of head h alone: every other head of the alternative is the output."""
        own = head == h
        return judge.judge(np.where(own[..., None], alt[0], out),
                           alt[1] if lse is None else np.where(own, alt[1], lse),
                           alt[2], lse_free=False)

    fitted = [min(range(case.kv_heads), key=lambda m: head_residual(h, alts[m]))
              for h in range(case.q_heads)]
    if fitted == spec_map:
        return None
    r = judge.judge(*_alt(case, values, {"kv_map": fitted}), lse_free=False)
    if r > 1.0:
        return None
    return Match(Explanation(
        f"gqa=head_map{fitted}".replace(" ", ""), "fitted", "gqa",
        f"query heads 0..{case.q_heads - 1} read kv heads {fitted} where the spec reads "
        f"{spec_map} (h // (Hq/Hkv))",
        "expand kv heads with repeat_interleave(Hq // Hkv, dim=1): query head h reads kv "
        "head h // (Hq/Hkv)", lambda c: True, lambda c: {"kv_map": fitted}), r, "fitted")


def _fitted_key_range(case: Case, judged: Callable[[dict], float]) -> Match | None:
    """Keys j >= t (or j < t) left out of every row, fitted over t when no named alternative
    matches: a kernel that drops its last partial key block (Tk not a multiple of the block)
    or its first block. The smallest residual <= 1 names the failure."""
    if case.k_len < 2 or case.q_len == 0 or (
            case.batch * case.q_heads * case.q_len * case.k_len > FIT_SIZE):
        return None
    found = []
    for t in _key_counts(case.k_len):
        for side, words in (("right", f"keys >= {t}"), ("left", f"keys < {case.k_len - t}")):
            keys = m.key_padding(t, side=side)
            mask = keys if case.mask is None else case.mask & keys
            try:
                found.append((judged({"mask": mask}), words, mask))
            except (ValueError, TypeError, KeyError, IndexError):
                continue
    if not found or min(x[0] for x in found) > 1.0:
        return None
    r, words, mask = min(found, key=lambda x: x[0])
    return Match(Explanation(
        f"keys=dropped({words.replace(' ', '')})", "fitted", "mask",
        f"{words} are left out of every row (a key block the kernel never visits, e.g. the "
        f"last partial block when Tk = {case.k_len} is not a multiple of the block size)",
        "visit every key block and mask the partial one (j < Tk), do not drop it",
        lambda c: True, lambda c, mask=mask: {"mask": mask}), r, "fitted")


def _key_counts(k_len: int) -> list[int]:
    """The numbers of kept keys t tried by :func:`_fitted_key_range`: every t for rows of up
    to 64 keys; else 1..16, Tk-16..Tk-1 and the block boundaries (Tk // B) B and Tk - B for
    every power of two B < Tk."""
    if k_len <= 64:
        return list(range(1, k_len))
    blocks = [1 << n for n in range(k_len.bit_length()) if 1 << n < k_len]
    near = [*range(1, 17), *range(k_len - 16, k_len)]
    return sorted({t for t in (*near, *((k_len // b) * b for b in blocks),
                               *(k_len - b for b in blocks)) if 0 < t < k_len})


def _golden(at: Callable[[float], float], x: float) -> tuple[float, float]:
    """(residual, log2 f): golden-section search of ``at`` within one grid step of ``x``."""
    lo, hi = x - 0.25, x + 0.25
    for _ in range(12):
        a, b = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        if at(a) <= at(b):
            hi = b
        else:
            lo = a
    return min((at(x), x), (at((lo + hi) / 2), (lo + hi) / 2))


def _safe_applies_fit(fit: Fit, case: Case) -> bool:
    try:
        return bool(fit.applies(case))
    except (ValueError, TypeError, KeyError, IndexError):
        return False


def _safe_applies(explanation: Explanation, case: Case) -> bool:
    try:
        return bool(explanation.applies(case))
    except (ValueError, TypeError, KeyError, IndexError):
        return False


def _resolved_kind(explanation: Explanation, case: Case, values: dict, compute,
                   weight: np.ndarray) -> str:
    """A finite masking constant is a policy when, against the same alternative masked with
    -inf, it changes only rows that -inf leaves empty; otherwise masked keys leaked (a bug)."""
    if explanation.kind != "empty_rows_only":
        return explanation.kind
    alt = compute(explanation)
    changes = {key: value for key, value in explanation.changes(case).items()
               if key not in ("masking", "constant")}
    with np.errstate(all="ignore"):
        base_out, base_lse, _ = alternative(case, values, **changes)
    empty = np.isneginf(base_lse)[..., None]
    changed = _rows_changed(alt[0], base_out, weight) & ~empty
    return "bug" if changed.any() else "policy"


def _pick(results: dict, case, values, model, compute, declared: list,
          precision: str | None):
    """(best Match or None, runners-up): among matches (residual <= 1), those within
    RUNNER_UP_FACTOR of the smallest residual (or all below 1/4) are near-ties; among them
    the backend's declared conventions come first, then policies, then the smallest residual,
    then fewer parts."""
    matches = [(r, e) for r, e in results.values() if r <= 1.0]
    if not matches:
        return None, []
    smallest = min(r for r, _ in matches)
    band = max(RUNNER_UP_FACTOR * smallest, 0.25)
    near = [(r, e) for r, e in matches if r <= band]

    def kind(e):
        if e.name == "spec":
            return "bug"
        return _resolved_kind(e, case, values, compute, model.out)

    def key(item):
        r, e = item
        if e.name == "spec":
            return (0, False, 0, r)
        parts = e.name.split(" + ")
        undeclared = sum(p not in declared for p in parts)
        return (undeclared, kind(e) != "policy", len(parts), r)

    near.sort(key=key)
    r, e = near[0]
    best = Match(e, r, "bug" if precision and case.dtype in ("float64", "float32") else kind(e),
                 precision)
    if e.name == "spec":
        best = Match(replace(e, name=f"computed_in={precision}", description=(
            f"the result was computed internally in {precision}, not {case.dtype}"),
            fix=f"compute in {case.dtype} (or declare the case dtype {precision})"),
            r, "bug", None)
    # a runner-up that is the best plus more parts says nothing more: not listed
    parts = set(best.name.split(" + "))
    runners = [Match(x, rr, kind(x), precision) for rr, x in near[1:]]
    return best, [m for m in runners if not parts < set(m.name.split(" + "))][:4]
