"""Named alternative semantics: what an output matches when it does not match the spec.

When an implementation misses the golden output, the runner recomputes the case under each
applicable explanation below and asks whether the output matches *that*. A match turns a bare
failure into a diagnosis:

* kind ``"policy"``: a documented convention some peer follows (empty rows give NaN,
  causal is top-left, the LSE is in base 2, ...). The verdict is ``policy`` and names it.
* kind ``"bug"``: a known way to get attention wrong (``h % Hkv`` head mapping, softcap after
  the mask, multiplicative masking, ...). The verdict stays ``fail`` but names the bug.

Each explanation is a record (name, kind, description, applies, reference) read as a list of
specifications; ``reference(case, inputs)`` returns the float64 (out, lse) under that
alternative, computed from the same inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from refmask import masks as m
from refmask.adapters.common.translate import float64_inputs
from refmask.attention import Alibi, attention
from refmask.case import Case, attention_kwargs, to_bhtd


@dataclass(frozen=True)
class Explanation:
    """A named alternative: ``reference(case, inputs) -> (out BHTD, lse)`` under it.

    ``changes(case) -> dict`` is set when the alternative is just other keyword arguments of
    ``refmask.attention`` (another mask, another empty-row policy, ...); such alternatives
    can be composed (see :func:`compose`).
    """

    name: str
    kind: str
    description: str
    applies: Callable[[Case], bool]
    reference: Callable[[Case, dict], tuple]
    changes: Callable[[Case], dict] | None = None


def _by_changes(name: str, kind: str, description: str, applies, changes) -> Explanation:
    """An explanation that reruns the reference with ``changes(case)`` as keyword arguments."""
    return Explanation(name, kind, description, applies,
                       lambda case, inputs: _run(case, inputs, **changes(case)), changes)


def compose(first: Explanation, second: Explanation) -> Explanation:
    """Both alternatives at once (e.g. top-left causal *and* mean-of-V empty rows, which is
    what a backend gives when its causal switch empties rows the spec keeps)."""
    def changes(case):
        return {**first.changes(case), **second.changes(case)}

    kind = "bug" if "bug" in (first.kind, second.kind) else "policy"
    return _by_changes(f"{first.name} + {second.name}", kind,
                       f"{first.description}; and {second.description}",
                       lambda c: first.applies(c) and second.applies(c), changes)


# --- helpers ------------------------------------------------------------------------------------

def _run(case: Case, inputs: dict, **changes) -> tuple:
    """(out BHTD, lse) of the reference with some attention keyword arguments changed."""
    values = float64_inputs(inputs)
    kwargs = {**attention_kwargs(case, values), **changes}
    q, k, v = (values[n] for n in "qkv")
    result = attention(q, k, v, **kwargs)
    return to_bhtd(case, result.out), result.lse


def _map_mask_json(mask: m.Mask | None, edit: Callable[[dict], dict]) -> m.Mask | None:
    """Rebuild ``mask`` after applying ``edit`` to every node of its JSON tree."""
    if mask is None:
        return None

    modules = set()  # predicates of the live mask: their modules are already imported

    def walk(node):
        if isinstance(node, dict):
            if node.get("kind") == "predicate":
                modules.add(str(node.get("fn")).partition(":")[0])
            return edit({key: walk(value) for key, value in node.items()})
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    edited = json.loads(json.dumps(walk(mask.to_json())))
    return m.from_json(edited, trust=sorted(modules))


def _json_kinds(mask: m.Mask | None) -> set:
    found = set()

    def walk(node):
        if isinstance(node, dict):
            found.add(node.get("kind"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    if mask is not None:
        walk(mask.to_json())
    return found


def _realigned(case: Case, source: str, target: str) -> m.Mask:
    def edit(node):
        if node.get("align") == source:
            return {**node, "align": target}
        return node

    return _map_mask_json(case.mask, edit)


def _uses_alignment(case: Case, align: str) -> bool:
    return case.q_len != case.k_len and f'"align": "{align}"' in json.dumps(
        case.mask.to_json() if case.mask is not None else {})


def _window_shifted(case: Case, delta: int) -> m.Mask:
    def edit(node):
        if node.get("kind") == "sliding_window" and node.get("left") is not None:
            return {**node, "left": max(0, node["left"] + delta)}
        return node

    return _map_mask_json(case.mask, edit)


def _has_empty_rows(case: Case) -> bool:
    return "EmptyRow" in case.flags


def _expanded_kv(case: Case, values: dict, head_of: Callable[[int], int]) -> tuple:
    """k and v (BHTD) with one kv head per query head, query head h reading ``head_of(h)``."""
    k, v = to_bhtd(case, values["k"]), to_bhtd(case, values["v"])
    index = [head_of(h) for h in range(case.q_heads)]
    return k[:, index], v[:, index]


def _scores(case: Case, values: dict) -> np.ndarray:
    """scale * q @ k^T per query head (B, Hq, Tq, Tk), GQA by ``h // (Hq // Hkv)``."""
    group = case.q_heads // case.kv_heads
    k, _ = _expanded_kv(case, values, lambda h: h // group)
    q = to_bhtd(case, values["q"])
    scale = case.scale if case.scale is not None else 1.0 / math.sqrt(case.qk_dim)
    return scale * (q @ np.swapaxes(k, -1, -2))


def _additive(case: Case, values: dict) -> np.ndarray:
    extra = np.zeros((case.batch, case.q_heads, case.q_len, case.k_len))
    if "bias" in values:
        extra = extra + values["bias"]
    if case.alibi is not None:
        extra = extra + case.alibi.bias(case.batch, case.q_heads, case.q_len, case.k_len)
    return extra


def _softmax_out(case: Case, values: dict, scores: np.ndarray, *, post=None) -> tuple:
    """out = softmax(scores) @ v over every key (no mask), optionally ``post(p)`` first."""
    group = case.q_heads // case.kv_heads
    _, v = _expanded_kv(case, values, lambda h: h // group)
    with np.errstate(invalid="ignore", over="ignore"):
        top = scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores - top)
        total = weights.sum(axis=-1, keepdims=True)
        p = weights / total
        lse = (np.log(total) + top)[..., 0]
    if post is not None:
        p = post(p)
    return p @ v, lse


# --- the alternatives ----------------------------------------------------------------------------

def _empty_rows_policy(policy: str, description: str) -> Explanation:
    return _by_changes(f"empty_rows={policy}", "policy", description,
                       lambda c: True, lambda c: {"empty_rows": policy})


def _fa2_empty_rows(case: Case, inputs: dict) -> tuple:
    out, lse = _run(case, inputs)
    return out, np.where(np.isneginf(lse), np.inf, lse)


def _lse_base_2(case: Case, inputs: dict) -> tuple:
    out, lse = _run(case, inputs)
    return out, lse / math.log(2.0)


def _flip_alibi(case: Case, inputs: dict) -> tuple:
    other = "signed" if case.alibi.convention == "abs" else "abs"
    return _run(case, inputs, alibi=Alibi(case.alibi.slopes, convention=other,
                                          align=case.alibi.align))


def _gqa_modulo(case: Case, inputs: dict) -> tuple:
    values = float64_inputs(inputs)
    k, v = _expanded_kv(case, values, lambda h: h % case.kv_heads)
    if case.layout == "BTHD":
        k, v = np.swapaxes(k, 1, 2), np.swapaxes(v, 1, 2)
    kwargs = attention_kwargs(case, values)
    result = attention(values["q"], k, v, **kwargs)
    return to_bhtd(case, result.out), result.lse


def _softcap_after_mask(case: Case, inputs: dict) -> tuple:
    """The classic leak: masked scores become -inf first, then tanh maps them to -cap."""
    values = float64_inputs(inputs)
    raw = _scores(case, values) + _additive(case, values)
    masked = np.where(case.keep(), raw, -np.inf)
    capped = case.softcap * np.tanh(masked / case.softcap)
    return _softmax_out(case, values, capped)


def _multiplicative_mask(case: Case, inputs: dict) -> tuple:
    """Scores multiplied by the 0/1 mask: masked keys still get weight exp(0)."""
    values = float64_inputs(inputs)
    scores = _scores(case, values)
    if case.softcap is not None:
        scores = case.softcap * np.tanh(scores / case.softcap)
    return _softmax_out(case, values, (scores + _additive(case, values)) * case.keep())


def _mask_after_softmax(case: Case, inputs: dict) -> tuple:
    """Softmax over every key, then the masked weights zeroed without renormalising."""
    values = float64_inputs(inputs)
    scores = _scores(case, values)
    if case.softcap is not None:
        scores = case.softcap * np.tanh(scores / case.softcap)
    return _softmax_out(case, values, scores + _additive(case, values),
                        post=lambda p: p * case.keep())


def _dropout_unscaled(case: Case, inputs: dict) -> tuple:
    out, lse = _run(case, inputs)
    return out * (1.0 - case.dropout_rate), lse


def _empty_row_policies() -> list[Explanation]:
    """The empty-row conventions, applicable to any case (rows may empty under another mask)."""
    return [
        _empty_rows_policy("nan", "empty rows give NaN (plain softmax: nn.MultiheadAttention "
                           "with need_weights=True, ONNX <= 1.22)"),
        _empty_rows_policy("uniform", "empty rows give the mean of V (masked scores replaced "
                           "by a finite constant: JAX, Flax, Keras)"),
        _empty_rows_policy("unmasked", "empty rows give the unmasked softmax (a finite "
                           "constant added to masked scores: tf-keras, legacy BERT -10000)"),
    ]


def _mask_conventions() -> list[Explanation]:
    """The mask conventions: alignment and window width."""
    return [
        _by_changes("causal=top_left", "policy",
                    "the mask is aligned top-left (SDPA is_causal, JAX, Keras, ONNX without a "
                    "KV cache) where the spec says bottom-right",
                    lambda c: _uses_alignment(c, "bottom_right"),
                    lambda c: {"mask": _realigned(c, "bottom_right", "top_left")}),
        _by_changes("causal=bottom_right", "policy",
                    "the mask is aligned bottom-right (FlashAttention >= 2.1, ONNX with a KV "
                    "cache) where the spec says top-left",
                    lambda c: _uses_alignment(c, "top_left"),
                    lambda c: {"mask": _realigned(c, "top_left", "bottom_right")}),
        _by_changes("window=one_key_wider", "policy",
                    "the sliding window keeps one key more (W+1 keys: 'q - kv <= W' read as "
                    "W keys, the HF eager drift of transformers #29623)",
                    lambda c: "sliding_window" in _json_kinds(c.mask),
                    lambda c: {"mask": _window_shifted(c, +1)}),
        _by_changes("window=one_key_narrower", "policy",
                    "the sliding window keeps one key less (W-1 keys: (W-1, 0) applied to a "
                    "window already counted without self)",
                    lambda c: "sliding_window" in _json_kinds(c.mask),
                    lambda c: {"mask": _window_shifted(c, -1)}),
    ]


def _default_scale(case: Case) -> float:
    return case.scale if case.scale is not None else 1.0 / math.sqrt(case.qk_dim)


def _precision_bugs() -> list[Explanation]:
    """float64 results computed with a float32-rounded scale (named after who was seen)."""
    def float32_scale(case):
        return {"scale": float(np.float32(_default_scale(case)))}

    def float32_sqrt_scale_squared(case):
        root = np.float32(math.sqrt(np.float32(_default_scale(case))))
        return {"scale": float(np.float64(root) ** 2)}

    float64_only = lambda c: c.dtype == "float64"  # noqa: E731 - a one-line predicate
    return [
        _by_changes("scale=float32", "bug",
                    "the scale is rounded to float32 before use (Keras' TensorFlow backend "
                    "casts the Python float through float32): a float64 accuracy bug",
                    float64_only, float32_scale),
        _by_changes("scale=float32_sqrt_squared", "bug",
                    "q and k are each scaled by sqrt(scale) computed in float32 (an ONNX "
                    "function-body fallback): a float64 accuracy bug",
                    float64_only, float32_sqrt_scale_squared),
    ]


def explanations() -> list[Explanation]:
    """Every named alternative, policies first, in the order the runner tries them."""
    empty_rows = _empty_row_policies()
    mask_conventions = _mask_conventions()
    precision_bugs = _precision_bugs()
    return [
        *[replace(e, applies=_has_empty_rows) for e in empty_rows],
        Explanation("empty_rows=zero_lse_posinf", "policy",
                    "empty rows give output 0 with LSE +inf (FlashAttention 2)",
                    _has_empty_rows, _fa2_empty_rows),
        *mask_conventions,
        # A mask convention can empty rows the spec keeps; the backend's empty-row policy
        # then decides them: both conventions at once.
        *[compose(m, e) for m in mask_conventions for e in empty_rows],
        Explanation("lse_base=2", "policy", "the LSE is in base 2 (FlashInfer)",
                    lambda c: c.q_len > 0, _lse_base_2),
        Explanation("alibi=other_sign_convention", "policy",
                    "ALiBi uses the other convention (-m|pq - pk| vs m(pk - pq)); they agree "
                    "only under a causal mask",
                    lambda c: c.alibi is not None, _flip_alibi),
        Explanation("gqa=h_mod_hkv", "bug",
                    "query head h reads kv head h % Hkv (tile order) instead of h // (Hq/Hkv) "
                    "(repeat_interleave order)",
                    lambda c: 1 < c.kv_heads < c.q_heads, _gqa_modulo),
        Explanation("softcap_after_mask", "bug",
                    "softcap applied after masking: tanh maps the masked -inf to -cap, so "
                    "masked keys leak weight exp(-cap)",
                    lambda c: c.softcap is not None and c.mask is not None,
                    _softcap_after_mask),
        *precision_bugs,
        # A float64 precision bug hides behind any convention the backend also follows.
        *[compose(bug, policy) for bug in precision_bugs
          for policy in (*mask_conventions, *empty_rows,
                         *[compose(m, e) for m in mask_conventions for e in empty_rows])],
        Explanation("scale=1/Dqk", "bug", "scores scaled by 1/Dqk instead of 1/sqrt(Dqk)",
                    lambda c: c.scale is None and c.qk_dim > 1,
                    lambda c, i: _run(c, i, scale=1.0 / c.qk_dim)),
        Explanation("scale=1/sqrt(Dv)", "bug", "scores scaled by 1/sqrt(Dv) instead of "
                    "1/sqrt(Dqk)", lambda c: c.scale is None and c.qk_dim != c.v_dim,
                    lambda c, i: _run(c, i, scale=1.0 / math.sqrt(c.v_dim))),
        Explanation("scale=none", "bug", "scores not scaled at all",
                    lambda c: c.scale is None and c.qk_dim > 1,
                    lambda c, i: _run(c, i, scale=1.0)),
        Explanation("sink_dropped", "bug", "the attention sink is ignored",
                    lambda c: c.sinks, lambda c, i: _run(c, i, sinks=None)),
        Explanation("mask_inverted", "bug",
                    "mask polarity inverted (True read as 'masked', as nn.MultiheadAttention "
                    "does, where the spec says True = attend)",
                    lambda c: c.mask is not None and bool(c.keep().any()),
                    lambda c, i: _run(c, i, mask=~c.mask)),
        Explanation("mask_multiplied", "bug",
                    "scores multiplied by the 0/1 mask instead of set to -inf: masked keys "
                    "keep weight exp(0)",
                    lambda c: c.mask is not None, _multiplicative_mask),
        Explanation("mask_after_softmax", "bug",
                    "mask applied after the softmax without renormalising",
                    lambda c: c.mask is not None, _mask_after_softmax),
        Explanation("dropout_unscaled", "bug", "dropout keep-mask applied without 1/(1-rate)",
                    lambda c: c.dropout_rate is not None, _dropout_unscaled),
    ]

