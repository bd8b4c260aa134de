"""Full attention: every query attends every key.

    full()                 Tq=3, Tk=4
        0123
      0 ████
      1 ████
      2 ████

Peers: no mask at all (SDPA ``attn_mask=None, is_causal=False``; JAX ``mask=None``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._base import Block, Mask


@dataclass(frozen=True, repr=False)
class Full(Mask):
    """keep(b, h, i, j) = True."""

    kind = "full"

    def _keep(self, grid, b, h, i, j):
        return grid.ones(i, j)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return np.full(np.broadcast_shapes(q0.shape, k0.shape), Block.FULL)

    def _params(self) -> dict:
        return {}


def full() -> Mask:
    """The mask that keeps every (query, key) pair."""
    return Full()
