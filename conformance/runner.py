"""The conformance runner: one verdict per (backend, case).

Verdicts:

* ``pass`` -- every returned tensor is within the tolerance model of the golden value and has
  NaN/inf exactly where the golden value has them.
* ``policy`` -- the output misses the golden value but matches the reference under a
  documented convention (:mod:`.explanations`, kind "policy"); the verdict names it.
* ``fail`` -- neither; the result carries the errors, the first offending index, a picture of
  the mask rows around it and, when the output matches a known bug, the bug's name.
* ``unsupported`` -- the backend cannot express the case natively (or is not installed here);
  the reason is given.

The golden value of a case comes from the shipped exact corpus when it holds the case, and
from the float64 reference otherwise (fuzzed cases); the tolerance comes from refmask's
naive computation of the same case in the case dtype (:mod:`.tolerance`).
"""

from __future__ import annotations

import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import refmask
from refmask import render
from refmask.adapters import Adapter, Output, Unsupported
from refmask.adapters import load as load_adapter
from refmask.case import (
    GRAD_NAMES,
    Case,
    case_inputs,
    dtype_unavailable,
    reference_outputs,
    to_bhtd,
)

from .cases import catalog
from .explanations import Explanation, explanations
from .tolerance import TensorCheck, check_tensor, score_sensitivity

if TYPE_CHECKING:
    from .golden import Corpus


VERDICTS = ("pass", "policy", "fail", "unsupported")
#: Per-case time limit (seconds) of the backend's call in :func:`check` and ``refmask check
#: --timeout``: far above what any catalog or sweep case takes on a naive NumPy implementation
#: (well under a second for the catalog), short enough that a hung kernel cannot stall a run.
DEFAULT_CASE_TIMEOUT = 300.0


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

    def to_json(self) -> dict:
        return {
            "id": self.case.id, "family": self.case.family, "flags": list(self.case.flags),
            "dtype": self.case.dtype, "backend": self.backend, "verdict": self.verdict,
            "reason": self.reason, "convention": self.convention,
            "convention_kind": self.convention_kind,
            "checks": [c.to_json() for c in self.checks], "picture": self.picture,
            "seconds": round(self.seconds, 4), "mask": repr(self.case.mask),
        }


@dataclass
class Report:
    """All verdicts of one run. ``interrupted``: the run stopped early (KeyboardInterrupt);
    ``results`` holds the cases judged until then."""

    backend: str
    results: list = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    interrupted: bool = False

    def counts(self) -> dict:
        counted = Counter(r.verdict for r in self.results)
        return {verdict: counted.get(verdict, 0) for verdict in VERDICTS}

    @property
    def failed(self) -> bool:
        return any(r.verdict == "fail" for r in self.results)

    def to_json(self) -> dict:
        return {"backend": self.backend, "counts": self.counts(),
                "environment": self.environment,
                "results": [r.to_json() for r in self.results]}


# --- references ------------------------------------------------------------------------------

def _golden_from_reference(case: Case, inputs: dict, grads: bool) -> dict:
    return reference_outputs(case, inputs, float64=True, grads=grads)


def corpus_golden(corpus: Corpus) -> Callable:
    """A golden source reading the exact values of a loaded corpus (``golden.load``).

    A case is taken from the corpus only when its stored JSON equals the case's own JSON (so
    an edited catalog never meets stale values); other cases get the float64 reference.
    """
    def golden(case: Case, inputs: dict, grads: bool) -> dict:
        entry = corpus.manifest_entry(case.id) if hasattr(corpus, "manifest_entry") else None
        if entry is None or entry["case"] != case.to_json():
            return _golden_from_reference(case, inputs, grads)
        expected = corpus[case.id].expected
        return {name: to_bhtd(case, value) if name in ("out", "dq", "dk", "dv") else value
                for name, value in expected.items()}

    return golden


def shipped_golden() -> Callable:
    """The golden source of the corpus shipped with refmask (verified on load)."""
    from .golden import load, shipped_corpus_path

    return corpus_golden(load(shipped_corpus_path()))


# --- judging one case ----------------------------------------------------------------------------

#: How far the golden value may be from refmask's float64 reference before the run stops.
GOLDEN_SANITY_RTOL = 1e-10


class GoldenDisagreement(RuntimeError):
    """The golden value and refmask's float64 reference disagree: the corpus is corrupted or
    refmask has a bug. No verdict is given, because the tolerance model would be unsound."""


