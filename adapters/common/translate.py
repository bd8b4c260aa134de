"""Translating a case into a backend's terms: the pieces every adapter needs.

A backend has a few native switches (``is_causal``, a window argument, padding lengths) and a
dense mask for the rest. Adapters split the case mask into its AND-conjuncts, hand each
conjunct a switch can stand for to that switch, and materialise the others; these helpers do
the splitting, the tests ("is it positional?", "is its alignment one a switch can mean?") and
the dense and additive arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from refmask import masks as m
from refmask.case import to_bhtd
from refmask.masks import Mask

if TYPE_CHECKING:
    from refmask.attention import AttentionResult, Grads
    from refmask.case import Case

    from .adapter import Output


def and_parts(mask: Mask | None) -> list:
    """The conjuncts of a mask (``a & b & c`` -> [a, b, c]); [] for no mask; ``full()`` parts
    are dropped (they keep everything)."""
    if mask is None:
        return []
    parts = list(mask.masks) if mask.kind == "and" else [mask]
    return [p for p in parts if p.kind != "full"]


def positional(part: Mask) -> bool:
    """True for a conjunct defined on positions: it, or any mask inside it, has an alignment."""
    stack = [part]
    while stack:
        node = stack.pop()
        if getattr(node, "align", None) is not None:
            return True
        stack.extend(getattr(node, "masks", ()))
        if getattr(node, "mask", None) is not None:
            stack.append(node.mask)
    return False


def plain_alignment(part: Mask) -> bool:
    """True when the part is aligned ``"top_left"`` or plain ``"bottom_right"`` (no per-batch
    valid-length tables): what a backend's causal switch can stand for, its own alignment
    being reported by the runner (policy ``causal=top_left``)."""
    align = getattr(part, "align", None)
    if align is None:  # a combination (or, not, per-batch, ...): no switch stands for it
        return False
    return align.kind == "top_left" or (
        align.kind == "bottom_right" and align.q_lengths is None and align.k_lengths is None)


def dense_keep(case: Case, parts: list) -> np.ndarray | None:
    """The dense keep array (B, Hq, Tq, Tk) of the AND of ``parts``, or None for no parts."""
    if not parts:
        return None
    return np.asarray(m.all_of(*parts).materialize(case.batch, case.q_heads, case.q_len,
                                                   case.k_len))


def additive_bias(case: Case, inputs: dict, *, dtype: DTypeLike | None = None) -> np.ndarray | None:
    """The case's bias array plus its ALiBi bias, (B, Hq, Tq, Tk), or None when it has neither.

    The sum is formed in float64 and rounded once to ``dtype`` (default: the dtype of
    ``inputs["q"]``; pass ``np.float64`` to keep it unrounded).
    """
    bias = inputs.get("bias")
    if case.alibi is not None:
        alibi = case.alibi.bias(case.batch, case.q_heads, case.q_len, case.k_len)
        bias = alibi if bias is None else np.asarray(bias, np.float64) + alibi
    if bias is None:
        return None
    return np.asarray(bias, np.float64).astype(inputs["q"].dtype if dtype is None else dtype)


def float64_inputs(inputs: dict) -> dict:
    """The case inputs upcast exactly to float64 (bool arrays such as dropout_keep as given)."""
    return {name: value if value.dtype == np.bool_ else np.asarray(value, dtype=np.float64)
            for name, value in inputs.items()}


def to_output(case: Case, result: AttentionResult, grads: Grads | None = None, *,
              to_numpy: Callable[[Any], np.ndarray] = np.asarray) -> Output:
    """An :class:`~refmask.adapters.common.Output` from refmask's own AttentionResult and
    Grads (reference, fast path, CuPy): arrays moved to NumPy with ``to_numpy``, out and the
    q/k/v gradients in BHTD layout, dbias/dsinks only when present."""
    from .adapter import Output

    def bhtd(x):
        return to_bhtd(case, to_numpy(x))

    gradients = None
    if grads is not None:
        gradients = {name: bhtd(getattr(grads, name)) for name in ("dq", "dk", "dv")}
        for name in ("dbias", "dsinks"):
            if getattr(grads, name) is not None:
                gradients[name] = to_numpy(getattr(grads, name))
    return Output(out=bhtd(result.out), lse=to_numpy(result.lse), grads=gradients)
