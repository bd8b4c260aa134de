"""Alignment: where query index i sits among the key positions.

Masks are defined on positions, not indices: key j has position ``pk = j`` and query i has
position ``pq = i + offset(b)``. The alignment is the choice of ``offset``:

* ``"top_left"``: ``offset = 0`` -- query 0 lines up with key 0 (PyTorch SDPA ``is_causal``,
  JAX, Flax, Keras, ONNX ``Attention`` without a KV cache).
* ``"bottom_right"``: ``offset = Tk_valid(b) - Tq_valid(b)`` -- the last query lines up with the
  last key (FlashAttention >= 2.1, xformers ``*FromBottomRight``, FlashInfer).
  ``Tk_valid``/``Tq_valid`` default to the full lengths ``Tk``/``Tq``; pass per-batch valid
  lengths with :func:`bottom_right` for right-padded batches.
* an int, or one int per batch: a KV cache of ``past`` tokens is ``offset = past`` (ONNX
  ``Attention`` with ``past_key``: offset = past length).

No mask picks an alignment for the caller: every position-dependent mask takes ``align=``
as a required keyword.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike

from .._typing import Array
from .._validate import check_int, check_int_vector
from ._base import Grid, table_at

_KINDS = ("top_left", "bottom_right", "offset")


@dataclass(frozen=True)
class Alignment:
    """An immutable alignment value; build it with :func:`as_alignment` or :func:`bottom_right`.

    kind: ``"top_left"``, ``"bottom_right"`` or ``"offset"``.
    offsets: for ``"offset"``, a tuple with one int (all batches) or one int per batch.
    q_lengths, k_lengths: for ``"bottom_right"``, optional per-batch valid lengths.
    """

    kind: str
    offsets: tuple = ()
    q_lengths: tuple | None = None
    k_lengths: tuple | None = None

    @property
    def batch_size(self) -> int | None:
        """The batch size the alignment is tied to, or None when it holds for any batch."""
        for table in (self.q_lengths, self.k_lengths):
            if table is not None:
                return len(table)
        if self.kind == "offset" and len(self.offsets) > 1:
            return len(self.offsets)
        return None

    def offset_table(self, q_len: int, k_len: int) -> np.ndarray:
        """Per-batch offsets as int64, shape (B,) or (1,) when batch-independent.

        Raises when a stored valid length exceeds the actual sequence length.
        """
        if self.kind == "top_left":
            return np.zeros(1, dtype=np.int64)
        if self.kind == "offset":
            return np.asarray(self.offsets, dtype=np.int64)
        q_valid = _valid_lengths(self.q_lengths, q_len, "q_lengths")
        k_valid = _valid_lengths(self.k_lengths, k_len, "k_lengths")
        return np.asarray(k_valid - q_valid, dtype=np.int64)

    def query_positions(self, grid: Grid, b: Array, i: Array) -> Array:
        """``pq = i + offset(b)`` as an array of the grid's namespace."""
        return i + grid.gather(self.offset_table(grid.q_len, grid.k_len), b)

    def query_position_bounds(self, b: Array, q_start: Array, q_stop: Array, q_len: int,
                              k_len: int) -> tuple[Array, Array]:
        """Smallest and largest query position of the index range ``[q_start, q_stop)``."""
        offset = table_at(self.offset_table(q_len, k_len), b)
        return q_start + offset, q_stop - 1 + offset

    def to_json(self) -> str | dict[str, Any]:
        if self.kind in ("top_left", "bottom_right") and self.q_lengths is None and (
            self.k_lengths is None
        ):
            return self.kind
        if self.kind == "offset":
            return {"offset": list(self.offsets)}
        return {
            "bottom_right": {
                "q_lengths": None if self.q_lengths is None else list(self.q_lengths),
                "k_lengths": None if self.k_lengths is None else list(self.k_lengths),
            }
        }

    def __repr__(self) -> str:
        if self.kind == "offset":
            value = self.offsets[0] if len(self.offsets) == 1 else list(self.offsets)
            return repr(value)
        if self.kind == "bottom_right" and (self.q_lengths or self.k_lengths):
            q = None if self.q_lengths is None else list(self.q_lengths)
            k = None if self.k_lengths is None else list(self.k_lengths)
            return f"bottom_right(q_lengths={q}, k_lengths={k})"
        return repr(self.kind)


AlignLike: TypeAlias = "str | int | Sequence[int] | Alignment | dict[str, Any]"
"""What ``align=`` accepts: ``"top_left"``, ``"bottom_right"``, an int offset, one int per
batch entry, an :class:`Alignment`, or its JSON form (see :func:`as_alignment`)."""


def _valid_lengths(table, full: int, name: str) -> np.ndarray:
    if table is None:
        return np.asarray([full], dtype=np.int64)
    lengths = np.asarray(table, dtype=np.int64)
    if lengths.size and lengths.max() > full:
        bad = int(np.argmax(lengths))
        raise ValueError(
            f"bottom_right: {name}[{bad}] = {int(lengths[bad])} exceeds the sequence length {full}"
        )
    return lengths


def bottom_right(q_lengths: ArrayLike | None = None,
                 k_lengths: ArrayLike | None = None) -> Alignment:
    """Bottom-right alignment with per-batch valid lengths: ``offset(b) = k_len[b] - q_len[b]``.

    Use it for right-padded batches, where the last *valid* query must line up with the last
    *valid* key. Either argument may be omitted, in which case the full length is used.
    """
    q = None if q_lengths is None else check_int_vector("bottom_right", "q_lengths", q_lengths,
                                                        minimum=0)
    k = None if k_lengths is None else check_int_vector("bottom_right", "k_lengths", k_lengths,
                                                        minimum=0)
    if q is not None and k is not None and len(q) != len(k):
        raise ValueError(
            f"bottom_right: q_lengths has {len(q)} entries but k_lengths has {len(k)}; "
            "both need one entry per batch"
        )
    return Alignment("bottom_right", (), q, k)


def as_alignment(align: AlignLike, where: str = "mask") -> Alignment:
    """Parse ``align``: ``"top_left"``, ``"bottom_right"``, an int, a per-batch int sequence,
    an :class:`Alignment`, or its JSON form. Anything else is an error naming ``align``."""
    if isinstance(align, Alignment):
        return align
    if isinstance(align, str):
        if align in ("top_left", "bottom_right"):
            return Alignment(align)
        raise ValueError(
            f"{where}: align must be 'top_left', 'bottom_right', an int offset or one int per "
            f"batch, got {align!r}"
        )
    if isinstance(align, dict):
        if set(align) == {"offset"} and isinstance(align["offset"], list):
            return as_alignment(align["offset"], where)
        lengths = align.get("bottom_right")
        if set(align) == {"bottom_right"} and isinstance(lengths, dict) and set(lengths) <= {
                "q_lengths", "k_lengths"}:
            return bottom_right(**lengths)
        raise ValueError(f"{where}: align has unknown JSON form {align!r:.120}; expected "
                         "{'offset': [c, ...]} or {'bottom_right': {'q_lengths': [...] or null, "
                         "'k_lengths': [...] or null}}")
    if align is None:
        raise ValueError(
            f"{where}: align is required ('top_left', 'bottom_right' or an int offset); "
            "refmask never picks a causal alignment for you"
        )
    if isinstance(align, (list, tuple, np.ndarray)):
        offsets = check_int_vector(where, "align", align)
        if not offsets:
            raise ValueError(f"{where}: align must hold one offset per batch, got an empty list")
        return Alignment("offset", offsets)
    return Alignment("offset", (check_int(where, "align", align),))
