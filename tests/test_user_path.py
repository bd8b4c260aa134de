"""The kernel author's path: framework-native user functions, forward and backward, one
verdict everywhere (CLI, pytest plugin, fixture, fuzz, Python API), expectations for CI.

The kernels under test are in ``_user_kernels.py``: written from the textbook formulas,
independently of refmask.attention.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from refmask import masks as m
from refmask.adapters import Unsupported, native
from refmask.adapters.user import Call
from refmask.conformance import expect
from refmask.conformance.cases import Case, catalog
from refmask.conformance.cli import main
from refmask.conformance.judging import Judging
from refmask.conformance.runner import check

pytest_plugins = ["pytester"]

HERE = Path(__file__).resolve().parent
KERNELS = (HERE / "_user_kernels.py").read_text()


@pytest.fixture
def kernels(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    import _user_kernels

    return _user_kernels


def _case(name: str, dtype: str = "float64") -> Case:
    return next(c for c in catalog([dtype]) if c.name == name)


def _call(case: Case, framework: str = "numpy", device: str = "cpu") -> Call:
    return Call(keep=case.keep(), scale=1.0, softcap=None, bias=None, sinks=None,
                dropout_keep=None, dropout_rate=None, mask=case.mask, case=case,
                framework=framework, device=device)


# --- 1. arrays in the function's framework --------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_torch_arrays_are_exact_and_bfloat16_is_native(dtype):
    torch = pytest.importorskip("torch")
    import ml_dtypes

    values = np.array([1.0, -2.5, 3.140625, 65504.0 if dtype == "float16" else 1e-3])
    x = values.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    t = native.to_native(x, "torch")
    assert t.dtype == getattr(torch, dtype) and t.device.type == "cpu" and t.is_contiguous()
    np.testing.assert_array_equal(native.to_float64(t), x.astype(np.float64))


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_jax_arrays_are_exact_and_float64_needs_the_context(dtype):
    jnp = pytest.importorskip("jax.numpy")
    import ml_dtypes

    x = np.array([1.0, -2.5, 0.1]).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    with native.framework_context("jax", dtype):
        a = native.to_native(x, "jax")
        assert a.dtype == getattr(jnp, dtype)
        np.testing.assert_array_equal(native.to_float64(a), x.astype(np.float64))
    if dtype == "float64":
        import jax

        with jax.enable_x64(False), pytest.raises(ValueError, match="64-bit mode"):
            native.to_native(x, "jax")


@pytest.mark.parametrize("framework, device, message", [
    ("tensorflow", "cpu", "framework must be one of"),
    ("torch", "tpu", "device must be one of"),
    ("numpy", "cuda", "'numpy' runs on device 'cpu' only"),
    ("cupy", "cpu", "'cupy' runs on device 'cuda' only"),
])
def test_bad_framework_or_device_is_named(framework, device, message):
    with pytest.raises(ValueError, match=message):
        native.check_target(framework, device)
    with pytest.raises(ValueError, match=message):
        Judging(framework=framework, device=device)


def test_a_torch_function_receives_torch_tensors_in_the_case_dtype(kernels):
    torch = pytest.importorskip("torch")
    seen = {}

    def spy(q, k, v, call):
        seen.update(q=q, keep=call.keep, dtype=call.dtype)
        return kernels.torch_bf16(q, k, v, call)

    spy.refmask_framework = "torch"
    report = check(spy, dtypes="bfloat16", filter="causal/top_left/square")
    assert [r.verdict for r in report.results] == ["pass"]
    assert seen["q"].dtype == torch.bfloat16 and seen["dtype"] == torch.bfloat16
    assert seen["keep"].dtype == torch.bool and seen["keep"].shape == (2, 2, 6, 6)


def test_a_crash_in_the_user_function_shows_its_own_frame():
    def broken(q, k, v, call):
        return q @ k.T @ v  # (B, H, T, D) @ (D, T, H, B): a shape error in the user's code

    report = check(broken, dtypes="float64", filter="full/square")
    (result,) = report.results
    assert result.verdict == "fail" and "raised ValueError" in result.reason
    assert "in broken" in result.traceback and "return q @ k.T @ v" in result.traceback


# --- 1. the mask in the peers' forms ---------------------------------------------------------

def test_keep_drop_and_additive_forms_agree_with_the_mask():
    case = _case("causal/bottom_right/tall")  # Tq > Tk: the first rows are empty
    call = _call(case)
    keep = native.keep_mask(call)
    tq, tk = case.q_len, case.k_len
    i, j = np.arange(tq)[:, None], np.arange(tk)[None, :]
    np.testing.assert_array_equal(keep[0, 0], j <= i + tk - tq)  # hand-written rule
    np.testing.assert_array_equal(native.drop_mask(call), ~keep)
    additive = native.additive_mask(call)
    assert additive.dtype == np.float64
    np.testing.assert_array_equal(additive, np.where(keep, 0.0, -np.inf))
    low = native.additive_mask(_call(_case("causal/bottom_right/tall", "float16")),
                               fill="finfo_min")
    assert low.dtype == np.float16 and low.min() == np.finfo(np.float16).min


def test_torch_forms_are_torch_tensors():
    torch = pytest.importorskip("torch")
    call = _call(_case("causal/top_left/square"), "torch")
    assert native.keep_mask(call).dtype == torch.bool
    assert native.additive_mask(call).dtype == torch.float64


@pytest.mark.parametrize("mask, q_len, k_len, expected", [
    (None, 4, 6, native.CausalSwitch(False, None)),
    (m.full(), 4, 6, native.CausalSwitch(False, None)),
    (m.causal(align="top_left"), 4, 6, native.CausalSwitch(True, "top_left")),
    (m.causal(align="bottom_right"), 4, 6, native.CausalSwitch(True, "bottom_right")),
    (m.causal(align=2), 4, 6, native.CausalSwitch(True, "bottom_right")),  # offset = Tk - Tq
    (m.causal(align="bottom_right"), 5, 5, native.CausalSwitch(True, "bottom_right")),
])
def test_causal_switch_names_its_alignment(mask, q_len, k_len, expected):
    case = Case("t", "t", mask, q_len=q_len, k_len=k_len)
    assert native.causal_switch(_call(case)) == expected


@pytest.mark.parametrize("mask", [m.causal(align=1), m.sliding_window(2, 0, align="top_left"),
                                  m.causal(align="top_left") & m.key_padding(3, side="right")])
def test_no_switch_for_other_masks_is_unsupported(mask):
    with pytest.raises(Unsupported, match="no is_causal switch"):
        native.causal_switch(_call(Case("t", "t", mask, q_len=4, k_len=6)))


def test_flash_window_and_cu_seqlens():
    window = Case("t", "t", m.sliding_window(2, 0, align="bottom_right"), q_len=4, k_len=6)
    assert native.flash_window(_call(window)) == ((2, 0), False)
    causal = Case("t", "t", m.causal(align="bottom_right"), q_len=4, k_len=6)
    assert native.flash_window(_call(causal)) == ((-1, 0), True)
    top_left = Case("t", "t", m.sliding_window(2, 0, align="top_left"), q_len=4, k_len=6)
    with pytest.raises(Unsupported, match="flash_window"):
        native.flash_window(_call(top_left))
    docs = Case("t", "t", m.documents([[0, 0, 1, 1, 1, 2]]), batch=1, q_len=6, k_len=6)
    cu_q, cu_k = native.cu_seqlens(_call(docs))
    assert cu_q.tolist() == cu_k.tolist() == [0, 2, 5, 6] and cu_q.dtype == np.int32
    with pytest.raises(Unsupported, match="not a documents mask"):
        native.cu_seqlens(_call(causal))


def test_flex_mask_mod_and_block_mask_reproduce_the_keep_mask():
    pytest.importorskip("torch")
    from torch.nn.attention.flex_attention import create_mask

    case = _case("padding/queries_left_keys_left_causal")
    call = _call(case, "torch")
    dense = create_mask(native.mask_mod(call), case.batch, case.q_heads, case.q_len,
                        case.k_len, device="cpu")
    np.testing.assert_array_equal(dense.numpy(), case.keep())
    block = native.block_mask(call, block_size=2)
    assert block.shape == (case.batch, case.q_heads, case.q_len, case.k_len)
    with pytest.raises(Unsupported, match="FlexAttention is torch"):
        native.mask_mod(_call(case))


# --- 2. backward -----------------------------------------------------------------------------

def test_hand_written_backward_bugs_are_caught_in_the_right_tensor(kernels):
    pytest.importorskip("torch")
    report = check(kernels.torch_bf16_bad_dq, grads=True, dtypes="bfloat16",
                   filter="causal/top_left/square")
    (result,) = report.results
    assert result.verdict == "fail" and [c.name for c in result.checks if not c.ok] == ["dq"]
    report = check(kernels.numpy_bad_dv, grads=True, dtypes="float64", filter="gqa/4_to_2")
    assert report.results and all(r.verdict == "fail" for r in report.results)
    assert {c.name for r in report.results for c in r.checks if not c.ok} == {"dv"}


def test_a_backward_that_forgets_a_gradient_fails_naming_it(kernels):
    def forward(q, k, v, call):
        return kernels.numpy_attention(q, k, v, call)

    forward.refmask_backward = lambda q, k, v, d_out, call, saved: {"dq": q, "dk": k}
    report = check(forward, grads=True, dtypes="float64", filter="full/square")
    assert [(r.verdict, r.reason) for r in report.results] == [
        ("fail", "--grads: the backend returned no dv")]


def test_grads_without_any_backward_is_an_error_not_a_silent_forward_check(kernels):
    def no_backward(q, k, v, call):
        return kernels.numpy_attention(q, k, v, call)

    with pytest.raises(ValueError, match="--grads: .* has no autograd"):
        check(no_backward, grads=True, filter="full/square")


def test_grads_on_a_forward_only_backend_is_said_per_case():
    report = check("onnxruntime.attention23", grads=True, dtypes="float32",
                   filter="full/square")
    assert [(r.verdict, r.reason.split(" (")[0]) for r in report.results] == [
        ("unsupported", "--grads: onnxruntime.attention23 has no backward pass")]


# --- the "done when": one command and one pytest line, identical verdicts ------------------

WIDE = "causal,sliding_window,padding,gqa/4_to_2_causal,empty_rows"
# JAX compiles every new shape (about 1 s each on a small CI machine): fewer cases.
NARROW = "causal/top_left,causal/bottom_right,padding/keys,gqa/4_to_2_causal,empty_rows"
DONE_WHEN = [
    ("_user_kernels:torch_bf16", "bfloat16", "torch", WIDE, 20),
    ("_user_kernels:jax_attention", "float32", "jax", NARROW, 8),
    ("_user_kernels:numpy_attention", "float64", None, WIDE, 20),
]


@pytest.mark.parametrize("target, dtype, framework, subset, passes", DONE_WHEN,
                         ids=[d[2] or "numpy" for d in DONE_WHEN])
def test_one_command_and_one_pytest_line_give_identical_verdicts(target, dtype, framework,
                                                                 subset, passes, pytester,
                                                                 tmp_path, monkeypatch):
    if framework:
        pytest.importorskip(framework)
    monkeypatch.syspath_prepend(str(HERE))
    report_path = tmp_path / "r.json"
    code = main(["check", "--impl", target, "--grads", "--dtype", dtype, "--filter", subset,
                 "--report", str(report_path)])
    (report,) = json.loads(report_path.read_text())["reports"]
    cli = {r["id"]: r["verdict"] for r in report["results"]}
    assert code == 0 and set(cli.values()) <= {"pass", "unsupported"}
    assert list(cli.values()).count("pass") >= passes
    assert report["judging"]["grads"] is True

    # a copy under another name: this process already imported _user_kernels from tests/
    pytester.makepyfile(kernels_copy=KERNELS)
    pytester.syspathinsert()
    copy = target.replace("_user_kernels", "kernels_copy")
    recorded = pytester.inline_run("--refmask-impl", copy, "--refmask-grads",
                                   "--refmask-dtype", dtype, "--refmask-filter", subset)
    outcomes = {}
    for report in recorded.getreports("pytest_runtest_logreport"):
        if report.when == "call":
            assert report.nodeid.startswith(f"kernels_copy.py::{target.split(':')[1]}[")
            case_id = report.nodeid.split("[", 1)[1][:-1]
            outcomes[case_id] = {"passed": "pass", "skipped": "unsupported",
                                 "failed": "fail"}[report.outcome]
    assert outcomes == cli

    fixture = pytester.makepyfile(test_fixture=textwrap.dedent(f'''
        def test_fixture(refmask_check):
            report = refmask_check({copy!r}, grads=True, dtypes={dtype!r}, filter={subset!r})
            report.assert_ok()
            assert {{r.case.id: r.verdict for r in report.results}} == {cli!r}
    '''))
    pytester.runpytest(str(fixture)).assert_outcomes(passed=1)


# --- 3. one judging configuration ------------------------------------------------------------

def test_the_nan_rows_kernel_gets_the_same_verdict_everywhere(pytester, monkeypatch, capsys):
    """The issue's measurement: a kernel giving NaN on empty rows passed the CLI (exit 0) and
    the fixture while the plugin failed it. Now all three fail it, naming the convention."""
    source = KERNELS + textwrap.dedent('''
        def nan_rows(q, k, v, call):
            out = numpy_attention(q, k, v, call)
            return np.where(call.keep.any(-1)[..., None], out, np.nan)

        nan_rows.refmask_unsupported = UNSUPPORTED
    ''')
    pytester.makepyfile(nan_kernel=source)
    pytester.syspathinsert()
    monkeypatch.syspath_prepend(str(pytester.path))
    args = ["--dtype", "float64", "--filter", "empty_rows"]
    assert main(["check", "--impl", "nan_kernel:nan_rows", *args]) == 1
    assert "empty_rows=nan" in capsys.readouterr().out
    assert check("nan_kernel:nan_rows", dtypes="float64", filter="empty_rows").failed
    result = pytester.runpytest("--refmask-impl", "nan_kernel:nan_rows", "--refmask-dtype",
                                "float64", "--refmask-filter", "empty_rows")
    # the sinks case is declared unsupported; a user function returns no score stages
    result.assert_outcomes(failed=2, skipped=2)
    assert main(["check", "--impl", "nan_kernel:nan_rows", *args, "--allow-policy",
                 "empty_rows=nan"]) == 0


def test_fuzz_counts_what_it_judged(kernels, capsys):
    monkeypatch_free = "_user_kernels:numpy_attention"
    assert main(["fuzz", monkeypatch_free, "--examples", "15", "--seed", "1", "--dtype",
                 "float64"]) == 0
    out = capsys.readouterr().out
    assert "15 random cases tried" in out and "judged" in out and "unsupported" in out


# --- 4. expectations --------------------------------------------------------------------------

def test_expectations_record_and_diff_verdicts(kernels, tmp_path, capsys):
    record = tmp_path / "expect.json"
    base = ["check", "numpy", "--impl", "_user_kernels:numpy_attention", "--dtype", "float64",
            "--filter", "causal/top_left"]
    assert main([*base, "--write-expect", str(record)]) == 0
    data = json.loads(record.read_text())
    assert data["schema"] == expect.SCHEMA
    assert set(data["backends"]) == {"numpy", "_user_kernels:numpy_attention"}
    assert data["backends"]["numpy"]["versions"]["numpy"] == np.__version__
    assert main([*base, "--expect", str(record)]) == 0
    assert "every verdict as recorded" in capsys.readouterr().out

    # an edited record: one pass recorded as a fail, one convention renamed
    entry = data["backends"]["numpy"]
    first, second = sorted(entry["verdicts"])[:2]
    entry["verdicts"][first] = {"verdict": "fail", "convention": None}
    entry["verdicts"][second] = {"verdict": "pass", "convention": "causal=top_left"}
    entry["versions"]["numpy"] = "0.0.1"
    record.write_text(json.dumps(data))
    assert main([*base, "--expect", str(record)]) == 1
    out = capsys.readouterr().out
    assert f"fixed fail: numpy {first}: expected fail, got pass" in out
    assert f"changed convention: numpy {second}" in out
    assert f"numpy 0.0.1 -> {np.__version__}" in out
    # never over an existing record unless asked
    assert main([*base, "--write-expect", str(record)]) == 2


def test_expectations_name_a_new_fail():
    good = check("numpy", dtypes="float64", filter="full/square")
    document = expect.record([good])
    bad = check(lambda q, k, v, call: np.zeros(q.shape[:3] + v.shape[3:]), dtypes="float64",
                filter="full/square")
    bad.backend = "numpy"
    changes, warnings = expect.compare([bad], document)
    assert [c.kind for c in changes] == ["new fail"] and not warnings


def test_a_bad_expectations_file_is_named(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"schema": "other"}')
    with pytest.raises(ValueError, match="schema must be"):
        expect.load(path)
    with pytest.raises(ValueError, match="no such file"):
        expect.load(tmp_path / "missing.json")


# --- the README's kernels --------------------------------------------------------------------

README_SUBSET = "causal/bottom_right,causal/top_left,padding/keys_right,empty_rows,gqa/4_to_2"


def test_readme_kernels_conform_forward_and_backward(tmp_path, monkeypatch, capsys):
    """The README's torch and JAX wrappers, run by the README's command: no fail; the
    conventions they declare are policies, forward and backward (gradients under the
    declared convention are predicted by refmask's own backward under it)."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    readme = (HERE.parent / "README.md").read_text()
    code = readme.split("# my_kernels.py\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme_kernels.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    command = readme.split("refmask check --impl my_kernels:sdpa_causal", 1)[1].split("\n")[0]
    assert "--grads" in command and "bfloat16,float32" in command
    report = tmp_path / "r.json"
    assert main(["check", "--impl", "readme_kernels:sdpa_causal", "--impl",
                 "readme_kernels:jax_dpa", "--dtype", "bfloat16,float32", "--grads",
                 "--filter", README_SUBSET, "--report", str(report)]) == 0
    sdpa, dpa = json.loads(report.read_text())["reports"]
    policies = {(r["id"], r["convention"]) for r in sdpa["results"] if r["verdict"] == "policy"}
    assert ("causal/bottom_right/wide@bfloat16", "causal=top_left") in policies
    assert {r["convention"] for r in dpa["results"] if r["verdict"] == "policy"} == {
        "empty_rows=uniform"}
    assert any(r["verdict"] == "pass" for r in dpa["results"])


def test_an_undeclared_convention_with_gradients_fails_and_a_wrong_gradient_is_never_excused(
        kernels):
    """Forward top-left causal, gradients consistent with it: policy when declared. The same
    forward with a wrong dq: fail, even though the forward matches the convention."""
    pytest.importorskip("torch")
    import torch

    def top_left(q, k, v, call):
        tq, tk = q.shape[2], k.shape[2]
        keep = torch.ones(tq, tk, dtype=torch.bool).tril()
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                                                scale=call.scale)

    top_left.refmask_framework = "torch"
    options = {"dtypes": "float64", "filter": "causal/bottom_right/wide", "grads": True}
    (result,) = check(top_left, **options).results
    assert (result.verdict, result.convention) == ("fail", "causal=top_left")
    top_left.refmask_conventions = {"causal": "top_left"}
    (result,) = check(top_left, **options).results
    assert (result.verdict, result.convention) == ("policy", "causal=top_left")

    def wrong_dq(q, k, v, call):
        return top_left(q, k, v, call)

    def backward(q, k, v, d_out, call, saved):
        leaves = [x.detach().requires_grad_(True) for x in (q, k, v)]
        with torch.enable_grad():
            out = top_left(*leaves, call)
            dq, dk, dv = torch.autograd.grad(out, leaves, d_out)
        return dq * 1.01, dk, dv

    wrong_dq.refmask_framework = "torch"
    wrong_dq.refmask_conventions = {"causal": "top_left"}
    wrong_dq.refmask_backward = backward
    (result,) = check(wrong_dq, **options).results
    assert result.verdict == "fail" and result.convention is None
    assert "dq" in [c.name for c in result.checks if not c.ok]


# --- 5. output a person reads ----------------------------------------------------------------

def test_one_json_report_for_several_backends_follows_the_published_schema(tmp_path, kernels):
    jsonschema = pytest.importorskip("jsonschema")
    from refmask.conformance.report import SCHEMA_VERSION, json_schema_path

    path = tmp_path / "all.json"
    assert main(["check", "numpy", "refmask.fast", "--impl",
                 "_user_kernels:numpy_attention", "--dtype",
                 "float64,float16", "--filter", "causal/top_left/square,padding/queries_right",
                 "--report", str(path)]) == 0
    document = json.loads(path.read_text())
    schema = json.loads(json_schema_path().read_text())
    jsonschema.validate(document, schema)
    assert document["schema_version"] == SCHEMA_VERSION == schema["properties"][
        "schema_version"]["const"]
    assert [r["backend"] for r in document["reports"]] == [
        "numpy", "refmask.fast", "_user_kernels:numpy_attention"]
    assert [r["judging"]["dtypes"] for r in document["reports"]] == [["float64", "float16"]] * 3
    assert len(list(tmp_path.iterdir())) == 1  # one file, not one per backend


def test_a_failing_report_follows_the_schema_too(kernels):
    jsonschema = pytest.importorskip("jsonschema")
    from refmask.conformance.report import document, json_schema_path

    report = check(kernels.numpy_bad_dv, grads=True, dtypes="float64", filter="gqa/4_to_2")
    data = json.loads(json.dumps(document([report]), default=str))
    jsonschema.validate(data, json.loads(json_schema_path().read_text()))
    worst = data["reports"][0]["results"][0]["worst"]
    assert worst["tensor"] == "dv" and len(worst["index"]) == 4


def test_records_and_dataframe(kernels):
    report = check(kernels.numpy_bad_dv, grads=True, dtypes="float64",
                   filter="gqa/4_to_2,softcap/causal")
    rows = report.to_records()
    assert [r["id"] for r in rows] == [r.case.id for r in report.results]
    bad = next(r for r in rows if r["verdict"] == "fail")
    assert bad["tensor"] == "dv" and bad["ulps"] > 0 and len(bad["index"]) == 4
    skipped = next(r for r in rows if r["verdict"] == "unsupported")
    assert skipped["tensor"] is None and "softcap" in skipped["reason"]
    pandas = pytest.importorskip("pandas")
    frame = report.to_dataframe()
    assert isinstance(frame, pandas.DataFrame) and list(frame["id"]) == [r["id"] for r in rows]


def test_worst_element_is_the_largest_error_and_nan_counts_most():
    from refmask.conformance.runner import worst_element

    golden = np.zeros((1, 2, 3, 2))
    actual = golden.copy()
    actual[0, 1, 2, 0] = 0.5
    actual[0, 0, 1, 1] = 0.25
    w = worst_element("out", actual, golden, "float32")
    assert (w.index, w.error) == ((0, 1, 2, 0), 0.5)
    assert w.error_map.shape == (3, 2) and w.error_map[2, 0] == 0.5
    actual[0, 0, 0, 0] = np.nan
    w = worst_element("out", actual, golden, "float32")
    assert w.index == (0, 0, 0, 0) and w.error == np.inf
    same_nan = np.full((1, 1, 2, 2), np.nan)
    assert worst_element("out", same_nan, same_nan, "float32").error == 0.0


def test_heatmap_png_colours_are_the_documented_ones():
    import struct
    import zlib

    from refmask.render import heatmap_png

    data = heatmap_png(np.array([[0.0, 2.0, np.inf]]), cell=1)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (3, 1)
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8:start - 4])[0]
    row = zlib.decompress(data[start:start + length])
    assert list(row[1:]) == [255, 255, 255, 230, 30, 30, 0, 0, 0]
    with pytest.raises(ValueError, match="non-empty 2-D"):
        heatmap_png(np.zeros((0, 3)))


