"""Numba tile kernels of the fast path (float64, one work item per call of the inner loop).

Tiles are stored transposed, key-major: for query tile r and key tile c,

    S^T[jj, ii] = s(i0 + ii, j0 + jj),   i0 = r * Bq, j0 = c * Bk,   shape (Bk, Bq)

so that every per-query quantity (row maximum, row sum, shift) is a contiguous vector over
``ii`` and the element loops vectorise. Products are NN ``np.dot`` on C-contiguous tiles
(operands stored pre-transposed where needed), which Numba hands to BLAS ``dgemm``.

Scores of one tile, in the order of the reference (docs/spec.md section 3.2):

    t   = K_c (scale Q_r)^T                          then c = cap * tanh(t / cap)   (softcap)
    s   = c + bias[b, h, i, j] + m_bh * dist(b, i, j)                               (ALiBi)
    s   = -inf  where the tile is PARTIAL and not keep[i, j], and for padding j >= Tk

ALiBi: ``dist = -|pq - pk|`` ("abs", kind 1) or ``pk - pq`` ("signed", kind 2), with
``pq = i + offset(b)``, ``pk = j``; kind 0 = no ALiBi.

The exponential is :func:`exp_lanes`, a branch-free vectorisable ``exp`` (Cody-Waite
reduction, degree-11 polynomial, 2^n built in the exponent bits): relative error below
5e-16 on [-708, 0] (measured against mpmath), exactly 0 below -708 (such terms are below
2^-1021 of the row's largest term, which is 1), NaN for NaN; ~4x faster than libm's exp.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._inputs import ALIBI_ABS, NO_ALIBI

_OPTIONS = dict(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_FLOOR = -708.0
_ROUNDER = 6755399441055744.0  # 1.5 * 2^52
# exp(r) on |r| <= ln2/2: degree-11 Chebyshev interpolant (50-digit mpmath fit, relative
# error 4.2e-18 before rounding), coefficients of r^2 .. r^11 (those of 1 and r are 1).
_P2 = 0.5000000000000019
_P3 = 0.1666666666666668
_P4 = 0.0416666666664881
_P5 = 0.008333333333319601
_P6 = 0.0013888888952314775
_P7 = 0.00019841269890047113
_P8 = 2.4801485482328494e-05
_P9 = 2.755724091857897e-06
_P10 = 2.763263963904103e-07
_P11 = 2.5110037605963777e-08



@intrinsic
def _int64_bits_as_float64(typingctx, bits):
    """Reinterpret the 64 bits of an int64 as a float64 (an LLVM bitcast, vectorisable)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _fetch_add(typingctx, counter, increment):
    """``old = counter[0]; counter[0] += increment; return old`` as one atomic operation
    (sequentially consistent), for a 1-D int64 array shared by the threads of a call."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", array.data, args[1], "seq_cst")

    return types.int64(types.Array(types.int64, 1, "C"), types.int64), codegen


@njit(**_OPTIONS)
def claim_item(counter):
    """The index of the next unclaimed work item, ``counter[0]`` (then advanced by one,
    atomically): the threads of a call share one queue of items through ``counter`` (1,)
    int64, each taking the next item when it finishes one (an index >= the item count: none
    left)."""
    return _fetch_add(counter, 1)


@njit(**_OPTIONS)
def scratch(shape, poison):
    """An uninitialised float64 scratch array of ``shape``, filled with NaN when ``poison``.

    Every kernel takes its scratch from here: with ``poison`` (REFMASK_FAST_POISON=1, see
    ``_run.poison_requested``) a read of an entry the kernel did not write first turns into
    NaN in the result instead of an intermittent wrong number.
    """
    out = np.empty(shape)
    if poison:
        out.fill(np.nan)
    return out


@intrinsic
def _float64_bits_as_int64(typingctx, value):
    """Reinterpret the 64 bits of a float64 as an int64 (an LLVM bitcast, vectorisable)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@njit(**_OPTIONS)
