"""Fast backward pass: FlashAttention-2 recomputation on the forward's tile plan.

The forward pass gives o and lse. Then, with ``delta_i = <dO_i, o_i> - dlse_i`` (dlse = 0
on empty rows, whose lse is the constant -inf), one work item per (b, kv head g, key tile c)
recomputes ``p_ij = exp(s_ij - lse_i)`` on every non-empty tile of column c for every query
head of the group, and accumulates (docs/spec.md section 3.4):

    dV_gj = sum_{h, i} p_ij dO_i                dS_ij = p_ij (<dO_i, v_gj> - delta_i)
    dK_gj = scale sum_{h, i} dT_ij q_i          dQ_i  = scale sum_j dT_ij k_gj
    dT_ij = dS_ij (1 - tanh(t_ij / cap)^2) with softcap, dS_ij without
    dbias_bhij = dS_ij                          (bias given in full (B, Hq, Tq, Tk) shape)
    dsink_h = sum_{b, i} exp(sink_h - lse_i) (dlse_i - <dO_i, o_i>)   over non-empty rows

dK and dV of a key tile belong to one work item; dQ is accumulated per thread and summed.
Empty rows: "zero" contributes nothing (p = 0); "uniform" adds (1 / Tk) dO_i to dV of every
key (its weights do not depend on the scores, so dS = 0).
"""

from __future__ import annotations

import threading

import numpy as np

from . import _kernels
from ._forward import forward, make_plan
from ._inputs import FastInputs
from ._run import (
    TileStats,
    bias_array,
    default_threads,
    from_tiles,
    poison_requested,
    run_chunks,
    split_work,
    to_tiles,
    transposed_tiles,
)
from ._tiles import DEFAULT_KEEP_BUDGET_BYTES, wave_keep_blocks, waves


def backward(fast: FastInputs, d_out: np.ndarray, d_lse, *, q_tile=None, k_tile=None,
             threads=None, keep_budget_bytes=DEFAULT_KEEP_BUDGET_BYTES):
    """Gradients in (B, H, T, D) order: ``(dq, dk, dv, dbias, dsinks, out, lse, TileStats)``.

    d_out: (B, Hq, Tq, Dv); d_lse: (B, Hq, Tq) or None.
    """
    inp = fast.inp
    threads = default_threads() if threads is None else max(1, int(threads))
    plan = make_plan(fast, q_tile, k_tile, spans=False)  # the backward goes tile by tile
    out, lse, stats, max_t, log_sum_t = forward(
        fast, threads=threads, keep_budget_bytes=keep_budget_bytes, plan=plan,
        softmax_state=True)
    grid = plan.grid
    block_q, block_k = grid.q_tile, grid.k_tile
    n_q, n_k = grid.n_q_tiles, grid.n_k_tiles

    empty = lse == -np.inf
    row_dot = np.einsum("bhtd,bhtd->bht", d_out, out)
    d_lse_kept = None if d_lse is None else np.where(empty, 0.0, d_lse)
    delta = row_dot if d_lse_kept is None else row_dot - d_lse_kept

    q_t = to_tiles(np.asarray(inp.q), block_q, n_q)
    k_t = to_tiles(np.asarray(inp.k), block_k, n_k)
    v_t = to_tiles(np.asarray(inp.v), block_k, n_k)
    do_t = to_tiles(np.ascontiguousarray(d_out), block_q, n_q)
    qT_t = transposed_tiles(q_t, float(inp.scale))
    kT_t, doT_t = (transposed_tiles(x) for x in (k_t, do_t))
    delta_t = to_tiles(np.ascontiguousarray(delta), block_q, n_q)
    dk_t = np.zeros((inp.batch, inp.kv_heads, n_k, block_k, inp.qk_dim))
    dv_t = np.zeros((inp.batch, inp.kv_heads, n_k, block_k, inp.v_dim))
    bias, has_bias = bias_array(inp.bias)
    dbias = np.zeros(bias.shape) if has_bias else np.zeros((1, 1, 1, 1))
    softcap = 0.0 if inp.softcap is None else float(inp.softcap)
    poison = poison_requested()

    # Per-column cost of each (b, g): tiles of column c summed over the group's heads.
    per_column = np.diff(plan.col_ptr, axis=1)[plan.map_of]          # (B, Hq, nk)
    per_column = per_column.reshape(inp.batch, inp.kv_heads, inp.group_size, n_k).sum(axis=2)
    tile_row = np.ascontiguousarray(plan.tile_row[plan.by_column])

    accumulators: dict = {}
    lock = threading.Lock()

    def thread_accumulator():
        key = threading.get_ident()
        with lock:
            if key not in accumulators:
                accumulators[key] = np.zeros((inp.batch, inp.q_heads, n_q, inp.qk_dim,
                                              block_q))
            return accumulators[key]

    backward_stats = TileStats()
    for first, last in waves(plan, "col", keep_budget_bytes):
        tile_keep, blocks, keep_pairs = wave_keep_blocks(plan, "col", first, last, threads)
        tile_keep = np.ascontiguousarray(tile_keep[plan.by_column])
        b, g, c = np.nonzero(per_column[:, :, first:last])
        items = np.stack([b, g, c + first], axis=1).astype(np.int64)
        cost = per_column[b, g, c + first] + 1

        def run(chunk, tile_keep=tile_keep, blocks=blocks):
            counts = np.zeros(2, dtype=np.int64)
            _kernels.backward_items(
                chunk, plan.map_of, plan.col_ptr, tile_row, tile_keep, blocks, plan.band, q_t,
                qT_t, k_t, kT_t, v_t, do_t, doT_t, max_t, log_sum_t, delta_t, float(inp.scale),
                softcap, bias, has_bias, fast.alibi_slopes, fast.alibi_offsets, fast.alibi_kind,
                inp.q_len, inp.k_len, inp.group_size, thread_accumulator(), dk_t, dv_t, dbias,
                has_bias, counts, poison)
            return counts

        counts = run_chunks(run, split_work(items, cost, threads), threads)
        done = np.sum(counts, axis=0) if counts else np.zeros(2, dtype=np.int64)
        backward_stats = backward_stats + TileStats(full_tiles=int(done[0]),
                                                    partial_tiles=int(done[1]),
                                                    keep_pairs=keep_pairs, waves=1)

    dq_sum = sum(accumulators.values()) if accumulators else np.zeros(
        (inp.batch, inp.q_heads, n_q, inp.qk_dim, block_q))
    dq = inp.scale * from_tiles(np.swapaxes(dq_sum, -1, -2), inp.q_len)
    dk = np.ascontiguousarray(from_tiles(dk_t, inp.k_len))
    dv = np.ascontiguousarray(from_tiles(dv_t, inp.k_len))
    if inp.empty_rows == "uniform" and inp.k_len > 0 and empty.any():
        rows = np.where(empty[..., None], d_out, 0.0).sum(axis=2)       # (B, Hq, Dv)
        rows = rows.reshape(inp.batch, inp.kv_heads, inp.group_size, inp.v_dim).sum(axis=2)
        dv = dv + (rows * (1.0 / inp.k_len))[:, :, None, :]
    dsinks = None
    if inp.sinks is not None:
        sinks = np.asarray(inp.sinks)[None, :, None]
        inner = -row_dot if d_lse is None else d_lse - row_dot
        terms = np.where(empty, 0.0, np.exp(np.where(empty, 0.0, sinks - lse)) * inner)
        dsinks = terms.sum(axis=(0, 2))
    stats = stats + backward_stats
    return dq, dk, dv, dbias if has_bias else None, dsinks, out, lse, stats
