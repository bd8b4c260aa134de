"""hf.masks: the masks of transformers masking_utils judged through refmask's attention, and
the window convention shown to be caught when it is mapped wrongly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from refmask import masks as m  # noqa: E402
from refmask.adapters import Adapter, load  # noqa: E402
from refmask.adapters.hf.masks import attend, hf_mask, plan  # noqa: E402
from refmask.conformance.cases import Case, catalog  # noqa: E402
from refmask.conformance.runner import check, run_case  # noqa: E402


def test_matrix_has_no_divergence():
    report = check("hf.masks", dtypes=["float64", "float32"])
    for result in report.results:
        assert result.verdict in ("pass", "unsupported"), (result.case.id, result.reason)
    verdicts = {r.case.name: r for r in report.results}
    for name in ("causal/bottom_right/wide", "causal/kv_cache_offset", "window/fa_2_0/square",
                 "window/fa_3_0/square", "window/symmetric_2_2", "chunked/llama4_3",
                 "chunked/bottom_right_wide", "block_causal/3_bottom_right_wide",
                 "prefix_lm/per_batch", "documents/packed_causal", "documents/position_ids",
                 "padding/keys_left", "padding/all_keys_padded"):
        assert verdicts[name].verdict == "pass", name
    assert "query rows" in verdicts["padding/queries_right"].reason
    assert "per-batch" in verdicts["causal/kv_cache_per_batch"].reason
    assert ">= 0" in verdicts["causal/bottom_right/tall"].reason


def test_plans():
    cases = {c.name: c for c in catalog(["float64"])}
    assert plan(cases["window/fa_2_0/square"])["config"] == {"sliding_window": 3}
    assert plan(cases["window/fa_3_0/square"])["config"] == {"sliding_window": 4}
    assert plan(cases["causal/bottom_right/wide"])["cached"] == 5
    assert plan(cases["documents/packed_causal"])["position_ids"].tolist() == [
        [0, 1, 2, 0, 0, 1, 2, 3]]


def test_hf_window_is_w_keys_including_self():
    case = Case(name="w", family="sliding_window", mask=m.sliding_window(3, 0, align="top_left"),
                batch=1, q_heads=1, kv_heads=1, q_len=7, k_len=7)
    keep = hf_mask(case)[0, 0]
    np.testing.assert_array_equal(keep, case.keep()[0, 0])
    assert keep.sum(-1).tolist() == [1, 2, 3, 4, 4, 4, 4]


def test_a_wrong_window_mapping_is_named():
    """Map refmask's left bound straight to HF's sliding_window (W = left, the attention-gym
    reading) and the runner names the convention: window=one_key_narrower, a fail while the
    adapter does not declare it, a policy once it does."""
    honest = load("hf.masks")

    def run(case, inputs, *, grads):
        wrong = plan(case)
        wrong["config"] = {"sliding_window": case.mask.left}  # should be left + 1
        return attend(case, inputs, hf_mask(case, wrong))

    wrong = Adapter(name="hf.masks.wrong_window", profile=honest.profile, run=run,
                    unsupported=honest.unsupported)
    case = next(c for c in catalog(["float64"]) if c.name == "window/fa_3_0/square")
    result = run_case(wrong, case)
    assert (result.verdict, result.convention, result.convention_kind) == (
        "fail", "window=one_key_narrower", "undeclared")
    declared = replace(wrong, profile=replace(honest.profile,
                                              conventions=frozenset({"window=one_key_narrower"})))
    result = run_case(declared, case)
    assert (result.verdict, result.convention) == ("policy", "window=one_key_narrower")


def test_chunked_under_left_padding_counts_from_the_first_real_token():
    """HF's chunked_overlay shifts chunk boundaries by the left padding (peer-semantics); the
    spec's chunked mask counts from position 0, so HF's mask differs: a fail."""
    base = Case(name="hf/chunked_left_padding", family="chunked",
                mask=m.chunked(3, align="top_left") & m.causal(align="top_left")
                & m.key_padding([8, 6], side="left"), q_len=8, k_len=8)
    result = run_case(load("hf.masks"), base)
    assert result.verdict == "fail"
    right = replace(base, name="hf/chunked_right_padding",
                    mask=m.chunked(3, align="top_left") & m.causal(align="top_left")
                    & m.key_padding([8, 6], side="right"))
    assert run_case(load("hf.masks"), right).verdict == "pass"
