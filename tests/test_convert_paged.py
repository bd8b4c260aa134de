"""Paged-cache layout conversions (block table + seq_lens <-> FlashInfer page lists): a
hand-worked example, exact round trips, layouts, and the argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from refmask import masks as m
from refmask.convert import (
    block_table_to_flashinfer,
    flashinfer_to_block_table,
    flashinfer_to_layout,
    layout_to_flashinfer,
)


def test_hand_worked_example():
    # page_size 4: seq 0 has 9 keys (pages 7, 2, 5; one token in the last), seq 1 has none,
    # seq 2 has 4 keys (one full page 0); rows are padded with 99
    table = [[7, 2, 5, 99], [99, 99, 99, 99], [0, 99, 99, 99]]
    indptr, indices, last = block_table_to_flashinfer(table, [9, 0, 4], 4)
    assert indptr.tolist() == [0, 3, 3, 4]
    assert indices.tolist() == [7, 2, 5, 0]
    assert last.tolist() == [1, 0, 4]
    back, lengths = flashinfer_to_block_table(indptr, indices, last, 4, pad_page=99)
    assert back.tolist() == [[7, 2, 5], [99, 99, 99], [0, 99, 99]]
    assert lengths.tolist() == [9, 0, 4]


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_is_exact_on_random_page_lists(seed):
    rng = np.random.default_rng(seed)
    page_size = int(rng.integers(1, 6))
    lengths = rng.integers(0, 20, size=int(rng.integers(1, 6)))
    counts = -(-lengths // page_size)
    pages = rng.permutation(int(counts.sum()) + 3)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = pages[:indptr[-1]]
    last = np.where(counts > 0, lengths - (counts - 1) * page_size, 0)
    table, got_lengths = flashinfer_to_block_table(indptr, indices, last, page_size, pad_page=-1)
    assert got_lengths.tolist() == lengths.tolist()
    again = block_table_to_flashinfer(table, got_lengths, page_size)
    for got, want in zip(again, (indptr, indices, last), strict=True):
        assert got.tolist() == want.tolist()


def test_layouts_convert_both_ways_and_keep_the_mask():
    layout = m.paged_layout([[2, 0, 5], [4, 1, 3]], 3, [7, 4], num_pages=6)
    lists = layout_to_flashinfer(layout)
    assert [x.tolist() for x in lists] == [[0, 3, 5], [2, 0, 5, 4, 1], [1, 1]]
    again = flashinfer_to_layout(*lists, 3, num_pages=6)
    causal = m.causal(align="bottom_right")
    assert np.array_equal(m.varlen(causal, again).materialize(2, 1, 2, 18),
                          m.varlen(causal, layout).materialize(2, 1, 2, 18))


@pytest.mark.parametrize("call,message", [
    (lambda: block_table_to_flashinfer([[0]], [5], 4), "needs 2 pages"),
    (lambda: block_table_to_flashinfer([[0, 1]], [5, 1], 4), "1 rows"),
    (lambda: block_table_to_flashinfer([[-1, 0]], [5], 4), "negative page id"),
    (lambda: flashinfer_to_block_table([0, 2], [1], [1], 4, pad_page=0), "kv_indptr"),
    (lambda: flashinfer_to_block_table([0, 1], [1], [0], 4, pad_page=0), r"in \[1, 4\]"),
    (lambda: flashinfer_to_block_table([0, 0], [], [2], 4, pad_page=0), "be 0"),
    (lambda: flashinfer_to_block_table([1, 2], [1], [1], 4, pad_page=0), "start at 0"),
    (lambda: layout_to_flashinfer(m.paged_layout([[0, 1]], 2, [2], num_pages=2,
                                                 first_slots=[1])), "first_slots"),
])
def test_bad_page_lists_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_pad_page_is_required():
    with pytest.raises(TypeError):
        flashinfer_to_block_table([0, 1], [3], [2], 4)  # noqa
