"""Localisation (spec 5.4): a failure that no alternative explains is described by the rows it
is confined to, in mask terms ("only empty rows", "only heads >= Hkv", "only query rows >= 4",
"only rows whose kept keys include key 0"), with a hint where the row set points at the
scores rather than the mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refmask.adapters.common import Output
from refmask.case import Case

from .tolerance import F_ELEMENT, ForwardModel, TensorCheck


def _row_predicates(case: Case) -> list[tuple[str, np.ndarray]]:
    """Named (B, Hq, Tq) row sets, in mask terms, that a failure may be confined to."""
    keep = case.keep()
    shape = (case.batch, case.q_heads, case.q_len)
    kept = keep.sum(axis=-1)
    preds = [
        ("empty rows (no kept key)", kept == 0),
        ("rows that keep every key", kept == case.k_len),
        ("rows with some masked key", (kept < case.k_len) & (kept > 0)),
        ("rows that keep exactly one key", kept == 1),
        ("rows that keep two or more keys", kept >= 2),
    ]
    if case.k_len:
        preds += [("rows whose kept keys include key 0", keep[..., 0]),
                  ("rows whose kept keys do not include key 0", ~keep[..., 0] & (kept > 0)),
                  ("rows whose kept keys include the last key", keep[..., -1])]
    if case.q_len:
        first = np.zeros(shape, bool)
        first[..., 0] = True
        last = np.zeros(shape, bool)
        last[..., -1] = True
        preds += [("the first query row", first), ("the last query row", last)]
    if case.kv_heads < case.q_heads:
        heads = np.arange(case.q_heads)[None, :, None]
        group = case.q_heads // case.kv_heads
        preds += [(f"heads >= Hkv = {case.kv_heads}",
                   np.broadcast_to(heads >= case.kv_heads, shape)),
                  ("heads that are not the first of their kv group",
                   np.broadcast_to(heads % group != 0, shape))]
    for h in range(case.q_heads if case.q_heads > 1 else 0):
        preds.append((f"head {h}", np.broadcast_to(np.arange(case.q_heads)[None, :, None] == h,
                                                   shape)))
    for b in range(case.batch if case.batch > 1 else 0):
        preds.append((f"batch entry {b}", np.broadcast_to(
            np.arange(case.batch)[:, None, None] == b, shape)))
    return [(name, np.broadcast_to(p, shape)) for name, p in preds]


#: What a localisation suggests when it is exactly this row set.
_HINTS = {"rows that keep two or more keys": " (a row with one kept key is exact whatever its "
          "score: look at the scores -- scale, bias, softcap -- not at the mask)",
          "rows that keep every key": " (look at how the full rows are computed: scale, "
          "bias, softcap, key blocks)"}


def _observed_predicates(case: Case, bad_rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Row sets read off the failing rows themselves: query rows from (or up to) the first
    (last) failing one, the set of failing heads, the set of failing batch entries."""
    shape = bad_rows.shape
    b, h, i = (np.nonzero(bad_rows.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    rows = np.arange(case.q_len)[None, None, :]
    preds = []
    if i.min() > 0:
        preds.append((f"query rows >= {i.min()}", np.broadcast_to(rows >= i.min(), shape)))
    if i.max() < case.q_len - 1:
        preds.append((f"query rows <= {i.max()}", np.broadcast_to(rows <= i.max(), shape)))
    if 1 < len(h) < case.q_heads:
        preds.append((f"heads {list(map(int, h))}", np.broadcast_to(
            np.isin(np.arange(case.q_heads), h)[None, :, None], shape)))
    if 1 < len(b) < case.batch:
        preds.append((f"batch entries {list(map(int, b))}", np.broadcast_to(
            np.isin(np.arange(case.batch), b)[:, None, None], shape)))
    return preds


def localise(case: Case, bad_rows: np.ndarray) -> str:
    """Describe the failing (b, h, i) rows in mask terms: the smallest named row set (or
    intersection of two) that holds every failing row, and whether it is exactly that set;
    the named sets are those of :func:`_row_predicates` and those read off the failing rows
    (:func:`_observed_predicates`)."""
    total = int(bad_rows.sum())
    if total == 0:
        return ""
    rows = bad_rows.size
    if total == rows:
        return f"every row is off ({rows} of {rows})"
    preds = _row_predicates(case) + _observed_predicates(case, bad_rows)
    found = []
    for name, p in preds:
        if not (bad_rows & ~p).any():
            found.append((int(p.sum()), name, p))
    for n, (name_a, a) in enumerate(preds):
        for name_b, b in preds[n + 1:]:
            both = a & b
            if both.any() and not (bad_rows & ~both).any():
                found.append((int(both.sum()), f"{name_a} and {name_b}", both))
    if not found:
        where = [tuple(int(x) for x in idx) for idx in np.argwhere(bad_rows)[:4]]
        return f"{total} of {rows} rows are off, e.g. (b, h, i) = {where}"
    found.sort(key=lambda x: x[0])
    size, name, p = found[0]
    exact = "exactly" if size == total else f"{total} of the {size}"
    hint = _HINTS.get(name, "") if size == total else ""
    return f"only {name} are off ({exact}; {total} of {rows} rows){hint}"


def bad_rows(checks: Sequence[TensorCheck], golden: dict, output: Output,
             model: ForwardModel) -> np.ndarray:
    """(B, Hq, Tq) rows where out or lse fails the per-element bound."""
    out = np.asarray(output.out, np.float64)
    gold = golden["out"]
    with np.errstate(invalid="ignore"):
        bad = (np.abs(out - gold) > F_ELEMENT * model.out) | (np.isnan(out) != np.isnan(gold))
    rows = bad.any(axis=-1) if bad.ndim == 4 else np.zeros(gold.shape[:3], bool)
    if output.lse is not None and np.shape(output.lse) == golden["lse"].shape:
        lse = np.asarray(output.lse, np.float64)
        with np.errstate(invalid="ignore"):
            rows |= ((np.abs(lse - golden["lse"]) > F_ELEMENT * model.lse)
                     & np.isfinite(golden["lse"])) | (np.isfinite(lse) != np.isfinite(
                         golden["lse"]))
    return rows
