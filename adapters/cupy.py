"""The refmask reference on CuPy arrays: ``cupy`` (float64 on the GPU).

Nothing here is CuPy-specific logic: the inputs are moved to the GPU and the unchanged
``refmask.attention`` runs on them through array-api-compat (masks materialise in the CuPy
namespace too). The adapter exists so ``refmask check cupy`` compares the GPU run of the
reference with the exact golden values, case by case.
"""

from __future__ import annotations

import numpy as np

from refmask.attention import attention, attention_vjp

from .common import Adapter, Output, Profile


def _unavailable() -> str | None:
    try:
        import cupy
    except ImportError:
        return "cupy is not installed (pip install 'refmask[cupy]')"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # noqa: BLE001 - any CUDA runtime failure means "no GPU here"
        return f"no CUDA device is usable: {error}"
    return None if count > 0 else "no CUDA device is present"


def _to_bhtd(case, x):
    return np.swapaxes(x, 1, 2) if case.layout == "BTHD" else x


def run_cupy(case, inputs, *, grads: bool) -> Output:
    import cupy

    from refmask.conformance.cases import attention_kwargs

    values = {name: cupy.asarray(x if x.dtype == np.bool_ else np.asarray(x, np.float64))
              for name, x in inputs.items()}
    kwargs = attention_kwargs(case, values)
    result = attention(values["q"], values["k"], values["v"], **kwargs)
    gradients = None
    if grads:
        g = attention_vjp(values["q"], values["k"], values["v"], values["d_out"], **kwargs)
        gradients = {name: cupy.asnumpy(getattr(g, name)) for name in ("dq", "dk", "dv")}
        gradients = {name: _to_bhtd(case, value) for name, value in gradients.items()}
        for name in ("dbias", "dsinks"):
            if getattr(g, name) is not None:
                gradients[name] = cupy.asnumpy(getattr(g, name))
    return Output(out=_to_bhtd(case, cupy.asnumpy(result.out)),
                  lse=cupy.asnumpy(result.lse), grads=gradients)


ADAPTERS = (
    Adapter(
        name="cupy",
        profile=Profile(empty_rows="zero", causal_alignment="both", lse_base="e", backward=True,
                        notes="refmask.attention in float64 on CuPy arrays (GPU)"),
        run=run_cupy,
        unavailable=_unavailable,
        description="refmask's own float64 reference, run unchanged on CuPy GPU arrays",
    ),
)
