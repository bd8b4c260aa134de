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


# -- padded packed batches and bidirectional packing: packed_sequence_mask_function ----------

SEGMENTS = [[0, 0, 0, 1, 1, 2, 2, 2], [0, 0, 1, 1, 1, 1, 2, 2]]
TL = "top_left"


def documents_case(*parts, lengths=(8, 6), segments=SEGMENTS):
    mask = m.all_of(m.documents(np.array(segments)), *parts)
    if lengths is not None:
        mask = mask & m.key_padding(list(lengths), side="right")
    return Case(name="hf/padded_packed", family="documents", mask=mask, batch=2, q_heads=1,
                kv_heads=1, q_len=8, k_len=8)


@pytest.mark.parametrize("parts,restarts", [
    ((m.causal(align=TL),), True),
    ((m.sliding_window(1, 0, align=TL),), True),
    ((m.causal(align=TL), m.chunked(3, align=TL)), False),
    ((), False),
    ((m.sliding_window(1, 1, align=TL),), False),
], ids=["causal", "window_2_keys", "chunks_3", "bidirectional", "bidirectional_window"])
@pytest.mark.parametrize("lengths", [(8, 6), None], ids=["padded", "unpadded"])
def test_padded_packed_batches_and_bidirectional_packing(parts, restarts, lengths):
    """A padded packed batch (two rows of three documents, the second row's last 2 slots
    padding) through HF's own packed_sequence_mask_function as and_mask_function beside the
    2-D attention_mask; bidirectional documents, and chunks counted from packed position 0,
    the same way. Unpadded causal documents keep HF's position_ids detection."""
    case = documents_case(*parts, lengths=lengths)
    inputs = plan(case)
    if lengths is None and restarts:
        assert inputs["position_ids"] is not None and inputs["packed_sequence_ids"] is None
    else:
        assert inputs["packed_sequence_ids"].tolist() == SEGMENTS
    assert np.array_equal(hf_mask(case)[:, 0], case.keep()[:, 0])


def test_hand_worked_padded_packed_row():
    """Row 1 of SEGMENTS under causal & padding 6: documents [0, 2), [2, 6), then padding."""
    keep = hf_mask(documents_case(m.causal(align=TL)))[1, 0].astype(int)
    assert keep.tolist() == [[1, 0, 0, 0, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0, 0, 0, 0],
                             [0, 0, 1, 0, 0, 0, 0, 0],
                             [0, 0, 1, 1, 0, 0, 0, 0],
                             [0, 0, 1, 1, 1, 0, 0, 0],
                             [0, 0, 1, 1, 1, 1, 0, 0],
                             [0, 0, 0, 0, 0, 0, 0, 0],
                             [0, 0, 0, 0, 0, 0, 0, 0]]


def test_packed_cross_attention_and_packing_with_a_cache_have_no_hf_form():
    cross = Case(name="hf/cross_docs", family="documents",
                 mask=m.documents([0, 0, 1], [0, 0, 0, 1, 1]), batch=1, q_heads=1, kv_heads=1,
                 q_len=3, k_len=5)
    with pytest.raises(Unsupported, match="no packed cross-attention"):
        plan(cross)
    cached = Case(name="hf/cached_docs", family="documents",
                  mask=m.documents([0, 0, 1, 1]) & m.causal(align="bottom_right"), batch=1,
                  q_heads=1, kv_heads=1, q_len=2, k_len=4)
    with pytest.raises(Unsupported, match="without a cache"):
        plan(cached)
