"""attention_vjp: float64 central differences, analytic identities, and torch autograd."""

from __future__ import annotations

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


def problem(seed=0, B=2, Hq=4, Hkv=2, Tq=3, Tk=4, Dqk=3, Dv=2):
    rng = np.random.default_rng(seed)
    arrays = {
        "q": rng.standard_normal((B, Hq, Tq, Dqk)),
        "k": rng.standard_normal((B, Hkv, Tk, Dqk)),
        "v": rng.standard_normal((B, Hkv, Tk, Dv)),
        "bias": rng.standard_normal((1, Hq, Tq, Tk)),
        "sinks": rng.standard_normal(Hq),
    }
    d_out = rng.standard_normal((B, Hq, Tq, Dv))
    d_lse = rng.standard_normal((B, Hq, Tq))
    return rng, arrays, d_out, d_lse


def loss(arrays, d_out, d_lse, **kwargs):
    """<dO, out> + <dlse, lse> over rows whose lse is finite (an empty row's -inf is constant)."""
    result = attention(arrays["q"], arrays["k"], arrays["v"], bias=arrays.get("bias"),
                       sinks=arrays.get("sinks"), **kwargs)
    finite = np.isfinite(result.lse)
    return np.sum(d_out * result.out) + np.sum(np.where(finite, d_lse * result.lse, 0.0))


def central_difference(arrays, name, d_out, d_lse, step=1e-6, **kwargs):
    grad = np.zeros_like(arrays[name])
    for index in np.ndindex(grad.shape):
        values = []
        for sign in (1.0, -1.0):
            shifted = arrays[name].copy()
            shifted[index] += sign * step
            values.append(loss(dict(arrays, **{name: shifted}), d_out, d_lse, **kwargs))
        grad[index] = (values[0] - values[1]) / (2 * step)
    return grad


