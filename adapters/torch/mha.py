"""``torch.nn.MultiheadAttention`` as three adapters, one per code path of torch 2.13:

* ``torch.mha``: ``need_weights=False`` on the slow path (torch/nn/functional.py
  ``multi_head_attention_forward``, which calls SDPA);
* ``torch.mha.need_weights``: ``need_weights=True`` (``baddbmm`` + ``softmax`` + ``bmm`` in
  the same function);
* ``torch.mha.fastpath``: the fast path ``torch._native_multi_head_attention``, which the
  layer takes for self-attention (``query is key is value``) in eval mode without autograd,
  with an even ``num_heads`` and no float mask (the ``why_not_fast_path`` checks of
  ``MultiheadAttention.forward``, torch/nn/modules/activation.py).

The layer is built so that it computes plain attention on the case's q, k, v:
``embed_dim = kdim = vdim = H * D``, ``num_heads = H``, ``batch_first=True``, ``in_proj_weight``
= three identity blocks, ``in_proj_bias = 0``, ``out_proj`` = identity with zero bias. q, k, v
(B, H, T, D) enter as (B, T, H * D) (head h owns columns ``h*D .. h*D+D-1``, the split MHA
makes); the output (B, Tq, H * D) is split back. Identity projections are exact in every
dtype (products by 1, sums with exact zeros).

The fast path needs one input tensor, so it gets ``x = [q | k | v | 0]`` (B, T, 4 * H * D)
with ``embed_dim = 4 * H * D`` and ``num_heads = H`` (head_dim 4D): the q projection puts
``2 * q_h`` into the first D columns of head h and zeros elsewhere, the k and v projections
put ``k_h`` and ``v_h`` there, so head h scores ``2 q_h . k_h / sqrt(4D) = q_h . k_h /
sqrt(D)`` (the factor 2 is exact); ``out_proj`` gathers the first D columns of every head.
This needs Tq = Tk.

Translation into MHA's native masks (its polarity is inverted: True = NOT allowed):

* ``key_padding`` parts of the mask (the mask itself, or parts of a top-level ``&``) ->
  ``key_padding_mask`` (B, Tk), True = padding;
* everything else -> bool ``attn_mask = ~keep``, shape (Tq, Tk) when the mask is the same for
  every batch and head, else (B * H, Tq, Tk);
* ``causal(align="top_left")`` (or any causal with Tq = Tk) also passes the ``is_causal=True``
  hint; MHA then drops the attn_mask and calls SDPA with ``is_causal`` when
  ``need_weights=False`` and there is no key padding mask (the hint is top-left, so it is
  never given for a bottom-right non-square mask);
* bias / ALiBi -> a float ``attn_mask`` (added to the scores, documented for MHA), with
  ``-inf`` where the mask drops; key padding then also goes into the float mask, since MHA
  deprecates mixing a bool key_padding_mask with a float attn_mask;
* an explicit scale: MHA always scales by ``1/sqrt(head_dim)``; it is folded into the layer's
  own weights: the q block of ``in_proj_weight`` is ``scale * sqrt(D) * I`` (one rounding of q
  in that dtype, exact for the default scale).

Unsupported, with the reason: GQA/MQA, Dqk != Dv, softcap, sinks, a given dropout keep-mask;
for the fast path also Tq != Tk, an odd head count and a bias/ALiBi (a float mask, which the
fast path refuses). Gradients: autograd through the layer with respect to the case's q, k, v
(and the bias); none on the fast path, which only runs without autograd.

Empty rows in torch 2.13: 0 on the slow path with need_weights=False (SDPA), NaN with
need_weights=True (plain softmax) and NaN on the fast path, for the same layer and inputs
(``torch.no_grad()`` alone switches a self-attention call between 0 and NaN).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..common import Adapter, Profile
from . import common as tc

SOFTCAP = "nn.MultiheadAttention has no softcap"
SINKS = "nn.MultiheadAttention has no attention sinks"
FASTPATH = "torch.mha.fastpath"
DROPOUT = ("nn.MultiheadAttention's dropout draws its own random pattern; a given dropout "
           "keep-mask cannot be passed")


def _unsupported(case, name: str) -> str | None:
    reason = tc.score_reasons(case, name, softcap=SOFTCAP, sinks=SINKS, dropout=DROPOUT)
    if reason:
        return reason
    if case.kv_heads != case.q_heads:
        return (f"{name}: grouped/multi-query kv heads (Hkv={case.kv_heads} < Hq="
                f"{case.q_heads}): nn.MultiheadAttention splits q, k and v into the same "
                "num_heads")
    if case.qk_dim != case.v_dim:
        return (f"{name}: Dqk={case.qk_dim} != Dv={case.v_dim}: nn.MultiheadAttention projects "
                "q, k and v to one embed_dim split into num_heads equal head_dims")
    if name != FASTPATH:
        return None
    if case.q_len != case.k_len:
        return (f"{name}: Tq={case.q_len} != Tk={case.k_len}: the fast path needs "
                "self-attention (query is key is value)")
    if case.q_heads % 2:
        return f"{name}: the fast path needs an even num_heads, got {case.q_heads}"
    if tc.has_additive(case):
        return (f"{name}: a bias needs a float attn_mask, and 'floating-point masks are not "
                "supported for fast path' (the layer would silently take the slow path)")
    return None


def _split_key_padding(case):
    """(key padding keep (B, Tk) or None, keep (B, H, Tq, Tk) of the remaining parts or None)."""
    parts = tc.conjuncts(case.mask)
    padding = [p for p in parts if p.kind == "key_padding"]
    rest = [p for p in parts if p.kind != "key_padding"]
    pad_keep = None
    if padding:
        pad_keep = np.ones((case.batch, case.k_len), dtype=bool)
        for part in padding:
            dense = np.asarray(part.materialize(case.batch, 1, 1, case.k_len))
            pad_keep &= dense[:, 0, 0, :]
    rest_keep = None
    if rest:
        rest_keep = np.ones((case.batch, case.q_heads, case.q_len, case.k_len), dtype=bool)
        for part in rest:
            rest_keep &= np.asarray(part.materialize(case.batch, case.q_heads, case.q_len,
                                                     case.k_len))
    return pad_keep, rest_keep


def _layer(case, embed: int, *, fastpath: bool):
    """The layer: identity projections (``embed = H * D``), or for the fast path the
    selecting projections described in the module docstring (``embed = 4 * H * D``)."""
    import torch
    from torch import nn

    dtype = tc.torch_dtype(case.dtype)
    heads, dim = case.q_heads, case.qk_dim
    layer = nn.MultiheadAttention(embed, heads, bias=True, batch_first=True, dtype=dtype)
    layer.eval()
    q_gain = 1.0 if case.scale is None else case.scale * math.sqrt(dim)
    if not fastpath:
        eye = torch.eye(embed, dtype=dtype)
        weights = torch.cat([eye * q_gain, eye, eye])
        out_weight = eye
    else:
        # x = [q | k | v | 0] (4 blocks of H*D); head h of the projected q/k/v is
        # [q_h | 0 | 0 | 0] etc. (head_dim 4D), so MHA's 1/sqrt(4D) = 1/(2 sqrt(D)) is undone
        # exactly by a gain of 2 on q; out_proj gathers the first D columns of every head.
        width = heads * dim
        weights = torch.zeros(3 * embed, embed, dtype=dtype)
        out_weight = torch.zeros(embed, embed, dtype=dtype)
        for h in range(heads):
            for d in range(dim):
                row, column = h * 4 * dim + d, h * dim + d
                weights[row, column] = 2.0 * q_gain
                weights[embed + row, width + column] = 1.0
                weights[2 * embed + row, 2 * width + column] = 1.0
                out_weight[column, row] = 1.0
    with torch.no_grad():
        layer.in_proj_weight.copy_(weights)
        layer.in_proj_bias.zero_()
        layer.out_proj.weight.copy_(out_weight)
        layer.out_proj.bias.zero_()
    for parameter in layer.parameters():
        parameter.requires_grad_(False)
    return layer


def _heads_last(case, x, heads: int, length: int):
    """(B, H, T, D) -> (B, T, H * D)."""
    return x.transpose(1, 2).reshape(case.batch, length, heads * x.shape[-1])


def _masks(case, bias, *, hint: bool) -> dict:
    """MHA's mask keywords for the case (see the module docstring)."""
    batch, heads, q_len, k_len = case.batch, case.q_heads, case.q_len, case.k_len
    additive = bias
    if case.alibi is not None:
        alibi = tc.alibi_tensor(case, case.dtype)
        additive = alibi if additive is None else additive + alibi
    kwargs = {}
    if additive is not None:
        floats = additive.masked_fill(~tc.to_torch(case.keep()), float("-inf"))
        kwargs["attn_mask"] = floats.reshape(batch * heads, q_len, k_len)
        return kwargs
    pad_keep, rest_keep = _split_key_padding(case)
    if pad_keep is not None:
        kwargs["key_padding_mask"] = ~tc.to_torch(pad_keep)
    if rest_keep is not None:
        small = tc.reduced_keep(rest_keep)
        drop = ~tc.to_torch(small)
        if small.shape[:2] == (1, 1):
            kwargs["attn_mask"] = drop[0, 0]
        else:
            kwargs["attn_mask"] = drop.expand(batch, heads, q_len, k_len).reshape(
                batch * heads, q_len, k_len)
        causal = tc.plain_causal(case.mask)
        if hint and (causal == "top_left" or (causal is not None and q_len == k_len)):
            kwargs["is_causal"] = True
    return kwargs


