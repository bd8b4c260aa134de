"""Attention masks built from token ids: the data-dependent masks that go with token masking.

Each builder returns an ordinary :mod:`refmask.masks` value (combine with ``&``):

    key_padding_from_pad_ids(ids, pad_id, side)   keys equal to pad_id are dropped
        lengths[b] = #{t : ids[b, t] != pad_id}; the padding must be one contiguous run at
        the named side (a pad id inside the text is an error: that id is not padding, e.g.
        GPT-2 reusing EOS as pad; build the mask from an attention_mask then).
    documents_from_eos_ids(ids, eos_id)           packed documents delimited by EOS
        segment[b, t] = #{t' < t : ids[b, t'] == eos_id}: an EOS closes its own document.
    documents_from_position_ids(position_ids)     packed documents from position restarts
        (refmask.masks: a document starts wherever position_ids[t] != position_ids[t-1] + 1).

    ids = [[5, 6, 2, 7, 8, 2, 0, 0]]  (eos 2, pad 0)
    documents_from_eos_ids(ids, 2) & key_padding_from_pad_ids(ids, 0, side="right")
      segment ids 0 0 0 1 1 1 2 2;  valid keys 6
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_choice, check_int
from ..masks import documents, documents_from_position_ids, key_padding
from ..masks.documents import Documents
from ..masks.padding import KeyPadding

__all__ = ["documents_from_eos_ids", "documents_from_position_ids", "key_padding_from_pad_ids",
           "segment_ids_from_eos_ids"]


def _ids(where: str, input_ids) -> np.ndarray:
    ids = np.asarray(input_ids.cpu() if hasattr(input_ids, "cpu") else input_ids)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"{where}: input_ids must be a (B, T) integer array, got shape "
                         f"{ids.shape} dtype {ids.dtype}")
    return ids


def key_padding_from_pad_ids(input_ids: ArrayLike, pad_id: int, *, side: str) -> KeyPadding:
    """``key_padding(lengths, side=side)`` with ``lengths[b]`` = the non-pad tokens of row b."""
    where = "key_padding_from_pad_ids"
    ids = _ids(where, input_ids)
    pad_id = check_int(where, "pad_id", pad_id, minimum=0, rule="an int >= 0")
    check_choice(where, "side", side, ("left", "right"))
    real = ids != pad_id
    lengths = real.sum(axis=1)
    index = np.arange(ids.shape[1])[None, :]
    expected = (index < lengths[:, None] if side == "right"
                else index >= ids.shape[1] - lengths[:, None])
    bad = np.flatnonzero(np.any(real != expected, axis=1))
    if bad.size:
        raise ValueError(f"{where}: row {int(bad[0])} has pad_id={pad_id} inside its text "
                         f"(side={side!r} padding must be one run at the {side}); that id is "
                         f"not padding there -- build the mask from an attention_mask")
    return key_padding(lengths.tolist(), side=side)


def segment_ids_from_eos_ids(input_ids: ArrayLike, eos_id: int) -> np.ndarray:
    """int64 (B, T): the number of ``eos_id`` tokens strictly before each position."""
    where = "documents_from_eos_ids"
    ids = _ids(where, input_ids)
    eos_id = check_int(where, "eos_id", eos_id, minimum=0, rule="an int >= 0")
    ends = (ids == eos_id).astype(np.int64)
    return np.cumsum(ends, axis=1) - ends


def documents_from_eos_ids(input_ids: ArrayLike, eos_id: int) -> Documents:
    """Same-document mask of packed rows; an EOS token belongs to the document it ends."""
    return documents(segment_ids_from_eos_ids(input_ids, eos_id))


documents_from_position_ids = documents_from_position_ids
