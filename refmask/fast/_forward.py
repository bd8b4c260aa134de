"""Fast forward pass: blocked online softmax over the non-empty tiles of the tile plan.

For batch b, query head h, query tile r (one work item), over the key tiles c of row r that
the plan lists (EMPTY tiles are never visited):

    o_i   = sum_j exp(s_ij - lse_i) v_gj,   lse_i = log(sum_j exp(s_ij) + exp(sink_h))

computed by the online recurrence of :func:`._kernels.forward_items` in O(Bq * Bk) scratch
per thread. Empty rows (lse = -inf): "zero" -> o = 0, "nan" -> NaN, "uniform" -> the mean of
V over all Tk keys (the rule of docs/spec.md section 3.3).
"""

from __future__ import annotations

import numpy as np

from . import _kernels
from ._inputs import FastInputs
from ._run import (
    TileStats,
    bias_array,
    default_threads,
    from_tiles,
    padded_rows,
    poison_requested,
    run_workers,
    scratch,
    tile_sizes,
    to_tiles,
    transposed_tiles,
)
from ._tiles import (
    DEFAULT_KEEP_BUDGET_BYTES,
    TileGrid,
    TilePlan,
    choose_tiles,
    plan_tiles,
    span_tiles,
    wave_keep_blocks,
    waves,
)


def make_plan(fast: FastInputs, q_tile=None, k_tile=None, spans: bool = True) -> TilePlan:
    """The tile plan of the call: Bq x Bk tiles classified once per distinct (b, h).

    The tile shape is ``(q_tile, k_tile)`` when either is given (the other from
    DEFAULT_Q_TILE / DEFAULT_K_TILE), else the candidate with the least modelled cost
    (:func:`._tiles.choose_tiles`, costed for the forward's spans of tiles unless
    ``spans`` is False): large tiles for dense masks, small ones where they skip more
    (sliding windows).
    """
    inp = fast.inp
    if q_tile is None and k_tile is None:
        grid = choose_tiles(fast.source, inp.batch, inp.q_heads, inp.q_len, inp.k_len,
                            max(inp.qk_dim, inp.v_dim), spans=spans)
        return plan_tiles(fast.source, inp.batch, inp.q_heads, grid)
    block_q, block_k = tile_sizes(inp.q_len, inp.k_len, q_tile, k_tile)
    grid = TileGrid(inp.q_len, inp.k_len, block_q, block_k)
    return plan_tiles(fast.source, inp.batch, inp.q_heads, grid)


