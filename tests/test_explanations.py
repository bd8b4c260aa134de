"""Diagnosis v2 (spec 5.4): a planted bug is named -- best match, not first -- in float64 and in
bfloat16, composed with the case's other features; an unexplained failure is localised.

Each planted kernel is the legitimate block-wise kernel of ``legit_kernels`` with one
departure written here from the bug's public description (a keep matrix built with numpy, a
scale, a post-processing step); nothing is computed with refmask's alternatives.
"""

from __future__ import annotations

import math
from dataclasses import replace

import legit_kernels as lk
import numpy as np
import pytest

from refmask.adapters import Adapter, Output, Profile
from refmask.adapters.user import from_function
from refmask.conformance.cases import catalog
from refmask.conformance.explanations import explanations
from refmask.conformance.runner import run_case


def case_named(name: str, dtype: str):
    return next(c for c in catalog([dtype]) if c.name == name)


def with_keep(build):
    """A kernel that replaces the keep matrix by ``build(tq, tk, call)`` (broadcast)."""
    def fn(q, k, v, call):
        tq, tk = call.keep.shape[-2:]
        keep = np.broadcast_to(build(tq, tk, call), call.keep.shape)
        return lk.online_softmax(q, k, v, replace(call, keep=keep))
    return fn


def tril(tq, tk, offset=0):
    i, j = np.arange(tq)[:, None], np.arange(tk)[None, :]
    return j <= i + offset


def key_lengths(lengths, side, tk):
    j = np.arange(tk)[None, :]
    n = np.asarray(lengths)[:, None]
    keep = j < n if side == "right" else j >= tk - n
    return keep[:, None, None, :]


def alibi_distance(tq, tk):
    return np.abs(np.arange(tq)[:, None] - np.arange(tk)[None, :]).astype(np.float64)


def scaled(scale_of):
    def fn(q, k, v, call):
        return lk.online_softmax(q, k, v, replace(call, scale=scale_of(call)))
    return fn


