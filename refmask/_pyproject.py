"""Read this project's own ``pyproject.toml`` when refmask runs from a source tree.

An installed refmask (``pip install``, also ``-e``) answers from its distribution metadata
(:mod:`importlib.metadata`); a source tree that was never installed has no metadata, so the
version and the built-in adapter entry points are read from the ``pyproject.toml`` next to
the ``refmask/`` folder instead -- pyproject stays the single place where both are written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SOURCE_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

# Python 3.10 has no tomllib: a reader for tables and ``key = "string"`` lines, which is all
# this project's [project] version and entry-point tables use.
_TABLE = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_STRING_ITEM = re.compile(r'^\s*("[^"]*"|[A-Za-z0-9_.-]+)\s*=\s*"([^"]*)"\s*(#.*)?$')
_KEY_PART = re.compile(r'"[^"]*"|[^.\s"]+')


def _unquote(key: str) -> str:
    return key[1:-1] if key.startswith('"') else key


def _parse_minimal(text: str) -> dict[str, Any]:
    """Tables and their string items only (enough for the tables refmask reads)."""
    root: dict[str, Any] = {}
    table = root
    for line in text.splitlines():
        if header := _TABLE.match(line):
            table = root
            for part in _KEY_PART.findall(header.group(1)):
                table = table.setdefault(_unquote(part), {})
        elif item := _STRING_ITEM.match(line):
            table[_unquote(item.group(1))] = item.group(2)
    return root


def read_pyproject(path: Path = SOURCE_PYPROJECT) -> dict[str, Any] | None:
    """The parsed ``pyproject.toml`` at ``path``, or None when it is absent or not TOML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return _parse_minimal(text)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
