"""Catalog families for outputs and score features beyond out and lse (issue 14): the score
stages as outputs (``scores/``, spec 3.9, ONNX ``qk_matmul_output`` modes 0-3) and the
per-query temperature of Llama 4 (``temperature/``, spec 3.2.3).

Kept in a module of their own so the catalog's other families merge without conflicts;
:func:`refmask.conformance.cases.base_cases` appends them.

What a masked pair holds in each stage (spec 3.9, the ONNX operator text of opset 23/24):
``raw`` and ``softcapped`` hold the pair's score as if it were kept (the mask is not applied
yet), ``masked`` holds -inf, ``probs`` holds 0; an empty row's probabilities follow the case's
``empty_rows`` policy (ONNX >= 1.23: a zero row, the "zero" policy).
"""

from __future__ import annotations

import numpy as np

from refmask import masks as m
from refmask.attention import SCORE_STAGES, Alibi
from refmask.case import Case

#: Every stage of spec 3.9, in order (ONNX modes 0, 1, 2, 3).
ALL_STAGES = tuple(SCORE_STAGES)


def _c(name, family, mask, **fields) -> Case:
    return Case(name=name, family=family, mask=mask, **fields)


def scores_cases() -> list[Case]:
    """Score stages as outputs: softcap under a mask, a bias, ALiBi, GQA, empty rows, BTHD, a
    sink, a KV-cache offset, and one case asking for the probabilities only. Every case keeps
    the default empty-row policy "zero" (ONNX >= 1.23); the probabilities of the other
    policies are tested on the exact engine (tests/test_outputs_cases.py) and reached by the
    runner as named conventions."""
    br, tl = "bottom_right", "top_left"
    every = {"scores": ALL_STAGES}
    return [
        _c("scores/causal_softcap", "scores", m.causal(align=br), q_len=4, k_len=6,
           softcap=2.0, input_scale=2.0, **every,
           notes="softcap under a causal mask: raw and softcapped hold masked pairs' scores, "
                 "masked holds -inf there, probs 0"),
        _c("scores/bias_padding_empty_rows", "scores", m.key_padding([4, 0], side="right"),
           q_len=3, k_len=5, bias=True, **every,
           notes="batch 1 has no valid key: its rows are empty, probs a zero row (ONNX >= "
                 "1.23), masked all -inf"),
        _c("scores/alibi_window_gqa_scale", "scores", m.sliding_window(2, 0, align=br),
           q_heads=4, kv_heads=2, q_len=5, k_len=5, scale=0.5,
           alibi=Alibi([0.5, 0.25, 0.125, 0.0625], convention="abs", align=br), **every,
           notes="ALiBi enters masked and probs only; GQA h // 2"),
        _c("scores/softcap_bias_bthd_top_left", "scores", m.causal(align=tl), q_len=5,
           k_len=3, layout="BTHD", softcap=3.0, bias=True, input_scale=2.0, **every,
           notes="BTHD (ONNX 3-D inputs); Tq > Tk top-left: rows 3 and 4 see every key"),
        _c("scores/explicit_empty_row", "scores",
           m.explicit(np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=bool)),
           q_len=3, k_len=4, **every,
           notes="an all-masked row: probs a zero row, masked all -inf (a backend with "
                 "NaN rows, nn.MultiheadAttention need_weights, is the policy empty_rows=nan "
                 "for the probabilities too)"),
        _c("scores/kv_cache_left_padding_empty_row", "scores",
           m.causal(align=2) & m.key_padding([5, 2], side="left"), q_len=3, k_len=5, **every,
           notes="KV-cache offset 2; batch 1 keeps keys 3 and 4 only (left padding), so its "
                 "query 0 (position 2) keeps none"),
        _c("scores/probs_only_causal_padding", "scores",
           m.causal(align=tl) & m.key_padding([5, 3], side="right"), q_len=5, k_len=5,
           bias=True, scores=("probs",),
           notes="only the probabilities (what nn.MultiheadAttention need_weights=True, "
                 "average_attn_weights=False returns per head)"),
        _c("scores/sinks_window", "scores", m.sliding_window(1, 0, align=br), q_len=4,
           k_len=4, sinks=True, **every,
           notes="a sink's share is not a column: each probs row sums to 1 - p_sink"),
    ]


