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
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

import refmask
from refmask import render
from refmask.adapters import Adapter, Output, Unsupported
from refmask.case import (
    GRAD_NAMES,
    Case,
    case_inputs,
    dtype_unavailable,
    reference_outputs,
)

from .diagnosis import Diagnosis, Match, diagnose
from .gradient_model import alternative_gradient_model, case_error_model
from .judging import (
    DEFAULT_CASE_TIMEOUT,
    Judging,
    corpus_golden,
    select_cases,
    shipped_golden,
)
from .localisation import bad_rows, localise
from .results import VERDICTS, CaseResult, Report, Worst, worst_element
from .scores_judging import (
    LOWEST,
    SCORE_CONVENTIONS,
    lowest_in_effect,
    masked_scores_convention,
    missing_scores,
    recheck_lowest,
    scores_explained,
    scores_unsupported,
    temperature_unsupported,
)
from .split_kv import run_split
from .tolerance import (
    GRADIENT_AGGREGATE_FLOOR,
    ForwardModel,
    TensorCheck,
    case_forward_model,
    check_forward,
    weighted_rms,
)

if TYPE_CHECKING:
    pass


#: "not given" for run_case's keyword overrides (None is a meaningful timeout).
_UNSET = object()


# --- references ------------------------------------------------------------------------------

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

#: Rows longer than this are pictured as key ranges, not one character per key.
WIDE_ROW = 96


def _key_runs(row: np.ndarray) -> str:
    """A keep row as its runs: ``0-744 . | 745-1000 # | 1001-2047 .``."""
    edges = np.flatnonzero(np.diff(row.astype(np.int8))) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, row.size] - 1
    return " | ".join(f"{a}-{z} {'#' if row[a] else '.'}" if a != z else
                      f"{a} {'#' if row[a] else '.'}" for a, z in zip(starts, ends, strict=True))


def _mask_rows_picture(case: Case, first_bad: tuple | None) -> str:
    """The mask rows around the first offending (b, h, i), as text."""
    if first_bad is None or len(first_bad) < 3 or case.q_len == 0 or case.k_len == 0:
        return ""
    b, h, i = first_bad[:3]
    keep = case.keep()[b, h]
    lo, hi = max(0, i - 2), min(case.q_len, i + 3)
    if case.k_len > WIDE_ROW:
        return "\n".join([f"mask rows {lo}..{hi - 1} of batch {b}, head {h} (> = first bad "
                          "row; key ranges kept '#' / masked '.'):"] + [
            f"{'>' if r == i else ' '} {r:>3} {_key_runs(keep[r])}" for r in range(lo, hi)])
    lines = render.to_text(keep[lo:hi], ascii=True).splitlines()
    header, rows = lines[0], lines[1:]
    rows = [f"{'>' if lo + n == i else ' '} {lo + n:>3} {row.split(' ', 1)[1]}"
            if row.strip() else row for n, row in enumerate(rows)]
    return "\n".join([f"mask rows {lo}..{hi - 1} of batch {b}, head {h} (> = first bad row):",
                      "      " + header.strip()] + rows)


def _compare(case: Case, output, golden: dict, naive: dict, model: ForwardModel,
             grads: bool) -> list:
    """out and lse under the forward model of spec 5.2, gradients under the gradient model."""
    checks = [check_forward("out", output.out, golden["out"], naive["out"], model.out,
                            case.dtype)]
    if output.lse is not None:
        checks.append(check_forward("lse", output.lse, golden["lse"], naive["lse"], model.lse,
                                    case.dtype, aggregate=False))
    for name, weight in model.scores.items():  # spec 3.9: per element, -inf placement exact
        checks.append(check_forward(name, output.scores[name], golden[name], naive[name],
                                    weight, case.dtype, aggregate=False))
    if grads and output.grads:  # spec 5.2, gradients: judged like the output
        for name in GRAD_NAMES:
            if name in output.grads and name in golden:
                checks.append(check_forward(name, output.grads[name], golden[name], naive[name],
                                            model.grads[name], case.dtype,
                                            floor=GRADIENT_AGGREGATE_FLOOR))
    return checks


#: Keyword arguments of the alternative computation that are also keyword arguments of
#: refmask.attention with the same meaning (an alternative using only these can predict
#: gradients through attention_vjp).
_ATTENTION_CHANGES = {"mask", "scale", "empty_rows", "alibi", "softcap", "sinks"}


def _attention_changes(changes: dict) -> dict:
    """An alternative's changes as refmask.attention keyword arguments (sinks "dropped" ->
    no sinks)."""
    return {**changes, **({"sinks": None} if "sinks" in changes else {})}