def exp_lanes(x):
    """``exp(x)`` for x <= 709, branch-free (inlined into the callers' vectorised loops):

        exp(x) = P(r) * 2^n,  n = round(x / ln 2),  r = x - n ln 2 (two-part ln 2),
        |r| <= ln2/2, P a degree-11 Chebyshev fit (error 4e-18 before rounding, Estrin order)

    n is rounded by adding 1.5 * 2^52 (``_ROUNDER``; |x / ln 2| <= 1022 here), which leaves
    n in the low bits of the sum, so 2^n is that sum's bits plus 1023, shifted into the
    exponent field (no float -> int conversion). x < -708 (including -inf) gives 0 (such
    terms are below 2^-1021 of a row's largest term, 1), NaN gives NaN.
    """
    xc = _EXP_FLOOR if x < _EXP_FLOOR else x
    rounded = xc * _LOG2E + _ROUNDER
    n = rounded - _ROUNDER
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    low = (1.0 + r) + r2 * (_P2 + r * _P3)
    mid = (_P4 + r * _P5) + r2 * (_P6 + r * _P7)
    high = (_P8 + r * _P9) + r2 * (_P10 + r * _P11)
    poly = (low + r4 * mid) + (r4 * r4) * high
    value = poly * _int64_bits_as_float64((_float64_bits_as_int64(rounded) + 1023) << 52)
    return 0.0 if x < _EXP_FLOOR else value


@njit(**_OPTIONS)
def exp_shifted(scores, shift, log_scale, out, row_sums):
    """``out[jj, ii] = exp(x)``, ``x = (scores[jj, ii] - shift[ii]) - log_scale[ii]``, and
    ``row_sums[ii] += sum_jj out`` (:func:`exp_lanes`; requires x <= 709, here x <= 0:
    shift is the row maximum). The backward passes shift = row max M and log_scale = log L
    separately instead of lse = M + log L: lse rounded to ulp(|M|) would cost large scores
    that many ulps of relative accuracy in p. One branch-free loop that LLVM vectorises
    (``out`` must not alias ``scores``: a runtime alias check would fall back to scalars).
    """
    for jj in range(scores.shape[0]):
        for ii in range(scores.shape[1]):
            value = exp_lanes((scores[jj, ii] - shift[ii]) - log_scale[ii])
            out[jj, ii] = value
            row_sums[ii] += value


@njit(**_OPTIONS)
def exp_rows(scores, shift, out, row_sums):
    """:func:`exp_shifted` without log_scale (the forward): ``out[jj, ii] =
    exp(scores[jj, ii] - shift[ii])``, ``row_sums[ii] += sum_jj out``."""
    for jj in range(scores.shape[0]):
        for ii in range(scores.shape[1]):
            value = exp_lanes(scores[jj, ii] - shift[ii])
            out[jj, ii] = value
            row_sums[ii] += value


@njit(**_OPTIONS)
def band_offset(band, b):
    """offset_b of a band rule ``[1, low, high, offset_0, ...]`` (offset_0 for every b when
    there is one)."""
    return band[3] if band.shape[0] == 4 else band[3 + b]


@njit(**_OPTIONS)
def kept_at(keep_blocks, keep_index, band, b, i, j, ii, jj):
    """keep(b, h, i, j) inside a PARTIAL tile, i = i0 + ii, j = j0 + jj: with a band rule
    (band[0] == 1) ``low <= (i + offset_b) - j <= high``, else its keep block
    ``keep_blocks[keep_index, jj, ii]``."""
    if band[0] != 0:
        distance = i + band_offset(band, b) - j
        return (distance >= band[1]) & (distance <= band[2])
    return keep_blocks[keep_index, jj, ii]


@njit(**_OPTIONS)
def max_nan(a, b):
    """``max(a, b)``, NaN if either is NaN (a select, vectorisable)."""
    return a if (a > b) | (a != a) else b


