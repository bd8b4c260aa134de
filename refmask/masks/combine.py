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
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

import numpy as np

from ._base import Block, Mask, common_batch_size


def _common_heads(masks) -> int | None:
    heads = {m.num_heads for m in masks if m.num_heads is not None}
    if len(heads) > 1:
        raise ValueError(f"mask combination: mismatched head counts {sorted(heads)}")
    return next(iter(heads), None)


@dataclass(frozen=True, repr=False)
class _Nary(Mask):
    masks: tuple

    def __post_init__(self):
        flat = []
        for mask in self.masks:
            flat.extend(mask.masks if type(mask) is type(self) else (mask,))
        object.__setattr__(self, "masks", tuple(flat))
        self.batch_size  # noqa: B018 - validates now, not at first use
        _common_heads(self.masks)

    @property
    def batch_size(self) -> int | None:
        return common_batch_size(self.kind, **{f"masks[{n}] ({m.kind})": m.batch_size
                                               for n, m in enumerate(self.masks)})

    @property
    def num_heads(self) -> int | None:
        return _common_heads(self.masks)

    def _params(self) -> dict:
        return {"masks": [m.to_json() for m in self.masks]}

    def __repr__(self) -> str:
        return "(" + f" {self.symbol} ".join(repr(m) for m in self.masks) + ")"


@dataclass(frozen=True, repr=False)
class And(_Nary):
    """keep iff every part keeps."""

    kind = "and"
    symbol = "&"

    def _keep(self, grid, b, h, i, j):
        return reduce(lambda x, y: x & y, (m._keep(grid, b, h, i, j) for m in self.masks))

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return reduce(np.minimum, (m._classify(b, h, q0, q1, k0, k1, q_len, k_len)
                                   for m in self.masks))


@dataclass(frozen=True, repr=False)
class Or(_Nary):
    """keep iff some part keeps."""

    kind = "or"
    symbol = "|"

    def _keep(self, grid, b, h, i, j):
        return reduce(lambda x, y: x | y, (m._keep(grid, b, h, i, j) for m in self.masks))

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return reduce(np.maximum, (m._classify(b, h, q0, q1, k0, k1, q_len, k_len)
                                   for m in self.masks))


@dataclass(frozen=True, repr=False)
class Not(Mask):
    """keep iff the inner mask drops."""

    mask: Mask
    kind = "not"

    @property
    def batch_size(self) -> int | None:
        return self.mask.batch_size

    @property
    def num_heads(self) -> int | None:
        return self.mask.num_heads

    def __invert__(self) -> Mask:
        return self.mask

    def _keep(self, grid, b, h, i, j):
        return ~self.mask._keep(grid, b, h, i, j)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return Block.FULL - np.asarray(self.mask._classify(b, h, q0, q1, k0, k1, q_len, k_len))

    def _params(self) -> dict:
        return {"mask": self.mask.to_json()}

    def __repr__(self) -> str:
        return f"~{self.mask!r}"


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
