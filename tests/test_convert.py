"""Tests of refmask.convert: hand-computed values, round trips, peer conventions and errors."""

from __future__ import annotations

import array_api_strict as xps
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refmask import convert
from refmask.masks import (
    Block,
    block_causal,
    causal,
    chunked,
    documents,
    documents_from_cu_seqlens,
    explicit,
    full,
    global_tokens,
    key_padding,
    per_head,
    prefix_lm,
    query_padding,
    sliding_window,
    strided,
)

FAST = settings(max_examples=60, deadline=None)
BF16 = np.dtype(ml_dtypes.bfloat16)
FLOATS = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64), BF16]


def bool_arrays(max_dims=3, max_side=6):
    return hnp.arrays(bool, hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=0,
                                             max_side=max_side))


def dense(mask, q_len, k_len):
    return mask.materialize(1, 1, q_len, k_len)[0, 0]


# -- 1. keep <-> drop -------------------------------------------------------------------------
def test_keep_to_drop_by_hand():
    keep = np.array([[True, False], [True, True]])
    np.testing.assert_array_equal(convert.keep_to_drop(keep), [[False, True], [False, False]])
    np.testing.assert_array_equal(convert.drop_to_keep([[False, True]]), [[True, False]])


@given(bool_arrays())
@FAST
def test_keep_drop_round_trip(keep):
    drop = convert.keep_to_drop(keep)
    assert drop.dtype == np.bool_ and drop.shape == keep.shape
    assert not np.any(drop & keep)
    np.testing.assert_array_equal(convert.drop_to_keep(drop), keep)


def test_keep_drop_array_api_namespace():
    keep = xps.asarray([[True, False, True]])
    drop = convert.keep_to_drop(keep)
    assert type(drop) is type(keep) and drop.dtype == xps.bool
    assert xps.all(convert.drop_to_keep(drop) == keep)


@pytest.mark.parametrize("values", [[[1, 0]], [[1.0, 0.0]], np.array([[0, 1]], np.uint8)])
def test_polarity_refuses_non_bool(values):
    with pytest.raises(TypeError, match="keep_to_drop: keep must be a bool array"):
        convert.keep_to_drop(values)
    with pytest.raises(TypeError, match="drop_to_keep: drop must be a bool array"):
        convert.drop_to_keep(values)
    with pytest.raises(TypeError, match="keep_to_additive: keep must be a bool array"):
        convert.keep_to_additive(values, np.float32)


# -- 2. keep <-> additive ---------------------------------------------------------------------
def test_keep_to_additive_by_hand():
    keep = np.array([[True, False, True]])
    out = convert.keep_to_additive(keep, np.float32)
    assert out.dtype == np.float32
    assert out[0, 0] == 0 and out[0, 2] == 0 and out[0, 1] == -np.inf
    half = convert.keep_to_additive(keep, np.float16, fill="finfo_min")
    assert half.dtype == np.float16 and half[0, 1] == np.float16(-65504.0)
    bf16 = convert.keep_to_additive(keep, ml_dtypes.bfloat16, fill="finfo_min")
    assert bf16.dtype == BF16 and float(bf16[0, 1]) == float(ml_dtypes.finfo(BF16).min)
    keras = convert.keep_to_additive(keep, np.float32, fill=-1e9)
    assert keras[0, 1] == np.float32(-1e9)
    jax_fill = -0.7 * float(np.finfo(np.float32).max)
    assert convert.keep_to_additive(keep, np.float32, fill=jax_fill)[0, 1] == np.float32(jax_fill)


def _threshold(dtype, fill):
    if fill == "-inf":
        return None
    value = float(convert.keep_to_additive(np.array([False]), dtype, fill=fill)[0])
    return value / 2


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("fill", ["-inf", "finfo_min", -1e4])
@given(keep=bool_arrays())
@settings(max_examples=25, deadline=None)
def test_keep_additive_round_trip(dtype, fill, keep):
    additive = convert.keep_to_additive(keep, dtype, fill=fill)
    assert additive.dtype == dtype and additive.shape == keep.shape
    assert np.all(additive[keep].astype(np.float64) == 0)
    recovered = convert.additive_to_keep(additive, threshold=_threshold(dtype, fill))
    np.testing.assert_array_equal(recovered, keep)


def test_additive_threshold_survives_summed_finfo_min_masks():
    # Two finfo.min masks summed in bf16 overflow to -inf (NeMo #2658); both stay dropped.
    keep = np.array([True, False, False])
    one = convert.keep_to_additive(keep, ml_dtypes.bfloat16, fill="finfo_min")
    with np.errstate(over="ignore"):
        two = one + one
    assert np.isinf(two[1].astype(np.float32))
    threshold = float(ml_dtypes.finfo(BF16).min) / 2
    np.testing.assert_array_equal(convert.additive_to_keep(two, threshold=threshold), keep)


def test_keep_to_additive_array_api_namespace():
    keep = xps.asarray([True, False])
    out = convert.keep_to_additive(keep, xps.float32, fill="finfo_min")
    assert type(out) is type(keep) and out.dtype == xps.float32
    assert float(out[1]) == float(np.finfo(np.float32).min) and float(out[0]) == 0.0
    assert xps.all(convert.additive_to_keep(out, threshold=-1e30) == keep)


