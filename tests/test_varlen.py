"""Varlen and paged layouts: hand-worked matrices, FlashAttention's own varlen reference mask,
every xformers block-diagonal bias class (materialised by xformers itself), paged caches
against an independent gather, per-sequence ALiBi, classify, JSON and errors."""

from __future__ import annotations

import numpy as np
import pytest

from refmask import masks as m
from refmask.attention import Alibi, attention

TL, BR = "top_left", "bottom_right"


def grid(rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool)


def dense(mask, q_len, k_len, batch=1):
    return np.asarray(mask.materialize(batch, 1, q_len, k_len))[:, 0]


# -- hand-worked pictures -----------------------------------------------------------------------

def test_varlen_causal_bottom_right_per_sequence():
    # seq 0: 2 queries, 4 keys (offset 2); seq 1: 3 queries, 3 keys (offset 0)
    mask = m.varlen(m.causal(align=BR), m.varlen_layout([0, 2, 5], [0, 4, 7]))
    assert np.array_equal(dense(mask, 5, 7)[0], grid("""
        ###....
        ####...
        ....#..
        ....##.
        ....###"""))


def test_varlen_causal_top_left_per_sequence_differs():
    mask = m.varlen(m.causal(align=TL), m.varlen_layout([0, 2, 5], [0, 4, 7]))
    assert np.array_equal(dense(mask, 5, 7)[0], grid("""
        #......
        ##.....
        ....#..
        ....##.
        ....###"""))


def test_varlen_more_queries_than_keys_gives_empty_rows_per_sequence():
    # FlashAttention: seq 1 has 3 queries and 1 key, so its first two rows are empty
    mask = m.varlen(m.causal(align=BR), m.varlen_layout([0, 1, 4], [0, 2, 3]))
    assert np.array_equal(dense(mask, 4, 3)[0], grid("""
        ##.
        ...
        ...
        ..#"""))


def test_varlen_window_and_chunk_restart_per_sequence():
    layout = m.varlen_layout([0, 4, 8], [0, 4, 8])
    window = m.varlen(m.sliding_window(1, 0, align=BR), layout)
    chunk = m.varlen(m.chunked(2, align=BR) & m.causal(align=BR), layout)
    assert np.array_equal(dense(window, 8, 8)[0], grid("""
        #.......
        ##......
        .##.....
        ..##....
        ....#...
        ....##..
        .....##.
        ......##"""))
    assert np.array_equal(dense(chunk, 8, 8)[0], grid("""
        #.......
        ##......
        ..#.....
        ..##....
        ....#...
        ....##..
        ......#.
        ......##"""))


def test_varlen_per_sequence_offsets_are_cached_prefixes():
    # seq 0 has a cache of 1 key before its 2 queries, seq 1 a cache of 0
    mask = m.varlen(m.causal(align=[1, 0]), m.varlen_layout([0, 2, 4], [0, 3, 5]))
    assert np.array_equal(dense(mask, 4, 5)[0], grid("""
        ##...
        ###..
        ...#.
        ...##"""))


def test_paged_decode_picture_from_the_docstring():
    layout = m.paged_layout([[2, 0], [1, 3]], 2, [3, 2], num_pages=4)
    mask = m.varlen(m.causal(align=BR), layout)
    got = dense(mask, 1, 8, batch=2)[:, 0]
    assert np.array_equal(got, grid("""
        #...##..
        ..##...."""))


# -- FlashAttention varlen: its own reference mask, re-implemented ----------------------------

def fa_local_mask(seqlen_q, seqlen_k, window, sq, sk):
    """NumPy transcription of ``construct_local_mask`` in Dao-AILab/flash-attention
    tests/test_flash_attn.py (True = masked) for one padded batch entry with ``sq`` valid
    queries and ``sk`` valid keys, right padded as its ``generate_qkv`` unpads them:

        causal (left < 0): col > row + sk - sq + right
        window:            col > min(row + sk - sq + right, sk) or col < row + sk - sq - left
    """
    row = np.arange(seqlen_q)[:, None]
    col = np.arange(seqlen_k)[None, :]
    if window[0] < 0:
        return col > row + sk - sq + window[1]
    return (col > np.minimum(row + sk - sq + window[1], sk)) | (col < row + sk - sq - window[0])


