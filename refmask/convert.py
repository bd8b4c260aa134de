"""Exact conversions between refmask masks and the peers' mask representations.

Every function is pure: arrays in, arrays (or masks) out, nothing cached. A conversion is
either exact -- the round trip gives back the same keep pattern bit for bit -- or it raises a
``ValueError`` naming the argument and the reason; nothing is rounded, guessed or clipped.

| representation | who uses it | refmask |
|---|---|---|
| dense bool keep (B, H, Tq, Tk), True = attend | SDPA, flex create_mask, JAX, Keras, ONNX | (a) |
| dense bool drop, True = NOT allowed | torch ``nn.MultiheadAttention`` | (b) |
| additive 0 / -inf | SDPA and ONNX float masks | (c) |
| additive finite: finfo.min, -1e9, -0.7 * finfo.max | HF eager, Flax; Keras; JAX xla | (c) |
| HF 2-D int padding mask (B, Tk), 1 = attend | transformers ``attention_mask`` | (d) |
| ``cu_seqlens`` / segment ids | FlashAttention varlen, xformers, JAX segment_ids | (e) |
| block mask (BCSR, partial + full blocks) | torch FlexAttention ``BlockMask`` | (f) |
| bit-packed keep, little bit order | FlashInfer ``packed_custom_mask`` | (g) |
| column intervals LTS/LTE/UTS/UTE | FlashMask ``startend_row_indices`` (Paddle) | (h) |
| window tuples | FlashAttention, HF/xformers/gpt-oss, attention-gym, JAX | (i) |

(a) ``Mask.materialize``, ``refmask.masks.explicit``.
(b) :func:`keep_to_drop`, :func:`drop_to_keep`.
(c) :func:`keep_to_additive` (``fill="-inf" | "finfo_min" | float``), :func:`additive_to_keep`
    (``threshold=`` for finite fills).
(d) :func:`hf_padding_to_mask`, :func:`mask_to_hf_padding`.
(e) :func:`cu_seqlens_to_segment_ids`, :func:`segment_ids_to_cu_seqlens`,
    :func:`documents_to_cu_seqlens`, :func:`documents_to_cu_seqlens_qk`.
(f) :class:`BlockMask`, :func:`to_block_mask`, :func:`block_mask_to_keep`.
(g) :func:`pack_flashinfer`, :func:`unpack_flashinfer`, :func:`pack_flashinfer_batch`,
    :func:`unpack_flashinfer_batch`; row-aligned variant :func:`pack_rows`, :func:`unpack_rows`.
(h) :func:`to_column_intervals`, :func:`from_column_intervals`, :func:`to_flashmask`,
    :func:`flashmask_to_keep`.
(i) :func:`flash_window_to_mask`, :func:`mask_to_flash_window` (FlashAttention ``window_size``);
    :func:`hf_sliding_window` (W keys including self); :func:`attention_gym_sliding_window`
    (``q - kv <= w``); :func:`jax_local_window` (``local_window_size``).

The dense polarity and additive helpers accept any array-API array (NumPy, torch, JAX,
``array_api_strict``) and return one of the same namespace; everything else is NumPy in and out.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import array_api_compat
import numpy as np

from ._validate import check_choice, check_int
from .masks import Block, Mask, explicit, key_padding, per_batch, sliding_window
from .masks.causal import Causal
from .masks.documents import Documents
from .masks.full import Full
from .masks.sliding_window import SlidingWindow

try:  # optional: bfloat16 (and the other ml_dtypes floats) for additive masks
    import ml_dtypes
except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
    ml_dtypes = None

__all__ = [
    "BlockMask",
    "additive_to_keep",
    "attention_gym_sliding_window",
    "block_mask_to_keep",
    "cu_seqlens_to_segment_ids",
    "documents_to_cu_seqlens",
    "documents_to_cu_seqlens_qk",
    "drop_to_keep",
    "flash_window_to_mask",
    "flashmask_to_keep",
    "from_column_intervals",
    "hf_padding_to_mask",
    "hf_sliding_window",
    "jax_local_window",
    "keep_to_additive",
    "keep_to_drop",
    "mask_to_flash_window",
    "mask_to_hf_padding",
    "pack_flashinfer",
    "pack_flashinfer_batch",
    "pack_rows",
    "segment_ids_to_cu_seqlens",
    "to_block_mask",
    "to_column_intervals",
    "to_flashmask",
    "unpack_flashinfer",
    "unpack_flashinfer_batch",
    "unpack_rows",
]


# -- shared helpers ---------------------------------------------------------------------------
def _array(x):
    """``(array, xp)``: xp is None for NumPy (lists and scalars become NumPy arrays)."""
    if isinstance(x, (np.ndarray, np.generic)) or not array_api_compat.is_array_api_obj(x):
        return np.asarray(x), None
    return x, array_api_compat.array_namespace(x)


def _require_bool(where: str, name: str, array, xp) -> None:
    is_bool = array.dtype == np.bool_ if xp is None else array.dtype == xp.bool
    if not is_bool:
        raise TypeError(f"{where}: {name} must be a bool array, got dtype {array.dtype}; "
                        "refmask never guesses the polarity of 0/1 or float masks")


def _bool_numpy(where: str, name: str, values, *, min_ndim: int = 1) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype != np.bool_:
        raise TypeError(f"{where}: {name} must be a bool array (True = attend), got dtype "
                        f"{array.dtype}")
    if array.ndim < min_ndim:
        raise ValueError(f"{where}: {name} must have at least {min_ndim} dims, got shape "
                         f"{array.shape}")
    return array


def _int_numpy(where: str, name: str, values, *, ndim: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == np.bool_ or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{where}: {name} must hold integers, got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{where}: {name} must be {ndim}-D, got shape {array.shape}")
    return array.astype(np.int64)


def _first(bad: np.ndarray) -> tuple:
    return tuple(int(v) for v in np.argwhere(bad)[0])


def _check_mask(where: str, mask) -> Mask:
    if not isinstance(mask, Mask):
        raise TypeError(f"{where}: mask must be a refmask Mask, got {type(mask).__name__}")
    return mask


def _check_mask_sizes(where: str, mask: Mask, batch: int, heads: int) -> None:
    if mask.batch_size is not None and mask.batch_size != batch:
        raise ValueError(f"{where}: mask is defined for batch size {mask.batch_size}, got "
                         f"batch={batch}")
    if mask.num_heads is not None and mask.num_heads != heads:
        raise ValueError(f"{where}: mask is defined for {mask.num_heads} heads, got "
                         f"heads={heads}")


# -- 1. keep <-> drop -------------------------------------------------------------------------
def keep_to_drop(keep):
    """Dense keep -> dense drop (``nn.MultiheadAttention`` polarity): ``drop = NOT keep``.

    keep: bool array of any shape, True = attend (any array-API namespace).
    Returns a bool array of the same shape and namespace, True = NOT allowed.
    """
    array, xp = _array(keep)
    _require_bool("keep_to_drop", "keep", array, xp)
    return np.logical_not(array) if xp is None else xp.logical_not(array)


def drop_to_keep(drop):
    """Dense drop (``nn.MultiheadAttention``, True = NOT allowed) -> keep: ``keep = NOT drop``."""
    array, xp = _array(drop)
    _require_bool("drop_to_keep", "drop", array, xp)
    return np.logical_not(array) if xp is None else xp.logical_not(array)


# -- 2. keep <-> additive ---------------------------------------------------------------------
def _numpy_float_dtype(where: str, name: str, dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"{where}: {name} must be a floating dtype, got {dtype!r}") from error
    if np.issubdtype(resolved, np.floating):
        return resolved
    if ml_dtypes is not None and resolved.kind == "V":
        try:
            ml_dtypes.finfo(resolved)
            return resolved
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{where}: {name} must be a floating dtype (float16, float32, float64 or "
                    f"ml_dtypes bfloat16), got {resolved}")


def _numpy_finfo(dtype: np.dtype):
    return np.finfo(dtype) if np.issubdtype(dtype, np.floating) else ml_dtypes.finfo(dtype)


def _fill_value(where: str, fill, dtype, finfo_min: float, cast) -> float:
    """The additive value for dropped pairs, checked to be negative and representable."""
    if isinstance(fill, str):
        if fill == "finfo_min":
            return float(finfo_min)
        if fill != "-inf":
            raise ValueError(f"{where}: fill must be '-inf', 'finfo_min' or a negative float, "
                             f"got {fill!r}")
        value = -math.inf
    elif isinstance(fill, (bool, np.bool_)) or not isinstance(fill, numbers.Real):
        raise TypeError(f"{where}: fill must be '-inf', 'finfo_min' or a negative float, got "
                        f"{fill!r} ({type(fill).__name__})")
    else:
        value = float(fill)
        if math.isnan(value) or value >= 0:
            raise ValueError(f"{where}: fill must be < 0 (a dropped key must lose score), got "
                             f"{fill!r}")
    stored = cast(value)
    if math.isinf(value) and not (math.isinf(stored) and stored < 0):
        raise ValueError(f"{where}: dtype {dtype} has no -inf (fill='-inf' becomes {stored}); "
                         "use fill='finfo_min'")
    if not math.isinf(value) and not math.isfinite(stored):
        raise ValueError(f"{where}: fill={fill!r} overflows {dtype} to {stored}; pass "
                         "fill='-inf' explicitly or a value >= finfo(dtype).min")
    return stored


def keep_to_additive(keep, dtype, fill="-inf"):
    """Dense keep -> additive mask: ``additive = 0 where keep else fill``.

    keep: bool array, True = attend (any array-API namespace).
    dtype: the floating result dtype -- float16/32/64 or ml_dtypes bfloat16 for NumPy input,
    a dtype of the input's namespace otherwise.
    fill: ``"-inf"`` (SDPA, ONNX), ``"finfo_min"`` = ``finfo(dtype).min`` (HF eager, Flax), or a
    negative float such as ``-1e9`` (Keras) or ``-0.7 * finfo(dtype).max`` (JAX xla). A fill
    that overflows the dtype to -inf (``-1e9`` in float16) is an error, not a silent -inf.
    """
    where = "keep_to_additive"
    array, xp = _array(keep)
    _require_bool(where, "keep", array, xp)
    if xp is None:
        resolved = _numpy_float_dtype(where, "dtype", dtype)

        def cast(value):
            with np.errstate(over="ignore"):
                return float(np.asarray(value, dtype=np.float64).astype(resolved))

        value = _fill_value(where, fill, resolved, _numpy_finfo(resolved).min, cast)
        out = np.full(array.shape, value, dtype=resolved)
        out[array] = 0
        return out
    if not xp.isdtype(dtype, "real floating"):
        raise TypeError(f"{where}: dtype must be a real floating dtype of the input's "
                        f"namespace, got {dtype!r}")
    device = array_api_compat.device(array)

    def cast(value):
        return float(xp.asarray(value, dtype=dtype, device=device))

    value = _fill_value(where, fill, dtype, xp.finfo(dtype).min, cast)
    return xp.where(array, xp.asarray(0, dtype=dtype, device=device),
                    xp.asarray(value, dtype=dtype, device=device))


def additive_to_keep(additive, *, threshold=None):
    """Additive mask -> dense keep.

    Without ``threshold`` (exact 0 / -inf masks): ``keep = (additive == 0)``, ``-inf`` is
    dropped, and any other finite value is an error -- "additive mask has finite non-zero
    entries, it is a bias not a mask" -- because a finite value changes the softmax instead
    of removing the key.

    With ``threshold`` (finite-fill masks): ``keep = (additive > threshold)``. The threshold
    must be < 0; pick one between the fill and the smallest genuine bias, e.g.
    ``finfo(dtype).min / 2`` for ``finfo.min`` masks (this also catches two summed ``finfo.min``
    masks, which are ``-inf`` or ``2 * finfo.min``), ``-1e8`` for Keras ``-1e9`` masks.

    NaN anywhere and ``+inf`` anywhere are errors (neither means "kept" or "dropped").
    additive: real floating array (any array-API namespace; ml_dtypes bfloat16 for NumPy).
    """
    where = "additive_to_keep"
    array, xp = _array(additive)
    if xp is None:
        _numpy_float_dtype(where, "additive", array.dtype)
        ops = np
    else:
        if not xp.isdtype(array.dtype, "real floating"):
            raise TypeError(f"{where}: additive must hold real floats, got dtype {array.dtype}")
        ops = xp

    def report(bad) -> str:
        if xp is None:
            index = _first(np.asarray(bad))
            return f" (e.g. {float(array[index])!r} at index {index})"
        return f" ({int(xp.sum(xp.astype(bad, xp.int64)))} entries)"

    nan = ops.isnan(array)
    if bool(ops.any(nan)):
        raise ValueError(f"{where}: additive holds NaN{report(nan)}; NaN is neither kept nor "
                         "dropped")
    posinf = ops.isinf(array) & (array > 0)
    if bool(ops.any(posinf)):
        raise ValueError(f"{where}: additive holds +inf{report(posinf)}, which is not a mask "
                         "value")
    if threshold is None:
        bias = ops.isfinite(array) & (array != 0)
        if bool(ops.any(bias)):
            raise ValueError(f"{where}: additive mask has finite non-zero entries{report(bias)}, "
                             "it is a bias not a mask; pass threshold= (e.g. finfo(dtype).min / "
                             "2) to treat values <= threshold as dropped")
        return array == 0
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"{where}: threshold must be a float < 0 or None, got {threshold!r}")
    if math.isnan(float(threshold)) or float(threshold) >= 0:
        raise ValueError(f"{where}: threshold must be < 0 (0 is the kept value), got "
                         f"{threshold!r}")
    return array > float(threshold)


# -- 3. HF 2-D padding mask -------------------------------------------------------------------
def hf_padding_to_mask(attention_mask) -> Mask:
    """HF 2-D ``attention_mask`` (B, Tk), 1 = attend, 0 = padding -> a refmask key mask.

    keep(b, h, i, j) = (attention_mask[b, j] == 1) for every query i and head h. The result:

    * ``key_padding(lengths, side="right")`` when every row is ``1^L 0^(Tk-L)``;
      rows with no padding (and all-zero rows) fit both sides, so an unpadded batch is
      reported as right-padded;
    * ``key_padding(lengths, side="left")`` when every row is ``0^(Tk-L) 1^L`` and some row
      is not right-padded;
    * ``per_batch(key_padding(L_b, side=s_b) ...)`` when each row is a contiguous run but the
      batch mixes left- and right-padded rows (one ``side`` cannot describe it);
    * ``explicit(attention_mask[:, None, None, :] == 1)`` of shape (B, 1, 1, Tk) when some
      row has holes (ones after zeros after ones) -- still exact, just not structured.

    attention_mask: bool or integer array of shape (B, Tk) holding only 0 and 1.
    """
    where = "hf_padding_to_mask"
    array = np.asarray(attention_mask)
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{where}: attention_mask must hold integers 0/1 (or bools), got dtype "
                        f"{array.dtype}")
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{where}: attention_mask must have shape (B, Tk) with B >= 1, got "
                         f"shape {array.shape}")
    bad = (array != 0) & (array != 1)
    if bad.any():
        index = _first(bad)
        raise ValueError(f"{where}: attention_mask must hold only 0 (padding) and 1 (attend), "
                         f"got {array[index]!r} at index {index}")
    ones = array == 1
    k_len = ones.shape[1]
    lengths = ones.sum(axis=1)
    keys = np.arange(k_len)[None, :]
    right = np.all(ones == (keys < lengths[:, None]), axis=1)
    left = np.all(ones == (keys >= k_len - lengths[:, None]), axis=1)
    if right.all():
        return key_padding(lengths, side="right")
    if left.all():
        return key_padding(lengths, side="left")
    if (right | left).all():
        return per_batch(*(key_padding(int(n), side="right" if r else "left")
                           for n, r in zip(lengths, right, strict=True)))
    return explicit(ones[:, None, None, :])


def mask_to_hf_padding(mask: Mask, batch: int, k_len: int, *, heads: int | None = None,
                       q_len: int | None = None) -> np.ndarray:
    """A pure key mask -> HF 2-D ``attention_mask``: ``out[b, j] = int(keep(b, 0, 0, j))``.

    The mask is materialised at (batch, heads, q_len, k_len) -- heads defaults to the mask's
    own head count or 1, q_len to max(k_len, 1) (self-attention) -- and must not depend on the
    query index or the head, since the HF 2-D form can only drop keys. Returns int64 (B, Tk).
    """
    where = "mask_to_hf_padding"
    mask = _check_mask(where, mask)
    batch = check_int(where, "batch", batch, minimum=1)
    k_len = check_int(where, "k_len", k_len, minimum=0)
    heads = (mask.num_heads or 1) if heads is None else check_int(where, "heads", heads,
                                                                  minimum=1)
    q_len = max(k_len, 1) if q_len is None else check_int(where, "q_len", q_len, minimum=1)
    _check_mask_sizes(where, mask, batch, heads)
    dense = np.asarray(mask.materialize(batch, heads, q_len, k_len))
    row = dense[:, :1, :1, :]
    differs = np.any(dense != row, axis=-1)
    if differs.any():
        b, h, i = _first(differs)
        raise ValueError(f"{where}: mask {mask!r} is not a pure key mask: the kept keys of "
                         f"batch {b} differ between (head 0, query 0) and (head {h}, query {i}); "
                         "an HF 2-D attention_mask can only drop keys")
    return row[:, 0, 0, :].astype(np.int64)


# -- 4. cu_seqlens / segment ids --------------------------------------------------------------
def cu_seqlens_to_segment_ids(cu_seqlens) -> np.ndarray:
    """FlashAttention varlen offsets -> segment id per packed token.

    ``segment_ids[t] = n  for  cu_seqlens[n] <= t < cu_seqlens[n+1]``; cu_seqlens: (N+1,)
    integers, starting at 0, non-decreasing. Returns int32 of shape (cu_seqlens[-1],).
    An empty sequence (equal neighbours) leaves its id unused, so the round trip through
    :func:`segment_ids_to_cu_seqlens` is exact only when every sequence is non-empty.
    """
    where = "cu_seqlens_to_segment_ids"
    offsets = _int_numpy(where, "cu_seqlens", cu_seqlens, ndim=1)
    if offsets.size == 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{where}: cu_seqlens must start at 0 and be non-decreasing (N+1 "
                         f"offsets), got {offsets.tolist()}")
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"{where}: cu_seqlens[-1] = {int(offsets[-1])} exceeds int32")
    return np.repeat(np.arange(offsets.size - 1, dtype=np.int32), np.diff(offsets))


def segment_ids_to_cu_seqlens(segment_ids) -> np.ndarray:
    """Segment id per packed token -> FlashAttention varlen offsets ``cu_seqlens``.

    ``cu_seqlens[n] = first t with segment_ids[t] == n`` and ``cu_seqlens[N] = T``. The ids must
    be contiguous runs of increasing ids ``0, 1, ..., N-1`` (each sequence one run, in order);
    anything else is an error naming ``segment_ids``. Returns int32 of shape (N+1,).
    """
    where = "segment_ids_to_cu_seqlens"
    ids = _int_numpy(where, "segment_ids", segment_ids, ndim=1)
    if ids.size == 0:
        return np.zeros(1, dtype=np.int32)
    if ids.size > np.iinfo(np.int32).max:
        raise ValueError(f"{where}: segment_ids has {ids.size} tokens, more than int32 holds")
    if ids[0] != 0:
        raise ValueError(f"{where}: segment_ids must be contiguous runs of increasing ids 0, 1, "
                         f"..., N-1, but the first id is {int(ids[0])}")
    steps = np.diff(ids)
    bad = (steps != 0) & (steps != 1)
    if bad.any():
        t = int(np.argmax(bad)) + 1
        raise ValueError(f"{where}: segment_ids must be contiguous runs of increasing ids 0, 1, "
                         f"..., N-1, got {int(ids[t])} after {int(ids[t - 1])} at position {t}")
    starts = np.flatnonzero(np.concatenate([[True], steps == 1]))
    return np.append(starts, ids.size).astype(np.int32)


def _runs(where: str, name: str, row: np.ndarray) -> list:
    """[(id, length)] of the maximal runs of ``row``; each id must form a single run."""
    if row.size == 0:
        return []
    starts = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))
    lengths = np.diff(np.append(starts, row.size))
    ids = row[starts]
    if len(set(ids.tolist())) != ids.size:
        seen, repeated = set(), None
        for value in ids.tolist():
            if value in seen:
                repeated = value
                break
            seen.add(value)
        raise ValueError(f"{where}: {name} holds document {repeated} in more than one run; "
                         "cu_seqlens needs each document to be one contiguous run")
    return list(zip(ids.tolist(), lengths.tolist(), strict=True))


def documents_to_cu_seqlens_qk(mask: Mask) -> tuple[np.ndarray, np.ndarray]:
    """A one-row ``documents`` mask -> ``(cu_seqlens_q, cu_seqlens_k)`` (int32, N+1 each).

    Sequence n of the packed queries ``[cu_q[n], cu_q[n+1])`` attends exactly the keys
    ``[cu_k[n], cu_k[n+1])`` -- the inverse of ``documents_from_cu_seqlens``. Each document
    must be one contiguous run on both sides, and documents present on both sides must appear
    in the same order; a document present on one side only becomes an empty sequence on the
    other (its queries keep nothing).
    """
    where = "documents_to_cu_seqlens"
    mask = _check_mask(where, mask)
    if not isinstance(mask, Documents):
        raise TypeError(f"{where}: mask must be a documents mask, got a {mask.kind} mask "
                        f"({mask!r})")
    if len(mask.q_segment_ids) != 1 or len(mask.k_segment_ids) != 1:
        raise ValueError(f"{where}: mask has one row of segment ids per batch entry, but "
                         "cu_seqlens describe a single packed row")
    q_runs = _runs(where, "the query segment ids", np.asarray(mask.q_segment_ids[0]))
    k_runs = _runs(where, "the key segment ids", np.asarray(mask.k_segment_ids[0]))
    q_ids = {doc for doc, _ in q_runs}
    k_ids = {doc for doc, _ in k_runs}
    q_lengths, k_lengths = [], []
    qi = ki = 0
    while qi < len(q_runs) or ki < len(k_runs):
        if qi < len(q_runs) and q_runs[qi][0] not in k_ids:
            q_lengths.append(q_runs[qi][1])
            k_lengths.append(0)
            qi += 1
        elif ki < len(k_runs) and k_runs[ki][0] not in q_ids:
            q_lengths.append(0)
            k_lengths.append(k_runs[ki][1])
            ki += 1
        elif qi < len(q_runs) and ki < len(k_runs) and q_runs[qi][0] == k_runs[ki][0]:
            q_lengths.append(q_runs[qi][1])
            k_lengths.append(k_runs[ki][1])
            qi += 1
            ki += 1
        else:
            raise ValueError(f"{where}: the documents shared by queries and keys appear in a "
                             "different order on the two sides; cu_seqlens pair sequence n "
                             "with sequence n")
    cu_q = np.concatenate([[0], np.cumsum(q_lengths, dtype=np.int64)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(k_lengths, dtype=np.int64)]).astype(np.int32)
    return cu_q, cu_k


def documents_to_cu_seqlens(mask: Mask) -> np.ndarray:
    """A one-row self-attention ``documents`` mask -> ``cu_seqlens`` (int32, N+1).

    The inverse of ``documents_from_cu_seqlens(cu_seqlens)``: document n spans
    ``[cu_seqlens[n], cu_seqlens[n+1])``, numbered in order of appearance (segment id values
    carry no order). Query and key documents must coincide; otherwise use
    :func:`documents_to_cu_seqlens_qk`.
    """
    cu_q, cu_k = documents_to_cu_seqlens_qk(mask)
    if not np.array_equal(cu_q, cu_k):
        raise ValueError("documents_to_cu_seqlens: mask has different query and key documents "
                         f"(cu_seqlens_q {cu_q.tolist()} != cu_seqlens_k {cu_k.tolist()}); use "
                         "documents_to_cu_seqlens_qk")
    return cu_q


# -- 5. FlexAttention block mask --------------------------------------------------------------
def _check_block_table(name: str, num_blocks, indices, shape) -> np.ndarray:
    """Dense bool (B, H, nQ, nK) of the blocks listed by ``(num_blocks, indices)``."""
    where = "BlockMask"
    counts = _int_numpy(where, f"{name}_num_blocks", num_blocks, ndim=3)
    table = _int_numpy(where, f"{name}_indices", indices, ndim=4)
    batch, heads, nq, nk = shape
    if counts.shape != (batch, heads, nq) or table.shape != shape:
        raise ValueError(f"{where}: {name}_num_blocks must have shape {(batch, heads, nq)} and "
                         f"{name}_indices {shape}, got {counts.shape} and {table.shape}")
    if np.any((counts < 0) | (counts > nk)):
        raise ValueError(f"{where}: {name}_num_blocks must lie in [0, {nk}]")
    listed = np.arange(nk) < counts[..., None]
    if np.any(listed & ((table < 0) | (table >= nk))):
        raise ValueError(f"{where}: {name}_indices lists a block outside [0, {nk})")
    marks = np.zeros((batch, heads, nq, nk + 1), dtype=bool)
    np.put_along_axis(marks, np.where(listed, table, nk), True, axis=-1)
    marks = marks[..., :nk]
    if np.any(marks.sum(axis=-1) != counts):
        raise ValueError(f"{where}: {name}_indices lists a block twice within one query block")
    return marks


@dataclass(frozen=True, eq=False)
class BlockMask:
    """FlexAttention-style block-sparse mask (the fields of ``torch...flex_attention.BlockMask``).

    For batch b, query head h and query block m (rows ``[m*q_block_size, (m+1)*q_block_size)``):

    * ``kv_indices[b, h, m, :kv_num_blocks[b, h, m]]`` -- the PARTIAL key blocks, ascending: the
      kernel must evaluate the mask inside them;
    * ``full_kv_indices[b, h, m, :full_kv_num_blocks[b, h, m]]`` -- the FULL key blocks,
      ascending: every pair kept, no mask evaluation;
    * every other key block is EMPTY and skipped.

    Entries past the count are padding; refmask fills them like torch's ``_dense_to_ordered``
    (the remaining block indices, ascending), so the arrays compare equal to torch's.
    Counts are int32 (B, H, nQ), indices int32 (B, H, nQ, nK), ``nQ = ceil(q_len /
    q_block_size)``, ``nK = ceil(k_len / k_block_size)``. The last block of each axis may be
    shorter than the block size (ragged edge).
    """

    kv_num_blocks: np.ndarray
    kv_indices: np.ndarray
    full_kv_num_blocks: np.ndarray
    full_kv_indices: np.ndarray
    q_len: int
    k_len: int
    q_block_size: int
    k_block_size: int

    def __post_init__(self):
        for name in ("q_len", "k_len"):
            check_int("BlockMask", name, getattr(self, name), minimum=0)
        for name in ("q_block_size", "k_block_size"):
            check_int("BlockMask", name, getattr(self, name), minimum=1)
        table = np.asarray(self.kv_indices)
        if table.ndim != 4:
            raise ValueError(f"BlockMask: kv_indices must be 4-D (B, H, nQ, nK), got shape "
                             f"{table.shape}")
        nq = -(-self.q_len // self.q_block_size)
        nk = -(-self.k_len // self.k_block_size)
        shape = table.shape[:2] + (nq, nk)
        partial = _check_block_table("kv", self.kv_num_blocks, self.kv_indices, shape)
        full = _check_block_table("full_kv", self.full_kv_num_blocks, self.full_kv_indices,
                                  shape)
        if np.any(partial & full):
            raise ValueError("BlockMask: a block is listed both in kv_indices (PARTIAL) and in "
                             "full_kv_indices (FULL)")
        for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            array = np.array(getattr(self, name), dtype=np.int32, copy=True)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def block_size(self) -> tuple[int, int]:
        """``(q_block_size, k_block_size)`` -- torch's ``BLOCK_SIZE`` order."""
        return (self.q_block_size, self.k_block_size)

    @property
    def seq_lengths(self) -> tuple[int, int]:
        """``(q_len, k_len)`` -- torch's ``seq_lengths``."""
        return (self.q_len, self.k_len)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, H, q_len, k_len)`` of the dense mask this block mask describes."""
        return tuple(self.kv_indices.shape[:2]) + (self.q_len, self.k_len)

    def codes(self) -> np.ndarray:
        """Block codes (B, H, nQ, nK), int8: ``Block.EMPTY``, ``PARTIAL`` or ``FULL``."""
        shape = self.kv_indices.shape
        partial = _check_block_table("kv", self.kv_num_blocks, self.kv_indices, shape)
        full = _check_block_table("full_kv", self.full_kv_num_blocks, self.full_kv_indices, shape)
        return np.where(full, Block.FULL, np.where(partial, Block.PARTIAL, Block.EMPTY)).astype(
            np.int8)

    def __eq__(self, other) -> bool:
        if not isinstance(other, BlockMask):
            return NotImplemented
        return (self.seq_lengths == other.seq_lengths and self.block_size == other.block_size
                and all(np.array_equal(getattr(self, n), getattr(other, n))
                        for n in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks",
                                  "full_kv_indices")))

    __hash__ = None


def _dense_to_ordered(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torch ``_dense_to_ordered``: counts, and the listed block indices first (ascending)."""
    counts = blocks.sum(axis=-1).astype(np.int32)
    order = np.argsort(~blocks, axis=-1, kind="stable").astype(np.int32)
    return counts, order


