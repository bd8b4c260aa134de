"""Argument checking and normalisation shared by the forward and the backward pass.

Every check raises with a message that names the public function and the argument, e.g.
``attention: softcap must be a finite real number > 0 or None, got -1.0``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any

import array_api_compat

from .._validate import (
    check_bool_dtype,
    check_choice,
    check_real,
    float_dtype_rule,
    is_real_floating,
)
from ..masks._base import Mask
from .alibi import alibi_bias

EMPTY_ROW_POLICIES = ("zero", "nan", "uniform", "unmasked")
LAYOUTS = ("BHTD", "BTHD")

# The one place where refmask's defaults for these two choices are set (see docs/spec.md).
DEFAULT_EMPTY_ROWS = "zero"
DEFAULT_LAYOUT = "BHTD"


@dataclass(frozen=True, eq=False)
class Inputs:
    """Checked inputs, with q, k, v transposed to (B, heads, T, D) whatever the layout.

    Shapes: q (B, Hq, Tq, Dqk), k (B, Hkv, Tk, Dqk), v (B, Hkv, Tk, Dv); keep, bias,
    dropout_keep broadcastable to (B, Hq, Tq, Tk); alibi_bias (B, Hq, Tq, Tk); sinks (Hq,).

    Deferred (``prepare(..., defer=True)``, the exact path, which materialises them one
    query block at a time): ``mask`` is the refmask Mask whose keep array is built per block
    (``keep`` is then None) and ``alibi`` the Alibi whose bias is (``alibi_bias`` None).
    Both are None once materialised.
    """

    xp: Any
    device: Any
    dtype: Any
    layout: str
    q: Any
    k: Any
    v: Any
    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    k_len: int
    qk_dim: int
    v_dim: int
    scale: float
    softcap: float | None
    keep: Any
    bias: Any
    alibi_bias: Any
    sinks: Any
    dropout_keep: Any
    dropout_rate: float | None
    empty_rows: str
    mask: Any = None
    alibi: Any = None

    @property
    def group_size(self) -> int:
        """G = Hq // Hkv query heads share one kv head."""
        return self.q_heads // self.kv_heads

    def to_bhtd(self, x):
        """(B, T, heads, D) -> (B, heads, T, D) for layout "BTHD"; identity for "BHTD"."""
        return x if self.layout == "BHTD" else self.xp.permute_dims(x, (0, 2, 1, 3))

    from_bhtd = to_bhtd  # the permutation (0, 2, 1, 3) is its own inverse

    def constant(self, value: float):
        """``value`` as a 0-d array of the compute dtype.

        Arithmetic never mixes Python floats with arrays: NumPy promotes ml_dtypes bfloat16
        times a Python float to float32, which would silently leave the compute dtype.
        """
        return self.xp.asarray(value, dtype=self.dtype, device=self.device)


def _check_array(where: str, name: str, x) -> None:
    if not array_api_compat.is_array_api_obj(x):
        raise TypeError(f"{where}: {name} must be an array, got {type(x).__name__}")


def check_same_namespace(where: str, name: str, reference, x) -> None:
    _check_array(where, name, x)
    try:
        array_api_compat.array_namespace(reference, x)
    except TypeError as error:
        raise TypeError(
            f"{where}: {name} must come from the same array namespace as q "
            f"({type(reference).__name__}), got {type(x).__name__}"
        ) from error


def check_float_array(where: str, name: str, xp, x, dtype) -> None:
    """``x`` must have exactly the compute dtype (refmask refuses to cast silently)."""
    if not is_real_floating(xp, x.dtype):
        raise TypeError(float_dtype_rule(where, name, x.dtype))
    if x.dtype != dtype:
        raise TypeError(
            f"{where}: {name} has dtype {x.dtype} but q has {dtype}; all floating inputs must "
            "share one dtype"
        )


def check_broadcastable(where: str, name: str, shape: tuple, target: tuple, letters: str) -> None:
    """NumPy broadcasting of ``shape`` to ``target``: at most len(target) dims, each equal to
    1 or to the target's size, aligned from the right."""
    shape = tuple(shape)
    ok = len(shape) <= len(target) and all(
        size in (1, full) for size, full in zip(reversed(shape), reversed(target), strict=False)
    )
    if not ok:
        raise ValueError(
            f"{where}: {name} has shape {shape}, which does not broadcast to {letters} = "
            f"{tuple(target)}"
        )


