"""The command line and the reports, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from refmask.conformance.cases import catalog
from refmask.conformance.cli import main

BUGGY = textwrap.dedent('''
    import numpy as np

    def attention(q, k, v, call):
        q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
        group = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        s = call.scale * q @ np.swapaxes(k, -1, -2) * call.keep   # multiplicative masking
        p = np.exp(s - s.max(-1, keepdims=True))
        return (p / p.sum(-1, keepdims=True)) @ v

    attention.refmask_unsupported = {"softcap", "bias", "sinks", "dropout", "length0"}
''')


@pytest.fixture
def buggy_module(tmp_path, monkeypatch):
    (tmp_path / "buggy_attention.py").write_text(BUGGY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "buggy_attention:attention"


def test_check_numpy_passes_and_exits_zero(capsys, tmp_path):
    report = tmp_path / "numpy.json"
    assert main(["check", "numpy", "--filter", "causal/", "--report", str(report)]) == 0
    text = capsys.readouterr().out
    assert "0 fail" in text and "wrote" in text
    (data,) = json.loads(report.read_text())["reports"]
    assert data["counts"]["fail"] == 0 and data["counts"]["pass"] == len(data["results"]) > 0


def test_check_of_a_broken_function_exits_one_and_names_the_bug(buggy_module, capsys,
                                                                  tmp_path):
    md, page = tmp_path / "r.md", tmp_path / "r.html"
    code = main(["check", "--impl", buggy_module, "--dtype", "float64",
                 "--filter", "causal/top_left", "--report", str(md)])
    assert code == 1
    out = capsys.readouterr().out
    # one line for the group (3 cases, one diagnosis), its worst element and the hint
    (group,) = [line for line in out.splitlines() if "mask_multiplied" in line]
    assert group.startswith("fail mask_multiplied (bug): 3 cases [float64], e.g. causal/")
    assert "ulps" in group and "scores multiplied by the 0/1 mask" in group
    assert "first bad row" not in out
    text = md.read_text()
    assert "### fail mask_multiplied (bug): 3 cases" in text and "worst element out[" in text
    assert "Re-run: `refmask check --impl buggy_attention:attention --filter causal/" in text
    assert main(["check", "--impl", buggy_module, "--dtype", "float64", "--filter",
                 "causal/top_left", "-v"]) == 1
    verbose = capsys.readouterr().out
    assert verbose.count("first bad row") == 3  # -v: each case with its mask rows
    main(["check", "--impl", buggy_module, "--dtype", "float64", "--filter",
          "causal/top_left/square", "--report", str(page)])
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64," in html
    assert 'alt="error heatmap"' in html and "Re-run: <code>refmask check" in html


def test_report_is_not_overwritten_without_asking(tmp_path, capsys):
    report = tmp_path / "r.json"
    report.write_text("mine")
    assert main(["check", "numpy", "--filter", "full/square", "--report", str(report)]) == 2
    assert report.read_text() == "mine"
    assert "--overwrite" in capsys.readouterr().err
    # refused before the run: no verdict table was printed
    assert "refmask check numpy" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["check"], "at least one BACKEND"),
    (["check", "nonexistent_backend"], "unknown backend"),
    (["check", "numpy", "--dtype", "float8"], "--dtype"),
    (["check", "numpy", "--filter", "no-such-case-anywhere"], "no case matches"),
    (["check", "--impl", "not_a_module_xyz:f"], "cannot import"),
    (["check", "numpy", "--filter", "full/square", "--report", "x.txt"], "suffix"),
])
def test_bad_arguments_give_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_fuzz_shrinks_a_planted_bug_to_a_runnable_reproducer(buggy_module, capsys):
    assert main(["fuzz", buggy_module, "--examples", "60", "--seed", "3",
                 "--dtype", "float64"]) == 1
    out = capsys.readouterr().out
    code = out.split("reproducer:", 1)[1]
    namespace: dict = {}
    exec(compile(code, "<reproducer>", "exec"), namespace)  # noqa: S102 - our own output
    assert namespace["result"].verdict == "fail"
    case = namespace["case"]
    assert case.q_len * case.k_len <= 16, "hypothesis should shrink to a small case"


def test_golden_verify_hashes_of_the_shipped_corpus(capsys):
    assert main(["golden", "verify", "--no-regenerate"]) == 0
    assert "OK" in capsys.readouterr().out


def test_gallery_and_the_installed_script():
    result = subprocess.run([sys.executable, "-m", "refmask.conformance.cli", "gallery",
                             "--ascii"], capture_output=True, text=True, check=True)
    assert "causal, bottom-right" in result.stdout
    assert "(empty row)" in result.stdout


def test_readme_example_function_passes_every_case_it_supports(tmp_path, monkeypatch):
    """The 10-line example in the README is real: it passes or is unsupported, never fails."""
    from pathlib import Path

    from refmask.conformance.runner import check

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("# my_attention.py\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme_attention.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    report = check("readme_attention:attention", dtypes=["float64", "float16"])
    counts = report.counts()
    assert counts["fail"] == 0 and counts["policy"] == 0, [
        (r.case.id, r.reason) for r in report.results if r.verdict in ("fail", "policy")][:3]
    assert counts["pass"] > 100


def test_impl_module_is_found_in_the_working_directory(tmp_path):
    """`refmask check --impl mod:fn` run as a console script finds mod.py in the cwd."""
    from pathlib import Path

    script = Path(sys.executable).with_name("refmask")
    if not script.exists():
        pytest.skip(f"the refmask console script is not installed next to {sys.executable}")
    (tmp_path / "cwd_attention.py").write_text(BUGGY)
    result = subprocess.run([str(script), "check", "--impl", "cwd_attention:attention",
                             "--dtype", "float64", "--filter", "causal/top_left/square"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "mask_multiplied" in result.stdout


def test_matrix_updates_only_the_marked_block(tmp_path, buggy_module, capsys):
    doc = tmp_path / "conformance.md"
    doc.write_text("# Mine\n\nintro\n<!-- matrix:begin -->\nold\n<!-- matrix:end -->\noutro\n")
    code = main(["matrix", "numpy", buggy_module, "--dtype", "float64", "--update", str(doc)])
    assert code == 1  # the buggy function fails, so the command says so
    text = doc.read_text()
    assert text.startswith("# Mine\n\nintro\n<!-- matrix:begin -->\n| family | `numpy` |")
    assert text.endswith("<!-- matrix:end -->\noutro\n") and "old" not in text
    every_case = len(catalog(("float64",)))
    assert "**FAIL**" in text and "mask_multiplied" in text
    assert f"`numpy`: {every_case} pass" in text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers here\n")
    assert main(["matrix", "numpy", "--dtype", "float64", "--update", str(bare)]) == 2
    assert "matrix:begin" in capsys.readouterr().err
    assert bare.read_text() == "no markers here\n"


def test_the_issue_command_with_backend_families(capsys):
    """`refmask check torch.sdpa jax keras onnxruntime` expands the families and prints one
    verdict table per adapter (a small filter keeps the test fast)."""
    from refmask.adapters import ALIASES, expand, names

    assert set(expand(["torch", "jax", "keras", "onnxruntime", "hf", "gpu"])) <= set(names())
    for adapters in ALIASES.values():
        assert set(adapters) <= set(names())
    code = main(["check", "torch.sdpa", "jax", "keras", "onnxruntime", "--dtype", "float32",
                 "--filter", "causal/bottom_right/wide", "--quiet"])
    out = capsys.readouterr().out
    for name in ("torch.sdpa", "jax.dpa", "flax.mask", "keras.mha", "keras.dpa",
                 "onnxruntime.attention23", "onnxruntime.attention24"):
        assert f"refmask check {name}\n" in out
    assert code == 0  # top-left causal is a policy, not a fail
