"""One verdict summary (conformance/summary.py) feeds every report format and the matrix.

A hand-made Report of six verdicts: the groups, counts and cells below are worked out by hand
from those six lines, and every renderer must show the same diagnosis groups.
"""

from __future__ import annotations

import json

from refmask.conformance import matrix, report
from refmask.conformance.cases import catalog
from refmask.conformance.runner import CaseResult, Report
from refmask.conformance.summary import summarize
from refmask.conformance.tolerance import TensorCheck

CASES = {case.id: case for case in catalog(("float64", "float32"))}


def _check(name, ok, first_bad=None, nonfinite=0):
    return TensorCheck(name=name, ok=ok, max_abs=0.5 if not ok else 1e-9, max_rel=0.1,
                       max_ulps=7.0, tolerance=1e-6, naive_error=1e-7, first_bad=first_bad,
                       nonfinite_mismatch=nonfinite)


def _result(case_id, verdict, reason="", convention=None, kind=None, checks=()):
    return CaseResult(case=CASES[case_id], backend="hand", verdict=verdict, reason=reason,
                      convention=convention, convention_kind=kind, checks=tuple(checks))


def hand_report() -> Report:
    return Report(backend="hand", environment={"refmask": "x"}, results=[
        _result("causal/top_left/square@float64", "pass", checks=[_check("out", True)]),
        _result("causal/top_left/wide@float64", "fail", "multiplied the mask",
                "mask_multiplied", "bug", [_check("out", False, (0, 1, 2, 0))]),
        _result("causal/top_left/square@float32", "fail", "multiplied the mask",
                "mask_multiplied", "bug", [_check("out", False, (1, 0, 0, 3))]),
        _result("empty_rows/all_masked@float64", "policy", "NaN rows", "empty_rows=nan",
                "policy", [_check("out", False, (0, 0, 0, 0), nonfinite=4)]),
        _result("full/square@float64", "fail", "out off",
                checks=[_check("out", False, (0, 0, 1, 1)), _check("lse", True)]),
        _result("softcap/causal@float64", "unsupported", "no softcap"),
    ])


def test_records_carry_verdict_diagnosis_and_errors():
    records = summarize(hand_report()).records
    assert [(r.case_id, r.verdict, r.diagnosis) for r in records] == [
        ("causal/top_left/square@float64", "pass", None),
        ("causal/top_left/wide@float64", "fail", "mask_multiplied"),
        ("causal/top_left/square@float32", "fail", "mask_multiplied"),
        ("empty_rows/all_masked@float64", "policy", "empty_rows=nan"),
        ("full/square@float64", "fail", "error above tolerance in out"),
        ("softcap/causal@float64", "unsupported", "no softcap"),
    ]
    wide = records[1]
    assert (wide.family, wide.dtype, wide.diagnosis_kind) == ("causal", "float64", "bug")
    assert [(e.name, e.max_abs, e.tolerance, e.max_ulps, e.first_bad) for e in wide.errors] == [
        ("out", 0.5, 1e-6, 7.0, (0, 1, 2, 0))]
    assert wide.first_bad == (0, 1, 2, 0)


def test_diagnoses_group_worst_first():
    groups = summarize(hand_report()).diagnoses()
    assert [(g.verdict, g.name, len(g.records)) for g in groups] == [
        ("fail", "error above tolerance in out", 1),
        ("fail", "mask_multiplied", 2),
        ("policy", "empty_rows=nan", 1),
        ("unsupported", "no softcap", 1),
    ]
    assert groups[1].case_names == ["causal/top_left/square", "causal/top_left/wide"]


def test_every_format_shows_the_same_groups():
    r = hand_report()
    text = report.terminal(r)
    assert "fail mask_multiplied (bug): 2 cases" in text
    assert "policy empty_rows=nan (policy): 1 case" in text
    assert "fail error above tolerance in out: 1 case" in text
    assert "1 pass, 1 policy, 3 fail, 1 unsupported (6 cases)" in text
    # family x dtype: causal float64 holds one pass and one fail; float32 one fail
    causal_row = next(line for line in text.splitlines() if line.startswith("causal "))
    assert causal_row.split() == ["causal", "FAIL", "1/2", "FAIL", "1/1"]
    md = report.markdown(r)
    assert "### fail mask_multiplied (bug): 2 cases" in md
    assert "| causal | FAIL 1/2 | FAIL 1/1 |" in md
    page = report.html(r)
    assert "fail mask_multiplied (bug): 2 cases" in page and page.count("<h3") == 4
    (data,) = json.loads(report.to_json(r))["reports"]
    assert [(g["verdict"], g["diagnosis"], g["cases"]) for g in data["diagnoses"]][1] == (
        "fail", "mask_multiplied",
        ["causal/top_left/wide@float64", "causal/top_left/square@float32"])
    assert data["records"][1]["errors"][0]["first_bad"] == [0, 1, 2, 0]
    assert data["counts"] == {"pass": 1, "policy": 1, "fail": 3, "unsupported": 1}
    block = matrix.render([r])
    assert "| causal | **FAIL** 2 (mask_multiplied) / ok 1 of 3 |" in block
    assert "- `hand` **fail** `mask_multiplied`: 2 cases (`causal/top_left/square`, " \
        "`causal/top_left/wide`). multiplied the mask" in block
    assert "- `hand` **fail** `error above tolerance in out`: 1 cases" in block
    assert "- `hand` **policy** `empty_rows=nan`: 1 cases" in block
