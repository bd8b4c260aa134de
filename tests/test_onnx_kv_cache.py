"""onnxruntime's ONNX Attention with a KV cache: ``past_key``/``past_value`` in,
``present_key``/``present_value`` and ``qk_matmul_output`` (modes 0-3) out, judged against
refmask (causal at offset = past length; attention_scores stages)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from refmask import masks as m  # noqa: E402
from refmask.adapters.onnx.common import session  # noqa: E402
from refmask.attention import ONNX_QK_MATMUL_OUTPUT_MODES, attention, attention_scores  # noqa: E402

RNG = np.random.default_rng(9)
B, HQ, HKV, PAST, NEW, D = 2, 4, 2, 5, 3, 8
Q = RNG.standard_normal((B, HQ, NEW, D)).astype(np.float32)
K = RNG.standard_normal((B, HKV, PAST + NEW, D)).astype(np.float32)
V = RNG.standard_normal((B, HKV, PAST + NEW, D)).astype(np.float32)


def run(opset, mode, softcap=None):
    attributes = {"is_causal": 1, "qk_matmul_output_mode": mode}
    if softcap is not None:
        attributes["softcap"] = softcap
    names = [("Q", "FLOAT"), ("K", "FLOAT"), ("V", "FLOAT"), ("", None),
             ("past_key", "FLOAT"), ("past_value", "FLOAT")]
    outputs = ("Y", "present_key", "present_value", "qk_matmul_output")
    try:
        sess = session(opset, names, attributes, "FLOAT", outputs)
    except Exception as error:  # noqa: BLE001 - report what onnxruntime refused
        pytest.skip(f"onnxruntime refuses the model: {error}")
    feeds = {"Q": Q, "K": K[:, :, PAST:], "V": V[:, :, PAST:], "past_key": K[:, :, :PAST],
             "past_value": V[:, :, :PAST]}
    return dict(zip(outputs, sess.run(list(outputs), feeds), strict=True))


@pytest.mark.parametrize("opset", [23, 24])
def test_present_is_past_then_new_and_causal_is_offset_by_the_past(opset):
    got = run(opset, 0)
    np.testing.assert_array_equal(got["present_key"], K)
    np.testing.assert_array_equal(got["present_value"], V)
    want = attention(*(x.astype(np.float64) for x in (Q, K, V)), mask=m.causal(align=PAST))
    np.testing.assert_allclose(got["Y"], want.out, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_qk_matmul_output_modes_are_the_score_stages(mode):
    softcap = None if mode == 0 else 2.0
    got = run(24, mode, softcap)["qk_matmul_output"]
    want = attention_scores(Q.astype(np.float64), K.astype(np.float64),
                            stage=ONNX_QK_MATMUL_OUTPUT_MODES[mode], mask=m.causal(align=PAST),
                            softcap=softcap)
    finite = np.isfinite(want)
    if mode == 2:
        # Measured (onnxruntime 1.31.1): dropped pairs hold float32's lowest value, not the
        # -inf of the operator's reference (onnx/reference/ops/op_attention.py) and of spec 3.9;
        # a consumer that takes exp() of them gets the same 0, one that compares to -inf not.
        assert np.all(got[~finite] == np.finfo(np.float32).min)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-5, atol=2e-6)