@njit(**_OPTIONS)
def column_max(scores, out):
    """``out[ii] = max(out[ii], max_jj scores[jj, ii])`` (NaN if any is NaN, :func:`max_nan`).

    Four rows of ``scores`` per pass over ``out``: ``out`` is loaded and stored once per
    pass, so the chain of store-to-load dependencies it carries is a quarter as long (one
    row per pass ran ~3x slower, bound by that latency, not by the comparisons).
    """
    rows = scores.shape[0]
    whole = rows - rows % 4
    for jj in range(0, whole, 4):
        for ii in range(scores.shape[1]):
            top = max_nan(max_nan(scores[jj, ii], scores[jj + 1, ii]),
                          max_nan(scores[jj + 2, ii], scores[jj + 3, ii]))
            out[ii] = max_nan(top, out[ii])
    for jj in range(whole, rows):
        for ii in range(scores.shape[1]):
            out[ii] = max_nan(scores[jj, ii], out[ii])


@njit(**_OPTIONS)
def tile_scores(scores, tanh_t, tile_max, b, h, i0, j0, q_len, k_len, softcap, bias, has_bias,
                alibi_slopes, alibi_offsets, alibi_kind, keep_blocks, keep_index, band):
    """Turn ``scores = t^T = K_c (scale Q_r)^T`` (Bk, Bq) into the masked scores ``s^T`` in
    place, and ``tile_max[ii] = max_jj s^T[jj, ii]`` (NaN if any is NaN).

    Every entry of ``scores`` and (with softcap) of ``tanh_t`` is written, padding rows
    included (padding: s = -inf, tanh = 0), so no later step reads a stale value.

    The scale is folded into the query tiles (exact when scale is a power of two, as
    1/sqrt(64); otherwise within an ulp of ``scale * (q . k)``). tanh_t receives
    tanh(t / cap) when softcap > 0 (its gradient needs it). Rows beyond Tk are set to -inf;
    columns beyond Tq get no bias (their results are discarded).
    """
    block_k, block_q = scores.shape
    n_cols = min(block_k, k_len - j0)
    n_rows = min(block_q, q_len - i0)
    tile_max[:] = -np.inf
    for jj in range(block_k):
        if jj >= n_cols:
            for ii in range(block_q):
                scores[jj, ii] = -np.inf
            if softcap > 0.0:
                for ii in range(block_q):
                    tanh_t[jj, ii] = 0.0
            continue
        if softcap > 0.0:
            for ii in range(block_q):
                th = math.tanh(scores[jj, ii] / softcap)
                tanh_t[jj, ii] = th
                scores[jj, ii] = softcap * th
    if has_bias:
        bb = b if bias.shape[0] > 1 else 0
        bh = h if bias.shape[1] > 1 else 0
        for ii in range(n_rows):
            bi = i0 + ii if bias.shape[2] > 1 else 0
            if bias.shape[3] > 1:
                for jj in range(n_cols):
                    scores[jj, ii] = scores[jj, ii] + bias[bb, bh, bi, j0 + jj]
            else:
                for jj in range(n_cols):
                    scores[jj, ii] = scores[jj, ii] + bias[bb, bh, bi, 0]
    if alibi_kind != NO_ALIBI:
        slope = alibi_slopes[b if alibi_slopes.shape[0] > 1 else 0, h]
        offset = alibi_offsets[b if alibi_offsets.shape[0] > 1 else 0]
        for jj in range(n_cols):
            pk = j0 + jj
            for ii in range(n_rows):
                pq = i0 + ii + offset
                dist = -abs(pq - pk) if alibi_kind == ALIBI_ABS else pk - pq
                scores[jj, ii] = scores[jj, ii] + slope * np.float64(dist)
    if keep_index >= 0:
        for jj in range(n_cols):
            for ii in range(block_q):
                if not kept_at(keep_blocks, keep_index, band, b, i0 + ii, j0 + jj, ii, jj):
                    scores[jj, ii] = -np.inf
    column_max(scores, tile_max)  # padding rows hold -inf