# FlashAttention's tests draw windows with both sides >= 0 (or causal = (-1, 0)); its reference
# reads a -1 right side literally, so one-sided windows are not part of what it defines.
@pytest.mark.parametrize("window", [(-1, 0), (2, 0), (1, 1), (0, 2), (3, 4)])
@pytest.mark.parametrize("lengths", [([3, 1, 4], [5, 2, 4]), ([2, 5], [2, 3]),
                                     ([1, 1, 1], [4, 1, 3])])
def test_flash_attention_varlen_masks_are_native_varlen_masks(window, lengths):
    q_lens, k_lens = lengths
    cu_q, cu_k = np.cumsum([0] + q_lens), np.cumsum([0] + k_lens)
    expected = np.zeros((cu_q[-1], cu_k[-1]), dtype=bool)
    for n, (sq, sk) in enumerate(zip(q_lens, k_lens, strict=True)):
        masked = fa_local_mask(max(q_lens), max(k_lens), window, sq, sk)
        kept = ~masked[:sq, :sk]  # attention_ref also drops the padded keys
        expected[cu_q[n]:cu_q[n + 1], cu_k[n]:cu_k[n + 1]] = kept
    left = None if window[0] < 0 else window[0]
    right = None if window[1] < 0 else window[1]
    native = m.varlen(m.sliding_window(left, right, align=BR), m.varlen_layout(cu_q, cu_k))
    assert np.array_equal(dense(native, cu_q[-1], cu_k[-1])[0], expected)


def test_seqused_k_keeps_the_first_keys_of_each_span():
    layout = m.varlen_layout([0, 2, 3], [0, 4, 8], seqused_k=[2, 3])
    mask = m.varlen(m.causal(align=BR), layout)
    assert np.array_equal(dense(mask, 3, 8)[0], grid("""
        #.......
        ##......
        ....###."""))


# -- xformers: every block-diagonal class, materialised by xformers itself -----------------------

Q_LENS, K_LENS = [2, 3, 1], [4, 3, 2]
CU_Q, CU_K = np.cumsum([0] + Q_LENS), np.cumsum([0] + K_LENS)
BLOCK_TABLE = [[3, 1, 7], [0, 5, 6], [2, 4, 8]]


