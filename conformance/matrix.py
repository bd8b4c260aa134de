"""The published conformance matrix: every backend x every case family, in one Markdown block.

    refmask matrix BACKEND... [--update docs/conformance.md]

runs the suite against each backend (every catalog case, every dtype) and renders:

* the matrix: one row per case family, one column per backend; a cell is ``ok N`` when all
  N cases pass, else the worst verdict with its count and the conventions involved;
* the divergences: per backend, each distinct ``policy``/``fail`` convention or reason with
  the cases it hit;
* the versions measured on (refmask, numpy, Python, and each backend's own version notes).

With ``--update FILE`` the block between ``<!-- matrix:begin -->`` and ``<!-- matrix:end -->``
in FILE is replaced (the hand-written explanations around it stay); the file is rewritten
atomically.
"""

from __future__ import annotations

import os
import platform
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

import refmask

from .runner import Report, check

BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"
_ORDER = ("fail", "policy", "unsupported", "pass")


def _cell(results: list) -> str:
    counts = {verdict: sum(r.verdict == verdict for r in results) for verdict in _ORDER}
    total = len(results)
    if counts["fail"] == counts["policy"] == counts["unsupported"] == 0:
        return f"ok {total}"
    parts = []
    for verdict in ("fail", "policy", "unsupported"):
        if counts[verdict]:
            names = sorted({r.convention for r in results
                            if r.verdict == verdict and r.convention})
            label = {"fail": "**FAIL**", "policy": "policy", "unsupported": "n/a"}[verdict]
            suffix = f" ({', '.join(names)})" if names and verdict != "unsupported" else ""
            parts.append(f"{label} {counts[verdict]}{suffix}")
    if counts["pass"]:
        parts.append(f"ok {counts['pass']}")
    return " / ".join(parts) + f" of {total}"


def _kind_of_failure(result) -> str:
    """A short name for a fail no explanation matched: a crash, NaN/inf placement or error."""
    if result.reason.startswith("the backend raised"):
        return result.reason.split(":")[0]
    bad = [c for c in result.checks if not c.ok]
    if any(c.nonfinite_mismatch for c in bad):
        return "NaN/inf placement in " + ", ".join(c.name for c in bad if c.nonfinite_mismatch)
    return "error above tolerance in " + ", ".join(c.name for c in bad)


def _divergences(report: Report) -> list[str]:
    groups: dict = defaultdict(list)
    for result in report.results:
        if result.verdict in ("policy", "fail"):
            key = (result.verdict, result.convention or _kind_of_failure(result))
            groups[key].append(result)
    lines = []
    for (verdict, name), results in sorted(groups.items()):
        bases = sorted({r.case.name for r in results})
        shown = ", ".join(f"`{b}`" for b in bases[:6]) + (" ..." if len(bases) > 6 else "")
        lines.append(f"- `{report.backend}` **{verdict}** `{name}`: {len(results)} cases "
                     f"({shown}). {results[0].reason}")
    return lines


#: backend-name prefix -> the distributions whose versions a measurement depends on
_DISTRIBUTIONS = {
    "torch": ("torch",), "jax": ("jax", "jaxlib"), "flax": ("flax", "jax"),
    "keras": ("keras", "tensorflow-cpu", "tensorflow"), "onnxruntime": ("onnx", "onnxruntime"),
    "hf": ("transformers", "torch"), "cupy": ("cupy-cuda12x", "cupy-cuda11x", "cupy"),
}


def backend_versions(backend: str) -> str:
    """``"torch 2.13.0+cpu"``-style versions of the distributions behind a backend name."""
    from importlib import metadata

    found = []
    for name in _DISTRIBUTIONS.get(backend.split(".")[0], ()):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def render(reports: list[Report]) -> str:
    """The Markdown block (without the markers)."""
    families: list = []
    for report in reports:
        for result in report.results:
            if result.case.family not in families:
                families.append(result.case.family)
    lines = ["| family | " + " | ".join(f"`{r.backend}`" for r in reports) + " |",
             "|---|" + "---|" * len(reports)]
    for family in families:
        cells = [_cell([x for x in r.results if x.case.family == family]) for r in reports]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    lines += ["", "Totals:", ""]
    for report in reports:
        counts = report.counts()
        lines.append(f"- `{report.backend}`: " + ", ".join(f"{counts[v]} {v}" for v in counts))
    divergent = [line for report in reports for line in _divergences(report)]
    if divergent:
        lines += ["", "Divergences (each explained below the matrix):", "", *divergent]
    lines += ["", f"Measured with refmask {refmask.__version__} (spec {refmask.SPEC_VERSION}), "
              f"numpy {np.__version__}, Python {platform.python_version()} on "
              f"{platform.machine()}, CPU."]
    for report in reports:
        details = [part for part in (backend_versions(report.backend),
                                     report.environment.get("backend_notes")) if part]
        if details:
            lines.append(f"- `{report.backend}`: {'; '.join(details)}")
    return "\n".join(lines)


def read_block_file(path: str | os.PathLike[str]) -> str:
    """The text of ``path``, checked to be a writable UTF-8 file holding the BEGIN ... END
    markers (``refmask matrix --update`` checks this before measuring)."""
    from refmask._files import check_output_path

    check_output_path(path, True, where="matrix", name="--update")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"matrix --update {path}: not UTF-8 text ({error})") from None
    if not os.access(path, os.W_OK):
        raise PermissionError(f"matrix --update {path}: the file is not writable")
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise ValueError(f"matrix --update {path}: the file has no {BEGIN} ... {END} block")
    return text


def update_file(path: str | os.PathLike[str], block: str) -> None:
    """Replace the text between the markers of ``path`` with ``block``, atomically."""
    from refmask._files import write_atomic

    text = read_block_file(path)
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    write_atomic(f"{head}{BEGIN}\n{block}\n{END}{tail}".encode(), path, True,
                 where="refmask matrix", name="--update")


def measure(backends: Iterable[str], *, dtypes: Sequence[str] | None = None,
            progress: Callable[..., Any] | None = None) -> list[Report]:
    """One report per backend over the whole catalog (or the given dtypes)."""
    return [check(backend, dtypes=dtypes, progress=progress) for backend in backends]
