"""Scores and probabilities as outputs (ONNX ``Attention`` ``qk_matmul_output``).

The intermediate matrices of the forward pass (docs/spec.md 3.2), each (B, Hq, Tq, Tk):

    "raw"          t_ij = scale * <q_i, k_gj>                    ONNX qk_matmul_output_mode 0
    "softcapped"   c_ij = cap * tanh(t_ij / cap)  (t without cap)            mode 1
    "masked"       s_ij = c_ij + bias_ij + alibi_ij, -inf where dropped      mode 2
    "probs"        p_ij after the empty-row policy, before dropout           mode 3

"masked" is exactly what the softmax reads: a dropped pair is -inf (a replacement, so a
masked pair is -inf even where the bias is +inf). "probs" rows of an empty row follow the
``empty_rows`` policy (ONNX >= 1.23 and the "zero" policy: a zero row); a sink's share is not
a column, so a row with a sink sums to ``1 - exp(sink_h - lse_i)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._typing import Array
from .._validate import check_choice
from ._inputs import DEFAULT_EMPTY_ROWS, DEFAULT_LAYOUT, prepare
from .forward import (
    apply_empty_row_policy,
    biased,
    expand_kv_heads,
    guarded_softmax,
    masked,
    raw_scores,
    softcapped,
)
from .temperature import scaled_queries

if TYPE_CHECKING:
    from ..masks import Mask
    from .alibi import Alibi

SCORE_STAGES = ("raw", "softcapped", "masked", "probs")
#: ONNX Attention ``qk_matmul_output_mode`` -> stage (ONNX opset 23/24 operator text).
ONNX_QK_MATMUL_OUTPUT_MODES = {0: "raw", 1: "softcapped", 2: "masked", 3: "probs"}


def attention_scores(q: Array, k: Array, *, stage: str, mask: Mask | Array | None = None,
                     scale: float | None = None, softcap: float | None = None,
                     bias: Array | None = None, alibi: Alibi | None = None,
                     sinks: Array | None = None, empty_rows: str = DEFAULT_EMPTY_ROWS,
                     layout: str = DEFAULT_LAYOUT, query_scale: Array | None = None) -> Array:
    """One intermediate of the forward pass, shape (B, Hq, Tq, Tk), in q's namespace and dtype.

    stage: "raw", "softcapped", "masked" or "probs" (module docstring); required.
    The other arguments mean what they mean in :func:`refmask.attention.attention` (q is
    (B, Hq, Tq, Dqk) or (B, Tq, Hq, Dqk) by layout, k likewise with Hkv, Tk); values are not
    needed, and dropout does not apply (ONNX Attention has none).
    """
    stage = check_choice("attention_scores", "stage", stage, SCORE_STAGES)
    if query_scale is not None:  # Llama 4 temperature: q rows scaled before the product
        q, _ = scaled_queries("attention_scores", q, query_scale, layout)
    v = k[..., :1]  # prepare checks a value array; no value is read
    inp = prepare("attention_scores", q, k, v, mask=mask, scale=scale, softcap=softcap,
                  bias=bias, alibi=alibi, sinks=sinks, dropout_keep=None, dropout_rate=None,
                  empty_rows=empty_rows, layout=layout)
    with np.errstate(all="ignore"):
        scores = raw_scores(inp, expand_kv_heads(inp, inp.k))
        if stage == "raw":
            return scores
        scores, _ = softcapped(inp, scores)
        if stage == "softcapped":
            return scores
        scores = biased(inp, scores)
        dropped = masked(inp, scores)
        if stage == "masked":
            return _broadcast(inp, dropped)
        probs, _, _, empty = guarded_softmax(inp, dropped)
        return apply_empty_row_policy(inp, probs, empty, scores)


def _broadcast(inp, x):
    return inp.xp.broadcast_to(x, (inp.batch, inp.q_heads, inp.q_len, inp.k_len))