def test_additive_errors():
    with pytest.raises(ValueError, match="finite non-zero entries.*it is a bias not a mask"):
        convert.additive_to_keep(np.array([0.0, -1e9, -np.inf]))
    with pytest.raises(ValueError, match="additive_to_keep: additive holds NaN"):
        convert.additive_to_keep(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="additive_to_keep: additive holds NaN"):
        convert.additive_to_keep(np.array([0.0, np.nan]), threshold=-1.0)
    with pytest.raises(ValueError, match=r"additive holds \+inf"):
        convert.additive_to_keep(np.array([np.inf]))
    with pytest.raises(TypeError, match="additive_to_keep: additive"):
        convert.additive_to_keep(np.array([0, -1]))
    with pytest.raises(ValueError, match="threshold must be < 0"):
        convert.additive_to_keep(np.array([0.0]), threshold=0.0)
    # a bias that is not a mask at all: ALiBi-like values are kept above the threshold
    np.testing.assert_array_equal(
        convert.additive_to_keep(np.array([-0.5, -3.0, -1e9]), threshold=-1e8),
        [True, True, False])


def test_keep_to_additive_fill_errors():
    keep = np.array([True, False])
    with pytest.raises(ValueError, match="keep_to_additive: fill=-1000000000.0 overflows"):
        convert.keep_to_additive(keep, np.float16, fill=-1e9)
    with pytest.raises(ValueError, match="fill must be < 0"):
        convert.keep_to_additive(keep, np.float32, fill=0.0)
    with pytest.raises(ValueError, match="fill must be"):
        convert.keep_to_additive(keep, np.float32, fill="min")
    with pytest.raises(TypeError, match="keep_to_additive: dtype must be a floating dtype"):
        convert.keep_to_additive(keep, np.int32)
    with pytest.raises(ValueError, match="has no -inf"):
        convert.keep_to_additive(keep, ml_dtypes.float8_e4m3fn)


# -- 3. HF 2-D padding mask -------------------------------------------------------------------
def test_hf_padding_sides_by_hand():
    assert convert.hf_padding_to_mask([[1, 1, 0], [1, 0, 0]]) == key_padding([2, 1], side="right")
    assert convert.hf_padding_to_mask([[0, 1, 1], [0, 0, 1]]) == key_padding([2, 1], side="left")
    # unpadded (and all-padding) rows fit both sides: reported right-padded
    assert convert.hf_padding_to_mask([[1, 1, 1], [1, 1, 1]]) == key_padding([3, 3], side="right")
    assert convert.hf_padding_to_mask([[1, 1, 1], [0, 0, 0]]) == key_padding([3, 0], side="right")
    assert convert.hf_padding_to_mask(np.array([[True, False]])) == key_padding(1, side="right")


def test_hf_padding_mixed_sides_and_holes_are_exact():
    mixed = convert.hf_padding_to_mask([[1, 1, 0], [0, 1, 1]])
    assert mixed.kind == "per_batch"
    assert mixed.masks == (key_padding(2, side="right"), key_padding(2, side="left"))
    np.testing.assert_array_equal(mixed.materialize(2, 1, 2, 3)[:, 0],
                                  [[[1, 1, 0], [1, 1, 0]], [[0, 1, 1], [0, 1, 1]]])
    holes = convert.hf_padding_to_mask([[1, 0, 1], [1, 1, 0]])
    assert holes.kind == "explicit" and holes.array.shape == (2, 1, 1, 3)
    np.testing.assert_array_equal(holes.materialize(2, 1, 1, 3)[:, 0, 0], [[1, 0, 1], [1, 1, 0]])


@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(0, 7)),
                  elements=st.integers(0, 1)))
@FAST
def test_hf_padding_round_trip(attention_mask):
    mask = convert.hf_padding_to_mask(attention_mask)
    back = convert.mask_to_hf_padding(mask, attention_mask.shape[0], attention_mask.shape[1])
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, attention_mask)


@given(st.lists(st.integers(0, 6), min_size=1, max_size=4), st.sampled_from(["left", "right"]))
@FAST
def test_key_padding_to_hf_and_back(lengths, side):
    mask = key_padding(lengths, side=side)
    hf = convert.mask_to_hf_padding(mask, len(lengths), 6, heads=2, q_len=3)
    np.testing.assert_array_equal(hf.sum(axis=1), lengths)
    np.testing.assert_array_equal(convert.hf_padding_to_mask(hf).materialize(len(lengths), 1, 3, 6),
                                  mask.materialize(len(lengths), 1, 3, 6))


def test_hf_padding_errors():
    with pytest.raises(ValueError, match="hf_padding_to_mask: attention_mask must hold only 0"):
        convert.hf_padding_to_mask([[1, 2, 0]])
    with pytest.raises(TypeError, match="hf_padding_to_mask: attention_mask must hold integers"):
        convert.hf_padding_to_mask([[1.0, 0.0]])
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, Tk\)"):
        convert.hf_padding_to_mask([1, 1, 0])
    with pytest.raises(ValueError, match="mask_to_hf_padding: mask .* is not a pure key mask"):
        convert.mask_to_hf_padding(causal(align="top_left"), 1, 4)
    with pytest.raises(ValueError, match="not a pure key mask"):
        convert.mask_to_hf_padding(query_padding(2, side="right"), 1, 4)
    with pytest.raises(TypeError, match="mask_to_hf_padding: mask must be a refmask Mask"):
        convert.mask_to_hf_padding(np.ones((1, 4), bool), 1, 4)


