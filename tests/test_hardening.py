"""Hardening (issue #13): data never runs code, both attention paths refuse the same masks,
integers and dtypes are checked as docs/spec.md section 4 says, the code under test cannot
subvert its verdict, and the command line refuses with one line and exit code 2.

Each test names the rule of docs/spec.md section 4.2 it exercises (``RULES`` below is checked
against the spec's table, so a rule without a test, or a test of no rule, fails).
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from refmask import masks as m
from refmask.attention import attention
from refmask.conformance.cli import main

SPEC = Path(__file__).resolve().parents[1] / "docs" / "spec.md"


def honest(q, k, v, call):
    """Plain softmax attention of the user calling convention (BHTD, call.keep, GQA)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = call.scale * q @ np.swapaxes(k, -1, -2)
    s = np.where(call.keep, s, -np.inf)
    top = np.max(s, axis=-1, keepdims=True)
    p = np.where(call.keep, np.exp(s - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = p.sum(-1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 0.0) @ v


honest.refmask_unsupported = {"softcap", "bias", "sinks", "dropout", "length0"}
SMALL = "causal/top_left/square"


def _one_case():
    from refmask.conformance.runner import select_cases

    return select_cases(dtypes=["float64"], filter=SMALL)[:1]


# --- class 2: code named in data is never imported unless trusted ---------------------------------

@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """A module that leaves a marker file when imported (and a predicate in it)."""
    marker = tmp_path / "imported.marker"
    (tmp_path / "planted_mask_module.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").close()

        def keep_all(b, h, i, j):
            return (i >= 0) & (j >= 0)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "planted_mask_module", raising=False)
    return marker


def test_from_json_imports_no_module_unless_trusted(planted_module):  # rule: trust
    data = {"kind": "predicate", "fn": "planted_mask_module:keep_all"}
    with pytest.raises(ValueError, match=r"predicate: fn .*not trusted.*trust="):
        m.from_json(data)
    with pytest.raises(ValueError, match="not trusted"):
        m.from_json({"kind": "and", "masks": [{"kind": "full"}, data]}, trust=["planted"])
    assert not planted_module.exists(), "the module was imported without trust"
    mask = m.from_json(data, trust=["planted_mask_module"])
    assert planted_module.exists()
    assert mask.materialize(1, 1, 2, 3).all()


def test_a_trusted_module_cannot_reach_functions_defined_elsewhere():  # rule: trust
    # refmask._files imports os; os.remove is not refmask's.
    with pytest.raises(ValueError, match="defined elsewhere"):
        m.from_json({"kind": "predicate", "fn": "refmask._files:os.remove"}, trust=["refmask"])
    with pytest.raises(TypeError, match="trust must be a list"):
        m.from_json({"kind": "full"}, trust="refmask")


def test_golden_case_json_trusts_only_the_catalog_module(planted_module):  # rule: trust
    from refmask.conformance.golden import case_from_json

    case = _one_case()[0]
    data = case.to_json()
    data["mask"] = {"kind": "predicate", "fn": "planted_mask_module:keep_all"}
    with pytest.raises(ValueError, match="not trusted"):
        case_from_json(data)
    assert not planted_module.exists()
    checker = next(c for c in __import__("refmask.conformance.cases", fromlist=["catalog"])
                   .catalog() if c.family == "predicate")
    assert case_from_json(checker.to_json()) == checker  # the shipped predicate still loads


def test_cli_never_puts_the_working_directory_on_sys_path_for_data(tmp_path, monkeypatch,
                                                                   capsys):  # rule: trust
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["golden", "verify", str(tmp_path), "--no-regenerate"]) == 2  # no manifest
    assert main(["render", '{"kind": "causal", "align": "top_left"}', "--q-len", "2",
                 "--k-len", "2"]) == 0
    assert str(tmp_path) not in sys.path and os.getcwd() not in sys.path
    capsys.readouterr()


# --- class 3: the fast path refuses what the exact path refuses ---------------------------------

