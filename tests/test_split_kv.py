"""Split-KV with real backends: partial (out, lse) over key ranges, computed by a backend that
returns its LSE (FlexAttention ``return_aux`` / the refmask reference), merged with
``refmask.attention.merge`` and judged against refmask's attention over all keys."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from refmask import masks as m
from refmask.adapters import load
from refmask.attention import attention, merge
from refmask.case import Case, attention_kwargs, case_inputs

WHOLE = Case(name="split_kv/whole", family="split_kv",
             mask=m.causal(align="bottom_right") & m.sliding_window(5, 0, align="bottom_right"),
             batch=2, q_heads=4, kv_heads=2, q_len=3, k_len=10, dtype="float32")
BOUNDS = (0, 4, 7, 10)


def partial_cases():
    """The whole case restricted to each key range; same name, so the same inputs."""
    return [replace(WHOLE, mask=WHOLE.mask & m.key_padding(stop, side="right")
                    & ~m.key_padding(start, side="right"))
            for start, stop in zip(BOUNDS[:-1], BOUNDS[1:], strict=True)]


@pytest.mark.parametrize("backend", ["numpy", "torch.flex"])
def test_backend_partials_merge_to_the_whole(backend):
    adapter = load(backend)
    if adapter.unavailable():
        pytest.skip(adapter.unavailable())
    inputs = case_inputs(WHOLE)
    parts = []
    for case in partial_cases():
        output = adapter.run(case, inputs, grads=False)
        assert output.lse is not None, f"{backend} returns no LSE"
        parts += [np.asarray(output.out, np.float64), np.asarray(output.lse, np.float64)]
    out, lse = merge(*parts, base=adapter.profile.lse_base)
    upcast = {name: np.asarray(value, np.float64) for name, value in inputs.items()}
    whole = attention(upcast["q"], upcast["k"], upcast["v"],
                      **{**attention_kwargs(WHOLE, upcast), "mask": WHOLE.mask})
    # float32 inputs: each partial carries float32 rounding, the merge adds none of its own
    np.testing.assert_allclose(out, whole.out, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(lse, whole.lse, rtol=2e-5, atol=2e-6)


def test_merging_in_the_wrong_base_is_caught():
    inputs = {k: np.asarray(v, np.float64) for k, v in case_inputs(WHOLE).items()}
    parts = []
    for case in partial_cases():
        result = attention(inputs["q"], inputs["k"], inputs["v"], mask=case.mask)
        parts += [result.out, result.lse]
    whole = attention(inputs["q"], inputs["k"], inputs["v"], mask=WHOLE.mask)
    out_e, _ = merge(*parts, base="e")
    out_2, _ = merge(*parts, base="2")  # natural-log lse read as log2: the classic bug
    assert np.max(np.abs(out_e - whole.out)) < 1e-13
    assert np.max(np.abs(out_2 - whole.out)) > 1e-3