@njit(**_OPTIONS)
def plain_span_scores(scores, span_max, span_keep, keep_blocks, band, b, i0, j0, block_k,
                      valid_keys, counts):
    """:func:`tile_scores` of a whole span without softcap, bias or ALiBi, in one pass:

        s^T[jj, ii] = t^T[jj, ii]   kept;   -inf  where tile x of the span is PARTIAL and
                                            not keep(b, i0 + ii, j0 + jj) (:func:`kept_at`;
                                            a band rule evaluated in the loop), or for
                                            padding rows jj >= valid_keys (keys past Tk)
        span_max[ii] = max(span_max[ii], max_jj s^T[jj, ii])        (NaN if any is NaN)

    scores (n Bk, Bq) holds the span's t^T; span_keep (n,) the keep-block index of each of
    its tiles (-1: FULL). counts[0] += FULL tiles, counts[1] += PARTIAL tiles. Branch-free
    element loops (selects), so they vectorise.
    """
    block_q = scores.shape[1]
    for x in range(span_keep.shape[0]):
        keep_index = span_keep[x]
        if keep_index < 0:
            counts[0] += 1
            continue
        counts[1] += 1
        if band[0] != 0:
            low, high = band[1], band[2]
            for jj in range(block_k):
                row = x * block_k + jj
                first = i0 + band_offset(band, b) - (j0 + row)  # the distance at ii = 0
                for ii in range(block_q):
                    kept = (first + ii >= low) & (first + ii <= high)
                    scores[row, ii] = scores[row, ii] if kept else -np.inf
            continue
        for jj in range(block_k):
            row = x * block_k + jj
            for ii in range(block_q):
                kept = keep_blocks[keep_index, jj, ii]
                scores[row, ii] = scores[row, ii] if kept else -np.inf
    for jj in range(max(0, valid_keys), scores.shape[0]):
        for ii in range(block_q):
            scores[jj, ii] = -np.inf
    column_max(scores, span_max)