#: Llama 4 temperatures ``log1p(floor((p + 1) / floor_scale)) * attn_scale + 1`` of the
#: positions named, as float64 literals (tests/test_outputs_cases.py checks them with mpmath).
TAU_POSITIONS_3_TO_6 = (1.549306144334055, 1.549306144334055, 1.6931471805599454,
                        1.6931471805599454)      # floor_scale 2, attn_scale 0.5
TAU_POSITIONS_10_TO_12 = (1.109861228866811, 1.138629436111989, 1.138629436111989)
#                                                 floor_scale 4, attn_scale 0.1
TAU_POSITIONS_5_TO_7 = (1.4864775372638284, 1.519860385419959, 1.549306144334055)
#                                                 floor_scale 1, attn_scale 0.25


def temperature_cases() -> list[Case]:
    """Per-query temperature (Llama 4 NoPE layers): q rows scaled before the product."""
    br = "bottom_right"
    return [
        _c("temperature/llama4_causal", "temperature", m.causal(align=br), q_len=4, k_len=7,
           query_scale=TAU_POSITIONS_3_TO_6, input_scale=2.0,
           notes="queries at absolute positions 3..6 (floor_scale 2, attn_scale 0.5)"),
        _c("temperature/chunked_kv_cache_gqa", "temperature",
           m.chunked(4, align=10) & m.causal(align=10), q_heads=4, kv_heads=2, q_len=3,
           k_len=13, query_scale=TAU_POSITIONS_10_TO_12,
           notes="Llama 4 chunked layer shape after 10 cached tokens (floor_scale 4, "
                 "attn_scale 0.1)"),
        _c("temperature/softcap_scores", "temperature", m.causal(align=br), q_len=3, k_len=5,
           softcap=2.0, input_scale=2.0, query_scale=TAU_POSITIONS_5_TO_7, scores=ALL_STAGES,
           notes="the temperature scales q before the product: raw scores are "
                 "scale * <tau_i q_i, k_j> (floor_scale 1, attn_scale 0.25)"),
    ]


def varlen_alibi_cases() -> list[Case]:
    """ALiBi on positions that restart per packed sequence (FlashAttention varlen
    ``alibi_slopes``, spec 3.2.1): family ``varlen``."""
    br = "bottom_right"
    fa = m.varlen_layout([0, 1, 4, 6], [0, 3, 5, 9])  # 1/3, 3/2 (an empty row), 2/4
    padded = m.padded_keys_layout([1, 3, 2], 4, [3, 4, 2])
    return [
        _c("varlen/alibi_abs_per_sequence", "varlen", m.varlen(m.causal(align=br), fa),
           batch=1, q_len=6, k_len=9,
           alibi=Alibi([0.5, 0.25], convention="abs", align=br, layout=fa),
           notes="FlashAttention varlen with alibi_slopes: -slope * |i + k_len[n] - q_len[n] "
                 "- j| on local indices of each sequence"),
        _c("varlen/alibi_abs_window_ahead_per_sequence", "varlen",
           m.varlen(m.sliding_window(1, 1, align=br), fa), batch=1, q_len=6, k_len=9,
           softcap=3.0, alibi=Alibi([1.0, 0.125], convention="abs", align=br, layout=fa),
           notes="a window reaching one key ahead: |pq - pk| is not a per-row shift of the "
                 "global distance, so global positions change out, not only lse"),
        _c("varlen/alibi_signed_padded_keys_gqa", "varlen",
           m.varlen(m.causal(align=br), padded), batch=1, q_heads=4, kv_heads=2, q_len=6,
           k_len=12, alibi=Alibi(4, convention="signed", align=br, layout=padded),
           notes="xformers-style padded key spans of 4 with Press slopes for 4 heads; signed "
                 "ALiBi on local positions differs from global ones by a per-row constant "
                 "(lse shows it)"),
    ]
