"""Reports of a conformance run: terminal table, JSON, Markdown and HTML.

* ``terminal(report)``: one line per family x dtype with the verdict counts, then every
  non-pass verdict with its reason; colour only when asked for (``colour=True``, which the
  CLI sets when stdout is a terminal and ``NO_COLOR`` is unset).
* ``to_json(report)``: everything, for machines.
* ``markdown(report)`` / ``html(report)``: the conformance matrix (family x dtype), the flag
  breakdown, and each divergence with its reason and a picture of the mask (HTML embeds
  PNGs) -- the page to link in a bug report.
"""

from __future__ import annotations

import base64
import html as html_lib
import json
from collections import defaultdict

from refmask import render

from .cases import DTYPES
from .runner import VERDICTS, Report

_COLOURS = {"pass": "32", "policy": "33", "fail": "31", "unsupported": "90"}
_SYMBOL = {"pass": "ok", "policy": "policy", "fail": "FAIL", "unsupported": "n/a"}


def _paint(text: str, verdict: str, colour: bool) -> str:
    return f"\033[{_COLOURS[verdict]}m{text}\033[0m" if colour else text


def _matrix(report: Report) -> dict:
    """{family: {dtype: {verdict: count}}}, families in catalog order."""
    table: dict = {}
    for result in report.results:
        row = table.setdefault(result.case.family, {})
        cell = row.setdefault(result.case.dtype, {v: 0 for v in VERDICTS})
        cell[result.verdict] += 1
    return table


def _by_flag(report: Report) -> dict:
    table: dict = defaultdict(lambda: {v: 0 for v in VERDICTS})
    for result in report.results:
        for flag in result.case.flags:
            table[flag][result.verdict] += 1
    return dict(sorted(table.items()))


def _cell_text(cell: dict | None) -> str:
    if not cell:
        return "-"
    worst = next(v for v in ("fail", "policy", "unsupported", "pass") if cell[v])
    total = sum(cell.values())
    return f"{_SYMBOL[worst]} {cell[worst]}/{total}" if worst != "pass" else f"ok {total}"


def _dtypes(report: Report) -> list:
    present = {r.case.dtype for r in report.results}
    return [d for d in DTYPES if d in present]


def terminal(report: Report, *, colour: bool = False, details: bool = True,
             verbose: bool = False) -> str:
    dtypes = _dtypes(report)
    matrix = _matrix(report)
    width = max([len("family")] + [len(f) for f in matrix])
    lines = [f"refmask check {report.backend}",
             f"{'family':<{width}}  " + "  ".join(f"{d:>14}" for d in dtypes)]
    for family, row in matrix.items():
        cells = []
        for dtype in dtypes:
            text = _cell_text(row.get(dtype))
            verdict = next((v for v in ("fail", "policy", "unsupported", "pass")
                            if row.get(dtype, {}).get(v)), "unsupported")
            cells.append(_paint(f"{text:>14}", verdict, colour))
        lines.append(f"{family:<{width}}  " + "  ".join(cells))
    if details:
        shown = [r for r in report.results if r.verdict != "pass"]
        if shown:
            lines.append("")
        for result in shown:
            lines.append(_paint(f"{result.verdict:>11}", result.verdict, colour)
                         + f"  {result.case.id}: {result.reason}")
            if result.verdict == "fail" and result.picture:
                lines.extend("             " + row for row in result.picture.splitlines())
    counts = report.counts()
    lines.append("")
    lines.append(", ".join(f"{counts[v]} {v}" for v in VERDICTS)
                 + f" ({len(report.results)} cases)")
    return "\n".join(lines)


#: The version of the JSON report document; its JSON Schema ships as
#: ``refmask/conformance/schema/report.schema.json`` (:func:`json_schema_path`).
SCHEMA_VERSION = 2


def json_schema_path():
    """The published JSON Schema of :func:`to_json`'s document."""
    from pathlib import Path

    return Path(__file__).parent / "schema" / "report.schema.json"


def document(reports) -> dict:
    """The JSON report document of one or several reports (one per backend)."""
    reports = [reports] if isinstance(reports, Report) else list(reports)
    return {"schema_version": SCHEMA_VERSION, "schema": "refmask-report",
            "reports": [r.to_json() for r in reports]}


