"""Pictures of keep masks: text for terminals and doctests, PNG for documents.

A keep mask is a bool array of shape (Tq, Tk), or (B, H, Tq, Tk) with one (batch, head)
picked out, where ``keep[i, j]`` is True when query row ``i`` may attend key column ``j``.
Pictures follow attention-gym's convention: one row per query, one column per key, the
diagonal running top-left to bottom-right.

* :func:`to_text` -- one line per query row, a column-index header and row-index labels;
  rows that keep no key at all end with ``"  (empty row)"``, because an empty row (softmax
  over nothing) is the edge case where implementations disagree.
* :func:`to_png` -- an 8-bit RGB PNG written by a small pure-Python encoder (``zlib`` +
  ``struct``); kept cells dark, dropped cells light, empty rows tinted light red.
* :func:`render_mask` -- materialise a refmask ``Mask`` and draw one (batch, head) of it.

Inputs must already be bool: 0/1 integers or floats are refused (``TypeError``), never
cast, because confusing "1 = attend" with "1 = masked out" is the bug this project hunts.

Only NumPy and the standard library are used; nothing here holds mutable module state.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._files import check_output_path, write_atomic
from ._validate import check_bool_array, check_choice, check_flag, check_int
from .masks import Mask

__all__ = [
    "heatmap_png",
    "DROP_RGB",
    "EMPTY_ROW_RGB",
    "GRID_RGB",
    "KEEP_RGB",
    "MAX_PIXELS",
    "render_mask",
    "to_png",
    "to_text",
]

KEEP_RGB = (40, 70, 160)
"""Colour of a kept cell (True = attend): dark blue."""
DROP_RGB = (240, 240, 240)
"""Colour of a dropped cell (False) in a row that keeps at least one key: light grey."""
EMPTY_ROW_RGB = (250, 210, 210)
"""Colour of every cell of an empty row (a query that keeps no key): light red."""
GRID_RGB = (190, 190, 190)
"""Colour of the 1-px grid lines between cells: mid grey."""
MAX_PIXELS = 16 * 1024 * 1024
"""Largest picture :func:`to_png` draws (width * height), 16,777,216 pixels."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GRID_MIN_CELL = 4


# -- shared input handling ------------------------------------------------------------------
def _select(where: str, keep, batch, head) -> np.ndarray:
    """Validate ``keep`` and return the 2-D (Tq, Tk) bool picture to draw."""
    array = check_bool_array(where, "keep", keep)
    batch = check_int(where, "batch", batch, minimum=0)
    head = check_int(where, "head", head, minimum=0)
    if array.ndim == 2:
        if batch != 0 or head != 0:
            raise ValueError(
                f"{where}: batch and head pick from a 4-D (B, H, Tq, Tk) keep; keep is 2-D "
                f"(Tq, Tk) with shape {array.shape}, so they must be 0, got batch={batch}, "
                f"head={head}"
            )
        return array
    if array.ndim == 4:
        n_batch, n_heads = array.shape[:2]
        if batch >= n_batch:
            raise ValueError(
                f"{where}: batch must be < B = {n_batch} for keep of shape {array.shape}, "
                f"got {batch}"
            )
        if head >= n_heads:
            raise ValueError(
                f"{where}: head must be < H = {n_heads} for keep of shape {array.shape}, got {head}"
            )
        return array[batch, head]
    raise ValueError(
        f"{where}: keep must be 2-D (Tq, Tk) or 4-D (B, H, Tq, Tk), got shape {array.shape}"
    )


# -- text -----------------------------------------------------------------------------------
def _check_char(where: str, name: str, value, ascii_only: bool) -> str:
    if not isinstance(value, str) or len(value) != 1 or not value.isprintable():
        raise ValueError(f"{where}: {name} must be one printable character, got {value!r}")
    if ascii_only and not value.isascii():
        raise ValueError(
            f"{where}: {name} must be an ASCII character when ascii=True, got {value!r}"
        )
    return value


