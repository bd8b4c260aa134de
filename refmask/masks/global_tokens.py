"""Global tokens (Longformer, BigBird): tokens at the given positions attend everything and
are attended by everything.

    keep iff pk in G  or  pq in G

    global_tokens([0], align="top_left") & sliding_window(1, 1, align="top_left") ... or alone:
    global_tokens([0, 3], align="top_left"), Tq=Tk=5
        01234
      0 █████
      1 █··█·
      2 █··█·
      3 █████
      4 █··█·

Combine with a local pattern by ``|``: ``global_tokens(G) | sliding_window(w, w)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_int_table
from ._base import Block
from ._positional import PositionalMask
from .alignment import AlignLike, Alignment, as_alignment


@dataclass(frozen=True, repr=False)
class GlobalTokens(PositionalMask):
    """keep iff ``pk in positions`` or ``pq in positions``."""

    positions: tuple
    align: Alignment
    kind = "global_tokens"

    def _member(self, grid, position):
        """``position in G`` through a lookup table of length max(G) + 1."""
        xp = grid.xp
        if not self.positions:
            return position < position  # all False, right shape
        table = np.zeros(max(self.positions) + 1, dtype=np.int64)
        table[list(self.positions)] = 1
        inside = (position >= 0) & (position < table.shape[0])
        clipped = xp.clip(position, 0, table.shape[0] - 1)
        return inside & (grid.gather(np.concatenate([table, [0]]), clipped) == 1)

    def _keep(self, grid, b, h, i, j):
        pq, pk = self._positions(grid, b, i, j)
        return self._member(grid, pk) | self._member(grid, pq)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        pq_lo, pq_hi, pk_lo, pk_hi = self._position_bounds(b, q0, q1, k0, k1, q_len, k_len)
        table = np.asarray(self.positions, dtype=np.int64)

        def count(lo, hi):
            return np.searchsorted(table, hi, "right") - np.searchsorted(table, lo, "left")

        in_q, in_k = count(pq_lo, pq_hi), count(pk_lo, pk_hi)
        # Every pair passes iff all keys or all queries are global (else pick one of each
        # non-global); no pair passes iff no key and no query is global.
        full = (in_q == pq_hi - pq_lo + 1) | (in_k == pk_hi - pk_lo + 1)
        empty = (in_q == 0) & (in_k == 0)
        return np.where(empty, Block.EMPTY, np.where(full, Block.FULL, Block.PARTIAL))

    def _params(self) -> dict:
        return {"positions": list(self.positions), "align": self.align.to_json()}


def global_tokens(positions: int | ArrayLike, *, align: AlignLike) -> GlobalTokens:
    """Global-token mask; ``positions`` are distinct ints >= 0 (token positions)."""
    values = check_int_table("global_tokens", "positions", positions, minimum=0)
    if len(set(values)) != len(values):
        raise ValueError(f"global_tokens: positions must be distinct, got {list(values)}")
    return GlobalTokens(tuple(sorted(values)), as_alignment(align, "global_tokens"))
