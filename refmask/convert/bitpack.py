"""(g) Bit-packed keep masks, little bit order: FlashInfer ``packed_custom_mask``.

FlashInfer packs the row-major flattened mask of a request as one bit stream (bit ``t`` is bit
``t % 8`` of byte ``t // 8``); :func:`pack_rows` is the row-aligned variant (each row its own
bytes). Padding bits must be zero on the way back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_bool_numpy, check_int, check_int_array

__all__ = [
    "pack_flashinfer",
    "unpack_flashinfer",
    "pack_flashinfer_batch",
    "unpack_flashinfer_batch",
    "pack_rows",
    "unpack_rows",
]


def _check_padding_bits(where: str, bits: np.ndarray, count: int) -> None:
    if np.any(bits[..., count:]):
        raise ValueError(f"{where}: packed has non-zero padding bits after the first {count} "
                         "bits of a segment; it was not produced by packbits")


def pack_flashinfer(keep: ArrayLike) -> np.ndarray:
    """FlashInfer ``packed_custom_mask`` of one request: ``packbits(keep.reshape(-1), "little")``.

    keep: bool (qo_len, kv_len), True = keep. FlashInfer flattens the whole mask row-major and
    packs it as ONE bit stream (``single_prefill_with_kv_cache``): bit ``t = i * kv_len + j``
    is bit ``t % 8`` (least significant first) of byte ``t // 8``; rows are not byte-aligned.
    Returns uint8 of shape ((qo_len * kv_len + 7) // 8,).
    """
    array = check_bool_numpy("pack_flashinfer", "keep", keep, min_ndim=2)
    if array.ndim != 2:
        raise ValueError(f"pack_flashinfer: keep must have shape (qo_len, kv_len), got "
                         f"{array.shape}")
    return np.packbits(array.reshape(-1), bitorder="little")


def unpack_flashinfer(packed: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`pack_flashinfer`: ``keep[i, j] = bit (i*kv_len + j)`` of the stream.

    packed: uint8 of shape ((qo_len * kv_len + 7) // 8,); shape: (qo_len, kv_len).
    Padding bits past ``qo_len * kv_len`` must be zero.
    """
    where = "unpack_flashinfer"
    q_len, k_len = _shape2(where, shape)
    data = _uint8(where, packed)
    count = q_len * k_len
    if data.shape != ((count + 7) // 8,):
        raise ValueError(f"{where}: packed must have shape ({(count + 7) // 8},) for shape "
                         f"{(q_len, k_len)}, got {data.shape}")
    bits = np.unpackbits(data, bitorder="little")
    _check_padding_bits(where, bits, count)
    return bits[:count].astype(bool).reshape(q_len, k_len)


def pack_flashinfer_batch(keeps: Iterable[ArrayLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch prefill ``segment_packbits``: one little-order bit stream per request.

    keeps: a sequence of bool (qo_len[n], kv_len[n]) masks. Returns ``(packed, mask_indptr,
    packed_indptr)``: ``mask_indptr[n+1] - mask_indptr[n] = qo_len[n] * kv_len[n]`` (FlashInfer's
    ``_compute_mask_indptr``, in bits) and ``packed_indptr[n+1] - packed_indptr[n] =
    (qo_len[n] * kv_len[n] + 7) // 8`` (in bytes); request n is
    ``pack_flashinfer(keeps[n]) == packed[packed_indptr[n]:packed_indptr[n+1]]``.
    """
    where = "pack_flashinfer_batch"
    if isinstance(keeps, (str, bytes)) or not isinstance(keeps, Iterable) or (
            isinstance(keeps, np.ndarray) and keeps.ndim < 3):
        raise TypeError(f"{where}: keeps must be a sequence of bool (qo_len, kv_len) arrays, "
                        f"got {type(keeps).__name__}")
    parts = []
    for n, keep in enumerate(keeps):
        array = check_bool_numpy(where, f"keeps[{n}]", keep, min_ndim=2)
        if array.ndim != 2:
            raise ValueError(f"{where}: keeps[{n}] must have shape (qo_len, kv_len), got "
                             f"{array.shape}")
        parts.append(array)
    sizes = np.array([p.size for p in parts], dtype=np.int64)
    if int(sizes.sum()) >= 2**31:  # FlashInfer's indptr arrays are int32: never wrap
        raise ValueError(f"{where}: the masks hold {int(sizes.sum())} bits in all, more than "
                         "the int32 mask_indptr can address (2**31 - 1)")
    packed = [np.packbits(p.reshape(-1), bitorder="little") for p in parts]
    mask_indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    packed_indptr = np.concatenate([[0], np.cumsum((sizes + 7) // 8)]).astype(np.int32)
    data = np.concatenate(packed) if packed else np.zeros(0, dtype=np.uint8)
    return data.astype(np.uint8), mask_indptr, packed_indptr


def unpack_flashinfer_batch(packed: ArrayLike, packed_indptr: ArrayLike,
                            shapes: Iterable[tuple[int, int]]) -> list:
    """Inverse of :func:`pack_flashinfer_batch`: request n is
    ``unpack_flashinfer(packed[packed_indptr[n]:packed_indptr[n+1]], shapes[n])``."""
    where = "unpack_flashinfer_batch"
    data = _uint8(where, packed)
    indptr = check_int_array(where, "packed_indptr", packed_indptr, ndim=1)
    shapes = list(shapes)
    if indptr.size != len(shapes) + 1 or indptr[0] != 0 or indptr[-1] != data.size or np.any(
            np.diff(indptr) < 0):
        raise ValueError(f"{where}: packed_indptr must hold len(shapes) + 1 = {len(shapes) + 1} "
                         f"non-decreasing offsets from 0 to packed.size = {data.size}, got "
                         f"{indptr.tolist()}")
    return [unpack_flashinfer(data[indptr[n]:indptr[n + 1]], shape)
            for n, shape in enumerate(shapes)]


def pack_rows(keep: ArrayLike) -> np.ndarray:
    """Row-aligned bit packing: ``out[..., i, j // 8]`` bit ``j % 8`` = ``keep[..., i, j]``.

    keep: bool (..., Tq, Tk). Each row gets its own ``(Tk + 7) // 8`` bytes, little bit order
    (NumPy ``packbits(axis=-1, bitorder="little")``). This is NOT FlashInfer's layout, which
    packs the whole flattened mask as one stream (:func:`pack_flashinfer`); the two coincide
    exactly when ``Tk % 8 == 0`` or Tq == 1. Returns uint8 (..., Tq, (Tk + 7) // 8).
    """
    array = check_bool_numpy("pack_rows", "keep", keep, min_ndim=1)
    return np.packbits(array, axis=-1, bitorder="little")


def unpack_rows(packed: ArrayLike, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`pack_rows`: ``keep[..., i, j] = (packed[..., i, j // 8] >> (j % 8)) & 1``.

    shape: the keep shape (..., Tq, Tk); packed must be uint8 (..., Tq, (Tk + 7) // 8) with
    zero padding bits.
    """
    where = "unpack_rows"
    data = _uint8(where, packed)
    shape = tuple(check_int(where, "shape", n, minimum=0) for n in shape)
    if not shape:
        raise ValueError(f"{where}: shape must have at least one dim")
    expected = shape[:-1] + ((shape[-1] + 7) // 8,)
    if data.shape != expected:
        raise ValueError(f"{where}: packed must have shape {expected} for shape {shape}, got "
                         f"{data.shape}")
    bits = np.unpackbits(data, axis=-1, bitorder="little")
    _check_padding_bits(where, bits, shape[-1])
    return bits[..., :shape[-1]].astype(bool)


def _uint8(where: str, packed) -> np.ndarray:
    data = np.asarray(packed)
    if data.dtype != np.uint8:
        raise TypeError(f"{where}: packed must be a uint8 array, got dtype {data.dtype}")
    return data


def _shape2(where: str, shape) -> tuple[int, int]:
    try:
        q_len, k_len = shape
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: shape must be (qo_len, kv_len), got {shape!r}") from error
    return (check_int(where, "shape[0]", q_len, minimum=0),
            check_int(where, "shape[1]", k_len, minimum=0))
