"""Mask algebra: hand-worked matrices, an independent loop oracle, classify, laws, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refmask.masks import (
    Block,
    block_causal,
    bottom_right,
    causal,
    chunked,
    documents,
    documents_from_cu_seqlens,
    documents_from_position_ids,
    explicit,
    from_json,
    full,
    global_tokens,
    key_padding,
    per_batch,
    per_head,
    predicate,
    prefix_lm,
    query_padding,
    sliding_window,
    strided,
)


def grid(rows: str) -> np.ndarray:
    """Parse a picture: one string per query row, '1'/'#' = keep, '0'/'.' = drop."""
    return np.array([[c in "1#" for c in row.replace(" ", "")] for row in rows.split()], bool)


def dense(mask, q_len, k_len, batch=1, heads=1):
    return np.asarray(mask.materialize(batch, heads, q_len, k_len))


# --- hand-worked matrices ------------------------------------------------------------------

HAND_WORKED = [
    # The "static mask" of the masking articles: triu(ones(T, T), diagonal=1) are the masked
    # positions, so the keep matrix is the lower triangle.
    ("causal_square", causal(align="top_left"), 4, 4, "1000 1100 1110 1111"),
    ("causal_top_left_wide", causal(align="top_left"), 3, 5, "10000 11000 11100"),
    ("causal_bottom_right_wide", causal(align="bottom_right"), 3, 5, "11100 11110 11111"),
    ("causal_top_left_tall", causal(align="top_left"), 4, 2, "10 11 11 11"),
    ("causal_bottom_right_tall", causal(align="bottom_right"), 4, 2, "00 00 10 11"),
    ("causal_kv_cache_offset_3", causal(align=3), 2, 5, "11110 11111"),
    ("window_3_keys_incl_self", sliding_window(2, 0, align="top_left"), 5, 5,
     "10000 11000 11100 01110 00111"),
    ("window_symmetric_bottom_right_wide", sliding_window(1, 1, align="bottom_right"), 3, 5,
     "01110 00111 00011"),
    ("window_left_unbounded_right_1", sliding_window(None, 1, align="top_left"), 3, 4,
     "1100 1110 1111"),
    ("window_bottom_right_tall", sliding_window(1, 0, align="bottom_right"), 4, 2,
     "00 00 10 11"),
    ("chunked_2", chunked(2, align="top_left"), 5, 5, "11000 11000 00110 00110 00001"),
    ("chunked_2_bottom_right_wide", chunked(2, align="bottom_right"), 2, 5, "00110 00001"),
    ("chunked_3_bottom_right_tall", chunked(3, align="bottom_right"), 4, 3,
     "000 111 111 111"),
    # Progressive exposure of sub-sequences of length T = 2.
    ("block_causal_2", block_causal(2, align="top_left"), 6, 6,
     "110000 110000 111100 111100 111111 111111"),
    ("block_causal_2_bottom_right_wide", block_causal(2, align="bottom_right"), 2, 4,
     "1111 1111"),
    ("block_causal_2_top_left_wide", block_causal(2, align="top_left"), 3, 5,
     "11000 11000 11110"),
    ("prefix_lm_2", prefix_lm(2, align="top_left"), 5, 5, "11000 11000 11100 11110 11111"),
    ("prefix_lm_1_bottom_right_tall", prefix_lm(1, align="bottom_right"), 4, 3,
     "100 100 110 111"),
    ("documents_packed", documents([[0, 0, 1, 1, 1]]), 5, 5,
     "11000 11000 00111 00111 00111"),
    ("documents_q_k_differ", documents([[0, 1]], [[0, 0, 1, 1, 1]]), 2, 5, "11000 00111"),
    ("strided_2_causal", strided(2, align="top_left") & causal(align="top_left"), 5, 5,
     "10000 01000 10100 01010 10101"),
    ("strided_3_bottom_right_wide", strided(3, align="bottom_right"), 2, 4, "0010 1001"),
    ("global_0_3", global_tokens([0, 3], align="top_left"), 5, 5,
     "11111 10010 10010 11111 10010"),
    ("global_1_bottom_right_wide", global_tokens([1], align="bottom_right"), 2, 4,
     "0100 0100"),
    ("global_2_top_left_tall", global_tokens([2], align="top_left"), 4, 3, "001 001 111 001"),
    ("full_wide", full(), 2, 3, "111 111"),
    ("key_padding_right_3", key_padding(3, side="right"), 2, 4, "1110 1110"),
    ("key_padding_left_3", key_padding(3, side="left"), 2, 4, "0111 0111"),
    ("query_padding_right_1", query_padding(1, side="right"), 3, 2, "11 00 00"),
    ("query_padding_left_2", query_padding(2, side="left"), 3, 2, "00 11 11"),
    ("causal_without_self", causal(align="top_left") & ~sliding_window(0, 0, align="top_left"),
     4, 4, "0000 1000 1100 1110"),
    ("llama4_chunked_causal", chunked(2, align="top_left") & causal(align="top_left"), 5, 5,
     "10000 11000 00100 00110 00001"),
    # The "dynamic mask" of the masking articles: its first row keeps nothing (an empty row).
    ("articles_dynamic_empty_first_row",
     explicit(np.array([[0] * 5] + [[1] * 5] * 4, dtype=bool)), 5, 5,
     "00000 11111 11111 11111 11111"),
]


@pytest.mark.parametrize("name, mask, q_len, k_len, picture", HAND_WORKED,
                         ids=[case[0] for case in HAND_WORKED])
def test_hand_worked_matrix(name, mask, q_len, k_len, picture):
    np.testing.assert_array_equal(dense(mask, q_len, k_len)[0, 0], grid(picture))


def test_per_batch_lengths_and_both_sides():
    keys = key_padding([3, 1], side="right")
    np.testing.assert_array_equal(dense(keys, 1, 4, batch=2)[:, 0, 0],
                                  grid("1110 1000"))
    keys = key_padding([3, 1], side="left")
    np.testing.assert_array_equal(dense(keys, 1, 4, batch=2)[:, 0, 0],
                                  grid("0111 0001"))


def test_bottom_right_with_per_batch_valid_lengths():
    # Right-padded batch: batch 0 has 2 valid queries of 4 keys, batch 1 has 3 of 3.
    mask = causal(align=bottom_right(q_lengths=[2, 3], k_lengths=[4, 3]))
    got = dense(mask, 3, 4, batch=2)[:, 0]
    np.testing.assert_array_equal(got[0], grid("1110 1111 1111"))  # offset 2
    np.testing.assert_array_equal(got[1], grid("1000 1100 1110"))  # offset 0


def test_per_batch_offsets_are_a_kv_cache():
    mask = causal(align=[0, 2])
    got = dense(mask, 2, 4, batch=2)[:, 0]
    np.testing.assert_array_equal(got[0], grid("1000 1100"))
    np.testing.assert_array_equal(got[1], grid("1110 1111"))


def test_per_head_and_per_batch_selection():
    mask = per_head(causal(align="top_left"), full())
    got = dense(mask, 3, 3, heads=2)[0]
    np.testing.assert_array_equal(got[0], grid("100 110 111"))
    np.testing.assert_array_equal(got[1], grid("111 111 111"))
    mask = per_batch(key_padding(1, side="right"), key_padding(2, side="left"))
    got = dense(mask, 1, 3, batch=2)[:, 0, 0]
    np.testing.assert_array_equal(got, grid("100 011"))


def test_documents_from_cu_seqlens_and_position_ids():
    expected = grid("11000 11000 00111 00111 00111")
    np.testing.assert_array_equal(dense(documents_from_cu_seqlens([0, 2, 5]), 5, 5)[0, 0],
                                  expected)
    np.testing.assert_array_equal(
        dense(documents_from_position_ids([[0, 1, 0, 1, 2]]), 5, 5)[0, 0], expected)
    # A restart need not be to 0: any break of +1 steps starts a new document (HF rule).
    np.testing.assert_array_equal(
        dense(documents_from_position_ids([[5, 6, 3, 4, 5]]), 5, 5)[0, 0], expected)
    # Empty sequences in cu_seqlens are allowed and own no token.
    np.testing.assert_array_equal(
        dense(documents_from_cu_seqlens([0, 2, 2, 5]), 5, 5)[0, 0], expected)


# --- an independent oracle: each rule as a plain Python loop over positions ----------------

def oracle_keep(spec: dict, b: int, i: int, j: int, q_len: int, k_len: int) -> bool:
    """The spec's formulas, evaluated one pair at a time with Python ints."""
    kind = spec["kind"]
    if kind == "and":
        return all(oracle_keep(s, b, i, j, q_len, k_len) for s in spec["parts"])
    if kind == "or":
        return any(oracle_keep(s, b, i, j, q_len, k_len) for s in spec["parts"])
    if kind == "not":
        return not oracle_keep(spec["part"], b, i, j, q_len, k_len)
    align = spec.get("align")
    offset = 0 if align == "top_left" else (k_len - q_len if align == "bottom_right" else align)
    pq, pk = i + offset, j
    if kind == "full":
        return True
    if kind == "causal":
        return pk <= pq
    if kind == "window":
        left, right = spec["left"], spec["right"]
        return (left is None or pk >= pq - left) and (right is None or pk <= pq + right)
    if kind == "chunked":
        return pq // spec["size"] == pk // spec["size"]  # Python // floors, like the spec
    if kind == "block_causal":
        return pk // spec["block"] <= pq // spec["block"]
    if kind == "prefix_lm":
        return pk < spec["prefix"] or pk <= pq
    if kind == "strided":
        return (pq - pk) % spec["stride"] == 0
    if kind == "global":
        return pk in spec["positions"] or pq in spec["positions"]
    if kind == "key_padding":
        n = spec["lengths"][b]
        return j < n if spec["side"] == "right" else j >= k_len - n
    if kind == "query_padding":
        n = spec["lengths"][b]
        return i < n if spec["side"] == "right" else i >= q_len - n
    if kind == "documents":
        return spec["q_ids"][b][i] == spec["k_ids"][b][j]
    raise AssertionError(kind)


