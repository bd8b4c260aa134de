"""(f) Block-sparse masks: the fields of torch FlexAttention's ``BlockMask``.

Each (query block, key block) tile is EMPTY (skipped), PARTIAL (the mask is evaluated inside)
or FULL (every pair kept); :func:`to_block_mask` derives them from the mask's analytic
``classify`` without materialising it, :func:`block_mask_to_keep` densifies them back.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_choice, check_int, check_int_array
from ..masks import Block, Mask
from ._common import check_mask, check_mask_sizes

__all__ = [
    "BlockMask",
    "to_block_mask",
    "block_mask_to_keep",
]


def _check_block_table(name: str, num_blocks, indices, shape) -> np.ndarray:
    """Dense bool (B, H, nQ, nK) of the blocks listed by ``(num_blocks, indices)``."""
    where = "BlockMask"
    counts = check_int_array(where, f"{name}_num_blocks", num_blocks, ndim=3)
    table = check_int_array(where, f"{name}_indices", indices, ndim=4)
    batch, heads, nq, nk = shape
    if counts.shape != (batch, heads, nq) or table.shape != shape:
        raise ValueError(f"{where}: {name}_num_blocks must have shape {(batch, heads, nq)} and "
                         f"{name}_indices {shape}, got {counts.shape} and {table.shape}")
    if np.any((counts < 0) | (counts > nk)):
        raise ValueError(f"{where}: {name}_num_blocks must lie in [0, {nk}]")
    listed = np.arange(nk) < counts[..., None]
    if np.any(listed & ((table < 0) | (table >= nk))):
        raise ValueError(f"{where}: {name}_indices lists a block outside [0, {nk})")
    marks = np.zeros((batch, heads, nq, nk + 1), dtype=bool)
    np.put_along_axis(marks, np.where(listed, table, nk), True, axis=-1)
    marks = marks[..., :nk]
    if np.any(marks.sum(axis=-1) != counts):
        raise ValueError(f"{where}: {name}_indices lists a block twice within one query block")
    return marks


@dataclass(frozen=True, eq=False)
class BlockMask:
    """FlexAttention-style block-sparse mask (the fields of ``torch...flex_attention.BlockMask``).

    For batch b, query head h and query block m (rows ``[m*q_block_size, (m+1)*q_block_size)``):

    * ``kv_indices[b, h, m, :kv_num_blocks[b, h, m]]`` -- the PARTIAL key blocks, ascending: the
      kernel must evaluate the mask inside them;
    * ``full_kv_indices[b, h, m, :full_kv_num_blocks[b, h, m]]`` -- the FULL key blocks,
      ascending: every pair kept, no mask evaluation;
    * every other key block is EMPTY and skipped.

    Entries past the count are padding; refmask fills them like torch's ``_dense_to_ordered``
    (the remaining block indices, ascending), so the arrays compare equal to torch's.
    Counts are int32 (B, H, nQ), indices int32 (B, H, nQ, nK), ``nQ = ceil(q_len /
    q_block_size)``, ``nK = ceil(k_len / k_block_size)``. The last block of each axis may be
    shorter than the block size (ragged edge).
    """

    kv_num_blocks: np.ndarray
    kv_indices: np.ndarray
    full_kv_num_blocks: np.ndarray
    full_kv_indices: np.ndarray
    q_len: int
    k_len: int
    q_block_size: int
    k_block_size: int

    def __post_init__(self):
        for name in ("q_len", "k_len"):
            check_int("BlockMask", name, getattr(self, name), minimum=0)
        for name in ("q_block_size", "k_block_size"):
            check_int("BlockMask", name, getattr(self, name), minimum=1)
        table = np.asarray(self.kv_indices)
        if table.ndim != 4:
            raise ValueError(f"BlockMask: kv_indices must be 4-D (B, H, nQ, nK), got shape "
                             f"{table.shape}")
        nq = -(-self.q_len // self.q_block_size)
        nk = -(-self.k_len // self.k_block_size)
        shape = table.shape[:2] + (nq, nk)
        partial = _check_block_table("kv", self.kv_num_blocks, self.kv_indices, shape)
        full = _check_block_table("full_kv", self.full_kv_num_blocks, self.full_kv_indices,
                                  shape)
        if np.any(partial & full):
            raise ValueError("BlockMask: a block is listed both in kv_indices (PARTIAL) and in "
                             "full_kv_indices (FULL)")
        for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            array = np.array(getattr(self, name), dtype=np.int32, copy=True)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def block_size(self) -> tuple[int, int]:
        """``(q_block_size, k_block_size)`` -- torch's ``BLOCK_SIZE`` order."""
        return (self.q_block_size, self.k_block_size)

    @property
    def seq_lengths(self) -> tuple[int, int]:
        """``(q_len, k_len)`` -- torch's ``seq_lengths``."""
        return (self.q_len, self.k_len)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, H, q_len, k_len)`` of the dense mask this block mask describes."""
        return tuple(self.kv_indices.shape[:2]) + (self.q_len, self.k_len)

    def codes(self) -> np.ndarray:
        """Block codes (B, H, nQ, nK), int8: ``Block.EMPTY``, ``PARTIAL`` or ``FULL``."""
        shape = self.kv_indices.shape
        partial = _check_block_table("kv", self.kv_num_blocks, self.kv_indices, shape)
        full = _check_block_table("full_kv", self.full_kv_num_blocks, self.full_kv_indices, shape)
        return np.where(full, Block.FULL, np.where(partial, Block.PARTIAL, Block.EMPTY)).astype(
            np.int8)

    def __eq__(self, other) -> bool:
        if not isinstance(other, BlockMask):
            return NotImplemented
        return (self.seq_lengths == other.seq_lengths and self.block_size == other.block_size
                and all(np.array_equal(getattr(self, n), getattr(other, n))
                        for n in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks",
                                  "full_kv_indices")))

    __hash__ = None


def _dense_to_ordered(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torch ``_dense_to_ordered``: counts, and the listed block indices first (ascending)."""
    counts = blocks.sum(axis=-1).astype(np.int32)
    order = np.argsort(~blocks, axis=-1, kind="stable").astype(np.int32)
    return counts, order