def _call(case, q, k, v, bias, *, need_weights: bool, fastpath: bool = False,
          weights: dict | None = None):
    """The layer's output (B, Hq, Tq, Dv); with ``need_weights`` its per-head attention
    weights (``average_attn_weights=False``: (B, Hq, Tq, Tk), the softmax after the masks,
    before dropout since the layer's dropout is 0) go into ``weights["probs"]``."""
    import torch

    batch, heads, q_len, k_len = case.batch, case.q_heads, case.q_len, case.k_len
    width = heads * case.qk_dim
    kwargs = {"need_weights": need_weights, **_masks(case, bias, hint=not fastpath)}
    query = _heads_last(case, q, heads, q_len)
    key = _heads_last(case, k, heads, k_len)
    value = _heads_last(case, v, heads, k_len)
    if not fastpath:
        out, probs = _layer(case, width, fastpath=False)(query, key, value, **kwargs,
                                                          average_attn_weights=False)
        if weights is not None and probs is not None:
            weights["probs"] = probs.detach()
    else:
        x = torch.cat([query, key, value, torch.zeros_like(query)], dim=-1)
        out, _ = _layer(case, 4 * width, fastpath=True)(x, x, x, **kwargs)
        out = out[..., :width]
    return out.reshape(batch, q_len, heads, case.v_dim).transpose(1, 2)


