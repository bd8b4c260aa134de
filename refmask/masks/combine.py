"""Boolean combinators: ``a & b`` (both keep), ``a | b`` (either keeps), ``~a`` (negation).

    causal(align="top_left") & ~sliding_window(0, 0, align="top_left")   (causal, no self)
        0123
      0 ····
      1 █···
      2 ██··
      3 ███·

``classify`` on codes EMPTY=0 < PARTIAL=1 < FULL=2: AND is the minimum, OR the maximum and NOT
is ``2 - code``. These are exact for the codes of the parts, so a combination's answer is
sound but may be PARTIAL where the combination happens to be uniform (see ``_base``).

The node classes ``And``, ``Or`` and ``Not`` live in ``_base`` next to ``Mask``, whose operators
build them (one module, so the base class and its algebra import nothing from each other).
"""

from __future__ import annotations

from ._base import And, Mask, Not, Or

__all__ = ["And", "Not", "Or", "all_of", "any_of"]


def all_of(*masks: Mask) -> Mask:
    """``masks[0] & masks[1] & ...``; at least one mask."""
    if not masks:
        raise ValueError("all_of: masks must hold at least one mask")
    return masks[0] if len(masks) == 1 else And(tuple(masks))


def any_of(*masks: Mask) -> Mask:
    """``masks[0] | masks[1] | ...``; at least one mask."""
    if not masks:
        raise ValueError("any_of: masks must hold at least one mask")
    return masks[0] if len(masks) == 1 else Or(tuple(masks))