# -- 4. cu_seqlens / segment ids --------------------------------------------------------------
def test_cu_seqlens_by_hand():
    ids = convert.cu_seqlens_to_segment_ids([0, 2, 5, 6])
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [0, 0, 1, 1, 1, 2])
    cu = convert.segment_ids_to_cu_seqlens([0, 0, 1, 1, 1, 2])
    assert cu.dtype == np.int32
    np.testing.assert_array_equal(cu, [0, 2, 5, 6])
    np.testing.assert_array_equal(convert.segment_ids_to_cu_seqlens([]), [0])


@given(st.lists(st.integers(1, 5), max_size=6))
@FAST
def test_cu_seqlens_segment_ids_round_trip(lengths):
    cu = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32)
    ids = convert.cu_seqlens_to_segment_ids(cu)
    np.testing.assert_array_equal(ids, np.repeat(np.arange(len(lengths)), lengths))
    np.testing.assert_array_equal(convert.segment_ids_to_cu_seqlens(ids), cu)
    np.testing.assert_array_equal(convert.cu_seqlens_to_segment_ids(
        convert.segment_ids_to_cu_seqlens(ids)), ids)


@pytest.mark.parametrize("ids", [[0, 0, 2, 2], [0, 1, 0], [1, 1, 2], [0, 1, 1, 3]])
def test_segment_ids_must_be_contiguous_increasing(ids):
    with pytest.raises(ValueError, match="segment_ids_to_cu_seqlens: segment_ids must be "
                                         "contiguous runs of increasing ids 0, 1"):
        convert.segment_ids_to_cu_seqlens(ids)


def test_cu_seqlens_errors():
    with pytest.raises(ValueError, match="cu_seqlens_to_segment_ids: cu_seqlens must start at 0"):
        convert.cu_seqlens_to_segment_ids([0, 3, 2])
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        convert.cu_seqlens_to_segment_ids([1, 3])
    with pytest.raises(TypeError, match="cu_seqlens must hold integers"):
        convert.cu_seqlens_to_segment_ids([0.0, 2.0])


def test_documents_to_cu_seqlens():
    np.testing.assert_array_equal(
        convert.documents_to_cu_seqlens(documents_from_cu_seqlens([0, 2, 5])), [0, 2, 5])
    # segment id values carry no order: documents are numbered by appearance
    np.testing.assert_array_equal(convert.documents_to_cu_seqlens(documents([[7, 7, 3, 3, 3]])),
                                  [0, 2, 5])
    cu_q, cu_k = convert.documents_to_cu_seqlens_qk(documents_from_cu_seqlens([0, 1, 3],
                                                                              [0, 4, 6]))
    np.testing.assert_array_equal(cu_q, [0, 1, 3])
    np.testing.assert_array_equal(cu_k, [0, 4, 6])


def test_documents_to_cu_seqlens_one_sided_documents():
    mask = documents([[0, 0, 1]], [[1, 1, 2]])
    cu_q, cu_k = convert.documents_to_cu_seqlens_qk(mask)
    np.testing.assert_array_equal(cu_q, [0, 2, 3, 3])
    np.testing.assert_array_equal(cu_k, [0, 0, 2, 3])
    np.testing.assert_array_equal(documents_from_cu_seqlens(cu_q, cu_k).materialize(1, 1, 3, 3),
                                  mask.materialize(1, 1, 3, 3))


def test_documents_to_cu_seqlens_errors():
    with pytest.raises(ValueError, match="documents_to_cu_seqlens: the query segment ids holds "
                                         "document 0 in more than one run"):
        convert.documents_to_cu_seqlens(documents([[0, 1, 0]]))
    with pytest.raises(TypeError, match="documents_to_cu_seqlens: mask must be a documents mask"):
        convert.documents_to_cu_seqlens(causal(align="top_left"))
    with pytest.raises(ValueError, match="single packed row"):
        convert.documents_to_cu_seqlens(documents([[0, 1], [0, 0]]))
    with pytest.raises(ValueError, match="different query and key documents"):
        convert.documents_to_cu_seqlens(documents_from_cu_seqlens([0, 1, 3], [0, 2, 3]))
    with pytest.raises(ValueError, match="different order"):
        convert.documents_to_cu_seqlens_qk(documents([[0, 1]], [[1, 0]]))


# -- 5. block masks ---------------------------------------------------------------------------
def test_block_mask_by_hand_matches_torch_layout():
    # torch create_block_mask(q >= kv, 1, 1, 10, 7, BLOCK_SIZE=4) gives exactly these arrays
    mask = causal(align="top_left")
    bm = convert.to_block_mask(mask, 1, 1, 10, 7, block_size=(4, 4))
    np.testing.assert_array_equal(bm.kv_num_blocks, [[[1, 1, 2]]])
    np.testing.assert_array_equal(bm.kv_indices, [[[[0, 1], [1, 0], [0, 1]]]])
    np.testing.assert_array_equal(bm.full_kv_num_blocks, [[[0, 1, 0]]])
    np.testing.assert_array_equal(bm.full_kv_indices, [[[[0, 1], [0, 1], [0, 1]]]])
    assert bm.kv_indices.dtype == np.int32 and bm.kv_num_blocks.dtype == np.int32
    assert bm.block_size == (4, 4) and bm.seq_lengths == (10, 7) and bm.shape == (1, 1, 10, 7)
    # clipped edges: the ragged last query block is FULL on its valid rows
    clipped = convert.to_block_mask(mask, 1, 1, 10, 7, block_size=4, edge_tiles="clipped")
    np.testing.assert_array_equal(clipped.codes()[0, 0], [[Block.PARTIAL, Block.EMPTY],
                                                          [Block.FULL, Block.PARTIAL],
                                                          [Block.FULL, Block.FULL]])
    for bm_ in (bm, clipped):
        np.testing.assert_array_equal(convert.block_mask_to_keep(bm_, mask),
                                      mask.materialize(1, 1, 10, 7))


