"""Reference attention, backward pass (vector-Jacobian product).

With the forward quantities of :mod:`.forward` (t, c, s, p, a = p * f with f the dropout
factor, o) and upstream gradients dO (like o) and optionally dlse (like lse):

    dA_ij = <dO_i, v_gj>                     dV_gj = sum_{h in group g} sum_i a_ij dO_i
    dP_ij = dA_ij * f_ij                     (f = 1 without dropout)
    D_i   = <dO_i, o_i>  (= sum_j p_ij dP_ij)
    dS_ij = p_ij * (dP_ij - D_i + dlse_i)    on kept keys; 0 on masked keys
    dsink_h = sum_{b, i} p_sink_i * (dlse_i - D_i)      p_sink_i = exp(sink_h - lse_i)
    dbias = dS summed over the axes the bias was broadcast along
    dT_ij = dS_ij * (1 - tanh(t_ij / cap)^2)  (softcap; dT = dS without)
    dQ_i  = scale * sum_j dT_ij k_gj         dK_gj = scale * sum_{h in group g} sum_i dT_ij q_i

Empty rows (lse = -inf, a constant): "zero" -> p = 0, so they contribute nothing; "uniform" ->
p = 1/Tk does not depend on the scores, so dS = 0 and only dV receives a_ij dO_i; "unmasked" ->
dS = p (dP - D) on every key of the row (the shifted scores still depend on q, k, bias; dlse is
ignored); "nan" -> the NaN weights reach dV (and dS of kept keys), masked keys still get dS = 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._typing import Array
from ._inputs import (
    DEFAULT_EMPTY_ROWS,
    DEFAULT_LAYOUT,
    Inputs,
    check_upstream_gradients,
    prepare,
    query_block,
)
from ._results import Grads
from .alibi import Alibi
from .forward import ForwardState, concat_rows, forward_pass, matmul, query_blocks

if TYPE_CHECKING:
    from ..masks import Mask


def sum_over_groups(inp: Inputs, x: Array) -> Array:
    """(B, Hq, T, D) -> (B, Hkv, T, D): ``out[:, g] = sum_{h : h // G == g} x[:, h]``, the
    adjoint of repeating kv head g for query heads gG .. gG + G - 1."""
    if inp.group_size == 1:
        return x
    xp = inp.xp
    batch, _, length, dim = x.shape
    grouped = xp.reshape(x, (batch, inp.kv_heads, inp.group_size, length, dim))
    return xp.sum(grouped, axis=2)


def reduce_to_shape(inp: Inputs, x: Array, shape: tuple) -> Array:
    """Sum a (B, Hq, Tq, Tk) gradient over the axes along which an array of ``shape`` was
    broadcast (leading missing axes and size-1 axes), then give it exactly ``shape``."""
    xp = inp.xp
    shape = tuple(int(n) for n in shape)
    padded = (1,) * (x.ndim - len(shape)) + shape
    axes = tuple(axis for axis, size in enumerate(padded) if size == 1 and x.shape[axis] != 1)
    if axes:
        x = xp.sum(x, axis=axes, keepdims=True)
    return xp.reshape(x, shape)


def score_gradient(state: ForwardState, d_out: Array, d_lse: Array | None) -> tuple[Array, Array,
                   Array]:
    """``dS`` (B, Hq, Tq, Tk), ``D`` (B, Hq, Tq, 1) and ``dV`` expanded to Hq heads.

        dA = dO v^T,  dP = dA * f,  D_i = <dO_i, o_i>,  dS = p * (dP - D + dlse)
    then the mask gate and the empty-row policy (module docstring).
    """
    inp = state.inputs
    xp = inp.xp
    d_weights = matmul(inp, d_out, xp.matrix_transpose(state.v))
    dv = matmul(inp, xp.matrix_transpose(state.weights), d_out)
    d_probs = d_weights if state.dropout_factor is None else d_weights * state.dropout_factor
    row_dot = xp.sum(d_out * state.out, axis=-1, keepdims=True)
    inner = d_probs - row_dot
    if d_lse is not None:
        # lse of an empty row is the constant -inf: dlse has nothing to act on there.
        inner = inner + xp.where(state.empty, inp.constant(0.0), d_lse)
    d_scores = state.probs * inner
    zero = inp.constant(0.0)
    if inp.empty_rows == "uniform":
        d_scores = xp.where(state.empty, zero, d_scores)
    if inp.keep is not None:
        # A masked score does not influence anything (the mask replaces it), so its gradient
        # is exactly 0, even when dP is NaN; "unmasked" empty rows use every score.
        gate = inp.keep
        if inp.empty_rows == "unmasked":
            gate = xp.logical_or(gate, state.empty)
        d_scores = xp.where(gate, d_scores, zero)
    return d_scores, row_dot, dv


def sink_gradient(state: ForwardState, row_dot: Array, d_lse: Array | None) -> Array:
    """``dsink_h = sum_{b, i} p_sink_i * (dlse_i - D_i)`` over non-empty rows, shape (Hq,)."""
    inp = state.inputs
    xp = inp.xp
    inner = -row_dot if d_lse is None else d_lse - row_dot
    terms = xp.where(state.empty, inp.constant(0.0), state.sink_probs * inner)
    return xp.sum(terms, axis=(0, 2, 3))


def backward_pass(state: ForwardState, d_out: Array, d_lse: Array | None) -> Grads:
    """All gradients in (B, H, T, D) order; d_out (B, Hq, Tq, Dv), d_lse (B, Hq, Tq, 1)."""
    inp = state.inputs
    xp = inp.xp
    d_scores, row_dot, dv = score_gradient(state, d_out, d_lse)
    dbias = None if inp.bias is None else reduce_to_shape(inp, d_scores, tuple(inp.bias.shape))
    dsinks = None if inp.sinks is None else sink_gradient(state, row_dot, d_lse)
    d_raw = d_scores
    if state.tanh_t is not None:
        d_raw = d_scores * (inp.constant(1.0) - state.tanh_t * state.tanh_t)
    scale = inp.constant(inp.scale)
    dq = scale * matmul(inp, d_raw, state.k)
    dk = scale * matmul(inp, xp.matrix_transpose(d_raw), inp.q)
    return Grads(dq=dq, dk=sum_over_groups(inp, dk), dv=sum_over_groups(inp, dv), dbias=dbias,
                 dsinks=dsinks)


def blocked_backward(where: str, inp: Inputs, d_out: Array, d_lse: Array | None) -> Grads:
    """:func:`backward_pass` per query block (:func:`~.forward.query_blocks`), each block's
    forward pass recomputed: dq joined along the query axis; dk, dv, dsinks summed over the
    blocks; dbias joined where the bias has a query axis, summed where it is broadcast."""
    parts: dict = {"dq": [], "dk": None, "dv": None, "dbias": [], "dsinks": None}
    bias_rows = inp.bias is not None and inp.bias.ndim >= 2 and inp.bias.shape[-2] != 1
    for start, stop in query_blocks(inp):
        block = query_block(where, inp, start, stop)
        grads = backward_pass(forward_pass(block), d_out[:, :, start:stop, ...],
                              None if d_lse is None else d_lse[:, :, start:stop, ...])
        parts["dq"].append(grads.dq)
        for name in ("dk", "dv", "dsinks"):
            value = getattr(grads, name)
            parts[name] = value if parts[name] is None else parts[name] + value
        if grads.dbias is not None:
            parts["dbias"].append(grads.dbias)
    dbias = None
    if parts["dbias"]:
        if bias_rows:
            dbias = concat_rows(inp, parts["dbias"], axis=inp.bias.ndim - 2)
        else:
            dbias = parts["dbias"][0]
            for value in parts["dbias"][1:]:
                dbias = dbias + value
    return Grads(dq=concat_rows(inp, parts["dq"]), dk=parts["dk"], dv=parts["dv"],
                 dbias=dbias, dsinks=parts["dsinks"])


def exact_attention_vjp(q: Array, k: Array, v: Array, d_out: Array, *, d_lse: Array | None = None,
                        mask: Mask | Array | None = None, scale: float | None = None,
                        softcap: float | None = None, bias: Array | None = None,
                        alibi: Alibi | None = None, sinks: Array | None = None,
                        dropout_keep: Array | None = None, dropout_rate: float | None = None,
                        empty_rows: str = DEFAULT_EMPTY_ROWS,
                        layout: str = DEFAULT_LAYOUT) -> Grads:
    """:func:`refmask.attention.attention_vjp` on the exact path (``path="exact"``): arguments,
    shapes and defaults as there (without ``path``); recomputes the forward pass."""
    where = "attention_vjp"
    inp = prepare(where, q, k, v, mask=mask, scale=scale, softcap=softcap, bias=bias,
                  alibi=alibi, sinks=sinks, dropout_keep=dropout_keep,
                  dropout_rate=dropout_rate, empty_rows=empty_rows, layout=layout, defer=True)
    d_out, d_lse = check_upstream_gradients(where, inp, q, d_out, d_lse)
    if d_lse is not None:
        d_lse = inp.xp.reshape(d_lse, (inp.batch, inp.q_heads, inp.q_len, 1))
    with np.errstate(all="ignore"):  # see exact_attention(): only input specials can raise flags
        grads = blocked_backward(where, inp, d_out, d_lse)
    return Grads(dq=inp.from_bhtd(grads.dq), dk=inp.from_bhtd(grads.dk),
                 dv=inp.from_bhtd(grads.dv), dbias=grads.dbias, dsinks=grads.dsinks)