def build(spec: dict):
    """The refmask mask for an oracle spec."""
    kind = spec["kind"]
    align = spec.get("align")
    if kind == "and":
        result = build(spec["parts"][0])
        for part in spec["parts"][1:]:
            result = result & build(part)
        return result
    if kind == "or":
        result = build(spec["parts"][0])
        for part in spec["parts"][1:]:
            result = result | build(part)
        return result
    if kind == "not":
        return ~build(spec["part"])
    return {
        "full": lambda: full(),
        "causal": lambda: causal(align=align),
        "window": lambda: sliding_window(spec["left"], spec["right"], align=align),
        "chunked": lambda: chunked(spec["size"], align=align),
        "block_causal": lambda: block_causal(spec["block"], align=align),
        "prefix_lm": lambda: prefix_lm(spec["prefix"], align=align),
        "strided": lambda: strided(spec["stride"], align=align),
        "global": lambda: global_tokens(sorted(spec["positions"]), align=align),
        "key_padding": lambda: key_padding(spec["lengths"], side=spec["side"]),
        "query_padding": lambda: query_padding(spec["lengths"], side=spec["side"]),
        "documents": lambda: documents(spec["q_ids"], spec["k_ids"]),
    }[kind]()


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given, settings = hypothesis.given, hypothesis.settings

