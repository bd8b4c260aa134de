"""Causal: a query attends keys at or before its own position.

    keep iff pk <= pq,  with pq = i + offset(b), pk = j

    causal(align="top_left")      causal(align="bottom_right")
    Tq=3, Tk=5: offset 0          Tq=3, Tk=5: offset 2
        01234                         01234
      0 █····                       0 ███··
      1 ██···                       1 ████·
      2 ███··                       2 █████

    Tq=4, Tk=2, bottom_right: offset -2, so rows 0 and 1 keep nothing (empty rows):
        01
      0 ··
      1 ··
      2 █·
      3 ██

Peers: top-left is SDPA ``is_causal=True`` and ``causal_upper_left``, JAX/Flax/Keras, xformers
``LowerTriangularMask``, ONNX ``Attention`` without a KV cache (its offset is the past
length). Bottom-right is FlashAttention >= 2.1, SDPA ``causal_lower_right``, xformers
``*FromBottomRight``, FlashInfer. Per sequence of a packed batch: :func:`varlen`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._positional import PositionalMask, classify_distance_band
from .alignment import AlignLike, Alignment, as_alignment


@dataclass(frozen=True, repr=False)
class Causal(PositionalMask):
    """keep iff ``pk <= pq`` (equivalently ``sliding_window(None, 0)``)."""

    align: Alignment
    kind = "causal"

    def _keep(self, grid, b, h, i, j):
        pq, pk = self._positions(grid, b, i, j)
        return pk <= pq

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        pq_lo, pq_hi, pk_lo, pk_hi = self._position_bounds(b, q0, q1, k0, k1, q_len, k_len)
        return classify_distance_band(pq_lo - pk_hi, pq_hi - pk_lo, 0, None)

    def _params(self) -> dict:
        return {"align": self.align.to_json()}


def causal(*, align: AlignLike) -> Causal:
    """Causal mask ``pk <= pq``; ``align`` ('top_left', 'bottom_right' or an offset) is required."""
    return Causal(as_alignment(align, "causal"))
