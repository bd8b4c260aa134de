"""refmask.tokens against the rules of docs/spec.md section 6, re-implemented here in plain
Python loops over refmask.rng.random_words (an independent transcription of the spec), and
against hand-worked examples."""

from __future__ import annotations

import math
from fractions import Fraction

import array_api_compat.numpy as anp
import numpy as np
import pytest
from _png import read_png

import refmask.tokens as T
from refmask.masks.documents import Documents
from refmask.masks.padding import KeyPadding
from refmask.rng import random_words

SPECIALS = (1, 2, 3)  # [CLS], [SEP], [MASK]
PAD, MASK_ID, VOCAB = 0, 3, 50


def words(seed, purpose, epoch, example, n):
    name = f"refmask.tokens/{purpose}/epoch={epoch}/example={example}"
    return [int(w) for w in random_words(seed, name, n)]


def cut(rate):  # round(rate * 2**32), computed with exact rationals
    return math.floor(Fraction(rate) * 2**32 + Fraction(1, 2))


def batch(rows=4, length=24, seed=11):
    gen = np.random.default_rng(seed)
    ids = gen.integers(4, VOCAB, size=(rows, length))
    ids[:, 0] = 1
    for b in range(rows):
        end = length - 3 * b
        ids[b, end - 1] = 2
        ids[b, end:] = PAD
    return ids


def spec_select(ids, seed, epoch, examples, rate, rule, specials=SPECIALS, pad=PAD):
    out = np.zeros(ids.shape, dtype=bool)
    for b, row in enumerate(ids.tolist()):
        w = words(seed, "select", epoch, examples[b], len(row))
        eligible = [t for t, i in enumerate(row) if i not in specials and i != pad]
        if rule == "bernoulli":
            chosen = [t for t in eligible if w[t] < cut(rate)]
        else:
            k = math.floor(rate * len(eligible) + 0.5)
            chosen = sorted(eligible, key=lambda t: (w[t], t))[:k]
        out[b, chosen] = True
    return out


def spec_replace(ids, selected, seed, epoch, examples, mask_rate=0.8, random_rate=0.1,
                 vocabulary=None):
    vocabulary = list(range(VOCAB)) if vocabulary is None else vocabulary
    out = ids.copy()
    codes = np.zeros(ids.shape, dtype=np.int64)
    for b in range(ids.shape[0]):
        r = words(seed, "replace", epoch, examples[b], ids.shape[1])
        v = words(seed, "random_token", epoch, examples[b], ids.shape[1])
        for t in np.flatnonzero(selected[b]):
            if r[t] < cut(mask_rate):
                out[b, t], codes[b, t] = MASK_ID, 1
            elif r[t] < cut(mask_rate) + cut(random_rate):
                out[b, t], codes[b, t] = vocabulary[(v[t] * len(vocabulary)) >> 32], 2
            else:
                codes[b, t] = 3
    return out, codes


def call(ids, **kw):
    base = dict(seed=5, epoch=0, example_ids=list(range(len(ids))), mask_id=MASK_ID,
                vocab_size=VOCAB, special_ids=SPECIALS, pad_id=PAD)
    base.update(kw)
    return T.mask_tokens(ids, **base)


# --------------------------------------------------------------------------- streams


def test_stream_words_are_the_named_rng_stream():
    from refmask.tokens._streams import stream_words

    got = stream_words("t", 2**40 + 3, "replace", 7, np.array([0, 9, 2**40]), 11)
    for row, example in enumerate([0, 9, 2**40]):
        assert got[row].tolist() == words(2**40 + 3, "replace", 7, example, 11)


# --------------------------------------------------------------------------- mask_tokens


@pytest.mark.parametrize("rule", ["bernoulli", "exact_count"])
@pytest.mark.parametrize("rate", [0.15, 0.5])
def test_mask_tokens_matches_the_spec_loops(rule, rate):
    ids = batch()
    examples = [3, 10, 0, 77]
    got = call(ids, example_ids=examples, rate=rate, selection=rule, seed=9, epoch=2)
    selected = spec_select(ids, 9, 2, examples, rate, rule)
    out, codes = spec_replace(ids, selected, 9, 2, examples)
    np.testing.assert_array_equal(got.selected, selected)
    np.testing.assert_array_equal(got.input_ids, out)
    np.testing.assert_array_equal(got.replacement, codes)
    np.testing.assert_array_equal(got.labels, np.where(selected, ids, -100))
    assert got.input_ids.dtype == ids.dtype and got.labels.dtype == ids.dtype


