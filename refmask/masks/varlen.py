"""Varlen and paged layouts: a mask applied *per sequence*, on sequence-local positions.

Inference kernels pack many sequences into one query row and one key row (FlashAttention
varlen ``cu_seqlens_q`` / ``cu_seqlens_k``, xformers ``BlockDiagonal*``) or keep the keys in a
paged cache (vLLM / FlashInfer block tables, xformers ``Paged*``). A :class:`SequenceLayout`
says where sequence n's queries and keys sit; ``varlen(mask, layout)`` evaluates ``mask`` on
the local coordinates of each sequence:

    keep(b, h, i, j) iff  n = seq_q(b, i) exists,  pk = pos_n(j) exists,  and
                          mask.keep(n, h, i - q_start[n], pk)  with Tq = q_len[n], Tk = k_len[n]

``pos_n(j)`` is the logical position of key slot j in sequence n (``j - k_start[n]`` for a
span, ``p * page_size + r`` for slot r of the physical page ``block_table[n][p]``), defined for
``0 <= pos < k_len[n]``. Alignments inside ``mask`` are per sequence: ``"bottom_right"`` is
``offset_n = k_len[n] - q_len[n]`` (FlashAttention varlen, xformers ``*FromBottomRight`` and
``*WithOffset*``), ``"top_left"`` is 0 (xformers ``BlockDiagonalCausalMask``), and an int
offset or one int per sequence is a cached prefix per sequence.

    varlen(causal(align="bottom_right"), varlen_layout([0, 2, 5], [0, 4, 7]))
    Tq=5, Tk=7: sequence 0 has 2 queries, 4 keys (offset 2); sequence 1 has 3 and 3 (offset 0)
        0123456
      0 ███····
      1 ████···
      2 ····█··
      3 ····██·
      4 ····███

    varlen(causal(align="bottom_right"), paged_layout([[2, 0], [1, 3]], 2, [3, 2],
           num_pages=4)), Tq=1 (decode): batch 0 reads pages 2, 0 (logical keys 0..2 live in
    slots 4, 5, 0), batch 1 reads page 1 (slots 2, 3); slot 1 and page 3 hold nothing valid
        01234567
     b0 █···██··
     b1 ··██····

The queries of a layout are either *packed* (``q_starts``/``q_lengths``: one row of Tq tokens
shared by every batch entry, as FlashAttention varlen and xformers use B = 1) or *batched*
(sequence n = batch entry n, every one of its Tq rows is a query: the decode and chunked-prefill
form of paged attention). Keys are *spans* (``k_starts``/``k_lengths``) or *pages*
(``block_table``, ``page_size``, ``k_lengths``). Pages may be shared between sequences (a
shared prefix); a sequence may not list one physical page twice among its used pages.
Query and key slots that belong to no sequence are kept by no pair; a query row outside every
sequence is therefore an empty row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_int, check_int_matrix, check_int_vector
from ._base import Grid, Mask, classify_by_evaluation
from .alignment import AlignLike, Alignment, as_alignment, bottom_right

#: Mask kinds whose rule reads only (b, h, local i, local j) and per-sequence lengths.
_LOCAL_KINDS = ("full", "causal", "sliding_window", "chunked", "block_causal", "prefix_lm",
                "strided", "global_tokens", "predicate", "tree", "and", "or", "not",
                "per_head", "per_batch")


@dataclass(frozen=True)
class SequenceLayout:
    """Where each of N sequences keeps its queries and keys (build it with the factories).

    q_starts, q_lengths: (N,) for packed queries (sequence n owns query rows
      ``[q_starts[n], q_starts[n] + q_lengths[n])`` of a row of ``q_total`` tokens), or both
      None for batched queries (sequence n = batch entry n owns all Tq rows).
    k_lengths: (N,) the number of valid keys of each sequence (FlashAttention ``seqused_k``,
      vLLM ``seq_lens``, FlashInfer ``kv_len``).
    k_starts: (N,) first key slot of each sequence: in the packed key row for spans; with
      pages, in the sequence's own logical row of pages (default 0: xformers
      ``PagedBlockDiagonalGappyKeysMask`` starts later), so key ``pos`` sits at logical slot
      ``k_starts[n] + pos``.
    block_table, page_size: (N, P) physical page of each logical page, and the tokens per
      page, for paged keys; None for spans.
    q_total, k_total: the lengths Tq and Tk the layout is for (None: any Tq, batched queries).
    """

    k_lengths: tuple
    k_total: int
    q_starts: tuple | None = None
    q_lengths: tuple | None = None
    q_total: int | None = None
    k_starts: tuple | None = None
    block_table: tuple | None = None
    page_size: int | None = None

    def __post_init__(self):
        n = len(self.k_lengths)
        where = "SequenceLayout"
        if (self.q_starts is None) != (self.q_lengths is None) or (
            (self.q_starts is None) != (self.q_total is None)
        ):
            raise ValueError(f"{where}: give q_starts, q_lengths and q_total together (packed "
                             "queries) or none of them (batched queries)")
        if self.k_starts is None and self.block_table is None:
            raise ValueError(f"{where}: give k_starts (key spans) or block_table (paged keys)")
        if self.q_starts is not None:
            _check_count(where, "q_starts", self.q_starts, n)
            _check_count(where, "q_lengths", self.q_lengths, n)
            ends = np.add(self.q_starts, self.q_lengths)
            if ends.size and ends.max() > self.q_total:
                bad = int(np.argmax(ends))
                raise ValueError(f"{where}: query span {bad} ends at {int(ends[bad])} > q_total "
                                 f"= {self.q_total}")
            order = np.argsort(self.q_starts, kind="stable")
            starts, stops = np.asarray(self.q_starts)[order], ends[order]
            if np.any(starts[1:] < stops[:-1]):
                raise ValueError(f"{where}: query spans overlap; every query row belongs to at "
                                 "most one sequence")
        if self.k_starts is not None:
            _check_count(where, "k_starts", self.k_starts, n)
        if self.block_table is None:
            ends = np.add(self.k_starts, self.k_lengths)
            if ends.size and ends.max() > self.k_total:
                bad = int(np.argmax(ends))
                raise ValueError(f"{where}: key span {bad} ends at {int(ends[bad])} > k_total = "
                                 f"{self.k_total}")
        else:
            self._check_pages(where, n)

    def _check_pages(self, where: str, n: int) -> None:
        table = np.asarray(self.block_table, dtype=np.int64).reshape(len(self.block_table), -1)
        if table.shape[0] != n:
            raise ValueError(f"{where}: block_table has {table.shape[0]} rows but there are {n} "
                             "sequences (k_lengths)")
        if self.k_total % self.page_size:
            raise ValueError(f"{where}: the physical cache of k_total = {self.k_total} slots is "
                             f"not a whole number of pages of page_size = {self.page_size}")
        num_pages = self.k_total // self.page_size
        for seq, length in enumerate(self.k_lengths):
            first = 0 if self.k_starts is None else self.k_starts[seq]
            used = -(-(first + length) // self.page_size)
            if used > table.shape[1]:
                raise ValueError(f"{where}: sequence {seq} has k_lengths = {length} keys, "
                                 f"{used} pages of {self.page_size}, but its block_table row "
                                 f"holds {table.shape[1]} pages")
            pages = table[seq, first // self.page_size:used]
            if pages.size and (pages.min() < 0 or pages.max() >= num_pages):
                raise ValueError(f"{where}: block_table[{seq}] uses page {int(pages.max())} "
                                 f"outside [0, {num_pages}) (k_total / page_size)")
            if len(set(pages.tolist())) != pages.size:
                raise ValueError(f"{where}: block_table[{seq}] lists a physical page twice "
                                 f"among its used pages {pages.tolist()}")

    # -- shape ------------------------------------------------------------------------------
    @property
    def num_sequences(self) -> int:
        return len(self.k_lengths)

    @property
    def packed_queries(self) -> bool:
        return self.q_starts is not None

    def check_lengths(self, where: str, q_len: int, k_len: int) -> None:
        """Raise unless (Tq, Tk) is what the layout describes."""
        if self.q_total is not None and q_len != self.q_total:
            raise ValueError(f"{where}: the layout packs {self.q_total} query tokens but "
                             f"q_len = {q_len}")
        if k_len != self.k_total:
            raise ValueError(f"{where}: the layout has {self.k_total} key slots but k_len = "
                             f"{k_len}")

    # -- tables -----------------------------------------------------------------------------
    def query_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(sequence, local index) of each packed query row, -1 outside every sequence."""
        sequence = np.full(self.q_total, -1, dtype=np.int64)
        local = np.full(self.q_total, -1, dtype=np.int64)
        for n, (start, length) in enumerate(zip(self.q_starts, self.q_lengths, strict=True)):
            sequence[start:start + length] = n
            local[start:start + length] = np.arange(length)
        return sequence, local

    def key_positions(self) -> np.ndarray:
        """(N, Tk) int64: ``pos_n(j)``, the logical position of key slot j in sequence n, or -1
        where slot j holds none of sequence n's valid keys."""
        table = np.full((self.num_sequences, self.k_total), -1, dtype=np.int64)
        for n, length in enumerate(self.k_lengths):
            start = 0 if self.k_starts is None else self.k_starts[n]
            if self.block_table is None:
                table[n, start:start + length] = np.arange(length)
                continue
            slot = start + np.arange(length)  # slot in the sequence's logical page row
            page = np.asarray(self.block_table[n], dtype=np.int64)[slot // self.page_size]
            table[n, page * self.page_size + slot % self.page_size] = np.arange(length)
        return table

    def per_sequence_alignment(self, align: Alignment, where: str) -> Alignment:
        """``align`` resolved per sequence: bottom-right gets the sequences' lengths."""
        if align.kind == "bottom_right":
            if align.q_lengths is not None or align.k_lengths is not None:
                raise ValueError(f"{where}: inside varlen, bottom_right takes its lengths from "
                                 "the layout; pass align='bottom_right' without lengths")
            return bottom_right(self.q_lengths, self.k_lengths)
        if align.batch_size not in (None, self.num_sequences):
            raise ValueError(f"{where}: align holds {align.batch_size} offsets but the layout "
                             f"has {self.num_sequences} sequences (one offset per sequence)")
        return align

    def to_json(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None}


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(x) for x in value]
    return value