def _block_sizes(where: str, block_size) -> tuple[int, int]:
    if isinstance(block_size, (numbers.Integral, np.integer)) and not isinstance(block_size,
                                                                                 bool):
        size = check_int(where, "block_size", block_size, minimum=1)
        return size, size
    try:
        q_block, k_block = block_size
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where}: block_size must be an int or a (q_block, k_block) pair, got "
                        f"{block_size!r}") from error
    return (check_int(where, "block_size[0]", q_block, minimum=1),
            check_int(where, "block_size[1]", k_block, minimum=1))


def to_block_mask(mask: Mask, batch: int, heads: int, q_len: int, k_len: int,
                  block_size=(128, 128), *, edge_tiles: str = "padded") -> BlockMask:
    """Block-sparse form of ``mask`` from its analytic ``classify`` (nothing is materialised).

    Tile (m, n) covers queries ``[m*bq, min((m+1)*bq, q_len))`` and keys
    ``[n*bk, min((n+1)*bk, k_len))`` with ``(bq, bk) = block_size``;
    its code is ``mask.classify`` of that rectangle for each batch b and head h:
    EMPTY -> skipped, PARTIAL -> ``kv_indices``, FULL -> ``full_kv_indices``.

    edge_tiles: ``"padded"`` (default) reproduces torch ``create_block_mask``, which pads the
    dense mask with False up to a multiple of the block size, so a ragged edge tile is never
    FULL (a tile FULL on its valid part is reported PARTIAL); ``"clipped"`` classifies only the
    valid part, so a ragged tile may be FULL. Both densify to the same keep array.

    Exact for primitive masks; for combinations ``classify`` is sound (a uniform tile may be
    reported PARTIAL), which :func:`block_mask_to_keep` still densifies exactly.
    """
    where = "to_block_mask"
    mask = _check_mask(where, mask)
    batch = check_int(where, "batch", batch, minimum=1)
    heads = check_int(where, "heads", heads, minimum=1)
    q_len = check_int(where, "q_len", q_len, minimum=0)
    k_len = check_int(where, "k_len", k_len, minimum=0)
    q_block, k_block = _block_sizes(where, block_size)
    check_choice(where, "edge_tiles", edge_tiles, {"padded", "clipped"})
    _check_mask_sizes(where, mask, batch, heads)
    nq, nk = -(-q_len // q_block), -(-k_len // k_block)
    if nq == 0 or nk == 0:
        codes = np.zeros((batch, heads, nq, nk), dtype=np.int8)
    else:
        q0 = np.arange(nq, dtype=np.int64) * q_block
        q1 = np.minimum(q0 + q_block, q_len)
        k0 = np.arange(nk, dtype=np.int64) * k_block
        k1 = np.minimum(k0 + k_block, k_len)
        codes = mask.classify(q0.reshape(1, 1, nq, 1), q1.reshape(1, 1, nq, 1),
                              k0.reshape(1, 1, 1, nk), k1.reshape(1, 1, 1, nk),
                              q_len=q_len, k_len=k_len,
                              batch=np.arange(batch).reshape(batch, 1, 1, 1),
                              head=np.arange(heads).reshape(1, heads, 1, 1))
        codes = np.broadcast_to(codes, (batch, heads, nq, nk))
        if edge_tiles == "padded":
            ragged = ((q1 - q0) < q_block)[:, None] | ((k1 - k0) < k_block)[None, :]
            codes = np.where(ragged & (codes == Block.FULL), Block.PARTIAL, codes)
    kv_num_blocks, kv_indices = _dense_to_ordered(codes == Block.PARTIAL)
    full_num_blocks, full_indices = _dense_to_ordered(codes == Block.FULL)
    return BlockMask(kv_num_blocks, kv_indices, full_num_blocks, full_indices, q_len, k_len,
                     q_block, k_block)


def _dense_keep(where: str, mask_mod, shape) -> np.ndarray:
    batch, heads, q_len, k_len = shape
    if isinstance(mask_mod, Mask):
        _check_mask_sizes(where, mask_mod, batch, heads)
        return np.asarray(mask_mod.materialize(batch, heads, q_len, k_len))
    if callable(mask_mod):
        grids = np.meshgrid(np.arange(batch), np.arange(heads), np.arange(q_len),
                            np.arange(k_len), indexing="ij", sparse=True)
        values = np.asarray(mask_mod(*grids))
    else:
        values = np.asarray(mask_mod)
    if values.dtype != np.bool_:
        raise TypeError(f"{where}: mask_mod must give bools (True = attend), got dtype "
                        f"{values.dtype}")
    try:
        return np.broadcast_to(values, shape)
    except ValueError as error:
        raise ValueError(f"{where}: mask_mod has shape {values.shape}, which does not broadcast "
                         f"to {shape}") from error


def block_mask_to_keep(block_mask: BlockMask, mask_mod=None) -> np.ndarray:
    """Densify a block mask: ``keep = FULL | (PARTIAL & mask_mod)``, EMPTY tiles False.

    mask_mod evaluates the PARTIAL tiles: a refmask Mask, a bool array broadcastable to
    (B, H, Tq, Tk), or a callable ``mask_mod(b, h, q_idx, kv_idx)`` on broadcastable NumPy
    index arrays (FlexAttention's signature). It may be omitted only when no tile is PARTIAL.
    Returns bool (B, H, q_len, k_len).
    """
    where = "block_mask_to_keep"
    if not isinstance(block_mask, BlockMask):
        raise TypeError(f"{where}: block_mask must be a refmask.convert.BlockMask, got "
                        f"{type(block_mask).__name__}")
    codes = block_mask.codes()
    shape = block_mask.shape
    tiles = np.repeat(np.repeat(codes, block_mask.q_block_size, axis=2),
                      block_mask.k_block_size, axis=3)[:, :, :shape[2], :shape[3]]
    keep = tiles == Block.FULL
    if np.any(codes == Block.PARTIAL):
        if mask_mod is None:
            raise ValueError(f"{where}: block_mask has PARTIAL blocks, so mask_mod is required "
                             "to evaluate them")
        keep = keep | ((tiles == Block.PARTIAL) & _dense_keep(where, mask_mod, shape))
    return keep


# -- 6. bit packing (FlashInfer) --------------------------------------------------------------
def _check_padding_bits(where: str, bits: np.ndarray, count: int) -> None:
    if np.any(bits[..., count:]):
        raise ValueError(f"{where}: packed has non-zero padding bits after the first {count} "
                         "bits of a segment; it was not produced by packbits")


def pack_flashinfer(keep) -> np.ndarray:
    """FlashInfer ``packed_custom_mask`` of one request: ``packbits(keep.reshape(-1), "little")``.

    keep: bool (qo_len, kv_len), True = keep. FlashInfer flattens the whole mask row-major and
    packs it as ONE bit stream (``single_prefill_with_kv_cache``): bit ``t = i * kv_len + j``
    is bit ``t % 8`` (least significant first) of byte ``t // 8``; rows are not byte-aligned.
    Returns uint8 of shape ((qo_len * kv_len + 7) // 8,).
    """
    array = _bool_numpy("pack_flashinfer", "keep", keep, min_ndim=2)
    if array.ndim != 2:
        raise ValueError(f"pack_flashinfer: keep must have shape (qo_len, kv_len), got "
                         f"{array.shape}")
    return np.packbits(array.reshape(-1), bitorder="little")


def unpack_flashinfer(packed, shape) -> np.ndarray:
    """Inverse of :func:`pack_flashinfer`: ``keep[i, j] = bit (i*kv_len + j)`` of the stream.

    packed: uint8 of shape ((qo_len * kv_len + 7) // 8,); shape: (qo_len, kv_len).
    Padding bits past ``qo_len * kv_len`` must be zero.
    """
    where = "unpack_flashinfer"
    q_len, k_len = _shape2(where, shape)
    data = _uint8(where, packed)
    count = q_len * k_len
    if data.shape != ((count + 7) // 8,):
        raise ValueError(f"{where}: packed must have shape ({(count + 7) // 8},) for shape "
                         f"{(q_len, k_len)}, got {data.shape}")
    bits = np.unpackbits(data, bitorder="little")
    _check_padding_bits(where, bits, count)
    return bits[:count].astype(bool).reshape(q_len, k_len)


def pack_flashinfer_batch(keeps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch prefill ``segment_packbits``: one little-order bit stream per request.

    keeps: a sequence of bool (qo_len[n], kv_len[n]) masks. Returns ``(packed, mask_indptr,
    packed_indptr)``: ``mask_indptr[n+1] - mask_indptr[n] = qo_len[n] * kv_len[n]`` (FlashInfer's
    ``_compute_mask_indptr``, in bits) and ``packed_indptr[n+1] - packed_indptr[n] =
    (qo_len[n] * kv_len[n] + 7) // 8`` (in bytes); request n is
    ``pack_flashinfer(keeps[n]) == packed[packed_indptr[n]:packed_indptr[n+1]]``.
    """
    parts = []
    for n, keep in enumerate(keeps):
        array = _bool_numpy("pack_flashinfer_batch", f"keeps[{n}]", keep, min_ndim=2)
        if array.ndim != 2:
            raise ValueError(f"pack_flashinfer_batch: keeps[{n}] must have shape (qo_len, "
                             f"kv_len), got {array.shape}")
        parts.append(array)
    sizes = np.array([p.size for p in parts], dtype=np.int64)
    packed = [np.packbits(p.reshape(-1), bitorder="little") for p in parts]
    mask_indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    packed_indptr = np.concatenate([[0], np.cumsum((sizes + 7) // 8)]).astype(np.int32)
    data = np.concatenate(packed) if packed else np.zeros(0, dtype=np.uint8)
    return data.astype(np.uint8), mask_indptr, packed_indptr


def unpack_flashinfer_batch(packed, packed_indptr, shapes) -> list:
    """Inverse of :func:`pack_flashinfer_batch`: request n is
    ``unpack_flashinfer(packed[packed_indptr[n]:packed_indptr[n+1]], shapes[n])``."""
    where = "unpack_flashinfer_batch"
    data = _uint8(where, packed)
    indptr = _int_numpy(where, "packed_indptr", packed_indptr, ndim=1)
    shapes = list(shapes)
    if indptr.size != len(shapes) + 1 or indptr[0] != 0 or indptr[-1] != data.size or np.any(
            np.diff(indptr) < 0):
        raise ValueError(f"{where}: packed_indptr must hold len(shapes) + 1 = {len(shapes) + 1} "
                         f"non-decreasing offsets from 0 to packed.size = {data.size}, got "
                         f"{indptr.tolist()}")
    return [unpack_flashinfer(data[indptr[n]:indptr[n + 1]], shape)
            for n, shape in enumerate(shapes)]


def pack_rows(keep) -> np.ndarray:
    """Row-aligned bit packing: ``out[..., i, j // 8]`` bit ``j % 8`` = ``keep[..., i, j]``.

    keep: bool (..., Tq, Tk). Each row gets its own ``(Tk + 7) // 8`` bytes, little bit order
    (NumPy ``packbits(axis=-1, bitorder="little")``). This is NOT FlashInfer's layout, which
    packs the whole flattened mask as one stream (:func:`pack_flashinfer`); the two coincide
    exactly when ``Tk % 8 == 0`` or Tq == 1. Returns uint8 (..., Tq, (Tk + 7) // 8).
    """
    array = _bool_numpy("pack_rows", "keep", keep, min_ndim=1)
    return np.packbits(array, axis=-1, bitorder="little")


def unpack_rows(packed, shape) -> np.ndarray:
    """Inverse of :func:`pack_rows`: ``keep[..., i, j] = (packed[..., i, j // 8] >> (j % 8)) & 1``.

    shape: the keep shape (..., Tq, Tk); packed must be uint8 (..., Tq, (Tk + 7) // 8) with
    zero padding bits.
    """
    where = "unpack_rows"
    data = _uint8(where, packed)
    shape = tuple(check_int(where, "shape", n, minimum=0) for n in shape)
    if not shape:
        raise ValueError(f"{where}: shape must have at least one dim")
    expected = shape[:-1] + ((shape[-1] + 7) // 8,)
    if data.shape != expected:
        raise ValueError(f"{where}: packed must have shape {expected} for shape {shape}, got "
                         f"{data.shape}")
    bits = np.unpackbits(data, axis=-1, bitorder="little")
    _check_padding_bits(where, bits, shape[-1])
    return bits[..., :shape[-1]].astype(bool)


def _uint8(where: str, packed) -> np.ndarray:
    data = np.asarray(packed)
    if data.dtype != np.uint8:
        raise TypeError(f"{where}: packed must be a uint8 array, got dtype {data.dtype}")
    return data


def _shape2(where: str, shape) -> tuple[int, int]:
    try:
        q_len, k_len = shape
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: shape must be (qo_len, kv_len), got {shape!r}") from error
    return (check_int(where, "shape[0]", q_len, minimum=0),
            check_int(where, "shape[1]", k_len, minimum=0))


# -- 7. column intervals (FlashMask) ----------------------------------------------------------
def _column_runs(drop: np.ndarray):
    """Per column of ``drop`` (..., Tq, Tk): run count and first/last run bounds, (..., Tk)."""
    q_len = drop.shape[-2]
    columns = np.moveaxis(drop, -2, -1).astype(np.int8)
    edge = np.zeros(columns.shape[:-1] + (1,), dtype=np.int8)
    steps = np.diff(np.concatenate([edge, columns, edge], axis=-1), axis=-1)
    pos = np.arange(q_len + 1)
    starts, ends = steps == 1, steps == -1
    big = q_len + 1
    return (starts.sum(axis=-1),
            np.where(starts, pos, big).min(axis=-1), np.where(ends, pos, big).min(axis=-1),
            np.where(starts, pos, -1).max(axis=-1), np.where(ends, pos, -1).max(axis=-1))


def to_column_intervals(keep):
    """Dense keep -> FlashMask column intervals ``(lts, lte, uts, ute)``, int32 (..., Tk) each.

    Rule (FlashMask, arXiv 2410.01359; PaddlePaddle ``flashmask_attention``): key column j
    is dropped exactly for the query rows ``lts[j] <= i < lte[j]`` (lower interval) and
    ``uts[j] <= i < ute[j]`` (upper interval). Canonical choice per column:

    * no dropped row: ``lts = lte = Tq``, ``uts = ute = 0``;
    * two runs of dropped rows: the upper (smaller rows) run is ``[uts, ute)``, the other
      ``[lts, lte)``;
    * one run ``[s, e)``: upper (``uts = 0, ute = e``) when it starts at row 0 and stops
      before the last row, otherwise lower (``lts = s, lte = e``).

    A column whose dropped rows form three or more runs is an error naming ``keep``.
    keep: bool (..., Tq, Tk).
    """
    return _to_column_intervals("to_column_intervals", keep)


def _to_column_intervals(where: str, keep):
    array = _bool_numpy(where, "keep", keep, min_ndim=2)
    q_len = array.shape[-2]
    count, first_start, first_end, last_start, last_end = _column_runs(~array)
    if np.any(count > 2):
        index = _first(count > 2)
        raise ValueError(f"{where}: keep column {index[-1]} (at leading index {index[:-1]}) "
                         f"drops {int(count[index])} separate runs of query rows; FlashMask "
                         "expresses at most two per column (one lower, one upper interval)")
    one, two = count == 1, count == 2
    upper_only = one & (first_start == 0) & (first_end < q_len)
    lower_only = one & ~upper_only
    lts = np.where(two, last_start, np.where(lower_only, first_start, q_len))
    lte = np.where(two, last_end, np.where(lower_only, first_end, q_len))
    uts = np.where(two | upper_only, first_start, 0)
    ute = np.where(two | upper_only, first_end, 0)
    return tuple(x.astype(np.int32) for x in (lts, lte, uts, ute))


def _intervals_to_keep(where: str, names, bounds, q_len: int) -> np.ndarray:
    arrays = [_int_numpy(where, name, value) for name, value in zip(names, bounds, strict=True)]
    try:
        arrays = np.broadcast_arrays(*arrays)
    except ValueError as error:
        raise ValueError(f"{where}: {', '.join(names)} must broadcast to one shape (..., Tk)"
                         ) from error
    for name, array in zip(names, arrays, strict=True):
        if array.ndim == 0:
            raise ValueError(f"{where}: {name} must have at least one dim (..., Tk)")
        if np.any((array < 0) | (array > q_len)):
            raise ValueError(f"{where}: {name} must lie in [0, q_len = {q_len}], got values in "
                             f"[{int(array.min())}, {int(array.max())}]")
    rows = np.arange(q_len)[:, None]
    lts, lte, uts, ute = (a[..., None, :] for a in arrays)
    dropped = ((lts <= rows) & (rows < lte)) | ((uts <= rows) & (rows < ute))
    return ~dropped


def from_column_intervals(lts, lte, uts, ute, q_len: int) -> np.ndarray:
    """FlashMask column intervals -> dense keep (..., q_len, Tk):

    ``keep[..., i, j] = not (lts[j] <= i < lte[j] or uts[j] <= i < ute[j])``.

    All four are integer arrays broadcastable to (..., Tk) with values in [0, q_len]; an
    interval with start >= end is empty (as Python slicing in FlashMask's reference
    ``flashmask_to_densemask``).
    """
    where = "from_column_intervals"
    q_len = check_int(where, "q_len", q_len, minimum=0)
    return _intervals_to_keep(where, ("lts", "lte", "uts", "ute"), (lts, lte, uts, ute), q_len)


def to_flashmask(keep, *, causal: bool) -> np.ndarray:
    """Dense keep -> FlashMask ``startend_row_indices``, int32 (..., Tk, n), n in {1, 2, 4}.

    A (B, H, Tq, Tk) keep gives FlashMask's (B, H, Tk, n). The narrowest form that is exact
    is chosen, with FlashMask's meaning of each width (``flashmask_to_densemask``):

    * ``causal=False``: n = 2 ``[LTS, UTE]`` drops rows ``[LTS, Tq)`` and ``[0, UTE)``; n = 4
      ``[LTS, LTE, UTS, UTE]`` drops ``[LTS, LTE)`` and ``[UTS, UTE)``;
      intervals as in :func:`to_column_intervals`.
    * ``causal=True`` (FlashMask then also drops rows ``i < j``; square only): n = 1 ``[LTS]``
      drops rows ``[LTS, Tq)``, n = 2 ``[LTS, LTE]`` drops ``[LTS, LTE)`` in column j. keep
      must drop every ``i < j`` and its other dropped rows must be one run per column.
    """
    where = "to_flashmask"
    array = _bool_numpy(where, "keep", keep, min_ndim=2)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"{where}: causal must be a bool, got {causal!r}")
    q_len, k_len = array.shape[-2:]
    if not causal:
        lts, lte, uts, ute = _to_column_intervals(where, array)
        if np.all(lte == q_len) and np.all(uts == 0):
            return np.stack([lts, ute], axis=-1)
        return np.stack([lts, lte, uts, ute], axis=-1)
    if q_len != k_len:
        raise ValueError(f"{where}: causal=True needs a square keep (FlashMask's causal part is "
                         f"rows i < j of a Tq x Tq matrix), got Tq={q_len}, Tk={k_len}")
    rows, cols = np.arange(q_len)[:, None], np.arange(k_len)[None, :]
    above = rows < cols
    if np.any(array & above):
        index = _first(array & above)
        raise ValueError(f"{where}: keep attends key {index[-1]} from query {index[-2]} (at "
                         f"leading index {index[:-2]}), which causal=True always drops; use "
                         "causal=False")
    count, first_start, first_end, _, _ = _column_runs(~array & ~above)
    if np.any(count > 1):
        index = _first(count > 1)
        raise ValueError(f"{where}: keep column {index[-1]} (at leading index {index[:-1]}) "
                         f"drops {int(count[index])} separate runs of rows on or below the "
                         "diagonal; causal=True expresses one; use causal=False")
    lts = np.where(count == 1, first_start, q_len).astype(np.int32)
    lte = np.where(count == 1, first_end, q_len).astype(np.int32)
    if np.all(lte == q_len):
        return lts[..., None]
    return np.stack([lts, lte], axis=-1)


def flashmask_to_keep(startend_row_indices, *, q_len: int, causal: bool) -> np.ndarray:
    """FlashMask ``startend_row_indices`` (..., Tk, n) -> dense keep (..., q_len, Tk).

    Exactly PaddlePaddle's reference ``flashmask_to_densemask``; column j drops rows
    causal, n=1: ``[LTS, Tq)`` and ``[0, j)``;  causal, n=2: ``[LTS, LTE)`` and ``[0, j)``;
    non-causal, n=2: ``[LTS, Tq)`` and ``[0, UTE)``;  non-causal, n=4: ``[LTS, LTE)`` and
    ``[UTS, UTE)``. causal=True requires q_len == Tk.
    """
    where = "flashmask_to_keep"
    data = _int_numpy(where, "startend_row_indices", startend_row_indices)
    q_len = check_int(where, "q_len", q_len, minimum=0)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"{where}: causal must be a bool, got {causal!r}")
    widths = (1, 2) if causal else (2, 4)
    if data.ndim < 2 or data.shape[-1] not in widths:
        raise ValueError(f"{where}: startend_row_indices must have shape (..., Tk, n) with n in "
                         f"{widths} for causal={causal}, got {data.shape}")
    k_len = data.shape[-2]
    name = "startend_row_indices[..., {}]".format
    n = data.shape[-1]
    zero, full = np.zeros_like(data[..., 0]), np.full_like(data[..., 0], q_len)
    if causal:
        if q_len != k_len:
            raise ValueError(f"{where}: causal=True needs q_len == Tk (FlashMask's causal part "
                             f"is square), got q_len={q_len}, Tk={k_len}")
        lte = data[..., 1] if n == 2 else full
        keep = _intervals_to_keep(where, (name(0), name(1), "0", "0"),
                                  (data[..., 0], lte, zero, zero), q_len)
        return keep & (np.arange(q_len)[:, None] >= np.arange(k_len)[None, :])
    if n == 2:
        bounds, names = (data[..., 0], full, zero, data[..., 1]), (name(0), "Tq", "0", name(1))
    else:
        bounds, names = tuple(data[..., c] for c in range(4)), tuple(name(c) for c in range(4))
    return _intervals_to_keep(where, names, bounds, q_len)


# -- 8. window tuples -------------------------------------------------------------------------
def _int_pair(where: str, name: str, value) -> tuple[int, int]:
    try:
        first, second = value
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where}: {name} must be a (left, right) pair of ints, got {value!r}"
                        ) from error
    return (check_int(where, f"{name}[0]", first), check_int(where, f"{name}[1]", second))


def flash_window_to_mask(window_size=(-1, -1), causal: bool = False) -> SlidingWindow:
    """FlashAttention ``window_size=(left, right)`` -> ``sliding_window(left, right,
    align="bottom_right")``.

    FlashAttention keeps keys ``[i + Tk - Tq - left, i + Tk - Tq + right]`` (inclusive); a
    negative bound is unbounded (None), and ``causal=True`` forces ``right = 0`` exactly as
    FlashAttention's ``if (is_causal) window_size_right = 0``. ``(-1, -1)`` is full attention.
    """
    where = "flash_window_to_mask"
    left, right = _int_pair(where, "window_size", window_size)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"{where}: causal must be a bool, got {causal!r}")
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


def mask_to_flash_window(mask, *, q_len: int | None = None,
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
    keep = _bool_numpy(where, "mask", mask, min_ndim=2)
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


def hf_sliding_window(window: int, *, align) -> SlidingWindow:
    """"W keys including self" -> ``sliding_window(W - 1, 0, align=align)``.

    HF masking_utils ``sliding_window_overlay(W)`` keeps ``kv > q - W`` (with causal), xformers
    ``LowerTriangularFromBottomRightLocalAttentionMask(W)`` and gpt-oss ``sliding_window`` the
    same W keys; HF aligns by cache position (``align=past`` or ``"top_left"``), xformers
    ``"bottom_right"``. Equals FlashAttention ``window_size=(W - 1, 0)``.
    """
    window = check_int("hf_sliding_window", "window", window, minimum=1)
    return sliding_window(window - 1, 0, align=align)


def attention_gym_sliding_window(window: int, *, align) -> SlidingWindow:
    """attention-gym ``generate_sliding_window(w)`` -> ``sliding_window(w, 0, align=align)``.

    attention-gym keeps ``q - kv <= w`` and causal ``kv <= q``: w + 1 keys including self,
    i.e. FlashAttention ``window_size=(w, 0)``.
    """
    window = check_int("attention_gym_sliding_window", "window", window, minimum=0)
    return sliding_window(window, 0, align=align)


def jax_local_window(local_window_size, *, align) -> SlidingWindow:
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
        left, right = _int_pair(where, "local_window_size", local_window_size)
        if left < 0 or right < 0:
            raise ValueError(f"{where}: local_window_size must be >= 0 on both sides, got "
                             f"{(left, right)}")
    return sliding_window(left, right, align=align)
