r"""SpanBERT-style span masking: geometric span lengths, whole units, an exact budget.

Units are words (``word_ids`` or ``continuation`` as in :mod:`whole_word`) or, without them,
single eligible tokens; ``n`` units in a row, numbered 0..n-1 in position order.

    k       = floor(fl(rate * n) + 1/2)                      budget of masked units
    l_s     = 1 + #{m in 1..L-1 : word s of "span_length" >= c_m},  s = 0, 1, ...
              c_m = round(F(m) * 2**32),  F(m) = (1 - (1-q)^m) / (1 - (1-q)^L)
              i.e. P(l = m) = q (1-q)^(m-1) / (1 - (1-q)^L) on 1..L: the geometric
              distribution truncated at L and renormalised (SpanBERT: q = 0.2, L = 10,
              mean 3.797)
    m       = #{s : l_0 + ... + l_(s-1) < k}                 spans needed to reach k
    m'      = min(m, n - k + 1)                              room for the separators
    l'_s    = l_s for s < m'-1;  l'_(m'-1) = k - (l_0 + ... + l_(m'-2))   (exactly k in all)
    gaps    : the n - k unmasked units are split into m'+1 gaps, the m'-1 inner ones >= 1;
              the f = n - k - (m'-1) free units and m' bars are ordered uniformly at random:
              bars = the m' of the f + m' slots with the smallest keys of "span_gaps"
              (b_0 < b_1 < ...), and span s covers units [b_s + L_s, b_s + L_s + l'_s),
              L_s = l'_0 + ... + l'_(s-1).

Spans never touch (an unmasked unit separates them), so the masked runs *are* the spans.
Replacement is per token by the 80/10/10 rule (SpanBERT replaces per span: not modelled).

    mask_spans(ids of 12 tokens, rate=0.5, ...)      k = 6 units, e.g. l = 4, 3 -> l' = 4, 2
      selected  · █ █ █ █ · · · █ █ · ·
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from numpy.typing import ArrayLike

from .._typing import Array
from .._validate import check_int, check_rate
from ._common import (
    Words,
    arange_like,
    check_common,
    eligibility,
    exact_count,
    smallest_k,
    take_rows,
    unit_starts,
)
from .replacement import MaskedBatch, ReplacementRule, apply_replacement
from .whole_word import _word_ids

__all__ = ["mask_spans", "span_length_distribution", "span_length_thresholds"]

def _check_geometric(where: str, geometric_p, max_length) -> tuple[float, int]:
    q = check_rate(where, "geometric_p", geometric_p, open_low=True)
    return q, check_int(where, "max_length", max_length, minimum=1, maximum=2**16,
                        rule="an int in [1, 65536]")


def span_length_distribution(geometric_p: float, max_length: int) -> list[float]:
    """``P(l = m)`` for m = 1..max_length: geometric(q) truncated at L and renormalised.

    geometric_p in (0, 1], max_length in [1, 65536], checked as :func:`mask_spans` does."""
    q, top = _check_geometric("span_length_distribution", geometric_p, max_length)
    weights = [q * (1.0 - q) ** (m - 1) for m in range(1, top + 1)]
    total = math.fsum(weights)
    return [w / total for w in weights]


def span_length_thresholds(geometric_p: float, max_length: int) -> list[int]:
    """``c_m = round(F(m) * 2**32)`` for m = 1..L-1 (F the truncated geometric CDF)."""
    q, top = _check_geometric("span_length_thresholds", geometric_p, max_length)
    tail = 1.0 - (1.0 - q) ** top
    return [math.floor((1.0 - (1.0 - q) ** m) / tail * 2**32 + 0.5) for m in range(1, top)]


def _unit_spans(xp, starts, words, rate: float, geometric_p: float, max_length: int):
    """bool (B, T) over unit ordinals: unit u of the row is inside a span."""
    length = starts.shape[1]
    n = xp.sum(xp.astype(starts, xp.int64), axis=1)
    k = exact_count(xp, rate, n)
    draws = words("span_length", length)
    span = xp.ones_like(draws)
    for cut in span_length_thresholds(geometric_p, max_length):
        span = span + xp.astype(draws >= cut, xp.int64)
    before = xp.cumulative_sum(span, axis=1) - span
    needed = xp.sum(xp.astype(before < k[:, None], xp.int64), axis=1)
    spans = xp.minimum(needed, n - k + 1)
    spans = xp.where(k > 0, spans, 0)
    index = arange_like(xp, length, starts)[None, :]
    last = spans[:, None] - 1
    lengths = xp.where(index < last, span, xp.where(index == last, k[:, None] - before, 0))
    free = n - k - (spans - 1)
    slots = arange_like(xp, length + 1, starts)[None, :]
    bars = smallest_k(xp, slots < (free + spans)[:, None], words("span_gaps", length + 1), spans)
    bar_at = xp.sort(xp.where(bars, slots, length + 1), axis=1)
    count = int(xp.max(spans)) if spans.shape[0] else 0
    if count == 0:
        return xp.zeros_like(starts)
    lengths = lengths[:, :count]
    first = bar_at[:, :count] + xp.cumulative_sum(lengths, axis=1) - lengths
    active = arange_like(xp, count, starts)[None, :] < spans[:, None]
    unit = index[:, :, None]
    opened = xp.sum(xp.astype(active[:, None, :] & (first[:, None, :] <= unit), xp.int64), axis=2)
    closed = xp.sum(xp.astype(active[:, None, :] & (first[:, None, :] + lengths[:, None, :]
                                                     <= unit), xp.int64), axis=2)
    return opened > closed


def mask_spans(input_ids: Array, *, seed: int, epoch: int, example_ids: ArrayLike, mask_id: int,
               vocab_size: int, special_ids: Sequence[int], pad_id: int | None,
               word_ids: Array | None = None, continuation: Array | None = None,
               rate: float = 0.15, geometric_p: float = 0.2,
               max_length: int = 10, mask_rate: float = 0.8, random_rate: float = 0.1,
               random_vocabulary: str = "all", labels: str = "ignore_index",
               ignore_index: int = -100, specials_eligible: bool = False,
               padding_eligible: bool = False, static_copies: int | None = None) -> MaskedBatch:
    """SpanBERT-style span masking of (B, T) ids (module docstring: the rule).

    Arguments as :func:`refmask.tokens.mask_tokens`; word_ids/continuation (optional, at most
    one) make units of words; geometric_p in (0, 1] and max_length >= 1 define the lengths.
    """
    where = "mask_spans"
    xp, ids, specials, pad_id, rows, rate = check_common(
        where, input_ids, special_ids, pad_id, example_ids, rate, None)
    geometric_p, max_length = _check_geometric(where, geometric_p, max_length)
    units = (None if word_ids is None and continuation is None
             else _word_ids(where, xp, ids, word_ids, continuation))
    rule = ReplacementRule(mask_id, vocab_size, mask_rate, random_rate, random_vocabulary,
                           labels, ignore_index).checked(where, specials)
    words = Words(where, xp, ids, seed, epoch, static_copies, rows)
    eligible = eligibility(where, xp, ids, specials, pad_id,
                           specials_eligible=specials_eligible, padding_eligible=padding_eligible)
    starts = unit_starts(xp, eligible, units)
    inside = _unit_spans(xp, starts, words, rate, geometric_p, max_length)
    ordinal = xp.cumulative_sum(xp.astype(starts, xp.int64), axis=1) - 1
    selected = take_rows(xp, inside, xp.clip(ordinal, 0, None)) & eligible & (ordinal >= 0)
    return apply_replacement(where, xp, ids, selected, words, rule, specials)
