"""The 80/10/10 replacement of selected tokens, and the labels (BERT, section 3.1 of its paper).

    r = word t of stream "replace"                      (one word per selected position)
    r <  round(mask_rate * 2**32)                      -> mask_id            (code MASK)
    r <  round(mask_rate * 2**32) + round(random_rate * 2**32)
                                                       -> a random token     (code RANDOM)
    otherwise                                          -> the token itself   (code KEEP)

    random token = V[floor(w * |V| / 2**32)],  w = word t of stream "random_token",
    V = sorted ids of the random vocabulary:
        "all"          every id in [0, vocab_size)   (HF DataCollatorForLanguageModeling,
                                                      keras-hub, tensorflow-text)
        "non_special"  [0, vocab_size) minus special_ids and mask_id

The multiply-shift draw has no rejection step: an id is drawn with probability
``floor(2**32/|V|)/2**32`` or ``ceil(2**32/|V|)/2**32``, off ``1/|V|`` by less than
``2**-32`` (relative ``|V|/2**32``; 1.2e-5 for a 50k vocabulary): far below what any test can
see. A random token may equal the original token or ``mask_id`` (both are in "all"), exactly
as in BERT.

Labels: ``labels="ignore_index"`` gives ``where(selected, original id, ignore_index)``
(``ignore_index=-100``: PyTorch cross-entropy's default) in the dtype of the ids;
``labels="bool"`` gives the (B, T) selection mask itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .._typing import Array, Namespace
from .._validate import check_choice, check_int, check_rate
from ._common import check_ids_below, threshold

__all__ = ["KEEP", "MASK", "NOT_SELECTED", "RANDOM", "LABEL_MODES", "RANDOM_VOCABULARIES",
           "MaskedBatch", "ReplacementRule"]

NOT_SELECTED, MASK, RANDOM, KEEP = 0, 1, 2, 3
LABEL_MODES = ("ignore_index", "bool")
RANDOM_VOCABULARIES = ("all", "non_special")


@dataclass(frozen=True)
class MaskedBatch:
    """A masked batch, every field (B, T) in the namespace of the input ids.

    input_ids: the model's input after replacement (dtype of the input ids).
    labels: ``where(selected, original, ignore_index)`` or the bool selection (``labels=``).
    selected: bool, the positions whose original token is to be predicted.
    replacement: int8 codes NOT_SELECTED=0, MASK=1, RANDOM=2, KEEP=3.
    """

    input_ids: Any
    labels: Any
    selected: Any
    replacement: Any


@dataclass(frozen=True)
class ReplacementRule:
    """What happens to a selected token (see the module docstring); the maskers check it with
    :meth:`checked`, construction alone checks nothing.

    mask_id: the [MASK] id, in [0, vocab_size). vocab_size: the number of ids (> 0).
    mask_rate, random_rate: probabilities of MASK and RANDOM (sum <= 1; KEEP is the rest).
    random_vocabulary: "all" or "non_special". labels: "ignore_index" or "bool".
    ignore_index: the label of unselected positions when labels="ignore_index".
    """

    mask_id: int
    vocab_size: int
    mask_rate: float = 0.8
    random_rate: float = 0.1
    random_vocabulary: str = "all"
    labels: str = "ignore_index"
    ignore_index: int = -100

    def checked(self, where: str, special_ids: tuple) -> ReplacementRule:
        vocab = check_int(where, "vocab_size", self.vocab_size, minimum=1, maximum=2**31 - 1,
                          rule="an int in [1, 2**31)")
        mask_id = check_int(where, "mask_id", self.mask_id, minimum=0, maximum=vocab - 1,
                            rule=f"an id in [0, vocab_size={vocab})")
        mask_rate = check_rate(where, "mask_rate", self.mask_rate)
        random_rate = check_rate(where, "random_rate", self.random_rate)
        if threshold(mask_rate) + threshold(random_rate) > 2**32:
            raise ValueError(f"{where}: mask_rate + random_rate must be <= 1, got "
                             f"{mask_rate} + {random_rate}")
        check_choice(where, "random_vocabulary", self.random_vocabulary, RANDOM_VOCABULARIES)
        check_choice(where, "labels", self.labels, LABEL_MODES)
        check_int(where, "ignore_index", self.ignore_index, minimum=-(2**31), maximum=2**31 - 1,
                  rule="an int32 value")
        if self.labels == "ignore_index" and 0 <= self.ignore_index < vocab:
            raise ValueError(f"{where}: ignore_index must not be an id of the vocabulary "
                             f"[0, vocab_size={vocab}) (a label equal to it would be read as "
                             f"'not selected'), got {self.ignore_index}")
        if self.random_vocabulary == "non_special" and random_rate > 0:
            allowed = np.setdiff1d(np.arange(vocab), np.asarray(special_ids + (mask_id,)))
            if allowed.size == 0:
                raise ValueError(f"{where}: random_vocabulary='non_special' leaves no id to draw "
                                 f"(every id below vocab_size={vocab} is special)")
        return ReplacementRule(mask_id, vocab, mask_rate, random_rate, self.random_vocabulary,
                               self.labels, int(self.ignore_index))

    def vocabulary(self, special_ids: tuple) -> np.ndarray:
        """Sorted int64 ids a RANDOM replacement draws from."""
        ids = np.arange(self.vocab_size, dtype=np.int64)
        if self.random_vocabulary == "all":
            return ids
        return np.setdiff1d(ids, np.asarray(special_ids + (self.mask_id,), dtype=np.int64))


def apply_replacement(where: str, xp: Namespace, input_ids: Array, selected: Array, words: Array,
                      rule: ReplacementRule,
                      special_ids: tuple) -> MaskedBatch:
    """Replace the selected tokens of ``input_ids`` by ``rule``; words: the stream reader."""
    check_ids_below(where, xp, input_ids, rule.vocab_size,
                    rule=f"[0, vocab_size={rule.vocab_size})")
    length = input_ids.shape[1]
    draw = words("replace", length)
    category = xp.where(draw < threshold(rule.mask_rate), MASK,
                        xp.where(draw < threshold(rule.mask_rate) + threshold(rule.random_rate),
                                 RANDOM, KEEP))
    category = xp.where(selected, category, NOT_SELECTED)
    device = array_api_compat.device(input_ids)
    out = xp.where(category == MASK, xp.asarray(rule.mask_id, dtype=input_ids.dtype,
                                                device=device), input_ids)
    if rule.random_rate > 0:
        vocabulary = rule.vocabulary(special_ids)
        table = xp.asarray(vocabulary, device=device)
        index = (words("random_token", length) * vocabulary.size) >> 32
        drawn = xp.astype(xp.take(table, xp.reshape(index, (-1,)), axis=0), input_ids.dtype)
        out = xp.where(category == RANDOM, xp.reshape(drawn, input_ids.shape), out)
    if rule.labels == "bool":
        labels = selected
    else:
        if rule.ignore_index < 0 and not xp.isdtype(input_ids.dtype, "signed integer"):
            raise TypeError(f"{where}: labels='ignore_index' with ignore_index="
                            f"{rule.ignore_index} needs signed integer ids, got "
                            f"{input_ids.dtype}")
        labels = xp.where(selected, input_ids,
                          xp.asarray(rule.ignore_index, dtype=input_ids.dtype, device=device))
    return MaskedBatch(out, labels, selected, xp.astype(category, xp.int8))