BATCH = 2
aligns = st.one_of(st.sampled_from(["top_left", "bottom_right"]), st.integers(-4, 6))
small = st.integers(1, 5)


@st.composite
def primitive_specs(draw, q_len, k_len):
    kind = draw(st.sampled_from(["full", "causal", "window", "chunked", "block_causal",
                                 "prefix_lm", "strided", "global", "key_padding",
                                 "query_padding", "documents"]))
    spec = {"kind": kind, "align": draw(aligns)}
    if kind == "window":
        spec["left"] = draw(st.one_of(st.none(), st.integers(0, 6)))
        spec["right"] = draw(st.one_of(st.none(), st.integers(0, 6)))
    elif kind == "chunked":
        spec["size"] = draw(small)
    elif kind == "block_causal":
        spec["block"] = draw(small)
    elif kind == "prefix_lm":
        spec["prefix"] = draw(st.integers(0, k_len))
    elif kind == "strided":
        spec["stride"] = draw(small)
    elif kind == "global":
        spec["positions"] = draw(st.sets(st.integers(0, 12), min_size=1, max_size=4))
    elif kind in ("key_padding", "query_padding"):
        size = k_len if kind == "key_padding" else q_len
        spec["lengths"] = draw(st.lists(st.integers(0, size), min_size=BATCH, max_size=BATCH))
        spec["side"] = draw(st.sampled_from(["left", "right"]))
    elif kind == "documents":
        def ids(length):
            return draw(st.lists(st.lists(st.integers(0, 2), min_size=length, max_size=length),
                                 min_size=BATCH, max_size=BATCH))
        spec["q_ids"], spec["k_ids"] = ids(q_len), ids(k_len)
    return spec