@pytest.mark.parametrize("mask", [
    m.documents([[0] * 300]),                                   # ids longer than Tq = Tk = 256
    m.documents([[0] * 256], [[0] * 255]),
    m.key_padding(300, side="right"),
    m.causal(align=m.bottom_right(q_lengths=[300])),
    m.explicit(np.ones((1, 1, 255, 256), bool)),
    m.causal(align="top_left") & m.documents([[1] * 257]),
    m.per_batch(m.documents([[0] * 256]), m.documents([[0] * 200])),
])
def test_fast_path_validates_masks_like_the_exact_path(mask):  # rule: mask-lengths
    rng = np.random.default_rng(0)
    batch = mask.batch_size or 1
    q = rng.standard_normal((batch, 4, 256, 8))  # 2**18 scores per batch: "auto" goes fast
    messages = []
    for path in ("exact", "fast", "auto"):
        with pytest.raises(ValueError) as error:
            attention(q, q, q, mask=mask, path=path)
        messages.append(str(error.value))
    assert messages[0] == messages[1] == messages[2]
    with pytest.raises(ValueError):
        mask.classify(0, 1, 0, 1, q_len=256, k_len=256)


# --- class 7: integers and dtypes ----------------------------------------------------------------

@pytest.mark.parametrize("build, error", [
    (lambda: m.sliding_window(2**61, 0, align="top_left"), ValueError),
    (lambda: m.sliding_window(0, 2**64, align="top_left"), ValueError),
    (lambda: m.causal(align=2**62), ValueError),
    (lambda: m.causal(align=-(2**61)), ValueError),
    (lambda: m.causal(align=[0, 2**70]), ValueError),
    (lambda: m.causal(align=np.array([2**63 + 5], dtype=np.uint64)), ValueError),
    (lambda: m.chunked(2**61, align="top_left"), ValueError),
    (lambda: m.key_padding([2**61], side="right"), ValueError),
    (lambda: m.global_tokens([2**62], align="top_left"), ValueError),
    (lambda: m.documents([[0, 2**64]]), ValueError),
    (lambda: m.sliding_window(2.0, 0, align="top_left"), TypeError),
    (lambda: m.causal(align=[1.0]), TypeError),
    (lambda: m.key_padding(np.array([1.5]), side="right"), TypeError),
    (lambda: m.documents([["a", "b"]]), TypeError),
    (lambda: m.key_padding([[1], [2, 3]], side="right"), ValueError),
    (lambda: m.key_padding([1, 2], side=["right"]), ValueError),
])
def test_integer_arguments_are_bounded_and_never_cast(build, error):  # rule: int-bounds
    with pytest.raises(error) as raised:
        build()
    assert re.match(r"[a-z_]+: ", str(raised.value)), str(raised.value)


def test_indices_are_never_cast_from_floats():  # rule: int-bounds
    mask = m.causal(align="top_left")
    with pytest.raises(TypeError, match="i must be an int or an integer array"):
        mask.keep(0, 0, np.array([1.7]), np.array([0]), q_len=4, k_len=4)
    with pytest.raises(TypeError, match="j must"):
        mask.keep(0, 0, 1, True, q_len=4, k_len=4)
    with pytest.raises(TypeError, match="q_start"):
        mask.classify(0.5, 2, 0, 2, q_len=4, k_len=4)
    with pytest.raises(ValueError, match="2\\*\\*60"):
        mask.keep(0, 0, 2**62, 0, q_len=4, k_len=4)


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "complex128", "longdouble"])
def test_unsupported_float_dtypes_are_refused_with_the_supported_list(dtype):  # rule: dtypes
    ml_dtypes = pytest.importorskip("ml_dtypes")
    resolved = np.dtype(getattr(ml_dtypes, dtype, None) or getattr(np, dtype))
    q = np.zeros((1, 1, 2, 4), resolved)
    with pytest.raises(TypeError, match=r"supported: float64, float32, float16, bfloat16"):
        attention(q, q, q)
    from refmask.attention import attention_vjp

    with pytest.raises(TypeError, match=r"supported: float64"):
        attention_vjp(q, q, q, q)


