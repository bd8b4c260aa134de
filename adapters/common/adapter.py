"""The adapter record: name, declared conventions, availability, support and the call.

    Adapter(name, profile, run, unsupported=..., unavailable=...)

* ``run(case, inputs, *, grads) -> Output`` computes the case with the backend; ``inputs`` are
  the case's NumPy inputs (``refmask.case.case_inputs``) in the case dtype.
* ``unsupported(case) -> str | None`` says *why* the backend cannot express a case natively
  (or None). ``run`` may also raise :class:`Unsupported` when it finds out late.
* ``unavailable() -> str | None`` says why the backend cannot run here (e.g. not installed).
* ``merge(case, partials) -> Output`` (optional): the backend's own merge kernel for a
  split-KV case (``case.key_splits``); ``partials`` are the Outputs ``run`` returned for
  ``refmask.case.partial_cases(case)``. None: refmask's merge (spec 3.8) combines them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Unsupported(Exception):
    """Raised by an adapter or a user function for a case it cannot express; the message is
    the reason shown in the report."""


@dataclass(frozen=True)
class Profile:
    """The conventions a backend declares, so a divergence is reported as the convention it is.

    empty_rows: "zero", "nan", "uniform", "unmasked" or "zero_lse_posinf" (FlashAttention 2).
    causal_alignment: "top_left", "bottom_right" or "both" (what its causal switch means);
      the runner tries the declared alignment first when a case misses the golden output.
    lse_base: "e", "2", or None when the backend returns no LSE.
    backward: whether gradients are available.
    conventions: further named conventions it follows (names of the runner's policy
      explanations, e.g. ``"empty_rows=nan"`` for a backend whose empty rows give NaN in some
      code paths and zero in others).
    dtypes: the dtype names it supports, or None for all; other cases are ``unsupported``.
    notes: free text shown with the backend in reports (versions, caveats).

    :meth:`declared` is the set of convention names the runner accepts as ``policy``; an
    output matching a named convention outside it is a ``fail`` that names it.
    """

    empty_rows: str = "zero"
    causal_alignment: str = "both"
    lse_base: str | None = "e"
    backward: bool = False
    conventions: frozenset = frozenset()
    dtypes: tuple | None = None
    notes: str = ""

    def declared(self) -> frozenset:
        """Names of the conventions this backend declares: ``empty_rows=<policy>``,
        ``causal=<alignment>`` (not for "both": a backend that expresses either alignment
        declares neither as its convention), ``lse_base=<base>``, and :attr:`conventions`."""
        names = {f"empty_rows={self.empty_rows}"}
        if self.causal_alignment in ("top_left", "bottom_right"):
            names.add(f"causal={self.causal_alignment}")
        if self.lse_base is not None:
            names.add(f"lse_base={self.lse_base}")
        return frozenset(names | set(self.conventions))


@dataclass(frozen=True)
class Output:
    """What a backend returned, as float64-convertible NumPy arrays in BHTD layout.

    out: (B, Hq, Tq, Dv); lse: (B, Hq, Tq) or None; grads: {"dq", "dk", "dv", ...} or None;
    scores: the score stages a case asks for (``case.scores``), {"scores_<stage>": (B, Hq, Tq,
    Tk)} (spec 3.9), or None.
    """

    out: Any
    lse: Any = None
    grads: dict | None = None
    scores: dict | None = None


def _always_available() -> str | None:
    return None


def _supports_everything(case) -> str | None:
    return None


@dataclass(frozen=True)
class Adapter:
    """``scores``: the score stages (spec 3.9: "raw", "softcapped", "masked", "probs") ``run``
    can return in ``Output.scores``; a case asking for another stage is ``unsupported``.
    ``temperature``: whether ``run`` applies a case's per-query temperature (``query_scale``,
    spec 3.2.3); a case with one is ``unsupported`` otherwise (default False)."""

    name: str
    profile: Profile
    run: Callable
    unsupported: Callable = field(default=_supports_everything)
    unavailable: Callable = field(default=_always_available)
    description: str = ""
    merge: Callable | None = None
    scores: frozenset = frozenset()
    temperature: bool = False