def check_golden_sanity(case: Case, golden: dict, reference64: dict) -> None:
    """Raise :class:`GoldenDisagreement` unless every golden tensor is within
    ``GOLDEN_SANITY_RTOL * max(1, max|golden|)`` of the float64 reference, with NaN/inf in the
    same places.

    The tolerance model measures refmask's naive error *against the golden value*; a wrong
    golden value would widen its own tolerance. This check keeps that yardstick honest.
    """
    for name, gold in golden.items():
        if name not in reference64:
            continue
        ref = reference64[name]
        same_special = np.array_equal(np.isnan(gold), np.isnan(ref)) and np.array_equal(
            np.where(np.isinf(gold), gold, 0.0), np.where(np.isinf(ref), ref, 0.0))
        finite = np.isfinite(gold) & np.isfinite(ref)
        error = float(np.abs(gold[finite] - ref[finite]).max()) if finite.any() else 0.0
        scale = max(1.0, float(np.abs(gold[finite]).max())) if finite.any() else 1.0
        if not same_special or error > GOLDEN_SANITY_RTOL * scale:
            placement = "equal" if same_special else "differs"
            raise GoldenDisagreement(
                f"case {case.id}: the golden {name} disagrees with refmask's float64 reference "
                f"(max error {error:.3g}, NaN/inf placement {placement}); the corpus is "
                "corrupted or refmask has a bug -- run `refmask golden verify`"
            )

def _mask_rows_picture(case: Case, first_bad: tuple | None) -> str:
    """The mask rows around the first offending (b, h, i), as text."""
    if first_bad is None or len(first_bad) < 3 or case.q_len == 0 or case.k_len == 0:
        return ""
    b, h, i = first_bad[:3]
    keep = case.keep()[b, h]
    lo, hi = max(0, i - 2), min(case.q_len, i + 3)
    lines = render.to_text(keep[lo:hi], ascii=True).splitlines()
    header, rows = lines[0], lines[1:]
    rows = [f"{'>' if lo + n == i else ' '} {lo + n:>3} {row.split(' ', 1)[1]}"
            if row.strip() else row for n, row in enumerate(rows)]
    return "\n".join([f"mask rows {lo}..{hi - 1} of batch {b}, head {h} (> = first bad row):",
                      "      " + header.strip()] + rows)


def _compare(case: Case, output, golden: dict, naive: dict, grads: bool) -> list:
    kappa = score_sensitivity(golden["lse"])
    checks = [check_tensor("out", output.out, golden["out"], naive["out"], case.dtype,
                           kappa=kappa)]
    if output.lse is not None:
        checks.append(check_tensor("lse", output.lse, golden["lse"], naive["lse"], case.dtype,
                                   kappa=kappa))
    if grads and output.grads:
        for name in GRAD_NAMES:
            if name in output.grads and name in golden:
                checks.append(check_tensor(name, output.grads[name], golden[name], naive[name],
                                           case.dtype, backward=True, kappa=kappa))
    return checks


def _explain(case: Case, inputs: dict, output, checks: list, golden: dict, naive: dict,
             candidates: Iterable[Explanation]) -> Explanation | None:
    """The first explanation whose alternative reference the output matches.

    Explanations model the forward pass (out, lse) only; a failure in any other tensor (a
    gradient) is never explained away, and an explanation must match every returned tensor.
    """
    if any(not c.ok and c.name not in ("out", "lse") for c in checks):
        return None
    tol = {c.name: c.tolerance for c in checks}
    for explanation in candidates:
        if not explanation.applies(case):
            continue
        try:
            with np.errstate(all="ignore"):
                alt_out, alt_lse = explanation.reference(case, inputs)
        except (ValueError, TypeError):
            continue
        ok = check_tensor("out", output.out, alt_out, naive["out"], case.dtype,
                          tol=tol["out"]).ok
        if ok and output.lse is not None:
            ok = check_tensor("lse", output.lse, alt_lse, naive["lse"], case.dtype,
                              tol=tol["lse"]).ok
        if ok:
            return explanation
    return None


def _ordered_explanations(adapter: Adapter) -> list:
    """Explanations in trial order: the conventions the backend declares come first."""
    profile = adapter.profile
    declared = {f"empty_rows={profile.empty_rows}", f"lse_base={profile.lse_base}",
                f"causal={profile.causal_alignment}"}
    every = explanations()
    return [e for e in every if e.name in declared] + [e for e in every if e.name not in declared]