ALIGNS = st.sampled_from(["top_left", "bottom_right", -2, 3])
SMALL = st.integers(1, 4)
NONE_OR_SMALL = st.none() | st.integers(0, 4)


PRIMITIVES = ["full", "causal", "window", "chunked", "block_causal", "prefix", "strided",
              "global", "key_padding", "query_padding", "documents", "explicit"]


def draw_primitive(draw, kind, batch, heads, q_len, k_len):
    align = draw(ALIGNS)
    lengths = draw(st.lists(st.integers(0, 13), min_size=batch, max_size=batch))
    side = draw(st.sampled_from(["left", "right"]))
    if kind == "full":
        return full()
    if kind == "causal":
        return causal(align=align)
    if kind == "window":
        return sliding_window(draw(NONE_OR_SMALL), draw(NONE_OR_SMALL), align=align)
    if kind == "chunked":
        return chunked(draw(SMALL), align=align)
    if kind == "block_causal":
        return block_causal(draw(SMALL), align=align)
    if kind == "prefix":
        return prefix_lm(draw(st.integers(0, 6)), align=align)
    if kind == "strided":
        return strided(draw(SMALL), align=align)
    if kind == "global":
        return global_tokens(sorted(draw(st.sets(st.integers(0, 12), min_size=1, max_size=3))),
                             align=align)
    if kind == "key_padding":
        return key_padding([min(n, k_len) for n in lengths], side=side)
    if kind == "query_padding":
        return query_padding([min(n, q_len) for n in lengths], side=side)
    if kind == "documents":
        q_ids = st.lists(st.integers(0, 2), min_size=q_len, max_size=q_len)
        k_ids = st.lists(st.integers(0, 2), min_size=k_len, max_size=k_len)
        return documents([draw(q_ids) for _ in range(batch)], [draw(k_ids) for _ in range(batch)])
    return explicit(draw(hnp.arrays(bool, (batch, heads, q_len, k_len))))


@st.composite
def masks_and_sizes(draw):
    """(mask, B, H, Tq, Tk): a primitive, or a combination of two primitives."""
    batch, heads = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    q_len, k_len = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    kind = draw(st.sampled_from(PRIMITIVES + ["and", "or", "not", "per_head"]))
    if kind in PRIMITIVES:
        return draw_primitive(draw, kind, batch, heads, q_len, k_len), batch, heads, q_len, k_len
    if kind == "per_head":  # parts must hold for any head: no explicit per-head arrays
        kinds = st.sampled_from([k for k in PRIMITIVES if k != "explicit"])
        a = draw_primitive(draw, draw(kinds), batch, 1, q_len, k_len)
        b = draw_primitive(draw, draw(kinds), batch, 1, q_len, k_len)
        return per_head(a, b), batch, 2, q_len, k_len
    a = draw_primitive(draw, draw(st.sampled_from(PRIMITIVES)), batch, heads, q_len, k_len)
    b = draw_primitive(draw, draw(st.sampled_from(PRIMITIVES)), batch, heads, q_len, k_len)
    mask = a & b if kind == "and" else a | b if kind == "or" else ~a
    return mask, batch, heads, q_len, k_len


@given(masks_and_sizes(), st.integers(1, 5), st.integers(1, 5),
       st.sampled_from(["padded", "clipped"]))
@settings(max_examples=150, deadline=None)
def test_block_mask_densifies_to_materialize(case, q_block, k_block, edge_tiles):
    mask, batch, heads, q_len, k_len = case
    bm = convert.to_block_mask(mask, batch, heads, q_len, k_len, (q_block, k_block),
                               edge_tiles=edge_tiles)
    keep = mask.materialize(batch, heads, q_len, k_len)
    np.testing.assert_array_equal(convert.block_mask_to_keep(bm, mask), keep)
    # every listed block is sound: FULL tiles keep all, EMPTY tiles keep none
    codes = bm.codes()
    nq, nk = codes.shape[2:]
    for m in range(nq):
        for n in range(nk):
            tile = keep[:, :, m * q_block:(m + 1) * q_block, n * k_block:(n + 1) * k_block]
            for b in range(batch):
                for h in range(heads):
                    code = codes[b, h, m, n]
                    if code == Block.FULL:
                        assert tile[b, h].all()
                    elif code == Block.EMPTY:
                        assert not tile[b, h].any()
                    elif edge_tiles == "clipped" and mask.kind not in ("and", "or", "not"):
                        # classify is exact for primitives: PARTIAL means mixed
                        assert tile[b, h].any() and not tile[b, h].all(), (mask, b, h, m, n)


def test_block_mask_to_keep_mask_mod_forms():
    mask = sliding_window(1, 1, align="top_left")
    bm = convert.to_block_mask(mask, 1, 1, 6, 6, block_size=2)
    expected = mask.materialize(1, 1, 6, 6)
    np.testing.assert_array_equal(
        convert.block_mask_to_keep(bm, lambda b, h, q, kv: np.abs(q - kv) <= 1), expected)
    np.testing.assert_array_equal(convert.block_mask_to_keep(bm, expected[0, 0]), expected)
    with pytest.raises(ValueError, match="block_mask_to_keep: block_mask has PARTIAL blocks, so "
                                         "mask_mod is required"):
        convert.block_mask_to_keep(bm)
    all_full = convert.to_block_mask(full(), 2, 1, 5, 3, block_size=(2, 3), edge_tiles="clipped")
    assert convert.block_mask_to_keep(all_full).all()


