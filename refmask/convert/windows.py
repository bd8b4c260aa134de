"""(i) Window tuples of the peers -> ``sliding_window`` masks, and back.

| peer | its parameter | refmask |
|---|---|---|
| FlashAttention | ``window_size=(left, right)``, -1 = unbounded | :func:`flash_window_to_mask` |
| HF / xformers / gpt-oss | W keys including self | :func:`hf_sliding_window` |
| attention-gym | ``q - kv <= w`` | :func:`attention_gym_sliding_window` |
| JAX | ``local_window_size`` | :func:`jax_local_window` |

FlashAttention aligns bottom-right; :func:`mask_to_flash_window` goes back from a mask or a
dense keep.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_bool_numpy, check_flag, check_int, check_int_pair
from ..masks import Mask, sliding_window
from ..masks.alignment import AlignLike
from ..masks.causal import Causal
from ..masks.full import Full
from ..masks.sliding_window import SlidingWindow

__all__ = [
    "flash_window_to_mask",
    "mask_to_flash_window",
    "hf_sliding_window",
    "attention_gym_sliding_window",
    "jax_local_window",
]


def flash_window_to_mask(window_size: tuple[int, int] = (-1, -1),
                         causal: bool = False) -> SlidingWindow:
    """FlashAttention ``window_size=(left, right)`` -> ``sliding_window(left, right,
    align="bottom_right")``.

    FlashAttention keeps keys ``[i + Tk - Tq - left, i + Tk - Tq + right]`` (inclusive); a
    negative bound is unbounded (None), and ``causal=True`` forces ``right = 0`` exactly as
    FlashAttention's ``if (is_causal) window_size_right = 0``. ``(-1, -1)`` is full attention.
    """
    where = "flash_window_to_mask"
    left, right = check_int_pair(where, "window_size", window_size)
    causal = check_flag(where, "causal", causal)
    return sliding_window(None if left < 0 else left, 0 if causal else (None if right < 0
                                                                           else right),
                          align="bottom_right")


def _check_bottom_right(where: str, mask, q_len, k_len) -> None:
    align = mask.align
    if align.kind == "bottom_right" and align.q_lengths is None and align.k_lengths is None:
        return
    if q_len is None or k_len is None:
        raise ValueError(f"{where}: mask {mask!r} is aligned {align!r}, not plainly bottom-right "
                         "as FlashAttention; pass q_len and k_len to check whether the two "
                         "coincide for those lengths")
    q_len = check_int(where, "q_len", q_len, minimum=0)
    k_len = check_int(where, "k_len", k_len, minimum=0)
    offsets = align.offset_table(q_len, k_len)
    if np.any(offsets != k_len - q_len):
        raise ValueError(f"{where}: mask {mask!r} has query offset(s) {offsets.tolist()}, but "
                         f"FlashAttention aligns bottom-right (offset Tk - Tq = {k_len - q_len} "
                         f"for q_len={q_len}, k_len={k_len}); e.g. top_left alignment with "
                         "Tq != Tk is not expressible as a window tuple")


def mask_to_flash_window(mask: Mask | ArrayLike, *, q_len: int | None = None,
                         k_len: int | None = None) -> tuple[int, int]:
    """A window mask or a dense keep -> FlashAttention ``window_size=(left, right)`` (-1 = inf).

    mask: a refmask ``full``, ``causal`` (-> ``(-1, 0)``) or ``sliding_window`` mask whose
    alignment is FlashAttention's bottom-right (``"bottom_right"``; or, given q_len and
    k_len, any alignment whose offset equals ``Tk - Tq``, e.g. ``top_left`` when Tq == Tk);
    other masks and alignments are errors naming the mask and why.

    Or a dense bool keep of shape (Tq, Tk): the unique canonical ``(left, right)`` with
    ``keep[i, j] == (-right <= i + Tk - Tq - j <= left)``, where a bound that does not cut the
    matrix is reported as -1 (so a causal square keep gives ``(-1, 0)``); if none exists,
    ValueError "no window tuple expresses this pattern".
    """
    where = "mask_to_flash_window"
    if isinstance(mask, Full):
        return (-1, -1)
    if isinstance(mask, (Causal, SlidingWindow)):
        left = None if isinstance(mask, Causal) else mask.left
        right = 0 if isinstance(mask, Causal) else mask.right
        if left is not None or right is not None:
            _check_bottom_right(where, mask, q_len, k_len)
        return (-1 if left is None else left, -1 if right is None else right)
    if isinstance(mask, Mask):
        raise ValueError(f"{where}: mask {mask!r} is a {mask.kind} mask; a FlashAttention window "
                         "tuple expresses only full, causal and sliding_window masks (pass its "
                         "dense keep array to test the pattern itself)")
    keep = check_bool_numpy(where, "mask", mask, min_ndim=2)
    if keep.ndim != 2:
        raise ValueError(f"{where}: a dense mask must have shape (Tq, Tk), got {keep.shape}")
    rows, cols = keep.shape
    if rows == 0 or cols == 0:
        return (-1, -1)
    # d = pq - pk under bottom-right alignment; every d in [d_min, d_max] occurs, 0 included.
    d_min, d_max = 1 - rows, cols - 1
    diagonal = (np.arange(rows)[:, None] + (cols - rows) - np.arange(cols)[None, :]) - d_min
    kept = np.bincount(diagonal.ravel(), weights=keep.ravel(), minlength=d_max - d_min + 1)
    total = np.bincount(diagonal.ravel(), minlength=d_max - d_min + 1)
    mixed = (kept > 0) & (kept < total)
    if mixed.any():
        d = int(np.argmax(mixed)) + d_min
        raise ValueError(f"{where}: no window tuple expresses this pattern: keep is not constant "
                         f"along the diagonal i + Tk - Tq - j = {d}")
    present = np.flatnonzero(kept > 0) + d_min
    if present.size == 0 or present[0] > 0 or present[-1] < 0 or (
            present.size != present[-1] - present[0] + 1):
        raise ValueError(f"{where}: no window tuple expresses this pattern: the kept diagonals "
                         f"{present.tolist()} (i + Tk - Tq - j) are not one run containing 0")
    low, high = int(present[0]), int(present[-1])
    return (-1 if high == d_max else high, -1 if low == d_min else -low)


def hf_sliding_window(window: int, *, align: AlignLike) -> SlidingWindow:
    """"W keys including self" -> ``sliding_window(W - 1, 0, align=align)``.

    HF masking_utils ``sliding_window_overlay(W)`` keeps ``kv > q - W`` (with causal), xformers
    ``LowerTriangularFromBottomRightLocalAttentionMask(W)`` and gpt-oss ``sliding_window`` the
    same W keys; HF aligns by cache position (``align=past`` or ``"top_left"``), xformers
    ``"bottom_right"``. Equals FlashAttention ``window_size=(W - 1, 0)``.
    """
    window = check_int("hf_sliding_window", "window", window, minimum=1)
    return sliding_window(window - 1, 0, align=align)


def attention_gym_sliding_window(window: int, *, align: AlignLike) -> SlidingWindow:
    """attention-gym ``generate_sliding_window(w)`` -> ``sliding_window(w, 0, align=align)``.

    attention-gym keeps ``q - kv <= w`` and causal ``kv <= q``: w + 1 keys including self,
    i.e. FlashAttention ``window_size=(w, 0)``.
    """
    window = check_int("attention_gym_sliding_window", "window", window, minimum=0)
    return sliding_window(window, 0, align=align)


def jax_local_window(local_window_size: int | tuple[int, int], *,
                     align: AlignLike) -> SlidingWindow:
    """JAX ``local_window_size`` -> ``sliding_window(left, right, align=align)``.

    ``jax.nn.dot_product_attention`` keeps ``q <= k + left`` and ``q >= k - right``, i.e.
    ``k in [q - left, q + right]``, on top-left positions (``align="top_left"`` reproduces
    JAX); an int w means ``(w, w)``. Negative values are errors (JAX has no "unbounded").
    """
    where = "jax_local_window"
    if isinstance(local_window_size, (numbers.Integral, np.integer)) and not isinstance(
            local_window_size, bool):
        left = right = check_int(where, "local_window_size", local_window_size, minimum=0)
    else:
        left, right = check_int_pair(where, "local_window_size", local_window_size)
        if left < 0 or right < 0:
            raise ValueError(f"{where}: local_window_size must be >= 0 on both sides, got "
                             f"{(left, right)}")
    return sliding_window(left, right, align=align)
