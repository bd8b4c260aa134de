"""Exact conversions between refmask masks and the peers' mask representations.

Every function is pure: arrays in, arrays (or masks) out, nothing cached. A conversion is
either exact -- the round trip gives back the same keep pattern bit for bit -- or it raises a
``ValueError`` naming the argument and the reason; nothing is rounded, guessed or clipped.

| representation | who uses it | refmask |
|---|---|---|
| dense bool keep (B, H, Tq, Tk), True = attend | SDPA, flex create_mask, JAX, Keras, ONNX | (a) |
| dense bool drop, True = NOT allowed | torch ``nn.MultiheadAttention`` | (b) |
| additive 0 / -inf | SDPA and ONNX float masks | (c) |
| additive finite: finfo.min, -1e9, -0.7 * finfo.max | HF eager, Flax; Keras; JAX xla | (c) |
| HF 2-D int padding mask (B, Tk), 1 = attend | transformers ``attention_mask`` | (d) |
| ``cu_seqlens`` / segment ids | FlashAttention varlen, xformers, JAX segment_ids | (e) |
| block mask (BCSR, partial + full blocks) | torch FlexAttention ``BlockMask`` | (f) |
| bit-packed keep, little bit order | FlashInfer ``packed_custom_mask`` | (g) |
| column intervals LTS/LTE/UTS/UTE | FlashMask ``startend_row_indices`` (Paddle) | (h) |
| window tuples | FlashAttention, HF/xformers/gpt-oss, attention-gym, JAX | (i) |
| paged: block table + seq_lens; kv_indptr, kv_indices, kv_last_page_len | vLLM; FlashInfer | (j) |
| token tree: parent array, ancestor matrix | Medusa, EAGLE, SpecInfer verifiers | (k) |

One module per representation; every public name is also importable from
``refmask.convert`` itself. Shared private helpers live in ``_common``; argument checks in
``refmask._validate``.

(a) ``Mask.materialize``, ``refmask.masks.explicit``.
(b) ``polarity``: :func:`keep_to_drop`, :func:`drop_to_keep`.
(c) ``additive``: :func:`keep_to_additive` (``fill="-inf" | "finfo_min" | float``),
    :func:`additive_to_keep` (``threshold=`` for finite fills).
(d) ``hf_padding``: :func:`hf_padding_to_mask`, :func:`mask_to_hf_padding`.
(e) ``varlen``: :func:`cu_seqlens_to_segment_ids`, :func:`segment_ids_to_cu_seqlens`,
    :func:`documents_to_cu_seqlens`, :func:`documents_to_cu_seqlens_qk`.
(f) ``block_mask``: :class:`BlockMask`, :func:`to_block_mask`, :func:`block_mask_to_keep`.
(g) ``bitpack``: :func:`pack_flashinfer`, :func:`unpack_flashinfer`,
    :func:`pack_flashinfer_batch`, :func:`unpack_flashinfer_batch`; row-aligned variant
    :func:`pack_rows`, :func:`unpack_rows`.
(h) ``flashmask``: :func:`to_column_intervals`, :func:`from_column_intervals`,
    :func:`to_flashmask`, :func:`flashmask_to_keep`.
(i) ``windows``: :func:`flash_window_to_mask`, :func:`mask_to_flash_window` (FlashAttention
    ``window_size``); :func:`hf_sliding_window` (W keys including self);
    :func:`attention_gym_sliding_window` (``q - kv <= w``); :func:`jax_local_window`
    (``local_window_size``).
(j) ``paged``: :func:`block_table_to_flashinfer`, :func:`flashinfer_to_block_table`,
    :func:`layout_to_flashinfer`, :func:`flashinfer_to_layout`; the layouts themselves are
    ``refmask.masks.paged_layout`` / ``varlen_layout`` (docs/spec.md 2.4.14-2.4.15).
(k) ``refmask.masks.ancestor_matrix`` / ``parents_from_ancestors`` (re-exported here); the
    keep mask of a tree bit-packs with (g).

The dense polarity and additive helpers accept any array-API array (NumPy, torch, JAX,
``array_api_strict``) and return one of the same namespace; everything else is NumPy in and out.
"""

from __future__ import annotations

from ..masks.tree import ancestor_matrix, parents_from_ancestors
from .additive import additive_to_keep, keep_to_additive
from .bitpack import (
    pack_flashinfer,
    pack_flashinfer_batch,
    pack_rows,
    unpack_flashinfer,
    unpack_flashinfer_batch,
    unpack_rows,
)
from .block_mask import BlockMask, block_mask_to_keep, to_block_mask
from .flashmask import flashmask_to_keep, from_column_intervals, to_column_intervals, to_flashmask
from .hf_padding import hf_padding_to_mask, mask_to_hf_padding
from .paged import (
    block_table_to_flashinfer,
    flashinfer_to_block_table,
    flashinfer_to_layout,
    layout_to_flashinfer,
)
from .polarity import drop_to_keep, keep_to_drop
from .varlen import (
    cu_seqlens_to_segment_ids,
    documents_to_cu_seqlens,
    documents_to_cu_seqlens_qk,
    segment_ids_to_cu_seqlens,
)
from .windows import (
    attention_gym_sliding_window,
    flash_window_to_mask,
    hf_sliding_window,
    jax_local_window,
    mask_to_flash_window,
)

__all__ = [
    "BlockMask",
    "additive_to_keep",
    "ancestor_matrix",
    "attention_gym_sliding_window",
    "block_mask_to_keep",
    "block_table_to_flashinfer",
    "cu_seqlens_to_segment_ids",
    "documents_to_cu_seqlens",
    "documents_to_cu_seqlens_qk",
    "drop_to_keep",
    "flash_window_to_mask",
    "flashinfer_to_block_table",
    "flashinfer_to_layout",
    "flashmask_to_keep",
    "from_column_intervals",
    "hf_padding_to_mask",
    "hf_sliding_window",
    "jax_local_window",
    "keep_to_additive",
    "keep_to_drop",
    "layout_to_flashinfer",
    "mask_to_flash_window",
    "mask_to_hf_padding",
    "pack_flashinfer",
    "pack_flashinfer_batch",
    "pack_rows",
    "parents_from_ancestors",
    "segment_ids_to_cu_seqlens",
    "to_block_mask",
    "to_column_intervals",
    "to_flashmask",
    "unpack_flashinfer",
    "unpack_flashinfer_batch",
    "unpack_rows",
]
