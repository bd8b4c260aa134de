"""The exact path in query blocks (refmask.attention.forward.EXACT_BLOCK_SCORES).

(a) blocks of 1, 2 and 3 query rows give the results of one block, for every feature that
    touches the query axis (masks with alignment offsets, bias with and without a query
    axis, ALiBi, dropout, sinks, softcap, GQA, every empty-row policy, return_probs);
(b) Mask.materialize(rows=) and alibi_bias(rows=) are the rows of the full arrays, and bad
    ``rows`` are refused naming the argument;
(c) memory: a T = 8192 exact forward needs far less than one dense T x T float64 array.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from refmask import masks as m
from refmask.attention import Alibi, attention, attention_vjp
from refmask.attention import forward as forward_module
from refmask.attention.alibi import alibi_bias


def _problem(seed=0, batch=2, q_heads=4, kv_heads=2, q_len=7, k_len=5, dim=3):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, q_heads, q_len, dim))
    k = rng.standard_normal((batch, kv_heads, k_len, dim))
    v = rng.standard_normal((batch, kv_heads, k_len, dim))
    d_out = rng.standard_normal((batch, q_heads, q_len, dim))
    d_lse = rng.standard_normal((batch, q_heads, q_len))
    return rng, q, k, v, d_out, d_lse


def _features(rng, batch=2, q_heads=4, q_len=7, k_len=5):
    """Keyword sets that each touch the query axis in a different way."""
    doc_ids = np.array([[0, 0, 1, 1, 1, 2, 2], [0, 1, 1, 1, 2, 2, 2]])
    return {
        "bottom-right causal": dict(mask=m.causal(align="bottom_right")),
        "window + key padding": dict(mask=m.sliding_window(1, 0, align="top_left")
                                     & m.key_padding([4, 2], side="right")),
        "documents, uniform empty rows": dict(mask=m.documents(doc_ids, doc_ids[:, :k_len]),
                                          empty_rows="uniform"),
        "bool array with a query axis": dict(mask=rng.random((1, q_heads, q_len, k_len)) < 0.6,
                                             empty_rows="uniform"),
        "full bias, softcap": dict(bias=rng.standard_normal((batch, q_heads, q_len, k_len)),
                                   softcap=1.5),
        "bias broadcast along queries": dict(bias=rng.standard_normal((q_heads, 1, k_len))),
        "alibi with offsets": dict(alibi=Alibi([0.5, 0.25, 0.125, 0.0625], convention="abs",
                                               align="bottom_right")),
        "sinks, unmasked empty rows": dict(sinks=rng.standard_normal(q_heads),
                                           mask=m.causal(align="top_left"),
                                           empty_rows="unmasked"),
        "dropout": dict(dropout_keep=rng.random((batch, q_heads, q_len, k_len)) < 0.8,
                        dropout_rate=0.2),
    }


def _assert_close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b))
    finite = np.isfinite(b)
    assert np.array_equal(a[~finite], b[~finite])
    scale = max(1.0, float(np.abs(b[finite]).max(initial=0.0)))
    assert np.abs(a[finite] - b[finite]).max(initial=0.0) <= 1e-13 * scale


@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize("name", list(_features(np.random.default_rng(0))))
def test_query_blocks_give_the_one_block_results(monkeypatch, rows, name):
    rng, q, k, v, d_out, d_lse = _problem()
    kwargs = _features(rng)[name]
    whole = attention(q, k, v, return_probs=True, path="exact", **kwargs)
    whole_g = attention_vjp(q, k, v, d_out, d_lse=d_lse, path="exact", **kwargs)
    batch, heads, _, k_len = 2, 4, 7, 5
    monkeypatch.setattr(forward_module, "EXACT_BLOCK_SCORES", rows * batch * heads * k_len)
    blocked = attention(q, k, v, return_probs=True, path="exact", **kwargs)
    blocked_g = attention_vjp(q, k, v, d_out, d_lse=d_lse, path="exact", **kwargs)
    assert len(forward_module.query_blocks(_inputs_of(q, k, v))) == -(-7 // rows)
    for name_ in ("out", "lse", "probs"):
        _assert_close(getattr(blocked, name_), getattr(whole, name_))
    for name_ in ("dq", "dk", "dv", "dbias", "dsinks"):
        expected = getattr(whole_g, name_)
        if expected is None:
            assert getattr(blocked_g, name_) is None
        else:
            _assert_close(getattr(blocked_g, name_), expected)


def _inputs_of(q, k, v):
    from refmask.attention._inputs import prepare

    return prepare("attention", q, k, v, mask=None, scale=None, softcap=None, bias=None,
                   alibi=None, sinks=None, dropout_keep=None, dropout_rate=None,
                   empty_rows="zero", layout="BHTD")


@pytest.mark.parametrize("mask", [m.causal(align="bottom_right"),
                                  m.sliding_window(2, 1, align=3),
                                  m.documents([[0, 0, 1, 1, 1, 2]], [[0, 1, 1, 2, 2, 2, 2, 2]])])
@pytest.mark.parametrize("rows", [(0, 6), (0, 0), (2, 5), (5, 6)])
def test_materialize_rows_are_rows_of_the_full_array(mask, rows):
    full = mask.materialize(1, 2, 6, 8)
    part = mask.materialize(1, 2, 6, 8, rows=rows)
    assert part.shape == (1, 2, rows[1] - rows[0], 8)
    assert np.array_equal(part, full[:, :, rows[0]:rows[1]])


def test_alibi_rows_are_rows_of_the_full_bias():
    alibi = Alibi([0.5, 0.25], convention="signed", align="bottom_right")
    args = ("attention", "alibi", alibi, 1, 2, 6, 9)
    full = alibi_bias(*args, xp=np, dtype=np.float64, device=None)
    part = alibi_bias(*args, xp=np, dtype=np.float64, device=None, rows=(1, 4))
    assert np.array_equal(part, full[:, :, 1:4])


@pytest.mark.parametrize("rows, error", [((3, 2), ValueError), ((0, 7), ValueError),
                                         ((-1, 2), ValueError), ((0,), TypeError),
                                         ((0.0, 2), TypeError)])
def test_bad_rows_are_refused(rows, error):
    with pytest.raises(error, match="rows"):
        m.causal(align="top_left").materialize(1, 1, 6, 6, rows=rows)


def test_exact_forward_memory_is_o_block_times_tk():
    """T = 8192, H = 1: one dense T x T float64 array is 512 MiB (the unblocked path held ~6
    of them); blocked, the traced peak stays below 200 MB."""
    length, dim = 8192, 8
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((1, 1, length, dim)) for _ in range(3))
    mask = m.causal(align="top_left")
    tracemalloc.start()
    try:
        result = attention(q, k, v, mask=mask, path="exact")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200e6, peak
    # rows 4000..4007 from a small exact call of their own (row i sees keys 0..i)
    rows = slice(4000, 4008)
    local = attention(q[:, :, rows], k[:, :, :4008], v[:, :, :4008],
                      mask=m.causal(align="bottom_right"), path="exact")
    _assert_close(result.out[:, :, rows], local.out)
