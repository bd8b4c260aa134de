"""(h) Column intervals LTS/LTE/UTS/UTE: FlashMask ``startend_row_indices`` (PaddlePaddle).

Key column j is dropped exactly for the query rows ``lts[j] <= i < lte[j]`` and
``uts[j] <= i < ute[j]``: at most two runs of dropped rows per column.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_bool_numpy, check_flag, check_int, check_int_array
from ._common import first_index

__all__ = [
    "to_column_intervals",
    "from_column_intervals",
    "to_flashmask",
    "flashmask_to_keep",
]


def _column_runs(drop: np.ndarray):
    """Per column of ``drop`` (..., Tq, Tk): run count and first/last run bounds, (..., Tk)."""
    q_len = drop.shape[-2]
    columns = np.moveaxis(drop, -2, -1).astype(np.int8)
    edge = np.zeros(columns.shape[:-1] + (1,), dtype=np.int8)
    steps = np.diff(np.concatenate([edge, columns, edge], axis=-1), axis=-1)
    pos = np.arange(q_len + 1)
    starts, ends = steps == 1, steps == -1
    big = q_len + 1
    return (starts.sum(axis=-1),
            np.where(starts, pos, big).min(axis=-1), np.where(ends, pos, big).min(axis=-1),
            np.where(starts, pos, -1).max(axis=-1), np.where(ends, pos, -1).max(axis=-1))


def to_column_intervals(keep: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense keep -> FlashMask column intervals ``(lts, lte, uts, ute)``, int32 (..., Tk) each.

    Rule (FlashMask, arXiv 2410.01359; PaddlePaddle ``flashmask_attention``): key column j
    is dropped exactly for the query rows ``lts[j] <= i < lte[j]`` (lower interval) and
    ``uts[j] <= i < ute[j]`` (upper interval). Canonical choice per column:

    * no dropped row: ``lts = lte = Tq``, ``uts = ute = 0``;
    * two runs of dropped rows: the upper (smaller rows) run is ``[uts, ute)``, the other
      ``[lts, lte)``;
    * one run ``[s, e)``: upper (``uts = 0, ute = e``) when it starts at row 0 and stops
      before the last row, otherwise lower (``lts = s, lte = e``).

    A column whose dropped rows form three or more runs is an error naming ``keep``.
    keep: bool (..., Tq, Tk).
    """
    return _to_column_intervals("to_column_intervals", keep)


def _to_column_intervals(where: str, keep):
    array = check_bool_numpy(where, "keep", keep, min_ndim=2)
    q_len = array.shape[-2]
    count, first_start, first_end, last_start, last_end = _column_runs(~array)
    if np.any(count > 2):
        index = first_index(count > 2)
        raise ValueError(f"{where}: keep column {index[-1]} (at leading index {index[:-1]}) "
                         f"drops {int(count[index])} separate runs of query rows; FlashMask "
                         "expresses at most two per column (one lower, one upper interval)")
    one, two = count == 1, count == 2
    upper_only = one & (first_start == 0) & (first_end < q_len)
    lower_only = one & ~upper_only
    lts = np.where(two, last_start, np.where(lower_only, first_start, q_len))
    lte = np.where(two, last_end, np.where(lower_only, first_end, q_len))
    uts = np.where(two | upper_only, first_start, 0)
    ute = np.where(two | upper_only, first_end, 0)
    return tuple(x.astype(np.int32) for x in (lts, lte, uts, ute))


def _intervals_to_keep(where: str, names, bounds, q_len: int) -> np.ndarray:
    arrays = [check_int_array(where, name, value)
              for name, value in zip(names, bounds, strict=True)]
    try:
        arrays = np.broadcast_arrays(*arrays)
    except ValueError as error:
        raise ValueError(f"{where}: {', '.join(names)} must broadcast to one shape (..., Tk)"
                         ) from error
    for name, array in zip(names, arrays, strict=True):
        if array.ndim == 0:
            raise ValueError(f"{where}: {name} must have at least one dim (..., Tk)")
        if np.any((array < 0) | (array > q_len)):
            raise ValueError(f"{where}: {name} must lie in [0, q_len = {q_len}], got values in "
                             f"[{int(array.min())}, {int(array.max())}]")
    rows = np.arange(q_len)[:, None]
    lts, lte, uts, ute = (a[..., None, :] for a in arrays)
    dropped = ((lts <= rows) & (rows < lte)) | ((uts <= rows) & (rows < ute))
    return ~dropped


def from_column_intervals(lts: ArrayLike, lte: ArrayLike, uts: ArrayLike, ute: ArrayLike,
                          q_len: int) -> np.ndarray:
    """FlashMask column intervals -> dense keep (..., q_len, Tk):

    ``keep[..., i, j] = not (lts[j] <= i < lte[j] or uts[j] <= i < ute[j])``.

    All four are integer arrays broadcastable to (..., Tk) with values in [0, q_len]; an
    interval with start >= end is empty (as Python slicing in FlashMask's reference
    ``flashmask_to_densemask``).
    """
    where = "from_column_intervals"
    q_len = check_int(where, "q_len", q_len, minimum=0)
    return _intervals_to_keep(where, ("lts", "lte", "uts", "ute"), (lts, lte, uts, ute), q_len)


