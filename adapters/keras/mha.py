"""``keras.mha``: ``keras.layers.MultiHeadAttention`` (Keras 3, TensorFlow backend) with
weights that make the layer plain attention.

The layer (checked against keras 3.15.1, keras/src/layers/attention/multi_head_attention.py)
projects ``query``/``key``/``value`` with EinsumDense kernels of shape (features, N, dim),
attends per head with scale ``1/sqrt(key_dim)``, and projects back with a kernel of shape
(N, value_dim, out). With ``use_bias=False``, ``num_heads=H``, ``key_dim=Dqk``,
``value_dim=Dv``, ``output_shape=H*Dv`` and identity kernels (``eye(H*D).reshape(H*D, H, D)``
in, ``eye(H*Dv).reshape(H, Dv, H*Dv)`` out), the layer computes exactly attention on the
(B, T, H*D) inputs, head h reading features ``h*D .. h*D+D-1``.

Translation of the mask, conjunct by conjunct (Keras ANDs them all):

* ``causal`` (top-left or plain bottom-right) -> ``use_causal_mask=True`` (top-left:
  ``row_index >= col_index``, or ``dot_product_attention(is_causal=True)`` when it is the
  only mask; a bottom-right case with Tq != Tk is the policy ``causal=top_left``).
* ``sliding_window(l, l)`` -> the layer's ``sliding_window=l+1`` (``|i - j| < W``: a
  symmetric band on indices); ``sliding_window(l, 0)`` -> ``sliding_window=l+1`` together
  with ``use_causal_mask=True``. These switches are used only when every positional conjunct
  takes one; otherwise every positional conjunct goes into ``attention_mask``.
* ``key_padding`` (either side) -> ``value_mask`` (B, Tk).
* everything else -> ``attention_mask`` (B, Tq, Tk), 1 = attend; a mask that differs between
  heads cannot be given (the layer broadcasts one mask over its heads): unsupported.

The layer then calls ``ops.dot_product_attention`` (no dropout, no returned scores), whose
masked logits are replaced by ``-0.7 * 3.38953e38``: empty rows are the mean of V.
Unsupported (no such feature of the layer): GQA/MQA (one head count; Keras has a separate
GroupedQueryAttention layer), a custom scale (fixed ``1/sqrt(key_dim)``), bias and ALiBi,
softcap, sinks, dropout masks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..common import Adapter, Output, Profile, Unsupported
from ..common.translate import and_parts, dense_keep, plain_alignment, positional
from .common import bthd_to_bhtd, load_keras, to_bthd, unavailable, unsupported_common

if TYPE_CHECKING:
    from refmask.case import Case


NAME = "keras.mha"


def _switch(part):
    """Layer switches standing for one positional conjunct, or None."""
    if not plain_alignment(part):
        return None
    if part.kind == "causal":
        return {"use_causal_mask": True}
    if part.kind == "sliding_window" and part.left is not None:
        if part.right == 0:
            return {"use_causal_mask": True, "sliding_window": part.left + 1}
        if part.right == part.left:
            return {"sliding_window": part.left + 1}
    if part.kind == "sliding_window" and part.left is None and part.right == 0:
        return {"use_causal_mask": True}
    return None


def translate(case: Case) -> dict:
    """Layer and call arguments: ``use_causal_mask``, ``sliding_window``, ``value_mask``
    (B, Tk) bool or None, ``attention_mask`` (B, Hq, Tq, Tk) bool or None."""
    parts = and_parts(case.mask)
    spatial = [p for p in parts if positional(p)]
    switches = [_switch(p) for p in spatial]
    use_switches = all(s is not None for s in switches) and (
        sum("sliding_window" in s for s in switches) <= 1)
    kwargs = {"use_causal_mask": False, "sliding_window": None, "value_mask": None}
    rest = []
    for part in parts:
        if use_switches and positional(part):
            kwargs.update(_switch(part))
        elif part.kind == "key_padding" and kwargs["value_mask"] is None:
            kwargs["value_mask"] = np.asarray(
                part.materialize(case.batch, 1, 1, case.k_len))[:, 0, 0, :]
        else:
            rest.append(part)
    kwargs["attention_mask"] = dense_keep(case, rest)
    return kwargs


def unsupported(case: Case) -> str | None:
    if case.softcap is not None:
        return "keras.layers.MultiHeadAttention has no softcap"
    reason = unsupported_common(case, "keras.layers.MultiHeadAttention")
    if reason:
        return reason
    if case.kv_heads != case.q_heads:
        return ("keras.layers.MultiHeadAttention has one head count for query, key and value "
                "(GQA/MQA is keras.layers.GroupedQueryAttention)")
    if case.scale is not None:
        return "keras.layers.MultiHeadAttention always scales by 1/sqrt(key_dim)"
    if case.bias or case.alibi is not None:
        return "keras.layers.MultiHeadAttention takes no additive bias"
    mask = translate(case)["attention_mask"]
    if mask is not None and mask.shape[1] > 1 and not (mask == mask[:, :1]).all():
        return ("keras.layers.MultiHeadAttention takes one (B, Tq, Tk) attention_mask for "
                "every head; this mask differs between heads")
    return None


def _identity_in(heads: int, dim: int) -> np.ndarray:
    return np.eye(heads * dim).reshape(heads * dim, heads, dim)


def run(case: Case, inputs: dict[str, np.ndarray], *, grads: bool) -> Output:
    reason = unsupported(case)
    if reason:
        raise Unsupported(reason)
    import tensorflow as tf

    keras = load_keras()
    heads, batch = case.q_heads, case.batch
    kwargs = translate(case)
    layer = keras.layers.MultiHeadAttention(
        num_heads=heads, key_dim=case.qk_dim, value_dim=case.v_dim, use_bias=False,
        output_shape=heads * case.v_dim, sliding_window=kwargs["sliding_window"],
        dtype=case.dtype)
    q, k, v = (to_bthd(case, inputs[n]) for n in "qkv")
    query = q.reshape(batch, case.q_len, heads * case.qk_dim)
    key = k.reshape(batch, case.k_len, heads * case.qk_dim)
    value = v.reshape(batch, case.k_len, heads * case.v_dim)
    layer.build(query.shape, value.shape, key.shape)
    dtype = inputs["q"].dtype
    layer.query_dense.kernel.assign(_identity_in(heads, case.qk_dim).astype(dtype))
    layer.key_dense.kernel.assign(_identity_in(heads, case.qk_dim).astype(dtype))
    layer.value_dense.kernel.assign(_identity_in(heads, case.v_dim).astype(dtype))
    layer.output_dense.kernel.assign(
        np.eye(heads * case.v_dim).reshape(heads, case.v_dim, heads * case.v_dim).astype(dtype))
    mask = kwargs["attention_mask"]
    out = layer(tf.constant(query), tf.constant(value), key=tf.constant(key),
                value_mask=None if kwargs["value_mask"] is None else
                tf.constant(kwargs["value_mask"]),
                attention_mask=None if mask is None else tf.constant(mask[:, 0]),
                use_causal_mask=kwargs["use_causal_mask"])
    out = np.asarray(out.numpy()).reshape(batch, case.q_len, heads, case.v_dim)
    return Output(out=bthd_to_bhtd(out))


ADAPTER = Adapter(
    name=NAME,
    profile=Profile(empty_rows="uniform", causal_alignment="top_left", lse_base=None,
                    backward=False,
                    notes="keras.layers.MultiHeadAttention (TensorFlow backend) with identity "
                          "projections; masked logits replaced by -0.7*3.38953e38"),
    run=run,
    unsupported=unsupported,
    unavailable=unavailable,
    description="keras.layers.MultiHeadAttention with use_causal_mask, sliding_window, "
                "value_mask and attention_mask",
)
