"""Block-causal ("progressive exposure"): the sequence is cut into blocks of T positions and
block n sees blocks 0..n in full.

    keep iff floor(pk / T) <= floor(pq / T)

    block_causal(2, align="top_left"), Tq=Tk=6
        012345
      0 ██····
      1 ██····
      2 ████··
      3 ████··
      4 ██████
      5 ██████

This is the "sub-sequences of length T revealed step by step" mask of the static vs dynamic
masking articles; with T = 1 it is ``causal``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._validate import check_int
from ._positional import PositionalMask, classify_interval_relation
from .alignment import AlignLike, Alignment, as_alignment


@dataclass(frozen=True, repr=False)
class BlockCausal(PositionalMask):
    """keep iff ``floor(pk / block) <= floor(pq / block)``."""

    block: int
    align: Alignment
    kind = "block_causal"

    def _keep(self, grid, b, h, i, j):
        pq, pk = self._positions(grid, b, i, j)
        return (pk // self.block) <= (pq // self.block)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        pq_lo, pq_hi, pk_lo, pk_hi = self._position_bounds(b, q0, q1, k0, k1, q_len, k_len)
        t = self.block
        return classify_interval_relation(pk_lo // t, pk_hi // t, pq_lo // t, pq_hi // t, "le")

    def _params(self) -> dict:
        return {"block": self.block, "align": self.align.to_json()}


def block_causal(block: int, *, align: AlignLike) -> BlockCausal:
    """Blocks of ``block`` >= 1 positions; a query sees its own block and every earlier one."""
    return BlockCausal(check_int("block_causal", "block", block, minimum=1),
                       as_alignment(align, "block_causal"))
