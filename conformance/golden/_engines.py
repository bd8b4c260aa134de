"""The two engines that derive a corpus's golden outputs from its cases ("exact": mpmath via
:mod:`refmask.conformance.exact`; "reference": refmask's float64 reference on its exact path,
never ``refmask.fast``); used by both :func:`~refmask.conformance.golden.generate` and
:func:`~refmask.conformance.golden.verify`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from refmask.case import Case, case_inputs, reference_outputs, to_bhtd

GENERATOR = "refmask.conformance.exact (mpmath, 50 digits)"
REFERENCE_GENERATOR = "refmask.attention float64 reference"
#: engine -> the manifest's "generator" text.
ENGINES = {"exact": GENERATOR, "reference": REFERENCE_GENERATOR}


def reference_golden_outputs(case: Case, inputs: Mapping) -> dict:
    """The float64 reference's golden outputs (exact path), laid out like the exact engine's."""
    arrays = reference_outputs(case, dict(inputs), float64=True, grads=True)
    # back from BHTD to the case's layout (the swap is its own inverse)
    arrays = {name: to_bhtd(case, value) if name in ("out", "dq", "dk", "dv") else value
              for name, value in arrays.items()}
    return {name: np.ascontiguousarray(value, np.float64) for name, value in arrays.items()}


def _reference_many(cases: Iterable[Case]) -> Iterator[tuple]:
    for case in cases:
        inputs = case_inputs(case)
        yield case, inputs, reference_golden_outputs(case, inputs)


def compute(cases: list, engine: str, processes: int | None) -> Iterator[tuple]:
    """``(case, inputs, outputs)`` per case, from ``engine``."""
    if engine == "reference":
        return _reference_many(cases)
    from ..exact import exact_many

    return exact_many(cases, processes=processes)


def check_engine(where: str, engine) -> str:
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"{where}: engine must be one of {list(ENGINES)}, got {engine!r}")
    return engine


