"""A minimal, checking PNG decoder for the round-trip tests of :mod:`refmask.render`.

It reads exactly the PNGs ``to_png`` writes (8-bit grey or RGB, no interlace, filter type 0)
and refuses everything else; it lives with the tests because refmask itself only writes PNGs.
Written from the PNG specification (ISO/IEC 15948), not from refmask's encoder.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from refmask.render import MAX_PIXELS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3}  # PNG colour type -> samples per pixel (grey, RGB)


def read_png(data) -> np.ndarray:
    """Decode a PNG written by :func:`refmask.render.to_png` into a uint8 array of shape (H, W, C).

    data: the file's bytes (bytes, bytearray or memoryview).

    Returns pixels with C = 3 for RGB (colour type 2) or C = 1 for grey (colour type 0).
    Only what this module writes is supported: bit depth 8, no interlace, filter type 0 on
    every row, at most ``MAX_PIXELS`` pixels; ancillary chunks are checked and skipped.
    Every chunk's CRC is verified. A bad signature, CRC, chunk order, zlib stream or size
    raises ``ValueError``; anything else outside that subset raises ``ValueError`` too.
    """
    where = "read_png"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{where}: data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{where}: data does not start with the PNG signature")

    header = None
    idat = []
    idat_closed = False
    offset = len(PNG_SIGNATURE)
    while True:
        if offset + 8 > len(data):
            raise ValueError(f"{where}: truncated chunk header at byte {offset} (no IEND)")
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise ValueError(f"{where}: chunk {kind!r} at byte {offset} is truncated")
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"{where}: CRC mismatch in chunk {kind!r} at byte {offset}")
        offset = end
        if header is None and kind != b"IHDR":
            raise ValueError(f"{where}: first chunk must be IHDR, got {kind!r}")
        if kind == b"IHDR":
            if header is not None:
                raise ValueError(f"{where}: more than one IHDR chunk")
            if length != 13:
                raise ValueError(f"{where}: IHDR must hold 13 bytes, got {length}")
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            if idat_closed:
                raise ValueError(f"{where}: IDAT chunks must be consecutive")
            idat.append(body)
        elif kind == b"IEND":
            if length:
                raise ValueError(f"{where}: IEND must be empty, got {length} bytes")
            break
        elif not kind[0:1].islower():  # unknown critical chunk (PLTE included)
            raise ValueError(f"{where}: unsupported critical chunk {kind!r}")
        if idat and kind != b"IDAT":
            idat_closed = True
    if offset != len(data):
        raise ValueError(f"{where}: {len(data) - offset} trailing bytes after IEND")
    if not idat:
        raise ValueError(f"{where}: no IDAT chunk")

    width, height, depth, colour, compression, filter_method, interlace = header
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise ValueError(f"{where}: image is {width} x {height}; need 1 to {MAX_PIXELS:,} pixels")
    if depth != 8 or colour not in _CHANNELS:
        raise ValueError(
            f"{where}: only 8-bit grey (colour type 0) or RGB (2) is supported, got bit "
            f"depth {depth}, colour type {colour}"
        )
    if compression != 0 or filter_method != 0 or interlace != 0:
        raise ValueError(
            f"{where}: unsupported compression/filter/interlace method "
            f"{compression}/{filter_method}/{interlace}"
        )

    channels = _CHANNELS[colour]
    stride = 1 + width * channels
    expected = height * stride
    stream = zlib.decompressobj()
    try:
        raw = stream.decompress(b"".join(idat), expected + 1)
    except zlib.error as error:
        raise ValueError(f"{where}: corrupt zlib stream in IDAT: {error}") from None
    if len(raw) != expected or not stream.eof or stream.unconsumed_tail or stream.unused_data:
        raise ValueError(
            f"{where}: IDAT holds {len(raw)} bytes of image data (stream "
            f"{'complete' if stream.eof else 'incomplete'}), expected {expected}"
        )
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride)
    filters = rows[:, 0]
    if filters.any():
        bad = int(np.flatnonzero(filters)[0])
        raise ValueError(
            f"{where}: row {bad} uses filter type {int(filters[bad])}; only type 0 (None) "
            "is supported"
        )
    return rows[:, 1:].reshape(height, width, channels).copy()