def _check_bool_array(where: str, name: str, xp, x, target: tuple, meaning: str) -> None:
    check_bool_dtype(where, name, x, xp, meaning=meaning,
                     hint="pass additive float masks as bias" if name == "mask" else "")
    check_broadcastable(where, name, x.shape, target, "(B, Hq, Tq, Tk)")


def _keep_array(where: str, xp, device, q, mask, scores_shape: tuple, rows=None):
    """The bool keep array: None, a bool array as given, or ``mask.materialize(...)`` (of
    query rows [start, stop) only with ``rows``, for a refmask Mask)."""
    if mask is None:
        return None
    if not array_api_compat.is_array_api_obj(mask) and hasattr(mask, "materialize"):
        expected = scores_shape
        if rows is None:
            keep = mask.materialize(*scores_shape, xp=xp, device=device)
        else:
            keep = mask.materialize(*scores_shape, xp=xp, device=device, rows=rows)
            expected = scores_shape[:2] + (rows[1] - rows[0], scores_shape[3])
        check_same_namespace(where, "mask.materialize(...)", q, keep)
        if tuple(keep.shape) != expected or keep.dtype != xp.bool:
            raise ValueError(
                f"{where}: mask.materialize returned shape {tuple(keep.shape)} and dtype "
                f"{keep.dtype}; expected bool of shape (B, Hq, Tq, Tk) = {expected}"
            )
        return keep
    check_same_namespace(where, "mask", q, mask)
    _check_bool_array(where, "mask", xp, mask, scores_shape, "attend")
    return mask


def _dropout_rate(where: str, xp, q, dropout_keep, dropout_rate, scores_shape: tuple):
    """Both dropout arguments or neither; returns the rate as a float (or None)."""
    if (dropout_keep is None) != (dropout_rate is None):
        missing, given = (("dropout_rate", "dropout_keep") if dropout_rate is None
                          else ("dropout_keep", "dropout_rate"))
        raise ValueError(
            f"{where}: {missing} is required when {given} is given (refmask never draws a "
            "dropout pattern itself)"
        )
    if dropout_keep is None:
        return None
    check_same_namespace(where, "dropout_keep", q, dropout_keep)
    _check_bool_array(where, "dropout_keep", xp, dropout_keep, scores_shape, "keep")
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, numbers.Real) or not (
        0.0 <= float(dropout_rate) < 1.0
    ):
        raise ValueError(
            f"{where}: dropout_rate must be a real number in [0, 1), got {dropout_rate!r}"
        )
    return float(dropout_rate)


def _optional_float_array(where: str, name: str, xp, q, x, dtype):
    """None, or an array of q's namespace with exactly q's (real floating) dtype."""
    if x is not None:
        check_same_namespace(where, name, q, x)
        check_float_array(where, name, xp, x, dtype)
    return x


