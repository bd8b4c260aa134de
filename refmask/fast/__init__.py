"""refmask.fast: blocked attention for long sequences, NumPy float64 + Numba.

The same function as :mod:`refmask.attention` (docs/spec.md section 3), computed tile by tile
so that memory is O((Tq + Tk) * D) plus one Bq x Bk tile per thread, never O(Tq * Tk):

    tiles:   (r, c) = [r Bq, (r + 1) Bq) x [c Bk, (c + 1) Bk), the shape chosen per call by a
             cost model over the candidates (112 x 128 ... 32 x 32 for D = 64)
    codes:   mask.classify over the whole tile grid, once per distinct (b, h) (coarse to
             fine on grids over 2**16 tiles)
             EMPTY -> skipped;  FULL -> computed without the mask;  PARTIAL -> computed, with
             the tile's keep block from mask.keep (causal and sliding-window masks:
             their band rule low <= (i + offset_b) - j <= high, evaluated per entry)
    forward: per (b, h, query tile), online softmax over the row's non-empty tiles
             m' = max(m, max_j s_ij),  l' = l e^(m - m') + sum_j e^(s_ij - m'),
             acc' = acc e^(m - m') + sum_j e^(s_ij - m') v_gj;   o = acc / l, lse = m + log l
             (sinks join the denominator at the end)
    backward: per (b, kv head, key tile), FlashAttention-2 recomputation of
             p_ij = exp(s_ij - lse_i) from the saved lse; dK, dV owned by the work item,
             dQ accumulated per thread

Every score feature of the reference is covered: GQA/MQA (g = h // (Hq // Hkv)), scale,
softcap (before bias and mask), bias arrays (tile slices), ALiBi (per tile, from slopes and
alignment offsets), sinks, masks with offsets (their alignment), bool mask arrays, layouts,
empty rows "zero", "nan" and "uniform" (forward), "zero" and "uniform" (backward), dbias
for a full-shape bias, dsinks. Not covered (``path="auto"`` falls back to the exact path,
``path="fast"`` raises :class:`FastPathUnsupported`): dropout, ``return_probs``,
``empty_rows="unmasked"``, gradients under ``empty_rows="nan"``, and dbias of a broadcast bias.

Agreement with the exact path: both are float64 with different summation orders; on every
golden case the largest difference is below 1e-12 of the largest entry (tested). One
documented difference in special values: NaN or inf in k or v at keys of an EMPTY tile do
not reach the output (the tile is never read), where the exact path's ``0 * NaN`` does.

Use it through ``refmask.attention.attention(..., path="auto" | "exact" | "fast")`` or
directly with :func:`attention` / :func:`attention_vjp` below (which are ``path="fast"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._typing import Array
from ..attention._inputs import DEFAULT_EMPTY_ROWS, DEFAULT_LAYOUT
from ._inputs import FastPathUnsupported

if TYPE_CHECKING:
    from ..attention._results import AttentionResult, Grads
    from ..attention.alibi import Alibi
    from ..masks import Mask


def attention(q: Array, k: Array, v: Array, *, mask: Mask | Array | None = None,
              scale: float | None = None, softcap: float | None = None, bias: Array | None = None,
              alibi: Alibi | None = None, sinks: Array | None = None,
              dropout_keep: Array | None = None, dropout_rate: float | None = None,
              empty_rows: str = DEFAULT_EMPTY_ROWS, layout: str = DEFAULT_LAYOUT,
              return_probs: bool = False, q_tile: int | None = None, k_tile: int | None = None,
              threads: int | None = None) -> AttentionResult:
    """:func:`refmask.attention.attention` on the fast path (``path="fast"``).

    Arguments as there, plus the tile shape ``q_tile`` x ``k_tile`` (default: chosen per call
    by the cost model of ``_tiles.choose_tiles``; shrunk to Tq, Tk) and ``threads``
    (default: the CPUs this process may use). Raises
    :class:`FastPathUnsupported` for a feature the fast path does not cover.
    """
    from ._api import checked, run_forward

    kwargs = dict(mask=mask, scale=scale, softcap=softcap, bias=bias, alibi=alibi,
                  sinks=sinks, dropout_keep=dropout_keep, dropout_rate=dropout_rate,
                  empty_rows=empty_rows, layout=layout)
    fast = checked("attention", q, k, v, kwargs, grads=False, return_probs=return_probs)
    return run_forward("attention", fast, q_tile=q_tile, k_tile=k_tile, threads=threads)[0]


def attention_vjp(q: Array, k: Array, v: Array, d_out: Array, *, d_lse: Array | None = None,
                  mask: Mask | Array | None = None, scale: float | None = None,
                  softcap: float | None = None, bias: Array | None = None,
                  alibi: Alibi | None = None, sinks: Array | None = None,
                  dropout_keep: Array | None = None, dropout_rate: float | None = None,
                  empty_rows: str = DEFAULT_EMPTY_ROWS, layout: str = DEFAULT_LAYOUT,
                  q_tile: int | None = None, k_tile: int | None = None,
                  threads: int | None = None) -> Grads:
    """:func:`refmask.attention.attention_vjp` on the fast path (``path="fast"``); tile and
    thread arguments as in :func:`attention`."""
    from ._api import check_upstream, checked, run_vjp

    kwargs = dict(mask=mask, scale=scale, softcap=softcap, bias=bias, alibi=alibi,
                  sinks=sinks, dropout_keep=dropout_keep, dropout_rate=dropout_rate,
                  empty_rows=empty_rows, layout=layout)
    fast = checked("attention_vjp", q, k, v, kwargs, grads=True)
    d_out, d_lse = check_upstream("attention_vjp", fast, q, d_out, d_lse)
    return run_vjp("attention_vjp", fast, d_out, d_lse, q_tile=q_tile, k_tile=k_tile,
                   threads=threads)[0]


__all__ = ["FastPathUnsupported", "attention", "attention_vjp"]
