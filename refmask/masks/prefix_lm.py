"""Prefix-LM: the first ``prefix`` keys are visible to every query, the rest causally.

    keep iff pk < prefix(b)  or  pk <= pq

    prefix_lm(2, align="top_left"), Tq=Tk=5      (PaliGemma, T5 prefix-LM, attention-gym)
        01234
      0 ██···
      1 ██···
      2 ███··
      3 ████·
      4 █████

``prefix`` may be one int or one int per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_int_table
from ._base import Block, common_batch_size, table_at
from ._positional import PositionalMask
from .alignment import AlignLike, Alignment, as_alignment


@dataclass(frozen=True, repr=False)
class PrefixLM(PositionalMask):
    """keep iff ``pk < prefix[b]`` or ``pk <= pq``."""

    prefix: tuple
    align: Alignment
    kind = "prefix_lm"

    def __post_init__(self):
        common_batch_size("prefix_lm", prefix=_table_size(self.prefix),
                          align=self.align.batch_size)

    @property
    def batch_size(self) -> int | None:
        return common_batch_size("prefix_lm", prefix=_table_size(self.prefix),
                                 align=self.align.batch_size)

    def _keep(self, grid, b, h, i, j):
        pq, pk = self._positions(grid, b, i, j)
        return (pk < grid.gather(self.prefix, b)) | (pk <= pq)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        pq_lo, pq_hi, pk_lo, pk_hi = self._position_bounds(b, q0, q1, k0, k1, q_len, k_len)
        prefix = table_at(self.prefix, b)
        # Keys below the prefix always pass; the others need pk <= pq for every query.
        full = (np.maximum(pk_lo, prefix) > pk_hi) | (pk_hi <= pq_lo)
        empty = (pk_lo >= prefix) & (pk_lo > pq_hi)
        return np.where(empty, Block.EMPTY, np.where(full, Block.FULL, Block.PARTIAL))

    def _params(self) -> dict:
        prefix = self.prefix[0] if len(self.prefix) == 1 else list(self.prefix)
        return {"prefix": prefix, "align": self.align.to_json()}


def _table_size(table: tuple) -> int | None:
    return len(table) if len(table) > 1 else None


def prefix_lm(prefix: int | ArrayLike, *, align: AlignLike) -> PrefixLM:
    """Prefix-LM mask; ``prefix`` is an int >= 0 or one int >= 0 per batch."""
    values = check_int_table("prefix_lm", "prefix", prefix, minimum=0)
    if not values:
        raise ValueError("prefix_lm: prefix must hold at least one value")
    return PrefixLM(values, as_alignment(align, "prefix_lm"))
