"""The adapter record: name, declared conventions, availability, support and the call.

    Adapter(name, profile, run, unsupported=..., unavailable=...)

* ``run(case, inputs, *, grads) -> Output`` computes the case with the backend; ``inputs`` are
  the case's NumPy inputs (``refmask.case.case_inputs``) in the case dtype.
* ``unsupported(case) -> str | None`` says *why* the backend cannot express a case natively
  (or None). ``run`` may also raise :class:`Unsupported` when it finds out late.
* ``unavailable() -> str | None`` says why the backend cannot run here (e.g. not installed).
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
    notes: free text shown with the backend in reports (versions, caveats).
    """

    empty_rows: str = "zero"
    causal_alignment: str = "both"
    lse_base: str | None = "e"
    backward: bool = False
    notes: str = ""


@dataclass(frozen=True)
class Output:
    """What a backend returned, as float64-convertible NumPy arrays in BHTD layout.

    out: (B, Hq, Tq, Dv); lse: (B, Hq, Tq) or None; grads: {"dq", "dk", "dv", ...} or None.
    """

    out: Any
    lse: Any = None
    grads: dict | None = None


def _always_available() -> str | None:
    return None


def _supports_everything(case) -> str | None:
    return None


@dataclass(frozen=True)
class Adapter:
    name: str
    profile: Profile
    run: Callable
    unsupported: Callable = field(default=_supports_everything)
    unavailable: Callable = field(default=_always_available)
    description: str = ""
