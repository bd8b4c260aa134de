"""Tile maps: which (query tile, key tile) pairs a kernel computes, and their keep blocks.

The index grid [0, Tq) x [0, Tk) is cut into tiles of Bq queries by Bk keys (the last ones
possibly shorter):

    tile (r, c) = [r Bq, min((r + 1) Bq, Tq)) x [c Bk, min((c + 1) Bk, Tk))

and each tile gets the mask's block code (docs/spec.md section 2.7), computed once per
distinct (b, h) over the whole grid by the mask's own vectorised ``classify``:

    EMPTY (0)    never computed
    PARTIAL (1)  computed, scores replaced by -inf where keep(b, h, i, j) is False; the keep
                 block of the tile is evaluated once, by ``mask.keep`` on the tile's indices
    FULL (2)     computed without evaluating the mask

Masks that do not depend on the batch (``batch_size is None``) or the head (``num_heads is
None``) are classified once for all batches or heads, except user predicates, which may read
b and h whatever they declare. A bool keep array is classified by counting its True entries
per tile. Memory: the codes of one band of tile rows at a time (``CLASSIFY_CHUNK_TILES``),
the lists of non-empty tiles, and the keep blocks
of the PARTIAL tiles of one *wave* of tile rows (or columns) at a time, at most
``keep_budget_bytes`` of them, so a mask with PARTIAL tiles everywhere (strided) still runs
in bounded memory.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

EMPTY, PARTIAL, FULL = 0, 1, 2

#: Keep blocks materialised at once (bytes); larger tile sets run in several waves.
DEFAULT_KEEP_BUDGET_BYTES = 64 << 20

#: Index pairs given to one ``mask.keep`` call (bounds its int64 temporaries to ~32 MB).
_KEEP_CHUNK_PAIRS = 1 << 22


@dataclass(frozen=True)
class TileGrid:
    """Tile geometry: Tq x Tk cut into Bq x Bk tiles; nq = ceil(Tq / Bq), nk = ceil(Tk / Bk)."""

    q_len: int
    k_len: int
    q_tile: int
    k_tile: int

    @property
    def n_q_tiles(self) -> int:
        return -(-self.q_len // self.q_tile)

    @property
    def n_k_tiles(self) -> int:
        return -(-self.k_len // self.k_tile)

    def q_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(q_start, q_stop) of every query tile, shape (nq,) each."""
        start = np.arange(self.n_q_tiles, dtype=np.int64) * self.q_tile
        return start, np.minimum(start + self.q_tile, self.q_len)

    def k_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(k_start, k_stop) of every key tile, shape (nk,) each."""
        start = np.arange(self.n_k_tiles, dtype=np.int64) * self.k_tile
        return start, np.minimum(start + self.k_tile, self.k_len)


@dataclass(frozen=True, eq=False)
class MaskSource:
    """What decides keep(b, h, i, j): no mask, a refmask Mask, or a bool array.

    kind: "none", "mask" or "array"; value: None, the Mask, or the bool array broadcastable
    to (B, Hq, Tq, Tk) (as given, never copied to full shape).
    """

    kind: str
    value: object = None

    def representative(self, b: int, h: int) -> tuple[int, int]:
        """The (b, h) whose tile map serves (b, h): the mask's value there is the same."""
        if self.kind == "none":
            return 0, 0
        if self.kind == "array":
            shape = self.value.shape
            padded = (1,) * (4 - len(shape)) + tuple(shape)
            return (b if padded[0] > 1 else 0), (h if padded[1] > 1 else 0)
        reads_everything = any(node.kind == "predicate" for node in mask_nodes(self.value))
        by_batch = reads_everything or self.value.batch_size is not None
        by_head = reads_everything or self.value.num_heads is not None
        return (b if by_batch else 0), (h if by_head else 0)


def mask_nodes(mask):
    """Every node of a mask tree (the mask, its parts, their parts, ...)."""
    stack = [mask]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(getattr(node, "masks", ()))
        inner = getattr(node, "mask", None)
        if inner is not None:
            stack.append(inner)


