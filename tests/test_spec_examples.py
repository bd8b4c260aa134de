"""Every worked example in docs/spec.md is checked against refmask.

A ```mask block is a Python expression over ``refmask.masks`` followed by ``Tq=.. Tk=..``
(optionally ``B=.. b=..`` and ``H=.. h=..``), then one picture row per query: ``█`` keep,
``·`` drop, spaces optional. A ```tiles block has the same first line plus ``tile=RxC`` and one
row of E/P/F block codes per tile row (``b=`` picks one batch entry, else batch=None).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from refmask import masks as refmask_masks
from refmask.masks import Block

SPEC = Path(__file__).resolve().parents[1] / "docs" / "spec.md"

BLOCK = re.compile(r"^```(mask|tiles)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
HEADER = re.compile(
    r"^(?P<expr>.*?\S)\s+(?P<sizes>(?:Tq|Tk|B|b|H|h|tile)=[\dx]+(?:\s+(?:Tq|Tk|B|b|H|h|tile)=[\dx]+)*)"
    r"\s*$"
)
CELLS = {"█": True, "·": False}
CODES = {"E": Block.EMPTY, "P": Block.PARTIAL, "F": Block.FULL}

PRIMITIVE_KINDS = (
    "full", "causal", "sliding_window", "chunked", "block_causal", "prefix_lm", "documents",
    "key_padding", "query_padding", "strided", "global_tokens", "explicit", "predicate",
    "per_batch", "per_head", "varlen", "tree",
)


def _parse(kind: str, body: str) -> dict:
    lines = [line.rstrip() for line in body.splitlines() if line.strip()]
    header = HEADER.match(lines[0])
    if header is None:
        raise ValueError(f"bad {kind} header line: {lines[0]!r}")
    sizes = dict(item.split("=") for item in header["sizes"].split())
    return {"kind": kind, "header": lines[0].strip(), "expr": header["expr"], "sizes": sizes,
            "rows": [line.replace(" ", "") for line in lines[1:]]}


def _examples(kind: str) -> list[dict]:
    text = SPEC.read_text(encoding="utf-8")
    return [_parse(found, body) for found, body in BLOCK.findall(text) if found == kind]


def _evaluate(expr: str):
    scope = {name: getattr(refmask_masks, name) for name in refmask_masks.__all__}
    scope["np"] = np
    return eval(expr, scope)  # noqa: S307 - the spec's own examples


MASK_EXAMPLES = _examples("mask")
TILE_EXAMPLES = _examples("tiles")


@pytest.mark.parametrize("example", MASK_EXAMPLES, ids=[e["header"] for e in MASK_EXAMPLES])
def test_mask_example(example):
    sizes = example["sizes"]
    q_len, k_len = int(sizes["Tq"]), int(sizes["Tk"])
    batch, heads = int(sizes.get("B", 1)), int(sizes.get("H", 1))
    b, h = int(sizes.get("b", 0)), int(sizes.get("h", 0))
    assert set(sizes) <= {"Tq", "Tk", "B", "b", "H", "h"}
    for row in example["rows"]:
        assert set(row) <= set(CELLS), f"picture row {row!r} holds characters other than █ and ·"
    expected = np.array([[CELLS[c] for c in row] for row in example["rows"]], dtype=bool)
    assert expected.shape == (q_len, k_len), (
        f"picture is {expected.shape[0]} x {expected.shape[1] if expected.ndim == 2 else 0}, "
        f"header says Tq={q_len} Tk={k_len}")
    mask = _evaluate(example["expr"])
    got = np.asarray(mask.materialize(batch, heads, q_len, k_len))[b, h]
    np.testing.assert_array_equal(got, expected, err_msg=example["header"])


@pytest.mark.parametrize("example", TILE_EXAMPLES, ids=[e["header"] for e in TILE_EXAMPLES])
def test_tiles_example(example):
    sizes = example["sizes"]
    q_len, k_len = int(sizes["Tq"]), int(sizes["Tk"])
    tile_q, tile_k = (int(x) for x in sizes["tile"].split("x"))
    batch = int(sizes["b"]) if "b" in sizes else None
    expected = [[CODES[c] for c in row] for row in example["rows"]]
    mask = _evaluate(example["expr"])
    got = [[mask.classify(q0, min(q0 + tile_q, q_len), k0, min(k0 + tile_k, k_len),
                          q_len=q_len, k_len=k_len, batch=batch)
             for k0 in range(0, k_len, tile_k)]
           for q0 in range(0, q_len, tile_q)]
    assert got == expected, example["header"]


def test_examples_are_many_unique_and_cover_every_primitive():
    assert len(MASK_EXAMPLES) >= 20
    headers = [e["header"] for e in MASK_EXAMPLES + TILE_EXAMPLES]
    assert len(headers) == len(set(headers)), "two spec examples share a first line"
    missing = [kind for kind in PRIMITIVE_KINDS
               if not any(re.search(rf"\b{kind}\(", e["expr"]) for e in MASK_EXAMPLES)]
    assert not missing, f"no spec example uses {missing}"


def test_every_fenced_mask_block_is_parsed():
    text = SPEC.read_text(encoding="utf-8")
    opened = len(re.findall(r"^```(?:mask|tiles)[ \t]*$", text, re.MULTILINE))
    assert opened == len(MASK_EXAMPLES) + len(TILE_EXAMPLES)