def _check_count(where: str, name: str, values, n: int) -> None:
    if len(values) != n:
        raise ValueError(f"{where}: {name} has {len(values)} entries but there are {n} "
                         "sequences")


# -- layout factories --------------------------------------------------------------------------

def _offsets(where: str, name: str, cu_seqlens) -> np.ndarray:
    offsets = np.asarray(check_int_vector(where, name, cu_seqlens), dtype=np.int64)
    if offsets.size < 2 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{where}: {name} must start at 0, be non-decreasing and hold N+1 >= 2 "
                         f"offsets, got {offsets.tolist()}")
    return offsets


def varlen_layout(cu_seqlens_q: ArrayLike, cu_seqlens_k: ArrayLike, *,
                  seqused_k: ArrayLike | None = None) -> SequenceLayout:
    """FlashAttention varlen: sequence n owns queries ``[cu_seqlens_q[n], cu_seqlens_q[n+1])``
    and keys ``[cu_seqlens_k[n], cu_seqlens_k[n] + used)`` with ``used = seqused_k[n]`` when
    given (``flash_attn_varlen_func(..., seqused_k=)``), else the whole span. Tq =
    ``cu_seqlens_q[-1]``, Tk = ``cu_seqlens_k[-1]``. xformers ``BlockDiagonal*Mask.from_seqlens``
    is ``varlen_layout(cumsum([0] + q_seqlen), cumsum([0] + kv_seqlen))``."""
    where = "varlen_layout"
    q = _offsets(where, "cu_seqlens_q", cu_seqlens_q)
    k = _offsets(where, "cu_seqlens_k", cu_seqlens_k)
    if q.size != k.size:
        raise ValueError(f"{where}: cu_seqlens_q has {q.size - 1} sequences but cu_seqlens_k "
                         f"has {k.size - 1}")
    lengths = np.diff(k)
    if seqused_k is not None:
        used = np.asarray(check_int_vector(where, "seqused_k", seqused_k, minimum=0))
        _check_count(where, "seqused_k", used, q.size - 1)
        if np.any(used > lengths):
            bad = int(np.argmax(used > lengths))
            raise ValueError(f"{where}: seqused_k[{bad}] = {int(used[bad])} exceeds the span of "
                             f"{int(lengths[bad])} keys given by cu_seqlens_k")
        lengths = used
    return SequenceLayout(k_lengths=tuple(int(x) for x in lengths), k_total=int(k[-1]),
                          q_starts=tuple(int(x) for x in q[:-1]),
                          q_lengths=tuple(int(x) for x in np.diff(q)), q_total=int(q[-1]),
                          k_starts=tuple(int(x) for x in k[:-1]))


