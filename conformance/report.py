"""Reports of a conformance run: terminal table, JSON, Markdown and HTML.

Every renderer reads the same :class:`~refmask.conformance.summary.Summary` (records with
verdict, diagnosis and errors), so the tables and the grouping by diagnosis agree everywhere:

* ``terminal(report)``: one line per family x dtype with the verdict counts, then the
  non-pass verdicts grouped by diagnosis, each case with its reason; colour only when asked
  for (``colour=True``, which the CLI sets when stdout is a terminal and ``NO_COLOR`` is unset).
* ``to_json(report)``: everything, for machines (the results, the records, the diagnoses).
* ``markdown(report)`` / ``html(report)``: the conformance matrix (family x dtype), the flag
  breakdown, and the divergences grouped by diagnosis, each case with its reason and a
  picture of the mask (HTML embeds PNGs) -- the page to link in a bug report.
"""

from __future__ import annotations

import base64
import html as html_lib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from refmask import render
from refmask.case import DTYPES

from .results import VERDICTS, Report
from .summary import Diagnosis, Record, Summary, summarize, worst

_COLOURS = {"pass": "32", "policy": "33", "fail": "31", "unsupported": "90"}
_SYMBOL = {"pass": "ok", "policy": "policy", "fail": "FAIL", "unsupported": "n/a"}


def _paint(text: str, verdict: str, colour: bool) -> str:
    return f"\033[{_COLOURS[verdict]}m{text}\033[0m" if colour else text


def _cell_text(records: list) -> str:
    """``ok N`` when all N pass, else the worst verdict and its count of N; ``-`` if empty."""
    verdict = worst(records)
    if verdict is None:
        return "-"
    if verdict == "pass":
        return f"ok {len(records)}"
    return f"{_SYMBOL[verdict]} {sum(r.verdict == verdict for r in records)}/{len(records)}"


def _group_title(group: Diagnosis) -> str:
    kind = f" ({group.kind})" if group.kind else ""
    return f"{group.verdict} {group.name}{kind}: {len(group.records)} case" + (
        "s" if len(group.records) != 1 else "")


def _group_line(group: Diagnosis) -> str:
    """One diagnosis group in one line: title, dtypes, an example and what it means."""
    dtypes = [d for d in DTYPES if any(r.dtype == d for r in group.records)]
    example = group.records[0]
    hint = example.reason
    if hint.startswith(group.name + ": "):
        hint = hint[len(group.name) + 2:]
    worst = _worst_error(example)
    return (f"{_group_title(group)} [{', '.join(dtypes)}], e.g. {example.case_id}"
            + (f" ({worst})" if worst else "") + f" -- {hint}")


def _worst_error(record: Record) -> str:
    """``out[0, 1, 3, 2]: error 1.9 = 9.2e+18 ulps``: the worst element of the first failing
    tensor (the largest error; NaN/inf placement counts as infinite)."""
    w = record.worst
    if w is None:
        return ""
    return f"{w.tensor}{list(w.index)}: error {w.error:.3g} = {w.ulps:.3g} ulps"


def rerun_command(report: Report, record: Record) -> str:
    """The ``refmask check`` command that judges this one case again, as this run did."""
    import shlex

    judging = report.judging or {}
    target = (["--impl", report.backend] if ":" in report.backend else [report.backend])
    words = ["refmask", "check", *target, "--filter", record.case_id]
    if judging.get("grads"):
        words.append("--grads")
    for key in ("framework", "device", "backward", "corpus"):
        if isinstance(judging.get(key), str):
            words += [f"--{key}", judging[key]]
    if judging.get("allow_policy"):
        words += ["--allow-policy", ",".join(judging["allow_policy"])]
    return shlex.join(words)


#: characters of a text heatmap, from exact to the largest error; "!" marks NaN/inf
_SHADES = " .:-=+*#%@"


