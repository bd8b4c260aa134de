"""The result records of a conformance run: one :class:`CaseResult` per case, one
:class:`Report` per backend, the :class:`Worst` element of a divergent case, and the
diagnosis that names why a case did not pass (read by the summary, the reports and the
fixture's :meth:`Report.assert_ok`).

Data only: the runner (:mod:`.runner`) makes them, the summary and the renderers read them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refmask.case import Case

VERDICTS = ("pass", "policy", "fail", "unsupported")


@dataclass(frozen=True)
class Worst:
    """The worst element of the first failing tensor, and where that tensor is off.

    tensor: its name; index: (b, h, i, d) of the largest error (a NaN/inf where the golden
    value is finite, or the reverse, counts as the largest); error: |actual - golden| there;
    ulps: the same in units in the last place of the case dtype; error_map: (rows, cols)
    |actual - golden| of the (b, h) slice holding it (a 1 x Tq row for the LSE), inf where
    NaN/inf placement differs.
    """

    tensor: str
    index: tuple
    error: float
    ulps: float
    error_map: np.ndarray

    def to_json(self) -> dict:
        def number(x):
            return float(x) if np.isfinite(x) else str(float(x))

        return {"tensor": self.tensor, "index": [int(i) for i in self.index],
                "error": number(self.error), "ulps": number(self.ulps)}


def worst_element(name: str, actual: Any, golden: np.ndarray, dtype: str) -> Worst | None:
    """The :class:`Worst` of one tensor (None when it has no element or a shape mismatch)."""
    from .tolerance import ulp_distance

    actual = np.asarray(actual, np.float64)
    golden = np.asarray(golden, np.float64)
    if actual.shape != golden.shape or actual.size == 0 or golden.ndim < 3:
        return None
    with np.errstate(invalid="ignore"):
        error = np.abs(actual - golden)
    same_special = (np.isnan(actual) & np.isnan(golden)) | (
        np.isinf(actual) & (actual == golden))
    error = np.where(same_special, 0.0, np.where(np.isnan(error), np.inf, error))
    index = np.unravel_index(int(np.argmax(error)), error.shape)
    b, h = index[0], index[1]
    picture = error[b, h] if error.ndim == 4 else error[b, h][None, :]
    with np.errstate(all="ignore"):
        ulps = float(ulp_distance(actual[index], golden[index], dtype)) if np.isfinite(
            error[index]) else float("inf")
    return Worst(tensor=name, index=tuple(int(i) for i in index), error=float(error[index]),
                 ulps=ulps, error_map=picture)


@dataclass(frozen=True)
class CaseResult:
    """The verdict on one case, with everything a bug report needs."""

    case: Case
    backend: str
    verdict: str
    reason: str = ""
    convention: str | None = None
    convention_kind: str | None = None
    checks: tuple = ()
    picture: str = ""
    seconds: float = 0.0
    traceback: str = ""
    worst: Worst | None = None
    diagnosis: dict | None = None

    def to_json(self) -> dict:
        return {
            "id": self.case.id, "family": self.case.family, "flags": list(self.case.flags),
            "dtype": self.case.dtype, "backend": self.backend, "verdict": self.verdict,
            "reason": self.reason, "convention": self.convention,
            "convention_kind": self.convention_kind,
            "checks": [c.to_json() for c in self.checks], "picture": self.picture,
            "seconds": round(self.seconds, 4), "mask": repr(self.case.mask),
            "traceback": self.traceback,
            "worst": None if self.worst is None else self.worst.to_json(),
            "diagnosis": self.diagnosis,
        }


@dataclass
class Report:
    """All verdicts of one run. ``interrupted``: the run stopped early (KeyboardInterrupt);
    ``results`` holds the cases judged until then."""

    backend: str
    results: list = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    judging: dict = field(default_factory=dict)
    interrupted: bool = False

    def counts(self) -> dict:
        counted = Counter(r.verdict for r in self.results)
        return {verdict: counted.get(verdict, 0) for verdict in VERDICTS}

    @property
    def failed(self) -> bool:
        return any(r.verdict == "fail" for r in self.results)

    def to_json(self) -> dict:
        return {"backend": self.backend, "counts": self.counts(),
                "environment": self.environment, "judging": self.judging,
                "interrupted": self.interrupted,
                "results": [r.to_json() for r in self.results]}

    def to_records(self) -> list[dict]:
        """One flat dict per case, from the summary's records: backend, id, family, dtype,
        flags (comma-joined), verdict, diagnosis, diagnosis_kind, reason, and the worst
        element of a divergent case (tensor, index, error, ulps; None otherwise)."""
        rows = []
        for r in self.results:
            w = r.worst
            diagnosis, kind = diagnosis_of(r)
            rows.append({
                "backend": self.backend, "id": r.case.id, "family": r.case.family,
                "dtype": r.case.dtype, "flags": ",".join(r.case.flags), "verdict": r.verdict,
                "diagnosis": diagnosis, "diagnosis_kind": kind, "reason": r.reason,
                "tensor": w.tensor if w else None, "index": w.index if w else None,
                "error": w.error if w else None, "ulps": w.ulps if w else None,
            })
        return rows

    def to_dataframe(self) -> Any:
        """:meth:`to_records` as a pandas DataFrame (needs pandas: ``pip install pandas``)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("Report.to_dataframe needs pandas (pip install pandas); "
                              "Report.to_records() gives the same rows as dicts") from None
        return pandas.DataFrame.from_records(self.to_records())

    def assert_ok(self) -> None:
        """Raise AssertionError when any case fails: one line per diagnosis (count, an
        example case and its reason), the text ``refmask check`` groups by."""
        failing = [r for r in self.results if r.verdict == "fail"]
        if not failing:
            return
        groups: dict = {}
        for r in failing:
            groups.setdefault(diagnosis_of(r)[0], []).append(r)
        lines = [f"refmask: {len(failing)} of {len(self.results)} cases of {self.backend} fail"]
        for name, members in sorted(groups.items(), key=lambda item: -len(item[1])):
            example = members[0]
            lines.append(f"  fail {name}: {len(members)} cases, e.g. {example.case.id} -- "
                         f"{example.reason}")
            if example.picture:
                lines += ["      " + row for row in example.picture.splitlines()]
        raise AssertionError("\n".join(lines))


def failure_kind(result: CaseResult) -> str:
    """A short name for a fail no explanation matched: a crash, NaN/inf placement or error."""
    raised = result.reason.find("the backend raised")
    if raised >= 0:  # also inside a split-KV partial ("partial 0 (keys [0, 4)) wrong: ...")
        return result.reason[raised:].split(":")[0]
    bad = [c for c in result.checks if not c.ok]
    if not bad:
        return result.reason.split(":")[0]
    if any(c.nonfinite_mismatch for c in bad):
        return "NaN/inf placement in " + ", ".join(c.name for c in bad if c.nonfinite_mismatch)
    return "error above tolerance in " + ", ".join(c.name for c in bad)


def diagnosis_of(result: CaseResult) -> tuple:
    """(diagnosis, kind) of a CaseResult (see the module docstring)."""
    if result.verdict in ("policy", "fail"):
        if result.convention:
            return result.convention, result.convention_kind
        return failure_kind(result), None
    if result.verdict == "unsupported":
        return result.reason, None
    return None, None


__all__ = ["VERDICTS", "CaseResult", "Report", "Worst", "diagnosis_of", "failure_kind",
           "worst_element"]
