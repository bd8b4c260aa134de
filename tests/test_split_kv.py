"""Split-KV with real backends: partial (out, lse) over key ranges, computed by a backend that
returns its LSE (FlexAttention ``return_aux`` / the refmask reference), merged with
``refmask.attention.merge`` and judged against refmask's attention over all keys."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from refmask import masks as m
from refmask.adapters import load
from refmask.adapters.user import from_function
from refmask.attention import attention, merge
from refmask.case import (
    DTYPES,
    Case,
    attention_kwargs,
    case_from_json,
    case_inputs,
)
from refmask.case import (
    partial_cases as case_partials,
)
from refmask.conformance.cases import split_kv_merge_cases
from refmask.conformance.runner import run_case

pytest_plugins = ["pytester"]

WHOLE = Case(name="split_kv/whole", family="split_kv",
             mask=m.causal(align="bottom_right") & m.sliding_window(5, 0, align="bottom_right"),
             batch=2, q_heads=4, kv_heads=2, q_len=3, k_len=10, dtype="float32")
BOUNDS = (0, 4, 7, 10)


def partial_cases():
    """The whole case restricted to each key range; same name, so the same inputs."""
    return [replace(WHOLE, mask=WHOLE.mask & m.key_padding(stop, side="right")
                    & ~m.key_padding(start, side="right"))
            for start, stop in zip(BOUNDS[:-1], BOUNDS[1:], strict=True)]


@pytest.mark.parametrize("backend", ["numpy", "torch.flex"])
def test_backend_partials_merge_to_the_whole(backend):
    adapter = load(backend)
    if adapter.unavailable():
        pytest.skip(adapter.unavailable())
    inputs = case_inputs(WHOLE)
    parts = []
    for case in partial_cases():
        output = adapter.run(case, inputs, grads=False)
        assert output.lse is not None, f"{backend} returns no LSE"
        parts += [np.asarray(output.out, np.float64), np.asarray(output.lse, np.float64)]
    out, lse = merge(*parts, base=adapter.profile.lse_base)
    upcast = {name: np.asarray(value, np.float64) for name, value in inputs.items()}
    whole = attention(upcast["q"], upcast["k"], upcast["v"],
                      **{**attention_kwargs(WHOLE, upcast), "mask": WHOLE.mask})
    # float32 inputs: each partial carries float32 rounding, the merge adds none of its own
    np.testing.assert_allclose(out, whole.out, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(lse, whole.lse, rtol=2e-5, atol=2e-6)


def test_merging_in_the_wrong_base_is_caught():
    inputs = {k: np.asarray(v, np.float64) for k, v in case_inputs(WHOLE).items()}
    parts = []
    for case in partial_cases():
        result = attention(inputs["q"], inputs["k"], inputs["v"], mask=case.mask)
        parts += [result.out, result.lse]
    whole = attention(inputs["q"], inputs["k"], inputs["v"], mask=WHOLE.mask)
    out_e, _ = merge(*parts, base="e")
    out_2, _ = merge(*parts, base="2")  # natural-log lse read as log2: the classic bug
    assert np.max(np.abs(out_e - whole.out)) < 1e-13
    assert np.max(np.abs(out_2 - whole.out)) > 1e-3


# --- split-KV cases judged by the runner: partials, then the merge ------------------------

MERGE_CASES = {case.name: case for case in split_kv_merge_cases()}


def _partial_attention(q, k, v, call):
    """An independent NumPy attention returning (out, lse): float64 inside, out rounded to the
    case dtype, lse float64; empty rows out 0, lse -inf."""
    group = q.shape[1] // k.shape[1]
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, np.repeat(v, group, axis=1)))
    s = call.scale * q @ np.repeat(k, group, axis=1).swapaxes(-1, -2)
    if call.softcap is not None:
        s = call.softcap * np.tanh(s / call.softcap)
    s = np.where(call.keep, s, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    empty = np.isneginf(top)
    e = np.exp(s - np.where(empty, 0.0, top))
    total = e.sum(axis=-1, keepdims=True)
    out = (e / np.where(empty, 1.0, total)) @ v
    lse = np.where(empty, -np.inf, top + np.log(np.where(empty, 1.0, total)))[..., 0]
    return out.astype(call.dtype), lse


def _kernel(merge=None, empty_nan=False):
    def fn(q, k, v, call):
        out, lse = _partial_attention(q, k, v, call)
        if empty_nan:
            out = np.where(np.isneginf(lse)[..., None], np.nan, out).astype(out.dtype)
        return out, lse

    fn.refmask_merge = merge
    if empty_nan:
        fn.refmask_conventions = {"empty_rows": "nan"}
    return fn


def _merge_exact(outs, lses, call):
    """The right merge, written out: weights exp(lse_p - max), empty partials skipped."""
    lses = np.stack(lses).astype(np.float64)
    outs = np.stack(outs).astype(np.float64)
    top = lses.max(axis=0)
    safe = np.where(np.isneginf(top), 0.0, top)
    w = np.exp(lses - safe)
    total = w.sum(axis=0)
    share = np.where(w > 0, w / np.where(total > 0, total, 1.0), 0.0)
    out = np.where(share[..., None] > 0, share[..., None] * outs, 0.0).sum(axis=0)
    return out, np.where(total > 0, safe + np.log(np.where(total > 0, total, 1.0)), -np.inf)


def _merge_base_2(outs, lses, call):
    """FlashInfer's merge_state (log2 LSEs) fed natural-log LSEs."""
    lses, outs = np.stack(lses), np.stack(outs)
    top = lses.max(axis=0)
    w = np.exp2(lses - top)
    return (w[..., None] * outs).sum(axis=0) / w.sum(axis=0)[..., None], top + np.log2(
        w.sum(axis=0))


