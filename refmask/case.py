"""One attention call, completely specified: the :class:`Case` and what every part of refmask
needs from it.

A :class:`Case` names the mask, the shapes (B, Hq, Hkv, Tq, Tk, Dqk, Dv), the dtype, every
score feature (scale, softcap, bias, ALiBi, sinks, dropout, query temperature), the outputs it
asks for beyond out and lse (the score stages of spec 3.9) and the seed of its inputs. This
module holds everything derived from one case, for the conformance suite and the adapters
alike (adapters import this module, never the suite):

    Case.to_json / case_from_json     its JSON form (the golden manifest's "case")
    derive_flags / FLAGS              the Wycheproof-style flags, computed from the fields
    case_inputs                       its inputs, regenerated bit for bit from Philox words
    attention_kwargs                  the keyword arguments of refmask.attention.attention
    to_bhtd                           an array of the case's layout seen as (B, H, T, D)
    numpy_dtype / dtype_unavailable   the NumPy dtype of a dtype name (bfloat16: ml_dtypes)
    round_float64                     float64 values rounded once to a case dtype
    reference_outputs                 refmask's own result for the case, float64 BHTD

Inputs are never stored: :func:`case_inputs` regenerates them from ``refmask.rng``, keyed by
``(seed, "<case name>/<tensor name>")``. Flags are *derived* from the case (``EmptyRow`` from
the materialised mask, ``GQA`` from the head counts, ...) plus a few that only the author
knows (``WindowConvention``), so a flag can never disagree with the case it labels. The
catalog of named cases is :mod:`refmask.conformance.cases`. ml_dtypes is imported only for a
bfloat16 case.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from . import masks as m
from . import rng
from ._case_outputs import check_outputs, score_output_name
from ._rounding import round_float64
from ._typing import Array
from ._validate import check_choice, check_flag, check_int, check_real, check_str
from .attention import (
    EMPTY_ROW_POLICIES,
    LAYOUTS,
    Alibi,
    Grads,
    attention,
    attention_scores,
    attention_vjp,
)
from .masks.varlen import layout_from_json

#: The most scores (B * Hq * Tq * Tk) one case may have. Everything derived from a case
#: (flags, golden values, tolerances, reports) materialises its keep mask and float64
#: score-sized arrays densely: 2**28 scores are 256 MiB of keep mask and 2 GiB per float64
#: array, so a larger case would exhaust a development machine's memory before it could
#: fail with a clear message. The catalog's largest case (sweeps included) has 2**22.
MAX_CASE_SCORES = 2**28

DTYPES = ("float64", "float32", "float16", "bfloat16")

#: Every flag a case may carry, with its meaning (reports group by these).
FLAGS = {
    "EmptyRow": "some query row keeps no key (the empty-row policy decides the output)",
    "NonSquare": "Tq != Tk",
    "NonSquareCausal": "a position-dependent mask with Tq != Tk (alignment matters)",
    "TopLeft": "the mask or ALiBi uses top-left alignment",
    "BottomRight": "the mask or ALiBi uses bottom-right alignment",
    "KVCache": "an explicit integer query offset (past tokens in a KV cache)",
    "Causal": "the mask contains a causal part",
    "SlidingWindow": "the mask contains a sliding window",
    "WindowConvention": "the case separates the W / W+1 / (W-1, 0) window conventions",
    "Chunked": "chunked (Llama 4) attention",
    "BlockCausal": "block-causal progressive exposure",
    "PrefixLM": "prefix-LM",
    "Documents": "packed documents / segment ids / varlen",
    "KeyPadding": "padded keys",
    "QueryPadding": "padded query rows",
    "LeftPadding": "left padding",
    "Strided": "strided / dilated pattern",
    "GlobalTokens": "global tokens",
    "ExplicitMask": "an explicit bool array mask",
    "PerHeadMask": "the mask differs between heads",
    "PerBatchMask": "the mask differs between batch entries",
    "GQA": "grouped-query attention (1 < Hkv < Hq)",
    "MQA": "multi-query attention (Hkv = 1 < Hq)",
    "CustomScale": "an explicit scale instead of 1/sqrt(Dqk)",
    "Softcap": "tanh softcapping of the scores",
    "SoftcapBeforeMask": "softcap together with a mask (softcap must come first)",
    "Bias": "an additive bias array",
    "ALiBi": "ALiBi linear biases",
    "Sink": "per-head attention sinks",
    "Dropout": "a given dropout keep-mask",
    "DqkNeDv": "different head dims for q/k and v",
    "BTHD": "(B, T, H, D) layout",
    "Length1": "Tq or Tk is 1",
    "Length0": "Tq or Tk is 0",
    "LargeMagnitude": "scores large enough to overflow a naive exp",
    "LowPrecision": "float16 or bfloat16",
    "LongRow": "rows of at least 2048 keys (float16 accumulation of the denominator shows)",
    "MaskedKeysScoreHigh": "masked keys score >= 2e4 above every kept key of their row "
                           "(a finite -1e4 mask does not hide them)",
    "Varlen": "packed sequences with per-sequence alignment (cu_seqlens_q != cu_seqlens_k)",
    "PagedKV": "keys in a paged KV cache (block table, page size, sequence lengths)",
    "TreeMask": "speculative-decoding token tree over a cached prefix",
    "SplitKV": "a partial result over one key range of a split-KV / cascade computation",
    "MLA": "MLA-like head dims (Dqk 192 or 576, Dv 128 or 512)",
    "ScoresOutput": "the case asks for score / probability matrices as outputs (spec 3.9, "
                    "ONNX qk_matmul_output modes 0-3)",
    "QueryTemperature": "per-query temperature: query rows scaled before the product "
                        "(Llama 4 attn_temperature_tuning, spec 3.2.3)",
}


@dataclass(frozen=True)
class Case:
    """One attention call, completely specified.

    Shapes use B (batch), Hq/Hkv (query/key-value heads), Tq/Tk (query/key length),
    Dqk/Dv (head dims). ``scale=None`` means the spec's default ``1/sqrt(Dqk)``.
    ``bias``/``sinks`` are switches: the values come from the case's random stream.
    ``input_scale`` multiplies q and k (large values stress the softmax).
    ``empty_rows`` is the policy under which the golden output is defined.
    ``scores``: the stages of spec 3.9 ("raw", "softcapped", "masked", "probs", in that
    order, each at most once) the case asks for as outputs besides out and lse, each
    (B, Hq, Tq, Tk) and named :func:`score_output_name`; default () = none.
    ``query_scale``: per-query temperature tau (spec 3.2.3), Tq finite floats > 0 (the
    float64 values; the input ``query_scale`` is them rounded to the case dtype); default
    None = no temperature.
    ``key_splits`` ``((0, s1), (s1, s2), ..., (sn, Tk))``: a split-KV case, whose partial
    results over each key range are judged and merged (:func:`partial_cases`); ``()`` for an
    ordinary case.
    """

    name: str
    family: str
    mask: m.Mask | None
    batch: int = 2
    q_heads: int = 2
    kv_heads: int = 2
    q_len: int = 6
    k_len: int = 6
    qk_dim: int = 8
    v_dim: int = 8
    dtype: str = "float64"
    layout: str = "BHTD"
    scale: float | None = None
    softcap: float | None = None
    bias: bool = False
    alibi: Alibi | None = None
    sinks: bool = False
    dropout_rate: float | None = None
    input_scale: float = 1.0
    empty_rows: str = "zero"
    seed: int = 0
    notes: str = ""
    extra_flags: tuple = field(default=())
    key_splits: tuple = ()
    scores: tuple = ()
    query_scale: tuple | None = None

    def __post_init__(self) -> None:
        _check_case_fields(self)
        if self.key_splits:
            _check_key_splits(self)
        check_outputs(self)

    @property
    def id(self) -> str:
        """Unique id: the base name and the dtype, e.g. ``causal/bottom_right/wide@float16``."""
        return f"{self.name}@{self.dtype}"

    @property
    def flags(self) -> tuple:
        return derive_flags(self)

    def keep(self) -> np.ndarray:
        """The dense keep mask (B, Hq, Tq, Tk); all True without a mask."""
        if self.mask is None:
            return np.ones((self.batch, self.q_heads, self.q_len, self.k_len), dtype=bool)
        return np.asarray(self.mask.materialize(self.batch, self.q_heads, self.q_len,
                                                self.k_len))

    def to_json(self) -> dict:
        """The JSON form; "scores", "query_scale" and "key_splits" appear only when set (so a
        case without them has the JSON of refmask 0.1)."""
        optional = {}
        alibi = None
        if self.alibi is not None:
            alibi = {"slopes": list(self.alibi.slopes), "convention": self.alibi.convention,
                     "align": self.alibi.align.to_json()}
            if self.alibi.layout is not None:  # per-sequence positions (spec 3.2.1)
                alibi["layout"] = self.alibi.layout.to_json()
        if self.scores:
            optional["scores"] = list(self.scores)
        if self.query_scale is not None:
            optional["query_scale"] = list(self.query_scale)
        if self.key_splits:
            optional["key_splits"] = [list(split) for split in self.key_splits]
        return {
            "id": self.id, "name": self.name, "family": self.family,
            "mask": None if self.mask is None else self.mask.to_json(),
            "shape": {"B": self.batch, "Hq": self.q_heads, "Hkv": self.kv_heads,
                      "Tq": self.q_len, "Tk": self.k_len, "Dqk": self.qk_dim, "Dv": self.v_dim},
            "dtype": self.dtype, "layout": self.layout, "scale": self.scale,
            "softcap": self.softcap, "bias": self.bias,
            "alibi": alibi,
            "sinks": self.sinks, "dropout_rate": self.dropout_rate,
            "input_scale": self.input_scale, "empty_rows": self.empty_rows, "seed": self.seed,
            "flags": list(self.flags), "notes": self.notes, **optional,
        }


def _check_key_splits(case: Case) -> None:
    """key_splits: >= 2 ranges (start, stop) of ints, start < stop, contiguous from 0 to Tk;
    sinks (which belong to exactly one range) and empty-row policies other than "zero" (the
    merge of empty partials is the zero row) are refused."""
    where = f"Case {case.name!r}: key_splits"
    splits = case.key_splits
    if not isinstance(splits, tuple) or len(splits) < 2 or not all(
            isinstance(s, tuple) and len(s) == 2 and all(
                isinstance(x, int) and not isinstance(x, bool) for x in s) for s in splits):
        raise ValueError(f"{where} must be a tuple of at least two (start, stop) int pairs, "
                         f"got {splits!r}")
    flat = [edge for split in splits for edge in split]
    inner = flat[1:-1]
    if (flat[0] != 0 or flat[-1] != case.k_len or inner[0::2] != inner[1::2]
            or any(start >= stop for start, stop in splits)):
        raise ValueError(f"{where} must be non-empty contiguous key ranges covering [0, Tk = "
                         f"{case.k_len}) in order, got {splits!r}")
    if case.sinks:
        raise ValueError(f"{where}: a sink belongs to exactly one key range; sinks with "
                         "key_splits are not supported")
    if case.empty_rows != "zero":
        raise ValueError(f"{where}: needs empty_rows='zero' (an empty partial has out 0 and "
                         f"lse -inf), got {case.empty_rows!r}")


def key_range_mask(mask: m.Mask | None, start: int, stop: int) -> m.Mask:
    """``mask`` restricted to the keys ``start <= k < stop`` (a split-KV partial's mask):
    ``mask & key_padding(stop) & ~key_padding(start)``, both padded on the right."""
    keys = m.key_padding(stop, side="right") & ~m.key_padding(start, side="right")
    return keys if mask is None else mask & keys


def partial_cases(case: Case) -> list[Case]:
    """The partials of a split-KV case: for each ``(start, stop)`` of ``case.key_splits``
    the case with the mask :func:`key_range_mask` ``(case.mask, start, stop)`` and no
    key_splits. The name is kept, so every partial sees exactly the case's inputs; every key
    outside the range is masked (an empty partial row has out 0 and lse -inf)."""
    return [replace(case, mask=key_range_mask(case.mask, start, stop), key_splits=())
            for start, stop in case.key_splits]


def _check_case_fields(case: Case) -> None:
    """Refuse a case no attention call could have, naming the field and the rule.

    Shapes: B, Hq, Hkv, Dqk, Dv >= 1, Tq, Tk >= 0, Hq a multiple of Hkv (GQA), and
    ``B * Hq * Tq * Tk <= MAX_CASE_SCORES``. Scalars: ``scale`` finite or None, ``softcap``
    finite > 0 or None, ``dropout_rate`` in [0, 1) or None, ``input_scale`` finite > 0,
    ``0 <= seed < 2**64``; ``dtype``, ``layout`` and ``empty_rows`` from their lists.
    """
    where = f"Case {case.name!r}" if isinstance(case.name, str) else "Case"
    for name in ("name", "family"):
        if not check_str(where, name, getattr(case, name)):
            raise ValueError(f"{where}: {name} must be a non-empty str")
    check_str(where, "notes", case.notes)
    if case.mask is not None and not isinstance(case.mask, m.Mask):
        raise TypeError(f"{where}: mask must be a refmask Mask or None, got "
                        f"{type(case.mask).__name__}")
    dims = {name: check_int(where, name, getattr(case, name), minimum=minimum)
            for name, minimum in (("batch", 1), ("q_heads", 1), ("kv_heads", 1),
                                  ("q_len", 0), ("k_len", 0), ("qk_dim", 1), ("v_dim", 1))}
    if dims["q_heads"] % dims["kv_heads"]:
        raise ValueError(f"{where}: q_heads ({dims['q_heads']}) must be a multiple of kv_heads "
                         f"({dims['kv_heads']}) (query head h reads kv head h // (Hq / Hkv))")
    scores = dims["batch"] * dims["q_heads"] * dims["q_len"] * dims["k_len"]
    if scores > MAX_CASE_SCORES:
        raise ValueError(f"{where}: B * Hq * Tq * Tk = {scores} exceeds MAX_CASE_SCORES = 2**28 "
                         "(a case's keep mask and golden arrays are materialised densely)")
    check_choice(where, "dtype", case.dtype, DTYPES)
    check_choice(where, "layout", case.layout, LAYOUTS)
    check_choice(where, "empty_rows", case.empty_rows, EMPTY_ROW_POLICIES)
    if case.scale is not None:
        check_real(where, "scale", case.scale, optional=True)
    if case.softcap is not None:
        check_real(where, "softcap", case.softcap, positive=True, optional=True)
    check_real(where, "input_scale", case.input_scale, positive=True)
    if case.dropout_rate is not None:
        rate = check_real(where, "dropout_rate", case.dropout_rate, optional=True)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{where}: dropout_rate must be a real number in [0, 1) or None, "
                             f"got {rate!r}")
    for name in ("bias", "sinks"):
        check_flag(where, name, getattr(case, name))
    if case.alibi is not None and not isinstance(case.alibi, Alibi):
        raise TypeError(f"{where}: alibi must be a refmask Alibi or None, got "
                        f"{type(case.alibi).__name__}")
    check_int(where, "seed", case.seed, minimum=0, maximum=2**64 - 1,
              rule="an int with 0 <= seed < 2**64")
    if isinstance(case.extra_flags, str) or not isinstance(case.extra_flags, tuple):
        raise TypeError(f"{where}: extra_flags must be a tuple of flag names, got "
                        f"{case.extra_flags!r:.80}")


def _nodes(mask):
    """Every node of a mask tree (the mask, its parts, their parts, ...)."""
    stack = [mask]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        yield node
        stack.extend(getattr(node, "masks", ()))
        if hasattr(node, "mask"):
            stack.append(node.mask)


def _alignments(mask) -> set:
    """Alignment kinds used anywhere in a mask tree."""
    return {node.align.kind for node in _nodes(mask) if getattr(node, "align", None)}


def _kinds(mask) -> set:
    """Mask kinds in a tree, plus "left_padding" when some padding is on the left."""
    kinds = set()
    for node in _nodes(mask):
        kinds.add(node.kind)
        if node.kind in ("key_padding", "query_padding") and node.side == "left":
            kinds.add("left_padding")
    return kinds


_KIND_FLAGS = {
    "causal": "Causal", "sliding_window": "SlidingWindow", "chunked": "Chunked",
    "block_causal": "BlockCausal", "prefix_lm": "PrefixLM", "documents": "Documents",
    "key_padding": "KeyPadding", "query_padding": "QueryPadding", "left_padding": "LeftPadding",
    "strided": "Strided", "global_tokens": "GlobalTokens", "explicit": "ExplicitMask",
    "per_head": "PerHeadMask", "per_batch": "PerBatchMask", "varlen": "Varlen",
    "tree": "TreeMask",
}


def derive_flags(case: Case) -> tuple:
    """The case's flags, computed from its fields (plus ``extra_flags``), sorted."""
    flags = set(case.extra_flags)
    kinds = _kinds(case.mask)
    flags.update(flag for kind, flag in _KIND_FLAGS.items() if kind in kinds)
    aligns = _alignments(case.mask) | ({case.alibi.align.kind} if case.alibi else set())
    flags.update({"top_left": "TopLeft", "bottom_right": "BottomRight",
                  "offset": "KVCache"}[a] for a in aligns)
    if case.q_len != case.k_len:
        flags.add("NonSquare")
        if aligns & {"top_left", "bottom_right"}:
            flags.add("NonSquareCausal")
    if case.q_len and case.k_len and case.keep().sum(axis=-1).min() == 0:
        flags.add("EmptyRow")
    if case.k_len == 0 and case.q_len:
        flags.add("EmptyRow")
    if 1 < case.kv_heads < case.q_heads:
        flags.add("GQA")
    if case.kv_heads == 1 < case.q_heads:
        flags.add("MQA")
    if any(node.kind == "varlen" and node.layout.block_table is not None
           for node in _nodes(case.mask)):
        flags.add("PagedKV")
    flags.update(name for name, on in (
        ("CustomScale", case.scale is not None), ("Softcap", case.softcap is not None),
        ("SoftcapBeforeMask", case.softcap is not None and case.mask is not None),
        ("Bias", case.bias), ("ALiBi", case.alibi is not None), ("Sink", case.sinks),
        ("Dropout", case.dropout_rate is not None), ("DqkNeDv", case.qk_dim != case.v_dim),
        ("BTHD", case.layout == "BTHD"), ("Length1", 1 in (case.q_len, case.k_len)),
        ("Length0", 0 in (case.q_len, case.k_len)), ("LargeMagnitude", case.input_scale >= 8),
        ("LowPrecision", case.dtype in ("float16", "bfloat16")),
        ("LongRow", case.k_len >= 2048), ("SplitKV", bool(case.key_splits)),
        ("ScoresOutput", bool(case.scores)), ("QueryTemperature", case.query_scale is not None),
    ) if on)
    unknown = flags - set(FLAGS)
    if unknown:
        raise ValueError(f"case {case.name}: unknown flags {sorted(unknown)}")
    return tuple(sorted(flags))


def case_from_json(data: Mapping, *, trust: Iterable[str] = ()) -> Case:
    """Rebuild a :class:`Case` from ``Case.to_json()`` output (e.g. a manifest's "case").

    trust: modules whose functions a ``predicate`` mask may name (see
    :func:`refmask.masks.from_json`); nothing else named in ``data`` is imported.
    Raises ValueError when the JSON is malformed or does not describe exactly one case (the
    rebuilt case's JSON must equal ``data``).
    """
    where = "case_from_json"
    if isinstance(trust, str):
        raise TypeError(f"{where}: trust must be a list of module names, got {trust!r}")
    if not isinstance(data, Mapping):
        raise TypeError(f"{where}: data must be a JSON object, got {type(data).__name__}")
    try:
        shape = data["shape"]
        alibi = data["alibi"]
        case = Case(
            name=data["name"], family=data["family"],
            mask=None if data["mask"] is None else m.from_json(data["mask"], trust=trust),
            batch=shape["B"], q_heads=shape["Hq"], kv_heads=shape["Hkv"], q_len=shape["Tq"],
            k_len=shape["Tk"], qk_dim=shape["Dqk"], v_dim=shape["Dv"], dtype=data["dtype"],
            layout=data["layout"], scale=data["scale"], softcap=data["softcap"],
            bias=data["bias"],
            alibi=None if alibi is None else Alibi(
                alibi["slopes"], convention=alibi["convention"], align=alibi["align"],
                layout=(None if alibi.get("layout") is None
                        else layout_from_json(alibi["layout"]))),
            sinks=data["sinks"], dropout_rate=data["dropout_rate"],
            input_scale=data["input_scale"], empty_rows=data["empty_rows"], seed=data["seed"],
            notes=data["notes"],
            key_splits=tuple(tuple(split) for split in data.get("key_splits", ())),
            scores=tuple(data.get("scores", ())),
            query_scale=(None if data.get("query_scale") is None
                         else tuple(data["query_scale"])),
        )
        extra = set(data["flags"]) - set(derive_flags(case))
        case = replace(case, extra_flags=tuple(sorted(extra)))
        rebuilt = json.loads(json.dumps(case.to_json()))
    except KeyError as missing:
        raise ValueError(f"{where}: case JSON lacks the key {missing}") from None
    except (TypeError, AttributeError, OverflowError, RecursionError, ValueError) as error:
        raise ValueError(f"{where}: malformed case JSON ({error})") from None
    if rebuilt != json.loads(json.dumps(dict(data))):
        differing = sorted(key for key in set(rebuilt) | set(data)
                           if rebuilt.get(key) != data.get(key))
        raise ValueError(f"{where}: case {data.get('id')!r} does not round-trip; the rebuilt "
                         f"case differs in {differing}")
    return case


def _shape(case: Case, heads: int, length: int, dim: int) -> tuple:
    if case.layout == "BTHD":
        return (case.batch, length, heads, dim)
    return (case.batch, heads, length, dim)


def dtype_unavailable(name: str) -> str | None:
    """Why the dtype cannot be used here (None when it can): bfloat16 needs ml_dtypes."""
    if name != "bfloat16":
        return None
    try:
        import ml_dtypes  # noqa: F401
    except ImportError:
        return "bfloat16 needs ml_dtypes (pip install 'refmask[conformance]')"
    return None


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype for a dtype name; bfloat16 comes from ml_dtypes."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def case_inputs(case: Case) -> dict:
    """The case's inputs, regenerated bit for bit from ``(seed, "<name>/<tensor>")``.

    q, k, v, d_out (and bias, sinks when switched on) are ``(2u - 1) * sqrt(3) * factor``
    with ``u = refmask.rng.uniform(seed, "<name>/<tensor>", shape)``: zero mean, unit variance
    (times ``factor``), and only exactly rounded IEEE operations, so every machine produces the
    same bits (a Gaussian would need libm's log and cos, which may differ in the last ulp).
    The float64 values are rounded once to the case dtype; ``factor`` is ``input_scale`` for
    q and k and 1 otherwise. ``dropout_keep`` is ``u >= rate``; ``query_scale`` (Tq,) is the
    case's float64 temperatures rounded once to the case dtype. The streams do not depend on
    the dtype, so the float16 case sees the float64 case's inputs, rounded.
    """
    dtype = numpy_dtype(case.dtype)

    def normal(tensor: str, shape: tuple, factor: float = 1.0) -> np.ndarray:
        u = rng.uniform(case.seed, f"{case.name}/{tensor}", shape)
        return round_float64((2.0 * u - 1.0) * np.sqrt(3.0) * factor, dtype)

    out_len = case.q_len
    inputs = {
        "q": normal("q", _shape(case, case.q_heads, case.q_len, case.qk_dim), case.input_scale),
        "k": normal("k", _shape(case, case.kv_heads, case.k_len, case.qk_dim), case.input_scale),
        "v": normal("v", _shape(case, case.kv_heads, case.k_len, case.v_dim)),
        "d_out": normal("d_out", _shape(case, case.q_heads, out_len, case.v_dim)),
    }
    full_scores = (case.batch, case.q_heads, case.q_len, case.k_len)
    if case.bias:
        inputs["bias"] = normal("bias", full_scores)
    if case.sinks:
        inputs["sinks"] = normal("sinks", (case.q_heads,))
    if case.dropout_rate is not None:
        draws = rng.uniform(case.seed, f"{case.name}/dropout_keep", full_scores)
        inputs["dropout_keep"] = draws >= case.dropout_rate
    if case.query_scale is not None:
        inputs["query_scale"] = round_float64(np.asarray(case.query_scale, np.float64), dtype)
    return inputs


def attention_kwargs(case: Case, inputs: Mapping) -> dict:
    """Keyword arguments of ``refmask.attention.attention`` for the case (besides q, k, v);
    ``query_scale`` only when the case has a temperature."""
    kwargs = {
        "mask": case.mask, "scale": case.scale, "softcap": case.softcap,
        "bias": inputs.get("bias"), "alibi": case.alibi, "sinks": inputs.get("sinks"),
        "dropout_keep": inputs.get("dropout_keep"), "dropout_rate": case.dropout_rate,
        "empty_rows": case.empty_rows, "layout": case.layout,
    }
    if "query_scale" in inputs:
        kwargs["query_scale"] = inputs["query_scale"]
    return kwargs


def score_arrays(case: Case, inputs: Mapping) -> dict:
    """refmask's score stages of the case (``case.scores``) computed from ``inputs`` in their
    dtype, as float64 (B, Hq, Tq, Tk) arrays keyed by :func:`score_output_name`."""
    kwargs = {name: value for name, value in attention_kwargs(case, inputs).items()
              if name not in ("dropout_keep", "dropout_rate")}
    with np.errstate(all="ignore"):
        return {score_output_name(stage): np.asarray(
            attention_scores(inputs["q"], inputs["k"], stage=stage, **kwargs), np.float64)
            for stage in case.scores}


# --- layout and the reference ------------------------------------------------------------

#: The gradients attention_vjp returns, in the order reports list them.
GRAD_NAMES = ("dq", "dk", "dv", "dbias", "dsinks")


def to_bhtd(case: Case, x: Array) -> Array:
    """``x`` (an array in the case's layout: (B, T, H, D) for "BTHD") seen as (B, H, T, D).

    A view, not a copy; any array with a NumPy-style ``swapaxes`` (NumPy, torch, JAX, CuPy).
    Applies to q, k, v, out, d_out and their gradients, never to lse, bias or masks."""
    return x.swapaxes(1, 2) if case.layout == "BTHD" else x


def reference_outputs(case: Case, inputs: Mapping, *, float64: bool, grads: bool) -> dict:
    """refmask's result for the case: in float64 (``float64=True``) or naively in the case
    dtype (inputs and arithmetic in that dtype), as float64 NumPy arrays in BHTD layout.

    Always the exact path (``path="exact"``, the array-API definition), whatever the size:
    these values are golden values or yardsticks, and ``refmask.fast`` is judged against
    them like any backend, never used to make them.

    Keys: out, lse, the case's score stages (``scores_<stage>``), and with ``grads`` dq, dk,
    dv (+ dbias, dsinks when the case has them); for a split-KV case also partial_out
    (P, B, Hq, Tq, Dv) and partial_lse (P, B, Hq, Tq), the results of its
    :func:`partial_cases`."""
    def cast(x):
        if x.dtype == np.bool_:
            return x
        return np.asarray(x, np.float64) if float64 else x

    values = {name: cast(x) for name, x in inputs.items()}
    kwargs = attention_kwargs(case, values)
    with np.errstate(all="ignore"):
        result = attention(values["q"], values["k"], values["v"], **kwargs, path="exact")
        arrays = {"out": to_bhtd(case, np.asarray(result.out, np.float64)),
                  "lse": np.asarray(result.lse, np.float64)}
        arrays.update(score_arrays(case, values))
        if grads:
            g = attention_vjp(values["q"], values["k"], values["v"], values["d_out"], **kwargs,
                              path="exact")
            arrays.update(gradient_arrays(case, g))
    if case.key_splits:
        parts = [reference_outputs(part, inputs, float64=float64, grads=False)
                 for part in partial_cases(case)]
        arrays["partial_out"] = np.stack([part["out"] for part in parts])
        arrays["partial_lse"] = np.stack([part["lse"] for part in parts])
    return arrays


def gradient_arrays(case: Case, grads: Grads) -> dict:
    """refmask's ``Grads`` as float64 NumPy arrays: dq, dk, dv in BHTD layout, dbias and
    dsinks when present (the keys of :data:`GRAD_NAMES` that are not None)."""
    arrays = {}
    for name in GRAD_NAMES:
        value = getattr(grads, name)
        if value is not None:
            value = np.asarray(value, np.float64)
            arrays[name] = to_bhtd(case, value) if name in ("dq", "dk", "dv") else value
    return arrays