@st.composite
def cases(draw, depth=2):
    q_len, k_len = draw(st.integers(1, 9)), draw(st.integers(1, 9))

    def node(level):
        if level == 0 or draw(st.booleans()):
            return draw(primitive_specs(q_len, k_len))
        op = draw(st.sampled_from(["and", "or", "not"]))
        if op == "not":
            return {"kind": "not", "part": node(level - 1)}
        return {"kind": op, "parts": [node(level - 1), node(level - 1)]}

    return node(depth), q_len, k_len


def oracle_dense(spec, q_len, k_len):
    return np.array([[[oracle_keep(spec, b, i, j, q_len, k_len) for j in range(k_len)]
                      for i in range(q_len)] for b in range(BATCH)])


FAST = settings(max_examples=150, deadline=None)


@FAST
@given(cases())
def test_materialize_matches_loop_oracle(case):
    spec, q_len, k_len = case
    got = dense(build(spec), q_len, k_len, batch=BATCH)[:, 0]
    np.testing.assert_array_equal(got, oracle_dense(spec, q_len, k_len))


@FAST
@given(cases(depth=0), st.data())
def test_classify_is_exact_for_primitives(case, data):
    spec, q_len, k_len = case
    mask = build(spec)
    keep = dense(mask, q_len, k_len, batch=BATCH)[:, 0]
    for _ in range(5):
        q0 = data.draw(st.integers(0, q_len - 1))
        q1 = data.draw(st.integers(q0 + 1, q_len))
        k0 = data.draw(st.integers(0, k_len - 1))
        k1 = data.draw(st.integers(k0 + 1, k_len))
        for b in range(BATCH):
            block = keep[b, q0:q1, k0:k1]
            expected = Block.FULL if block.all() else Block.PARTIAL if block.any() else Block.EMPTY
            got = mask.classify(q0, q1, k0, k1, q_len=q_len, k_len=k_len,
                                batch=b if mask.batch_size else None)
            assert got == expected, (mask, b, (q0, q1, k0, k1))


@FAST
@given(cases(), st.data())
def test_classify_is_sound_for_combinations(case, data):
    """EMPTY and FULL are promises; PARTIAL is always allowed for a combination."""
    spec, q_len, k_len = case
    mask = build(spec)
    keep = dense(mask, q_len, k_len, batch=BATCH)[:, 0]
    q0 = data.draw(st.integers(0, q_len - 1))
    q1 = data.draw(st.integers(q0 + 1, q_len))
    k0 = data.draw(st.integers(0, k_len - 1))
    k1 = data.draw(st.integers(k0 + 1, k_len))
    sizes = mask.batch_size
    got = mask.classify(q0, q1, k0, k1, q_len=q_len, k_len=k_len)
    block = keep[: (sizes or 1), q0:q1, k0:k1]
    if got == Block.EMPTY:
        assert not block.any()
    if got == Block.FULL:
        assert block.all()


