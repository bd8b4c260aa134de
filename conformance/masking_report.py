"""Reports of token-masker verdicts: Markdown/JSON text and matplotlib histograms.

Histograms need matplotlib (the optional extra ``refmask[plots]``); without it
:func:`plot_histograms` returns None and the report says the pictures were skipped.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence

import numpy as np

from refmask import tokens
from refmask._files import write_atomic

from .masking import MaskingVerdict

__all__ = ["plot_histograms", "to_json", "to_markdown", "write_report"]


def plot_histograms(verdict: MaskingVerdict, path: str | os.PathLike | None = None, *,
                    rate: float = 0.15, overwrite: bool = False) -> bytes | None:
    """PNG bytes: per-row selection rates (and span lengths) against what the spec expects.

    Left: the rows' selection rates with the specified rate marked. Right (span maskers): the
    masker's run lengths against the reference's, as shares. None without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    spans = "span_lengths" in verdict.histograms
    figure, axes = plt.subplots(1, 2 if spans else 1, figsize=(9 if spans else 5, 3.2),
                                squeeze=False)
    rates = np.asarray(verdict.histograms.get("row_rates", []))
    ax = axes[0, 0]
    ax.hist(rates, bins=30, color="#3c6ea0")
    ax.axvline(rate, color="#e08c1e", label=f"specified {rate}")
    ax.set_xlabel("selected / eligible, per row and epoch")
    ax.set_ylabel("rows")
    ax.legend()
    ax.set_title(verdict.masker)
    if spans:
        ax = axes[0, 1]
        runs = np.asarray(verdict.histograms["span_lengths"])
        ref = np.asarray(verdict.histograms["reference_span_lengths"])
        top = int(max(runs.max(initial=1), ref.max(initial=1)))
        edges = np.arange(0.5, top + 1.5)
        ax.hist([runs, ref], bins=edges, density=True, label=["masker", "reference"],
                color=["#3c6ea0", "#e08c1e"])
        ax.set_xlabel("masked run length")
        ax.set_ylabel("share")
        ax.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    data = buffer.getvalue()
    if path is not None:
        write_atomic(data, path, overwrite, where="plot_histograms")
    return data


def to_json(verdicts: Sequence[MaskingVerdict]) -> str:
    return json.dumps([v.to_json() for v in verdicts], indent=1) + "\n"


def to_markdown(verdicts: Sequence[MaskingVerdict], pictures: dict[str, str] | None = None
                ) -> str:
    """One section per masker: verdict, conventions, checks table, the masked batch."""
    out = ["# Token-masking conformance", ""]
    for v in verdicts:
        out += [f"## {v.masker}: {'PASS' if v.passed else 'FAIL'}", "",
                "Conventions found: " + "; ".join(v.conventions) + ".", "",
                f"Sample: {v.sample}; family-wise false-alarm rate alpha = {v.alpha} (Holm).",
                "", "| check | kind | result | p | detail |", "|---|---|---|---|---|"]
        for c in v.checks:
            p = f"{c.p_value:.3g}" if c.p_value is not None else ""
            out.append(f"| {c.name} | {c.kind} | {'ok' if c.passed else 'FAIL'} | {p} | "
                       f"{c.detail} |")
        out += ["", "```", v.picture, "```", ""]
        if pictures and v.masker in pictures:
            out += [f"![{v.masker}]({image})" for image in pictures[v.masker]] + [""]
    return "\n".join(out)


def write_report(verdicts: Sequence[MaskingVerdict], path: str | os.PathLike, *,
                 overwrite: bool = False, plots: bool = True, rate: float = 0.15) -> list[str]:
    """Write ``path`` (.json or .md); next to a .md report, the first rows of each masked batch
    as a PNG (refmask.tokens.batch_to_png) and, with ``plots``, PNG histograms (skipped
    without matplotlib). Returns the files written."""
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise ValueError(f"check-masking: the folder of --report {target!r} does not exist")
    written = []
    if target.endswith(".json"):
        write_atomic(to_json(verdicts).encode(), target, overwrite, where="check-masking",
                     name="--report")
        return [target]
    if not target.endswith(".md"):
        raise ValueError(f"check-masking: --report must end in .json or .md, got {target!r}")
    pictures: dict[str, list[str]] = {}
    stem = target[:-3]
    for v in verdicts:
        name = v.masker.replace("/", "_").replace(":", "_")
        images = pictures.setdefault(v.masker, [])
        if "batch" in v.histograms:  # the masked batch, drawn (no matplotlib needed)
            png = f"{stem}.{name}.batch.png"
            tokens.batch_to_png(v.histograms["batch"], png, pad_id=v.sample.get("pad_id"),
                                cell=6, overwrite=overwrite)
            images.append(os.path.basename(png))
            written.append(png)
        if plots:
            png = f"{stem}.{name}.png"
            if plot_histograms(v, png, rate=rate, overwrite=overwrite) is not None:
                images.append(os.path.basename(png))
                written.append(png)
    write_atomic(to_markdown(verdicts, pictures).encode(), target, overwrite,
                 where="check-masking", name="--report")
    return [target, *written]