def text_heatmap(error_map: Any, *, limit: int = 24) -> list:
    """An error map (rows, cols) as lines of :data:`_SHADES` characters scaled to its largest
    finite value, "!" where NaN/inf placement differs; at most ``limit`` rows and columns
    (the rest elided with "...")."""
    import numpy as np

    grid = np.asarray(error_map, np.float64)
    shown = grid[:limit, :limit]
    special = ~np.isfinite(shown)
    finite = np.where(np.isfinite(grid), grid, 0.0)
    top = finite.max() if finite.size else 0.0
    levels = np.zeros(shown.shape, int) if top <= 0 else np.minimum(
        len(_SHADES) - 1, np.ceil(np.where(special, 0, shown) / top * (len(_SHADES) - 1)))
    lines = ["".join("!" if bad else _SHADES[level]
                     for bad, level in zip(row_bad, row_levels, strict=True))
             for row_bad, row_levels in zip(special, levels.astype(int).tolist(), strict=True)]
    if grid.shape[1] > limit:
        lines = [line + "..." for line in lines]
    if grid.shape[0] > limit:
        lines.append("...")
    return lines


def _example_lines(record: Record) -> list:
    """Worst element, mask rows and text heatmap of a group's example (plain text lines)."""
    lines = []
    if record.worst is not None:
        w = record.worst
        b, h = w.index[0], w.index[1]
        lines.append(f"worst element {_worst_error(record)}")
        lines.append(f"error map of {w.tensor}[{b}, {h}] (rows: query i, columns: "
                     f"{'d' if w.error_map.shape[0] > 1 or w.tensor != 'lse' else 'i'}; "
                     f"'{_SHADES[-1]}' = largest, '!' = NaN/inf placement):")
        lines += ["  |" + row + "|" for row in text_heatmap(w.error_map)]
    if record.picture:
        lines += record.picture.splitlines()
    return lines


def _totals(summary: Summary) -> str:
    counts = summary.counts()
    return ", ".join(f"{counts[v]} {v}" for v in VERDICTS)


def terminal(report: Report, *, colour: bool = False, details: bool = True,
             verbose: bool = False) -> str:
    """One line per family x dtype, then (with ``details``) one line per diagnosis group --
    verdict, name, count, dtypes, an example case and what to do -- and with ``verbose`` every
    case of the group with its reason (and the mask rows of a fail), then the totals."""
    summary = summarize(report)
    dtypes = summary.dtypes()
    families = summary.families()
    width = max([len("family")] + [len(f) for f in families])
    lines = [f"refmask check {report.backend}",
             f"{'family':<{width}}  " + "  ".join(f"{d:>14}" for d in dtypes)]
    for family in families:
        cells = []
        for dtype in dtypes:
            records = summary.select(family=family, dtype=dtype)
            cells.append(_paint(f"{_cell_text(records):>14}", worst(records) or "unsupported",
                                colour))
        lines.append(f"{family:<{width}}  " + "  ".join(cells))
    groups = summary.diagnoses() if details else []
    if groups:
        lines.append("")
    for group in groups:
        lines.append(_paint(_group_line(group), group.verdict, colour))
        if verbose:
            for r in group.records:
                lines.append(f"    {r.case_id}: {r.reason}")
                if r.verdict == "fail" and r.picture:
                    lines.extend("      " + row for row in r.picture.splitlines())
    if groups and not verbose:
        lines.append("(-v: every case of each group with its reason and mask rows)")
    lines += ["", _totals(summary) + f" ({len(summary.records)} cases)"]
    return "\n".join(lines)


#: The version of the JSON report document; its JSON Schema ships as
#: ``refmask/conformance/schema/report.schema.json`` (:func:`json_schema_path`).
SCHEMA_VERSION = 2


def json_schema_path() -> Path:
    """The published JSON Schema of :func:`to_json`'s document."""
    return Path(__file__).parent / "schema" / "report.schema.json"


def _report_json(report: Report) -> dict:
    """One run: backend, counts, environment, judging, every result with its tensor checks,
    and the summary's records and diagnosis groups."""
    summary = summarize(report)
    return {**report.to_json(), "records": [r.to_json() for r in summary.records],
            "diagnoses": [g.to_json() for g in summary.diagnoses()]}


