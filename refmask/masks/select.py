"""Per-batch and per-head variation: a different mask for each batch entry or query head.

    per_head(causal(align="top_left"), full())     head 0 | head 1, Tq=Tk=3
        012   012
      0 █··   ███
      1 ██·   ███
      2 ███   ███

Heads are *query* heads (FlexAttention's ``h``); under GQA the kv head is ``h // (Hq // Hkv)``.
The parts must not themselves depend on the selected axis (a per-batch part inside
``per_batch`` would be ambiguous) and are evaluated as if that axis had size 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import array_api_compat
import numpy as np

from .._typing import Array
from ._base import Mask, common_batch_size


@dataclass(frozen=True, repr=False)
class _Select(Mask):
    masks: tuple

    def _pick(self, index, values):
        result = values[0]
        for n in range(1, len(values)):
            result = np_or_xp_where(index == n, values[n], result)
        return result

    def _params(self) -> dict:
        return {"masks": [m.to_json() for m in self.masks]}

    def __repr__(self) -> str:
        return f"{self.kind}(" + ", ".join(repr(m) for m in self.masks) + ")"


def np_or_xp_where(condition: Array, a: Array, b: Array) -> Array:
    """``where`` in whichever namespace ``condition`` lives in."""
    return array_api_compat.array_namespace(condition).where(condition, a, b)


@dataclass(frozen=True, repr=False)
class PerBatch(_Select):
    """keep(b, h, i, j) = masks[b].keep(0, h, i, j)."""

    kind = "per_batch"

    @property
    def batch_size(self) -> int:
        return len(self.masks)

    @property
    def num_heads(self) -> int | None:
        heads = {m.num_heads for m in self.masks} - {None}
        return heads.pop() if heads else None

    def _keep(self, grid, b, h, i, j):
        return self._pick(b, [m._keep(grid, b * 0, h, i, j) for m in self.masks])

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return self._pick(np.asarray(b), [np.asarray(m._classify(b * 0, h, q0, q1, k0, k1, q_len,
                                                                 k_len)) for m in self.masks])


@dataclass(frozen=True, repr=False)
class PerHead(_Select):
    """keep(b, h, i, j) = masks[h].keep(b, 0, i, j)."""

    kind = "per_head"

    @property
    def batch_size(self) -> int | None:
        return common_batch_size("per_head", **{f"masks[{n}]": m.batch_size
                                                for n, m in enumerate(self.masks)})

    @property
    def num_heads(self) -> int:
        return len(self.masks)

    def _keep(self, grid, b, h, i, j):
        return self._pick(h, [m._keep(grid, b, h * 0, i, j) for m in self.masks])

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return self._pick(np.asarray(h), [np.asarray(m._classify(b, h * 0, q0, q1, k0, k1, q_len,
                                                                 k_len)) for m in self.masks])


def _check_parts(where: str, masks, axis: str) -> tuple:
    if not masks:
        raise ValueError(f"{where}: masks must hold at least one mask")
    for n, mask in enumerate(masks):
        if not isinstance(mask, Mask):
            raise TypeError(f"{where}: masks[{n}] must be a refmask Mask, got "
                            f"{type(mask).__name__}")
        size = mask.batch_size if axis == "batch" else mask.num_heads
        if size is not None:
            raise ValueError(f"{where}: masks[{n}] already varies per {axis} ({size} entries); "
                             f"its parts must hold for any {axis}")
    return tuple(masks)


def per_batch(*masks: Mask) -> PerBatch:
    """Batch entry b uses ``masks[b]``; B = len(masks)."""
    return PerBatch(_check_parts("per_batch", masks, "batch"))


def per_head(*masks: Mask) -> PerHead:
    """Query head h uses ``masks[h]``; H = len(masks)."""
    parts = _check_parts("per_head", masks, "head")
    PerHead(parts).batch_size  # noqa: B018 - mismatched batch sizes fail here
    return PerHead(parts)
