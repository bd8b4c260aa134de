"""Statistics of the token-masking judge: Holm's procedure, sample sizes, run lengths and
chi-square homogeneity on sparse tables (docs/spec.md 6.11). SciPy is imported lazily."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["holm", "homogeneity", "required_sample_size", "run_lengths", "run_starts"]



def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down: ``rejected[i]``; family-wise error rate <= alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected


def required_sample_size(p0: Sequence[float] | float, p1: Sequence[float] | float, *,
                         alpha: float = 1e-3, tests: int = 5, power: float = 0.99) -> int:
    """Observations needed to detect ``p1`` when ``p0`` is specified, at level alpha/tests.

    A float pair: a two-sided binomial test (normal approximation, rounded up):
    ``n = ((z(1 - a/2) sqrt(p0 q0) + z(power) sqrt(p1 q1)) / |p1 - p0|)^2``. Sequences: a
    chi-square goodness of fit with ``k - 1`` degrees of freedom, the smallest n whose
    noncentral chi-square power at ``lambda = n sum (p1 - p0)^2 / p0`` reaches ``power``.
    """
    from scipy import stats

    level = alpha / tests
    if isinstance(p0, float | int):
        q0, q1 = 1 - p0, 1 - p1
        z = stats.norm.ppf(1 - level / 2) * math.sqrt(p0 * q0) + \
            stats.norm.ppf(power) * math.sqrt(p1 * q1)
        return math.ceil((z / abs(p1 - p0)) ** 2)
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    w2 = float(np.sum((b - a) ** 2 / a))
    df = a.size - 1
    critical = stats.chi2.ppf(1 - level, df)
    lo, hi = 1, 1
    while stats.ncx2.sf(critical, df, hi * w2) < power:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if stats.ncx2.sf(critical, df, mid * w2) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def run_lengths(selected: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Lengths of the maximal runs of selected tokens, runs broken by unselected tokens
    (ineligible tokens are skipped: a run continues across them)."""
    out = []
    for sel_row, ok_row in zip(selected, eligible, strict=True):
        run = 0
        for s in sel_row[ok_row]:
            if s:
                run += 1
            elif run:
                out.append(run)
                run = 0
        if run:
            out.append(run)
    return np.asarray(out, dtype=np.int64)


def run_starts(selected: np.ndarray) -> np.ndarray:
    """bool: the first token of every maximal run of selected tokens along the last axis."""
    previous = np.zeros_like(selected)
    previous[..., 1:] = selected[..., :-1]
    return selected & ~previous


def _merge_sparse(table: np.ndarray, minimum: float = 5.0) -> np.ndarray:
    """Merge adjacent columns of a 2 x K count table until every expected count >= minimum."""
    columns = [table[:, i].astype(float) for i in range(table.shape[1])]
    merged: list[np.ndarray] = []
    total = table.sum()
    rows = table.sum(axis=1)
    current = np.zeros(table.shape[0])
    for col in columns:
        current = current + col
        if (rows * current.sum() / total >= minimum).all():
            merged.append(current)
            current = np.zeros(table.shape[0])
    if current.sum() and merged:
        merged[-1] = merged[-1] + current
    elif current.sum():
        merged.append(current)
    return np.stack(merged, axis=1) if merged else np.zeros((table.shape[0], 0))


def homogeneity(table: np.ndarray) -> float | None:
    from scipy import stats

    table = _merge_sparse(table)
    if table.shape[1] < 2:
        return None
    return float(stats.chi2_contingency(table, correction=False).pvalue)
