"""Reference attention, forward pass.

For batch b, query head h, kv head g = h // (Hq // Hkv), query i, key j:

    t_ij  = scale * <q_i, k_gj>                          scale defaults to 1 / sqrt(Dqk)
    c_ij  = cap * tanh(t_ij / cap)                       softcap (else c = t)
    s_ij  = c_ij + bias_ij + alibi_ij                    additive terms, after the softcap
    s_ij  = -inf where not keep_ij                       the mask, True = attend
    m_i   = max(max_j s_ij, sink_h)                      sink optional (-inf if absent)
    l_i   = sum_j exp(s_ij - m_i) + exp(sink_h - m_i)
    lse_i = m_i + log(l_i)                               natural log; -inf for an empty row
    p_ij  = exp(s_ij - m_i) / l_i                        (empty rows: the empty_rows policy)
    a_ij  = p_ij * keep'_ij / (1 - rate)                 dropout, when a keep pattern is given
    o_i   = sum_j a_ij v_gj

A row is *empty* when its softmax denominator has no term: ``m_i = -inf`` (no kept key with a
score above -inf, and no sink). Computed with the max subtracted, in the inputs' dtype, with
where-guards so that empty rows never evaluate ``-inf - (-inf)`` or ``log(0)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._typing import Array, Device, Namespace
from ._inputs import DEFAULT_EMPTY_ROWS, DEFAULT_LAYOUT, Inputs, prepare, query_block
from ._results import AttentionResult
from .alibi import Alibi

if TYPE_CHECKING:
    from ..masks import Mask

#: Score entries (B * Hq * rows * Tk) of one query block of the exact path: the path works
#: through the query rows in blocks of ``max(1, EXACT_BLOCK_SCORES // (B * Hq * Tk))`` rows,
#: so a call holds O(block * Tk) scores (a few float64 arrays of 32 MiB), never
#: O(Tq * Tk). Every row's result depends on its own scores only, so blocks change nothing
#: but the summation order of dK, dV, dsinks and broadcast dbias across blocks; calls with
#: B * Hq * Tq * Tk <= EXACT_BLOCK_SCORES (every golden case) run as one block.
EXACT_BLOCK_SCORES = 1 << 22


@dataclass(frozen=True, eq=False)
class ForwardState:
    """The forward pass with the intermediates the backward pass needs (all (B, Hq, ...)).

    tanh_t: tanh(t / cap) (None without softcap); probs: p (policy applied, before dropout);
    dropout_factor: keep' / (1 - rate) or None; weights: a = p * dropout_factor;
    sink_probs: exp(sink_h - lse_i) (B, Hq, Tq, 1) or None; empty: (B, Hq, Tq, 1) bool;
    lse: (B, Hq, Tq, 1); out: (B, Hq, Tq, Dv); k, v: the kv heads expanded to Hq heads.
    """

    inputs: Inputs
    k: Any
    v: Any
    tanh_t: Any
    probs: Any
    dropout_factor: Any
    weights: Any
    sink_probs: Any
    empty: Any
    lse: Any
    out: Any


def kv_head_index(xp: Namespace, q_heads: int, kv_heads: int, device: Device) -> Array:
    """``g(h) = h // (Hq // Hkv)`` for h in [0, Hq): query heads 0..G-1 share kv head 0, and so
    on (repeat_interleave order, as SDPA ``enable_gqa``, FlexAttention, JAX and ONNX >= 1.23;
    ``h % Hkv`` is the classic bug)."""
    group_size = q_heads // kv_heads
    return xp.arange(q_heads, device=device) // group_size


def expand_kv_heads(inp: Inputs, x: Array) -> Array:
    """(B, Hkv, Tk, D) -> (B, Hq, Tk, D) with ``out[:, h] = x[:, g(h)]``."""
    if inp.kv_heads == inp.q_heads:
        return x
    xp = inp.xp
    return xp.take(x, kv_head_index(xp, inp.q_heads, inp.kv_heads, inp.device), axis=1)


def matmul(inp: Inputs, a: Array, b: Array) -> Array:
    """``a @ b`` rounded to the compute dtype.

    NumPy returns float32 for ml_dtypes bfloat16 operands (it accumulates in float32); the
    product is rounded back once, as a bf16 kernel with fp32 accumulation would.
    """
    product = inp.xp.matmul(a, b)
    return product if product.dtype == inp.dtype else inp.xp.astype(product, inp.dtype)


def raw_scores(inp: Inputs, k: Array) -> Array:
    """``t_ij = scale * <q_i, k_gj>``: the matrix product first, then one multiplication by
    scale (not sqrt(scale) on each side, as torch math and ONNX do)."""
    return inp.constant(inp.scale) * matmul(inp, inp.q, inp.xp.matrix_transpose(k))


def softcapped(inp: Inputs, t: Array) -> Array:
    """``c = cap * tanh(t / cap)``; returns ``(c, tanh(t / cap))``, or ``(t, None)``."""
    if inp.softcap is None:
        return t, None
    cap = inp.constant(inp.softcap)
    tanh_t = inp.xp.tanh(t / cap)
    return cap * tanh_t, tanh_t


def biased(inp: Inputs, c: Array) -> Array:
    """``s = c + bias + alibi`` (each term only when given; bias before ALiBi)."""
    if inp.bias is not None:
        c = c + inp.bias
    if inp.alibi_bias is not None:
        c = c + inp.alibi_bias
    return c


def masked(inp: Inputs, s: Array) -> Array:
    """``s_ij = -inf where not keep_ij`` (a replacement, not an addition)."""
    if inp.keep is None:
        return s
    return inp.xp.where(inp.keep, s, inp.constant(-np.inf))


def sink_column(inp: Inputs) -> Array | None:
    """The per-head sink logit as a (1, Hq, 1, 1) array, or None."""
    if inp.sinks is None:
        return None
    return inp.xp.reshape(inp.sinks, (1, inp.q_heads, 1, 1))


def row_maximum(inp: Inputs, s: Array) -> Array:
    """``max_j s_ij`` with keepdims; -inf for Tk = 0 (the maximum of nothing), where the
    array-API max of an empty axis would raise."""
    if inp.k_len == 0:
        shape = (inp.batch, inp.q_heads, inp.q_len, 1)
        return inp.xp.full(shape, -np.inf, dtype=inp.dtype, device=inp.device)
    return inp.xp.max(s, axis=-1, keepdims=True)


def guarded_softmax(inp: Inputs, s: Array) -> tuple[Array, Array, Array]:
    """Max-subtracted softmax of the masked scores with the sink as an extra, valueless term.

        m_i = max(max_j s_ij, sink_h);  empty_i = (m_i == -inf);  m'_i = 0 if empty_i else m_i
        l_i = sum_j exp(s_ij - m'_i) + exp(sink_h - m'_i)
        p_ij = exp(s_ij - m'_i) / l_i,  p_sink_i = exp(sink_h - m'_i) / l_i   (0 if empty_i)
        lse_i = m_i + log(l_i)  (-inf if empty_i)

    Returns ``(p, p_sink or None, lse, empty)`` with lse and empty of shape (B, Hq, Tq, 1).
    NaN anywhere in a row propagates to that row (NaN == -inf is False).
    """
    xp = inp.xp
    row_max = row_maximum(inp, s)
    sink = sink_column(inp)
    if sink is not None:
        row_max = xp.maximum(row_max, sink)
    empty = row_max == inp.constant(-np.inf)
    shift = xp.where(empty, inp.constant(0.0), row_max)
    exp_s = xp.exp(s - shift)
    denominator = xp.sum(exp_s, axis=-1, keepdims=True)
    exp_sink = None
    if sink is not None:
        exp_sink = xp.exp(sink - shift)
        denominator = denominator + exp_sink
    safe_denominator = xp.where(empty, inp.constant(1.0), denominator)
    probs = exp_s / safe_denominator
    sink_probs = None if exp_sink is None else exp_sink / safe_denominator
    lse = xp.where(empty, inp.constant(-np.inf), shift + xp.log(safe_denominator))
    return probs, sink_probs, lse, empty


def unmasked_softmax(inp: Inputs, s: Array) -> Array:
    """Plain softmax of the scores before masking: ``softmax_j(s_ij)`` over all Tk keys; a row
    whose scores are all -inf gives NaN (0/0), computed without evaluating 0/0."""
    xp = inp.xp
    row_max = row_maximum(inp, s)
    all_minus_inf = row_max == inp.constant(-np.inf)
    exp_s = xp.exp(s - xp.where(all_minus_inf, inp.constant(0.0), row_max))
    denominator = xp.sum(exp_s, axis=-1, keepdims=True)
    probs = exp_s / xp.where(all_minus_inf, inp.constant(1.0), denominator)
    return xp.where(all_minus_inf, inp.constant(np.nan), probs)


def apply_empty_row_policy(inp: Inputs, probs: Array, empty: Array,
                           unmasked_scores: Array | None) -> Array:
    """The weights of an empty row (no kept key above -inf and no sink), by policy:

        "zero":     p_ij = 0            -> o_i = 0
        "nan":      p_ij = NaN          -> o_i = NaN   (plain softmax: 0/0)
        "uniform":  p_ij = 1 / Tk       -> o_i = mean_j v_gj   (masked scores replaced by a
                                                               finite constant C, C -> -inf)
        "unmasked": p_ij = softmax_j(s_ij before masking)       (masked scores shifted by C)

    Rows that are not empty are returned unchanged; lse is -inf for empty rows in every policy.
    With Tk = 0 there are no weights to set: see :func:`output_without_keys`.
    """
    xp = inp.xp
    if inp.empty_rows == "zero" or inp.k_len == 0:
        return probs  # guarded_softmax already gives exp(-inf - 0) / 1 = 0
    if inp.empty_rows == "nan":
        return xp.where(empty, inp.constant(np.nan), probs)
    if inp.empty_rows == "uniform":
        return xp.where(empty, inp.constant(1.0 / inp.k_len), probs)
    return xp.where(empty, unmasked_softmax(inp, unmasked_scores), probs)


def output_without_keys(inp: Inputs, out: Array, empty: Array) -> Array:
    """Tk = 0: every row without a sink is empty and its weighted sum has no terms. "zero"
    keeps the empty sum o = 0; "nan", "uniform" (the mean of no values) and "unmasked" (the
    softmax of no scores) are 0/0 = NaN. Rows with a sink are not empty: o = 0."""
    if inp.k_len > 0 or inp.empty_rows == "zero":
        return out
    return inp.xp.where(empty, inp.constant(np.nan), out)


def dropout_factor(inp: Inputs) -> Array | None:
    """``keep'_ij / (1 - rate)`` as a floating array broadcastable to (B, Hq, Tq, Tk), or None."""
    if inp.dropout_keep is None:
        return None
    keep = inp.xp.astype(inp.dropout_keep, inp.dtype)
    return keep * inp.constant(1.0 / (1.0 - inp.dropout_rate))


