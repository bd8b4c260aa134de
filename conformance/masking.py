r"""Judging token maskers: exact invariants and statistical tests against docs/spec.md section 6.

A masker is a function ``masker(input_ids, *, seed, epoch, word_ids) -> (masked_ids, labels)``
on NumPy (B, T) int64 ids (``word_ids``: (B, T) word ids of the probe, -1 on specials and
padding; token-level maskers ignore it); ``labels`` is ``where(selected, id, ignore_index)``
or a bool selection. It is run on a probe batch for several epochs and, once more, for
determinism. :func:`check_masker` returns a :class:`MaskingVerdict` naming the conventions found.

Exact invariants (any violation is a finding, never a matter of chance): shapes and dtypes;
labels equal the original id where and only where selected; unselected tokens unchanged;
special tokens and padding never selected (unless declared eligible); a selected token
becomes ``mask_id``, itself, or a random id in ``[0, vocab_size)``; the same output for the
same (seed, epoch); whole words (``whole_word=True``) selected entirely or not at all.

Selection rule: every row count equal to ``round(p n)`` (half up), ``ceil(p n)`` or ``floor(p n)``
names an exact-count convention; counts that are all ``floor`` or ``ceil`` but follow neither
name "exact count with random rounding"; otherwise the masker is treated as Bernoulli(p).

Statistical tests, each giving a p-value; the family of one verdict is corrected by Holm's
step-down procedure, so the probability that a conforming masker gets any statistical
finding is at most ``alpha`` (default 1e-3):

* ``selection_rate`` (Bernoulli maskers): exact two-sided binomial test of the selected count
  among eligible units against ``p``.
* ``replacement_split``: Pearson chi-square goodness of fit of the (MASK, RANDOM, KEEP)
  counts against ``(m + r/|V| [mask in V], r (1 - 2/|V|), 1 - m - r + r/|V|)`` (a random draw
  equal to the mask id or to the original token is seen as MASK or KEEP).
* ``position_bias``: chi-square test of homogeneity of the selection rate across positions
  (2 x G table over groups of 8 positions, sparse groups merged); for span maskers, of the
  positions where masked runs start against the reference's on the same probe.
* ``freshness`` (dynamic maskers): of the units selected at epoch e, the share selected
  again at epoch e+1, one-sided binomial test against the overall rate (a static masker
  repeats its mask: share 1). Span maskers (whose tokens are not independent): an exact
  check that at most half of the rows repeat their mask at the next epoch.
* ``span_lengths`` (``spans`` given): chi-square test of homogeneity between the lengths of
  the masked runs and those of ``refmask.tokens.mask_spans`` on the same probe (4 times the
  epochs), lengths >= 8 pooled, sparse bins merged.
* ``random_draws_specials`` (declared ``random_vocabulary="all"``): a masker that never draws
  a special id among n random replacements although ``n s / |V| >= 10`` are expected; exact
  binomial probability of zero hits.

:func:`required_sample_size` gives the sample needed to detect a given deviation with a given
power at the per-test level ``alpha / tests`` (Bonferroni, conservative for Holm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from refmask import tokens
from refmask._validate import check_int, check_real
from refmask.adapters.tokens import reference
from refmask.rng import randint

from .masking_stats import holm, homogeneity, required_sample_size, run_lengths, run_starts

__all__ = ["Check", "MaskingSpec", "MaskingVerdict", "check_masker", "holm",
           "probe_batch", "reference_masker", "reference_t5", "required_sample_size",
           "run_lengths"]


Masker = Callable[..., tuple]


@dataclass(frozen=True)
class MaskingSpec:
    """What a masker is judged against (defaults: BERT).

    selection / random_vocabulary: the declared convention, or None to accept either and
    only report it. whole_word: units are the probe's words. spans: (geometric_p, max_length)
    of SpanBERT spans, or None. specials_eligible / padding_eligible / dynamic: declared.
    """

    vocab_size: int = 100
    mask_id: int = 3
    special_ids: tuple[int, ...] = (0, 1, 2, 3, 4)
    pad_id: int | None = 0
    rate: float = 0.15
    mask_rate: float = 0.8
    random_rate: float = 0.1
    selection: str | None = None
    random_vocabulary: str | None = None
    ignore_index: int = -100
    whole_word: bool = False
    spans: tuple[float, int] | None = None
    specials_eligible: bool = False
    padding_eligible: bool = False
    dynamic: bool = True


@dataclass(frozen=True)
class Check:
    name: str
    kind: str  # "exact" or "statistical"
    passed: bool
    detail: str
    p_value: float | None = None


@dataclass(frozen=True)
class MaskingVerdict:
    masker: str
    passed: bool
    conventions: tuple[str, ...]
    checks: tuple[Check, ...]
    alpha: float
    sample: dict = field(default_factory=dict)
    picture: str = ""
    histograms: dict = field(default_factory=dict, repr=False)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        head = f"{self.masker}: {'PASS' if self.passed else 'FAIL'}"
        lines = [head, "  conventions: " + "; ".join(self.conventions)]
        for c in self.checks:
            p = f" (p = {c.p_value:.3g})" if c.p_value is not None else ""
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}{p}: {c.detail}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"masker": self.masker, "passed": self.passed,
                "conventions": list(self.conventions), "alpha": self.alpha,
                "sample": self.sample,
                "checks": [{"name": c.name, "kind": c.kind, "passed": c.passed,
                            "detail": c.detail, "p_value": c.p_value} for c in self.checks]}


# --------------------------------------------------------------------------- probe


def probe_batch(spec: MaskingSpec, rows: int, length: int,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ids, word_ids): rows ``[first special] body [last special] padding``.

    Body ids are uniform over the non-special ids (``randint`` of stream "probe/ids"); one
    special id sits in the middle of every row; row b has ``(b * 7) % (length // 4)`` pads
    (when ``pad_id`` is set). Words: a body token continues the previous one's word with
    probability 1/3 (stream "probe/words"); word ids are -1 on specials and padding.
    """
    if length < 8:
        raise ValueError(f"probe_batch: length must be >= 8, got {length}")
    specials = [s for s in spec.special_ids if s != spec.pad_id] or [spec.mask_id]
    allowed = np.setdiff1d(np.arange(spec.vocab_size), np.asarray(spec.special_ids + (
        spec.mask_id,)))
    ids = allowed[randint(seed, "probe/ids", (rows, length), 0, allowed.size)]
    continues = randint(seed, "probe/words", (rows, length), 0, 3) == 0
    special_mask = np.zeros((rows, length), dtype=bool)
    for b in range(rows):
        pads = (b * 7) % (length // 4) if spec.pad_id is not None else 0
        end = length - pads
        ids[b, 0], ids[b, end - 1] = specials[0], specials[-1]
        ids[b, end // 2] = specials[b % len(specials)]
        special_mask[b, [0, end // 2, end - 1]] = True
        if pads:
            ids[b, end:] = spec.pad_id
            special_mask[b, end:] = True
    word_ids = np.cumsum(~continues | special_mask, axis=1)
    word_ids = np.where(special_mask, -1, word_ids)
    return ids.astype(np.int64), word_ids.astype(np.int64)


def reference_masker(spec: MaskingSpec, *, selection: str = "bernoulli",
                     random_vocabulary: str = "all") -> Masker:
    """``refmask.tokens`` as a masker for ``spec`` (``adapters.tokens.reference.masker``)."""
    return reference.masker(vocab_size=spec.vocab_size, mask_id=spec.mask_id,
                            special_ids=spec.special_ids, pad_id=spec.pad_id, rate=spec.rate,
                            mask_rate=spec.mask_rate, random_rate=spec.random_rate,
                            ignore_index=spec.ignore_index, whole_word=spec.whole_word,
                            spans=spec.spans, selection=selection,
                            random_vocabulary=random_vocabulary)


# --------------------------------------------------------------------------- judging


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


def _run(masker, ids, words, seed, epoch):
    out = masker(ids.copy(), seed=seed, epoch=epoch, word_ids=words.copy())
    if isinstance(out, tokens.MaskedBatch):
        out = (out.input_ids, out.labels)
    return _as_numpy(out[0]), _as_numpy(out[1])


def _selection_rule(counts: np.ndarray, n: np.ndarray, rate: float) -> str | None:
    rules = {
        "selection by exact count round(p·n) (half up)": np.floor(rate * n + 0.5),
        "selection by exact count ceil(p·n)": np.ceil(np.float32(rate) * n.astype(np.float32)),
        "selection by exact count floor(p·n)": np.floor(rate * n),
    }
    for name, expected in rules.items():
        if np.array_equal(counts, expected.astype(np.int64)):
            return name
    if np.all((counts == np.floor(rate * n)) | (counts == np.ceil(rate * n))):
        return "selection by exact count with random rounding (floor or ceil of p·n)"
    return None


def check_probe(where: str, rows: int, length: int, epochs: int, seed: int,
                alpha: float) -> tuple[int, int, int, int, float]:
    """The probe's size and the test level, checked: rows >= 1 (no rows would pass every check
    vacuously), length >= 8 (the probe's layout), epochs >= 2 (freshness compares epochs),
    seed >= 0, alpha in (0, 1)."""
    rows = check_int(where, "rows", rows, minimum=1, rule="an int >= 1 (an empty probe "
                     "would pass every check vacuously)")
    length = check_int(where, "length", length, minimum=8)
    epochs = check_int(where, "epochs", epochs, minimum=2,
                       rule="an int >= 2 (freshness compares epochs)")
    seed = check_int(where, "seed", seed, minimum=0)
    alpha = check_real(where, "alpha", alpha, positive=True)
    if not alpha < 1:
        raise ValueError(f"{where}: alpha must be in (0, 1), got {alpha}")
    return rows, length, epochs, seed, alpha


def check_masker(masker: Masker, spec: MaskingSpec | None = None, *, name: str = "masker",
                 rows: int = 64, length: int = 128, epochs: int = 4, seed: int = 0,
                 alpha: float = 1e-3) -> MaskingVerdict:
    """Judge ``masker`` against ``spec`` on a probe of ``rows x length`` over ``epochs`` epochs.

    The probe seed and the masker seed are both ``seed``. Returns a :class:`MaskingVerdict`:
    ``passed`` iff every exact check and every Holm-corrected statistical test passes.
    """
    spec = spec or MaskingSpec()
    rows, length, epochs, seed, alpha = check_probe("check_masker", rows, length, epochs, seed,
                                                    alpha)
    ids, words = probe_batch(spec, rows, length, seed)
    specials = np.isin(ids, np.asarray(spec.special_ids))
    if spec.pad_id is not None:
        padding = ids == spec.pad_id
        specials &= ~padding
    else:
        padding = np.zeros_like(specials)
    eligible = ~(specials & ~np.asarray(spec.specials_eligible)) & \
        ~(padding & ~np.asarray(spec.padding_eligible))
    checks: list[Check] = []
    conventions: list[str] = []

    def exact(check_name: str, ok: bool, detail: str):
        checks.append(Check(check_name, "exact", bool(ok), detail))

    outputs = [_run(masker, ids, words, seed, e) for e in range(epochs)]
    masked0, labels0 = outputs[0]
    shapes_ok = all(m.shape == ids.shape and lab.shape == ids.shape for m, lab in outputs)
    exact("shapes", shapes_ok, f"input {ids.shape}; outputs "
          f"{sorted({(m.shape, lab.shape) for m, lab in outputs})}")
    if not shapes_ok:
        return MaskingVerdict(name, False, (), tuple(checks), alpha)
    dtypes_ok = masked0.dtype.kind in "iu" and labels0.dtype.kind in "iub"
    exact("dtypes", dtypes_ok, f"ids {masked0.dtype}, labels {labels0.dtype}")
    bool_labels = labels0.dtype == bool
    conventions.append("labels are a bool mask" if bool_labels
                       else f"labels: ignore_index={spec.ignore_index} where unselected")
    selections = [lab.astype(bool) if bool_labels else lab != spec.ignore_index
                  for _, lab in outputs]
    sel = np.stack(selections)
    masked = np.stack([m for m, _ in outputs]).astype(np.int64)
    if not bool_labels:
        labels = np.stack([lab for _, lab in outputs]).astype(np.int64)
        bad = sel & (labels != ids[None])
        exact("labels_where_selected", not bad.any(),
              f"{int(bad.sum())} selected labels differ from the original id")
    unchanged = ~sel & (masked != ids[None])
    exact("unselected_unchanged", not unchanged.any(),
          f"{int(unchanged.sum())} unselected tokens changed")
    again = _run(masker, ids, words, seed, epochs - 1)
    same = np.array_equal(again[0], outputs[-1][0]) and np.array_equal(again[1], outputs[-1][1])
    exact("deterministic", same, "same (seed, epoch) gave " + ("the same" if same else
                                                               "a different") + " output")
    special_hits = int((sel & specials[None]).sum())
    pad_hits = int((sel & padding[None]).sum())
    conventions.append("special tokens are eligible" if special_hits
                       else "special tokens are never selected")
    if spec.pad_id is not None:
        conventions.append("padding is eligible" if pad_hits else "padding is never selected")
    exact("specials_never_selected", special_hits == 0 or spec.specials_eligible,
          f"{special_hits} special tokens selected")
    exact("padding_never_selected", pad_hits == 0 or spec.padding_eligible,
          f"{pad_hits} padding tokens selected")

    # replacement categories
    is_mask = sel & (masked == spec.mask_id)
    is_keep = sel & (masked == ids[None]) & ~is_mask
    is_random = sel & ~is_mask & ~is_keep
    drawn = masked[is_random]
    out_of_range = int(((drawn < 0) | (drawn >= spec.vocab_size)).sum())
    exact("random_in_vocabulary", out_of_range == 0,
          f"{out_of_range} random replacements outside [0, {spec.vocab_size})")
    special_draws = int(np.isin(drawn, np.asarray(spec.special_ids)).sum())
    n_random = int(is_random.sum())
    n_special = len(set(spec.special_ids) - {spec.mask_id})
    if special_draws:
        conventions.append("random replacement may draw special tokens")
        exact("random_vocabulary", spec.random_vocabulary != "non_special",
              f"{special_draws} of {n_random} random replacements are special ids")
    else:
        expected_hits = n_random * n_special / spec.vocab_size
        if expected_hits >= 10:
            conventions.append("random replacement excludes special tokens")
    stat: list[tuple[str, float, str]] = []
    if not special_draws and spec.random_vocabulary == "all" and \
            n_random * n_special / spec.vocab_size >= 10:
        p0 = (1 - n_special / spec.vocab_size) ** n_random
        stat.append(("random_draws_specials", p0, f"0 special ids in {n_random} random "
                     f"draws, {n_random * n_special / spec.vocab_size:.1f} expected"))

    # whole words
    if spec.whole_word:
        split = 0
        for e in range(epochs):
            for b in range(rows):
                w = words[b]
                for word in np.unique(w[w >= 0]):
                    s = sel[e, b, w == word]
                    split += bool(s.any() and not s.all())
        exact("whole_words", split == 0, f"{split} words partly selected")
        conventions.append("whole words" if split == 0 else "word pieces selected separately")

    # units (tokens, or words) and the selection rule
    if spec.whole_word:
        firsts = (words >= 0) & np.r_["1", np.ones((rows, 1), bool), words[:, 1:] != words[:, :-1]]
        unit_start = firsts & eligible
    else:
        unit_start = eligible
    n_units = unit_start.sum(axis=1)
    unit_sel = sel & unit_start[None]
    counts = unit_sel.sum(axis=2)
    # Epochs enter the rate, split and position tests as independent samples only when the
    # masks of consecutive epochs look independent (their overlap is not above the rate at
    # level alpha); a static or repeating masker is tested on epoch 0 alone.
    rate_all = counts.sum() / max(int(n_units.sum()) * epochs, 1)
    overlap = int((unit_sel[1:] & unit_sel[:-1]).sum())
    before = int(unit_sel[:-1].sum())
    from scipy import stats

    p_fresh = float(stats.binomtest(overlap, before, min(max(rate_all, 1e-12), 1.0),
                                    alternative="greater").pvalue) if before else 1.0
    repeated = int(np.all(sel[1:] == sel[:-1], axis=2).sum())
    if spec.spans is None:
        used = epochs if p_fresh > alpha else 1
    else:  # span tokens are not independent: judge repetition by whole rows
        used = epochs if repeated <= (epochs - 1) * rows // 2 else 1
    rule = _selection_rule(counts.reshape(-1), np.tile(n_units, epochs), spec.rate) \
        if spec.spans is None else None
    if spec.spans is not None:
        budget = np.floor(spec.rate * n_units + 0.5).astype(np.int64)
        exact_budget = np.array_equal(sel.sum(axis=2) - 0, np.tile(budget, (epochs, 1))) \
            if not spec.whole_word else None
        if exact_budget:
            conventions.append("span budget: exactly round(p·n) tokens")
    elif rule is not None:
        conventions.append(rule)
        exact("selection_rule", spec.selection in (None, "exact_count"),
              f"declared {spec.selection}; found {rule}")
    else:
        conventions.append("selection by Bernoulli(p) per " + ("word" if spec.whole_word
                                                                 else "token"))
        exact("selection_rule", spec.selection in (None, "bernoulli"),
              f"declared {spec.selection}; found Bernoulli")
        from scipy import stats

        k, n = int(counts[:used].sum()), int(n_units.sum()) * used
        test = stats.binomtest(k, n, spec.rate)
        stat.append(("selection_rate", float(test.pvalue),
                     f"{k} of {n} units selected = {k / max(n, 1):.4f}, p = {spec.rate}"))

    # replacement split
    n_sel = int(sel[:used].sum())
    if n_sel:
        from scipy import stats

        vocab = spec.vocab_size if special_draws or spec.random_vocabulary != "non_special" \
            else spec.vocab_size - n_special - 1
        mask_in = 1.0 if (special_draws or spec.random_vocabulary != "non_special") else 0.0
        r, m = spec.random_rate, spec.mask_rate
        expected = np.array([m + r * mask_in / vocab, r * (1 - (1 + mask_in) / vocab),
                             1 - m - r + r / vocab])
        observed = np.array([is_mask[:used].sum(), is_random[:used].sum(),
                             is_keep[:used].sum()], dtype=float)
        if n_sel >= 100 and observed[0] == n_sel:
            conventions.append("every selected token becomes the mask id (no random, no keep)")
        keep = expected > 0
        if (observed[~keep] > 0).any():
            exact("replacement_split", False, f"MASK/RANDOM/KEEP = {observed.astype(int)} with "
                  f"an impossible category for ({m}, {r})")
        elif keep.sum() >= 2:
            chi = stats.chisquare(observed[keep], expected[keep] * n_sel)
            shares = observed / n_sel
            stat.append(("replacement_split", float(chi.pvalue),
                         f"MASK/RANDOM/KEEP = {shares[0]:.3f}/{shares[1]:.3f}/{shares[2]:.3f} "
                         f"of {n_sel}, specified {m}/{r}/{1 - m - r:.2f}"))

    # position bias (span maskers: against the reference's positions, computed below)
    per_position = unit_sel[:used].sum(axis=(0, 1))
    eligible_position = unit_start.sum(axis=0) * used
    groups = [slice(g, g + 8) for g in range(0, length, 8)]
    if spec.spans is None:
        table = np.array([[per_position[g].sum() for g in groups],
                          [eligible_position[g].sum() - per_position[g].sum() for g in groups]])
        p_pos = homogeneity(table[:, table.sum(axis=0) > 0])
        if p_pos is not None:
            stat.append(("position_bias", p_pos, "selection rate homogeneous across positions"))

    # freshness
    rate_hat = rate_all
    if before:
        if overlap == before:
            conventions.append("static masking: the same mask every epoch")
        else:
            conventions.append("dynamic masking: a fresh mask every epoch")
        if spec.dynamic and spec.spans is not None:  # span tokens are not independent
            exact("freshness", repeated <= (epochs - 1) * rows // 2,
                  f"{repeated} of {(epochs - 1) * rows} rows kept their mask next epoch")
        elif spec.dynamic:
            stat.append(("freshness", p_fresh,
                         f"{overlap} of {before} units selected again next epoch "
                         f"({overlap / before:.3f}; independent: {rate_hat:.3f})"))

    # span lengths against the reference's runs on the same probe
    histograms = {"row_rates": (counts / np.maximum(n_units, 1)[None]).reshape(-1)}
    if spec.spans is not None:
        runs = run_lengths(sel[:used].reshape(-1, length), np.tile(eligible, (used, 1)))
        ref = reference_masker(spec)
        ref_sel = []
        for e in range(4 * epochs):
            _, lab = ref(ids, seed=seed + 10**6, epoch=e, word_ids=words)
            ref_sel.append(lab != spec.ignore_index)
        ref_runs = run_lengths(np.concatenate(ref_sel), np.tile(eligible, (4 * epochs, 1)))
        top = 8
        hist = np.array([[np.sum(np.minimum(x, top) == v) for v in range(1, top + 1)]
                         for x in (runs, ref_runs)])
        p_span = homogeneity(hist)
        # run starts, not tokens: the tokens of one span are not independent observations
        ref_position = run_starts(np.concatenate(ref_sel)).sum(axis=0)
        position = run_starts(sel[:used].reshape(-1, length)).sum(axis=0)
        table = np.array([[position[g].sum() for g in groups],
                          [ref_position[g].sum() for g in groups]])
        p_pos = homogeneity(table[:, table.sum(axis=0) > 0])
        if p_pos is not None:
            stat.append(("position_bias", p_pos, "positions of selected tokens distributed as "
                         "the reference's"))
        histograms.update(span_lengths=runs, reference_span_lengths=ref_runs)
        if p_span is not None:
            stat.append(("span_lengths", p_span, f"mean run {runs.mean():.2f} vs reference "
                         f"{ref_runs.mean():.2f} ({runs.size} and {ref_runs.size} runs)"))

    rejected = holm([p for _, p, _ in stat], alpha)
    for (check_name, p, detail), bad in zip(stat, rejected, strict=True):
        checks.append(Check(check_name, "statistical", not bad, detail, p))
    codes = np.where(is_mask[0], tokens.MASK, np.where(
        is_random[0], tokens.RANDOM, np.where(is_keep[0], tokens.KEEP, tokens.NOT_SELECTED)))
    shown = tokens.MaskedBatch(masked0[:16], None, None, codes[:16].astype(np.int8))
    picture = tokens.batch_to_text(tokens.MaskedBatch(shown.input_ids[:4], None, None,
                                                      shown.replacement[:4]))
    histograms["batch"] = shown
    sample = {"rows": rows, "length": length, "epochs": epochs, "seed": seed,
              "eligible_units": int(n_units.sum()) * epochs, "selected_tokens": n_sel,
              "statistical_tests": len(stat), "pad_id": spec.pad_id}
    passed = all(c.passed for c in checks)
    return MaskingVerdict(name, passed, tuple(conventions), tuple(checks), alpha, sample,
                          picture, histograms)


reference_t5 = reference.reference_t5