def test_exact_count_selects_round_half_up_of_the_float64_product():
    ids = np.full((1, 12), 7)
    ids[0, 10:] = PAD  # 10 eligible: 0.15 * 10 = 1.5 in float64 -> 2
    got = call(ids[:, :], rate=0.15, selection="exact_count")
    assert int(got.selected.sum()) == 2
    assert int(call(ids, rate=0.25, selection="exact_count").selected.sum()) == 3  # 2.5 -> 3


def test_non_special_vocabulary_never_draws_a_special_id():
    ids = batch(rows=8, length=64)
    got = call(ids, rate=1.0, mask_rate=0.0, random_rate=1.0, random_vocabulary="non_special")
    drawn = got.input_ids[got.replacement == T.RANDOM]
    assert drawn.size > 300 and not np.isin(drawn, SPECIALS).any()
    allowed = [i for i in range(VOCAB) if i not in SPECIALS]
    selected = spec_select(ids, 5, 0, list(range(8)), 1.0, "bernoulli")
    out, _ = spec_replace(ids, selected, 5, 0, list(range(8)), 0.0, 1.0, allowed)
    np.testing.assert_array_equal(got.input_ids, out)


def test_switches_make_specials_and_padding_eligible():
    ids = batch()
    plain = call(ids, rate=1.0)
    assert not plain.selected[np.isin(ids, SPECIALS + (PAD,))].any()
    both = call(ids, rate=1.0, specials_eligible=True, padding_eligible=True)
    assert both.selected.all()


def test_bool_labels_and_ignore_index():
    ids = batch()
    assert call(ids, labels="bool").labels.dtype == bool
    got = call(ids, ignore_index=-1)
    np.testing.assert_array_equal(got.labels, np.where(got.selected, ids, -1))


def test_static_copies_repeat_and_dynamic_refreshes():
    ids = batch()
    dyn = [call(ids, epoch=e).selected for e in range(3)]
    assert not np.array_equal(dyn[0], dyn[1])
    static = [call(ids, epoch=e, static_copies=2).selected for e in range(3)]
    np.testing.assert_array_equal(static[0], static[2])
    np.testing.assert_array_equal(static[0], dyn[0])
    assert not np.array_equal(static[0], static[1])


def test_a_row_does_not_depend_on_its_batch_mates():
    ids = batch()
    whole = call(ids, example_ids=[4, 5, 6, 7])
    alone = call(ids[2:3], example_ids=[6])
    np.testing.assert_array_equal(whole.input_ids[2:3], alone.input_ids)


def test_bit_identical_on_torch_and_jax():
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    ids = batch(rows=5, length=40)
    kwargs = dict(rate=0.3, selection="exact_count", random_vocabulary="non_special")
    ref = call(ids, **kwargs)
    tor = call(torch.asarray(ids), **kwargs)
    np.testing.assert_array_equal(tor.input_ids.numpy(), ref.input_ids)
    np.testing.assert_array_equal(tor.labels.numpy(), ref.labels)
    with jax.enable_x64(True):
        jx = call(jax.numpy.asarray(ids), **kwargs)
        np.testing.assert_array_equal(np.asarray(jx.input_ids), ref.input_ids)
        spans = T.mask_spans(jax.numpy.asarray(ids), seed=1, epoch=0, example_ids=range(5),
                             mask_id=MASK_ID, vocab_size=VOCAB, special_ids=SPECIALS, pad_id=PAD)
        np.testing.assert_array_equal(
            np.asarray(spans.selected),
            T.mask_spans(ids, seed=1, epoch=0, example_ids=range(5), mask_id=MASK_ID,
                         vocab_size=VOCAB, special_ids=SPECIALS, pad_id=PAD).selected)
    sentinels = VOCAB + 16  # ids stay below vocab_size - M: no id is taken for a sentinel
    t5 = T.corrupt_spans(torch.asarray(ids[:, 1:]), seed=2, epoch=1, example_ids=range(5),
                         vocab_size=sentinels, pad_id=PAD, eos_id=2)
    t5n = T.corrupt_spans(ids[:, 1:], seed=2, epoch=1, example_ids=range(5),
                          vocab_size=sentinels, pad_id=PAD, eos_id=2)
    np.testing.assert_array_equal(t5.inputs.numpy(), t5n.inputs)
    np.testing.assert_array_equal(t5.targets.numpy(), t5n.targets)