@njit(**_OPTIONS)
def forward_items(items, counter, tile_col, tile_keep, keep_blocks, band, q_rows, k_rows, v_rows,
                  vT_t, scale, block_k, span_tiles, softcap, bias, has_bias, alibi_slopes,
                  alibi_offsets, alibi_kind, sinks, has_sinks, q_len, k_len, group_size, out_t,
                  lse_t, max_t, log_sum_t, counts, poison):
    """Blocked online softmax for work items ``(b, h, r, start, stop)``: query tile r of
    batch b, head h, over the non-empty key tiles ``tile_col[start:stop]`` (ascending).
    Each call (one per thread) takes items from the queue shared through ``counter``
    (:func:`claim_item`) until none is left, so the threads finish within one item of each
    other whatever the load on the machine.

    Consecutive key tiles c0, c0 + 1, ... (at most ``span_tiles``) form one *span* of keys
    [c0 Bk, (c0 + n) Bk): one product S^T = K_span Q_r^T and one acc^T += V_span^T P^T per
    span, the mask (keep blocks or the band rule of PARTIAL tiles, :func:`kept_at`), bias,
    ALiBi and softcap per tile inside it (without softcap, bias and ALiBi: one pass over
    the span, :func:`plain_span_scores`), so a band of narrow tiles (a sliding window)
    costs two large products per query tile instead of two small ones per tile. Per query
    row i, over its spans in order (m = -inf, l = 0, acc = 0 at the start):

        m'  = max(m, max_j s_ij)             NaN propagates
        a   = exp(m - m'),  p_ij = exp(s_ij - m')      (shift 0 while m' = -inf)
        l   = a l + sum_j p_ij,   acc = a acc + sum_j p_ij v_gj

    then, with the sink (sink_h = -inf without sinks) joining at the end:

        M = max(m, sink_h);  L = l exp(m - M) + exp(sink_h - M)
        o_i = acc (exp(m - M) / L),  lse_i = M + log(L);   M = -inf (empty row): o = 0, -inf

    Operands: q_rows (B, Hq, nq Bq, Dqk), k_rows (B, Hkv, nk Bk, Dqk), v_rows
    (B, Hkv, nk Bk, Dv), zero-padded to whole tiles; each query tile is copied transposed
    and multiplied by ``scale`` once per work item. With ``span_tiles == 1`` the value
    tiles come transposed, vT_t (B, Hkv, nk, Dv, Bk), for an NN product (OpenBLAS's small
    kernel runs the 128 x 112 NN product ~25% faster than TN); otherwise vT_t is unused.
    Writes out_t (B, Hq, nq, Bq, Dv), lse_t,
    max_t (M) and log_sum_t (log L), each (B, Hq, nq, Bq) (the backward recomputes
    p = exp((s - M) - log L)); counts[0] += FULL tiles computed, counts[1] += PARTIAL tiles
    computed. ``poison``: NaN-filled scratch (:func:`scratch`).
    """
    block_q = out_t.shape[3]
    qk_dim = q_rows.shape[3]
    v_dim = v_rows.shape[3]
    span = span_tiles * block_k
    scores = scratch((span, block_q), poison)
    probs = scratch((span, block_q), poison)
    tanh_t = scratch((span, block_q) if softcap > 0.0 else (span, 1), poison)
    q_tile_t = scratch((qk_dim, block_q), poison)
    pv_t = scratch((v_dim, block_q), poison)
    acc_t = scratch((v_dim, block_q), poison)
    row_max = scratch(block_q, poison)
    row_sum = scratch(block_q, poison)
    tile_max = scratch(block_q, poison)
    span_max = scratch(block_q, poison)
    shift = scratch(block_q, poison)
    rescale = scratch(block_q, poison)
    plain = softcap == 0.0 and not has_bias and alibi_kind == NO_ALIBI
    while True:
        item = claim_item(counter)
        if item >= items.shape[0]:
            break
        b, h, r, start, stop = items[item, 0], items[item, 1], items[item, 2], items[item, 3], \
            items[item, 4]
        g = h // group_size
        i0 = r * block_q
        for ii in range(block_q):  # contiguous reads of q, writes to an L1-sized tile
            for d in range(qk_dim):
                q_tile_t[d, ii] = q_rows[b, h, i0 + ii, d] * scale
        row_max[:] = -np.inf
        row_sum[:] = 0.0
        acc_t[:, :] = 0.0
        t = start
        while t < stop:
            c0 = tile_col[t]
            u = t + 1
            while u < stop and u - t < span_tiles and tile_col[u] == c0 + (u - t):
                u += 1
            j0 = c0 * block_k
            n_keys = (u - t) * block_k
            span_scores = scores[:n_keys]
            span_probs = probs[:n_keys]
            np.dot(k_rows[b, g, j0:j0 + n_keys], q_tile_t, span_scores)
            span_max[:] = -np.inf
            if plain:
                plain_span_scores(span_scores, span_max, tile_keep[t:u], keep_blocks, band,
                                  b, i0, j0, block_k, k_len - j0, counts)
            else:
                for x in range(t, u):
                    keep_index = tile_keep[x]
                    if keep_index >= 0:
                        counts[1] += 1
                    else:
                        counts[0] += 1
                    offset = (x - t) * block_k
                    tile_scores(span_scores[offset:offset + block_k],
                                tanh_t[offset:offset + block_k], tile_max, b, h, i0, j0 + offset,
                                q_len, k_len, softcap, bias, has_bias, alibi_slopes, alibi_offsets,
                                alibi_kind, keep_blocks, keep_index, band)
                    for ii in range(block_q):
                        span_max[ii] = max_nan(tile_max[ii], span_max[ii])
            for ii in range(block_q):
                old = row_max[ii]
                new = span_max[ii]
                if not (new > old or new != new):
                    new = old
                shift[ii] = new if new != -np.inf else 0.0
                rescale[ii] = math.exp(old - shift[ii])
                row_max[ii] = new
                row_sum[ii] *= rescale[ii]
            exp_rows(span_scores, shift, span_probs, row_sum)
            # the first span's rescale is exp(-inf - shift) = 0 (NaN for a NaN maximum, whose
            # row of P V is NaN as well): acc = P V, written in place
            product = acc_t if t == start else pv_t
            if span_tiles == 1:
                np.dot(vT_t[b, g, c0], span_probs, product)
            else:
                np.dot(v_rows[b, g, j0:j0 + n_keys].T, span_probs, product)
            if t != start:
                for d in range(v_dim):
                    for ii in range(block_q):
                        acc_t[d, ii] = rescale[ii] * acc_t[d, ii] + pv_t[d, ii]
            t = u
        sink = sinks[h] if has_sinks else -np.inf
        for ii in range(block_q):
            m = row_max[ii]
            total = sink if (sink > m or sink != sink) else m
            if total == -np.inf:
                for d in range(v_dim):
                    out_t[b, h, r, ii, d] = 0.0
                lse_t[b, h, r, ii] = -np.inf
                max_t[b, h, r, ii] = -np.inf
                log_sum_t[b, h, r, ii] = 0.0
                continue
            if has_sinks:
                factor = math.exp(m - total)
                denominator = row_sum[ii] * factor + math.exp(sink - total)
            else:
                factor = 1.0
                denominator = row_sum[ii]
            weight = factor / denominator  # one division per row, not per entry
            for d in range(v_dim):
                out_t[b, h, r, ii, d] = acc_t[d, ii] * weight
            log_sum = math.log(denominator)
            lse_t[b, h, r, ii] = total + log_sum
            max_t[b, h, r, ii] = total
            log_sum_t[b, h, r, ii] = log_sum


