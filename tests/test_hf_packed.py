"""HF masking_utils for packed sequences: HF's position_ids packing against refmask's native
``varlen`` masks (causal, causal windows and chunks per sequence), and what it cannot say."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from refmask import masks as m  # noqa: E402
from refmask.adapters import Unsupported  # noqa: E402
from refmask.adapters.hf.masks import hf_mask, plan  # noqa: E402
from refmask.case import Case  # noqa: E402

CU = [0, 3, 7, 9]


def packed(inner, name="hf/packed"):
    return Case(name=name, family="varlen", mask=m.varlen(inner, m.varlen_layout(CU, CU)),
                batch=1, q_heads=1, kv_heads=1, q_len=9, k_len=9)


@pytest.mark.parametrize("inner", [
    m.causal(align="bottom_right"),
    m.causal(align="top_left"),
    m.sliding_window(1, 0, align="bottom_right"),
    m.causal(align="bottom_right") & m.sliding_window(2, 0, align="bottom_right"),
], ids=["causal_br", "causal_tl", "window_2_keys", "causal_window_3_keys"])
def test_hf_packed_sequences_equal_native_varlen_masks(inner):
    case = packed(inner)
    inputs = plan(case)
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 1]]
    assert np.array_equal(hf_mask(case)[:, 0], case.keep()[:, 0])


def test_hf_chunks_restart_per_packed_sequence():
    """Measured (transformers 5.23.0): with packed position_ids, create_chunked_causal_mask
    restarts its chunks at every sequence, exactly like varlen chunks (and unlike chunks
    counted from packed position 0)."""
    case = packed(m.chunked(2, align="bottom_right") & m.causal(align="bottom_right"))
    got = hf_mask(case)[0, 0]
    assert np.array_equal(got, case.keep()[0, 0])
    global_chunks = (m.documents_from_cu_seqlens(CU) & m.causal(align="top_left")
                     & m.chunked(2, align="top_left"))
    assert not np.array_equal(got, global_chunks.materialize(1, 1, 9, 9)[0, 0])


def test_cross_attention_spans_have_no_hf_form():
    case = Case(name="hf/cross", family="varlen",
                mask=m.varlen(m.causal(align="bottom_right"), m.varlen_layout([0, 2, 5],
                                                                             [0, 4, 7])),
                batch=1, q_heads=1, kv_heads=1, q_len=5, k_len=7)
    with pytest.raises(Unsupported, match="cu_seqlens_q == cu_seqlens_k"):
        plan(case)