def test_jax_without_x64_is_refused():
    jax = pytest.importorskip("jax")
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match="jax_enable_x64"):
            call(jax.numpy.asarray(batch(), dtype=jax.numpy.int32))


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(rate=1.5), ValueError, "rate must be a float in"),
    (dict(selection="count"), ValueError, "selection must be one of"),
    (dict(mask_rate=0.8, random_rate=0.3), ValueError, "mask_rate \\+ random_rate"),
    (dict(example_ids=[0, 0, 1, 2]), ValueError, "example_ids must be distinct"),
    (dict(example_ids=[0, 1]), ValueError, "example_ids must have shape"),
    (dict(seed=-1), ValueError, "seed must be"),
    (dict(epoch=1.0), TypeError, "epoch must be"),
    (dict(static_copies=0), ValueError, "static_copies"),
    (dict(mask_id=VOCAB), ValueError, "mask_id must be"),
    (dict(random_vocabulary="rest"), ValueError, "random_vocabulary"),
    (dict(labels="int"), ValueError, "labels must be"),
    (dict(specials_eligible=1), TypeError, "specials_eligible must be a bool"),
])
def test_bad_arguments_name_the_argument(kwargs, error, text):
    with pytest.raises(error, match=text):
        call(batch(), **kwargs)


def test_bad_ids_are_refused():
    with pytest.raises(ValueError, match="shape \\(B, T\\)"):
        call(np.zeros(5, dtype=np.int64), example_ids=[0])
    with pytest.raises(TypeError, match="integers"):
        call(np.zeros((2, 5)), example_ids=[0, 1])
    with pytest.raises(TypeError, match="signed"):
        call(batch().astype(np.uint16))


# --------------------------------------------------------------------------- whole words


def spec_whole_words(ids, word_ids, seed, epoch, examples, rate, rule):
    out = np.zeros(ids.shape, dtype=bool)
    for b, row in enumerate(ids.tolist()):
        w = words(seed, "select", epoch, examples[b], len(row))
        units, previous = [], None  # list of token lists
        for t, i in enumerate(row):
            ok = i not in SPECIALS and i != PAD
            if ok and previous is not None and word_ids[b][t] == word_ids[b][previous] \
                    and previous == t - 1:
                units[-1].append(t)
            elif ok:
                units.append([t])
            previous = t if ok else None
        if rule == "bernoulli":
            chosen = [u for u in units if w[u[0]] < cut(rate)]
        else:
            k = math.floor(rate * len(units) + 0.5)
            chosen = sorted(units, key=lambda u: (w[u[0]], u[0]))[:k]
        for unit in chosen:
            out[b, unit] = True
    return out


@pytest.mark.parametrize("rule", ["bernoulli", "exact_count"])
def test_whole_words_match_the_spec_loop(rule):
    ids = batch(rows=4, length=30)
    gen = np.random.default_rng(0)
    continuation = gen.random(ids.shape) < 0.4
    word_ids = np.cumsum(~continuation, axis=1) - 1
    got = T.mask_whole_words(ids, seed=2, epoch=1, example_ids=[0, 1, 2, 3], mask_id=MASK_ID,
                             vocab_size=VOCAB, special_ids=SPECIALS, pad_id=PAD,
                             continuation=continuation, rate=0.4, selection=rule)
    expected = spec_whole_words(ids, word_ids.tolist(), 2, 1, [0, 1, 2, 3], 0.4, rule)
    np.testing.assert_array_equal(got.selected, expected)
    again = T.mask_whole_words(ids, seed=2, epoch=1, example_ids=[0, 1, 2, 3], mask_id=MASK_ID,
                               vocab_size=VOCAB, special_ids=SPECIALS, pad_id=PAD,
                               word_ids=word_ids, rate=0.4, selection=rule)
    np.testing.assert_array_equal(again.input_ids, got.input_ids)


