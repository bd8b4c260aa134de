"""Exact attention: the golden values of a case, at 50 significant digits, correctly rounded.

This module restates the attention semantics of the spec (design section 3) with mpmath
numbers. It shares no code with :mod:`refmask.attention`: the float64 reference and this
engine are two independent readings of one text, and each is tested against the other.

Inputs
------
``exact_attention(case, inputs)`` takes a :class:`~refmask.conformance.cases.Case` and its
inputs as produced by :func:`~refmask.case.case_inputs` (the default). Every
floating input (of any dtype: float64, float32, float16, bfloat16) is converted exactly to a
float64 and then exactly to an mpmath number: the golden is the exact answer *for the rounded
inputs of the case's dtype*. q, k, v and d_out must be finite; bias may hold -inf (a key with
score -inf gets no weight and no gradient) and sinks may hold -inf (that head has no sink), but
neither may hold +inf or NaN. A case with a temperature (``query_scale``, spec 3.2.3) reads
``q'_bhi = tau_i * q_bhi`` (exact, unrounded: rounding it to the compute dtype is a kernel's
rounding like any other) in place of q and reports ``dq = tau * dq'``.

Semantics, for batch b, query head h, kv head ``g = h // (Hq // Hkv)``, query i, key j
----------------------------------------------------------------------------------------
::

    t_ij  = scale * <q_bhi, k_bgj>     scale = the case's scale (its float64 value, exactly), or
                                       the real number 1/sqrt(Dqk) (not its float64 rounding)
    c_ij  = cap * tanh(t_ij / cap)     softcap (cap = the case's float64 value), else c = t
    s_ij  = c_ij + bias_bhij + alibi_bhij
            alibi = m_bh * (-|pq - pk|)   ("abs")  or  m_bh * (pk - pq)   ("signed"),
            pq = i + offset(b), pk = j, m the Alibi's float64 slopes taken exactly
    K_i   = { j : keep(b, h, i, j) and s_ij > -inf }          keep = case.keep(), True = attend
    lse_i = log( sum_{j in K_i} exp(s_ij) + exp(sink_h) )     natural log; no sink term if absent
    p_ij  = exp(s_ij - lse_i) for j in K_i, else 0;   p_sink_i = exp(sink_h - lse_i)
    f_ij  = dropout_keep_bhij / (1 - rate)  (rate taken exactly)   or 1 without dropout
    a_ij  = p_ij * f_ij;     o_i = sum_j a_ij v_bgj

A row is *empty* when K_i is empty and there is no sink (with a sink, lse_i = sink_h and
o_i = 0). An empty row has lse_i = -inf and, by the case's ``empty_rows`` policy:

    "zero":     o_i = 0, every gradient contribution 0
    "nan":      p_ij = NaN for every key j (masked ones too) -> o_i = NaN, dV NaN; dS_ij = NaN
                on kept keys and 0 on masked keys
    "uniform":  p_ij = 1 / Tk for every key -> o_i = mean_j a_ij v_bgj; dS_ij = 0
    "unmasked": p_ij = softmax_j(s_ij) over all Tk keys ignoring the mask (NaN if every s_ij is
                -inf); dS_ij = p_ij (dP_ij - D_i) on every key

With Tk = 0 every row is empty: "zero" gives o = 0, the other policies o = NaN (the mean or
softmax of no keys is 0/0). With Tq = 0 the outputs are empty arrays and dk, dv are zero.

Backward: the gradients of ``sum(d_out * out)`` (no upstream lse gradient), with
``dP_ij = <d_out_bhi, v_bgj> * f_ij``, ``D_i = sum_j p_ij dP_ij = <d_out_bhi, o_i>``:

    dS_ij    = p_ij * (dP_ij - D_i)       on j in K_i (0 elsewhere, except empty-row policies)
    dbias    = dS                         (B, Hq, Tq, Tk), the bias input's shape
    dsinks_h = -sum_{b, i} p_sink_i * D_i
    dT_ij    = dS_ij * sech(t_ij / cap)^2 (softcap; dT = dS without)
    dq_bhi   = scale * sum_j dT_ij k_bgj
    dk_bgj   = scale * sum_{h in group g} sum_i dT_ij q_bhi
    dv_bgj   = sum_{h in group g} sum_i a_ij d_out_bhi

``dP_ij - D_i`` is evaluated as ``(dP_ij - dP_ir) - sum_{l != r} p_il (dP_il - dP_ir) +
p_sink_i dP_ir`` with r the key of largest weight (the same number, rearranged), so that a
row whose weight is concentrated on one key (scores thousands apart) keeps every digit: the
naive difference would cancel completely.

Output
------
A dict of float64 NumPy arrays: ``out`` (q's layout, last dim Dv), ``lse`` (B, Hq, Tq),
``dq``/``dk``/``dv`` (shaped like q/k/v, in the case's layout), ``dbias`` (B, Hq, Tq, Tk; only
with a bias), ``dsinks`` (Hq,; only with sinks) and ``scores_<stage>`` (B, Hq, Tq, Tk; the
stages the case asks for, :mod:`~refmask.conformance.exact_terms`). Every entry is the
50-digit value rounded once to the nearest float64 (ties to even, subnormals included, beyond
the largest float64 -> inf): pure integer arithmetic, so the result is bit-identical on every
machine and Python.
An exact zero is +0.0; a nonzero value below half the smallest subnormal rounds to a zero of
its own sign (-0.0 when negative), as IEEE rounding does; NaN is the canonical quiet NaN.

The work happens inside ``mpmath.workdps(50)``: the global mpmath precision is left as found.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor

import mpmath
import numpy as np

from refmask.case import partial_cases, to_bhtd

from .cases import Case, case_inputs
from .exact_terms import _alibi_terms, _dims, _queries, _softmax, _to_mp, exact_score_stages

#: Significant decimal digits of every intermediate value.
DIGITS = 50

#: The generator string recorded in golden manifests.
GENERATOR = "refmask.conformance.exact (mpmath, 50 digits)"

#: Names of the arrays :func:`exact_attention` returns, in this order (those after dv optional).
OUTPUT_NAMES = ("out", "lse", "dq", "dk", "dv", "dbias", "dsinks", "scores_raw",
                "scores_softcapped", "scores_masked", "scores_probs")

EMPTY_ROW_POLICIES = ("zero", "nan", "uniform", "unmasked")
LAYOUTS = ("BHTD", "BTHD")


# --- rounding ----------------------------------------------------------------------------------

def to_float64(x: mpmath.mpf) -> float:
    """The float64 nearest to the mpmath number ``x`` (ties to even; subnormals and overflow to
    +-inf rounded correctly), computed with Python integers only.

    ``float(mpf)`` is not used: it rounds to 53 bits first and then again for a subnormal.
    """
    sign, man, exp, _ = x._mpf_
    if not man:
        if x == 0:
            return 0.0
        return float(x)  # +-inf, nan: exact
    try:
        magnitude = float(man << exp) if exp >= 0 else man / (1 << -exp)
    except OverflowError:
        magnitude = math.inf
    return -magnitude if sign else magnitude


def _rounded(values, shape: tuple) -> np.ndarray:
    """A nested list (or flat list) of mpmath numbers -> float64 array of ``shape``."""
    flat = []

    def walk(item):
        if isinstance(item, list):
            for element in item:
                walk(element)
        else:
            flat.append(to_float64(item))

    walk(values)
    return np.asarray(flat, dtype=np.float64).reshape(shape)


# --- input checking ----------------------------------------------------------------------------

def _layout_shape(layout: str, batch: int, heads: int, length: int, dim: int) -> tuple:
    if layout == "BTHD":
        return (batch, length, heads, dim)
    return (batch, heads, length, dim)


def _check_case(case: Case) -> None:
    where = "exact_attention"
    if not isinstance(case, Case):
        raise TypeError(f"{where}: case must be a refmask Case, got {type(case).__name__}")
    if case.layout not in LAYOUTS:
        raise ValueError(f"{where}: case.layout must be one of {list(LAYOUTS)}, got "
                         f"{case.layout!r}")
    if case.empty_rows not in EMPTY_ROW_POLICIES:
        raise ValueError(f"{where}: case.empty_rows must be one of {list(EMPTY_ROW_POLICIES)}, "
                         f"got {case.empty_rows!r}")
    batch, q_heads, kv_heads, q_len, k_len, qk_dim, v_dim = _dims(case)
    if min(batch, q_len, k_len, v_dim) < 0 or min(q_heads, kv_heads, qk_dim) < 1:
        raise ValueError(f"{where}: case {case.id!r} has invalid sizes "
                         f"(B, Hq, Hkv, Tq, Tk, Dqk, Dv) = {_dims(case)}")
    if q_heads % kv_heads:
        raise ValueError(f"{where}: case {case.id!r} has Hq = {q_heads}, not a multiple of "
                         f"Hkv = {kv_heads}")
    if case.softcap is not None and not (math.isfinite(case.softcap) and case.softcap > 0):
        raise ValueError(f"{where}: case {case.id!r} softcap must be finite and > 0, got "
                         f"{case.softcap!r}")
    if case.scale is not None and not math.isfinite(case.scale):
        raise ValueError(f"{where}: case {case.id!r} scale must be finite, got {case.scale!r}")
    if case.dropout_rate is not None and not 0.0 <= case.dropout_rate < 1.0:
        raise ValueError(f"{where}: case {case.id!r} dropout_rate must lie in [0, 1), got "
                         f"{case.dropout_rate!r}")


def _checked_inputs(case: Case, inputs: Mapping) -> dict:
    """The inputs as float64 (B, H, T, D) arrays (exact upcasts), checked against the case."""
    where = "exact_attention"
    batch, q_heads, kv_heads, q_len, k_len, qk_dim, v_dim = _dims(case)
    scores = (batch, q_heads, q_len, k_len)
    expected = {
        "q": _layout_shape(case.layout, batch, q_heads, q_len, qk_dim),
        "k": _layout_shape(case.layout, batch, kv_heads, k_len, qk_dim),
        "v": _layout_shape(case.layout, batch, kv_heads, k_len, v_dim),
        "d_out": _layout_shape(case.layout, batch, q_heads, q_len, v_dim),
    }
    if case.bias:
        expected["bias"] = scores
    if case.sinks:
        expected["sinks"] = (q_heads,)
    if case.dropout_rate is not None:
        expected["dropout_keep"] = scores
    if case.query_scale is not None:
        expected["query_scale"] = (q_len,)
    unknown = set(inputs) - set(expected)
    if unknown:
        raise ValueError(f"{where}: inputs has tensors {sorted(unknown)} that case "
                         f"{case.id!r} does not use")
    checked = {}
    for name, shape in expected.items():
        if name not in inputs:
            raise ValueError(f"{where}: inputs lacks {name!r}, required by case {case.id!r}")
        array = np.asarray(inputs[name])
        if array.shape != shape:
            raise ValueError(f"{where}: inputs[{name!r}] has shape {array.shape}, case "
                             f"{case.id!r} needs {shape}")
        if name == "dropout_keep":
            if array.dtype != np.bool_:
                raise TypeError(f"{where}: inputs['dropout_keep'] must be bool, got "
                                f"{array.dtype}")
            checked[name] = array
            continue
        value = array.astype(np.float64)  # exact for every float format narrower than float64
        if not np.array_equal(value.astype(array.dtype), array, equal_nan=True):
            raise TypeError(f"{where}: inputs[{name!r}] of dtype {array.dtype} does not convert "
                            "exactly to float64")
        may_be_minus_inf = name in ("bias", "sinks")
        bad = np.isnan(value) | (value == np.inf) if may_be_minus_inf else ~np.isfinite(value)
        if bad.any():
            allowed = f" ({name} may hold -inf)" if may_be_minus_inf else ""
            raise ValueError(f"{where}: inputs[{name!r}] holds a non-finite value at index "
                             f"{tuple(int(n) for n in np.argwhere(bad)[0])}{allowed}")
        if case.layout == "BTHD" and name in ("q", "k", "v", "d_out"):
            value = value.transpose(0, 2, 1, 3)
        checked[name] = value
    keep = np.asarray(case.keep())
    if keep.shape != scores or keep.dtype != np.bool_:
        raise ValueError(f"{where}: case {case.id!r} keep() gave {keep.dtype} {keep.shape}, "
                         f"expected bool {scores}")
    checked["keep"] = keep
    return checked


# --- the exact computation (inside workdps) ----------------------------------------------------

def _score_grads(p: dict, p_sink, d_probs: dict) -> dict:
    """``dS_j = p_j (dP_j - D)``, ``D = sum_l p_l dP_l``, without cancellation (see module
    docstring): ``dP_j - D = (dP_j - dP_r) - sum_{l != r} p_l (dP_l - dP_r) + p_sink dP_r``."""
    mp = mpmath.mp
    if not p:
        return {}
    r = max(p, key=lambda j: (p[j], -j))
    ref = d_probs[r]
    spread = mp.fsum(p[j] * (d_probs[j] - ref) for j in p if j != r)
    sink_term = 0 if p_sink is None else p_sink * ref
    return {j: p[j] * mp.fsum((d_probs[j] - ref, -spread, sink_term)) for j in p}


def _exact_values(case: Case, x: dict) -> dict:
    """Every output as nested lists of mpf in (B, H, T, D) order (see module docstring)."""
    mp = mpmath.mp
    fdot, fsum, mpf = mp.fdot, mp.fsum, mp.mpf
    zero, nan, ninf = mpf(0), mp.nan, mp.ninf
    batch, q_heads, kv_heads, q_len, k_len, qk_dim, v_dim = _dims(case)
    group = q_heads // kv_heads
    policy = case.empty_rows

    q = _queries(x)
    k, v, d_out = (_to_mp(x[name]) for name in ("k", "v", "d_out"))
    # value and key columns: (B, Hkv, D, Tk) for dot products over keys
    v_cols = [[[[v[b][g][j][d] for j in range(k_len)] for d in range(v_dim)]
               for g in range(kv_heads)] for b in range(batch)]
    k_cols = [[[[k[b][g][j][d] for j in range(k_len)] for d in range(qk_dim)]
               for g in range(kv_heads)] for b in range(batch)]
    bias = _to_mp(x["bias"]) if "bias" in x else None
    alibi = _alibi_terms(case)
    sinks = [mpf(s) for s in x["sinks"].tolist()] if "sinks" in x else None
    drop = x.get("dropout_keep")
    factor = None if drop is None else 1 / (1 - mpf(case.dropout_rate))
    scale = 1 / mp.sqrt(qk_dim) if case.scale is None else mpf(case.scale)
    cap = None if case.softcap is None else mpf(case.softcap)
    keep = x["keep"]

    out, lse, dq = [], [], []
    weights, d_raw, d_scores = [], [], []  # (B, Hq, Tq, Tk)
    dsink_terms = [[] for _ in range(q_heads)]
    for b in range(batch):
        out_b, lse_b, dq_b, w_b, dt_b, ds_b = [], [], [], [], [], []
        for h in range(q_heads):
            g = h // group
            out_h, lse_h, dq_h, w_h, dt_h, ds_h = [], [], [], [], [], []
            for i in range(q_len):
                row = _row(policy, q[b][h][i], k[b][g], v[b][g], d_out[b][h][i],
                           v_cols[b][g], keep[b, h, i].tolist(),
                           None if bias is None else bias[b][h][i],
                           None if alibi is None else alibi[b][h][i],
                           None if sinks is None or sinks[h] == ninf else sinks[h],
                           None if drop is None else drop[b, h, i].tolist(), factor, scale,
                           cap, k_len, v_dim, (fdot, fsum, zero, nan, ninf))
                o_i, lse_i, a_i, dt_i, ds_i, dsink_i = row
                out_h.append(o_i)
                lse_h.append(lse_i)
                w_h.append(a_i)
                dt_h.append(dt_i)
                ds_h.append(ds_i)
                if dsink_i is not None:
                    dsink_terms[h].append(dsink_i)
                dq_h.append([scale * fdot(dt_i, k_cols[b][g][d]) for d in range(qk_dim)])
            for part, value in ((out_b, out_h), (lse_b, lse_h), (dq_b, dq_h), (w_b, w_h),
                                (dt_b, dt_h), (ds_b, ds_h)):
                part.append(value)
        for part, value in ((out, out_b), (lse, lse_b), (dq, dq_b), (weights, w_b),
                            (d_raw, dt_b), (d_scores, ds_b)):
            part.append(value)

    dk, dv = [], []
    for b in range(batch):
        dk_b, dv_b = [], []
        for g in range(kv_heads):
            rows = [(h, i) for h in range(g * group, (g + 1) * group) for i in range(q_len)]
            q_cols = [[q[b][h][i][d] for h, i in rows] for d in range(qk_dim)]
            do_cols = [[d_out[b][h][i][d] for h, i in rows] for d in range(v_dim)]
            dk_g, dv_g = [], []
            for j in range(k_len):
                dt_col = [d_raw[b][h][i][j] for h, i in rows]
                w_col = [weights[b][h][i][j] for h, i in rows]
                dk_g.append([scale * fdot(dt_col, q_cols[d]) for d in range(qk_dim)])
                dv_g.append([fdot(w_col, do_cols[d]) for d in range(v_dim)])
            dk_b.append(dk_g)
            dv_b.append(dv_g)
        dk.append(dk_b)
        dv.append(dv_b)

    values = {"out": out, "lse": lse, "dq": dq, "dk": dk, "dv": dv}
    if bias is not None:
        values["dbias"] = d_scores
    if sinks is not None:
        values["dsinks"] = [-fsum(terms) for terms in dsink_terms]
    return values


def _row(policy, q_i, k_g, v_g, do_i, v_cols, keep_i, bias_i, alibi_i, sink, drop_i,
         factor, scale, cap, k_len, v_dim, ops):
    """One query row: (o_i, lse_i, a_i, dT_i, dS_i, dsink term or None); a/dT/dS per key."""
    fdot, fsum, zero, nan, ninf = ops
    mp = mpmath.mp
    kept = [j for j in range(k_len) if keep_i[j]]
    needed = range(k_len) if policy == "unmasked" else kept
    scores, slope = {}, {}  # slope: d s / d t (sech^2 with softcap)
    for j in needed:
        t = scale * fdot(q_i, k_g[j])
        if cap is not None:
            u = t / cap
            t = cap * mp.tanh(u)
            slope[j] = mp.sech(u) ** 2
        extra = [t]
        if bias_i is not None:
            extra.append(bias_i[j])
        if alibi_i is not None:
            extra.append(alibi_i[j])
        scores[j] = fsum(extra) if len(extra) > 1 else t

    one = mp.mpf(1)

    def dropped(j):  # the dropout factor f_ij as an mpf
        return one if drop_i is None else (factor if drop_i[j] else zero)

    def d_probs(js):
        return {j: fdot(do_i, v_g[j]) * dropped(j) for j in js}

    live = {j: scores[j] for j in kept if scores[j] != ninf}
    weights = [zero] * k_len
    d_s = [zero] * k_len
    empty = not live and sink is None
    if not empty:
        p, p_sink, lse = _softmax(live, sink)
        for j in p:
            weights[j] = p[j] * dropped(j)
        d_p = d_probs(p)
        for j, value in _score_grads(p, p_sink, d_p).items():
            d_s[j] = value
        dsink = None
        if p_sink is not None:
            dsink = p_sink * fsum(p[j] * d_p[j] for j in p)  # p_sink * D_i
    else:
        lse, dsink = ninf, None
        if k_len == 0:  # no keys at all: nothing to weight or differentiate
            return [zero if policy == "zero" else nan] * v_dim, lse, [], [], [], None
        if policy == "nan":
            weights = [nan] * k_len
            for j in kept:
                d_s[j] = nan
        elif policy == "uniform":
            weights = [dropped(j) / k_len for j in range(k_len)]
        elif policy == "unmasked":  # the softmax of the scores before masking, on every key
            if all(s == ninf for s in scores.values()):
                weights = [nan] * k_len
                d_s = [nan] * k_len
            else:
                p, _, _ = _softmax(scores, None)
                weights = [p[j] * dropped(j) for j in range(k_len)]
                grads = _score_grads(p, None, d_probs(range(k_len)))
                d_s = [grads[j] for j in range(k_len)]
    if empty and policy == "zero":
        o_i = [zero] * v_dim
    else:
        o_i = [fdot(weights, v_cols[d]) for d in range(v_dim)]
    d_t = [d_s[j] * slope[j] if j in slope else d_s[j] for j in range(k_len)]
    return o_i, lse, weights, d_t, d_s, dsink


# --- public API --------------------------------------------------------------------------------

def exact_attention(case: Case, inputs: Mapping | None = None) -> dict:
    """The golden outputs of ``case`` (see the module docstring for the formulas).

    case: a :class:`~refmask.conformance.cases.Case`.
    inputs: its inputs; default ``case_inputs(case)`` (regenerated bit for bit).

    Returns ``{"out", "lse", "dq", "dk", "dv"[, "dbias"][, "dsinks"][, "scores_<stage>"...]}``
    (and for a split-KV case "partial_out" (P, B, Hq, Tq, Dv) and "partial_lse" (P, B, Hq,
    Tq)) -> float64 arrays, each entry the correctly rounded 50-digit value.
    """
    _check_case(case)
    if inputs is None:
        inputs = case_inputs(case)
    if not isinstance(inputs, Mapping):
        raise TypeError(f"exact_attention: inputs must be a mapping of tensor name -> array, "
                        f"got {type(inputs).__name__}")
    checked = _checked_inputs(case, inputs)
    tau = checked.get("query_scale")
    with mpmath.workdps(DIGITS):
        values = _exact_values(case, checked)
        if tau is not None:  # dq = tau * dq'
            values["dq"] = [[[[mpmath.mpf(tau[i]) * x for x in row]
                              for i, row in enumerate(head)] for head in batch_dq]
                            for batch_dq in values["dq"]]
        values.update(exact_score_stages(case, checked))
    batch, q_heads, kv_heads, q_len, k_len, qk_dim, v_dim = _dims(case)
    bhtd = {
        "out": (batch, q_heads, q_len, v_dim), "lse": (batch, q_heads, q_len),
        "dq": (batch, q_heads, q_len, qk_dim), "dk": (batch, kv_heads, k_len, qk_dim),
        "dv": (batch, kv_heads, k_len, v_dim), "dbias": (batch, q_heads, q_len, k_len),
        "dsinks": (q_heads,),
        **{name: (batch, q_heads, q_len, k_len) for name in OUTPUT_NAMES[7:]},
    }
    result = {}
    for name in OUTPUT_NAMES:
        if name not in values:
            continue
        array = _rounded(values[name], bhtd[name])
        if case.layout == "BTHD" and name in ("out", "dq", "dk", "dv"):
            array = np.ascontiguousarray(array.transpose(0, 2, 1, 3))
        result[name] = array
    if case.key_splits:
        parts = [exact_attention(part, inputs) for part in partial_cases(case)]
        result["partial_out"] = np.stack([to_bhtd(part, value["out"])
                                          for part, value in zip(partial_cases(case), parts,
                                                                 strict=True)])
        result["partial_lse"] = np.stack([value["lse"] for value in parts])
    return result


def case_golden(case: Case) -> tuple:
    """``(inputs, exact outputs)`` of one case: ``case_inputs(case)`` and
    :func:`exact_attention` of them (the unit of work of :func:`exact_many`)."""
    inputs = case_inputs(case)
    return inputs, exact_attention(case, inputs)


def exact_many(cases: Iterable[Case], *, processes: int | None = None) -> Iterator[tuple]:
    """Yield ``(case, inputs, outputs)`` for every case, in the order given.

    processes: None or 1 (default) computes in this process; n > 1 uses n worker processes
    started with the "spawn" method (no inherited state), which -- as for any spawned
    multiprocessing -- needs the calling script's top level under
    ``if __name__ == "__main__":``. Each case is computed independently and deterministically,
    so the results do not depend on ``processes``.
    """
    cases = list(cases)
    for index, case in enumerate(cases):
        if not isinstance(case, Case):
            raise TypeError(f"exact_many: cases[{index}] must be a refmask Case, got "
                            f"{type(case).__name__}")
        _check_case(case)
    if processes is None:
        processes = 1
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"exact_many: processes must be an int >= 1 or None, got {processes!r}")
    if processes == 1 or len(cases) <= 1:
        for case in cases:
            yield (case, *case_golden(case))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        for case, (inputs, outputs) in zip(cases, pool.map(case_golden, cases), strict=True):
            yield case, inputs, outputs
