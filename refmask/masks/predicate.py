"""A user predicate ``fn(b, h, q_idx, kv_idx) -> bool array`` (FlexAttention ``mask_mod`` style).

The function receives *indices* (not positions) as broadcastable integer arrays of one
array-API namespace and must return a bool array; it must be pure. ``classify`` evaluates it
on each rectangle. A module-level function serialises to JSON as ``"module:qualname"``.

    predicate(lambda b, h, i, j: (i + j) % 2 == 0), Tq=Tk=4
        0123
      0 █·█·
      1 ·█·█
      2 █·█·
      3 ·█·█
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._base import Mask, classify_by_evaluation


@dataclass(frozen=True, repr=False)
class Predicate(Mask):
    """keep iff ``fn(b, h, i, j)``."""

    fn: object
    kind = "predicate"

    def _keep(self, grid, b, h, i, j):
        result = self.fn(b, h, i, j)
        dtype = getattr(result, "dtype", None)
        if dtype != grid.xp.bool:
            raise TypeError(f"predicate: fn must return a bool array (True = attend), got "
                            f"{type(result).__name__} with dtype {dtype}")
        return result

    def _classify(self, b, h, q0, q1, k0, k1, q_len, k_len):
        return classify_by_evaluation(self, b, h, q0, q1, k0, k1, q_len, k_len)

    def _params(self) -> dict:
        return {"fn": function_path(self.fn)}

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return f"predicate({getattr(self.fn, '__module__', '?')}:{name})"


def function_path(fn: Callable[..., Any]) -> str:
    """``"module:qualname"`` of an importable module-level function, else a clear error."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or "<" in qualname:
        raise ValueError(f"predicate: fn {qualname or fn!r} cannot be serialised: only functions "
                         "defined at module level can be named in JSON")
    return f"{module}:{qualname}"


def import_function(path: str, *, trust: Iterable[str] = ()) -> Callable[..., Any]:
    """Inverse of :func:`function_path`, for modules in the allow-list ``trust`` only.

    The module part must be in ``trust`` (or a submodule of a name in it) BEFORE anything is
    imported, and the target must be the module-level function ``path`` names (its own
    ``__module__`` and ``__qualname__`` give back ``path``), so an allowed module cannot be
    used to reach a function re-exported from elsewhere.
    """
    if not isinstance(path, str):
        raise ValueError(f"predicate: fn must be a 'module:qualname' string, got {path!r:.80}")
    module, _, qualname = path.partition(":")
    if not module or not qualname:
        raise ValueError(f"predicate: fn must be written 'module:qualname', got {path!r:.80}")
    if not any(module == name or module.startswith(name + ".") for name in trust):
        raise ValueError(
            f"predicate: fn {path!r:.120} names module {module!r:.80}, which is not trusted: "
            "JSON never imports code unless the caller allows its module (from_json(..., "
            f"trust=[{module.split('.')[0]!r:.80}]), CLI --trust {module.split('.')[0]:.80})")
    try:
        target = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"predicate: fn {path!r} cannot be imported: {error}") from None
    if not callable(target):
        raise ValueError(f"predicate: fn {path!r} is not callable")
    if (getattr(target, "__module__", None), getattr(target, "__qualname__", None)) != (
            module, qualname):
        raise ValueError(f"predicate: fn {path!r} resolves to an object defined elsewhere "
                         f"({getattr(target, '__module__', '?')}:"
                         f"{getattr(target, '__qualname__', '?')}); name it where it is defined")
    return target


def predicate(fn: Callable[..., Any]) -> Predicate:
    """Mask from ``fn(b, h, q_idx, kv_idx) -> bool array``; fn must be callable and pure."""
    if not callable(fn):
        raise TypeError(f"predicate: fn must be callable, got {type(fn).__name__}")
    return Predicate(fn)
