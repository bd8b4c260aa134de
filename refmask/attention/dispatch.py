"""``path="auto" | "exact" | "fast"``: the public attention and attention_vjp.

The thin layer above the two implementations of one function (docs/spec.md section 3):

    refmask.attention.dispatch ──> refmask.attention.forward / backward   (the exact path)
                               └─> refmask.fast                          (the fast path)

Neither implementation imports the other: both take the checked call from
``refmask.attention._inputs`` and return the types of ``refmask.attention._results``. The fast
path is imported only when ``path`` is not "exact", so the exact path never loads Numba.
When "auto" hands a call to the fast path is decided in ``refmask.fast._dispatch``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .._typing import Array
from .._validate import check_choice
from ._inputs import DEFAULT_EMPTY_ROWS, DEFAULT_LAYOUT
from ._results import AttentionResult, Grads
from .alibi import Alibi
from .backward import exact_attention_vjp
from .forward import exact_attention
from .temperature import scaled_queries

if TYPE_CHECKING:
    from ..masks import Mask


#: Values of the ``path`` keyword of attention / attention_vjp.
PATHS = ("auto", "exact", "fast")
DEFAULT_PATH = "auto"


def attention(q: Array, k: Array, v: Array, *, mask: Mask | Array | None = None,
              scale: float | None = None, softcap: float | None = None, bias: Array | None = None,
              alibi: Alibi | None = None, sinks: Array | None = None,
              dropout_keep: Array | None = None, dropout_rate: float | None = None,
              empty_rows: str = DEFAULT_EMPTY_ROWS, layout: str = DEFAULT_LAYOUT,
              return_probs: bool = False, path: str = DEFAULT_PATH,
              query_scale: Array | None = None) -> AttentionResult:
    """Reference scaled dot-product attention (see the module docstring for the formulas).

    Letters: B batch, Hq query heads, Hkv kv heads (Hq % Hkv == 0; query head h reads kv head
    ``h // (Hq // Hkv)``), Tq queries, Tk keys, Dqk query/key head dim, Dv value head dim.

    Args:
      q: (B, Hq, Tq, Dqk) for layout "BHTD", (B, Tq, Hq, Dqk) for "BTHD"; a real floating
        array of any array-API namespace (NumPy incl. ml_dtypes bfloat16, torch, JAX, ...).
      k: (B, Hkv, Tk, Dqk) / (B, Tk, Hkv, Dqk), same namespace and dtype as q.
      v: (B, Hkv, Tk, Dv) / (B, Tk, Hkv, Dv), same namespace and dtype as q.
      mask: None (every key kept); a bool array broadcastable to (B, Hq, Tq, Tk), True = attend
        (indexed by *query* head, in either layout); or a refmask Mask (anything with
        ``materialize(B, Hq, Tq, Tk, *, xp, device)``). Position offsets (KV cache, bottom-right
        causal) live in the mask's alignment: attention has no hidden offset.
      scale: multiplier of ``<q, k>``; default None = ``1 / sqrt(Dqk)``.
      softcap: ``cap`` > 0 for ``cap * tanh(s / cap)``, applied before bias, ALiBi and mask;
        default None = no capping.
      bias: additive scores, broadcastable to (B, Hq, Tq, Tk), same dtype as q; -inf entries
        act like masked keys. Default None.
      alibi: an :class:`~refmask.attention.alibi.Alibi` (slopes, convention and alignment all
        explicit); default None.
      sinks: (Hq,) per-head sink logits (gpt-oss), same dtype as q: ``exp(sink_h)`` joins the
        softmax denominator with no value vector. Default None.
      dropout_keep: bool array broadcastable to (B, Hq, Tq, Tk), True = keep; requires
        dropout_rate. Default None (no dropout).
      dropout_rate: the rate in [0, 1) that the kept weights are divided by ``1 - rate``;
        required with dropout_keep. Dropout never changes lse.
      empty_rows: what a row with no kept key and no sink returns: "zero" (default: o = 0),
        "nan", "uniform" (mean of V) or "unmasked" (softmax of the unmasked scores); lse is
        -inf for such a row in every policy. See docs/spec.md for which peer does what.
      layout: "BHTD" (default) or "BTHD"; applies to q, k, v and out, not to lse, probs, mask,
        bias or dropout_keep, which are always (B, Hq, Tq[, Tk]).
      return_probs: also return the (B, Hq, Tq, Tk) weights; default False.
      path: "auto" (default), "exact" or "fast". "exact" is the array-API reference (``forward``);
        "fast" is :mod:`refmask.fast` (NumPy float64, tiles skipped by ``classify``, O(T*D)
        memory), which raises ``refmask.fast.FastPathUnsupported`` naming ``path`` and the
        feature for what it does not cover (dropout, return_probs, empty_rows="unmasked");
        "auto" takes the fast path for NumPy float64 inputs with
        B * Hq * Tq * Tk >= ``refmask.fast._dispatch.AUTO_MIN_SCORES`` and covered
        features, the exact path otherwise. Both agree to ~1e-12 relative in float64.
      query_scale: per-query temperature (Llama 4), (Tq,) or (B, Tq) in q's namespace and
        dtype: row i of q is multiplied by it (rounded to q's dtype) before the scores, as in
        :mod:`refmask.attention.temperature`; default None = no temperature.

    Returns:
      AttentionResult(out, lse, probs) in q's namespace, dtype and device.

    Computed naively in q's dtype (float64 is the reference). NaN or inf inputs propagate to
    the outputs they touch; no floating-point warning is ever emitted.
    """
    path = check_choice("attention", "path", path, PATHS)
    if query_scale is not None:
        q, _ = scaled_queries("attention", q, query_scale, layout)
    if not isinstance(return_probs, bool):
        raise TypeError(f"attention: return_probs must be a bool, got {return_probs!r}")
    kwargs = dict(mask=mask, scale=scale, softcap=softcap, bias=bias, alibi=alibi, sinks=sinks,
                  dropout_keep=dropout_keep, dropout_rate=dropout_rate, empty_rows=empty_rows,
                  layout=layout)
    if path != "exact":
        from ..fast._dispatch import forward_or_none

        result = forward_or_none("attention", path, q, k, v, kwargs, return_probs=return_probs)
        if result is not None:
            return result
    return exact_attention(q, k, v, return_probs=return_probs, **kwargs)


def attention_vjp(q: Array, k: Array, v: Array, d_out: Array, *, d_lse: Array | None = None,
                  mask: Mask | Array | None = None, scale: float | None = None,
                  softcap: float | None = None, bias: Array | None = None,
                  alibi: Alibi | None = None, sinks: Array | None = None,
                  dropout_keep: Array | None = None, dropout_rate: float | None = None,
                  empty_rows: str = DEFAULT_EMPTY_ROWS, layout: str = DEFAULT_LAYOUT,
                  path: str = DEFAULT_PATH, query_scale: Array | None = None) -> Grads:
    """Gradients of :func:`~refmask.attention.attention` (formulas in the module docstring).

    Args:
      q, k, v and every keyword shared with :func:`~refmask.attention.attention`: the same
        meaning, shapes and defaults (empty_rows "zero", layout "BHTD").
      d_out: the upstream gradient of ``out``: same shape (in the same layout), namespace and
        dtype as ``out``.
      d_lse: optional upstream gradient of ``lse``, shape (B, Hq, Tq); default None = 0.
      query_scale: as in :func:`~refmask.attention.attention`; then ``dq = query_scale *
        dq'`` (the gradient reaches q through the scaled rows).
      path: "auto" (default), "exact" or "fast", as in :func:`~refmask.attention.attention`;
        the fast path (FlashAttention-2 recomputation on the forward's tiles) also leaves
        gradients under empty_rows="nan" and dbias of a broadcast bias to the exact path.

    Returns:
      Grads(dq, dk, dv, dbias, dsinks): dq/dk/dv shaped like q/k/v; dbias like bias (None
      without bias); dsinks (Hq,) (None without sinks). ALiBi slopes, masks and the dropout
      pattern are constants and get no gradient.

    Computed in q's dtype by recomputing the forward pass; NaN/inf propagate, never raise.
    """
    path = check_choice("attention_vjp", "path", path, PATHS)
    if query_scale is not None:
        scaled, factor = scaled_queries("attention_vjp", q, query_scale, layout)
        grads = attention_vjp(scaled, k, v, d_out, d_lse=d_lse, mask=mask, scale=scale,
                              softcap=softcap, bias=bias, alibi=alibi, sinks=sinks,
                              dropout_keep=dropout_keep, dropout_rate=dropout_rate,
                              empty_rows=empty_rows, layout=layout, path=path)
        return replace(grads, dq=grads.dq * factor)
    kwargs = dict(mask=mask, scale=scale, softcap=softcap, bias=bias, alibi=alibi, sinks=sinks,
                  dropout_keep=dropout_keep, dropout_rate=dropout_rate, empty_rows=empty_rows,
                  layout=layout)
    if path != "exact":
        from ..fast._dispatch import vjp_or_none

        grads = vjp_or_none("attention_vjp", path, q, k, v, d_out, d_lse, kwargs)
        if grads is not None:
            return grads
    return exact_attention_vjp(q, k, v, d_out, d_lse=d_lse, **kwargs)
