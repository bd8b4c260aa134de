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
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from refmask.attention import Alibi, alibi_slopes
from refmask.case import Case, numpy_dtype

from .alternatives import default_scale
from .mask_edits import (
    causal_strict,
    field_drop,
    field_shift,
    first_entry,
    kinds,
    mask_edit,
    mask_edits,
    offset_shift,
    padding_flip,
    padding_lengths,
    padding_side,
    realign,
    replace_kind,
)


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
    #: for a mask edit: ``case -> [node edits]`` applied in turn to the mask's JSON tree, so
    #: two edits of different parts of the mask (an alignment and a window edge) compose
    edits: Callable[[Case], list] | None = None
    #: a rounding *process* (accumulation in a low precision): ``changes`` computes one
    #: summation order of it, and other orders differ entry by entry, so the output is matched
    #: by the size and place of its error, not entry by entry (diagnosis.noise_residual)
    noise: bool = False


def compose(first: Explanation, second: Explanation) -> Explanation:
    """Both alternatives at once (e.g. top-left causal *and* mean-of-V empty rows, which is
    what a backend gives when its causal switch empties rows the spec keeps; or two mask
    edits, applied one after the other)."""
    kinds = {first.kind, second.kind}
    kind = "bug" if "bug" in kinds else ("empty_rows_only" if "empty_rows_only" in kinds
                                          else "policy")
    edits = None
    changes = lambda c: {**first.changes(c), **second.changes(c)}  # noqa: E731
    if first.edits is not None and second.edits is not None:
        edits = lambda c: [*first.edits(c), *second.edits(c)]  # noqa: E731
        changes = lambda c: {"mask": _chained(c, edits(c))}  # noqa: E731
    return Explanation(
        f"{first.name} + {second.name}", kind, f"{first.slot}+{second.slot}",
        f"{first.description}; and {second.description}",
        "; ".join(f for f in (first.fix, second.fix) if f),
        lambda c: first.applies(c) and second.applies(c), changes,
        first.lse_free_on_empty_rows or second.lse_free_on_empty_rows, edits)


def _chained(case: Case, edits: list):
    mask = mask_edits(case, edits)
    if mask is None:
        raise ValueError("the mask edits do not compose on this mask")
    return mask


def composable(first: Explanation, second: Explanation) -> bool:
    """Different slots, or two single mask edits (they edit the tree in turn); never a
    rounding process (``noise``)."""
    if first.noise or second.noise:
        return False  # matched statistically against the spec's output, not composable
    slots_a, slots_b = set(first.slot.split("+")), set(second.slot.split("+"))
    if slots_a == slots_b == {"mask"} and first.edits and second.edits:
        return first.name != second.name
    return not (slots_a & slots_b)


def _mask_record(name, kind, description, fix, needs: set, edit):
    """An explanation that edits the mask's JSON tree with ``edit`` wherever it applies;
    ``edit(node)`` or, for edits that need the shapes, ``edit(node, case)``."""
    needs_case = len(inspect.signature(edit).parameters) == 2

    def bound(case):
        return (lambda node: edit(node, case)) if needs_case else edit

    def changes(case):
        return {"mask": mask_edit(case, bound(case))}

    def applies(case):
        return bool(needs & kinds(case)) and mask_edit(case, bound(case)) is not None

    return Explanation(name, kind, "mask", description, fix, applies, changes,
                       edits=lambda case: [bound(case)])