@pytest.mark.parametrize("data, match", [
    ({"kind": "documents", "q_segment_ids": [[0, 1]], "k_segment_id": [[0, 1]]},
     r"unknown field\(s\) \['k_segment_id'\]"),
    ({"kind": "causal", "align": "top_left", "allign": 1}, r"\['allign'\]"),
    ({"kind": ["causal"]}, "unknown mask kind"),
    ({"kind": {"a": 1}}, "unknown mask kind"),
    ({"kind": "and", "masks": {"kind": "full"}}, "masks must be a list"),
    ({"kind": "not", "mask": 3}, "must be a mask's JSON object"),
    ({"kind": "explicit", "shape": ["a", 1, 1, 1], "bits": "AA=="}, "explicit: shape"),
    ({"kind": "explicit", "shape": [10**6, 10**6, 10**6, 10**6], "bits": "AA=="},
     "bits holds at most"),
    ({"kind": "explicit", "shape": [1, 1, 2], "bits": "AA=="}, "4 ints"),
    ({"kind": "explicit", "shape": [1, 1, 2, 2], "bits": 7}, "base64"),
    ({"kind": "causal", "align": {"bottom_right": 5}}, "unknown JSON form"),
    ({"kind": "causal", "align": {"bottom_right": {"q_len": [1]}}}, "unknown JSON form"),
    ({"kind": "causal", "align": {"offset": 3}}, "unknown JSON form"),
    ({"kind": "key_padding", "lengths": "12", "side": "right"}, "lengths"),
    ({"kind": "key_padding", "lengths": [1], "side": ["right"]}, "side"),
    ({"kind": "sliding_window", "left": [1], "right": 0, "align": "top_left"}, "left"),
    ({"kind": "predicate", "fn": ["os", "system"]}, "fn must be"),
    ("[1, 2", "not valid JSON"),
    ("[" * 100000 + "]" * 100000, "deeper|not valid JSON|mask's JSON object"),
    (json.dumps(json.loads('{"kind": "full"}')) + "x", "not valid JSON"),
])
def test_odd_json_gives_a_clear_error_naming_the_field(data, match):  # rule: json
    with pytest.raises((ValueError, TypeError), match=match) as raised:
        m.from_json(data)
    assert not isinstance(raised.value, (RecursionError, KeyError))


def test_deeply_nested_json_is_refused_not_a_recursion_error():  # rule: json
    node = {"kind": "full"}
    for _ in range(5000):
        node = {"kind": "not", "mask": node}
    with pytest.raises(ValueError, match="nests deeper than 64"):
        m.from_json(node)


# --- case fields: a Case no attention call could have is refused where it is built -----------
def _case(**fields):
    from refmask.case import Case

    return Case(name="c", family="f", mask=m.causal(align="bottom_right"), **fields)


@pytest.mark.parametrize("fields, error, match", [
    ({"dtype": "int8"}, ValueError, "dtype must be one of"),
    ({"dtype": "float8_e4m3fn"}, ValueError, "dtype must be one of"),
    ({"layout": "BSHD"}, ValueError, "layout must be one of"),
    ({"q_heads": 3, "kv_heads": 2}, ValueError, r"q_heads \(3\) must be a multiple of kv_heads"),
    ({"batch": 0}, ValueError, "batch must be an int >= 1"),
    ({"q_len": -1}, ValueError, "q_len must be an int >= 0"),
    ({"qk_dim": 0}, ValueError, "qk_dim must be an int >= 1"),
    ({"k_len": 2.0}, TypeError, "k_len must be an int"),
    ({"v_dim": True}, TypeError, "v_dim must be an int"),
    ({"scale": float("inf")}, ValueError, "scale must be a finite real number"),
    ({"softcap": 0.0}, ValueError, "softcap must be a finite real number > 0"),
    ({"dropout_rate": 1.0}, ValueError, r"dropout_rate must be a real number in \[0, 1\)"),
    ({"input_scale": float("nan")}, ValueError, "input_scale must be a finite real number > 0"),
    ({"empty_rows": "zeros"}, ValueError, "empty_rows must be one of"),
    ({"seed": -1}, ValueError, "seed must be an int with 0 <= seed < 2\\*\\*64"),
    ({"seed": 2**64}, ValueError, "seed must be an int with 0 <= seed < 2\\*\\*64"),
    ({"bias": 1}, TypeError, "bias must be a bool"),
    ({"extra_flags": "Causal"}, TypeError, "extra_flags must be a tuple"),
    ({"batch": 64, "q_heads": 64, "q_len": 1 << 12, "k_len": 1 << 12}, ValueError,
     "exceeds MAX_CASE_SCORES"),
])
def test_a_case_with_an_impossible_field_is_refused(fields, error, match):  # rule: case-fields
    with pytest.raises(error, match=match):
        _case(**fields)


