"""The fast path's entry points: checked inputs in, AttentionResult / Grads (and stats) out."""

from __future__ import annotations

import numpy as np

from ..attention._inputs import check_upstream_gradients
from ..attention._results import AttentionResult, Grads
from ._inputs import FastInputs, FastPathUnsupported, numpy_float64_reason, prepare_fast
from ._inputs import unsupported_feature as _unsupported_feature


def refuse(where: str, reason: str) -> FastPathUnsupported:
    """The error for ``path="fast"`` on a call it does not cover."""
    return FastPathUnsupported(
        f"{where}: path='fast' does not support {reason}; use path='auto' (falls back to the "
        "exact path for such calls) or path='exact'"
    )


def checked(where: str, q, k, v, kwargs: dict, *, grads: bool,
            return_probs: bool = False) -> FastInputs:
    """prepare_fast, then FastPathUnsupported for anything the fast path does not cover."""
    reason = numpy_float64_reason(q, k, v)
    if reason:
        raise refuse(where, reason)
    fast = prepare_fast(where, q, k, v, **kwargs)
    reason = _unsupported_feature(fast, grads=grads, return_probs=return_probs)
    if reason:
        raise refuse(where, reason)
    return fast


def run_forward(where: str, fast: FastInputs, *, q_tile=None, k_tile=None, threads=None,
                keep_budget_bytes=None):
    """``(AttentionResult, TileStats)`` for checked inputs (out in the caller's layout)."""
    from ._forward import forward
    from ._tiles import DEFAULT_KEEP_BUDGET_BYTES

    budget = DEFAULT_KEEP_BUDGET_BYTES if keep_budget_bytes is None else keep_budget_bytes
    with np.errstate(all="ignore"):
        out, lse, stats = forward(fast, q_tile=q_tile, k_tile=k_tile, threads=threads,
                                  keep_budget_bytes=budget)
    return AttentionResult(out=fast.inp.from_bhtd(out), lse=lse), stats


def check_upstream(where: str, fast: FastInputs, q, d_out, d_lse):
    """d_out and d_lse checked as attention_vjp checks them; d_out returned in (B, H, T, D)."""
    return check_upstream_gradients(where, fast.inp, q, d_out, d_lse)


def run_vjp(where: str, fast: FastInputs, d_out, d_lse, *, q_tile=None, k_tile=None,
            threads=None, keep_budget_bytes=None):
    """``(Grads, TileStats)`` for checked inputs and checked upstream gradients (BHTD)."""
    from ._backward import backward
    from ._tiles import DEFAULT_KEEP_BUDGET_BYTES

    budget = DEFAULT_KEEP_BUDGET_BYTES if keep_budget_bytes is None else keep_budget_bytes
    inp = fast.inp
    with np.errstate(all="ignore"):
        dq, dk, dv, dbias, dsinks, _, _, stats = backward(
            fast, np.asarray(d_out, dtype=np.float64), d_lse, q_tile=q_tile, k_tile=k_tile,
            threads=threads, keep_budget_bytes=budget)
    grads = Grads(dq=inp.from_bhtd(dq), dk=inp.from_bhtd(dk), dv=inp.from_bhtd(dv),
                  dbias=dbias, dsinks=dsinks)
    return grads, stats