def test_whole_word_example_of_the_spec():
    # [CLS] the qu ##ick fox [SEP]: word 1 = "qu ##ick" is selected with both pieces or none
    ids = np.array([[1, 10, 11, 12, 13, 2]])
    wid = np.array([[-1, 0, 1, 1, 2, -1]])
    for seed in range(40):
        got = T.mask_whole_words(ids, seed=seed, epoch=0, example_ids=[0], mask_id=MASK_ID,
                                 vocab_size=VOCAB, special_ids=SPECIALS, pad_id=PAD,
                                 word_ids=wid, rate=0.5)
        assert got.selected[0, 2] == got.selected[0, 3]
        assert not got.selected[0, [0, 5]].any()


# --------------------------------------------------------------------------- spans


def spec_spans(ids, seed, epoch, example, rate, q, top):
    row = ids.tolist()
    units = [t for t, i in enumerate(row) if i not in SPECIALS and i != PAD]
    n = len(units)
    k = math.floor(rate * n + 0.5)
    tail = 1 - Fraction(1 - Fraction(q)) ** top
    cuts = [math.floor((1 - (1 - Fraction(q)) ** m) / tail * 2**32 + Fraction(1, 2))
            for m in range(1, top)]
    wl = words(seed, "span_length", epoch, example, len(row))
    lengths, total = [], 0
    while total < k:
        length = 1 + sum(wl[len(lengths)] >= c for c in cuts)
        lengths.append(length)
        total += length
    m = min(len(lengths), n - k + 1) if k else 0
    lengths = lengths[:m]
    if m:
        lengths[-1] = k - sum(lengths[:-1])
    free = n - k - (m - 1)
    wg = words(seed, "span_gaps", epoch, example, len(row) + 1)
    bars = sorted(sorted(range(free + m), key=lambda j: (wg[j], j))[:m])
    masked = set()
    before = 0
    for s in range(m):
        start = bars[s] + before
        masked.update(range(start, start + lengths[s]))
        before += lengths[s]
    return [t in masked for t in range(n)], units, lengths


def test_span_thresholds_are_the_truncated_geometric_cdf():
    from refmask.tokens.spans import span_length_thresholds

    dist = T.span_length_distribution(0.2, 10)
    assert math.isclose(sum(m * p for m, p in enumerate(dist, 1)), 3.7970975039832857)
    cdf = np.cumsum(dist)[:-1]
    assert np.all(np.abs(np.array(span_length_thresholds(0.2, 10)) - cdf * 2**32) <= 1)


@pytest.mark.parametrize("rate", [0.15, 0.5, 0.9])
def test_spans_match_the_spec_loop(rate):
    ids = batch(rows=4, length=40)
    got = T.mask_spans(ids, seed=4, epoch=3, example_ids=[8, 9, 10, 11], mask_id=MASK_ID,
                       vocab_size=VOCAB, special_ids=SPECIALS, pad_id=PAD, rate=rate)
    for b in range(4):
        inside, units, lengths = spec_spans(ids[b], 4, 3, 8 + b, rate, 0.2, 10)
        expected = np.zeros(ids.shape[1], dtype=bool)
        expected[[u for u, m in zip(units, inside, strict=True) if m]] = True
        np.testing.assert_array_equal(got.selected[b], expected)
        assert sum(lengths) == math.floor(rate * len(units) + 0.5)


# --------------------------------------------------------------------------- T5


def test_t5_counts_follow_the_reference_formulas():
    lengths = np.array([0, 1, 2, 3, 10, 20, 100, 512, 568])
    noise, spans = T.t5_counts(anp, lengths, 0.15, 3.0)
    for length, n, m in zip(lengths.tolist(), noise.tolist(), spans.tolist(), strict=True):
        if length < 2:
            assert (n, m) == (0, 0)
            continue
        n_ref = min(max(int(np.round(length * 0.15)), 1), length - 1)  # random_spans_noise_mask
        m_ref = min(max(int(np.round(n_ref / 3.0)), 1), n_ref, length - n_ref)
        assert (n, m) == (n_ref, m_ref)