def to_flashmask(keep: ArrayLike, *, causal: bool) -> np.ndarray:
    """Dense keep -> FlashMask ``startend_row_indices``, int32 (..., Tk, n), n in {1, 2, 4}.

    A (B, H, Tq, Tk) keep gives FlashMask's (B, H, Tk, n). The narrowest form that is exact
    is chosen, with FlashMask's meaning of each width (``flashmask_to_densemask``):

    * ``causal=False``: n = 2 ``[LTS, UTE]`` drops rows ``[LTS, Tq)`` and ``[0, UTE)``; n = 4
      ``[LTS, LTE, UTS, UTE]`` drops ``[LTS, LTE)`` and ``[UTS, UTE)``;
      intervals as in :func:`to_column_intervals`.
    * ``causal=True`` (FlashMask then also drops rows ``i < j``; square only): n = 1 ``[LTS]``
      drops rows ``[LTS, Tq)``, n = 2 ``[LTS, LTE]`` drops ``[LTS, LTE)`` in column j. keep
      must drop every ``i < j`` and its other dropped rows must be one run per column.
    """
    where = "to_flashmask"
    array = check_bool_numpy(where, "keep", keep, min_ndim=2)
    causal = check_flag(where, "causal", causal)
    q_len, k_len = array.shape[-2:]
    if not causal:
        lts, lte, uts, ute = _to_column_intervals(where, array)
        if np.all(lte == q_len) and np.all(uts == 0):
            return np.stack([lts, ute], axis=-1)
        return np.stack([lts, lte, uts, ute], axis=-1)
    if q_len != k_len:
        raise ValueError(f"{where}: causal=True needs a square keep (FlashMask's causal part is "
                         f"rows i < j of a Tq x Tq matrix), got Tq={q_len}, Tk={k_len}")
    rows, cols = np.arange(q_len)[:, None], np.arange(k_len)[None, :]
    above = rows < cols
    if np.any(array & above):
        index = first_index(array & above)
        raise ValueError(f"{where}: keep attends key {index[-1]} from query {index[-2]} (at "
                         f"leading index {index[:-2]}), which causal=True always drops; use "
                         "causal=False")
    count, first_start, first_end, _, _ = _column_runs(~array & ~above)
    if np.any(count > 1):
        index = first_index(count > 1)
        raise ValueError(f"{where}: keep column {index[-1]} (at leading index {index[:-1]}) "
                         f"drops {int(count[index])} separate runs of rows on or below the "
                         "diagonal; causal=True expresses one; use causal=False")
    lts = np.where(count == 1, first_start, q_len).astype(np.int32)
    lte = np.where(count == 1, first_end, q_len).astype(np.int32)
    if np.all(lte == q_len):
        return lts[..., None]
    return np.stack([lts, lte], axis=-1)


def flashmask_to_keep(startend_row_indices: ArrayLike, *, q_len: int, causal: bool) -> np.ndarray:
    """FlashMask ``startend_row_indices`` (..., Tk, n) -> dense keep (..., q_len, Tk).

    Exactly PaddlePaddle's reference ``flashmask_to_densemask``; column j drops rows
    causal, n=1: ``[LTS, Tq)`` and ``[0, j)``;  causal, n=2: ``[LTS, LTE)`` and ``[0, j)``;
    non-causal, n=2: ``[LTS, Tq)`` and ``[0, UTE)``;  non-causal, n=4: ``[LTS, LTE)`` and
    ``[UTS, UTE)``. causal=True requires q_len == Tk.
    """
    where = "flashmask_to_keep"
    data = check_int_array(where, "startend_row_indices", startend_row_indices)
    q_len = check_int(where, "q_len", q_len, minimum=0)
    causal = check_flag(where, "causal", causal)
    widths = (1, 2) if causal else (2, 4)
    if data.ndim < 2 or data.shape[-1] not in widths:
        raise ValueError(f"{where}: startend_row_indices must have shape (..., Tk, n) with n in "
                         f"{widths} for causal={causal}, got {data.shape}")
    k_len = data.shape[-2]
    name = "startend_row_indices[..., {}]".format
    n = data.shape[-1]
    zero, full = np.zeros_like(data[..., 0]), np.full_like(data[..., 0], q_len)
    if causal:
        if q_len != k_len:
            raise ValueError(f"{where}: causal=True needs q_len == Tk (FlashMask's causal part "
                             f"is square), got q_len={q_len}, Tk={k_len}")
        lte = data[..., 1] if n == 2 else full
        keep = _intervals_to_keep(where, (name(0), name(1), "0", "0"),
                                  (data[..., 0], lte, zero, zero), q_len)
        return keep & (np.arange(q_len)[:, None] >= np.arange(k_len)[None, :])
    if n == 2:
        bounds, names = (data[..., 0], full, zero, data[..., 1]), (name(0), "Tq", "0", name(1))
    else:
        bounds, names = tuple(data[..., c] for c in range(4)), tuple(name(c) for c in range(4))
    return _intervals_to_keep(where, names, bounds, q_len)