def prepare(where: str, q, k, v, *, mask, scale, softcap, bias, alibi, sinks, dropout_keep,
            dropout_rate, empty_rows, layout, defer: bool = False) -> Inputs:
    """Check every argument of :func:`refmask.attention.attention` and normalise it.

    defer: leave a refmask Mask and the ALiBi bias unmaterialised (``Inputs.mask``,
    ``Inputs.alibi``; checked here all the same) for :func:`query_block` to build one query
    block at a time. Mask look-alikes (only ``materialize``) are materialised here.
    """
    layout = check_choice(where, "layout", layout, LAYOUTS)
    empty_rows = check_choice(where, "empty_rows", empty_rows, EMPTY_ROW_POLICIES)
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_array(where, name, x)
    try:
        xp = array_api_compat.array_namespace(q, k, v)
    except TypeError as error:
        raise TypeError(f"{where}: q, k and v must come from one array namespace") from error
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            letters = "(B, H, T, D)" if layout == "BHTD" else "(B, T, H, D)"
            raise ValueError(
                f"{where}: {name} must be 4-D {letters} for layout {layout!r}, got shape "
                f"{tuple(x.shape)}"
            )
        if not is_real_floating(xp, x.dtype):
            raise TypeError(float_dtype_rule(where, name, x.dtype))
    dtype = q.dtype
    for name, x in (("k", k), ("v", v)):
        if x.dtype != dtype:
            raise TypeError(
                f"{where}: {name} has dtype {x.dtype} but q has {dtype}; q, k and v must share "
                "one dtype"
            )
    device = array_api_compat.device(q)
    if layout == "BTHD":
        q, k, v = (xp.permute_dims(x, (0, 2, 1, 3)) for x in (q, k, v))
    _check_shapes(where, layout, q.shape, k.shape, v.shape)
    batch, q_heads, q_len, qk_dim = (int(n) for n in q.shape)
    kv_heads, k_len, v_dim = int(k.shape[1]), int(k.shape[2]), int(v.shape[3])
    scores_shape = (batch, q_heads, q_len, k_len)

    if scale is None:
        scale = 1.0 / math.sqrt(qk_dim)
    else:
        scale = check_real(where, "scale", scale, optional=True)
    if softcap is not None:
        softcap = check_real(where, "softcap", softcap, positive=True, optional=True)
    deferred_mask = mask if defer and isinstance(mask, Mask) else None
    if deferred_mask is not None:
        _keep_array(where, xp, device, q, mask, scores_shape, rows=(0, 0))  # checks only
        keep = None
    else:
        keep = _keep_array(where, xp, device, q, mask, scores_shape)
    bias = _optional_float_array(where, "bias", xp, q, bias, dtype)
    if bias is not None:
        check_broadcastable(where, "bias", bias.shape, scores_shape, "(B, Hq, Tq, Tk)")
    alibi_array = None
    if alibi is not None:
        alibi_array = alibi_bias(where, "alibi", alibi, batch, q_heads, q_len, k_len, xp=xp,
                                 dtype=dtype, device=device, rows=(0, 0) if defer else None)
        alibi_array = None if defer else alibi_array
    sinks = _optional_float_array(where, "sinks", xp, q, sinks, dtype)
    if sinks is not None and tuple(sinks.shape) != (q_heads,):
        raise ValueError(
            f"{where}: sinks must have shape (Hq,) = ({q_heads},), got {tuple(sinks.shape)}"
        )
    dropout_rate = _dropout_rate(where, xp, q, dropout_keep, dropout_rate, scores_shape)

    return Inputs(
        xp=xp, device=device, dtype=dtype, layout=layout, q=q, k=k, v=v,
        batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len, k_len=k_len,
        qk_dim=qk_dim, v_dim=v_dim, scale=scale, softcap=softcap, keep=keep, bias=bias,
        alibi_bias=alibi_array, sinks=sinks, dropout_keep=dropout_keep,
        dropout_rate=dropout_rate, empty_rows=empty_rows, mask=deferred_mask,
        alibi=alibi if defer else None,
    )


def _query_rows(x, start: int, stop: int, q_len: int):
    """Rows [start, stop) of an array broadcastable to (B, Hq, Tq, Tk) (None stays None;
    an array broadcast along Tq is returned as it is)."""
    if x is None or x.ndim < 2 or x.shape[-2] == 1 or (start, stop) == (0, q_len):
        return x
    return x[..., start:stop, :]


def query_block(where: str, inp: Inputs, start: int, stop: int) -> Inputs:
    """The inputs of query rows [start, stop): q, keep, bias, ALiBi and the dropout pattern
    restricted to those rows (a deferred mask or ALiBi materialised for them only, from
    positions of the full Tq x Tk grid), Tq = stop - start. Every other field is shared."""
    keep = _query_rows(inp.keep, start, stop, inp.q_len)
    scores_shape = (inp.batch, inp.q_heads, inp.q_len, inp.k_len)
    if inp.mask is not None:
        keep = _keep_array(where, inp.xp, inp.device, inp.q, inp.mask, scores_shape,
                           rows=(start, stop))
    alibi_array = _query_rows(inp.alibi_bias, start, stop, inp.q_len)
    if inp.alibi is not None:
        alibi_array = alibi_bias(where, "alibi", inp.alibi, inp.batch, inp.q_heads, inp.q_len,
                                 inp.k_len, xp=inp.xp, dtype=inp.dtype, device=inp.device,
                                 rows=(start, stop))
    return replace(inp, q=inp.q[:, :, start:stop, ...], q_len=stop - start, keep=keep,
                   bias=_query_rows(inp.bias, start, stop, inp.q_len), alibi_bias=alibi_array,
                   dropout_keep=_query_rows(inp.dropout_keep, start, stop, inp.q_len),
                   mask=None, alibi=None)