def test_classify_vectorised_over_tiles_and_batches():
    mask = causal(align="top_left")
    starts = np.arange(0, 8, 2)
    codes = mask.classify(starts[:, None], starts[:, None] + 2, starts[None, :],
                          starts[None, :] + 2, q_len=8, k_len=8)
    # 2x2 tiles of a causal 8x8 mask: diagonal tiles partial, below full, above empty.
    expected = np.array([[1, 0, 0, 0], [2, 1, 0, 0], [2, 2, 1, 0], [2, 2, 2, 1]])
    np.testing.assert_array_equal(codes, expected)
    padded = key_padding([2, 4], side="right")
    np.testing.assert_array_equal(
        padded.classify(0, 1, 0, 4, q_len=1, k_len=4, batch=np.array([0, 1])), [1, 2])
    # Over all batches at once: FULL only if full in every batch.
    assert padded.classify(0, 1, 0, 2, q_len=1, k_len=4) == Block.FULL
    assert padded.classify(0, 1, 2, 4, q_len=1, k_len=4) == Block.PARTIAL


@FAST
@given(cases(depth=1), cases(depth=1))
def test_boolean_laws_against_dense(case_a, case_b):
    spec_a, q_len, k_len = case_a
    spec_b = case_b[0] if case_b[1:] == (q_len, k_len) else case_a[0]
    a, b = build(spec_a), build(spec_b)
    da, db = dense(a, q_len, k_len, batch=BATCH), dense(b, q_len, k_len, batch=BATCH)
    np.testing.assert_array_equal(dense(a & b, q_len, k_len, batch=BATCH), da & db)
    np.testing.assert_array_equal(dense(a | b, q_len, k_len, batch=BATCH), da | db)
    np.testing.assert_array_equal(dense(~a, q_len, k_len, batch=BATCH), ~da)
    # De Morgan and double negation.
    np.testing.assert_array_equal(dense(~(a & b), q_len, k_len, batch=BATCH),
                                  dense(~a | ~b, q_len, k_len, batch=BATCH))
    assert ~~a == a
    np.testing.assert_array_equal(dense(~~a, q_len, k_len, batch=BATCH), da)


@FAST
@given(cases())
def test_json_round_trip(case):
    spec, q_len, k_len = case
    mask = build(spec)
    text = json.dumps(mask.to_json())
    again = from_json(text)
    assert again == mask
    assert repr(again) == repr(mask)
    np.testing.assert_array_equal(dense(again, q_len, k_len, batch=BATCH),
                                  dense(mask, q_len, k_len, batch=BATCH))


def module_level_checkerboard(b, h, i, j):
    return (i + j) % 2 == 0


def test_predicate_explicit_and_json():
    mask = predicate(module_level_checkerboard)
    np.testing.assert_array_equal(dense(mask, 3, 3)[0, 0], grid("101 010 101"))
    assert from_json(mask.to_json(), trust=[__name__]).fn is module_level_checkerboard
    assert mask.classify(0, 1, 0, 1, q_len=3, k_len=3) == Block.FULL
    with pytest.raises(ValueError, match="fn"):
        predicate(lambda b, h, i, j: i >= j).to_json()
    keep = np.random.default_rng(0).random((2, 3, 4, 5)) < 0.5
    mask = explicit(keep)
    assert from_json(json.loads(json.dumps(mask.to_json()))) == mask
    np.testing.assert_array_equal(dense(mask, 4, 5, batch=2, heads=3), keep)