def _mask_explanations() -> list[Explanation]:
    return [
        _mask_record("causal=top_left", "policy",
                     "the mask is aligned top-left (SDPA is_causal, JAX, Keras, ONNX without "
                     "a KV cache) where the spec says bottom-right",
                     "pass the bottom-right offset Tk - Tq (FlashAttention >= 2.1 semantics) "
                     "or build the mask with align='bottom_right'",
                     {"align:bottom_right"}, realign("bottom_right", "top_left")),
        _mask_record("causal=bottom_right", "policy",
                     "the mask is aligned bottom-right (FlashAttention >= 2.1, ONNX with a KV "
                     "cache) where the spec says top-left",
                     "align query 0 with key 0 (offset 0)",
                     {"align:top_left"}, realign("top_left", "bottom_right")),
        _mask_record("alignment=offset_ignored", "bug",
                     "the KV-cache offset is ignored: queries are aligned top-left",
                     "add the number of cached tokens to the query positions",
                     {"align:offset"}, realign("offset", "top_left")),
        _mask_record("alignment=offset_as_bottom_right", "bug",
                     "the KV-cache offset is replaced by Tk - Tq (bottom-right)",
                     "use the cache length per batch entry, not Tk - Tq",
                     {"align:offset"}, realign("offset", "bottom_right")),
        _mask_record("alignment=offset_plus_1", "bug", "the query offset is one too large",
                     "the offset is the number of cached keys before query 0",
                     {"align:offset"}, offset_shift(+1)),
        _mask_record("alignment=offset_minus_1", "bug", "the query offset is one too small",
                     "the offset is the number of cached keys before query 0",
                     {"align:offset"}, offset_shift(-1)),
        _mask_record("alignment=valid_lengths_ignored", "bug",
                     "bottom-right alignment uses the padded lengths Tk - Tq instead of the "
                     "per-batch valid lengths",
                     "align each batch entry on its own valid lengths (seqused_k / cu_seqlens)",
                     {"align:bottom_right"}, realign("bottom_right", "bottom_right")),
        _mask_record("causal=diagonal_excluded", "bug",
                     "the causal mask excludes the diagonal (triu(ones, 0) instead of "
                     "triu(ones, 1) as the masked set): a query cannot see its own key",
                     "mask keys with pk > pq only (torch.triu(..., diagonal=1))",
                     {"causal"}, replace_kind("causal", causal_strict)),
        _mask_record("window=one_key_wider", "policy",
                     "the sliding window keeps one key more on the left (W+1 keys: 'q - kv <= "
                     "W' read as W keys, the HF eager drift of transformers #29623)",
                     "a window of W keys including self is (W-1, 0) in FlashAttention terms",
                     {"sliding_window"}, field_shift("sliding_window", "left", +1)),
        _mask_record("window=one_key_narrower", "policy",
                     "the sliding window keeps one key less on the left (W-1 keys: (W-1, 0) "
                     "applied to a window already counted without self)",
                     "a window of W keys including self is (W-1, 0) in FlashAttention terms",
                     {"sliding_window"}, field_shift("sliding_window", "left", -1)),
        _mask_record("window=left_unbounded", "bug",
                     "the sliding window's left bound is dropped (FlashAttention reads a "
                     "negative left reach, e.g. window_size=(-W, 0), as unbounded): a "
                     "causal window becomes plain causal",
                     "pass window_size=(W-1, 0) with a non-negative left reach",
                     {"sliding_window"}, field_drop("sliding_window", "left")),
        _mask_record("window=right_plus_1", "bug",
                     "the sliding window reaches one key further to the right (into the "
                     "future for a causal window)",
                     "the right bound is inclusive: pk <= pq + right",
                     {"sliding_window"}, field_shift("sliding_window", "right", +1)),
        _mask_record("window=right_minus_1", "bug",
                     "the sliding window stops one key short on the right (excludes the "
                     "diagonal for a causal window)",
                     "the right bound is inclusive: pk <= pq + right",
                     {"sliding_window"}, field_shift("sliding_window", "right", -1)),
        _mask_record("padding=keys_as_queries", "bug",
                     "the key-padding lengths are applied to the query rows (key vs query "
                     "padding confused)",
                     "a key-padding mask masks columns (keys), not rows",
                     {"key_padding"}, padding_flip("key_padding", "query_padding")),
        _mask_record("padding=queries_as_keys", "bug",
                     "the query-padding lengths are applied to the keys",
                     "a query-padding mask empties rows, it does not mask keys",
                     {"query_padding"}, padding_flip("query_padding", "key_padding")),
        _mask_record("padding=side_flipped", "bug",
                     "padding on the wrong side (left-padded read as right-padded or back)",
                     "check the tokenizer's padding_side and build the mask from it",
                     {"key_padding", "query_padding"},
                     lambda node: padding_side(node) if node.get("kind") in (
                         "key_padding", "query_padding") else None),
        _mask_record("padding=lengths_plus_1", "bug", "the valid lengths are one too large",
                     "lengths count valid tokens, not the index of the last one",
                     {"key_padding", "query_padding"}, padding_lengths(+1)),
        _mask_record("padding=lengths_minus_1", "bug", "the valid lengths are one too small",
                     "lengths count valid tokens, not the index of the last one",
                     {"key_padding", "query_padding"}, padding_lengths(-1)),
        _mask_record("padding=ignored", "bug", "the padding mask is not applied",
                     "pass the attention / key-padding mask to the kernel",
                     {"key_padding", "query_padding"},
                     lambda node: {"kind": "full"} if node.get("kind") in (
                         "key_padding", "query_padding") else None),
        _mask_record("chunk=size_plus_1", "bug", "the chunk size is one too large",
                     "chunks are [n C, (n+1) C) in positions", {"chunked"},
                     field_shift("chunked", "size", +1, 1)),
        _mask_record("chunk=size_minus_1", "bug", "the chunk size is one too small",
                     "chunks are [n C, (n+1) C) in positions", {"chunked"},
                     field_shift("chunked", "size", -1, 1)),
        _mask_record("block_causal=size_plus_1", "bug", "the block size is one too large",
                     "blocks are [n T, (n+1) T) in positions", {"block_causal"},
                     field_shift("block_causal", "block", +1, 1)),
        _mask_record("block_causal=size_minus_1", "bug", "the block size is one too small",
                     "blocks are [n T, (n+1) T) in positions", {"block_causal"},
                     field_shift("block_causal", "block", -1, 1)),
        _mask_record("prefix=length_plus_1", "bug", "the bidirectional prefix is one too long",
                     "the prefix holds positions 0 .. P-1", {"prefix_lm"},
                     field_shift("prefix_lm", "prefix", +1)),
        _mask_record("prefix=length_minus_1", "bug", "the bidirectional prefix is one too short",
                     "the prefix holds positions 0 .. P-1", {"prefix_lm"},
                     field_shift("prefix_lm", "prefix", -1)),
        _mask_record("documents=ignored", "bug",
                     "packed documents attend across document boundaries",
                     "build the mask from cu_seqlens / segment ids", {"documents"},
                     lambda node: {"kind": "full"} if node.get("kind") == "documents" else None),
        _mask_record("per_batch=first_entry", "bug",
                     "every batch entry gets the first entry's per-batch value (valid length, "
                     "KV-cache offset or prefix): one split point for the whole batch",
                     "index the lengths / offsets / cu_seqlens by batch entry",
                     {"key_padding", "query_padding", "prefix_lm", "align:offset",
                      "align:bottom_right"}, first_entry),
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
    if case.dtype == "bfloat16":
        import ml_dtypes

        info = ml_dtypes.finfo(ml_dtypes.bfloat16)
    else:
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
        Explanation("empty_rows=zero_lse_posinf", "policy", "empty_rows",
                    "empty rows give output 0 with LSE +inf (FlashAttention 2)",
                    "return lse = -inf for rows with no kept key",
                    has_mask, lambda c: {"empty_rows": "zero", "empty_lse": math.inf}),
        Explanation("empty_rows=zero_lse_free", "policy", "empty_rows",
                    "empty rows give output 0 with an LSE other than -inf (FlashAttention 2 "
                    "returns +inf)", "return lse = -inf for rows with no kept key",
                    has_mask, lambda c: {"empty_rows": "zero"}, True),
    ]
    low = lambda c: has_mask(c) and c.dtype in ("float16", "bfloat16")  # noqa: E731
    for how, verb, applies in (("add", "added to", has_mask), ("replace", "replacing", has_mask),
                               ("add in the case dtype", "added (and the sum rounded to the "
                                "case dtype, as an eager bfloat16 / float16 model does) to",
                                low)):
        for label, _ in (("-1e4", 0), ("-1e9", 0), ("finfo.min", 0), ("-0.7*finfo.max", 0)):
            def changes(c, how=how, label=label):
                value = dict(_finite_constants(c))[label]
                return {"masking": how.replace(" in the case dtype", "_in_dtype"),
                        "constant": value}

            records.append(Explanation(
                f"mask_constant={label} ({how})", "empty_rows_only", "empty_rows",
                f"masked scores {verb} the finite constant {label} of the case dtype instead "
                "of set to -inf", "mask with -inf (masked_fill) and define empty rows "
                "explicitly; a finite constant leaks when masked scores exceed kept ones by "
                "more than |C|", applies, changes, True))
    return records


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _standard_slopes(case: Case) -> bool:
    """The case's ALiBi slopes are the Press et al. slopes of its head count."""
    return case.alibi is not None and np.ndim(case.alibi.slopes) == 1 and np.allclose(
        case.alibi.slopes, alibi_slopes(case.q_heads), rtol=1e-12, atol=0.0)


