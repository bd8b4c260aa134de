r"""T5 span corruption (Raffel et al. 2020, section 3.1.4; the reference's random_spans_noise_mask).

For a row with L tokens (the non-padding prefix; padding must be trailing):

    N  = clip(round(fl(L * noise_density)), 1, L - 1)     noise tokens   (L >= 2; else none)
    M  = min(max(round(fl(N / mean_span_length)), 1), N, L - N)      noise spans
    round = round half to even (NumPy/TF ``round``, as the reference uses)
    the N noise tokens are cut into M non-empty spans: the M-1 cuts are the M-1 of the N-1
    inner gaps 1..N-1 with the smallest keys  word_j * T + j  of "t5_noise_cuts"; the L-N
    others into M non-empty spans likewise ("t5_nonnoise_cuts"); spans alternate
    non-noise, noise, non-noise, ..., starting with non-noise and ending with noise
    (all such masks equally likely).
    sentinel of noise span s = vocab_size - 1 - s     (<extra_id_0> = vocab_size - 1, counting
                                                        down: T5's tokenizer)
    inputs  = each noise span replaced by its sentinel, then eos_id (if given)
    targets = sentinel s followed by noise span s, for s = 0..M-1, then eos_id (if given)

    tokens   10 11 12 13 14 15 16 17 18 19     noise  · · █ █ · · · · █ ·  (an example)
    inputs   10 11 S0 14 15 16 17 S1 19        S0 = vocab_size-1, S1 = vocab_size-2
    targets  S0 12 13 S1 18

The reference's own outputs end with noise; inputs/targets above therefore follow its
``noise_span_to_unique_sentinel`` / ``nonnoise_span_to_unique_sentinel`` pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat
from numpy.typing import ArrayLike

from .._typing import Array, Namespace
from .._validate import check_int, check_rate
from ._common import (
    Words,
    arange_like,
    check_example_ids,
    check_ids,
    check_ids_below,
    smallest_k,
    take_rows,
)

__all__ = ["T5Batch", "corrupt_spans", "t5_counts"]


@dataclass(frozen=True)
class T5Batch:
    """inputs (B, Ti), targets (B, To): padded with pad_id; noise (B, T) bool;
    input_lengths, target_lengths (B,) int64 (eos included)."""

    inputs: Any
    targets: Any
    noise: Any
    input_lengths: Any
    target_lengths: Any


def t5_counts(xp: Namespace, lengths: Array, noise_density: float,
              mean_span_length: float) -> tuple[Array, Array]:
    """(N, M) per row: noise tokens and noise spans (module docstring)."""
    product = xp.round(xp.astype(lengths, xp.float64) * noise_density)
    noise = xp.clip(xp.astype(product, xp.int64), 1, None)
    noise = xp.minimum(noise, lengths - 1)
    spans = xp.astype(xp.round(xp.astype(noise, xp.float64) / mean_span_length), xp.int64)
    spans = xp.minimum(xp.minimum(xp.clip(spans, 1, None), noise), lengths - noise)
    short = lengths < 2
    return xp.where(short, 0, noise), xp.where(short, 0, spans)


def _segment_starts(xp, words, items, segments, like):
    """int64 (B, T): start (item index) of segment s, s < segments; items as the end marker."""
    width = like.shape[1]
    gap = arange_like(xp, width, like)[None, :]
    cuts = smallest_k(xp, (gap >= 1) & (gap < items[:, None]), words, segments - 1)
    ordered = xp.sort(xp.where(cuts, gap, width + 1), axis=1)
    starts = xp.concat([xp.zeros_like(ordered[:, :1]), ordered[:, :-1]], axis=1)
    return xp.where(gap < segments[:, None], starts, items[:, None])


def _compact(xp, keep, values, fill: int, extra):
    """Rows of ``values[keep]`` left-aligned, then ``extra`` (or nothing), padded by ``fill``."""
    if keep.shape[1] == 0:  # no token to take: a fill column keeps take_rows in bounds
        device = array_api_compat.device(keep)
        keep = xp.zeros((keep.shape[0], 1), dtype=xp.bool, device=device)
        values = xp.full((keep.shape[0], 1), fill, dtype=values.dtype, device=device)
    width2 = keep.shape[1]
    index = arange_like(xp, width2, keep)[None, :]
    order = xp.sort(xp.where(keep, index, width2), axis=1)
    count = xp.sum(xp.astype(keep, xp.int64), axis=1)
    total = count + (1 if extra is not None else 0)
    width = int(xp.max(total)) if total.shape[0] else 0
    order = order[:, :width]
    out = take_rows(xp, values, xp.clip(order, 0, width2 - 1))
    position = index[:, :width]
    out = xp.where(position < count[:, None], out, fill)
    if extra is not None:
        out = xp.where(position == count[:, None], extra, out)
    return out, total


def corrupt_spans(input_ids: Array, *, seed: int, epoch: int, example_ids: ArrayLike,
                  vocab_size: int,
                  pad_id: int, eos_id: int | None = None, noise_density: float = 0.15,
                  mean_span_length: float = 3.0, static_copies: int | None = None) -> T5Batch:
    """T5 span corruption of (B, T) ids; each row's tokens are its non-``pad_id`` prefix.

    vocab_size: the model's vocabulary size; sentinels count down from ``vocab_size - 1``.
    pad_id: padding id (trailing padding; also fills the outputs). eos_id: appended to inputs
    and targets when given. noise_density in (0, 1) (0.15), mean_span_length > 0 (3.0).
    """
    where = "corrupt_spans"
    xp, ids = check_ids(where, input_ids)
    rows = check_example_ids(where, example_ids, ids.shape[0])
    vocab = check_int(where, "vocab_size", vocab_size, minimum=1, maximum=2**31 - 1,
                      rule="an int in [1, 2**31)")
    pad_id = check_int(where, "pad_id", pad_id, minimum=0, rule="an int >= 0")
    if eos_id is not None:
        eos_id = check_int(where, "eos_id", eos_id, minimum=0, rule="None or an int >= 0")
    density = check_rate(where, "noise_density", noise_density, open_low=True)
    if density >= 1.0:
        raise ValueError(f"{where}: noise_density must be in (0, 1), got {density}")
    if isinstance(mean_span_length, bool) or not isinstance(mean_span_length, int | float) \
            or not mean_span_length > 0:
        raise ValueError(f"{where}: mean_span_length must be a number > 0, got "
                         f"{mean_span_length!r}")
    batch, width = ids.shape
    real = ids != pad_id
    lengths = xp.sum(xp.astype(real, xp.int64), axis=1)
    index = arange_like(xp, width, ids)[None, :]
    if bool(xp.any(real != (index < lengths[:, None]))):
        raise ValueError(f"{where}: padding must be trailing: no token after the first "
                         f"pad_id={pad_id} in a row")
    words = Words(where, xp, ids, seed, epoch, static_copies, rows)
    noise_count, spans = t5_counts(xp, lengths, density, float(mean_span_length))
    check_ids_below(where, xp, ids, vocab - spans, among=real,
                    rule=f"[0, vocab_size - M) (vocab_size={vocab}; the ids from vocab_size - M "
                         "up are the sentinels of the row's M noise spans)")
    noise_starts = _segment_starts(xp, words("t5_noise_cuts", width), noise_count, spans, ids)
    plain_starts = _segment_starts(xp, words("t5_nonnoise_cuts", width), lengths - noise_count,
                                   spans, ids)
    count = int(xp.max(spans)) if batch else 0
    noise = xp.zeros_like(real)
    first_of_span = xp.zeros_like(real)
    span_of_token = xp.zeros(ids.shape, dtype=xp.int64, device=array_api_compat.device(ids))
    if count:
        plain_end = xp.concat([plain_starts[:, 1:count + 1], (lengths - noise_count)[:, None]],
                              axis=1)[:, :count]
        plain_end = xp.where(arange_like(xp, count, ids)[None, :] == spans[:, None] - 1,
                             (lengths - noise_count)[:, None], plain_end)
        noise_begin = noise_starts[:, :count]
        noise_end = xp.concat([noise_starts[:, 1:count], noise_count[:, None]], axis=1)
        noise_end = xp.where(arange_like(xp, count, ids)[None, :] == spans[:, None] - 1,
                             noise_count[:, None], noise_end)
        active = arange_like(xp, count, ids)[None, :] < spans[:, None]
        begin = plain_end + noise_begin
        end = plain_end + noise_end
        t = index[:, :, None]
        inside = active[:, None, :] & (begin[:, None, :] <= t) & (t < end[:, None, :])
        noise = xp.any(inside, axis=2)
        first_of_span = xp.any(active[:, None, :] & (begin[:, None, :] == t), axis=2)
        span_of_token = xp.sum(xp.astype(active[:, None, :] & (begin[:, None, :] <= t),
                                         xp.int64), axis=2) - 1
    sentinel = xp.astype(vocab - 1 - span_of_token, ids.dtype)
    slot_values = xp.reshape(xp.stack([sentinel, ids], axis=2), (batch, 2 * width))
    keep_inputs = xp.reshape(xp.stack([first_of_span, real & ~noise], axis=2), (batch, 2 * width))
    keep_targets = xp.reshape(xp.stack([first_of_span, noise], axis=2), (batch, 2 * width))
    inputs, input_lengths = _compact(xp, keep_inputs, slot_values, pad_id, eos_id)
    targets, target_lengths = _compact(xp, keep_targets, slot_values, pad_id, eos_id)
    return T5Batch(inputs, targets, noise, input_lengths, target_lengths)