def _private_copy(value):
    """A fresh copy of one input for the backend, so nothing it does to its arguments can
    reach the arrays the golden and naive values are computed from."""
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def _run_backend(adapter: Adapter, case: Case, inputs: dict, grads: bool,
                 timeout: float | None) -> tuple:
    """``("ok", output)``, ``("raised", exception)`` or ``("timeout", None)``.

    The backend runs on private copies of the inputs; with a ``timeout`` it runs in a daemon
    thread that is abandoned (not killed: Python cannot stop a thread) when it overruns.
    Every exception counts, SystemExit and KeyboardInterrupt raised by the backend included.
    """
    copies = {name: _private_copy(value) for name, value in inputs.items()}
    box = {}

    def target():
        try:
            box["output"] = adapter.run(case, copies, grads=grads)
        except BaseException as error:  # noqa: BLE001 - a crash is the backend's verdict
            box["error"] = error

    if timeout is None:
        target()
    else:
        thread = threading.Thread(target=target, name=f"refmask-case-{case.id}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            return "timeout", None
    if "error" in box:
        return "raised", box["error"]
    return "ok", box.get("output")


def _check_timeout(timeout) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            0 < timeout < float("inf")):
        raise ValueError(f"check: timeout must be a finite number of seconds > 0 or None, got "
                         f"{timeout!r}")
    return float(timeout)


def run_case(adapter: Adapter, case: Case, *, grads: bool = False,
             golden: Callable | None = None,
             timeout: float | None = DEFAULT_CASE_TIMEOUT) -> CaseResult:
    """Judge one case; ``golden(case, inputs, grads) -> dict`` overrides the golden source.

    timeout: seconds the backend's call may take (default DEFAULT_CASE_TIMEOUT; None: no
    limit, run in this thread); over it the case fails. The backend gets private copies of
    the inputs; whatever it raises (SystemExit and KeyboardInterrupt included) or returns
    that is not a real floating array makes the case fail.
    """
    timeout = _check_timeout(timeout)
    if not isinstance(adapter, Adapter):
        raise TypeError(f"run_case: adapter must be a refmask Adapter (see resolve_backend), got "
                        f"{type(adapter).__name__}")
    if not isinstance(case, Case):
        raise TypeError(f"run_case: case must be a refmask Case, got {type(case).__name__}")
    if golden is not None and not callable(golden):
        raise TypeError(f"run_case: golden must be callable(case, inputs, grads) or None, got "
                        f"{type(golden).__name__}")
    start = time.perf_counter()

    def result(verdict, reason="", **extra):
        return CaseResult(case=case, backend=adapter.name, verdict=verdict, reason=reason,
                          seconds=time.perf_counter() - start, **extra)

    reason = adapter.unavailable() or dtype_unavailable(case.dtype) or adapter.unsupported(case)
    if reason:
        return result("unsupported", reason)
    inputs = case_inputs(case)
    grads = grads and adapter.profile.backward
    status, output = _run_backend(adapter, case, inputs, grads, timeout)
    if status == "timeout":
        return result("fail", f"the backend did not return within the timeout of {timeout:g} s "
                      "(--timeout)")
    if status == "raised":
        if isinstance(output, Unsupported):
            return result("unsupported", str(output))
        return result("fail", f"the backend raised {type(output).__name__}: {output}")
    if not isinstance(output, Output):
        return result("fail", f"the backend returned {type(output).__name__}, not an Output")
    gold = (golden or _golden_from_reference)(case, inputs, grads)
    naive = reference_outputs(case, inputs, float64=False, grads=grads)
    reference64 = naive if case.dtype == "float64" else reference_outputs(
        case, inputs, float64=True, grads=grads)
    check_golden_sanity(case, gold, reference64)
    checks = _compare(case, output, gold, naive, grads)
    if all(c.ok for c in checks):
        return result("pass", checks=tuple(checks))
    first = next(c for c in checks if not c.ok)
    picture = _mask_rows_picture(case, first.first_bad)
    explanation = _explain(case, inputs, output, checks, gold, naive,
                           _ordered_explanations(adapter))
    if explanation is not None and explanation.kind == "policy":
        return result("policy", f"{explanation.name}: {explanation.description}",
                      convention=explanation.name, convention_kind="policy",
                      checks=tuple(checks), picture=picture)
    if explanation is not None:
        return result("fail", f"matches the known bug {explanation.name}: "
                      f"{explanation.description}", convention=explanation.name,
                      convention_kind="bug", checks=tuple(checks), picture=picture)
    return result("fail", first.reason, checks=tuple(checks), picture=picture)


# --- whole runs ------------------------------------------------------------------------------

