"""Exact conversions refmask <-> xformers' Paged* attention biases (adapters/xformers/paged.py),
judged against xformers' own ``materialize`` (the classes' "for debugging & testing"
reference) and a hand-worked picture."""

from __future__ import annotations

import numpy as np
import pytest

from refmask import masks as m
from refmask.adapters.xformers.paged import (
    PAGED_CLASSES,
    from_xformers_paged,
    to_xformers_paged,
)

torch = pytest.importorskip("torch")
ab = pytest.importorskip("xformers.ops.fmha.attn_bias")
BR = "bottom_right"


def keep_of_bias(bias) -> np.ndarray:
    """xformers' materialised bias as a keep mask (Tq, (max(block_tables) + 1) * page_size)."""
    q_total = bias.q_seqinfo.seqstart_py[-1]
    rows, width = bias.block_tables.shape
    return np.isfinite(bias.materialize((q_total, rows * width * bias.page_size),
                                        dtype=torch.float32, device="cpu").numpy())


def keep_of_mask(mask) -> np.ndarray:
    layout = mask.layout
    return np.asarray(mask.materialize(1, 1, layout.q_total, layout.k_total))[0, 0]


def test_hand_worked_picture():
    """Page size 2, one sequence of 3 keys on pages [1, 0], 2 queries, causal bottom-right:
    logical keys 0, 1 live in physical slots 2, 3 and key 2 in slot 0; query i sits at
    position 3 - 2 + i, so query 0 sees keys 0, 1 and query 1 keys 0, 1, 2."""
    expected = np.array([[0, 0, 1, 1], [1, 0, 1, 1]], dtype=bool)
    native = ab.PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens(
        [2], [3], torch.tensor([[1, 0]], dtype=torch.int32), 2, device=torch.device("cpu"))
    assert np.array_equal(keep_of_bias(native), expected)
    mask = from_xformers_paged(native)
    assert np.array_equal(keep_of_mask(mask), expected)
    ours = to_xformers_paged(m.varlen(m.causal(align=BR), m.paged_layout(
        [[1, 0]], 2, [3], num_pages=2, cu_seqlens_q=[0, 2])))
    assert type(ours).__name__ == "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask"
    assert np.array_equal(keep_of_bias(ours), expected)


#: (block table, page size, seq lens, cu_seqlens_q, first slots or None)
LAYOUTS = [
    ([[2, 0, 5], [4, 1, 3]], 3, [7, 4], [0, 1, 2], None),        # decode, partial last pages
    ([[0, 1, 2], [0, 1, 3]], 2, [6, 5], [0, 2, 4], None),        # shared prefix pages
    ([[3, 1, 0], [2, 4, 5]], 2, [5, 3], [0, 2, 5], [0, 1]),      # gappy second sequence
    ([[4, 2], [0, 3], [1, 5]], 4, [5, 8, 2], [0, 3, 4, 6], [2, 0, 1]),
    ([[1, 0], [2, 3]], 2, [0, 3], [0, 0, 2], None),              # a sequence with no key
]


def _mask(inner, table, size, lens, cu_q, first):
    num_pages = max(max(row) for row in table) + 1
    extra = {} if first is None else {"first_slots": first}
    return m.varlen(inner, m.paged_layout(table, size, lens, num_pages=num_pages,
                                          cu_seqlens_q=cu_q, **extra))


@pytest.mark.parametrize("inner", [m.full(), m.causal(align=BR)], ids=["full", "causal"])
@pytest.mark.parametrize("table,size,lens,cu_q,first", LAYOUTS)
def test_to_xformers_materialises_the_same_mask(inner, table, size, lens, cu_q, first):
    mask = _mask(inner, table, size, lens, cu_q, first)
    bias = to_xformers_paged(mask)
    expected = ("PagedBlockDiagonal" + ("" if inner.kind == "full" else "CausalWithOffset")
                + ("PaddedKeys" if first is None else "GappyKeys") + "Mask")
    assert type(bias).__name__ == expected
    assert np.array_equal(keep_of_bias(bias), keep_of_mask(mask))