def _block_sizes(where: str, block_size) -> tuple[int, int]:
    if isinstance(block_size, (numbers.Integral, np.integer)) and not isinstance(block_size,
                                                                                 bool):
        size = check_int(where, "block_size", block_size, minimum=1)
        return size, size
    try:
        q_block, k_block = block_size
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where}: block_size must be an int or a (q_block, k_block) pair, got "
                        f"{block_size!r}") from error
    return (check_int(where, "block_size[0]", q_block, minimum=1),
            check_int(where, "block_size[1]", k_block, minimum=1))


def to_block_mask(mask: Mask, batch: int, heads: int, q_len: int, k_len: int,
                  block_size: int | tuple[int, int] = (128, 128), *,
                  edge_tiles: str = "padded") -> BlockMask:
    """Block-sparse form of ``mask`` from its analytic ``classify`` (nothing is materialised).

    Tile (m, n) covers queries ``[m*bq, min((m+1)*bq, q_len))`` and keys
    ``[n*bk, min((n+1)*bk, k_len))`` with ``(bq, bk) = block_size``;
    its code is ``mask.classify`` of that rectangle for each batch b and head h:
    EMPTY -> skipped, PARTIAL -> ``kv_indices``, FULL -> ``full_kv_indices``.

    edge_tiles: ``"padded"`` (default) reproduces torch ``create_block_mask``, which pads the
    dense mask with False up to a multiple of the block size, so a ragged edge tile is never
    FULL (a tile FULL on its valid part is reported PARTIAL); ``"clipped"`` classifies only the
    valid part, so a ragged tile may be FULL. Both densify to the same keep array.

    Exact for primitive masks; for combinations ``classify`` is sound (a uniform tile may be
    reported PARTIAL), which :func:`block_mask_to_keep` still densifies exactly.
    """
    where = "to_block_mask"
    mask = check_mask(where, mask)
    batch = check_int(where, "batch", batch, minimum=1)
    heads = check_int(where, "heads", heads, minimum=1)
    q_len = check_int(where, "q_len", q_len, minimum=0)
    k_len = check_int(where, "k_len", k_len, minimum=0)
    q_block, k_block = _block_sizes(where, block_size)
    check_choice(where, "edge_tiles", edge_tiles, {"padded", "clipped"})
    check_mask_sizes(where, mask, batch, heads)
    nq, nk = -(-q_len // q_block), -(-k_len // k_block)
    if nq == 0 or nk == 0:
        codes = np.zeros((batch, heads, nq, nk), dtype=np.int8)
    else:
        q0 = np.arange(nq, dtype=np.int64) * q_block
        q1 = np.minimum(q0 + q_block, q_len)
        k0 = np.arange(nk, dtype=np.int64) * k_block
        k1 = np.minimum(k0 + k_block, k_len)
        codes = mask.classify(q0.reshape(1, 1, nq, 1), q1.reshape(1, 1, nq, 1),
                              k0.reshape(1, 1, 1, nk), k1.reshape(1, 1, 1, nk),
                              q_len=q_len, k_len=k_len,
                              batch=np.arange(batch).reshape(batch, 1, 1, 1),
                              head=np.arange(heads).reshape(1, heads, 1, 1))
        codes = np.broadcast_to(codes, (batch, heads, nq, nk))
        if edge_tiles == "padded":
            ragged = ((q1 - q0) < q_block)[:, None] | ((k1 - k0) < k_block)[None, :]
            codes = np.where(ragged & (codes == Block.FULL), Block.PARTIAL, codes)
    kv_num_blocks, kv_indices = _dense_to_ordered(codes == Block.PARTIAL)
    full_num_blocks, full_indices = _dense_to_ordered(codes == Block.FULL)
    return BlockMask(kv_num_blocks, kv_indices, full_num_blocks, full_indices, q_len, k_len,
                     q_block, k_block)


def _dense_keep(where: str, mask_mod, shape) -> np.ndarray:
    batch, heads, q_len, k_len = shape
    if isinstance(mask_mod, Mask):
        check_mask_sizes(where, mask_mod, batch, heads)
        return np.asarray(mask_mod.materialize(batch, heads, q_len, k_len))
    if callable(mask_mod):
        grids = np.meshgrid(np.arange(batch), np.arange(heads), np.arange(q_len),
                            np.arange(k_len), indexing="ij", sparse=True)
        values = np.asarray(mask_mod(*grids))
    else:
        values = np.asarray(mask_mod)
    if values.dtype != np.bool_:
        raise TypeError(f"{where}: mask_mod must give bools (True = attend), got dtype "
                        f"{values.dtype}")
    try:
        return np.broadcast_to(values, shape)
    except ValueError as error:
        raise ValueError(f"{where}: mask_mod has shape {values.shape}, which does not broadcast "
                         f"to {shape}") from error


def block_mask_to_keep(block_mask: BlockMask, mask_mod: Mask | ArrayLike | Callable[...,
                       Any] | None = None) -> np.ndarray:
    """Densify a block mask: ``keep = FULL | (PARTIAL & mask_mod)``, EMPTY tiles False.

    mask_mod evaluates the PARTIAL tiles: a refmask Mask, a bool array broadcastable to
    (B, H, Tq, Tk), or a callable ``mask_mod(b, h, q_idx, kv_idx)`` on broadcastable NumPy
    index arrays (FlexAttention's signature). It may be omitted only when no tile is PARTIAL.
    Returns bool (B, H, q_len, k_len).
    """
    where = "block_mask_to_keep"
    if not isinstance(block_mask, BlockMask):
        raise TypeError(f"{where}: block_mask must be a refmask.convert.BlockMask, got "
                        f"{type(block_mask).__name__}")
    codes = block_mask.codes()
    shape = block_mask.shape
    tiles = np.repeat(np.repeat(codes, block_mask.q_block_size, axis=2),
                      block_mask.k_block_size, axis=3)[:, :, :shape[2], :shape[3]]
    keep = tiles == Block.FULL
    if np.any(codes == Block.PARTIAL):
        if mask_mod is None:
            raise ValueError(f"{where}: block_mask has PARTIAL blocks, so mask_mod is required "
                             "to evaluate them")
        keep = keep | ((tiles == Block.PARTIAL) & _dense_keep(where, mask_mod, shape))
    return keep