def environment(adapter: Adapter) -> dict:
    return {"refmask": refmask.__version__, "spec": refmask.SPEC_VERSION,
            "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "backend_notes": adapter.profile.notes}


def select_cases(cases: Iterable[Case] | None = None, *, dtypes: Iterable[str] | None = None,
                 filter: str | None = None) -> list[Case]:
    """Catalog cases (or the given ones) restricted to ``dtypes`` and to ids containing
    ``filter`` (a substring; several may be given separated by commas).

    cases: Case records; dtypes: a list of dtype names (a bare string is refused, not read as
    its characters; unknown names are refused); filter: a string or None."""
    from refmask.case import DTYPES

    where = "check"
    if isinstance(cases, (str, bytes)):
        raise TypeError(f"{where}: cases must be a list of Case records, got a string")
    chosen = list(catalog() if cases is None else cases)
    for index, case in enumerate(chosen):
        if not isinstance(case, Case):
            raise TypeError(f"{where}: cases[{index}] must be a refmask Case, got "
                            f"{type(case).__name__}")
    if dtypes is not None:
        if isinstance(dtypes, (str, bytes)):
            raise TypeError(f"{where}: dtypes must be a list of dtype names, e.g. "
                            f"[{dtypes!r}], got the string {dtypes!r}")
        dtypes = list(dtypes)
        unknown = [d for d in dtypes if not isinstance(d, str) or d not in DTYPES]
        if unknown:
            raise ValueError(f"{where}: dtypes must be among {list(DTYPES)}, got {unknown}")
        chosen = [c for c in chosen if c.dtype in set(dtypes)]
    if filter is not None and not isinstance(filter, str):
        raise TypeError(f"{where}: filter must be a string or None, got {type(filter).__name__}")
    if filter:
        parts = [p.strip() for p in filter.split(",") if p.strip()]
        chosen = [c for c in chosen if any(p in c.id or p in c.flags for p in parts)]
    return chosen


def resolve_backend(target: str | Adapter | Callable[..., Any]) -> Adapter:
    """An Adapter from a backend name, an Adapter, or a user function ``fn(q, k, v, call)``."""
    from refmask.adapters.user import from_function, from_path

    if isinstance(target, Adapter):
        return target
    if isinstance(target, str):
        return from_path(target) if ":" in target else load_adapter(target)
    if callable(target):
        return from_function(target)
    raise TypeError(f"check: target must be a backend name, 'module:function', an Adapter or "
                    f"a function, got {type(target).__name__}")


def check(target: str | Adapter | Callable[..., Any], *, cases: Iterable[Case] | None = None,
          dtypes: Iterable[str] | None = None, filter: str | None = None,
          grads: bool = False, golden: Callable | None = None,
          progress: Callable | None = None,
          timeout: float | None = DEFAULT_CASE_TIMEOUT) -> Report:
    """Run the conformance suite against ``target`` and return the :class:`Report`.

    target: a backend name (``"numpy"``), ``"module:function"``, an Adapter, or a function
    following the user calling convention (:mod:`refmask.adapters.user`).
    cases/dtypes/filter: which cases (default: the whole catalog, every dtype).
    grads: also compare gradients where the backend provides them.
    golden: ``golden(case, inputs, grads) -> dict`` of float64 arrays (BHTD); default: the
    exact values of the shipped corpus, the float64 reference for cases it does not hold.
    progress: optional ``callable(done, total)``.
    timeout: per-case limit of the backend's call in seconds (see :func:`run_case`).
    A KeyboardInterrupt (Ctrl-C) stops the run: the report holds the cases judged so far and
    ``interrupted`` is True.
    """
    timeout = _check_timeout(timeout)
    if golden is not None and not callable(golden):
        raise TypeError(f"check: golden must be callable(case, inputs, grads) or None, got "
                        f"{type(golden).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"check: progress must be callable(done, total) or None, got "
                        f"{type(progress).__name__}")
    adapter = resolve_backend(target)
    chosen = select_cases(cases, dtypes=dtypes, filter=filter)
    golden = golden or shipped_golden()
    report = Report(backend=adapter.name, environment=environment(adapter))
    for n, case in enumerate(chosen):
        try:
            report.results.append(run_case(adapter, case, grads=grads, golden=golden,
                                           timeout=timeout))
        except KeyboardInterrupt:
            report.interrupted = True
            break
        if progress is not None:
            progress(n + 1, len(chosen))
    return report


__all__ = ["VERDICTS", "CaseResult", "GoldenDisagreement", "Report", "TensorCheck", "check",
           "reference_outputs", "run_case", "select_cases"]
