"""Expectations: recorded verdicts, so CI fails on a *change*, not on a known divergence.

    refmask check onnxruntime --write-expect ci/onnx.json       # record (with versions)
    refmask check onnxruntime --expect ci/onnx.json             # exit 1 only on a difference

An expectations file is JSON::

    {"schema": "refmask-expectations/1",
     "backends": {"<backend>": {"versions": {"onnxruntime": "1.31.1", ...},
                                "refmask": "0.1.0", "judging": {...},
                                "verdicts": {"<case id>": {"verdict": "policy",
                                                           "convention": "causal=top_left"}}}}}

:func:`compare` lists every difference between a run and the record as a :class:`Change`:
a new fail (a recorded case that now fails, or a case the record does not hold that fails),
a fixed fail, a changed verdict or a changed convention name. A case the record does not
hold that does not fail (the catalog grew) is a warning, and cases the record holds but the
run did not judge (a narrower ``--filter``/``--dtype``) are not differences. When the
backend versions of the run differ from the recorded ones, :func:`compare` returns a warning
naming both, so an upgrade reads as "these verdicts changed with onnxruntime 1.31.1 ->
1.32.0".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import refmask

SCHEMA = "refmask-expectations/1"


def backend_versions(backend: str) -> dict:
    """{distribution: version} of the distributions a backend's verdicts depend on (numpy
    always; the framework of an adapter family)."""
    from importlib import metadata

    from .matrix import _DISTRIBUTIONS

    found = {}
    for name in ("numpy", *_DISTRIBUTIONS.get(backend.split(".")[0], ())):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _user_versions(report) -> dict:
    framework = (report.judging or {}).get("framework")
    return backend_versions(framework) if framework else {}


def record(reports: Iterable) -> dict:
    """The expectations document of some reports (one entry per backend)."""
    backends = {}
    for report in reports:
        versions = {**backend_versions(report.backend), **_user_versions(report)}
        backends[report.backend] = {
            "versions": versions, "refmask": refmask.__version__,
            "judging": report.judging,
            "verdicts": {r.case.id: {"verdict": r.verdict, "convention": r.convention}
                         for r in report.results},
        }
    return {"schema": SCHEMA, "backends": backends}


def write(path: str | os.PathLike, reports: Iterable, *, overwrite: bool = False) -> None:
    """Record the verdicts of ``reports`` in ``path`` (atomically; an existing file only with
    ``overwrite``)."""
    from refmask._files import write_atomic

    text = json.dumps(record(reports), indent=1, sort_keys=True) + "\n"
    write_atomic(text.encode("utf-8"), path, overwrite, where="refmask check",
                 name="--write-expect")


def load(path: str | os.PathLike) -> dict:
    """Read and check an expectations file; ValueError naming the defect."""
    where = f"--expect {path}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file (record one with --write-expect)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{where}: schema must be {SCHEMA!r}, got "
                         f"{data.get('schema') if isinstance(data, dict) else type(data)!r}")
    backends = data.get("backends")
    if not isinstance(backends, dict):
        raise ValueError(f"{where}: 'backends' must be an object")
    for name, entry in backends.items():
        verdicts = entry.get("verdicts") if isinstance(entry, dict) else None
        if not isinstance(verdicts, dict) or not all(
                isinstance(v, dict) and "verdict" in v for v in verdicts.values()):
            raise ValueError(f"{where}: backend {name!r} must hold 'verdicts': "
                             "{case id: {verdict, convention}}")
    return data


@dataclass(frozen=True)
class Change:
    """One verdict that differs from the record."""

    backend: str
    case_id: str
    kind: str  # "new fail", "fixed fail", "changed verdict", "changed convention"
    expected: dict | None
    found: dict

    def __str__(self) -> str:
        def show(entry):
            if entry is None:
                return "(not recorded)"
            convention = entry.get("convention")
            return entry["verdict"] + (f" ({convention})" if convention else "")

        return (f"{self.kind}: {self.backend} {self.case_id}: expected {show(self.expected)}, "
                f"got {show(self.found)}")


def _kind(expected: dict | None, found: dict) -> str | None:
    if expected is None:
        return "new case"
    if expected["verdict"] == found["verdict"]:
        if expected.get("convention") != found.get("convention"):
            return "changed convention"
        return None
    if found["verdict"] == "fail":
        return "new fail"
    if expected["verdict"] == "fail":
        return "fixed fail"
    return "changed verdict"


def compare(reports: Iterable, expectations: dict) -> tuple[list, list]:
    """(changes, warnings) of ``reports`` against a loaded expectations document."""
    changes, warnings = [], []
    recorded = expectations["backends"]
    for report in reports:
        entry = recorded.get(report.backend)
        if entry is None:
            warnings.append(f"{report.backend}: not in the expectations file; every fail "
                            "is a new fail")
            entry = {"verdicts": {}, "versions": {}}
        versions = {**backend_versions(report.backend), **_user_versions(report)}
        before = entry.get("versions") or {}
        moved = {k: (before.get(k), v) for k, v in versions.items()
                 if k in before and before[k] != v}
        if moved:
            warnings.append(f"{report.backend}: versions differ from the record: " + ", ".join(
                f"{k} {old} -> {new}" for k, (old, new) in sorted(moved.items())))
        unrecorded = []
        for result in report.results:
            found = {"verdict": result.verdict, "convention": result.convention}
            expected = entry["verdicts"].get(result.case.id)
            kind = _kind(expected, found)
            if kind == "new case" and found["verdict"] != "fail":
                unrecorded.append(result.case.id)
            elif kind is not None:
                changes.append(Change(report.backend, result.case.id,
                                      "new fail" if kind == "new case" else kind, expected,
                                      found))
        if unrecorded:
            warnings.append(f"{report.backend}: {len(unrecorded)} cases are not in the record "
                            f"and do not fail (e.g. {unrecorded[0]}); re-record with "
                            "--write-expect to pin them")
    return changes, warnings


def summary(changes: list, warnings: list) -> str:
    """The text the CLI prints: warnings, then the changes grouped by kind."""
    lines = [f"warning: {w}" for w in warnings]
    if not changes:
        lines.append("expectations: every verdict as recorded")
        return "\n".join(lines)
    lines.append(f"expectations: {len(changes)} verdicts differ from the record")
    for change in changes:
        lines.append(f"  {change}")
    return "\n".join(lines)


__all__ = ["SCHEMA", "Change", "backend_versions", "compare", "load", "record", "summary",
           "write"]
