"""Conformance: case catalog, golden corpus, runner, reports, CLI.

``refmask.conformance.check`` (the runner's :func:`~refmask.conformance.runner.check`) and
``refmask.conformance.Judging`` are importable from here; they are loaded on first use, so
``import refmask.conformance`` stays cheap.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"check": ".runner", "Judging": ".judging", "Report": ".runner"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Judging", "Report", "check"]