def padded_keys_layout(q_seqlens: ArrayLike, k_padding: int,
                       k_seqlens: ArrayLike) -> SequenceLayout:
    """xformers ``BlockDiagonal*PaddedKeysMask.from_seqlens(q_seqlen, kv_padding, kv_seqlen)``:
    packed queries of lengths ``q_seqlens``; sequence n's keys are the first ``k_seqlens[n]``
    of the slots ``[n * k_padding, (n + 1) * k_padding)``; Tk = N * k_padding."""
    where = "padded_keys_layout"
    q = check_int_vector(where, "q_seqlens", q_seqlens, minimum=0)
    k = check_int_vector(where, "k_seqlens", k_seqlens, minimum=0)
    pad = check_int(where, "k_padding", k_padding, minimum=0)
    _check_count(where, "k_seqlens", k, len(q))
    if k and max(k) > pad:
        raise ValueError(f"{where}: k_seqlens must be <= k_padding = {pad}, got {max(k)}")
    starts = np.concatenate([[0], np.cumsum(q)]).astype(np.int64)
    return SequenceLayout(k_lengths=k, k_total=pad * len(k),
                          q_starts=tuple(int(x) for x in starts[:-1]), q_lengths=q,
                          q_total=int(starts[-1]), k_starts=tuple(pad * n for n in range(len(k))))