def _check_shapes(where: str, layout: str, q_shape, k_shape, v_shape) -> None:
    """q (B, Hq, Tq, Dqk), k (B, Hkv, Tk, Dqk), v (B, Hkv, Tk, Dv) in (B, H, T, D) order;
    Hq % Hkv == 0, Hkv >= 1, Dqk >= 1."""
    def shown(shape):  # report shapes in the caller's layout
        shape = tuple(int(n) for n in shape)
        return shape if layout == "BHTD" else (shape[0], shape[2], shape[1], shape[3])

    batch, q_heads, _, qk_dim = q_shape
    if k_shape[0] != batch or v_shape[0] != batch:
        name = "k" if k_shape[0] != batch else "v"
        shape = k_shape if name == "k" else v_shape
        raise ValueError(
            f"{where}: {name} has batch size {shape[0]} but q has {batch} "
            f"(q {shown(q_shape)}, {name} {shown(shape)})"
        )
    if k_shape[3] != qk_dim:
        raise ValueError(
            f"{where}: k has head dim {k_shape[3]} but q has {qk_dim}; q and k must share Dqk "
            f"(q {shown(q_shape)}, k {shown(k_shape)})"
        )
    if v_shape[1] != k_shape[1] or v_shape[2] != k_shape[2]:
        raise ValueError(
            f"{where}: v has (heads, length) = ({v_shape[1]}, {v_shape[2]}) but k has "
            f"({k_shape[1]}, {k_shape[2]}); v must be (B, Hkv, Tk, Dv) "
            f"(k {shown(k_shape)}, v {shown(v_shape)})"
        )
    if k_shape[1] < 1 or q_heads < 1:
        raise ValueError(f"{where}: q and k need at least one head, got q {shown(q_shape)}, "
                         f"k {shown(k_shape)}")
    if q_heads % k_shape[1] != 0:
        raise ValueError(
            f"{where}: q has {q_heads} heads, which is not a multiple of the {k_shape[1]} heads "
            "of k and v (GQA/MQA needs Hq % Hkv == 0)"
        )
    if qk_dim < 1:
        raise ValueError(f"{where}: q needs a head dim Dqk >= 1, got shape {shown(q_shape)}")


def check_upstream_gradients(where: str, inp: Inputs, q, d_out, d_lse) -> tuple:
    """Check the incoming gradients of ``attention_vjp`` against the prepared inputs.

    d_out must have out's shape in the call's layout, d_lse (optional) lse's shape
    (B, Hq, Tq); both share q's namespace and dtype. Returns ``(d_out, d_lse)`` with d_out in
    (B, Hq, Tq, Dv) layout and d_lse unchanged.
    """
    xp = inp.xp
    check_same_namespace(where, "d_out", q, d_out)
    check_float_array(where, "d_out", xp, d_out, inp.dtype)
    out_shape = (inp.batch, inp.q_heads, inp.q_len, inp.v_dim)
    expected = out_shape if inp.layout == "BHTD" else (out_shape[0], out_shape[2], out_shape[1],
                                                       out_shape[3])
    if tuple(d_out.shape) != expected:
        raise ValueError(
            f"{where}: d_out must have the shape of out, {expected} for layout "
            f"{inp.layout!r}, got {tuple(d_out.shape)}"
        )
    if d_lse is not None:
        check_same_namespace(where, "d_lse", q, d_lse)
        check_float_array(where, "d_lse", xp, d_lse, inp.dtype)
        if tuple(d_lse.shape) != out_shape[:3]:
            raise ValueError(
                f"{where}: d_lse must have the shape of lse, (B, Hq, Tq) = {out_shape[:3]}, got "
                f"{tuple(d_lse.shape)}"
            )
    return inp.to_bhtd(d_out), d_lse
