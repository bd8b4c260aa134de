"""Shared machinery of masks defined on positions (``pq = i + offset(b)``, ``pk = j``)."""

from __future__ import annotations

import numpy as np

from ._base import Block, Mask


class PositionalMask(Mask):
    """A mask whose rule compares query and key *positions*; subclasses have an ``align``."""

    @property
    def batch_size(self) -> int | None:
        return self.align.batch_size

    def _positions(self, grid, b, i, j):
        """(pq, pk) arrays: ``pq = i + offset(b)``, ``pk = j``."""
        return self.align.query_positions(grid, b, i), j

    def _position_bounds(self, b, q0, q1, k0, k1, q_len, k_len):
        """Inclusive position bounds ``(pq_lo, pq_hi, pk_lo, pk_hi)`` of each rectangle."""
        pq_lo, pq_hi = self.align.query_position_bounds(b, q0, q1, q_len, k_len)
        return pq_lo, pq_hi, k0, k1 - 1


def classify_distance_band(d_min, d_max, low: int | None, high: int | None):
    """Codes for the rule ``low <= pq - pk <= high`` (None = unbounded) on rectangles whose
    distances ``pq - pk`` span ``[d_min, d_max]``.

    Exact: a rectangle of consecutive positions realises every integer distance between its
    extremes, so it is EMPTY iff ``[d_min, d_max]`` misses ``[low, high]`` and FULL iff it is
    contained in it.
    """
    low_ok_all = True if low is None else d_min >= low
    high_ok_all = True if high is None else d_max <= high
    below = False if low is None else d_max < low
    above = False if high is None else d_min > high
    full = np.logical_and(low_ok_all, high_ok_all)
    empty = np.logical_or(below, above)
    return np.where(empty, Block.EMPTY, np.where(full, Block.FULL, Block.PARTIAL))


def classify_interval_relation(lo_a, hi_a, lo_b, hi_b, relation: str):
    """Codes for ``x R y`` with x in ``[lo_a, hi_a]`` and y in ``[lo_b, hi_b]`` (integers).

    relation ``"eq"``: FULL iff both intervals are the same single value, EMPTY iff disjoint.
    relation ``"le"`` (x <= y): FULL iff ``hi_a <= lo_b``, EMPTY iff ``lo_a > hi_b``.
    """
    if relation == "eq":
        full = (lo_a == hi_a) & (lo_b == hi_b) & (lo_a == lo_b)
        empty = (hi_a < lo_b) | (hi_b < lo_a)
    else:
        full = hi_a <= lo_b
        empty = lo_a > hi_b
    return np.where(empty, Block.EMPTY, np.where(full, Block.FULL, Block.PARTIAL))