def test_case_json_of_an_enormous_case_is_refused_before_any_allocation():  # rule: case-fields
    from refmask.case import case_from_json

    data = _case().to_json()
    data["shape"].update(Tq=10**6, Tk=10**6)  # a dense keep mask would need 931 GiB per (b, h)
    with pytest.raises(ValueError, match="MAX_CASE_SCORES"):
        case_from_json(data)


# --- class 6: the code under test cannot subvert the verdict -------------------------------------

def test_user_code_gets_read_only_copies():  # rule: user-code
    from refmask.adapters.user import from_function
    from refmask.conformance.runner import run_case

    def writes_into_q(q, k, v, call):
        q[...] = 0.0
        return honest(q, k, v, call)

    result = run_case(from_function(writes_into_q), _one_case()[0])
    assert result.verdict == "fail" and "read-only" in result.reason


def test_an_adapter_that_rewrites_its_inputs_does_not_move_the_golden_value():  # rule: user-code
    """Golden and naive values come from the runner's own arrays: a backend that zeroes q, k, v
    after computing garbage must fail (it passed when the runner reused the arrays)."""
    from refmask.adapters import Adapter, Output, Profile
    from refmask.conformance.runner import check

    def run(case, inputs, *, grads):
        for name in ("q", "k", "v"):
            inputs[name][...] = 0.0
        out = np.zeros((case.batch, case.q_heads, case.q_len, case.v_dim))
        return Output(out=out)  # the exact answer for all-zero inputs

    adapter = Adapter(name="rewriter", profile=Profile(lse_base=None), run=run)
    case = replace(_one_case()[0], seed=987654)  # not in the corpus: golden from the reference
    report = check(adapter, cases=[case])
    assert [r.verdict for r in report.results] == ["fail"]


@pytest.mark.parametrize("body, reason", [
    ("raise SystemExit(0)", "SystemExit"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ("return honest(q, k, v, call).astype(np.complex128) + 1j", "complex"),
    ("return 'not an array'", "dtype <U"),
    ("return None", "dtype object"),
])
def test_exits_interrupts_and_odd_outputs_from_user_code_are_failures(body, reason):  # user-code
    from refmask.adapters.user import from_function
    from refmask.conformance.runner import check

    namespace = {"np": np, "honest": honest}
    exec(f"def fn(q, k, v, call):\n    {body}\n", namespace)  # noqa: S102 - test's own code
    report = check(from_function(namespace["fn"]), cases=_one_case())
    assert [r.verdict for r in report.results] == ["fail"]
    assert reason in report.results[0].reason and not report.interrupted


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(dtypes=["float8"]), ValueError, "dtypes"),
    (dict(filter=3), TypeError, "filter must be a comma-separated string"),
    (dict(cases=[1]), TypeError, r"cases\[0\] must be a refmask Case"),
    (dict(golden=3), TypeError, "golden must be callable"),
    (dict(progress="x"), TypeError, "progress must be callable"),
])
def test_check_arguments_are_refused_not_misread(kwargs, error, match):  # rule: user-code
    from refmask.conformance.runner import check

    with pytest.raises(error, match=match):
        check("numpy", **kwargs)


def test_a_dtype_string_is_a_dtype_name_never_its_characters():  # rule: user-code
    from refmask.conformance.runner import check, select_cases

    report = check("numpy", dtypes="float64", filter="full/square")
    assert report.results and {r.case.dtype for r in report.results} == {"float64"}
    with pytest.raises(TypeError, match="dtypes must be a list"):
        select_cases(dtypes="float64")


