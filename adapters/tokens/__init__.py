"""Third-party token maskers wrapped as ``masker(input_ids, *, seed, epoch, word_ids)``.

Each factory returns ``(masker, declared)``: the masker and the convention it declares, a
dict of ``refmask.conformance.masking.MaskingSpec`` fields (the peer's documented defaults
on the probe vocabulary of ``PROBE_VOCAB`` ids, specials
``[PAD]=0 [CLS]=1 [SEP]=2 [MASK]=3 [UNK]=4``). The peer is imported lazily, when the factory
is called; ``MASKERS`` maps the names ``refmask check-masking`` accepts to the factories.
Every masker is called as the peer's own users call it: the ``epoch``-th call (0-based) of a
masker freshly seeded with ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable

PROBE_VOCAB = 100
PAD, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4


def _hf(name):
    def factory():
        from . import hf

        return getattr(hf, name)()

    return factory


def _keras(name):
    def factory():
        from . import keras_hub

        return getattr(keras_hub, name)()

    return factory


BERT = dict(vocab_size=PROBE_VOCAB, mask_id=MASK, special_ids=(PAD, CLS, SEP, MASK, UNK),
            pad_id=PAD, rate=0.15, mask_rate=0.8, random_rate=0.1)


def _reference(selection: str, **declared):
    def factory():
        from .reference import masker

        spec = dict(BERT, **declared)
        return masker(**spec, selection=selection), spec

    return factory


MASKERS: dict[str, Callable] = {
    "reference": _reference("bernoulli"),
    "reference.exact_count": _reference("exact_count"),
    "reference.whole_word": _reference("bernoulli", whole_word=True),
    "reference.spans": _reference("bernoulli", spans=(0.2, 10)),
    "hf.mlm": _hf("mlm_torch"),
    "hf.mlm.numpy": _hf("mlm_numpy"),
    "hf.whole_word": _hf("whole_word"),
    "keras_hub": _keras("eager"),
    "keras_hub.tf_text": _keras("tf_text"),
}


def _reference_t5():
    from .reference import reference_t5

    return reference_t5()


# T5 span-corruption functions corrupt(input_ids, *, seed, epoch) -> (inputs, targets),
# judged by refmask.conformance.masking.check_t5 (no third-party one installs here).
T5_CORRUPTERS: dict[str, Callable] = {"reference.t5": _reference_t5}