def _merge_no_max(outs, lses, call):
    lses, outs = np.stack(lses), np.stack(outs)
    with np.errstate(all="ignore"):
        w = np.exp(lses)
        return (w[..., None] * outs).sum(axis=0) / w.sum(axis=0)[..., None], np.log(
            w.sum(axis=0))


def _merge_multiplying(outs, lses, call):
    """Right weights, but an empty partial's output is multiplied by its zero weight."""
    lses, outs = np.stack(lses), np.stack(outs)
    with np.errstate(all="ignore"):
        top = lses.max(axis=0)
        w = np.exp(lses - top)
        return (w[..., None] * outs).sum(axis=0) / w.sum(axis=0)[..., None], top + np.log(
            w.sum(axis=0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numpy", "torch.flex"])
def test_runner_judges_partials_and_their_merge(backend, dtype):
    adapter = load(backend)
    if adapter.unavailable():
        pytest.skip(adapter.unavailable())
    for case in MERGE_CASES.values():
        result = run_case(adapter, replace(case, dtype=dtype))
        assert result.verdict == "pass", (case.name, result.reason)
        names = {check.name for check in result.checks}
        assert {f"partial{p}.{t}" for p in range(len(case.key_splits))
                for t in ("out", "lse")} | {"out", "lse"} <= names


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_right_merge_kernel_passes(dtype):
    adapter = from_function(_kernel(_merge_exact), name="merge_exact")
    for case in MERGE_CASES.values():
        result = run_case(adapter, replace(case, dtype=dtype))
        assert result.verdict == "pass", (case.name, result.reason)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "kernel", "bug"), [
    ("merge_window_3_splits", _kernel(_merge_base_2), "merge=lse_base_2"),
    ("merge_decode_large_magnitude", _kernel(_merge_no_max), "merge=no_max_subtraction"),
    ("merge_window_3_splits", _kernel(_merge_multiplying, empty_nan=True),
     "merge=empty_partial_nan"),
])
def test_a_wrong_merge_kernel_is_named(name, kernel, bug, dtype):
    case = replace(MERGE_CASES[f"split_kv/{name}"], dtype=dtype)
    result = run_case(from_function(kernel, name="bad_merge"), case)
    assert result.verdict == "fail"
    assert result.reason.startswith("partials ok"), result.reason
    assert "merge wrong" in result.reason
    assert result.convention == bug, result.reason


