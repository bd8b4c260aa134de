"""What attention and attention_vjp return, on either path (exact or fast).

Shared by the exact path (``forward``, ``backward``) and :mod:`refmask.fast`, which therefore
need nothing from each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)
class AttentionResult:
    """What :func:`~refmask.attention.attention` returns.

    out: (B, Hq, Tq, Dv) for layout "BHTD", (B, Tq, Hq, Dv) for "BTHD".
    lse: (B, Hq, Tq) in either layout (like FlashAttention's softmax_lse): the natural-log
      softmax denominator ``log(sum_kept exp(s_ij) + exp(sink_h))``; -inf for an empty row
      under every policy; not affected by dropout.
    probs: (B, Hq, Tq, Tk), the weights ``a_ij`` multiplied into V (after the empty-row policy
      and dropout), or None unless ``return_probs=True``.
    """

    out: Any
    lse: Any
    probs: Any = None



@dataclass(frozen=True, eq=False)
class Grads:
    """What :func:`~refmask.attention.attention_vjp` returns: gradients of
    ``sum(dO * out) + sum(dlse * lse)``.

    dq, dk, dv: shaped like q, k, v (in their layout); GQA gradients of a kv head are summed
      over the query heads of its group.
    dbias: shaped like bias (reduced over the axes it was broadcast along), or None.
    dsinks: (Hq,), or None without sinks.
    """

    dq: Any
    dk: Any
    dv: Any
    dbias: Any = None
    dsinks: Any = None
