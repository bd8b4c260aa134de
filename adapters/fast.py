"""refmask's fast path as an adapter: ``refmask.fast`` (NumPy float64 + Numba, tiles).

Like the ``numpy`` adapter it computes in the case dtype's float64 upcast, but through
:mod:`refmask.fast` (``path="fast"``): tiles classified by the mask, EMPTY tiles skipped,
online softmax, FlashAttention-2 backward. ``refmask check refmask.fast --grads`` runs the
whole golden corpus against it. A case the fast path does not cover (dropout) is
``unsupported`` with the fast path's own reason, never silently computed by the exact path.

``ADAPTERS`` also holds ``refmask.fast/tiles-2x3``, the same path with 2 x 3 tiles, so that
the corpus's small cases span many tiles (online rescaling, padding, PARTIAL/FULL/EMPTY
mixes); it is not registered by name (the tests pass the Adapter itself).
"""

from __future__ import annotations

from .common import Adapter, Output, Profile, Unsupported
from .common.translate import float64_inputs, to_output


def _unsupported(case) -> str | None:
    if case.dropout_rate is not None:
        return "the fast path has no dropout (a dense (B, Hq, Tq, Tk) pattern); path='exact' does"
    if case.empty_rows == "unmasked":
        return 'the fast path has no empty_rows="unmasked"; path=\'exact\' does'
    return None


def _runner(q_tile=None, k_tile=None):
    def run_fast(case, inputs, *, grads: bool) -> Output:
        from refmask import fast
        from refmask.case import attention_kwargs

        values = float64_inputs(inputs)
        kwargs = attention_kwargs(case, values)
        tiles = {"q_tile": q_tile, "k_tile": k_tile}
        q, k, v = values["q"], values["k"], values["v"]
        try:
            result = fast.attention(q, k, v, **kwargs, **tiles)
            gradients = (fast.attention_vjp(q, k, v, values["d_out"], **kwargs, **tiles)
                         if grads else None)
        except fast.FastPathUnsupported as why:
            raise Unsupported(str(why)) from None
        return to_output(case, result, gradients)

    return run_fast


def _unavailable() -> str | None:
    from refmask.fast._blas import blas_unavailable

    return blas_unavailable()


_PROFILE = Profile(empty_rows="zero", causal_alignment="both", lse_base="e", backward=True,
                   notes="refmask.fast: blocked online softmax in float64 (NumPy + Numba)")

ADAPTERS = (
    Adapter(name="refmask.fast", profile=_PROFILE, run=_runner(), unsupported=_unsupported,
            unavailable=_unavailable,
            description="refmask's fast path (tiles skipped by classify, O(T*D) memory)"),
    Adapter(name="refmask.fast/tiles-2x3", profile=_PROFILE, run=_runner(2, 3),
            unsupported=_unsupported, unavailable=_unavailable,
            description="refmask's fast path with 2 x 3 tiles (many tiles per case)"),
)