def test_a_wrong_partial_is_named_before_the_merge():
    def drops_last_key(q, k, v, call):
        """Off-by-one: the last key is never attended (it only matters in the last range)."""
        keep = np.array(call.keep)
        keep[..., -1] = False
        return _partial_attention(q, k, v, replace(call, keep=keep))

    case = MERGE_CASES["split_kv/merge_window_3_splits"]
    result = run_case(from_function(drops_last_key, name="drops_last_key"), case)
    assert result.verdict == "fail"
    assert result.reason.startswith("partial 2 (keys [8, 10)) wrong"), result.reason
    assert {c.name for c in result.checks} >= {"partial0.out", "partial1.lse", "partial2.out"}


def test_a_crashing_merge_kernel_fails_naming_the_merge():
    def crashes(outs, lses, call):
        raise RuntimeError("no merge here")

    result = run_case(from_function(_kernel(crashes), name="crash"),
                      MERGE_CASES["split_kv/merge_window_3_splits"])
    assert result.verdict == "fail"
    assert result.reason == ("partials ok, crash's merge raised RuntimeError: no merge here")


def test_a_backend_without_lse_cannot_be_merged():
    def out_only(q, k, v, call):
        return _partial_attention(q, k, v, call)[0]

    result = run_case(from_function(out_only, name="out_only"),
                      MERGE_CASES["split_kv/merge_window_3_splits"])
    assert result.verdict == "unsupported"
    assert "returns no LSE" in result.reason


@pytest.mark.parametrize(("splits", "rule"), [
    (((0, 4), (5, 10)), "contiguous"), (((0, 10),), "at least two"),
    (((0, 4), (4, 9)), "covering"), (((0, 0), (0, 10)), "non-empty"),
])
def test_key_splits_are_checked(splits, rule):
    with pytest.raises(ValueError, match=f"key_splits.*{rule}"):
        replace(WHOLE, key_splits=splits)


def test_key_splits_refuse_sinks_and_other_empty_row_policies():
    with pytest.raises(ValueError, match="sink"):
        replace(WHOLE, sinks=True, key_splits=((0, 5), (5, 10)))
    with pytest.raises(ValueError, match="empty_rows='zero'"):
        replace(WHOLE, empty_rows="nan", key_splits=((0, 5), (5, 10)))


def test_partials_are_the_case_restricted_to_each_key_range():
    case = MERGE_CASES["split_kv/merge_window_3_splits"]
    keeps = [part.keep() for part in case_partials(case)]
    whole = case.keep()
    for (start, stop), keep in zip(case.key_splits, keeps, strict=True):
        assert not keep[..., :start].any() and not keep[..., stop:].any()
        assert np.array_equal(keep[..., start:stop], whole[..., start:stop])
    assert all(part.name == case.name and not part.key_splits
               for part in case_partials(case))
    # the hand-read rows of the notes: query 0 (position 7) keeps keys 2..7, query 2 keys 4..9
    assert not keeps[2][:, :, 0].any() and not keeps[0][:, :, 2].any()


def test_split_case_json_round_trips():
    case = MERGE_CASES["split_kv/merge_decode_large_magnitude"]
    data = json.loads(json.dumps(case.to_json()))
    assert data["key_splits"] == [[0, 4], [4, 8], [8, 12]]
    assert case_from_json(data) == case
    assert "key_splits" not in WHOLE.to_json()


def test_wrong_merges_hand_worked():
    """Two partials of one row, Dv = 1: out 1 with lse 0, out 0 with lse ln 3 (weights 1/4 and
    3/4 under the right merge); then a row whose second partial is empty."""
    from refmask.conformance.alternatives import wrong_merge

    def parts(lse_b):
        ones = np.ones((1, 1, 1, 1))
        return [(ones, np.zeros((1, 1, 1)), ones), (0 * ones, np.full((1, 1, 1), lse_b), ones)]

    out, lse, _ = wrong_merge(parts(np.log(3.0)), "base_2", "float64")
    # 2^(0 - ln 3) and 2^0, normalised; lse = ln 3 + log2(2^-ln3 + 1)
    a = 2.0 ** -np.log(3.0)
    assert np.isclose(out.item(), a / (a + 1.0), rtol=1e-15, atol=0)
    assert np.isclose(lse.item(), np.log(3.0) + np.log2(a + 1.0), rtol=1e-15, atol=0)
    out, lse, _ = wrong_merge(parts(np.log(3.0)), "no_max_subtraction", "float64")
    assert np.isclose(out.item(), 0.25, rtol=1e-15) and np.isclose(lse.item(), np.log(4.0))
    out, lse, _ = wrong_merge(parts(800.0), "no_max_subtraction", "float64")
    assert np.isnan(out.item()) and lse.item() == np.inf  # exp(800) overflows float64
    out, lse, _ = wrong_merge(parts(-np.inf), "empty_partial_nan", "float64")
    assert np.isnan(out.item()) and lse.item() == 0.0  # the empty partial poisons the row
    out, lse, _ = wrong_merge(parts(np.log(3.0)), "empty_partial_nan", "float64")
    assert np.isclose(out.item(), 0.25, rtol=1e-15)  # no empty partial: the right merge


