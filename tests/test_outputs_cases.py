"""Score stages as case outputs (spec 3.9) and the per-query temperature (spec 3.2.3) as a
case feature: hand-worked matrices, the onnx reference implementation, mpmath, and the
runner's verdicts."""

from __future__ import annotations

import math
from dataclasses import replace

import mpmath
import numpy as np
import pytest

from refmask import masks as m
from refmask.case import Case, case_from_json, case_inputs, reference_outputs
from refmask.conformance import exact
from refmask.conformance.cases import catalog
from refmask.conformance.cases_outputs import (
    ALL_STAGES,
    TAU_POSITIONS_3_TO_6,
    TAU_POSITIONS_5_TO_7,
    TAU_POSITIONS_10_TO_12,
)
from refmask.conformance.golden._format import expected_members
from refmask.conformance.tolerance import case_forward_model, check_forward

SCORE_CASES = [c for c in catalog() if c.scores]


def _tiny(**fields) -> Case:
    return Case("scores/tiny", "scores", m.causal(align="top_left"), batch=1, q_heads=1,
                kv_heads=1, q_len=2, k_len=2, qk_dim=1, v_dim=1, scores=ALL_STAGES, **fields)


def _inputs(**extra):
    one = np.ones((1, 1, 2, 1))
    return {"q": np.array([1.0, 2.0]).reshape(1, 1, 2, 1), "k": np.array([1.0, -1.0])
            .reshape(1, 1, 2, 1), "v": one, "d_out": one, **extra}


def test_hand_worked_stages_with_softcap_and_bias():
    """q = (1, 2), k = (1, -1), Dqk = 1 (scale 1), cap 2, causal top-left, bias b."""
    bias = np.array([[0.5, 3.0], [-1.0, 0.25]]).reshape(1, 1, 2, 2)
    got = exact.exact_attention(_tiny(softcap=2.0, bias=True), _inputs(bias=bias))
    raw = np.array([[1.0, -1.0], [2.0, -2.0]])
    capped = 2.0 * np.tanh(raw / 2.0)
    masked = np.where([[True, False], [True, True]], capped + bias[0, 0], -np.inf)
    row1 = np.exp(masked[1] - masked[1].max())
    probs = np.array([[1.0, 0.0], row1 / row1.sum()])
    np.testing.assert_array_equal(got["scores_raw"][0, 0], raw)
    np.testing.assert_allclose(got["scores_softcapped"][0, 0], capped, rtol=1e-15)
    assert got["scores_masked"][0, 0, 0, 1] == -np.inf  # the bias 3.0 does not unmask it
    np.testing.assert_allclose(got["scores_masked"][0, 0], masked, rtol=1e-15)
    np.testing.assert_allclose(got["scores_probs"][0, 0], probs, rtol=1e-15)


@pytest.mark.parametrize("policy, row", [("zero", [0.0, 0.0]), ("uniform", [0.5, 0.5]),
                                         ("nan", [np.nan, np.nan])])
def test_empty_row_probabilities_follow_the_policy(policy, row):
    case = replace(_tiny(), mask=m.explicit(np.array([[1, 0], [0, 0]], dtype=bool)),
                   empty_rows=policy)
    got = exact.exact_attention(case, _inputs())
    np.testing.assert_array_equal(got["scores_probs"][0, 0], [[1.0, 0.0], row])
    np.testing.assert_array_equal(got["scores_masked"][0, 0, 1], [-np.inf, -np.inf])
    np.testing.assert_array_equal(got["scores_raw"][0, 0, 1], [2.0, -2.0])  # mask not applied


def test_sink_share_is_not_a_column():
    case = replace(_tiny(), sinks=True)
    got = exact.exact_attention(case, _inputs(sinks=np.array([0.0])))
    # row 0 keeps key 0 (score 1) and the sink (0): p = e / (e + 1)
    assert got["scores_probs"][0, 0, 0, 0] == pytest.approx(math.e / (math.e + 1), rel=1e-15)
    assert got["scores_probs"][0, 0, 0].sum() < 1