def document(reports: Report | Iterable[Report]) -> dict:
    """The JSON report document of one or several reports (one per backend)."""
    reports = [reports] if isinstance(reports, Report) else list(reports)
    return {"schema": "refmask-report", "schema_version": SCHEMA_VERSION,
            "reports": [_report_json(r) for r in reports]}


def to_json(reports: Report | Iterable[Report]) -> str:
    """:func:`document` as JSON text (no NaN: non-finite numbers are written as strings)."""
    return json.dumps(document(reports), indent=2, sort_keys=False, allow_nan=False,
                      default=str)


def markdown(report: Report) -> str:
    summary = summarize(report)
    dtypes = summary.dtypes()
    env = report.environment
    lines = [f"# refmask conformance: `{report.backend}`", "",
             f"refmask {env.get('refmask')} (spec {env.get('spec')}), numpy "
             f"{env.get('numpy')}, Python {env.get('python')} on {env.get('machine')}. "
             f"{env.get('backend_notes', '')}", "",
             "| family | " + " | ".join(dtypes) + " |",
             "|---|" + "---|" * len(dtypes)]
    for family in summary.families():
        lines.append(f"| {family} | " + " | ".join(
            _cell_text(summary.select(family=family, dtype=d)) for d in dtypes) + " |")
    lines += ["", "Totals: " + _totals(summary), "",
              "## By flag", "", "| flag | " + " | ".join(VERDICTS) + " |",
              "|---|" + "---|" * len(VERDICTS)]
    for flag, cell in summary.by_flag().items():
        lines.append(f"| {flag} | " + " | ".join(str(cell[v]) for v in VERDICTS) + " |")
    groups = summary.diagnoses()
    if groups:
        lines += ["", "## Divergences by diagnosis"]
        for group in groups:
            example = group.records[0]
            dtypes_hit = [d for d in dtypes if any(r.dtype == d for r in group.records)]
            lines += ["", f"### {_group_title(group)}", "", example.reason, "",
                      f"dtypes: {', '.join(dtypes_hit)}; cases: "
                      + ", ".join(f"`{r.case_id}`" for r in group.records[:12])
                      + (f" and {len(group.records) - 12} more" if len(group.records) > 12
                         else "")]
            detail = _example_lines(example)
            if group.verdict != "unsupported":
                lines += ["", f"Example `{example.case_id}` ({example.mask}):"]
                if detail:
                    lines += ["", "```", *detail, "```"]
                lines += ["", f"Re-run: `{rerun_command(report, example)}`"]
    return "\n".join(lines) + "\n"


