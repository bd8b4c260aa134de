"""refmask.tokens itself as a masker and as a T5 span-corruption function (example ids are
the row numbers), for the judge's comparisons and as the reference entries of MASKERS."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from refmask import tokens

__all__ = ["masker", "reference_t5"]


def masker(*, vocab_size: int, mask_id: int, special_ids: Sequence[int], pad_id: int | None,
           rate: float, mask_rate: float, random_rate: float, ignore_index: int = -100,
           whole_word: bool = False, spans: tuple[float, int] | None = None,
           selection: str = "bernoulli", random_vocabulary: str = "all") -> Callable:
    """``masker(input_ids, *, seed, epoch, word_ids) -> (masked_ids, labels)``: mask_tokens,
    mask_whole_words (``whole_word``) or mask_spans (``spans = (geometric_p, max_length)``)."""

    def run(input_ids, *, seed, epoch, word_ids):
        common = dict(seed=seed, epoch=epoch, example_ids=range(len(input_ids)),
                      mask_id=mask_id, vocab_size=vocab_size, special_ids=special_ids,
                      pad_id=pad_id, rate=rate, mask_rate=mask_rate, random_rate=random_rate,
                      random_vocabulary=random_vocabulary, ignore_index=ignore_index)
        if spans is not None:
            out = tokens.mask_spans(input_ids, geometric_p=spans[0], max_length=spans[1],
                                    word_ids=word_ids if whole_word else None, **common)
        elif whole_word:
            out = tokens.mask_whole_words(input_ids, word_ids=word_ids, selection=selection,
                                          **common)
        else:
            out = tokens.mask_tokens(input_ids, selection=selection, **common)
        return out.input_ids, out.labels

    return run


def reference_t5(*, vocab_size: int = 1000, eos_id: int | None = 1,
                 noise_density: float = 0.15, mean_span_length: float = 3.0) -> Callable:
    """``corrupt(input_ids, *, seed, epoch) -> (inputs, targets)`` by corrupt_spans (pad 0)."""

    def corrupt(input_ids, *, seed, epoch):
        out = tokens.corrupt_spans(input_ids, seed=seed, epoch=epoch,
                                   example_ids=range(len(input_ids)), vocab_size=vocab_size,
                                   pad_id=0, eos_id=eos_id, noise_density=noise_density,
                                   mean_span_length=mean_span_length)
        return out.inputs, out.targets

    return corrupt
