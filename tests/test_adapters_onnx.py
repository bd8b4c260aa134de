"""onnxruntime.attention23 / .attention24 (one-node ONNX Attention models run by onnxruntime
on CPU) against the conformance suite, plus direct measurements of onnxruntime's causal
alignment with and without a KV cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from refmask.adapters import load  # noqa: E402
from refmask.adapters.onnx.attention import translate  # noqa: E402
from refmask.adapters.onnx.common import session  # noqa: E402
from refmask.attention import attention  # noqa: E402
from refmask.conformance import expect  # noqa: E402
from refmask.conformance.cases import attention_kwargs, case_inputs, catalog  # noqa: E402
from refmask.conformance.runner import check  # noqa: E402

NAMES = ["onnxruntime.attention23", "onnxruntime.attention24"]
#: is_causal without past_key / nonpad_kv_seqlen aligns top-left (offset 0), measured.
TOP_LEFT = {"causal/bottom_right/wide", "causal/bottom_right/tall", "causal/decode_q_len_1",
            "mqa/4_to_1", "alibi/abs_causal_bottom_right", "mla/prefill_192_128",
            "mla/decode_576_512", "softcap/bias_causal_bottom_right",
            "softcap/alibi_abs_bottom_right", "long_rows/causal_bottom_right_decode"}


#: score-stage cases (spec 3.9) whose mode-2 output holds float32's / float16's lowest value
#: where the spec has -inf: the declared convention masked_scores=lowest.
SCORES_POLICY = {
    "scores/causal_softcap": "causal=top_left + masked_scores=lowest",
    "scores/bias_padding_empty_rows": "masked_scores=lowest",
    "scores/softcap_bias_bthd_top_left": "masked_scores=lowest",
    "scores/explicit_empty_row": "masked_scores=lowest",
    "scores/kv_cache_left_padding_empty_row": "masked_scores=lowest",
}
#: opset 23 has no nonpad_kv_seqlen: the padding and the bias go into one float attn_mask,
#: whose -inf onnxruntime adds as it is (mode 2 keeps -inf there).
SCORES_PASS_23 = {"scores/bias_padding_empty_rows"}


@pytest.fixture(params=NAMES)
def name(request):
    adapter = load(request.param)
    if adapter.unavailable():
        pytest.skip(adapter.unavailable())
    return request.param


def test_matrix_float32_float16(name):
    report = check(name, dtypes=["float32", "float16"])
    for result in report.results:
        if result.verdict == "unsupported":
            assert result.reason
        elif result.case.name in SCORES_POLICY and not (
                name.endswith("23") and result.case.name in SCORES_PASS_23):
            # measured: mode 2 fills the pairs onnxruntime masks itself with the lowest value
            assert (result.verdict, result.convention) == (
                "policy", SCORES_POLICY[result.case.name]), result
        elif result.case.name in TOP_LEFT:
            assert (result.verdict, result.convention) == ("policy", "causal=top_left"), result
        else:  # empty rows included: onnxruntime returns 0 for them, the spec's "zero"
            assert result.verdict == "pass", (result.case.id, result.reason)
    verdicts = {r.case.id: r.verdict for r in report.results}
    assert verdicts["causal/kv_cache_offset@float32"] == "pass"  # past_key / past_value
    assert verdicts["causal/kv_cache_per_batch@float32"] == "pass"  # 24: nonpad; 23: dense
    assert verdicts["empty_rows/all_masked@float32"] == "pass"
    assert report.counts()["pass"] >= 100


def test_bfloat16_and_length0_are_unsupported(name):
    cases = {c.id: c for c in catalog(["bfloat16", "float32"])}
    adapter = load(name)
    assert "NOT_IMPLEMENTED" in adapter.unsupported(cases["full/square@bfloat16"])
    assert "q_sequence_length > 0" in adapter.unsupported(cases["full/k_len_0@float32"])
    assert "sinks" in adapter.unsupported(cases["sinks/full@float32"])


def test_opset24_uses_nonpad_kv_seqlen():
    cases = {c.name: c for c in catalog(["float32"])}
    plan = translate(cases["padding/keys_right_causal_bottom_right"], 24)
    assert plan["is_causal"] and plan["keep"] is None
    assert plan["nonpad"].tolist() == [6, 4]  # offset = nonpad - Tq per batch (errata 1.23)
    plan = translate(cases["padding/keys_right_causal_bottom_right"], 23)
    assert not plan["is_causal"] and plan["keep"] is not None
    plan = translate(cases["causal/kv_cache_offset"], 23)
    assert plan["is_causal"] and plan["past"] == 5
    report = check("onnxruntime.attention24", dtypes=["float32"],
                   filter="padding/keys_right,padding/all_keys_padded")
    assert {r.verdict for r in report.results} == {"pass"}


def _kept_per_row(opset, q_len, k_len, past=0, nonpad=None):
    """Keys with weight in each query row of onnxruntime's is_causal=1 (V = identity)."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 1, q_len, 4)).astype(np.float32)
    k = rng.standard_normal((1, 1, k_len, 4)).astype(np.float32)
    v = np.eye(k_len, dtype=np.float32)[None, None]
    names = [("Q", "FLOAT"), ("K", "FLOAT"), ("V", "FLOAT"), ("", None)]
    feeds = {"Q": q, "K": k[:, :, past:], "V": v[:, :, past:]}
    outputs = ("Y",)
    if past:
        names += [("past_key", "FLOAT"), ("past_value", "FLOAT")]
        feeds.update(past_key=k[:, :, :past], past_value=v[:, :, :past])
        outputs = ("Y", "present_key", "present_value")
    if nonpad is not None:
        names += [("", None), ("", None), ("nonpad_kv_seqlen", "INT64")]
        feeds["nonpad_kv_seqlen"] = np.asarray([nonpad], np.int64)
    y = session(opset, names, {"is_causal": 1}, "FLOAT", outputs).run(["Y"], feeds)[0]
    return (y[0, 0] > 0).sum(-1).tolist()


