"""A masked batch, drawn: text for terminals and reports, PNG for pictures.

Text: one line per row, one right-aligned cell per token::

    row 0 |    1  [M]   23   ~45  =56    2    0    0

``[M]`` a token replaced by the mask id, ``~45`` replaced by the random token 45, ``=56``
selected and kept (still a label), a plain id: not selected.

PNG: one square per token (rows = batch rows, columns = positions), coloured by the
replacement code: not selected ``UNSELECTED_RGB`` light grey, MASK ``MASK_RGB`` dark blue,
RANDOM ``RANDOM_RGB`` orange, KEEP ``KEEP_RGB`` green, and padding (``pad_id`` given)
``PADDING_RGB`` white; cells separated by 1-px ``GRID_RGB`` lines when ``cell >= 4``.
"""

from __future__ import annotations

import os

import numpy as np

from .._files import write_atomic
from .._validate import check_flag, check_int
from ..render import GRID_RGB, MAX_PIXELS, _encode_rgb
from .replacement import KEEP, MASK, NOT_SELECTED, RANDOM, MaskedBatch

__all__ = ["KEEP_RGB", "MASK_RGB", "PADDING_RGB", "RANDOM_RGB", "UNSELECTED_RGB",
           "batch_to_png", "batch_to_text"]

UNSELECTED_RGB = (225, 225, 225)
MASK_RGB = (40, 70, 160)
RANDOM_RGB = (235, 140, 30)
KEEP_RGB = (60, 160, 80)
PADDING_RGB = (255, 255, 255)


def _host(where: str, batch) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, MaskedBatch):
        raise TypeError(f"{where}: batch must be a refmask.tokens.MaskedBatch, got "
                        f"{type(batch).__name__}")

    def host(x):
        return np.asarray(x.cpu() if hasattr(x, "cpu") else x)

    return host(batch.input_ids), host(batch.replacement).astype(np.int64)


def batch_to_text(batch: MaskedBatch) -> str:
    """One line per row (module docstring); ids right-aligned to the widest cell."""
    ids, codes = _host("batch_to_text", batch)
    cells = [[("[M]" if c == MASK else f"~{i}" if c == RANDOM else f"={i}" if c == KEEP
               else f"{i}") for i, c in zip(row_ids.tolist(), row_codes.tolist(), strict=True)]
             for row_ids, row_codes in zip(ids, codes, strict=True)]
    width = max((len(c) for row in cells for c in row), default=1)
    label = len(str(max(len(cells) - 1, 0)))
    return "\n".join(f"row {b:>{label}} | " + " ".join(c.rjust(width) for c in row)
                     for b, row in enumerate(cells))


def batch_to_png(batch: MaskedBatch, path: str | os.PathLike[str] | None = None, *,
                 pad_id: int | None = None, cell: int = 8,
                 overwrite: bool = False) -> bytes:
    """Draw ``batch`` as an RGB PNG (module docstring); write it atomically to ``path``."""
    where = "batch_to_png"
    ids, codes = _host(where, batch)
    cell = check_int(where, "cell", cell, minimum=1, maximum=256, rule="an int in [1, 256]")
    rows, length = codes.shape
    if rows == 0 or length == 0:
        raise ValueError(f"{where}: the batch has shape {codes.shape}; a PNG needs at least "
                         f"one row and one position")
    gap = 1 if cell >= 4 else 0
    pitch = cell + gap
    width, height = length * pitch - gap, rows * pitch - gap
    if width * height > MAX_PIXELS:
        raise ValueError(f"{where}: {width} x {height} pixels is over the limit of "
                         f"{MAX_PIXELS:,}; pass a smaller cell or draw fewer rows")
    palette = np.array([UNSELECTED_RGB, MASK_RGB, RANDOM_RGB, KEEP_RGB, PADDING_RGB, GRID_RGB],
                       dtype=np.uint8)
    picture = codes.copy()
    if pad_id is not None:
        picture[(ids == pad_id) & (codes == NOT_SELECTED)] = 4
    ys, xs = np.arange(height), np.arange(width)
    pixels = picture.take(ys // pitch, axis=0).take(xs // pitch, axis=1)
    if gap:
        pixels[ys % pitch == cell, :] = 5
        pixels[:, xs % pitch == cell] = 5
    data = _encode_rgb(palette[pixels])
    if path is not None:
        write_atomic(data, path, check_flag(where, "overwrite", overwrite), where=where)
    return data