MERGE_MODULE = '''
import numpy as np


def attention(q, k, v, call):
    """float64 attention returning (out, lse); empty rows out 0, lse -inf."""
    group = q.shape[1] // k.shape[1]
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = np.where(call.keep, call.scale * q @ k.swapaxes(-1, -2), -np.inf)
    top = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isneginf(top), 0.0, top))
    total = e.sum(axis=-1, keepdims=True)
    out = (e / np.where(total > 0, total, 1.0)) @ v
    lse = np.where(total > 0, top + np.log(np.where(total > 0, total, 1.0)), -np.inf)
    return out.astype(call.dtype), lse[..., 0]


def merge_base_2(outs, lses, call):
    lses, outs = np.stack(lses), np.stack(outs)
    w = np.exp2(lses - lses.max(axis=0))
    return (w[..., None] * outs).sum(axis=0) / w.sum(axis=0)[..., None], lses.max(
        axis=0) + np.log2(w.sum(axis=0))
'''


def test_merge_kernel_by_option_cli_and_api(pytester, monkeypatch, capsys):
    """--merge module:function (CLI), Judging(merge=...) (API) and --refmask-merge (pytest)
    give the merge kernel to a function that has no refmask_merge."""
    from refmask.conformance.cli import main
    from refmask.conformance.runner import check

    pytester.makepyfile(merge_mod=MERGE_MODULE)
    monkeypatch.syspath_prepend(str(pytester.path))
    args = ["--dtype", "float32", "--filter", "split_kv/merge_window"]
    assert main(["check", "--impl", "merge_mod:attention", *args]) == 0
    assert main(["check", "--impl", "merge_mod:attention", "--merge", "merge_mod:merge_base_2",
                 *args]) == 1
    assert "merge=lse_base_2" in capsys.readouterr().out
    report = check("merge_mod:attention", merge="merge_mod:merge_base_2", dtypes="float32",
                   filter="split_kv/merge_window")
    assert [r.convention for r in report.results] == ["merge=lse_base_2"]
    assert report.judging["merge"] == "merge_mod:merge_base_2"
    result = pytester.runpytest("--refmask-impl",
                                "merge_mod:attention", "--refmask-merge",
                                "merge_mod:merge_base_2", "--refmask-dtype", "float32",
                                "--refmask-filter", "split_kv/merge_window")
    result.assert_outcomes(failed=1)
    assert main(["check", "numpy", "--merge", "merge_mod:merge_base_2"]) == 2
    assert "--merge apply to --impl functions" in capsys.readouterr().err


def test_a_partial_that_crashed_is_grouped_by_its_exception():
    """A split-KV case whose partial raised is summarised as the crash, not as an error in
    no tensor (the reason carries the partial's prefix)."""
    from refmask.conformance.cases import catalog
    from refmask.conformance.results import CaseResult, failure_kind

    case = catalog(["float32"])[0]
    result = CaseResult(case=case, backend="b", verdict="fail",
                        reason="partial 0 (keys [0, 4)) wrong: the backend raised "
                               "InvalidArgumentError: Expected dimension 4 at axis 2")
    assert failure_kind(result) == "the backend raised InvalidArgumentError"
    no_checks = CaseResult(case=case, backend="b", verdict="fail",
                           reason="partials ok, b's merge raised ValueError: shapes")
    assert failure_kind(no_checks) == "partials ok, b's merge raised ValueError"
