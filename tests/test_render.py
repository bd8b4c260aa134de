"""Tests of refmask.render: text pictures, the PNG writer/reader and render_mask."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from _png import read_png
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refmask.render import render_mask, to_png, to_text

KEEP = (40, 70, 160)
DROP = (240, 240, 240)
EMPTY = (250, 210, 210)
GRID = (190, 190, 190)
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def causal(n: int) -> np.ndarray:
    return np.tril(np.ones((n, n), dtype=bool))


def empty_first_row() -> np.ndarray:
    """3 x 5: row 0 keeps nothing, row 1 keeps keys 0-1, row 2 keeps keys 1-4."""
    keep = np.zeros((3, 5), dtype=bool)
    keep[1, :2] = True
    keep[2, 1:] = True
    return keep


def chunks(data: bytes) -> list[tuple[bytes, bytes, int]]:
    """Split a PNG into (type, body, stored CRC) without using refmask.render."""
    assert data[:8] == SIGNATURE
    out, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        out.append((kind, body, crc))
        offset += 12 + length
    assert offset == len(data)
    return out


def grey_png(pixels: np.ndarray) -> bytes:
    """An independent encoder: 8-bit greyscale PNG (colour type 0), filter type 0."""
    height, width = pixels.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + row.tobytes() for row in pixels.astype(np.uint8))
    return (
        SIGNATURE
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# -- text -----------------------------------------------------------------------------------
def test_text_causal_4x4():
    expected = "  0123\n0 █···\n1 ██··\n2 ███·\n3 ████"
    assert to_text(causal(4)) == expected


def test_text_empty_first_row_3x5():
    expected = "  01234\n0 ·····  (empty row)\n1 ██···\n2 ·████"
    assert to_text(empty_first_row()) == expected


def test_text_ascii_and_no_labels():
    assert to_text(empty_first_row(), ascii=True) == (
        "  01234\n0 .....  (empty row)\n1 ##...\n2 .####"
    )
    assert to_text(empty_first_row(), ascii=True, row_labels=False) == (
        "01234\n.....  (empty row)\n##...\n.####"
    )
    assert to_text(causal(2), ascii=True, col_labels=False) == "0 #.\n1 ##"
    assert to_text(causal(2), ascii=True, row_labels=False, col_labels=False) == "#.\n##"


def test_text_custom_chars():
    assert to_text(causal(2), keep_char="x", drop_char=" ", col_labels=False) == "0 x \n1 xx"
    assert to_text(causal(2), keep_char="1", drop_char="0", ascii=True) == ("  01\n0 10\n1 11")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep_char": "##"},
        {"drop_char": ""},
        {"keep_char": "\n"},
        {"keep_char": "·", "drop_char": "·"},
        {"keep_char": "■", "ascii": True},
    ],
)
def test_text_bad_chars(kwargs):
    with pytest.raises(ValueError, match="char"):
        to_text(causal(2), **kwargs)


def test_text_labels_wider_than_one_digit():
    keep = np.zeros((11, 12), dtype=bool)
    keep[10, 11] = True
    text = to_text(keep, ascii=True).split("\n")
    assert text[0] == "   012345678901"
    assert text[1] == " 0 ............  (empty row)"
    assert text[10] == " 9 ............  (empty row)"
    assert text[11] == "10 ...........#"
    assert len(text) == 12


def test_text_selects_batch_and_head():
    keep = np.zeros((2, 3, 4, 4), dtype=bool)
    keep[1, 2] = causal(4)
    keep[0, 0] = True
    assert to_text(keep, batch=1, head=2) == to_text(causal(4))
    assert to_text(keep) == to_text(np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="batch"):
        to_text(keep, batch=2)
    with pytest.raises(ValueError, match="head"):
        to_text(keep, head=3)
    with pytest.raises(ValueError, match="batch"):
        to_text(causal(4), batch=1)
    with pytest.raises(ValueError, match="batch"):
        to_text(keep, batch=-1)


def test_text_zero_length():
    assert to_text(np.zeros((0, 4), dtype=bool)) == "(empty mask: Tq=0, Tk=4; nothing to draw)"
    assert to_text(np.zeros((3, 0), dtype=bool)) == (
        "(empty mask: Tq=3, Tk=0; every query row is empty)"
    )
    assert to_text(np.zeros((1, 1, 0, 0), dtype=bool)) == (
        "(empty mask: Tq=0, Tk=0; nothing to draw)"
    )


@pytest.mark.parametrize("func", [to_text, to_png])
@pytest.mark.parametrize(
    "keep",
    [
        np.tril(np.ones((3, 3), dtype=np.int64)),
        np.tril(np.ones((3, 3), dtype=np.uint8)),
        np.tril(np.ones((3, 3), dtype=np.float32)),
        np.where(causal(3), 0.0, -np.inf),
        [[1, 0], [1, 1]],
        None,
    ],
)
def test_non_bool_keep_is_refused(func, keep):
    with pytest.raises(TypeError, match="keep"):
        func(keep)


@pytest.mark.parametrize("func", [to_text, to_png])
@pytest.mark.parametrize("shape", [(), (4,), (2, 4, 4), (1, 1, 1, 4, 4)])
def test_wrong_ndim_is_refused(func, shape):
    with pytest.raises(ValueError, match="keep"):
        func(np.ones(shape, dtype=bool))


def test_nested_bool_lists_are_accepted():
    assert to_text([[True, False], [True, True]]) == to_text(causal(2))


# -- PNG structure and pixels ---------------------------------------------------------------
def test_png_structure_checked_independently():
    keep = empty_first_row()  # Tq = 3, Tk = 5
    data = to_png(keep, cell=4)
    assert data[:8] == SIGNATURE
    parts = chunks(data)
    assert [kind for kind, _, _ in parts] == [b"IHDR", b"IDAT", b"IEND"]
    for kind, body, crc in parts:
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
    width, height, depth, colour, compression, filt, interlace = struct.unpack(
        ">IIBBBBB", parts[0][1]
    )
    # 1-px grid lines between cells: Tk * cell + (Tk - 1) by Tq * cell + (Tq - 1)
    assert (width, height) == (5 * 4 + 4, 3 * 4 + 2)
    assert (depth, colour, compression, filt, interlace) == (8, 2, 0, 0, 0)
    assert parts[2][1] == b""
    raw = zlib.decompress(parts[1][1])
    stride = 1 + 3 * width
    assert len(raw) == height * stride
    assert all(raw[y * stride] == 0 for y in range(height))  # filter type 0 on every row
    mine = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride)[:, 1:]
    np.testing.assert_array_equal(read_png(data), mine.reshape(height, width, 3))


def test_png_pixel_colours():
    keep = empty_first_row()
    cell = 4
    pixels = read_png(to_png(keep, cell=cell))
    assert pixels.dtype == np.uint8
    assert pixels.shape == (14, 24, 3)
    pitch = cell + 1

    def block(i, j):
        return pixels[i * pitch : i * pitch + cell, j * pitch : j * pitch + cell].reshape(-1, 3)

    for j in range(5):
        assert (block(0, j) == EMPTY).all()  # empty row, every cell tinted
    assert (block(1, 0) == KEEP).all()
    assert (block(1, 1) == KEEP).all()
    assert (block(1, 2) == DROP).all()
    assert (block(2, 0) == DROP).all()
    assert (block(2, 4) == KEEP).all()
    # grid lines: column 4 and row 4 (between cells) are grid colour everywhere
    assert (pixels[:, 4] == GRID).all()
    assert (pixels[4, :] == GRID).all()
    assert (pixels[9, :] == GRID).all()
    assert (pixels[:, 19] == GRID).all()


@pytest.mark.parametrize(
    ("cell", "grid", "size"),
    [
        (1, True, (5, 3)),
        (3, True, (15, 9)),
        (4, False, (20, 12)),
        (4, True, (24, 14)),
        (8, True, (44, 26)),
    ],
)
def test_png_size(cell, grid, size):
    _, body, _ = chunks(to_png(empty_first_row(), cell=cell, grid=grid))[0]
    assert struct.unpack(">II", body[:8]) == size


def test_png_without_grid_is_plain_blocks():
    keep = empty_first_row()
    pixels = read_png(to_png(keep, cell=3, grid=True))  # cell < 4: no grid lines
    colours = np.where(keep[..., None], KEEP, DROP)
    colours[0] = EMPTY
    np.testing.assert_array_equal(pixels, np.repeat(np.repeat(colours, 3, 0), 3, 1))


def test_png_selects_batch_and_head():
    keep = np.zeros((2, 2, 3, 5), dtype=bool)
    keep[1, 1] = empty_first_row()
    assert to_png(keep, batch=1, head=1, cell=2) == to_png(empty_first_row(), cell=2)
    with pytest.raises(ValueError, match="head"):
        to_png(keep, head=2)


@settings(max_examples=60, deadline=None)
@given(
    keep=hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9)),
    cell=st.integers(1, 6),
    grid=st.booleans(),
)
def test_png_round_trip_recovers_mask(keep, cell, grid):
    pixels = read_png(to_png(keep, cell=cell, grid=grid))
    pitch = cell + (1 if grid and cell >= 4 else 0)
    corners = pixels[::pitch, ::pitch]  # top-left pixel of every cell
    assert corners.shape[:2] == keep.shape
    np.testing.assert_array_equal((corners == KEEP).all(-1), keep)
    empty_rows = ~keep.any(axis=1)
    np.testing.assert_array_equal(
        (corners == EMPTY).all(-1), np.repeat(empty_rows[:, None], keep.shape[1], axis=1)
    )


def test_read_png_reads_independent_grey_png():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    pixels = read_png(grey_png(grey))
    assert pixels.shape == (3, 4, 1)
    np.testing.assert_array_equal(pixels[..., 0], grey)


def test_read_png_detects_corruption():
    data = to_png(empty_first_row(), cell=4)
    parts = chunks(data)
    idat_start = 8 + 12 + len(parts[0][1]) + 8  # first byte of the IDAT body
    for position in (16, 20, idat_start + 3, len(data) - 6):  # IHDR, IDAT, IEND bytes
        bad = bytearray(data)
        bad[position] ^= 0x01
        with pytest.raises(ValueError, match="CRC"):
            read_png(bytes(bad))
    with pytest.raises(ValueError, match="signature"):
        read_png(b"\x89PNG\r\n\x1a\x00" + data[8:])
    with pytest.raises(ValueError):
        read_png(data[:-5])
    with pytest.raises(ValueError, match="trailing"):
        read_png(data + b"\x00")
    with pytest.raises(TypeError, match="data"):
        read_png("not bytes")


def test_read_png_rejects_nonzero_filter_with_valid_crc():
    grey = np.zeros((2, 3), dtype=np.uint8)
    data = bytearray(grey_png(grey))
    parts = chunks(bytes(data))
    raw = bytearray(zlib.decompress(parts[1][1]))
    raw[4] = 1  # row 1 filter type 1 (Sub)
    body = zlib.compress(bytes(raw))
    idat = (
        struct.pack(">I", len(body))
        + b"IDAT"
        + body
        + struct.pack(">I", zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF)
    )
    rebuilt = SIGNATURE + data[8 : 8 + 25] + idat + data[-12:]
    with pytest.raises(ValueError, match="filter"):
        read_png(bytes(rebuilt))


# -- PNG files ------------------------------------------------------------------------------
def test_png_write_atomic_and_no_overwrite(tmp_path):
    target = tmp_path / "mask.png"
    data = to_png(causal(4), target, cell=4)
    assert target.read_bytes() == data
    assert os.listdir(tmp_path) == ["mask.png"]  # no temporary file left behind

    with pytest.raises(FileExistsError, match="mask.png"):
        to_png(empty_first_row(), target, cell=4)
    assert target.read_bytes() == data
    assert os.listdir(tmp_path) == ["mask.png"]

    replaced = to_png(empty_first_row(), str(target), cell=4, overwrite=True)
    assert replaced != data
    assert target.read_bytes() == replaced
    assert os.listdir(tmp_path) == ["mask.png"]


def test_png_write_failures_leave_nothing(tmp_path):
    with pytest.raises(ValueError, match="cell"):
        to_png(np.ones((600, 600), dtype=bool), tmp_path / "big.png", cell=8)
    with pytest.raises(FileNotFoundError):
        to_png(causal(2), tmp_path / "missing" / "mask.png")
    (tmp_path / "adir").mkdir()
    with pytest.raises(FileExistsError, match="adir"):
        to_png(causal(2), tmp_path / "adir")
    with pytest.raises(OSError):
        to_png(causal(2), tmp_path / "adir", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["adir"]
    assert os.listdir(tmp_path / "adir") == []


@pytest.mark.parametrize(
    ("cell", "error"),
    [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError), ("8", TypeError)],
)
def test_png_bad_cell(cell, error):
    with pytest.raises(error, match="cell"):
        to_png(causal(2), cell=cell)


def test_png_too_large_names_cell():
    with pytest.raises(ValueError, match=r"cell=8.*smaller cell, at most cell=5"):
        to_png(np.ones((600, 600), dtype=bool), cell=8)
    with pytest.raises(ValueError, match=r"cell=1.*slice"):
        to_png(np.ones((4097, 4097), dtype=bool), cell=1)
    assert len(to_png(np.ones((4096, 4096), dtype=bool), cell=1)) > 0  # exactly 2**24 pixels


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (1, 1, 0, 3)])
def test_png_zero_length_is_refused(shape):
    with pytest.raises(ValueError, match="keep"):
        to_png(np.zeros(shape, dtype=bool))


# -- render_mask ----------------------------------------------------------------------------
class TinyMask:
    """Stand-in with the Mask interface: causal, or a per-head window when heads are given."""

    def __init__(self, batch_size=None, num_heads=None):
        self.batch_size = batch_size
        self.num_heads = num_heads
        self.calls = []

    def materialize(self, batch, heads, q_len, k_len, *, xp=None, device=None):
        self.calls.append((batch, heads, q_len, k_len))
        i = np.arange(q_len)[:, None]
        j = np.arange(k_len)[None, :]
        h = np.arange(heads)[:, None, None]
        keep = (j <= i) & (i - j <= h + 1)  # head h: causal window of h + 2 keys
        return np.broadcast_to(keep, (batch, heads, q_len, k_len))


class WrongShape(TinyMask):
    def materialize(self, batch, heads, q_len, k_len, *, xp=None, device=None):
        return np.ones((q_len, k_len), dtype=bool)


class IntMask(TinyMask):
    def materialize(self, batch, heads, q_len, k_len, *, xp=None, device=None):
        return np.ones((batch, heads, q_len, k_len), dtype=np.int8)


def test_render_mask_text_and_png():
    mask = TinyMask()
    assert render_mask(mask, 2, 2, ascii=True) == "  01\n0 #.\n1 ##"
    assert mask.calls == [(1, 1, 2, 2)]
    # batch/head of a broadcast mask are all the same picture
    assert render_mask(mask, 2, 2, batch=5, head=3, ascii=True) == "  01\n0 #.\n1 ##"
    png = render_mask(mask, 3, 3, fmt="png", cell=2)
    assert isinstance(png, bytes)
    assert png == to_png(causal(3) & ~np.tril(np.ones((3, 3), dtype=bool), -2), cell=2)


def test_render_mask_picks_head():
    mask = TinyMask(batch_size=2, num_heads=2)
    assert render_mask(mask, 4, 4, head=0, batch=1) == ("  0123\n0 █···\n1 ██··\n2 ·██·\n3 ··██")
    assert mask.calls == [(2, 2, 4, 4)]
    assert render_mask(mask, 4, 4, head=1) == ("  0123\n0 █···\n1 ██··\n2 ███·\n3 ·███")
    with pytest.raises(ValueError, match="head"):
        render_mask(mask, 4, 4, head=2)
    with pytest.raises(ValueError, match="batch"):
        render_mask(mask, 4, 4, batch=2)


def test_render_mask_png_to_file(tmp_path):
    target = tmp_path / "m.png"
    data = render_mask(TinyMask(), 4, 4, fmt="png", path=target, cell=4)
    assert target.read_bytes() == data
    with pytest.raises(FileExistsError, match="m.png"):
        render_mask(TinyMask(), 4, 4, fmt="png", path=target)


def test_render_mask_errors():
    with pytest.raises(ValueError, match="fmt"):
        render_mask(TinyMask(), 2, 2, fmt="svg")
    with pytest.raises(TypeError, match="materialize"):
        render_mask(np.ones((2, 2), dtype=bool), 2, 2)
    with pytest.raises(ValueError, match="shape"):
        render_mask(WrongShape(), 2, 2)
    with pytest.raises(TypeError, match="bool"):
        render_mask(IntMask(), 2, 2)
    with pytest.raises(ValueError, match="q_len"):
        render_mask(TinyMask(), -1, 2)
    assert render_mask(TinyMask(), 0, 2) == "(empty mask: Tq=0, Tk=2; nothing to draw)"
    with pytest.raises(ValueError, match="keep"):
        render_mask(TinyMask(), 0, 2, fmt="png")
