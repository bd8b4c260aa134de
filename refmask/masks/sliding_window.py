"""Sliding window: a query attends keys within ``left`` positions before and ``right`` after.

    keep iff pq - left <= pk <= pq + right      (both bounds inclusive; None = unbounded)

    sliding_window(2, 0, align="top_left")      sliding_window(1, 1, align="bottom_right")
    Tq=Tk=5: 3 keys including self              Tq=3, Tk=5 (offset 2)
        01234                                       01234
      0 █····                                     0 ·███·
      1 ██···                                     1 ··███
      2 ███··                                     2 ···██
      3 ·███·
      4 ··███

The three conventions of the off-by-one zoo, all expressible exactly:

* FlashAttention ``window_size=(left, right)``: the same inclusive bounds, negative = None.
* "W keys including self" (HF masking_utils ``sliding_window_overlay``, xformers local W,
  gpt-oss ``sliding_window``): ``sliding_window(W - 1, 0)``.
* attention-gym ``generate_sliding_window(w)`` (``q - kv <= w``, causal): ``sliding_window(w, 0)``.

``causal`` equals ``sliding_window(None, 0)`` and ``full`` equals ``sliding_window(None, None)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._validate import check_optional_int
from ._positional import PositionalMask, classify_distance_band
from .alignment import AlignLike, Alignment, as_alignment


@dataclass(frozen=True, repr=False)
class SlidingWindow(PositionalMask):
    """keep iff ``-right <= pq - pk <= left``."""

    left: int | None
    right: int | None
    align: Alignment
    kind = "sliding_window"

    def _keep(self, grid, b, h, i, j):
        pq, pk = self._positions(grid, b, i, j)
        kept = grid.ones(pq, pk)
        if self.left is not None:
            kept = kept & (pk >= pq - self.left)
        if self.right is not None:
            kept = kept & (pk <= pq + self.right)
        return kept

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        pq_lo, pq_hi, pk_lo, pk_hi = self._position_bounds(b, q0, q1, k0, k1, q_len, k_len)
        low = None if self.right is None else -self.right
        return classify_distance_band(pq_lo - pk_hi, pq_hi - pk_lo, low, self.left)

    def _params(self) -> dict:
        return {"left": self.left, "right": self.right, "align": self.align.to_json()}


def sliding_window(left: int | None, right: int | None, *, align: AlignLike) -> SlidingWindow:
    """Keys in ``[pq - left, pq + right]``, inclusive; ``None`` leaves that side unbounded.

    left, right: ints >= 0 or None. A causal window of W keys including self is
    ``sliding_window(W - 1, 0, align=...)``.
    """
    return SlidingWindow(
        check_optional_int("sliding_window", "left", left, minimum=0),
        check_optional_int("sliding_window", "right", right, minimum=0),
        as_alignment(align, "sliding_window"),
    )