FEATURES = {
    "plain": {},
    "softcap_gqa": {"softcap": 1.5},
    "mask_bottom_right_empty": {"mask": causal(align=-1), "empty_rows": "zero"},
    "unmasked_policy": {"mask": causal(align=-1), "empty_rows": "unmasked", "softcap": 2.0},
    "uniform_policy": {"mask": causal(align=-1), "empty_rows": "uniform"},
    "dropout_alibi_scale": {"scale": 0.6, "dropout_rate": 0.2,
                            "alibi": Alibi(4, convention="abs", align="bottom_right")},
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_against_central_differences(feature):
    rng, arrays, d_out, d_lse = problem(seed=len(feature))
    kwargs = dict(FEATURES[feature])
    if "dropout_rate" in kwargs:
        kwargs["dropout_keep"] = rng.random((2, 4, 3, 4)) < 0.75
    if kwargs.get("empty_rows") in ("uniform", "unmasked"):
        arrays.pop("sinks")  # a sink would leave no row empty
    grads = attention_vjp(arrays["q"], arrays["k"], arrays["v"], d_out, d_lse=d_lse,
                          bias=arrays["bias"], sinks=arrays.get("sinks"), **kwargs)
    found = {"q": grads.dq, "k": grads.dk, "v": grads.dv, "bias": grads.dbias,
             "sinks": grads.dsinks}
    for name in arrays:
        expected = central_difference(arrays, name, d_out, d_lse, **kwargs)
        np.testing.assert_allclose(found[name], expected, rtol=1e-6, atol=1e-8, err_msg=name)


def test_softmax_identities():
    """Exact consequences of softmax's form, checked on the analytic gradients:

    * shifting a whole row (all scores and the sink) by c adds c to lse and leaves out alone:
      sum_{b,i,j} dbias[b,h,i,j] + dsinks[h] = sum_{b,i} dlse[b,h,i];
    * scaling q by alpha is scaling the raw scores t (and so is scaling k):
      sum(q * dq) = sum(k * dk) = sum(t * dT);
    * out is linear in v: sum(v * dv) = sum(dO * out).
    """
    _, arrays, d_out, d_lse = problem(seed=5)
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    bias = np.zeros((2, 4, 3, 4))
    kwargs = dict(mask=causal(align=1), sinks=arrays["sinks"], softcap=2.5)
    grads = attention_vjp(q, k, v, d_out, d_lse=d_lse, bias=bias, **kwargs)
    np.testing.assert_allclose(grads.dbias.sum(axis=(0, 2, 3)) + grads.dsinks,
                               d_lse.sum(axis=(0, 2)), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.sum(q * grads.dq), np.sum(k * grads.dk), rtol=1e-13)
    out = attention(q, k, v, bias=bias, **kwargs).out
    np.testing.assert_allclose(np.sum(v * grads.dv), np.sum(d_out * out), rtol=1e-13)


def test_row_dot_identity_and_gqa_sum():
    """D_i = <dO_i, o_i> = sum_j p_ij dP_ij; a kv head's gradient is the sum over its group."""
    _, arrays, d_out, _ = problem(seed=6, Hq=4, Hkv=2)
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    grads = attention_vjp(q, k, v, d_out)
    k_rep, v_rep = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
    full = attention_vjp(q, k_rep, v_rep, d_out)
    np.testing.assert_allclose(grads.dk, full.dk.reshape(2, 2, 2, 4, 3).sum(axis=2), rtol=1e-14)
    np.testing.assert_allclose(grads.dv, full.dv.reshape(2, 2, 2, 4, 2).sum(axis=2), rtol=1e-14)
    np.testing.assert_allclose(grads.dq, full.dq, rtol=1e-14)
    result = attention(q, k, v, return_probs=True)
    d_probs = d_out @ np.swapaxes(v_rep, -1, -2)
    np.testing.assert_allclose(np.sum(d_out * result.out, axis=-1),
                               np.sum(result.probs * d_probs, axis=-1), rtol=1e-13)


def test_bthd_gradients_are_transposed_bhtd_gradients():
    _, arrays, d_out, d_lse = problem(seed=7)
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    t = (0, 2, 1, 3)
    a = attention_vjp(q, k, v, d_out, d_lse=d_lse, softcap=3.0)
    b = attention_vjp(q.transpose(t), k.transpose(t), v.transpose(t), d_out.transpose(t),
                      d_lse=d_lse, softcap=3.0, layout="BTHD")
    for x, y in [(a.dq, b.dq), (a.dk, b.dk), (a.dv, b.dv)]:
        np.testing.assert_array_equal(x.transpose(t), y)


def test_nan_policy_gradients():
    """"nan": the NaN weights of an empty row reach dv; masked scores still get dS = 0, so
    dq of the empty row is 0 and dk is untouched by it."""
    _, arrays, d_out, _ = problem(seed=8, Tq=4, Tk=2)
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    grads = attention_vjp(q, k, v, d_out, mask=causal(align=-2), empty_rows="nan")
    assert np.all(np.isnan(grads.dv))
    np.testing.assert_array_equal(grads.dq[:, :, :2], 0.0)
    assert np.all(np.isfinite(grads.dq)) and np.all(np.isfinite(grads.dk))


def test_against_torch_autograd_of_the_same_forward():
    """The forward is plain array-API code, so torch autograd can differentiate it directly;
    the hand-written vjp must agree."""
    torch = pytest.importorskip("torch")
    rng, arrays, d_out, d_lse = problem(seed=9)
    keep = rng.random((2, 4, 3, 4)) < 0.8
    keep[..., 0] = True  # no empty rows: autograd of a masked max has no defined convention
    tensors = {name: torch.tensor(x, requires_grad=True) for name, x in arrays.items()}
    kwargs = dict(softcap=2.0, alibi=Alibi(4, convention="signed", align=2), scale=0.9)
    result = attention(tensors["q"], tensors["k"], tensors["v"], bias=tensors["bias"],
                       sinks=tensors["sinks"], mask=torch.tensor(keep), **kwargs)
    total = (result.out * torch.tensor(d_out)).sum() + (result.lse * torch.tensor(d_lse)).sum()
    total.backward()
    grads = attention_vjp(arrays["q"], arrays["k"], arrays["v"], d_out, d_lse=d_lse,
                          bias=arrays["bias"], sinks=arrays["sinks"], mask=keep, **kwargs)
    found = {"q": grads.dq, "k": grads.dk, "v": grads.dv, "bias": grads.dbias,
             "sinks": grads.dsinks}
    for name, tensor in tensors.items():
        np.testing.assert_allclose(found[name], tensor.grad.numpy(), rtol=1e-12, atol=1e-14,
                                   err_msg=name)
