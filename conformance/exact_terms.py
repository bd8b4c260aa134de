"""The score terms of the exact engine (:mod:`refmask.conformance.exact`), in mpmath: input
conversion, ALiBi, the softmax of one row, and the score stages of spec 3.9 as outputs.

For batch b, query head h, kv head g, query i and every key j (masked keys included):

    scores_raw[b,h,i,j]        = t_ij = scale * <q_bhi, k_bgj>  (q times the temperature tau_i)
    scores_softcapped[b,h,i,j] = c_ij = cap * tanh(t_ij / cap)      (t_ij without softcap)
    scores_masked[b,h,i,j]     = c_ij + bias_bhij + alibi_bhij where keep(b, h, i, j),
                                 -inf where the mask drops the pair  (what the softmax reads)
    scores_probs[b,h,i,j]      = p_ij = exp(s_ij - lse_i) on kept keys with s_ij > -inf, else 0,
                                 before dropout (a sink's share is not a column)

An empty row (no kept key with a score above -inf, no sink) gets the probabilities of its
``empty_rows`` policy: "zero" 0, "nan" NaN on every key, "uniform" 1/Tk on every key,
"unmasked" the softmax of ``c + bias + alibi`` over all Tk keys ignoring the mask (NaN when
every one is -inf). These are the ``p_ij`` of the exact engine's module docstring, restated
here from the same text; nothing is shared with :mod:`refmask.attention`.
"""

from __future__ import annotations

import mpmath
import numpy as np

from refmask.case import Case, score_output_name


def _dims(case: Case) -> tuple:
    """(B, Hq, Hkv, Tq, Tk, Dqk, Dv) of the case."""
    return (case.batch, case.q_heads, case.kv_heads, case.q_len, case.k_len, case.qk_dim,
            case.v_dim)


def _to_mp(array: np.ndarray):
    """float64 array -> nested lists of mpf (exact)."""
    mpf = mpmath.mpf

    def convert(item):
        return [convert(x) for x in item] if isinstance(item, list) else mpf(item)

    return convert(array.tolist())


def _queries(x: dict):
    """q (B, Hq, Tq, Dqk) as nested lists of mpf, times the temperature ``tau_i`` of
    ``x["query_scale"]`` when there is one (exact products: spec 3.2.3 without rounding)."""
    q = _to_mp(x["q"])
    if "query_scale" not in x:
        return q
    tau = [mpmath.mpf(t) for t in x["query_scale"].tolist()]
    return [[[[tau[i] * value for value in row] for i, row in enumerate(head)] for head in b]
            for b in q]


def _alibi_terms(case: Case):
    """ALiBi biases as nested lists (B, Hq, Tq, Tk) of exact mpf, or None:
    ``m_bh * -|pq - pk|`` ("abs") or ``m_bh * (pk - pq)`` ("signed"), with ``pq - pk`` from
    :func:`_query_minus_key`."""
    alibi = case.alibi
    if alibi is None:
        return None
    batch, q_heads, _, q_len, k_len, _, _ = _dims(case)
    if alibi.num_heads != q_heads:
        raise ValueError(f"exact_attention: case {case.id!r} ALiBi has slopes for "
                         f"{alibi.num_heads} heads but Hq = {q_heads}")
    per_batch = isinstance(alibi.slopes[0], tuple)
    slopes = alibi.slopes if per_batch else (alibi.slopes,)
    if len(slopes) not in (1, batch):
        raise ValueError(f"exact_attention: case {case.id!r} ALiBi slopes are given for "
                         f"{len(slopes)} batches, B = {batch}")
    distance = _query_minus_key(case)
    mpf = mpmath.mpf
    terms = []
    for b in range(batch):
        row_slopes = slopes[b if len(slopes) > 1 else 0]
        head_terms = []
        for h in range(q_heads):
            slope = mpf(row_slopes[h])
            rows = []
            for i in range(q_len):
                d = [distance(b, i, j) for j in range(k_len)]
                if alibi.convention == "abs":
                    rows.append([slope * -abs(x) for x in d])
                else:
                    rows.append([slope * -x for x in d])
            head_terms.append(rows)
        terms.append(head_terms)
    return terms


def _query_minus_key(case: Case):
    """``(b, i, j) -> pq - pk`` (an int) of the case's ALiBi (spec 3.2.1).

    Without a layout: ``i + offset(b) - j``. With per-sequence positions (a span layout:
    packed or batched queries, keys in spans; paged keys are refused): query row i of
    sequence n at local index i', key slot j of sequence m at local index j'; the distance is
    ``i' + offset_n - j'`` when n == m and 0 otherwise, with offset_n 0 (top-left),
    ``k_len_n - q_len_n`` (bottom-right; q_len_n = Tq for batched queries) or the given
    cache offset (one, or one per sequence)."""
    alibi, batch, q_len, k_len = case.alibi, case.batch, case.q_len, case.k_len
    align = alibi.align
    if alibi.layout is None:
        offsets = [int(x) for x in align.offset_table(q_len, k_len)]
        if len(offsets) not in (1, batch):
            raise ValueError(f"exact_attention: case {case.id!r} ALiBi offsets are given for "
                             f"{len(offsets)} batches, B = {batch}")
        return lambda b, i, j: i + offsets[b if len(offsets) > 1 else 0] - j
    layout = alibi.layout
    if layout.block_table is not None:
        raise ValueError(f"exact_attention: case {case.id!r} uses ALiBi over paged keys, "
                         "which this engine does not restate")
    count = len(layout.k_lengths)
    packed = layout.q_starts is not None
    q_lengths = list(layout.q_lengths) if packed else [q_len] * count
    if align.kind == "top_left":
        offsets = [0] * count
    elif align.kind == "bottom_right" and align.q_lengths is None and align.k_lengths is None:
        offsets = [k - q for k, q in zip(layout.k_lengths, q_lengths, strict=True)]
    elif align.kind == "offset":
        offsets = [int(x) for x in align.offsets] * (count if len(align.offsets) == 1 else 1)
    else:
        raise ValueError(f"exact_attention: case {case.id!r} ALiBi alignment {align!r} is not "
                         "restated per sequence")
    key_home = {}  # key slot -> (sequence, local index)
    for n, (start, length) in enumerate(zip(layout.k_starts, layout.k_lengths, strict=True)):
        key_home.update({start + j: (n, j) for j in range(length)})
    query_home = {}  # (batch, row) -> (sequence, local index)
    for n in range(count):
        if packed:
            start = layout.q_starts[n]
            query_home.update({(0, start + i): (n, i) for i in range(q_lengths[n])})
        else:
            query_home.update({(n, i): (n, i) for i in range(q_len)})

    def distance(b, i, j):
        (n, local_q), (m, local_k) = query_home.get((b, i), (-1, 0)), key_home.get(j, (-2, 0))
        return local_q + offsets[n] - local_k if n == m else 0

    return distance