def to_text(
    keep: ArrayLike,
    *,
    keep_char: str = "█",
    drop_char: str = "·",
    ascii: bool = False,
    row_labels: bool = True,
    col_labels: bool = True,
    batch: int = 0,
    head: int = 0,
) -> str:
    """Draw a keep mask as text, one line per query row.

    keep: bool array of shape (Tq, Tk), or (B, H, Tq, Tk) from which ``keep[batch, head]`` is
        drawn. True = query row i attends key column j. Non-bool arrays raise ``TypeError``.
    keep_char: character for a kept cell (default ``"█"``, U+2588).
    drop_char: character for a dropped cell (default ``"·"``, U+00B7).
    ascii: default False. When True the two default characters become ``"#"`` and ``"."``;
        characters passed explicitly must then be ASCII.
    row_labels: default True; prefix each line with its query index, right-aligned, and a
        space.
    col_labels: default True; start with a header line holding the units digit of every key
        index (``0123456789012...``), aligned over the cells.
    batch, head: default 0 and 0; which (B, H) slice of a 4-D keep to draw. A 2-D keep only
        accepts 0 for both.

    Rows that keep no key end with ``"  (empty row)"``. Lines are joined with ``"\\n"``, with
    no trailing newline. If Tq or Tk is 0 there is nothing to draw and the result is a single
    note line such as ``"(empty mask: Tq=0, Tk=4; nothing to draw)"``.
    """
    where = "to_text"
    picture = _select(where, keep, batch, head)
    ascii = check_flag(where, "ascii", ascii)
    row_labels = check_flag(where, "row_labels", row_labels)
    col_labels = check_flag(where, "col_labels", col_labels)
    if ascii:
        keep_char = "#" if keep_char == "█" else keep_char
        drop_char = "." if drop_char == "·" else drop_char
    keep_char = _check_char(where, "keep_char", keep_char, ascii)
    drop_char = _check_char(where, "drop_char", drop_char, ascii)
    if keep_char == drop_char:
        raise ValueError(f"{where}: keep_char and drop_char must differ, both are {keep_char!r}")

    q_len, k_len = picture.shape
    if q_len == 0 or k_len == 0:
        what = "every query row is empty" if q_len else "nothing to draw"
        return f"(empty mask: Tq={q_len}, Tk={k_len}; {what})"

    width = len(str(q_len - 1))
    lines = []
    if col_labels:
        margin = " " * (width + 1) if row_labels else ""
        lines.append(margin + "".join(str(j % 10) for j in range(k_len)))
    chars = np.array([drop_char, keep_char])[picture.astype(np.intp)]
    empty = ~picture.any(axis=1)
    for i in range(q_len):
        line = "".join(chars[i].tolist())
        if row_labels:
            line = f"{i:>{width}} {line}"
        if empty[i]:
            line += "  (empty row)"
        lines.append(line)
    return "\n".join(lines)


# -- PNG writing ----------------------------------------------------------------------------
def _layout(q_len: int, k_len: int, cell: int, grid: bool) -> tuple[int, int, int]:
    """Return (width, height, gap) in pixels; gap is 1 where grid lines are drawn, else 0."""
    gap = 1 if grid and cell >= _GRID_MIN_CELL else 0
    return k_len * cell + gap * (k_len - 1), q_len * cell + gap * (q_len - 1), gap


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _encode_rgb(pixels: np.ndarray) -> bytes:
    """Encode a uint8 (H, W, 3) array as an 8-bit RGB PNG, filter type 0 on every row."""
    height, width, _ = pixels.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # column 0: filter type 0
    rows[:, 1:] = pixels.reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            _chunk(b"IEND", b""),
        )
    )


