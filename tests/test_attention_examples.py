"""Tiny attention examples whose expected numbers are worked out by hand in the comments."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from refmask.attention import Alibi, attention, attention_vjp
from refmask.masks import causal


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def bhtd(x):
    """(T, D) -> (1, 1, T, D)."""
    return np.asarray(x, dtype=np.float64)[None, None]


# q = 0 makes every score 0, so the output is the mean of the kept value rows.
V3 = bhtd([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
Q0 = np.zeros((1, 1, 2, 2))
K0 = np.zeros((1, 1, 3, 2))
KEEP_2x3 = np.array([[False, False, False],   # row 0 keeps nothing: an empty row
                     [True, False, True]])    # row 1 keeps keys 0 and 2


@pytest.mark.parametrize("policy, row0", [
    ("zero", [0.0, 0.0]),          # SDPA >= 2.5, flex, FlashAttention 3, ONNX >= 1.23
    ("nan", [np.nan, np.nan]),     # plain softmax: 0 / 0
    ("uniform", [3.0, 4.0]),       # JAX/Flax/Keras: mean of all three v rows
    ("unmasked", [3.0, 4.0]),      # tf-keras: softmax of the unmasked scores (all 0): the mean
])
def test_mask_with_one_empty_row(policy, row0):
    result = attention(Q0, K0, V3, mask=KEEP_2x3, empty_rows=policy, return_probs=True)
    np.testing.assert_array_equal(result.out[0, 0, 0], row0)
    np.testing.assert_array_equal(result.out[0, 0, 1], [3.0, 4.0])  # mean of [1,2] and [5,6]
    assert result.lse[0, 0, 0] == -np.inf                            # every policy
    assert result.lse[0, 0, 1] == pytest.approx(math.log(2.0), abs=1e-15)  # log(e^0 + e^0)
    np.testing.assert_array_equal(result.probs[0, 0, 1], [0.5, 0.0, 0.5])


def test_sink_joins_the_denominator_without_a_value():
    # sink = log 2: row 1 has terms e^0 + e^0 + e^(log 2) = 4, so p = [1/4, 0, 1/4] and
    # out = ([1,2] + [5,6]) / 4 = [1.5, 2]; lse = log 4. Row 0 keeps no key: lse = sink, out = 0.
    sinks = np.array([math.log(2.0)])
    result = attention(Q0, K0, V3, mask=KEEP_2x3, sinks=sinks, empty_rows="nan")
    np.testing.assert_allclose(result.out[0, 0], [[0.0, 0.0], [1.5, 2.0]], rtol=1e-15)
    np.testing.assert_allclose(result.lse[0, 0], [math.log(2.0), math.log(4.0)], rtol=1e-15)


def test_scores_by_hand():
    # Scores [0, ln 3] give p = [1/4, 3/4]; out = 4/4 + 3*8/4 = 7; lse = log(1 + 3) = log 4.
    q = bhtd([[1.0]])
    k = bhtd([[0.0], [math.log(3.0)]])
    v = bhtd([[4.0], [8.0]])
    result = attention(q, k, v, scale=1.0)
    assert result.out[0, 0, 0, 0] == pytest.approx(7.0, rel=1e-15)
    assert result.lse[0, 0, 0] == pytest.approx(math.log(4.0), rel=1e-15)
    # The default scale is 1/sqrt(Dqk): with Dqk = 4 and q.k = 2 ln 3 the score is ln 3 again.
    q4 = bhtd([[1.0, 1.0, 0.0, 0.0]])
    k4 = bhtd([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), math.log(3.0), 5.0, -5.0]])
    assert attention(q4, k4, v).out[0, 0, 0, 0] == pytest.approx(7.0, rel=1e-15)


def test_softcap_before_bias():
    # cap = 2, t = [0, 2 atanh(ln(3)/2)]: c = 2 tanh(t/2) = [0, ln 3] -> out = 7 as above.
    q = bhtd([[1.0]])
    k = bhtd([[0.0], [2.0 * math.atanh(math.log(3.0) / 2.0)]])
    v = bhtd([[4.0], [8.0]])
    assert attention(q, k, v, scale=1.0, softcap=2.0).out[0, 0, 0, 0] == pytest.approx(7.0)
    # With t = 0 the bias ln 3 is added after the cap, untouched: out = 7. Capping after the
    # bias would give 2 tanh(ln(3)/2) = 1 instead of ln 3, i.e. p = [1/(1+e), e/(1+e)].
    bias = np.array([0.0, math.log(3.0)])
    out = attention(q, np.zeros((1, 1, 2, 1)), v, softcap=2.0, bias=bias).out[0, 0, 0, 0]
    assert out == pytest.approx(7.0, rel=1e-15)


def test_gqa_4_to_2_uses_h_floordiv_group():
    # Hq = 4, Hkv = 2: query heads 0, 1 read kv head 0 (v = 1), heads 2, 3 read kv head 1
    # (v = 2). The classic bug h % Hkv would give [1, 2, 1, 2].
    q = np.zeros((1, 4, 1, 1))
    k = np.zeros((1, 2, 3, 1))
    v = np.concatenate([np.ones((1, 1, 3, 1)), 2.0 * np.ones((1, 1, 3, 1))], axis=1)
    np.testing.assert_array_equal(attention(q, k, v).out[0, :, 0, 0], [1.0, 1.0, 2.0, 2.0])


@pytest.mark.parametrize("convention, align, expected", [
    # slope ln 2, Tq = 1, Tk = 3, v = [7, 14, 21]. bottom_right puts the query at pq = 2:
    # abs: -ln2 * [2, 1, 0] -> weights [1/4, 1/2, 1] / (7/4) -> out = (7 + 28 + 84) / 7 = 17.
    ("abs", "bottom_right", 17.0),
    ("signed", "bottom_right", 17.0),  # ln2 * [-2, -1, 0]: the same numbers (keys before q)
    # top_left puts the query at pq = 0: abs -ln2 * [0, 1, 2] -> [1, 1/2, 1/4] -> 77/7 = 11;
    ("abs", "top_left", 11.0),
    # signed ln2 * [0, 1, 2] -> [1, 2, 4] -> (7 + 28 + 84) / 7 = 17: the conventions differ.
    ("signed", "top_left", 17.0),
])
def test_alibi_by_hand(convention, align, expected):
    alibi = Alibi([math.log(2.0)], convention=convention, align=align)
    v = bhtd([[7.0], [14.0], [21.0]])
    out = attention(np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 3, 1)), v, alibi=alibi).out
    assert out[0, 0, 0, 0] == pytest.approx(expected, rel=1e-14)


def test_dropout_by_hand():
    # p = [1/4, 3/4] as above; keep = [True, False], rate 1/2: a = [1/2, 0] -> out = 2.
    q = bhtd([[1.0]])
    k = bhtd([[0.0], [math.log(3.0)]])
    v = bhtd([[4.0], [8.0]])
    keep = np.array([True, False])
    result = attention(q, k, v, scale=1.0, dropout_keep=keep, dropout_rate=0.5,
                       return_probs=True)
    assert result.out[0, 0, 0, 0] == pytest.approx(2.0, rel=1e-15)
    assert result.lse[0, 0, 0] == pytest.approx(math.log(4.0), rel=1e-15)  # unchanged
    np.testing.assert_allclose(result.probs[0, 0, 0], [0.5, 0.0], rtol=1e-15)


def test_kv_cache_offset_is_the_mask_alignment():
    # One new query after 2 cached tokens (Tk = 3): causal(align=2) lets it see all 3 keys;
    # top_left would let it see key 0 only. attention itself adds no offset.
    v = bhtd([[3.0], [6.0], [9.0]])
    q, k = np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 3, 1))
    assert attention(q, k, v, mask=causal(align=2)).out[0, 0, 0, 0] == pytest.approx(6.0)
    assert attention(q, k, v, mask=causal(align="top_left")).out[0, 0, 0, 0] == 3.0
    assert attention(q, k, v, mask=causal(align="bottom_right")).out[0, 0, 0, 0] == (
        pytest.approx(6.0))


def test_the_dynamic_mask_article_example():
    # The 5x5 keep matrix from the "dynamic masking" article: its first row keeps nothing.
    keep = np.ones((5, 5), dtype=bool)
    keep[0] = False
    v = bhtd(np.arange(10.0).reshape(5, 2))
    q, k = np.zeros((1, 1, 5, 2)), np.zeros((1, 1, 5, 2))
    out = attention(q, k, v, mask=keep).out[0, 0]
    np.testing.assert_array_equal(out[0], [0.0, 0.0])
    np.testing.assert_allclose(out[1:], np.broadcast_to([4.0, 5.0], (4, 2)), rtol=1e-15)


def test_the_articles_mistakes_are_not_the_reference():
    """Masking by multiplying the scores by 0/1 keeps weight exp(0) on masked keys."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 1, 4, 3)) for _ in range(3))
    keep = np.tril(np.ones((4, 4), dtype=bool))
    scores = q[0, 0] @ k[0, 0].T / math.sqrt(3)
    multiplied = np.exp(scores * keep)
    wrong = (multiplied / multiplied.sum(-1, keepdims=True)) @ v[0, 0]
    right = attention(q, k, v, mask=keep).out[0, 0]
    assert not np.allclose(wrong[:3], right[:3])
    np.testing.assert_allclose(wrong[3], right[3], rtol=1e-14)  # the full last row agrees