def softcap_unscaled(q, k, v, call):
    cap = call.softcap
    # tanh(s / cap) without * cap: the scores are squeezed into (-1, 1)
    s_scale = call.scale
    q32 = np.asarray(q, np.float64)
    k32 = np.repeat(np.asarray(k, np.float64), q.shape[1] // k.shape[1], axis=1)
    s = np.tanh(s_scale * (q32 @ np.swapaxes(k32, -1, -2)) / cap)
    bias = s - s_scale * (q32 @ np.swapaxes(k32, -1, -2))  # replace the raw scores by s
    return lk.online_softmax(q, k, v, replace(call, softcap=None, bias=(
        bias if call.bias is None else bias + np.asarray(call.bias, np.float64))))


def alibi_negated(q, k, v, call):
    heads = call.keep.shape[1]
    slopes = np.array([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])
    tq, tk = call.keep.shape[-2:]
    correct = -slopes[None, :, None, None] * alibi_distance(tq, tk)  # abs convention
    bias = np.asarray(call.bias, np.float64) - 2 * correct
    return lk.online_softmax(q, k, v, replace(call, bias=bias))


def sink_out_of_lse(q, k, v, call):
    out, _ = lk.online_softmax(q, k, v, call)
    _, lse_without_sink = lk.online_softmax(q, k, v, replace(call, sinks=None))
    return out, lse_without_sink


def dropout_inverted(q, k, v, call):
    return lk.online_softmax(q, k, v, replace(call, dropout_keep=~call.dropout_keep))


def additive_constant(constant, label):
    """Masked scores get s + constant (a 'finite additive mask'), softmax over every key, all
    in float64; the kernel declares that convention."""
    def fn(q, k, v, call):
        q64, k64, v64 = (np.asarray(x, np.float64) for x in (q, k, v))
        s = call.scale * (q64 @ np.swapaxes(k64, -1, -2))
        s = np.where(call.keep, s, s + constant)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p = p / p.sum(axis=-1, keepdims=True)
        return p @ v64

    fn.refmask_conventions = [f"mask_constant={label} (add)"]
    return fn


def in_float32(fn):
    """The kernel run on float32 copies of float64 inputs; the result returned as float64."""
    def wrapped(q, k, v, call):
        bias = None if call.bias is None else np.asarray(call.bias, np.float32)
        out, lse = fn(*(np.asarray(x, np.float32) for x in (q, k, v)), replace(call, bias=bias))
        return np.asarray(out, np.float64), np.asarray(lse, np.float64)
    return wrapped


def no_max_subtraction(q, k, v, call):
    """exp of the raw scores in the case dtype, normalised afterwards."""
    dtype = q.dtype
    q32, v32 = np.asarray(q, np.float32), np.asarray(v, np.float32)
    k32 = np.asarray(k, np.float32)
    s = call.scale * (q32 @ np.swapaxes(k32, -1, -2))
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(s).astype(dtype).astype(np.float32)
        e = np.where(call.keep, e, 0.0)
        p = e / e.sum(axis=-1, keepdims=True)
        return (p @ v32).astype(dtype)


# (kernel, case name, dtypes, expected name, expected verdict)
PLANTED = [
    (with_keep(lambda tq, tk, c: tril(tq, tk, -1)), "causal/top_left/square",
     ("float64", "bfloat16"), "causal=diagonal_excluded", "fail"),
    (with_keep(lambda tq, tk, c: tril(tq, tk)), "causal/kv_cache_offset",
     ("float64", "bfloat16"), "alignment=offset_ignored", "fail"),
    (with_keep(lambda tq, tk, c: key_lengths([6, 4], "right", tk) & tril(tq, tk, tk - tq)),
     "padding/keys_right_causal_bottom_right", ("float64", "bfloat16"),
     "alignment=valid_lengths_ignored", "fail"),
    (with_keep(lambda tq, tk, c: key_lengths([7, 4], "right", tk)), "padding/keys_right",
     ("float64", "bfloat16"), "padding=lengths_plus_1", "fail"),
    (with_keep(lambda tq, tk, c: key_lengths([7, 3], "right", tk)), "padding/keys_left",
     ("float64", "bfloat16"), "padding=side_flipped", "fail"),
    (with_keep(lambda tq, tk, c: (np.arange(tq)[:, None] // 4 == np.arange(tk)[None, :] // 4)
               & tril(tq, tk)), "chunked/llama4_3", ("float64", "bfloat16"), "chunk=size_plus_1",
     "fail"),
    (with_keep(lambda tq, tk, c: (np.arange(tk)[None, :] - np.arange(tq)[:, None] <= 3)
               & (np.arange(tq)[:, None] - np.arange(tk)[None, :] <= 2)),
     "window/symmetric_2_2", ("float64", "bfloat16"), "window=right_plus_1", "fail"),
    (scaled(lambda c: 1.0 / math.sqrt(8)), "full/custom_scale", ("float64", "bfloat16"),
     "scale=explicit_ignored", "fail"),
    (scaled(lambda c: c.scale ** 2), "full/custom_scale", ("float64", "bfloat16"),
     "scale=applied_twice", "fail"),
    (softcap_unscaled, "softcap/no_mask", ("float64", "bfloat16"), "softcap=tanh_unscaled",
     "fail"),
    (alibi_negated, "alibi/abs_bidirectional", ("float64", "bfloat16"), "alibi=negated", "fail"),
    (sink_out_of_lse, "sinks/full", ("float64", "bfloat16"), "sink=out_of_lse", "fail"),
    (dropout_inverted, "dropout/causal", ("float64", "bfloat16"), "dropout=inverted", "fail"),
    (additive_constant(-1e9, "-1e9"), "explicit/articles_empty_first_row", ("float64",),
     "mask_constant=-1e9 (add)", "policy"),
    (in_float32(lk.online_softmax), "causal/top_left/square", ("float64",),
     "computed_in=float32", "fail"),
    (in_float32(with_keep(lambda tq, tk, c: tril(tq, tk))), "causal/bottom_right/wide",
     ("float64",), "causal=top_left + computed_in=float32", "fail"),
    (no_max_subtraction, "full/large_magnitude", ("float16",), "softmax=no_max_subtraction",
     "fail"),
]


@pytest.mark.parametrize("kernel, case_name, dtypes, name, verdict", PLANTED,
                         ids=[p[3] for p in PLANTED])
def test_planted_bug_is_named(kernel, case_name, dtypes, name, verdict):
    adapter = from_function(kernel)
    for dtype in dtypes:
        result = run_case(adapter, case_named(case_name, dtype))
        assert (result.verdict, result.convention) == (verdict, name), (dtype, result.reason)
        assert result.diagnosis["best"]["fix"], result.diagnosis


def test_best_match_not_first_match_softcap_after_mask_in_bfloat16():
    """softcap after the mask: masked keys leak exp(-cap); in bfloat16 the 0.x runner named
    the first alternative within its loose tolerance (a scale bug)."""
    def softcap_last(q, k, v, call):
        cap = call.softcap
        q64 = np.asarray(q, np.float64)
        k64 = np.asarray(k, np.float64)
        s = call.scale * (q64 @ np.swapaxes(k64, -1, -2))
        s = np.where(call.keep, s, -np.inf)
        s = cap * np.tanh(s / cap)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p = p / p.sum(axis=-1, keepdims=True)
        return (p @ np.asarray(v, np.float64)).astype(q.dtype)

    result = run_case(from_function(softcap_last), case_named("softcap/causal", "bfloat16"))
    assert result.convention == "softcap_after_mask", result.reason


def test_uniform_empty_rows_with_a_finite_lse_are_a_policy():
    """JAX-style empty rows: mean of V and a finite LSE (log Tk + C); the policy does not
    require lse = -inf on empty rows."""
    def jax_like(case, inputs, grads=False):
        out, lse = lk.online_softmax(inputs["q"], inputs["k"], inputs["v"], _call(case, inputs))
        out, lse = np.asarray(out, np.float64), np.asarray(lse, np.float64)
        empty = ~case.keep().any(axis=-1)
        v = np.asarray(inputs["v"], np.float64)
        out = np.where(empty[..., None], v.mean(axis=2, keepdims=True), out)
        lse = np.where(empty, math.log(case.k_len) - 1e30, lse)
        return Output(out=out, lse=lse)

    case = case_named("padding/queries_right", "float64")
    result = run_case(Adapter("jax_like", Profile(empty_rows="uniform"), jax_like), case)
    assert (result.verdict, result.convention) == ("policy", "empty_rows=uniform"), result.reason


def _call(case, inputs):
    from refmask.adapters.user import Call

    return Call(keep=case.keep(), scale=1.0 / math.sqrt(case.qk_dim), softcap=None, bias=None,
                sinks=None, dropout_keep=None, dropout_rate=None, mask=case.mask, case=case)


def test_unexplained_failure_is_localised_to_heads_beyond_hkv():
    def heads_beyond_hkv_off(q, k, v, call):
        out, lse = lk.online_softmax(q, k, v, call)
        out = np.asarray(out, np.float64)
        out[:, k.shape[1]:] += 0.25
        return out.astype(q.dtype), lse

    result = run_case(from_function(heads_beyond_hkv_off),
                      case_named("gqa/4_to_2_causal", "float64"))
    assert result.verdict == "fail" and result.convention is None
    assert "only heads >= Hkv = 2 are off (exactly" in result.reason, result.reason


def test_unexplained_failure_is_localised_to_rows_whose_window_reaches_key_0():
    def first_key_rows_off(q, k, v, call):
        out, lse = lk.online_softmax(q, k, v, call)
        out = np.asarray(out, np.float64)
        reaches_key_0 = call.keep[..., 0]
        out = np.where(reaches_key_0[..., None], out + 0.25, out)
        return out.astype(q.dtype), lse

    result = run_case(from_function(first_key_rows_off),
                      case_named("window/fa_2_0/square", "float64"))
    assert result.verdict == "fail" and result.convention is None
    assert "only rows whose kept keys include key 0 are off (exactly" in result.reason, (
        result.reason)


def test_every_explanation_has_a_fix_and_a_unique_name():
    records = explanations()
    names = [e.name for e in records]
    assert len(names) == len(set(names))
    assert all(e.fix and e.description and e.kind in ("policy", "bug", "empty_rows_only")
               for e in records)