def test_block_mask_errors():
    with pytest.raises(ValueError, match="to_block_mask: mask is defined for batch size 2"):
        convert.to_block_mask(key_padding([1, 2], side="right"), 3, 1, 4, 4)
    with pytest.raises(ValueError, match="to_block_mask: edge_tiles must be one of"):
        convert.to_block_mask(full(), 1, 1, 4, 4, edge_tiles="torch")
    with pytest.raises(ValueError, match=r"to_block_mask: block_size\[1\] must be an int >= 1"):
        convert.to_block_mask(full(), 1, 1, 4, 4, block_size=(2, 0))
    bm = convert.to_block_mask(causal(align="top_left"), 1, 1, 4, 4, block_size=2)
    with pytest.raises(ValueError, match="listed both in kv_indices"):
        convert.BlockMask(bm.kv_num_blocks, bm.kv_indices, bm.kv_num_blocks, bm.kv_indices,
                          4, 4, 2, 2)
    with pytest.raises(ValueError, match="kv_indices lists a block outside"):
        convert.BlockMask(bm.kv_num_blocks, bm.kv_indices + 5, bm.full_kv_num_blocks,
                          bm.full_kv_indices, 4, 4, 2, 2)


def test_block_mask_agrees_with_torch_create_block_mask():
    torch = pytest.importorskip("torch")
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    cases = [(causal(align="top_left"), 2, 1, 10, 7, (4, 4)),
             (sliding_window(3, 0, align="bottom_right"), 1, 2, 9, 13, (4, 2)),
             (documents([[0, 0, 0, 1, 1, 2, 2, 2, 2]]) & causal(align="top_left"), 1, 1, 9, 9,
              (2, 3)),
             (key_padding([5, 2], side="left"), 2, 1, 6, 8, (3, 3))]
    for mask, batch, heads, q_len, k_len, block in cases:
        table = torch.from_numpy(np.array(mask.materialize(batch, heads, q_len, k_len)))

        def mask_mod(b, h, q, kv, table=table):
            return table[b, h, q, kv]

        ref = flex.create_block_mask(mask_mod, batch, heads, q_len, k_len, device="cpu",
                                     BLOCK_SIZE=block)
        ours = convert.to_block_mask(mask, batch, heads, q_len, k_len, block)
        for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(ref, name).numpy(),
                                          err_msg=f"{mask!r} {name}")
        assert ours.block_size == tuple(ref.BLOCK_SIZE)
        assert ours.seq_lengths == tuple(ref.seq_lengths)


# -- 6. bit packing ---------------------------------------------------------------------------
def test_pack_rows_by_hand():
    row = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=bool)
    packed = convert.pack_rows(row)
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, [0b00001101, 0b00000001])
    np.testing.assert_array_equal(convert.unpack_rows(packed, (9,)), row)
    tril = np.tril(np.ones((3, 3), dtype=bool))
    np.testing.assert_array_equal(convert.pack_rows(tril), [[0b001], [0b011], [0b111]])


def test_pack_flashinfer_is_one_stream_per_request():
    tril = np.tril(np.ones((3, 3), dtype=bool))
    # flattened bits 1,0,0, 1,1,0, 1,1 | 1 -> rows are not byte-aligned
    np.testing.assert_array_equal(convert.pack_flashinfer(tril), [0b11011001, 0b00000001])
    packed = np.array([0b11011001, 0b1], dtype=np.uint8)
    np.testing.assert_array_equal(convert.unpack_flashinfer(packed, (3, 3)), tril)


def test_pack_flashinfer_batch_matches_segment_packbits_docstring():
    # flashinfer.segment_packbits docstring: x = [1,0,1,1, 0,0,1, 1,1,0,1], indptr [0,4,7,11]
    # gives big-order bytes 0b10110000, 0b00100000, 0b11010000; little order reverses bits.
    keeps = [np.array([[1, 0, 1, 1]], bool), np.array([[0, 0, 1]], bool),
             np.array([[1, 1], [0, 1]], bool)]
    packed, mask_indptr, packed_indptr = convert.pack_flashinfer_batch(keeps)
    np.testing.assert_array_equal(packed, [0b00001101, 0b00000100, 0b00001011])
    np.testing.assert_array_equal(mask_indptr, [0, 4, 7, 11])
    np.testing.assert_array_equal(packed_indptr, [0, 1, 2, 3])
    back = convert.unpack_flashinfer_batch(packed, packed_indptr, [(1, 4), (1, 3), (2, 2)])
    for got, want in zip(back, keeps, strict=True):
        np.testing.assert_array_equal(got, want)


