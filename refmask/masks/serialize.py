"""JSON round-trip of masks: ``from_json(mask.to_json()) == mask``.

The JSON form is ``{"kind": <constructor name>, **constructor arguments}``; alignments are
``"top_left"``, ``"bottom_right"``, ``{"offset": [..]}`` or ``{"bottom_right": {...}}``.
"""

from __future__ import annotations

import json
from typing import Any

from ._base import Mask


def _constructors() -> dict:
    from .block_causal import block_causal
    from .causal import causal
    from .chunked import chunked
    from .combine import all_of, any_of
    from .documents import documents
    from .explicit import explicit_from_json
    from .full import full
    from .global_tokens import global_tokens
    from .padding import key_padding, query_padding
    from .predicate import import_function, predicate
    from .prefix_lm import prefix_lm
    from .select import per_batch, per_head
    from .sliding_window import sliding_window
    from .strided import strided

    return {
        "full": lambda d: full(),
        "causal": lambda d: causal(align=d["align"]),
        "sliding_window": lambda d: sliding_window(d["left"], d["right"],
                                                                  align=d["align"]),
        "chunked": lambda d: chunked(d["size"], align=d["align"]),
        "block_causal": lambda d: block_causal(d["block"], align=d["align"]),
        "prefix_lm": lambda d: prefix_lm(d["prefix"], align=d["align"]),
        "documents": lambda d: documents(d["q_segment_ids"], d.get("k_segment_ids")),
        "key_padding": lambda d: key_padding(d["lengths"], side=d["side"]),
        "query_padding": lambda d: query_padding(d["lengths"], side=d["side"]),
        "strided": lambda d: strided(d["stride"], align=d["align"]),
        "global_tokens": lambda d: global_tokens(d["positions"], align=d["align"]),
        "explicit": lambda d: explicit_from_json(d["shape"], d["bits"]),
        "predicate": lambda d: predicate(import_function(d["fn"])),
        "and": lambda d: all_of(*(from_json(m) for m in d["masks"])),
        "or": lambda d: any_of(*(from_json(m) for m in d["masks"])),
        "not": lambda d: ~from_json(d["mask"]),
        "per_batch": lambda d: per_batch(*(from_json(m) for m in d["masks"])),
        "per_head": lambda d: per_head(*(from_json(m) for m in d["masks"])),
    }


def from_json(data: str | dict[str, Any]) -> Mask:
    """Rebuild a mask from its JSON form (a dict, or a JSON string)."""
    if isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"from_json: data must be a mask's JSON object with a 'kind', got "
                         f"{data!r:.80}")
    constructors = _constructors()
    if data["kind"] not in constructors:
        raise ValueError(f"from_json: unknown mask kind {data['kind']!r}; known kinds: "
                         f"{sorted(constructors)}")
    try:
        return constructors[data["kind"]](data)
    except KeyError as missing:
        raise ValueError(f"from_json: {data['kind']} is missing field {missing}") from None