def test_corpus_functions_refuse_a_directory_that_is_not_a_path():  # rule: corpus-files
    from refmask.conformance import golden

    for call in (lambda: golden.load(3), lambda: golden.verify(None),
                 lambda: golden.generate(3, _one_case()), lambda: golden.corpus_engine(2.5)):
        with pytest.raises(TypeError, match="directory must be a path"):
            call()
    with pytest.raises(TypeError, match="progress must be callable"):
        golden.verify(golden.shipped_corpus_path(), regenerate=False, progress=3)


def test_a_hanging_backend_fails_on_its_timeout():  # rule: user-code
    from refmask.adapters.user import from_function
    from refmask.conformance.runner import check

    def hangs(q, k, v, call):
        time.sleep(30)

    start = time.perf_counter()
    report = check(from_function(hangs), cases=_one_case(), timeout=0.5)
    assert time.perf_counter() - start < 20
    assert report.results[0].verdict == "fail" and "timeout of 0.5 s" in report.results[0].reason
    with pytest.raises(ValueError, match="timeout"):
        check(from_function(honest), cases=_one_case(), timeout=-1)


def test_impl_module_that_exits_on_import_is_a_refusal(tmp_path, monkeypatch, capsys):  # user
    (tmp_path / "exits_on_import.py").write_text("raise SystemExit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["check", "--impl", "exits_on_import:f", "--filter", SMALL]) == 2
    assert "raised SystemExit" in capsys.readouterr().err


def test_user_code_that_exits_outside_a_case_cannot_end_the_command(tmp_path, monkeypatch,
                                                                   capsys):  # user-code
    (tmp_path / "exiting_masker.py").write_text(
        "def masker(*args, **kwargs):\n    raise SystemExit(0)\n")
    (tmp_path / "exits_on_import_2.py").write_text("raise SystemExit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _refused(["check-masking", "--impl", "exits_on_import_2:masker"], capsys, "SystemExit")
    _refused(["check-masking", "--impl", "exiting_masker:masker", "--rows", "2", "--length",
              "8", "--epochs", "2"], capsys, "sys.exit")


def test_impl_function_that_exits_gives_a_failing_exit_code(tmp_path, monkeypatch, capsys):
    (tmp_path / "exits_on_call.py").write_text("def f(q, k, v, call):\n    raise SystemExit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["check", "--impl", "exits_on_call:f", "--filter", SMALL, "--dtype",
                 "float64"]) == 1  # rule: user-code
    assert "SystemExit" in capsys.readouterr().out


# --- class 8: the command line refuses with one line and exit code 2 ----------------------------

def _refused(argv, capsys, *fragments):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refmask: error: "), captured.err
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return captured


@pytest.mark.parametrize("argv, fragments", [
    (["render", '{"kind": "key_padding", "lengths": [1, 2], "side": "right"}', "--q-len", "2",
      "--k-len", "2", "--batch", "-1"], ("--batch", "[0, 2)")),
    (["render", '{"kind": "causal", "align": "top_left"}', "--q-len", "2", "--k-len", "2",
      "--head", "1"], ("--head",)),
    (["render", '{"kind": "causal", "align": "top_left"}', "--q-len", "2", "--k-len", "2",
      "--cell", "0"], ("--cell",)),
    (["render", '{"kind": "causal"', "--q-len", "2", "--k-len", "2"], ("not valid JSON",)),
    (["render", '{"kind": "causal", "align": "top_left"}', "--q-len", "-2", "--k-len", "2"],
     ("q_len",)),
    (["check", "numpy", "--filter", SMALL, "--timeout", "0"], ("--timeout",)),
])
def test_bad_cli_arguments_are_one_line_refusals(argv, fragments, capsys):  # rule: cli
    _refused(argv, capsys, *fragments)


def test_output_paths_are_checked_before_the_run(tmp_path, capsys):  # rule: cli
    missing = tmp_path / "no" / "such" / "dir"
    captured = _refused(["check", "numpy", "--filter", SMALL, "--report",
                         str(missing / "r.json")], capsys, "--report", "does not exist")
    assert "pass" not in captured.out  # nothing ran
    _refused(["render", '{"kind": "full"}', "--q-len", "2", "--k-len", "2", "--png",
              str(missing / "x.png")], capsys, "--png")
    _refused(["render", '{"kind": "full"}', "--q-len", "2", "--k-len", "2", "--png",
              str(tmp_path), "--overwrite"], capsys, "is a directory")
    _refused(["render", '{"kind": "full"}', "--q-len", "2", "--k-len", "2", "--png",
              str(tmp_path)], capsys, "already exists")
    _refused(["matrix", "numpy", "--update", str(missing / "m.md")], capsys, "--update")
    text = tmp_path / "plain.md"
    text.write_text("no markers here\n")
    _refused(["matrix", "numpy", "--update", str(text)], capsys, "matrix:begin")


def _limited_run(argv, limit_bytes):
    """``refmask ARGV`` in a fresh interpreter that may not write files over ``limit_bytes``
    (RLIMIT_FSIZE: the write fails with EFBIG, as a full disk fails with ENOSPC)."""
    import subprocess

    code = ("import resource, signal, sys; from refmask.conformance.cli import main; "
            "import refmask.conformance.golden, refmask.conformance.runner; "
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes})); "
            f"sys.exit(main({argv!r}))")
    return subprocess.run([sys.executable, "-I", "-B", "-c", code], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ")
def test_a_full_disk_is_a_one_line_refusal_that_leaves_nothing_behind(tmp_path):  # rule: cli
    png = tmp_path / "mask.png"
    run = _limited_run(["render", '{"kind": "causal", "align": "top_left"}', "--q-len", "64",
                        "--k-len", "64", "--png", str(png), "--cell", "8"], 2000)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(png) in lines[0] and "Traceback" not in run.stderr
    corpus = tmp_path / "corpus"
    run = _limited_run(["golden", "generate", str(corpus), "--engine", "reference", "--filter",
                        SMALL, "--dtype", "float64"], 2000)
    assert run.returncode == 2 and "cannot write" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no PNG, no corpus, no temp


def test_os_errors_are_one_line_refusals(tmp_path, capsys):  # rule: cli
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _refused(["golden", "generate", str(blocker / "corpus"), "--filter", SMALL, "--dtype",
              "float64"], capsys)
    _refused(["check", "numpy", "--corpus", str(tmp_path / "missing")], capsys, "missing")


# --- class 4: corpus files are checked before they are trusted --------------------------------

@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from refmask.conformance import golden

    return golden.generate(tmp_path_factory.mktemp("tiny") / "corpus", _one_case(),
                           engine="reference")


@pytest.fixture
def corpus(tiny_corpus, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_corpus, tmp_path / "corpus"))


