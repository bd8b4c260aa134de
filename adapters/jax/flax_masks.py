"""``flax.mask``: the mask built with Flax's helpers, fed to ``jax.nn.dot_product_attention``.

Flax (checked against flax 0.12.8, flax/linen/attention.py) builds masks from per-token
arrays: ``make_attention_mask(query_input, key_input, pairwise_fn)`` gives
``pairwise_fn(query_input[..., :, None], key_input[..., None, :])`` with a head axis of 1,
``make_causal_mask(x)`` is ``make_attention_mask(arange(T), arange(T), greater_equal)`` on
*one* sequence (so only square self-attention), and ``combine_masks`` ANDs them. Translation:

* ``causal`` with Tq = Tk (either plain alignment: they coincide when square) ->
  ``make_causal_mask``; a non-square causal case is unsupported (Flax has no builder for it).
* ``key_padding`` (either side) -> ``make_attention_mask(ones(B, Tq), key_valid)``.
* ``query_padding`` (either side) -> ``make_attention_mask(query_valid, ones(B, Tk))``.
* ``documents`` -> ``make_attention_mask(q_segment_ids, k_segment_ids, jnp.equal)``.
* several conjuncts -> ``combine_masks``; anything else is unsupported.

The attention itself is ``jax.nn.dot_product_attention`` with the combined bool mask (its
empty rows are the mean of V, as in ``jax.dpa``); score features as in ``jax.dpa``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..common import Adapter, Output, Profile, Unsupported
from ..common.translate import additive_bias, and_parts, plain_alignment
from .common import btnh_to_bhtd, flax_unavailable, to_btnh, unsupported_scores

if TYPE_CHECKING:
    import jax

    from refmask.case import Case


NAME = "flax.mask"


def _valid(part, batch: int, size: int) -> np.ndarray:
    """(B, size) 0/1 int array: 1 where the padding part keeps the token."""
    lengths = np.broadcast_to(np.asarray(part.lengths, dtype=np.int64), (batch,))
    index = np.arange(size)[None, :]
    valid = index < lengths[:, None] if part.side == "right" else index >= size - lengths[:, None]
    return valid.astype(np.int32)


def _unsupported_part(case, part) -> str | None:
    if part.kind == "causal":
        if not plain_alignment(part):
            return f"Flax's make_causal_mask has no query offset (causal align={part.align!r})"
        if case.q_len != case.k_len:
            return (f"Flax's make_causal_mask builds square self-attention masks only "
                    f"(Tq={case.q_len}, Tk={case.k_len})")
        return None
    if part.kind in ("key_padding", "query_padding", "documents"):
        return None
    return f"Flax has no mask builder for {part.kind}"


def unsupported(case: Case) -> str | None:
    reason = unsupported_scores(case, "jax.nn.dot_product_attention")
    if reason:
        return reason
    for part in and_parts(case.mask):
        reason = _unsupported_part(case, part)
        if reason:
            return reason
    return None


def flax_mask(case: Case) -> jax.Array | None:
    """The case's mask built with flax.linen's helpers: a bool (B, 1, Tq, Tk) jax array, or
    None for no mask."""
    import jax.numpy as jnp
    from flax.linen import combine_masks, make_attention_mask, make_causal_mask

    batch, q_len, k_len = case.batch, case.q_len, case.k_len
    built = []
    for part in and_parts(case.mask):
        if part.kind == "causal":
            built.append(make_causal_mask(jnp.ones((batch, q_len)), dtype=jnp.bool_))
        elif part.kind == "key_padding":
            built.append(make_attention_mask(jnp.ones((batch, q_len), jnp.int32),
                                             jnp.asarray(_valid(part, batch, k_len)),
                                             dtype=jnp.bool_))
        elif part.kind == "query_padding":
            built.append(make_attention_mask(jnp.asarray(_valid(part, batch, q_len)),
                                             jnp.ones((batch, k_len), jnp.int32),
                                             dtype=jnp.bool_))
        elif part.kind == "documents":
            q_ids = np.broadcast_to(np.asarray(part.q_segment_ids), (batch, q_len))
            k_ids = np.broadcast_to(np.asarray(part.k_segment_ids), (batch, k_len))
            built.append(make_attention_mask(jnp.asarray(q_ids), jnp.asarray(k_ids), jnp.equal,
                                             dtype=jnp.bool_))
        else:  # pragma: no cover - unsupported() refuses these first
            raise Unsupported(_unsupported_part(case, part))
    return combine_masks(*built, dtype=jnp.bool_)


def run(case: Case, inputs: dict[str, np.ndarray], *, grads: bool) -> Output:
    import jax
    import jax.numpy as jnp

    reason = unsupported(case)
    if reason:
        raise Unsupported(reason)
    q, k, v = (jnp.asarray(to_btnh(case, inputs[n])) for n in "qkv")
    bias = additive_bias(case, inputs)
    bias = None if bias is None else jnp.asarray(bias)
    kwargs = {} if case.scale is None else {"scale": case.scale}

    def attend(q, k, v, bias):
        return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=flax_mask(case), **kwargs)

    # One compilation for the mask helpers and the attention together; float16 runs eagerly
    # because jitted float16 dot_product_attention fails on CPU (see jax.dpa).
    if case.dtype != "float16":
        attend = jax.jit(attend)
    return Output(out=btnh_to_bhtd(attend(q, k, v, bias)))


ADAPTER = Adapter(
    name=NAME,
    profile=Profile(empty_rows="uniform", causal_alignment="top_left", lse_base=None,
                    backward=False,
                    notes="flax.linen make_causal_mask / make_attention_mask / combine_masks "
                          "-> jax.nn.dot_product_attention(mask=...)"),
    run=run,
    unsupported=unsupported,
    unavailable=flax_unavailable,
    description="Flax's mask builders feeding jax.nn.dot_product_attention",
)
