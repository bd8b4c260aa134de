"""Judging T5 span-corruption functions against docs/spec.md 6.8 (exact structure and counts,
Holm-corrected span-length and position tests against refmask.tokens.corrupt_spans)."""

from __future__ import annotations

import array_api_compat
import numpy as np

from refmask import tokens
from refmask.adapters.tokens.reference import reference_t5
from refmask.rng import randint

from .masking import Check, Masker, MaskingVerdict, _as_numpy, check_probe
from .masking_stats import holm, homogeneity

__all__ = ["check_t5"]


def _t5_row(inputs: list[int], targets: list[int], original: list[int], eos_id, floor: int):
    """Parse one row: (problem or None, noise span lengths, noise span starts, sentinels)."""
    if eos_id is not None:
        if not inputs or inputs[-1] != eos_id or not targets or targets[-1] != eos_id:
            return "inputs and targets must end with eos_id", [], [], []
        inputs, targets = inputs[:-1], targets[:-1]
    sentinels = [i for i in inputs if i >= floor]
    if [i for i in targets if i >= floor] != sentinels:
        return "the targets' sentinels differ from the inputs'", [], [], sentinels
    if not targets or targets[0] < floor:
        return "targets must start with a sentinel", [], [], sentinels
    pieces, current = {}, None
    for token in targets:
        if token >= floor:
            current = token
            pieces[current] = []
        else:
            pieces[current].append(token)
    rebuilt, starts, lengths = [], [], []
    for token in inputs:
        if token >= floor:
            starts.append(len(rebuilt))
            lengths.append(len(pieces[token]))
            rebuilt.extend(pieces[token])
        else:
            rebuilt.append(token)
    if rebuilt != original:
        return "inputs and targets do not rebuild the original row", [], [], sentinels
    if any(n == 0 for n in lengths):
        return "an empty noise span", [], [], sentinels
    return None, lengths, starts, sentinels


