"""(d) HF 2-D padding mask (B, Tk), 1 = attend, 0 = padding (transformers ``attention_mask``).

``keep(b, h, i, j) = (attention_mask[b, j] == 1)`` for every query i and head h; only pure key
masks have this form.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_int
from ..masks import Mask, explicit, key_padding, per_batch
from ._common import check_mask, check_mask_sizes, first_index

__all__ = [
    "hf_padding_to_mask",
    "mask_to_hf_padding",
]


def hf_padding_to_mask(attention_mask: ArrayLike) -> Mask:
    """HF 2-D ``attention_mask`` (B, Tk), 1 = attend, 0 = padding -> a refmask key mask.

    keep(b, h, i, j) = (attention_mask[b, j] == 1) for every query i and head h. The result:

    * ``key_padding(lengths, side="right")`` when every row is ``1^L 0^(Tk-L)``;
      rows with no padding (and all-zero rows) fit both sides, so an unpadded batch is
      reported as right-padded;
    * ``key_padding(lengths, side="left")`` when every row is ``0^(Tk-L) 1^L`` and some row
      is not right-padded;
    * ``per_batch(key_padding(L_b, side=s_b) ...)`` when each row is a contiguous run but the
      batch mixes left- and right-padded rows (one ``side`` cannot describe it);
    * ``explicit(attention_mask[:, None, None, :] == 1)`` of shape (B, 1, 1, Tk) when some
      row has holes (ones after zeros after ones) -- still exact, just not structured.

    attention_mask: bool or integer array of shape (B, Tk) holding only 0 and 1.
    """
    where = "hf_padding_to_mask"
    array = np.asarray(attention_mask)
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{where}: attention_mask must hold integers 0/1 (or bools), got dtype "
                        f"{array.dtype}")
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{where}: attention_mask must have shape (B, Tk) with B >= 1, got "
                         f"shape {array.shape}")
    bad = (array != 0) & (array != 1)
    if bad.any():
        index = first_index(bad)
        raise ValueError(f"{where}: attention_mask must hold only 0 (padding) and 1 (attend), "
                         f"got {array[index]!r} at index {index}")
    ones = array == 1
    k_len = ones.shape[1]
    lengths = ones.sum(axis=1)
    keys = np.arange(k_len)[None, :]
    right = np.all(ones == (keys < lengths[:, None]), axis=1)
    left = np.all(ones == (keys >= k_len - lengths[:, None]), axis=1)
    if right.all():
        return key_padding(lengths, side="right")
    if left.all():
        return key_padding(lengths, side="left")
    if (right | left).all():
        return per_batch(*(key_padding(int(n), side="right" if r else "left")
                           for n, r in zip(lengths, right, strict=True)))
    return explicit(ones[:, None, None, :])


def mask_to_hf_padding(mask: Mask, batch: int, k_len: int, *, heads: int | None = None,
                       q_len: int | None = None) -> np.ndarray:
    """A pure key mask -> HF 2-D ``attention_mask``: ``out[b, j] = int(keep(b, 0, 0, j))``.

    The mask is materialised at (batch, heads, q_len, k_len) -- heads defaults to the mask's
    own head count or 1, q_len to max(k_len, 1) (self-attention) -- and must not depend on the
    query index or the head, since the HF 2-D form can only drop keys. Returns int64 (B, Tk).
    """
    where = "mask_to_hf_padding"
    mask = check_mask(where, mask)
    batch = check_int(where, "batch", batch, minimum=1)
    k_len = check_int(where, "k_len", k_len, minimum=0)
    heads = (mask.num_heads or 1) if heads is None else check_int(where, "heads", heads,
                                                                  minimum=1)
    q_len = max(k_len, 1) if q_len is None else check_int(where, "q_len", q_len, minimum=1)
    check_mask_sizes(where, mask, batch, heads)
    dense = np.asarray(mask.materialize(batch, heads, q_len, k_len))
    row = dense[:, :1, :1, :]
    differs = np.any(dense != row, axis=-1)
    if differs.any():
        b, h, i = first_index(differs)
        raise ValueError(f"{where}: mask {mask!r} is not a pure key mask: the kept keys of "
                         f"batch {b} differ between (head 0, query 0) and (head {h}, query {i}); "
                         "an HF 2-D attention_mask can only drop keys")
    return row[:, 0, 0, :].astype(np.int64)
