"""A user's own attention function as an adapter (``refmask check --impl module:function``).

The calling convention (also in the README)::

    def my_attention(q, k, v, call):
        # q: (B, Hq, Tq, Dqk), k: (B, Hkv, Tk, Dqk), v: (B, Hkv, Tk, Dv): arrays of the
        #    function's framework (numpy, torch, jax or cupy) on its device, in the case dtype
        #    (bfloat16 is the framework's own bfloat16; NumPy's is ml_dtypes.bfloat16);
        #    always BHTD and C-contiguous.
        # call.keep: bool (B, Hq, Tq, Tk), True = attend.  call.scale: float, always given.
        # call.softcap, call.bias (B, Hq, Tq, Tk) incl. ALiBi, call.sinks (Hq,),
        # call.dropout_keep (bool) / call.dropout_rate: None when the case has none.
        # call.mask: the refmask Mask (structured form); call.case: the whole Case;
        # call.framework / call.device / call.dtype: where the arrays live.
        # refmask.adapters.native turns `call` into the peers' mask forms (is_causal,
        # FlashAttention window tuple and cu_seqlens, FlexAttention mask_mod / BlockMask, ...).
        return out                     # (B, Hq, Tq, Dv), or (out, lse) with lse (B, Hq, Tq)

What the function declares, as attributes or as keyword arguments of :func:`from_function`
(an argument wins over the attribute); nothing is guessed:

* ``refmask_framework`` ("numpy" unless declared) and ``refmask_device`` ("cpu").
* ``refmask_unsupported``: features it does not implement, so those cases are
  ``unsupported`` instead of failing (:data:`FEATURES`). It may also raise
  ``refmask.adapters.Unsupported("why")`` for a case it cannot handle.
* ``refmask_dtypes``: the dtypes it supports (default: all).
* ``refmask_conventions``: the documented conventions it follows where the spec leaves a
  choice, e.g. ``{"empty_rows": "nan", "causal": "top_left", "lse_base": "2"}``
  (:data:`CONVENTIONS`). An output that matches a declared convention is ``policy``; one that
  matches a named convention it did not declare is ``fail`` with that name.
* ``refmask_backward``: a hand-written backward ``backward(q, k, v, d_out, call, saved) ->
  (dq, dk, dv)`` or a dict with ``dq``, ``dk``, ``dv`` and, when the case has them,
  ``dbias`` / ``dsinks``; ``saved`` is what the forward returned. Without one, gradients come
  from the framework's autograd through the forward (torch: ``torch.autograd.grad``, which
  runs a ``torch.autograd.Function``'s own backward; JAX: ``jax.vjp``, which runs a
  ``jax.custom_vjp`` rule); NumPy and CuPy have no autograd, so ``--grads`` on them needs
  a backward and says so.
* ``refmask_merge``: the function's own merge kernel for split-KV cases,
  ``merge(outs, lses, call) -> (out, lse)``: ``outs`` the list of partial outputs
  (B, Hq, Tq, Dv) and ``lses`` of their LSEs (B, Hq, Tq), as the function returned them for
  the key ranges of ``call.case.key_splits``, in its framework in float32 (float64 for a
  float64 case); ``call`` is the whole case's. Without one, refmask's merge combines the
  partials (``refmask.conformance.split_kv``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from refmask.case import case_inputs, to_bhtd

from . import native
from .common import Adapter, Output, Profile, Unsupported
from .common.translate import additive_bias

FEATURES = ("gqa", "softcap", "bias", "sinks", "dropout", "dqk_ne_dv", "length0")

#: convention -> the values a function may declare (docs/spec.md section "Conventions").
CONVENTIONS = {
    "empty_rows": ("zero", "nan", "uniform", "unmasked", "zero_lse_posinf"),
    "causal": ("top_left", "bottom_right", "both"),
    "lse_base": ("e", "2"),
}

DTYPE_NAMES = ("float64", "float32", "float16", "bfloat16")

#: frameworks whose autograd gives gradients without a hand-written backward
AUTOGRAD = ("torch", "jax")


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
    framework: str = "numpy"
    device: str = "cpu"
    dtype: Any = None


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
    copy = np.array(x, copy=True, order="C")
    copy.flags.writeable = False
    return copy


def _declared(fn, attribute: str, given):
    return given if given is not None else getattr(fn, f"refmask_{attribute}", None)


def _label(fn) -> str:
    return getattr(fn, "__qualname__", type(fn).__name__)


def parse_conventions(where: str, conventions: Any) -> tuple[dict, frozenset]:
    """Declared conventions -> (the :data:`CONVENTIONS` choices, every declared name).

    ``conventions``: ``{"empty_rows": "nan", ...}`` or ``["empty_rows=nan", ...]``. The keys of
    :data:`CONVENTIONS` must take one of their values; other ``name=value`` pairs are kept as
    names (``"window=one_key_wider"``) and checked by the runner against the conventions it
    knows.
    """
    if conventions is None:
        return {}, frozenset()
    if isinstance(conventions, str):
        conventions = [conventions]
    if not isinstance(conventions, Mapping):
        pairs = {}
        for item in conventions:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ValueError(f"{where}: a convention is written name=value (e.g. "
                                 f"'empty_rows=nan'), got {item!r}")
            pairs[key.strip()] = value.strip()
        conventions = pairs
    for key, value in conventions.items():
        if key in CONVENTIONS and value not in CONVENTIONS[key]:
            raise ValueError(f"{where}: convention {key} must be one of {list(CONVENTIONS[key])},"
                             f" got {value!r}")
    choices = {k: v for k, v in conventions.items() if k in CONVENTIONS}
    return choices, frozenset(f"{k}={v}" for k, v in conventions.items())


def _split_result(result):
    if isinstance(result, tuple):
        if len(result) != 2:
            raise TypeError(f"the function must return out or (out, lse), got a tuple of "
                            f"{len(result)}")
        return result
    return result, None


def _gradient_dict(case, returned) -> dict:
    """A user backward's result as {name: array}, checked against the case's tensors."""
    if isinstance(returned, Mapping):
        grads = dict(returned)
    elif isinstance(returned, (tuple, list)) and len(returned) == 3:
        grads = dict(zip(("dq", "dk", "dv"), returned, strict=True))
    else:
        raise TypeError("the backward must return (dq, dk, dv) or a dict with dq, dk, dv "
                        f"(and dbias / dsinks), got {type(returned).__name__}")
    unknown = set(grads) - {"dq", "dk", "dv", "dbias", "dsinks"}
    if unknown:
        raise TypeError(f"the backward returned unknown gradients {sorted(unknown)}; known: "
                        "dq, dk, dv, dbias, dsinks")
    return {name: value for name, value in grads.items() if value is not None}


class UserFunction:
    """The run of one user function: inputs into its framework, out of it, and gradients."""

    def __init__(self, fn: Callable, framework: str, device: str, backward: Callable | None):
        self.fn = fn
        self.framework = framework
        self.device = device
        self.backward = backward

    def _call(self, case, inputs: dict, tensors: dict) -> Call:
        return Call(keep=self._native(case.keep()),
                    scale=case.scale if case.scale is not None else 1.0 / math.sqrt(case.qk_dim),
                    softcap=case.softcap, bias=tensors.get("bias"), sinks=tensors.get("sinks"),
                    dropout_keep=tensors.get("dropout_keep"), dropout_rate=case.dropout_rate,
                    mask=case.mask, case=case, framework=self.framework, device=self.device,
                    dtype=native.native_dtype(self.framework, case.dtype))

    def _tensors(self, case, inputs: dict) -> dict:
        arrays = {name: to_bhtd(case, inputs[name]) for name in ("q", "k", "v")}
        bias = additive_bias(case, inputs)
        if bias is not None:
            arrays["bias"] = bias
        for name in ("sinks", "dropout_keep"):
            if name in inputs:
                arrays[name] = inputs[name]
        return {name: self._native(value) for name, value in arrays.items()}

    def _native(self, x):
        """``x`` in the function's framework; NumPy arrays as read-only copies, so the
        function can neither change the runner's arrays nor be handed arrays it may write."""
        if self.framework == "numpy":
            return _read_only(x)
        return native.to_native(x, self.framework, self.device)

    def __call__(self, case, inputs: dict, *, grads: bool) -> Output:
        with native.framework_context(self.framework, case.dtype):
            tensors = self._tensors(case, inputs)
            if not grads:
                out, lse = _split_result(self.fn(tensors["q"], tensors["k"], tensors["v"],
                                                 self._call(case, inputs, tensors)))
                return Output(out=native.to_float64(out),
                              lse=None if lse is None else native.to_float64(lse))
            d_out = self._native(to_bhtd(case, inputs["d_out"]))
            if self.backward is not None:
                call = self._call(case, inputs, tensors)
                saved = self.fn(tensors["q"], tensors["k"], tensors["v"], call)
                out, lse = _split_result(saved)
                gradients = _gradient_dict(case, self.backward(
                    tensors["q"], tensors["k"], tensors["v"], d_out, call, saved))
            elif self.framework == "torch":
                out, lse, gradients = self._torch_autograd(case, inputs, tensors, d_out)
            else:
                out, lse, gradients = self._jax_vjp(case, inputs, tensors, d_out)
            return Output(out=native.to_float64(out),
                          lse=None if lse is None else native.to_float64(lse),
                          grads={name: native.to_float64(value)
                                 for name, value in gradients.items()})

    @staticmethod
    def _differentiated(case) -> tuple:
        """The inputs whose gradients the golden values hold for this case."""
        names = ["q", "k", "v"]
        if case.bias:
            names.append("bias")  # the leaf is bias (+ ALiBi): d/d(bias + alibi) = dbias
        if case.sinks:
            names.append("sinks")
        return tuple(names)

    def _torch_autograd(self, case, inputs, tensors, d_out):
        import torch

        names = self._differentiated(case)
        leaves = {name: tensors[name].detach().requires_grad_(True) for name in names}
        tensors = {**tensors, **leaves}
        with torch.enable_grad():
            out, lse = _split_result(self.fn(tensors["q"], tensors["k"], tensors["v"],
                                             self._call(case, inputs, tensors)))
            if not isinstance(out, torch.Tensor) or not out.requires_grad:
                raise TypeError("--grads: the output does not depend on q, k, v through "
                                "torch autograd (did the function leave torch, e.g. through "
                                ".numpy()?); give it a backward (refmask_backward)")
            found = torch.autograd.grad(out, [leaves[n] for n in names],
                                        grad_outputs=d_out.to(out.dtype), allow_unused=True)
        return out.detach(), None if lse is None else lse.detach(), {
            "d" + name: torch.zeros_like(leaves[name]) if value is None else value
            for name, value in zip(names, found, strict=True)}

    def _jax_vjp(self, case, inputs, tensors, d_out):
        import jax

        names = self._differentiated(case)

        def forward(*primals):
            values = {**tensors, **dict(zip(names, primals, strict=True))}
            out, lse = _split_result(self.fn(values["q"], values["k"], values["v"],
                                             self._call(case, inputs, values)))
            return out, lse

        out, pullback, lse = jax.vjp(forward, *(tensors[n] for n in names), has_aux=True)
        found = pullback(d_out.astype(out.dtype))
        return out, lse, {"d" + name: value for name, value in zip(names, found, strict=True)}