def gappy_keys_layout(q_seqlens: ArrayLike, k_starts: ArrayLike, k_seqlens: ArrayLike,
                      k_total: int) -> SequenceLayout:
    """xformers ``BlockDiagonal*GappyKeysMask.from_seqlens(q_seqlen, kv_seqstarts, kv_seqlen)``
    (with ``kv_seqstarts = list(k_starts) + [k_total]``): sequence n's keys are
    ``[k_starts[n], k_starts[n] + k_seqlens[n])`` anywhere in Tk = k_total slots."""
    where = "gappy_keys_layout"
    q = check_int_vector(where, "q_seqlens", q_seqlens, minimum=0)
    starts = np.concatenate([[0], np.cumsum(q)]).astype(np.int64)
    return SequenceLayout(
        k_lengths=check_int_vector(where, "k_seqlens", k_seqlens, minimum=0),
        k_total=check_int(where, "k_total", k_total, minimum=0),
        q_starts=tuple(int(x) for x in starts[:-1]), q_lengths=q, q_total=int(starts[-1]),
        k_starts=check_int_vector(where, "k_starts", k_starts, minimum=0))


def paged_layout(block_table: ArrayLike, page_size: int, seq_lens: ArrayLike, *,
                 num_pages: int, cu_seqlens_q: ArrayLike | None = None,
                 first_slots: ArrayLike | None = None) -> SequenceLayout:
    """Paged KV cache (vLLM ``block_tables`` + ``seq_lens``; xformers ``Paged*``): logical key
    position ``pos`` of sequence n lives in physical slot
    ``block_table[n][pos // page_size] * page_size + pos % page_size`` of a cache of
    Tk = num_pages * page_size slots, for ``0 <= pos < seq_lens[n]``.

    cu_seqlens_q: None for batched queries (decode or chunked prefill with B = N batch entries
    of Tq queries each), or (N+1,) offsets of packed queries (xformers ``Paged*`` and
    FlashAttention varlen with a ``block_table``). Entries of block_table past a sequence's
    last used page are never read (vLLM pads them with any page id). first_slots: (N,)
    logical slot of each sequence's key 0 (default all 0; xformers ``PagedBlockDiagonalGappy*``
    ``kv_seqstarts``), so key ``pos`` lives at logical slot ``first_slots[n] + pos``.
    """
    where = "paged_layout"
    table = check_int_matrix(where, "block_table", block_table)
    size = check_int(where, "page_size", page_size, minimum=1)
    lengths = check_int_vector(where, "seq_lens", seq_lens, minimum=0)
    pages = check_int(where, "num_pages", num_pages, minimum=0)
    packed = {}
    if cu_seqlens_q is not None:
        q = _offsets(where, "cu_seqlens_q", cu_seqlens_q)
        _check_count(where, "cu_seqlens_q[:-1]", q[:-1], len(lengths))
        packed = {"q_starts": tuple(int(x) for x in q[:-1]),
                  "q_lengths": tuple(int(x) for x in np.diff(q)), "q_total": int(q[-1])}
    if first_slots is not None:
        packed["k_starts"] = check_int_vector(where, "first_slots", first_slots, minimum=0)
    return SequenceLayout(k_lengths=lengths, k_total=pages * size, block_table=table,
                          page_size=size, **packed)


