"""Chunked attention (Llama 4): a query attends only keys in the same chunk of C positions.

    keep iff floor(pq / C) == floor(pk / C)

    chunked(2, align="top_left")            chunked(2, align="top_left") & causal(...)
    Tq=Tk=5                                 (Llama 4, FlashAttention attention_chunk)
        01234                                   01234
      0 ██···                                 0 █····
      1 ██···                                 1 ██···
      2 ··██·                                 2 ··█··
      3 ··██·                                 3 ··██·
      4 ····█                                 4 ····█

Chunked alone is bidirectional within a chunk; Llama 4 combines it with ``causal``.
Positions are floored, so negative query positions (bottom-right with Tq > Tk) fall into
chunk -1, -2, ... and match no key.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._validate import check_int
from ._positional import PositionalMask, classify_interval_relation
from .alignment import AlignLike, Alignment, as_alignment


@dataclass(frozen=True, repr=False)
class Chunked(PositionalMask):
    """keep iff ``floor(pq / size) == floor(pk / size)``."""

    size: int
    align: Alignment
    kind = "chunked"

    def _keep(self, grid, b, h, i, j):
        pq, pk = self._positions(grid, b, i, j)
        return (pq // self.size) == (pk // self.size)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        pq_lo, pq_hi, pk_lo, pk_hi = self._position_bounds(b, q0, q1, k0, k1, q_len, k_len)
        c = self.size
        return classify_interval_relation(pq_lo // c, pq_hi // c, pk_lo // c, pk_hi // c, "eq")

    def _params(self) -> dict:
        return {"size": self.size, "align": self.align.to_json()}


def chunked(size: int, *, align: AlignLike) -> Chunked:
    """Same-chunk mask with chunks of ``size`` >= 1 positions (not causal by itself)."""
    return Chunked(check_int("chunked", "size", size, minimum=1), as_alignment(align, "chunked"))
