r"""Counter-based random numbers for golden test inputs (Philox, Salmon et al., SC'11).

Every value below is a pure function of its arguments: no global state, no ``numpy.random``,
no framework. Raw words and uniforms are bit-for-bit identical on every IEEE-754 machine.
All arithmetic on words is modulo :math:`2^W` (``W`` = 32 or 64).

Philox4xW-R (as in Random123, ``philox.h``)
-------------------------------------------
Counter ``c = (c0, c1, c2, c3)``, key ``k = (k0, k1)``, ``W``-bit words::

    round(c, k) = (hi(M1*c2) ^ c1 ^ k0,  lo(M1*c2),  hi(M0*c0) ^ c3 ^ k1,  lo(M0*c0))
    bump(k)     = (k0 + W0 mod 2^W,  k1 + W1 mod 2^W)
    philox(c, k, R):  c <- round(c, k);  repeat R-1 times { k <- bump(k); c <- round(c, k) }

``hi(x)``/``lo(x)`` are the upper/lower ``W`` bits of the exact ``2W``-bit product.
``R`` (``rounds``) may be 0..16 as in Random123 (``R = 0`` returns ``c``); the default is 10.

=========  ==================  ==================  ==================  ==================
W          M0                  M1                  W0                  W1
=========  ==================  ==================  ==================  ==================
32         0xD2511F53          0xCD9E8D57          0x9E3779B9          0xBB67AE85
64         0xD2E7470EE14C6C93  0xCA5A826395121157  0x9E3779B97F4A7C15  0xBB67AE8584CAA73B
=========  ==================  ==================  ==================  ==================

Streams
-------
A stream is named by ``(seed, stream)``: ``seed`` an int in ``[0, 2^64)``, ``stream`` a ``str``::

    key        = (seed mod 2^32,  floor(seed / 2^32))
    (h0, h1)   = SHA-256(stream.encode("utf-8"))[0:8] read as two little-endian uint32
    counter(b) = (b mod 2^32,  floor(b / 2^32),  h0,  h1)          # block index b >= 0
    word j     = philox4x32(counter(floor(j / 4)), key, 10)[j mod 4]

``random_words(seed, stream, n)`` returns words ``0 .. n-1`` (uint32). The stream name lives in
the counter, the seed in the key, so different ``(stream, block)`` pairs under one seed hit
distinct Philox inputs (Philox is a bijection of the counter for a fixed key) unless two
stream names share a 64-bit SHA-256 prefix.

Derived distributions (``N = prod(shape)``; outputs are in C order, then reshaped):

* ``uniform(..., dtype=float64)``: element ``i`` uses ``a = word 2i``, ``b = word 2i+1``::

      u_i = ((a >> 5) * 2^26 + (b >> 6)) * 2^-53          # in [0, 1), 53 random bits, exact

* ``uniform(..., dtype=float32)``: ``u_i = (word i >> 8) * 2^-24`` (24 random bits, exact).
* ``normal``: float64 uniforms ``u`` of the same ``(seed, stream)``, ``P = ceil(N / 2)`` pairs::

      u1 = 1 - u_{2p}   (exact, in (0, 1])      u2 = u_{2p+1}
      r  = sqrt(-2 * log(u1))                   t  = (2 * pi) * u2
      z_{2p} = r * cos(t),  z_{2p+1} = r * sin(t);  the first N values are returned.

* ``randint(seed, stream, shape, low, high)``: Lemire's multiply-shift with rejection over
  the words ``w_0, w_1, ...``; with ``r = high - low`` (``1 <= r <= 2^32``) and
  ``t = 2^32 mod r``, word ``w_j`` is *accepted* iff ``(w_j * r) mod 2^32 >= t`` and then
  maps to ``low + floor(w_j * r / 2^32)``. Element ``i`` is the ``i``-th accepted value.
  Every value in ``[low, high)`` has exactly ``floor(2^32 / r)`` accepted preimages, so the
  result is exactly unbiased. Output dtype is int64.

Portability: Philox words, ``uniform`` and ``randint`` use only integer ops and exact
float conversions, so they are bit-identical everywhere. ``normal`` additionally calls
``log``, ``sqrt``, ``cos`` and ``sin``; ``sqrt`` is correctly rounded by IEEE-754, but
``np.log``/``np.cos``/``np.sin`` come from the platform libm or NumPy's own SIMD kernels
(chosen by CPU features) and may differ in the last ulp between machines. ``normal`` is
therefore bit-exact only given the same libm / NumPy build and CPU dispatch; compare it
across machines with a tolerance of a few ulp.

Errors: a wrong kind of argument raises ``TypeError``, a bad value ``ValueError``; messages
start with the function name and name the argument, e.g.
``random_words: seed must be an int with 0 <= seed < 2**64, got -1``.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._validate import check_int, check_shape, check_str

__all__ = [
    "PHILOX_M4X32",
    "PHILOX_W32",
    "PHILOX_M4X64",
    "PHILOX_W64",
    "philox4x32",
    "philox4x64",
    "stream_key",
    "random_words",
    "uniform",
    "normal",
    "randint",
]

PHILOX_M4X32 = (0xD2511F53, 0xCD9E8D57)
PHILOX_W32 = (0x9E3779B9, 0xBB67AE85)
PHILOX_M4X64 = (0xD2E7470EE14C6C93, 0xCA5A826395121157)
PHILOX_W64 = (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B)

_MASK32 = 0xFFFFFFFF
_U64 = np.uint64


# --------------------------------------------------------------------------- validation


def _check_seed(where: str, seed) -> int:
    return check_int(where, "seed", seed, minimum=0, maximum=2**64 - 1,
                     rule="an int with 0 <= seed < 2**64")


def _check_rounds(where: str, rounds) -> int:
    return check_int(where, "rounds", rounds, minimum=0, maximum=16,
                     rule="an int with 0 <= rounds <= 16")


def _as_words(where: str, name: str, value, nwords: int, bits: int) -> np.ndarray:
    """Validate an integer array of shape (..., nwords) holding W-bit words; return uint64."""
    if isinstance(value, np.ndarray):
        arr = value
        if arr.dtype.kind not in "ui":
            raise TypeError(
                f"{where}: {name} must hold unsigned {bits}-bit integers, got dtype {arr.dtype}"
            )
    else:  # lists/tuples/scalars: check each entry as a Python int (no float round-trip)
        arr = np.array(value, dtype=object)
        if not all(
            isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in arr.ravel()
        ):
            raise TypeError(f"{where}: {name} must hold integers, got {value!r}")
    if arr.ndim == 0 or arr.shape[-1] != nwords:
        raise ValueError(f"{where}: {name} must have shape (..., {nwords}), got {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 2**bits):
        raise ValueError(
            f"{where}: {name} words must lie in [0, 2**{bits}), "
            f"got min {int(arr.min())}, max {int(arr.max())}"
        )
    return arr.astype(np.uint64)


# --------------------------------------------------------------------------- Philox


def _mulhilo32(m: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prod = _U64(m) * x  # both < 2**32, so the product is exact in uint64
    return prod >> _U64(32), prod & _U64(_MASK32)


def _mulhilo64(m: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact 64x64 -> 128-bit product from four exact 32x32 -> 64-bit partial products."""
    m_hi, m_lo = _U64(m >> 32), _U64(m & _MASK32)
    x_hi, x_lo = x >> _U64(32), x & _U64(_MASK32)
    ll, lh, hl, hh = m_lo * x_lo, m_lo * x_hi, m_hi * x_lo, m_hi * x_hi
    mask, s32 = _U64(_MASK32), _U64(32)
    mid = (ll >> s32) + (lh & mask) + (hl & mask)  # < 3 * 2**32: no overflow
    hi = hh + (lh >> s32) + (hl >> s32) + (mid >> s32)  # true high word: < 2**64
    lo = ((mid & mask) << s32) | (ll & mask)
    return hi, lo


