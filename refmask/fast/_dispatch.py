"""``path="auto" | "exact" | "fast"``: when refmask.attention hands a call to the fast path.

    "exact": always the reference (array API, dense (B, Hq, Tq, Tk) intermediates).
    "fast":  always the fast path; a call it does not cover raises FastPathUnsupported
             naming ``path`` and the feature.
    "auto":  the fast path for NumPy float64 q, k, v with B * Hq * Tq * Tk >= AUTO_MIN_SCORES
             and only covered features; the exact path otherwise (silently).

Imported by refmask.attention.dispatch only when ``path`` is not "exact"; it imports no
Numba itself.
"""

from __future__ import annotations

import numpy as np

from ._api import check_upstream, checked, run_forward, run_vjp
from ._inputs import numpy_float64_reason, prepare_fast, unsupported_feature

#: Score-matrix entries B * Hq * Tq * Tk from which "auto" takes the fast path: the measured
#: crossover on the 2-core development machine (docs/performance.md). A causal call of
#: B=1, H=8, D=64 takes about as long both ways at T = 128 (131072 scores) and is about 2x
#: faster on the fast path at T = 256 (524288); below, the fast path's fixed cost (~1.5 ms:
#: planning, threads) dominates.
AUTO_MIN_SCORES = 1 << 18


def _score_count(q, k, layout) -> int | None:
    """B * Hq * Tq * Tk read from the shapes (None when they are not 4-D)."""
    if getattr(q, "ndim", None) != 4 or getattr(k, "ndim", None) != 4:
        return None
    if layout == "BTHD":
        batch, q_len, heads = q.shape[:3]
        k_len = k.shape[1]
    else:
        batch, heads, q_len = q.shape[:3]
        k_len = k.shape[2]
    return int(batch) * int(heads) * int(q_len) * int(k_len)


def takes_fast_path(path: str, q, k, v, layout, *, return_probs: bool = False) -> bool:
    """Quick pre-check: is the call a candidate for the fast path at all?"""
    if path == "fast":
        return True
    if return_probs or numpy_float64_reason(q, k, v) is not None:
        return False
    count = _score_count(q, k, layout)
    return count is not None and count >= AUTO_MIN_SCORES


def forward_or_none(where: str, path: str, q, k, v, kwargs: dict, *, return_probs: bool):
    """The fast path's AttentionResult, or None when "auto" leaves the call to the exact path."""
    if not takes_fast_path(path, q, k, v, kwargs.get("layout"), return_probs=return_probs):
        return None
    if path == "fast":
        return run_forward(where, checked(where, q, k, v, kwargs, grads=False,
                                          return_probs=return_probs))[0]
    try:
        fast = prepare_fast(where, q, k, v, **kwargs)
    except (TypeError, ValueError):
        return None  # the exact path raises its own (identical) error
    if unsupported_feature(fast, grads=False, return_probs=return_probs):
        return None
    return run_forward(where, fast)[0]


def vjp_or_none(where: str, path: str, q, k, v, d_out, d_lse, kwargs: dict):
    """The fast path's Grads, or None when "auto" leaves the call to the exact path."""
    if not takes_fast_path(path, q, k, v, kwargs.get("layout")):
        return None
    if path == "fast":
        fast = checked(where, q, k, v, kwargs, grads=True)
        d_out, d_lse = check_upstream(where, fast, q, d_out, d_lse)
        return run_vjp(where, fast, d_out, d_lse)[0]
    try:
        fast = prepare_fast(where, q, k, v, **kwargs)
        if not isinstance(d_out, np.ndarray) or (d_lse is not None
                                                 and not isinstance(d_lse, np.ndarray)):
            return None
        d_out, d_lse = check_upstream(where, fast, q, d_out, d_lse)
    except (TypeError, ValueError):
        return None
    if unsupported_feature(fast, grads=True):
        return None
    return run_vjp(where, fast, d_out, d_lse)[0]
