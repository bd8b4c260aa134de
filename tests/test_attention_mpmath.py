"""refmask.attention against an independent mpmath computation at 50 significant digits.

The oracle below restates the spec's formulas with plain loops over mpmath numbers; it shares
no code with refmask. Every float64 output must lie within the forward error bound stated in
docs/spec.md ("Attention: error model"):

    |o_hat - o|_id     <= u * (2 (Dqk + 12) A_i + 2 Tk + 12) * sum_j a_ij |v_jd|
    |lse_hat - lse|_i  <= u * (2 (Dqk + 12) A_i + 2 Tk + 12 + |lse_i|)
    A_i = max(max_{j weighted} scale sum_d |q_id k_jd| + |bias_ij| + |alibi_ij|, |sink_h|)

Gradients are checked against mpmath central differences (h = 1e-20 at 50 digits, exact to
~1e-30) with a normwise relative tolerance of 1e-12.
"""

from __future__ import annotations

import itertools
import math
import warnings

import mpmath
import numpy as np
import pytest

from refmask.attention import Alibi, attention, attention_vjp
from refmask.masks import causal

mp = mpmath.mp
U = 2.0**-53


@pytest.fixture(autouse=True)
def _precise_and_strict():
    with mpmath.workdps(50), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --------------------------------------------------------------------------------------------
# The independent oracle
# --------------------------------------------------------------------------------------------
def press_slopes(n: int) -> list:
    """ALiBi slopes restated from the paper's code: powers of 2**(-8/n) for power-of-two n,
    else the closest power of two's slopes followed by every other slope of twice as many."""
    def power_of_two(m):
        start = mp.mpf(2) ** (-mp.mpf(8) / m)
        return [start ** (e + 1) for e in range(m)]

    if n & (n - 1) == 0:
        return power_of_two(n)
    closest = 2 ** int(math.floor(math.log2(n)))
    return power_of_two(closest) + press_slopes(2 * closest)[0::2][: n - closest]


def oracle(q, k, v, *, keep=None, scale=None, softcap=None, bias=None, alibi=None, sinks=None,
           drop=None, rate=0.0, empty_rows="zero"):
    """Exact attention in (B, H, T, D) order. keep/drop: full (B, Hq, Tq, Tk) bool or None;
    bias: full (B, Hq, Tq, Tk) or None; alibi: (slopes (B, Hq), convention, offsets (B,)).

    Returns (out, lse, weights, A) as NumPy object arrays of mpf (A: the bound's A_i)."""
    B, Hq, Tq, D = q.shape
    Hkv, Tk, Dv = k.shape[1], k.shape[2], v.shape[3]
    scale = 1 / mp.sqrt(D) if scale is None else mp.mpf(scale)
    out = np.empty((B, Hq, Tq, Dv), dtype=object)
    lse = np.empty((B, Hq, Tq), dtype=object)
    weights = np.empty((B, Hq, Tq, Tk), dtype=object)
    size = np.zeros((B, Hq, Tq))
    for b, h, i in itertools.product(range(B), range(Hq), range(Tq)):
        g = h // (Hq // Hkv)
        scores, magnitude = [], []
        for j in range(Tk):
            t = scale * mp.fsum(mp.mpf(q[b, h, i, d]) * mp.mpf(k[b, g, j, d]) for d in range(D))
            size_j = float(abs(scale) * sum(abs(q[b, h, i, d] * k[b, g, j, d])
                                            for d in range(D)))
            s = t if softcap is None else softcap * mp.tanh(t / softcap)
            if bias is not None:
                s += mp.mpf(bias[b, h, i, j])
                size_j += abs(float(bias[b, h, i, j]))
            if alibi is not None:
                slopes, convention, offsets = alibi
                pq, pk = i + offsets[b], j
                distance = -abs(pq - pk) if convention == "abs" else pk - pq
                s += slopes[b][h] * distance
                size_j += abs(float(slopes[b][h] * distance))
            scores.append(s)
            magnitude.append(size_j)
        kept = [j for j in range(Tk) if keep is None or keep[b, h, i, j]]
        terms = [mp.exp(scores[j]) for j in kept]
        if sinks is not None:
            terms.append(mp.exp(mp.mpf(sinks[h])))
        if terms:
            total = mp.fsum(terms)
            lse[b, h, i] = mp.log(total)
            p = [mp.exp(scores[j]) / total if j in kept else mp.mpf(0) for j in range(Tk)]
            weighted = kept
        else:
            lse[b, h, i] = mp.mpf("-inf")
            weighted = list(range(Tk))
            if empty_rows == "zero":
                p, weighted = [mp.mpf(0)] * Tk, []
            elif empty_rows == "nan":
                p = [mp.nan] * Tk
            elif empty_rows == "uniform":
                p, weighted = [mp.mpf(1) / Tk] * Tk, []
            else:
                total = mp.fsum(mp.exp(s) for s in scores)
                p = [mp.exp(s) / total for s in scores]
        if drop is not None:
            p = [p[j] * (1 if drop[b, h, i, j] else 0) / (1 - mp.mpf(rate)) for j in range(Tk)]
        weights[b, h, i] = p
        for d in range(Dv):
            out[b, h, i, d] = mp.fsum(p[j] * mp.mpf(v[b, g, j, d]) for j in range(Tk))
        sink_size = 0.0 if sinks is None else abs(float(sinks[h]))
        size[b, h, i] = max([magnitude[j] for j in weighted] + [sink_size])
    return out, lse, weights, size