@pytest.mark.parametrize("opset", [23, 24])
def test_measured_causal_alignment(opset):
    # no cache: top-left (query i sees keys 0..i), although Tq=3 < Tk=8
    assert _kept_per_row(opset, 3, 8) == [1, 2, 3]
    # past_key of 5: offset 5 (bottom-right of the concatenated keys)
    assert _kept_per_row(opset, 2, 7, past=5) == [6, 7]
    if opset >= 24:  # nonpad_kv_seqlen = 8 with Tq = 3: offset 5
        assert _kept_per_row(opset, 3, 8, nonpad=8) == [6, 7, 8]


def test_float64_uses_a_float32_scale_and_nan_empty_rows():
    """onnxruntime's float64 Attention computes sqrt(scale) in float32 (the ONNX function
    body: the scale attribute is a FLOAT), gives NaN for empty rows (float32 gives 0), and
    cannot combine is_causal with a float attn_mask (a type error in the expanded graph)."""
    cases = {c.name: c for c in catalog(["float64"])}
    adapter = load("onnxruntime.attention23")
    case = cases["causal/top_left/square"]
    inputs = case_inputs(case)
    out = adapter.run(case, inputs, grads=False).out
    kwargs = attention_kwargs(case, inputs)
    root = float(np.float32(math.sqrt(float(np.float32(1.0 / math.sqrt(case.qk_dim))))))
    kwargs["scale"] = root * root
    rounded = attention(inputs["q"], inputs["k"], inputs["v"], **kwargs).out
    assert np.abs(out - rounded).max() < 1e-14
    report = check("onnxruntime.attention23", dtypes=["float64", "float32"],
                   filter="empty_rows/all_masked,bias/causal,full/square")
    verdicts = {r.case.id: r for r in report.results}
    assert verdicts["full/square@float64"].verdict == "fail"
    assert verdicts["empty_rows/all_masked@float64"].convention == "empty_rows=nan"
    assert verdicts["empty_rows/all_masked@float32"].verdict == "pass"
    assert "Type Error" in verdicts["bias/causal@float64"].reason
    assert verdicts["bias/causal@float32"].verdict == "pass"


def test_runner_names_the_float32_sqrt_scale_bug():
    pytest.importorskip("onnxruntime")
    report = check("onnxruntime.attention23", dtypes=["float64"],
                   filter="full/square,window/fa_2_0/square")
    assert [(r.verdict, r.convention) for r in report.results] == [
        ("fail", "scale=float32_sqrt_squared")] * 2


EXPECTATIONS = Path(__file__).resolve().parent / "expectations" / "onnxruntime-float64.json"


@pytest.mark.parametrize("name", NAMES)
def test_float64_verdicts_are_the_recorded_ones(name):
    """Every float64 verdict (the float32-scale bug, the dtype crash, NaN empty rows, ...) as
    recorded with `refmask check onnxruntime --dtype float64 --write-expect`: an onnxruntime
    upgrade shows as a readable verdict diff with the versions, not a broken assertion.
    Re-record after checking the diff (same command, --overwrite)."""
    report = check(name, dtypes=["float64"])
    changes, warnings = expect.compare([report], expect.load(EXPECTATIONS))
    assert not changes, expect.summary(changes, warnings)
