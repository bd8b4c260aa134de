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
from typing import Any

import numpy as np

from .._validate import check_choice
from ._inputs import DEFAULT_EMPTY_ROWS, DEFAULT_LAYOUT, Inputs, prepare, query_block

#: Score entries (B * Hq * rows * Tk) of one query block of the exact path: the path works
#: through the query rows in blocks of ``max(1, EXACT_BLOCK_SCORES // (B * Hq * Tk))`` rows,
#: so a call holds O(block * Tk) scores (a few float64 arrays of 32 MiB), never
#: O(Tq * Tk). Every row's result depends on its own scores only, so blocks change nothing
#: but the summation order of dK, dV, dsinks and broadcast dbias across blocks; calls with
#: B * Hq * Tq * Tk <= EXACT_BLOCK_SCORES (every golden case) run as one block.
EXACT_BLOCK_SCORES = 1 << 22

#: Values of the ``path`` keyword of attention / attention_vjp (see refmask.fast._dispatch).
PATHS = ("auto", "exact", "fast")
DEFAULT_PATH = "auto"


@dataclass(frozen=True, eq=False)
class AttentionResult:
    """What :func:`attention` returns.

    out: (B, Hq, Tq, Dv) for layout "BHTD", (B, Tq, Hq, Dv) for "BTHD".
    lse: (B, Hq, Tq) in either layout (like FlashAttention's softmax_lse): the natural-log
      softmax denominator ``log(sum_kept exp(s_ij) + exp(sink_h))``; -inf for an empty row
      under every policy; not affected by dropout.
    probs: (B, Hq, Tq, Tk), the weights ``a_ij`` multiplied into V (after the empty-row policy
      and dropout), or None unless ``return_probs=True``.
    """

    out: Any
    lse: Any
    probs: Any = None


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


def kv_head_index(xp, q_heads: int, kv_heads: int, device):
    """``g(h) = h // (Hq // Hkv)`` for h in [0, Hq): query heads 0..G-1 share kv head 0, and so
    on (repeat_interleave order, as SDPA ``enable_gqa``, FlexAttention, JAX and ONNX >= 1.23;
    ``h % Hkv`` is the classic bug)."""
    group_size = q_heads // kv_heads
    return xp.arange(q_heads, device=device) // group_size


def expand_kv_heads(inp: Inputs, x):
    """(B, Hkv, Tk, D) -> (B, Hq, Tk, D) with ``out[:, h] = x[:, g(h)]``."""
    if inp.kv_heads == inp.q_heads:
        return x
    xp = inp.xp
    return xp.take(x, kv_head_index(xp, inp.q_heads, inp.kv_heads, inp.device), axis=1)


def matmul(inp: Inputs, a, b):
    """``a @ b`` rounded to the compute dtype.

    NumPy returns float32 for ml_dtypes bfloat16 operands (it accumulates in float32); the
    product is rounded back once, as a bf16 kernel with fp32 accumulation would.
    """
    product = inp.xp.matmul(a, b)
    return product if product.dtype == inp.dtype else inp.xp.astype(product, inp.dtype)


def raw_scores(inp: Inputs, k):
    """``t_ij = scale * <q_i, k_gj>``: the matrix product first, then one multiplication by
    scale (not sqrt(scale) on each side, as torch math and ONNX do)."""
    return inp.constant(inp.scale) * matmul(inp, inp.q, inp.xp.matrix_transpose(k))


def softcapped(inp: Inputs, t):
    """``c = cap * tanh(t / cap)``; returns ``(c, tanh(t / cap))``, or ``(t, None)``."""
    if inp.softcap is None:
        return t, None
    cap = inp.constant(inp.softcap)
    tanh_t = inp.xp.tanh(t / cap)
    return cap * tanh_t, tanh_t


def biased(inp: Inputs, c):
    """``s = c + bias + alibi`` (each term only when given; bias before ALiBi)."""
    if inp.bias is not None:
        c = c + inp.bias
    if inp.alibi_bias is not None:
        c = c + inp.alibi_bias
    return c


def masked(inp: Inputs, s):
    """``s_ij = -inf where not keep_ij`` (a replacement, not an addition)."""
    if inp.keep is None:
        return s
    return inp.xp.where(inp.keep, s, inp.constant(-np.inf))


def sink_column(inp: Inputs):
    """The per-head sink logit as a (1, Hq, 1, 1) array, or None."""
    if inp.sinks is None:
        return None
    return inp.xp.reshape(inp.sinks, (1, inp.q_heads, 1, 1))


def row_maximum(inp: Inputs, s):
    """``max_j s_ij`` with keepdims; -inf for Tk = 0 (the maximum of nothing), where the
    array-API max of an empty axis would raise."""
    if inp.k_len == 0:
        shape = (inp.batch, inp.q_heads, inp.q_len, 1)
        return inp.xp.full(shape, -np.inf, dtype=inp.dtype, device=inp.device)
    return inp.xp.max(s, axis=-1, keepdims=True)


def guarded_softmax(inp: Inputs, s):
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


def unmasked_softmax(inp: Inputs, s):
    """Plain softmax of the scores before masking: ``softmax_j(s_ij)`` over all Tk keys; a row
    whose scores are all -inf gives NaN (0/0), computed without evaluating 0/0."""
    xp = inp.xp
    row_max = row_maximum(inp, s)
    all_minus_inf = row_max == inp.constant(-np.inf)
    exp_s = xp.exp(s - xp.where(all_minus_inf, inp.constant(0.0), row_max))
    denominator = xp.sum(exp_s, axis=-1, keepdims=True)
    probs = exp_s / xp.where(all_minus_inf, inp.constant(1.0), denominator)
    return xp.where(all_minus_inf, inp.constant(np.nan), probs)


