"""Float64 -> case dtype rounding is one correct rounding (spec 5.1), whatever ml_dtypes does.

The expected value is found independently: with exact rational arithmetic (``fractions``), the
two representable neighbours of x are compared and the nearer one (the even one on a tie)
wins. bfloat16 values are enumerated from their 16-bit patterns, so no float conversion of
the library under test is involved.
"""

from __future__ import annotations

import bisect
from fractions import Fraction

import numpy as np
import pytest

from refmask.case import numpy_dtype, round_float64

ml_dtypes = pytest.importorskip("ml_dtypes")


def _bfloat16_value(bits: int) -> Fraction | float:
    """The exact value of a bfloat16 bit pattern, decoded by hand (sign, 8-bit exponent,
    7-bit fraction; exponent 0 is subnormal)."""
    sign = -1 if bits >> 15 else 1
    exponent, fraction = (bits >> 7) & 0xFF, bits & 0x7F
    if exponent == 0xFF:
        return sign * float("inf") if fraction == 0 else float("nan")
    if exponent == 0:
        return sign * Fraction(fraction, 1 << 7) * Fraction(2) ** (1 - 127)
    return sign * (1 + Fraction(fraction, 1 << 7)) * Fraction(2) ** (exponent - 127)


_FINITE = [(bits, _bfloat16_value(bits)) for bits in range(0x7F80)]  # increasing values
_FINITE_VALUES = [value for _, value in _FINITE]


def _correctly_rounded_bits(x: float) -> int:
    exact = Fraction(x)
    sign = 0x8000 if x < 0 or (x == 0 and np.signbit(x)) else 0
    magnitude = abs(exact)
    below = _FINITE[bisect.bisect_right(_FINITE_VALUES, magnitude) - 1]
    if below[1] == magnitude:
        return sign | below[0]
    above_bits = below[0] + 1
    above = _bfloat16_value(above_bits) if above_bits < 0x7F80 else Fraction(2) ** 128
    if magnitude - below[1] < above - magnitude:
        return sign | below[0]
    if magnitude - below[1] > above - magnitude:
        return sign | above_bits  # 0x7F80 is +inf: overflow rounds to infinity
    return sign | (below[0] if below[0] % 2 == 0 else above_bits)


def _probes() -> list[float]:
    """Values just off bfloat16 midpoints (where rounding through float32 goes wrong),
    exact midpoints, subnormals, the overflow boundary and random values."""
    rng = np.random.default_rng(7)
    out = [0.0, -0.0, 1.0, 1.16015625, 1.1601562833811008, -1.1601562833811008,
           3.3895313892515355e38, 3.3961e38, 3.4e38, 1e-40, 2.0**-133, 1.5 * 2.0**-133,
           2.0**-134, 2.0**-134 * (1 + 2.0**-30)]
    for bits in rng.integers(0, 0x7F7F, 60):
        mid = (_bfloat16_value(int(bits)) + _bfloat16_value(int(bits) + 1)) / 2
        out += [float(mid), np.nextafter(float(mid), np.inf), np.nextafter(float(mid), -np.inf),
                float(mid) * (1 + 2.0**-40)]
    out += list(rng.standard_normal(40) * 10.0 ** rng.integers(-30, 30, 40))
    return out


def test_float64_to_bfloat16_is_one_correct_rounding():
    probes = _probes()
    got = round_float64(np.array(probes), numpy_dtype("bfloat16")).view(np.uint16)
    expected = [_correctly_rounded_bits(x) for x in probes]
    mismatches = [(x, int(g), e) for x, g, e in zip(probes, got, expected, strict=True)
                  if int(g) != e]
    assert mismatches == []


def test_special_values_keep_their_meaning():
    got = round_float64(np.array([np.nan, -np.nan, np.inf, -np.inf, 1e300]),
                        numpy_dtype("bfloat16")).astype(np.float64)
    assert np.isnan(got[:2]).all() and list(got[2:]) == [np.inf, -np.inf, np.inf]


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_other_dtypes_round_like_numpy(name):
    x = np.random.default_rng(3).standard_normal(1000) * 100
    assert np.array_equal(round_float64(x, np.dtype(name)), x.astype(name))