def forward_pass(inp: Inputs) -> ForwardState:
    """Run the forward pass in (B, H, T, D) order; no error state is touched here, so the
    where-guards alone keep empty rows free of floating-point exceptions."""
    k = expand_kv_heads(inp, inp.k)
    v = expand_kv_heads(inp, inp.v)
    scores, tanh_t = softcapped(inp, raw_scores(inp, k))
    scores = biased(inp, scores)
    probs, sink_probs, lse, empty = guarded_softmax(inp, masked(inp, scores))
    probs = apply_empty_row_policy(inp, probs, empty, scores)
    factor = dropout_factor(inp)
    weights = probs if factor is None else probs * factor
    out = output_without_keys(inp, matmul(inp, weights, v), empty)
    return ForwardState(inputs=inp, k=k, v=v, tanh_t=tanh_t, probs=probs,
                        dropout_factor=factor, weights=weights, sink_probs=sink_probs,
                        empty=empty, lse=lse, out=out)


def query_blocks(inp: Inputs) -> tuple:
    """``(start, stop)`` ranges of query rows covering [0, Tq), each with at most
    ``max(1, EXACT_BLOCK_SCORES // (B * Hq * Tk))`` rows (one empty range for Tq = 0)."""
    if inp.q_len == 0:
        return ((0, 0),)
    rows = max(1, EXACT_BLOCK_SCORES // max(1, inp.batch * inp.q_heads * inp.k_len))
    return tuple((start, min(start + rows, inp.q_len)) for start in range(0, inp.q_len, rows))


def concat_rows(inp: Inputs, parts: list, axis: int = 2) -> Array:
    """The per-block results joined along the query axis (the one part itself if alone)."""
    return parts[0] if len(parts) == 1 else inp.xp.concat(parts, axis=axis)


def blocked_forward(where: str, inp: Inputs, *, return_probs: bool) -> tuple:
    """``(out, lse, weights or None)`` in (B, H, T, D) order, lse (B, Hq, Tq, 1): the forward
    pass of each query block (:func:`query_blocks`), joined; only the results of a block are
    kept, so memory is that of one block's intermediates plus the results."""
    outs, lses, weights = [], [], []
    for start, stop in query_blocks(inp):
        state = forward_pass(query_block(where, inp, start, stop))
        outs.append(state.out)
        lses.append(state.lse)
        if return_probs:
            weights.append(state.weights)
        del state
    probs = concat_rows(inp, weights) if return_probs else None
    return concat_rows(inp, outs), concat_rows(inp, lses), probs


def exact_attention(q: Array, k: Array, v: Array, *, mask: Mask | Array | None = None,
                    scale: float | None = None, softcap: float | None = None,
                    bias: Array | None = None, alibi: Alibi | None = None,
                    sinks: Array | None = None, dropout_keep: Array | None = None,
                    dropout_rate: float | None = None, empty_rows: str = DEFAULT_EMPTY_ROWS,
                    layout: str = DEFAULT_LAYOUT, return_probs: bool = False) -> AttentionResult:
    """:func:`refmask.attention.attention` on the exact path (``path="exact"``): arguments,
    shapes and defaults as there (without ``path``), computed naively in q's dtype."""
    inp = prepare("attention", q, k, v, mask=mask, scale=scale, softcap=softcap, bias=bias,
                  alibi=alibi, sinks=sinks, dropout_keep=dropout_keep,
                  dropout_rate=dropout_rate, empty_rows=empty_rows, layout=layout, defer=True)
    # IEEE special values in the *inputs* (inf - inf, overflow in float16) propagate as
    # NaN/inf; silence NumPy's warnings for them. Empty rows need no silencing (guards).
    with np.errstate(all="ignore"):
        out, lse, probs = blocked_forward("attention", inp, return_probs=return_probs)
    xp = inp.xp
    return AttentionResult(
        out=inp.from_bhtd(out),
        lse=xp.reshape(lse, (inp.batch, inp.q_heads, inp.q_len)),
        probs=probs,
    )
