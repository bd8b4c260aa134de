"""keras-hub ``MaskedLMMaskGenerator`` as maskers: its eager Python path and its TF path.

keras-hub 0.32 runs eager calls on a pure-Python path (``random.random()`` per token, seeded
here with ``random.seed(seed)``) and calls inside ``tf.function``/``tf.data`` on the TF path,
tensorflow-text's ``RandomItemSelector`` + ``MaskValuesChooser`` (seeded here with
``tf.random.set_seed(seed)``); the layer's ``_allow_python_workflow=False`` forces the TF path.
Outputs ``token_ids`` and ``mask_positions`` become (masked ids, labels with -100).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from . import CLS, MASK, PAD, PROBE_VOCAB, SEP, UNK

SPECIALS = [PAD, CLS, SEP, MASK, UNK]


def _spec() -> dict:
    """The declared convention (fields of refmask.conformance.masking.MaskingSpec)."""
    return dict(vocab_size=PROBE_VOCAB, mask_id=MASK, special_ids=tuple(SPECIALS), pad_id=PAD)


def _labels(input_ids: np.ndarray, positions) -> np.ndarray:
    labels = np.full(input_ids.shape, -100, dtype=np.int64)
    rows = positions.to_list() if hasattr(positions, "to_list") else positions
    for b, row in enumerate(rows):
        row = [int(p) for p in (row.tolist() if hasattr(row, "tolist") else row)]
        labels[b, row] = input_ids[b, row]
    return labels


def _masker(tf_path: bool):
    import keras_hub

    def masker(input_ids, *, seed, epoch, word_ids):
        kwargs = {"_allow_python_workflow": False} if tf_path else {}
        layer = keras_hub.layers.MaskedLMMaskGenerator(
            vocabulary_size=PROBE_VOCAB, mask_selection_rate=0.15, mask_token_id=MASK,
            unselectable_token_ids=SPECIALS, **kwargs)
        if tf_path:
            import tensorflow as tf

            tf.random.set_seed(seed)
            data = tf.constant(input_ids)
        else:
            random.seed(seed)
            data = input_ids
        for _ in range(epoch + 1):
            out = layer(data)
        return (np.asarray(out["token_ids"]).astype(np.int64),
                _labels(input_ids, out["mask_positions"]))

    return masker


def eager() -> tuple[Callable, dict]:
    """``MaskedLMMaskGenerator(mask_selection_rate=0.15)`` called eagerly (Python path)."""
    return _masker(False), _spec()


def tf_text() -> tuple[Callable, dict]:
    """The same layer on its TF path (tensorflow-text's selectors)."""
    return _masker(True), _spec()
