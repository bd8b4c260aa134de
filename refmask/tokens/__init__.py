"""Token masking, specified: BERT/RoBERTa MLM masks, whole words, spans, T5 span corruption.

Every mask is a pure function of (seed, epoch, example id, token ids, parameters) through
``refmask.rng`` Philox streams (:mod:`._streams`), computed with integer array-API operations,
hence bit-identical on NumPy, torch and JAX (with x64). docs/spec.md section 6 is the rule.

One module per masker family:

* :mod:`.mlm`          ``mask_tokens``, ``select_tokens``   token-level selection + 80/10/10
* :mod:`.whole_word`   ``mask_whole_words``                 whole-word masking
* :mod:`.spans`        ``mask_spans``                       SpanBERT geometric spans
* :mod:`.t5`           ``corrupt_spans``                    T5 span corruption with sentinels
* :mod:`.attention`    attention masks from pad ids, EOS ids, position-id restarts
* :mod:`.render`       a masked batch as text or PNG
"""

from ._streams import masking_epoch, stream_name
from .attention import (
    documents_from_eos_ids,
    documents_from_position_ids,
    key_padding_from_pad_ids,
    segment_ids_from_eos_ids,
)
from .mlm import mask_tokens, select_tokens
from .render import batch_to_png, batch_to_text
from .replacement import KEEP, MASK, NOT_SELECTED, RANDOM, MaskedBatch, ReplacementRule
from .spans import mask_spans, span_length_distribution
from .t5 import T5Batch, corrupt_spans, t5_counts
from .whole_word import mask_whole_words, word_ids_from_continuation

__all__ = [
    "KEEP", "MASK", "NOT_SELECTED", "RANDOM", "MaskedBatch", "ReplacementRule", "T5Batch",
    "batch_to_png", "batch_to_text", "corrupt_spans", "documents_from_eos_ids",
    "documents_from_position_ids", "key_padding_from_pad_ids", "mask_spans", "mask_tokens",
    "mask_whole_words", "masking_epoch", "segment_ids_from_eos_ids", "select_tokens",
    "span_length_distribution", "stream_name", "t5_counts", "word_ids_from_continuation",
]