def forward(fast: FastInputs, *, q_tile=None, k_tile=None, threads=None,
            keep_budget_bytes=DEFAULT_KEEP_BUDGET_BYTES, plan: TilePlan | None = None,
            softmax_state: bool = False):
    """``(out (B, Hq, Tq, Dv), lse (B, Hq, Tq), TileStats)`` in (B, H, T, D) order; with
    ``softmax_state`` also the tiled row maxima M and log-sums log L, (B, Hq, nq, Bq) each
    (lse = M + log L), which the backward pass recomputes p from."""
    inp = fast.inp
    threads = default_threads() if threads is None else max(1, int(threads))
    plan = make_plan(fast, q_tile, k_tile) if plan is None else plan
    grid = plan.grid
    block_q, block_k = grid.q_tile, grid.k_tile
    n_q, n_k = grid.n_q_tiles, grid.n_k_tiles

    q_rows = padded_rows(np.asarray(inp.q), block_q, n_q)
    k_rows = padded_rows(np.asarray(inp.k), block_k, n_k)
    v_rows = padded_rows(np.asarray(inp.v), block_k, n_k)
    span = span_tiles(grid, max(inp.qk_dim, inp.v_dim))
    vT_t = (transposed_tiles(to_tiles(np.asarray(inp.v), block_k, n_k)) if span == 1
            else np.zeros((1, 1, 1, 1, 1)))
    poison = poison_requested()
    out_t = scratch((inp.batch, inp.q_heads, n_q, block_q, inp.v_dim), poison)
    lse_t, max_t, log_sum_t = (scratch((inp.batch, inp.q_heads, n_q, block_q), poison)
                               for _ in range(3))
    bias, has_bias = bias_array(inp.bias)
    has_sinks = inp.sinks is not None
    sinks = np.ascontiguousarray(inp.sinks if has_sinks else np.zeros(inp.q_heads),
                                 dtype=np.float64)
    softcap = 0.0 if inp.softcap is None else float(inp.softcap)

    stats = TileStats(empty_tiles=plan.empty_tiles, maps=len(plan.maps))
    b_index, h_index = np.meshgrid(np.arange(inp.batch), np.arange(inp.q_heads), indexing="ij")
    pair_map = plan.map_of[b_index, h_index].reshape(-1)
    pairs = np.stack([b_index.reshape(-1), h_index.reshape(-1)], axis=1)
    for first, last in waves(plan, "row", keep_budget_bytes):
        tile_keep, blocks, keep_pairs = wave_keep_blocks(plan, "row", first, last, threads)
        rows = np.arange(first, last, dtype=np.int64)
        starts = plan.row_ptr[pair_map][:, first:last]
        stops = plan.row_ptr[pair_map][:, first + 1:last + 1]
        items = np.concatenate([
            np.repeat(pairs, rows.shape[0], axis=0),
            np.tile(rows, pairs.shape[0])[:, None],
            starts.reshape(-1, 1), stops.reshape(-1, 1)], axis=1).astype(np.int64)
        counter = np.zeros(1, dtype=np.int64)  # the next unclaimed item (claim_item)

        def run(items=items, counter=counter, tile_keep=tile_keep, blocks=blocks):
            counts = np.zeros(2, dtype=np.int64)
            _kernels.forward_items(
                items, counter, plan.tile_col, tile_keep, blocks, plan.band, q_rows, k_rows,
                v_rows, vT_t, float(inp.scale), block_k, span, softcap, bias, has_bias,
                fast.alibi_slopes, fast.alibi_offsets, fast.alibi_kind, sinks, has_sinks,
                inp.q_len, inp.k_len, inp.group_size, out_t, lse_t, max_t, log_sum_t,
                counts, poison)
            return counts

        counts = run_workers(run, min(threads, items.shape[0])) if items.shape[0] else []
        done = np.sum(counts, axis=0) if counts else np.zeros(2, dtype=np.int64)
        stats = stats + TileStats(full_tiles=int(done[0]), partial_tiles=int(done[1]),
                                  keep_pairs=keep_pairs, waves=1)

    out = from_tiles(out_t, inp.q_len)
    lse = from_tiles(lse_t, inp.q_len)
    out = apply_empty_rows(fast, out, lse)
    if softmax_state:
        return out, np.ascontiguousarray(lse), stats, max_t, log_sum_t
    return out, np.ascontiguousarray(lse), stats


def apply_empty_rows(fast: FastInputs, out: np.ndarray, lse: np.ndarray) -> np.ndarray:
    """The empty-row policy on rows with lse = -inf (the kernel wrote o = 0 there):

        "zero": o = 0;  "nan": o = NaN;  "uniform": o = (1 / Tk) sum_j v_gj   (Tk = 0: NaN)
    """
    inp = fast.inp
    if inp.empty_rows == "zero":
        return out
    empty = (lse == -np.inf)[..., None]
    if not empty.any():
        return out
    if inp.empty_rows == "nan" or inp.k_len == 0:
        return np.where(empty, np.nan, out)
    v = np.asarray(inp.v)
    mean = np.sum(v * (1.0 / inp.k_len), axis=2)                      # (B, Hkv, Dv)
    mean = np.repeat(mean, inp.group_size, axis=1)[:, :, None, :]      # (B, Hq, 1, Dv)
    return np.where(empty, mean, out)
