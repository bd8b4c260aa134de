"""Whole-word masking: select words, then every eligible token of a selected word.

    unit = a maximal run of eligible tokens with one word id      (section 6.4)
    word ids from word_ids[b, t] (e.g. a fast tokenizer's word_ids(); -1 for none), or from
    continuation[b, t] (True: token t continues token t-1's word, WordPiece "##" / no leading
    "Ġ" or "▁"): word_ids = cumsum(not continuation) along t.
    a word's decision reads word j of "select", j = the position of its first token;
    "bernoulli": the word is selected iff that word < round(rate * 2**32);
    "exact_count": k = floor(fl(rate * n_words) + 1/2) words with the smallest keys.
    Each token of a selected word is then replaced by the 80/10/10 rule on its own.

    tokens    [CLS] the  qu ##ick  fox  [SEP]       word ids   -  0  1  1  2  -
    selected    ·    ·   █    █     ·     ·         (word 1 selected: both of its pieces)
"""

from __future__ import annotations

from collections.abc import Sequence

import array_api_compat
from numpy.typing import ArrayLike

from .._typing import Array
from ._common import (
    Words,
    check_common,
    eligibility,
    select_units,
    spread_to_tokens,
    unit_of_token,
    unit_starts,
)
from .replacement import MaskedBatch, ReplacementRule, apply_replacement

__all__ = ["mask_whole_words", "word_ids_from_continuation"]


def word_ids_from_continuation(continuation: Array) -> Array:
    """int64 (B, T) word ids ``cumsum(not continuation) - 1`` from a (B, T) bool array."""
    xp = array_api_compat.array_namespace(continuation)
    if continuation.ndim != 2 or continuation.dtype != xp.bool:
        raise ValueError("word_ids_from_continuation: continuation must be a (B, T) bool array, "
                         f"got shape {tuple(continuation.shape)} dtype {continuation.dtype}")
    return xp.cumulative_sum(xp.astype(~continuation, xp.int64), axis=1) - 1


def _word_ids(where: str, xp, ids, word_ids, continuation):
    if (word_ids is None) == (continuation is None):
        raise ValueError(f"{where}: give exactly one of word_ids and continuation")
    given = word_ids if continuation is None else continuation
    name = "word_ids" if continuation is None else "continuation"
    try:
        namespace = array_api_compat.array_namespace(given)
    except TypeError:
        namespace = None
    if namespace is None or (namespace is not xp and type(given) is not type(ids)):
        raise TypeError(f"{where}: {name} must be an array in the namespace of input_ids "
                        f"({type(ids).__name__}), got {type(given).__name__}")
    if tuple(given.shape) != tuple(ids.shape):
        raise ValueError(f"{where}: {name} must have the shape of input_ids {tuple(ids.shape)}, "
                         f"got {tuple(given.shape)}")
    if continuation is not None:
        return word_ids_from_continuation(continuation)
    if not xp.isdtype(word_ids.dtype, "integral"):
        raise TypeError(f"{where}: word_ids must hold integers, got {word_ids.dtype}")
    return xp.astype(word_ids, xp.int64)


def mask_whole_words(input_ids: Array, *, seed: int, epoch: int, example_ids: ArrayLike,
                     mask_id: int,
                     vocab_size: int, special_ids: Sequence[int], pad_id: int | None,
                     word_ids: Array | None = None, continuation: Array | None = None,
                     rate: float = 0.15,
                     selection: str = "bernoulli", mask_rate: float = 0.8,
                     random_rate: float = 0.1, random_vocabulary: str = "all",
                     labels: str = "ignore_index", ignore_index: int = -100,
                     specials_eligible: bool = False, padding_eligible: bool = False,
                     static_copies: int | None = None) -> MaskedBatch:
    """Whole-word masking of (B, T) ids; words from ``word_ids`` or ``continuation``.

    Arguments as :func:`refmask.tokens.mask_tokens`, plus exactly one of word_ids ((B, T)
    ints) and continuation ((B, T) bools). ``rate`` is the probability (or share) of words.
    """
    where = "mask_whole_words"
    xp, ids, specials, pad_id, rows, rate = check_common(
        where, input_ids, special_ids, pad_id, example_ids, rate, selection)
    units = _word_ids(where, xp, ids, word_ids, continuation)
    rule = ReplacementRule(mask_id, vocab_size, mask_rate, random_rate, random_vocabulary,
                           labels, ignore_index).checked(where, specials)
    words = Words(where, xp, ids, seed, epoch, static_copies, rows)
    eligible = eligibility(where, xp, ids, specials, pad_id,
                           specials_eligible=specials_eligible, padding_eligible=padding_eligible)
    starts = unit_starts(xp, eligible, units)
    chosen = select_units(xp, starts, words("select", ids.shape[1]), rate, selection)
    selected = spread_to_tokens(xp, chosen, unit_of_token(xp, starts, eligible))
    return apply_replacement(where, xp, ids, selected, words, rule, specials)
