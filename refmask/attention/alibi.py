"""ALiBi: a linear bias on the query-key distance, one slope per query head.

    positions:  pq(b, i) = i + offset(b),  pk(j) = j       (offset from an explicit alignment)
    "abs":      bias[b, h, i, j] = -m_h * |pq - pk|        FlashAttention ``alibi_slopes``
    "signed":   bias[b, h, i, j] =  m_h * (pk - pq)        attention-gym / FlexAttention score_mod

Under any mask that keeps only ``pk <= pq`` (causal) the two conventions are equal entry by
entry; without a causal mask they differ. The slopes ``m_h`` are Press et al.'s (see
:func:`alibi_slopes`) unless given explicitly, and may differ per batch (FlashAttention accepts
``(nheads,)`` or ``(batch, nheads)``).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from .._typing import Array, Device, DType, Namespace
from .._validate import check_choice, check_int, check_rows
from ..masks.alignment import Alignment, as_alignment
from ..masks.varlen import SequenceLayout, sequence_distance

ALIBI_CONVENTIONS = ("abs", "signed")


def alibi_slopes(num_heads: int) -> tuple[float, ...]:
    """Press et al. ALiBi slopes for ``H = num_heads`` heads (head 0 has the steepest slope).

    With ``c = 2 ** floor(log2 H)`` (the largest power of two <= H):

        m_h = 2 ** (-8 (h + 1) / c)                    for h < c
        m_h = 2 ** (-8 (2 (h - c) + 1) / (2 c))        for c <= h < H

    i.e. the first ``c`` slopes of the power-of-two sequence for ``c`` heads, then every other
    slope (the odd powers) of the sequence for ``2c`` heads. This is the ``get_slopes`` of the
    ALiBi authors' code and HF BLOOM's ``build_alibi_tensor``; for 8 heads it gives
    1/2, 1/4, ..., 1/256. Each slope is the correctly rounded value of an exact power of two
    with a dyadic exponent (``2.0 ** x`` with ``x`` exact), not a product of rounded powers.
    """
    num_heads = check_int("alibi_slopes", "num_heads", num_heads, minimum=1)
    # bit_length gives floor(log2 H) exactly; math.log2 could round for huge H.
    c = 1 << (num_heads.bit_length() - 1)
    base = [2.0 ** (-8.0 * (h + 1) / c) for h in range(c)]
    extra = [2.0 ** (-8.0 * (2 * r + 1) / (2 * c)) for r in range(num_heads - c)]
    return tuple(base + extra)


def _as_slopes(slopes) -> tuple:
    """Normalise ``slopes``: an int H -> Press slopes; a 1-D (H,) or 2-D (B, H) real sequence
    -> a tuple (of tuples) of Python floats."""
    if isinstance(slopes, numbers.Integral) and not isinstance(slopes, (bool, np.bool_)):
        return alibi_slopes(int(slopes))
    try:
        array = np.asarray(slopes)
    except Exception as error:  # e.g. a GPU tensor: refmask wants plain numbers here
        raise TypeError(
            f"Alibi: slopes must be an int (number of heads) or a 1-D/2-D sequence of real "
            f"numbers, got {type(slopes).__name__}"
        ) from error
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"Alibi: slopes must hold real numbers, got dtype {array.dtype}")
    if array.ndim not in (1, 2) or array.shape[-1] == 0 or array.shape[0] == 0:
        raise ValueError(
            f"Alibi: slopes must have shape (H,) or (B, H) with H >= 1, got shape {array.shape}"
        )
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("Alibi: slopes must be finite")
    if array.ndim == 1:
        return tuple(float(x) for x in array)
    return tuple(tuple(float(x) for x in row) for row in array)


@dataclass(frozen=True, init=False)
class Alibi:
    """An immutable ALiBi specification; every choice is named, none is defaulted.

    Alibi(slopes, *, convention, align, layout=None)

    slopes: an int ``H`` (use :func:`alibi_slopes` for ``H`` heads), or explicit slopes of
      shape ``(H,)`` or ``(B, H)`` (one row per batch). ``H`` is the number of *query* heads.
    convention: ``"abs"`` -> ``-m_h * |pq - pk|`` (FlashAttention) or ``"signed"`` ->
      ``m_h * (pk - pq)`` (attention-gym / FlexAttention).
    align: the query positions ``pq = i + offset(b)``: ``"top_left"`` (offset 0),
      ``"bottom_right"`` (offset ``Tk - Tq``, FlashAttention), an int (a KV cache of that many
      past tokens), one int per batch, or an :class:`~refmask.masks.alignment.Alignment`.
      Use the same alignment as the mask: attention itself never shifts positions.
    layout: None, or a :class:`~refmask.masks.varlen.SequenceLayout` for positions that
      restart per packed sequence (FlashAttention varlen ``alibi_slopes``): ``pq`` and ``pk``
      are then sequence-local and ``align`` is resolved per sequence, exactly as inside
      :func:`~refmask.masks.varlen.varlen`; pairs of two different sequences get 0 (the mask
      drops them).
    """

    slopes: tuple
    convention: str
    align: Alignment
    layout: SequenceLayout | None

    def __init__(self, slopes, *, convention, align, layout=None):
        object.__setattr__(self, "slopes", _as_slopes(slopes))
        object.__setattr__(
            self, "convention", check_choice("Alibi", "convention", convention, ALIBI_CONVENTIONS)
        )
        object.__setattr__(self, "align", as_alignment(align, "Alibi"))
        if layout is not None and not isinstance(layout, SequenceLayout):
            raise TypeError(f"Alibi: layout must be None or a SequenceLayout, got "
                            f"{type(layout).__name__}")
        object.__setattr__(self, "layout", layout)
        if layout is not None:
            layout.per_sequence_alignment(self.align, "Alibi")  # validates align per sequence
        per_batch_slopes = len(self.slopes) if isinstance(self.slopes[0], tuple) else None
        if per_batch_slopes not in (None, 1) and self.align.batch_size not in (
            None, per_batch_slopes
        ):
            raise ValueError(
                f"Alibi: slopes are given for {per_batch_slopes} batches but align for "
                f"{self.align.batch_size}"
            )

    @property
    def num_heads(self) -> int:
        """H, the number of query heads the slopes are for."""
        return len(self.slopes[0]) if isinstance(self.slopes[0], tuple) else len(self.slopes)

    @property
    def batch_size(self) -> int | None:
        """B when the slopes or the alignment are per batch, else None (any batch size)."""
        if isinstance(self.slopes[0], tuple) and len(self.slopes) > 1:
            return len(self.slopes)
        return self.align.batch_size

    def query_minus_key(self, batch: int, q_len: int, k_len: int) -> np.ndarray:
        """``pq - pk`` as NumPy int64 of shape (B or 1, Tq, Tk): ``i + offset(b) - j``, or the
        sequence-local distance of ``layout`` (0 across sequences)."""
        if self.layout is not None:
            return sequence_distance(self.layout, self.align, batch, q_len, k_len)
        offsets = self.align.offset_table(q_len, k_len).astype(np.int64)
        return (np.arange(q_len)[None, :, None] + offsets[:, None, None]
                - np.arange(k_len)[None, None, :])

    def bias(self, batch: int, heads: int, q_len: int, k_len: int, *, xp: Namespace | None = None,
             dtype: DType | None = None,
             device: Device | None = None) -> Array:
        """The additive bias array of shape (B, H, Tq, Tk) = (batch, heads, q_len, k_len).

        xp: array namespace of the result (default NumPy); dtype: its floating dtype (default
        the namespace's float64); device: its device (default the namespace's default).
        The integer distance is exact; slope times distance is rounded once in ``dtype``.
        """
        if xp is None:
            import array_api_compat.numpy as xp
        if dtype is None:
            dtype = xp.float64
        return alibi_bias("Alibi.bias", "alibi", self, batch, heads, q_len, k_len, xp=xp,
                          dtype=dtype, device=device)


def alibi_bias(where: str, name: str, alibi: Alibi, batch: int, heads: int, q_len: int,
               k_len: int, *, xp: Namespace, dtype: DType, device: Device,
               rows: tuple[int, int] | None = None) -> Array:
    """``bias[b, h, i, j] = m[b, h] * dist(b, i, j)`` with ``dist = -|pq - pk|`` ("abs") or
    ``dist = pk - pq`` ("signed"), ``pq = i + offset(b)``, ``pk = j``; shape (B, H, Tq, Tk).

    where/name: the function and argument named in error messages. rows: None, or
    ``(start, stop)`` for query rows [start, stop) only (shape (B, H, stop - start, Tk)).
    """
    if not isinstance(alibi, Alibi):
        raise TypeError(
            f"{where}: {name} must be a refmask Alibi (Alibi(slopes, convention=..., "
            f"align=...)), got {type(alibi).__name__}"
        )
    batch = check_int(where, "batch", batch, minimum=0)
    heads = check_int(where, "heads", heads, minimum=1)
    if alibi.num_heads != heads:
        raise ValueError(
            f"{where}: {name} has slopes for {alibi.num_heads} heads but there are {heads} "
            "query heads"
        )
    if alibi.batch_size not in (None, batch):
        raise ValueError(
            f"{where}: {name} is defined per batch for {alibi.batch_size} batches (slopes or "
            f"align) but the batch size is {batch}"
        )
    slopes = alibi.slopes if isinstance(alibi.slopes[0], tuple) else (alibi.slopes,)

    start, stop = (0, q_len) if rows is None else check_rows(where, rows, q_len)
    if alibi.layout is not None:  # sequence-local positions (a (B | 1, Tq, Tk) table)
        pq_minus_pk = alibi.query_minus_key(batch, q_len, k_len)[:, start:stop]
        pq_minus_pk = xp.asarray(pq_minus_pk[:, None], device=device)
        distance = -xp.abs(pq_minus_pk) if alibi.convention == "abs" else -pq_minus_pk
    else:
        offsets = [int(x) for x in alibi.align.offset_table(q_len, k_len)]
        offset = xp.reshape(xp.asarray(offsets, device=device), (len(offsets), 1, 1, 1))
        pq = xp.reshape(xp.arange(start, stop, device=device), (1, 1, stop - start, 1)) + offset
        pk = xp.reshape(xp.arange(k_len, device=device), (1, 1, 1, k_len))
        distance = -xp.abs(pq - pk) if alibi.convention == "abs" else pk - pq
    slope = xp.reshape(xp.asarray(slopes, dtype=dtype, device=device), (len(slopes), heads, 1, 1))
    bias = slope * xp.astype(distance, dtype)
    return xp.broadcast_to(bias, (batch, heads, stop - start, k_len))