class UserMerge:
    """A user's merge kernel ``merge(outs, lses, call) -> (out, lse)`` as ``Adapter.merge``."""

    def __init__(self, merge: Callable, runner: UserFunction):
        self.merge = merge
        self.runner = runner

    def __call__(self, case, partials: list) -> Output:
        runner = self.runner
        dtype = np.float64 if case.dtype == "float64" else np.float32
        with native.framework_context(runner.framework, case.dtype):
            inputs = case_inputs(case)
            call = runner._call(case, inputs, runner._tensors(case, inputs))
            outs = [runner._native(np.asarray(p.out, dtype)) for p in partials]
            lses = [runner._native(np.asarray(p.lse, dtype)) for p in partials]
            out, lse = _split_result(self.merge(outs, lses, call))
        if lse is None:
            raise TypeError("refmask_merge must return (out, lse), got one array")
        return Output(out=native.to_float64(out), lse=native.to_float64(lse))


def from_function(fn: Callable[..., Any], name: str | None = None, *,
                  framework: str | None = None, device: str | None = None,
                  backward: Callable | None = None, merge: Callable | None = None,
                  conventions: Any = None,
                  dtypes: Iterable[str] | None = None,
                  unsupported: Iterable[str] | None = None) -> Adapter:
    """Wrap ``fn(q, k, v, call)`` as an adapter named ``name`` (default: module:qualname).

    Every keyword overrides the matching ``refmask_*`` attribute of ``fn`` (see the module
    docstring): framework ("numpy", "torch", "jax", "cupy"; default "numpy"), device ("cpu",
    "cuda"; default "cpu"), backward, merge, conventions, dtypes, unsupported.
    """
    if not callable(fn):
        raise TypeError(f"from_function: fn must be callable, got {type(fn).__name__}")
    where = f"from_function({_label(fn)})"
    framework = _declared(fn, "framework", framework) or "numpy"
    device = _declared(fn, "device", device) or "cpu"
    native.check_target(framework, device, where=where)
    backward = _declared(fn, "backward", backward)
    if backward is not None and not callable(backward):
        raise TypeError(f"{where}: backward must be callable, got {type(backward).__name__}")
    merge = _declared(fn, "merge", merge)
    if merge is not None and not callable(merge):
        raise TypeError(f"{where}: merge must be callable, got {type(merge).__name__}")
    declared = set(_declared(fn, "unsupported", unsupported) or ())
    unknown = declared - set(FEATURES)
    if unknown:
        raise ValueError(f"{where}: refmask_unsupported names unknown features "
                         f"{sorted(unknown)}; known: {list(FEATURES)}")
    supported_dtypes = _declared(fn, "dtypes", dtypes)
    if supported_dtypes is not None:
        supported_dtypes = tuple(supported_dtypes)
        bad = [d for d in supported_dtypes if d not in DTYPE_NAMES]
        if bad or not supported_dtypes:
            raise ValueError(f"{where}: refmask_dtypes must be a non-empty subset of "
                             f"{list(DTYPE_NAMES)}, got {list(supported_dtypes)}")
    follows, names = parse_conventions(where, _declared(fn, "conventions", conventions))

    def unsupported_case(case) -> str | None:
        reason = native.unavailable(framework, device)
        if reason:
            return reason
        if supported_dtypes is not None and case.dtype not in supported_dtypes:
            return f"the function declares dtypes {list(supported_dtypes)} only"
        if framework == "cupy" and case.dtype == "bfloat16":
            return "cupy has no bfloat16 dtype"
        missing = sorted(_features(case) & declared)
        return f"the function declares no support for {', '.join(missing)}" if missing else None

    label = name or f"{getattr(fn, '__module__', '?')}:{_label(fn)}"
    notes = f"user function ({framework} on {device}" + (
        ", hand-written backward)" if backward is not None else
        ", autograd backward)" if framework in AUTOGRAD else ", forward only)")
    profile = Profile(empty_rows=follows.get("empty_rows", "zero"),
                      causal_alignment=follows.get("causal", "both"),
                      lse_base=follows.get("lse_base", "e"),
                      backward=backward is not None or framework in AUTOGRAD,
                      conventions=frozenset(n for n in names
                                            if n.partition("=")[0] not in CONVENTIONS),
                      dtypes=supported_dtypes,
                      notes=notes)
    runner = UserFunction(fn, framework, device, backward)
    return Adapter(name=label, profile=profile, run=runner, unsupported=unsupported_case,
                   description=(getattr(fn, "__doc__", None) or "").strip(),
                   merge=None if merge is None else UserMerge(merge, runner))


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


def from_path(path: str, **options: Any) -> Adapter:
    """The adapter for ``"module:function"``; ``options`` as for :func:`from_function`."""
    return from_function(import_target(path), name=path, **options)


__all__ = ["AUTOGRAD", "CONVENTIONS", "FEATURES", "Call", "Unsupported", "from_function",
           "from_path", "import_target", "parse_conventions"]
