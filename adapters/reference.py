"""The refmask reference itself as an adapter: ``numpy`` (float64 in, float64 out).

It computes in the case dtype's float64 upcast with ``refmask.attention`` on the exact path
(``path="exact"``, whatever the size: the array-API definition, never ``refmask.fast``) and is
expected to pass every case; ``refmask check numpy`` is the suite checking its own reference
against the exact (mpmath, correctly rounded) golden values, and ``refmask check numpy
--corpus DIR`` against a reference-engine corpus checks the exact path against itself on
another machine's BLAS. The fast path is the separate backend ``refmask.fast``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from refmask.attention import SCORE_STAGES, attention, attention_vjp

from .common import Adapter, Output, Profile
from .common.translate import float64_inputs, to_output

if TYPE_CHECKING:
    from refmask.case import Case


def run_reference(case: Case, inputs: dict[str, np.ndarray], *, grads: bool) -> Output:
    from dataclasses import replace

    from refmask.case import attention_kwargs, score_arrays

    values = float64_inputs(inputs)
    kwargs = attention_kwargs(case, values)
    q, k, v = values["q"], values["k"], values["v"]
    result = attention(q, k, v, **kwargs, path="exact")
    gradients = attention_vjp(q, k, v, values["d_out"], **kwargs, path="exact") if grads else None
    output = to_output(case, result, gradients)
    if case.scores:  # refmask.attention.scores on the same float64 upcast
        output = replace(output, scores=score_arrays(case, values))
    return output


ADAPTERS = (
    Adapter(
        name="numpy",
        profile=Profile(empty_rows="zero", causal_alignment="both", lse_base="e",
                        backward=True,
                        notes="refmask.attention in float64, exact path (the reference)"),
        run=run_reference,
        description="refmask's own float64 reference on NumPy arrays",
        scores=frozenset(SCORE_STAGES), temperature=True,
    ),
)
