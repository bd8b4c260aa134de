"""Shared machinery of the fast forward and backward: tile layouts, work splitting, threads.

Forward: every thread (the calling one and ``threads - 1`` pool threads) runs the kernel
once over all work items, taking the next item from a queue shared through an atomic counter
(``_kernels.claim_item``) when it finishes one. Backward: work items are split into
contiguous chunks of about equal cost (cost = tiles computed + 1), a few chunks per thread,
which a thread pool runs. Either way the kernels release the GIL, and a thread slowed by
other load on the machine takes less of the work.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._blas import single_threaded_blas

#: Tile shape (queries x keys) used for a side the caller leaves out when giving the other.
DEFAULT_Q_TILE = 112
DEFAULT_K_TILE = 128

#: Chunks handed out per thread (dynamic load balancing under outside load).
_CHUNKS_PER_THREAD = 8

#: Environment variable of the debug switch that fills every scratch buffer with NaN.
POISON_ENV = "REFMASK_FAST_POISON"


@dataclass(frozen=True)
class TileStats:
    """What a fast-path call computed (the instrumentation the tests read).

    full_tiles / partial_tiles: tiles computed (forward: once per (b, h, tile); backward:
    again for the recomputation); empty_tiles: tiles skipped over every (b, h);
    keep_pairs: (i, j) pairs given to ``mask.keep`` (only for PARTIAL tiles); maps: distinct
    tile maps classified; waves: keep-block waves run.
    """

    full_tiles: int = 0
    partial_tiles: int = 0
    empty_tiles: int = 0
    keep_pairs: int = 0
    maps: int = 0
    waves: int = 0

    def __add__(self, other: TileStats) -> TileStats:
        return TileStats(*(a + b for a, b in zip(self.__dict__.values(), other.__dict__.values(),
                                                  strict=True)))


def default_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def poison_requested() -> bool:
    """Whether REFMASK_FAST_POISON asks for NaN-filled scratch buffers ("1"; unset, "" or "0":
    no). Read at every fast-path call, so a test can switch it on for its own calls.

    With it, every buffer a kernel or the driver allocates without initialising (tiles,
    row statistics, per-tile outputs) starts as NaN: a kernel that reads an entry it has not
    written gives NaN in its result, deterministically, instead of whatever the allocator
    returned (debugging and CI; it costs one fill per buffer).
    """
    value = os.environ.get(POISON_ENV, "")
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise ValueError(f"fast path: environment variable {POISON_ENV} must be '1' (NaN-filled "
                     f"scratch buffers) or '0'/unset, got {value!r}")


def scratch(shape: tuple, poison: bool) -> np.ndarray:
    """An uninitialised float64 array (NaN-filled when ``poison``)."""
    return np.full(shape, np.nan) if poison else np.empty(shape)


def tile_sizes(q_len: int, k_len: int, q_tile: int | None, k_tile: int | None):
    """(Bq, Bk): the requested (or default) tile shape, shrunk to the sequence lengths."""
    q_tile = DEFAULT_Q_TILE if q_tile is None else int(q_tile)
    k_tile = DEFAULT_K_TILE if k_tile is None else int(k_tile)
    if q_tile < 1 or k_tile < 1:
        raise ValueError(f"fast path: tile sizes must be >= 1, got q_tile={q_tile}, "
                         f"k_tile={k_tile}")
    return max(1, min(q_tile, q_len)), max(1, min(k_tile, k_len))


def to_tiles(x: np.ndarray, tile: int, count: int, fill: float = 0.0) -> np.ndarray:
    """(B, H, T, ...) -> C-contiguous (B, H, count, tile, ...), padded with ``fill``; a view
    when x is C-contiguous and T == count * tile (no copy)."""
    batch, heads, length = x.shape[:3]
    rest = x.shape[3:]
    if length == count * tile and x.flags.c_contiguous:
        return x.reshape((batch, heads, count, tile) + rest)
    out = np.full((batch, heads, count * tile) + rest, fill, dtype=np.float64)
    out[:, :, :length] = x
    return out.reshape((batch, heads, count, tile) + rest)


def padded_rows(x: np.ndarray, tile: int, count: int) -> np.ndarray:
    """(B, H, T, D) -> C-contiguous (B, H, count * tile, D), zero-padded (a view when x is
    C-contiguous and T == count * tile)."""
    tiles = to_tiles(x, tile, count)
    return tiles.reshape(tiles.shape[:2] + (count * tile,) + tiles.shape[4:])


def transposed_tiles(tiles: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """(B, H, count, tile, D) -> C-contiguous (B, H, count, D, tile) = factor * each tile
    transposed, so that products with it are NN (OpenBLAS runs NN tiles fastest)."""
    out = np.empty(tiles.shape[:3] + (tiles.shape[4], tiles.shape[3]))
    if factor == 1.0:
        out[...] = np.swapaxes(tiles, -1, -2)
    else:
        np.multiply(np.swapaxes(tiles, -1, -2), factor, out=out)
    return out


def from_tiles(x: np.ndarray, length: int) -> np.ndarray:
    """(B, H, count, tile, ...) -> (B, H, length, ...) (a view)."""
    batch, heads, count, tile = x.shape[:4]
    return x.reshape((batch, heads, count * tile) + x.shape[4:])[:, :, :length]


def split_work(items: np.ndarray, cost: np.ndarray, threads: int) -> list:
    """Contiguous chunks of ``items`` with about equal total ``cost``."""
    if items.shape[0] == 0:
        return []
    chunks = max(1, min(items.shape[0], threads * _CHUNKS_PER_THREAD if threads > 1 else 1))
    total = np.cumsum(cost, dtype=np.float64)
    cuts = np.searchsorted(total, total[-1] * np.arange(1, chunks) / chunks, side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [items.shape[0]]]))
    return [np.ascontiguousarray(items[a:b]) for a, b in zip(bounds[:-1], bounds[1:],
                                                             strict=True) if b > a]


def run_chunks(run_chunk, chunks: list, threads: int) -> list:
    """``[run_chunk(chunk) for chunk in chunks]``, on ``threads`` threads, with SciPy's BLAS
    single-threaded meanwhile (see ``_blas``)."""
    with single_threaded_blas():
        if threads <= 1 or len(chunks) <= 1:
            return [run_chunk(chunk) for chunk in chunks]
        with ThreadPoolExecutor(max_workers=min(threads, len(chunks))) as pool:
            return list(pool.map(run_chunk, chunks))


def run_workers(run_worker, workers: int) -> list:
    """``[run_worker() for each of workers]``, concurrently: ``workers - 1`` pool threads and
    the calling thread (no thread started for one worker), with SciPy's BLAS single-threaded
    meanwhile (see ``_blas``). The workers share their work through a queue of their own
    (the kernels' ``claim_item``), so no split is decided here."""
    with single_threaded_blas():
        if workers <= 1:
            return [run_worker()]
        with ThreadPoolExecutor(max_workers=workers - 1) as pool:
            helpers = [pool.submit(run_worker) for _ in range(workers - 1)]
            mine = run_worker()
            return [mine] + [helper.result() for helper in helpers]


def bias_array(bias) -> tuple[np.ndarray, bool]:
    """The bias as a C-contiguous 4-D float64 array (size-1 axes kept), and whether given."""
    if bias is None:
        return np.zeros((1, 1, 1, 1)), False
    bias = np.asarray(bias)
    bias = bias.reshape((1,) * (4 - bias.ndim) + tuple(bias.shape))
    return np.ascontiguousarray(bias, dtype=np.float64), True
