"""The case catalog: named, flagged attention cases in the spirit of Wycheproof and the ONNX
backend tests.

:class:`Case` and everything derived from one case (flags, inputs, call arguments, JSON form,
reference outputs) live in :mod:`refmask.case`; they are re-exported here.

A :class:`Case` is a complete specification of one attention call: the mask, the shapes
(B, Hq, Hkv, Tq, Tk, Dqk, Dv), the dtype, every score feature (scale, softcap, bias, ALiBi,
sinks, dropout) and the seed of its inputs. Inputs are never stored: :func:`case_inputs`
regenerates them bit for bit from Philox words (``refmask.rng``), keyed by
``(seed, "<case name>/<tensor name>")``.

Flags are *derived* from the case (``EmptyRow`` from the materialised mask, ``GQA`` from the
head counts, ...) plus a few that only the author knows (``WindowConvention``), so a flag can
never disagree with the case it labels. The catalog reads as a list of specifications:
``catalog()`` builds it from the base cases in :func:`base_cases`, each expanded to every dtype
in :data:`DTYPES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from refmask import masks as m
from refmask import rng
from refmask._typing import Array
from refmask.attention import Alibi
from refmask.case import (
    DTYPES,
    FLAGS,
    GRAD_NAMES,
    Case,
    attention_kwargs,
    case_from_json,
    case_inputs,
    derive_flags,
    dtype_unavailable,
    numpy_dtype,
    reference_outputs,
    to_bhtd,
)

from .cases_outputs import scores_cases, temperature_cases, varlen_alibi_cases

__all__ = [
    "DTYPES", "FLAGS", "GRAD_NAMES", "Case", "attention_kwargs", "base_cases", "case_from_json",
    "case_inputs", "catalog", "checkerboard_causal", "derive_flags", "dtype_unavailable",
    "numpy_dtype", "reference_outputs", "to_bhtd",
]


def checkerboard_causal(b: Array, h: Array, q_idx: Array, kv_idx: Array) -> Array:
    """A user predicate for the catalog: causal keys at an even distance (FlexAttention-style
    ``mask_mod`` on indices)."""
    return (kv_idx <= q_idx) & ((q_idx - kv_idx) % 2 == 0)


# --- the base cases ----------------------------------------------------------------------------

def _c(name, family, mask, **fields) -> Case:
    return Case(name=name, family=family, mask=mask, **fields)


def base_cases() -> list[Case]:
    """Every base case (float64), one specification per line or two."""
    tl, br = "top_left", "bottom_right"
    causal_tl, causal_br = m.causal(align=tl), m.causal(align=br)
    cases = [
        # -- no mask, shapes, scale, layout, lengths
        _c("full/square", "full", None),
        _c("full/wide", "full", None, q_len=3, k_len=9),
        _c("full/tall", "full", None, q_len=9, k_len=3),
        _c("full/custom_scale", "full", None, scale=0.3),
        _c("full/dqk_ne_dv", "full", None, qk_dim=12, v_dim=5),
        _c("full/bthd", "full", None, layout="BTHD"),
        _c("full/q_len_1", "full", None, q_len=1, k_len=7),
        _c("full/k_len_1", "full", None, q_len=5, k_len=1),
        _c("full/q_len_0", "full", None, q_len=0, k_len=4),
        _c("full/k_len_0", "full", None, q_len=4, k_len=0,
           notes="every row is empty: the empty-row policy defines the output"),
        _c("full/large_magnitude", "full", None, input_scale=30.0,
           notes="scores near +-2000: exp overflows unless the row maximum is subtracted"),
        # -- causal, both alignments, all length relations
        _c("causal/top_left/square", "causal", causal_tl),
        _c("causal/bottom_right/square", "causal", causal_br),
        _c("causal/top_left/wide", "causal", causal_tl, q_len=3, k_len=8),
        _c("causal/bottom_right/wide", "causal", causal_br, q_len=3, k_len=8),
        _c("causal/top_left/tall", "causal", causal_tl, q_len=8, k_len=3),
        _c("causal/bottom_right/tall", "causal", causal_br, q_len=8, k_len=3,
           notes="the first Tq - Tk rows keep nothing (FlashAttention: output 0)"),
        _c("causal/kv_cache_offset", "causal", m.causal(align=5), q_len=2, k_len=7),
        _c("causal/kv_cache_per_batch", "causal", m.causal(align=[1, 4]), q_len=3, k_len=7),
        _c("causal/decode_q_len_1", "causal", causal_br, q_len=1, k_len=9),
        _c("causal/large_magnitude", "causal", causal_tl, input_scale=30.0),
        # -- sliding windows: the three conventions
        _c("window/fa_2_0/square", "sliding_window", m.sliding_window(2, 0, align=tl),
           q_len=9, k_len=9, extra_flags=("WindowConvention",),
           notes="FA window_size=(2, 0) = 3 keys incl. self = HF sliding_window=3"),
        _c("window/fa_3_0/square", "sliding_window", m.sliding_window(3, 0, align=tl),
           q_len=9, k_len=9, extra_flags=("WindowConvention",),
           notes="attention-gym generate_sliding_window(3): q - kv <= 3 = 4 keys"),
        _c("window/fa_2_0/bottom_right_wide", "sliding_window",
           m.sliding_window(2, 0, align=br), q_len=4, k_len=9),
        _c("window/fa_2_0/bottom_right_tall", "sliding_window",
           m.sliding_window(2, 0, align=br), q_len=9, k_len=4),
        _c("window/symmetric_2_2", "sliding_window", m.sliding_window(2, 2, align=tl),
           q_len=9, k_len=9),
        _c("window/left_unbounded_right_1", "sliding_window",
           m.sliding_window(None, 1, align=br), q_len=5, k_len=7),
        _c("window/self_only", "sliding_window", m.sliding_window(0, 0, align=tl)),
        # -- chunked, block-causal, prefix-LM
        _c("chunked/llama4_3", "chunked", m.chunked(3, align=tl) & causal_tl, q_len=9, k_len=9),
        _c("chunked/bidirectional_3", "chunked", m.chunked(3, align=tl), q_len=9, k_len=9),
        _c("chunked/bottom_right_wide", "chunked", m.chunked(4, align=br) & causal_br,
           q_len=3, k_len=10),
        _c("block_causal/2", "block_causal", m.block_causal(2, align=tl), q_len=8, k_len=8),
        _c("block_causal/3_bottom_right_wide", "block_causal", m.block_causal(3, align=br),
           q_len=4, k_len=9),
        _c("prefix_lm/3", "prefix_lm", m.prefix_lm(3, align=tl), q_len=8, k_len=8),
        _c("prefix_lm/per_batch", "prefix_lm", m.prefix_lm([1, 5], align=tl),
           q_len=8, k_len=8),
        # -- documents / varlen
        _c("documents/packed_causal", "documents",
           m.documents_from_cu_seqlens([0, 3, 4, 8]) & causal_tl, batch=1, q_len=8, k_len=8),
        _c("documents/packed_bidirectional", "documents",
           m.documents_from_cu_seqlens([0, 5, 9]), batch=1, q_len=9, k_len=9),
        _c("documents/position_ids", "documents",
           m.documents_from_position_ids([[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 4, 5, 0, 1]])
           & causal_tl, q_len=8, k_len=8),
        # -- padding
        _c("padding/keys_right", "padding", m.key_padding([7, 3], side="right"), k_len=7),
        _c("padding/keys_left", "padding", m.key_padding([7, 3], side="left"), k_len=7),
        _c("padding/keys_right_causal_bottom_right", "padding",
           m.key_padding([6, 4], side="right")
           & m.causal(align=m.bottom_right(q_lengths=[3, 3], k_lengths=[6, 4])),
           q_len=3, k_len=6),
        _c("padding/queries_right", "padding", m.query_padding([6, 2], side="right"),
           notes="padded query rows are empty rows"),
        _c("padding/queries_left_keys_left_causal", "padding",
           m.query_padding([6, 4], side="left") & m.key_padding([6, 4], side="left")
           & causal_tl, q_len=6, k_len=6),
        _c("padding/all_keys_padded", "padding", m.key_padding([0, 4], side="right"),
           k_len=4, notes="batch 0 has no valid key: every row of it is empty"),
        # -- strided, global, explicit, per-head
        _c("strided/2_causal", "strided", m.strided(2, align=tl) & causal_tl, q_len=8, k_len=8),
        _c("strided/sparse_transformer", "strided",
           (m.sliding_window(2, 0, align=tl) | m.strided(3, align=tl)) & causal_tl,
           q_len=9, k_len=9),
        _c("global/longformer", "global_tokens",
           m.global_tokens([0, 5], align=tl) | m.sliding_window(1, 1, align=tl),
           q_len=9, k_len=9),
        _c("explicit/articles_empty_first_row", "explicit",
           m.explicit(np.array([[0] * 5] + [[1] * 5] * 4, dtype=bool)), q_len=5, k_len=5,
           notes="the 'dynamic mask' of the masking articles: its first row keeps nothing"),
        _c("explicit/random", "explicit",
           m.explicit(rng.uniform(7, "explicit/random", (2, 2, 5, 6)) < 0.6), q_len=5, k_len=6),
        _c("predicate/checkerboard_causal", "predicate", m.predicate(checkerboard_causal),
           q_len=7, k_len=7),
        _c("per_batch/causal_and_padding", "per_batch",
           m.per_batch(causal_br, m.key_padding(3, side="left")), q_len=4, k_len=6),
        _c("per_head/causal_and_window", "per_head",
           m.per_head(causal_tl, m.sliding_window(1, 0, align=tl), m.full(),
                      m.chunked(2, align=tl)), q_heads=4, kv_heads=2),
        # -- heads
        _c("gqa/4_to_2_causal", "gqa", causal_tl, q_heads=4, kv_heads=2),
        _c("gqa/6_to_3_window", "gqa", m.sliding_window(1, 0, align=br), q_heads=6,
           kv_heads=3, q_len=4, k_len=7),
        _c("mqa/4_to_1", "gqa", causal_br, q_heads=4, kv_heads=1, q_len=3, k_len=6),
        # -- score features
        _c("softcap/causal", "softcap", causal_tl, softcap=2.0, input_scale=3.0),
        _c("softcap/window_bottom_right", "softcap", m.sliding_window(2, 0, align=br),
           softcap=5.0, input_scale=4.0, q_len=4, k_len=8),
        _c("softcap/no_mask", "softcap", None, softcap=1.5, input_scale=3.0),
        _c("bias/full", "bias", None, bias=True),
        _c("bias/causal", "bias", causal_tl, bias=True),
        _c("alibi/abs_causal_bottom_right", "alibi", causal_br, q_heads=4, kv_heads=4,
           q_len=4, k_len=8, alibi=Alibi(4, convention="abs", align=br)),
        _c("alibi/abs_bidirectional", "alibi", None, q_heads=4, kv_heads=4,
           alibi=Alibi(4, convention="abs", align=tl),
           notes="abs and signed ALiBi differ without a causal mask"),
        _c("alibi/signed_bidirectional", "alibi", None, q_heads=4, kv_heads=4,
           alibi=Alibi(4, convention="signed", align=tl)),
        _c("alibi/signed_causal_6_heads", "alibi", causal_tl, q_heads=6, kv_heads=6,
           alibi=Alibi(6, convention="signed", align=tl),
           notes="non-power-of-two head count: Press et al. interleaved slopes"),
        _c("sinks/full", "sinks", None, sinks=True),
        _c("sinks/window_with_empty_rows", "sinks", m.sliding_window(1, 0, align=br),
           sinks=True, q_len=6, k_len=3,
           notes="with a sink an empty row's lse is the sink and its output is 0"),
        _c("dropout/causal", "dropout", causal_tl, dropout_rate=0.25),
        _c("dropout/full", "dropout", None, dropout_rate=0.5),
        # -- empty rows
        _c("empty_rows/all_masked", "empty_rows", ~m.full(), q_len=3, k_len=4),
        _c("empty_rows/every_other_query_padded", "empty_rows",
           m.explicit(np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]],
                               dtype=bool)), q_len=4, k_len=4),
        # -- everything at once
        _c("combined/gqa_softcap_window_sink_bthd", "combined",
           m.sliding_window(3, 0, align=br) & m.key_padding([9, 6], side="right"),
           q_heads=4, kv_heads=2, q_len=5, k_len=9, qk_dim=8, v_dim=6, softcap=4.0,
           input_scale=3.0, sinks=True, layout="BTHD", bias=True),
    ]
    cases += varlen_cases() + paged_cases() + tree_cases() + split_kv_cases() + mla_cases()
    cases += _coverage_cases() + _long_row_cases()
    cases += scores_cases() + temperature_cases() + varlen_alibi_cases()
    names = [case.name for case in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"base_cases: duplicate case names {sorted(duplicates)}")
    return cases


def _coverage_cases() -> list[Case]:
    """Catalog v2: every feature and convention in at least three cases, and the combinations
    a kernel gets wrong together (offsets with chunks and blocks, valid lengths with
    bottom-right alignment, softcap with bias and ALiBi, sinks and dropout under masks,
    KV-cache offsets with windows)."""
    tl, br = "top_left", "bottom_right"
    causal_tl, causal_br = m.causal(align=tl), m.causal(align=br)
    valid = m.bottom_right(q_lengths=[3, 3], k_lengths=[8, 5])
    return [
        # -- lengths, scale, layout, magnitude
        _c("causal/bottom_right/q_len_0", "causal", causal_br, q_len=0, k_len=5),
        _c("scale/causal_bias_bthd", "scale", causal_tl, scale=0.125, bias=True,
           layout="BTHD"),
        _c("scale/alibi_abs_top_left_tall", "scale", causal_tl, scale=0.9, q_len=7, k_len=4,
           alibi=Alibi(2, convention="abs", align=tl),
           notes="an explicit scale that is neither 1/sqrt(Dqk) nor 1/Dqk, with ALiBi"),
        _c("window/large_magnitude", "sliding_window", m.sliding_window(2, 0, align=tl),
           input_scale=30.0, q_len=8, k_len=8),
        # -- windows with KV-cache offsets
        _c("window/kv_cache_per_batch", "sliding_window", m.sliding_window(2, 0, align=[3, 5]),
           q_len=3, k_len=9, notes="a 3-key window after 3 resp. 5 cached tokens"),
        # -- chunked and block-causal with offsets
        _c("chunked/kv_cache_offset", "chunked", m.chunked(4, align=5) & m.causal(align=5),
           q_len=3, k_len=8, notes="queries at positions 5..7: chunk 1 = keys 4..7"),
        _c("chunked/per_batch_offset", "chunked",
           m.chunked(3, align=[1, 4]) & m.causal(align=[1, 4]), q_len=4, k_len=8),
        _c("block_causal/kv_cache_offset", "block_causal", m.block_causal(3, align=4),
           q_len=4, k_len=8),
        _c("block_causal/per_batch_offset_dropout", "block_causal",
           m.block_causal(2, align=[2, 5]), q_len=3, k_len=8, dropout_rate=0.25),
        # -- prefix-LM, strided, global tokens
        _c("prefix_lm/bottom_right_wide_sinks", "prefix_lm", m.prefix_lm(2, align=br),
           q_len=4, k_len=8, sinks=True),
        _c("strided/bottom_right_wide", "strided", m.strided(2, align=br) & causal_br,
           q_len=4, k_len=9),
        _c("global/bottom_right_window", "global_tokens",
           m.global_tokens([0], align=br) | m.sliding_window(1, 0, align=br), q_len=4, k_len=9),
        _c("global/causal_sinks", "global_tokens",
           (m.global_tokens([0, 3], align=tl) | m.sliding_window(1, 0, align=tl)) & causal_tl,
           q_len=8, k_len=8, sinks=True),
        # -- per-head and per-batch masks
        _c("per_head/gqa_bottom_right", "per_head",
           m.per_head(causal_br, m.sliding_window(2, 0, align=br), causal_br,
                      m.chunked(3, align=br) & causal_br),
           q_heads=4, kv_heads=2, q_len=4, k_len=8),
        _c("per_head/dropout", "per_head", m.per_head(causal_tl, m.full()), dropout_rate=0.3),
        _c("per_batch/kv_cache_and_window", "per_batch",
           m.per_batch(m.causal(align=3), m.sliding_window(1, 0, align=3)), q_len=3, k_len=7),
        _c("per_batch/chunked_and_prefix", "per_batch",
           m.per_batch(m.chunked(2, align=tl) & causal_tl, m.prefix_lm(3, align=tl))),
        # -- padding: bottom-right with per-batch valid lengths, padded queries with sinks
        _c("padding/bottom_right_valid_lengths_window", "padding",
           m.key_padding([8, 5], side="right") & m.sliding_window(2, 0, align=valid),
           q_len=3, k_len=8),
        _c("padding/bottom_right_valid_lengths_queries", "padding",
           m.query_padding([3, 2], side="right") & m.key_padding([8, 5], side="right")
           & m.causal(align=m.bottom_right(q_lengths=[3, 2], k_lengths=[8, 5])),
           q_len=3, k_len=8, notes="batch 1: 2 valid queries see the last 2 of 5 valid keys"),
        _c("padding/queries_left_sinks", "padding",
           m.query_padding([6, 3], side="left") & causal_tl, sinks=True,
           notes="padded query rows keep nothing: with a sink lse is the sink, out is 0"),
        # -- heads
        _c("mqa/softcap_bias_dqk_ne_dv", "gqa", causal_tl, q_heads=3, kv_heads=1, softcap=3.0,
           bias=True, input_scale=3.0, qk_dim=12, v_dim=4),
        _c("dropout/padding_gqa", "dropout",
           m.key_padding([6, 4], side="right") & causal_tl, q_heads=4, kv_heads=2,
           dropout_rate=0.2),
        # -- softcap with bias and with ALiBi
        _c("softcap/bias_causal_bottom_right", "softcap", causal_br, softcap=2.5, bias=True,
           input_scale=3.0, q_len=5, k_len=7),
        _c("softcap/alibi_abs_bottom_right", "softcap", causal_br, softcap=3.0,
           alibi=Alibi(2, convention="abs", align=br), input_scale=3.0, q_len=4, k_len=7),
        _c("alibi/softcap_signed_kv_cache", "alibi", m.sliding_window(3, 0, align=4),
           softcap=4.0, alibi=Alibi(2, convention="signed", align=4), input_scale=2.0,
           q_len=3, k_len=8),
        # -- MLA head dims with a KV-cache offset (the third MLA case, see mla_cases)
        _c("mla/prefill_192_128_kv_cache", "mla", m.causal(align=2), batch=1, q_heads=2,
           kv_heads=2, q_len=3, k_len=5, qk_dim=192, v_dim=128, extra_flags=("MLA",)),
    ]


#: Keys in a long row: float16 holds every integer up to 2048 exactly and no more, so a row of
#: 2048 keys is where a denominator accumulated in float16 starts losing whole terms.
LONG_ROW = 2048


def _long_row_cases() -> list[Case]:
    """Rows of :data:`LONG_ROW` keys or more in every dtype, kept small: one or two heads, D = 4
    and a few query rows. The first four spread typical (unit-variance) scores over 1024-2048
    keys; the ``flat`` ones put near-equal weights on 3500-4096 keys, where a softmax
    denominator accumulated in float16 stops growing at 2048 (its spacing there is 2) and is
    off by up to a factor 2; the ``masked_high`` ones give masked keys
    scores >= 2e4 above every kept key of the row (signed ALiBi with a steep explicit slope
    reaching into the masked future), so masking by adding a finite -1e4 instead of -inf puts
    the weight on a masked key."""
    tl, br = "top_left", "bottom_right"
    long = dict(batch=1, q_heads=1, kv_heads=1, qk_dim=4, v_dim=4, k_len=LONG_ROW)
    high = ("MaskedKeysScoreHigh",)
    return [
        _c("long_rows/causal_bottom_right_decode", "causal", m.causal(align=br),
           **{**long, "q_len": 2}, notes="two decode steps after a 2046-token cache"),
        _c("long_rows/window_kv_cache", "sliding_window", m.sliding_window(1023, 0, align=1500),
           **{**long, "q_len": 4}, extra_flags=("WindowConvention",),
           notes="FA window_size=(1023, 0) = HF sliding_window=1024, after 1500 cached tokens"),
        _c("long_rows/valid_lengths_bottom_right", "padding",
           m.key_padding([LONG_ROW, 1200], side="right")
           & m.causal(align=m.bottom_right(q_lengths=[3, 3], k_lengths=[LONG_ROW, 1200])),
           **{**long, "batch": 2, "q_len": 3}),
        _c("long_rows/mqa_explicit_scale", "gqa", None, **{**long, "q_heads": 2, "q_len": 2},
           scale=0.35),
        # near-flat scores over 4096 keys: a float16 running sum stops growing at 2048
        _c("long_rows/flat_causal_kv_cache_4096", "causal", m.causal(align=2 * LONG_ROW - 2),
           **{**long, "q_len": 2, "k_len": 2 * LONG_ROW}, input_scale=0.25,
           notes="two decode steps after 4094 cached tokens, weights near 1 on 4095-4096 "
                 "keys: a float16 denominator stalls at 2048"),
        _c("long_rows/flat_valid_lengths_sinks_4096", "sinks",
           m.key_padding([3500], side="right")
           & m.causal(align=m.bottom_right(q_lengths=[2], k_lengths=[3500])),
           **{**long, "q_len": 2, "k_len": 2 * LONG_ROW}, input_scale=0.25, sinks=True),
        _c("long_rows/flat_mqa_4096", "gqa", None,
           **{**long, "q_heads": 2, "q_len": 2, "k_len": 2 * LONG_ROW}, input_scale=0.25),
        _c("long_rows/alibi_signed_causal_masked_high", "alibi", m.causal(align=tl),
           **{**long, "q_len": 4}, alibi=Alibi([12.0], convention="signed", align=tl),
           extra_flags=high, notes="future keys score up to 12 * 2047 above the diagonal"),
        _c("long_rows/softcap_alibi_padding_masked_high", "softcap",
           m.key_padding([64], side="right") & m.causal(align=62), **{**long, "q_len": 2},
           softcap=5.0, alibi=Alibi([12.0], convention="signed", align=62), extra_flags=high,
           notes="a static 2048-slot KV cache holding 64 tokens, queries at positions 62 and "
                 "63: the empty slots 64..2047 score up to 2.4e4 above the kept keys"),
        _c("long_rows/window_kv_cache_masked_high", "sliding_window",
           m.sliding_window(255, 0, align=1000), **{**long, "q_len": 2},
           alibi=Alibi([24.0], convention="signed", align=1000), extra_flags=high,
           notes="a 256-key window after 1000 cached tokens; future keys score up to 2.5e4 "
                 "above it"),
    ]


# --- inference-time families (docs/spec.md 2.4.14-2.4.16, 3.8) ----------------------------------

def varlen_cases() -> list[Case]:
    """Packed sequences aligned per sequence: FlashAttention varlen and xformers BlockDiagonal*."""
    br, tl = "bottom_right", "top_left"
    fa = m.varlen_layout([0, 1, 4, 6], [0, 3, 5, 9])  # 1/3, 3/2 (empty rows), 2/4
    return [
        _c("varlen/fa_causal_per_sequence", "varlen", m.varlen(m.causal(align=br), fa),
           batch=1, q_len=6, k_len=9,
           notes="FlashAttention varlen causal: bottom-right per sequence; sequence 1 has 3 "
                 "queries and 2 keys, so its first row is empty"),
        _c("varlen/fa_window_per_sequence", "varlen",
           m.varlen(m.sliding_window(1, 0, align=br), fa), batch=1, q_len=6, k_len=9,
           notes="FlashAttention varlen window_size=(1, 0)"),
        _c("varlen/chunked_per_sequence", "varlen",
           m.varlen(m.chunked(2, align=br) & m.causal(align=br),
                    m.varlen_layout([0, 3, 7], [0, 5, 9])), batch=1, q_len=7, k_len=9,
           notes="Llama 4 chunks restart at every sequence (attention_chunk with varlen)"),
        _c("varlen/xformers_block_causal_top_left", "varlen",
           m.varlen(m.causal(align=tl), m.varlen_layout([0, 2, 5], [0, 4, 7])),
           batch=1, q_len=5, k_len=7, notes="xformers BlockDiagonalCausalMask"),
        _c("varlen/xformers_padded_keys_causal_offset", "varlen",
           m.varlen(m.causal(align=br), m.padded_keys_layout([1, 3, 2], 4, [3, 4, 2])),
           batch=1, q_len=6, k_len=12,
           notes="xformers BlockDiagonalCausalWithOffsetPaddedKeysMask"),
        _c("varlen/packed_self_chunked", "varlen",
           m.varlen(m.chunked(2, align=br) & m.causal(align=br),
                    m.varlen_layout([0, 3, 7, 9], [0, 3, 7, 9])), batch=1, q_len=9, k_len=9,
           notes="self-attention packing (cu_seqlens_q == cu_seqlens_k): chunks restart per "
                 "sequence (HF position_ids packing does the same)"),
        _c("varlen/seqused_k_gqa", "varlen",
           m.varlen(m.causal(align=br), m.varlen_layout([0, 2, 4], [0, 5, 10],
                                                        seqused_k=[3, 5])),
           batch=1, q_heads=4, kv_heads=2, q_len=4, k_len=10,
           notes="FlashAttention seqused_k: the tail of each key span is unused"),
    ]


def paged_cases() -> list[Case]:
    """Paged KV caches: decode and chunked prefill on logical positions."""
    br = "bottom_right"
    return [
        _c("paged/decode_partial_pages", "paged",
           m.varlen(m.causal(align=br), m.paged_layout([[2, 0, 5], [4, 1, 3]], 3, [7, 4],
                                                       num_pages=6)),
           q_len=1, k_len=18,
           notes="decode: batch 0 fills pages 2, 0 and one token of page 5; batch 1 fills "
                 "page 4 and one token of page 1 (last pages of one token)"),
        _c("paged/shared_prefix_chunked_prefill", "paged",
           m.varlen(m.causal(align=br), m.paged_layout([[0, 1, 2], [0, 1, 3]], 2, [6, 5],
                                                       num_pages=4)),
           q_len=2, k_len=8, q_heads=4, kv_heads=2,
           notes="two requests share prefix pages 0 and 1; chunked prefill of 2 tokens"),
        _c("paged/packed_prefill_gappy", "paged",
           m.varlen(m.causal(align=br), m.paged_layout([[3, 1, 0], [2, 4, 5]], 2, [5, 3],
                                                       num_pages=6, cu_seqlens_q=[0, 2, 5],
                                                       first_slots=[0, 1])),
           batch=1, q_len=5, k_len=12,
           notes="packed queries over pages (xformers PagedBlockDiagonal*): sequence 1 starts "
                 "at slot 1 of its first page; 3 queries over 3 keys"),
        _c("paged/window_sinks_decode", "paged",
           m.varlen(m.sliding_window(3, 0, align=br), m.paged_layout([[3, 1], [0, 2]], 4,
                                                                     [8, 5], num_pages=4)),
           q_len=1, k_len=16, sinks=True,
           notes="gpt-oss-style decode: a 4-key window and a sink, over pages"),
    ]


def tree_cases() -> list[Case]:
    """Speculative-decoding trees verified over a cached prefix."""
    return [
        _c("tree/medusa_prefix", "tree", m.tree([-1, 0, 0, 1, 1, 2], align="bottom_right"),
           batch=1, q_len=6, k_len=9,
           notes="6 draft tokens in a tree over 3 cached keys; siblings never see each other"),
        _c("tree/per_batch_prefix", "tree", m.tree([[-1, 0, 1, 0], [-1, -1, 0, 1]],
                                                   align=[2, 5]),
           q_len=4, k_len=9, notes="per-request trees and prefix lengths; slots past the "
                                    "tree are unused"),
        _c("tree/varlen_requests", "tree",
           m.varlen(m.tree([-1, 0, 0], align="bottom_right"),
                    m.varlen_layout([0, 3, 6], [0, 5, 9])), batch=1, q_len=6, k_len=9,
           notes="two packed requests verify the same tree over 2 and 1 cached keys"),
    ]


def split_kv_cases() -> list[Case]:
    """Partial results over key ranges (split-KV decode, cascade attention): each part is
    judged on its own (out and lse), and refmask.attention.merge combines them (spec 3.8)."""
    whole = m.causal(align="bottom_right") & m.sliding_window(5, 0, align="bottom_right")

    def part(start, stop):
        return whole & m.key_padding(stop, side="right") & ~m.key_padding(start, side="right")

    return [
        _c(f"split_kv/keys_{start}_{stop}", "split_kv", part(start, stop), q_len=3, k_len=10,
           extra_flags=("SplitKV",),
           notes=f"keys [{start}, {stop}) of a causal 6-key window: a split-KV partial, out "
                 "and lse judged like any case (tests/test_split_kv.py merges backends' "
                 "partials over shared inputs)")
        for start, stop in ((0, 4), (4, 7), (7, 10))
    ] + split_kv_merge_cases()


def split_kv_merge_cases() -> list[Case]:
    """Split-KV cases judged in two stages (``key_splits``): each partial against its golden
    partial, then the merge against the whole (conformance/split_kv.py, spec 3.8)."""
    br = "bottom_right"
    window = m.causal(align=br) & m.sliding_window(5, 0, align=br)
    return [
        _c("split_kv/merge_window_3_splits", "split_kv", window, q_heads=4, kv_heads=2,
           q_len=3, k_len=10, key_splits=((0, 4), (4, 8), (8, 10)),
           notes="a causal 6-key window over 3 key ranges: query 0 keeps nothing in [8, 10), "
                 "query 2 nothing in [0, 4) (empty partials in kept rows)"),
        _c("split_kv/merge_decode_large_magnitude", "split_kv",
           m.causal(align=br) & m.key_padding([12, 7], side="right"), q_heads=4, kv_heads=1,
           q_len=1, k_len=12, input_scale=30.0, key_splits=((0, 4), (4, 8), (8, 12)),
           notes="MQA decode with LSEs near 1e3 (past log(finfo(float64).max) = 709.8, so a "
                 "merge without max subtraction overflows in every dtype); batch 1 has 7 "
                 "valid keys, its partial [8, 12) is empty"),
        _c("split_kv/merge_padded_queries_softcap", "split_kv",
           m.causal(align=br) & m.query_padding([4, 2], side="right"), q_len=4, k_len=9,
           softcap=5.0, input_scale=2.0, key_splits=((0, 5), (5, 9)),
           notes="two ranges; batch 1's padded queries keep no key in any partial, so the "
                 "merged row is empty (out 0, lse -inf)"),
    ]


def mla_cases() -> list[Case]:
    """Head dims of MLA models (DeepSeek-V2/V3): prefill Dqk 192 / Dv 128, absorbed decode
    Dqk 576 / Dv 512 with one shared latent kv head."""
    br = "bottom_right"
    return [
        _c("mla/prefill_192_128", "mla", m.causal(align=br), batch=1, q_heads=2, kv_heads=2,
           q_len=3, k_len=5, qk_dim=192, v_dim=128, extra_flags=("MLA",)),
        _c("mla/decode_576_512", "mla", m.causal(align=br), batch=1, q_heads=2, kv_heads=1,
           q_len=1, k_len=4, qk_dim=576, v_dim=512, scale=192 ** -0.5, extra_flags=("MLA",),
           notes="absorbed MLA decode: scale is 1/sqrt(192) of the unabsorbed head, not "
                 "1/sqrt(576)"),
    ]


def catalog(dtypes: Sequence[str] = DTYPES) -> list[Case]:
    """Every base case in every dtype of ``dtypes`` (float64 first)."""
    unknown = set(dtypes) - set(DTYPES)
    if unknown:
        raise ValueError(f"catalog: dtypes must be among {list(DTYPES)}, got {sorted(unknown)}")
    return [replace(case, dtype=dtype) for dtype in dtypes for case in base_cases()]
