"""xformers.attn_bias: the conformance suite through xformers' own bias classes (materialised
by xformers 0.0.35 on the CPU), and the class chosen for each kind of case."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("xformers.ops.fmha.attn_bias")

from refmask.adapters import load  # noqa: E402
from refmask.adapters.xformers.attn_bias import translate  # noqa: E402
from refmask.conformance.cases import catalog  # noqa: E402
from refmask.conformance.runner import check  # noqa: E402

NAME = "xformers.attn_bias"


def test_every_expressible_case_passes():
    report = check(NAME, dtypes=["float64", "float32"])
    for result in report.results:
        if result.verdict == "unsupported":
            assert result.reason.startswith(NAME), result.reason
        else:
            assert result.verdict == "pass", (result.case.id, result.reason)
    verdicts = {r.case.name: r.verdict for r in report.results}
    for name in ("varlen/xformers_block_causal_top_left",
                 "varlen/xformers_padded_keys_causal_offset", "varlen/seqused_k_gqa",
                 "paged/packed_prefill_gappy", "causal/bottom_right/wide",
                 "window/fa_2_0/bottom_right_wide", "window/fa_2_0/square"):
        assert verdicts[name] == "pass", name


@pytest.mark.parametrize("name,cls", [
    ("causal/top_left/wide", "LowerTriangularMask"),
    ("causal/bottom_right/tall", "LowerTriangularFromBottomRightMask"),
    ("window/fa_2_0/bottom_right_wide", "LowerTriangularFromBottomRightLocalAttentionMask"),
    ("window/symmetric_2_2", "LocalAttentionFromBottomRightMask"),
    ("varlen/xformers_block_causal_top_left", "BlockDiagonalCausalMask"),
    ("varlen/xformers_padded_keys_causal_offset", "BlockDiagonalCausalWithOffsetPaddedKeysMask"),
    ("varlen/seqused_k_gqa", "BlockDiagonalCausalWithOffsetPaddedKeysMask"),  # spans of 5
    ("paged/packed_prefill_gappy", "PagedBlockDiagonalCausalWithOffsetGappyKeysMask"),
])
def test_translation_uses_the_matching_class(name, cls):
    case = {c.name: c for c in catalog(["float64"])}[name]
    assert type(translate(case)).__name__ == cls


def test_unexpressible_cases_say_why():
    cases = {c.name: c for c in catalog(["float64"])}
    adapter = load(NAME)
    assert "sinks" in adapter.unsupported(cases["sinks/full"])
    report = check(NAME, dtypes=["float64"], filter="paged/decode_partial_pages,chunked/llama4_3")
    reasons = {r.case.name: r.reason for r in report.results}
    assert "shared physical cache" in reasons["paged/decode_partial_pages"]
    assert "no xformers attn_bias class" in reasons["chunked/llama4_3"]
