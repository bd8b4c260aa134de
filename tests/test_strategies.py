"""The fuzzer reaches every catalog feature, names the bug on the shrunk case as ``check``
does, and says how many random cases the backend could not express."""

from __future__ import annotations

import json
import math

import legit_kernels as lk
from hypothesis import HealthCheck, given, settings

from refmask.conformance.strategies import LONG_ROW, cases, fuzz

FEATURES = {
    "ALiBi": lambda c: c.alibi is not None,
    "Dropout": lambda c: c.dropout_rate is not None,
    "CustomScale": lambda c: c.scale is not None,
    "LargeMagnitude": lambda c: c.input_scale >= 8,
    "long rows": lambda c: c.k_len == LONG_ROW,
    "offsets": lambda c: '"offset"' in json.dumps(c.mask.to_json() if c.mask else None),
    "valid lengths": lambda c: '"k_lengths"' in json.dumps(c.mask.to_json() if c.mask else None),
    "per-head masks": lambda c: '"per_head"' in json.dumps(c.mask.to_json() if c.mask else None),
    "per-batch masks": lambda c: '"per_batch"' in json.dumps(
        c.mask.to_json() if c.mask else None),
    "Softcap": lambda c: c.softcap is not None,
    "Sink": lambda c: c.sinks,
    "GQA": lambda c: 1 < c.kv_heads < c.q_heads or c.kv_heads == 1 < c.q_heads,
}


def test_random_cases_reach_every_catalog_feature():
    seen = set()

    @settings(max_examples=400, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(cases(dtypes=["float64"]))
    def collect(case):
        case.keep()  # every drawn case is valid
        seen.update(name for name, has in FEATURES.items() if has(case))

    collect()
    assert seen == set(FEATURES), set(FEATURES) - seen


def scale_one_over_d(q, k, v, call):
    """A planted bug: scores scaled by 1/Dqk; everything else as the spec says."""
    return lk.spec_output(q, k, v, call, scale=1.0 / q.shape[-1])


scale_one_over_d.refmask_unsupported = {"sinks"}


def test_fuzz_names_the_bug_on_the_shrunk_case_and_counts_unsupported():
    found = fuzz(scale_one_over_d, max_examples=60, seed=1, dtypes=["float64"])
    case, result, stats = found.case, found.result, found.verdicts
    assert case is not None and result.verdict == "fail"
    assert result.convention == "scale=1/Dqk", result.reason
    assert "Fix:" in result.reason
    assert stats.get("unsupported", 0) >= 1, stats
    assert sum(stats.values()) == found.tried
    assert "unsupported" in found.summary()
    assert not case.sinks and case.scale is None and case.qk_dim > 1
    assert math.isfinite(result.diagnosis["best"]["residual"])