def weighted_abs_v(weights, v, q_heads):
    """sum_j |a_ij| |v_gj d| (NaN weights count as 0), shape (B, Hq, Tq, Dv)."""
    v_abs = np.abs(np.repeat(v, q_heads // v.shape[1], axis=1))
    w = np.vectorize(lambda x: 0.0 if mp.isnan(x) else abs(float(x)), otypes=[float])(weights)
    return w @ v_abs


def check_against_oracle(result, exact, q, v, *, layout="BHTD"):
    """Every element within the bound; NaN and -inf exactly where the oracle has them."""
    out_exact, lse_exact, weights, size = exact
    out = np.asarray(result.out)
    if layout == "BTHD":
        out = out.transpose(0, 2, 1, 3)
    lse = np.asarray(result.lse)
    D_qk, Tk = q.shape[3], v.shape[2]
    coefficient = 2 * (D_qk + 12) * size + 2 * Tk + 12  # (B, Hq, Tq)
    weighted_v = weighted_abs_v(weights, v, q.shape[1])
    out_bound = U * coefficient[..., None] * weighted_v
    for index in np.ndindex(out.shape):
        exact_value = out_exact[index]
        if mp.isnan(exact_value):
            assert np.isnan(out[index]), index
            continue
        error = abs(mp.mpf(float(out[index])) - exact_value)
        assert error <= out_bound[index], (index, float(error), out_bound[index])
    for index in np.ndindex(lse.shape):
        exact_value = lse_exact[index]
        if mp.isinf(exact_value):
            assert lse[index] == -np.inf, index
            continue
        error = abs(mp.mpf(float(lse[index])) - exact_value)
        bound = U * (coefficient[index] + abs(float(exact_value)))
        assert error <= bound, (index, float(error), bound)
    relative = max(
        (float(abs(mp.mpf(float(out[ix])) - out_exact[ix])) / max(weighted_v[ix], 1e-300)
         for ix in np.ndindex(out.shape) if not mp.isnan(out_exact[ix])),
        default=0.0,
    )
    assert relative <= 1e-14  # the headline number for these small cases


# --------------------------------------------------------------------------------------------
# Cases: one per feature, then everything together
# --------------------------------------------------------------------------------------------
def inputs(seed, B=2, Hq=2, Hkv=2, Tq=3, Tk=4, Dqk=3, Dv=3, spread=1.0):
    rng = np.random.default_rng(seed)
    q = spread * rng.standard_normal((B, Hq, Tq, Dqk))
    k = spread * rng.standard_normal((B, Hkv, Tk, Dqk))
    v = rng.standard_normal((B, Hkv, Tk, Dv))
    return rng, q, k, v


def causal_keep(B, H, Tq, Tk, offsets):
    """keep iff j <= i + offset(b), built by hand (not by refmask)."""
    i = np.arange(Tq)[None, None, :, None]
    j = np.arange(Tk)[None, None, None, :]
    offset = np.asarray(offsets)[:, None, None, None]
    return np.broadcast_to(j <= i + offset, (B, H, Tq, Tk))


def test_plain_default_scale():
    _, q, k, v = inputs(0, spread=1.5)
    check_against_oracle(attention(q, k, v), oracle(q, k, v), q, v)


def test_explicit_scale_and_different_head_dims():
    _, q, k, v = inputs(1, Dqk=5, Dv=2)
    check_against_oracle(attention(q, k, v, scale=0.8), oracle(q, k, v, scale=0.8), q, v)


@pytest.mark.parametrize("Hq, Hkv", [(4, 2), (3, 1), (6, 3)])
def test_gqa_and_mqa(Hq, Hkv):
    _, q, k, v = inputs(2, Hq=Hq, Hkv=Hkv)
    check_against_oracle(attention(q, k, v), oracle(q, k, v), q, v)


def test_softcap():
    _, q, k, v = inputs(3, spread=3.0)
    check_against_oracle(attention(q, k, v, softcap=2.5), oracle(q, k, v, softcap=2.5), q, v)


@pytest.mark.parametrize("bias_shape", [(2, 2, 3, 4), (1, 2, 1, 4), (3, 4), (4,)])
def test_bias_broadcast(bias_shape):
    rng, q, k, v = inputs(4)
    bias = 2.0 * rng.standard_normal(bias_shape)
    full = np.broadcast_to(bias, (2, 2, 3, 4))
    check_against_oracle(attention(q, k, v, bias=bias), oracle(q, k, v, bias=full), q, v)


@pytest.mark.parametrize("convention", ["abs", "signed"])
@pytest.mark.parametrize("Hq, align, offsets", [(6, "bottom_right", [1, 1]), (12, 3, [3, 3]),
                                                (5, [0, 2], [0, 2])])
def test_alibi(convention, Hq, align, offsets):
    _, q, k, v = inputs(5, Hq=Hq, Hkv=1, Tq=3, Tk=4)
    slopes = press_slopes(Hq)
    alibi = Alibi(Hq, convention=convention, align=align)
    exact = oracle(q, k, v, alibi=([slopes, slopes], convention, offsets))
    check_against_oracle(attention(q, k, v, alibi=alibi), exact, q, v)


def test_alibi_per_batch_slopes():
    rng, q, k, v = inputs(6)
    slopes = rng.uniform(0.1, 1.0, size=(2, 2))
    alibi = Alibi(slopes, convention="abs", align="top_left")
    exact = oracle(q, k, v, alibi=(slopes.tolist(), "abs", [0, 0]))
    check_against_oracle(attention(q, k, v, alibi=alibi), exact, q, v)


def test_sinks():
    rng, q, k, v = inputs(7)
    sinks = np.array([0.3, 4.0])
    check_against_oracle(attention(q, k, v, sinks=sinks), oracle(q, k, v, sinks=sinks), q, v)


def test_sinks_with_empty_rows():
    """With a sink no row is empty: lse = sink, out = 0 for a row without kept keys."""
    _, q, k, v = inputs(8, Tq=4, Tk=2)
    sinks = np.array([-0.5, 1.25])
    keep = causal_keep(2, 2, 4, 2, [-2, -2])
    result = attention(q, k, v, sinks=sinks, mask=causal(align="bottom_right"), empty_rows="nan")
    check_against_oracle(result, oracle(q, k, v, keep=keep, sinks=sinks), q, v)
    np.testing.assert_array_equal(result.lse[:, :, 0], np.broadcast_to(sinks, (2, 2)))
    np.testing.assert_array_equal(result.out[:, :, :2], 0.0)


def test_dropout():
    rng, q, k, v = inputs(9)
    drop = rng.random((2, 2, 3, 4)) < 0.7
    result = attention(q, k, v, dropout_keep=drop, dropout_rate=0.3)
    check_against_oracle(result, oracle(q, k, v, drop=drop, rate=0.3), q, v)
    np.testing.assert_array_equal(result.lse, attention(q, k, v).lse)  # lse ignores dropout


@pytest.mark.parametrize("align, offsets", [(2, [2, 2]), ("top_left", [0, 0]),
                                            ([0, 3], [0, 3])])
def test_kv_cache_offsets_via_mask_alignment(align, offsets):
    _, q, k, v = inputs(10, Tq=2, Tk=5)
    keep = causal_keep(2, 2, 2, 5, offsets)
    result = attention(q, k, v, mask=causal(align=align))
    check_against_oracle(result, oracle(q, k, v, keep=keep), q, v)


@pytest.mark.parametrize("policy", ["zero", "nan", "uniform", "unmasked"])
def test_empty_row_policies(policy):
    """Tq > Tk with bottom-right causal: the first Tq - Tk rows keep nothing."""
    _, q, k, v = inputs(11, Tq=5, Tk=3)
    keep = causal_keep(2, 2, 5, 3, [-2, -2])
    result = attention(q, k, v, mask=causal(align="bottom_right"), empty_rows=policy)
    check_against_oracle(result, oracle(q, k, v, keep=keep, empty_rows=policy), q, v)


def test_bthd_layout():
    _, q, k, v = inputs(12, Hq=4, Hkv=2)
    t = (0, 2, 1, 3)
    result = attention(q.transpose(t), k.transpose(t), v.transpose(t), layout="BTHD")
    check_against_oracle(result, oracle(q, k, v), q, v, layout="BTHD")


@pytest.mark.parametrize("policy", ["zero", "uniform", "unmasked"])
def test_everything_together(policy):
    rng, q, k, v = inputs(13, Hq=6, Hkv=2, Tq=4, Tk=3, Dqk=4, Dv=2, spread=2.0)
    bias = rng.standard_normal((1, 6, 4, 3))
    drop = rng.random((2, 6, 4, 3)) < 0.8
    alibi = Alibi(6, convention="signed", align="bottom_right")
    keep = causal_keep(2, 6, 4, 3, [-1, -1])
    slopes = press_slopes(6)
    kwargs = dict(scale=0.7, softcap=3.0, dropout_rate=0.25)
    result = attention(q, k, v, mask=causal(align="bottom_right"), bias=bias, alibi=alibi,
                       dropout_keep=drop, empty_rows=policy, **kwargs)
    exact = oracle(q, k, v, keep=keep, bias=np.broadcast_to(bias, (2, 6, 4, 3)),
                   alibi=([slopes, slopes], "signed", [-1, -1]), drop=drop,
                   empty_rows=policy, rate=0.25, scale=0.7, softcap=3.0)
    check_against_oracle(result, exact, q, v)


def test_bound_grows_with_score_size_but_holds():
    """Large scores (|s| ~ 50): the bound's A_i term, not Tk, dominates; it still holds."""
    _, q, k, v = inputs(14, spread=4.0, Dqk=4)
    check_against_oracle(attention(q, k, v), oracle(q, k, v), q, v)


# --------------------------------------------------------------------------------------------
# Gradients against mpmath central differences
# --------------------------------------------------------------------------------------------
def oracle_loss(q, k, v, d_out, d_lse, **kwargs):
    out, lse, _, _ = oracle(q, k, v, **kwargs)
    total = mp.fsum(o * mp.mpf(g) for o, g in zip(out.ravel(), d_out.ravel(), strict=True))
    finite = [(x, g) for x, g in zip(lse.ravel(), d_lse.ravel(), strict=True) if not mp.isinf(x)]
    return total + mp.fsum(x * mp.mpf(g) for x, g in finite)  # lse = -inf is a constant


def oracle_gradient(name, arrays, d_out, d_lse, kwargs):
    """d loss / d arrays[name] by central differences at 50 digits (h = 1e-20)."""
    h = mp.mpf("1e-20")
    target = arrays[name]
    grad = np.zeros(target.shape)
    for index in np.ndindex(target.shape):
        values = []
        for sign in (1, -1):
            shifted = target.astype(object)
            shifted[index] = mp.mpf(target[index]) + sign * h
            call = dict(arrays, **{name: shifted})
            values.append(oracle_loss(call["q"], call["k"], call["v"], d_out, d_lse,
                                      **{key: call[key] for key in ("bias", "sinks")
                                         if key in call}, **kwargs))
        grad[index] = float((values[0] - values[1]) / (2 * h))
    return grad


@pytest.mark.parametrize("policy", ["zero", "uniform", "unmasked"])
def test_gradients_against_mpmath(policy):
    rng, q, k, v = inputs(20, B=1, Hq=4, Hkv=2, Tq=3, Tk=3, Dqk=2, Dv=2, spread=1.5)
    bias = rng.standard_normal((1, 4, 3, 3))
    sinks = np.array([0.1, -0.4, 0.8, 0.0]) if policy == "zero" else None
    d_out = rng.standard_normal((1, 4, 3, 2))
    d_lse = rng.standard_normal((1, 4, 3))
    keep = causal_keep(1, 4, 3, 3, [-1])
    kwargs = dict(keep=keep, softcap=2.0, empty_rows=policy)
    arrays = {"q": q, "k": k, "v": v, "bias": bias}
    if sinks is not None:
        arrays["sinks"] = sinks
    grads = attention_vjp(q, k, v, d_out, d_lse=d_lse, mask=causal(align=-1), softcap=2.0,
                          bias=bias, sinks=sinks, empty_rows=policy)
    for name, ours in [("q", grads.dq), ("k", grads.dk), ("v", grads.dv), ("bias", grads.dbias),
                       ("sinks", grads.dsinks)]:
        if name not in arrays:
            assert ours is None
            continue
        exact = oracle_gradient(name, arrays, d_out, d_lse, kwargs)
        scale = max(1.0, float(np.max(np.abs(exact))))
        assert np.max(np.abs(np.asarray(ours) - exact)) <= 1e-12 * scale, name