def _xformers_cases():
    """(name, build(ab, torch) -> bias, refmask mask, (Tq, Tk)) for every varlen class."""
    plain = m.varlen_layout(CU_Q, CU_K)
    padded = m.padded_keys_layout(Q_LENS, 5, K_LENS)
    gappy = m.gappy_keys_layout(Q_LENS, [1, 7, 12], K_LENS, 15)
    paged = m.paged_layout(BLOCK_TABLE, 2, K_LENS, num_pages=9, cu_seqlens_q=CU_Q)
    paged_gappy = m.paged_layout(BLOCK_TABLE, 2, K_LENS, num_pages=9, cu_seqlens_q=CU_Q,
                                 first_slots=[1, 0, 3])

    def cpu(torch):
        return {"device": torch.device("cpu")}

    return [
        ("BlockDiagonalMask", lambda ab, t: ab.BlockDiagonalMask.from_seqlens(
            Q_LENS, K_LENS, **cpu(t)), m.varlen(m.full(), plain), (6, 9)),
        ("BlockDiagonalCausalMask", lambda ab, t: ab.BlockDiagonalCausalMask.from_seqlens(
            Q_LENS, K_LENS, **cpu(t)), m.varlen(m.causal(align=TL), plain), (6, 9)),
        ("BlockDiagonalCausalFromBottomRightMask",
         lambda ab, t: ab.BlockDiagonalCausalFromBottomRightMask.from_seqlens(
             Q_LENS, K_LENS, **cpu(t)), m.varlen(m.causal(align=BR), plain), (6, 9)),
        ("BlockDiagonalCausalLocalAttentionMask",
         lambda ab, t: ab.BlockDiagonalMask.from_seqlens(
             Q_LENS, K_LENS, **cpu(t)).make_local_attention(2),
         m.varlen(m.sliding_window(1, 0, align=TL), plain), (6, 9)),
        ("BlockDiagonalCausalLocalAttentionFromBottomRightMask",
         lambda ab, t: ab.BlockDiagonalMask.from_seqlens(
             Q_LENS, K_LENS, **cpu(t)).make_local_attention_from_bottomright(2),
         m.varlen(m.sliding_window(1, 0, align=BR), plain), (6, 9)),
        ("BlockDiagonalPaddedKeysMask",
         lambda ab, t: ab.BlockDiagonalPaddedKeysMask.from_seqlens(Q_LENS, 5, K_LENS, **cpu(t)),
         m.varlen(m.full(), padded), (6, 15)),
        ("BlockDiagonalCausalWithOffsetPaddedKeysMask",
         lambda ab, t: ab.BlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens(
             Q_LENS, 5, K_LENS, **cpu(t)), m.varlen(m.causal(align=BR), padded), (6, 15)),
        ("BlockDiagonalLocalAttentionPaddedKeysMask",
         lambda ab, t: ab.BlockDiagonalLocalAttentionPaddedKeysMask.from_seqlens_local(
             Q_LENS, 5, K_LENS, 1, 1), m.varlen(m.sliding_window(1, 1, align=BR), padded),
         (6, 15)),
        ("BlockDiagonalCausalLocalAttentionPaddedKeysMask",
         lambda ab, t: ab.BlockDiagonalCausalLocalAttentionPaddedKeysMask.from_seqlens_local(
             Q_LENS, 5, K_LENS, 2), m.varlen(m.sliding_window(1, 0, align=BR), padded),
         (6, 15)),
        ("BlockDiagonalGappyKeysMask",
         lambda ab, t: ab.BlockDiagonalGappyKeysMask.from_seqlens(
             Q_LENS, [1, 7, 12, 15], K_LENS, **cpu(t)), m.varlen(m.full(), gappy), (6, 15)),
        ("BlockDiagonalCausalWithOffsetGappyKeysMask",
         lambda ab, t: ab.BlockDiagonalCausalWithOffsetGappyKeysMask.from_seqlens(
             Q_LENS, [1, 7, 12, 15], K_LENS, **cpu(t)), m.varlen(m.causal(align=BR), gappy),
         (6, 15)),
        ("PagedBlockDiagonalPaddedKeysMask",
         lambda ab, t: ab.PagedBlockDiagonalPaddedKeysMask.from_seqlens(
             Q_LENS, K_LENS, t.tensor(BLOCK_TABLE, dtype=t.int32), 2, **cpu(t)),
         m.varlen(m.full(), paged), (6, 18)),
        ("PagedBlockDiagonalCausalWithOffsetPaddedKeysMask",
         lambda ab, t: ab.PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens(
             Q_LENS, K_LENS, t.tensor(BLOCK_TABLE, dtype=t.int32), 2, **cpu(t)),
         m.varlen(m.causal(align=BR), paged), (6, 18)),
        # PagedBlockDiagonalGappyKeysMask.from_seqlens asserts len(kv_seqstarts) == N and then
        # requires N + 1 (xformers 0.0.35), so the paged gappy biases come from make_paged.
        ("PagedBlockDiagonalGappyKeysMask",
         lambda ab, t: ab.BlockDiagonalGappyKeysMask.from_seqlens(
             Q_LENS, [1, 6, 15, 18], K_LENS, **cpu(t)).make_paged(
             t.tensor(BLOCK_TABLE, dtype=t.int32), 2, 6, ab.PagedBlockDiagonalGappyKeysMask),
         m.varlen(m.full(), paged_gappy), (6, 18)),
        ("PagedBlockDiagonalCausalWithOffsetGappyKeysMask",
         lambda ab, t: ab.BlockDiagonalGappyKeysMask.from_seqlens(
             Q_LENS, [1, 6, 15, 18], K_LENS, **cpu(t)).make_paged(
             t.tensor(BLOCK_TABLE, dtype=t.int32), 2, 6,
             ab.PagedBlockDiagonalCausalWithOffsetGappyKeysMask),
         m.varlen(m.causal(align=BR), paged_gappy), (6, 18)),
    ]