def check_t5(corrupt: Masker, *, name: str = "t5", vocab_size: int = 1000,
             eos_id: int | None = 1, noise_density: float = 0.15, mean_span_length: float = 3.0,
             rows: int = 64, length: int = 128, epochs: int = 4, seed: int = 0,
             alpha: float = 1e-3) -> MaskingVerdict:
    """Judge a T5 span-corruption function ``corrupt(input_ids, *, seed, epoch) -> (inputs,
    targets)`` (padded with 0) against spec 6.8 on unpadded rows of ids in ``[10, 500)``.

    Exact: eos placement; sentinels ``vocab_size - 1, vocab_size - 2, ...`` in inputs and
    targets; inputs and targets rebuild the row; ``N`` and ``M`` as in 6.8; non-noise first,
    noise last; determinism; fresh spans each epoch. Statistical (Holm at ``alpha``): the
    noise span lengths and span start positions against ``corrupt_spans`` on the same probe.
    """
    rows, length, epochs, seed, alpha = check_probe("check_t5", rows, length, epochs, seed,
                                                    alpha)
    ids = randint(seed, "probe/t5", (rows, length), 10, 500)
    floor = 500
    checks: list[Check] = []
    conventions: list[str] = []
    problems, lengths, starts, first_noise, last_noise = [], [], [], 0, 0

    def run(fn, epoch_list, seed_):
        for e in epoch_list:
            inputs, targets = (_as_numpy(x) for x in fn(ids.copy(), seed=seed_, epoch=e))
            for b in range(rows):
                i_row = [int(x) for x in inputs[b] if x != 0]
                t_row = [int(x) for x in targets[b] if x != 0]
                problem, n, s, sent = _t5_row(i_row, t_row, ids[b].tolist(), eos_id, floor)
                yield e, b, problem, n, s, sent, i_row

    expected_n, expected_m = tokens.t5_counts(array_api_compat.numpy, np.array([length]),
                                              noise_density, mean_span_length)
    expected_n, expected_m = int(expected_n[0]), int(expected_m[0])
    count_bad, order_bad, up = 0, 0, 0
    masks = {}
    for e, b, problem, n, s, sent, i_row in run(corrupt, range(epochs), seed):
        if problem:
            problems.append(problem)
            continue
        lengths.extend(n)
        starts.extend(s)
        if sum(n) != expected_n or len(n) != expected_m:
            count_bad += 1
        if sent != [vocab_size - 1 - k for k in range(len(sent))]:
            order_bad += 1
            up += sent == sorted(sent) and len(sent) > 1
        first_noise += i_row[0] >= floor
        last_noise += i_row[-1 - (eos_id is not None)] < floor
        masks[(e, b)] = tuple(s) + tuple(n)
    checks.append(Check("structure", "exact", not problems,
                        f"{len(problems)} rows malformed" + (f" ({problems[0]})" if problems
                                                             else "")))
    checks.append(Check("noise_counts", "exact", count_bad == 0,
                        f"{count_bad} rows without N = {expected_n} noise tokens in "
                        f"M = {expected_m} spans"))
    checks.append(Check("sentinels", "exact", order_bad == 0,
                        f"{order_bad} rows whose sentinels do not count down from "
                        f"vocab_size - 1"))
    conventions.append("sentinels count down from vocab_size - 1" if order_bad == 0 else
                       "sentinels count up" if up else "sentinels in another order")
    checks.append(Check("non_noise_first_noise_last", "exact",
                        first_noise == 0 and last_noise == 0,
                        f"{first_noise} rows start with noise, {last_noise} end with non-noise"))
    if first_noise == 0 and last_noise == 0:
        conventions.append("spans alternate non-noise, noise, ...; noise last")
    again = corrupt(ids.copy(), seed=seed, epoch=epochs - 1)
    last = corrupt(ids.copy(), seed=seed, epoch=epochs - 1)
    same = all(np.array_equal(_as_numpy(a), _as_numpy(b)) for a, b in zip(again, last,
                                                                          strict=True))
    checks.append(Check("deterministic", "exact", same, "same (seed, epoch), same output"))
    repeated = sum(masks.get((e, b)) == masks.get((e + 1, b)) and (e, b) in masks
                   for e in range(epochs - 1) for b in range(rows))
    checks.append(Check("freshness", "exact", repeated <= (epochs - 1) * rows // 2,
                        f"{repeated} of {(epochs - 1) * rows} rows repeat their spans"))
    stat = []
    if lengths:
        ref_lengths, ref_starts = [], []
        for _, _, _, n, s, _, _ in run(reference_t5(
                vocab_size=vocab_size, eos_id=eos_id, noise_density=noise_density,
                mean_span_length=mean_span_length), range(4 * epochs), seed + 10**6):
            ref_lengths.extend(n)
            ref_starts.extend(s)
        top = 8
        hist = np.array([[np.sum(np.minimum(x, top) == v) for v in range(1, top + 1)]
                         for x in (np.asarray(lengths), np.asarray(ref_lengths))])
        p = homogeneity(hist)
        if p is not None:
            stat.append(("span_lengths", p, f"mean noise span {np.mean(lengths):.2f} vs "
                         f"reference {np.mean(ref_lengths):.2f}"))
        edges = np.linspace(0, length, 17)
        table = np.array([np.histogram(starts, edges)[0], np.histogram(ref_starts, edges)[0]])
        p = homogeneity(table)
        if p is not None:
            stat.append(("position_bias", p, "span starts distributed as the reference's"))
    for (check_name, p, detail), bad in zip(stat, holm([p for _, p, _ in stat], alpha),
                                            strict=True):
        checks.append(Check(check_name, "statistical", not bad, detail, p))
    sample = {"rows": rows, "length": length, "epochs": epochs, "seed": seed,
              "noise_spans": len(lengths), "statistical_tests": len(stat)}
    return MaskingVerdict(name, all(c.passed for c in checks), tuple(conventions),
                          tuple(checks), alpha, sample, "",
                          {"span_lengths": np.asarray(lengths)})