def _entry(corpus):
    return json.loads((corpus / "manifest.json").read_text())["cases"][0]


@pytest.mark.parametrize("replacement", ["symlink_dev_zero", "fifo", "directory", "oversized"])
def test_corpus_files_must_be_regular_and_within_their_bound(corpus, replacement):
    # rule: corpus-files
    from refmask.conformance import golden

    file = corpus / _entry(corpus)["file"]
    file.unlink()
    if replacement == "symlink_dev_zero":
        file.symlink_to("/dev/zero")
        why = "symbolic link"
    elif replacement == "fifo":
        os.mkfifo(file)
        why = "FIFO"
    elif replacement == "directory":
        file.mkdir()
        why = "directory"
    else:
        with open(file, "wb") as handle:  # sparse: 1 GiB of nothing, refused unread
            handle.truncate(1 << 30)
        why = "more than the"
    start = time.perf_counter()
    with pytest.raises(golden.CorpusError, match=why) as error:
        golden.load(corpus)
    assert error.value.path == file
    problems = golden.verify(corpus)
    assert any(why in problem for problem in problems)
    assert time.perf_counter() - start < 30  # nothing blocked, nothing read


def test_manifest_must_be_a_regular_file(corpus):  # rule: corpus-files
    from refmask.conformance import golden

    (corpus / "manifest.json").unlink()
    (corpus / "manifest.json").symlink_to("/dev/zero")
    with pytest.raises(golden.CorpusError, match="symbolic link"):
        golden.load(corpus)