def _softmax(scores: dict, sink):
    """``{j: s_j}`` (finite or -inf, at least one term with the sink) -> (p, p_sink, lse).

    p: {j: p_j}; p_sink None without sink. Max-subtracted; exact at working precision."""
    mp = mpmath.mp
    terms = [s for s in scores.values() if s != mp.ninf]
    if sink is not None:
        terms.append(sink)
    top = max(terms)
    exps = {j: mp.exp(s - top) for j, s in scores.items()}
    exp_sink = None if sink is None else mp.exp(sink - top)
    total = mp.fsum(list(exps.values()) + ([] if exp_sink is None else [exp_sink]))
    lse = top + mp.log(total)
    p = {j: e / total for j, e in exps.items()}
    return p, (None if exp_sink is None else exp_sink / total), lse



def exact_score_stages(case: Case, x: dict) -> dict:
    """The case's score stages (``case.scores``) as nested lists (B, Hq, Tq, Tk) of mpf, keyed
    by :func:`refmask.case.score_output_name`; ``x`` holds the checked float64 BHTD inputs
    (with ``query_scale``, q is read as ``tau_i q_i``) and ``keep``. Call inside
    ``mpmath.workdps``."""
    if not case.scores:
        return {}
    mp = mpmath.mp
    batch, q_heads, kv_heads, q_len, k_len, _, _ = _dims(case)
    group = q_heads // kv_heads
    q, k = _queries(x), _to_mp(x["k"])
    bias = _to_mp(x["bias"]) if "bias" in x else None
    alibi = _alibi_terms(case)
    sinks = [mp.mpf(s) for s in x["sinks"].tolist()] if "sinks" in x else None
    scale = 1 / mp.sqrt(case.qk_dim) if case.scale is None else mp.mpf(case.scale)
    cap = None if case.softcap is None else mp.mpf(case.softcap)
    stages = {stage: [] for stage in ("raw", "softcapped", "masked", "probs")}
    for b in range(batch):
        per_batch = {stage: [] for stage in stages}
        for h in range(q_heads):
            per_head = {stage: [] for stage in stages}
            sink = None if sinks is None or sinks[h] == mp.ninf else sinks[h]
            for i in range(q_len):
                raw = [scale * mp.fdot(q[b][h][i], k[b][h // group][j]) for j in range(k_len)]
                capped = raw if cap is None else [cap * mp.tanh(t / cap) for t in raw]
                unmasked = [mp.fsum([c] + ([] if bias is None else [bias[b][h][i][j]])
                                    + ([] if alibi is None else [alibi[b][h][i][j]]))
                            for j, c in enumerate(capped)]
                keep = x["keep"][b, h, i].tolist()
                masked = [s if keep[j] else mp.ninf for j, s in enumerate(unmasked)]
                row = {"raw": raw, "softcapped": capped, "masked": masked,
                       "probs": _row_probs(case.empty_rows, masked, unmasked, sink)}
                for stage in stages:
                    per_head[stage].append(row[stage])
            for stage in stages:
                per_batch[stage].append(per_head[stage])
        for stage in stages:
            stages[stage].append(per_batch[stage])
    return {score_output_name(stage): stages[stage] for stage in case.scores}


def _row_probs(policy: str, masked: list, unmasked: list, sink) -> list:
    """``p_ij`` of one row (module docstring): the softmax of the live scores with the sink,
    0 elsewhere; an empty row by its policy."""
    mp = mpmath.mp
    k_len = len(masked)
    if k_len == 0:
        return []
    live = {j: s for j, s in enumerate(masked) if s != mp.ninf}
    if live or sink is not None:
        p, _, _ = _softmax(live, sink) if live else ({}, None, None)
        return [p.get(j, mp.mpf(0)) for j in range(k_len)]
    if policy == "zero":
        return [mp.mpf(0)] * k_len
    if policy == "uniform":
        return [mp.mpf(1) / k_len] * k_len
    if policy == "unmasked" and any(s != mp.ninf for s in unmasked):
        p, _, _ = _softmax(dict(enumerate(unmasked)), None)
        return [p[j] for j in range(k_len)]
    return [mp.nan] * k_len  # "nan", or "unmasked" over scores that are all -inf
