"""The reference on CuPy: skipped (with the reason) where CuPy or a GPU is missing.

On a machine without a GPU the same array-API code path is exercised through
array_api_strict (tests/test_attention_namespaces.py); this file is the GPU half.
"""

from __future__ import annotations

import pytest

from refmask.adapters import load
from refmask.conformance.runner import check


def test_cupy_adapter_reports_why_it_cannot_run_or_passes_the_corpus():
    adapter = load("cupy")
    reason = adapter.unavailable()
    if reason is not None:
        assert "cupy" in reason or "CUDA" in reason
        report = check(adapter, dtypes=["float64"], filter="causal/top_left/square")
        assert [r.verdict for r in report.results] == ["unsupported"]
        assert report.results[0].reason == reason
        pytest.skip(reason)
    report = check(adapter, grads=True)
    bad = [(r.case.id, r.reason) for r in report.results if r.verdict != "pass"]
    assert not bad, bad[:5]
