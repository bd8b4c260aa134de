"""Reference attention: the exact forward and backward semantics refmask judges peers against.

    s_ij  = scale * <q_i, k_gj>,  g = h // (Hq // Hkv)       scale defaults to 1 / sqrt(Dqk)
    s_ij  = cap * tanh(s_ij / cap)                            softcap, before bias and mask
    s_ij += bias_ij + alibi_ij
    s_ij  = -inf where the mask drops (b, h, i, j)
    lse_i = log(sum_j exp(s_ij) + exp(sink_h))                natural log, sink optional
    p_ij  = exp(s_ij - lse_i) * dropout_keep_ij / (1 - rate)  dropout optional, lse unchanged
    o_i   = sum_j p_ij v_gj

Rows with no kept key and no sink follow the explicit ``empty_rows`` policy. Written once
against the array API: NumPy (incl. ml_dtypes bfloat16), array-api-strict, torch and JAX
arrays give the same float64 results. The normative text is docs/spec.md, section "Attention".
"""

from ._inputs import DEFAULT_EMPTY_ROWS, DEFAULT_LAYOUT, EMPTY_ROW_POLICIES, LAYOUTS
from ._results import AttentionResult, Grads
from .alibi import ALIBI_CONVENTIONS, Alibi, alibi_slopes
from .dispatch import attention, attention_vjp
from .merge import LSE_BASES, merge
from .scores import ONNX_QK_MATMUL_OUTPUT_MODES, SCORE_STAGES, attention_scores
from .temperature import llama4_query_scale

__all__ = [
    "ALIBI_CONVENTIONS",
    "DEFAULT_EMPTY_ROWS",
    "DEFAULT_LAYOUT",
    "EMPTY_ROW_POLICIES",
    "LAYOUTS",
    "LSE_BASES",
    "ONNX_QK_MATMUL_OUTPUT_MODES",
    "SCORE_STAGES",
    "Alibi",
    "AttentionResult",
    "Grads",
    "alibi_slopes",
    "attention",
    "attention_scores",
    "attention_vjp",
    "llama4_query_scale",
    "merge",
]