XFORMERS_CASES = _xformers_cases()


@pytest.mark.parametrize("name,build,mask,shape", XFORMERS_CASES,
                         ids=[c[0] for c in XFORMERS_CASES])
def test_xformers_block_diagonal_classes_are_native_varlen_masks(name, build, mask, shape):
    torch = pytest.importorskip("torch")
    ab = pytest.importorskip("xformers.ops.fmha.attn_bias")
    bias = build(ab, torch)
    assert type(bias).__name__ == name
    materialised = bias.materialize((1, 1) + shape, dtype=torch.float32, device="cpu")
    expected = np.isfinite(materialised.numpy())[0, 0]
    assert np.array_equal(dense(mask, *shape)[0], expected)


def test_every_xformers_varlen_class_is_covered():
    ab = pytest.importorskip("xformers.ops.fmha.attn_bias")
    varlen_classes = {name for name in dir(ab) if name.startswith(("BlockDiagonal",
                                                                   "PagedBlockDiagonal"))}
    assert varlen_classes == {c[0] for c in XFORMERS_CASES}


# -- paged caches: attention on pages equals attention on the gathered logical keys ---------------

def gather_pages(cache, table, length, page_size):
    """Independent gather: logical key p of a sequence is ``cache[table[p // ps] * ps + p % ps]``
    (vLLM / FlashInfer paged layout) for p < length."""
    slots = [table[p // page_size] * page_size + p % page_size for p in range(length)]
    return cache[:, :, slots]


@pytest.mark.parametrize("page_size,block_table,seq_lens,q_len", [
    (4, [[0, 1, 2], [3, 5, 0]], [9, 5], 1),            # last pages of 1 token, decode
    (4, [[6, 1, 2], [6, 1, 4]], [12, 10], 3),          # two sequences share prefix pages 6, 1
    (2, [[3, 0, 4], [1, 2, 5]], [5, 4], 2),            # chunked prefill of 2 queries
    (3, [[2, 0], [1, 3]], [1, 6], 1),                  # a one-token sequence
])
def test_paged_attention_equals_attention_on_gathered_keys(page_size, block_table, seq_lens,
                                                           q_len):
    rng = np.random.default_rng(0)
    num_pages = max(max(row) for row in block_table) + 1
    batch, heads, dim = len(seq_lens), 2, 4
    q = rng.standard_normal((batch, heads, q_len, dim))
    k_cache = rng.standard_normal((1, heads, num_pages * page_size, dim))
    v_cache = rng.standard_normal((1, heads, num_pages * page_size, dim))
    layout = m.paged_layout(block_table, page_size, seq_lens, num_pages=num_pages)
    inner = m.causal(align=BR) & m.sliding_window(5, 0, align=BR)
    paged = attention(q, np.repeat(k_cache, batch, 0), np.repeat(v_cache, batch, 0),
                      mask=m.varlen(inner, layout))
    for b, length in enumerate(seq_lens):
        k = gather_pages(k_cache, block_table[b], length, page_size)
        v = gather_pages(v_cache, block_table[b], length, page_size)
        # causal bottom-right with a 6-key window, written out on logical positions
        pq = np.arange(q_len)[:, None] + length - q_len
        keep = (np.arange(length)[None, :] <= pq) & (np.arange(length)[None, :] >= pq - 5)
        s = q[b:b + 1] @ np.swapaxes(k, -1, -2) / 2.0
        s = np.where(keep, s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        out = (p / p.sum(-1, keepdims=True)) @ v
        np.testing.assert_allclose(paged.out[b], out[0], rtol=1e-13, atol=1e-14)


def test_paged_prefix_sharing_maps_one_slot_to_two_sequences():
    layout = m.paged_layout([[0, 1], [0, 2]], 2, [4, 3], num_pages=3)
    positions = layout.key_positions()
    assert positions.tolist() == [[0, 1, 2, 3, -1, -1], [0, 1, -1, -1, 2, -1]]


# -- per-sequence ALiBi --------------------------------------------------------------------------

def test_alibi_positions_restart_per_sequence_like_flash_attention_varlen():
    # FlashAttention attention_ref: bias = -slope * |row + sk - sq - col| per (padded) sequence
    q_lens, k_lens = [2, 3], [4, 3]
    cu_q, cu_k = np.cumsum([0] + q_lens), np.cumsum([0] + k_lens)
    layout = m.varlen_layout(cu_q, cu_k)
    alibi = Alibi([0.5, 0.25], convention="abs", align=BR, layout=layout)
    got = alibi.bias(1, 2, 5, 7)
    for n, (sq, sk) in enumerate(zip(q_lens, k_lens, strict=True)):
        row = np.arange(sq)[:, None]
        col = np.arange(sk)[None, :]
        for h, slope in enumerate([0.5, 0.25]):
            block = got[0, h, cu_q[n]:cu_q[n + 1], cu_k[n]:cu_k[n + 1]]
            np.testing.assert_array_equal(block, -slope * np.abs(row + sk - sq - col))
    assert got[0, 0, 0, 5] == 0  # across sequences: no distance (the mask drops the pair)


def test_alibi_layout_rejects_lengths_inside_bottom_right():
    layout = m.varlen_layout([0, 2], [0, 3])
    with pytest.raises(ValueError, match="takes its lengths from the layout"):
        Alibi(1, convention="abs", align=m.bottom_right([2], [3]), layout=layout)


# -- classify, JSON, errors ----------------------------------------------------------------------

@pytest.mark.parametrize("mask,shape", [
    (m.varlen(m.causal(align=BR), m.varlen_layout([0, 3, 7], [0, 5, 9])), (7, 9)),
    (m.varlen(m.full(), m.paged_layout([[1, 0], [2, 3]], 2, [3, 4], num_pages=4)), (2, 8)),
])
def test_classify_matches_the_materialised_tiles(mask, shape):
    q_len, k_len = shape
    batch = mask.batch_size or 1
    keep = np.asarray(mask.materialize(batch, 1, q_len, k_len))
    for q0 in range(0, q_len, 2):
        for k0 in range(0, k_len, 3):
            q1, k1 = min(q0 + 2, q_len), min(k0 + 3, k_len)
            block = keep[:, :, q0:q1, k0:k1]
            want = (m.Block.FULL if block.all() else m.Block.PARTIAL if block.any()
                    else m.Block.EMPTY)
            assert mask.classify(q0, q1, k0, k1, q_len=q_len, k_len=k_len) == want


def test_json_round_trip():
    for mask in (m.varlen(m.causal(align=BR) & m.chunked(3, align=BR),
                          m.varlen_layout([0, 2, 5], [0, 4, 7], seqused_k=[3, 2])),
                 m.varlen(m.sliding_window(2, 0, align=[1, 2]),
                          m.paged_layout([[0, 1], [2, 3]], 4, [5, 8], num_pages=4)),
                 m.varlen(m.full(), m.padded_keys_layout([1, 2], 4, [3, 4]))):
        assert m.from_json(mask.to_json()) == mask


@pytest.mark.parametrize("build,message", [
    (lambda: m.varlen_layout([0, 2, 1], [0, 1, 2]), "non-decreasing"),
    (lambda: m.varlen_layout([0, 2], [0, 1, 2]), "1 sequences but cu_seqlens_k has 2"),
    (lambda: m.varlen_layout([0, 2], [0, 3], seqused_k=[4]), "seqused_k"),
    (lambda: m.padded_keys_layout([1, 2], 3, [4, 1]), "k_padding"),
    (lambda: m.paged_layout([[0]], 2, [3], num_pages=2), "holds 1 pages"),
    (lambda: m.paged_layout([[0, 5]], 2, [3], num_pages=2), "outside"),
    (lambda: m.paged_layout([[1, 1]], 2, [3], num_pages=2), "twice"),
    (lambda: m.paged_layout([[0, 1]], 3, [3], num_pages=2, cu_seqlens_q=[0, 1, 2]), "entries"),
    (lambda: m.varlen(m.key_padding(3, side="right"), m.varlen_layout([0, 1], [0, 1])),
     "reads the packed lengths"),
    (lambda: m.varlen(m.causal(align=m.bottom_right([1], [1])), m.varlen_layout([0, 1], [0, 1])),
     "takes its lengths from the layout"),
    (lambda: m.varlen(m.causal(align=[1, 2, 3]), m.varlen_layout([0, 1, 2], [0, 1, 2])),
     "one offset per sequence"),
])
def test_bad_layouts_are_refused_with_the_argument_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_lengths_must_match_the_layout():
    mask = m.varlen(m.full(), m.varlen_layout([0, 2], [0, 3]))
    with pytest.raises(ValueError, match="packs 2 query tokens but q_len = 3"):
        mask.materialize(1, 1, 3, 3)
    with pytest.raises(ValueError, match="3 key slots but k_len = 4"):
        mask.materialize(1, 1, 2, 4)


def test_masks_evaluate_in_another_namespace():
    torch = pytest.importorskip("torch")
    for mask, (batch, q_len, k_len) in (
        (m.varlen(m.causal(align=BR) & m.chunked(2, align=BR),
                  m.varlen_layout([0, 2, 5], [0, 4, 7])), (1, 5, 7)),
        (m.varlen(m.sliding_window(1, 0, align=BR),
                  m.paged_layout([[2, 0], [1, 3]], 2, [3, 2], num_pages=4)), (2, 1, 8)),
        (m.tree([-1, 0, 0, 1], align=BR), (1, 4, 7)),
    ):
        got = mask.materialize(batch, 1, q_len, k_len, xp=torch)
        assert isinstance(got, torch.Tensor)
        assert np.array_equal(got.numpy(), mask.materialize(batch, 1, q_len, k_len))


def test_per_sequence_alibi_cases_have_a_json_form_and_an_exact_golden():
    """Per-sequence ALiBi positions (issue 14) round-trip through the case JSON, and the exact
    engine gives the float64 reference's values (independently checked against a hand-worked
    distance table in tests/test_outputs_cases.py)."""
    from refmask.case import Case, case_from_json, case_inputs
    from refmask.conformance.exact import exact_attention

    layout = m.varlen_layout([0, 2, 5], [0, 4, 7])
    case = Case(name="varlen/alibi", family="varlen", mask=m.varlen(m.causal(align=BR), layout),
                batch=1, q_heads=2, kv_heads=2, q_len=5, k_len=7,
                alibi=Alibi(2, convention="abs", align=BR, layout=layout))
    assert case_from_json(case.to_json()).to_json() == case.to_json()
    exact = exact_attention(case)
    inputs = case_inputs(case)
    reference = attention(inputs["q"], inputs["k"], inputs["v"], mask=case.mask,
                          alibi=case.alibi, path="exact")
    np.testing.assert_allclose(np.asarray(exact["out"]), np.asarray(reference.out),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(exact["lse"]), np.asarray(reference.lse),
                               rtol=1e-12, atol=1e-12)
