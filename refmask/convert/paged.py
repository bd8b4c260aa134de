"""(j) Paged KV caches: block tables with sequence lengths <-> FlashInfer's page lists.

Two layouts describe which physical pages hold sequence n's keys (docs/spec.md 2.4.15):

* vLLM / FlashAttention / xformers: ``block_table`` (N, P) ints, row n lists the physical page
  of each logical page, plus ``seq_lens`` (N,); only the first ``ceil(seq_lens[n] / page_size)``
  entries of a row are read, the rest is padding.
* FlashInfer ``BatchDecodeWithPagedKVCacheWrapper.plan``: ``kv_indptr`` (N+1,) offsets into
  ``kv_indices`` (the used pages of every sequence, concatenated) and ``kv_last_page_len``
  (N,), the tokens in each sequence's last page, in ``[1, page_size]`` (0 for a sequence with
  no page).

    seq_lens[n]          = (kv_indptr[n+1] - kv_indptr[n] - 1) * page_size + kv_last_page_len[n]
                           (0 when the sequence has no page)
    kv_indices[indptr[n]:indptr[n+1]] = block_table[n, :ceil(seq_lens[n] / page_size)]

Both directions are exact on what the layouts share; the padding of ``block_table`` rows is
not part of FlashInfer's layout, so :func:`flashinfer_to_block_table` takes the padding page
as a required argument instead of inventing one. xformers' ``PagedBlockDiagonal*`` bias
objects convert to and from refmask masks in ``refmask.adapters.xformers.paged`` (they are
torch objects, and ``refmask/`` imports no framework).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_int, check_int_array
from ..masks.varlen import SequenceLayout, paged_layout

__all__ = [
    "block_table_to_flashinfer",
    "flashinfer_to_block_table",
    "flashinfer_to_layout",
    "layout_to_flashinfer",
]


def _used_pages(seq_lens: np.ndarray, page_size: int) -> np.ndarray:
    return -(-seq_lens // page_size)


def block_table_to_flashinfer(block_table: ArrayLike, seq_lens: ArrayLike,
                              page_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(block_table (N, P), seq_lens (N,), page_size)`` -> ``(kv_indptr (N+1,), kv_indices,
    kv_last_page_len (N,))``, all int32. Raises when a row holds fewer pages than its length
    needs."""
    where = "block_table_to_flashinfer"
    table = check_int_array(where, "block_table", block_table, ndim=2)
    lengths = check_int_array(where, "seq_lens", seq_lens, ndim=1)
    size = check_int(where, "page_size", page_size, minimum=1)
    if lengths.size != table.shape[0]:
        raise ValueError(f"{where}: seq_lens has {lengths.size} entries but block_table has "
                         f"{table.shape[0]} rows")
    if lengths.size and lengths.min() < 0:
        raise ValueError(f"{where}: seq_lens must be >= 0, got {lengths.tolist()}")
    used = _used_pages(lengths, size)
    if used.size and used.max() > table.shape[1]:
        bad = int(np.argmax(used))
        raise ValueError(f"{where}: sequence {bad} needs {int(used[bad])} pages of {size} for "
                         f"seq_lens = {int(lengths[bad])}, but block_table rows hold "
                         f"{table.shape[1]}")
    for n in range(lengths.size):
        if table[n, :used[n]].min(initial=0) < 0:
            raise ValueError(f"{where}: block_table[{n}] holds a negative page id among its "
                             f"{int(used[n])} used pages")
    indptr = np.concatenate([[0], np.cumsum(used)]).astype(np.int32)
    indices = np.concatenate([table[n, :used[n]] for n in range(lengths.size)] +
                             [np.zeros(0, np.int64)]).astype(np.int32)
    last = np.where(used > 0, lengths - (used - 1) * size, 0).astype(np.int32)
    return indptr, indices, last


def flashinfer_to_block_table(kv_indptr: ArrayLike, kv_indices: ArrayLike,
                              kv_last_page_len: ArrayLike, page_size: int, *,
                              pad_page: int) -> tuple[np.ndarray, np.ndarray]:
    """FlashInfer page lists -> ``(block_table (N, P), seq_lens (N,))``, int32, with
    ``P = max pages per sequence`` and unused entries set to ``pad_page`` (required: vLLM pads
    with 0, others with -1 or a reserved page; refmask never picks one)."""
    where = "flashinfer_to_block_table"
    indptr = check_int_array(where, "kv_indptr", kv_indptr, ndim=1)
    indices = check_int_array(where, "kv_indices", kv_indices, ndim=1)
    last = check_int_array(where, "kv_last_page_len", kv_last_page_len, ndim=1)
    size = check_int(where, "page_size", page_size, minimum=1)
    pad = check_int(where, "pad_page", pad_page)
    if indptr.size < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{where}: kv_indptr must start at 0 and be non-decreasing (N+1 "
                         f"offsets), got {indptr.tolist()}")
    if indices.size != indptr[-1]:
        raise ValueError(f"{where}: kv_indices holds {indices.size} pages but kv_indptr[-1] = "
                         f"{int(indptr[-1])}")
    counts = np.diff(indptr)
    if last.size != counts.size:
        raise ValueError(f"{where}: kv_last_page_len has {last.size} entries for "
                         f"{counts.size} sequences (kv_indptr)")
    bad = np.where(counts > 0, (last < 1) | (last > size), last != 0)
    if np.any(bad):
        n = int(np.argmax(bad))
        raise ValueError(f"{where}: kv_last_page_len[{n}] = {int(last[n])} must lie in [1, "
                         f"{size}] for a sequence with pages, and be 0 for one without "
                         f"({int(counts[n])} pages)")
    width = int(counts.max(initial=0))
    table = np.full((counts.size, width), pad, dtype=np.int32)
    for n in range(counts.size):
        table[n, :counts[n]] = indices[indptr[n]:indptr[n + 1]]
    lengths = np.where(counts > 0, (counts - 1) * size + last, 0).astype(np.int32)
    return table, lengths


def layout_to_flashinfer(layout: SequenceLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A paged :class:`~refmask.masks.varlen.SequenceLayout` -> FlashInfer page lists (the
    layout's ``first_slots`` must be 0: FlashInfer has no gappy start)."""
    where = "layout_to_flashinfer"
    if not isinstance(layout, SequenceLayout) or layout.block_table is None:
        raise TypeError(f"{where}: layout must be a paged SequenceLayout (paged_layout)")
    if layout.k_starts is not None and any(layout.k_starts):
        raise ValueError(f"{where}: the layout starts some sequence at a later slot "
                         f"(first_slots = {list(layout.k_starts)}); FlashInfer cannot say that")
    width = max(len(row) for row in layout.block_table)
    table = np.array([list(row) + [0] * (width - len(row)) for row in layout.block_table])
    return block_table_to_flashinfer(table, layout.k_lengths, layout.page_size)


def flashinfer_to_layout(kv_indptr: ArrayLike, kv_indices: ArrayLike,
                         kv_last_page_len: ArrayLike, page_size: int, *, num_pages: int,
                         cu_seqlens_q: ArrayLike | None = None) -> SequenceLayout:
    """FlashInfer page lists -> a paged layout (batched queries, or packed by
    ``cu_seqlens_q``: FlashInfer's ``qo_indptr``)."""
    table, lengths = flashinfer_to_block_table(kv_indptr, kv_indices, kv_last_page_len,
                                               page_size, pad_page=0)
    rows = [list(row) if len(row) else [0] for row in table.tolist()]
    return paged_layout(rows, page_size, lengths, num_pages=num_pages,
                        cu_seqlens_q=cu_seqlens_q)