def _npz_with(members: dict, *, compress: bool = False) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=mode) as archive:
        for name, payload in members.items():
            archive.writestr(name + ".npy", payload)
    return buffer.getvalue()


def _npy(array: np.ndarray, *, claim_shape=None) -> bytes:
    """npy bytes of ``array``, optionally with a header that claims another shape."""
    import io

    data = io.BytesIO()
    np.lib.format.write_array(data, array)
    raw = data.getvalue()
    if claim_shape is None:
        return raw
    header = {"descr": array.dtype.str, "fortran_order": False, "shape": claim_shape}
    data = io.BytesIO()
    np.lib.format.write_array_header_1_0(data, header)
    return data.getvalue() + raw[len(raw) - array.nbytes:]


@pytest.mark.parametrize("defect, why", [
    ("huge_header_shape", "expected"),
    ("short_data", "data bytes"),
    ("compressed", "compressed"),
    ("duplicate_member", "twice"),
])
def test_npz_headers_are_checked_before_any_array_is_allocated(corpus, defect, why):
    # rule: corpus-files
    import hashlib

    from refmask.conformance import golden

    entry = _entry(corpus)
    file = corpus / entry["file"]
    with np.load(file) as archive:
        arrays = {name: archive[name] for name in archive.files}
    members = {name: _npy(value) for name, value in arrays.items()}
    if defect == "huge_header_shape":  # would allocate 8 * 10**12 bytes if trusted
        members["exact.out"] = _npy(arrays["exact.out"], claim_shape=(10**12,))
    elif defect == "short_data":
        members["exact.out"] = members["exact.out"][:-8]
    data = _npz_with(members, compress=defect == "compressed")
    if defect == "duplicate_member":
        import io
        import zipfile

        buffer = io.BytesIO(data)
        with zipfile.ZipFile(buffer, "a") as archive, __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            archive.writestr("exact.out.npy", members["exact.out"])
        data = buffer.getvalue()
    file.write_bytes(data)
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["cases"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    _reseal(corpus, manifest)
    loaded = golden.load(corpus)  # the hash matches: the defect is in the content
    with pytest.raises(golden.CorpusError, match=why):
        loaded[entry["id"]]


def _reseal(corpus, manifest):
    """Write ``manifest`` with its manifest_sha256 recomputed by the documented rule."""
    import hashlib

    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    body["manifest_sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    (corpus / "manifest.json").write_text(json.dumps(body))


def test_every_manifest_field_that_steers_verification_is_hashed(corpus):  # rule: corpus-files
    from refmask.conformance import golden

    manifest = json.loads((corpus / "manifest.json").read_text())
    for key, value in (("engine", "exact"), ("spec_version", "9.9"), ("schema_version", 1)):
        edited = {**manifest, key: value}
        if key == "schema_version":
            edited["cases"] = [{**manifest["cases"][0], "id": "renamed"}]
            edited["cases"][0]["case"] = {**edited["cases"][0]["case"], "id": "renamed"}
        (corpus / "manifest.json").write_text(json.dumps(edited))
        with pytest.raises(golden.CorpusError, match="manifest_sha256"):
            golden.load(corpus)
    legacy = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    (corpus / "manifest.json").write_text(json.dumps(legacy))  # engine "reference", unsealed
    with pytest.raises(golden.CorpusError, match="not covered by a manifest_sha256"):
        golden.load(corpus)
    assert "manifest_sha256" in json.loads(
        (golden.shipped_corpus_path() / "manifest.json").read_text())


def test_the_token_corpus_reader_follows_the_same_rules(tmp_path):
    # rule: corpus-files
    import shutil

    from refmask.conformance import token_golden

    corpus = Path(shutil.copytree(token_golden.shipped_path(), tmp_path / "tokens"))
    manifest = json.loads((corpus / "manifest.json").read_text())
    first = corpus / manifest["cases"][0]["file"]
    first.unlink()
    first.symlink_to("/dev/zero")
    manifest["cases"][1]["file"] = "../../etc/passwd"
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    problems = token_golden.verify(corpus)
    assert "symbolic link" in problems[0] and "plain file name" in problems[1]
    (corpus / "manifest.json").write_text("[" * 100000)
    assert "manifest.json" in token_golden.verify(corpus)[0]


# --- class 5: golden generate is crash-safe, locked, and deletes only what it wrote ------------

def _generate_cli(directory, filter_text, env=None):
    """`refmask golden generate DIR --overwrite` in a fresh interpreter (-I: no cwd on path)."""
    import subprocess

    code = ("import sys; from refmask.conformance.cli import main; "
            f"sys.exit(main(['golden', 'generate', {str(directory)!r}, '--engine', "
            f"'reference', '--dtype', 'float64', '--filter', {filter_text!r}, "
            "'--overwrite']))")
    return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def _ids(directory):
    return [entry["id"] for entry in
            json.loads((Path(directory) / "manifest.json").read_text())["cases"]]


NEW_FILTER = "full/square,full/wide"


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False])
def test_generate_killed_at_every_step_leaves_the_old_or_the_new_corpus(tmp_path, capsys,
                                                                        exchange):
    # rule: corpus-write
    from refmask.conformance import _corpus_fs, golden

    old = golden.generate(tmp_path / "corpus", _one_case(), engine="reference")
    old_ids = _ids(old)
    env = {} if exchange else {"REFMASK_TEST_NO_EXCHANGE": "1"}
    new_ids = None
    for step in _corpus_fs.CRASH_POINTS:
        run = _generate_cli(old, NEW_FILTER, {**env, "REFMASK_TEST_CRASH_AT": step})
        assert run.returncode in (0, 99), run.stderr
        if old.exists():  # at every step on Linux; absent only between the fallback's renames
            assert golden.verify(old, regenerate=False) == []
            assert _ids(old) in (old_ids, new_ids or _ids(old))
        else:
            assert not exchange and step == "half-swapped"
        assert main(["golden", "verify", str(old), "--no-regenerate"]) == 0  # recovers
        err = capsys.readouterr().err
        leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
        assert leftovers == [], (step, leftovers, err)
        if run.returncode == 99 and step not in ("locked",):
            assert "interrupted golden generate" in err or step in ("old-removed",), (step, err)
        new_ids = new_ids or (_ids(old) if _ids(old) != old_ids else None)
        # back to the old corpus for the next step
        golden.generate(old, _one_case(), engine="reference", overwrite=True)
    assert new_ids is not None and sorted(new_ids) != sorted(old_ids)


