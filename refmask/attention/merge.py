"""Merging partial attention: the combine step of split-KV decode, cascade (shared-prefix)
attention, ring and context-parallel attention.

Attention over the union of disjoint key sets K_1, ..., K_n is a function of the partial
results ``(o_p, lse_p)`` over each set alone (each with the same scores, bias and mask):

    lse   = log(sum_p exp(lse_p))                          the partial denominators add up
    o     = sum_p exp(lse_p - lse) * o_p

computed with the largest ``lse_p`` subtracted first. An *empty* partial (no kept key in its
range: ``lse_p = -inf``, FlashAttention 3 / FlexAttention / refmask convention) has weight 0
and its ``o_p`` is never read, even when it is NaN. When every partial is empty the merged row
is empty: ``o = 0``, ``lse = -inf`` (the "zero" empty-row policy). A sink (gpt-oss) is one more
partial with ``o_p = 0`` and ``lse_p = sink_h``, or belongs to exactly one key range.

The base of the logarithm is named, never guessed: ``base="e"`` (natural log: FlashAttention,
FlexAttention ``return_lse``, refmask) or ``base="2"`` (FlashInfer ``merge_state``, whose lse
is ``log2``); the merged lse is returned in the same base.
"""

from __future__ import annotations

import math

import array_api_compat

from .._typing import Array
from .._validate import check_choice
from ._inputs import is_real_floating

LSE_BASES = ("e", "2")


def merge(out_a: Array, lse_a: Array, out_b: Array, lse_b: Array, *more: Array,
          base: str) -> tuple[Array, Array]:
    """Merge two or more partial attention results over disjoint key ranges.

    Args:
      out_a, lse_a, out_b, lse_b, *more: pairs ``(out_p, lse_p)``; ``out_p`` has shape
        ``lse_p.shape + (Dv,)`` (e.g. out (B, Hq, Tq, Dv) with lse (B, Hq, Tq), or FlashInfer's
        (Tq, H, Dv) with (Tq, H)); every pair has the same shapes, namespace and dtype.
        An lse of -inf marks an empty partial; +inf (FlashAttention 2's empty-row lse) is
        refused, since no weight can be derived from it; NaN propagates to its rows.
      base: "e" (natural log) or "2" (log2); required, it is the classic silent error.

    Returns:
      (out, lse) with the shapes, namespace and dtype of the inputs, lse in ``base``.
    """
    if len(more) % 2:
        raise ValueError("merge: arguments must come in (out, lse) pairs; got an odd number of "
                         f"arrays ({4 + len(more)})")
    base = check_choice("merge", "base", base, LSE_BASES)
    pairs = [(out_a, lse_a), (out_b, lse_b)] + [(more[n], more[n + 1])
                                                for n in range(0, len(more), 2)]
    xp = array_api_compat.array_namespace(*(x for pair in pairs for x in pair))
    _check_pairs(xp, pairs)
    outs = [out for out, _ in pairs]
    lses = [lse for _, lse in pairs]
    dtype = outs[0].dtype
    device = array_api_compat.device(outs[0])

    def constant(value):
        return xp.asarray(value, dtype=dtype, device=device)

    top = lses[0]
    for lse in lses[1:]:
        top = xp.maximum(top, lse)
    empty = top == constant(-math.inf)
    shift = xp.where(empty, constant(0.0), top)
    log_base = constant(math.log(2.0) if base == "2" else 1.0)
    weights = [xp.exp((lse - shift) * log_base) for lse in lses]
    total = weights[0]
    for weight in weights[1:]:
        total = total + weight
    safe_total = xp.where(empty, constant(1.0), total)
    out = xp.zeros_like(outs[0])
    for weight, partial in zip(weights, outs, strict=True):
        scaled = weight / safe_total
        contribution = xp.where(scaled[..., None] > constant(0.0), scaled[..., None] * partial,
                                constant(0.0))
        out = out + contribution
    lse = xp.where(empty, constant(-math.inf), shift + xp.log(safe_total) / log_base)
    return out, lse


def _check_pairs(xp, pairs) -> None:
    out_shape = tuple(pairs[0][0].shape)
    for n, (out, lse) in enumerate(pairs):
        name = f"partial {n}"
        for label, x in (("out", out), ("lse", lse)):
            if not is_real_floating(xp, x.dtype):
                raise TypeError(f"merge: {name} {label} must be a real floating array, got "
                                f"{x.dtype}")
        if out.dtype != pairs[0][0].dtype or lse.dtype != out.dtype:
            raise TypeError(f"merge: every out and lse must share one dtype; {name} has out "
                            f"{out.dtype} and lse {lse.dtype}, partial 0 out {pairs[0][0].dtype}")
        if tuple(out.shape) != out_shape:
            raise ValueError(f"merge: {name} out has shape {tuple(out.shape)}, partial 0 has "
                             f"{out_shape}; all partials cover the same query rows")
        if tuple(out.shape[:-1]) != tuple(lse.shape):
            raise ValueError(f"merge: {name} out must have shape lse.shape + (Dv,), got out "
                             f"{tuple(out.shape)} and lse {tuple(lse.shape)}")
        if bool(xp.any(lse == xp.inf)):
            raise ValueError(f"merge: {name} lse holds +inf; an empty partial has lse = -inf "
                             "(convert FlashAttention 2's +inf for empty rows first)")
