"""The refmask reference itself as an adapter: ``numpy`` (float64 in, float64 out).

It computes in the case dtype's float64 upcast with ``refmask.attention`` and is expected to
pass every case; ``refmask check numpy`` is the suite checking its own reference against the
exact (mpmath, correctly rounded) golden values.
"""

from __future__ import annotations

import numpy as np

from refmask.attention import attention, attention_vjp

from .common import Adapter, Output, Profile


def _float64(inputs: dict) -> dict:
    return {name: value if value.dtype == np.bool_ else np.asarray(value, dtype=np.float64)
            for name, value in inputs.items()}


def _to_bhtd(case, x):
    return np.swapaxes(x, 1, 2) if case.layout == "BTHD" else x


def run_reference(case, inputs, *, grads: bool) -> Output:
    from refmask.conformance.cases import attention_kwargs

    values = _float64(inputs)
    kwargs = attention_kwargs(case, values)
    result = attention(values["q"], values["k"], values["v"], **kwargs)
    gradients = None
    if grads:
        g = attention_vjp(values["q"], values["k"], values["v"], values["d_out"], **kwargs)
        gradients = {"dq": _to_bhtd(case, g.dq), "dk": _to_bhtd(case, g.dk),
                     "dv": _to_bhtd(case, g.dv)}
        if g.dbias is not None:
            gradients["dbias"] = g.dbias
        if g.dsinks is not None:
            gradients["dsinks"] = g.dsinks
    return Output(out=_to_bhtd(case, result.out), lse=result.lse, grads=gradients)


ADAPTERS = (
    Adapter(
        name="numpy",
        profile=Profile(empty_rows="zero", causal_alignment="both", lse_base="e",
                        backward=True, notes="refmask.attention in float64 (the reference)"),
        run=run_reference,
        description="refmask's own float64 reference on NumPy arrays",
    ),
)
