"""Catalog v2: coverage per dtype, long rows, masked keys that outscore the kept ones.

The two kernels below are written here from the spec's formulas (independently of
refmask.attention), each with one departure real kernels have: a softmax denominator
accumulated in float16, and masking by adding a finite -1e4 instead of -inf.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from refmask.case import FLAGS, _nodes, case_inputs
from refmask.conformance.cases import LONG_ROW, catalog
from refmask.conformance.runner import check

LOW_PRECISION = ("float16", "bfloat16")


def _aligned_nodes(case, kind):
    return [node for node in _nodes(case.mask) if node.kind == kind]


def _offset_alignment(case, node) -> bool:
    """An alignment that shifts query positions: an explicit offset, or bottom-right with
    Tq != Tk (the shift Tk - Tq)."""
    return node.align.kind == "offset" or (node.align.kind == "bottom_right"
                                           and case.q_len != case.k_len)


#: Conventions and combinations a kernel gets wrong together, beyond the single flags.
COMBINATIONS = {
    "ALiBi abs": lambda c: c.alibi is not None and c.alibi.convention == "abs",
    "ALiBi signed": lambda c: c.alibi is not None and c.alibi.convention == "signed",
    "non-square ALiBi": lambda c: c.alibi is not None and c.q_len != c.k_len,
    "softcap with bias": lambda c: c.softcap is not None and c.bias,
    "softcap with ALiBi": lambda c: c.softcap is not None and c.alibi is not None,
    "explicit scale": lambda c: c.scale is not None,
    "chunked with an offset": lambda c: any(_offset_alignment(c, n)
                                            for n in _aligned_nodes(c, "chunked")),
    "block-causal with an offset": lambda c: any(_offset_alignment(c, n)
                                                 for n in _aligned_nodes(c, "block_causal")),
    "bottom-right with valid lengths": lambda c: any(
        getattr(n, "align", None) is not None and n.align.kind == "bottom_right"
        and n.align.k_lengths is not None for n in _nodes(c.mask)),
    "KV-cache offset with a window": lambda c: any(
        n.align.kind == "offset" for n in _aligned_nodes(c, "sliding_window")),
    "sinks under a mask": lambda c: c.sinks and c.mask is not None,
    "dropout under a mask": lambda c: c.dropout_rate is not None and c.mask is not None,
}


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_every_flag_and_convention_is_in_at_least_three_cases_per_dtype(dtype):
    cases = catalog([dtype])
    counts = Counter(flag for case in cases for flag in case.flags)
    counts.update(name for case in cases for name, has in COMBINATIONS.items() if has(case))
    expected = set(FLAGS) - {"LowPrecision"} | set(COMBINATIONS)
    if dtype in LOW_PRECISION:
        assert counts["LowPrecision"] == len(cases)
    thin = {name: counts[name] for name in sorted(expected) if counts[name] < 3}
    assert not thin, f"{dtype}: features in fewer than 3 cases: {thin}"


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_every_dtype_has_long_rows_and_rows_longer_than_float16_counts(dtype):
    def kept_per_row(case):
        return case.keep().sum(axis=-1).max()

    long_rows = [c for c in catalog([dtype]) if c.k_len >= LONG_ROW]
    assert len(long_rows) >= 3 and all("LongRow" in c.flags for c in long_rows)
    # float16 counts 1 + 1 + ... exactly up to 2048 and no further
    assert sum(kept_per_row(c) > LONG_ROW for c in long_rows) >= 3


def _alibi(case) -> np.ndarray:
    """(Hq, Tq, Tk) ALiBi bias from the definition: m_h * (pk - pq) ("signed"), pk = j,
    pq = i + offset, for a batch-independent alignment."""
    align = case.alibi.align
    offset = {"top_left": 0, "bottom_right": case.k_len - case.q_len}.get(align.kind)
    if offset is None:
        (offset,) = align.offsets
    assert case.alibi.convention == "signed", "test written for signed ALiBi"
    i, j = np.arange(case.q_len)[:, None], np.arange(case.k_len)[None, :]
    return np.asarray(case.alibi.slopes, np.float64)[:, None, None] * (j - (i + offset))


def test_masked_keys_outscore_every_kept_key_by_2e4_in_the_flagged_cases():
    flagged = [c for c in catalog() if "MaskedKeysScoreHigh" in c.flags]
    assert Counter(c.dtype for c in flagged) == {d: 3 for d in
                                                 ("float64", "float32") + LOW_PRECISION}
    for case in flagged:
        x = case_inputs(case)
        q, k = (np.asarray(x[n], np.float64) for n in ("q", "k"))
        scale = case.scale if case.scale is not None else case.qk_dim ** -0.5
        s = scale * np.einsum("bhid,bhjd->bhij", q, k)  # Hq == Hkv in these cases
        if case.softcap is not None:
            s = case.softcap * np.tanh(s / case.softcap)
        s = s + _alibi(case)[None]
        keep = case.keep()
        gap = (np.where(keep, -np.inf, s).max(-1) - np.where(keep, s, -np.inf).max(-1))
        assert keep.any(-1).all() and (~keep).any(-1).all(), case.id
        assert gap.min() >= 2e4, (case.id, gap.min())


def kernel(q, k, v, call, *, mask_value=None, float16_denominator=False):
    """Attention from the spec in float32 (float64 for float64 inputs), returning (out, lse).

    mask_value: None masks with -inf; a number is *added* to masked scores, and rows without a
    kept key are zeroed from the mask (as kernels that count a row's keys do).
    float16_denominator: the softmax denominator is a float16 running sum over the keys."""
    work = np.float64 if q.dtype == np.float64 else np.float32
    q, k, v = (np.asarray(x, work) for x in (q, k, v))
    q_heads, kv_heads = q.shape[1], k.shape[1]
    g = np.arange(q_heads) // (q_heads // kv_heads)
    s = work(call.scale) * np.einsum("bhid,bhjd->bhij", q, k[:, g])
    if call.softcap is not None:
        s = work(call.softcap) * np.tanh(s / work(call.softcap))
    if call.bias is not None:
        s = s + np.asarray(call.bias, work)
    if mask_value is None:
        s = np.where(call.keep, s, -np.inf)
    else:
        s = s + np.where(call.keep, 0, mask_value).astype(work)
    sink = (np.asarray(call.sinks, work)[None, :, None] if call.sinks is not None
            else np.full((1, q_heads, 1), -np.inf, work))
    top = np.maximum(s.max(-1, initial=-np.inf), sink)
    shift = np.where(np.isfinite(top), top, 0)
    p = np.exp(s - shift[..., None])
    if float16_denominator:
        total = np.zeros(p.shape[:-1], np.float16)
        for j in range(p.shape[-1]):
            total = (total + p[..., j].astype(np.float16)).astype(np.float16)
        total = total.astype(work)
    else:
        total = p.sum(-1)
    total = total + np.exp(sink - shift)
    if call.dropout_keep is not None:
        p = p * call.dropout_keep / work(1 - call.dropout_rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.einsum("bhij,bhjd->bhid", p, v[:, g]) / total[..., None]
        lse = np.log(total) + shift
    empty = ~np.isfinite(top)
    if mask_value is not None and call.sinks is None:
        empty |= ~call.keep.any(-1)
    return np.where(empty[..., None], 0, out), np.where(empty, -np.inf, lse)


def _verdicts(fn, cases) -> dict:
    return {r.case.id: r.verdict for r in check(fn, cases=cases).results}


def _beyond_out(case) -> bool:
    """The case asks for score stages or has a temperature: a user function returning
    (out, lse) without a temperature input is ``unsupported`` there (spec 3.9, 3.2.3)."""
    return bool(case.scores) or case.query_scale is not None


def test_the_kernel_written_here_passes_the_whole_catalog():
    """The control for the two tests below: without its departure the kernel passes."""
    cases = catalog()
    verdicts = _verdicts(kernel, cases)
    beyond = {c.id for c in cases if _beyond_out(c)}
    assert {verdicts[i] for i in beyond} == {"unsupported"}
    assert {v for i, v in verdicts.items() if i not in beyond} == {"pass"}, [
        i for i, v in verdicts.items() if v != "pass" and i not in beyond]


def test_masking_by_adding_minus_1e4_fails_exactly_the_cases_whose_masked_keys_score_high():
    def minus_1e4(q, k, v, call):
        return kernel(q, k, v, call, mask_value=-1e4)

    cases = catalog()
    verdicts = _verdicts(minus_1e4, cases)
    high = {c.id for c in cases if "MaskedKeysScoreHigh" in c.flags}
    assert len(high) == 12
    assert {i for i, v in verdicts.items() if v == "fail"} == high
    beyond = {c.id for c in cases if _beyond_out(c)}
    assert {v for i, v in verdicts.items() if i not in high | beyond} == {"pass"}


def _float16_denominator(q, k, v, call):
    return kernel(q, k, v, call, float16_denominator=True)


def _kept_keys(case) -> int:
    return int(case.keep().sum(axis=-1).max(initial=0))


def test_a_float16_denominator_passes_rows_of_fewer_than_1024_keys():
    """Up to a few hundred keys a float16 running sum's rounding (about n * 2**-12 relative,
    terms <= 1) stays below the case dtype's own rounding of the output: no verdict."""
    short = [c for c in catalog(LOW_PRECISION) if _kept_keys(c) < 1024 and not _beyond_out(c)]
    assert set(_verdicts(_float16_denominator, short).values()) == {"pass"}


def test_a_float16_denominator_fails_every_long_row():
    """A float16 running sum stops growing at 2048 (2048 + 1 rounds to 2048), so rows of
    >= 2048 kept keys fail in both low-precision dtypes; in float16, whose output rounding is
    8x finer than bfloat16's, the accumulated rounding of >= 1024 keys already shows."""
    longer = [c for c in catalog(LOW_PRECISION)
              if "MaskedKeysScoreHigh" not in c.flags
              and (_kept_keys(c) >= 2048 or (c.dtype == "float16" and _kept_keys(c) >= 1024))]
    assert len(longer) >= 12
    verdicts = _verdicts(_float16_denominator, longer)
    assert set(verdicts.values()) == {"fail"}, verdicts
