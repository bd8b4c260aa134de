"""Legitimate low-precision attention kernels, written here independently of refmask.

Each follows the user calling convention (``fn(q, k, v, call) -> (out, lse)``, q/k/v in the
case dtype, BHTD) and rounds exactly where a real kernel of its kind rounds:

Float32 below means float64 for float64 inputs.

* ``online_softmax``: FlashAttention-style block-wise online softmax over key blocks;
  scores, running max, normaliser and the P @ V accumulator in float32; the unnormalised
  block weights P rounded to the case dtype before P @ V; the output rounded to the case
  dtype, the LSE returned in float32.
* ``online_softmax_prescaled``: the same with q and k each multiplied by sqrt(scale) and
  rounded to the case dtype first (torch's math path and ONNX's function body scale this way).
* ``scores_in_dtype``: PyTorch's math SDPA in low precision: q @ k^T accumulated in float32 and
  rounded to the case dtype, scaled in the case dtype, softmax in float32, P rounded to the
  case dtype, P @ V accumulated in float32, output rounded.

None of them may fail a catalog case (spec 5.2); ``bugs`` below are kernels that must.
"""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32


def _acc(dtype):
    """The accumulation dtype: float32, or float64 for float64 inputs."""
    return np.float64 if dtype == np.float64 else F32


def _rounded(x, dtype):
    A = _acc(dtype)
    return np.asarray(x, A).astype(dtype).astype(A)


def _expanded(x, q_heads):
    return np.repeat(x, q_heads // x.shape[1], axis=1)


def _scores_f32(q, k, call, *, prescale: bool, scores_in_dtype: bool):
    dtype = q.dtype
    A = _acc(dtype)
    k = _expanded(k, q.shape[1])
    if prescale:
        root = A(math.sqrt(call.scale))
        qs, ks = _rounded(q.astype(A) * root, dtype), _rounded(k.astype(A) * root, dtype)
        s = qs @ np.swapaxes(ks, -1, -2)
    elif scores_in_dtype:
        raw = _rounded(q.astype(A) @ np.swapaxes(k.astype(A), -1, -2), dtype)
        s = _rounded(raw * A(call.scale), dtype)
    else:
        s = (q.astype(A) @ np.swapaxes(k.astype(A), -1, -2)) * A(call.scale)
    if call.softcap is not None:
        s = A(call.softcap) * np.tanh(s / A(call.softcap))
    if call.bias is not None:
        s = s + np.asarray(call.bias, A)
    return np.where(call.keep, s, -np.inf).astype(A)


def online_softmax(q, k, v, call, *, block: int = 3, prescale: bool = False,
                   scores_in_dtype: bool = False):
    """Block-wise online softmax with float32 accumulation (module docstring)."""
    dtype = q.dtype
    A = _acc(dtype)
    s = _scores_f32(q, k, call, prescale=prescale, scores_in_dtype=scores_in_dtype)
    v = _expanded(v, q.shape[1]).astype(A)
    batch, heads, q_len, k_len = s.shape
    running = np.full((batch, heads, q_len, 1), -np.inf, A)
    total = np.zeros((batch, heads, q_len, 1), A)
    if call.sinks is not None:
        running = np.broadcast_to(np.asarray(call.sinks, A).reshape(1, -1, 1, 1),
                                  running.shape).copy()
        total[...] = 1.0
    acc = np.zeros((batch, heads, q_len, v.shape[-1]), A)
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, k_len, block):
            cols = slice(start, start + block)
            top = np.maximum(running, s[..., cols].max(axis=-1, keepdims=True))
            shift = np.where(np.isneginf(top), A(0), top)
            correction = np.where(np.isneginf(running), A(0), np.exp(running - shift))
            weights = np.exp(s[..., cols] - shift).astype(A)
            total = total * correction + weights.sum(axis=-1, keepdims=True)
            weights = _rounded(weights, dtype)
            if call.dropout_keep is not None:
                weights = weights * np.asarray(call.dropout_keep[..., cols], A) / A(
                    1.0 - call.dropout_rate)
            acc = acc * correction + weights @ v[..., cols, :]
            running = top
        empty = np.isneginf(running) | (total == 0)
        out = np.where(empty, A(0), acc / np.where(empty, A(1), total))
        lse = np.where(empty, -np.inf, running + np.log(np.where(empty, A(1), total)))
    return out.astype(dtype), lse[..., 0].astype(A)


def online_softmax_prescaled(q, k, v, call):
    return online_softmax(q, k, v, call, prescale=True)


def scores_in_dtype(q, k, v, call):
    """One block (plain softmax in float32) over scores rounded to the case dtype."""
    return online_softmax(q, k, v, call, block=max(1, call.keep.shape[-1]),
                          scores_in_dtype=True)


LEGIT = {"online_softmax": online_softmax, "online_softmax_prescaled": online_softmax_prescaled,
         "scores_in_dtype": scores_in_dtype}


