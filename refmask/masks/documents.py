"""Documents (packed sequences): a query attends only keys of the same document.

    keep iff q_segment_ids[b, i] == k_segment_ids[b, j]

    documents([[0, 0, 1, 1, 1]])          documents(...) & causal(align="top_left")
        01234                                 01234
      0 ██···                               0 █····
      1 ██···                               1 ██···
      2 ··███                               2 ··█··
      3 ··███                               3 ··██·
      4 ··███                               4 ··███

Segment ids are compared for equality only; their values carry no order. Padding is not a
segment: combine with :func:`key_padding`. Builders from the peers' packed formats:

* :func:`documents_from_cu_seqlens`: FlashAttention varlen ``cu_seqlens`` (B+1 offsets into one
  packed row of ``cu_seqlens[-1]`` tokens); token t belongs to sequence n iff
  ``cu_seqlens[n] <= t < cu_seqlens[n+1]``.
* :func:`documents_from_position_ids`: HF packing detection -- a new document starts wherever
  ``position_ids[b, t] != position_ids[b, t-1] + 1`` (and at t = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_int_matrix, check_int_vector
from ._base import Block, Mask, classify_by_evaluation, common_batch_size


@dataclass(frozen=True, repr=False)
class Documents(Mask):
    """keep iff ``q_segment_ids[b, i] == k_segment_ids[b, j]``."""

    q_segment_ids: tuple
    k_segment_ids: tuple
    kind = "documents"

    @property
    def batch_size(self) -> int | None:
        sizes = {len(self.q_segment_ids), len(self.k_segment_ids)}
        size = max(sizes)
        return size if size > 1 else None

    def check_lengths(self, q_len: int, k_len: int) -> None:
        """Each id row has exactly Tq (query ids) / Tk (key ids) entries."""
        for name, ids, length, axis in (("q_segment_ids", self.q_segment_ids, q_len, "q_len"),
                                        ("k_segment_ids", self.k_segment_ids, k_len, "k_len")):
            if len(ids[0]) != length:
                raise ValueError(f"documents: {name} has {len(ids[0])} tokens per row but "
                                 f"{axis} = {length}")

    def _keep(self, grid, b, h, i, j):
        self.check_lengths(grid.q_len, grid.k_len)
        return grid.gather_rows(self.q_segment_ids, b, i) == grid.gather_rows(
            self.k_segment_ids, b, j)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        """Exact codes from the first and last id of each range, with ``[q_lo, q_hi]`` and
        ``[k_lo, k_hi]`` the ids at the ends of the two ranges:
        EMPTY iff ``q_hi < k_lo or k_hi < q_lo``; FULL iff ``q_lo == q_hi == k_lo == k_hi``.

        The rule is exact when the id intervals of two ranges overlap only if the ranges share
        an id, which holds (a) when queries and keys use the same non-decreasing id row (two
        sorted ranges of one row whose intervals touch meet in the id where they touch), and
        (b) when every row is non-decreasing in steps of 0 or 1 (a range then holds every id
        between its ends). Packed documents (``cu_seqlens``, position-id restarts) are (a) or
        (b); other id layouts are classified by evaluation."""
        q_ids = np.asarray(self.q_segment_ids, dtype=np.int64)
        k_ids = np.asarray(self.k_segment_ids, dtype=np.int64)
        same_sorted_row = self.q_segment_ids == self.k_segment_ids and bool(
            np.all(np.diff(q_ids, axis=1) >= 0))
        dense_steps = _steps_of_zero_or_one(q_ids) and _steps_of_zero_or_one(k_ids)
        if not (same_sorted_row or dense_steps):
            return classify_by_evaluation(self, b, h, q0, q1, k0, k1, q_len, k_len)

        def ends(ids, start, stop):
            rows = b if ids.shape[0] > 1 else np.zeros_like(b)
            return ids[rows, start], ids[rows, stop - 1]

        q_lo, q_hi = ends(q_ids, q0, q1)
        k_lo, k_hi = ends(k_ids, k0, k1)
        full = (q_lo == q_hi) & (k_lo == k_hi) & (q_lo == k_lo)
        empty = (q_hi < k_lo) | (k_hi < q_lo)
        return np.where(empty, Block.EMPTY, np.where(full, Block.FULL, Block.PARTIAL))

    def _params(self) -> dict:
        params = {"q_segment_ids": [list(row) for row in self.q_segment_ids]}
        if self.k_segment_ids != self.q_segment_ids:
            params["k_segment_ids"] = [list(row) for row in self.k_segment_ids]
        return params


def _steps_of_zero_or_one(ids: np.ndarray) -> bool:
    """True when every row of ``ids`` is non-decreasing in steps of 0 or 1."""
    steps = np.diff(ids, axis=1)
    return bool(np.all((steps == 0) | (steps == 1)))


def documents(q_segment_ids: ArrayLike, k_segment_ids: ArrayLike | None = None) -> Documents:
    """Same-document mask from segment ids.

    q_segment_ids: ints of shape (B, Tq) or (Tq,) (one row shared by every batch).
    k_segment_ids: ints of shape (B, Tk) or (Tk,); default: the query ids (self-attention).
    """
    q = check_int_matrix("documents", "q_segment_ids", q_segment_ids)
    k = q if k_segment_ids is None else check_int_matrix("documents", "k_segment_ids",
                                                         k_segment_ids)
    common_batch_size("documents", q_segment_ids=len(q) if len(q) > 1 else None,
                      k_segment_ids=len(k) if len(k) > 1 else None)
    return Documents(q, k)


def segment_ids_from_cu_seqlens(cu_seqlens: ArrayLike, name: str = "cu_seqlens") -> np.ndarray:
    """Segment id of each packed token: ``n`` for ``cu_seqlens[n] <= t < cu_seqlens[n+1]``."""
    offsets = np.asarray(check_int_vector("documents_from_cu_seqlens", name, cu_seqlens))
    if offsets.size < 2 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError(
            f"documents_from_cu_seqlens: {name} must start at 0, be non-decreasing and hold at "
            f"least 2 entries (B+1 offsets), got {offsets.tolist()}"
        )
    return np.repeat(np.arange(offsets.size - 1), np.diff(offsets))


def documents_from_cu_seqlens(cu_seqlens_q: ArrayLike,
                              cu_seqlens_k: ArrayLike | None = None) -> Documents:
    """Documents of a varlen packed row: sequence n spans ``[cu_seqlens[n], cu_seqlens[n+1])``.

    cu_seqlens_q: (N+1,) non-decreasing offsets starting at 0; cu_seqlens_k: the same for keys
    (default: the query offsets). The packed row is one batch of Tq = cu_seqlens_q[-1] tokens.
    FlashAttention's varlen causal is bottom-right *per sequence*; combine with ``causal`` only
    when query and key offsets coincide (then both alignments agree).
    """
    q = segment_ids_from_cu_seqlens(cu_seqlens_q, "cu_seqlens_q")
    if cu_seqlens_k is None:
        return documents(q[None, :])
    k = segment_ids_from_cu_seqlens(cu_seqlens_k, "cu_seqlens_k")
    if len(np.asarray(cu_seqlens_q)) != len(np.asarray(cu_seqlens_k)):
        raise ValueError("documents_from_cu_seqlens: cu_seqlens_q and cu_seqlens_k must hold the "
                         "same number of sequences")
    return documents(q[None, :], k[None, :])


def segment_ids_from_position_ids(position_ids: ArrayLike) -> np.ndarray:
    """``cumsum(position_ids[b, t] != position_ids[b, t-1] + 1) - 1`` along t (t = 0 starts 0)."""
    ids = np.asarray(check_int_matrix("documents_from_position_ids", "position_ids",
                                      position_ids))
    if ids.shape[1] == 0:
        return ids
    starts = np.ones(ids.shape, dtype=bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1] + 1
    return np.cumsum(starts, axis=1) - 1


def documents_from_position_ids(position_ids: ArrayLike) -> Documents:
    """Documents detected from position-id restarts, as HF does for packed batches."""
    return documents(segment_ids_from_position_ids(position_ids))
