"""HF transformers ``DataCollatorForLanguageModeling`` (mlm, whole_word_mask) as maskers.

The probe vocabulary becomes an in-memory WordLevel ``PreTrainedTokenizerFast`` (no download);
``[PAD] [CLS] [SEP] [MASK] [UNK]`` are its special tokens, so the collator's own
``get_special_tokens_mask`` marks them (padding included). Whole-word masking gets words
through ``offset_mapping``: a token continuing a word starts where the previous one ended,
a new word one character later (how HF 5.x finds words). ``DataCollatorForWholeWordMask``
no longer exists in transformers 5.x (``whole_word_mask=True`` replaced it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import CLS, MASK, PAD, PROBE_VOCAB, SEP, UNK


def tokenizer() -> Any:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    names = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"] + \
        [f"w{i}" for i in range(5, PROBE_VOCAB)]
    core = Tokenizer(WordLevel({n: i for i, n in enumerate(names)}, unk_token="[UNK]"))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", unk_token="[UNK]")
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id,
            tok.unk_token_id) == (PAD, CLS, SEP, MASK, UNK) and len(tok) == PROBE_VOCAB
    return tok


def _spec(**changes) -> dict:
    """The declared convention (fields of refmask.conformance.masking.MaskingSpec)."""
    return dict(vocab_size=PROBE_VOCAB, mask_id=MASK, special_ids=(PAD, CLS, SEP, MASK, UNK),
                pad_id=PAD, **changes)


def _collator_masker(return_tensors: str, whole_word: bool):
    from transformers import DataCollatorForLanguageModeling

    tok = tokenizer()

    def masker(input_ids, *, seed, epoch, word_ids):
        collator = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15,
                                                   whole_word_mask=whole_word, seed=seed,
                                                   return_tensors=return_tensors)
        examples = []
        for row, words in zip(input_ids.tolist(), word_ids.tolist(), strict=True):
            example = {"input_ids": row}
            if whole_word:
                offsets, end = [], 0
                for t, word in enumerate(words):
                    if word < 0:
                        offsets.append((0, 0))
                        continue
                    start = end if t and words[t - 1] == word else end + 1
                    end = start + 1
                    offsets.append((start, end))
                example["offset_mapping"] = offsets
                example["special_tokens_mask"] = [int(w < 0) for w in words]
            examples.append(example)
        for _ in range(epoch + 1):  # the epoch-th call of a collator seeded with seed
            batch = collator([dict(e) for e in examples])
        return np.asarray(batch["input_ids"]), np.asarray(batch["labels"])

    return masker


def mlm_torch() -> tuple[Callable, dict]:
    """``DataCollatorForLanguageModeling(mlm_probability=0.15, return_tensors="pt")``."""
    return _collator_masker("pt", False), _spec()


def mlm_numpy() -> tuple[Callable, dict]:
    """The same collator with ``return_tensors="np"`` (a separate NumPy code path)."""
    return _collator_masker("np", False), _spec()


def whole_word() -> tuple[Callable, dict]:
    """``DataCollatorForLanguageModeling(whole_word_mask=True)``, judged as whole-word BERT."""
    return _collator_masker("pt", True), _spec(whole_word=True)