def test_a_second_writer_is_refused_while_the_lock_is_held(tmp_path):  # rule: corpus-write
    from refmask.conformance import _corpus_fs, golden

    target = tmp_path / "corpus"
    with _corpus_fs.writer_lock(target, where="test") as held:
        assert held
        with pytest.raises(FileExistsError, match="another refmask process is writing"):
            golden.generate(target, _one_case(), engine="reference")
    golden.generate(target, _one_case(), engine="reference")  # free again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_overwrite_deletes_nothing_the_corpus_did_not_write(corpus, capsys):  # rule: corpus-write
    from refmask.conformance import golden

    (corpus / "my_notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="my_notes.txt"):
        golden.generate(corpus, _one_case(), engine="reference", overwrite=True)
    assert (corpus / "my_notes.txt").read_text() == "mine"
    _refused(["golden", "generate", str(corpus), "--overwrite", "--engine", "reference",
              "--filter", SMALL, "--dtype", "float64"], capsys, "my_notes.txt")


# --- the spec lists every rule, and this file exercises each ------------------------------------

RULES = ("trust", "mask-lengths", "int-bounds", "dtypes", "json", "case-fields", "user-code",
         "cli", "corpus-files", "corpus-write")


def test_spec_section_4_lists_exactly_the_rules_exercised_here():
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("## 4. Errors"):text.index("## 5. Conformance")]
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE)
    assert sorted(listed) == sorted(RULES)
    source = Path(__file__).read_text(encoding="utf-8")
    for rule in RULES:
        assert len(re.findall(rf"# (?:rule: )?{re.escape(rule)}\b", source)) >= 1, rule
