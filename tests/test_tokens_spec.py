"""The ```tokens examples of docs/spec.md section 6 are what refmask.tokens computes.

A block is one Python expression (``refmask.tokens`` names and ``ids = np.array`` in scope)
and the expected text: ``batch_to_text`` of a MaskedBatch, ``inputs``/``targets`` lines of a
T5Batch (row 0), or the rows of an integer array. The prose next to each block derives the
result by hand from the stream words it quotes; test_tokens.py checks the words themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import refmask.tokens as T

SPEC = Path(__file__).resolve().parents[1] / "docs" / "spec.md"
BLOCK = re.compile(r"^```tokens[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _blocks():
    found = BLOCK.findall(SPEC.read_text(encoding="utf-8"))
    return [(b.splitlines()[0], [line for line in b.splitlines()[1:] if line.strip()])
            for b in found]


def _text(result) -> list[str]:
    if isinstance(result, T.MaskedBatch):
        return T.batch_to_text(result).splitlines()
    if isinstance(result, T.T5Batch):
        return [f"inputs  {' '.join(map(str, result.inputs[0, :result.input_lengths[0]]))}",
                f"targets {' '.join(map(str, result.targets[0, :result.target_lengths[0]]))}"]
    return [" ".join(map(str, row)) for row in np.asarray(result).tolist()]


def test_section_6_has_examples():
    assert len(_blocks()) >= 8


@pytest.mark.parametrize("expr, expected", _blocks(), ids=lambda x: str(x)[:60])
def test_tokens_example(expr, expected):
    scope = {name: getattr(T, name) for name in T.__all__}
    scope["ids"] = lambda rows: np.array(rows, dtype=np.int64)
    result = eval(expr, scope)  # noqa: S307 - the spec's own examples
    assert _text(result) == [line.rstrip() for line in expected]
