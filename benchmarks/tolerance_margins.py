"""How tight the verdicts are: error / tolerance of legitimate kernels, real backends and
wrong outputs over the catalog (the table of docs/conformance.md, spec 5.2).

    python benchmarks/tolerance_margins.py                      legit kernels and wrong outputs
    python benchmarks/tolerance_margins.py torch.sdpa jax.dpa   backends, bfloat16 and float16
    python benchmarks/tolerance_margins.py --grads [backends]   the same for dq, dk, dv,
                                                                dbias, dsinks

Each row: implementation, dtype, pass/policy/fail/unsupported counts, then the median and
maximum over the cases of ``worst`` (max |error| / per-element tolerance of the output) and
``aggregate`` (weighted RMS error / its limit) over the cases judged pass or fail (a backend's
declared conventions, verdict ``policy``, are left out of the ratios). A case fails when
either exceeds 1. With ``--grads`` the ratios are those of the gradient checks, the wrong
implementations scale the exact gradients (with the exact output), and a backend's case
counts only where its output is right. The legitimate kernels and the wrong outputs are those of
tests/legit_kernels.py; backends are run with the diagnosis on, so their declared policies
count as ``policy``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import legit_kernels as lk  # noqa: E402

from refmask.conformance.cases import DTYPES  # noqa: E402
from refmask.conformance.runner import check  # noqa: E402

WRONG = {"x1.01": 1.01, "x1.003": 1.003, "x(1+1e-5)": 1 + 1e-5, "x(1+1e-12)": 1 + 1e-12,
         "x0.5": 0.5, "x0": 0.0}
WRONG_GRADIENTS = {"x1.02": 1.02, **WRONG}
GRADIENTS = ("dq", "dk", "dv", "dbias", "dsinks")


def rows(name: str, target, dtypes, *, explain: bool = False, grads: bool = False) -> list[str]:
    report = check(target, dtypes=dtypes, explain=explain, grads=grads)
    names = GRADIENTS if grads else ("out",)
    lines = []
    for dtype in dtypes:
        results = [r for r in report.results if r.case.dtype == dtype]
        judged = [r for r in results if r.verdict in ("pass", "fail")]  # no declared policy
        if grads:  # the gradients of a case whose output is right
            judged = [r for r in results if r.verdict != "unsupported" and all(
                c.ok for c in r.checks if c.name in ("out", "lse"))]
        outs = [c for r in judged for c in r.checks if c.name in names]
        if not outs:
            continue
        worst = [c.worst_ratio for c in outs]
        aggregate = [c.aggregate / c.aggregate_limit for c in outs if c.aggregate is not None]
        counts = [sum(r.verdict == v for r in results)
                  for v in ("pass", "policy", "fail", "unsupported")]
        lines.append(f"| {name} | {dtype} | {'/'.join(map(str, counts))} | "
                     f"{np.median(worst):.3g} | {np.max(worst):.3g} | "
                     f"{np.median(aggregate):.3g} | {np.max(aggregate):.3g} |")
    return lines


def main(argv: list[str]) -> int:
    print("| implementation | dtype | pass/policy/fail/n-a | worst median | worst max | "
          "aggregate median | aggregate max |")
    print("|---|---|---|---|---|---|---|")
    grads = "--grads" in argv
    argv = [a for a in argv if a != "--grads"]
    if argv:
        for backend in argv:
            print("\n".join(rows(backend, backend, ["bfloat16", "float16"], explain=True,
                                 grads=grads)), flush=True)
        return 0
    legit = lk.LEGIT_BACKWARD if grads else lk.LEGIT
    for name, fn in legit.items():
        print("\n".join(rows(name, fn, list(DTYPES), grads=grads)), flush=True)
    wrong = lk.exact_gradients_scaled if grads else lk.exactly_scaled
    for name, factor in (WRONG_GRADIENTS if grads else WRONG).items():
        print("\n".join(rows(name, wrong(factor), list(DTYPES), grads=grads)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
