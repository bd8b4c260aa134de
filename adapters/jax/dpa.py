"""``jax.dpa``: ``jax.nn.dot_product_attention`` (XLA implementation, any device JAX runs on).

Translation of a case into JAX's native arguments (checked against jax 0.10.2,
jax/_src/nn/functions.py):

* layout: JAX takes (B, T, N, H); BHTD cases are transposed, nothing else is changed.
* GQA/MQA: native (query head n reads kv head ``n // (N // K)``: ``reshape(B, T, K, G, H)``).
* scale: passed only when the case sets one (JAX's default is ``1/sqrt(H)``).
* bias and ALiBi: the ``bias`` argument (added to the scaled logits before the masks).
* the mask, one conjunct at a time (JAX ANDs every mask it is given):
  ``causal`` aligned top-left or plain bottom-right -> ``is_causal=True`` (JAX's causal is
  ``tril(ones((T, S)))``: top-left; a bottom-right case with Tq != Tk is therefore reported
  as the policy ``causal=top_left``); ``sliding_window(l, r)`` likewise aligned ->
  ``local_window_size=(l, r)`` (``_get_window_mask``: allowed iff ``q <= k + l`` and
  ``q >= k - r`` on indices, i.e. ``sliding_window(l, r, align="top_left")``; an unbounded
  side becomes ``max(Tq, Tk)``, which bounds nothing); right key padding ->
  ``key_value_seq_lengths``; right query padding -> ``query_seq_lengths`` (JAX also zeroes
  the output rows of padded queries); every other conjunct (KV-cache offsets, left padding,
  chunks, documents, explicit arrays, ...) -> the dense bool ``mask`` (True = attend), which
  is JAX's native form for arbitrary masks. The switches are used only when every
  positional conjunct can take one; otherwise all positional conjuncts go into the dense mask,
  so one case is never computed half in JAX's alignment and half in the case's.
* masked logits are *replaced* by ``-0.7 * finfo(float32).max`` (``_get_large_negative``), so
  an empty row is the mean of V: the profile declares ``empty_rows="uniform"``.
* unsupported: softcap, sinks, dropout (no such arguments), Dqk != Dv (value must have key's
  shape).
* float64: unsupported. JAX casts the logits to float32 before the softmax for every input
  dtype (``_dot_product_attention_core``: ``padded_logits.astype(np.float32)``), so there is
  no float64 attention to check (float64 inputs come back with ~1e-7 errors).
* LSE: not returned. jax 0.10.2 offers ``return_residual=True``, but for an empty row that is
  the logsumexp of the replaced logits (measured: -2.38e38, finite), where the spec has
  ``-inf`` under every policy, and the runner has no convention for it.
* gradients: ``jax.vjp`` of the same call (dq, dk, dv, and dbias for a bias case).
* calls are jitted (one compilation per shape); float16 runs eagerly, because under ``jit`` on
  CPU jax 0.10.2 rejects the ``F16_F16_F32`` dot precision dot_product_attention requests
  (its eager path catches that error and retries with the default precision).
* :func:`call` is the whole call with the jitted functions, the ``implementation`` and the
  device placement as parameters; gpu.py runs it on a GPU (``jax.dpa.cudnn``, ``jax.dpa.xla``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..common import Adapter, Output, Profile, Unsupported
from ..common.translate import additive_bias, and_parts, dense_keep, plain_alignment, positional
from .common import btnh_to_bhtd, per_batch_lengths, to_btnh, unavailable, unsupported_scores

if TYPE_CHECKING:
    import jax

    from refmask.case import Case


NAME = "jax.dpa"


def translate(case: Case) -> dict:
    """The mask-related keyword arguments of ``jax.nn.dot_product_attention`` for the case
    (``mask`` as a NumPy bool array or None).

    The positional conjuncts (causal, sliding_window) go to JAX's switches only when every
    positional conjunct of the mask can (then the whole mask takes JAX's alignment, which the
    runner names); otherwise all of them go into the dense mask, so that one case is never
    computed half in one alignment and half in another.
    """
    parts = and_parts(case.mask)
    switchable = all(part.kind in ("causal", "sliding_window") and plain_alignment(part)
                     for part in parts if positional(part))
    kwargs = {"is_causal": False, "local_window_size": None}
    rest = []
    unbounded = max(case.q_len, case.k_len)
    for part in parts:
        if switchable and part.kind == "causal" and not kwargs["is_causal"]:
            kwargs["is_causal"] = True
        elif (switchable and part.kind == "sliding_window"
              and kwargs["local_window_size"] is None):
            left = unbounded if part.left is None else part.left
            right = unbounded if part.right is None else part.right
            kwargs["local_window_size"] = (left, right)
        elif (part.kind == "key_padding" and part.side == "right"
              and "key_value_seq_lengths" not in kwargs):
            kwargs["key_value_seq_lengths"] = per_batch_lengths(part, case.batch)
        elif (part.kind == "query_padding" and part.side == "right"
              and "query_seq_lengths" not in kwargs):
            kwargs["query_seq_lengths"] = per_batch_lengths(part, case.batch)
        else:
            rest.append(part)
    kwargs["mask"] = dense_keep(case, rest)
    return kwargs


def unsupported(case: Case) -> str | None:
    return unsupported_scores(case, "jax.nn.dot_product_attention")


@functools.cache
def _compiled(implementation: str | None = None):
    """{"jit": (forward, forward_and_grads), "eager": the same unjitted}, calling
    ``dot_product_attention(..., implementation=implementation)``. The jitted pair is built
    once per process and implementation, so jax caches its compilations by shape, dtype and
    the static switches and cases of one shape share them."""
    import jax

    def attend(q, k, v, bias, mask, q_lengths, kv_lengths, is_causal, window, scale):
        return jax.nn.dot_product_attention(
            q, k, v, bias=bias, mask=mask, scale=scale, is_causal=is_causal,
            query_seq_lengths=q_lengths, key_value_seq_lengths=kv_lengths,
            local_window_size=window, implementation=implementation)

    def attend_vjp(q, k, v, bias, mask, q_lengths, kv_lengths, d_out, is_causal, window, scale):
        def f(q, k, v, bias):
            return attend(q, k, v, bias, mask, q_lengths, kv_lengths, is_causal, window, scale)

        out, pullback = jax.vjp(f, q, k, v, bias)
        return out, pullback(d_out)

    statics = ("is_causal", "window", "scale")
    return {"jit": (jax.jit(attend, static_argnames=statics),
                    jax.jit(attend_vjp, static_argnames=statics)),
            "eager": (attend, attend_vjp)}


def run(case: Case, inputs: dict[str, np.ndarray], *, grads: bool) -> Output:
    reason = unsupported(case)
    if reason:
        raise Unsupported(reason)
    # float16 runs eagerly: under jit on CPU, jax 0.10.2 rejects the F16_F16_F32 dot precision
    # that dot_product_attention requests for float16 (the eager path catches that error and
    # retries with the default precision; the jitted one cannot).
    functions = _compiled()["eager" if case.dtype == "float16" else "jit"]
    return call(case, inputs, grads=grads, functions=functions)


def call(case: Case, inputs: dict[str, np.ndarray], *, grads: bool, functions: tuple[Callable[...,
         Any], Callable[..., Any]], put: Callable[[np.ndarray], jax.Array] | None = None,
         kwargs: dict | None = None
         ) -> Output:
    """The case through ``functions`` = (forward, forward_and_grads) of :func:`_compiled`,
    every array placed by ``put`` (default ``jnp.asarray``: JAX's default device), with the
    mask arguments ``kwargs`` (default :func:`translate`)."""
    import jax.numpy as jnp

    put = jnp.asarray if put is None else put
    forward, backward = functions
    q, k, v = (put(to_btnh(case, inputs[n])) for n in "qkv")
    bias = additive_bias(case, inputs)
    bias = None if bias is None else put(bias)
    kwargs = translate(case) if kwargs is None else kwargs
    mask = None if kwargs["mask"] is None else put(kwargs["mask"])
    lengths = [None if kwargs.get(name) is None else put(np.asarray(kwargs[name], np.int32))
               for name in ("query_seq_lengths", "key_value_seq_lengths")]
    statics = {"is_causal": kwargs["is_causal"], "window": kwargs["local_window_size"],
               "scale": case.scale}
    if not grads:
        return Output(out=btnh_to_bhtd(forward(q, k, v, bias, mask, *lengths, **statics)))
    d_out = put(to_btnh(case, inputs["d_out"]))
    out, (dq, dk, dv, dbias) = backward(q, k, v, bias, mask, *lengths, d_out, **statics)
    gradients = {"dq": btnh_to_bhtd(dq), "dk": btnh_to_bhtd(dk), "dv": btnh_to_bhtd(dv)}
    if case.bias:
        gradients["dbias"] = np.asarray(dbias, dtype=np.float64)
    return Output(out=btnh_to_bhtd(out), grads=gradients)


ADAPTER = Adapter(
    name=NAME,
    profile=Profile(empty_rows="uniform", causal_alignment="top_left", lse_base=None,
                    backward=True,
                    notes="jax.nn.dot_product_attention (XLA); softmax in float32 for every "
                          "dtype; masked logits replaced by -0.7*finfo(float32).max"),
    run=run,
    unsupported=unsupported,
    unavailable=unavailable,
    description="jax.nn.dot_product_attention with is_causal, local_window_size, "
                "query/key_value_seq_lengths, a bool mask and an additive bias",
)