def test_text_heatmap_scales_and_marks_nonfinite():
    from refmask.conformance.report import text_heatmap

    # 0.5 of the largest: level ceil(0.5 * 9) = 5 of " .:-=+*#%@"
    assert text_heatmap(np.array([[0.0, 1.0], [np.inf, 0.5]])) == [" @", "!+"]


def test_cases_lists_ids_families_and_flags(capsys):
    assert main(["cases", "--filter", "sliding_window", "--dtype", "float64,bfloat16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [c for c in catalog(["float64", "bfloat16"]) if c.family == "sliding_window"]
    assert lines[-1] == f"{len(expected)} cases" and len(expected) >= 10
    assert {line.split()[0] for line in lines[:-1]} == {c.id for c in expected}
    window = next(line for line in lines if line.startswith("window/fa_2_0/square@float64"))
    assert window.split()[1] == "sliding_window" and "SlidingWindow" in window.split()[2:]
    assert main(["cases", "--filter", "EmptyRow", "--dtype", "float32"]) == 0
    rows = capsys.readouterr().out.splitlines()[:-1]
    assert rows and all("EmptyRow" in row.split()[2:] for row in rows)


def test_output_paths_are_checked_before_the_run(tmp_path, capsys):
    missing = tmp_path / "no-such-folder" / "r.json"
    assert main(["check", "numpy", "--report", str(missing)]) == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err and "refmask check numpy" not in captured.out
    record = tmp_path / "e.json"
    record.write_text("{}")
    assert main(["check", "numpy", "--write-expect", str(record)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["check", "numpy", "--expect", str(tmp_path / "none.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["check", "numpy", "--framework", "torch"]) == 2
    assert "apply to --impl" in capsys.readouterr().err


def test_progress_bar_on_a_terminal_only(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    from refmask.conformance.cli import progress_bar

    with progress_bar("check x") as progress:
        assert progress is None  # stderr is captured here, not a terminal
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    with progress_bar("check x") as progress:
        for done in range(1, 4):
            progress(done, 3)
    err = capsys.readouterr().err
    assert "check x" in err and "0/3" in err and "case/s" in err  # label, total, rate


def test_the_api_names_are_importable_from_the_package():
    import refmask.conformance as conformance
    from refmask.conformance import judging, runner

    assert conformance.check is runner.check and conformance.Judging is judging.Judging
    with pytest.raises(AttributeError, match="no attribute 'chek'"):
        conformance.chek  # noqa: B018


def test_a_complex_or_integer_result_is_refused_by_name():
    with pytest.raises(TypeError, match="dtype complex128"):
        native.to_float64(np.zeros(2, np.complex128))
    with pytest.raises(TypeError, match="dtype int64"):
        native.to_float64(np.zeros(2, np.int64))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="torch.complex64"):
        native.to_float64(torch.zeros(2, dtype=torch.complex64))
    np.testing.assert_array_equal(native.to_float64(torch.ones(2, dtype=torch.bfloat16)),
                                  [1.0, 1.0])


def test_cases_the_record_does_not_hold_warn_unless_they_fail():
    document = expect.record([check("numpy", dtypes="float64", filter="full/square")])
    grown = check("numpy", dtypes="float64", filter="full/square,causal/top_left/square")
    changes, warnings = expect.compare([grown], document)
    assert not changes and "1 cases are not in the record" in warnings[0]
    zeros = check(lambda q, k, v, call: np.zeros(q.shape[:3] + v.shape[3:]), dtypes="float64",
                  filter="full/square,causal/top_left/square")
    zeros.backend = "numpy"
    changes, _ = expect.compare([zeros], document)
    assert sorted((c.kind, c.case_id) for c in changes) == [
        ("new fail", "causal/top_left/square@float64"), ("new fail", "full/square@float64")]


def test_a_declared_convention_wins_a_tie_inside_a_composite_name():
    """Rows that are complete or empty: a multiplied 0/1 mask and mean-of-V empty rows give the
    same output. A kernel that rounds the scale to float32 and masks with finfo.min, declaring
    empty_rows=uniform, is named by its declared reading (the fail is the float32 scale);
    Keras' TensorFlow backend in float64 is such a kernel."""
    def float32_scale(q, k, v, call):
        scores = (q @ np.swapaxes(k, -1, -2)) * float(np.float32(call.scale))
        scores = np.where(call.keep, scores, np.finfo(np.float64).min)
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return (weights / weights.sum(axis=-1, keepdims=True)) @ v

    float32_scale.refmask_conventions = {"empty_rows": "uniform"}
    report = check(float32_scale, dtypes="float64",
                   filter="padding/queries_right,padding/all_keys_padded")
    assert {(r.verdict, r.convention) for r in report.results} == {
        ("fail", "scale=float32 + empty_rows=uniform")}