def _png_data_uri(r: Record) -> str:
    case = r.case
    if case.q_len == 0 or case.k_len == 0:
        return ""
    first = r.first_bad
    b, h = (first[0], first[1]) if first is not None and len(first) >= 2 else (0, 0)
    cell = max(2, min(12, 240 // max(case.q_len, case.k_len)))
    data = render.to_png(case.keep()[b, h], cell=cell)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _heatmap_data_uri(r: Record) -> str:
    if r.worst is None or r.worst.error_map.size == 0:
        return ""
    rows, cols = r.worst.error_map.shape
    cell = max(2, min(12, 240 // max(rows, cols)))
    data = render.heatmap_png(r.worst.error_map, cell=cell)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def html(report: Report) -> str:
    esc = html_lib.escape
    summary = summarize(report)
    dtypes = summary.dtypes()
    colour = {"pass": "#d8f0d8", "policy": "#fff3c4", "fail": "#f8d0d0", "unsupported": "#eee"}
    rows = []
    for family in summary.families():
        cells = []
        for dtype in dtypes:
            records = summary.select(family=family, dtype=dtype)
            verdict = worst(records) or "unsupported"
            cells.append(f'<td style="background:{colour[verdict]}">'
                         f"{esc(_cell_text(records))}</td>")
        rows.append(f"<tr><th>{esc(family)}</th>{''.join(cells)}</tr>")
    sections = []
    for group in summary.diagnoses():
        example = group.records[0]
        dtypes_hit = [d for d in dtypes if any(r.dtype == d for r in group.records)]
        body = [f"<p>{esc(example.reason)}</p>",
                f"<p>dtypes: {esc(', '.join(dtypes_hit))}; cases: "
                + ", ".join(f"<code>{esc(r.case_id)}</code>" for r in group.records) + "</p>"]
        if group.verdict != "unsupported":
            mask_png = _png_data_uri(example)
            heat = _heatmap_data_uri(example)
            body.append(f"<p>Example <code>{esc(example.case_id)}</code> "
                        f"<code>{esc(example.mask)}</code></p>")
            if example.worst is not None:
                w = example.worst
                body.append(f"<p>worst element {esc(_worst_error(example))}</p>")
            figures = []
            if mask_png:
                figures.append(f'<figure><img alt="mask" src="{mask_png}"><figcaption>mask '
                               "(blue = attend)</figcaption></figure>")
            if heat:
                figures.append(f'<figure><img alt="error heatmap" src="{heat}"><figcaption>'
                               f"|error| of {esc(w.tensor)}[{w.index[0]}, {w.index[1]}] "
                               "(white = exact, red = largest, black = NaN/inf)"
                               "</figcaption></figure>")
            if figures:
                body.append('<div style="display:flex;gap:2em">' + "".join(figures) + "</div>")
            if example.picture:
                body.append(f"<pre>{esc(example.picture)}</pre>")
            body.append(f"<p>Re-run: <code>{esc(rerun_command(report, example))}</code></p>")
        sections.append(f'<h3 style="background:{colour[group.verdict]}">'
                        f"{esc(_group_title(group))}</h3>{''.join(body)}")
    env = report.environment
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>refmask conformance: {esc(report.backend)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .6em;"
        "border:1px solid #ccc}table{border-collapse:collapse}img{image-rendering:pixelated;"
        "margin:.3em 0}</style></head><body>"
        f"<h1>refmask conformance: <code>{esc(report.backend)}</code></h1>"
        f"<p>refmask {esc(str(env.get('refmask')))} (spec {esc(str(env.get('spec')))}), "
        f"numpy {esc(str(env.get('numpy')))}, Python {esc(str(env.get('python')))}. "
        f"{esc(str(env.get('backend_notes', '')))}</p>"
        f"<p>{esc(_totals(summary))}</p>"
        "<table><tr><th>family</th>" + "".join(f"<th>{esc(d)}</th>" for d in dtypes)
        + "</tr>" + "".join(rows) + "</table>"
        + (f"<h2>Divergences by diagnosis</h2>{''.join(sections)}" if sections else "")
        + "</body></html>\n"
    )


REPORT_SUFFIXES = (".html", ".json", ".md")


def check_suffix(path: str) -> str:
    """The report format of ``path`` from its suffix; ValueError naming --report otherwise."""
    import os

    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in REPORT_SUFFIXES:
        raise ValueError(f"--report {path}: the suffix must be one of {list(REPORT_SUFFIXES)}")
    return suffix


def write_many(reports: Report | Iterable[Report], path: str, *,
               overwrite: bool = False) -> None:
    """Write every report into one file in the format its suffix names (.json, .md, .html),
    atomically; an existing file is kept unless ``overwrite``."""
    from refmask._files import write_atomic

    reports = [reports] if isinstance(reports, Report) else list(reports)
    suffix = check_suffix(path)
    if suffix == ".json":
        text = to_json(reports)
    elif suffix == ".md":
        text = "\n".join(markdown(r) for r in reports)
    else:
        pages = [html(r) for r in reports]
        text = pages[0] if len(pages) == 1 else _join_pages(pages)
    write_atomic(text.encode("utf-8"), path, overwrite, where="refmask check", name="--report")


def _join_pages(pages: list) -> str:
    """Several HTML reports as one page: the first page's head, every body in turn."""
    head = pages[0].split("<body>", 1)[0]
    bodies = [page.split("<body>", 1)[1].rsplit("</body>", 1)[0] for page in pages]
    return head + "<body>" + "<hr>".join(bodies) + "</body></html>\n"


def write(report: Report, path: str, *, overwrite: bool = False) -> None:
    """Write the report in the format its suffix names (.json, .md, .html), atomically; an
    existing file is kept unless ``overwrite``."""
    write_many([report], path, overwrite=overwrite)
