"""attention_scores: the four stages (ONNX qk_matmul_output modes 0-3) against hand-written
NumPy and against the ONNX reference implementation of Attention, with past_key/past_value."""

from __future__ import annotations

import numpy as np
import pytest

from refmask import masks as m
from refmask.attention import attention
from refmask.attention.scores import ONNX_QK_MATMUL_OUTPUT_MODES, SCORE_STAGES, attention_scores

RNG = np.random.default_rng(5)
Q = RNG.standard_normal((2, 4, 3, 8)) * 2
K = RNG.standard_normal((2, 2, 5, 8)) * 2
V = RNG.standard_normal((2, 2, 5, 6))
BIAS = RNG.standard_normal((2, 4, 3, 5))
MASK = m.causal(align="bottom_right") & m.sliding_window(2, 0, align="bottom_right")


def by_hand(stage, softcap=2.5):
    k = np.repeat(K, 2, axis=1)  # GQA: query head h reads kv head h // 2
    t = Q @ np.swapaxes(k, -1, -2) / np.sqrt(8)
    if stage == "raw":
        return t
    c = softcap * np.tanh(t / softcap)
    if stage == "softcapped":
        return c
    keep = np.asarray(MASK.materialize(2, 4, 3, 5))
    s = np.where(keep, c + BIAS, -np.inf)
    if stage == "masked":
        return s
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


@pytest.mark.parametrize("stage", SCORE_STAGES)
def test_each_stage_by_hand(stage):
    got = attention_scores(Q, K, stage=stage, mask=MASK, softcap=2.5, bias=BIAS)
    np.testing.assert_allclose(got, by_hand(stage), rtol=1e-13, atol=1e-14)


def test_probs_are_the_weights_of_attention():
    probs = attention_scores(Q, K, stage="probs", mask=MASK, softcap=2.5, bias=BIAS)
    result = attention(Q, K, V, mask=MASK, softcap=2.5, bias=BIAS, return_probs=True)
    np.testing.assert_array_equal(probs, result.probs)


def test_empty_rows_follow_the_policy_in_the_probs_stage():
    mask = m.causal(align="bottom_right")  # Tq=3 > Tk=2: row 0 is empty
    q, k = Q[:, :, :3], K[:, :, :2]
    zero = attention_scores(q, k, stage="probs", mask=mask)
    nan = attention_scores(q, k, stage="probs", mask=mask, empty_rows="nan")
    assert np.all(zero[:, :, 0] == 0) and np.all(np.isnan(nan[:, :, 0]))
    masked = attention_scores(q, k, stage="masked", mask=mask)
    assert np.all(masked[:, :, 0] == -np.inf)


def test_stage_is_required_and_checked():
    with pytest.raises(TypeError):
        attention_scores(Q, K)  # noqa
    with pytest.raises(ValueError, match="stage"):
        attention_scores(Q, K, stage="logits")


def _onnx_reference(mode, softcap, past):
    onnx_attention = pytest.importorskip("onnx.reference.ops.op_attention")
    q, k, v = Q.astype(np.float64), K.astype(np.float64), V.astype(np.float64)
    past_key = past_value = None
    if past:
        past_key, past_value = k[:, :, :2], v[:, :, :2]
        k, v = k[:, :, 2:], v[:, :, 2:]
    y, present_key, present_value, qk = onnx_attention._compute_attention(
        q, k, v, past_key=past_key, past_value=past_value, is_causal=True, softcap=softcap,
        qk_matmul_output_mode=mode)
    return y, present_key, present_value, qk


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("past", [False, True])
def test_onnx_qk_matmul_output_modes(mode, past):
    # ONNX Attention aligns causal at offset = past length (top-left without a cache) and
    # concatenates past_key/past_value in front of the new keys (present_*).
    softcap = None if mode == 0 else 3.0  # onnx 1.23's reference returns mode 0 after softcap
    y, present_key, present_value, qk = _onnx_reference(mode, softcap, past)
    np.testing.assert_array_equal(present_key, K)
    np.testing.assert_array_equal(present_value, V)
    mask = m.causal(align=2 if past else "top_left")
    stage = ONNX_QK_MATMUL_OUTPUT_MODES[mode]
    got = attention_scores(Q, K, stage=stage, mask=mask, softcap=softcap)
    np.testing.assert_allclose(got, qk, rtol=1e-12, atol=1e-13)
    out = attention(Q, K, V, mask=mask, softcap=softcap).out
    np.testing.assert_allclose(out, y, rtol=1e-12, atol=1e-13)
