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
