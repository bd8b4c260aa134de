"""Attention kernels written the way their authors write them, for the user-path tests.

Each is independent of refmask.attention: the softmax and its backward are written out here
from the textbook formulas (``P = softmax(S)``, ``dV = P^T dO``, ``dS = P * (dP - rowsum(dP *
P))``, ``dQ = scale dS K``, ``dK = scale dS^T Q``), empty rows give zero, GQA maps query head h
to kv head ``h // (Hq // Hkv)``.

* :func:`torch_bf16` -- torch, bfloat16 in and out, a ``torch.autograd.Function`` with a
  hand-written backward (float32 inside, as a fused kernel would accumulate).
* :func:`jax_attention` -- JAX, gradients from ``jax.vjp``.
* :func:`numpy_attention` with :func:`numpy_backward` -- NumPy forward and hand-written
  backward (``refmask_backward``).
* the ``*_bad_*`` variants plant one bug each.
"""

from __future__ import annotations

import numpy as np

UNSUPPORTED = {"softcap", "bias", "sinks", "dropout", "length0"}


# --- NumPy ---------------------------------------------------------------------------------

def _np_probabilities(q, k, keep, scale):
    group = q.shape[1] // k.shape[1]
    k = np.repeat(np.asarray(k, np.float64), group, axis=1)
    s = np.where(keep, scale * np.asarray(q, np.float64) @ np.swapaxes(k, -1, -2), -np.inf)
    top = np.max(s, axis=-1, keepdims=True, initial=-np.inf)
    w = np.exp(s - np.where(np.isfinite(top), top, 0.0))
    total = w.sum(-1, keepdims=True)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)


def numpy_attention(q, k, v, call):
    group = q.shape[1] // k.shape[1]
    p = _np_probabilities(q, k, call.keep, call.scale)
    return p @ np.repeat(np.asarray(v, np.float64), group, axis=1)


def _fold_groups(x, kv_heads):
    """(B, Hq, T, D) -> (B, Hkv, T, D): the sum over the query heads sharing a kv head."""
    b, hq, t, d = x.shape
    return x.reshape(b, kv_heads, hq // kv_heads, t, d).sum(axis=2)


def numpy_backward(q, k, v, d_out, call, saved):
    kv_heads, group = k.shape[1], q.shape[1] // k.shape[1]
    q, k, v, d_out = (np.asarray(x, np.float64) for x in (q, k, v, d_out))
    p = _np_probabilities(q, k, call.keep, call.scale)
    k_rep, v_rep = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    dv = _fold_groups(np.swapaxes(p, -1, -2) @ d_out, kv_heads)
    dp = d_out @ np.swapaxes(v_rep, -1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    dq = call.scale * ds @ k_rep
    dk = _fold_groups(call.scale * np.swapaxes(ds, -1, -2) @ q, kv_heads)
    return dq, dk, dv


numpy_attention.refmask_unsupported = UNSUPPORTED
numpy_attention.refmask_backward = numpy_backward


def numpy_bad_dv(q, k, v, call):
    return numpy_attention(q, k, v, call)


def _backward_without_group_sum(q, k, v, d_out, call, saved):
    """A planted backward bug: dk and dv of the first query head of each group only."""
    dq, dk, dv = numpy_backward(q, k, v, d_out, call, saved)
    group = q.shape[1] // k.shape[1]
    if group == 1:
        return dq, dk, dv * 0.5
    return dq, dk, dv / group


numpy_bad_dv.refmask_unsupported = UNSUPPORTED
numpy_bad_dv.refmask_backward = _backward_without_group_sum


# --- torch ---------------------------------------------------------------------------------

def _torch_function():
    import torch

    class Attention(torch.autograd.Function):
        """bfloat16 attention, float32 inside; backward written by hand."""

        @staticmethod
        def forward(ctx, q, k, v, keep, scale, bad_dq):
            group = q.shape[1] // k.shape[1]
            qf, kf, vf = (x.float() for x in (q, k, v))
            kf, vf = kf.repeat_interleave(group, 1), vf.repeat_interleave(group, 1)
            s = (qf @ kf.transpose(-1, -2) * scale).masked_fill(~keep, float("-inf"))
            top = s.amax(-1, keepdim=True)
            w = torch.exp(s - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
            total = w.sum(-1, keepdim=True)
            p = torch.where(total > 0, w / torch.where(total > 0, total, 1.0), 0.0)
            ctx.save_for_backward(qf, kf, vf, p)
            ctx.scale, ctx.group, ctx.bad_dq = scale, group, bad_dq
            return (p @ vf).to(q.dtype)

        @staticmethod
        def backward(ctx, d_out):
            qf, kf, vf, p = ctx.saved_tensors
            do = d_out.float()
            dv = p.transpose(-1, -2) @ do
            dp = do @ vf.transpose(-1, -2)
            ds = p * (dp - (dp * p).sum(-1, keepdim=True))
            dq = ctx.scale * ds @ kf
            if ctx.bad_dq:  # planted bug: the scale applied twice
                dq = dq * ctx.scale
            dk = ctx.scale * ds.transpose(-1, -2) @ qf
            b, hq, tk, _ = dk.shape

            def fold(x):
                return x.reshape(b, hq // ctx.group, ctx.group, tk, x.shape[-1]).sum(2)

            return (dq.to(d_out.dtype), fold(dk).to(d_out.dtype), fold(dv).to(d_out.dtype),
                    None, None, None)

    return Attention


def torch_bf16(q, k, v, call):
    return _torch_function().apply(q, k, v, call.keep, call.scale, False)


torch_bf16.refmask_framework = "torch"
torch_bf16.refmask_dtypes = ("bfloat16",)
torch_bf16.refmask_unsupported = UNSUPPORTED


def torch_bf16_bad_dq(q, k, v, call):
    return _torch_function().apply(q, k, v, call.keep, call.scale, True)


torch_bf16_bad_dq.refmask_framework = "torch"
torch_bf16_bad_dq.refmask_dtypes = ("bfloat16",)
torch_bf16_bad_dq.refmask_unsupported = UNSUPPORTED


# --- JAX -----------------------------------------------------------------------------------

def _jax_core(q, k, v, keep, scale):
    import jax
    import jax.numpy as jnp

    group = q.shape[1] // k.shape[1]
    k, v = jnp.repeat(k, group, axis=1), jnp.repeat(v, group, axis=1)
    s = jnp.where(keep, scale * (q @ jnp.swapaxes(k, -1, -2)), -jnp.inf)
    top = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    w = jnp.exp(s - jnp.where(jnp.isfinite(top), top, 0.0))
    total = w.sum(-1, keepdims=True)
    p = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)
    return p @ v


def jax_attention(q, k, v, call):
    import jax

    return jax.jit(_jax_core)(q, k, v, call.keep, call.scale)


jax_attention.refmask_framework = "jax"
jax_attention.refmask_unsupported = UNSUPPORTED
