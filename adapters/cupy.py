"""The refmask reference on CuPy arrays: ``cupy`` (float64 on the GPU).

Nothing here is CuPy-specific logic: the inputs are moved to the GPU and the unchanged
``refmask.attention`` runs on them through array-api-compat (masks materialise in the CuPy
namespace too). The adapter exists so ``refmask check cupy`` compares the GPU run of the
reference with the exact golden values, case by case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from refmask.attention import attention, attention_vjp

from .common import Adapter, Output, Profile
from .common.translate import float64_inputs, to_output

if TYPE_CHECKING:
    from refmask.case import Case


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


def run_cupy(case: Case, inputs: dict[str, np.ndarray], *, grads: bool) -> Output:
    import cupy

    from refmask.case import attention_kwargs

    values = {name: cupy.asarray(x) for name, x in float64_inputs(inputs).items()}
    kwargs = attention_kwargs(case, values)
    q, k, v = values["q"], values["k"], values["v"]
    result = attention(q, k, v, **kwargs)
    gradients = attention_vjp(q, k, v, values["d_out"], **kwargs) if grads else None
    return to_output(case, result, gradients, to_numpy=cupy.asnumpy)


ADAPTERS = (
    Adapter(
        name="cupy",
        profile=Profile(empty_rows="zero", causal_alignment="both", lse_base="e", backward=True,
                        notes="refmask.attention in float64 on CuPy arrays (GPU)"),
        run=run_cupy,
        unavailable=_unavailable,
        description="refmask's own float64 reference, run unchanged on CuPy GPU arrays",
        temperature=True,
    ),
)
