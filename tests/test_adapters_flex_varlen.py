"""torch.flex's document-aware mask_mod for packed and paged sequences: built natively (not a
lookup of the dense mask), it reproduces every varlen/paged case of the catalog under
flex's own ``create_mask``, and the adapter passes those cases with its LSE."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from refmask.adapters.torch.flex import _document_mask_mod  # noqa: E402
from refmask.conformance.cases import catalog  # noqa: E402
from refmask.conformance.runner import check  # noqa: E402

VARLEN = [c for c in catalog(["float32"]) if c.mask is not None and c.mask.kind == "varlen"]


@pytest.mark.parametrize("case", VARLEN, ids=[c.name for c in VARLEN])
def test_document_mask_mod_reproduces_the_case(case):
    from torch.nn.attention.flex_attention import create_mask

    mask_mod = _document_mask_mod(case)
    if case.mask.mask.kind == "tree":
        assert mask_mod is None  # trees go through the dense lookup
        return
    assert mask_mod is not None
    got = create_mask(mask_mod, case.batch, 1, case.q_len, case.k_len, device="cpu")
    expected = case.keep()[:, :1]
    assert np.array_equal(got.numpy(), expected)


def test_varlen_and_paged_cases_pass_with_lse():
    report = check("torch.flex", dtypes=["float64", "float32"], filter="varlen/,paged/")
    assert report.results
    for result in report.results:
        if result.verdict == "unsupported":
            assert "sink" in result.reason
        else:
            assert result.verdict == "pass", (result.case.id, result.reason)
            assert "lse" in {c.name for c in result.checks}