def _array_2d(source: MaskSource, b: int, h: int, grid: TileGrid) -> np.ndarray:
    """The (Tq, Tk) bool slice of an array mask for (b, h) (a broadcast view)."""
    array = source.value
    padded = array.reshape((1,) * (4 - array.ndim) + tuple(array.shape))
    plane = padded[b if padded.shape[0] > 1 else 0, h if padded.shape[1] > 1 else 0]
    return np.broadcast_to(plane, (grid.q_len, grid.k_len))


def classify_tiles(source: MaskSource, b: int, h: int, grid: TileGrid,
                   rows: tuple[int, int] | None = None) -> np.ndarray:
    """Block codes (nq, nk) int8 of every tile for batch b, query head h (of tile rows
    [rows[0], rows[1]) only, when given: shape (rows[1] - rows[0], nk)).

        code(r, c) = EMPTY if no pair of tile (r, c) is kept, FULL if all are, else PARTIAL

    exact for mask primitives and arrays, sound (never a wrong EMPTY/FULL) for combinations.
    """
    first, last = (0, grid.n_q_tiles) if rows is None else rows
    shape = (last - first, grid.n_k_tiles)
    if source.kind == "none" or 0 in shape:
        return np.full(shape, FULL, dtype=np.int8)
    q0, q1 = (bound[first:last] for bound in grid.q_bounds())
    k0, k1 = grid.k_bounds()
    if source.kind == "mask":
        codes = rectangle_codes(source, b, h, q0[:, None], q1[:, None], k0[None, :],
                                k1[None, :], grid.q_len, grid.k_len)
        return np.ascontiguousarray(np.broadcast_to(codes, shape))
    plane = _array_2d(source, b, h, grid)[first * grid.q_tile:last * grid.q_tile]
    padded = np.zeros((shape[0] * grid.q_tile, shape[1] * grid.k_tile), dtype=bool)
    padded[:plane.shape[0], :grid.k_len] = plane
    kept = padded.reshape(shape[0], grid.q_tile, shape[1], grid.k_tile).sum(axis=(1, 3))
    size = (q1 - q0)[:, None] * (k1 - k0)[None, :]
    return np.where(kept == 0, EMPTY, np.where(kept == size, FULL, PARTIAL)).astype(np.int8)


#: Tiles classified at once when planning (bounds the temporaries of ``mask.classify``, a
#: few int64 arrays of this many entries, and the int8 codes): the grid is classified in
#: bands of ``max(1, CLASSIFY_CHUNK_TILES // nk)`` tile rows, so a 1M-token grid of 64 x 64
#: tiles (2.7e8 tiles) never exists as one array.
CLASSIFY_CHUNK_TILES = 1 << 22


#: Masks whose classify evaluates keep on every tile (O(Tq * Tk) work): one tile-shape
#: candidate only, and no coarse-to-fine planning.
DATA_DEFINED_KINDS = frozenset({"documents", "explicit", "predicate"})

#: Grids of more tiles than this are planned coarse to fine (:func:`_refined_tiles`) when
#: the mask's ``classify`` is cheap per rectangle (not a data-defined mask, not an array).
REFINE_MIN_TILES = 1 << 16

#: Tiles per side of a coarse tile in :func:`_refined_tiles`.
REFINE_FACTOR = 16


def _refinable(source: MaskSource, grid: TileGrid) -> bool:
    """Whether planning goes coarse to fine: a large grid (> REFINE_MIN_TILES tiles, and
    more than one, so the coarse grid is smaller) and a mask whose classify costs O(1) per
    rectangle, whatever its area."""
    tiles = grid.n_q_tiles * grid.n_k_tiles
    return (source.kind == "mask" and tiles > max(1, REFINE_MIN_TILES)
            and not any(node.kind in DATA_DEFINED_KINDS for node in mask_nodes(source.value)))