@given(bool_arrays(max_dims=3, max_side=11))
@FAST
def test_pack_rows_round_trip(keep):
    packed = convert.pack_rows(keep)
    assert packed.shape == keep.shape[:-1] + ((keep.shape[-1] + 7) // 8,)
    np.testing.assert_array_equal(convert.unpack_rows(packed, keep.shape), keep)


@given(st.lists(hnp.arrays(bool, st.tuples(st.integers(0, 5), st.integers(0, 9))), max_size=4))
@FAST
def test_pack_flashinfer_round_trip(keeps):
    packed, mask_indptr, packed_indptr = convert.pack_flashinfer_batch(keeps)
    assert packed.size == sum((k.size + 7) // 8 for k in keeps)
    for n, keep in enumerate(keeps):
        np.testing.assert_array_equal(packed[packed_indptr[n]:packed_indptr[n + 1]],
                                      convert.pack_flashinfer(keep))
        np.testing.assert_array_equal(convert.unpack_flashinfer(convert.pack_flashinfer(keep),
                                                                keep.shape), keep)
    shapes = [k.shape for k in keeps]
    for got, want in zip(convert.unpack_flashinfer_batch(packed, packed_indptr, shapes), keeps,
                         strict=True):
        np.testing.assert_array_equal(got, want)


def test_pack_errors():
    with pytest.raises(TypeError, match="pack_rows: keep must be a bool array"):
        convert.pack_rows(np.array([1, 0]))
    with pytest.raises(ValueError, match="unpack_rows: packed has non-zero padding bits"):
        convert.unpack_rows(np.array([0b10000000], np.uint8), (7,))
    with pytest.raises(ValueError, match=r"unpack_rows: packed must have shape \(2, 1\)"):
        convert.unpack_rows(np.zeros((2, 2), np.uint8), (2, 5))
    with pytest.raises(TypeError, match="unpack_flashinfer: packed must be a uint8 array"):
        convert.unpack_flashinfer(np.zeros(2, np.int32), (3, 3))
    with pytest.raises(ValueError, match=r"pack_flashinfer: keep must have shape \(qo_len"):
        convert.pack_flashinfer(np.ones((1, 2, 2), bool))


# -- 7. column intervals (FlashMask) ----------------------------------------------------------
def test_column_intervals_by_hand_4x4():
    keep = np.array([[1, 0, 1, 1],
                     [1, 1, 0, 1],
                     [1, 0, 1, 1],
                     [1, 0, 1, 0]], dtype=bool)
    lts, lte, uts, ute = convert.to_column_intervals(keep)
    # column 0: nothing dropped; column 1: rows {0} (upper) and {2, 3} (lower);
    # column 2: row 1 only (interior -> lower); column 3: row 3 (touches bottom -> lower)
    np.testing.assert_array_equal(lts, [4, 2, 1, 3])
    np.testing.assert_array_equal(lte, [4, 4, 2, 4])
    np.testing.assert_array_equal(uts, [0, 0, 0, 0])
    np.testing.assert_array_equal(ute, [0, 1, 0, 0])
    assert lts.dtype == np.int32
    np.testing.assert_array_equal(convert.from_column_intervals(lts, lte, uts, ute, 4), keep)
    np.testing.assert_array_equal(convert.to_flashmask(keep, causal=False),
                                  [[4, 4, 0, 0], [2, 4, 0, 1], [1, 2, 0, 0], [3, 4, 0, 0]])


def test_flashmask_document_mask_uses_two_column_form():
    keep = dense(documents([[0, 0, 1, 1]]), 4, 4)
    np.testing.assert_array_equal(convert.to_flashmask(keep, causal=False),
                                  [[2, 0], [2, 0], [4, 2], [4, 2]])


# Examples from PaddlePaddle's flashmask_attention docstring (10 x 10, column-wise values).
PADDLE_CAUSAL_DOCUMENT = [4, 4, 4, 4, 7, 7, 7, 10, 10, 10]
PADDLE_SLIDING_WINDOW = [3, 4, 5, 6, 7, 8, 9, 10, 10, 10]
PADDLE_DOCUMENT = ([4, 4, 4, 4, 7, 7, 7, 10, 10, 10], [0, 0, 0, 0, 4, 4, 4, 7, 7, 7])
PADDLE_QK_SPARSE = ([10, 10, 2, 3, 4, 5, 6, 7, 10, 10], [10, 10, 5, 5, 5, 5, 8, 8, 10, 10])


def test_flashmask_matches_paddle_examples():
    docs = [0] * 4 + [1] * 3 + [2] * 3
    causal_docs = dense(documents([docs]) & causal(align="top_left"), 10, 10)
    indices = np.array(PADDLE_CAUSAL_DOCUMENT)[:, None]
    np.testing.assert_array_equal(convert.flashmask_to_keep(indices, q_len=10, causal=True),
                                  causal_docs)
    np.testing.assert_array_equal(convert.to_flashmask(causal_docs, causal=True), indices)

    window = dense(convert.hf_sliding_window(3, align="top_left"), 10, 10)
    indices = np.array(PADDLE_SLIDING_WINDOW)[:, None]
    np.testing.assert_array_equal(convert.flashmask_to_keep(indices, q_len=10, causal=True),
                                  window)
    np.testing.assert_array_equal(convert.to_flashmask(window, causal=True), indices)

    indices = np.stack(PADDLE_DOCUMENT, axis=-1)
    np.testing.assert_array_equal(convert.flashmask_to_keep(indices, q_len=10, causal=False),
                                  dense(documents([docs]), 10, 10))
    np.testing.assert_array_equal(convert.to_flashmask(dense(documents([docs]), 10, 10),
                                                       causal=False), indices)

    # QK-sparse (causal, [LTS, LTE]): rows 2-4 see keys 0-1 only, rows 5-7 keys 0-5
    indices = np.stack(PADDLE_QK_SPARSE, axis=-1)
    keep = convert.flashmask_to_keep(indices, q_len=10, causal=True)
    expected = np.tril(np.ones((10, 10), bool))
    expected[2:5, 2:] = False
    expected[5:8, 6:] = False
    np.testing.assert_array_equal(keep, expected)
    again = convert.to_flashmask(keep, causal=True)
    assert again.shape == (10, 2)
    np.testing.assert_array_equal(convert.flashmask_to_keep(again, q_len=10, causal=True), keep)


@st.composite
def two_interval_keeps(draw):
    q_len, k_len = draw(st.integers(0, 7)), draw(st.integers(1, 6))
    points = st.lists(st.integers(0, q_len), min_size=4, max_size=4).map(sorted)
    bounds = np.array([draw(points) for _ in range(k_len)]).reshape(k_len, 4)
    uts, ute, lts, lte = bounds.T
    return convert.from_column_intervals(lts, lte, uts, ute, q_len)


@given(two_interval_keeps())
@FAST
def test_column_intervals_round_trip(keep):
    q_len = keep.shape[0]
    lts, lte, uts, ute = convert.to_column_intervals(keep)
    assert np.all((0 <= uts) & (uts <= ute) & (ute <= q_len))
    assert np.all((0 <= lts) & (lts <= lte) & (lte <= q_len))
    np.testing.assert_array_equal(convert.from_column_intervals(lts, lte, uts, ute, q_len), keep)
    np.testing.assert_array_equal(convert.flashmask_to_keep(convert.to_flashmask(
        keep, causal=False), q_len=q_len, causal=False), keep)


@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n), st.integers(0, n)), min_size=n,
                         max_size=n))))
