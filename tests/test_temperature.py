"""Per-position query temperature (Llama 4): the HF formula restated, the scores it gives,
gradients by finite differences, and the argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refmask import masks as m
from refmask.attention import attention, attention_scores, attention_vjp, llama4_query_scale


def test_llama4_formula_by_hand():
    # HF Llama4TextAttention: log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1
    positions = np.array([0, 8190, 8191, 16383, 100000])
    got = llama4_query_scale(positions, floor_scale=8192, attn_scale=0.1)
    want = [1.0, 1.0, 1 + 0.1 * math.log(2), 1 + 0.1 * math.log(3), 1 + 0.1 * math.log(13)]
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_scores_are_scaled_per_query_row():
    rng = np.random.default_rng(6)
    q, k = rng.standard_normal((2, 2, 3, 4)), rng.standard_normal((2, 2, 5, 4))
    tau = np.array([[1.0, 1.5, 2.0], [0.5, 1.0, 3.0]])
    got = attention_scores(q, k, stage="raw", query_scale=tau)
    want = tau[:, None, :, None] * (q @ np.swapaxes(k, -1, -2)) / 2.0
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_temperature_equals_prescaled_queries_in_both_layouts_and_paths():
    rng = np.random.default_rng(7)
    q = rng.standard_normal((1, 2, 64, 8))
    k, v = rng.standard_normal((1, 2, 80, 8)), rng.standard_normal((1, 2, 80, 8))
    tau = llama4_query_scale(16 + np.arange(64), floor_scale=8, attn_scale=0.1)
    mask = m.causal(align="bottom_right")
    want = attention(q * tau[None, None, :, None], k, v, mask=mask, path="exact")
    for path in ("exact", "fast"):
        got = attention(q, k, v, mask=mask, query_scale=tau, path=path)
        np.testing.assert_allclose(got.out, want.out, rtol=1e-12, atol=1e-13)
    bthd = attention(np.swapaxes(q, 1, 2), np.swapaxes(k, 1, 2), np.swapaxes(v, 1, 2),
                     mask=mask, query_scale=tau, layout="BTHD")
    np.testing.assert_allclose(np.swapaxes(bthd.out, 1, 2), want.out, rtol=1e-13)


def test_gradient_of_q_by_central_differences():
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal((1, 1, 3, 4)) for _ in range(3))
    d_out = rng.standard_normal((1, 1, 3, 4))
    tau = np.array([0.7, 1.3, 2.1])
    grads = attention_vjp(q, k, v, d_out, query_scale=tau, mask=m.causal(align="top_left"))

    def loss(x):
        out = attention(x, k, v, query_scale=tau, mask=m.causal(align="top_left")).out
        return float(np.sum(out * d_out))

    h = 1e-6
    numeric = np.zeros_like(q)
    for index in np.ndindex(q.shape):
        step = np.zeros_like(q)
        step[index] = h
        numeric[index] = (loss(q + step) - loss(q - step)) / (2 * h)
    np.testing.assert_allclose(grads.dq, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("tau,error,message", [
    (np.ones(4), ValueError, r"\(Tq,\) or \(B, Tq\)"),
    (np.ones(3, np.float32), TypeError, "dtype"),
    ([1.0, 1.0, 1.0], TypeError, "namespace"),
])
def test_bad_query_scale(tau, error, message):
    q = np.zeros((1, 1, 3, 2))
    with pytest.raises(error, match=message):
        attention(q, q, q, query_scale=tau)


def test_llama4_arguments_are_required_and_checked():
    with pytest.raises(TypeError):
        llama4_query_scale([0, 1])  # noqa
    with pytest.raises(ValueError, match="floor_scale"):
        llama4_query_scale([0], floor_scale=0, attn_scale=0.1)
    with pytest.raises(ValueError, match="positions"):
        llama4_query_scale([-1], floor_scale=8, attn_scale=0.1)
