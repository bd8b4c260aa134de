"""The verdict summary of a conformance run: built once from a Report, read by every renderer.

    Report ──summarize──> Summary(records, diagnoses) ──> report.terminal / markdown / html /
                                                           to_json, matrix.render

A :class:`Record` is one case's verdict with what a reader needs to sort it: the case id,
family, dtype and flags, the verdict, its *diagnosis* and the per-tensor errors. The diagnosis
names why a case did not pass, the same way everywhere:

    policy, fail   the matched explanation's name (``mask_multiplied``, ``empty_rows=nan``);
                   for a fail nothing explains: the kind of failure ("the backend raised
                   ValueError", "NaN/inf placement in out", "error above tolerance in out, lse")
    unsupported    the adapter's reason ("no softcap")
    pass           None

:meth:`Summary.diagnoses` groups the non-pass records by (verdict, diagnosis), worst verdict
first: one group is one thing to fix or document, however many cases it touches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from refmask.case import DTYPES, Case

from .results import VERDICTS, CaseResult, Report, diagnosis_of

#: Verdicts, worst first (a cell or a group shows its worst verdict).
WORST_FIRST = ("fail", "policy", "unsupported", "pass")


@dataclass(frozen=True)
class Record:
    """One case's verdict. ``errors`` holds a :class:`~refmask.conformance.tolerance.TensorCheck`
    per compared tensor (max error, tolerance, ulps, first bad index); ``worst`` the runner's
    :class:`~refmask.conformance.results.Worst` of a divergent case (worst element and error
    map; None otherwise); ``case`` is kept for pictures; everything else is plain data."""

    case_id: str
    case_name: str
    family: str
    dtype: str
    flags: tuple
    verdict: str
    diagnosis: str | None
    diagnosis_kind: str | None
    reason: str
    errors: tuple
    mask: str
    picture: str
    case: Case
    worst: Any = None

    @property
    def first_bad(self) -> tuple | None:
        """Where the first failing tensor first went wrong (None if none did)."""
        return next((e.first_bad for e in self.errors if not e.ok and e.first_bad is not None),
                    None)

    def to_json(self) -> dict:
        return {"id": self.case_id, "family": self.family, "dtype": self.dtype,
                "flags": list(self.flags), "verdict": self.verdict,
                "diagnosis": self.diagnosis, "diagnosis_kind": self.diagnosis_kind,
                "reason": self.reason, "errors": [e.to_json() for e in self.errors],
                "worst": None if self.worst is None else self.worst.to_json()}


@dataclass(frozen=True)
class Diagnosis:
    """The non-pass records that share a verdict and a diagnosis."""

    verdict: str
    name: str
    kind: str | None
    records: tuple

    @property
    def case_names(self) -> list:
        """The base names of the cases (dtypes merged), sorted."""
        return sorted({r.case_name for r in self.records})

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "diagnosis": self.name, "kind": self.kind,
                "cases": [r.case_id for r in self.records], "reason": self.records[0].reason}


def record(result: CaseResult) -> Record:
    """The :class:`Record` of one :class:`~refmask.conformance.results.CaseResult`."""
    diagnosis, kind = diagnosis_of(result)
    case = result.case
    return Record(case_id=case.id, case_name=case.name, family=case.family, dtype=case.dtype,
                  flags=tuple(case.flags), verdict=result.verdict, diagnosis=diagnosis,
                  diagnosis_kind=kind, reason=result.reason, errors=tuple(result.checks),
                  mask=repr(case.mask), picture=result.picture, case=case,
                  worst=result.worst)


def counts(records: Iterable[Record]) -> dict:
    """verdict -> number of records, every verdict present (report order)."""
    counted = Counter(r.verdict for r in records)
    return {verdict: counted.get(verdict, 0) for verdict in VERDICTS}


def worst(records: Iterable[Record]) -> str | None:
    """The worst verdict among the records (None when there are none)."""
    present = {r.verdict for r in records}
    return next((v for v in WORST_FIRST if v in present), None)


@dataclass(frozen=True)
class Summary:
    """Every record of one run, in run order, with the groupings the renderers share."""

    backend: str
    environment: dict
    records: tuple

    def counts(self) -> dict:
        return counts(self.records)

    def families(self) -> list:
        """Case families in the order they first appear."""
        return list(dict.fromkeys(r.family for r in self.records))

    def dtypes(self) -> list:
        """The dtypes present, in catalog order."""
        present = {r.dtype for r in self.records}
        return [d for d in DTYPES if d in present]

    def select(self, **fields: Any) -> list:
        """The records whose attributes equal ``fields`` (e.g. ``family="causal"``)."""
        return [r for r in self.records
                if all(getattr(r, name) == value for name, value in fields.items())]

    def by_flag(self) -> dict:
        """flag -> verdict counts, flags sorted."""
        flags = sorted({flag for r in self.records for flag in r.flags})
        return {flag: counts([r for r in self.records if flag in r.flags]) for flag in flags}

    def diagnoses(self) -> list:
        """The non-pass records grouped by (verdict, diagnosis): worst verdict first, then by
        name; each group's records in run order."""
        groups: dict = {}
        for r in self.records:
            if r.verdict != "pass":
                groups.setdefault((r.verdict, r.diagnosis or ""), []).append(r)
        ordered = sorted(groups.items(), key=lambda item: (WORST_FIRST.index(item[0][0]),
                                                           item[0][1]))
        return [Diagnosis(verdict=verdict, name=name, kind=members[0].diagnosis_kind,
                          records=tuple(members)) for (verdict, name), members in ordered]


def summarize(report: Report) -> Summary:
    """The :class:`Summary` of a :class:`~refmask.conformance.results.Report`."""
    return Summary(backend=report.backend, environment=dict(report.environment),
                   records=tuple(record(r) for r in report.results))
