"""The outputs a :class:`refmask.case.Case` asks for beyond out and lse (the score stages of
docs/spec.md 3.9) and its per-query temperature (3.2.3): names and field checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validate import check_choice
from .attention import SCORE_STAGES


def score_output_name(stage: str) -> str:
    """The output name of a score stage (spec 3.9): ``"scores_" + stage``, e.g.
    ``scores_probs``; also the golden member ``exact.scores_<stage>``."""
    return f"scores_{stage}"


def check_outputs(case: Any) -> None:
    """Check a :class:`~refmask.case.Case`'s ``scores`` (a tuple of distinct stages of
    SCORE_STAGES in that order) and ``query_scale`` (None or a tuple of Tq finite floats > 0),
    naming the case, the field and the rule."""
    where = f"Case {case.name!r}"
    if not isinstance(case.scores, tuple):
        raise TypeError(f"{where}: scores must be a tuple of stages, got "
                        f"{type(case.scores).__name__}")
    for stage in case.scores:
        check_choice(where, "scores", stage, SCORE_STAGES)
    if list(case.scores) != sorted(set(case.scores), key=SCORE_STAGES.index):
        raise ValueError(f"{where}: scores must name each stage at most once, in the order "
                         f"{list(SCORE_STAGES)}, got {list(case.scores)}")
    tau = case.query_scale
    if tau is None:
        return
    if not isinstance(tau, tuple) or len(tau) != case.q_len:
        raise ValueError(f"{where}: query_scale must be a tuple of Tq = {case.q_len} floats, "
                         f"got {tau!r:.80}")
    if not all(isinstance(x, float) and np.isfinite(x) and x > 0 for x in tau):
        raise ValueError(f"{where}: query_scale must hold finite floats > 0, got {tau!r:.80}")
