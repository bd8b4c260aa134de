"""Exact conversions between refmask's paged varlen masks and xformers' ``Paged*`` attention
biases (xformers 0.0.35, ``xformers.ops.fmha.attn_bias``; the classes are plain Python and
need no CUDA).

=====================================================  =====================================
refmask mask                                           xformers bias
=====================================================  =====================================
``varlen(full(), paged_layout(T, p, L,``               ``PagedBlockDiagonalPaddedKeysMask``
``cu_seqlens_q=cu))``                                  ``.from_seqlens(q_lens, L, T, p)``
``varlen(causal(align="bottom_right"), ...)``          ``PagedBlockDiagonalCausalWithOffset``
                                                       ``PaddedKeysMask``
``paged_layout(..., first_slots=s)``, full / causal    ``PagedBlockDiagonal[CausalWithOffset]``
                                                       ``GappyKeysMask`` (``k_seqinfo``:
                                                       ``seqstart_py = s + [-1]``, ``seqlen_py
                                                       = s + L``: slot ends, not lengths)
=====================================================  =====================================

Semantics read from the xformers source (docs/spec.md 2.4.15): queries are packed back to
back (``q_seqinfo.seqstart_py`` is ``cu_seqlens_q``); sequence n's logical key slot ``x``
lives in physical slot ``block_tables[n, x // page_size] * page_size + x % page_size``; its
keys are the logical slots ``[s_n, s_n + L_n)`` (``s_n = 0`` for ``*PaddedKeysMask``);
``CausalWithOffset`` aligns each block bottom-right (query i of a block of ``M_n`` queries
sees key ``pos <= L_n - M_n + i``). Both directions are exact: the materialised keep masks
are equal (tests/test_xformers_paged.py checks them against the classes' own
``materialize``). The physical width differs only by naming: a refmask layout has
``num_pages * page_size`` slots, xformers' ``materialize`` ``(max(block_tables) + 1) *
page_size``; :func:`from_xformers_paged` takes ``num_pages`` (default that maximum + 1).

Two quirks of xformers 0.0.35, handled here, never guessed around: ``PagedBlockDiagonal
GappyKeysMask.from_seqlens`` asserts N ``kv_seqstarts`` and then requires N + 1, so the gappy
biases are built with ``BlockDiagonalGappyKeysMask(...).make_paged`` as xformers itself does;
and ``materialize`` copies every entry of a block-table row, used or not, so a padding entry
that repeats a page of the same row overwrites it with -inf in the materialised picture
(never in the kernels, which read only the used pages): :func:`to_xformers_paged` refuses
such a row instead of producing a bias whose picture differs from its meaning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from refmask import masks as m

PAGED_CLASSES = ("PagedBlockDiagonalPaddedKeysMask",
                 "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask",
                 "PagedBlockDiagonalGappyKeysMask",
                 "PagedBlockDiagonalCausalWithOffsetGappyKeysMask")


def _inner_kind(where: str, inner) -> str:
    """"full" or "causal" (bottom-right, no valid lengths): the per-block masks of Paged*."""
    if inner.kind == "full":
        return "full"
    align = getattr(inner, "align", None)
    if inner.kind == "causal" and align.kind == "bottom_right" and not (
            align.q_lengths or align.k_lengths):
        return "causal"
    raise ValueError(f"{where}: the per-sequence mask must be full() or causal(align="
                     f"'bottom_right') (the only per-block masks of xformers' Paged* "
                     f"classes), got {inner!r}")


def _padded_table(where: str, layout) -> np.ndarray:
    rows = [list(row) for row in layout.block_table]
    width = max((len(row) for row in rows), default=0)
    if any(len(row) != width for row in rows):
        raise ValueError(f"{where}: block_table rows must have one length (a tensor), got "
                         f"{[len(row) for row in rows]}")
    table = np.asarray(rows, dtype=np.int64).reshape(len(rows), width)
    for n, row in enumerate(table):
        start = 0 if layout.k_starts is None else layout.k_starts[n]
        end = start + layout.k_lengths[n]
        used = set(range(start // layout.page_size, -(-end // layout.page_size)))
        for x, page in enumerate(row):
            if x not in used and any(row[u] == page for u in used if u < width):
                raise ValueError(
                    f"{where}: block_table[{n}][{x}] = {int(page)} is a padding entry that "
                    f"repeats a used page of the same row; xformers' materialize would "
                    "overwrite that page with -inf, so pad with a page the row does not use")
    return table


def to_xformers_paged(mask: m.Mask) -> Any:
    """The xformers ``Paged*`` bias of ``varlen(inner, paged_layout(..., cu_seqlens_q=...))``.

    mask: a varlen mask over a paged layout with packed queries (``cu_seqlens_q``; xformers
      packs every sequence's queries into one row of Tq tokens over one physical cache of
      Tk slots), ``inner`` full() or causal(align="bottom_right").

    Returns ``PagedBlockDiagonal[CausalWithOffset](PaddedKeys|GappyKeys)Mask`` on the CPU
    (``GappyKeys`` when the layout has ``first_slots``). Raises ValueError naming the rule.
    """
    import torch
    from xformers.ops.fmha import attn_bias as ab

    where = "to_xformers_paged"
    if not isinstance(mask, m.Mask) or mask.kind != "varlen":
        raise TypeError(f"{where}: mask must be refmask.masks.varlen(inner, paged_layout(...)), "
                        f"got {mask!r}")
    layout = mask.layout
    if layout.block_table is None or not layout.packed_queries:
        raise ValueError(f"{where}: the layout must be paged with packed queries "
                         "(paged_layout(..., cu_seqlens_q=...)); xformers' Paged* biases have "
                         "no batched-query form")
    q_lens = [int(x) for x in layout.q_lengths]
    if list(layout.q_starts) != [int(x) for x in np.cumsum([0] + q_lens)[:-1]]:
        raise ValueError(f"{where}: xformers packs the queries back to back from row 0; the "
                         f"layout's q_starts are {list(layout.q_starts)}")
    kind = _inner_kind(where, mask.mask)
    table = torch.tensor(_padded_table(where, layout), dtype=torch.int32)
    k_lens = [int(x) for x in layout.k_lengths]
    cpu = torch.device("cpu")
    if layout.k_starts is None or not any(layout.k_starts):
        cls = (ab.PagedBlockDiagonalPaddedKeysMask if kind == "full" else
               ab.PagedBlockDiagonalCausalWithOffsetPaddedKeysMask)
        return cls.from_seqlens(q_lens, k_lens, table, layout.page_size, device=cpu)
    cls = (ab.PagedBlockDiagonalGappyKeysMask if kind == "full" else
           ab.PagedBlockDiagonalCausalWithOffsetGappyKeysMask)
    row = table.shape[1] * layout.page_size
    starts = [row * n + int(s) for n, s in enumerate(layout.k_starts)] + [row * len(k_lens)]
    return ab.BlockDiagonalGappyKeysMask.from_seqlens(q_lens, starts, k_lens, device=cpu
                                                      ).make_paged(table, layout.page_size,
                                                                   row, cls)


def from_xformers_paged(bias: Any, *, num_pages: int | None = None) -> m.Mask:
    """The refmask mask of an xformers ``Paged*`` bias (one of :data:`PAGED_CLASSES`).

    num_pages: the physical cache size in pages (Tk = num_pages * page_size); default
      ``max(block_tables) + 1``, the width of xformers' own ``materialize``.

    Returns ``varlen(full() | causal(align="bottom_right"), paged_layout(block_tables,
    page_size, seq_lens, num_pages=..., cu_seqlens_q=q_seqinfo.seqstart_py[,
    first_slots=...]))``. Raises TypeError for any other object.
    """
    where = "from_xformers_paged"
    name = type(bias).__name__
    if name not in PAGED_CLASSES or not type(bias).__module__.startswith("xformers"):
        raise TypeError(f"{where}: bias must be one of xformers' {list(PAGED_CLASSES)}, got "
                        f"{name}")
    table = np.asarray(bias.block_tables.cpu().tolist(), dtype=np.int64).reshape(
        bias.block_tables.shape[0], bias.block_tables.shape[1])
    if num_pages is None:
        num_pages = int(table.max(initial=-1)) + 1
    cu_q = [int(x) for x in bias.q_seqinfo.seqstart_py]
    k = bias.k_seqinfo
    if "Gappy" in name:
        starts = [int(x) for x in k.seqstart_py[:-1]]  # row-space starts, then -1
        lengths = [int(end) - start for start, end in zip(starts, k.seqlen_py, strict=True)]
        extra = {"first_slots": starts}
    else:
        lengths = [int(x) for x in k.seqlen_py]
        extra = {}
    inner = m.causal(align="bottom_right") if "CausalWithOffset" in name else m.full()
    return m.varlen(inner, m.paged_layout(table.tolist(), int(bias.page_size), lengths,
                                          num_pages=num_pages, cu_seqlens_q=cu_q, **extra))


__all__ = ["PAGED_CLASSES", "from_xformers_paged", "to_xformers_paged"]