def test_repr_reads_as_the_constructor_call():
    mask = causal(align="bottom_right") & sliding_window(3, 0, align="bottom_right")
    assert repr(mask) == ("(causal(align='bottom_right') & "
                          "sliding_window(left=3, right=0, align='bottom_right'))")
    assert repr(~key_padding([2, 3], side="left")) == "~key_padding(lengths=[2, 3], side='left')"


def test_masks_are_immutable_values():
    mask = sliding_window(2, 0, align="top_left")
    with pytest.raises(AttributeError):
        mask.left = 3
    assert mask == sliding_window(2, 0, align="top_left")
    assert hash(mask) == hash(sliding_window(2, 0, align="top_left"))
    keep = np.eye(2, dtype=bool)
    frozen = explicit(keep)
    keep[0, 0] = False  # the mask holds its own copy
    assert dense(frozen, 2, 2)[0, 0, 0, 0]


def test_window_conventions_agree():
    """FA (W-1, 0) == HF 'W keys including self' == xformers local W, on both alignments."""
    for window in (1, 2, 3, 5):
        for q_len, k_len in ((6, 6), (3, 7), (7, 3)):
            for align in ("top_left", "bottom_right"):
                offset = 0 if align == "top_left" else k_len - q_len
                hf = np.array([[(j <= i + offset) and (j > i + offset - window)
                                for j in range(k_len)] for i in range(q_len)])
                fa = dense(sliding_window(window - 1, 0, align=align), q_len, k_len)[0, 0]
                np.testing.assert_array_equal(fa, hf)
                # Every kept row of a long enough sequence has exactly W keys, self included.
                if q_len == k_len:
                    assert fa[-1].sum() == min(window, k_len)


def test_keep_accepts_index_grids_and_namespaces():
    mask = causal(align="bottom_right")
    got = mask.keep(0, 0, np.arange(3)[:, None], np.arange(5)[None, :], q_len=3, k_len=5)
    np.testing.assert_array_equal(got, grid("11100 11110 11111"))
    xps = pytest.importorskip("array_api_strict")
    got = mask.keep(0, 0, xps.asarray([[0], [1], [2]]), xps.asarray([[0, 1, 2, 3, 4]]),
                    q_len=3, k_len=5)
    np.testing.assert_array_equal(np.asarray(got), grid("11100 11110 11111"))
    strict = mask.materialize(1, 1, 3, 5, xp=xps)
    assert strict.dtype == xps.bool
    np.testing.assert_array_equal(np.asarray(strict)[0, 0], grid("11100 11110 11111"))


# --- bad input: clear errors naming the argument, never a wrong mask -------------------------