def apply_empty_row_policy(inp: Inputs, probs, empty, unmasked_scores):
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


def output_without_keys(inp: Inputs, out, empty):
    """Tk = 0: every row without a sink is empty and its weighted sum has no terms. "zero"
    keeps the empty sum o = 0; "nan", "uniform" (the mean of no values) and "unmasked" (the
    softmax of no scores) are 0/0 = NaN. Rows with a sink are not empty: o = 0."""
    if inp.k_len > 0 or inp.empty_rows == "zero":
        return out
    return inp.xp.where(empty, inp.constant(np.nan), out)


def dropout_factor(inp: Inputs):
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


def concat_rows(inp: Inputs, parts: list, axis: int = 2):
    """The per-block results joined along the query axis (the one part itself if alone)."""
    return parts[0] if len(parts) == 1 else inp.xp.concat(parts, axis=axis)


def blocked_forward(where: str, inp: Inputs, *, return_probs: bool):
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


def attention(q, k, v, *, mask=None, scale=None, softcap=None, bias=None, alibi=None,
              sinks=None, dropout_keep=None, dropout_rate=None,
              empty_rows=DEFAULT_EMPTY_ROWS, layout=DEFAULT_LAYOUT,
              return_probs=False, path=DEFAULT_PATH) -> AttentionResult:
    """Reference scaled dot-product attention (see the module docstring for the formulas).

    Letters: B batch, Hq query heads, Hkv kv heads (Hq % Hkv == 0; query head h reads kv head
    ``h // (Hq // Hkv)``), Tq queries, Tk keys, Dqk query/key head dim, Dv value head dim.

    Args:
      q: (B, Hq, Tq, Dqk) for layout "BHTD", (B, Tq, Hq, Dqk) for "BTHD"; a real floating
        array of any array-API namespace (NumPy incl. ml_dtypes bfloat16, torch, JAX, ...).
      k: (B, Hkv, Tk, Dqk) / (B, Tk, Hkv, Dqk), same namespace and dtype as q.
      v: (B, Hkv, Tk, Dv) / (B, Tk, Hkv, Dv), same namespace and dtype as q.
      mask: None (every key kept); a bool array broadcastable to (B, Hq, Tq, Tk), True = attend
        (indexed by *query* head, in either layout); or a refmask Mask (anything with
        ``materialize(B, Hq, Tq, Tk, *, xp, device)``). Position offsets (KV cache, bottom-right
        causal) live in the mask's alignment: attention has no hidden offset.
      scale: multiplier of ``<q, k>``; default None = ``1 / sqrt(Dqk)``.
      softcap: ``cap`` > 0 for ``cap * tanh(s / cap)``, applied before bias, ALiBi and mask;
        default None = no capping.
      bias: additive scores, broadcastable to (B, Hq, Tq, Tk), same dtype as q; -inf entries
        act like masked keys. Default None.
      alibi: an :class:`~refmask.attention.alibi.Alibi` (slopes, convention and alignment all
        explicit); default None.
      sinks: (Hq,) per-head sink logits (gpt-oss), same dtype as q: ``exp(sink_h)`` joins the
        softmax denominator with no value vector. Default None.
      dropout_keep: bool array broadcastable to (B, Hq, Tq, Tk), True = keep; requires
        dropout_rate. Default None (no dropout).
      dropout_rate: the rate in [0, 1) that the kept weights are divided by ``1 - rate``;
        required with dropout_keep. Dropout never changes lse.
      empty_rows: what a row with no kept key and no sink returns: "zero" (default: o = 0),
        "nan", "uniform" (mean of V) or "unmasked" (softmax of the unmasked scores); lse is
        -inf for such a row in every policy. See docs/spec.md for which peer does what.
      layout: "BHTD" (default) or "BTHD"; applies to q, k, v and out, not to lse, probs, mask,
        bias or dropout_keep, which are always (B, Hq, Tq[, Tk]).
      return_probs: also return the (B, Hq, Tq, Tk) weights; default False.
      path: "auto" (default), "exact" or "fast". "exact" is the array-API reference below;
        "fast" is :mod:`refmask.fast` (NumPy float64, tiles skipped by ``classify``, O(T*D)
        memory), which raises ``refmask.fast.FastPathUnsupported`` naming ``path`` and the
        feature for what it does not cover (dropout, return_probs, empty_rows="unmasked");
        "auto" takes the fast path for NumPy float64 inputs with
        B * Hq * Tq * Tk >= ``refmask.fast._dispatch.AUTO_MIN_SCORES`` and covered
        features, the exact path otherwise. Both agree to ~1e-12 relative in float64.

    Returns:
      AttentionResult(out, lse, probs) in q's namespace, dtype and device.

    Computed naively in q's dtype (float64 is the reference). NaN or inf inputs propagate to
    the outputs they touch; no floating-point warning is ever emitted.
    """
    path = check_choice("attention", "path", path, PATHS)
    if not isinstance(return_probs, bool):
        raise TypeError(f"attention: return_probs must be a bool, got {return_probs!r}")
    if path != "exact":
        from ..fast._dispatch import forward_or_none

        result = forward_or_none(
            "attention", path, q, k, v,
            dict(mask=mask, scale=scale, softcap=softcap, bias=bias, alibi=alibi, sinks=sinks,
                 dropout_keep=dropout_keep, dropout_rate=dropout_rate, empty_rows=empty_rows,
                 layout=layout),
            return_probs=return_probs)
        if result is not None:
            return result
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