def _philox4(where: str, counter, key, rounds, bits: int) -> np.ndarray:
    rounds = _check_rounds(where, rounds)
    ctr = _as_words(where, "counter", counter, 4, bits)
    k = _as_words(where, "key", key, 2, bits)
    try:
        shape = np.broadcast_shapes(ctr.shape[:-1], k.shape[:-1])
    except ValueError:
        raise ValueError(
            f"{where}: counter batch shape {ctr.shape[:-1]} and key batch shape "
            f"{k.shape[:-1]} do not broadcast"
        ) from None
    # Work on flat 1-D arrays so every op is an array op (wrapping, never a scalar warning).
    c = [np.broadcast_to(ctr[..., i], shape).ravel() for i in range(4)]
    k0, k1 = (np.broadcast_to(k[..., i], shape).ravel() for i in range(2))
    if bits == 32:
        mulhilo, (m0, m1), (w0, w1), wmask = _mulhilo32, PHILOX_M4X32, PHILOX_W32, _MASK32
    else:
        mulhilo, (m0, m1), (w0, w1), wmask = _mulhilo64, PHILOX_M4X64, PHILOX_W64, 2**64 - 1
    for r in range(rounds):
        if r:
            k0 = (k0 + _U64(w0)) & _U64(wmask)
            k1 = (k1 + _U64(w1)) & _U64(wmask)
        hi0, lo0 = mulhilo(m0, c[0])
        hi1, lo1 = mulhilo(m1, c[2])
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    out = np.stack(c, axis=-1).reshape(shape + (4,))
    return out.astype(np.uint32 if bits == 32 else np.uint64)


