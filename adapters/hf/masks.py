"""``hf.masks``: the masks of transformers ``masking_utils``, judged through refmask's own
attention (mask-level only).

The case's mask is rebuilt with HF's builders from HF's own inputs (a model config, the
2-D padding ``attention_mask``, a KV cache, ``position_ids``, ``block_sequence_ids``); the
resulting dense bool mask (SDPA form, (B, 1, Tq, Tk), True = attend) is then used by
``refmask.attention`` in float64 with every other feature of the case. The verdict therefore
reflects only whether HF's mask is the case's mask. Read from transformers 5.23.0
(src/transformers/masking_utils.py, cache_utils.py):

* positions: HF uses absolute indices ``q_idx = q_offset + i`` and ``kv_idx = kv_offset + j``
  where ``q_offset`` is the number of cached tokens (``Cache.get_query_offset``) and, for a
  DynamicCache, ``kv_offset = 0``, ``kv_length = cached + Tq``. So a case whose positional
  conjuncts share one offset ``c`` is expressed by a DynamicCache holding ``c`` tokens
  (``c > 0``, requires ``c + Tq = Tk``) or by no cache (``c = 0``; ``kv_length`` then comes
  from the 2-D ``attention_mask`` of length Tk). Top-left is ``c = 0``, plain bottom-right is
  ``c = Tk - Tq``, an int KV-cache offset is ``c``. Negative or per-batch offsets have no HF
  form: unsupported.
* ``causal`` -> ``create_causal_mask`` (``kv_idx <= q_idx``).
* ``sliding_window(l, 0)`` (alone or with causal) -> ``create_sliding_window_causal_mask``
  with ``config.sliding_window = l + 1`` (``sliding_window_overlay``: ``kv_idx > q_idx - W``,
  and causal: W keys including self); ``sliding_window(l, l)`` -> ``is_causal=False``,
  ``create_bidirectional_sliding_window_mask`` with ``sliding_window = l``
  (``abs(q_idx - kv_idx) <= W``).
* ``chunked(C) & causal`` -> ``create_chunked_causal_mask`` with ``attention_chunk_size = C``
  (``chunked_overlay``: ``(kv_idx - left_pad) // C == (q_idx - left_pad) // C``).
* ``block_causal(T)`` -> ``create_causal_mask(block_sequence_ids = position // T)``
  (``blockwise_overlay`` ORed with causal: same block or causal); ``prefix_lm(P)`` ->
  ``block_sequence_ids = 0`` for the first P positions and -1 after (one bidirectional block,
  causal elsewhere).
* ``key_padding`` (either side) -> the 2-D ``attention_mask`` (``padding_mask_function``
  masks keys only); no positional conjunct -> ``create_bidirectional_mask``.
* ``documents`` (contiguous segments, self-attention, no padding, no cache) with a causal
  builder -> ``position_ids`` restarting at 0 in each segment (HF's packed-sequence
  detection, used only when ``attention_mask`` and ``past_key_values`` are None);
  ``documents`` with key padding (a padded packed batch, B >= 1) or with a bidirectional
  builder -> ``and_mask_function=packed_sequence_mask_function(segment_ids)`` beside the
  2-D ``attention_mask`` (positions stay packed). Packed cross-attention (query and key
  segments differ) and packing with a cache have no masking_utils form (``_packing``).
* ``varlen(causal, causal window or causal chunks, layout)`` over contiguous self-attention
  spans (``cu_seqlens_q == cu_seqlens_k``) -> the same ``position_ids`` packing (HF restarts
  windows and chunks per packed sequence, measured); cross-attention spans, padded, gappy or
  paged keys: unsupported (HF's packed path has no form for them).
* anything else (query padding, strided, global tokens, explicit arrays, predicates,
  per-batch/per-head selections, OR/NOT, bidirectional chunks or documents) has no HF
  builder: unsupported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from refmask.attention import attention

from ..common import Adapter, Output, Profile, Unsupported
from .common import mask_config, unavailable

if TYPE_CHECKING:
    from refmask.case import Case


NAME = "hf.masks"
_SPATIAL = ("causal", "sliding_window", "chunked", "block_causal", "prefix_lm")


def _and_parts(mask) -> list:
    if mask is None:
        return []
    parts = list(mask.masks) if mask.kind == "and" else [mask]
    return [p for p in parts if p.kind != "full"]


def _offset(case, part) -> int:
    """The one query offset of a positional part, or raise Unsupported."""
    align = part.align
    if align.kind == "top_left":
        return 0
    if align.kind == "bottom_right" and align.q_lengths is None and align.k_lengths is None:
        return case.k_len - case.q_len
    if align.kind == "offset" and len(align.offsets) == 1:
        return align.offsets[0]
    raise Unsupported(f"HF positions come from one cache length shared by the batch; "
                      f"{part.kind} align={align!r} has per-batch offsets")


def _segments_to_positions(ids: np.ndarray) -> np.ndarray:
    """position_ids restarting at 0 at every segment start (B, T); raise Unsupported when a
    segment id recurs after another segment (HF detects documents from restarts only)."""
    positions = np.zeros(ids.shape, dtype=np.int64)
    for b, row in enumerate(ids):
        seen = set()
        for t, segment in enumerate(row):
            if t and segment == row[t - 1]:
                positions[b, t] = positions[b, t - 1] + 1
                continue
            if segment in seen:
                raise Unsupported("HF finds documents from position_ids restarts; a segment id "
                                  "that recurs after another segment has no such form")
            seen.add(segment)
    return positions


def _packed_self_attention(mask):
    """``varlen(inner, layout)`` as ``documents & inner`` with top-left parts, when that is the
    same mask and HF's packed path can say it: queries and keys share contiguous spans that
    cover the row (self-attention, so per sequence Tq = Tk and both alignments coincide) and
    ``inner`` is causal, a causal window (rules on ``pq - pk`` only, the same on local and on
    packed positions) or causal chunks. The rewritten parts only choose HF's builder and its
    config; HF applies them per document itself (measured, transformers 5.23.0: with packed
    ``position_ids`` its chunks restart at every sequence, tests/test_hf_packed.py), and the
    verdict compares HF's mask with the case's own."""
    from refmask import masks as m

    layout = mask.layout
    spans = layout.packed_queries and layout.block_table is None and (
        layout.q_starts == layout.k_starts and layout.q_lengths == layout.k_lengths
        and layout.q_total == layout.k_total == sum(layout.q_lengths))
    if not spans:
        raise Unsupported("HF packs sequences through position_ids restarts: self-attention over "
                          "contiguous sequences only (cu_seqlens_q == cu_seqlens_k, no padded, "
                          "gappy or paged keys)")
    parts = []
    for part in _and_parts(mask.mask):
        if part.kind == "causal":
            parts.append(m.causal(align="top_left"))
        elif part.kind == "sliding_window" and part.right == 0:
            parts.append(m.sliding_window(part.left, 0, align="top_left"))
        elif part.kind == "chunked":
            parts.append(m.chunked(part.size, align="top_left"))
        else:
            raise Unsupported(f"HF's packed path keeps documents and reads packed positions; a "
                              f"per-sequence {part.kind} part has no such form")
        if part.align.kind not in ("top_left", "bottom_right"):
            raise Unsupported("HF's packed path has no per-sequence cache offsets")
    cu = [0] + [start + length for start, length in zip(layout.q_starts, layout.q_lengths,
                                                         strict=True)]
    return m.all_of(m.documents_from_cu_seqlens(cu), *parts)


def plan(case: Case) -> dict:
    """HF's inputs for the case: builder name, config fields, cached token count, 2-D
    attention_mask (bool (B, Tk) or None), position_ids, block_sequence_ids."""
    per_sequence = case.mask is not None and case.mask.kind == "varlen"
    if per_sequence:
        from dataclasses import replace

        case = replace(case, mask=_packed_self_attention(case.mask))
    parts = _and_parts(case.mask)
    spatial = [p for p in parts if p.kind in _SPATIAL]
    padding = [p for p in parts if p.kind == "key_padding"]
    documents = [p for p in parts if p.kind == "documents"]
    other = [p for p in parts if p not in spatial and p not in padding and p not in documents]
    if other:
        kinds = sorted({p.kind for p in other})
        if "query_padding" in kinds:
            raise Unsupported("HF masks padded keys only (padding_mask_function), never query "
                              "rows")
        raise Unsupported(f"transformers masking_utils has no builder for {', '.join(kinds)}")
    if len(padding) > 1 or len(documents) > 1:
        raise Unsupported("HF takes one 2-D padding mask and one position_ids table")
    offsets = {_offset(case, p) for p in spatial}
    if len(offsets) > 1:
        raise Unsupported(f"the positional parts use different offsets {sorted(offsets)}; HF "
                          "has one cache length")
    offset = offsets.pop() if offsets else 0
    if offset < 0:
        raise Unsupported(f"HF query positions are cache positions >= 0; this case needs "
                          f"offset {offset} (Tq > Tk bottom-right)")
    if offset and offset + case.q_len != case.k_len:
        raise Unsupported(f"a DynamicCache of {offset} tokens plus {case.q_len} new ones has "
                          f"{offset + case.q_len} keys, the case has {case.k_len}")
    by_kind = {}
    for part in spatial:
        if part.kind in by_kind:
            raise Unsupported(f"two {part.kind} conjuncts have no single HF builder")
        by_kind[part.kind] = part
    kinds = set(by_kind)
    result = {"cached": offset, "config": {}, "builder": None, "position_ids": None,
              "block_sequence_ids": None, "packed_sequence_ids": None}
    window = by_kind.get("sliding_window")
    if not kinds:
        result["builder"] = "bidirectional"
    elif kinds == {"causal"}:
        result["builder"] = "causal"
    elif kinds <= {"sliding_window", "causal"} and window.left is not None and (
            window.right == 0 or "causal" in kinds):
        result["builder"] = "sliding_causal"
        result["config"] = {"sliding_window": window.left + 1}
    elif kinds <= {"sliding_window", "causal"} and window.left is None and window.right == 0:
        result["builder"] = "causal"
    elif kinds == {"sliding_window"} and window.left is not None and window.left == window.right:
        result["builder"] = "sliding_bidirectional"
        result["config"] = {"sliding_window": window.left, "is_causal": False}
    elif kinds == {"chunked", "causal"}:
        result["builder"] = "chunked"
        result["config"] = {"chunk_size": by_kind["chunked"].size}
    elif kinds in ({"block_causal"}, {"prefix_lm"}):
        result["builder"] = "causal"
        position = np.arange(case.k_len)
        if "block_causal" in kinds:
            ids = np.broadcast_to(position // by_kind["block_causal"].block,
                                  (case.batch, case.k_len))
        else:
            prefix = np.broadcast_to(np.asarray(by_kind["prefix_lm"].prefix), (case.batch,))
            ids = np.where(position[None, :] < prefix[:, None], 0, -1)
        result["block_sequence_ids"] = np.ascontiguousarray(ids, dtype=np.int64)
    elif window is not None:
        raise Unsupported(f"HF sliding windows are causal (W keys including self) or symmetric "
                          f"(|q - kv| <= W); sliding_window({window.left}, {window.right}) is "
                          f"neither")
    else:
        raise Unsupported(f"transformers masking_utils has no builder for "
                          f"{' & '.join(sorted(kinds))}")
    if padding:
        result["attention_mask"] = np.asarray(
            padding[0].materialize(case.batch, 1, 1, case.k_len))[:, 0, 0, :]
    else:
        result["attention_mask"] = np.ones((case.batch, case.k_len), dtype=bool)
    if documents:
        _packing(case, documents[0], result, padded=bool(padding), offset=offset,
                 per_sequence=per_sequence)
    return result


def _packing(case: Case, doc, result: dict, *, padded: bool, offset: int,
             per_sequence: bool) -> None:
    """Packed documents in HF's inputs (``result`` updated in place).

    * causal builders, no padding: ``position_ids`` restarting at 0 per document, HF's
      packed-sequence detection (``find_packed_sequence_indices``; used by
      ``_preprocess_mask_arguments`` only when ``attention_mask`` and ``past_key_values`` are
      None), which also remaps positions per document (chunks restart: ``per_sequence``, a
      varlen case);
    * a padded packed batch (documents and key padding) or a bidirectional builder:
      ``and_mask_function = packed_sequence_mask_function(segment_ids)`` (masking_utils' own
      mask function, ``ids[b, q_idx] == ids[b, kv_idx]``) next to the 2-D padding
      ``attention_mask``; positions stay packed (absolute), as in ``documents & ...`` (also
      for ``documents & chunked``, whose chunks count from packed position 0).

    Refused: a cache (packing is detected only without ``past_key_values``; the and-mask
    indexes one (B, T) table with q_idx and kv_idx, so Tq = Tk), and documents whose query
    and key segment ids differ (cross-attention: ``packed_sequence_mask_function`` indexes one
    table with both ``q_idx`` and ``kv_idx``, and ``create_bidirectional_mask`` passes no
    position_ids for ``encoder_hidden_states``)."""
    if doc.k_segment_ids != doc.q_segment_ids:
        raise Unsupported("HF has no packed cross-attention: packed_sequence_mask_function "
                          "indexes one segment table with q_idx and kv_idx, and "
                          "create_bidirectional_mask takes no position_ids")
    if offset or case.q_len != case.k_len:
        raise Unsupported("HF packs sequences for self-attention without a cache only "
                          "(_preprocess_mask_arguments: no packing with past_key_values; "
                          "packed_sequence_mask_function needs q_length == kv_length)")
    ids = np.broadcast_to(np.asarray(doc.q_segment_ids), (case.batch, case.q_len))
    absolute_chunks = result["builder"] == "chunked" and not per_sequence
    if padded or absolute_chunks or result["builder"] in ("bidirectional",
                                                          "sliding_bidirectional"):
        result["packed_sequence_ids"] = np.ascontiguousarray(ids, dtype=np.int64)
        return
    result["position_ids"] = _segments_to_positions(ids)
    result["attention_mask"] = None


def unsupported(case: Case) -> str | None:
    try:
        plan(case)
    except Unsupported as why:
        return str(why)
    return None


def hf_mask(case: Case, inputs: dict | None = None) -> np.ndarray:
    """The bool (B, 1, Tq, Tk) mask HF builds for the case (from ``inputs``, default
    ``plan(case)``)."""
    import torch
    from transformers import masking_utils as mu
    from transformers.cache_utils import DynamicCache

    inputs = plan(case) if inputs is None else inputs
    config = mask_config(**inputs["config"])
    embeds = torch.zeros((case.batch, case.q_len, 1))
    cache = None
    if inputs["cached"]:
        past = torch.zeros((case.batch, 1, inputs["cached"], 1))
        cache = DynamicCache(ddp_cache_data=[(past, past)])
    attention_mask = inputs["attention_mask"]
    attention_mask = None if attention_mask is None else torch.tensor(attention_mask)
    position_ids = inputs["position_ids"]
    position_ids = None if position_ids is None else torch.tensor(position_ids)
    blocks = inputs["block_sequence_ids"]
    blocks = None if blocks is None else torch.tensor(blocks)
    common = {"config": config, "inputs_embeds": embeds, "attention_mask": attention_mask,
              "past_key_values": cache}
    packed = inputs.get("packed_sequence_ids")
    if packed is not None:
        common["and_mask_function"] = mu.packed_sequence_mask_function(torch.tensor(packed))
    builder = inputs["builder"]
    if builder == "bidirectional":
        mask = mu.create_bidirectional_mask(**common, allow_is_bidirectional_skip=False)
    elif builder == "sliding_bidirectional":
        mask = mu.create_bidirectional_sliding_window_mask(**common,
                                                           allow_is_bidirectional_skip=False)
    else:
        build = {"causal": mu.create_causal_mask,
                 "sliding_causal": mu.create_sliding_window_causal_mask,
                 "chunked": mu.create_chunked_causal_mask}[builder]
        mask = build(**common, position_ids=position_ids, block_sequence_ids=blocks,
                     allow_is_causal_skip=False)
    if mask is None:
        raise Unsupported(f"HF returned no mask for {builder} (skip path)")
    mask = mask.detach().cpu().numpy()
    expected = (case.batch, 1, case.q_len, case.k_len)
    if mask.dtype != np.bool_ or mask.shape != expected:
        raise ValueError(f"HF built a {mask.dtype} mask of shape {mask.shape}, expected bool "
                         f"{expected}")
    return mask


def attend(case: Case, inputs: dict, keep: np.ndarray) -> Output:
    """refmask's float64 attention for the case with its mask replaced by ``keep``."""
    from refmask.case import attention_kwargs

    values = {name: x if x.dtype == np.bool_ else np.asarray(x, np.float64)
              for name, x in inputs.items()}
    kwargs = attention_kwargs(case, values)
    kwargs["mask"] = keep
    result = attention(values["q"], values["k"], values["v"], **kwargs)
    out = result.out
    if case.layout == "BTHD":
        out = np.swapaxes(out, 1, 2)
    return Output(out=out, lse=result.lse)


def run(case: Case, inputs: dict[str, np.ndarray], *, grads: bool) -> Output:
    return attend(case, inputs, hf_mask(case))


ADAPTER = Adapter(
    name=NAME,
    profile=Profile(empty_rows="zero", causal_alignment="both", lse_base="e", backward=False,
                    notes="transformers masking_utils masks (SDPA bool form) used by "
                          "refmask.attention in float64: judges the mask only"),
    run=run,
    unsupported=unsupported,
    unavailable=unavailable,
    description="transformers masking_utils create_causal_mask / "
                "create_sliding_window_causal_mask / create_chunked_causal_mask / "
                "create_bidirectional_mask, packed sequences via position_ids or "
                "packed_sequence_mask_function",
)