def scaled_output(factor: float):
    """A bug: the legitimate output multiplied by ``factor`` (a uniform relative error)."""
    def fn(q, k, v, call):
        out, _ = online_softmax(q, k, v, call)
        return (np.asarray(out, F32) * F32(factor)).astype(q.dtype)

    fn.__qualname__ = f"scaled_output_{factor}"
    return fn


def spec_output(q, k, v, call, *, scale: float | None = None) -> np.ndarray:
    """The spec's output (section 3.2) computed plainly in float64, BHTD: scores times
    ``scale`` (default ``call.scale``), softcap, bias, the keep mask as -inf, a max-shifted
    softmax with the sink in the denominator, empty rows zero, dropout, then P @ V."""
    q64, k64, v64 = (np.asarray(x, np.float64) for x in (q, k, v))
    k64, v64 = _expanded(k64, q.shape[1]), _expanded(v64, q.shape[1])
    s = (call.scale if scale is None else scale) * (q64 @ np.swapaxes(k64, -1, -2))
    if call.softcap is not None:
        s = call.softcap * np.tanh(s / call.softcap)
    if call.bias is not None:
        s = s + np.asarray(call.bias, np.float64)
    s = np.where(call.keep, s, -np.inf)
    top = s.max(axis=-1, keepdims=True, initial=-np.inf)
    if call.sinks is not None:
        top = np.maximum(top, np.asarray(call.sinks, np.float64).reshape(1, -1, 1, 1))
    shift = np.where(np.isneginf(top), 0.0, top)
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.exp(s - shift)
        total = w.sum(axis=-1, keepdims=True)
        if call.sinks is not None:
            total = total + np.exp(np.asarray(call.sinks, np.float64).reshape(1, -1, 1, 1)
                                   - shift)
        p = np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)
    if call.dropout_keep is not None:
        p = p * call.dropout_keep / (1.0 - call.dropout_rate)
    return p @ v64


def exactly_scaled(factor: float):
    """A bug: the float64 spec output times ``factor``, rounded to the case dtype (no
    rounding noise but the scaling's)."""
    def fn(q, k, v, call):
        return (factor * spec_output(q, k, v, call)).astype(q.dtype)

    fn.__qualname__ = f"exactly_scaled_{factor}"
    return fn


def refmask_naive(q, k, v, call):
    """refmask's own reference run naively in the case dtype (inputs and arithmetic in it,
    sums and products accumulated in float32 and rounded once)."""
    from refmask.attention import attention

    result = attention(q, k, v, mask=call.keep, scale=call.scale, softcap=call.softcap,
                       bias=None if call.bias is None else np.asarray(call.bias, q.dtype),
                       sinks=None if call.sinks is None else np.asarray(call.sinks, q.dtype),
                       dropout_keep=call.dropout_keep, dropout_rate=call.dropout_rate,
                       path="exact")
    return np.asarray(result.out), np.asarray(result.lse)


LEGIT["refmask_naive"] = refmask_naive


# --- backward passes (the user convention's ``refmask_backward``) -----------------------------

def _raw_scores(q, k, call, A, *, prescale: bool):
    """``(t, qs, ks, factor)``: the scaled scores q.k * scale in A (before softcap), and the q,
    k the gradient products read with the factor that turns them into ``scale * q``,
    ``scale * k`` -- q, k in the case dtype with ``scale``, or q and k pre-scaled by
    sqrt(scale) and rounded to the case dtype with ``sqrt(scale)``."""
    dtype = q.dtype
    k = _expanded(k, q.shape[1])
    if prescale:
        root = A(math.sqrt(call.scale))
        qs, ks = _rounded(q.astype(A) * root, dtype), _rounded(k.astype(A) * root, dtype)
        return qs @ np.swapaxes(ks, -1, -2), qs, ks, root
    qs, ks = q.astype(A), k.astype(A)
    return (qs @ np.swapaxes(ks, -1, -2)) * A(call.scale), qs, ks, A(call.scale)