def layout_from_json(data: dict) -> SequenceLayout:
    """Inverse of :meth:`SequenceLayout.to_json`."""
    if not isinstance(data, dict):
        raise ValueError(f"layout_from_json: a layout must be a JSON object, got "
                         f"{type(data).__name__}")
    known = {f.name for f in fields(SequenceLayout)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"layout_from_json: unknown fields {sorted(unknown)}")

    def freeze(value):
        return tuple(freeze(x) for x in value) if isinstance(value, list) else value

    return SequenceLayout(**{name: freeze(value) for name, value in data.items()})


# -- the mask ----------------------------------------------------------------------------------

def _localised(mask: Mask, layout: SequenceLayout) -> Mask:
    """``mask`` with every alignment resolved per sequence; refuses masks that read Tq/Tk."""
    if mask.kind not in _LOCAL_KINDS:
        raise ValueError(f"varlen: a {mask.kind!r} mask reads the packed lengths, not the "
                         f"sequence's; inside varlen use one of {list(_LOCAL_KINDS)} (padding "
                         "and documents are what the layout itself expresses)")
    changes = {}
    if isinstance(getattr(mask, "align", None), Alignment):
        changes["align"] = layout.per_sequence_alignment(mask.align, f"varlen({mask.kind})")
    if isinstance(getattr(mask, "masks", None), tuple):
        changes["masks"] = tuple(_localised(part, layout) for part in mask.masks)
    if isinstance(getattr(mask, "mask", None), Mask):
        changes["mask"] = _localised(mask.mask, layout)
    if mask.kind == "per_batch" and mask.batch_size != layout.num_sequences:
        raise ValueError(f"varlen: per_batch inside varlen selects per sequence and needs "
                         f"{layout.num_sequences} parts, got {mask.batch_size}")
    return replace(mask, **changes) if changes else mask


