"""(e) Packed variable-length sequences: ``cu_seqlens`` offsets and segment ids.

Used by FlashAttention varlen (``cu_seqlens_q``/``cu_seqlens_k``), xformers block-diagonal
masks and JAX ``segment_ids``. Sequence n spans tokens ``[cu_seqlens[n], cu_seqlens[n+1])``;
``segment_ids[t] = n`` on that span.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_int_array
from ..masks import Mask
from ..masks.documents import Documents
from ._common import check_mask

__all__ = [
    "cu_seqlens_to_segment_ids",
    "segment_ids_to_cu_seqlens",
    "documents_to_cu_seqlens",
    "documents_to_cu_seqlens_qk",
]


def cu_seqlens_to_segment_ids(cu_seqlens: ArrayLike) -> np.ndarray:
    """FlashAttention varlen offsets -> segment id per packed token.

    ``segment_ids[t] = n  for  cu_seqlens[n] <= t < cu_seqlens[n+1]``; cu_seqlens: (N+1,)
    integers, starting at 0, non-decreasing. Returns int32 of shape (cu_seqlens[-1],).
    An empty sequence (equal neighbours) leaves its id unused, so the round trip through
    :func:`segment_ids_to_cu_seqlens` is exact only when every sequence is non-empty.
    """
    where = "cu_seqlens_to_segment_ids"
    offsets = check_int_array(where, "cu_seqlens", cu_seqlens, ndim=1)
    if offsets.size == 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{where}: cu_seqlens must start at 0 and be non-decreasing (N+1 "
                         f"offsets), got {offsets.tolist()}")
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"{where}: cu_seqlens[-1] = {int(offsets[-1])} exceeds int32")
    return np.repeat(np.arange(offsets.size - 1, dtype=np.int32), np.diff(offsets))


def segment_ids_to_cu_seqlens(segment_ids: ArrayLike) -> np.ndarray:
    """Segment id per packed token -> FlashAttention varlen offsets ``cu_seqlens``.

    ``cu_seqlens[n] = first t with segment_ids[t] == n`` and ``cu_seqlens[N] = T``. The ids must
    be contiguous runs of increasing ids ``0, 1, ..., N-1`` (each sequence one run, in order);
    anything else is an error naming ``segment_ids``. Returns int32 of shape (N+1,).
    """
    where = "segment_ids_to_cu_seqlens"
    ids = check_int_array(where, "segment_ids", segment_ids, ndim=1)
    if ids.size == 0:
        return np.zeros(1, dtype=np.int32)
    if ids.size > np.iinfo(np.int32).max:
        raise ValueError(f"{where}: segment_ids has {ids.size} tokens, more than int32 holds")
    if ids[0] != 0:
        raise ValueError(f"{where}: segment_ids must be contiguous runs of increasing ids 0, 1, "
                         f"..., N-1, but the first id is {int(ids[0])}")
    steps = np.diff(ids)
    bad = (steps != 0) & (steps != 1)
    if bad.any():
        t = int(np.argmax(bad)) + 1
        raise ValueError(f"{where}: segment_ids must be contiguous runs of increasing ids 0, 1, "
                         f"..., N-1, got {int(ids[t])} after {int(ids[t - 1])} at position {t}")
    starts = np.flatnonzero(np.concatenate([[True], steps == 1]))
    return np.append(starts, ids.size).astype(np.int32)


def _runs(where: str, name: str, row: np.ndarray) -> list:
    """[(id, length)] of the maximal runs of ``row``; each id must form a single run."""
    if row.size == 0:
        return []
    starts = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))
    lengths = np.diff(np.append(starts, row.size))
    ids = row[starts]
    if len(set(ids.tolist())) != ids.size:
        seen, repeated = set(), None
        for value in ids.tolist():
            if value in seen:
                repeated = value
                break
            seen.add(value)
        raise ValueError(f"{where}: {name} holds document {repeated} in more than one run; "
                         "cu_seqlens needs each document to be one contiguous run")
    return list(zip(ids.tolist(), lengths.tolist(), strict=True))


def documents_to_cu_seqlens_qk(mask: Mask) -> tuple[np.ndarray, np.ndarray]:
    """A one-row ``documents`` mask -> ``(cu_seqlens_q, cu_seqlens_k)`` (int32, N+1 each).

    Sequence n of the packed queries ``[cu_q[n], cu_q[n+1])`` attends exactly the keys
    ``[cu_k[n], cu_k[n+1])`` -- the inverse of ``documents_from_cu_seqlens``. Each document
    must be one contiguous run on both sides, and documents present on both sides must appear
    in the same order; a document present on one side only becomes an empty sequence on the
    other (its queries keep nothing).
    """
    where = "documents_to_cu_seqlens"
    mask = check_mask(where, mask)
    if not isinstance(mask, Documents):
        raise TypeError(f"{where}: mask must be a documents mask, got a {mask.kind} mask "
                        f"({mask!r})")
    if len(mask.q_segment_ids) != 1 or len(mask.k_segment_ids) != 1:
        raise ValueError(f"{where}: mask has one row of segment ids per batch entry, but "
                         "cu_seqlens describe a single packed row")
    q_runs = _runs(where, "the query segment ids", np.asarray(mask.q_segment_ids[0]))
    k_runs = _runs(where, "the key segment ids", np.asarray(mask.k_segment_ids[0]))
    q_ids = {doc for doc, _ in q_runs}
    k_ids = {doc for doc, _ in k_runs}
    q_lengths, k_lengths = [], []
    qi = ki = 0
    while qi < len(q_runs) or ki < len(k_runs):
        if qi < len(q_runs) and q_runs[qi][0] not in k_ids:
            q_lengths.append(q_runs[qi][1])
            k_lengths.append(0)
            qi += 1
        elif ki < len(k_runs) and k_runs[ki][0] not in q_ids:
            q_lengths.append(0)
            k_lengths.append(k_runs[ki][1])
            ki += 1
        elif qi < len(q_runs) and ki < len(k_runs) and q_runs[qi][0] == k_runs[ki][0]:
            q_lengths.append(q_runs[qi][1])
            k_lengths.append(k_runs[ki][1])
            qi += 1
            ki += 1
        else:
            raise ValueError(f"{where}: the documents shared by queries and keys appear in a "
                             "different order on the two sides; cu_seqlens pair sequence n "
                             "with sequence n")
    cu_q = np.concatenate([[0], np.cumsum(q_lengths, dtype=np.int64)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(k_lengths, dtype=np.int64)]).astype(np.int32)
    return cu_q, cu_k


def documents_to_cu_seqlens(mask: Mask) -> np.ndarray:
    """A one-row self-attention ``documents`` mask -> ``cu_seqlens`` (int32, N+1).

    The inverse of ``documents_from_cu_seqlens(cu_seqlens)``: document n spans
    ``[cu_seqlens[n], cu_seqlens[n+1])``, numbered in order of appearance (segment id values
    carry no order). Query and key documents must coincide; otherwise use
    :func:`documents_to_cu_seqlens_qk`.
    """
    cu_q, cu_k = documents_to_cu_seqlens_qk(mask)
    if not np.array_equal(cu_q, cu_k):
        raise ValueError("documents_to_cu_seqlens: mask has different query and key documents "
                         f"(cu_seqlens_q {cu_q.tolist()} != cu_seqlens_k {cu_k.tolist()}); use "
                         "documents_to_cu_seqlens_qk")
    return cu_q