def philox4x32(counter: ArrayLike, key: ArrayLike, rounds: int = 10) -> np.ndarray:
    """Philox4x32-``rounds`` of ``counter`` (..., 4) under ``key`` (..., 2); uint32 (..., 4).

    Batch dimensions broadcast. Words may be given as any integer array with values in
    ``[0, 2**32)``; ``0 <= rounds <= 16``. Matches Random123 ``philox4x32_R(rounds, ctr, key)``.
    """
    return _philox4("philox4x32", counter, key, rounds, 32)


def philox4x64(counter: ArrayLike, key: ArrayLike, rounds: int = 10) -> np.ndarray:
    """Philox4x64-``rounds`` of ``counter`` (..., 4) under ``key`` (..., 2); uint64 (..., 4).

    Same conventions as :func:`philox4x32` with 64-bit words (values in ``[0, 2**64)``).
    """
    return _philox4("philox4x64", counter, key, rounds, 64)


# --------------------------------------------------------------------------- streams


def stream_key(seed: int, stream: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return ``((k0, k1), (h0, h1))``: the Philox key and the stream words of the counter."""
    seed = _check_seed("stream_key", seed)
    stream = check_str("stream_key", "stream", stream)
    digest = hashlib.sha256(stream.encode("utf-8")).digest()
    h0 = int.from_bytes(digest[0:4], "little")
    h1 = int.from_bytes(digest[4:8], "little")
    return (seed & _MASK32, seed >> 32), (h0, h1)


def _words(seed: int, stream: str, start_block: int, nblocks: int) -> np.ndarray:
    """Words ``4*start_block .. 4*(start_block+nblocks) - 1`` of the stream (validated args)."""
    key, (h0, h1) = stream_key(seed, stream)
    blocks = np.arange(start_block, start_block + nblocks, dtype=np.uint64)
    ctr = np.empty((nblocks, 4), dtype=np.uint64)
    ctr[:, 0] = blocks & _U64(_MASK32)
    ctr[:, 1] = blocks >> _U64(32)
    ctr[:, 2] = h0
    ctr[:, 3] = h1
    return _philox4("random_words", ctr, np.array(key, dtype=np.uint64), 10, 32).reshape(-1)


def random_words(seed: int, stream: str, n: int) -> np.ndarray:
    """Words ``0 .. n-1`` of stream ``(seed, stream)`` as a uint32 array of shape ``(n,)``."""
    seed = _check_seed("random_words", seed)
    stream = check_str("random_words", "stream", stream)
    n = check_int("random_words", "n", n, minimum=0, rule="an int >= 0")
    return _words(seed, stream, 0, -(-n // 4))[:n]


def uniform(seed: int, stream: str, shape: int | Sequence[int],
            dtype: DTypeLike = np.float64) -> np.ndarray:
    """Floats in ``[0, 1)`` built exactly from raw words (see module docstring)."""
    where = "uniform"
    seed = _check_seed(where, seed)
    stream = check_str(where, "stream", stream)
    shape = check_shape(where, "shape", shape)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"{where}: dtype must be float32 or float64, got {dt}")
    size = math.prod(shape)
    if dt == np.float64:
        w = random_words(seed, stream, 2 * size).astype(np.uint64)
        k = ((w[0::2] >> _U64(5)) << _U64(26)) | (w[1::2] >> _U64(6))  # < 2**53
        out = k.astype(np.float64) * 2.0**-53
    else:
        k = random_words(seed, stream, size) >> np.uint32(8)  # < 2**24
        out = k.astype(np.float32) * np.float32(2.0**-24)
    return out.reshape(shape)


def normal(seed: int, stream: str, shape: int | Sequence[int]) -> np.ndarray:
    """Standard normal float64 samples by Box-Muller on :func:`uniform` (see docstring)."""
    seed = _check_seed("normal", seed)
    stream = check_str("normal", "stream", stream)
    shape = check_shape("normal", "shape", shape)
    size = math.prod(shape)
    pairs = -(-size // 2)
    u = uniform(seed, stream, (2 * pairs,))
    u1 = 1.0 - u[0::2]  # exact: (2**53 - k) * 2**-53, in (0, 1]
    u2 = u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    t = (2.0 * math.pi) * u2
    z = np.empty(2 * pairs, dtype=np.float64)
    z[0::2] = r * np.cos(t)
    z[1::2] = r * np.sin(t)
    return z[:size].reshape(shape)


def randint(seed: int, stream: str, shape: int | Sequence[int], low: int, high: int) -> np.ndarray:
    """Unbiased int64 integers in ``[low, high)`` by Lemire's rejection (see docstring)."""
    where = "randint"
    seed = _check_seed(where, seed)
    stream = check_str(where, "stream", stream)
    shape = check_shape(where, "shape", shape)
    low = check_int(where, "low", low, minimum=-(2**63), maximum=2**63 - 1,
                    rule="an int in [-2**63, 2**63)")
    high = check_int(where, "high", high, minimum=-(2**63) + 1, maximum=2**63,
                     rule="an int in (-2**63, 2**63]")
    if not low < high:
        raise ValueError(f"{where}: low must be < high, got low={low}, high={high}")
    r = high - low
    if r > 2**32:
        raise ValueError(f"{where}: high - low must be <= 2**32, got {r}")
    size = math.prod(shape)
    threshold = _U64((2**32) % r)
    accepted: list[np.ndarray] = []
    have, block = 0, 0
    while have < size:
        nblocks = max(1, -(-(size - have) * 2 // 4))  # acceptance rate is always > 1/2
        w = _words(seed, stream, block, nblocks).astype(np.uint64)
        block += nblocks
        m = w * _U64(r)  # < 2**64: exact
        keep = (m & _U64(_MASK32)) >= threshold
        vals = (m[keep] >> _U64(32)).astype(np.int64)
        accepted.append(vals)
        have += vals.size
    vals = np.concatenate(accepted)[:size] if accepted else np.empty(0, dtype=np.int64)
    return (vals + np.int64(low)).reshape(shape)  # low <= low + v < high: no int64 overflow
