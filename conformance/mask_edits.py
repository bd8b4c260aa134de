"""Mask edits generated from a mask's JSON tree (spec 5.4): every aligned node re-aligned,
every window edge, padding length, chunk, block and prefix size moved by one key, so a
named alternative applies to any combined, per-head or per-batch mask."""

from __future__ import annotations

import json
from collections.abc import Callable

from refmask import masks as m
from refmask.case import Case


def _edit_everywhere(tree: object, edit: Callable) -> object:
    """The tree with ``edit`` applied to every node it changes (None = unchanged)."""
    if isinstance(tree, dict):
        node = {key: _edit_everywhere(value, edit) for key, value in tree.items()}
        changed = edit(node)
        return node if changed is None else changed
    if isinstance(tree, list):
        return [_edit_everywhere(value, edit) for value in tree]
    return tree


def _mask_json(case: Case) -> dict | None:
    return None if case.mask is None else json.loads(json.dumps(case.mask.to_json()))


def kinds(case: Case) -> set:
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


def _predicate_modules(tree: object) -> list:
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


def _from_json(tree: dict) -> m.Mask | None:
    try:
        return m.from_json(tree, trust=_predicate_modules(tree))
    except (ValueError, TypeError, KeyError):
        return None


def mask_edit(case: Case, edit: Callable[[dict], dict | None]) -> m.Mask | None:
    """The case's mask with ``edit`` applied to every node it changes; None when it changes
    nothing or the result is not a valid mask."""
    tree = _mask_json(case)
    if tree is None:
        return None
    new = _edit_everywhere(tree, edit)
    return None if new == tree else _from_json(new)


def mask_edits(case: Case, edits: list) -> m.Mask | None:
    """The case's mask with each of ``edits`` applied in turn (:func:`mask_edit`); None when
    one of them changes nothing or the result is not a valid mask."""
    tree = _mask_json(case)
    if tree is None:
        return None
    for edit in edits:
        new = _edit_everywhere(tree, edit)
        if new == tree:
            return None
        tree = new
    return _from_json(tree)


def _align_kind(node: dict) -> str | None:
    align = node.get("align")
    if align is None:
        return None
    return align if isinstance(align, str) else next(iter(align))


def realign(source: str, target: object) -> Callable[[dict], dict | None]:
    def edit(node):
        kind = _align_kind(node)
        if kind != source:
            return None
        if source == "bottom_right" and not isinstance(node["align"], str) and target == (
                "bottom_right"):
            return {**node, "align": "bottom_right"}
        return {**node, "align": target}
    return edit


def offset_shift(delta: int) -> Callable[[dict], dict | None]:
    def edit(node):
        if _align_kind(node) != "offset":
            return None
        return {**node, "align": {"offset": [o + delta for o in node["align"]["offset"]]}}
    return edit


def field_shift(kind: str, key: str, delta: int,
                minimum: int = 0) -> Callable[[dict], dict | None]:
    def edit(node):
        if node.get("kind") != kind or node.get(key) is None:
            return None
        value = node[key]
        if isinstance(value, list):
            return {**node, key: [max(minimum, x + delta) for x in value]}
        return {**node, key: max(minimum, value + delta)}
    return edit


def replace_kind(kind: str, build: Callable[[dict], dict]) -> Callable[[dict], dict | None]:
    def edit(node):
        return build(node) if node.get("kind") == kind else None
    return edit


def padding_lengths(delta: int) -> Callable[[dict, Case], dict | None]:
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


def causal_strict(node: dict) -> dict:
    return {"kind": "and", "masks": [node, {"kind": "not", "mask": {
        "kind": "sliding_window", "left": 0, "right": 0, "align": node["align"]}}]}


def padding_flip(kind: str, other: str) -> Callable[[dict, Case], dict | None]:
    """A ``kind`` padding node read as ``other`` padding (key lengths applied to query rows
    or back), its lengths clipped to [0, T] of the other axis: a (B, T) pad mask broadcast
    along the wrong axis keeps every row (or key) below the length, all of them when the
    length exceeds that axis."""
    def edit(node, case):
        if node.get("kind") != kind:
            return None
        top = case.q_len if other == "query_padding" else case.k_len
        lengths = node["lengths"]
        clipped = ([min(top, x) for x in lengths] if isinstance(lengths, list)
                   else min(top, lengths))
        return {**node, "kind": other, "lengths": clipped}
    return edit


def field_drop(kind: str, key: str) -> Callable[[dict], dict | None]:
    """``key`` of every ``kind`` node set to None (an unbounded window edge)."""
    def edit(node):
        if node.get("kind") != kind or node.get(key) is None:
            return None
        return {**node, key: None}
    return edit


def padding_side(node: dict) -> dict:
    return {**node, "side": "left" if node.get("side") == "right" else "right"}



def _first_everywhere(value: object) -> object:
    """A per-batch list [x0, x1, ...] (of numbers, not all equal) -> [x0, x0, ...]; dicts
    (an alignment's offsets or valid lengths) walked; anything else unchanged."""
    if isinstance(value, dict):
        return {key: _first_everywhere(v) for key, v in value.items()}
    if (isinstance(value, list) and len(value) > 1
            and all(isinstance(x, (int, float)) for x in value) and len(set(value)) > 1):
        return [value[0]] * len(value)
    return value


def first_entry(node: dict) -> dict | None:
    """Per-batch lengths, prefixes, offsets and valid lengths of ``node`` replaced by the
    first batch entry's (None when the node has none)."""
    edited = {key: _first_everywhere(value) if key in ("lengths", "prefix", "align") else value
              for key, value in node.items()}
    return None if edited == node else edited
