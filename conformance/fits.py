"""Fitted parameters (spec 5.4): when no named alternative explains a failure, the numeric
parameters of the case (the scale, the ALiBi slopes, the dropout scaling, the softcap) are
fitted one at a time, so a bug no record names still gets a useful description."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from refmask.case import Case

from .alternatives import default_scale
from .explanations import with_slopes


@dataclass(frozen=True)
class Fit:
    """A numeric parameter fitted when no named alternative explains a failure (spec 5.4):
    the output is judged against the spec with the parameter multiplied by a factor ``f``,
    and a factor that matches names the failure ``<name>=fitted(...)``.

    applies: whether the case has the parameter; changes: ``(case, f) -> dict`` of
    :func:`.alternatives.alternative` keyword arguments; describe: ``(case, f) -> str``, the
    fitted value in words (e.g. ``scale 0.1768 = 1/sqrt(32) where the spec uses ...``).
    """

    name: str
    applies: Callable[[Case], bool]
    changes: Callable[[Case, float], dict]
    describe: Callable[[Case, float], str]
    fix: str


def _scale_words(case: Case, f: float) -> str:
    fitted = default_scale(case) * f
    return (f"scale {fitted:.4g} = 1/sqrt({1.0 / fitted ** 2:.4g}) where the spec uses "
            f"{default_scale(case):.4g} = 1/sqrt({1.0 / default_scale(case) ** 2:.4g})")


def fits() -> list[Fit]:
    """Every fitted parameter, in the order they are tried."""
    def slopes_times(case, f):
        return with_slopes(case, np.asarray(case.alibi.slopes, np.float64) * f)

    return [
        Fit("scale", lambda c: c.q_len > 0 and c.k_len > 1,
            lambda c, f: {"scale": default_scale(c) * f}, _scale_words,
            "scale the scores by exactly the spec's scale (1/sqrt(Dqk) or the explicit one)"),
        Fit("alibi_slopes", lambda c: c.alibi is not None and c.k_len > 1,
            slopes_times, lambda c, f: f"ALiBi slopes {f:.4g} times the case's",
            "use the case's ALiBi slopes (refmask.attention.alibi_slopes for Press et al.)"),
        Fit("dropout_scale", lambda c: c.dropout_rate is not None and c.k_len > 1,
            lambda c, f: {"dropout_factor": f / (1.0 - c.dropout_rate)},
            lambda c, f: f"kept weights times {f / (1.0 - c.dropout_rate):.4g} where the spec "
            f"uses 1 / (1 - {c.dropout_rate:g}) = {1.0 / (1.0 - c.dropout_rate):.4g}",
            "divide the kept weights by the keep probability 1 - rate"),
        Fit("softcap", lambda c: c.softcap is not None and c.k_len > 1,
            lambda c, f: {"softcap": c.softcap * f},
            lambda c, f: f"softcap {c.softcap * f:.4g} where the spec uses {c.softcap:.4g}",
            "pass the softcap unchanged (cap * tanh(s / cap))"),
    ]
