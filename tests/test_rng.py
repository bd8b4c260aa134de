"""Tests for refmask.rng: Philox known answers, stream layout, derived distributions.

Expected values come from Random123's published known-answer vectors, from hand-checked
constants (SHA-256 of the empty string) or from independent pure-Python computations of the
formulas in the module docstring -- never from refmask.rng output.
"""

from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import pytest

from refmask import rng

# --------------------------------------------------------------------------- KAT vectors
# Source: D. E. Shaw Research, Random123, https://github.com/DEShawResearch/random123
# (commit 9545ff6413f258be2f04c1d319d99aaef7521150).
#  * KAT_CURRENT: every philox4x32 / philox4x64 line of tests/kat_vectors (rounds 7 and 10;
#    counter/key = all zeros, all ones, and hex digits of pi).
#  * KAT_OLD: from tests/old_kat_vectors, every 10-round philox4 line whose key is
#    (0, 2**(W-1)) or whose counter is one of the pi-digit counters.
# Columns as in the files: name, rounds, CTR (4 words), KEY (2 words), EXPECTED (4 words).
# (All 204 philox4 lines of both files were also checked once when this module was written.)
# fmt: off
KAT_CURRENT = [
    ("philox4x32", 7, "00000000 00000000 00000000 00000000",
     "00000000 00000000", "5f6fb709 0d893f64 4f121f81 4f730a48"),
    ("philox4x32", 7, "ffffffff ffffffff ffffffff ffffffff",
     "ffffffff ffffffff", "5207ddc2 45165e59 4d8ee751 8c52f662"),
    ("philox4x32", 7, "243f6a88 85a308d3 13198a2e 03707344",
     "a4093822 299f31d0", "4dfccaba 190a87f0 c47362ba b6b5242a"),
    ("philox4x32", 10, "00000000 00000000 00000000 00000000",
     "00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    ("philox4x32", 10, "ffffffff ffffffff ffffffff ffffffff",
     "ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    ("philox4x32", 10, "243f6a88 85a308d3 13198a2e 03707344",
     "a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1"),
    ("philox4x64", 7, "0000000000000000 0000000000000000 0000000000000000 0000000000000000",
     "0000000000000000 0000000000000000",
     "5dc8ee6268ec62cd 139bc570b6c125a0 84d6deb4fb65f49e aff7583376d378c2"),
    ("philox4x64", 7, "ffffffffffffffff ffffffffffffffff ffffffffffffffff ffffffffffffffff",
     "ffffffffffffffff ffffffffffffffff",
     "071dd84367903154 48e2bbdc722b37d1 6afa9890bb89f76c 9194c8d8ada56ac7"),
    ("philox4x64", 7, "243f6a8885a308d3 13198a2e03707344 a4093822299f31d0 082efa98ec4e6c89",
     "452821e638d01377 be5466cf34e90c6c",
     "513a366704edf755 f05d9924c07044d3 bef2cb9cbea74c6c 8db948de4caa1f8a"),
    ("philox4x64", 10, "0000000000000000 0000000000000000 0000000000000000 0000000000000000",
     "0000000000000000 0000000000000000",
     "16554d9eca36314c db20fe9d672d0fdc d7e772cee186176b 7e68b68aec7ba23b"),
    ("philox4x64", 10, "ffffffffffffffff ffffffffffffffff ffffffffffffffff ffffffffffffffff",
     "ffffffffffffffff ffffffffffffffff",
     "87b092c3013fe90b 438c3c67be8d0224 9cc7d7c69cd777b6 a09caebf594f0ba0"),
    ("philox4x64", 10, "243f6a8885a308d3 13198a2e03707344 a4093822299f31d0 082efa98ec4e6c89",
     "452821e638d01377 be5466cf34e90c6c",
     "a528f45403e61d95 38c72dbd566e9788 a5a1610e72fd18b5 57bd43b5e52b7fe6"),
]
KAT_OLD = [
    ("philox4x32", 10, "243f6a88 85a308d3 13198a2e 03707344",
     "00000001 00000000", "38527b8f fad9a48c 20e675c0 f2fea26a"),
    ("philox4x32", 10, "a4093822 299f31d0 082efa98 ec4e6c89",
     "00000001 00000000", "fb9877f8 482895e2 60b01453 198ea67b"),
    ("philox4x32", 10, "452821e6 38d01377 be5466cf 34e90c6c",
     "00000001 00000000", "f7b7fa0a 8d970e2c 205c9c76 83b16ce5"),
    ("philox4x32", 10, "243f6a88 85a308d3 13198a2e 03707344",
     "00000000 00000001", "126514c3 d1898b69 da2707b3 6e6fb436"),
    ("philox4x32", 10, "a4093822 299f31d0 082efa98 ec4e6c89",
     "00000000 00000001", "1c28fa3f 8c5bf977 bb989783 0c1a3737"),
    ("philox4x32", 10, "452821e6 38d01377 be5466cf 34e90c6c",
     "00000000 00000001", "ac87a8c1 f240abdb add6c012 68a32a78"),
    ("philox4x32", 10, "243f6a88 85a308d3 13198a2e 03707344",
     "00000000 ffffffff", "08f7720c 845ee9e0 502ccd3d a9a00e27"),
    ("philox4x32", 10, "a4093822 299f31d0 082efa98 ec4e6c89",
     "00000000 ffffffff", "9fcce05d 837d3f3c 5cdf3e61 db2544c0"),
    ("philox4x32", 10, "452821e6 38d01377 be5466cf 34e90c6c",
     "00000000 ffffffff", "72ce44b3 b44f9b78 49af0267 726813ac"),
    ("philox4x32", 10, "00000001 00000000 00000000 00000000",
     "00000000 80000000", "e29b9f84 2903d316 42a1f56f 1ad02eab"),
    ("philox4x32", 10, "00000000 00000001 00000000 00000000",
     "00000000 80000000", "94f419f8 1116c316 99f2fa30 bc048ad6"),
    ("philox4x32", 10, "00000000 00000000 00000001 00000000",
     "00000000 80000000", "488b0258 9eea6420 afe7062e 768f5637"),
    ("philox4x32", 10, "00000000 00000000 00000000 00000001",
     "00000000 80000000", "dbec6d70 69cea528 f7e22262 2e9f3e8f"),
    ("philox4x32", 10, "00000000 ffffffff 00000000 00000000",
     "00000000 80000000", "905ee550 c7520e9a 9af9d0ad 69b97e98"),
    ("philox4x32", 10, "00000000 80000000 00000000 00000000",
     "00000000 80000000", "1b89d963 0defe9af 60c9d3fb 3cfae97d"),
    ("philox4x32", 10, "00000000 00000000 ffffffff 00000000",
     "00000000 80000000", "601b5460 fe29678b 54510a02 c72ed094"),
    ("philox4x32", 10, "00000000 00000000 80000000 00000000",
     "00000000 80000000", "ae56ca02 7609ba67 25abd7df 46ce39a3"),
    ("philox4x32", 10, "00000000 00000000 00000000 ffffffff",
     "00000000 80000000", "09812238 47b8470d 3e0d0a26 92d96c9a"),
    ("philox4x32", 10, "00000000 00000000 00000000 80000000",
     "00000000 80000000", "f7a0b371 e51dc93d 56ce135d 1d4b5580"),
    ("philox4x32", 10, "243f6a88 85a308d3 13198a2e 03707344",
     "00000000 80000000", "63675d2c 422d7c4d 3145d30d 3bce33a4"),
    ("philox4x32", 10, "a4093822 299f31d0 082efa98 ec4e6c89",
     "00000000 80000000", "aa74e81c c9ddb97b 2c2cd881 9390c78d"),
    ("philox4x32", 10, "452821e6 38d01377 be5466cf 34e90c6c",
     "00000000 80000000", "94ca5566 14924b2f 28214292 59faeaee"),
    ("philox4x64", 10, "243f6a8885a308d3 13198a2e03707344 a4093822299f31d0 082efa98ec4e6c89",
     "0000000000000001 0000000000000000",
     "c306b6f69047b4d3 50a141b88a52f51f c1255f575c5efa40 e9ec1af0c5fd12e7"),
    ("philox4x64", 10, "243f6a8885a308d3 13198a2e03707344 a4093822299f31d0 082efa98ec4e6c89",
     "0000000000000000 0000000000000001",
     "43e89f25ef59b052 d2502d395a99506d d5c391a65ae822ed 5b049af4d110de73"),
    ("philox4x64", 10, "243f6a8885a308d3 13198a2e03707344 a4093822299f31d0 082efa98ec4e6c89",
     "0000000000000000 ffffffffffffffff",
     "7abbd897f6d97f60 a35c61aae7c5a341 939a3dd4f55b2e11 aca6e644802e2b83"),
    ("philox4x64", 10, "0000000000000001 0000000000000000 0000000000000000 0000000000000000",
     "0000000000000000 8000000000000000",
     "95bf028be28ca5e8 80a06590a6c807a8 1770cb520415bcba fecac07f93e9ed1f"),
    ("philox4x64", 10, "0000000000000000 0000000000000001 0000000000000000 0000000000000000",
     "0000000000000000 8000000000000000",
     "6aa3e3e8852b4cc4 eeed4a014947ee9a b347eb5bb39cbcee f048d1bc0fc2b4f2"),
    ("philox4x64", 10, "0000000000000000 0000000000000000 0000000000000001 0000000000000000",
     "0000000000000000 8000000000000000",
     "86b7bbf896316096 dbf03c3291b0e8e4 f7baf2cce7820704 6901641d0e74863d"),
    ("philox4x64", 10, "0000000000000000 0000000000000000 0000000000000000 0000000000000001",
     "0000000000000000 8000000000000000",
     "a22ba98c8739f11c 75840cee16d70e1a 59211c4195818dbb 26fd6d1dd8b4d938"),
    ("philox4x64", 10, "0000000000000000 ffffffffffffffff 0000000000000000 0000000000000000",
     "0000000000000000 8000000000000000",
     "b7a2f1ee3064f644 5bfed8c7b0e09ec9 d7ef6479063d9862 b94fd6571ec99673"),
    ("philox4x64", 10, "0000000000000000 8000000000000000 0000000000000000 0000000000000000",
     "0000000000000000 8000000000000000",
     "237b3d9bab6c147b 15cd10a376b3ba31 e9fca9f852456a7c 011d03871fbcd351"),
    ("philox4x64", 10, "0000000000000000 0000000000000000 ffffffffffffffff 0000000000000000",
     "0000000000000000 8000000000000000",
     "c2af8ad32fd4de40 210519dc3915cf8d 96d7b5aaac61e656 bf890353d0e4f406"),
    ("philox4x64", 10, "0000000000000000 0000000000000000 8000000000000000 0000000000000000",
     "0000000000000000 8000000000000000",
     "deabe779ac4018bf c244924f18a0bd57 b2c176463cbcdd44 924c5c68f49efe61"),
    ("philox4x64", 10, "0000000000000000 0000000000000000 0000000000000000 ffffffffffffffff",
     "0000000000000000 8000000000000000",
     "65084d38b2079128 26278aadff5dc8a0 12b70968c429186c 3008f3151aec94d0"),
    ("philox4x64", 10, "0000000000000000 0000000000000000 0000000000000000 8000000000000000",
     "0000000000000000 8000000000000000",
     "4e5204874c73745c b416cb6ef85bba05 87819def7e3f93a0 cc38b1dbe3d9d6e9"),
    ("philox4x64", 10, "243f6a8885a308d3 13198a2e03707344 a4093822299f31d0 082efa98ec4e6c89",
     "0000000000000000 8000000000000000",
     "79b0012fa80e5ad7 15b81f9bf706cc38 6586b6802ea9ba1c 1bba4ac847739bca"),
]
# fmt: on
ALL_KATS = KAT_CURRENT + KAT_OLD