def test_t5_inputs_and_targets_rebuild_the_text():
    ids = batch(rows=6, length=60)[:, 1:]
    ids[ids == 2] = 7
    got = T.corrupt_spans(ids, seed=1, epoch=0, example_ids=range(6), vocab_size=1000,
                          pad_id=PAD, eos_id=2, noise_density=0.3, mean_span_length=2.5)
    for b in range(6):
        length = int((ids[b] != PAD).sum())
        n, m = T.t5_counts(anp, np.array([length]), 0.3, 2.5)
        noise = got.noise[b, :length]
        assert int(noise.sum()) == int(n[0])
        starts = np.flatnonzero(noise & ~np.r_[False, noise[:-1]])
        assert starts.size == int(m[0]) and not noise[0] and noise[-1]  # non-noise first
        inputs = got.inputs[b, :got.input_lengths[b]].tolist()
        targets = got.targets[b, :got.target_lengths[b]].tolist()
        assert inputs[-1] == 2 and targets[-1] == 2
        sentinels = [999 - s for s in range(starts.size)]  # counting down from vocab_size-1
        assert [i for i in inputs if i >= VOCAB] == sentinels
        assert [i for i in targets if i >= VOCAB] == sentinels
        # put the targets' spans back at the inputs' sentinels: the original row
        pieces, current = {}, None
        for token in targets[:-1]:
            if token in sentinels:
                current = token
                pieces[current] = []
            else:
                pieces[current].append(token)
        rebuilt = [t for i in inputs[:-1] for t in (pieces[i] if i in sentinels else [i])]
        assert rebuilt == ids[b, :length].tolist()


def test_t5_refuses_inner_padding():
    with pytest.raises(ValueError, match="padding must be trailing"):
        T.corrupt_spans(np.array([[5, 0, 6]]), seed=0, epoch=0, example_ids=[0],
                        vocab_size=VOCAB, pad_id=0)


# --------------------------------------------------------------------------- attention


def test_attention_builders_hand_worked():
    ids = np.array([[5, 6, 2, 7, 8, 2, 0, 0], [9, 2, 4, 4, 4, 4, 4, 2]])
    docs = T.documents_from_eos_ids(ids, 2)
    assert isinstance(docs, Documents)
    assert docs.q_segment_ids == ((0, 0, 0, 1, 1, 1, 2, 2), (0, 0, 1, 1, 1, 1, 1, 1))
    pad = T.key_padding_from_pad_ids(ids, 0, side="right")
    assert isinstance(pad, KeyPadding) and pad.lengths == (6, 8)
    left = T.key_padding_from_pad_ids(np.array([[0, 0, 5, 6]]), 0, side="left")
    assert left.lengths == (2,)
    with pytest.raises(ValueError, match="inside its text"):
        T.key_padding_from_pad_ids(np.array([[5, 0, 6, 0]]), 0, side="right")
    restarts = T.documents_from_position_ids(np.array([[0, 1, 2, 0, 1, 0]]))
    assert restarts.q_segment_ids == ((0, 0, 0, 1, 1, 2),)


# --------------------------------------------------------------------------- pictures


def test_text_and_png_of_a_masked_batch(tmp_path):
    batch_ = T.MaskedBatch(np.array([[1, 3, 45, 56, 0]]), None, None,
                           np.array([[0, T.MASK, T.RANDOM, T.KEEP, 0]], dtype=np.int8))
    assert T.batch_to_text(batch_) == "row 0 |   1 [M] ~45 =56   0"
    path = tmp_path / "b.png"
    T.batch_to_png(batch_, path, pad_id=0, cell=4)
    pixels = read_png(path.read_bytes())
    assert pixels.shape == (4, 5 * 5 - 1, 3)
    colours = [tuple(pixels[0, 5 * c].tolist()) for c in range(5)]
    from refmask.tokens.render import KEEP_RGB, MASK_RGB, PADDING_RGB, RANDOM_RGB, UNSELECTED_RGB
    assert colours == [UNSELECTED_RGB, MASK_RGB, RANDOM_RGB, KEEP_RGB, PADDING_RGB]
    with pytest.raises(FileExistsError, match="already exists"):
        T.batch_to_png(batch_, path)


@pytest.mark.gpu
def test_bit_identical_on_a_cuda_device():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ids = batch(rows=5, length=40)
    ref = call(ids, rate=0.3, random_vocabulary="non_special")
    got = call(torch.asarray(ids, device="cuda"), rate=0.3, random_vocabulary="non_special")
    assert got.input_ids.device.type == "cuda"
    np.testing.assert_array_equal(got.input_ids.cpu().numpy(), ref.input_ids)
    np.testing.assert_array_equal(got.labels.cpu().numpy(), ref.labels)
    spans = T.mask_spans(torch.asarray(ids, device="cuda"), seed=1, epoch=0,
                         example_ids=range(5), mask_id=MASK_ID, vocab_size=VOCAB,
                         special_ids=SPECIALS, pad_id=PAD)
    np.testing.assert_array_equal(
        spans.selected.cpu().numpy(),
        T.mask_spans(ids, seed=1, epoch=0, example_ids=range(5), mask_id=MASK_ID,
                     vocab_size=VOCAB, special_ids=SPECIALS, pad_id=PAD).selected)


