"""jax.dpa and flax.mask against the conformance suite (real JAX calls, CPU).

Every case a profile supports passes at its dtype's tolerance, except the divergences named
here, each asserted with the convention the runner reports (or, for the one case that
combines two conventions, against the reference computed under both).
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from refmask import masks as m  # noqa: E402
from refmask.adapters import load  # noqa: E402
from refmask.attention import attention  # noqa: E402
from refmask.conformance.cases import attention_kwargs, case_inputs, catalog  # noqa: E402
from refmask.conformance.runner import check  # noqa: E402

#: is_causal / local_window_size are top-left (jax/_src/nn/functions.py: _get_causal_mask is
#: tril(ones((T, S))), _get_window_mask compares indices).
TOP_LEFT = {
    "causal/bottom_right/wide", "causal/bottom_right/tall", "causal/decode_q_len_1",
    "window/fa_2_0/bottom_right_wide", "window/left_unbounded_right_1", "gqa/6_to_3_window",
    "mqa/4_to_1", "alibi/abs_causal_bottom_right", "split_kv/keys_0_4",
    "long_rows/causal_bottom_right_decode",
}
#: masked logits are replaced by -0.7 * finfo(float32).max: empty rows are the mean of V.
UNIFORM = {
    "padding/queries_left_keys_left_causal", "padding/all_keys_padded",
    "explicit/articles_empty_first_row", "empty_rows/all_masked",
    "empty_rows/every_other_query_padded",
    # FlashAttention varlen: a sequence with more queries than keys has empty rows
    "varlen/fa_causal_per_sequence", "varlen/fa_window_per_sequence",
    "varlen/alibi_abs_per_sequence",
}
#: top-left window on a tall bottom-right case: the realigned rows are empty, and JAX fills
#: them with the mean of V -- two conventions at once, which the runner names together.
TOP_LEFT_AND_UNIFORM = {"window/fa_2_0/bottom_right_tall", "split_kv/keys_4_7",
                        "split_kv/keys_7_10"}


def _assert_expected(report, top_left, uniform, combined=frozenset()):
    for result in report.results:
        name = result.case.name
        if result.verdict == "unsupported":
            assert result.reason
        elif name in top_left:
            assert (result.verdict, result.convention) == ("policy", "causal=top_left"), result
        elif name in uniform:
            assert (result.verdict, result.convention) == ("policy", "empty_rows=uniform"), \
                result
        elif name in combined:
            assert (result.verdict, result.convention) == (
                "policy", "causal=top_left + empty_rows=uniform"), result
        else:
            assert result.verdict == "pass", (result.case.id, result.reason)
    assert report.counts()["pass"] >= 10


@pytest.fixture(scope="module")
def float32_report():
    return check("jax.dpa", dtypes=["float32"])


def test_jax_dpa_float32_matrix(float32_report):
    _assert_expected(float32_report, TOP_LEFT, UNIFORM, TOP_LEFT_AND_UNIFORM)
    verdicts = {r.case.name: r.verdict for r in float32_report.results}
    # query_seq_lengths also zeroes the output rows of padded queries: the spec's "zero".
    assert verdicts["padding/queries_right"] == "pass"
    assert verdicts["chunked/bottom_right_wide"] == "pass"  # all-dense: one alignment
    assert verdicts["window/fa_2_0/square"] == verdicts["window/fa_3_0/square"] == "pass"


def test_jax_dpa_gradients():
    report = check("jax.dpa", dtypes=["float32"], grads=True,
                   filter="causal/top_left,window/fa_2_0/square,bias/,gqa/4_to_2,padding/keys")
    assert report.results
    for result in report.results:
        assert result.verdict == "pass", (result.case.id, result.reason)
        assert {"dq", "dk", "dv"} <= {c.name for c in result.checks}


def test_jax_dpa_low_precision():
    report = check("jax.dpa", dtypes=["bfloat16"],
                   filter="causal/,window/,padding/,empty_rows/,alibi/")
    _assert_expected(report, TOP_LEFT, UNIFORM, TOP_LEFT_AND_UNIFORM)
    # float16 runs eagerly (jitted float16 dot_product_attention fails on CPU in jax 0.10.2)
    report = check("jax.dpa", dtypes=["float16"], filter="causal/top_left/square,bias/full")
    assert [r.verdict for r in report.results] == ["pass", "pass"]


def test_jax_dpa_two_conventions_at_once():
    """The tall bottom-right window: JAX = top-left window + empty rows as mean of V."""
    case = next(c for c in catalog(["float32"]) if c.name == "window/fa_2_0/bottom_right_tall")
    inputs = case_inputs(case)
    out = load("jax.dpa").run(case, inputs, grads=False).out
    values = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    kwargs = attention_kwargs(case, values)
    kwargs.update(mask=m.sliding_window(2, 0, align="top_left"), empty_rows="uniform")
    expected = attention(values["q"], values["k"], values["v"], **kwargs).out
    np.testing.assert_allclose(out, expected, atol=2e-6)


def test_jax_dpa_float64_is_unsupported_with_the_reason():
    """float64 is refused: JAX's softmax is float32 for every dtype. Shown directly."""
    case = next(c for c in catalog(["float64"]) if c.name == "causal/top_left/square")
    reason = load("jax.dpa").unsupported(case)
    assert "float32" in reason and "softmax" in reason
    inputs = case_inputs(case)
    values = {k: np.swapaxes(v, 1, 2) for k, v in inputs.items() if k in "qkv"}
    with jax.enable_x64(True):
        out = jax.nn.dot_product_attention(values["q"], values["k"], values["v"],
                                           is_causal=True)
        assert out.dtype == np.float64
    out = np.swapaxes(np.asarray(out), 1, 2)
    expected = attention(inputs["q"], inputs["k"], inputs["v"], mask=case.mask).out
    error = np.abs(out - expected).max()
    assert 1e-12 < error < 1e-5  # float32 softmax accuracy, not float64


