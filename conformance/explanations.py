"""Named alternative semantics: what an output matches when it does not match the spec.

When an implementation misses the golden output, the runner (:func:`diagnose`) recomputes the
case under *every* applicable alternative below, measures how far the output is from each
(the residual: the largest per-element error in units of the tolerance of spec 5.2), and names
the alternative that explains the output best:

* kind ``"policy"``: a documented convention some peer follows (empty rows give NaN, causal is
  top-left, the LSE is in base 2, ...). The verdict is ``policy`` and names it.
* kind ``"bug"``: a known way to get attention wrong (``h % Hkv`` head mapping, softcap after
  the mask, multiplicative masking, ...). The verdict stays ``fail`` but names the bug and
  gives a one-line fix.
* kind ``"empty_rows_only"``: a finite masking constant (-1e4, -1e9, finfo.min, ...): a policy
  when it changes only the empty rows of the case, a bug when it also changes kept rows
  (masked keys scoring far above the kept ones leak through).

Every alternative is one declarative :class:`Explanation` record: a name, a kind, the *slot*
of the computation it changes (mask, empty_rows, scale, softcap, ...), a description, a fix
hint, ``applies(case)`` and ``changes(case) -> dict`` -- keyword arguments of
:func:`alternative`, one float64 implementation of attention with a switch for every known
departure. Because the switches are independent, any two records of different slots compose
(their ``changes`` merge), and every alternative keeps every other score feature of the case
(sinks, dropout, softcap, bias, ALiBi, GQA, alignment offsets and valid lengths). Mask edits
are generated from the mask's JSON tree (every aligned node re-aligned, every window edge,
padding length, chunk and prefix size moved by one key, ...), so they apply to any mask,
combined or per-head, not to catalog cases by name.

A float64 (or float32) result computed internally in a lower precision is named by judging it
again with the tolerance of float32, float16 and bfloat16 (``computed_in=float32``), composed
with the alternatives, so its own conventions still show. A failure that no alternative
explains is localised (:func:`localise`): which rows, heads and batch entries are off, in mask
terms ("only empty rows", "only heads >= Hkv", "only rows whose kept keys include key 0").
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from refmask import masks as m
from refmask.adapters.common.translate import float64_inputs
from refmask.attention import Alibi
from refmask.case import Case, numpy_dtype, to_bhtd

from .tolerance import (
    ACCUMULATION,
    AGGREGATE_FLOOR,
    C_SIGMA,
    EPS,
    F_AGGREGATE,
    F_ELEMENT,
    ForwardModel,
    weighted_rms,
)

_UNSET = object()


@dataclass(frozen=True)
class Explanation:
    """A named alternative: ``alternative(case, values, **changes(case))`` computes it.

    slot: the part of the computation the alternative changes; two explanations compose
    when their slots differ (or are both ``"free"``).
    """

    name: str
    kind: str
    slot: str
    description: str
    fix: str
    applies: Callable[[Case], bool]
    changes: Callable[[Case], dict]
    lse_free_on_empty_rows: bool = False


def compose(first: Explanation, second: Explanation) -> Explanation:
    """Both alternatives at once (e.g. top-left causal *and* mean-of-V empty rows, which is
    what a backend gives when its causal switch empties rows the spec keeps)."""
    kinds = {first.kind, second.kind}
    kind = "bug" if "bug" in kinds else ("empty_rows_only" if "empty_rows_only" in kinds
                                          else "policy")
    return Explanation(
        f"{first.name} + {second.name}", kind, f"{first.slot}+{second.slot}",
        f"{first.description}; and {second.description}",
        "; ".join(f for f in (first.fix, second.fix) if f),
        lambda c: first.applies(c) and second.applies(c),
        lambda c: {**first.changes(c), **second.changes(c)},
        first.lse_free_on_empty_rows or second.lse_free_on_empty_rows)


def composable(first: Explanation, second: Explanation) -> bool:
    slots_a, slots_b = set(first.slot.split("+")), set(second.slot.split("+"))
    return not (slots_a & slots_b)


# --- one float64 attention with a switch for every departure ---------------------------------

def default_scale(case: Case) -> float:
    return case.scale if case.scale is not None else 1.0 / math.sqrt(case.qk_dim)


def _keep(case: Case, mask) -> np.ndarray:
    if mask is None:
        return np.ones((case.batch, case.q_heads, case.q_len, case.k_len), dtype=bool)
    return np.broadcast_to(np.asarray(mask.materialize(case.batch, case.q_heads, case.q_len,
                                                       case.k_len)),
                           (case.batch, case.q_heads, case.q_len, case.k_len))


def _in_dtype(x, dtype):
    return np.asarray(x, np.float64).astype(numpy_dtype(dtype)).astype(np.float64)


def _sequential_sum(x, axis: int, dtype: str):
    """Left-to-right sum rounded to ``dtype`` after every addition (a low-precision
    accumulator)."""
    np_dtype = numpy_dtype(dtype)
    moved = np.moveaxis(np.asarray(x, np.float64), axis, 0)
    total = np.zeros(moved.shape[1:], np_dtype)
    for term in moved:
        total = (total.astype(np.float64) + term).astype(np_dtype)
    return total.astype(np.float64)


def alternative(case: Case, values: dict, *, mask=_UNSET, scale: float | None = None,
                kv_map: str = "repeat", softcap=_UNSET, softcap_at: str = "before_bias",
                alibi=_UNSET, masking: str = "neg_inf", constant: float | None = None,
                empty_rows: str | None = None, sinks: str = "spec", dropout: str = "scaled",
                lse_base: float = math.e, max_subtract: bool = True,
                accumulate: str | None = None) -> tuple:
    """(out BHTD, lse, weights) of attention in float64 with the named departures from spec
    3.2; weights (B, Hq, Tq, Tk) are the factors multiplied into V.

    mask: another Mask (default the case's); scale: another scale; kv_map: "repeat"
    (``h // (Hq/Hkv)``) or "modulo" (``h % Hkv``); softcap / softcap_at: "before_bias" (spec),
    "after_bias", "after_mask", "tanh_unscaled" (``tanh(t/cap)``, no ``cap *``), "ignored";
    alibi: another Alibi or None; masking: "neg_inf" (spec), "add" / "replace" (the masked
    scores get ``s + C`` / ``C`` with ``C = constant`` rounded to the case dtype, the addition
    rounded to the accumulation dtype), "multiply" (scores times the 0/1 mask), "after_softmax"
    (weights zeroed after an unmasked softmax, not renormalised); empty_rows: a policy of spec
    3.3; sinks: "spec", "dropped", "out_of_lse" (the output uses the sink, the LSE omits it);
    dropout: "scaled" (spec), "unscaled", "ignored", "inverted" (the keep pattern read as a
    drop pattern); lse_base: the LSE's base; max_subtract=False: exp of the raw scores in the
    case dtype (overflow as the kernel would); accumulate: a dtype in which the denominator and
    ``P @ V`` are summed left to right.
    """
    q = to_bhtd(case, values["q"])
    k, v = to_bhtd(case, values["k"]), to_bhtd(case, values["v"])
    group = case.q_heads // case.kv_heads
    heads = [h // group if kv_map == "repeat" else h % case.kv_heads
             for h in range(case.q_heads)]
    k, v = k[:, heads], v[:, heads]
    keep = _keep(case, case.mask if mask is _UNSET else mask)
    cap = case.softcap if softcap is _UNSET else softcap
    alibi = case.alibi if alibi is _UNSET else alibi
    with np.errstate(all="ignore"):
        s = (default_scale(case) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
        if cap is not None and softcap_at == "before_bias":
            s = cap * np.tanh(s / cap)
        elif cap is not None and softcap_at == "tanh_unscaled":
            s = np.tanh(s / cap)
        if "bias" in values:
            s = s + values["bias"]
        if alibi is not None:
            s = s + alibi.bias(case.batch, case.q_heads, case.q_len, case.k_len)
        if cap is not None and softcap_at == "after_bias":
            s = cap * np.tanh(s / cap)
        unmasked = s
        if masking == "neg_inf":
            s = np.where(keep, s, -np.inf)
        elif masking in ("add", "replace"):
            c = float(_in_dtype(constant, case.dtype))
            shifted = _in_dtype(s + c, ACCUMULATION[case.dtype]) if masking == "add" else c
            s = np.where(keep, s, shifted)
        elif masking == "multiply":
            s = s * keep
        if cap is not None and softcap_at == "after_mask":
            s = cap * np.tanh(s / cap)
        sink = None
        if "sinks" in values and sinks != "dropped":
            sink = np.broadcast_to(values["sinks"].reshape(1, -1, 1, 1), s.shape[:-1] + (1,))
        top = s.max(axis=-1, keepdims=True, initial=-np.inf)
        if sink is not None:
            top = np.maximum(top, sink)
        empty = np.isneginf(top)
        shift = np.where(empty, 0.0, top) if max_subtract else np.zeros(top.shape)
        weights = np.exp(s - shift)
        if not max_subtract:
            weights = _in_dtype(weights, case.dtype)
        total = (_sequential_sum(weights, -1, accumulate)[..., None] if accumulate
                 else weights.sum(axis=-1, keepdims=True))
        sink_weight = None if sink is None else np.exp(sink - shift)
        denominator = total if sink_weight is None else total + sink_weight
        p = weights / np.where(empty, 1.0, denominator)
        lse = np.where(empty, -np.inf, shift + np.log(np.where(empty, 1.0, denominator)))
        if sinks == "out_of_lse" and sink_weight is not None:
            lse = np.where(empty, -np.inf, shift + np.log(np.where(empty, 1.0, total)))
        policy = case.empty_rows if empty_rows is None else empty_rows
        if masking in ("add", "replace"):
            p = np.where(empty, np.nan, p)  # a finite constant that overflowed to -inf
        elif masking == "neg_inf" and case.k_len:
            if policy == "nan":
                p = np.where(empty, np.nan, p)
            elif policy == "uniform":
                p = np.where(empty, 1.0 / case.k_len, p)
            elif policy == "unmasked":
                top_u = unmasked.max(axis=-1, keepdims=True)
                e_u = np.exp(unmasked - top_u)
                p = np.where(empty, e_u / e_u.sum(axis=-1, keepdims=True), p)
            else:
                p = np.where(empty, 0.0, p)
        if masking == "after_softmax":
            p = p * keep
        if "dropout_keep" in values and dropout != "ignored":
            pattern = values["dropout_keep"] if dropout != "inverted" else ~values["dropout_keep"]
            p = p * pattern
            if dropout != "unscaled":
                p = p / (1.0 - case.dropout_rate)
        if accumulate:
            out = _sequential_sum(p[..., :, :, None] * v[..., None, :, :], -2, accumulate)
        else:
            out = p @ v
    return out, lse[..., 0] / math.log(lse_base), p


# --- mask edits, generated from the mask's JSON tree ------------------------------------------

def _walk_edit(tree, edit):
    """Every tree obtained by applying ``edit`` to one node (edit returns a node or None)."""
    results = []

    def walk(node, rebuild):
        if isinstance(node, dict):
            changed = edit(node)
            if changed is not None and changed != node:
                results.append(rebuild(changed))
            for key, value in node.items():
                if isinstance(value, (dict, list)):
                    walk(value, lambda new, key=key, node=node, rebuild=rebuild:
                         rebuild({**node, key: new}))
        elif isinstance(node, list):
            for n, value in enumerate(node):
                walk(value, lambda new, n=n, node=node, rebuild=rebuild:
                     rebuild(node[:n] + [new] + node[n + 1:]))

    walk(tree, lambda new: new)
    return results


def _edit_everywhere(tree, edit):
    """The tree with ``edit`` applied to every node it changes (None = unchanged)."""
    if isinstance(tree, dict):
        node = {key: _edit_everywhere(value, edit) for key, value in tree.items()}
        changed = edit(node)
        return node if changed is None else changed
    if isinstance(tree, list):
        return [_edit_everywhere(value, edit) for value in tree]
    return tree


def _mask_json(case: Case):
    return None if case.mask is None else json.loads(json.dumps(case.mask.to_json()))


def _kinds(case: Case) -> set:
    found = set()

    def walk(node):
        if isinstance(node, dict):
            found.add(node.get("kind"))
            if "align" in node:
                align = node["align"]
                found.add("align:" + (align if isinstance(align, str) else next(iter(align))))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(_mask_json(case))
    return found


def _predicate_modules(tree) -> list:
    """Modules of the predicates in a mask tree (already imported by the live mask)."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if node.get("kind") == "predicate":
                found.add(str(node.get("fn")).partition(":")[0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return sorted(found)


def _from_json(tree):
    try:
        return m.from_json(tree, trust=_predicate_modules(tree))
    except (ValueError, TypeError, KeyError):
        return None


def _mask_edit(case: Case, edit, everywhere: bool = True):
    tree = _mask_json(case)
    if tree is None:
        return None
    if everywhere:
        new = _edit_everywhere(tree, edit)
        return None if new == tree else _from_json(new)
    return None


def _align_kind(node) -> str | None:
    align = node.get("align")
    if align is None:
        return None
    return align if isinstance(align, str) else next(iter(align))


def _realign(source: str, target):
    def edit(node):
        kind = _align_kind(node)
        if kind != source:
            return None
        if source == "bottom_right" and not isinstance(node["align"], str) and target == (
                "bottom_right"):
            return {**node, "align": "bottom_right"}
        return {**node, "align": target}
    return edit


def _offset_shift(delta: int):
    def edit(node):
        if _align_kind(node) != "offset":
            return None
        return {**node, "align": {"offset": [o + delta for o in node["align"]["offset"]]}}
    return edit


def _field_shift(kind: str, key: str, delta: int, minimum: int = 0):
    def edit(node):
        if node.get("kind") != kind or node.get(key) is None:
            return None
        value = node[key]
        if isinstance(value, list):
            return {**node, key: [max(minimum, x + delta) for x in value]}
        return {**node, key: max(minimum, value + delta)}
    return edit


def _replace_kind(kind: str, build):
    def edit(node):
        return build(node) if node.get("kind") == kind else None
    return edit


def _padding_lengths(delta: int):
    """Padding lengths moved by ``delta``, kept within [0, T] of the padded axis."""
    def edit(node, case):
        kind = node.get("kind")
        if kind not in ("key_padding", "query_padding"):
            return None
        top = case.k_len if kind == "key_padding" else case.q_len
        lengths = node["lengths"]
        moved = ([min(top, max(0, x + delta)) for x in lengths] if isinstance(lengths, list)
                 else min(top, max(0, lengths + delta)))
        return {**node, "lengths": moved}
    return edit


def _causal_strict(node):
    return {"kind": "and", "masks": [node, {"kind": "not", "mask": {
        "kind": "sliding_window", "left": 0, "right": 0, "align": node["align"]}}]}


def _padding_flip(kind: str, other: str):
    return _replace_kind(kind, lambda node: {**node, "kind": other})


def _padding_side(node):
    return {**node, "side": "left" if node.get("side") == "right" else "right"}


def _mask_record(name, kind, description, fix, needs: set, edit):
    """An explanation that edits the mask's JSON tree with ``edit`` wherever it applies;
    ``edit(node)`` or, for edits that need the shapes, ``edit(node, case)``."""
    needs_case = len(inspect.signature(edit).parameters) == 2

    def bound(case):
        return (lambda node: edit(node, case)) if needs_case else edit

    def changes(case):
        return {"mask": _mask_edit(case, bound(case))}

    def applies(case):
        return bool(needs & _kinds(case)) and _mask_edit(case, bound(case)) is not None

    return Explanation(name, kind, "mask", description, fix, applies, changes)


def _mask_explanations() -> list[Explanation]:
    return [
        _mask_record("causal=top_left", "policy",
                     "the mask is aligned top-left (SDPA is_causal, JAX, Keras, ONNX without "
                     "a KV cache) where the spec says bottom-right",
                     "pass the bottom-right offset Tk - Tq (FlashAttention >= 2.1 semantics) "
                     "or build the mask with align='bottom_right'",
                     {"align:bottom_right"}, _realign("bottom_right", "top_left")),
        _mask_record("causal=bottom_right", "policy",
                     "the mask is aligned bottom-right (FlashAttention >= 2.1, ONNX with a KV "
                     "cache) where the spec says top-left",
                     "align query 0 with key 0 (offset 0)",
                     {"align:top_left"}, _realign("top_left", "bottom_right")),
        _mask_record("alignment=offset_ignored", "bug",
                     "the KV-cache offset is ignored: queries are aligned top-left",
                     "add the number of cached tokens to the query positions",
                     {"align:offset"}, _realign("offset", "top_left")),
        _mask_record("alignment=offset_as_bottom_right", "bug",
                     "the KV-cache offset is replaced by Tk - Tq (bottom-right)",
                     "use the cache length per batch entry, not Tk - Tq",
                     {"align:offset"}, _realign("offset", "bottom_right")),
        _mask_record("alignment=offset_plus_1", "bug", "the query offset is one too large",
                     "the offset is the number of cached keys before query 0",
                     {"align:offset"}, _offset_shift(+1)),
        _mask_record("alignment=offset_minus_1", "bug", "the query offset is one too small",
                     "the offset is the number of cached keys before query 0",
                     {"align:offset"}, _offset_shift(-1)),
        _mask_record("alignment=valid_lengths_ignored", "bug",
                     "bottom-right alignment uses the padded lengths Tk - Tq instead of the "
                     "per-batch valid lengths",
                     "align each batch entry on its own valid lengths (seqused_k / cu_seqlens)",
                     {"align:bottom_right"}, _realign("bottom_right", "bottom_right")),
        _mask_record("causal=diagonal_excluded", "bug",
                     "the causal mask excludes the diagonal (triu(ones, 0) instead of "
                     "triu(ones, 1) as the masked set): a query cannot see its own key",
                     "mask keys with pk > pq only (torch.triu(..., diagonal=1))",
                     {"causal"}, _replace_kind("causal", _causal_strict)),
        _mask_record("window=one_key_wider", "policy",
                     "the sliding window keeps one key more on the left (W+1 keys: 'q - kv <= "
                     "W' read as W keys, the HF eager drift of transformers #29623)",
                     "a window of W keys including self is (W-1, 0) in FlashAttention terms",
                     {"sliding_window"}, _field_shift("sliding_window", "left", +1)),
        _mask_record("window=one_key_narrower", "policy",
                     "the sliding window keeps one key less on the left (W-1 keys: (W-1, 0) "
                     "applied to a window already counted without self)",
                     "a window of W keys including self is (W-1, 0) in FlashAttention terms",
                     {"sliding_window"}, _field_shift("sliding_window", "left", -1)),
        _mask_record("window=right_plus_1", "bug",
                     "the sliding window reaches one key further to the right (into the "
                     "future for a causal window)",
                     "the right bound is inclusive: pk <= pq + right",
                     {"sliding_window"}, _field_shift("sliding_window", "right", +1)),
        _mask_record("window=right_minus_1", "bug",
                     "the sliding window stops one key short on the right (excludes the "
                     "diagonal for a causal window)",
                     "the right bound is inclusive: pk <= pq + right",
                     {"sliding_window"}, _field_shift("sliding_window", "right", -1)),
        _mask_record("padding=keys_as_queries", "bug",
                     "the key-padding lengths are applied to the query rows (key vs query "
                     "padding confused)",
                     "a key-padding mask masks columns (keys), not rows",
                     {"key_padding"}, _padding_flip("key_padding", "query_padding")),
        _mask_record("padding=queries_as_keys", "bug",
                     "the query-padding lengths are applied to the keys",
                     "a query-padding mask empties rows, it does not mask keys",
                     {"query_padding"}, _padding_flip("query_padding", "key_padding")),
        _mask_record("padding=side_flipped", "bug",
                     "padding on the wrong side (left-padded read as right-padded or back)",
                     "check the tokenizer's padding_side and build the mask from it",
                     {"key_padding", "query_padding"},
                     lambda node: _padding_side(node) if node.get("kind") in (
                         "key_padding", "query_padding") else None),
        _mask_record("padding=lengths_plus_1", "bug", "the valid lengths are one too large",
                     "lengths count valid tokens, not the index of the last one",
                     {"key_padding", "query_padding"}, _padding_lengths(+1)),
        _mask_record("padding=lengths_minus_1", "bug", "the valid lengths are one too small",
                     "lengths count valid tokens, not the index of the last one",
                     {"key_padding", "query_padding"}, _padding_lengths(-1)),
        _mask_record("padding=ignored", "bug", "the padding mask is not applied",
                     "pass the attention / key-padding mask to the kernel",
                     {"key_padding", "query_padding"},
                     lambda node: {"kind": "full"} if node.get("kind") in (
                         "key_padding", "query_padding") else None),
        _mask_record("chunk=size_plus_1", "bug", "the chunk size is one too large",
                     "chunks are [n C, (n+1) C) in positions", {"chunked"},
                     _field_shift("chunked", "size", +1, 1)),
        _mask_record("chunk=size_minus_1", "bug", "the chunk size is one too small",
                     "chunks are [n C, (n+1) C) in positions", {"chunked"},
                     _field_shift("chunked", "size", -1, 1)),
        _mask_record("block_causal=size_plus_1", "bug", "the block size is one too large",
                     "blocks are [n T, (n+1) T) in positions", {"block_causal"},
                     _field_shift("block_causal", "block", +1, 1)),
        _mask_record("block_causal=size_minus_1", "bug", "the block size is one too small",
                     "blocks are [n T, (n+1) T) in positions", {"block_causal"},
                     _field_shift("block_causal", "block", -1, 1)),
        _mask_record("prefix=length_plus_1", "bug", "the bidirectional prefix is one too long",
                     "the prefix holds positions 0 .. P-1", {"prefix_lm"},
                     _field_shift("prefix_lm", "prefix", +1)),
        _mask_record("prefix=length_minus_1", "bug", "the bidirectional prefix is one too short",
                     "the prefix holds positions 0 .. P-1", {"prefix_lm"},
                     _field_shift("prefix_lm", "prefix", -1)),
        _mask_record("documents=ignored", "bug",
                     "packed documents attend across document boundaries",
                     "build the mask from cu_seqlens / segment ids", {"documents"},
                     lambda node: {"kind": "full"} if node.get("kind") == "documents" else None),
        Explanation("mask_inverted", "bug", "mask",
                    "mask polarity inverted (True read as 'masked', as nn.MultiheadAttention "
                    "does, where the spec says True = attend)",
                    "invert the boolean mask (True = attend) or pass it as attn_mask=~mask",
                    lambda c: c.mask is not None and bool(c.keep().any()),
                    lambda c: {"mask": ~c.mask}),
        Explanation("mask_ignored", "bug", "mask", "the mask is not applied at all",
                    "pass the mask to the kernel", lambda c: c.mask is not None,
                    lambda c: {"mask": None}),
        Explanation("mask_multiplied", "bug", "masking",
                    "scores multiplied by the 0/1 mask instead of set to -inf: masked keys "
                    "keep weight exp(0)", "use masked_fill(~keep, -inf), not scores * keep",
                    lambda c: c.mask is not None, lambda c: {"masking": "multiply"}),
        Explanation("mask_after_softmax", "bug", "masking",
                    "mask applied after the softmax without renormalising",
                    "mask the scores before the softmax",
                    lambda c: c.mask is not None, lambda c: {"masking": "after_softmax"}),
    ]


def _finite_constants(case: Case) -> list[tuple[str, float]]:
    info = np.finfo(numpy_dtype(case.dtype))
    return [("-1e4", -1e4), ("-1e9", -1e9), ("finfo.min", float(info.min)),
            ("-0.7*finfo.max", -0.7 * float(info.max))]


def _empty_row_explanations() -> list[Explanation]:
    has_mask = lambda c: c.mask is not None or c.k_len == 0  # noqa: E731
    records = [
        Explanation("empty_rows=nan", "policy", "empty_rows",
                    "empty rows give NaN (plain softmax: nn.MultiheadAttention with "
                    "need_weights=True, ONNX <= 1.22)",
                    "return 0 for rows with no kept key (torch >= 2.5 SDPA semantics)",
                    has_mask, lambda c: {"empty_rows": "nan"}, True),
        Explanation("empty_rows=uniform", "policy", "empty_rows",
                    "empty rows give the mean of V (masked scores replaced by a finite "
                    "constant: JAX, Flax, Keras)",
                    "mask with -inf and return 0 for rows with no kept key",
                    has_mask, lambda c: {"empty_rows": "uniform"}, True),
        Explanation("empty_rows=unmasked", "policy", "empty_rows",
                    "empty rows give the unmasked softmax (a finite constant added to masked "
                    "scores: tf-keras, legacy BERT -10000)",
                    "mask with -inf and return 0 for rows with no kept key",
                    has_mask, lambda c: {"empty_rows": "unmasked"}, True),
        Explanation("empty_rows=zero_lse_free", "policy", "empty_rows",
                    "empty rows give output 0 with an LSE other than -inf (FlashAttention 2 "
                    "returns +inf)", "return lse = -inf for rows with no kept key",
                    has_mask, lambda c: {"empty_rows": "zero"}, True),
    ]
    for how, verb in (("add", "added to"), ("replace", "replacing")):
        for label, _ in (("-1e4", 0), ("-1e9", 0), ("finfo.min", 0), ("-0.7*finfo.max", 0)):
            def changes(c, how=how, label=label):
                value = dict(_finite_constants(c))[label]
                return {"masking": how, "constant": value}

            records.append(Explanation(
                f"mask_constant={label} ({how})", "empty_rows_only", "empty_rows",
                f"masked scores {verb} the finite constant {label} of the case dtype instead "
                "of set to -inf", "mask with -inf (masked_fill) and define empty rows "
                "explicitly; a finite constant leaks when masked scores exceed kept ones by "
                "more than |C|", has_mask, changes, True))
    return records


def _score_explanations() -> list[Explanation]:
    float64_only = lambda c: c.dtype == "float64"  # noqa: E731

    def float32_scale(case):
        return {"scale": float(np.float32(default_scale(case)))}

    def float32_sqrt_scale_squared(case):
        root = np.float32(math.sqrt(np.float32(default_scale(case))))
        return {"scale": float(np.float64(root) ** 2)}

    return [
        Explanation("gqa=h_mod_hkv", "bug", "gqa",
                    "query head h reads kv head h % Hkv (tile order) instead of h // (Hq/Hkv) "
                    "(repeat_interleave order)",
                    "expand kv heads with repeat_interleave(Hq // Hkv, dim=1), not repeat/tile",
                    lambda c: 1 < c.kv_heads < c.q_heads, lambda c: {"kv_map": "modulo"}),
        Explanation("scale=1/Dqk", "bug", "scale", "scores scaled by 1/Dqk instead of "
                    "1/sqrt(Dqk)", "scale = 1 / sqrt(head_dim)",
                    lambda c: c.scale is None and c.qk_dim > 1,
                    lambda c: {"scale": 1.0 / c.qk_dim}),
        Explanation("scale=1/sqrt(Dv)", "bug", "scale", "scores scaled by 1/sqrt(Dv) instead "
                    "of 1/sqrt(Dqk)", "take the scale from the query/key head dim",
                    lambda c: c.scale is None and c.qk_dim != c.v_dim,
                    lambda c: {"scale": 1.0 / math.sqrt(c.v_dim)}),
        Explanation("scale=none", "bug", "scale", "scores not scaled at all",
                    "multiply q @ k^T by the scale",
                    lambda c: default_scale(c) != 1.0, lambda c: {"scale": 1.0}),
        Explanation("scale=explicit_ignored", "bug", "scale",
                    "the explicit scale is ignored: 1/sqrt(Dqk) is used",
                    "forward the scale argument to the kernel",
                    lambda c: c.scale is not None and c.scale != 1.0 / math.sqrt(c.qk_dim),
                    lambda c: {"scale": 1.0 / math.sqrt(c.qk_dim)}),
        Explanation("scale=applied_twice", "bug", "scale", "the scale is applied twice "
                    "(q pre-scaled and scores scaled again)", "apply the scale once",
                    lambda c: c.scale is not None and c.scale != 1.0,  # default: = 1/Dqk
                    lambda c: {"scale": default_scale(c) ** 2}),
        Explanation("scale=float32", "bug", "scale",
                    "the scale is rounded to float32 before use (Keras' TensorFlow backend "
                    "casts the Python float through float32): a float64 accuracy bug",
                    "keep the scale in the compute dtype", float64_only, float32_scale),
        Explanation("scale=float32_sqrt_squared", "bug", "scale",
                    "q and k are each scaled by sqrt(scale) computed in float32 (an ONNX "
                    "function-body fallback): a float64 accuracy bug",
                    "compute sqrt(scale) in the compute dtype", float64_only,
                    float32_sqrt_scale_squared),
        Explanation("softcap_after_mask", "bug", "softcap",
                    "softcap applied after masking: tanh maps the masked -inf to -cap, so "
                    "masked keys leak weight exp(-cap)",
                    "apply cap * tanh(s / cap) before the bias and the mask",
                    lambda c: c.softcap is not None and c.mask is not None,
                    lambda c: {"softcap_at": "after_mask"}),
        Explanation("softcap_after_bias", "bug", "softcap",
                    "softcap applied to the biased scores (s + bias) instead of before the bias",
                    "apply cap * tanh(s / cap) to scale * q @ k^T, then add bias and ALiBi",
                    lambda c: c.softcap is not None and (c.bias or c.alibi is not None),
                    lambda c: {"softcap_at": "after_bias"}),
        Explanation("softcap=tanh_unscaled", "bug", "softcap",
                    "softcap computed as tanh(s / cap) without multiplying by cap",
                    "softcap is cap * tanh(s / cap)", lambda c: c.softcap is not None,
                    lambda c: {"softcap_at": "tanh_unscaled"}),
        Explanation("softcap=ignored", "bug", "softcap", "the softcap is not applied",
                    "apply cap * tanh(s / cap)", lambda c: c.softcap is not None,
                    lambda c: {"softcap": None}),
        Explanation("alibi=other_sign_convention", "policy", "alibi",
                    "ALiBi uses the other convention (-m|pq - pk| vs m(pk - pq)); they agree "
                    "only under a causal mask", "choose 'abs' (symmetric) or 'signed' "
                    "(causal models) explicitly",
                    lambda c: c.alibi is not None,
                    lambda c: {"alibi": Alibi(c.alibi.slopes, convention="signed" if
                                              c.alibi.convention == "abs" else "abs",
                                              align=c.alibi.align)}),
        Explanation("alibi=negated", "bug", "alibi",
                    "ALiBi slopes with the wrong sign (distant keys favoured)",
                    "ALiBi penalises distance: -m |pq - pk|",
                    lambda c: c.alibi is not None,
                    lambda c: {"alibi": Alibi([-x for x in c.alibi.slopes],
                                              convention=c.alibi.convention,
                                              align=c.alibi.align)}),
        Explanation("alibi=top_left", "policy", "alibi",
                    "ALiBi distances aligned top-left where the case aligns them "
                    "bottom-right", "align ALiBi positions like the causal mask",
                    lambda c: c.alibi is not None and c.alibi.align.kind != "top_left"
                    and c.q_len != c.k_len,
                    lambda c: {"alibi": Alibi(c.alibi.slopes, convention=c.alibi.convention,
                                              align="top_left")}),
        Explanation("alibi=bottom_right", "policy", "alibi",
                    "ALiBi distances aligned bottom-right where the case aligns them "
                    "top-left", "align ALiBi positions like the causal mask",
                    lambda c: c.alibi is not None and c.alibi.align.kind != "bottom_right"
                    and c.q_len != c.k_len,
                    lambda c: {"alibi": Alibi(c.alibi.slopes, convention=c.alibi.convention,
                                              align="bottom_right")}),
        Explanation("sink_dropped", "bug", "sinks", "the attention sink is ignored",
                    "add exp(sink_h) to the softmax denominator",
                    lambda c: c.sinks, lambda c: {"sinks": "dropped"}),
        Explanation("sink=out_of_lse", "bug", "sinks",
                    "the sink is in the softmax but left out of the returned LSE",
                    "lse = log(sum_j exp(s_ij) + exp(sink_h))",
                    lambda c: c.sinks, lambda c: {"sinks": "out_of_lse"}),
        Explanation("dropout_unscaled", "bug", "dropout",
                    "dropout keep-mask applied without 1/(1-rate)",
                    "divide the kept weights by 1 - rate",
                    lambda c: c.dropout_rate is not None, lambda c: {"dropout": "unscaled"}),
        Explanation("dropout=ignored", "bug", "dropout", "the dropout pattern is not applied",
                    "multiply the weights by keep / (1 - rate)",
                    lambda c: c.dropout_rate is not None, lambda c: {"dropout": "ignored"}),
        Explanation("dropout=inverted", "bug", "dropout",
                    "the dropout keep pattern is read as a drop pattern",
                    "True in the pattern means keep",
                    lambda c: c.dropout_rate is not None, lambda c: {"dropout": "inverted"}),
        Explanation("lse_base=2", "policy", "lse", "the LSE is in base 2 (FlashInfer)",
                    "divide a base-2 LSE by log2(e) (multiply by ln 2)",
                    lambda c: c.q_len > 0, lambda c: {"lse_base": 2.0}),
        Explanation("softmax=no_max_subtraction", "bug", "softmax",
                    "exp of the raw scores without subtracting the row maximum: overflows "
                    "in the case dtype", "subtract the row maximum before exp",
                    lambda c: c.q_len > 0 and c.k_len > 0,
                    lambda c: {"max_subtract": False}),
        Explanation("accumulation=case_dtype", "bug", "accumulation",
                    "the softmax denominator and P @ V are accumulated in the case dtype "
                    "(float16 / bfloat16) instead of float32",
                    "accumulate in float32 (acc_dtype=float32)",
                    lambda c: c.dtype in ("float16", "bfloat16") and c.k_len > 1 and (
                        c.batch * c.q_heads * c.q_len * c.k_len * c.v_dim <= 1 << 22),
                    lambda c: {"accumulate": c.dtype}),
    ]


def explanations() -> list[Explanation]:
    """Every single alternative (compositions are built by :func:`diagnose`)."""
    return [*_empty_row_explanations(), *_mask_explanations(), *_score_explanations()]


def by_name(name: str) -> Explanation:
    for explanation in explanations():
        if explanation.name == name:
            return explanation
    raise ValueError(f"explanations: unknown alternative {name!r}")


# --- judging an output against an alternative ------------------------------------------------

#: Precisions a float64 / float32 result may have been computed in internally.
LOWER_PRECISIONS = {"float64": ("float32", "bfloat16", "float16"),
                    "float32": ("bfloat16", "float16"), "float16": (), "bfloat16": ()}
#: A single alternative this close (residual in units of the tolerance) needs no pairs.
EXCELLENT = 0.25
#: Alternatives within this factor of the best residual are listed as runners-up.
RUNNER_UP_FACTOR = 2.0


@dataclass(frozen=True)
class Match:
    explanation: Explanation
    residual: float
    kind: str
    precision: str | None = None

    @property
    def name(self) -> str:
        return self.explanation.name + (f" + computed_in={self.precision}"
                                        if self.precision else "")


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` found: the best match (or None), runners-up, a localisation."""

    best: Match | None
    runners_up: tuple = ()
    localisation: str = ""
    closest: tuple = ()
    evaluated: int = 0
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        def one(match):
            return {"name": match.name, "kind": match.kind,
                    "residual": _json_float(match.residual),
                    "fix": match.explanation.fix}
        return {"best": None if self.best is None else one(self.best),
                "runners_up": [one(x) for x in self.runners_up],
                "closest": [one(x) for x in self.closest],
                "localisation": self.localisation, "evaluated": self.evaluated}


def _json_float(x: float):
    return x if np.isfinite(x) else str(x)


def _rows_changed(alt: np.ndarray, golden: np.ndarray, weight: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        differs = ~((np.abs(alt - golden) <= F_ELEMENT * weight) | (
            np.isnan(alt) & np.isnan(golden)) | (alt == golden))
    return differs


def _alt_weight(alt: np.ndarray, weights: np.ndarray, golden: np.ndarray,
                weight: np.ndarray, v: np.ndarray, eps: float) -> tuple:
    """(w, changed rows) for an alternative: the golden model, and on the rows the alternative
    changes at least the rounding part R of spec 5.2 for the alternative's own weights a_ij:
    ``eps |o| + min(eps sum_j |a_ij v_jd|, C sqrt(sum_j (eps a_ij v_jd)^2))``."""
    changed = _rows_changed(alt, golden, weight).any(axis=-1, keepdims=True)
    if not changed.any():
        return weight, changed
    a = np.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0)
    with np.errstate(all="ignore"):
        rounding = eps * (np.abs(np.nan_to_num(alt, nan=0.0, posinf=0.0, neginf=0.0))
                          + np.minimum(np.abs(a) @ np.abs(v),
                                       C_SIGMA * np.sqrt(a ** 2 @ v ** 2)))
    return np.where(changed, np.maximum(weight, rounding), weight), changed


def residual(actual: np.ndarray, target: np.ndarray, weight: np.ndarray,
             ignore_rows: np.ndarray | None = None) -> float:
    """max |actual - target| / (F_ELEMENT w) over comparable entries; inf for NaN/inf
    placed differently; ``ignore_rows`` (broadcastable bool) are not compared."""
    actual = np.asarray(actual, np.float64)
    if actual.shape != target.shape:
        return math.inf
    use = np.ones(target.shape, bool) if ignore_rows is None else ~np.broadcast_to(
        ignore_rows, target.shape)
    a, t, w = actual[use], target[use], weight[use]
    special = (np.isnan(a) != np.isnan(t)) | (np.isinf(a) != np.isinf(t)) | (
        np.isinf(a) & np.isinf(t) & (np.sign(a) != np.sign(t)))
    if special.any():
        return math.inf
    finite = np.isfinite(t)
    if not finite.any():
        return 0.0
    diff = np.abs(a[finite] - t[finite])
    tol = F_ELEMENT * w[finite]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / tol)
    return float(np.nanmax(np.where(np.isnan(ratio), np.inf, ratio)))


class _Judge:
    """Compares one output with alternatives under the model of one precision."""

    def __init__(self, output, golden: dict, model: ForwardModel, naive_agg: float,
                 precision: str, v: np.ndarray):
        self.output, self.golden, self.model = output, golden, model
        self.naive_agg, self.eps, self.v = naive_agg, EPS[precision], v

    def judge(self, alt_out, alt_lse, alt_weights, lse_free: bool) -> float:
        """The residual of the output against one alternative (<= 1: it matches)."""
        w_out, changed = _alt_weight(alt_out, alt_weights, self.golden["out"], self.model.out,
                                     self.v, self.eps)
        r = residual(self.output.out, alt_out, w_out)
        if np.isfinite(r):
            # the aggregate criterion where the golden model holds (rows the alternative
            # keeps as the spec computes them)
            agg = weighted_rms(np.asarray(self.output.out, np.float64) - alt_out,
                               np.where(changed, 0.0, w_out), alt_out)
            limit = max(F_AGGREGATE * self.naive_agg, AGGREGATE_FLOOR)
            r = max(r, agg / limit)
        if self.output.lse is not None and alt_lse is not None and np.isfinite(r):
            w_lse = np.where(_rows_changed(alt_lse, self.golden["lse"], self.model.lse),
                             np.maximum(self.model.lse, self.eps * (
                                 1.0 + np.abs(np.nan_to_num(alt_lse, posinf=0, neginf=0)))),
                             self.model.lse)
            ignore = np.isneginf(alt_lse) if lse_free else None
            r = max(r, residual(self.output.lse, alt_lse, w_lse, ignore))
        return r


def _values(case: Case, values: dict) -> np.ndarray:
    """v (B, Hq, Tk, Dv) with the kv heads expanded to query heads."""
    v = to_bhtd(case, values["v"])
    return np.repeat(v, max(1, case.q_heads // max(1, case.kv_heads)), axis=1)


def _declared(profile) -> list[str]:
    if profile is None:
        return []
    names = [f"empty_rows={profile.empty_rows}", f"causal={profile.causal_alignment}"]
    if profile.lse_base == "2":
        names.append("lse_base=2")
    if profile.empty_rows == "zero_lse_posinf":
        names.append("empty_rows=zero_lse_free")
    return names


def diagnose(case: Case, inputs: dict, output, golden: dict, model: ForwardModel,
             naive_agg: float, *, profile=None, model_for=None, top: int = 6) -> Diagnosis:
    """Every applicable alternative (singles, pairs with the closest singles and with the
    backend's declared conventions, mask edits with every empty-row policy), judged against
    ``output``; the best match at the case's precision, else at a lower internal precision.

    ``model_for(dtype) -> ForwardModel`` gives the model of another precision (for
    ``computed_in``); ``naive_agg`` is refmask's naive weighted RMS error of the case.
    """
    values = float64_inputs(inputs)
    with np.errstate(all="ignore"):
        spec_out, spec_lse, _ = alternative(case, values)
    cache: dict[str, tuple] = {}

    def compute(explanation):
        if explanation.name not in cache:
            try:
                with np.errstate(all="ignore"):
                    cache[explanation.name] = alternative(case, values,
                                                          **explanation.changes(case))
            except (ValueError, TypeError, KeyError, IndexError):
                cache[explanation.name] = None
        return cache[explanation.name]

    def differs(explanation):
        """False for an alternative that computes exactly the spec's result on this case."""
        alt = compute(explanation)
        return alt is not None and not (
            np.array_equal(alt[0], spec_out, equal_nan=True)
            and np.array_equal(alt[1], spec_lse, equal_nan=True))

    singles = [e for e in explanations() if _safe_applies(e, case) and differs(e)]
    declared = [e for e in singles if e.name in _declared(profile)]

    v = _values(case, values)
    judge = _Judge(output, golden, model, naive_agg, case.dtype, v)

    def score(explanation, judge):
        alt = compute(explanation)
        if alt is None:
            return math.inf
        return judge.judge(alt[0], alt[1], alt[2], explanation.lse_free_on_empty_rows)

    scored = [(score(e, judge), e) for e in singles]
    scored.sort(key=lambda x: x[0])
    results = {e.name: (r, e) for r, e in scored}
    pairs = {}
    if not scored or scored[0][0] > EXCELLENT:
        closest = [e for _, e in scored[:top]]
        masks = [e for e in singles if e.slot == "mask"]
        empties = [e for e in singles if e.slot == "empty_rows"]
        for first in [*closest, *declared, *masks]:
            partners = singles if first in closest or first in declared else empties
            for second in partners:
                if first is second or not composable(first, second):
                    continue
                a, b = sorted((first, second), key=lambda e: singles.index(e))
                pairs.setdefault((a.name, b.name), compose(a, b))
        for e in pairs.values():
            results[e.name] = (score(e, judge), e)
    candidates = [*singles, *pairs.values()]
    evaluated = len(results)
    best = _pick(results, case, values, model, compute, _declared(profile), None)
    if best[0] is None and model_for is not None:
        for precision in LOWER_PRECISIONS[case.dtype]:
            low = _Judge(output, golden, model_for(precision), naive_agg, precision, v)
            spec = Explanation("spec", "bug", "free", "the spec's own result", "", lambda c: True,
                               lambda c: {})
            low_results = {"spec": (score(spec, low), spec)}
            for e in candidates:
                low_results[e.name] = (score(e, low), e)
            best = _pick(low_results, case, values, model, compute, _declared(profile),
                         precision)
            if best[0] is not None:
                break
    ranked = sorted(results.values(), key=lambda x: x[0])
    closest_matches = tuple(Match(e, r, e.kind) for r, e in ranked[:3] if np.isfinite(r))
    return Diagnosis(best=best[0], runners_up=tuple(best[1]), closest=closest_matches,
                     evaluated=evaluated)


def _safe_applies(explanation: Explanation, case: Case) -> bool:
    try:
        return bool(explanation.applies(case))
    except (ValueError, TypeError, KeyError, IndexError):
        return False


def _resolved_kind(explanation: Explanation, case: Case, values: dict, compute,
                   weight: np.ndarray) -> str:
    """A finite masking constant is a policy when, against the same alternative masked with
    -inf, it changes only rows that -inf leaves empty; otherwise masked keys leaked (a bug)."""
    if explanation.kind != "empty_rows_only":
        return explanation.kind
    alt = compute(explanation)
    changes = {key: value for key, value in explanation.changes(case).items()
               if key not in ("masking", "constant")}
    with np.errstate(all="ignore"):
        base_out, base_lse, _ = alternative(case, values, **changes)
    empty = np.isneginf(base_lse)[..., None]
    changed = _rows_changed(alt[0], base_out, weight) & ~empty
    return "bug" if changed.any() else "policy"


def _pick(results: dict, case, values, model, compute, declared: list,
          precision: str | None):
    """(best Match or None, runners-up): among matches (residual <= 1), those within
    RUNNER_UP_FACTOR of the smallest residual (or all below 1/4) are near-ties; among them
    the backend's declared conventions come first, then policies, then the smallest residual,
    then fewer parts."""
    matches = [(r, e) for r, e in results.values() if r <= 1.0]
    if not matches:
        return None, []
    smallest = min(r for r, _ in matches)
    band = max(RUNNER_UP_FACTOR * smallest, 0.25)
    near = [(r, e) for r, e in matches if r <= band]

    def kind(e):
        if e.name == "spec":
            return "bug"
        return _resolved_kind(e, case, values, compute, model.out)

    def key(item):
        r, e = item
        if e.name == "spec":
            return (0, False, 0, r)
        parts = e.name.split(" + ")
        undeclared = sum(p not in declared for p in parts)
        return (undeclared, kind(e) != "policy", len(parts), r)

    near.sort(key=key)
    r, e = near[0]
    best = Match(e, r, "bug" if precision and case.dtype in ("float64", "float32") else kind(e),
                 precision)
    if e.name == "spec":
        best = Match(replace(e, name=f"computed_in={precision}", description=(
            f"the result was computed internally in {precision}, not {case.dtype}"),
            fix=f"compute in {case.dtype} (or declare the case dtype {precision})"),
            r, "bug", None)
    runners = [Match(x, rr, kind(x), precision) for rr, x in near[1:5]]
    return best, runners


# --- localisation -------------------------------------------------------------------------------

def _row_predicates(case: Case) -> list[tuple[str, np.ndarray]]:
    """Named (B, Hq, Tq) row sets, in mask terms, that a failure may be confined to."""
    keep = case.keep()
    shape = (case.batch, case.q_heads, case.q_len)
    kept = keep.sum(axis=-1)
    preds = [
        ("empty rows (no kept key)", kept == 0),
        ("rows that keep every key", kept == case.k_len),
        ("rows with some masked key", (kept < case.k_len) & (kept > 0)),
        ("rows that keep exactly one key", kept == 1),
    ]
    if case.k_len:
        preds += [("rows whose kept keys include key 0", keep[..., 0]),
                  ("rows whose kept keys do not include key 0", ~keep[..., 0] & (kept > 0)),
                  ("rows whose kept keys include the last key", keep[..., -1])]
    if case.q_len:
        first = np.zeros(shape, bool)
        first[..., 0] = True
        last = np.zeros(shape, bool)
        last[..., -1] = True
        preds += [("the first query row", first), ("the last query row", last)]
    if case.kv_heads < case.q_heads:
        heads = np.arange(case.q_heads)[None, :, None]
        group = case.q_heads // case.kv_heads
        preds += [(f"heads >= Hkv = {case.kv_heads}",
                   np.broadcast_to(heads >= case.kv_heads, shape)),
                  ("heads that are not the first of their kv group",
                   np.broadcast_to(heads % group != 0, shape))]
    for h in range(case.q_heads if case.q_heads > 1 else 0):
        preds.append((f"head {h}", np.broadcast_to(np.arange(case.q_heads)[None, :, None] == h,
                                                   shape)))
    for b in range(case.batch if case.batch > 1 else 0):
        preds.append((f"batch entry {b}", np.broadcast_to(
            np.arange(case.batch)[:, None, None] == b, shape)))
    return [(name, np.broadcast_to(p, shape)) for name, p in preds]


def localise(case: Case, bad_rows: np.ndarray) -> str:
    """Describe the failing (b, h, i) rows in mask terms: the smallest named row set (or
    intersection of two) that holds every failing row, and whether it is exactly that set."""
    total = int(bad_rows.sum())
    if total == 0:
        return ""
    rows = bad_rows.size
    if total == rows:
        return f"every row is off ({rows} of {rows})"
    preds = _row_predicates(case)
    found = []
    for name, p in preds:
        if not (bad_rows & ~p).any():
            found.append((int(p.sum()), name, p))
    for n, (name_a, a) in enumerate(preds):
        for name_b, b in preds[n + 1:]:
            both = a & b
            if both.any() and not (bad_rows & ~both).any():
                found.append((int(both.sum()), f"{name_a} and {name_b}", both))
    if not found:
        where = [tuple(int(x) for x in idx) for idx in np.argwhere(bad_rows)[:4]]
        return f"{total} of {rows} rows are off, e.g. (b, h, i) = {where}"
    found.sort(key=lambda x: x[0])
    size, name, p = found[0]
    exact = "exactly" if size == total else f"{total} of the {size}"
    return f"only {name} are off ({exact}; {total} of {rows} rows)"


def bad_rows(checks, golden: dict, output, model: ForwardModel) -> np.ndarray:
    """(B, Hq, Tq) rows where out or lse fails the per-element bound."""
    out = np.asarray(output.out, np.float64)
    gold = golden["out"]
    with np.errstate(invalid="ignore"):
        bad = (np.abs(out - gold) > F_ELEMENT * model.out) | (np.isnan(out) != np.isnan(gold))
    rows = bad.any(axis=-1) if bad.ndim == 4 else np.zeros(gold.shape[:3], bool)
    if output.lse is not None and np.shape(output.lse) == golden["lse"].shape:
        lse = np.asarray(output.lse, np.float64)
        with np.errstate(invalid="ignore"):
            rows |= ((np.abs(lse - golden["lse"]) > F_ELEMENT * model.lse)
                     & np.isfinite(golden["lse"])) | (np.isfinite(lse) != np.isfinite(
                         golden["lse"]))
    return rows
