"""``onnxruntime.attention23`` / ``onnxruntime.attention24``: the ONNX ``Attention`` operator
(opset 23 / 24) as a one-node model built with ``onnx.helper``, run by onnxruntime on
``CPUExecutionProvider``.

Translation (operator definition read from onnx 1.23.2's schema and
onnx/reference/ops/op_attention.py; behaviour measured on onnxruntime 1.31.1):

* layout: BHTD cases use 4-D inputs (head counts from the shapes, GQA/MQA native);
  BTHD cases use 3-D inputs (B, T, H*D) with the ``q_num_heads``/``kv_num_heads``
  attributes. ``scale`` and ``softcap`` attributes when the case sets them (ONNX applies
  ``sqrt(scale)`` to Q and K, and softcap before the mask).
* causal, when it is the only positional conjunct of the mask:
  top-left or plain bottom-right -> ``is_causal=1`` with no cache. onnxruntime then aligns
  top-left (query i sees j <= i), as the operator says for "neither past_key nor
  nonpad_kv_seqlen" (offset 0); a bottom-right case with Tq != Tk is therefore the policy
  ``causal=top_left``. A KV-cache offset c (one int, 0 < c <= Tk) -> ``is_causal=1`` with
  ``past_key``/``past_value`` = the first c keys/values (the op concatenates them and
  offsets causal by the past length). Opset 24 only: per-batch offsets c_b ->
  ``nonpad_kv_seqlen = c_b + Tq`` (offset ``nonpad - Tq``; the keys it drops are beyond the
  causal frontier anyway); ``bottom_right(k_lengths=n)`` with full query lengths ->
  ``nonpad_kv_seqlen = n``.
* right key padding (opset 24) -> ``nonpad_kv_seqlen`` when that does not move a causal
  frontier (no ``is_causal``, or the same lengths as the causal's k_lengths).
* everything else -> the bool ``attn_mask`` (True = attend, (B, Hq, Tq, Tk)); with a bias or
  ALiBi the ``attn_mask`` is the float additive mask: bias plus 0/-inf for the bool mask.
* unsupported: sinks and dropout masks (no such inputs), Tq = 0 or Tk = 0 (onnxruntime checks
  q_sequence_length > 0 and kv_sequence_length > 0), and any dtype onnxruntime has no kernel
  for (bfloat16 on CPU: the reason is onnxruntime's own NOT_IMPLEMENTED message).
* empty rows: onnxruntime returns 0 (measured, bool and -inf float masks alike), the spec's
  ``zero``; its float64 path (the ONNX function-body fallback, a plain softmax) gives NaN, so
  the adapters also declare ``empty_rows=nan``. No LSE output, no gradients.
* score stages (spec 3.9): one more run per stage a case asks for, with
  ``qk_matmul_output_mode`` 0-3 and the fourth output ``qk_matmul_output``; onnxruntime fills
  the dropped pairs of mode 2 with the dtype's lowest finite value (measured), declared as
  ``masked_scores=lowest``. No per-query temperature (``unsupported``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..common import Adapter, Output, Profile, Unsupported
from ..common.translate import additive_bias, and_parts, dense_keep, positional
from .common import ELEMENT_TYPES, dtype_unsupported, session, unavailable_for

if TYPE_CHECKING:
    from refmask.case import Case

#: Score stage (spec 3.9) -> the operator's ``qk_matmul_output_mode`` (opset 23/24 text).
QK_MATMUL_OUTPUT_MODES = {"raw": 0, "softcapped": 1, "masked": 2, "probs": 3}


def translate(case: Case, opset: int) -> dict:
    """The plan for one case: ``is_causal`` (0/1), ``past`` (cached key count),
    ``nonpad`` (int64 (B,) or None) and ``keep`` (bool (B, Hq, Tq, Tk) or None)."""
    plan = {"is_causal": 0, "past": 0, "nonpad": None}
    parts = and_parts(case.mask)
    spatial = [p for p in parts if positional(p)]
    consumed = []
    if len(spatial) == 1 and spatial[0].kind == "causal":
        part, align = spatial[0], spatial[0].align
        offsets = list(align.offsets)
        if align.kind == "top_left" or (align.kind == "bottom_right" and align.q_lengths is None
                                         and align.k_lengths is None):
            plan["is_causal"] = 1
        elif align.kind == "offset" and len(offsets) == 1 and 0 <= offsets[0] <= case.k_len:
            plan.update(is_causal=1, past=offsets[0])
        elif (opset >= 24 and align.kind == "offset"
              and all(0 <= c and c + case.q_len <= case.k_len for c in offsets)):
            plan.update(is_causal=1, nonpad=np.asarray(offsets, np.int64) + case.q_len)
        elif (opset >= 24 and align.kind == "bottom_right" and align.k_lengths is not None
              and (align.q_lengths is None or set(align.q_lengths) == {case.q_len})):
            plan.update(is_causal=1, nonpad=np.asarray(align.k_lengths, np.int64))
        if plan["is_causal"]:
            consumed.append(part)
    for part in parts:
        if part.kind != "key_padding" or part.side != "right" or opset < 24 or plan["past"]:
            continue
        lengths = np.broadcast_to(np.asarray(part.lengths, np.int64), (case.batch,))
        if plan["nonpad"] is not None:
            if np.array_equal(plan["nonpad"], lengths):
                consumed.append(part)  # the same valid keys: nothing left to mask
        elif not plan["is_causal"]:
            plan["nonpad"] = lengths.copy()
            consumed.append(part)
    if plan["nonpad"] is not None:
        plan["nonpad"] = np.broadcast_to(plan["nonpad"], (case.batch,)).copy()
    plan["keep"] = dense_keep(case, [p for p in parts if not any(p is c for c in consumed)])
    return plan


def make_unsupported(opset: int) -> Callable[[Case], str | None]:
    def unsupported(case) -> str | None:
        if case.sinks:
            return f"the ONNX Attention operator (opset {opset}) has no attention sinks"
        if case.dropout_rate is not None:
            return f"the ONNX Attention operator (opset {opset}) takes no dropout mask"
        if 0 in (case.q_len, case.k_len):
            return ("onnxruntime's Attention requires q_sequence_length > 0 and "
                    "kv_sequence_length > 0 (onnxruntime/core/providers/cpu/llm/"
                    "attention_parameters.h, checkParameters)")
        return dtype_unsupported(opset, case.dtype)

    return unsupported


def _three_d(x: np.ndarray) -> np.ndarray:
    """(B, T, H, D) -> (B, T, H*D)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def make_run(opset: int) -> Callable[..., Output]:
    unsupported = make_unsupported(opset)

    def run(case, inputs, *, grads: bool) -> Output:
        reason = unsupported(case)
        if reason:
            raise Unsupported(reason)
        element = ELEMENT_TYPES[case.dtype]
        dtype = inputs["q"].dtype
        plan = translate(case, opset)
        q, k, v = inputs["q"], inputs["k"], inputs["v"]
        bthd = case.layout == "BTHD"
        attributes = {}
        if bthd:
            attributes.update(q_num_heads=case.q_heads, kv_num_heads=case.kv_heads)
        if plan["is_causal"]:
            attributes["is_causal"] = 1
        if case.scale is not None:
            attributes["scale"] = float(case.scale)
        if case.softcap is not None:
            attributes["softcap"] = float(case.softcap)
        feeds, names, outputs = {}, [], ("Y",)
        past = plan["past"]
        key_axis = 1 if bthd else 2
        new_k = np.take(k, np.arange(past, case.k_len), axis=key_axis)
        new_v = np.take(v, np.arange(past, case.k_len), axis=key_axis)
        feeds["Q"], feeds["K"], feeds["V"] = ((_three_d(x) if bthd else x)
                                              for x in (q, new_k, new_v))
        names += [("Q", element), ("K", element), ("V", element)]
        bias = additive_bias(case, inputs, dtype=np.float64)
        keep = plan["keep"]
        if bias is not None:
            if keep is not None:
                bias = np.where(keep, bias, -np.inf)
            feeds["attn_mask"] = bias.astype(dtype)
            names.append(("attn_mask", element))
        elif keep is not None:
            feeds["attn_mask"] = keep
            names.append(("attn_mask", "BOOL"))
        else:
            names.append(("", None))
        if past:
            cached = [np.take(x, np.arange(past), axis=key_axis) for x in (k, v)]
            if bthd:  # past_key/past_value are always (B, Hkv, past, D)
                cached = [np.swapaxes(x, 1, 2) for x in cached]
            feeds["past_key"], feeds["past_value"] = (np.ascontiguousarray(x) for x in cached)
            names += [("past_key", element), ("past_value", element)]
            outputs = ("Y", "present_key", "present_value")
        elif plan["nonpad"] is not None:
            names += [("", None), ("", None)]
        if plan["nonpad"] is not None:
            feeds["nonpad_kv_seqlen"] = plan["nonpad"]
            names.append(("nonpad_kv_seqlen", "INT64"))
        out = session(opset, names, attributes, element, outputs).run(["Y"], feeds)[0]
        out = np.asarray(out, dtype=np.float64)
        if bthd:
            out = np.swapaxes(out.reshape(case.batch, case.q_len, case.q_heads, case.v_dim),
                              1, 2)
        scores = {}
        for stage in case.scores:  # one run per qk_matmul_output_mode (spec 3.9)
            with_scores = (*outputs, *[""] * (3 - len(outputs)), "qk_matmul_output")
            mode = {"qk_matmul_output_mode": QK_MATMUL_OUTPUT_MODES[stage]}
            run = session(opset, names, {**attributes, **mode}, element, with_scores)
            scores[f"scores_{stage}"] = np.asarray(run.run(["qk_matmul_output"], feeds)[0],
                                                   dtype=np.float64)
        return Output(out=out, scores=scores or None)

    return run


def make_adapter(opset: int) -> Adapter:
    notes = (f"ONNX Attention opset {opset} on onnxruntime CPU; is_causal without a cache is "
             "top-left, with past_key / nonpad_kv_seqlen offset by the cache")
    return Adapter(
        name=f"onnxruntime.attention{opset}",
        profile=Profile(empty_rows="zero", causal_alignment="top_left", lse_base=None,
                        backward=False,
                        conventions=frozenset({"empty_rows=nan", "masked_scores=lowest"}),
                        notes=notes),
        run=make_run(opset),
        unsupported=make_unsupported(opset),
        unavailable=lambda: unavailable_for(opset),
        scores=frozenset(QK_MATMUL_OUTPUT_MODES),
        description=f"one-node ONNX model with the Attention operator (opset {opset}): "
                    "is_causal, attn_mask, past_key/past_value"
                    + (", nonpad_kv_seqlen" if opset >= 24 else "") + ", softcap, scale",
    )


__all__ = ["make_adapter", "translate"]