def with_slopes(case: Case, slopes: object) -> dict:
    return {"alibi": Alibi(slopes, convention=case.alibi.convention, align=case.alibi.align,
                           layout=case.alibi.layout)}


def _accumulation_applies(case: Case, per_score: int) -> bool:
    """A low-precision accumulation record applies to float16/bfloat16 rows of more than one
    key, where the sequential rounding it replays (``per_score`` terms per score: Dv for
    P @ V, 1 for the row sum) stays within 2^22 steps."""
    return case.dtype in ("float16", "bfloat16") and case.k_len > 1 and (
        case.batch * case.q_heads * case.q_len * case.k_len * per_score <= 1 << 22)


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
        Explanation("scale=inverted", "bug", "scale",
                    "scores divided by the scale instead of multiplied (s * sqrt(Dqk) for the "
                    "default 1/sqrt(Dqk))", "multiply q @ k^T by the scale (scale = "
                    "head_dim ** -0.5 is a factor, not a divisor)",
                    lambda c: default_scale(c) not in (0.0, 1.0),
                    lambda c: {"scale": 1.0 / default_scale(c)}),
        Explanation("scale=1/sqrt(Hq*Dqk)", "bug", "scale",
                    "scores scaled by 1/sqrt(d_model) = 1/sqrt(Hq * Dqk) instead of the "
                    "per-head 1/sqrt(Dqk)", "scale by the per-head dim: head_dim ** -0.5",
                    lambda c: c.scale is None and c.q_heads > 1,
                    lambda c: {"scale": 1.0 / math.sqrt(c.q_heads * c.qk_dim)}),
        Explanation("scale=1/sqrt(Hq)", "bug", "scale",
                    "scores scaled by 1/sqrt(num_heads) instead of 1/sqrt(head_dim)",
                    "scale by the per-head dim: head_dim ** -0.5",
                    lambda c: c.scale is None and c.q_heads > 1,
                    lambda c: {"scale": 1.0 / math.sqrt(c.q_heads)}),
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
        Explanation("alibi=ignored", "bug", "alibi",
                    "the ALiBi bias is not applied (a kernel path that drops alibi_slopes)",
                    "pass the ALiBi slopes (or the materialised bias) to the kernel",
                    lambda c: c.alibi is not None, lambda c: {"alibi": None}),
        Explanation("bias=ignored", "bug", "bias",
                    "the additive score bias is not applied", "pass attn_bias to the kernel",
                    lambda c: bool(c.bias), lambda c: {"bias": False}),
        Explanation("alibi=slopes_off_by_one", "bug", "alibi",
                    "ALiBi slopes 2^(-8h/H) instead of 2^(-8(h+1)/H): every slope 2^(8/H) "
                    "times too steep, head 0 gets slope 1",
                    "m_h = 2 ** (-8 * (h + 1) / H) for h = 0 .. H-1 (Press et al.)",
                    lambda c: _standard_slopes(c) and _power_of_two(c.q_heads),
                    lambda c: with_slopes(c, [2.0 ** (-8.0 * h / c.q_heads)
                                               for h in range(c.q_heads)])),
        Explanation("alibi=geometric_slopes", "bug", "alibi",
                    "ALiBi slopes as the plain geometric sequence 2^(-8(h+1)/H) for a head "
                    "count H that is not a power of two",
                    "for H not a power of two take the slopes of the largest power of two "
                    "c < H, then every other slope of 2c (refmask.attention.alibi_slopes)",
                    lambda c: _standard_slopes(c) and not _power_of_two(c.q_heads),
                    lambda c: with_slopes(c, [2.0 ** (-8.0 * (h + 1) / c.q_heads)
                                               for h in range(c.q_heads)])),
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
        Explanation("dropout=scaled_by_1/rate", "bug", "dropout",
                    "the kept weights scaled by 1 / rate instead of 1 / (1 - rate)",
                    "divide the kept weights by the keep probability 1 - rate",
                    lambda c: c.dropout_rate is not None and 0 < c.dropout_rate != 0.5,
                    lambda c: {"dropout_factor": 1.0 / c.dropout_rate}),
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
                    lambda c: c.q_len > 0 and c.k_len > 0 and not c.key_splits,
                    lambda c: {"max_subtract": False}),
        Explanation("accumulation=case_dtype", "bug", "accumulation",
                    "the softmax denominator and P @ V are accumulated in the case dtype "
                    "(float16 / bfloat16) instead of float32",
                    "accumulate in float32 (acc_dtype=float32)",
                    lambda c: _accumulation_applies(c, c.v_dim),
                    lambda c: {"accumulate": c.dtype}, noise=True),
        Explanation("softmax=denominator_in_case_dtype", "bug", "accumulation",
                    "the softmax row sum is accumulated in float16 / bfloat16 (P @ V in "
                    "float32): once the running sum's ulp exceeds the terms it stops growing, "
                    "so long rows are normalised by too small a sum",
                    "accumulate the row sum of exp in float32",
                    lambda c: _accumulation_applies(c, 1),
                    lambda c: {"accumulate": c.dtype, "accumulate_pv": False}, noise=True),
        Explanation("pv=accumulated_in_case_dtype", "bug", "accumulation",
                    "P @ V is accumulated in float16 / bfloat16 (the softmax in float32): a "
                    "long row's output sum stops growing once its ulp exceeds the terms "
                    "(e.g. tf.einsum in float16 on CPUs without native half dot products)",
                    "accumulate P @ V in float32 (preferred_element_type=float32)",
                    lambda c: _accumulation_applies(c, c.v_dim),
                    lambda c: {"accumulate": c.dtype, "accumulate_denominator": False},
                    noise=True),
    ]


