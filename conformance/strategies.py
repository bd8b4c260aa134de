"""Hypothesis strategies for test authors, and the fuzzer built on them.

    from refmask.conformance.strategies import masks, cases
    @given(cases())
    def test_my_kernel(case): assert run_case(my_adapter, case).verdict == "pass"

``masks(q_len, k_len)`` draws primitive masks and their ``&``/``|``/``~`` combinations with
either alignment, an integer offset, per-batch offsets or valid lengths, and per-head /
per-batch selections; ``cases()`` draws whole cases (shapes incl. long rows, GQA, explicit
scale, softcap, bias, ALiBi, sinks, dropout, large magnitudes, dtype). Hypothesis shrinks
a failing case to a small one, and :func:`reproducer` prints it as a runnable Python
snippet. Hypothesis is an optional dependency (``refmask[test]``); it is imported when this
module is.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from refmask import masks as m
from refmask.attention import Alibi

from .cases import DTYPES, Case

if TYPE_CHECKING:
    from .runner import CaseResult


_ALIGNS = st.one_of(st.sampled_from(["top_left", "bottom_right"]), st.integers(0, 4))


@st.composite
def alignments(draw: st.DrawFn, q_len: int, k_len: int,
               batch: int | None = None) -> str | int | list | m.Alignment:
    """top-left, bottom-right, an integer KV-cache offset, per-batch offsets, or (with
    ``batch``) bottom-right on per-batch valid lengths."""
    options = [_ALIGNS]
    if batch is not None and batch > 1:
        options.append(st.lists(st.integers(0, 4), min_size=batch, max_size=batch))
        options.append(st.builds(
            lambda ql, kl: m.bottom_right(q_lengths=ql, k_lengths=kl),
            st.lists(st.integers(1, q_len), min_size=batch, max_size=batch),
            st.lists(st.integers(1, k_len), min_size=batch, max_size=batch)))
    return draw(st.one_of(*options))


@st.composite
def primitive_masks(draw: st.DrawFn, q_len: int, k_len: int,
                    batch: int | None = None) -> m.Mask:
    """One primitive mask valid for (Tq, Tk) = (q_len, k_len) (and B = ``batch`` when given:
    per-batch offsets and valid lengths)."""
    align = draw(alignments(q_len, k_len, batch))
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
        lengths = (st.integers(0, k_len) if not batch else
                   st.lists(st.integers(0, k_len), min_size=batch, max_size=batch))
        return m.key_padding(draw(lengths), side=draw(st.sampled_from(["left", "right"])))
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
def masks(draw: st.DrawFn, q_len: int, k_len: int, depth: int = 2, *,
          batch: int | None = None, heads: int | None = None) -> m.Mask:
    """A primitive or a combination of up to ``depth`` levels; with ``batch`` / ``heads``
    also per-batch / per-head selections."""
    def part(level):
        return masks(q_len, k_len, level, batch=batch)

    if depth == 0 or draw(st.booleans()):
        return draw(primitive_masks(q_len, k_len, batch))
    ops = ["and", "or", "not"] + (["per_head"] if heads and heads > 1 else []) + (
        ["per_batch"] if batch and batch > 1 else [])
    op = draw(st.sampled_from(ops))
    if op == "not":
        return ~draw(part(depth - 1))
    if op == "per_head":
        return m.per_head(*[draw(masks(q_len, k_len, depth - 1)) for _ in range(heads)])
    if op == "per_batch":
        return m.per_batch(*[draw(masks(q_len, k_len, depth - 1)) for _ in range(batch)])
    a, b = draw(part(depth - 1)), draw(part(depth - 1))
    return a & b if op == "and" else a | b


#: Key lengths of the fuzzer's "long row" cases (the catalog's long rows are 2048 keys; the
#: fuzzer keeps them short enough to shrink).
LONG_ROW = 300


@st.composite
def cases(draw: st.DrawFn, dtypes: Sequence[str] = DTYPES, max_len: int = 8) -> Case:
    """A whole conformance case: random shapes (sometimes a row of LONG_ROW keys), GQA, a mask
    (offsets, valid lengths, per-head and per-batch selections), and every score feature of
    the catalog: explicit scale, softcap, bias, ALiBi, sinks, dropout, large magnitudes."""
    q_len = draw(st.integers(1, max_len))
    k_len = draw(st.one_of(st.integers(1, max_len), st.just(LONG_ROW)))
    kv_heads = draw(st.sampled_from([1, 2]))
    q_heads = kv_heads * draw(st.sampled_from([1, 2]))
    batch = draw(st.integers(1, 2))
    softcap = draw(st.one_of(st.none(), st.sampled_from([1.0, 5.0])))
    alibi = None
    if draw(st.booleans()):
        alibi = Alibi(q_heads, convention=draw(st.sampled_from(["abs", "signed"])),
                      align=draw(st.sampled_from(["top_left", "bottom_right"])))
    dropout_rate = draw(st.one_of(st.none(), st.just(0.25)))
    return Case(
        name=f"fuzz/{draw(st.integers(0, 2**31 - 1))}", family="fuzz",
        mask=draw(st.one_of(st.none(), masks(q_len, k_len, batch=batch, heads=q_heads))),
        batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len,
        k_len=k_len, qk_dim=draw(st.sampled_from([4, 8])), v_dim=draw(st.sampled_from([4, 6])),
        dtype=draw(st.sampled_from(list(dtypes))), softcap=softcap,
        scale=draw(st.one_of(st.none(), st.sampled_from([0.3, 1.0]))),
        bias=draw(st.booleans()), alibi=alibi, sinks=draw(st.booleans()),
        dropout_rate=dropout_rate,
        input_scale=draw(st.sampled_from([1.0, 1.0, 30.0])),
        layout=draw(st.sampled_from(["BHTD", "BTHD"])),
    )


def reproducer(case: Case, target: str) -> str:
    """A runnable Python snippet that rebuilds ``case`` and judges ``target`` on it."""
    fields = {
        name: getattr(case, name)
        for name in ("name", "family", "batch", "q_heads", "kv_heads", "q_len", "k_len",
                     "qk_dim", "v_dim", "dtype", "layout", "scale", "softcap", "bias",
                     "sinks", "dropout_rate", "input_scale", "empty_rows", "seed")
    }
    mask = "None" if case.mask is None else f"m.from_json({json.dumps(case.mask.to_json())})"
    args = ",\n    ".join(f"{k}={v!r}" for k, v in fields.items())
    if case.alibi is not None:
        args += (f",\n    alibi=Alibi({list(case.alibi.slopes)!r}, convention="
                 f"{case.alibi.convention!r}, align={case.alibi.align.to_json()!r})")
    return (
        "from refmask import masks as m\n"
        "from refmask.attention import Alibi\n"
        "from refmask.conformance.cases import Case\n"
        "from refmask.conformance.runner import resolve_backend, run_case\n\n"
        f"case = Case(\n    mask={mask},\n    {args},\n)\n"
        f"result = run_case(resolve_backend({target!r}), case)\n"
        "print(result.verdict, result.reason)\n"
    )


def fuzz(target: Any, *, max_examples: int = 200, dtypes: Sequence[str] = DTYPES,
         seed: int | None = None,
         stats: dict | None = None) -> tuple[Case, CaseResult, str] | None:
    """Judge ``target`` on random cases; returns None, or (shrunk case, result, reproducer) for
    the first case that does not pass or end as a documented policy/unsupported verdict.

    The result is ``run_case``'s, as ``refmask check`` gives it: a bug that the diagnosis
    (spec 5.4) names is named on the shrunk case. ``stats``, when given, is filled with the
    number of ``examples`` judged and how many were ``unsupported``, ``policy`` and ``fail``
    (a backend that cannot express most random cases is barely tested: say so)."""
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis.errors import NoSuchExample

    from .runner import resolve_backend, run_case

    adapter = resolve_backend(target)
    label = target if isinstance(target, str) else adapter.name

    counts = {"examples": 0, "pass": 0, "policy": 0, "fail": 0, "unsupported": 0}

    def fails(case):
        verdict = run_case(adapter, case, explain=False).verdict  # fast: most cases pass
        if verdict == "fail":
            verdict = run_case(adapter, case).verdict  # a policy is not a failure
        counts["examples"] += 1
        counts[verdict] = counts.get(verdict, 0) + 1
        return verdict == "fail"

    options = settings(max_examples=max_examples, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck),
                       phases=[Phase.generate, Phase.shrink])
    try:
        case = find(cases(dtypes=dtypes), fails, settings=options,
                    random=None if seed is None else random.Random(seed))
    except NoSuchExample:
        return None
    finally:
        if stats is not None:
            stats.update(counts)
    return case, run_case(adapter, case), reproducer(case, label)