@FAST
def test_flashmask_causal_round_trip(case):
    n, runs = case
    keep = np.tril(np.ones((n, n), bool))
    for j, (a, b) in enumerate(runs):
        keep[max(a, j):max(b, j), j] = False
    indices = convert.to_flashmask(keep, causal=True)
    assert indices.shape[-1] in (1, 2)
    np.testing.assert_array_equal(convert.flashmask_to_keep(indices, q_len=n, causal=True), keep)


def test_flashmask_batched_shape():
    keep = causal(align="top_left").materialize(2, 3, 5, 5)
    indices = convert.to_flashmask(keep, causal=True)
    assert indices.shape == (2, 3, 5, 1)
    np.testing.assert_array_equal(indices[..., 0], 5)
    np.testing.assert_array_equal(convert.flashmask_to_keep(indices, q_len=5, causal=True), keep)


def test_column_interval_errors():
    three = np.ones((5, 2), dtype=bool)
    three[[0, 2, 4], 0] = False
    with pytest.raises(ValueError, match="to_column_intervals: keep column 0 .* drops 3 separate "
                                         "runs"):
        convert.to_column_intervals(three)
    with pytest.raises(ValueError, match="to_flashmask: keep column 0"):
        convert.to_flashmask(three, causal=False)
    with pytest.raises(ValueError, match="to_flashmask: keep attends key 1 from query 0"):
        convert.to_flashmask(np.ones((2, 2), bool), causal=True)
    two_lower = np.tril(np.ones((5, 5), bool))
    two_lower[[1, 3], 0] = False
    with pytest.raises(ValueError, match="causal=True expresses one"):
        convert.to_flashmask(two_lower, causal=True)
    with pytest.raises(ValueError, match=r"from_column_intervals: lte must lie in \[0, q_len"):
        convert.from_column_intervals([0], [4], [0], [0], 3)
    with pytest.raises(ValueError, match="flashmask_to_keep: startend_row_indices must have shape"):
        convert.flashmask_to_keep(np.zeros((4, 3), np.int32), q_len=4, causal=False)
    with pytest.raises(ValueError, match="causal=True needs q_len == Tk"):
        convert.flashmask_to_keep(np.zeros((4, 1), np.int32), q_len=5, causal=True)


# -- 8. window tuples -------------------------------------------------------------------------
SIZES = [(5, 5), (3, 7), (7, 3), (1, 6), (6, 1)]