def _refined_tiles(source: MaskSource, b: int, h: int, grid: TileGrid):
    """:func:`nonempty_tiles` coarse to fine: the grid of F x F-tile blocks
    (F = REFINE_FACTOR) is planned first; then, inside each non-EMPTY block,

        block EMPTY   -> its tiles are never listed (classify is sound: nothing kept)
        block FULL    -> its tiles are FULL, without classifying them
        block PARTIAL -> its tiles are classified

    so the work is O(non-empty blocks * F^2) instead of O(nq * nk) (a 1M-token window-4096
    grid of 64 x 64 tiles: ~1.5e6 tiles looked at instead of 2.7e8). Identical codes for
    masks whose classify is exact (every primitive); for combinations, whose classify is
    sound but not exact, a tile inside a block found FULL (EMPTY) is FULL (EMPTY), also
    sound. Blocks are expanded in groups of whole block rows of at most
    CLASSIFY_CHUNK_TILES tiles, so rows stay in row-major order.
    """
    factor = REFINE_FACTOR
    coarse = TileGrid(grid.q_len, grid.k_len, grid.q_tile * factor, grid.k_tile * factor)
    block_rows, block_cols, block_codes = nonempty_tiles(source, b, h, coarse)
    q0, q1 = grid.q_bounds()
    k0, k1 = grid.k_bounds()
    step = np.arange(factor, dtype=np.int64)
    per_group = max(1, CLASSIFY_CHUNK_TILES // (factor * factor))
    starts = np.searchsorted(block_rows, np.arange(coarse.n_q_tiles + 1))
    rows, cols, codes = [], [], []
    first = 0
    while first < coarse.n_q_tiles:
        last = first + 1  # whole block rows, at least one, up to per_group blocks
        while last < coarse.n_q_tiles and starts[last + 1] - starts[first] <= per_group:
            last += 1
        part = slice(starts[first], starts[last])
        first = last
        r = (block_rows[part, None, None] * factor + step[None, :, None])
        c = (block_cols[part, None, None] * factor + step[None, None, :])
        code = np.broadcast_to(block_codes[part, None, None], (r.shape[0], factor, factor))
        r, c = (np.broadcast_to(x, code.shape).reshape(-1) for x in (r, c))
        inside = (r < grid.n_q_tiles) & (c < grid.n_k_tiles)
        r, c, code = r[inside], c[inside], code.reshape(-1)[inside].copy()
        unsure = np.nonzero(code == PARTIAL)[0]
        if unsure.shape[0]:
            ur, uc = r[unsure], c[unsure]
            code[unsure] = rectangle_codes(source, b, h, q0[ur], q1[ur], k0[uc], k1[uc],
                                           grid.q_len, grid.k_len)
        kept = np.nonzero(code)[0]
        order = kept[np.lexsort((c[kept], r[kept]))]
        rows.append(r[order])
        cols.append(c[order])
        codes.append(code[order])
    return _joined(rows, cols, codes)


def _joined(rows: list, cols: list, codes: list):
    """The concatenated (rows, cols, codes) lists (int64, int64, int8; empty when none)."""
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8)
    return (np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64),
            np.concatenate(codes).astype(np.int8))