def _words(text: str) -> list[int]:
    return [int(x, 16) for x in text.split()]


# --------------------------------------------------------------------------- independent reference


def _ref_philox4(width: int, ctr: list[int], key: list[int], rounds: int) -> list[int]:
    """Scalar Philox4xW on Python ints, written from Salmon et al. (2011), Random123 philox.h."""
    if width == 32:
        m0, m1, w0, w1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
    else:
        m0, m1 = 0xD2E7470EE14C6C93, 0xCA5A826395121157
        w0, w1 = 0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B
    mask = (1 << width) - 1
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(rounds):
        if r > 0:
            k0, k1 = (k0 + w0) & mask, (k1 + w1) & mask
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (p1 >> width) ^ c1 ^ k0, p1 & mask, (p0 >> width) ^ c3 ^ k1, p0 & mask
    return [c0, c1, c2, c3]


def _ref_stream_words(seed: int, stream: str, n: int) -> list[int]:
    """Words of a stream from the docstring formula, using the reference Philox."""
    digest = hashlib.sha256(stream.encode("utf-8")).digest()
    h0, h1 = struct.unpack("<II", digest[:8])
    key = [seed % 2**32, seed // 2**32]
    out: list[int] = []
    for block in range(-(-n // 4)):
        out += _ref_philox4(32, [block % 2**32, block // 2**32, h0, h1], key, 10)
    return out[:n]


def _ref_uniform64(words: list[int]) -> list[float]:
    """float64 uniforms from word pairs; Python int / int is correctly rounded (here exact)."""
    return [
        ((words[2 * i] >> 5) * 2**26 + (words[2 * i + 1] >> 6)) / 2**53
        for i in range(len(words) // 2)
    ]


# --------------------------------------------------------------------------- Philox


@pytest.mark.parametrize("name, rounds, ctr, key, expected", ALL_KATS)
def test_philox_known_answers(name, rounds, ctr, key, expected):
    fn = rng.philox4x32 if name == "philox4x32" else rng.philox4x64
    out = fn(_words(ctr), _words(key), rounds)
    assert out.dtype == (np.uint32 if name == "philox4x32" else np.uint64)
    assert out.shape == (4,)
    assert [int(x) for x in out] == _words(expected)


def test_philox4x32_default_is_10_rounds_and_first_kat():
    out = rng.philox4x32(np.zeros(4, np.uint32), np.zeros(2, np.uint32))
    assert [int(x) for x in out] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@pytest.mark.parametrize("name, rounds, ctr, key, expected", ALL_KATS)
def test_reference_implementation_matches_kats(name, rounds, ctr, key, expected):
    # Guards the independent reference used by the tests below.
    width = 32 if name == "philox4x32" else 64
    assert _ref_philox4(width, _words(ctr), _words(key), rounds) == _words(expected)


@pytest.mark.parametrize("width", [32, 64])
def test_philox_batched_matches_kats(width):
    name = f"philox4x{width}"
    dtype = np.uint32 if width == 32 else np.uint64
    rows = [k for k in ALL_KATS if k[0] == name and k[1] == 10]
    ctr = np.array([_words(r[2]) for r in rows], dtype=dtype)
    key = np.array([_words(r[3]) for r in rows], dtype=dtype)
    expected = np.array([_words(r[4]) for r in rows], dtype=dtype)
    fn = rng.philox4x32 if width == 32 else rng.philox4x64
    np.testing.assert_array_equal(fn(ctr, key), expected)


@pytest.mark.parametrize("width", [32, 64])
@pytest.mark.parametrize("rounds", [0, 1, 2, 7, 10, 16])
def test_philox_vectorised_equals_scalar_loop(width, rounds):
    # Deterministic, well-spread inputs (a multiplicative hash of the index), incl. extremes.
    dtype = np.uint32 if width == 32 else np.uint64
    mask = (1 << width) - 1
    words = [(i * 0x9E3779B97F4A7C15 + 0x0123456789ABCDEF) & mask for i in range(5 * 3 * 4)]
    words[:8] = [mask] * 4 + [0] * 4
    ctr = np.array(words, dtype=dtype).reshape(5, 3, 4)
    key = np.array([[mask, mask], [0, 1], [1 << (width - 1), 12345]], dtype=dtype)  # (3, 2)
    fn = rng.philox4x32 if width == 32 else rng.philox4x64
    out = fn(ctr, key, rounds)
    assert out.shape == (5, 3, 4) and out.dtype == dtype
    for i in range(5):
        for j in range(3):
            c = [int(x) for x in ctr[i, j]]
            k = [int(x) for x in key[j]]
            assert [int(x) for x in out[i, j]] == _ref_philox4(width, c, k, rounds)
            assert [int(x) for x in fn(ctr[i, j], key[j], rounds)] == [int(x) for x in out[i, j]]


def test_philox_accepts_python_ints_and_any_integer_dtype():
    ones = [0xFFFFFFFFFFFFFFFF] * 4
    expected = [0x87B092C3013FE90B, 0x438C3C67BE8D0224, 0x9CC7D7C69CD777B6, 0xA09CAEBF594F0BA0]
    assert [int(x) for x in rng.philox4x64(ones, ones[:2])] == expected
    ctr = np.array([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], dtype=np.int64)
    key = np.array([0xA4093822, 0x299F31D0], dtype=np.uint64)
    expected32 = [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]
    assert [int(x) for x in rng.philox4x32(ctr, key)] == expected32


def test_philox_zero_batch():
    out = rng.philox4x32(np.zeros((0, 4), np.uint32), np.zeros(2, np.uint32))
    assert out.shape == (0, 4) and out.dtype == np.uint32


def test_philox_does_not_modify_inputs():
    ctr = np.arange(8, dtype=np.uint64).reshape(2, 4)
    key = np.array([1, 2], dtype=np.uint64)
    rng.philox4x64(ctr, key)
    np.testing.assert_array_equal(ctr, np.arange(8).reshape(2, 4))
    np.testing.assert_array_equal(key, [1, 2])


# --------------------------------------------------------------------------- streams


def test_stream_key_layout_by_hand():
    # SHA-256("") = e3b0c442 98fc1c14 ...; little-endian words 0x42c4b0e3, 0x141cfc98.
    assert rng.stream_key(0, "") == ((0, 0), (0x42C4B0E3, 0x141CFC98))
    # SHA-256("abc") = ba7816bf 8f01cfea ...
    seed = 0x0123456789ABCDEF
    assert rng.stream_key(seed, "abc") == ((0x89ABCDEF, 0x01234567), (0xBF1678BA, 0xEACF018F))


def test_random_words_layout_against_reference():
    for seed, stream, n in [(0, "", 13), (2**64 - 1, "q/k/v", 9), (7, "ünïcode", 4)]:
        out = rng.random_words(seed, stream, n)
        assert out.dtype == np.uint32 and out.shape == (n,)
        assert [int(x) for x in out] == _ref_stream_words(seed, stream, n)


def test_random_words_prefix_stable_and_empty():
    long = rng.random_words(3, "x", 101)
    for n in (0, 1, 3, 4, 5, 17, 100):
        np.testing.assert_array_equal(rng.random_words(3, "x", n), long[:n])
    empty = rng.random_words(3, "x", 0)
    assert empty.shape == (0,) and empty.dtype == np.uint32


def test_streams_differ_by_name_and_seed():
    base = rng.random_words(1, "a", 64)
    others = [
        rng.random_words(1, "b", 64),
        rng.random_words(2, "a", 64),
        rng.random_words(1 + 2**32, "a", 64),  # differs only in the key's high word
        rng.random_words(2**32, "a", 64),
        rng.random_words(1, "a ", 64),
        rng.random_words(1, "A", 64),
    ]
    for other in others:
        assert np.count_nonzero(base != other) > 60
    np.testing.assert_array_equal(base, rng.random_words(1, "a", 64))  # deterministic


# --------------------------------------------------------------------------- uniform


def test_uniform_float64_exact_bit_construction():
    shape = (7, 5)
    words = _ref_stream_words(11, "u", 2 * 35)
    expected = _ref_uniform64(words)
    out = rng.uniform(11, "u", shape)
    assert out.dtype == np.float64 and out.shape == shape
    assert out.ravel().tolist() == expected  # exact equality, element by element


def test_uniform_float32_exact_bit_construction():
    words = _ref_stream_words(11, "u32", 50)
    expected = np.array([(w >> 8) / 2**24 for w in words], dtype=np.float64)
    out = rng.uniform(11, "u32", 50, dtype=np.float32)
    assert out.dtype == np.float32 and out.shape == (50,)
    np.testing.assert_array_equal(out.astype(np.float64), expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_uniform_range_and_chi_square(dtype):
    n, bins = 100_000, 100
    u = rng.uniform(2024, "chi2", n, dtype=dtype)
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.bincount((u.astype(np.float64) * bins).astype(np.int64), minlength=bins)
    chi2 = float(((counts - n / bins) ** 2).sum() / (n / bins))
    assert chi2 < 200.0  # df = 99: mean 99, sd 14; deterministic input, loose bound
    assert abs(float(u.mean()) - 0.5) < 0.01


def test_uniform_shape_handling():
    flat = rng.uniform(5, "s", 24)
    np.testing.assert_array_equal(rng.uniform(5, "s", (2, 3, 4)), flat.reshape(2, 3, 4))
    np.testing.assert_array_equal(rng.uniform(5, "s", [4, 6]), flat.reshape(4, 6))
    assert rng.uniform(5, "s", ()).shape == ()
    assert rng.uniform(5, "s", (3, 0)).shape == (3, 0)


# --------------------------------------------------------------------------- normal


def test_normal_matches_box_muller_formula():
    n = 11  # odd: the last pair's sine is dropped
    u = _ref_uniform64(_ref_stream_words(9, "n", 2 * 12))
    expected = []
    for p in range(6):
        r = math.sqrt(-2.0 * math.log(1.0 - u[2 * p]))
        t = 2.0 * math.pi * u[2 * p + 1]
        expected += [r * math.cos(t), r * math.sin(t)]
    out = rng.normal(9, "n", n)
    assert out.dtype == np.float64 and out.shape == (n,)
    # log/cos/sin may differ in the last ulp between libms (see module docstring).
    np.testing.assert_allclose(out, expected[:n], rtol=1e-13, atol=1e-14)


def test_normal_moments():
    z = rng.normal(77, "moments", (250, 400))
    assert z.shape == (250, 400) and np.isfinite(z).all()
    assert abs(float(z.mean())) < 0.02  # sd of the mean ~ 0.0032
    assert abs(float(z.var()) - 1.0) < 0.03  # sd of the variance ~ 0.0045
    assert abs(float((z**3).mean())) < 0.05
    assert abs(float((np.abs(z) < 1.0).mean()) - 0.6826894921) < 0.01


# --------------------------------------------------------------------------- randint


def _ref_randint(seed: int, stream: str, n: int, low: int, high: int) -> list[int]:
    r = high - low
    t = 2**32 % r
    words = _ref_stream_words(seed, stream, 4 * n + 64)
    out = [low + (w * r >> 32) for w in words if (w * r) % 2**32 >= t]
    assert len(out) >= n
    return out[:n]


@pytest.mark.parametrize(
    "low, high",
    [(0, 3), (-5, 5), (0, 2**31 + 1), (0, 2**32), (2**63 - 7, 2**63), (-(2**63), -(2**63) + 3)],
)
def test_randint_matches_lemire_reference(low, high):
    out = rng.randint(13, "ri", (10, 30), low, high)
    assert out.dtype == np.int64 and out.shape == (10, 30)
    assert out.ravel().tolist() == _ref_randint(13, "ri", 300, low, high)
    assert int(out.min()) >= low and int(out.max()) < high


def test_randint_full_range_is_raw_words():
    np.testing.assert_array_equal(
        rng.randint(4, "w", 40, 0, 2**32), rng.random_words(4, "w", 40).astype(np.int64)
    )


def test_randint_rejection_path():
    # r = 2**31 + 1: t = 2**32 mod r = 2**31 - 1, so about half of all words are rejected
    # and the output must skip them (several refills of the word buffer are needed).
    r = 2**31 + 1
    assert 2**32 % r == 2**31 - 1
    words = _ref_stream_words(99, "rej", 4000)
    rejected = sum((w * r) % 2**32 < 2**31 - 1 for w in words)
    assert 1800 < rejected < 2200
    out = rng.randint(99, "rej", 2000, 10, 10 + r)
    assert out.tolist() == _ref_randint(99, "rej", 2000, 10, 10 + r)
    # r = 3: t = 1, only w == 0 is rejected (3 is invertible mod 2**32).
    assert 2**32 % 3 == 1


def test_randint_unbiased_small_range():
    n, r = 120_000, 6
    x = rng.randint(31, "dice", n, 1, 1 + r)
    counts = np.bincount(x - 1, minlength=r)
    assert counts.size == r
    chi2 = float(((counts - n / r) ** 2).sum() / (n / r))
    assert chi2 < 25.0  # df = 5; P(chi2 > 25) ~ 1e-4, deterministic


def test_randint_empty():
    out = rng.randint(0, "e", (0, 5), 0, 10)
    assert out.shape == (0, 5) and out.dtype == np.int64


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: rng.random_words(-1, "s", 4), ValueError, r"random_words: seed"),
        (lambda: rng.random_words(2**64, "s", 4), ValueError, r"random_words: seed"),
        (lambda: rng.random_words(1.0, "s", 4), TypeError, r"random_words: seed"),
        (lambda: rng.random_words(True, "s", 4), TypeError, r"random_words: seed"),
        (lambda: rng.random_words(0, b"s", 4), TypeError, r"random_words: stream"),
        (lambda: rng.random_words(0, "s", -1), ValueError, r"random_words: n"),
        (lambda: rng.random_words(0, "s", 2.0), TypeError, r"random_words: n"),
        (lambda: rng.uniform(0, "s", (2, -1)), ValueError, r"uniform: shape"),
        (lambda: rng.uniform(0, "s", (2.0,)), TypeError, r"uniform: shape"),
        (lambda: rng.uniform(0, "s", 3, dtype=np.float16), ValueError, r"uniform: dtype"),
        (lambda: rng.uniform(0, 5, 3), TypeError, r"uniform: stream"),
        (lambda: rng.normal(-3, "s", 3), ValueError, r"normal: seed"),
        (lambda: rng.normal(0, "s", -3), ValueError, r"normal: shape"),
        (lambda: rng.randint(0, "s", 3, 5, 5), ValueError, r"randint: low must be < high"),
        (lambda: rng.randint(0, "s", 3, 0, 2**32 + 1), ValueError, r"randint: high - low"),
        (lambda: rng.randint(0, "s", 3, 0.5, 4), TypeError, r"randint: low"),
        (lambda: rng.randint(0, "s", 3, 0, 2**63 + 2), ValueError, r"randint: high"),
        (lambda: rng.randint(None, "s", 3, 0, 4), TypeError, r"randint: seed"),
        (lambda: rng.philox4x32([0, 0, 0], [0, 0]), ValueError, r"philox4x32: counter"),
        (lambda: rng.philox4x32([0, 0, 0, 2**32], [0, 0]), ValueError, r"philox4x32: counter"),
        (lambda: rng.philox4x32([0, 0, 0, -1], [0, 0]), ValueError, r"philox4x32: counter"),
        (lambda: rng.philox4x32([0, 0, 0, 0], [0, 0, 0]), ValueError, r"philox4x32: key"),
        (lambda: rng.philox4x32(np.zeros(4), [0, 0]), TypeError, r"philox4x32: counter"),
        (lambda: rng.philox4x64([0, 0, 0, 0], [0.5, 0]), TypeError, r"philox4x64: key"),
        (lambda: rng.philox4x64([0, 0, 0, 0], [2**64, 0]), ValueError, r"philox4x64: key"),
        (lambda: rng.philox4x32([0] * 4, [0, 0], rounds=17), ValueError, r"philox4x32: rounds"),
        (
            lambda: rng.philox4x32(np.zeros((3, 4), np.uint32), np.zeros((2, 2), np.uint32)),
            ValueError,
            r"philox4x32: counter batch shape",
        ),
    ],
)
def test_errors_name_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