def fa_reference(q_len, k_len, left, right):
    """FlashAttention's rule, written out: keys [i + Tk - Tq - left, i + Tk - Tq + right]."""
    i = np.arange(q_len)[:, None] + k_len - q_len
    j = np.arange(k_len)[None, :]
    keep = np.ones((q_len, k_len), bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    return keep


@pytest.mark.parametrize(("q_len", "k_len"), SIZES)
@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_three_window_conventions_agree(q_len, k_len, window):
    fa = dense(convert.flash_window_to_mask((window - 1, 0)), q_len, k_len)
    hf = dense(convert.hf_sliding_window(window, align="bottom_right"), q_len, k_len)
    gym = dense(convert.attention_gym_sliding_window(window - 1, align="bottom_right"), q_len,
                k_len)
    np.testing.assert_array_equal(fa, fa_reference(q_len, k_len, window - 1, 0))
    np.testing.assert_array_equal(hf, fa)
    np.testing.assert_array_equal(gym, fa)
    # W keys including self: every row that sees its own position keeps at most W keys
    assert fa.sum(axis=1).max() <= window
    # and the classic off-by-one: attention-gym's w is not HF's W
    if window < min(q_len, k_len):
        assert not np.array_equal(
            dense(convert.attention_gym_sliding_window(window, align="bottom_right"), q_len,
                  k_len), fa)


def test_flash_window_to_mask_by_hand():
    assert convert.flash_window_to_mask((2, 0)) == sliding_window(2, 0, align="bottom_right")
    assert convert.flash_window_to_mask((-1, 3)) == sliding_window(None, 3, align="bottom_right")
    assert convert.flash_window_to_mask() == sliding_window(None, None, align="bottom_right")
    # causal=True forces right = 0, as FlashAttention does
    assert convert.flash_window_to_mask((3, 5), causal=True) == sliding_window(
        3, 0, align="bottom_right")
    # Tq > Tk: FlashAttention's top rows are empty
    np.testing.assert_array_equal(dense(convert.flash_window_to_mask((-1, 0)), 4, 2),
                                  [[0, 0], [0, 0], [1, 0], [1, 1]])


@given(st.integers(-1, 6), st.integers(-1, 6), st.integers(1, 9), st.integers(1, 9))
@FAST
def test_dense_window_round_trip(left, right, q_len, k_len):
    keep = fa_reference(q_len, k_len, left, right)
    mask = convert.flash_window_to_mask((left, right))
    np.testing.assert_array_equal(dense(mask, q_len, k_len), keep)
    canonical = convert.mask_to_flash_window(keep)
    np.testing.assert_array_equal(fa_reference(q_len, k_len, *canonical), keep)
    np.testing.assert_array_equal(dense(convert.flash_window_to_mask(canonical), q_len, k_len),
                                  keep)
    assert convert.mask_to_flash_window(mask) == (left, right)


def test_mask_to_flash_window_from_masks():
    assert convert.mask_to_flash_window(causal(align="bottom_right")) == (-1, 0)
    assert convert.mask_to_flash_window(full()) == (-1, -1)
    assert convert.mask_to_flash_window(sliding_window(3, 1, align="bottom_right")) == (3, 1)
    assert convert.mask_to_flash_window(sliding_window(None, None, align="top_left")) == (-1, -1)
    assert convert.mask_to_flash_window(causal(align="top_left"), q_len=5, k_len=5) == (-1, 0)
    assert convert.mask_to_flash_window(sliding_window(2, 0, align=2), q_len=3, k_len=5) == (2, 0)
    assert convert.mask_to_flash_window(np.tril(np.ones((4, 4), bool))) == (-1, 0)
    assert convert.mask_to_flash_window(np.eye(4, dtype=bool)) == (0, 0)


def test_mask_to_flash_window_errors():
    with pytest.raises(ValueError, match="top_left alignment with Tq != Tk is not expressible"):
        convert.mask_to_flash_window(causal(align="top_left"), q_len=3, k_len=5)
    with pytest.raises(ValueError, match="pass q_len and k_len"):
        convert.mask_to_flash_window(sliding_window(2, 0, align="top_left"))
    with pytest.raises(ValueError, match="mask_to_flash_window: mask documents.* is a documents "
                                         "mask"):
        convert.mask_to_flash_window(documents([[0, 0, 1]]))
    with pytest.raises(ValueError, match="no window tuple expresses this pattern"):
        convert.mask_to_flash_window(dense(documents([[0, 0, 1, 1]]), 4, 4))
    with pytest.raises(ValueError, match="no window tuple expresses this pattern"):
        convert.mask_to_flash_window(np.tril(np.ones((4, 4), bool), k=-1))  # causal, no self
    with pytest.raises(ValueError, match="no window tuple expresses this pattern"):
        convert.mask_to_flash_window(np.zeros((3, 3), bool))
    with pytest.raises(TypeError, match="mask_to_flash_window: mask must be a bool array"):
        convert.mask_to_flash_window(np.ones((3, 3), int))
    with pytest.raises(TypeError, match=r"flash_window_to_mask: window_size must be a \(left, "
                                        r"right\) pair"):
        convert.flash_window_to_mask(4)


def test_jax_local_window_rule():
    # jax.nn.dot_product_attention: allowed iff q <= k + left and q >= k - right (top-left)
    q = np.arange(6)[:, None]
    k = np.arange(9)[None, :]
    for size, (left, right) in [((3, 2), (3, 2)), (2, (2, 2)), ((0, 0), (0, 0))]:
        expected = (q <= k + left) & (q >= k - right)
        mask = convert.jax_local_window(size, align="top_left")
        assert mask == sliding_window(left, right, align="top_left")
        np.testing.assert_array_equal(dense(mask, 6, 9), expected)
    with pytest.raises(ValueError, match="jax_local_window: local_window_size must be >= 0"):
        convert.jax_local_window((-1, 2), align="top_left")
    with pytest.raises(ValueError, match="hf_sliding_window: window must be an int >= 1"):
        convert.hf_sliding_window(0, align="top_left")


def test_jax_local_window_against_jax():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    q_len, k_len = 5, 8
    query = jnp.zeros((1, q_len, 1, k_len), jnp.float32)
    key = jnp.zeros((1, k_len, 1, k_len), jnp.float32)
    value = jnp.eye(k_len, dtype=jnp.float32)[None, :, None, :]
    for size in [(3, 1), 2, (0, 4)]:
        # zero scores: each row averages the one-hot values of exactly its kept keys
        out = jax.nn.dot_product_attention(query, key, value, local_window_size=size,
                                           implementation="xla")
        kept = np.asarray(out)[0, :, 0, :] > 0
        np.testing.assert_array_equal(
            kept, dense(convert.jax_local_window(size, align="top_left"), q_len, k_len))
