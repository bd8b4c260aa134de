"""``xformers.attn_bias``: every case that an ``xformers.ops.fmha.attn_bias`` class can say,
said with that class, materialised by xformers itself and applied by PyTorch SDPA on the CPU.

xformers' kernels need CUDA, but its bias classes are plain Python (checked: xformers 0.0.35
imports without CUDA and without its C++ extension). This adapter therefore judges what the
classes *mean*: the case's mask becomes the matching class, ``bias.materialize(shape,
dtype)`` (xformers' own "for debugging & testing" reference) gives the additive 0/-inf mask,
and ``torch.nn.functional.scaled_dot_product_attention`` adds it to the scores.

=======================================================  ==========================================
refmask mask                                             xformers class
=======================================================  ==========================================
``causal(align="top_left")``                             ``LowerTriangularMask``
``causal(align="bottom_right")``                         ``LowerTriangularFromBottomRightMask``
``sliding_window(w - 1, 0, align="bottom_right")``       ``LowerTriangularFromBottomRightLocal``
(alone or with the same causal)                          ``AttentionMask(w)``
``sliding_window(l, r, align="bottom_right")``           ``LocalAttentionFromBottomRightMask(l, r)``
``varlen(inner, varlen_layout(...))``                    ``BlockDiagonal[Causal[FromBottomRight|``
                                                         ``LocalAttention...]]Mask.from_seqlens``
``varlen(inner, padded_keys_layout(...))``               ``BlockDiagonal*PaddedKeysMask``
``varlen(inner, gappy_keys_layout(...))``                ``BlockDiagonal*GappyKeysMask``
``varlen(inner, paged_layout(..., cu_seqlens_q=...))``   ``PagedBlockDiagonal*PaddedKeysMask`` /
                                                         ``*GappyKeysMask`` (paged.py)
=======================================================  ==========================================

with ``inner`` one of ``full()``, ``causal`` (top-left only for plain spans, bottom-right =
``*WithOffset*`` / ``*FromBottomRight``), ``sliding_window(w - 1, 0, ...)`` and, for padded
keys, ``sliding_window(l, r, align="bottom_right")``. Everything else, batched paged queries
(xformers packs every sequence's queries into one row over one shared physical cache, while
such a case gives each batch entry its own cache), and softcap, sinks and given dropout masks
(SDPA has none of them) are unsupported with the reason. Bias and ALiBi are added to the
materialised mask. No LSE; gradients by torch autograd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..common import Adapter, Output, Profile, Unsupported
from ..torch import common as tc
from .paged import to_xformers_paged

if TYPE_CHECKING:
    from refmask.case import Case

NAME = "xformers.attn_bias"
MISSING = "xformers is not installed (pip install 'refmask[xformers]')"


def unavailable() -> str | None:
    reason = tc.unavailable()
    if reason:
        return reason
    try:
        with tc.quiet():
            import xformers.ops.fmha.attn_bias  # noqa: F401
    except Exception as error:  # ImportError, or xformers failing to import at all
        return f"{MISSING}: {type(error).__name__}: {error}"
    return None


def _window(part, align: str) -> tuple[int, int] | None:
    """(left, right) of a sliding_window with exactly that plain alignment, else None."""
    if part.kind != "sliding_window" or part.align.kind != align or part.align.q_lengths or (
        part.align.k_lengths
    ):
        return None
    return part.left, part.right


def _shape(parts, align: str) -> tuple | None:
    """Reduce the AND-parts of a mask to ``("full",)``, ``("causal",)``, ``("local", w)`` (w
    keys including self) or ``("band", l, r)`` under one plain alignment; None otherwise."""
    parts = [p for p in parts if p.kind != "full"]
    if not parts:
        return ("full",)
    causal = [p for p in parts if p.kind == "causal" and p.align.kind == align and not (
        p.align.q_lengths or p.align.k_lengths)]
    windows = [w for w in (_window(p, align) for p in parts) if w is not None]
    if len(causal) + len(windows) != len(parts) or len(windows) > 1:
        return None
    if not windows:
        return ("causal",)
    left, right = windows[0]
    if left is not None and right == 0:
        return ("local", left + 1)
    if left is not None and right is not None and not causal:
        return ("band", left, right)
    return None


def _split(mask) -> list:
    return list(mask.masks) if mask.kind == "and" else [mask]


def translate(case: Case) -> Any:
    """The xformers bias object for the case (None without a mask); raises Unsupported."""
    import torch
    from xformers.ops.fmha import attn_bias as ab

    mask = case.mask
    if mask is None:
        return None
    for align in ("top_left", "bottom_right"):
        shape = _shape(_split(mask), align)
        if shape == ("causal",):
            return ab.LowerTriangularMask() if align == "top_left" else (
                ab.LowerTriangularFromBottomRightMask())
        # square: top-left and bottom-right coincide, so the FromBottomRight classes say both
        bottom_right = align == "bottom_right" or case.q_len == case.k_len
        if shape and bottom_right and shape[0] == "local":
            return ab.LowerTriangularFromBottomRightLocalAttentionMask(shape[1])
        if shape and bottom_right and shape[0] == "band":
            return ab.LocalAttentionFromBottomRightMask(window_left=shape[1],
                                                        window_right=shape[2])
    if mask.kind != "varlen":
        raise Unsupported(f"{NAME}: no xformers attn_bias class expresses {mask!r}")
    layout = mask.layout
    if not layout.packed_queries:
        raise Unsupported(f"{NAME}: xformers Paged* biases pack all queries into one row over "
                          "one shared physical cache; this case has batched queries, each "
                          "batch entry with its own cache")
    cpu = torch.device("cpu")
    q_lens = list(layout.q_lengths)
    q_starts = np.concatenate([[0], np.cumsum(q_lens)[:-1]]).tolist() if q_lens else []
    if list(layout.q_starts) != q_starts or sum(q_lens) != layout.q_total:
        raise Unsupported(f"{NAME}: xformers packs the queries back to back from row 0")
    k_lens = list(layout.k_lengths)
    inner = None
    for align in ("bottom_right", "top_left"):
        inner = _shape(_split(mask.mask), align)
        if inner is not None:
            break
    if inner is None:
        raise Unsupported(f"{NAME}: no xformers block-diagonal class has the per-block mask "
                          f"{mask.mask!r}")
    kind = inner[0] if inner[0] == "full" else f"{inner[0]}:{align}"
    if layout.block_table is not None:
        return _paged(mask, layout, kind)
    k_starts = list(layout.k_starts)
    contiguous = np.concatenate([[0], np.cumsum(k_lens)[:-1]]).tolist() if k_lens else []
    pad = layout.k_total // max(len(k_lens), 1)
    if k_starts == contiguous and sum(k_lens) == layout.k_total:
        plain = ab.BlockDiagonalMask.from_seqlens(q_lens, k_lens, device=cpu)
        if kind == "full":
            return plain
        if kind == "causal:top_left":
            return plain.make_causal()
        if kind == "causal:bottom_right":
            return plain.make_causal_from_bottomright()
        if kind == "local:top_left":
            return plain.make_local_attention(inner[1])
        if kind == "local:bottom_right":
            return plain.make_local_attention_from_bottomright(inner[1])
    elif pad * len(k_lens) == layout.k_total and k_starts == [pad * n for n in range(
            len(k_lens))]:
        if kind == "full":
            return ab.BlockDiagonalPaddedKeysMask.from_seqlens(q_lens, pad, k_lens, device=cpu)
        if kind == "causal:bottom_right":
            return ab.BlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens(
                q_lens, pad, k_lens, device=cpu)
        if kind == "local:bottom_right":
            return ab.BlockDiagonalCausalLocalAttentionPaddedKeysMask.from_seqlens_local(
                q_lens, pad, k_lens, inner[1])
        if kind == "band:bottom_right":
            return ab.BlockDiagonalLocalAttentionPaddedKeysMask.from_seqlens_local(
                q_lens, pad, k_lens, inner[1], inner[2])
    else:
        starts = k_starts + [layout.k_total]
        if kind == "full":
            return ab.BlockDiagonalGappyKeysMask.from_seqlens(q_lens, starts, k_lens, device=cpu)
        if kind == "causal:bottom_right":
            return ab.BlockDiagonalCausalWithOffsetGappyKeysMask.from_seqlens(
                q_lens, starts, k_lens, device=cpu)
    raise Unsupported(f"{NAME}: xformers has no class for a {kind} block mask on this key "
                      "layout")


def _paged(mask, layout, kind):
    """The Paged* bias (adapters/xformers/paged.py) of a paged varlen mask."""
    if kind not in ("full", "causal:bottom_right"):
        raise Unsupported(f"{NAME}: xformers has no paged class for a {kind} block mask")
    used = max((max(row) for row in layout.block_table if len(row)), default=-1) + 1
    if used * layout.page_size != layout.k_total:
        raise Unsupported(f"{NAME}: xformers materialises a paged bias over pages 0 .. "
                          f"max(block_tables) = {used - 1}, but the cache has "
                          f"{layout.k_total // layout.page_size} pages")
    return to_xformers_paged(mask)


def _unsupported(case) -> str | None:
    return tc.score_reasons(case, NAME, softcap="SDPA (which applies the bias) has no softcap",
                            sinks="SDPA (which applies the bias) has no attention sinks",
                            dropout="a given dropout keep-mask cannot be passed to SDPA")


def run(case: Case, inputs: dict[str, np.ndarray], *, grads: bool) -> Output:
    import torch
    import torch.nn.functional as F

    try:
        bias_object = translate(case)
    except (ValueError, RuntimeError, AssertionError) as error:  # xformers' own refusals
        raise Unsupported(f"{NAME}: xformers refuses the layout: {error}") from error
    additive = None
    if bias_object is not None:
        with tc.quiet():
            additive = bias_object.materialize((1, 1, case.q_len, case.k_len),
                                               dtype=tc.torch_dtype(case.dtype), device="cpu")

    def forward(q, k, v, bias):
        total = additive
        if case.alibi is not None:
            alibi = tc.alibi_tensor(case, case.dtype)
            total = alibi if total is None else total + alibi
        if bias is not None:
            total = bias if total is None else total + bias
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=total, scale=case.scale,
                                                 enable_gqa=case.kv_heads != case.q_heads)
        return out, None

    return tc.run_autograd(case, inputs, grads, forward)


ADAPTERS = (
    Adapter(
        name=NAME,
        profile=Profile(empty_rows="zero", causal_alignment="both", lse_base=None,
                        backward=True,
                        notes="xformers.ops.fmha.attn_bias classes (0.0.35), materialised by "
                              "xformers on the CPU and added to the scores by torch SDPA "
                              "(math backend); the CUDA kernels are not run"),
        run=run,
        unsupported=_unsupported,
        unavailable=unavailable,
        description="xformers attn_bias classes: LowerTriangular*, LocalAttention*, "
                    "BlockDiagonal* (causal, from-bottom-right, local, padded, gappy keys), "
                    "PagedBlockDiagonal*",
    ),
)

__all__ = ["ADAPTERS", "translate"]
