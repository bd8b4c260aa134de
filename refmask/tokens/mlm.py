"""Token-level masked-language-model masking: BERT (static) and RoBERTa (dynamic).

    eligible[b, t] = not special and not padding           (each switchable, section 6.2)
    "bernoulli":    selected iff word t of "select" < round(rate * 2**32)
    "exact_count":  k = floor(fl(rate * n_eligible) + 1/2) per row; the k eligible tokens
                    with the smallest keys  word_t * T + t  are selected
    then the 80/10/10 replacement and the labels of :mod:`refmask.tokens.replacement`.

    mask_tokens(ids, seed=0, epoch=0, example_ids=[0], rate=0.5, ...)   ([CLS]=1 [SEP]=2 pad=0)
      ids       1  17  23  42  56  2  0  0
      selected  ·   █   ·   █   █  ·  ·  ·        specials and padding are never selected
      input     1 [M] 23 [M]  56  2  0  0        56 was selected and kept (the "10% keep")

Static (BERT) vs dynamic (RoBERTa) masking is only the keying: ``static_copies=None`` draws a
fresh mask every epoch; ``static_copies=n`` reuses the mask of epoch ``epoch mod n`` (BERT's
``dupe_factor`` copies made in preprocessing; RoBERTa's static baseline used n = 10).
"""

from __future__ import annotations

from collections.abc import Sequence

from numpy.typing import ArrayLike

from .._typing import Array
from ._common import (
    Words,
    check_common,
    eligibility,
    select_units,
)
from .replacement import MaskedBatch, ReplacementRule, apply_replacement

__all__ = ["mask_tokens", "select_tokens"]


def select_tokens(input_ids: Array, *, seed: int, epoch: int, example_ids: ArrayLike,
                  special_ids: Sequence[int],
                  pad_id: int | None, rate: float = 0.15, selection: str = "bernoulli",
                  specials_eligible: bool = False, padding_eligible: bool = False,
                  static_copies: int | None = None) -> Array:
    """bool (B, T): the tokens selected for prediction (no replacement; see :func:`mask_tokens`)."""
    where = "select_tokens"
    xp, ids, specials, pad_id, rows, rate = check_common(
        where, input_ids, special_ids, pad_id, example_ids, rate, selection)
    words = Words(where, xp, ids, seed, epoch, static_copies, rows)
    eligible = eligibility(where, xp, ids, specials, pad_id,
                           specials_eligible=specials_eligible, padding_eligible=padding_eligible)
    return select_units(xp, eligible, words("select", ids.shape[1]), rate, selection)


def mask_tokens(input_ids: Array, *, seed: int, epoch: int, example_ids: ArrayLike, mask_id: int,
                vocab_size: int, special_ids: Sequence[int], pad_id: int | None,
                rate: float = 0.15, selection: str = "bernoulli", mask_rate: float = 0.8,
                random_rate: float = 0.1, random_vocabulary: str = "all",
                labels: str = "ignore_index", ignore_index: int = -100,
                specials_eligible: bool = False, padding_eligible: bool = False,
                static_copies: int | None = None) -> MaskedBatch:
    """BERT/RoBERTa masking of a (B, T) batch of token ids, a pure function of its arguments.

    input_ids: (B, T) ints, any array-API namespace (NumPy, torch, JAX with x64, ...); the
      result is in the same namespace and device, bit-identical across namespaces.
    seed: int in [0, 2**64). epoch: int >= 0. example_ids: (B,) distinct ints >= 0, the
      dataset index of each row (the mask of a row does not depend on its batch-mates).
    mask_id, vocab_size: the [MASK] id and the number of ids.
    special_ids: ids never selected (unless specials_eligible=True). pad_id: the padding id,
      never selected (unless padding_eligible=True); None = no padding.
    rate: 0.15. selection: "bernoulli" (default; HF, keras-hub) or "exact_count".
    mask_rate=0.8, random_rate=0.1 (KEEP = the rest), random_vocabulary="all" | "non_special",
    labels="ignore_index" (ignore_index=-100) | "bool".
    static_copies: None = dynamic (RoBERTa); n = static with n copies (BERT).
    """
    where = "mask_tokens"
    xp, ids, specials, pad_id, rows, rate = check_common(
        where, input_ids, special_ids, pad_id, example_ids, rate, selection)
    rule = ReplacementRule(mask_id, vocab_size, mask_rate, random_rate, random_vocabulary,
                           labels, ignore_index).checked(where, specials)
    words = Words(where, xp, ids, seed, epoch, static_copies, rows)
    eligible = eligibility(where, xp, ids, specials, pad_id,
                           specials_eligible=specials_eligible, padding_eligible=padding_eligible)
    selected = select_units(xp, eligible, words("select", ids.shape[1]), rate, selection)
    return apply_replacement(where, xp, ids, selected, words, rule, specials)
