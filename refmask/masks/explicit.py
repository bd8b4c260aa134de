"""An explicit boolean keep array, as given (True = attend).

    explicit([[0,0,0,0,0],         the "dynamic mask" example of the masking articles:
              [1,1,1,1,1], ...])   row 0 keeps nothing -- an empty row
        01234
      0 ·····
      1 █████
      2 █████
      3 █████
      4 █████

The array must already be bool: 0/1 integers, additive floats and "True = masked" arrays are
refused rather than guessed at; convert them with :mod:`refmask.convert`, which names the
polarity. Shapes broadcast to (B, H, Tq, Tk): a 2-D array is (Tq, Tk), a (B, 1, 1, Tk) array is
a per-batch key mask, and so on.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_bool_array, check_int_vector
from ._base import Mask, classify_by_evaluation


@dataclass(frozen=True, repr=False, eq=False)
class Explicit(Mask):
    """keep iff ``array[b, h, i, j]`` (size-1 axes broadcast)."""

    array: np.ndarray
    kind = "explicit"

    @property
    def batch_size(self) -> int | None:
        return self.array.shape[0] if self.array.shape[0] > 1 else None

    @property
    def num_heads(self) -> int | None:
        return self.array.shape[1] if self.array.shape[1] > 1 else None

    def __eq__(self, other) -> bool:
        return isinstance(other, Explicit) and self.array.shape == other.array.shape and bool(
            np.array_equal(self.array, other.array))

    def __hash__(self) -> int:
        return hash((self.array.shape, self.array.tobytes()))

    def check_lengths(self, q_len: int, k_len: int) -> None:
        """The keep array's last two axes are Tq and Tk (or 1, broadcast)."""
        rows, cols = self.array.shape[2:]
        for axis, size, length in (("Tq", rows, q_len), ("Tk", cols, k_len)):
            if size not in (1, length):
                raise ValueError(f"explicit: keep array has {axis} = {size} but the attention "
                                 f"has {axis} = {length}")

    def _keep(self, grid, b, h, i, j):
        batch, heads, rows, cols = self.array.shape
        self.check_lengths(grid.q_len, grid.k_len)
        xp = grid.xp
        flat = xp.asarray(self.array.reshape(-1), device=grid.device)
        # Size-1 axes broadcast: their index is always 0.
        index = (((b if batch > 1 else b * 0) * heads + (h if heads > 1 else h * 0)) * rows
                 + (i if rows > 1 else i * 0)) * cols + (j if cols > 1 else j * 0)
        return xp.reshape(xp.take(flat, xp.reshape(index, (-1,)), axis=0), index.shape)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return classify_by_evaluation(self, b, h, q0, q1, k0, k1, q_len, k_len)

    def _params(self) -> dict:
        packed = np.packbits(self.array.reshape(-1), bitorder="little")
        return {"shape": list(self.array.shape), "bits": base64.b64encode(packed).decode("ascii")}

    def __repr__(self) -> str:
        return f"explicit(<bool array of shape {tuple(self.array.shape)}>)"


def explicit(keep: ArrayLike) -> Explicit:
    """Mask from a bool array broadcastable to (B, H, Tq, Tk), True = attend (2 to 4 dims)."""
    array = check_bool_array("explicit", "keep", keep)
    if not 2 <= array.ndim <= 4:
        raise ValueError(f"explicit: keep must have 2 to 4 dims (…, Tq, Tk), got shape "
                         f"{array.shape}")
    array = array.reshape((1,) * (4 - array.ndim) + array.shape)
    array.setflags(write=False)
    return Explicit(array)


def explicit_from_json(shape: Sequence[int], bits: str) -> Explicit:
    """Inverse of ``Explicit._params``: unpack little-endian bits into a bool array.

    shape: [B, H, Tq, Tk], ints >= 0; bits: base64 of ceil(B*H*Tq*Tk / 8) bytes. Both are
    checked before anything of that size is allocated."""
    if not isinstance(shape, (list, tuple)) or len(shape) != 4:
        raise ValueError(f"explicit: shape must be a list [B, H, Tq, Tk] of 4 ints, got "
                         f"{shape!r:.80}")
    shape = check_int_vector("explicit", "shape", list(shape), minimum=0)
    if not isinstance(bits, str):
        raise ValueError(f"explicit: bits must be base64 text, got {type(bits).__name__}")
    count = int(np.prod(shape, dtype=object))
    if (count + 7) // 8 > (len(bits) * 3) // 4 + 3:
        raise ValueError(f"explicit: bits holds at most {(len(bits) * 3) // 4} bytes, expected "
                         f"{(count + 7) // 8} for shape {list(shape)}")
    try:
        raw = np.frombuffer(base64.b64decode(str(bits).encode("ascii"), validate=True),
                            dtype=np.uint8)
    except (ValueError, UnicodeEncodeError) as error:
        raise ValueError(f"explicit: bits must be base64 text, got {str(bits)[:40]!r}: "
                         f"{error}") from None
    if raw.size != (count + 7) // 8:
        raise ValueError(f"explicit: bits holds {raw.size} bytes, expected {(count + 7) // 8} for "
                         f"shape {shape}")
    array = np.unpackbits(raw, count=count, bitorder="little").astype(bool).reshape(shape)
    return explicit(array)
