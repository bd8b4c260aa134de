"""A user's own attention function as an adapter (``refmask check --impl module:function``).

The calling convention (also in the README)::

    def my_attention(q, k, v, call):
        # q: (B, Hq, Tq, Dqk), k: (B, Hkv, Tk, Dqk), v: (B, Hkv, Tk, Dv) NumPy arrays in the
        #    case dtype (bfloat16 is ml_dtypes.bfloat16); always BHTD.
        # call.keep: bool (B, Hq, Tq, Tk), True = attend.  call.scale: float, always given.
        # call.softcap, call.bias (B, Hq, Tq, Tk) incl. ALiBi, call.sinks (Hq,),
        # call.dropout_keep (bool) / call.dropout_rate: None when the case has none.
        # call.mask: the refmask Mask (structured form); call.case: the whole Case.
        return out                     # (B, Hq, Tq, Dv), or (out, lse) with lse (B, Hq, Tq)

A function declares what it does not implement with an attribute, so those cases are
``unsupported`` instead of failing: ``my_attention.refmask_unsupported = {"sinks",
"dropout"}`` (features: "gqa", "softcap", "bias", "sinks", "dropout", "dqk_ne_dv",
"length0"). Without the attribute it is judged on every case. It may also raise
``refmask.adapters.Unsupported("why")`` for a case it cannot handle.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from refmask.case import to_bhtd

from .common import Adapter, Output, Profile, Unsupported
from .common.translate import additive_bias

FEATURES = ("gqa", "softcap", "bias", "sinks", "dropout", "dqk_ne_dv", "length0")


@dataclass(frozen=True)
class Call:
    """Everything a user function needs besides q, k, v (see the module docstring)."""

    keep: Any
    scale: float
    softcap: float | None
    bias: Any
    sinks: Any
    dropout_keep: Any
    dropout_rate: float | None
    mask: Any
    case: Any


def _features(case) -> set:
    used = set()
    if case.kv_heads != case.q_heads:
        used.add("gqa")
    if case.softcap is not None:
        used.add("softcap")
    if case.bias or case.alibi is not None:
        used.add("bias")
    if case.sinks:
        used.add("sinks")
    if case.dropout_rate is not None:
        used.add("dropout")
    if case.qk_dim != case.v_dim:
        used.add("dqk_ne_dv")
    if 0 in (case.q_len, case.k_len):
        used.add("length0")
    return used


def _read_only(x: Any) -> Any:
    """A read-only copy of an array argument (None and non-arrays pass through): the user's
    function can neither change the runner's arrays nor be handed arrays it may write."""
    if x is None or not hasattr(x, "dtype"):
        return x
    copy = np.array(x, copy=True)
    copy.flags.writeable = False
    return copy


def from_function(fn: Callable[..., Any], name: str | None = None) -> Adapter:
    """Wrap ``fn(q, k, v, call)`` as an adapter named ``name`` (default: module:qualname)."""
    if not callable(fn):
        raise TypeError(f"from_function: fn must be callable, got {type(fn).__name__}")
    declared = set(getattr(fn, "refmask_unsupported", ()))
    unknown = declared - set(FEATURES)
    if unknown:
        raise ValueError(f"from_function: {fn.__qualname__}.refmask_unsupported names unknown "
                         f"features {sorted(unknown)}; known: {list(FEATURES)}")

    def unsupported(case) -> str | None:
        missing = sorted(_features(case) & declared)
        return f"the function declares no support for {', '.join(missing)}" if missing else None

    def run(case, inputs, *, grads: bool) -> Output:
        bias = additive_bias(case, inputs)
        call = Call(
            keep=_read_only(case.keep()),
            scale=case.scale if case.scale is not None else 1.0 / math.sqrt(case.qk_dim),
            softcap=case.softcap, bias=_read_only(bias), sinks=_read_only(inputs.get("sinks")),
            dropout_keep=_read_only(inputs.get("dropout_keep")), dropout_rate=case.dropout_rate,
            mask=case.mask, case=case,
        )
        result = fn(*(_read_only(to_bhtd(case, inputs[name])) for name in ("q", "k", "v")),
                    call)
        if isinstance(result, tuple):
            out, lse = result
            return Output(out=np.asarray(out), lse=np.asarray(lse))
        return Output(out=np.asarray(result))

    label = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', 'fn')}"
    return Adapter(name=label, profile=Profile(lse_base=None, notes="user function"),
                   run=run, unsupported=unsupported, description=(fn.__doc__ or "").strip())


def import_target(path: str, option: str = "--impl") -> Any:
    """The object ``"module:qualname"`` names, imported for the user who named it with
    ``option``. Whatever the import raises (SystemExit included) is a ValueError naming
    ``option`` and the module: the user's code cannot end or crash refmask's process."""
    if not isinstance(path, str):
        raise TypeError(f"{option} must be written module:function, got {path!r}")
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"{option} must be written module:function, got {path!r}")
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{option} {path}: cannot import module {module_name!r}: {error}"
                         ) from None
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's module failed
        raise ValueError(f"{option} {path}: importing module {module_name!r} raised "
                         f"{type(error).__name__}: {error}") from None
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{option} {path}: {module_name} has no attribute {qualname!r}")
        target = getattr(target, part)
    return target


def from_path(path: str) -> Adapter:
    """The adapter for ``"module:function"`` (the module must be importable)."""
    return from_function(import_target(path), name=path)


__all__ = ["FEATURES", "Call", "Unsupported", "from_function", "from_path", "import_target"]