def _draw(picture: np.ndarray, cell: int, grid: bool) -> np.ndarray:
    """Pixels, uint8 (height, width, 3), of a (Tq, Tk) bool picture."""
    q_len, k_len = picture.shape
    width, height, gap = _layout(q_len, k_len, cell, grid)
    palette = np.array([DROP_RGB, KEEP_RGB, EMPTY_ROW_RGB, GRID_RGB], dtype=np.uint8)
    codes = picture.astype(np.uint8)  # 0 = dropped, 1 = kept
    codes[~picture.any(axis=1)] = 2  # empty row
    pitch = cell + gap
    ys, xs = np.arange(height), np.arange(width)
    codes = codes.take(ys // pitch, axis=0).take(xs // pitch, axis=1)
    if gap:
        codes[ys % pitch == cell, :] = 3
        codes[:, xs % pitch == cell] = 3
    return palette[codes]


def to_png(
    keep: ArrayLike,
    path: str | os.PathLike[str] | None = None,
    *,
    cell: int = 8,
    grid: bool = True,
    batch: int = 0,
    head: int = 0,
    overwrite: bool = False,
) -> bytes:
    """Draw a keep mask as an 8-bit RGB PNG and return the file's bytes.

    keep: bool array of shape (Tq, Tk), or (B, H, Tq, Tk) from which ``keep[batch, head]`` is
        drawn. True = attend. Non-bool arrays raise ``TypeError``; Tq or Tk equal to 0 raises
        ``ValueError`` (a PNG cannot have 0 pixels).
    path: default None (only return the bytes). Otherwise a str or os.PathLike; the file is
        written atomically (temp file in the same directory, then rename).
    cell: default 8; side of one mask cell in pixels, an int >= 1.
    grid: default True; draw 1-px grid lines in ``GRID_RGB`` between neighbouring cells. Grid
        lines are only drawn when ``cell >= 4``; with smaller cells the flag is ignored.
    batch, head: default 0 and 0; which (B, H) slice of a 4-D keep to draw.
    overwrite: default False; an existing ``path`` raises ``FileExistsError`` unless True.

    Geometry: with ``gap = 1`` when grid lines are drawn and 0 otherwise, the image is
    ``Tk * cell + gap * (Tk - 1)`` pixels wide and ``Tq * cell + gap * (Tq - 1)`` high, and
    cell (i, j) covers rows ``i * (cell + gap)`` to ``i * (cell + gap) + cell - 1`` and the
    matching columns. Colours: kept ``KEEP_RGB`` (40, 70, 160), dropped ``DROP_RGB``
    (240, 240, 240), every cell of an empty row ``EMPTY_ROW_RGB`` (250, 210, 210).

    Pictures over ``MAX_PIXELS`` (16,777,216) pixels raise ``ValueError`` naming ``cell``;
    nothing is downscaled silently.
    """
    where = "to_png"
    picture = _select(where, keep, batch, head)
    cell = check_int(where, "cell", cell, minimum=1)
    grid = check_flag(where, "grid", grid)
    overwrite = check_flag(where, "overwrite", overwrite)
    q_len, k_len = picture.shape
    if q_len == 0 or k_len == 0:
        raise ValueError(
            f"{where}: keep has Tq={q_len}, Tk={k_len}; a PNG needs at least one query row "
            "and one key column (use to_text to describe an empty mask)"
        )
    width, height, _ = _layout(q_len, k_len, cell, grid)
    if width * height > MAX_PIXELS:
        hint = "even cell=1 is too large; draw a slice such as keep[..., :2048, :2048]"
        # width * height >= Tq * Tk * c**2, so no cell above this bound fits
        for smaller in range(min(cell - 1, math.isqrt(MAX_PIXELS // (q_len * k_len))), 0, -1):
            w, h, _ = _layout(q_len, k_len, smaller, grid)
            if w * h <= MAX_PIXELS:
                hint = f"pass a smaller cell, at most cell={smaller}"
                break
        raise ValueError(
            f"{where}: a {q_len} x {k_len} mask with cell={cell} is {width} x {height} = "
            f"{width * height:,} pixels, over the limit of {MAX_PIXELS:,}; {hint}"
        )
    if path is not None:  # before the drawing work: exists, directory, parent, kind
        check_output_path(path, overwrite, where=where, name="path")
    data = _encode_rgb(_draw(picture, cell, grid))
    if path is not None:
        write_atomic(data, path, overwrite)
    return data


# -- Mask objects ---------------------------------------------------------------------------
def heatmap_png(values: ArrayLike, *, cell: int = 8) -> bytes:
    """Draw a (rows, cols) array of non-negative errors as an 8-bit RGB PNG and return it.

    Colour of a cell: white for 0, shading linearly to red (230, 30, 30) at the largest finite
    value; black for +inf or NaN (a NaN/inf where a finite value was due). An array that is all
    0 is all white. cell: side of one cell in pixels, an int >= 1; rows or cols equal to 0
    raise ``ValueError``.
    """
    where = "heatmap_png"
    grid = np.asarray(values, dtype=np.float64)
    if grid.ndim != 2 or 0 in grid.shape:
        raise ValueError(f"{where}: values must be a non-empty 2-D array, got shape "
                         f"{grid.shape}")
    if isinstance(cell, bool) or not isinstance(cell, int) or cell < 1:
        raise ValueError(f"{where}: cell must be an int >= 1, got {cell!r}")
    special = ~np.isfinite(grid)
    finite = np.where(special, 0.0, np.abs(grid))
    top = finite.max()
    share = finite / top if top > 0 else finite
    white, red = np.array([255.0, 255.0, 255.0]), np.array([230.0, 30.0, 30.0])
    rgb = white + share[..., None] * (red - white)
    rgb[special] = 0.0
    pixels = np.repeat(np.repeat(np.rint(rgb).astype(np.uint8), cell, axis=0), cell, axis=1)
    return _encode_rgb(pixels)


def _size_attribute(mask, name: str) -> int | None:
    value = getattr(mask, name, None)
    if value is None:
        return None
    return check_int("render_mask", f"mask.{name}", value, minimum=1)


def render_mask(
    mask: Mask,
    q_len: int,
    k_len: int,
    *,
    batch: int = 0,
    head: int = 0,
    fmt: str = "text",
    **kw: Any,
) -> str | bytes:
    """Materialise a refmask ``Mask`` and draw one (batch, head) of it.

    mask: an object with ``materialize(batch, heads, q_len, k_len)`` returning a NumPy bool
        array of shape (B, H, Tq, Tk), and attributes ``batch_size`` and ``num_heads`` (int,
        or None when the mask is the same for every batch / head; a missing attribute counts
        as None).
    q_len, k_len: Tq and Tk, ints >= 0.
    batch, head: default 0 and 0. A mask with ``batch_size`` B needs ``batch < B``; a mask
        whose ``batch_size`` is None is the same for every batch, so any ``batch >= 0`` draws
        its single batch (likewise ``head`` with ``num_heads``).
    fmt: default ``"text"``, which returns :func:`to_text`'s str; ``"png"`` returns
        :func:`to_png`'s bytes.
    kw: passed on to :func:`to_text` or :func:`to_png` (e.g. ``ascii=True``, ``path=...``,
        ``cell=4``).

    The mask is materialised with B = ``batch_size`` (1 if None) and H = ``num_heads``
    (1 if None).
    """
    where = "render_mask"
    if not callable(getattr(mask, "materialize", None)):
        raise TypeError(
            f"{where}: mask must have a materialize(batch, heads, q_len, k_len) method, got "
            f"{type(mask).__name__}"
        )
    fmt = check_choice(where, "fmt", fmt, ("text", "png"))
    q_len = check_int(where, "q_len", q_len, minimum=0)
    k_len = check_int(where, "k_len", k_len, minimum=0)
    batch = check_int(where, "batch", batch, minimum=0)
    head = check_int(where, "head", head, minimum=0)
    n_batch = _size_attribute(mask, "batch_size")
    n_heads = _size_attribute(mask, "num_heads")
    if n_batch is not None and batch >= n_batch:
        raise ValueError(f"{where}: batch must be < mask.batch_size = {n_batch}, got {batch}")
    if n_heads is not None and head >= n_heads:
        raise ValueError(f"{where}: head must be < mask.num_heads = {n_heads}, got {head}")
    shape = (1 if n_batch is None else n_batch, 1 if n_heads is None else n_heads, q_len, k_len)
    dense = check_bool_array(f"{where}: mask.materialize", "result", mask.materialize(*shape))
    if dense.shape != shape:
        raise ValueError(
            f"{where}: mask.materialize{shape} returned shape {dense.shape}, expected {shape}"
        )
    picture = dense[batch if n_batch is not None else 0, head if n_heads is not None else 0]
    if fmt == "png":
        return to_png(picture, **kw)
    return to_text(picture, **kw)
