"""Tree attention for speculative decoding: hand-worked trees, an independent ancestor walk,
the prefix alignment, per-sequence trees inside varlen, conversions and errors."""

from __future__ import annotations

import numpy as np
import pytest

from refmask import masks as m


def grid(rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool)


def walk_up(parents, node):
    """Node and its ancestors, by following parent links (independent of ancestor_matrix)."""
    seen = []
    while node >= 0:
        seen.append(node)
        node = parents[node]
    return seen


def test_medusa_style_tree_with_a_cached_prefix():
    # root 0 with children 1, 2; node 3 under 1; node 4 under 2; 2 cached prefix keys
    parents = [-1, 0, 0, 1, 2]
    mask = m.tree(parents, align="bottom_right")
    got = np.asarray(mask.materialize(1, 1, 5, 7))[0, 0]
    assert np.array_equal(got, grid("""
        ###....
        ####...
        ###.#..
        ####.#.
        ###.#.#"""))


@pytest.mark.parametrize("parents", [[-1, 0, 0, 1, 1, 2, 3, 3, 5], [-1, -1, 0, 1, 2, 2],
                                     [-1, 0, 1, 2, 3]])
@pytest.mark.parametrize("prefix", [0, 3])
def test_tree_equals_the_ancestor_walk(parents, prefix):
    n = len(parents)
    expected = np.zeros((n, prefix + n), dtype=bool)
    expected[:, :prefix] = True
    for i in range(n):
        for u in walk_up(parents, i):
            expected[i, prefix + u] = True
    for align in ("bottom_right", prefix):
        got = np.asarray(m.tree(parents, align=align).materialize(1, 1, n, prefix + n))[0, 0]
        assert np.array_equal(got, expected)


def test_a_chain_is_causal_bottom_right():
    chain = m.tree([-1, 0, 1, 2], align="bottom_right")
    causal = m.causal(align="bottom_right")
    assert np.array_equal(chain.materialize(1, 1, 4, 9), causal.materialize(1, 1, 4, 9))


def test_per_batch_trees_and_prefixes():
    mask = m.tree([[-1, 0, 0], [-1, 0, 1]], align=[1, 2])
    got = np.asarray(mask.materialize(2, 1, 3, 5))[:, 0]
    assert np.array_equal(got[0], grid("""
        ##...
        ###..
        ##.#."""))
    assert np.array_equal(got[1], grid("""
        ###..
        ####.
        #####"""))


def test_trees_per_packed_sequence_inside_varlen():
    # two requests verify a 3-node tree each, with 2 and 1 cached keys
    layout = m.varlen_layout([0, 3, 6], [0, 5, 9])
    mask = m.varlen(m.tree([-1, 0, 0], align="bottom_right"), layout)
    got = np.asarray(mask.materialize(1, 1, 6, 9))[0, 0]
    assert np.array_equal(got, grid("""
        ###......
        ####.....
        ###.#....
        .....##..
        .....###.
        .....##.#"""))


def test_ancestor_matrix_round_trip_and_bit_packing():
    parents = [[-1, 0, 0, 1, 2, -1, 5]]
    ancestors = m.ancestor_matrix(parents)
    assert ancestors.shape == (1, 7, 7)
    assert m.parents_from_ancestors(ancestors).tolist() == parents
    keep = np.asarray(m.tree(parents, align="top_left").materialize(1, 1, 7, 7))[0, 0]
    assert np.array_equal(keep, ancestors[0])
    packed = np.packbits(keep, axis=-1, bitorder="little")  # FlashInfer custom_mask rows
    assert np.array_equal(np.unpackbits(packed, axis=-1, count=7, bitorder="little")
                          .astype(bool), keep)


@pytest.mark.parametrize("bad,message", [
    ([-1, 2, 0], r"parents\[0\]\[1\] = 2 must lie in \[-1, 1\)"),
    ([0], r"must lie in \[-1, 0\)"),
    ([-1, -2], "must lie in"),
])
def test_bad_parent_arrays(bad, message):
    with pytest.raises(ValueError, match=message):
        m.tree(bad, align="bottom_right")


def test_not_a_tree_relation_is_refused():
    with pytest.raises(ValueError, match="not the ancestor-or-self relation"):
        m.parents_from_ancestors(np.array([[True, False], [True, False]]))


def test_q_len_must_be_the_node_count():
    with pytest.raises(ValueError, match="q_len must equal the 3 nodes"):
        m.tree([-1, 0, 0], align="bottom_right").materialize(1, 1, 2, 5)


def test_json_round_trip():
    mask = m.tree([[-1, 0, 1], [-1, -1, 0]], align=[2, 0])
    assert m.from_json(mask.to_json()) == mask


def test_mismatched_batch_sizes_are_refused():
    with pytest.raises(ValueError, match="mismatched batch sizes"):
        m.tree([[-1, 0], [-1, 0]], align=[1, 2, 3])