def test_jax_dpa_unsupported_reasons():
    adapter = load("jax.dpa")
    reasons = {c.name: adapter.unsupported(c) for c in catalog(["float32"])}
    assert "softcap" in reasons["softcap/causal"]
    assert "sinks" in reasons["sinks/full"]
    assert "dropout" in reasons["dropout/full"]
    assert "Dv = Dqk" in reasons["full/dqk_ne_dv"]
    assert reasons["causal/kv_cache_offset"] is None  # a dense bool mask


def test_jax_dpa_translation():
    from refmask.adapters.jax.dpa import translate

    cases = {c.name: c for c in catalog(["float32"])}
    plan = translate(cases["window/fa_2_0/square"])
    assert plan["local_window_size"] == (2, 0) and plan["mask"] is None
    plan = translate(cases["padding/keys_right_causal_bottom_right"])
    assert not plan["is_causal"] and plan["mask"] is not None  # per-batch alignment: dense
    np.testing.assert_array_equal(plan["key_value_seq_lengths"], [6, 4])
    plan = translate(cases["chunked/bottom_right_wide"])
    assert not plan["is_causal"] and plan["mask"] is not None


def test_flax_mask():
    pytest.importorskip("flax")
    report = check("flax.mask", dtypes=["float32"])
    _assert_expected(report, set(),
                     UNIFORM | {"padding/queries_right"})
    verdicts = {r.case.name: r for r in report.results}
    assert verdicts["documents/packed_causal"].verdict == "pass"
    assert "square" in verdicts["causal/bottom_right/wide"].reason
    assert "no mask builder for sliding_window" in verdicts["window/fa_2_0/square"].reason


def test_registered_and_available():
    assert load("jax.dpa").unavailable() is None
    assert load("jax.dpa").profile.empty_rows == "uniform"
