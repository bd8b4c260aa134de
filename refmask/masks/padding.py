"""Key and query padding from per-batch valid lengths.

    key_padding([3, 2], side="right")      key_padding([3, 2], side="left")
    Tk=4, batch 0 | batch 1                Tk=4, batch 0 | batch 1
      keys 0123     0123                     keys 0123     0123
           ███·     ██··                          ·███     ··██

    keep iff j < L[b]            (side="right": valid keys first)
    keep iff j >= Tk - L[b]      (side="left":  valid keys last)

``query_padding`` applies the same rule to query rows: padded query rows keep nothing and are
therefore *empty rows* -- what attention returns for them is the empty-row policy's business.
HF's ``padding_mask_function`` masks keys only, never query rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_choice, check_int_table
from ._base import Block, Mask


def _valid_range(where: str, lengths: tuple, side: str, b, size: int):
    """Half-open valid index range ``[start, stop)`` for each batch index in ``b``."""
    table = np.asarray(lengths, dtype=np.int64)
    if table.max() > size:
        bad = int(np.argmax(table))
        raise ValueError(f"{where}: lengths[{bad}] = {int(table[bad])} exceeds the sequence "
                         f"length {size}")
    valid = table[b] if table.shape[0] > 1 else table[np.zeros_like(b)]
    if side == "right":
        return np.zeros_like(valid), valid
    return size - valid, np.full_like(valid, size)


@dataclass(frozen=True, repr=False)
class _Padding(Mask):
    lengths: tuple
    side: str

    @property
    def batch_size(self) -> int | None:
        return len(self.lengths) if len(self.lengths) > 1 else None

    def check_lengths(self, q_len: int, k_len: int) -> None:
        """No valid length exceeds the padded axis (Tk for key padding, Tq for query)."""
        size = k_len if self.kind == "key_padding" else q_len
        _valid_range(self.kind, self.lengths, self.side, np.zeros(1, dtype=np.int64), size)

    def _index_kept(self, grid, b, index, size: int):
        _valid_range(self.kind, self.lengths, self.side, np.zeros(1, dtype=np.int64), size)
        valid = grid.gather(self.lengths, b)
        return index < valid if self.side == "right" else index >= size - valid

    def _classify_range(self, b, lo, hi, size: int):
        start, stop = _valid_range(self.kind, self.lengths, self.side, b, size)
        full = (lo >= start) & (hi <= stop)
        empty = (hi <= start) | (lo >= stop)
        return np.where(empty, Block.EMPTY, np.where(full, Block.FULL, Block.PARTIAL))

    def _params(self) -> dict:
        lengths = self.lengths[0] if len(self.lengths) == 1 else list(self.lengths)
        return {"lengths": lengths, "side": self.side}


@dataclass(frozen=True, repr=False)
class KeyPadding(_Padding):
    """keep iff key j is valid: ``j < L[b]`` (right) or ``j >= Tk - L[b]`` (left)."""

    kind = "key_padding"

    def _keep(self, grid, b, h, i, j):
        return self._index_kept(grid, b, j, grid.k_len) & grid.ones(i, j)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return self._classify_range(b, k0, k1, k_len) + 0 * q0


@dataclass(frozen=True, repr=False)
class QueryPadding(_Padding):
    """keep iff query i is valid: ``i < L[b]`` (right) or ``i >= Tq - L[b]`` (left)."""

    kind = "query_padding"

    def _keep(self, grid, b, h, i, j):
        return self._index_kept(grid, b, i, grid.q_len) & grid.ones(i, j)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return self._classify_range(b, q0, q1, q_len) + 0 * k0


def _lengths(where: str, lengths) -> tuple:
    values = check_int_table(where, "lengths", lengths, minimum=0)
    if not values:
        raise ValueError(f"{where}: lengths must hold at least one value")
    return values


def key_padding(lengths: int | ArrayLike, *, side: str) -> KeyPadding:
    """Keys beyond each batch's valid length are dropped.

    lengths: int or (B,) ints >= 0, the number of valid keys per batch.
    side: ``"right"`` (valid keys first, padding after) or ``"left"`` (padding first).
    """
    return KeyPadding(_lengths("key_padding", lengths),
                      check_choice("key_padding", "side", side, {"left", "right"}))


def query_padding(lengths: int | ArrayLike, *, side: str) -> QueryPadding:
    """Query rows beyond each batch's valid length keep nothing (they become empty rows).

    lengths: int or (B,) ints >= 0; side: ``"right"`` or ``"left"`` as in :func:`key_padding`.
    """
    return QueryPadding(_lengths("query_padding", lengths),
                        check_choice("query_padding", "side", side, {"left", "right"}))