@dataclass(frozen=True, repr=False)
class Varlen(Mask):
    """``mask`` evaluated per sequence of ``layout`` on local positions (module docstring)."""

    mask: Mask
    layout: SequenceLayout
    kind = "varlen"

    def __post_init__(self):
        self._local  # noqa: B018 - validates the inner mask now, not at first use

    @cached_property
    def _local(self) -> Mask:
        return _localised(self.mask, self.layout)

    @property
    def batch_size(self) -> int | None:
        return None if self.layout.packed_queries else self.layout.num_sequences

    @property
    def num_heads(self) -> int | None:
        return self.mask.num_heads

    def check_lengths(self, q_len: int, k_len: int) -> None:
        """Tq and Tk must be the layout's; the inner mask is checked on one sequence's lengths."""
        layout = self.layout
        layout.check_lengths("varlen", q_len, k_len)
        inner_q = max(layout.q_lengths, default=0) if layout.packed_queries else q_len
        self._local.check_lengths(inner_q, max(layout.k_lengths, default=0))

    def _keep(self, grid, b, h, i, j):
        layout = self.layout
        layout.check_lengths("varlen", grid.q_len, grid.k_len)
        xp = grid.xp
        if layout.packed_queries:
            seq_table, local_table = layout.query_table()
            sequence = _take(grid, seq_table, i)
            local_q = _take(grid, local_table, i)
            inner_q_len = max(layout.q_lengths, default=0)
        else:
            sequence, local_q, inner_q_len = b + i * 0, i, grid.q_len
        inside = sequence >= 0
        sequence = xp.where(inside, sequence, 0)
        position = grid.gather_rows(layout.key_positions(), sequence, j)
        inside = inside & (position >= 0)
        inner = Grid(xp, grid.device, inner_q_len, max(layout.k_lengths, default=0))
        kept = self._local._keep(inner, sequence, h, xp.where(local_q >= 0, local_q, 0),
                                 xp.where(position >= 0, position, 0))
        return inside & kept

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        self.layout.check_lengths("varlen", q_len, k_len)
        return classify_by_evaluation(self, b, h, q0, q1, k0, k1, q_len, k_len)

    def query_minus_key(self, align: AlignLike, batch: int, q_len: int,
                        k_len: int) -> np.ndarray:
        """(B | 1, Tq, Tk) int64 ``pq - pk`` on sequence-local positions, with the query
        position ``pq = local i + offset_n`` of the per-sequence ``align``; 0 for pairs of two
        different sequences (which the mask never keeps). Used by per-sequence ALiBi."""
        return sequence_distance(self.layout, as_alignment(align, "varlen"), batch, q_len, k_len)

    def _params(self) -> dict:
        return {"mask": self.mask.to_json(), "layout": self.layout.to_json()}

    def __repr__(self) -> str:
        return f"varlen({self.mask!r}, {self.layout!r})"


def _take(grid, table: np.ndarray, index):
    xp = grid.xp
    column = xp.asarray(table, device=grid.device)
    return xp.reshape(xp.take(column, xp.reshape(index, (-1,)), axis=0), index.shape)


def sequence_distance(layout: SequenceLayout, align: Alignment, batch: int, q_len: int,
                      k_len: int) -> np.ndarray:
    """``pq - pk`` per (batch, query row, key slot) on sequence-local positions (NumPy int64,
    shape (B, Tq, Tk) for batched queries, (1, Tq, Tk) for packed); 0 across sequences."""
    layout.check_lengths("varlen", q_len, k_len)
    align = layout.per_sequence_alignment(align, "varlen")
    positions = layout.key_positions()
    if layout.packed_queries:
        sequence, local = layout.query_table()
        rows = np.maximum(sequence, 0)
        offsets = align.offset_table(max(layout.q_lengths, default=0),
                                     max(layout.k_lengths, default=0))
        pq = local + offsets[rows if offsets.size > 1 else np.zeros_like(rows)]
        pk = positions[rows]
        valid = (sequence[:, None] >= 0) & (pk >= 0)
        return np.where(valid, pq[:, None] - pk, 0)[None]
    offsets = align.offset_table(q_len, max(layout.k_lengths, default=0))
    offsets = np.broadcast_to(offsets, (layout.num_sequences,))
    if batch != layout.num_sequences:
        raise ValueError(f"varlen: the layout has {layout.num_sequences} sequences (one per batch "
                         f"entry) but batch = {batch}")
    pq = np.arange(q_len)[None, :, None] + offsets[:, None, None]
    pk = positions[:, None, :]
    return np.where(pk >= 0, pq - pk, 0)


def varlen(mask: Mask, layout: SequenceLayout) -> Varlen:
    """``mask`` applied to every sequence of ``layout`` on local positions.

    mask: a mask on one sequence (causal, windows, chunks, prefix-LM, tree, a predicate on
    local indices, their combinations; per_batch selects per sequence); every alignment in it
    is resolved per sequence. layout: from :func:`varlen_layout`, :func:`padded_keys_layout`,
    :func:`gappy_keys_layout` or :func:`paged_layout`.
    """
    if not isinstance(mask, Mask):
        raise TypeError(f"varlen: mask must be a refmask Mask, got {type(mask).__name__}")
    if not isinstance(layout, SequenceLayout):
        raise TypeError(f"varlen: layout must be a SequenceLayout (varlen_layout, "
                        f"paged_layout, ...), got {type(layout).__name__}")
    return Varlen(mask, layout)