def _merge_explanations() -> list[Explanation]:
    """Wrong merges of split-KV partials (spec 3.8); they apply to split-KV cases only."""
    split = lambda c: bool(c.key_splits)  # noqa: E731
    return [
        Explanation("merge=lse_base_2", "bug", "merge",
                    "the partials' natural-log LSEs are merged as log2 (2^(lse_p - max): "
                    "FlashInfer's merge_state fed FlashAttention / FlexAttention LSEs)",
                    "merge with the base the partials' LSE is in (refmask.attention.merge "
                    "base='e'), or convert: lse2 = lse * log2(e)",
                    split, lambda c: {"merge": "base_2"}),
        Explanation("merge=empty_partial_nan", "bug", "merge",
                    "a row with an empty partial (lse_p = -inf) comes out NaN: the merge "
                    "multiplies the empty partial's 0/0 output by its zero weight, or "
                    "computes exp(-inf - (-inf)) when every partial is empty",
                    "give an empty partial weight 0 without reading its output; a row whose "
                    "partials are all empty is out 0, lse -inf",
                    split, lambda c: {"merge": "empty_partial_nan"}),
        Explanation("merge=no_max_subtraction", "bug", "merge",
                    "the merge weights are exp(lse_p) without subtracting the largest LSE: "
                    "they overflow to inf (NaN output) once an LSE passes log(finfo.max)",
                    "weight each partial by exp(lse_p - max_p lse_p)",
                    split, lambda c: {"merge": "no_max_subtraction"}),
    ]


def explanations() -> list[Explanation]:
    """Every single alternative (compositions are built by :func:`diagnose`), in the order
    a composed name lists its parts: float64 precision bugs, mask conventions, empty rows,
    the rest."""
    scores = _score_explanations()
    precision = [e for e in scores if e.name.startswith("scale=float32")]
    rest = [e for e in scores if e not in precision]
    return [*precision, *_mask_explanations(), *_empty_row_explanations(), *rest,
            *_merge_explanations()]


def by_name(name: str) -> Explanation:
    for explanation in explanations():
        if explanation.name == name:
            return explanation
    raise ValueError(f"explanations: unknown alternative {name!r}")


