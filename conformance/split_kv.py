"""Judging a split-KV case (``Case.key_splits``, spec 3.8 and 5.x): the partials, then their
merge.

A split-KV backend computes attention over each key range alone and returns the partial
``(out_p, lse_p)``; a merge step combines them. The runner judges both stages, so a report
says which one is wrong:

1. every partial of :func:`refmask.case.partial_cases` is run through the backend and judged
   like an ordinary case against its own golden partial (``partial_out`` / ``partial_lse`` of
   the corpus): a miss is ``"partial p (keys [a, b)) wrong: ..."``, with the partial's own
   diagnosis. A partial the backend cannot express, or one without an LSE, makes the whole
   case ``unsupported``.
2. the partials are merged -- by the backend's own merge kernel (``Adapter.merge``, e.g. a
   user function's ``refmask_merge``) when it has one, else by
   :func:`refmask.attention.merge` in float64 on the partials as returned (empty rows of the
   golden partial set to out 0, lse -inf, so a declared empty-row convention does not leak
   into the merge; the LSE base is the backend's declared one) -- and the merged
   ``(out, lse)`` is judged against the golden output of the whole case: a miss is
   ``"partials ok, merge wrong: ..."``, named by the merge explanations
   (``merge=lse_base_2``, ``merge=empty_partial_nan``, ``merge=no_max_subtraction``) when it
   matches one.

The verdict is the worst of the stages (fail > policy > pass); gradients are not judged for
split-KV cases (forward only). Every check of every stage is kept, the partials' named
``partial<p>.out`` / ``partial<p>.lse``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from refmask.adapters import Adapter, Output
from refmask.attention import merge as refmask_merge
from refmask.case import Case, case_inputs, partial_cases

from .judging import Judging
from .results import CaseResult


def _capturing(run: Callable, box: dict) -> Callable:
    """``run`` that also keeps what it returned in ``box["output"]``."""
    def wrapped(case, inputs, *, grads):
        box["output"] = run(case, inputs, grads=grads)
        return box["output"]

    return wrapped


def _returning(output: Output) -> Callable:
    def run(case, inputs, *, grads):
        return output

    return run


def _golden_of_partial(gold: dict, p: int) -> Callable:
    part = {"out": gold["partial_out"][p], "lse": gold["partial_lse"][p]}
    return lambda case, inputs, grads: part


def reference_merge(case: Case, partials: list, golden_lse: np.ndarray, base: str) -> Output:
    """refmask's merge (spec 3.8) of a backend's partial Outputs, in float64: rows the golden
    partial leaves empty (``golden_lse[p] = -inf``) enter as out 0, lse -inf, whatever
    empty-row convention the backend follows."""
    parts = []
    for p, output in enumerate(partials):
        empty = np.isneginf(golden_lse[p])
        out = np.where(empty[..., None], 0.0, np.asarray(output.out, np.float64))
        lse = np.where(empty, -np.inf, np.asarray(output.lse, np.float64))
        parts += [out, lse]
    with np.errstate(all="ignore"):
        out, lse = refmask_merge(*parts, base=base)
    return Output(out=out, lse=lse)


def _renamed(checks: tuple, p: int) -> tuple:
    return tuple(replace(check, name=f"partial{p}.{check.name}") for check in checks)


def run_split(adapter: Adapter, case: Case, *, judging: Judging, golden: Callable,
              explain: bool, judge: Callable) -> CaseResult:
    """The verdict of a split-KV case; ``judge(adapter, case, judging, golden, explain)``
    judges one ordinary case (the runner's, passed in so this module does not import it)."""
    start_time = time.perf_counter()
    forward = judging.replace(grads=False)
    gold = golden(case, case_inputs(case), False)
    partials, checks, policies = [], [], []
    for p, part in enumerate(partial_cases(case)):
        start, stop = case.key_splits[p]
        where = f"partial {p} (keys [{start}, {stop}))"
        reason = adapter.unsupported(part)
        box: dict = {}
        result = (CaseResult(case=part, backend=adapter.name, verdict="unsupported",
                             reason=reason) if reason else
                  judge(replace(adapter, run=_capturing(adapter.run, box)), part, forward,
                        _golden_of_partial(gold, p), explain))
        if result.verdict == "unsupported":
            return replace(result, case=case, reason=f"{result.reason} (split-KV {where})")
        if result.verdict != "fail" and box["output"].lse is None:
            return CaseResult(case=case, backend=adapter.name, verdict="unsupported",
                              seconds=result.seconds,
                              reason=f"{adapter.name}: returns no LSE, so its split-KV "
                                     f"partials cannot be merged ({where})")
        checks += _renamed(result.checks, p)
        if result.verdict == "fail":
            return replace(result, case=case, checks=tuple(checks),
                           reason=f"{where} wrong: {result.reason}")
        if result.verdict == "policy":
            policies.append((where, result))
        partials.append(box["output"])
    if adapter.merge is not None:
        by = f"{adapter.name}'s merge"
        try:
            merged = adapter.merge(case, partials)
        except Exception as error:  # noqa: BLE001 - a crash is the merge kernel's verdict
            return CaseResult(case=case, backend=adapter.name, verdict="fail",
                              checks=tuple(checks), seconds=time.perf_counter() - start_time,
                              reason=f"partials ok, {by} raised {type(error).__name__}: "
                                     f"{error}")
    else:
        merged = reference_merge(case, partials, gold["partial_lse"],
                                 adapter.profile.lse_base or "e")
        by = "refmask.attention.merge"
    result = judge(replace(adapter, run=_returning(merged)), case, forward, golden, explain)
    result = replace(result, seconds=time.perf_counter() - start_time)
    checks += result.checks
    partial_note = ("partials ok" if not policies else "partials ok under a convention ("
                    + "; ".join(f"{w}: {r.reason}" for w, r in policies) + ")")
    if result.verdict == "fail":
        return replace(result, checks=tuple(checks),
                       reason=f"{partial_note}, merge wrong ({by}): {result.reason}")
    if result.verdict == "policy" or not policies:
        note = "" if result.verdict == "pass" else f"{partial_note}, merge ({by}): "
        return replace(result, checks=tuple(checks), reason=note + result.reason)
    first = policies[0][1]
    return replace(result, verdict="policy", checks=tuple(checks),
                   convention=first.convention, convention_kind=first.convention_kind,
                   reason=f"{partial_note}, merge ok ({by})")