@njit(**_OPTIONS)
def backward_items(items, map_of, col_ptr, tile_row, tile_keep, keep_blocks, band, q_t, qT_t, k_t,
                   kT_t, v_t, do_t, doT_t, max_t, log_sum_t, delta_t, scale, softcap, bias,
                   has_bias, alibi_slopes, alibi_offsets, alibi_kind, q_len, k_len, group_size,
                   dqT_acc, dk_t, dv_t, dbias, has_dbias, counts, poison):
    """FlashAttention-2 backward for work items ``(b, g, c)``: key tile c of kv head g, over
    every query head h of the group and every non-empty tile (r, c) of h's tile map.

    With P recomputed from the forward's row maximum M and log-sum log L,
    ``p_ij = exp((s_ij - M_i) - log L_i)`` (= exp(s_ij - lse_i); 0 for an empty row), and
    ``delta_i = D_i - dlse_i`` with ``D_i = <dO_i, o_i>``:

        dV_gj += sum_i p_ij dO_i            dP_ij = <dO_i, v_gj>
        dS_ij  = p_ij (dP_ij - delta_i)     exactly 0 where masked
        dT_ij  = dS_ij (1 - tanh(t_ij / cap)^2)   (softcap; dT = dS without)
        dK_gj += scale sum_i dT_ij q_i      dQ_i += sum_j dT_ij k_gj   (times scale later)

    Every product is NN on tiles stored both ways: q_t (B, Hq, nq, Bq, Dqk) and qT_t
    (.., Dqk, Bq) (times scale, for the scores), k_t (B, Hkv, nk, Bk, Dqk) and kT_t
    (.., Dqk, Bk), v_t (.., Bk, Dv), do_t (B, Hq, nq, Bq, Dv) and doT_t (.., Dv, Bq). dV and
    dK of a key tile are owned by one work item; dQ^T goes to this thread's own
    accumulator ``dqT_acc`` (B, Hq, nq, Dqk, Bq), summed over threads by the caller.
    dbias (B, Hq, Tq, Tk), when ``has_dbias``, receives dS of every computed tile.
    ``poison``: NaN-filled scratch (:func:`scratch`).
    """
    block_q = q_t.shape[3]
    block_k = k_t.shape[3]
    qk_dim = q_t.shape[4]
    v_dim = v_t.shape[4]
    scores = scratch((block_k, block_q), poison)
    probs = scratch((block_k, block_q), poison)
    d_probs = scratch((block_k, block_q), poison)
    tanh_t = scratch((block_k, block_q) if softcap > 0.0 else (1, 1), poison)
    dk_part = scratch((block_k, qk_dim), poison)
    dv_part = scratch((block_k, v_dim), poison)
    dq_part_t = scratch((qk_dim, block_q), poison)
    dk_sum = scratch((block_k, qk_dim), poison)
    dv_sum = scratch((block_k, v_dim), poison)
    shift = scratch(block_q, poison)
    unused_sums = np.zeros(block_q)  # exp_shifted's row sums, not needed here
    tile_max = scratch(block_q, poison)
    for item in range(items.shape[0]):
        b, g, c = items[item, 0], items[item, 1], items[item, 2]
        j0 = c * block_k
        n_cols = min(block_k, k_len - j0)
        k_tile = k_t[b, g, c]
        k_tile_t = kT_t[b, g, c]
        v_tile = v_t[b, g, c]
        dk_sum[:, :] = 0.0
        dv_sum[:, :] = 0.0
        for h in range(g * group_size, (g + 1) * group_size):
            tiles = map_of[b, h]
            for t in range(col_ptr[tiles, c], col_ptr[tiles, c + 1]):
                r = tile_row[t]
                i0 = r * block_q
                keep_index = tile_keep[t]
                if keep_index >= 0:
                    counts[1] += 1
                else:
                    counts[0] += 1
                np.dot(k_tile, qT_t[b, h, r], scores)
                tile_scores(scores, tanh_t, tile_max, b, h, i0, j0, q_len, k_len, softcap,
                            bias, has_bias, alibi_slopes, alibi_offsets, alibi_kind,
                            keep_blocks, keep_index, band)
                for ii in range(block_q):
                    row_max = max_t[b, h, r, ii]
                    shift[ii] = row_max if row_max != -np.inf else np.inf
                exp_shifted(scores, shift, log_sum_t[b, h, r], probs, unused_sums)
                np.dot(probs, do_t[b, h, r], dv_part)
                for jj in range(block_k):
                    for d in range(v_dim):
                        dv_sum[jj, d] += dv_part[jj, d]
                np.dot(v_tile, doT_t[b, h, r], d_probs)
                for jj in range(block_k):
                    kept_row = jj < n_cols
                    for ii in range(block_q):
                        kept = kept_row
                        if keep_index >= 0 and not kept_at(keep_blocks, keep_index, band, b,
                                                           i0 + ii, j0 + jj, ii, jj):
                            kept = False
                        ds = probs[jj, ii] * (d_probs[jj, ii] - delta_t[b, h, r, ii])
                        d_probs[jj, ii] = ds if kept else 0.0
                if has_dbias:
                    n_rows = min(block_q, q_len - i0)
                    for ii in range(n_rows):
                        for jj in range(n_cols):
                            dbias[b, h, i0 + ii, j0 + jj] = d_probs[jj, ii]
                if softcap > 0.0:
                    for jj in range(block_k):
                        for ii in range(block_q):
                            th = tanh_t[jj, ii]
                            d_probs[jj, ii] = d_probs[jj, ii] * (1.0 - th * th)
                np.dot(d_probs, q_t[b, h, r], dk_part)
                for jj in range(block_k):
                    for d in range(qk_dim):
                        dk_sum[jj, d] += dk_part[jj, d]
                np.dot(k_tile_t, d_probs, dq_part_t)
                for d in range(qk_dim):
                    for ii in range(block_q):
                        dqT_acc[b, h, r, d, ii] += dq_part_t[d, ii]
        for jj in range(block_k):
            for d in range(qk_dim):
                dk_t[b, g, c, jj, d] = scale * dk_sum[jj, d]
            for d in range(v_dim):
                dv_t[b, g, c, jj, d] = dv_sum[jj, d]
