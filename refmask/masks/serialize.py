"""JSON round-trip of masks: ``from_json(mask.to_json()) == mask``.

The JSON form is ``{"kind": <constructor name>, **constructor arguments}``; alignments are
``"top_left"``, ``"bottom_right"``, ``{"offset": [..]}`` or ``{"bottom_right": {...}}``.

Reading JSON is reading data, so :func:`from_json` is strict (docs/spec.md sections 2.8, 4):
every kind has a fixed set of required and optional keys and any other key is refused by name
(a misspelled optional key never falls back to a default); nesting is limited to
``MAX_DEPTH`` levels; and a ``predicate`` names a function that is imported only when its
module is in the caller's ``trust`` allow-list -- data never runs code on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ._base import Mask

#: Deepest nesting of combinators accepted by :func:`from_json` (a guard against stack
#: exhaustion by hostile input; real masks nest a handful of levels).
MAX_DEPTH = 64


def _schemas() -> dict:
    """kind -> (required keys, optional keys, builder(fields, child) -> Mask)."""
    from .block_causal import block_causal
    from .causal import causal
    from .chunked import chunked
    from .combine import all_of, any_of
    from .documents import documents
    from .explicit import explicit_from_json
    from .full import full
    from .global_tokens import global_tokens
    from .padding import key_padding, query_padding
    from .prefix_lm import prefix_lm
    from .select import per_batch, per_head
    from .sliding_window import sliding_window
    from .strided import strided
    from .tree import tree
    from .varlen import layout_from_json, varlen

    def parts(d, child):
        masks = d["masks"]
        if not isinstance(masks, list):
            raise ValueError(f"from_json: {d['kind']}.masks must be a list of mask objects, "
                             f"got {type(masks).__name__}")
        return [child(m) for m in masks]

    return {
        "full": ((), (), lambda d, child: full()),
        "causal": (("align",), (), lambda d, child: causal(align=d["align"])),
        "sliding_window": (("left", "right", "align"), (),
                           lambda d, child: sliding_window(d["left"], d["right"],
                                                           align=d["align"])),
        "chunked": (("size", "align"), (), lambda d, child: chunked(d["size"], align=d["align"])),
        "block_causal": (("block", "align"), (),
                         lambda d, child: block_causal(d["block"], align=d["align"])),
        "prefix_lm": (("prefix", "align"), (),
                      lambda d, child: prefix_lm(d["prefix"], align=d["align"])),
        "documents": (("q_segment_ids",), ("k_segment_ids",),
                      lambda d, child: documents(d["q_segment_ids"], d.get("k_segment_ids"))),
        "key_padding": (("lengths", "side"), (),
                        lambda d, child: key_padding(d["lengths"], side=d["side"])),
        "query_padding": (("lengths", "side"), (),
                          lambda d, child: query_padding(d["lengths"], side=d["side"])),
        "strided": (("stride", "align"), (),
                    lambda d, child: strided(d["stride"], align=d["align"])),
        "global_tokens": (("positions", "align"), (),
                          lambda d, child: global_tokens(d["positions"], align=d["align"])),
        "explicit": (("shape", "bits"), (),
                     lambda d, child: explicit_from_json(d["shape"], d["bits"])),
        "predicate": (("fn",), (), None),  # built in from_json: needs ``trust``
        "and": (("masks",), (), lambda d, child: all_of(*parts(d, child))),
        "or": (("masks",), (), lambda d, child: any_of(*parts(d, child))),
        "not": (("mask",), (), lambda d, child: ~child(d["mask"])),
        "per_batch": (("masks",), (), lambda d, child: per_batch(*parts(d, child))),
        "per_head": (("masks",), (), lambda d, child: per_head(*parts(d, child))),
        "tree": (("parents", "align"), (), lambda d, child: tree(d["parents"], align=d["align"])),
        "varlen": (("mask", "layout"), (),
                   lambda d, child: varlen(child(d["mask"]), layout_from_json(d["layout"]))),
    }


def _trusted_modules(trust: Iterable[str]) -> tuple[str, ...]:
    if isinstance(trust, str) or not isinstance(trust, Iterable):
        raise TypeError(f"from_json: trust must be a list of module names, got {trust!r:.80}")
    names = tuple(trust)
    for name in names:
        if not isinstance(name, str) or not name or name.startswith(".") or " " in name:
            raise ValueError(f"from_json: trust must hold module names like 'my_pkg.masks', "
                             f"got {name!r:.80}")
    return names


def from_json(data: str | dict[str, Any], *, trust: Iterable[str] = ()) -> Mask:
    """Rebuild a mask from its JSON form (a dict, or a JSON string).

    trust: module names whose functions a ``predicate`` may name (a package name covers its
      submodules); default none. A predicate naming a function of any other module is refused
      before anything is imported (ValueError naming the module and ``trust``).

    Unknown kinds, missing or unknown keys, wrong JSON types and nesting deeper than
    ``MAX_DEPTH`` raise ValueError naming the kind and the key; a constructor's own rule
    (e.g. ``sliding_window: left must be an int >= 0 or None``) raises its TypeError or
    ValueError unchanged.
    """
    modules = _trusted_modules(trust)
    if isinstance(data, (str, bytes, bytearray)):
        try:
            data = json.loads(data)
        except RecursionError:
            raise ValueError(f"from_json: data nests deeper than {MAX_DEPTH} levels") from None
        except ValueError as error:
            raise ValueError(f"from_json: data is not valid JSON ({error})") from None
    schemas = _schemas()

    def build(node, depth: int, path: str) -> Mask:
        if depth > MAX_DEPTH:
            raise ValueError(f"from_json: {path} nests deeper than {MAX_DEPTH} levels")
        if not isinstance(node, dict) or "kind" not in node:
            raise ValueError(f"from_json: {path} must be a mask's JSON object with a 'kind', "
                             f"got {node!r:.80}")
        kind = node["kind"]
        if not isinstance(kind, str) or kind not in schemas:
            raise ValueError(f"from_json: {path} has unknown mask kind {kind!r:.80}; known "
                             f"kinds: {sorted(schemas)}")
        required, optional, builder = schemas[kind]
        missing = [key for key in required if key not in node]
        if missing:
            raise ValueError(f"from_json: {kind} is missing field {missing[0]!r} (at {path})")
        unknown = sorted(str(key) for key in node if key not in ("kind", *required, *optional))
        if unknown:
            raise ValueError(f"from_json: {kind} has unknown field(s) {unknown} (at {path}); "
                             f"allowed: {sorted((*required, *optional))}")
        if kind == "predicate":
            from .predicate import import_function, predicate

            return predicate(import_function(node["fn"], trust=modules))
        counter = iter(range(1 << 30))

        def child(sub):
            index = next(counter)
            suffix = ".mask" if kind == "not" else f".masks[{index}]"
            return build(sub, depth + 1, path + suffix)

        return builder(node, child)

    return build(data, 1, "data")
