"""The mask value type, its block classification and the boolean combinators.

A mask answers ``keep(b, h, i, j) -> bool`` (True = query i of batch b, head h may attend key
j). Every mask is an immutable value with three faces:

* ``keep`` -- vectorised over broadcastable integer index grids, in any array-API namespace;
* ``materialize`` -- the dense bool array of shape (B, H, Tq, Tk);
* ``classify`` -- EMPTY / PARTIAL / FULL for index rectangles, computed analytically for
  structured masks so that a 128k x 128k mask is never materialised to find its empty tiles.

Classification codes are ordered EMPTY < PARTIAL < FULL, which makes the combinators exact
one-liners on codes: ``a & b`` is ``min``, ``a | b`` is ``max`` and ``~a`` is ``2 - code``.
For a primitive, ``classify`` is exact. For a combination it is *sound*: EMPTY and FULL are
only reported when they hold, but a combination whose parts are PARTIAL may itself be uniform
(``causal & ~causal`` is empty everywhere) and is then reported PARTIAL, which costs a tile
evaluation but never a wrong answer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from functools import reduce

import array_api_compat
import array_api_compat.numpy
import numpy as np

from .._validate import check_index_array, check_int, check_rows


class Block(IntEnum):
    """Classification of an index rectangle: no pair kept, some kept, or all kept."""

    EMPTY = 0
    PARTIAL = 1
    FULL = 2


class Grid:
    """Evaluation context of ``keep``: the namespace, device and sequence lengths.

    It also turns the per-batch tables that masks store as tuples into arrays of the target
    namespace and gathers them at batch indices.
    """

    __slots__ = ("xp", "device", "q_len", "k_len")

    def __init__(self, xp, device, q_len: int, k_len: int):
        self.xp = xp
        self.device = device
        self.q_len = q_len
        self.k_len = k_len

    def gather(self, table, b):
        """``table[b]`` for a 1-D per-batch table; a length-1 table is shared by every batch."""
        values = np.asarray(table, dtype=np.int64)
        if values.shape[0] == 1:
            return int(values[0])
        xp = self.xp
        column = xp.asarray(values, device=self.device)
        index = b + xp.zeros_like(b)
        return xp.reshape(xp.take(column, xp.reshape(index, (-1,)), axis=0), index.shape)

    def gather_rows(self, table, b, t):
        """``table[b, t]`` for a 2-D (B, T) table; a single-row table is shared by every batch."""
        values = np.asarray(table, dtype=np.int64)
        xp = self.xp
        flat = xp.asarray(values.reshape(-1), device=self.device)
        width = values.shape[1]
        rows = b if values.shape[0] > 1 else b * 0
        index = rows * width + t
        return xp.reshape(xp.take(flat, xp.reshape(index, (-1,)), axis=0), index.shape)

    def ones(self, *like):
        """A True array with the broadcast shape of the index arrays ``like``."""
        total = like[0]
        for part in like[1:]:
            total = total + part
        return self.xp.ones_like(total, dtype=self.xp.bool)


class Mask:
    """Base class of every mask. Subclasses are frozen dataclasses that implement:

    * ``_keep(grid, b, h, i, j)`` -> bool array (array-API, broadcast of the index grids);
    * ``_classify(b, h, q0, q1, k0, k1, q_len, k_len)`` -> NumPy Block codes, vectorised over
      broadcastable NumPy integer arrays; rectangles are ``[q0, q1) x [k0, k1)`` (half-open);
    * ``_params()`` -> the JSON-able constructor arguments;
    * ``kind`` -- the constructor name used in JSON and ``repr``.
    """

    kind: str = "mask"

    # -- size bookkeeping -------------------------------------------------------------------
    @property
    def batch_size(self) -> int | None:
        """Number of batches this mask is defined for, or None when it holds for any batch."""
        return None

    @property
    def num_heads(self) -> int | None:
        """Number of (query) heads this mask is defined for, or None for any head count."""
        return None

    # -- public API -------------------------------------------------------------------------
    def keep(self, b, h, i, j, *, q_len: int, k_len: int, validate: bool = True):
        """Vectorised predicate: True where query i of batch b, head h attends key j.

        b, h, i, j: integer arrays (or ints) broadcastable to a common shape, all in one
        array-API namespace; the result is a bool array of that shape. ``q_len``/``k_len``
        are Tq and Tk (needed by bottom-right alignment and left padding).
        validate: check that every index is in range (default True). Pass False only where
        the values cannot be read, e.g. inside ``torch.vmap`` (FlexAttention's mask_mod) or
        ``jax.jit``; out-of-range indices then give unspecified results.
        """
        q_len = check_int(self.kind, "q_len", q_len, minimum=0)
        k_len = check_int(self.kind, "k_len", k_len, minimum=0)
        b, h, i, j = (check_index_array(f"{self.kind}.keep", name, x)
                      for name, x in (("b", b), ("h", h), ("i", i), ("j", j)))
        if validate:
            self.check_lengths(q_len, k_len)
        arrays = [x for x in (b, h, i, j) if not isinstance(x, (int, np.integer))]
        xp = array_api_compat.array_namespace(*arrays) if arrays else array_api_compat.numpy
        device = array_api_compat.device(arrays[0]) if arrays else None
        b, h, i, j = (xp.asarray(x, dtype=xp.int64, device=device) for x in (b, h, i, j))
        if validate:
            _check_index_range(self.kind, xp, "i", i, q_len)
            _check_index_range(self.kind, xp, "j", j, k_len)
            if self.batch_size is not None:
                _check_index_range(self.kind, xp, "b", b, self.batch_size)
            if self.num_heads is not None:
                _check_index_range(self.kind, xp, "h", h, self.num_heads)
        shape = np.broadcast_shapes(*(tuple(x.shape) for x in (b, h, i, j)))
        result = self._keep(Grid(xp, device, q_len, k_len), b, h, i, j)
        return xp.broadcast_to(result, shape)

    def materialize(self, batch: int, heads: int, q_len: int, k_len: int, *, xp=None,
                    device=None, rows=None):
        """Dense keep array of shape (B, H, Tq, Tk), dtype bool, True = attend.

        batch, heads: B and H; must match the mask's own batch_size/num_heads when it has them.
        xp: array namespace of the result (default NumPy); device: its device (default the
        namespace's default device). rows: None (every query) or ``(start, stop)`` with
        ``0 <= start <= stop <= q_len``: only query rows [start, stop) of the (B, H, Tq, Tk)
        array, shape (B, H, stop - start, Tk) (positions still from the full Tq, Tk: the
        exact attention path materialises a long mask one query block at a time).
        """
        batch = check_int(self.kind, "batch", batch, minimum=1)
        heads = check_int(self.kind, "heads", heads, minimum=1)
        q_len = check_int(self.kind, "q_len", q_len, minimum=0)
        k_len = check_int(self.kind, "k_len", k_len, minimum=0)
        start, stop = (0, q_len) if rows is None else check_rows(self.kind, rows, q_len)
        self.check(batch, heads, q_len, k_len)
        xp = array_api_compat.numpy if xp is None else array_api_compat.array_namespace(
            xp.asarray(0)
        )
        grid = Grid(xp, device, q_len, k_len)
        b = xp.reshape(xp.arange(batch, dtype=xp.int64, device=device), (batch, 1, 1, 1))
        h = xp.reshape(xp.arange(heads, dtype=xp.int64, device=device), (1, heads, 1, 1))
        i = xp.reshape(xp.arange(start, stop, dtype=xp.int64, device=device),
                       (1, 1, stop - start, 1))
        j = xp.reshape(xp.arange(k_len, dtype=xp.int64, device=device), (1, 1, 1, k_len))
        return xp.broadcast_to(self._keep(grid, b, h, i, j),
                               (batch, heads, stop - start, k_len))

    def classify(self, q_start, q_stop, k_start, k_stop, *, q_len: int, k_len: int,
                 batch=None, head=None):
        """Classify the index rectangles ``[q_start, q_stop) x [k_start, k_stop)``.

        All four bounds may be ints or broadcastable NumPy integer arrays (one rectangle per
        element). batch/head: an index, an array of indices, or None for "every batch/head the
        mask is defined for" (EMPTY or FULL only if it holds for all of them). Returns a
        :class:`Block` for scalar input, else an int8 array of Block codes.
        """
        q_len = check_int(self.kind, "q_len", q_len, minimum=0)
        k_len = check_int(self.kind, "k_len", k_len, minimum=0)
        q0, q1, k0, k1 = (np.asarray(check_index_array(f"{self.kind}.classify", name, x),
                                     dtype=np.int64)
                          for name, x in (("q_start", q_start), ("q_stop", q_stop),
                                          ("k_start", k_start), ("k_stop", k_stop)))
        self.check_lengths(q_len, k_len)
        scalar = all(x.ndim == 0 for x in (q0, q1, k0, k1)) and np.ndim(batch) == 0 and (
            np.ndim(head) == 0
        )
        if np.any((q0 < 0) | (q1 > q_len) | (q0 >= q1)):
            raise ValueError(
                f"{self.kind}.classify: query range must satisfy 0 <= q_start < q_stop <= q_len "
                f"= {q_len}"
            )
        if np.any((k0 < 0) | (k1 > k_len) | (k0 >= k1)):
            raise ValueError(
                f"{self.kind}.classify: key range must satisfy 0 <= k_start < k_stop <= k_len "
                f"= {k_len}"
            )
        rect_ndim = max(x.ndim for x in (q0, q1, k0, k1, np.asarray(batch), np.asarray(head)))
        b = _selection(self.kind, "batch", batch, self.batch_size, 0, rect_ndim)
        h = _selection(self.kind, "head", head, self.num_heads, 1, rect_ndim)
        # Layout (selected batches, selected heads, *rectangles); the first two are aggregated.
        q0, q1, k0, k1 = (x.reshape((1, 1) + (1,) * (rect_ndim - x.ndim) + x.shape)
                          for x in (q0, q1, k0, k1))
        codes = np.asarray(self._classify(b, h, q0, q1, k0, k1, q_len, k_len), dtype=np.int8)
        codes = np.broadcast_to(codes, np.broadcast_shapes(codes.shape, b.shape, h.shape,
                                                           q0.shape, q1.shape, k0.shape,
                                                           k1.shape))
        codes = _aggregate(codes, axis=(0, 1))
        return Block(int(codes)) if scalar else codes

    def check(self, batch: int, heads: int, q_len: int, k_len: int) -> None:
        """Raise ValueError unless the mask can be evaluated on scores of shape
        (B, H, Tq, Tk) = (batch, heads, q_len, k_len): its own batch size and head count, and
        every stored length, id row and array axis against Tq and Tk (docs/spec.md section 4).

        ``materialize``, ``keep`` and ``classify`` run these checks; the fast path of
        :func:`refmask.attention.attention` calls this before classifying any tile, so both
        paths refuse the same masks.
        """
        self._check_sizes(batch, heads)
        self.check_lengths(q_len, k_len)

    def check_lengths(self, q_len: int, k_len: int) -> None:
        """Raise ValueError unless the mask's stored tables fit Tq = q_len, Tk = k_len.

        The base rule walks the dataclass fields: parts that are masks are checked
        recursively and an alignment checks its valid lengths (``offset_table``); subclasses
        holding per-position data (segment ids, keep arrays, padding lengths) add their own
        rule and call this one.
        """
        for field in dataclasses.fields(self) if dataclasses.is_dataclass(self) else ():
            value = getattr(self, field.name)
            for part in value if isinstance(value, tuple) else (value,):
                if isinstance(part, Mask):
                    part.check_lengths(q_len, k_len)
                elif hasattr(part, "offset_table"):
                    part.offset_table(q_len, k_len)

    # -- algebra ----------------------------------------------------------------------------
    def __and__(self, other: Mask) -> Mask:
        return And((self, _as_mask(other, "&")))

    def __or__(self, other: Mask) -> Mask:
        return Or((self, _as_mask(other, "|")))

    def __invert__(self) -> Mask:
        return Not(self)

    # -- serialisation ----------------------------------------------------------------------
    def to_json(self) -> dict:
        """A JSON-able ``{"kind": ..., **params}``; :func:`refmask.masks.from_json` inverts it."""
        return {"kind": self.kind, **self._params()}

    def __repr__(self) -> str:
        params = self._params()
        if "align" in params:
            params["align"] = self.align  # Alignment's repr is the constructor argument
        args = ", ".join(f"{name}={value!r}" for name, value in params.items())
        return f"{self.kind}({args})"

    # -- helpers for subclasses ---------------------------------------------------------------
    def _check_sizes(self, batch: int, heads: int) -> None:
        if self.batch_size is not None and self.batch_size != batch:
            raise ValueError(
                f"{self.kind}: the mask is defined for batch size {self.batch_size}, "
                f"but batch={batch} was requested"
            )
        if self.num_heads is not None and self.num_heads != heads:
            raise ValueError(
                f"{self.kind}: the mask is defined for {self.num_heads} heads, "
                f"but heads={heads} was requested"
            )

    def _params(self) -> dict:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _keep(self, grid: Grid, b, h, i, j):  # pragma: no cover
        raise NotImplementedError

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):  # pragma: no cover
        raise NotImplementedError


def _as_mask(other, op: str) -> Mask:
    if not isinstance(other, Mask):
        raise TypeError(f"mask {op} other: other must be a refmask Mask, got "
                        f"{type(other).__name__}")
    return other


def _check_index_range(where: str, xp, name: str, index, size: int) -> None:
    """Raise unless every entry of ``index`` lies in ``[0, size)``."""
    if index.shape and 0 in tuple(index.shape):
        return
    low = int(xp.min(index))
    high = int(xp.max(index))
    if low < 0 or high >= size:
        raise ValueError(f"{where}.keep: {name} must lie in [0, {size}), got values in "
                         f"[{low}, {high}]")


def _selection(where: str, name: str, value, size: int | None, axis: int,
               rect_ndim: int) -> np.ndarray:
    """Batch or head indices laid out for broadcasting against (sel_b, sel_h, *rect_shape).

    None means every index the mask is defined for (just index 0 for a size-free mask) on the
    aggregation axis ``axis``; explicit indices broadcast against the rectangles instead.
    """
    if value is None:
        count = size if size is not None else 1
        shape = [1, 1] + [1] * rect_ndim
        shape[axis] = count
        return np.arange(count, dtype=np.int64).reshape(shape)
    index = np.asarray(value)
    if index.dtype == np.bool_ or not np.issubdtype(index.dtype, np.integer):
        raise TypeError(f"{where}.classify: {name} must be an int index, got {value!r}")
    if size is not None and np.any((index < 0) | (index >= size)):
        raise ValueError(f"{where}.classify: {name} must lie in [0, {size}), got {value!r}")
    return index.astype(np.int64).reshape((1, 1) + (1,) * (rect_ndim - index.ndim) + index.shape)


def _aggregate(codes: np.ndarray, axis) -> np.ndarray:
    """EMPTY (FULL) where every code along ``axis`` is EMPTY (FULL), PARTIAL elsewhere."""
    lowest = codes.min(axis=axis)
    highest = codes.max(axis=axis)
    return np.where(highest == Block.EMPTY, Block.EMPTY,
                    np.where(lowest == Block.FULL, Block.FULL, Block.PARTIAL)).astype(np.int8)


def table_at(table, b) -> np.ndarray:
    """NumPy ``table[b]`` for a per-batch tuple; a length-1 table is shared by every batch."""
    values = np.asarray(table, dtype=np.int64)
    return values[b] if values.shape[0] > 1 else values[np.zeros_like(b)]


def common_batch_size(where: str, **sizes) -> int | None:
    """The one batch size among ``sizes`` (None entries ignored); differing sizes are an error."""
    known = {name: size for name, size in sizes.items() if size is not None}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{name} has {size}" for name, size in known.items())
        raise ValueError(f"{where}: mismatched batch sizes ({listed}); give one entry per batch "
                         "everywhere, or a single entry shared by all batches")
    return next(iter(known.values()), None)


def classify_by_evaluation(mask: Mask, b, h, q0, q1, k0, k1, q_len: int, k_len: int):
    """Exact classification by evaluating ``keep`` on each rectangle (for data-defined masks)."""
    shape = np.broadcast_shapes(b.shape, h.shape, q0.shape, q1.shape, k0.shape, k1.shape)
    codes = np.empty(shape, dtype=np.int8)
    grid = Grid(array_api_compat.numpy, None, q_len, k_len)
    arrays = [np.broadcast_to(x, shape) for x in (b, h, q0, q1, k0, k1)]
    for index in np.ndindex(shape):
        bb, hh, qa, qb, ka, kb = (int(x[index]) for x in arrays)
        block = np.broadcast_to(
            mask._keep(grid, np.asarray(bb), np.asarray(hh), np.arange(qa, qb)[:, None],
                       np.arange(ka, kb)[None, :]),
            (qb - qa, kb - ka),
        )
        codes[index] = Block.FULL if block.all() else Block.PARTIAL if block.any() else Block.EMPTY
    return codes


# --- the algebra: a & b, a | b, ~a (pictures and the public combinators in combine.py) ----

def _common_heads(masks) -> int | None:
    heads = {m.num_heads for m in masks if m.num_heads is not None}
    if len(heads) > 1:
        raise ValueError(f"mask combination: mismatched head counts {sorted(heads)}")
    return next(iter(heads), None)


@dataclass(frozen=True, repr=False)
class _Nary(Mask):
    masks: tuple

    def __post_init__(self):
        flat = []
        for mask in self.masks:
            flat.extend(mask.masks if type(mask) is type(self) else (mask,))
        object.__setattr__(self, "masks", tuple(flat))
        self.batch_size  # noqa: B018 - validates now, not at first use
        _common_heads(self.masks)

    @property
    def batch_size(self) -> int | None:
        return common_batch_size(self.kind, **{f"masks[{n}] ({m.kind})": m.batch_size
                                               for n, m in enumerate(self.masks)})

    @property
    def num_heads(self) -> int | None:
        return _common_heads(self.masks)

    def _params(self) -> dict:
        return {"masks": [m.to_json() for m in self.masks]}

    def __repr__(self) -> str:
        return "(" + f" {self.symbol} ".join(repr(m) for m in self.masks) + ")"


@dataclass(frozen=True, repr=False)
class And(_Nary):
    """keep iff every part keeps."""

    kind = "and"
    symbol = "&"

    def _keep(self, grid, b, h, i, j):
        return reduce(lambda x, y: x & y, (m._keep(grid, b, h, i, j) for m in self.masks))

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return reduce(np.minimum, (m._classify(b, h, q0, q1, k0, k1, q_len, k_len)
                                   for m in self.masks))


@dataclass(frozen=True, repr=False)
class Or(_Nary):
    """keep iff some part keeps."""

    kind = "or"
    symbol = "|"

    def _keep(self, grid, b, h, i, j):
        return reduce(lambda x, y: x | y, (m._keep(grid, b, h, i, j) for m in self.masks))

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return reduce(np.maximum, (m._classify(b, h, q0, q1, k0, k1, q_len, k_len)
                                   for m in self.masks))


@dataclass(frozen=True, repr=False)
class Not(Mask):
    """keep iff the inner mask drops."""

    mask: Mask
    kind = "not"

    @property
    def batch_size(self) -> int | None:
        return self.mask.batch_size

    @property
    def num_heads(self) -> int | None:
        return self.mask.num_heads

    def __invert__(self) -> Mask:
        return self.mask

    def _keep(self, grid, b, h, i, j):
        return ~self.mask._keep(grid, b, h, i, j)

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return Block.FULL - np.asarray(self.mask._classify(b, h, q0, q1, k0, k1, q_len, k_len))

    def _params(self) -> dict:
        return {"mask": self.mask.to_json()}

    def __repr__(self) -> str:
        return f"~{self.mask!r}"