# --------------------------------------------------------------------------- review fixes


def test_ids_outside_the_vocabulary_are_refused():
    ids = batch()
    ids[1, 4] = VOCAB  # one past the last id
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, vocab_size=50\).*\(1, 4\)"):
        call(ids)
    ids[1, 4] = -7
    with pytest.raises(ValueError, match="got -7"):
        call(ids)
    word_ids = np.cumsum(np.ones(ids.shape, dtype=np.int64), axis=1)
    for masker in (T.mask_whole_words, T.mask_spans):
        with pytest.raises(ValueError, match="input_ids must lie in"):
            masker(ids, seed=0, epoch=0, example_ids=range(4), mask_id=MASK_ID, vocab_size=VOCAB,
                   special_ids=SPECIALS, pad_id=PAD, word_ids=word_ids)


def test_ignore_index_may_not_be_a_vocabulary_id():
    # label 5 would mean both "token 5 was selected" and "not selected"
    with pytest.raises(ValueError, match="ignore_index must not be an id"):
        call(batch(), ignore_index=5)
    assert call(batch(), ignore_index=VOCAB).labels.min() >= 0  # outside [0, V): fine
    call(batch(), ignore_index=5, labels="bool")  # unused in bool mode


def test_t5_refuses_ids_that_collide_with_its_sentinels():
    # L = 4 tokens, density .5 -> N = 2, mean 1 -> M = 2: sentinels 9, 8 for vocab_size 10
    ids = np.array([[4, 5, 6, 8]])
    kw = dict(seed=0, epoch=0, example_ids=[0], pad_id=0, noise_density=0.5,
              mean_span_length=1.0)
    with pytest.raises(ValueError, match=r"vocab_size - M.*got 8 at index \(0, 3\)"):
        T.corrupt_spans(ids, vocab_size=10, **kw)
    T.corrupt_spans(np.array([[4, 5, 6, 7]]), vocab_size=10, **kw)  # 7 < 10 - 2


def test_empty_rows_are_handled_by_every_masker():
    empty = np.zeros((2, 0), dtype=np.int64)
    got = T.corrupt_spans(empty, seed=0, epoch=0, example_ids=[0, 1], vocab_size=VOCAB,
                          pad_id=PAD, eos_id=2)
    assert got.inputs.tolist() == [[2], [2]] and got.targets.tolist() == [[2], [2]]
    assert got.input_lengths.tolist() == [1, 1] and got.noise.shape == (2, 0)
    got = call(empty, example_ids=[0, 1], selection="exact_count")
    assert got.selected.shape == (2, 0)


@pytest.mark.parametrize("p, top, text", [(0.0, 10, "geometric_p"), (float("nan"), 10,
                                                                       "geometric_p"),
                                          (0.2, 0, "max_length"), (0.2, 2.5, "max_length")])
def test_span_length_distribution_checks_its_arguments(p, top, text):
    with pytest.raises((ValueError, TypeError), match=text):
        T.span_length_distribution(p, top)


def test_word_ids_that_are_not_an_array_name_the_argument():
    with pytest.raises(TypeError, match="word_ids must be an array in the namespace of "
                                        "input_ids \\(ndarray\\), got list"):
        T.mask_whole_words(batch(), word_ids=batch().tolist(), seed=0, epoch=0,
                           example_ids=range(4), mask_id=MASK_ID, vocab_size=VOCAB,
                           special_ids=SPECIALS, pad_id=PAD)


def test_stream_name_checks_its_arguments():
    assert T.stream_name("select", 2, 7) == "refmask.tokens/select/epoch=2/example=7"
    for args, error in [(("pick", 0, 0), ValueError), (("select", -1, 0), ValueError),
                        (("select", True, 0), TypeError), (("select", 0, "7"), TypeError)]:
        with pytest.raises(error, match="stream_name"):
            T.stream_name(*args)