def _native(cls_name, table, size, lens, cu_q, first):
    """The bias built by xformers' own constructors."""
    q_lens = np.diff(cu_q).tolist()
    blocks = torch.tensor(table, dtype=torch.int32)
    cls = getattr(ab, cls_name)
    if first is None:
        return cls.from_seqlens(q_lens, lens, blocks, size, device=torch.device("cpu"))
    row = len(table[0]) * size
    starts = [row * n + s for n, s in enumerate(first)] + [row * len(lens)]
    return ab.BlockDiagonalGappyKeysMask.from_seqlens(
        q_lens, starts, lens, device=torch.device("cpu")).make_paged(blocks, size, row, cls)


@pytest.mark.parametrize("cls_name", PAGED_CLASSES)
@pytest.mark.parametrize("table,size,lens,cu_q,first", LAYOUTS)
def test_from_xformers_materialises_the_same_mask_and_round_trips(cls_name, table, size, lens,
                                                                   cu_q, first):
    gappy = "Gappy" in cls_name
    if gappy and first is None:
        first = [0] * len(lens)
    if not gappy and first is not None:
        pytest.skip("a padded-keys class has no first slots")
    native = _native(cls_name, table, size, lens, cu_q, first)
    mask = from_xformers_paged(native)
    assert np.array_equal(keep_of_mask(mask), keep_of_bias(native))
    back = to_xformers_paged(mask)
    expected = cls_name if any(first or ()) or not gappy else cls_name.replace("Gappy",
                                                                                "Padded")
    assert type(back).__name__ == expected  # all-zero first slots are the padded class
    assert torch.equal(back.block_tables, native.block_tables)
    assert back.q_seqinfo.seqstart_py == native.q_seqinfo.seqstart_py
    assert np.array_equal(keep_of_bias(back), keep_of_bias(native))


def test_every_paged_class_is_covered():
    assert {n for n in dir(ab) if n.startswith("PagedBlockDiagonal")} == set(PAGED_CLASSES)


def test_num_pages_widens_the_cache():
    native = _native("PagedBlockDiagonalPaddedKeysMask", [[1, 0]], 2, [3], [0, 2], None)
    mask = from_xformers_paged(native, num_pages=5)
    keep = keep_of_mask(mask)
    assert keep.shape == (2, 10) and not keep[:, 4:].any()
    assert np.array_equal(keep[:, :4], keep_of_bias(native))


@pytest.mark.parametrize("mask,error,rule", [
    (m.causal(align=BR), TypeError, "varlen"),
    (m.varlen(m.causal(align=BR), m.paged_layout([[0, 1]], 2, [3], num_pages=2)),
     ValueError, "packed queries"),
    (m.varlen(m.sliding_window(1, 0, align=BR), m.paged_layout(
        [[0, 1]], 2, [3], num_pages=2, cu_seqlens_q=[0, 1])), ValueError, "per-sequence mask"),
    (m.varlen(m.causal(align="top_left"), m.paged_layout(
        [[0, 1]], 2, [3], num_pages=2, cu_seqlens_q=[0, 1])), ValueError, "per-sequence mask"),
    (m.varlen(m.full(), m.paged_layout([[0, 1, 0]], 2, [3], num_pages=2,
                                       cu_seqlens_q=[0, 1])), ValueError, "repeats a used page"),
])
def test_what_no_paged_class_says_is_refused(mask, error, rule):
    with pytest.raises(error, match=rule):
        to_xformers_paged(mask)


def test_only_paged_biases_are_read():
    with pytest.raises(TypeError, match="PagedBlockDiagonal"):
        from_xformers_paged(ab.BlockDiagonalMask.from_seqlens([2], [2]))