def nonempty_tiles(source: MaskSource, b: int, h: int, grid: TileGrid):
    """``(rows, cols, codes)`` of the non-EMPTY tiles of (b, h), row-major, from the grid
    classified band by band (:data:`CLASSIFY_CHUNK_TILES`), or coarse to fine for a large
    grid (:func:`_refined_tiles`)."""
    if _refinable(source, grid):
        return _refined_tiles(source, b, h, grid)
    band = max(1, CLASSIFY_CHUNK_TILES // max(1, grid.n_k_tiles))
    rows, cols, codes = [], [], []
    for first in range(0, grid.n_q_tiles, band):
        last = min(first + band, grid.n_q_tiles)
        code = classify_tiles(source, b, h, grid, (first, last))
        r, c = np.nonzero(code)
        rows.append(r.astype(np.int64) + first)
        cols.append(c.astype(np.int64))
        codes.append(code[r, c])
    return _joined(rows, cols, codes)


def keep_blocks(source: MaskSource, b: int, h: int, grid: TileGrid, rows: np.ndarray,
                cols: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out`` (n, Bk, Bq) bool with the transposed keep blocks of tiles
    (rows[n], cols[n]):

        out[n, jj, ii] = keep(b, h, rows[n] Bq + ii, cols[n] Bk + jj)   (False off the grid)

    with one ``mask.keep`` call for all n tiles (callers chunk; never the whole mask).
    """
    ii = np.arange(grid.q_tile, dtype=np.int64)
    jj = np.arange(grid.k_tile, dtype=np.int64)
    i = rows[:, None, None] * grid.q_tile + ii[None, None, :]
    j = cols[:, None, None] * grid.k_tile + jj[None, :, None]
    inside = (i < grid.q_len) & (j < grid.k_len)
    i = np.minimum(i, grid.q_len - 1)
    j = np.minimum(j, grid.k_len - 1)
    if source.kind == "mask":
        kept = np.asarray(source.value.keep(b, h, i, j, q_len=grid.q_len, k_len=grid.k_len))
    else:
        kept = _array_2d(source, b, h, grid)[i, j]
    np.logical_and(kept, inside, out=out)


@dataclass(frozen=True, eq=False)
class TilePlan:
    """The non-empty tiles of every distinct tile map, for one attention call.

    map_of: (B, Hq) int64, the tile map that (b, h) uses; maps: the (b, h) each map was
    computed for. Tiles of all maps are concatenated, each map's in row-major order
    (tile_map, tile_row, tile_col, tile_code, shape (n,)); ``row_ptr[m, r]`` ..
    ``row_ptr[m, r + 1]`` are map m's tiles in row r. ``by_column`` is a permutation of the
    tiles into column-major order per map, with ``col_ptr[m, c]`` .. ``col_ptr[m, c + 1]``
    indexing it. ``empty_tiles`` counts the skipped tiles of every (b, h). ``band``: the
    arithmetic keep rule of PARTIAL tiles (:func:`band_rule`), ``[0, 0, 0]`` when none.
    """

    grid: TileGrid
    source: MaskSource
    map_of: np.ndarray
    maps: tuple
    tile_map: np.ndarray
    tile_row: np.ndarray
    tile_col: np.ndarray
    tile_code: np.ndarray
    row_ptr: np.ndarray
    by_column: np.ndarray
    col_ptr: np.ndarray
    empty_tiles: int
    band: np.ndarray


#: No bound on a side of a band rule (beyond any |i + offset - j| of an int64 grid).
_UNBOUNDED = 1 << 62


def band_rule(source: MaskSource, grid: TileGrid) -> np.ndarray:
    """The keep rule of a causal or sliding-window mask as int64 numbers the kernels
    evaluate per (i, j) instead of reading keep blocks:

        band = [1, low, high, offset_0, offset_1, ...]:
        keep(b, i, j) iff low <= (i + offset_b) - j <= high       (offset_0 for every b
                                                                   when there is one)

    sliding_window(left, right): low = -right, high = left (None: unbounded);
    causal: low = 0, high unbounded; offsets: the alignment's ``offset_table``. Any other
    source (other masks, subclasses, combinations, arrays): ``[0, 0, 0]`` (keep blocks).
    """
    from ..masks.causal import Causal
    from ..masks.sliding_window import SlidingWindow

    mask = source.value
    if source.kind != "mask" or type(mask) not in (Causal, SlidingWindow):
        return np.zeros(3, dtype=np.int64)
    if type(mask) is Causal:
        low, high = 0, _UNBOUNDED
    else:
        low = -_UNBOUNDED if mask.right is None else -mask.right
        high = _UNBOUNDED if mask.left is None else mask.left
    offsets = np.asarray(mask.align.offset_table(grid.q_len, grid.k_len), dtype=np.int64)
    return np.concatenate([[1, low, high], offsets.reshape(-1)]).astype(np.int64)


def rectangle_codes(source: MaskSource, b: int, h: int, q0, q1, k0, k1, q_len: int,
                    k_len: int) -> np.ndarray:
    """Block codes (int8, the broadcast shape of the bounds) of the index rectangles
    ``[q0, q1) x [k0, k1)`` of a mask source of kind "mask" for (b, h): ``mask.classify``,
    or for a band mask (:func:`band_rule`) the same codes from the rule's numbers. The
    distances (i + offset_b) - j of a rectangle fill

        [d_min, d_max] = [q0 + offset_b - (k1 - 1), (q1 - 1) + offset_b - k0]

    so it is EMPTY iff [d_min, d_max] misses [low, high] and FULL iff it lies inside (what
    the mask's classify computes, without its argument checks and batch/head aggregation:
    a third of the planning time of the 256-key window at T = 4096)."""
    band = band_rule(source, TileGrid(q_len, k_len, 1, 1))
    if not band[0]:
        return np.asarray(source.value.classify(q0, q1, k0, k1, q_len=q_len, k_len=k_len,
                                                batch=b, head=h), dtype=np.int8)
    offset = band[3] if band.shape[0] == 4 else band[3 + b]
    d_min = q0 + (offset + 1) - k1
    d_max = (q1 - 1 + offset) - k0
    full = (d_min >= band[1]) & (d_max <= band[2])
    empty = (d_max < band[1]) | (d_min > band[2])
    return (full.astype(np.int8) - empty.astype(np.int8)) + np.int8(PARTIAL)


def tile_map_keys(source: MaskSource, batch: int, heads: int):
    """``(map_of (B, Hq) int64, maps)``: the distinct (b, h) whose tile maps serve every
    (b, h) (``maps[map_of[b, h]]``)."""
    keys: dict = {}
    map_of = np.empty((batch, heads), dtype=np.int64)
    for b in range(batch):
        for h in range(heads):
            map_of[b, h] = keys.setdefault(source.representative(b, h), len(keys))
    return map_of, tuple(keys)


def plan_tiles(source: MaskSource, batch: int, heads: int, grid: TileGrid) -> TilePlan:
    """List the non-empty tiles of every tile map (see TilePlan), each distinct (b, h)
    classified once, band by band (:func:`nonempty_tiles`)."""
    map_of, maps = tile_map_keys(source, batch, heads)
    n_q, n_k = grid.n_q_tiles, grid.n_k_tiles
    rows, cols, codes, owners = [], [], [], []
    row_ptr = np.zeros((len(maps), n_q + 1), dtype=np.int64)
    col_ptr = np.zeros((len(maps), n_k + 1), dtype=np.int64)
    empty_per_map = []
    offset = 0
    for index, (b, h) in enumerate(maps):
        r, c, code = nonempty_tiles(source, b, h, grid)
        rows.append(r)
        cols.append(c)
        codes.append(code)
        owners.append(np.full(r.shape[0], index, dtype=np.int64))
        row_ptr[index] = offset + np.concatenate(
            [[0], np.cumsum(np.bincount(r, minlength=n_q))])
        col_ptr[index] = offset + np.concatenate(
            [[0], np.cumsum(np.bincount(c, minlength=n_k))])
        empty_per_map.append(n_q * n_k - r.shape[0])
        offset += r.shape[0]
    tile_map = np.concatenate(owners) if owners else np.zeros(0, np.int64)
    tile_row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    tile_col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    tile_code = np.concatenate(codes) if codes else np.zeros(0, np.int8)
    by_column = np.lexsort((tile_row, tile_col, tile_map)).astype(np.int64)
    uses = np.bincount(map_of.reshape(-1), minlength=len(maps))
    empty_tiles = int(sum(int(uses[m]) * empty_per_map[m] for m in range(len(maps))))
    return TilePlan(grid=grid, source=source, map_of=map_of, maps=maps, tile_map=tile_map,
                    tile_row=tile_row, tile_col=tile_col, tile_code=tile_code, row_ptr=row_ptr,
                    by_column=by_column, col_ptr=col_ptr, empty_tiles=empty_tiles,
                    band=band_rule(source, grid))


#: Tile shapes (Bq, Bk) the automatic choice considers, largest first.
TILE_CANDIDATES = ((256, 256), (128, 256), (112, 128), (64, 128), (64, 64), (32, 64), (32, 32))

#: OpenBLAS (SciPy's build, SkylakeX kernels) runs a dgemm with M * N * K <= 1e6 through its
#: small-matrix kernel, without packing: 50-80 GFLOP/s per core on these tiles instead of
#: ~35 (docs/performance.md). Candidates with Bq * Bk * max(Dqk, Dv) above it are used only
#: when none fits.
SMALL_GEMM_LIMIT = 1_000_000

def span_tiles(grid: TileGrid, head_dim: int) -> int:
    """Key tiles the forward kernel joins into one product (consecutive non-empty tiles of a
    row): as many as keep ``Bq * (n Bk) * head_dim <= SMALL_GEMM_LIMIT``, at least 1."""
    fitting = SMALL_GEMM_LIMIT // max(1, grid.q_tile * grid.k_tile * head_dim)
    return int(max(1, min(grid.n_k_tiles, fitting)))


#: Cost model, in nanoseconds (measured on the development machine, 1 thread): a fixed part
#: per span of consecutive tiles that one pair of products covers (calls, per-row updates;
#: see ``span_tiles``), a fixed part per tile (its score pass), a part per computed (i, j)
#: pair, and the extra of a PARTIAL tile per pair (mask.keep on its indices, the masking).
SPAN_COST_NS, TILE_COST_NS, PAIR_COST_NS, PARTIAL_PAIR_COST_NS = 4000.0, 1000.0, 10.0, 3.0


#: Query-tile rows classified per candidate to estimate its cost (evenly spaced).
COST_SAMPLE_ROWS = 64


def _sample_rectangles(grid: TileGrid):
    """``(rows, (q0, q1, k0, k1))``: at most COST_SAMPLE_ROWS evenly spaced query-tile rows
    of the grid, and the bounds of all their tiles, broadcastable to (rows, nk)."""
    n_q = grid.n_q_tiles
    rows = np.unique(np.linspace(0, n_q - 1, min(n_q, COST_SAMPLE_ROWS)).astype(np.int64))
    (q0, q1), (k0, k1) = grid.q_bounds(), grid.k_bounds()
    return rows, (q0[rows][:, None], q1[rows][:, None], k0[None, :], k1[None, :])


def _sample_codes(source: MaskSource, b: int, h: int, grids: list, samples: list) -> list:
    """The codes (rows, nk) of each grid's sampled tiles for (b, h): FULL without a mask; a
    band mask's per grid (:func:`rectangle_codes` on the broadcast bounds); any other
    mask's from one ``mask.classify`` call for all grids (its fixed cost, ~0.2 ms, was most
    of the planning time of a 256-key window at T = 4096)."""
    shapes = [(rows.shape[0], grid.n_k_tiles) for grid, (rows, _) in zip(grids, samples,
                                                                          strict=True)]
    q_len, k_len = grids[0].q_len, grids[0].k_len
    if source.kind == "none":
        return [np.full(shape, FULL, dtype=np.int8) for shape in shapes]
    if band_rule(source, grids[0])[0]:
        return [np.broadcast_to(rectangle_codes(source, b, h, *bounds, q_len, k_len), shape)
                for (_, bounds), shape in zip(samples, shapes, strict=True)]
    bounds = (np.concatenate([np.broadcast_to(sample[1][part], shape).reshape(-1)
                              for sample, shape in zip(samples, shapes, strict=True)])
              for part in range(4))
    flat = rectangle_codes(source, b, h, *bounds, q_len, k_len)
    cuts = np.cumsum([rows * cols for rows, cols in shapes])[:-1]
    return [codes.reshape(shape) for codes, shape in zip(np.split(flat, cuts), shapes,
                                                         strict=True)]


def sampled_costs(source: MaskSource, map_of: np.ndarray, maps: tuple, grids: list,
                  spans: list) -> list:
    """Modelled run time (ns) of each tile shape ``grids[n]``, from at most
    COST_SAMPLE_ROWS query-tile rows per tile map (scaled to all nq rows), so a candidate
    costs O(rows * nk) codes:

        sum over (b, h) of  n_spans SPAN_COST + n_nonempty (TILE_COST + Bq Bk PAIR_COST)
                            + n_partial Bq Bk PARTIAL_COST

    with n_spans = sum over rows of ceil(non-empty tiles of the row / spans[n]) (tiles one
    product may cover; 1 for the backward, which computes tile by tile), the codes from
    :func:`_sample_codes`.
    """
    live = [n for n, grid in enumerate(grids) if grid.n_q_tiles and grid.n_k_tiles]
    totals = [0.0] * len(grids)
    if not live:  # Tq = 0 or Tk = 0: no tile, nothing to cost
        return totals
    samples = [_sample_rectangles(grids[n]) for n in live]
    uses = np.bincount(map_of.reshape(-1), minlength=len(maps))
    for count, (b, h) in zip(uses, maps, strict=True):
        all_codes = _sample_codes(source, b, h, [grids[n] for n in live], samples)
        for n, (rows, _), codes in zip(live, samples, all_codes, strict=True):
            grid = grids[n]
            area = grid.q_tile * grid.k_tile
            per_row = np.count_nonzero(codes, axis=-1)
            n_spans = int(np.sum(-(-per_row // spans[n])))
            nonempty = int(np.sum(per_row))
            partial = np.count_nonzero(codes == PARTIAL)
            totals[n] += count * (grid.n_q_tiles / rows.shape[0]) * (
                n_spans * SPAN_COST_NS + nonempty * (TILE_COST_NS + area * PAIR_COST_NS)
                + partial * area * PARTIAL_PAIR_COST_NS)
    return totals


def default_tiles(head_dim: int, candidates=TILE_CANDIDATES) -> tuple:
    """The candidates whose products fit OpenBLAS's small-matrix kernel for this head dim
    (Bq * Bk * head_dim <= SMALL_GEMM_LIMIT), or the smallest candidate if none does."""
    fitting = tuple(c for c in candidates if c[0] * c[1] * head_dim <= SMALL_GEMM_LIMIT)
    return fitting or (candidates[-1],)


def choose_tiles(source: MaskSource, batch: int, heads: int, q_len: int, k_len: int,
                 head_dim: int = 64, candidates=None, spans: bool = True) -> TileGrid:
    """The tile shape with the least modelled cost among ``candidates`` (default: those of
    :func:`default_tiles`; within 3%: the larger tile); ``spans``: costed for the forward
    kernel, which joins consecutive tiles into one product (:func:`span_tiles`), else tile
    by tile (the backward).

    Each candidate is costed on a sample of its tile rows (:func:`sampled_costs`), never on
    O(Tq * Tk) work; no mask, bool arrays and data-defined masks (classified by evaluation)
    take the first (largest) candidate without costing.
    """
    candidates = default_tiles(head_dim) if candidates is None else tuple(candidates)
    data_defined = source.kind == "array" or (
        source.kind == "mask"
        and any(node.kind in DATA_DEFINED_KINDS for node in mask_nodes(source.value)))
    if data_defined or source.kind == "none":
        candidates = candidates[:1]
    grids = []
    for q_tile, k_tile in candidates:  # shrunk to Tq, Tk; each distinct shape once
        grid = TileGrid(q_len, k_len, max(1, min(q_tile, q_len)), max(1, min(k_tile, k_len)))
        if all((g.q_tile, g.k_tile) != (grid.q_tile, grid.k_tile) for g in grids):
            grids.append(grid)
    if len(grids) == 1 and len(candidates) == 1:
        return grids[0]
    map_of, maps = tile_map_keys(source, batch, heads)
    costs = sampled_costs(source, map_of, maps, grids,
                          [span_tiles(grid, head_dim) if spans else 1 for grid in grids])
    best = None
    for cost, grid in zip(costs, grids, strict=True):
        if best is None or cost < 0.97 * best[0]:
            best = (cost, grid)
    return best[1]


def waves(plan: TilePlan, axis: str, budget_bytes: int):
    """Split tile rows (``axis="row"``) or columns (``"col"``) into consecutive ranges whose
    PARTIAL tiles' keep blocks fit ``budget_bytes`` (a range holds at least one row/column).

    Yields ``(first, last)`` half-open ranges covering every row (column).
    """
    grid = plan.grid
    count = grid.n_q_tiles if axis == "row" else grid.n_k_tiles
    if plan.band[0]:  # a band rule needs no keep blocks: one wave
        yield 0, count
        return
    index = plan.tile_row if axis == "row" else plan.tile_col
    partial = plan.tile_code == PARTIAL
    per_line = np.bincount(index[partial], minlength=count) * (grid.q_tile * grid.k_tile)
    first = 0
    while first < count:
        total = np.cumsum(per_line[first:])
        last = first + max(1, int(np.searchsorted(total, budget_bytes, side="right")))
        yield first, min(last, count)
        first = last


def wave_keep_blocks(plan: TilePlan, axis: str, first: int, last: int, threads: int = 1):
    """Keep blocks for the PARTIAL tiles whose row (column) lies in [first, last).

    Returns ``(tile_keep, blocks, pairs)``: tile_keep (n_tiles,) int64 is the block index of
    each such tile and -1 for every other tile (FULL, or outside the wave); blocks is
    (n, Bk, Bq) bool; pairs is the number of (i, j) index pairs given to ``mask.keep``.
    With a band rule (``plan.band``) no block is built: tile_keep is 0 for the PARTIAL
    tiles, blocks a (1, 1, 1) placeholder, pairs 0.
    Chunks of tiles are evaluated on ``threads`` threads (NumPy releases the GIL).
    """
    grid = plan.grid
    line = plan.tile_row if axis == "row" else plan.tile_col
    chosen = np.nonzero((plan.tile_code == PARTIAL) & (line >= first) & (line < last))[0]
    tile_keep = np.full(plan.tile_row.shape[0], -1, dtype=np.int64)
    if plan.band[0]:  # PARTIAL tiles evaluate the band rule in the kernels
        tile_keep[chosen] = 0
        return tile_keep, np.zeros((1, 1, 1), dtype=bool), 0
    tile_keep[chosen] = np.arange(chosen.shape[0], dtype=np.int64)
    blocks = np.empty((chosen.shape[0], grid.k_tile, grid.q_tile), dtype=bool)
    # at most _KEEP_CHUNK_PAIRS pairs per call, and work for every thread
    chunk = max(1, min(_KEEP_CHUNK_PAIRS // (grid.q_tile * grid.k_tile),
                       -(-chosen.shape[0] // max(1, threads))))
    jobs = []
    for index, (b, h) in enumerate(plan.maps):
        # each map's tiles are contiguous in the plan, so its chosen tiles are a slice
        mine = np.nonzero(plan.tile_map[chosen] == index)[0]
        for start in range(0, mine.shape[0], chunk):
            part = mine[start:start + chunk]
            tiles = chosen[part]
            jobs.append((b, h, plan.tile_row[tiles], plan.tile_col[tiles],
                         blocks[part[0]:part[-1] + 1]))

    def run(job):
        b, h, rows, cols, out = job
        keep_blocks(plan.source, b, h, grid, rows, cols, out)

    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(jobs))) as pool:
            list(pool.map(run, jobs))
    else:
        for job in jobs:
            run(job)
    return tile_keep, blocks, chosen.shape[0] * grid.q_tile * grid.k_tile