def _alternative_gradients(case: Case, inputs: dict, changes: dict) -> dict | None:
    """The float64 gradients (BHTD) under an alternative that is a change of
    refmask.attention's keyword arguments; None when it is not one or refmask cannot
    differentiate under it."""
    if not set(changes) <= _ATTENTION_CHANGES or changes.get("sinks", "dropped") != "dropped":
        return None
    from refmask.adapters.common.translate import float64_inputs
    from refmask.attention import attention_vjp
    from refmask.case import attention_kwargs, gradient_arrays

    values = float64_inputs(inputs)
    try:
        kwargs = {**attention_kwargs(case, values), **_attention_changes(changes)}
        with np.errstate(all="ignore"):
            grads = attention_vjp(values["q"], values["k"], values["v"], values["d_out"],
                                  **kwargs, path="exact")
    except (ValueError, TypeError, NotImplementedError):
        return None
    return gradient_arrays(case, grads)


def _gradients_explained(case: Case, inputs: dict, output, checks: list, match: Match,
                         model: ForwardModel, lowest: bool) -> bool:
    """Whether the gradients and score stages the output got wrong are those of the matched
    alternative."""
    failed = [c for c in checks if not c.ok and c.name not in ("out", "lse")]
    if not failed:
        return True
    if match.precision is not None:
        return False
    changes = match.explanation.changes(case)
    scores = [c for c in failed if c.name in model.scores]
    if scores and not scores_explained(case, inputs, output, scores, model, changes, lowest):
        return False
    failed = [c for c in failed if c.name not in model.scores]
    if not failed:
        return True
    if match.explanation.noise and match.kind == "bug":
        # a rounding process (low-precision accumulation) predicts no gradients; its backward
        # accumulates the same way, and the verdict is a fail whichever tensor shows it
        return True
    alt = _alternative_gradients(case, inputs, changes)
    if alt is None or any(c.name not in alt for c in failed):
        return False
    weights = alternative_gradient_model(case, inputs, _attention_changes(changes), alt)
    return all(check_forward(c.name, output.grads[c.name], alt[c.name], None, weights[c.name],
                             case.dtype).ok for c in failed)


def _diagnose(case: Case, inputs: dict, output, checks: list, golden: dict,
              model: ForwardModel, naive: dict, adapter: Adapter,
              lowest: bool = False) -> Diagnosis | None:
    """The diagnosis of a failure (:func:`.diagnosis.diagnose`); None when the output was
    refused (not a real floating array, or the wrong shape). A match whose alternative cannot
    also predict a failing gradient is dropped, so a gradient failure is never explained away.
    """
    if any(not c.ok and c.first_bad is None and not c.nonfinite_mismatch and c.max_abs == np.inf
           for c in checks):
        return None
    naive_agg = weighted_rms(naive["out"] - golden["out"], model.out, golden["out"])

    def model_for(precision):
        return case_forward_model(replace(case, dtype=precision), inputs, golden)

    diagnosis = diagnose(case, inputs, output, golden, model, naive_agg,
                         declared=adapter.profile.declared(), model_for=model_for)

    def explained(match):
        return _gradients_explained(case, inputs, output, checks, match, model, lowest)

    if diagnosis.best is not None and not explained(diagnosis.best):
        # the output admits several alternatives (e.g. it passes and only gradients fail):
        # the first of the others, in the diagnosis' order, that also predicts the gradients
        others = [m for m in (*diagnosis.runners_up, *diagnosis.closest)
                  if m.residual <= 1.0 and m.name != diagnosis.best.name]
        diagnosis = replace(diagnosis, best=next((m for m in others if explained(m)), None),
                            runners_up=())
    return diagnosis


def _failure_reason(first: TensorCheck, diagnosis: Diagnosis | None, case: Case, golden: dict,
                    output, model: ForwardModel, checks: list) -> str:
    """The reason of an unexplained failure: the first check's, where it is off in mask
    terms, and the closest alternatives with their residuals."""
    if diagnosis is None:
        return first.reason
    parts = [first.reason]
    where = localise(case, bad_rows(checks, golden, output, model))
    if where:
        parts.append(where)
    if diagnosis.closest:
        parts.append("closest alternatives: " + ", ".join(
            f"{m.name} ({m.residual:.3g}x the tolerance)" for m in diagnosis.closest))
    return "; ".join(parts)


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


def _missing_gradients(output, golden: dict) -> list:
    """Gradients the golden values hold that the backend did not return."""
    returned = output.grads or {}
    return [name for name in GRAD_NAMES if name in golden and name not in returned]


