"""``torch.nn.functional.scaled_dot_product_attention`` (SDPA) as two adapters.

``torch.sdpa`` -- every case in SDPA's own mask features:

=====================================  =================================================
case                                   SDPA call
=====================================  =================================================
no mask                                ``attn_mask=None``
``causal(align="top_left")``           ``is_causal=True`` (top-left: ``ones(L, S).tril()``)
``causal(align="bottom_right")``       ``attn_mask=causal_lower_right(Tq, Tk)``
                                       (torch/nn/attention/bias.py; ``tril(diagonal=S-L)``)
any other mask                         ``attn_mask`` = dense bool keep (True = attend), its
                                       batch/head axes cut to 1 where constant (broadcast)
bias and/or ALiBi                      float ``attn_mask`` (added to the scores); with a mask,
                                       ``-inf`` where the mask drops
Hkv < Hq                               ``enable_gqa=True``
explicit scale                         ``scale=``
BTHD                                   ``transpose(1, 2)`` views
softcap / sinks / dropout keep-mask    unsupported: SDPA has no softcap or sink argument, and
                                       its ``dropout_p`` draws its own random pattern
=====================================  =================================================

SDPA returns no LSE (``lse=None``). Gradients: torch autograd of the case's ``d_out``
(dq, dk, dv; dbias through the float ``attn_mask``).

``torch.sdpa.is_causal`` -- the same, except that *every* ``causal(align="top_left" |
"bottom_right")`` mask becomes ``is_causal=True``, as code that ignores the alignment does.
SDPA's ``is_causal`` is top-left (its docstring: "the upper left causal bias due to the
alignment ... when the mask is a non-square matrix"), so on bottom-right non-square cases
this adapter shows the ``causal=top_left`` policy. A causal case with a bias or ALiBi is
unsupported there: the SDPA docstring says "An error is thrown if both attn_mask and is_causal
are set" (the math backend raises; the CPU flash kernel accepts the pair), and ``torch.sdpa``
covers those cases with a float mask.

Both run on the CPU; ``_call`` takes the device, so cuda.py runs the same translation on CUDA
under a forced ``sdpa_kernel`` backend (``torch.sdpa.cuda.flash`` and the others).
"""

from __future__ import annotations

from ..common import Adapter, Profile
from . import common as tc

SOFTCAP = "SDPA has no softcap argument (scores go straight from scale to mask)"
SINKS = "SDPA has no attention-sink argument (no extra softmax column)"
DROPOUT = ("SDPA's dropout_p draws its own random pattern; a given dropout keep-mask cannot "
           "be passed")


def _unsupported(case, *, always_is_causal: bool) -> str | None:
    name = "torch.sdpa.is_causal" if always_is_causal else "torch.sdpa"
    reason = tc.score_reasons(case, name, softcap=SOFTCAP, sinks=SINKS, dropout=DROPOUT)
    if reason:
        return reason
    if always_is_causal and tc.plain_causal(case.mask) and tc.has_additive(case):
        return (f"{name}: is_causal=True cannot be combined with the float attn_mask that the "
                "bias/ALiBi needs (SDPA docstring: 'An error is thrown if both attn_mask and "
                "is_causal are set'); torch.sdpa expresses this case with a float mask")
    return None


def _call(case, q, k, v, bias, *, always_is_causal: bool, device: str = "cpu"):
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    kwargs = {"scale": case.scale, "enable_gqa": case.kv_heads != case.q_heads}
    causal = tc.plain_causal(case.mask)
    additive = bias
    if case.alibi is not None:
        alibi = tc.alibi_tensor(case, case.dtype, device)
        additive = alibi if additive is None else additive + alibi

    if causal is not None and additive is None and (always_is_causal or causal == "top_left"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kwargs)
    if causal == "bottom_right" and additive is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=causal_lower_right(case.q_len, case.k_len), **kwargs)
    if case.mask is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=additive, **kwargs)
    keep = tc.to_torch(tc.reduced_keep(case.keep()), device=device)
    if additive is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, **kwargs)
    floats = additive.masked_fill(~keep, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=floats, **kwargs)


def _runner(always_is_causal: bool):
    def run(case, inputs, *, grads: bool):
        def forward(q, k, v, bias):
            return _call(case, q, k, v, bias, always_is_causal=always_is_causal), None

        return tc.run_autograd(case, inputs, grads, forward)

    return run


_NOTES = ("torch.nn.functional.scaled_dot_product_attention on CPU; no LSE returned; "
          "empty rows give 0 (torch >= 2.5 _safe_softmax / CPU flash kernel)")

ADAPTERS = (
    Adapter(
        name="torch.sdpa",
        profile=Profile(empty_rows="zero", causal_alignment="both", lse_base=None,
                        backward=True, notes=_NOTES + "; causal top-left -> is_causal=True, "
                        "bottom-right -> causal_lower_right"),
        run=_runner(always_is_causal=False),
        unsupported=lambda case: _unsupported(case, always_is_causal=False),
        unavailable=tc.unavailable,
        description="F.scaled_dot_product_attention with its native masks: is_causal, "
                    "causal_lower_right, bool keep masks, float masks, enable_gqa, scale",
    ),
    Adapter(
        name="torch.sdpa.is_causal",
        profile=Profile(empty_rows="zero", causal_alignment="top_left", lse_base=None,
                        backward=True, notes=_NOTES + "; every causal mask -> is_causal=True "
                        "(top-left), whatever its alignment"),
        run=_runner(always_is_causal=True),
        unsupported=lambda case: _unsupported(case, always_is_causal=True),
        unavailable=tc.unavailable,
        description="F.scaled_dot_product_attention with is_causal=True for every causal "
                    "mask: shows SDPA's top-left convention on bottom-right cases",
    ),
)
