"""merge() of partial attention results: against mpmath at 50 digits, against attention over
the union of the key ranges, empty partials, the lse base, sinks, namespaces and bad input."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from refmask import masks as m
from refmask.attention import attention
from refmask.attention.merge import merge

mp = mpmath.mp
mp.dps = 50


def mp_merge(pairs, base):
    """Exact merge, one row at a time: lse = log_base(sum base**lse_p), o = sum w_p o_p."""
    out_rows, lse_rows = [], []
    rows = pairs[0][1].size
    dv = pairs[0][0].shape[-1]
    for r in range(rows):
        lses = [mpmath.mpf(float(lse.reshape(-1)[r])) for _, lse in pairs]
        outs = [[mpmath.mpf(float(x)) for x in out.reshape(rows, dv)[r]] for out, _ in pairs]
        radix = mpmath.e if base == "e" else mpmath.mpf(2)
        weights = [mpmath.power(radix, x) if x != mp.ninf else mpmath.mpf(0) for x in lses]
        total = sum(weights)
        if total == 0:
            out_rows.append([0.0] * dv)
            lse_rows.append(-math.inf)
            continue
        terms = [(w, o) for w, o in zip(weights, outs, strict=True) if w]
        out_rows.append([float(sum(w * o[d] for w, o in terms) / total) for d in range(dv)])
        lse_rows.append(float(mpmath.log(total, radix)))
    shape = pairs[0][1].shape
    return np.array(out_rows).reshape(shape + (dv,)), np.array(lse_rows).reshape(shape)


@pytest.mark.parametrize("base", ["e", "2"])
def test_merge_matches_mpmath_including_empty_partials(base):
    rng = np.random.default_rng(1)
    shape = (2, 3, 4)
    pairs = []
    for scale in (1.0, 30.0, 0.1):
        out = rng.standard_normal(shape + (5,))
        lse = rng.standard_normal(shape) * scale
        pairs.append((out, lse))
    pairs[1][1][0, 0, :] = -np.inf           # an empty partial in some rows
    pairs[1][0][0, 0, :] = np.nan            # its out is never read
    for _, lse in pairs:                     # rows where every partial is empty
        lse[1, 2, 3] = -np.inf
    got_out, got_lse = merge(*[x for pair in pairs for x in pair], base=base)
    want_out, want_lse = mp_merge(pairs, base)
    np.testing.assert_allclose(got_out, want_out, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(got_lse, want_lse, rtol=1e-14, atol=1e-15)
    assert np.all(got_out[1, 2, 3] == 0) and got_lse[1, 2, 3] == -np.inf


def test_merged_key_ranges_equal_attention_over_all_keys():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((2, 4, 5, 8))
    k = rng.standard_normal((2, 2, 11, 8))
    v = rng.standard_normal((2, 2, 11, 6))
    mask = m.causal(align="bottom_right") & m.sliding_window(6, 0, align="bottom_right")
    whole = attention(q, k, v, mask=mask)
    bounds = [0, 3, 4, 9, 11]  # split-KV: four ranges, one of them empty for some rows
    parts = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        in_range = m.key_padding(stop, side="right") & ~m.key_padding(start, side="right")
        part = attention(q, k, v, mask=mask & in_range)
        parts += [part.out, part.lse]
    out, lse = merge(*parts, base="e")
    np.testing.assert_allclose(out, whole.out, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(lse, whole.lse, rtol=1e-13, atol=1e-14)


def test_a_sink_is_one_more_partial_with_zero_output():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 2, 3, 4)) for _ in range(3))
    sinks = np.array([0.5, -1.0])
    with_sink = attention(q, k, v, sinks=sinks)
    without = attention(q, k, v)
    sink_lse = np.broadcast_to(sinks[None, :, None], without.lse.shape)
    out, lse = merge(without.out, without.lse, np.zeros_like(without.out), sink_lse, base="e")
    np.testing.assert_allclose(out, with_sink.out, rtol=1e-14)
    np.testing.assert_allclose(lse, with_sink.lse, rtol=1e-14)


def test_merge_in_another_namespace_and_dtype():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    la, lb = rng.standard_normal(3), np.array([-np.inf, 0.0, 1.0])
    want_out, want_lse = merge(a, la, b, lb, base="e")
    out, lse = merge(*(torch.tensor(x, dtype=torch.float32) for x in (a, la, b, lb)),
                     base="e")
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-6)
    np.testing.assert_allclose(lse.numpy(), want_lse, rtol=1e-6)


@pytest.mark.parametrize("args,kwargs,error,message", [
    ((np.zeros((2, 3)), np.zeros(2), np.zeros((2, 3)), np.zeros(2)), {}, TypeError, "base"),
    ((np.zeros((2, 3)), np.zeros(2), np.zeros((2, 3)), np.zeros(2)), {"base": 10}, ValueError,
     "base"),
    ((np.zeros((2, 3)), np.zeros(2), np.zeros((2, 3)), np.zeros(2), np.zeros((2, 3))),
     {"base": "e"}, ValueError, "pairs"),
    ((np.zeros((2, 3)), np.zeros(3), np.zeros((2, 3)), np.zeros(2)), {"base": "e"}, ValueError,
     "lse.shape"),
    ((np.zeros((2, 3)), np.zeros(2), np.zeros((2, 4)), np.zeros(2)), {"base": "e"}, ValueError,
     "same query rows"),
    ((np.zeros((2, 3)), np.array([np.inf, 0.0]), np.zeros((2, 3)), np.zeros(2)), {"base": "e"},
     ValueError, r"\+inf"),
    ((np.zeros((2, 3)), np.zeros(2), np.zeros((2, 3), np.float32), np.zeros(2, np.float32)),
     {"base": "e"}, TypeError, "dtype"),
])
def test_bad_merges_are_refused(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        merge(*args, **kwargs)