def run_case(adapter: Adapter, case: Case, *, grads: bool | None = None,
             golden: Callable | None = None, judging: Judging | None = None,
             timeout: float | None | object = _UNSET, explain: bool = True) -> CaseResult:
    """Judge one case under ``judging`` (default: ``Judging()``; ``grads`` and ``timeout``
    override its fields); ``golden(case, inputs, grads) -> dict`` overrides the golden source
    (default: ``judging.golden()``, the shipped exact corpus).

    The backend's call may take ``judging.timeout`` seconds (None: no limit, run in this
    thread); over it the case fails. The backend gets private copies of the inputs; whatever
    it raises (SystemExit and KeyboardInterrupt included) or returns that is not an Output
    makes the case fail.
    """
    judging = judging or Judging()
    if grads is not None:
        judging = judging.replace(grads=bool(grads))
    if timeout is not _UNSET:
        judging = judging.replace(timeout=timeout)
    grads = judging.grads
    timeout = judging.timeout
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

    reason = (adapter.unavailable() or dtype_unavailable(case.dtype)
              or _dtype_undeclared(adapter, case) or judging.grads_unavailable(adapter)
              or scores_unsupported(adapter, case) or temperature_unsupported(adapter, case)
              or adapter.unsupported(case))
    if reason:
        return result("unsupported", reason)
    golden = golden or judging.golden()
    if case.key_splits:
        return run_split(adapter, case, judging=judging, golden=golden, explain=explain,
                         judge=_judge)
    return _judge(adapter, case, judging, golden, explain)


def _judge(adapter: Adapter, case: Case, judging: Judging, golden: Callable,
           explain: bool) -> CaseResult:
    """The verdict of a supported case (:func:`run_case` after its checks)."""
    grads, timeout = judging.grads, judging.timeout
    start = time.perf_counter()

    def result(verdict, reason="", **extra):
        return CaseResult(case=case, backend=adapter.name, verdict=verdict, reason=reason,
                          seconds=time.perf_counter() - start, **extra)

    inputs = case_inputs(case)
    status, output = _run_backend(adapter, case, inputs, grads, timeout)
    if status == "timeout":
        return result("fail", f"the backend did not return within the timeout of {timeout:g} s "
                      "(--timeout)")
    if status == "raised":
        if isinstance(output, Unsupported):
            return result("unsupported", str(output))
        return result("fail", f"the backend raised {type(output).__name__}: {output}",
                      traceback=_user_traceback(output))
    if not isinstance(output, Output):
        return result("fail", f"the backend returned {type(output).__name__}, not an Output")
    if missing_scores(case, output):
        return result("fail", f"the backend returned no {', '.join(missing_scores(case, output))}"
                      " (the case asks for these score stages, spec 3.9)")
    gold = golden(case, inputs, grads)
    if grads:
        missing = _missing_gradients(output, gold)
        if missing:
            return result("fail", f"--grads: the backend returned no {', '.join(missing)}")
    naive = reference_outputs(case, inputs, float64=False, grads=grads)
    reference64 = naive if case.dtype == "float64" else reference_outputs(
        case, inputs, float64=True, grads=grads)
    check_golden_sanity(case, gold, reference64)
    model = case_error_model(case, inputs, gold, grads=grads)
    checks = _compare(case, output, gold, naive, model, grads)
    lowest = judging.accepts(LOWEST, adapter.profile.declared())  # spec 3.9, onnxruntime
    if lowest:
        checks = recheck_lowest(case, output, checks, gold, model)
    also_lowest = lowest and lowest_in_effect(case, output, gold)
    if all(c.ok for c in checks):
        if also_lowest:
            return result("policy", f"{LOWEST}: {SCORE_CONVENTIONS[LOWEST]}", convention=LOWEST,
                          convention_kind="policy", checks=tuple(checks))
        return result("pass", checks=tuple(checks))
    if not lowest and masked_scores_convention(case, output, checks, gold, model):
        return result("fail", f"matches the convention {LOWEST}, which {adapter.name} does "
                      f"not declare: {SCORE_CONVENTIONS[LOWEST]} (declare it, or accept it with "
                      f"--allow-policy {LOWEST})", convention=LOWEST,
                      convention_kind="undeclared", checks=tuple(checks))
    first = next(c for c in checks if not c.ok)
    picture = _mask_rows_picture(case, first.first_bad)
    returned = {"out": output.out, "lse": output.lse, **(output.grads or {}),
                **(output.scores or {})}
    worst = worst_element(first.name, returned.get(first.name), gold[first.name], case.dtype)
    diagnosis = (_diagnose(case, inputs, output, checks, gold, model, naive, adapter, lowest)
                 if explain else None)
    extra = dict(checks=tuple(checks), picture=picture, worst=worst,
                 diagnosis=None if diagnosis is None else diagnosis.to_json())
    best = None if diagnosis is None else diagnosis.best
    if best is None:
        return result("fail", _failure_reason(first, diagnosis, case, gold, output, model,
                                              checks), **extra)
    also = ""
    if diagnosis.runners_up:
        also = " (also close: " + ", ".join(m.name for m in diagnosis.runners_up) + ")"
    description = best.explanation.description
    if best.precision:
        description += f"; computed internally in {best.precision}"
    if best.kind == "policy":
        if judging.accepts(best.name, adapter.profile.declared()):
            name = best.name + (f" + {LOWEST}" if also_lowest else "")
            return result("policy", f"{name}: {description}{also}",
                          convention=name, convention_kind="policy", **extra)
        return result("fail", f"matches the convention {best.name}, which {adapter.name} does "
                      f"not declare: {description} (declare it, or accept it with "
                      f"--allow-policy {best.name}){also}", convention=best.name,
                      convention_kind="undeclared", **extra)
    what = "a fitted parameter" if best.kind == "fitted" else "the known bug"
    return result("fail", f"matches {what} {best.name}: {description}. Fix: "
                  f"{best.explanation.fix}{also}", convention=best.name,
                  convention_kind="bug", **extra)


