"""Judging token maskers: the reference passes with its false-alarm rate under the stated
alpha; deliberately skewed maskers (written here, on NumPy's Generator, independently of
refmask.tokens) are caught at the documented sample size; the real maskers' verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from refmask.conformance import cli
from refmask.conformance.masking import (
    MaskingSpec,
    check_masker,
    holm,
    reference_masker,
    required_sample_size,
)

SPEC = MaskingSpec()  # vocab 100, specials 0..4, pad 0, mask 3, BERT 15% and 80/10/10


def bert_masker(rate=0.15, split=(0.8, 0.1), specials_eligible=False, padding_eligible=False,
                static=False, specials=SPEC.special_ids):
    """An independent BERT masker: Bernoulli(rate) per eligible token, then the split."""

    def masker(input_ids, *, seed, epoch, word_ids):
        gen = np.random.default_rng([seed, 0 if static else epoch])
        ids = input_ids.copy()
        eligible = np.ones(ids.shape, bool)
        if not specials_eligible:
            eligible &= ~np.isin(ids, [s for s in specials if s != SPEC.pad_id])
        if not padding_eligible:
            eligible &= ids != SPEC.pad_id
        selected = eligible & (gen.random(ids.shape) < rate)
        u = gen.random(ids.shape)
        ids[selected & (u < split[0])] = SPEC.mask_id
        rand = selected & (u >= split[0]) & (u < split[0] + split[1])
        ids[rand] = gen.integers(0, SPEC.vocab_size, size=int(rand.sum()))
        return ids, np.where(selected, input_ids, -100)

    return masker


def truncated_geometric(gen, q=0.2, top=10):
    weights = np.array([q * (1 - q) ** (m - 1) for m in range(1, top + 1)])
    return int(gen.choice(np.arange(1, top + 1), p=weights / weights.sum()))


def span_masker(shorten=0):
    """An independent SpanBERT masker following spec 6.7 with NumPy's Generator; ``shorten``
    subtracts that many tokens from every drawn length (at least 1 remains)."""

    def masker(input_ids, *, seed, epoch, word_ids):
        gen = np.random.default_rng([seed, epoch, 7])
        ids, labels = input_ids.copy(), np.full(input_ids.shape, -100)
        for b in range(len(ids)):
            units = np.flatnonzero(~np.isin(input_ids[b], SPEC.special_ids))
            n = units.size
            k = math.floor(0.15 * n + 0.5)
            lengths = []
            while sum(lengths) < k:
                lengths.append(max(1, truncated_geometric(gen) - shorten))
            lengths = lengths[:min(len(lengths), n - k + 1)]
            lengths[-1] = k - sum(lengths[:-1])
            m = len(lengths)
            free = n - k - (m - 1)
            bars = np.sort(gen.choice(free + m, size=m, replace=False))
            start = 0
            for s in range(m):
                first = bars[s] + start
                chosen = units[first:first + lengths[s]]
                labels[b, chosen] = input_ids[b, chosen]
                start += lengths[s]
            selected = labels[b] != -100
            u = gen.random(selected.size)
            ids[b, selected & (u < 0.8)] = SPEC.mask_id
            rand = selected & (u >= 0.8) & (u < 0.9)
            ids[b, rand] = gen.integers(0, SPEC.vocab_size, size=int(rand.sum()))
        return ids, labels

    return masker


# --------------------------------------------------------------------------- statistics


def test_holm_hand_worked():
    # sorted: .005 <= .05/4 reject; .01 <= .05/3 reject; .03 > .05/2 stop
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05) == [True, False, False, True]
    assert holm([0.5, 0.9], 0.05) == [False, False]


def test_sample_size_for_12_percent_has_the_stated_power():
    n = required_sample_size(0.15, 0.12, alpha=1e-3, tests=5, power=0.99)
    assert 4000 < n < 6000
    # exact power of the two-sided binomial test at level 2e-4, computed by scipy directly
    low, high = stats.binom.ppf(1e-4, n, 0.15), stats.binom.isf(1e-4, n, 0.15)
    power = stats.binom.cdf(low - 1, n, 0.12) + stats.binom.sf(high, n, 0.12)
    assert power >= 0.985


def test_sample_size_for_the_90_5_5_split():
    n = required_sample_size([0.8, 0.1, 0.1], [0.9, 0.05, 0.05], alpha=1e-3, tests=5)
    assert 300 < n < 700  # selected tokens; the default probe selects about 4200


# --------------------------------------------------------------------------- reference


def test_reference_false_alarm_rate_is_below_alpha():
    """60 seeds at alpha = 0.1 (the reference is deterministic: this count never changes).
    A true family-wise rate of 0.1 exceeds the bound below with probability < 1e-3."""
    alarms = sum(not check_masker(reference_masker(SPEC), SPEC, rows=16, length=64, epochs=2,
                                  seed=seed, alpha=0.1).passed for seed in range(60))
    assert alarms <= stats.binom.isf(1e-3, 60, 0.1)
    assert alarms / 60 <= 0.1 + 0.05


@pytest.mark.parametrize("selection", ["bernoulli", "exact_count"])
def test_reference_passes_and_names_its_conventions(selection):
    verdict = check_masker(reference_masker(SPEC, selection=selection), SPEC)
    assert verdict.passed, verdict.summary()
    assert "special tokens are never selected" in verdict.conventions
    assert "padding is never selected" in verdict.conventions
    assert "random replacement may draw special tokens" in verdict.conventions
    found = ("selection by Bernoulli(p) per token" if selection == "bernoulli"
             else "selection by exact count round(p·n) (half up)")
    assert found in verdict.conventions


def test_independent_bert_and_span_maskers_pass():
    assert check_masker(bert_masker(), SPEC).passed
    spans = MaskingSpec(spans=(0.2, 10))
    verdict = check_masker(span_masker(), spans)
    assert verdict.passed, verdict.summary()


# --------------------------------------------------------------------------- skewed


def failed(verdict):
    return {c.name for c in verdict.failures()}


def test_12_percent_is_detected():
    verdict = check_masker(bert_masker(rate=0.12), SPEC)
    assert failed(verdict) == {"selection_rate"}


def test_90_5_5_is_detected():
    verdict = check_masker(bert_masker(split=(0.9, 0.05)), SPEC)
    assert failed(verdict) == {"replacement_split"}


def test_specials_and_padding_eligible_are_detected_and_named():
    verdict = check_masker(bert_masker(specials_eligible=True), SPEC)
    assert "specials_never_selected" in failed(verdict)
    assert "special tokens are eligible" in verdict.conventions
    verdict = check_masker(bert_masker(padding_eligible=True), SPEC)
    assert "padding_never_selected" in failed(verdict)
    assert "padding is eligible" in verdict.conventions


def test_static_masking_is_detected_and_named():
    verdict = check_masker(bert_masker(static=True), SPEC)
    assert failed(verdict) == {"freshness"}
    assert "static masking: the same mask every epoch" in verdict.conventions
    assert check_masker(bert_masker(static=True), MaskingSpec(dynamic=False)).passed


def test_spans_one_token_short_are_detected():
    spans = MaskingSpec(spans=(0.2, 10))
    verdict = check_masker(span_masker(shorten=1), spans)
    assert "span_lengths" in failed(verdict)


def test_exact_count_declared_but_bernoulli_found():
    verdict = check_masker(bert_masker(), MaskingSpec(selection="exact_count"))
    assert "selection_rule" in failed(verdict)


def test_nondeterminism_is_detected():
    calls = iter(range(10**6))

    def fresh_every_call(input_ids, *, seed, epoch, word_ids):
        return bert_masker()(input_ids, seed=next(calls), epoch=0, word_ids=word_ids)

    assert "deterministic" in failed(check_masker(fresh_every_call, SPEC, rows=8, length=32))


# --------------------------------------------------------------------------- real maskers


def test_hf_collators():
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from refmask.adapters.tokens import MASKERS

    for name in ("hf.mlm", "hf.mlm.numpy"):
        masker, declared = MASKERS[name]()
        verdict = check_masker(masker, MaskingSpec(**declared), name=name)
        assert verdict.passed, verdict.summary()
        assert "selection by Bernoulli(p) per token" in verdict.conventions
        assert "random replacement may draw special tokens" in verdict.conventions
    masker, declared = MASKERS["hf.whole_word"]()
    with pytest.warns(UserWarning, match="Random token replacement is not supported"):
        verdict = check_masker(masker, MaskingSpec(**declared), name="hf.whole_word")
    assert failed(verdict) == {"replacement_split"}
    assert "whole words" in verdict.conventions
    assert "every selected token becomes the mask id (no random, no keep)" in \
        verdict.conventions


@pytest.mark.slow
def test_keras_hub_paths():
    pytest.importorskip("keras_hub")
    pytest.importorskip("tensorflow_text")
    from refmask.adapters.tokens import MASKERS

    masker, declared = MASKERS["keras_hub"]()
    verdict = check_masker(masker, MaskingSpec(**declared), rows=32, epochs=2)
    assert verdict.passed and "selection by Bernoulli(p) per token" in verdict.conventions
    masker, declared = MASKERS["keras_hub.tf_text"]()
    verdict = check_masker(masker, MaskingSpec(**declared), rows=32, epochs=2)
    assert verdict.passed and "selection by exact count ceil(p·n)" in verdict.conventions


# --------------------------------------------------------------------------- command line


def skewed_cli_masker(input_ids, *, seed, epoch, word_ids):
    return bert_masker(rate=0.3)(input_ids, seed=seed, epoch=epoch, word_ids=word_ids)


def test_command_line(tmp_path, capsys, monkeypatch):
    small = ["--rows", "16", "--length", "32", "--epochs", "2"]
    assert cli.main(["check-masking", "reference", "--quiet", *small]) == 0
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    report = tmp_path / "r.md"
    code = cli.main(["check-masking", "--impl", "test_masking_conformance:skewed_cli_masker",
                     *small, "--report", str(report)])
    assert code == 1 and "selection_rate" in report.read_text()
    assert cli.main(["check-masking", "nope"]) == 2
    assert cli.main(["check-masking", "reference.t5", "--quiet", *small]) == 0
    assert cli.main(["token-golden", "verify"]) == 0
    assert "token corpus: OK" in capsys.readouterr().out


def test_fixture(refmask_check_masker):
    assert refmask_check_masker(reference_masker(SPEC), SPEC, rows=16, length=32).passed


# --------------------------------------------------------------------------- T5


def documented_t5(sentinels_up=False, density=0.15, mean=3.0):
    """The T5 reference's documented rule (random_spans_noise_mask), on NumPy's Generator:
    N = round(L d), M = round(N / mean), random non-empty segmentations, non-noise first."""

    def segmentation(gen, items, segments):
        first = np.zeros(items, dtype=bool)
        first[1 + gen.permutation(items - 1)[:segments - 1]] = True
        return np.bincount(np.cumsum(first))

    def corrupt(input_ids, *, seed, epoch):
        gen = np.random.default_rng([seed, epoch, 5])
        inputs, targets = [], []
        for row in input_ids.tolist():
            length = len(row)
            n = min(max(int(np.round(length * density)), 1), length - 1)
            m = max(int(np.round(n / mean)), 1)
            noise_lengths = segmentation(gen, n, m)
            plain_lengths = segmentation(gen, length - n, m)
            i_row, t_row, t = [], [], 0
            for s in range(m):
                i_row += row[t:t + plain_lengths[s]]
                t += plain_lengths[s]
                sentinel = 1000 - 1 - s if not sentinels_up else 1000 - m + s
                i_row.append(sentinel)
                t_row += [sentinel] + row[t:t + noise_lengths[s]]
                t += noise_lengths[s]
            inputs.append(i_row + [1])
            targets.append(t_row + [1])
        width = max(map(len, inputs)), max(map(len, targets))
        return (np.array([r + [0] * (width[0] - len(r)) for r in inputs]),
                np.array([r + [0] * (width[1] - len(r)) for r in targets]))

    return corrupt


def test_t5_reference_and_the_documented_rule_pass():
    from refmask.conformance.masking import reference_t5
    from refmask.conformance.masking_t5 import check_t5

    assert check_t5(reference_t5()).passed
    verdict = check_t5(documented_t5())
    assert verdict.passed, verdict.summary()
    assert "sentinels count down from vocab_size - 1" in verdict.conventions


def test_t5_skews_are_detected():
    from refmask.conformance.masking_t5 import check_t5

    verdict = check_t5(documented_t5(sentinels_up=True))
    assert {c.name for c in verdict.failures()} == {"sentinels"}
    assert "sentinels count up" in verdict.conventions
    assert "noise_counts" in {c.name for c in check_t5(documented_t5(density=0.12)).failures()}
    assert "noise_counts" in {c.name for c in check_t5(documented_t5(mean=2.0)).failures()}


def test_report_histograms_and_their_absence(tmp_path, monkeypatch):
    from refmask.conformance import masking_report

    verdict = check_masker(reference_masker(MaskingSpec(spans=(0.2, 10))),
                           MaskingSpec(spans=(0.2, 10)), name="spans", rows=16, length=64,
                           epochs=2)
    pytest.importorskip("matplotlib")
    data = masking_report.plot_histograms(verdict)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    written = masking_report.write_report([verdict], tmp_path / "r.md")
    assert [p.endswith(".png") for p in written] == [False, True, True]
    assert "![spans](r.spans.batch.png)" in (tmp_path / "r.md").read_text()
    assert "![spans](r.spans.png)" in (tmp_path / "r.md").read_text()
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert masking_report.plot_histograms(verdict) is None
    with pytest.raises(ValueError, match="does not exist"):
        masking_report.write_report([verdict], tmp_path / "no" / "r.md")
    written = masking_report.write_report([verdict], tmp_path / "s.md", plots=True)
    assert [p.endswith(".png") for p in written] == [False, True]  # the batch only


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(rows=0), ValueError, "rows must be an int >= 1"),
    (dict(rows=2.0), TypeError, "rows must be"),
    (dict(length=4), ValueError, "length must be an int >= 8"),
    (dict(epochs=0), ValueError, "epochs must be an int >= 2"),
    (dict(seed=-1), ValueError, "seed must be"),
    (dict(alpha=5.0), ValueError, "alpha must be in \\(0, 1\\)"),
    (dict(alpha=float("nan")), ValueError, "alpha must be"),
])
def test_probe_arguments_are_checked_before_judging(kwargs, error, text):
    # rows=0 used to judge nothing and PASS every check; check_t5 checked none of these
    from refmask.adapters.tokens.reference import reference_t5
    from refmask.conformance.masking_t5 import check_t5

    with pytest.raises(error, match=text):
        check_masker(lambda *a, **k: None, **kwargs)
    with pytest.raises(error, match=text):
        check_t5(reference_t5(), **kwargs)