@pytest.mark.parametrize("make, error, match", [
    (lambda: sliding_window(-1, 0, align="top_left"), ValueError, "left"),
    (lambda: sliding_window(2, -3, align="top_left"), ValueError, "right"),
    (lambda: sliding_window(2.5, 0, align="top_left"), TypeError, "left"),
    (lambda: chunked(0, align="top_left"), ValueError, "size"),
    (lambda: block_causal(0, align="top_left"), ValueError, "block"),
    (lambda: strided(0, align="top_left"), ValueError, "stride"),
    (lambda: causal(align="lower_right"), ValueError, "align"),
    (lambda: causal(align=None), ValueError, "align"),
    (lambda: causal(align=True), TypeError, "align"),
    (lambda: causal(align=1.5), TypeError, "align"),
    (lambda: key_padding([2, -1], side="right"), ValueError, "lengths"),
    (lambda: key_padding([2], side="middle"), ValueError, "side"),
    (lambda: explicit(np.ones((2, 2), dtype=np.int64)), TypeError, "keep"),
    (lambda: explicit(np.ones((2, 2), dtype=np.float32)), TypeError, "keep"),
    (lambda: explicit(np.ones(3, dtype=bool)), ValueError, "keep"),
    (lambda: key_padding([1, 2], side="right") & key_padding([1, 2, 3], side="right"),
     ValueError, "mismatched batch sizes"),
    (lambda: documents([[0, 1], [0, 0]], [[0, 1], [1, 1], [0, 0]]), ValueError, "batch"),
    (lambda: causal(align=[0, 1]) & prefix_lm([1, 2, 3], align="top_left"), ValueError,
     "mismatched batch sizes"),
    (lambda: per_batch(key_padding([1, 2], side="right")), ValueError, "masks\\[0\\]"),
    (lambda: documents_from_cu_seqlens([1, 3]), ValueError, "cu_seqlens"),
    (lambda: documents_from_cu_seqlens([0, 3, 2]), ValueError, "cu_seqlens"),
    (lambda: global_tokens([1, 1], align="top_left"), ValueError, "positions"),
    (lambda: from_json({"kind": "causa1"}), ValueError, "unknown mask kind"),
    (lambda: from_json({"kind": "causal"}), ValueError, "align"),
])
def test_bad_construction_is_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("mask, batch, q_len, k_len, match", [
    (key_padding([2, 5], side="right"), 2, 3, 4, "lengths\\[1\\] = 5 exceeds"),
    (query_padding(4, side="left"), 1, 3, 4, "lengths\\[0\\] = 4 exceeds"),
    (key_padding([2, 3], side="right"), 3, 3, 4, "batch=3"),
    (documents([[0, 0, 1]]), 1, 4, 3, "q_segment_ids has 3 tokens"),
    (explicit(np.ones((3, 3), bool)), 1, 3, 4, "Tk = 3"),
    (causal(align=bottom_right(q_lengths=[5], k_lengths=[3])), 1, 4, 4, "q_lengths"),
])
def test_bad_sizes_at_materialisation(mask, batch, q_len, k_len, match):
    with pytest.raises(ValueError, match=match):
        mask.materialize(batch, 1, q_len, k_len)


def test_bad_keep_and_classify_arguments():
    mask = causal(align="top_left")
    with pytest.raises(ValueError, match="i must lie in"):
        mask.keep(0, 0, np.array([3]), np.array([0]), q_len=3, k_len=3)
    with pytest.raises(ValueError, match="query range"):
        mask.classify(2, 2, 0, 3, q_len=3, k_len=3)
    with pytest.raises(ValueError, match="key range"):
        mask.classify(0, 1, 0, 4, q_len=3, k_len=3)
    with pytest.raises(TypeError, match="must be a refmask Mask"):
        mask & np.ones((3, 3), bool)
    with pytest.raises(TypeError, match="bool array"):
        predicate(lambda b, h, i, j: i + j).materialize(1, 1, 2, 2)


@FAST
@given(cases(), st.integers(1, 3), st.integers(1, 3))
def test_classify_of_a_tile_grid_matches_dense_for_all_batches(case, tile_q, tile_k):
    """The vectorised tile grid (as the fast path uses it), aggregated over every batch."""
    spec, q_len, k_len = case
    mask = build(spec)
    keep = dense(mask, q_len, k_len, batch=BATCH)[: (mask.batch_size or 1), 0]
    q0 = np.arange(0, q_len, tile_q)[:, None]
    k0 = np.arange(0, k_len, tile_k)[None, :]
    q1, k1 = np.minimum(q0 + tile_q, q_len), np.minimum(k0 + tile_k, k_len)
    codes = mask.classify(q0, q1, k0, k1, q_len=q_len, k_len=k_len)
    assert codes.shape == (q0.shape[0], k0.shape[1])
    for a in range(codes.shape[0]):
        for c in range(codes.shape[1]):
            block = keep[:, q0[a, 0]:q1[a, 0], k0[0, c]:k1[0, c]]
            if codes[a, c] == Block.EMPTY:
                assert not block.any()
            elif codes[a, c] == Block.FULL:
                assert block.all()
            elif spec["kind"] not in ("and", "or", "not"):
                assert block.any() and not block.all()


