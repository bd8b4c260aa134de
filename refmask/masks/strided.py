"""Strided (dilated) attention, Sparse Transformer style: keys a multiple of ``stride``
positions away.

    keep iff (pq - pk) mod stride == 0

    strided(2, align="top_left") & causal(align="top_left"), Tq=Tk=5
        01234
      0 █····
      1 ·█···
      2 █·█··
      3 ·█·█·
      4 █·█·█

A dilated sliding window is ``sliding_window(...) & strided(d, ...)``. The Sparse Transformer's
strided pattern splits over two heads: A1(i) = {max(0, i - l), ..., i}, i.e.
``sliding_window(l, 0)``, and A2 = ``strided(l) & causal``; as one head,
``per_head(sliding_window(l, 0, ...), strided(l, ...) & causal(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import check_int
from ._base import Block
from ._positional import PositionalMask
from .alignment import AlignLike, Alignment, as_alignment


@dataclass(frozen=True, repr=False)
class Strided(PositionalMask):
    """keep iff ``(pq - pk) mod stride == 0``."""

    stride: int
    align: Alignment
    kind = "strided"

    def _keep(self, grid, b, h, i, j):
        pq, pk = self._positions(grid, b, i, j)
        return ((pq - pk) % self.stride) == 0

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        pq_lo, pq_hi, pk_lo, pk_hi = self._position_bounds(b, q0, q1, k0, k1, q_len, k_len)
        d_min, d_max = pq_lo - pk_hi, pq_hi - pk_lo
        s = self.stride
        # Every distance in [d_min, d_max] occurs; a multiple of s lies there iff this holds.
        has_multiple = (d_max // s) * s >= d_min
        full = (s == 1) | ((d_min == d_max) & (d_min % s == 0))
        return np.where(~has_multiple, Block.EMPTY, np.where(full, Block.FULL, Block.PARTIAL))

    def _params(self) -> dict:
        return {"stride": self.stride, "align": self.align.to_json()}


def strided(stride: int, *, align: AlignLike) -> Strided:
    """Keys whose distance to the query is a multiple of ``stride`` >= 1."""
    return Strided(check_int("strided", "stride", stride, minimum=1),
                   as_alignment(align, "strided"))