def _grouped(x, kv_heads):
    """(B, Hq, T, D) -> (B, Hkv, T, D): the sum over each kv head's query heads."""
    batch, heads, length, dim = x.shape
    return x.reshape(batch, kv_heads, heads // kv_heads, length, dim).sum(axis=2)


def _reduced_to(x, shape):
    """``x`` summed over the axes a bias of ``shape`` was broadcast along."""
    lead = x.ndim - len(shape)
    x = x.sum(axis=tuple(range(lead))) if lead else x
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and x.shape[a] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def flash_backward(q, k, v, d_out, call, saved, *, prescale: bool = False):
    """FlashAttention-2's backward with float32 accumulation: P recomputed from the scores
    and the saved LSE; dV = P^T dO with P (times the dropout factor) rounded to the case
    dtype; dP = dO V^T; D = rowsum(dO * O) with the forward's rounded O; dS = P (dP - D),
    through the softcap's derivative, rounded to the case dtype before dQ = scale dS K and
    dK = scale dS^T Q; every gradient rounded to the case dtype. ``saved`` is the forward's
    ``(out, lse)``."""
    dtype = q.dtype
    A = _acc(dtype)
    out, lse = (np.asarray(x, A) for x in saved)
    t, qs, ks, factor = _raw_scores(q, k, call, A, prescale=prescale)
    s = t
    if call.softcap is not None:
        s = A(call.softcap) * np.tanh(t / A(call.softcap))
    if call.bias is not None:
        s = s + np.asarray(call.bias, A)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.where(call.keep & np.isfinite(lse)[..., None],
                     np.exp(s - np.where(np.isfinite(lse), lse, 0)[..., None]), 0).astype(A)
    drop = np.ones_like(p) if call.dropout_keep is None else (
        np.asarray(call.dropout_keep, A) / A(1.0 - call.dropout_rate))
    d_out = np.asarray(d_out, A)
    v = _expanded(v, q.shape[1]).astype(A)
    dv = np.swapaxes(_rounded(p * drop, dtype), -1, -2) @ d_out
    dp = (d_out @ np.swapaxes(v, -1, -2)) * drop
    row_dot = (d_out * _rounded(out, dtype)).sum(axis=-1, keepdims=True)
    ds = p * (dp - row_dot)
    dt = ds if call.softcap is None else ds * (1 - np.tanh(t / A(call.softcap)) ** 2)
    dt = _rounded(dt, dtype)
    dq = (dt @ ks) * factor
    dk = (np.swapaxes(dt, -1, -2) @ qs) * factor
    kv_heads = k.shape[1]
    grads = {"dq": dq.astype(dtype), "dk": _grouped(dk, kv_heads).astype(dtype),
             "dv": _grouped(dv, kv_heads).astype(dtype)}
    if call.bias is not None:
        grads["dbias"] = _reduced_to(ds, np.shape(call.bias)).astype(dtype)
    if call.sinks is not None:
        sinks = np.asarray(call.sinks, A).reshape(1, -1, 1)
        with np.errstate(invalid="ignore", over="ignore"):
            p_sink = np.where(np.isfinite(lse), np.exp(sinks - np.where(np.isfinite(lse), lse, 0)),
                              0)
        grads["dsinks"] = (-(p_sink * row_dot[..., 0]).sum(axis=(0, 2))).astype(dtype)
    return grads


def flash_backward_prescaled(q, k, v, d_out, call, saved):
    return flash_backward(q, k, v, d_out, call, saved, prescale=True)


def with_backward(forward, backward):
    """``forward`` (returning out, lse) with ``backward`` as its ``refmask_backward``."""
    def fn(q, k, v, call):
        return forward(q, k, v, call)

    fn.refmask_backward = backward
    fn.__qualname__ = f"{forward.__name__}+{backward.__name__}"
    return fn


#: Legitimate forward + backward pairs (float32 accumulation, rounding where FlashAttention-2
#: rounds); none may fail a catalog case's gradients (spec 5.2).
LEGIT_BACKWARD = {
    "flash": with_backward(online_softmax, flash_backward),
    "flash_prescaled": with_backward(online_softmax_prescaled, flash_backward_prescaled),
}


def spec_gradients(q, k, v, d_out, call) -> dict:
    """The spec's gradients (section 4) computed plainly in float64: ``flash_backward``'s
    formulas on float64 inputs with no rounding, P from the float64 spec softmax."""
    f64 = np.float64
    q64, k64, v64 = (np.asarray(x, f64) for x in (q, k, v))
    out = spec_output(q64, k64, v64, call)
    s = call.scale * (q64 @ np.swapaxes(_expanded(k64, q.shape[1]), -1, -2))
    if call.softcap is not None:
        s = call.softcap * np.tanh(s / call.softcap)
    if call.bias is not None:
        s = s + np.asarray(call.bias, f64)
    s = np.where(call.keep, s, -np.inf)
    top = s.max(axis=-1, keepdims=True, initial=-np.inf)
    if call.sinks is not None:
        top = np.maximum(top, np.asarray(call.sinks, f64).reshape(1, -1, 1, 1))
    shift = np.where(np.isneginf(top), 0.0, top)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        total = np.exp(s - shift).sum(axis=-1, keepdims=True)
        if call.sinks is not None:
            total = total + np.exp(np.asarray(call.sinks, f64).reshape(1, -1, 1, 1) - shift)
        lse = np.where(total > 0, shift + np.log(total), -np.inf)[..., 0]
    return flash_backward(q64, k64, v64, d_out, call, (out, lse))


def exact_gradients_scaled(factor: float):
    """A bug in the backward only: the float64 spec output rounded to the case dtype, with
    the float64 spec gradients times ``factor`` rounded to it."""
    def fn(q, k, v, call):
        return spec_output(q, k, v, call).astype(q.dtype)

    def backward(q, k, v, d_out, call, saved):
        return {name: (factor * value).astype(q.dtype)
                for name, value in spec_gradients(q, k, v, d_out, call).items()}

    fn.refmask_backward = backward
    fn.__qualname__ = f"exact_gradients_scaled_{factor}"
    return fn
