"""The published conformance matrix: every backend x every case family, in one Markdown block.

    refmask matrix BACKEND... [--update docs/conformance.md]

runs the suite against each backend (every catalog case, every dtype) and renders:

* the matrix: one row per case family, one column per backend; a cell is ``ok N`` when all
  N cases pass, else the worst verdict with its count and the conventions involved;
* the divergences: per backend, each ``policy``/``fail`` diagnosis (the summary's grouping,
  :mod:`~refmask.conformance.summary`, as in the single-backend reports) with the cases it hit;
* the versions measured on (refmask, numpy, Python, and each backend's own version notes).

With ``--update FILE`` the block between ``<!-- matrix:begin -->`` and ``<!-- matrix:end -->``
in FILE is replaced (the hand-written explanations around it stay); the file is rewritten
atomically.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

import refmask

from .runner import Report, check
from .summary import WORST_FIRST, Summary, summarize

BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


def _cell(records: list) -> str:
    counts = {verdict: sum(r.verdict == verdict for r in records) for verdict in WORST_FIRST}
    total = len(records)
    if counts["fail"] == counts["policy"] == counts["unsupported"] == 0:
        return f"ok {total}"
    parts = []
    for verdict in ("fail", "policy", "unsupported"):
        if counts[verdict]:
            names = sorted({r.diagnosis for r in records
                            if r.verdict == verdict and r.diagnosis_kind})
            label = {"fail": "**FAIL**", "policy": "policy", "unsupported": "n/a"}[verdict]
            suffix = f" ({', '.join(names)})" if names else ""
            parts.append(f"{label} {counts[verdict]}{suffix}")
    if counts["pass"]:
        parts.append(f"ok {counts['pass']}")
    return " / ".join(parts) + f" of {total}"


def _divergences(summary: Summary) -> list[str]:
    lines = []
    for group in summary.diagnoses():
        if group.verdict not in ("policy", "fail"):
            continue
        bases = group.case_names
        shown = ", ".join(f"`{b}`" for b in bases[:6]) + (" ..." if len(bases) > 6 else "")
        lines.append(f"- `{summary.backend}` **{group.verdict}** `{group.name}`: "
                     f"{len(group.records)} cases ({shown}). {group.records[0].reason}")
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
    summaries = [summarize(report) for report in reports]
    families = list(dict.fromkeys(f for s in summaries for f in s.families()))
    lines = ["| family | " + " | ".join(f"`{s.backend}`" for s in summaries) + " |",
             "|---|" + "---|" * len(summaries)]
    for family in families:
        cells = [_cell(s.select(family=family)) for s in summaries]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    lines += ["", "Totals:", ""]
    for summary in summaries:
        counts = summary.counts()
        lines.append(f"- `{summary.backend}`: " + ", ".join(f"{counts[v]} {v}" for v in counts))
    divergent = [line for summary in summaries for line in _divergences(summary)]
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

    if not os.path.isfile(path):
        raise FileNotFoundError(f"matrix --update {path}: no such file (it must exist and hold "
                                f"the {BEGIN} ... {END} markers)")
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
