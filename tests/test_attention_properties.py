"""Hypothesis properties of the reference attention (small shapes, modest example counts)."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from refmask.attention import attention
from refmask.masks import causal, explicit

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def problems(draw):
    kv_heads = draw(st.integers(1, 2))
    q_heads = kv_heads * draw(st.integers(1, 3))
    shape = dict(B=draw(st.integers(1, 2)), Hq=q_heads, Hkv=kv_heads,
                 Tq=draw(st.integers(1, 4)), Tk=draw(st.integers(1, 4)),
                 Dqk=draw(st.integers(1, 3)), Dv=draw(st.integers(1, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spread = draw(st.sampled_from([0.5, 2.0, 6.0]))
    q = spread * rng.standard_normal((shape["B"], q_heads, shape["Tq"], shape["Dqk"]))
    k = spread * rng.standard_normal((shape["B"], kv_heads, shape["Tk"], shape["Dqk"]))
    v = rng.standard_normal((shape["B"], kv_heads, shape["Tk"], shape["Dv"]))
    keep = rng.random((shape["B"], q_heads, shape["Tq"], shape["Tk"])) < draw(
        st.sampled_from([0.3, 0.7, 1.0]))
    softcap = draw(st.sampled_from([None, 1.0, 5.0]))
    policy = draw(st.sampled_from(["zero", "nan", "uniform", "unmasked"]))
    return dict(q=q, k=k, v=v, keep=keep, softcap=softcap, policy=policy, rng=rng)


def _run(p, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return attention(p["q"], p["k"], p["v"], mask=p["keep"], softcap=p["softcap"],
                         empty_rows=p["policy"], return_probs=True, **kwargs)


@SETTINGS
@given(problems())
def test_rows_are_convex_combinations(p):
    """Non-empty rows: weights >= 0 summing to 1, so min_j v <= o <= max_j v (kept j)."""
    result = _run(p)
    empty = ~p["keep"].any(axis=-1)
    probs = result.probs
    assert np.all(probs[~empty] >= 0)
    np.testing.assert_allclose(probs.sum(-1)[~empty], 1.0, rtol=1e-14)
    assert np.all(probs[~p["keep"] & ~empty[..., None]] == 0)
    v = np.repeat(p["v"], p["q"].shape[1] // p["v"].shape[1], axis=1)
    low = np.min(np.where(p["keep"][..., None], v[:, :, None], np.inf), axis=3)
    high = np.max(np.where(p["keep"][..., None], v[:, :, None], -np.inf), axis=3)
    slack = 1e-13 * (1 + np.abs(v).max())
    out = result.out
    assert np.all((out >= low - slack)[~empty]) and np.all((out <= high + slack)[~empty])
    assert np.all(result.lse[empty] == -np.inf) and np.all(np.isfinite(result.lse[~empty]))


@SETTINGS
@given(problems())
def test_gqa_equals_mha_with_repeated_kv_heads(p):
    group = p["q"].shape[1] // p["k"].shape[1]
    repeated = dict(p, k=np.repeat(p["k"], group, axis=1), v=np.repeat(p["v"], group, axis=1))
    a, b = _run(p), _run(repeated)
    np.testing.assert_array_equal(a.out, b.out)
    np.testing.assert_array_equal(a.lse, b.lse)


@SETTINGS
@given(problems(), st.floats(-30, 30))
def test_a_row_constant_in_the_bias_shifts_lse_only(p, shift):
    rng = p["rng"]
    bias = rng.standard_normal(p["keep"].shape)
    per_row = rng.uniform(-1, 1, size=p["keep"].shape[:-1] + (1,)) * shift
    a, b = _run(p, bias=bias), _run(p, bias=bias + per_row)
    empty = ~p["keep"].any(axis=-1)
    # out is invariant in every policy: "unmasked" empty rows take the softmax of their
    # unmasked scores, which the same row shift leaves unchanged too.
    np.testing.assert_allclose(a.out, b.out, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(b.lse[~empty], a.lse[~empty] + per_row[..., 0][~empty],
                               rtol=1e-12, atol=1e-11)


@SETTINGS
@given(problems(), st.sampled_from(["top_left", "bottom_right", 2, -1]))
def test_mask_objects_equal_their_dense_arrays(p, align):
    import array_api_compat.numpy as xp

    B, H, Tq, _ = p["q"].shape
    Tk = p["k"].shape[2]
    mask = causal(align=align) & explicit(p["keep"])
    dense = np.asarray(mask.materialize(B, H, Tq, Tk, xp=xp))
    a = _run(dict(p, keep=mask))
    b = _run(dict(p, keep=dense))
    np.testing.assert_array_equal(a.out, b.out)
    np.testing.assert_array_equal(a.lse, b.lse)


@SETTINGS
@given(problems())
def test_layouts_agree(p):
    t = (0, 2, 1, 3)
    a = _run(p)
    b = _run(dict(p, q=p["q"].transpose(t), k=p["k"].transpose(t), v=p["v"].transpose(t)),
             layout="BTHD")
    np.testing.assert_array_equal(a.out.transpose(t), b.out)
    np.testing.assert_array_equal(a.lse, b.lse)