def test_from_json_errors_name_the_field():
    with pytest.raises(ValueError, match="bits must be base64"):
        from_json({"kind": "explicit", "shape": [1, 1, 2, 2], "bits": "not base64!"})
    with pytest.raises(ValueError, match="bits holds"):
        from_json({"kind": "explicit", "shape": [1, 1, 4, 4], "bits": "AA=="})
    with pytest.raises(ValueError, match="fn 'numpy:nonexistent_fn' cannot be imported"):
        from_json({"kind": "predicate", "fn": "numpy:nonexistent_fn"}, trust=["numpy"])
    with pytest.raises(ValueError, match="cannot be imported"):
        from_json({"kind": "predicate", "fn": "no_such_module_xyz:f"},
                  trust=["no_such_module_xyz"])


def test_repr_of_offsets_is_the_constructor_argument():
    assert repr(causal(align=7)) == "causal(align=7)"
    assert repr(causal(align=[1, 2])) == "causal(align=[1, 2])"
    again = eval(repr(causal(align=[1, 2])), {"causal": causal})  # noqa: S307 - our own repr
    assert again == causal(align=[1, 2])


def test_keep_runs_under_torch_vmap_without_validation():
    """FlexAttention calls mask_mod under vmap, where index values cannot be read."""
    torch = pytest.importorskip("torch")
    mask = sliding_window(2, 0, align="bottom_right") & key_padding(5, side="right")

    def mask_mod(b, h, q_idx, kv_idx):
        return mask.keep(b, h, q_idx, kv_idx, q_len=6, k_len=8, validate=False)

    per_key = torch.vmap(mask_mod, in_dims=(None, None, None, 0))
    per_pair = torch.vmap(per_key, in_dims=(None, None, 0, None))
    got = per_pair(torch.tensor(0), torch.tensor(0), torch.arange(6), torch.arange(8))
    np.testing.assert_array_equal(got.numpy(), dense(mask, 6, 8)[0, 0])


@FAST
@given(st.lists(st.integers(0, 3), min_size=1, max_size=4), st.integers(1, 4), st.data())
def test_documents_classify_is_exact_for_packed_and_gapped_ids(lengths, tile, data):
    """Packed ids (steps of 0 or 1) take the interval rule; ids with gaps (an empty sequence
    in cu_seqlens gives a step of 2) are evaluated; both must be exact."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if offsets[-1] == 0:
        return
    mask = documents_from_cu_seqlens(offsets)
    total = int(offsets[-1])
    keep = dense(mask, total, total)[0, 0]
    q0 = data.draw(st.integers(0, total - 1))
    k0 = data.draw(st.integers(0, total - 1))
    q1, k1 = min(total, q0 + tile), min(total, k0 + tile)
    block = keep[q0:q1, k0:k1]
    expected = Block.FULL if block.all() else Block.PARTIAL if block.any() else Block.EMPTY
    assert mask.classify(q0, q1, k0, k1, q_len=total, k_len=total) == expected


def test_documents_classify_of_a_large_packed_grid_needs_no_evaluation(monkeypatch):
    """The interval rule never evaluates the mask: a 1024 x 1024 tile grid over 131072 packed
    tokens is classified from the ids at the tile edges alone (evaluation would loop over a
    million tiles)."""
    import importlib

    documents_module = importlib.import_module("refmask.masks.documents")

    def refuse(*args, **kwargs):
        raise AssertionError("packed ids must not fall back to evaluation")

    monkeypatch.setattr(documents_module, "classify_by_evaluation", refuse)
    lengths = np.full(64, 2048)
    mask = documents_from_cu_seqlens(np.concatenate([[0], np.cumsum(lengths)]))
    starts = np.arange(0, 131072, 128)
    codes = mask.classify(starts[:, None], starts[:, None] + 128, starts[None, :],
                          starts[None, :] + 128, q_len=131072, k_len=131072)
    # 64 documents of 16 tiles each: 64 * 16 * 16 FULL tiles on the block diagonal.
    assert int((codes == Block.FULL).sum()) == 64 * 16 * 16
    assert int((codes == Block.PARTIAL).sum()) == 0