def to_json(reports) -> str:
    """:func:`document` as JSON text (no NaN: non-finite numbers are written as strings)."""
    return json.dumps(document(reports), indent=2, sort_keys=False, allow_nan=False,
                      default=str)


def _divergences(report: Report) -> list:
    return [r for r in report.results if r.verdict in ("fail", "policy", "unsupported")]


def markdown(report: Report) -> str:
    dtypes = _dtypes(report)
    env = report.environment
    lines = [f"# refmask conformance: `{report.backend}`", "",
             f"refmask {env.get('refmask')} (spec {env.get('spec')}), numpy "
             f"{env.get('numpy')}, Python {env.get('python')} on {env.get('machine')}. "
             f"{env.get('backend_notes', '')}", "",
             "| family | " + " | ".join(dtypes) + " |",
             "|---|" + "---|" * len(dtypes)]
    for family, row in _matrix(report).items():
        lines.append(f"| {family} | " + " | ".join(_cell_text(row.get(d)) for d in dtypes)
                     + " |")
    counts = report.counts()
    lines += ["", "Totals: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS), "",
              "## By flag", "", "| flag | " + " | ".join(VERDICTS) + " |",
              "|---|" + "---|" * len(VERDICTS)]
    for flag, cell in _by_flag(report).items():
        lines.append(f"| {flag} | " + " | ".join(str(cell[v]) for v in VERDICTS) + " |")
    divergent = _divergences(report)
    if divergent:
        lines += ["", "## Divergences", ""]
        for result in divergent:
            lines.append(f"- **{result.verdict}** `{result.case.id}` ({result.case.mask!r}): "
                         f"{result.reason}")
            if result.picture:
                lines += ["", "  ```", *("  " + p for p in result.picture.splitlines()),
                          "  ```"]
    return "\n".join(lines) + "\n"


def _png_data_uri(result) -> str:
    case = result.case
    if case.q_len == 0 or case.k_len == 0:
        return ""
    b, h = 0, 0
    for check in result.checks:
        if not check.ok and check.first_bad is not None and len(check.first_bad) >= 2:
            b, h = check.first_bad[0], check.first_bad[1]
            break
    cell = max(2, min(12, 240 // max(case.q_len, case.k_len)))
    data = render.to_png(case.keep()[b, h], cell=cell)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def html(report: Report) -> str:
    esc = html_lib.escape
    dtypes = _dtypes(report)
    colour = {"pass": "#d8f0d8", "policy": "#fff3c4", "fail": "#f8d0d0", "unsupported": "#eee"}
    rows = []
    for family, row in _matrix(report).items():
        cells = []
        for dtype in dtypes:
            cell = row.get(dtype)
            verdict = next((v for v in ("fail", "policy", "unsupported", "pass")
                            if cell and cell[v]), "unsupported")
            cells.append(f'<td style="background:{colour[verdict]}">{esc(_cell_text(cell))}'
                         "</td>")
        rows.append(f"<tr><th>{esc(family)}</th>{''.join(cells)}</tr>")
    items = []
    for result in _divergences(report):
        picture = _png_data_uri(result)
        image = f'<img alt="mask" src="{picture}">' if picture else ""
        items.append(
            f'<li><b style="background:{colour[result.verdict]}">{esc(result.verdict)}</b> '
            f"<code>{esc(result.case.id)}</code> <code>{esc(repr(result.case.mask))}</code><br>"
            f"{esc(result.reason)}<br>{image}"
            + (f"<pre>{esc(result.picture)}</pre>" if result.picture else "") + "</li>")
    env = report.environment
    counts = report.counts()
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
        f"<p>{', '.join(f'{counts[v]} {v}' for v in VERDICTS)}</p>"
        "<table><tr><th>family</th>" + "".join(f"<th>{esc(d)}</th>" for d in dtypes)
        + "</tr>" + "".join(rows) + "</table>"
        + (f"<h2>Divergences</h2><ul>{''.join(items)}</ul>" if items else "")
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


def write_many(reports, path: str, *, overwrite: bool = False) -> None:
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