def test_vjp_by_hand():
    # One query, two keys, scores [0, ln 3], p = [1/4, 3/4], v = [4, 8], dO = 1:
    # dV = p = [1/4, 3/4]; dP = v = [4, 8]; D = o = 7; dS = p (dP - D) = [-3/4, 3/4];
    # dq = scale * sum_j dS_j k_j = 3/4 ln 3; dk = dS * q = [-3/4, 3/4].
    q = bhtd([[1.0]])
    k = bhtd([[0.0], [math.log(3.0)]])
    v = bhtd([[4.0], [8.0]])
    grads = attention_vjp(q, k, v, np.ones((1, 1, 1, 1)), scale=1.0, bias=np.zeros(2))
    np.testing.assert_allclose(grads.dv[0, 0, :, 0], [0.25, 0.75], rtol=1e-15)
    np.testing.assert_allclose(grads.dq[0, 0, 0, 0], 0.75 * math.log(3.0), rtol=1e-15)
    np.testing.assert_allclose(grads.dk[0, 0, :, 0], [-0.75, 0.75], rtol=1e-15)
    np.testing.assert_allclose(grads.dbias, [-0.75, 0.75], rtol=1e-15)
    assert grads.dsinks is None


@pytest.mark.parametrize("policy, dv_row0", [("zero", 0.0), ("uniform", 1.0 / 3.0)])
def test_empty_row_gradients(policy, dv_row0):
    # Row 0 of KEEP_2x3 is empty. "zero": it contributes nothing. "uniform": p = 1/3 for all
    # keys regardless of the scores, so it adds dO/3 to every dv row and nothing to dq, dk.
    d_out = np.zeros((1, 1, 2, 2))
    d_out[0, 0, 0] = 1.0
    grads = attention_vjp(Q0 + 0.5, K0 + 0.25, V3, d_out, mask=KEEP_2x3, empty_rows=policy,
                          bias=np.zeros((2, 3)))
    np.testing.assert_allclose(grads.dv[0, 0], np.full((3, 2), dv_row0), rtol=1e-15)
    np.testing.assert_array_equal(grads.dq, 0.0)
    np.testing.assert_array_equal(grads.dk, 0.0)
    np.testing.assert_array_equal(grads.dbias, 0.0)