def _onnx_reference(case: Case, inputs: dict, mode: int) -> np.ndarray:
    """The onnx package's reference implementation of Attention (opset 23) on the case:
    4-D BHTD inputs, the mask (and bias) as a float additive attn_mask with -inf."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    q, k, v = (np.swapaxes(inputs[n], 1, 2) if case.layout == "BTHD" else inputs[n]
               for n in ("q", "k", "v"))
    additive = np.where(case.keep(), 0.0, -np.inf)
    if case.bias:
        additive = additive + np.asarray(inputs["bias"], np.float64)
    assert case.alibi is None and not case.sinks
    attributes = {"qk_matmul_output_mode": mode}
    if case.scale is not None:
        attributes["scale"] = case.scale
    if case.softcap is not None:
        attributes["softcap"] = case.softcap
    node = helper.make_node("Attention", ["Q", "K", "V", "M"], ["Y", "", "", "S"],
                            **attributes)
    kind = TensorProto.DOUBLE
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, kind, None)
                                            for n in "QKVM"],
                              [helper.make_tensor_value_info(n, kind, None) for n in "YS"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    feeds = {"Q": q, "K": k, "V": v, "M": additive.astype(np.float64)}
    return ReferenceEvaluator(model).run(["S"], feeds)[0]


@pytest.mark.parametrize("case", [c for c in SCORE_CASES if c.dtype == "float64" and not c.sinks
                                  and c.alibi is None and c.empty_rows == "zero"
                                  and c.query_scale is None],
                         ids=lambda c: c.id)
def test_stages_agree_with_the_onnx_reference_implementation(case):
    """Modes 1, 2, 3 equal the golden stages to float64 rounding (masked pairs -inf, empty
    rows a zero row); mode 0 equals "raw" without softcap. With a softcap the onnx 1.23.2
    reference returns the softcapped scores for mode 0 (it overwrites the raw product),
    which disagrees with the operator text that refmask follows (spec 3.9)."""
    inputs = case_inputs(case)
    golden = exact.exact_attention(case, inputs)
    for mode, stage in enumerate(ALL_STAGES):
        if stage not in case.scores:
            continue
        got = _onnx_reference(case, inputs, mode)
        want = golden[f"scores_{stage}"]
        if mode == 0 and case.softcap is not None:
            want = golden["scores_softcapped"]
        assert np.array_equal(np.isinf(got), np.isinf(want)), (stage, case.id)
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-13, atol=1e-15,
                                   err_msg=f"{case.id} mode {mode}")


@pytest.mark.parametrize("case", SCORE_CASES, ids=lambda c: c.id)
def test_refmask_naive_scores_in_the_case_dtype_pass_the_score_model(case):
    inputs = case_inputs(case)
    golden = exact.exact_attention(case, inputs)
    naive = reference_outputs(case, inputs, float64=False, grads=False)
    model = case_forward_model(case, inputs, {n: golden[n] if n != "out" or case.layout ==
                                              "BHTD" else np.swapaxes(golden[n], 1, 2)
                                              for n in golden})
    assert set(model.scores) == {f"scores_{s}" for s in case.scores}
    for name, weight in model.scores.items():
        check = check_forward(name, naive[name], golden[name], None, weight, case.dtype,
                              aggregate=False)
        assert check.ok, (case.id, check.reason)


@pytest.mark.parametrize("dtype, factor", [("bfloat16", 1.5), ("float16", 1.1),
                                           ("float32", 1 + 1e-3), ("float64", 1 + 1e-12)])
def test_a_uniform_relative_error_fails_the_probabilities(dtype, factor):
    """The model follows the score error of q and k rounded to u (spec 5.2): in bfloat16 a
    legitimate kernel's probabilities move by several percent, so the property is stated at
    50 % (bfloat16), 10 % (float16), 1e-3 (float32), 1e-12 (float64)."""
    failed = 0
    cases = [c for c in SCORE_CASES if c.dtype == dtype]
    for case in cases:
        inputs = case_inputs(case)
        golden = exact.exact_attention(case, inputs)
        out = golden["out"] if case.layout == "BHTD" else np.swapaxes(golden["out"], 1, 2)
        model = case_forward_model(case, inputs, {**golden, "out": out})
        wrong = golden["scores_probs"] * factor
        failed += not check_forward("scores_probs", wrong, golden["scores_probs"], None,
                                    model.scores["scores_probs"], dtype, aggregate=False).ok
    assert failed == len(cases)


def test_case_json_round_trips_and_bad_fields_are_refused():
    case = next(c for c in catalog() if c.scores and c.query_scale is not None)
    data = case.to_json()
    assert data["scores"] == list(ALL_STAGES) and len(data["query_scale"]) == case.q_len
    assert case_from_json(data) == case
    assert "scores" not in catalog()[0].to_json()  # cases without them keep the 0.1 JSON
    members = expected_members(data)
    assert members["input.query_scale"][1] == (case.q_len,)
    assert {f"exact.scores_{s}" for s in ALL_STAGES} <= set(members)
    with pytest.raises(ValueError, match="scores must be one of"):
        replace(case, scores=("logits",))
    with pytest.raises(ValueError, match="at most once, in the order"):
        replace(case, scores=("probs", "raw"))
    with pytest.raises(ValueError, match="query_scale must be a tuple of Tq"):
        replace(case, query_scale=(1.0,))
    with pytest.raises(ValueError, match="finite floats > 0"):
        replace(case, query_scale=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="scores must be a list of score stages"):
        expected_members({**data, "scores": [["raw"]]})


@pytest.mark.parametrize("table, start, floor_scale, attn_scale", [
    (TAU_POSITIONS_3_TO_6, 3, 2, 0.5), (TAU_POSITIONS_10_TO_12, 10, 4, 0.1),
    (TAU_POSITIONS_5_TO_7, 5, 1, 0.25)])
def test_temperature_literals_are_the_correctly_rounded_llama4_values(table, start,
                                                                      floor_scale, attn_scale):
    with mpmath.workdps(40):
        for n, value in enumerate(table):
            steps = (start + n + 1) // floor_scale
            exact_value = mpmath.log(steps + 1) * mpmath.mpf(attn_scale) + 1
            ulp = math.ulp(value)
            assert abs(mpmath.mpf(value) - exact_value) <= ulp, (n, value)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_temperature_golden_is_the_golden_of_the_scaled_queries(dtype):
    """exact(case with tau) == exact(case without tau, q' = tau * q) with dq = tau * dq':
    the golden reads the exact product (spec 3.2.3); for dtypes narrower than float64 the
    product of two of their values is exact in float64, so q' can be passed as an input."""
    case = next(c for c in catalog([dtype]) if c.name == "temperature/llama4_causal")
    inputs = case_inputs(case)
    tau = np.asarray(inputs["query_scale"], np.float64)
    scaled = np.asarray(inputs["q"], np.float64) * tau[:, None]
    assert np.array_equal(scaled / tau[:, None], np.asarray(inputs["q"], np.float64))
    plain = replace(case, query_scale=None)
    got = exact.exact_attention(case, inputs)
    want = exact.exact_attention(plain, {**{n: x for n, x in inputs.items()
                                            if n != "query_scale"}, "q": scaled})
    for name in ("out", "lse", "dk", "dv"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_allclose(got["dq"], want["dq"] * tau[:, None], rtol=4e-16)


def test_runner_verdicts_on_the_new_families():
    from refmask.adapters import load
    from refmask.conformance.runner import run_case

    by_id = {c.id: c for c in catalog()}
    numpy_adapter = load("numpy")
    for case in (c for c in catalog(["float64", "bfloat16"]) if c.scores or c.query_scale):
        assert run_case(numpy_adapter, case).verdict == "pass", case.id
    onnx = load("onnxruntime.attention24")
    if onnx.unavailable():
        pytest.skip(onnx.unavailable())
    result = run_case(onnx, by_id["scores/alibi_window_gqa_scale@float32"])
    assert result.verdict == "pass", result.reason
    # onnxruntime 1.31.1 fills the dropped pairs of mode 2 with the dtype's lowest finite
    # value: the declared convention, composed with causal=top_left where that applies too
    result = run_case(onnx, by_id["scores/softcap_bias_bthd_top_left@float32"])
    assert (result.verdict, result.convention) == ("policy", "masked_scores=lowest")
    result = run_case(onnx, by_id["scores/causal_softcap@float16"])
    assert (result.verdict, result.convention) == ("policy",
                                                   "causal=top_left + masked_scores=lowest")
    undeclared = replace(onnx, profile=replace(onnx.profile, conventions=frozenset()))
    result = run_case(undeclared, by_id["scores/softcap_bias_bthd_top_left@float32"])
    assert (result.verdict, result.convention) == ("fail", "masked_scores=lowest")
    assert "--allow-policy masked_scores=lowest" in result.reason
    mha = load("torch.mha.need_weights")
    result = run_case(mha, by_id["scores/probs_only_causal_padding@float32"])
    assert result.verdict == "pass", result.reason
    result = run_case(mha, by_id["scores/explicit_empty_row@float32"])
    assert result.verdict == "unsupported" and "['raw', 'softcapped', 'masked']" in result.reason
    result = run_case(onnx, by_id["temperature/llama4_causal@float32"])
    assert result.verdict == "unsupported" and "temperature" in result.reason
    result = run_case(load("torch.flex"), by_id["scores/causal_softcap@float32"])
    assert result.verdict == "unsupported" and "score stages" in result.reason


def test_per_sequence_alibi_distance_is_the_hand_worked_table():
    """FlashAttention varlen, cu_seqlens_q (0, 1, 4, 6), cu_seqlens_k (0, 3, 5, 9),
    bottom-right per sequence: offsets 3 - 1 = 2, 2 - 3 = -1, 4 - 2 = 2; pq - pk on local
    indices, 0 across sequences."""
    from refmask.conformance.exact_terms import _query_minus_key

    case = next(c for c in catalog(["float64"]) if c.name == "varlen/alibi_abs_per_sequence")
    want = np.zeros((6, 9), dtype=int)
    want[0, 0:3] = [2, 1, 0]                    # sequence 0: i = 0, offset 2
    want[1:4, 3:5] = [[-1, -2], [0, -1], [1, 0]]  # sequence 1: i = 0..2, offset -1
    want[4:6, 5:9] = [[2, 1, 0, -1], [3, 2, 1, 0]]  # sequence 2: i = 0..1, offset 2
    distance = _query_minus_key(case)
    got = np.array([[distance(0, i, j) for j in range(9)] for i in range(6)])
    np.testing.assert_array_equal(got, want)
    for name, tensor in (("varlen/alibi_abs_per_sequence", "lse"),  # a per-row shift
                         ("varlen/alibi_abs_window_ahead_per_sequence", "out")):
        case = next(c for c in catalog(["float64"]) if c.name == name)
        golden = exact.exact_attention(case, case_inputs(case))
        glob = exact.exact_attention(replace(case, alibi=replace_layout(case.alibi, None)),
                                     case_inputs(case))
        finite = np.isfinite(golden[tensor])
        assert np.abs(golden[tensor] - glob[tensor])[finite].max() > 0.05, name


def replace_layout(alibi, layout):
    from refmask.attention import Alibi

    return Alibi(alibi.slopes, convention=alibi.convention, align=alibi.align, layout=layout)


def test_per_sequence_alibi_round_trips_and_flex_expresses_it():
    from refmask.adapters import load
    from refmask.conformance.runner import run_case

    cases = [c for c in catalog() if c.family == "varlen" and c.alibi is not None]
    assert len(cases) == 12
    for case in cases:
        assert case_from_json(case.to_json()) == case
        assert case.to_json()["alibi"]["layout"] == case.alibi.layout.to_json()
    flex = load("torch.flex")
    if flex.unavailable():
        pytest.skip(flex.unavailable())
    for case in (c for c in cases if c.dtype in ("float32", "bfloat16")):
        result = run_case(flex, case)
        assert result.verdict == "pass", (case.id, result.reason)
