"""ALiBi slopes and the two bias conventions."""

from __future__ import annotations

import dataclasses
import math

import mpmath
import numpy as np
import pytest

from refmask.attention import Alibi, alibi_slopes, attention
from refmask.masks import causal


def hf_style_slopes(n):
    """The HF BLOOM ``build_alibi_tensor`` recipe, restated: rounded bases raised to powers."""
    closest = 2 ** math.floor(math.log2(n))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    slopes = [base**p for p in range(1, 1 + closest)]
    if closest != n:
        extra_base = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra_base**p for p in range(1, 1 + 2 * min(closest, n - closest), 2)]
    return slopes


def test_eight_heads_are_the_published_powers_of_two():
    assert alibi_slopes(8) == tuple(1.0 / 2**h for h in range(1, 9))
    assert alibi_slopes(16)[:2] == (2**-0.5, 0.5)
    assert alibi_slopes(1) == (2.0**-8,)


def test_twelve_heads():
    # closest power of two 8: 1/2 .. 1/256, then the odd powers of 2^(-1/2): 2^-0.5 .. 2^-3.5
    expected = [2.0**-e for e in range(1, 9)] + [2.0**-e for e in (0.5, 1.5, 2.5, 3.5)]
    assert alibi_slopes(12) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 8, 12, 20, 24, 40, 64, 96])
def test_against_hf_recipe_and_exact_powers(n):
    ours = alibi_slopes(n)
    assert ours == pytest.approx(hf_style_slopes(n), rel=4e-16)
    with mpmath.workdps(40):
        closest = 2 ** int(math.floor(math.log2(n)))
        exact = [mpmath.mpf(2) ** (-mpmath.mpf(8) * (h + 1) / closest) for h in range(closest)]
        exact += [mpmath.mpf(2) ** (-mpmath.mpf(8) * (2 * r + 1) / (2 * closest))
                  for r in range(n - closest)]
        for value, reference in zip(ours, exact, strict=True):
            assert abs(value - reference) <= reference * 2.0**-53  # correctly rounded


def test_conventions_agree_under_causal_and_differ_without():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 6, 4, 3)), rng.standard_normal((1, 6, 7, 3)), (
        rng.standard_normal((1, 6, 7, 2)))
    for align in ("bottom_right", 5, "top_left"):
        abs_bias = Alibi(6, convention="abs", align=align).bias(1, 6, 4, 7)
        signed_bias = Alibi(6, convention="signed", align=align).bias(1, 6, 4, 7)
        keep = causal(align=align).materialize(1, 6, 4, 7, xp=_numpy_namespace())
        np.testing.assert_array_equal(abs_bias[keep], signed_bias[keep])
        assert not np.array_equal(abs_bias, signed_bias)
        a = attention(q, k, v, mask=causal(align=align),
                      alibi=Alibi(6, convention="abs", align=align))
        b = attention(q, k, v, mask=causal(align=align),
                      alibi=Alibi(6, convention="signed", align=align))
        np.testing.assert_array_equal(a.out, b.out)


def _numpy_namespace():
    import array_api_compat.numpy

    return array_api_compat.numpy


def test_bias_formula_with_per_batch_offsets():
    alibi = Alibi([[0.5, 0.25], [1.0, 2.0]], convention="abs", align=[0, 2])
    bias = alibi.bias(2, 2, 2, 3)
    # batch 1, head 1: slope 2, pq = i + 2, pk = j: -2 |i + 2 - j|
    np.testing.assert_array_equal(bias[1, 1], -2.0 * np.array([[2, 1, 0], [3, 2, 1]]))
    np.testing.assert_array_equal(bias[0, 0], -0.5 * np.array([[0, 1, 2], [1, 0, 1]]))
    signed = Alibi([[0.5, 0.25], [1.0, 2.0]], convention="signed", align=[0, 2]).bias(2, 2, 2, 3)
    np.testing.assert_array_equal(signed[1, 1], 2.0 * np.array([[-2, -1, 0], [-3, -2, -1]]))
    assert bias.shape == (2, 2, 2, 3) and bias.dtype == np.float64


def test_alibi_is_an_immutable_value_with_every_choice_named():
    alibi = Alibi(4, convention="abs", align="bottom_right")
    assert alibi == Alibi(alibi_slopes(4), convention="abs", align="bottom_right")
    assert alibi.num_heads == 4 and alibi.batch_size is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        alibi.convention = "signed"
    with pytest.raises(TypeError):
        Alibi(4, align="top_left")  # convention has no default
    with pytest.raises(ValueError, match="Alibi: align is required"):
        Alibi(4, convention="abs", align=None)
    with pytest.raises(ValueError, match="Alibi: convention must be one of"):
        Alibi(4, convention="flash", align="top_left")
    with pytest.raises(ValueError, match="Alibi: slopes must have shape"):
        Alibi(np.ones((1, 2, 3)), convention="abs", align="top_left")
    with pytest.raises(ValueError, match="Alibi: slopes must be finite"):
        Alibi([np.nan], convention="abs", align="top_left")
    with pytest.raises(ValueError, match="Alibi: slopes are given for 2 batches but align for 3"):
        Alibi([[1.0], [2.0]], convention="abs", align=[0, 1, 2])
    with pytest.raises(ValueError, match="alibi_slopes: num_heads must be an int >= 1"):
        alibi_slopes(0)
