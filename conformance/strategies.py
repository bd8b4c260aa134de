"""Hypothesis strategies for test authors, and the fuzzer built on them.

    from refmask.conformance.strategies import masks, cases
    @given(cases())
    def test_my_kernel(case): assert run_case(my_adapter, case).verdict == "pass"

``masks(q_len, k_len)`` draws primitive masks and their ``&``/``|``/``~`` combinations with
either alignment or an integer offset; ``cases()`` draws whole cases (shapes, GQA, softcap,
bias, sinks, dtype). Hypothesis shrinks a failing case to a small one, and
:func:`reproducer` prints it as a runnable Python snippet. Hypothesis is an optional
dependency (``refmask[test]``); it is imported when this module is.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from refmask import masks as m

from .cases import DTYPES, Case

if TYPE_CHECKING:
    from .judging import Judging


_ALIGNS = st.one_of(st.sampled_from(["top_left", "bottom_right"]), st.integers(0, 4))


@st.composite
def primitive_masks(draw: st.DrawFn, q_len: int, k_len: int) -> m.Mask:
    """One primitive mask valid for (Tq, Tk) = (q_len, k_len)."""
    align = draw(_ALIGNS)
    kind = draw(st.sampled_from(["causal", "sliding_window", "chunked", "block_causal",
                                 "prefix_lm", "strided", "key_padding", "query_padding",
                                 "documents", "full"]))
    if kind == "causal":
        return m.causal(align=align)
    if kind == "sliding_window":
        return m.sliding_window(draw(st.one_of(st.none(), st.integers(0, 4))),
                                draw(st.one_of(st.none(), st.integers(0, 4))), align=align)
    if kind == "chunked":
        return m.chunked(draw(st.integers(1, 4)), align=align)
    if kind == "block_causal":
        return m.block_causal(draw(st.integers(1, 4)), align=align)
    if kind == "prefix_lm":
        return m.prefix_lm(draw(st.integers(0, k_len)), align=align)
    if kind == "strided":
        return m.strided(draw(st.integers(1, 3)), align=align)
    if kind == "key_padding":
        return m.key_padding(draw(st.integers(0, k_len)), side=draw(st.sampled_from(
            ["left", "right"])))
    if kind == "query_padding":
        return m.query_padding(draw(st.integers(0, q_len)), side=draw(st.sampled_from(
            ["left", "right"])))
    if kind == "documents":
        if q_len != k_len:
            return m.causal(align=align)
        ids = sorted(draw(st.lists(st.integers(0, 2), min_size=q_len, max_size=q_len)))
        return m.documents([ids])
    return m.full()


@st.composite
def masks(draw: st.DrawFn, q_len: int, k_len: int, depth: int = 2) -> m.Mask:
    """A primitive or a combination of up to ``depth`` levels."""
    if depth == 0 or draw(st.booleans()):
        return draw(primitive_masks(q_len, k_len))
    op = draw(st.sampled_from(["and", "or", "not"]))
    if op == "not":
        return ~draw(masks(q_len, k_len, depth - 1))
    a, b = draw(masks(q_len, k_len, depth - 1)), draw(masks(q_len, k_len, depth - 1))
    return a & b if op == "and" else a | b


@st.composite
def cases(draw: st.DrawFn, dtypes: Sequence[str] = DTYPES, max_len: int = 8) -> Case:
    """A whole conformance case with random shapes, mask and score features."""
    q_len, k_len = draw(st.integers(1, max_len)), draw(st.integers(1, max_len))
    kv_heads = draw(st.sampled_from([1, 2]))
    q_heads = kv_heads * draw(st.sampled_from([1, 2]))
    softcap = draw(st.one_of(st.none(), st.sampled_from([1.0, 5.0])))
    return Case(
        name=f"fuzz/{draw(st.integers(0, 2**31 - 1))}", family="fuzz",
        mask=draw(st.one_of(st.none(), masks(q_len, k_len))),
        batch=draw(st.integers(1, 2)), q_heads=q_heads, kv_heads=kv_heads, q_len=q_len,
        k_len=k_len, qk_dim=draw(st.sampled_from([4, 8])), v_dim=draw(st.sampled_from([4, 6])),
        dtype=draw(st.sampled_from(list(dtypes))), softcap=softcap,
        bias=draw(st.booleans()), sinks=draw(st.booleans()),
        layout=draw(st.sampled_from(["BHTD", "BTHD"])),
    )


def reproducer(case: Case, target: str, judging: Judging | None = None) -> str:
    """A runnable Python snippet that rebuilds ``case`` and judges ``target`` on it (under
    ``judging``'s grads, allowed policies, framework and device)."""
    fields = {
        name: getattr(case, name)
        for name in ("name", "family", "batch", "q_heads", "kv_heads", "q_len", "k_len",
                     "qk_dim", "v_dim", "dtype", "layout", "scale", "softcap", "bias",
                     "sinks", "dropout_rate", "input_scale", "empty_rows", "seed")
    }
    mask = "None" if case.mask is None else f"m.from_json({json.dumps(case.mask.to_json())})"
    args = ",\n    ".join(f"{k}={v!r}" for k, v in fields.items())
    options = {} if judging is None else {
        "grads": judging.grads, "allow_policy": sorted(judging.allow_policy),
        "framework": judging.framework, "device": judging.device}
    judging_args = ", ".join(f"{k}={v!r}" for k, v in options.items() if v)
    return (
        "from refmask import masks as m\n"
        "from refmask.conformance.cases import Case\n"
        "from refmask.conformance.judging import Judging\n"
        "from refmask.conformance.runner import run_case\n\n"
        f"case = Case(\n    mask={mask},\n    {args},\n)\n"
        f"judging = Judging({judging_args})\n"
        f"result = run_case(judging.adapter({target!r}), case, judging=judging)\n"
        "print(result.verdict, result.reason)\n"
    )


@dataclass(frozen=True)
class FuzzOutcome:
    """What a fuzz run found: the shrunk failing case (None when none), its result and
    reproducer, and how many random cases got each verdict (so "no failure in 200" never
    hides that most were unsupported)."""

    case: Case | None
    result: object
    code: str
    tried: int
    verdicts: dict

    def summary(self) -> str:
        judged = self.tried - self.verdicts.get("unsupported", 0)
        counts = ", ".join(f"{n} {v}" for v, n in sorted(self.verdicts.items()))
        return f"{self.tried} random cases tried, {judged} judged ({counts})"


def fuzz(target: Any, *, max_examples: int = 200, dtypes: Sequence[str] | None = None,
         seed: int | None = None, judging: Judging | None = None,
         progress: Callable[[int, int], None] | None = None) -> FuzzOutcome:
    """Judge ``target`` on random cases under ``judging`` (a :class:`~.judging.Judging`:
    dtypes, grads, allowed policies, framework of a user function); the first case that
    fails is shrunk and returned with a reproducer. ``dtypes`` overrides the judging's.
    ``progress(done, total)`` is called after each case tried."""
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis.errors import NoSuchExample

    from .judging import Judging
    from .runner import run_case

    judging = judging or Judging()
    if dtypes is not None:
        judging = judging.replace(dtypes=dtypes)
    adapter = judging.adapter(target)
    label = target if isinstance(target, str) else adapter.name
    golden = judging.golden()
    tally: Counter = Counter()

    def fails(case):
        verdict = run_case(adapter, case, judging=judging, golden=golden).verdict
        tally[verdict] += 1
        if progress is not None:
            progress(min(sum(tally.values()), max_examples), max_examples)
        return verdict == "fail"

    options = settings(max_examples=max_examples, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck),
                       phases=[Phase.generate, Phase.shrink])
    try:
        case = find(cases(dtypes=judging.dtypes or DTYPES), fails, settings=options,
                    random=None if seed is None else random.Random(seed))
    except NoSuchExample:
        return FuzzOutcome(None, None, "", sum(tally.values()), dict(tally))
    result = run_case(adapter, case, judging=judging, golden=golden)
    code = reproducer(case, label, judging)
    return FuzzOutcome(case, result, code, sum(tally.values()), dict(tally))
