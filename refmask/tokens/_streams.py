r"""Philox word streams for token masking, keyed by (seed, purpose, epoch, example).

Every random decision of :mod:`refmask.tokens` reads one word of one ``refmask.rng`` stream::

    masking epoch   e' = epoch                      (dynamic: a fresh mask every epoch)
                    e' = epoch mod static_copies    (static: BERT's copies made once)
    stream name     "refmask.tokens/<purpose>/epoch=<e'>/example=<example id>"
    word j          = refmask.rng.random_words(seed, stream name, j + 1)[j]

so the word behind a decision depends on nothing but (seed, purpose, epoch, example id, j):
not on the batch it is in, its row, the batch size or the backend. ``j`` is the position of
the token (or of the first token of the unit) the decision is about. The words are made here
on the host with NumPy/Numba; everything downstream of them is integer array-API code, hence
bit-identical on every namespace.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numba import njit

from .._validate import check_int
from ..rng import PHILOX_M4X32, PHILOX_W32

__all__ = ["PURPOSES", "masking_epoch", "stream_name", "stream_words"]

# Every purpose a masker reads words for; a new purpose is a new family of streams.
PURPOSES = ("select", "replace", "random_token", "span_length", "span_gaps", "t5_noise_cuts",
            "t5_nonnoise_cuts")

_M0, _M1 = PHILOX_M4X32
_W0, _W1 = PHILOX_W32


def masking_epoch(where: str, epoch, static_copies) -> int:
    """The epoch that keys the streams: ``epoch`` (dynamic) or ``epoch mod static_copies``."""
    epoch = check_int(where, "epoch", epoch, minimum=0, maximum=2**63 - 1, rule="an int >= 0")
    if static_copies is None:
        return epoch
    copies = check_int(where, "static_copies", static_copies, minimum=1, maximum=2**63 - 1,
                       rule="None (dynamic masking) or an int >= 1 (static masking)")
    return epoch % copies


def _stream_prefix(purpose: str, epoch: int) -> str:
    return f"refmask.tokens/{purpose}/epoch={epoch}/example="


def stream_name(purpose: str, epoch: int, example: int) -> str:
    """``"refmask.tokens/<purpose>/epoch=<epoch>/example=<example>"``: the name of the stream a
    masker reads; purpose one of :data:`PURPOSES`, epoch the masking epoch (after
    ``static_copies``) and example the example id, both ints >= 0."""
    where = "stream_name"
    if purpose not in PURPOSES:
        raise ValueError(f"{where}: purpose must be one of {list(PURPOSES)}, got {purpose!r}")
    epoch = check_int(where, "epoch", epoch, minimum=0, maximum=2**63 - 1, rule="an int >= 0")
    example = check_int(where, "example", example, minimum=0, maximum=2**63 - 1,
                        rule="an int >= 0")
    return _stream_prefix(purpose, epoch) + str(example)


@njit(nogil=True, cache=True)
def _philox_rows(k0: np.uint64, k1: np.uint64, h0: np.ndarray, h1: np.ndarray,
                 n_words: int) -> np.ndarray:  # pragma: no cover - compiled
    """Words 0..n_words-1 of one stream per row: Philox4x32-10 of (j//4, 0, h0[b], h1[b])."""
    rows = h0.shape[0]
    n_blocks = (n_words + 3) // 4
    out = np.empty((rows, n_blocks * 4), dtype=np.uint32)
    mask = np.uint64(0xFFFFFFFF)
    for b in range(rows):
        for block in range(n_blocks):
            c0 = np.uint64(block) & mask
            c1 = np.uint64(block) >> np.uint64(32)
            c2 = np.uint64(h0[b])
            c3 = np.uint64(h1[b])
            key0, key1 = k0, k1
            for r in range(10):
                if r:
                    key0 = (key0 + np.uint64(_W0)) & mask
                    key1 = (key1 + np.uint64(_W1)) & mask
                p0 = np.uint64(_M0) * c0
                p1 = np.uint64(_M1) * c2
                n0 = (p1 >> np.uint64(32)) ^ c1 ^ key0
                n1 = p1 & mask
                n2 = (p0 >> np.uint64(32)) ^ c3 ^ key1
                n3 = p0 & mask
                c0, c1, c2, c3 = n0, n1, n2, n3
            out[b, 4 * block] = np.uint32(c0)
            out[b, 4 * block + 1] = np.uint32(c1)
            out[b, 4 * block + 2] = np.uint32(c2)
            out[b, 4 * block + 3] = np.uint32(c3)
    return out[:, :n_words]


def stream_words(where: str, seed, purpose: str, epoch: int, example_ids: np.ndarray,
                 n_words: int) -> np.ndarray:
    """uint32 (B, n_words): row ``b`` is word 0.. of stream (seed, purpose, epoch, example b).

    Equal, word for word, to ``refmask.rng.random_words(seed, stream_name(...), n_words)``.
    """
    seed = check_int(where, "seed", seed, minimum=0, maximum=2**64 - 1,
                     rule="an int with 0 <= seed < 2**64")
    if purpose not in PURPOSES:
        raise ValueError(f"{where}: unknown stream purpose {purpose!r}")
    # SHA-256 of "<prefix><example id>": hash the shared prefix once, then copy per row
    prefix = hashlib.sha256(_stream_prefix(purpose, epoch).encode("utf-8"))
    digests = []
    for example in example_ids.tolist():
        row = prefix.copy()
        row.update(str(example).encode("utf-8"))
        digests.append(row.digest()[:8])
    words = np.frombuffer(b"".join(digests), dtype="<u4").reshape(-1, 2).astype(np.uint64)
    h0, h1 = np.ascontiguousarray(words[:, 0]), np.ascontiguousarray(words[:, 1])
    return _philox_rows(np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), h0, h1,
                        int(n_words))
