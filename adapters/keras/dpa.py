"""``keras.dpa``: ``keras.ops.dot_product_attention`` on the TensorFlow backend.

Translation (checked against keras 3.15.1, keras/src/backend/tensorflow/nn.py):

* layout (B, T, N, H); GQA by ``tf.repeat(key, N // K, axis=2)`` (repeat-interleave order)
  when ``K > 1``; ``K = 1`` broadcasts.
* ``scale`` passed only when the case sets one (default ``1/sqrt(H)``); bias and ALiBi go to
  ``bias``; ``flash_attention=False`` (the TF backend has none).
* ``causal`` aligned top-left or plain bottom-right -> ``is_causal=True``
  (``tf.linalg.band_part(ones((T, S)), -1, 0)``: top-left; a bottom-right case with
  Tq != Tk is reported as the policy ``causal=top_left``) when every positional conjunct is
  such a causal; otherwise everything goes into the dense bool ``mask`` (True = attend).
* masked logits are replaced by ``-0.7 * 3.38953e38`` (``-0.7 * 65500`` for float16 logits;
  logits are at least float32 here), so empty rows are the mean of V: ``empty_rows="uniform"``.
* unsupported: softcap (``attn_logits_soft_cap`` raises outside JAX/TPU), sinks, dropout.
* gradients: ``tf.GradientTape`` (dq, dk, dv, and dbias for a bias case).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..common import Adapter, Output, Profile, Unsupported
from ..common.translate import additive_bias, and_parts, dense_keep, plain_alignment, positional
from .common import bthd_to_bhtd, load_keras, to_bthd, unavailable, unsupported_common

if TYPE_CHECKING:
    from refmask.case import Case


NAME = "keras.dpa"


def translate(case: Case) -> dict:
    """``{"is_causal": bool, "mask": bool (B, Hq, Tq, Tk) array or None}`` for the case."""
    parts = and_parts(case.mask)
    spatial = [p for p in parts if positional(p)]
    switch = len(spatial) == 1 and spatial[0].kind == "causal" and plain_alignment(spatial[0])
    rest = [p for p in parts if not (switch and p is spatial[0])]
    return {"is_causal": switch, "mask": dense_keep(case, rest)}


def unsupported(case: Case) -> str | None:
    return unsupported_common(case, "keras.ops.dot_product_attention")


def run(case: Case, inputs: dict[str, np.ndarray], *, grads: bool) -> Output:
    reason = unsupported(case)
    if reason:
        raise Unsupported(reason)
    import tensorflow as tf

    keras = load_keras()
    q, k, v = (tf.constant(to_bthd(case, inputs[n])) for n in "qkv")
    bias = additive_bias(case, inputs)
    bias = None if bias is None else tf.constant(bias)
    kwargs = translate(case)
    mask = None if kwargs["mask"] is None else tf.constant(kwargs["mask"])

    def attend(q, k, v, bias):
        return keras.ops.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=case.scale,
                                               is_causal=kwargs["is_causal"],
                                               flash_attention=False)

    if not grads:
        return Output(out=bthd_to_bhtd(attend(q, k, v, bias).numpy()))
    sources = [q, k, v] + ([bias] if bias is not None else [])
    with tf.GradientTape() as tape:
        tape.watch(sources)
        out = attend(q, k, v, bias)
    d_out = tf.constant(to_bthd(case, inputs["d_out"]))
    found = tape.gradient(out, sources, output_gradients=d_out)
    gradients = {"dq": bthd_to_bhtd(found[0]), "dk": bthd_to_bhtd(found[1]),
                 "dv": bthd_to_bhtd(found[2])}
    if case.bias:
        gradients["dbias"] = np.asarray(found[3], dtype=np.float64)
    return Output(out=bthd_to_bhtd(out.numpy()), grads=gradients)


ADAPTER = Adapter(
    name=NAME,
    profile=Profile(empty_rows="uniform", causal_alignment="top_left", lse_base=None,
                    backward=True,
                    notes="keras.ops.dot_product_attention, TensorFlow backend; masked logits "
                          "replaced by -0.7*3.38953e38"),
    run=run,
    unsupported=unsupported,
    unavailable=unavailable,
    description="keras.ops.dot_product_attention with is_causal, a bool mask and a bias",
)