def test_zero_queries_and_zero_value_dims():
    q, k = np.ones((2, 2, 0, 3)), np.ones((2, 2, 4, 3))
    result = attention(q, k, np.ones((2, 2, 4, 5)), mask=causal(align="bottom_right"))
    assert result.out.shape == (2, 2, 0, 5) and result.lse.shape == (2, 2, 0)
    result = attention(np.ones((2, 2, 3, 3)), k, np.ones((2, 2, 4, 0)))
    assert result.out.shape == (2, 2, 3, 0)
    np.testing.assert_allclose(result.lse, np.log(4.0) + 3 / np.sqrt(3))


@pytest.mark.parametrize("policy, expected", [
    ("zero", 0.0), ("nan", np.nan), ("uniform", np.nan), ("unmasked", np.nan)])
def test_no_keys_at_all(policy, expected):
    # Tk = 0: every row is empty and its weighted sum has no terms. "zero" keeps the empty
    # sum 0; the mean (uniform) or softmax (unmasked) of no values is 0/0 = NaN.
    q, k, v = np.ones((1, 2, 3, 4)), np.ones((1, 1, 0, 4)), np.ones((1, 1, 0, 2))
    result = attention(q, k, v, empty_rows=policy)
    np.testing.assert_array_equal(result.out, np.full((1, 2, 3, 2), expected))
    np.testing.assert_array_equal(result.lse, -np.inf)
    grads = attention_vjp(q, k, v, np.ones((1, 2, 3, 2)), empty_rows=policy)
    np.testing.assert_array_equal(grads.dq, 0.0)
    assert grads.dk.shape == (1, 1, 0, 4) and grads.dv.shape == (1, 1, 0, 2)
    # A sink is a term: no row is empty, lse = sink, out = 0 under every policy.
    with_sink = attention(q, k, v, sinks=np.array([0.5, -1.0]), empty_rows=policy)
    np.testing.assert_array_equal(with_sink.out, 0.0)
    np.testing.assert_array_equal(with_sink.lse[0, :, 0], [0.5, -1.0])
