"""Shared pieces of the token maskers: argument checks, words in a namespace, units, selection.

Private helpers; the rules they implement are stated in docs/spec.md section 6 and in the
docstrings below. ``B`` is the batch size, ``T`` the padded sequence length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import array_api_compat
import numpy as np

from .._validate import check_choice, check_flag, check_int, check_rate
from ._streams import masking_epoch, stream_words

SELECTION_RULES = ("bernoulli", "exact_count")
_WORD_SPAN = 2**32


# --------------------------------------------------------------------------- arguments


def check_ids(where: str, input_ids):
    """Return ``(xp, input_ids)`` for a (B, T) integer array of any array-API namespace."""
    try:
        xp = array_api_compat.array_namespace(input_ids)
    except TypeError:
        raise TypeError(f"{where}: input_ids must be an array (NumPy, torch, JAX, ...), got "
                        f"{type(input_ids).__name__}") from None
    if input_ids.ndim != 2:
        raise ValueError(f"{where}: input_ids must have shape (B, T), got {tuple(input_ids.shape)}")
    if not xp.isdtype(input_ids.dtype, "integral"):
        raise TypeError(f"{where}: input_ids must hold integers, got dtype {input_ids.dtype}")
    probe = xp.asarray(np.zeros(1, dtype=np.int64), device=array_api_compat.device(input_ids))
    if probe.dtype != xp.int64:  # JAX without x64 silently narrows int64 to int32
        raise TypeError(f"{where}: the namespace of input_ids has no int64 (for JAX, enable "
                        f"jax_enable_x64); masks are computed on 64-bit integer keys")
    return xp, input_ids


def check_ids_below(where: str, xp, input_ids, bound, *, rule: str, among=None) -> None:
    """Refuse ids outside ``[0, bound)`` (bound: an int or a (B,) array, one per row), among the
    positions ``among`` (bool (B, T); default all): an id the vocabulary does not have would
    otherwise pass through the masker unnoticed."""
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        return
    limit = bound if isinstance(bound, int) else bound[:, None]
    bad = (input_ids < 0) | (input_ids >= limit)
    if among is not None:
        bad = bad & among
    if bool(xp.any(bad)):
        row, column = (int(i) for i in np.argwhere(_host(bad))[0])
        raise ValueError(f"{where}: input_ids must lie in {rule}, got "
                         f"{int(_host(input_ids)[row, column])} at index ({row}, {column})")


def _host(array) -> np.ndarray:
    return np.asarray(array.cpu() if hasattr(array, "cpu") else array)


def check_id_set(where: str, name: str, ids) -> tuple[int, ...]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence | np.ndarray | frozenset
                                                           | set):
        raise TypeError(f"{where}: {name} must be a sequence of ints, got {ids!r}")
    return tuple(sorted({check_int(where, f"{name}[...]", i, minimum=0, rule="an int >= 0")
                         for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)}))


def check_common(where: str, input_ids, special_ids, pad_id, example_ids, rate,
                 selection: str | None):
    """The arguments every selecting masker shares, checked in one order:
    ``(xp, input_ids, special_ids, pad_id, example rows, rate)``; ``selection=None`` for a
    masker without that choice (spans)."""
    xp, input_ids = check_ids(where, input_ids)
    specials = check_id_set(where, "special_ids", special_ids)
    if pad_id is not None:
        pad_id = check_int(where, "pad_id", pad_id, minimum=0, rule="None or an int >= 0")
    rows = check_example_ids(where, example_ids, input_ids.shape[0])
    rate = check_rate(where, "rate", rate)
    if selection is not None:
        check_choice(where, "selection", selection, SELECTION_RULES)
    return xp, input_ids, specials, pad_id, rows, rate


def check_example_ids(where: str, example_ids, batch: int) -> np.ndarray:
    """(B,) distinct ints in [0, 2**63): the dataset index of each row (keys the streams)."""
    if isinstance(example_ids, range) or (isinstance(example_ids, np.ndarray)
                                          and example_ids.dtype.kind in "iu"):
        fast = np.asarray(example_ids)  # integer arrays: checked as a whole, not per item
        if fast.shape == (batch,) and (fast.size == 0 or (
                int(fast.min()) >= 0 and int(fast.max()) <= 2**63 - 1)) and \
                np.unique(fast).size == fast.size:
            return fast.astype(np.int64)
    ids = np.asarray(example_ids.tolist() if hasattr(example_ids, "tolist") else example_ids,
                     dtype=object)
    if ids.shape != (batch,):
        raise ValueError(f"{where}: example_ids must have shape ({batch},) (one id per row), "
                         f"got {ids.shape}")
    values = [check_int(where, "example_ids[...]", v, minimum=0, maximum=2**63 - 1,
                        rule="an int >= 0")
              for v in ids.tolist()]
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: example_ids must be distinct (two rows with the same id "
                         f"would get the same mask), got {values}")
    return np.asarray(values, dtype=np.int64)


def threshold(rate: float) -> int:
    """``round(rate * 2**32)`` exactly (``rate * 2**32`` is exact in float64): word < it."""
    return math.floor(rate * _WORD_SPAN + 0.5)


# --------------------------------------------------------------------------- words


class Words:
    """The stream words of one masking call, moved to the namespace/device of ``input_ids``."""

    def __init__(self, where: str, xp, like, seed, epoch, static_copies, example_ids):
        self.where, self.xp, self.device = where, xp, array_api_compat.device(like)
        self.seed = seed
        self.epoch = masking_epoch(where, epoch, static_copies)
        self.example_ids = example_ids

    def __call__(self, purpose: str, n_words: int):
        """int64 (B, n_words) in [0, 2**32)."""
        words = stream_words(self.where, self.seed, purpose, self.epoch, self.example_ids,
                             n_words)
        return self.xp.asarray(words.astype(np.int64), device=self.device)


def arange_like(xp, n: int, like):
    return xp.arange(n, dtype=xp.int64, device=array_api_compat.device(like))


def take_rows(xp, table, index):
    """``table[b, index[b, t]]`` for (B, N) table and (B, T) int64 index in [0, N)."""
    return xp.take_along_axis(table, index, axis=1)


# --------------------------------------------------------------------------- eligibility


def eligibility(where: str, xp, input_ids, special_ids: tuple, pad_id: int | None, *,
                specials_eligible: bool, padding_eligible: bool):
    """bool (B, T): ``not (id in special_ids and not specials_eligible) and
    not (id == pad_id and not padding_eligible)`` (the switches must be bools)."""
    specials_eligible = check_flag(where, "specials_eligible", specials_eligible)
    padding_eligible = check_flag(where, "padding_eligible", padding_eligible)
    eligible = xp.ones(input_ids.shape, dtype=xp.bool, device=array_api_compat.device(input_ids))
    if not specials_eligible:
        for special in special_ids:
            eligible = eligible & (input_ids != special)
    if pad_id is not None and not padding_eligible:
        eligible = eligible & (input_ids != pad_id)
    return eligible


def unit_starts(xp, eligible, unit_ids=None):
    """bool (B, T): token t starts a unit.

    Without ``unit_ids`` every eligible token is its own unit. With (B, T) ``unit_ids`` (word
    ids), an eligible token starts a unit iff ``t == 0``, or token ``t-1`` is not eligible, or
    ``unit_ids[t] != unit_ids[t-1]``: a unit is a maximal run of eligible tokens with one id.
    """
    if unit_ids is None:
        return eligible
    previous_same = xp.concat([xp.zeros_like(eligible[:, :1]),
                               (unit_ids[:, 1:] == unit_ids[:, :-1]) & eligible[:, :-1]], axis=1)
    return eligible & ~previous_same


def unit_of_token(xp, starts, eligible):
    """int64 (B, T): position of the start of token t's unit; -1 for ineligible tokens.

    The k-th start (in position order) is found by sorting ``where(start, t, T)``; token t
    belongs to start number ``cumsum(start)[t] - 1``.
    """
    length = starts.shape[1]
    positions = arange_like(xp, length, starts)[None, :]
    sorted_starts = xp.sort(xp.where(starts, positions, length), axis=1)
    ordinal = xp.cumulative_sum(xp.astype(starts, xp.int64), axis=1) - 1
    start = take_rows(xp, sorted_starts, xp.clip(ordinal, 0, max(length - 1, 0)))
    return xp.where(eligible & (ordinal >= 0), start, -1)


def exact_count(xp, rate: float, n_units):
    """``floor(fl(rate * n) + 1/2)`` per row (float64 product, then round half up)."""
    product = xp.astype(n_units, xp.float64) * rate
    return xp.astype(xp.floor(product + 0.5), xp.int64)


def smallest_k(xp, candidate, words, k):
    """bool (B, N): the ``k[b]`` candidates with the smallest keys ``words * N + n``.

    Keys are distinct, so exactly ``min(k, #candidates)`` entries are chosen, uniformly at
    random among the ``C(#candidates, k)`` subsets (up to the 2**-32 granularity of words).
    """
    n = candidate.shape[1]
    if n == 0:  # no candidates (T = 0): nothing to choose, and no k-th key to look up
        return candidate
    index = arange_like(xp, n, candidate)[None, :]
    keys = xp.where(candidate, words * n + index, _WORD_SPAN * n + index)
    ordered = xp.sort(keys, axis=1)
    kth = take_rows(xp, ordered, xp.clip(k - 1, 0, max(n - 1, 0))[:, None])
    return candidate & (keys <= kth) & (k[:, None] >= 1)


def select_units(xp, starts, words, rate: float, rule: str):
    """bool (B, T) at unit starts: which units are selected (words: (B, T) int64)."""
    if rule == "bernoulli":
        return starts & (words < threshold(rate))
    n_units = xp.sum(xp.astype(starts, xp.int64), axis=1)
    return smallest_k(xp, starts, words, exact_count(xp, rate, n_units))


def spread_to_tokens(xp, unit_selected, unit_start):
    """bool (B, T): token t is selected iff its unit (start ``unit_start[t] >= 0``) is."""
    index = xp.clip(unit_start, 0, None)
    return take_rows(xp, unit_selected, index) & (unit_start >= 0)