def _runner(need_weights: bool, fastpath: bool = False):
    def run(case, inputs, *, grads: bool):
        weights = {}

        def forward(q, k, v, bias):
            return _call(case, q, k, v, bias, need_weights=need_weights,
                         fastpath=fastpath, weights=weights), None

        output = tc.run_autograd(case, inputs, grads and not fastpath, forward)
        if "probs" in case.scores:  # spec 3.9: the per-head weights are the "probs" stage
            output = replace(output, scores={"scores_probs": tc.to_numpy(weights["probs"])})
        return output

    return run


_LAYER = ("nn.MultiheadAttention(batch_first=True) with known projections; attn_mask True = "
          "NOT allowed; key padding -> key_padding_mask; a custom scale is folded into the q "
          "block of in_proj_weight")

ADAPTERS = (
    Adapter(
        name="torch.mha",
        profile=Profile(empty_rows="zero", causal_alignment="top_left", lse_base=None,
                        backward=True, notes=_LAYER + "; need_weights=False, slow path "
                        "(F.multi_head_attention_forward runs SDPA: empty rows give 0)"),
        run=_runner(need_weights=False),
        unsupported=lambda case: _unsupported(case, "torch.mha"),
        unavailable=tc.unavailable,
        description="nn.MultiheadAttention, need_weights=False (SDPA inside)",
    ),
    Adapter(
        name="torch.mha.need_weights",
        profile=Profile(empty_rows="nan", causal_alignment="top_left", lse_base=None,
                        backward=True, notes=_LAYER + "; need_weights=True (baddbmm + plain "
                        "softmax: empty rows give NaN, pytorch issue #41508)"),
        run=_runner(need_weights=True),
        unsupported=lambda case: _unsupported(case, "torch.mha.need_weights"),
        unavailable=tc.unavailable,
        description="nn.MultiheadAttention, need_weights=True (explicit softmax weights)",
        scores=frozenset({"probs"}),
    ),
    Adapter(
        name=FASTPATH,
        profile=Profile(empty_rows="nan", causal_alignment="top_left", lse_base=None,
                        backward=False, notes=_LAYER + "; self-attention in eval mode without "
                        "autograd: the fast path torch._native_multi_head_attention "
                        "(need_weights=False); empty rows give NaN there"),
        run=_runner(need_weights=False, fastpath=True),
        unsupported=lambda case: _unsupported(case, FASTPATH),
        unavailable=tc.unavailable,
        description="nn.MultiheadAttention fast path (torch._native_multi_head_attention)",
    ),
)
