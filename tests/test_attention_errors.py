"""Bad input is a clear error naming the function and the argument; NaN/inf propagate."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from refmask.attention import Alibi, attention, attention_vjp
from refmask.attention._inputs import prepare
from refmask.attention.backward import backward_pass
from refmask.attention.forward import forward_pass
from refmask.masks import causal


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


RNG = np.random.default_rng(0)
Q = RNG.standard_normal((2, 4, 3, 5))
K = RNG.standard_normal((2, 2, 6, 5))
V = RNG.standard_normal((2, 2, 6, 7))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(q=Q[0]), ValueError, r"attention: q must be 4-D"),
    (dict(q=Q.tolist()), TypeError, r"attention: q must be an array"),
    (dict(k=K[:1]), ValueError, r"attention: k has batch size 1 but q has 2"),
    (dict(v=V[:1]), ValueError, r"attention: v has batch size 1"),
    (dict(k=K[..., :4]), ValueError, r"attention: k has head dim 4 but q has 5"),
    (dict(v=V[:, :, :5]), ValueError, r"attention: v has \(heads, length\)"),
    (dict(k=np.repeat(K, 3, axis=1)[:, :3], v=np.repeat(V, 3, axis=1)[:, :3]), ValueError,
     r"q has 4 heads, which is not a multiple of the 3 heads of k"),
    (dict(q=Q.astype(np.int64)), TypeError, r"attention: q must have a real floating dtype"),
    (dict(v=V.astype(np.int32)), TypeError, r"attention: v must have a real floating dtype"),
    (dict(k=K.astype(np.float32)), TypeError, r"attention: k has dtype float32 but q has"),
    (dict(softcap=0.0), ValueError, r"attention: softcap must be a finite real number > 0"),
    (dict(softcap=-1.0), ValueError, r"softcap"),
    (dict(softcap=np.inf), ValueError, r"softcap"),
    (dict(softcap="2"), TypeError, r"softcap"),
    (dict(scale=np.nan), ValueError, r"attention: scale must be a finite real number"),
    (dict(scale=True), TypeError, r"scale"),
    (dict(mask=np.ones((3, 5), dtype=bool)), ValueError,
     r"attention: mask has shape \(3, 5\), which does not broadcast to \(B, Hq, Tq, Tk\)"),
    (dict(mask=np.ones((2, 2, 3, 6), dtype=bool)), ValueError, r"mask has shape"),
    (dict(mask=np.ones((3, 6))), TypeError, r"attention: mask must be a bool array"),
    (dict(mask=np.zeros((3, 6), dtype=np.int8)), TypeError, r"mask must be a bool array"),
    (dict(bias=np.zeros((3, 5))), ValueError, r"attention: bias has shape"),
    (dict(bias=np.zeros((3, 6), dtype=np.float32)), TypeError, r"attention: bias has dtype"),
    (dict(bias=np.zeros((3, 6), dtype=bool)), TypeError, r"bias must have a real floating"),
    (dict(sinks=np.zeros(2)), ValueError, r"attention: sinks must have shape \(Hq,\) = \(4,\)"),
    (dict(sinks=np.zeros(4, dtype=np.int64)), TypeError, r"attention: sinks must have a real"),
    (dict(dropout_keep=np.ones((3, 6), dtype=bool)), ValueError,
     r"attention: dropout_rate is required"),
    (dict(dropout_rate=0.1), ValueError, r"attention: dropout_keep is required"),
    (dict(dropout_keep=np.ones((3, 6), dtype=bool), dropout_rate=1.0), ValueError,
     r"attention: dropout_rate must be a real number in \[0, 1\)"),
    (dict(dropout_keep=np.ones((3, 6)), dropout_rate=0.1), TypeError,
     r"attention: dropout_keep must be a bool array"),
    (dict(empty_rows="mean"), ValueError, r"attention: empty_rows must be one of"),
    (dict(empty_rows=None), ValueError, r"empty_rows"),
    (dict(layout="BSHD"), ValueError, r"attention: layout must be one of"),
    (dict(alibi=np.ones(4)), TypeError, r"attention: alibi must be a refmask Alibi"),
    (dict(alibi=Alibi(8, convention="abs", align="top_left")), ValueError,
     r"attention: alibi has slopes for 8 heads but there are 4 query heads"),
    (dict(alibi=Alibi(4, convention="abs", align=[0, 1, 2])), ValueError,
     r"attention: alibi is defined per batch for 3 batches"),
    (dict(return_probs=1), TypeError, r"attention: return_probs must be a bool"),
])
def test_bad_arguments(kwargs, error, match):
    arguments = dict(q=Q, k=K, v=V)
    arguments.update(kwargs)
    q, k, v = arguments.pop("q"), arguments.pop("k"), arguments.pop("v")
    with pytest.raises(error, match=match):
        attention(q, k, v, **arguments)


def test_bthd_shapes_are_reported_in_the_callers_layout():
    t = (0, 2, 1, 3)
    with pytest.raises(ValueError, match=r"k has head dim 4 but q has 5.*k \(2, 6, 2, 4\)"):
        attention(Q.transpose(t), K[..., :4].transpose(t), V.transpose(t), layout="BTHD")


def test_mixed_namespaces():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="attention: q, k and v must come from one array"):
        attention(torch.asarray(Q), K, V)
    with pytest.raises(TypeError, match="attention: mask must come from the same array"):
        attention(torch.asarray(Q), torch.asarray(K), torch.asarray(V),
                  mask=np.ones((3, 6), dtype=bool))


def test_mask_object_with_a_wrong_result():
    class Broken:
        def materialize(self, batch, heads, q_len, k_len, *, xp=None, device=None):
            return xp.ones((batch, heads, q_len, k_len + 1), dtype=xp.bool)

    with pytest.raises(ValueError, match=r"attention: mask.materialize returned shape"):
        attention(Q, K, V, mask=Broken())


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(d_out=np.zeros((2, 4, 3, 6))), ValueError, r"attention_vjp: d_out must have the shape"),
    (dict(d_out=np.zeros((2, 4, 3, 7), dtype=np.float32)), TypeError,
     r"attention_vjp: d_out has dtype float32"),
    (dict(d_lse=np.zeros((2, 4, 3, 1))), ValueError, r"attention_vjp: d_lse must have the shape"),
    (dict(softcap=-2.0), ValueError, r"attention_vjp: softcap"),
])
def test_bad_vjp_arguments(kwargs, error, match):
    arguments = dict(d_out=np.zeros((2, 4, 3, 7)))
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        attention_vjp(Q, K, V, arguments.pop("d_out"), **arguments)


def test_nan_and_inf_inputs_propagate_without_crashing():
    q = Q.copy()
    q[0, 0, 0, 0] = np.nan       # poisons row (0, 0, 0) only
    k = K.copy()
    k[1, 1, 2, 0] = np.inf       # batch 1, kv head 1: scores +-inf (or NaN from 0 * inf)
    result = attention(q, k, V)
    assert np.all(np.isnan(result.out[0, 0, 0])) and np.isnan(result.lse[0, 0, 0])
    clean = attention(Q, K, V)
    np.testing.assert_array_equal(result.out[0, 1:], clean.out[0, 1:])
    np.testing.assert_array_equal(result.out[1, :2], clean.out[1, :2])
    grads = attention_vjp(q, k, V, np.ones((2, 4, 3, 7)))
    assert np.isnan(grads.dq[0, 0, 0]).all()
    v = V.copy()
    v[0, 0, 0, 0] = np.inf
    assert np.isinf(attention(Q, K, v).out[0, 0, :, 0]).all()


def test_negative_infinite_bias_masks_like_the_mask():
    """An additive 0/-inf mask (SDPA float masks) equals the bool mask, empty rows included."""
    keep = RNG.random((2, 4, 3, 6)) < 0.4
    keep[0, 0, 0] = False
    additive = np.where(keep, 0.0, -np.inf)
    for policy in ("zero", "uniform", "nan"):
        a = attention(Q, K, V, mask=keep, empty_rows=policy)
        b = attention(Q, K, V, bias=additive, empty_rows=policy)
        np.testing.assert_array_equal(a.lse, b.lse)
        np.testing.assert_allclose(a.out, b.out, rtol=1e-15, atol=0)


@pytest.mark.parametrize("policy", ["zero", "nan", "uniform", "unmasked"])
def test_empty_rows_raise_no_floating_point_exception(policy):
    """The forward and backward cores run under np.errstate(all="raise") with empty rows and
    sinks: the where-guards alone avoid -inf - (-inf) and log(0) (no errstate needed)."""
    sinks = np.array([0.5, -np.inf, 1.0, 0.0])  # a -inf sink leaves head 1's rows empty
    inp = prepare("attention", Q, K, V, mask=causal(align=-2), scale=None, softcap=2.0,
                  bias=None, alibi=Alibi(4, convention="abs", align=-2), sinks=sinks,
                  dropout_keep=None, dropout_rate=None, empty_rows=policy, layout="BHTD")
    with np.errstate(all="raise"):
        state = forward_pass(inp)
        backward_pass(state, np.ones((2, 4, 3, 7)), np.ones((2, 4, 3, 1)))
    assert np.all(state.lse[:, 1, :2] == -np.inf) and np.all(np.isfinite(state.lse[:, 0]))