def _dtype_undeclared(adapter: Adapter, case: Case) -> str | None:
    dtypes = adapter.profile.dtypes
    if dtypes is not None and case.dtype not in dtypes:
        return f"{adapter.name} declares the dtypes {list(dtypes)} only"
    return None


def _user_traceback(error: BaseException, limit: int = 6) -> str:
    """The innermost frames of a crash, so a user sees where in their code it happened."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)[-limit:]
    return "".join(traceback.format_list(frames)) + f"{type(error).__name__}: {error}"


# --- whole runs ------------------------------------------------------------------------------

def environment(adapter: Adapter) -> dict:
    return {"refmask": refmask.__version__, "spec": refmask.SPEC_VERSION,
            "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "backend_notes": adapter.profile.notes}


def resolve_backend(target: Any, judging: Judging | None = None) -> Adapter:
    """An Adapter from a backend name, an Adapter, or a user function ``fn(q, k, v, call)``
    (or ``"module:function"``), called as ``judging`` says."""
    return (judging or Judging()).adapter(target)


def check(target: Any, *, judging: Judging | None = None,
          cases: Iterable[Case] | None = None, golden: Callable | None = None,
          progress: Callable | None = None, explain: bool = True,
          **options: Any) -> Report:
    """Run the conformance suite against ``target`` and return the :class:`Report`.

    target: a backend name (``"numpy"``), ``"module:function"``, an Adapter, or a function
    following the user calling convention (:mod:`refmask.adapters.user`).
    judging: the :class:`~.judging.Judging` (which cases, golden values, grads, allowed
    policies, framework/device of a user function); ``options`` are its fields, given
    directly (``check(fn, dtypes="bfloat16", grads=True, framework="torch")``) and applied on
    top of ``judging``.
    cases: run these cases instead of the judging's (still narrowed by dtypes/filter).
    golden: ``golden(case, inputs, grads) -> dict`` of float64 arrays (BHTD); default:
    ``judging.golden()``, the exact values of the shipped corpus.
    progress: optional ``callable(done, total)``.
    A KeyboardInterrupt (Ctrl-C) stops the run: the report holds the cases judged so far and
    ``interrupted`` is True.
    """
    if golden is not None and not callable(golden):
        raise TypeError(f"check: golden must be callable(case, inputs, grads) or None, got "
                        f"{type(golden).__name__}")
    if progress is not None and not callable(progress):
        raise TypeError(f"check: progress must be callable(done, total) or None, got "
                        f"{type(progress).__name__}")
    judging = (judging or Judging()).replace(**options) if options else (judging or Judging())
    adapter = judging.adapter(target)
    chosen = judging.cases(cases)
    golden = golden or judging.golden()
    report = Report(backend=adapter.name, environment=environment(adapter),
                    judging=judging.to_json())
    for n, case in enumerate(chosen):
        try:
            report.results.append(run_case(adapter, case, golden=golden, judging=judging,
                                           explain=explain))
        except KeyboardInterrupt:
            report.interrupted = True
            break
        if progress is not None:
            progress(n + 1, len(chosen))
    return report


__all__ = ["DEFAULT_CASE_TIMEOUT", "VERDICTS", "CaseResult", "GoldenDisagreement", "Judging",
           "Report", "TensorCheck", "Worst", "check", "corpus_golden", "reference_outputs",
           "run_case", "select_cases", "shipped_golden", "worst_element"]
