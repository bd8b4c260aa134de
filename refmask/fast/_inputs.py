"""Argument checking for the fast path, and the features it does not cover.

The fast path checks its arguments with the reference's own ``prepare`` (same rules, same
messages), except for the two arguments that ``prepare`` would expand to (B, Hq, Tq, Tk):
a refmask ``Mask`` (``prepare`` materialises it) and ``Alibi`` (``prepare`` builds its bias
array). Those are checked here without building anything: the mask is classified and
evaluated per tile, ALiBi is computed per tile from its slopes and offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import array_api_compat
import numpy as np

from ..attention._inputs import Inputs, prepare
from ..attention.alibi import Alibi
from ._blas import blas_unavailable
from ._tiles import MaskSource

#: Codes of the ALiBi convention passed to the Numba kernels.
NO_ALIBI, ALIBI_ABS, ALIBI_SIGNED = 0, 1, 2


class FastPathUnsupported(ValueError):
    """``path="fast"`` was asked for a call the fast path does not cover; the message names
    ``path`` and the feature (``path="auto"`` falls back to the exact path instead)."""


@dataclass(frozen=True, eq=False)
class FastInputs:
    """Checked inputs of the fast path.

    inp: the reference's Inputs record with ``keep`` = None or a bool array and
      ``alibi_bias`` = None (q, k, v already in (B, H, T, D) order).
    source: what decides keep (no mask, a Mask, or the bool array).
    alibi_slopes: (1 or B, Hq) float64; alibi_offsets: (1 or B,) int64 query offsets;
    alibi_kind: NO_ALIBI, ALIBI_ABS ("abs") or ALIBI_SIGNED ("signed").
    alibi_per_sequence: the ALiBi positions restart per packed sequence (``Alibi(layout=)``),
      which the kernels' ``i + offset - j`` does not cover.
    """

    inp: Inputs
    source: MaskSource
    alibi_slopes: np.ndarray
    alibi_offsets: np.ndarray
    alibi_kind: int
    alibi_per_sequence: bool = False


def is_mask_object(mask) -> bool:
    """A refmask Mask (or look-alike with ``materialize``), as opposed to a bool array."""
    return (mask is not None and not array_api_compat.is_array_api_obj(mask)
            and hasattr(mask, "materialize"))


def numpy_float64_reason(q, k, v) -> str | None:
    """Why q, k, v are not NumPy float64 arrays (None when they are)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, np.ndarray):
            return f"{name} of type {type(x).__name__} (the fast path takes NumPy arrays only)"
        if x.dtype != np.float64:
            return f"{name} of dtype {x.dtype} (the fast path computes in float64 only)"
    return None


def _check_alibi(where: str, alibi, batch: int, heads: int, q_len: int, k_len: int):
    """The checks of ``alibi_bias`` without the (B, H, Tq, Tk) array; returns
    (slopes (Bs, H), offsets (Bo,), kind)."""
    if alibi is None:
        return np.zeros((1, max(heads, 1))), np.zeros(1, dtype=np.int64), NO_ALIBI
    if not isinstance(alibi, Alibi):
        raise TypeError(
            f"{where}: alibi must be a refmask Alibi (Alibi(slopes, convention=..., "
            f"align=...)), got {type(alibi).__name__}"
        )
    if alibi.num_heads != heads:
        raise ValueError(
            f"{where}: alibi has slopes for {alibi.num_heads} heads but there are {heads} "
            "query heads"
        )
    if alibi.batch_size not in (None, batch):
        raise ValueError(
            f"{where}: alibi is defined per batch for {alibi.batch_size} batches (slopes or "
            f"align) but the batch size is {batch}"
        )
    offsets = np.ascontiguousarray(alibi.align.offset_table(q_len, k_len), dtype=np.int64)
    slopes = alibi.slopes if isinstance(alibi.slopes[0], tuple) else (alibi.slopes,)
    slopes = np.ascontiguousarray(np.asarray(slopes, dtype=np.float64).reshape(-1, heads))
    return slopes, offsets, ALIBI_ABS if alibi.convention == "abs" else ALIBI_SIGNED


def prepare_fast(where: str, q, k, v, *, mask, scale, softcap, bias, alibi, sinks, dropout_keep,
                 dropout_rate, empty_rows, layout) -> FastInputs:
    """Check every argument as :func:`refmask.attention.attention` does, building nothing of
    size Tq * Tk. Errors are those of the reference (same messages)."""
    mask_object = is_mask_object(mask)
    inp = prepare(where, q, k, v, mask=None if mask_object else mask, scale=scale,
                  softcap=softcap, bias=bias, alibi=None, sinks=sinks,
                  dropout_keep=dropout_keep, dropout_rate=dropout_rate,
                  empty_rows=empty_rows, layout=layout)
    if mask_object:
        check = getattr(mask, "check", None)  # a refmask Mask: the exact path's mask rules
        if check is not None:
            check(inp.batch, inp.q_heads, inp.q_len, inp.k_len)
        source = MaskSource("mask", mask)
    elif mask is not None:
        source = MaskSource("array", inp.keep)
    else:
        source = MaskSource("none")
    slopes, offsets, kind = _check_alibi(where, alibi, inp.batch, inp.q_heads, inp.q_len,
                                         inp.k_len)
    return FastInputs(inp=inp, source=source, alibi_slopes=slopes, alibi_offsets=offsets,
                      alibi_kind=kind,
                      alibi_per_sequence=getattr(alibi, "layout", None) is not None)


def unsupported_feature(fast: FastInputs, *, grads: bool, return_probs: bool = False
                        ) -> str | None:
    """The first feature of the call that the fast path does not implement (None if none).

    Forward: dropout, ``empty_rows="unmasked"``, ``return_probs``, masks without
    ``classify``/``keep``, ALiBi on per-sequence positions. Backward also: ``empty_rows``
    "nan", and a bias broadcast along some axis (its gradient is a reduction across tiles and
    heads).
    """
    reason = blas_unavailable()
    if reason:
        return reason
    inp = fast.inp
    if return_probs:
        return "return_probs=True (the (B, Hq, Tq, Tk) weights are what it never builds)"
    if inp.dropout_keep is not None:
        return "dropout (dropout_keep is a dense (B, Hq, Tq, Tk) pattern; use the exact path)"
    if fast.alibi_per_sequence:
        return ("ALiBi with per-sequence positions (Alibi(layout=...): the distance is a "
                "sequence table, not i + offset - j)")
    if inp.empty_rows == "unmasked":
        return ('empty_rows="unmasked" (an empty row needs the unmasked scores of every key, '
                "i.e. the tiles the mask lets it skip)")
    if fast.source.kind == "mask" and not (hasattr(fast.source.value, "classify")
                                           and hasattr(fast.source.value, "keep")):
        return (f"a mask of type {type(fast.source.value).__name__} without classify/keep "
                "(only materialize)")
    if grads and inp.empty_rows == "nan":
        return ('gradients under empty_rows="nan" (the NaN weights of an empty row reach '
                "dV of every key, including skipped tiles)")
    if grads and inp.bias is not None:
        full = (inp.batch, inp.q_heads, inp.q_len, inp.k_len)
        if tuple(inp.bias.shape) != full:
            return (f"gradients with a bias of shape {tuple(inp.bias.shape)} broadcast to "
                    f"{full} (dbias would be a reduction across tiles and heads; give the "
                    "bias in full shape)")
    return None
