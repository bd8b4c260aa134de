"""Sweeps (long-sequence cases) and reference-engine golden corpora, generated on demand."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from _corpus import manifest_of, write_manifest

from refmask.conformance import golden
from refmask.conformance.cases import case_inputs, catalog
from refmask.conformance.cli import main
from refmask.conformance.golden._engines import reference_golden_outputs
from refmask.conformance.golden._verify import reference_difference
from refmask.conformance.runner import check, corpus_golden, reference_outputs
from refmask.conformance.sweeps import LONG_DTYPES, describe, sweep, sweep_names

SMOKE = [case.id for case in sweep("smoke")]


@pytest.fixture(scope="module")
def smoke_corpus(tmp_path_factory):
    return golden.generate(tmp_path_factory.mktemp("sweeps") / "smoke", sweep("smoke"),
                           engine="reference")


@pytest.fixture
def corpus(smoke_corpus, tmp_path):
    return shutil.copytree(smoke_corpus, tmp_path / "corpus")


def entry_changed(index, fn):
    """A change for :func:`rewrite_member`: entry ``index`` becomes ``fn(entry)``."""
    def change(array):
        array[index] = fn(array[index])
        return array

    return change


def rewrite_member(directory, case_id, name, change):
    """Replace one member of a case's file by ``change(array)`` and update the manifest's
    sha256, so that only the value comparison of verify can notice."""
    manifest = manifest_of(directory)
    entry = next(e for e in manifest["cases"] if e["id"] == case_id)
    path = directory / entry["file"]
    with np.load(path, allow_pickle=False) as archive:
        members = {key: archive[key] for key in archive.files}
    members[name] = change(members[name].copy())
    path.write_bytes(golden.npz_bytes(members))
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    write_manifest(directory, manifest)
    return path


# --- the sweeps --------------------------------------------------------------------------------

def test_sweep_names_and_unknown_names():
    assert {"long", "smoke"} <= set(sweep_names())
    assert all(describe(name) for name in sweep_names())
    for bad in ("nope", None, "LONG"):
        with pytest.raises(ValueError, match="sweep"):
            sweep(bad)


def test_long_sweep_shape():
    cases = sweep("long")
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids))
    assert [case.dtype for case in cases[:len(cases) // 3]] == ["float64"] * (len(cases) // 3)
    assert {case.dtype for case in cases} == set(LONG_DTYPES)
    assert not {case.id for case in cases} & {case.id for case in catalog()}
    assert all(case.batch == 1 and case.qk_dim == case.v_dim == 64 for case in cases)
    assert max(max(case.q_len, case.k_len) for case in cases) == 2048
    assert {512, 2048} <= {case.k_len for case in cases if case.family == "causal"}
    flags = set().union(*(case.flags for case in cases))
    assert {"TopLeft", "BottomRight", "SlidingWindow", "WindowConvention", "Chunked",
            "Documents", "LeftPadding", "EmptyRow", "GQA", "Softcap", "Sink",
            "NonSquareCausal"} <= flags
    # memory: the reference materialises (B, Hq, Tq, Tk) float64 arrays
    assert max(case.batch * case.q_heads * case.q_len * case.k_len for case in cases) * 8 \
        <= 64 * 2**20


@pytest.mark.parametrize("name", ["long", "smoke"])
def test_sweep_cases_round_trip_through_the_manifest_json(name):
    """``corpus_golden`` uses a stored value only when the stored case JSON equals the case's
    own JSON: a sweep case rebuilt from its manifest entry must satisfy that."""
    for case in sweep(name):
        stored = json.loads(json.dumps(case.to_json()))
        assert golden.case_from_json(stored).to_json() == stored


# --- reference-engine corpora --------------------------------------------------------------------

def test_smoke_corpus_round_trip(smoke_corpus):
    manifest = manifest_of(smoke_corpus)
    assert manifest["schema_version"] == 1 and manifest["engine"] == "reference"
    assert manifest["generator"] == golden.REFERENCE_GENERATOR
    loaded = golden.load(smoke_corpus)
    assert list(loaded) == SMOKE and loaded.engine == "reference"
    assert golden.corpus_engine(smoke_corpus) == "reference"
    for case in sweep("smoke"):
        stored = loaded[case.id]
        inputs = case_inputs(case)
        for name, value in inputs.items():
            assert stored.inputs[name].dtype == value.dtype
            assert stored.inputs[name].tobytes() == value.tobytes()
        fresh = reference_outputs(case, inputs, float64=True, grads=True)
        assert set(stored.expected) == set(fresh)
        for name, value in fresh.items():  # (the same bits, here; the rule is what is promised)
            assert reference_difference(stored.expected[name], value) is None
    calls = []
    assert golden.verify(smoke_corpus, progress=lambda *call: calls.append(call)) == []
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_numpy_passes_every_case_of_the_corpus(smoke_corpus):
    corpus = golden.load(smoke_corpus)
    cases = [corpus[case_id].case() for case_id in corpus]
    for case in cases:  # the stored values are used, not the reference fallback
        assert corpus.manifest_entry(case.id)["case"] == case.to_json()
    report = check("numpy", cases=cases, grads=True, golden=corpus_golden(corpus))
    assert [r.case.id for r in report.results] == SMOKE
    assert report.counts()["pass"] == len(SMOKE), [(r.case.id, r.reason)
                                                   for r in report.results]


def test_a_sink_dropping_function_fails_on_the_sink_case(smoke_corpus):
    def no_sinks(q, k, v, call):
        q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
        group = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        s = np.where(call.keep, call.scale * q @ np.swapaxes(k, -1, -2), -np.inf)
        top = s.max(-1, keepdims=True)
        p = np.exp(s - np.where(np.isfinite(top), top, 0.0))
        total = p.sum(-1, keepdims=True)
        return np.where(total > 0, p / np.where(total > 0, total, 1.0), 0.0) @ v

    corpus = golden.load(smoke_corpus)
    report = check(no_sinks, cases=[corpus[i].case() for i in corpus],
                   golden=corpus_golden(corpus))
    verdicts = {r.case.id: r.verdict for r in report.results}
    assert verdicts == {SMOKE[0]: "pass", SMOKE[1]: "fail", SMOKE[2]: "pass"}


def test_reference_engine_agrees_with_the_exact_corpus():
    """The reference engine lays arrays out as the exact engine does (BTHD, bias, sinks)."""
    ids = ["combined/gqa_softcap_window_sink_bthd@float64", "causal/bottom_right/tall@float32"]
    shipped = golden.load(golden.shipped_corpus_path())
    for case_id in ids:
        exact = shipped[case_id]
        fresh = reference_golden_outputs(exact.case(), exact.inputs)
        assert set(fresh) == set(exact.expected)
        for name, value in fresh.items():
            assert reference_difference(exact.expected[name], value) is None, name


def test_verify_catches_a_relative_change_of_1e_6(corpus):
    case_id = SMOKE[1]
    path = rewrite_member(corpus, case_id, "exact.out",
                          entry_changed((0, 1, 5, 7), lambda x: x * (1 + 1e-6)))
    golden.load(corpus)[case_id]  # well-formed, hashes match
    problems = golden.verify(corpus)
    assert len(problems) == 1
    assert path.name in problems[0] and "exact.out differs by up to" in problems[0]
    assert "(0, 1, 5, 7)" in problems[0] and "rule for a reference corpus" in problems[0]


def test_verify_tolerates_summation_order_noise_but_not_moved_nans(corpus):
    rewrite_member(corpus, SMOKE[0], "exact.dq",
                   entry_changed((0, 0, 9, 3), lambda x: np.nextafter(x, np.inf)))
    assert golden.verify(corpus) == []
    rewrite_member(corpus, SMOKE[0], "exact.lse", entry_changed((0, 0, 4), lambda x: np.nan))
    problems = golden.verify(corpus)
    assert len(problems) == 1 and "exact.lse has NaN/inf at other entries" in problems[0]


def test_verify_keeps_inputs_bit_for_bit(corpus):
    rewrite_member(corpus, SMOKE[0], "input.v",
                   entry_changed((0, 0, 1, 2), lambda x: np.nextafter(x, np.inf)))
    problems = golden.verify(corpus)
    assert len(problems) == 1 and "input.v differs bitwise in 1 of" in problems[0]


def test_missing_engine_means_exact_and_unknown_engine_is_reported(tmp_path, corpus):
    exact_corpus = golden.generate(tmp_path / "exact", [catalog(["float64"])[0]])
    manifest = manifest_of(exact_corpus)
    assert manifest["engine"] == "exact"
    del manifest["engine"]
    write_manifest(exact_corpus, manifest)
    assert golden.load(exact_corpus).engine == "exact"
    assert golden.verify(exact_corpus) == []

    manifest = manifest_of(corpus)
    manifest["engine"] = "quantum"
    write_manifest(corpus, manifest)
    assert list(golden.load(corpus)) == SMOKE  # readable
    problems = golden.verify(corpus)
    assert len(problems) == 1 and "engine 'quantum' is unknown" in problems[0]
    assert golden.verify(corpus, regenerate=False) == []


def test_generate_rejects_an_unknown_engine(tmp_path):
    with pytest.raises(ValueError, match="engine"):
        golden.generate(tmp_path / "x", sweep("smoke"), engine="mpmath")
    assert not (tmp_path / "x").exists()


# --- the command line ----------------------------------------------------------------------------

def test_cli_generates_verifies_and_checks_a_sweep(tmp_path, capsys):
    directory = tmp_path / "smoke"
    assert main(["golden", "generate", str(directory), "--sweep", "smoke"]) == 0
    assert "wrote 3 cases" in capsys.readouterr().out
    assert golden.load(directory).engine == "reference"
    assert main(["golden", "verify", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "reference outputs within 1e-12" in out
    assert main(["check", "numpy", "--corpus", str(directory), "--grads"]) == 0
    out = capsys.readouterr().out
    assert "3 pass, 0 policy, 0 fail, 0 unsupported (3 cases)" in out
    assert main(["check", "numpy", "--corpus", str(directory), "--dtype", "float32"]) == 0
    assert "1 pass, 0 policy, 0 fail, 0 unsupported (1 cases)" in capsys.readouterr().out


@pytest.mark.parametrize("change", [lambda x: np.nan, lambda x: x * 1.01 + 1e-3],
                         ids=["nan", "one_percent"])
def test_cli_check_uses_the_corpus_values_and_refuses_wrong_ones(tmp_path, corpus, capsys,
                                                                change):
    # A stored value that disagrees with refmask's float64 reference (re-hashed, so only the
    # value check can see it) stops the run: judging against it would be meaningless.
    rewrite_member(corpus, SMOKE[0], "exact.out", entry_changed((0, 0, 3, 1), change))
    assert main(["check", "numpy", "--corpus", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert SMOKE[0] in err and "disagrees with refmask's float64 reference" in err


def test_cli_sweep_narrowed_by_dtype_and_engine_choice(tmp_path, capsys):
    directory = tmp_path / "f64"
    assert main(["golden", "generate", str(directory), "--sweep", "smoke", "--dtype",
                 "float64", "--engine", "reference"]) == 0
    assert list(golden.load(directory)) == [SMOKE[0]]
    catalog_dir = tmp_path / "catalog"
    assert main(["golden", "generate", str(catalog_dir), "--filter", "full/square",
                 "--dtype", "float16", "--engine", "reference"]) == 0
    assert golden.load(catalog_dir).engine == "reference"
    assert golden.verify(catalog_dir) == []


@pytest.mark.parametrize("argv, message", [
    (["golden", "generate", "DIR", "--sweep", "nope"], "--sweep"),
    (["golden", "generate", "DIR", "--sweep", "smoke", "--filter", "no-such-case"],
     "no case matches"),
    (["check", "numpy", "--corpus", "DIR"], "does not exist"),
])
def test_cli_errors(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / "d") if a == "DIR" else a for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def _long_case_above_the_fast_threshold():
    """A long-sweep case big enough (2 heads x 512 x 512 scores) that ``path="auto"`` would
    hand it to refmask.fast."""
    case = next(c for c in sweep("long") if c.id == "long/causal/top_left/512@float64")
    assert case.q_heads * case.q_len * case.k_len >= 2 ** 19
    return case


def _exact_path_outputs(case, inputs):
    """The case's outputs computed here directly on the exact path, in the case's layout."""
    from refmask.attention import attention, attention_vjp
    from refmask.case import attention_kwargs

    values = {n: x if x.dtype == np.bool_ else np.asarray(x, np.float64)
              for n, x in inputs.items()}
    kwargs = attention_kwargs(case, values)
    result = attention(values["q"], values["k"], values["v"], **kwargs, path="exact")
    grads = attention_vjp(values["q"], values["k"], values["v"], values["d_out"], **kwargs,
                          path="exact")
    return {"out": result.out, "lse": result.lse, "dq": grads.dq, "dk": grads.dk,
            "dv": grads.dv}


def test_a_reference_engine_corpus_holds_exact_path_values_never_the_fast_paths(tmp_path):
    """Golden provenance: the reference engine computes with the exact path whatever the size,
    so its corpus is the same whether or not refmask.fast exists; the fast path's values differ
    in the last bits, so a corpus computed by it would fail this test."""
    from refmask import fast
    from refmask.case import attention_kwargs

    case = _long_case_above_the_fast_threshold()
    corpus = golden.load(golden.generate(tmp_path / "long", [case], engine="reference"))
    stored = corpus[case.id]
    direct = _exact_path_outputs(case, stored.inputs)
    for name, value in direct.items():
        assert np.array_equal(stored.expected[name], value), name
    values = {n: np.asarray(x, np.float64) for n, x in stored.inputs.items()}
    by_fast = fast.attention(values["q"], values["k"], values["v"],
                             **attention_kwargs(case, values)).out
    assert not np.array_equal(stored.expected["out"], by_fast)


def test_the_numpy_adapter_runs_the_exact_path_and_refmask_fast_is_judged_apart():
    from refmask.adapters import load

    case = _long_case_above_the_fast_threshold()
    inputs = case_inputs(case)
    direct = _exact_path_outputs(case, inputs)
    output = load("numpy").run(case, inputs, grads=True)
    assert np.array_equal(np.asarray(output.out), direct["out"])
    assert all(np.array_equal(np.asarray(output.grads[n]), direct[n]) for n in ("dq", "dk", "dv"))
    fast_output = load("refmask.fast").run(case, inputs, grads=False)
    assert not np.array_equal(np.asarray(fast_output.out), direct["out"])
