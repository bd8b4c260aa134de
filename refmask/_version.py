"""The package version, single-sourced from ``pyproject.toml`` (``[project] version``).

Installed (also ``pip install -e``): read from the distribution's metadata with
:mod:`importlib.metadata`. Run from a source tree that was never installed: read from the
``pyproject.toml`` next to the ``refmask/`` folder. Neither available (e.g. the folder was
copied on its own): ``"0+unknown"``, a valid PEP 440 version that sorts below every release,
so nothing mistakes it for a real one.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from ._pyproject import SOURCE_PYPROJECT, read_pyproject

UNKNOWN_VERSION = "0+unknown"


def source_tree_version(pyproject: Path = SOURCE_PYPROJECT) -> str | None:
    """``[project] version`` of a ``pyproject.toml``, or None when absent or unreadable."""
    version = (read_pyproject(pyproject) or {}).get("project", {}).get("version")
    return version if isinstance(version, str) else None


def package_version() -> str:
    """The version of the refmask distribution (see the module docstring for the order)."""
    try:
        return metadata.version("refmask")
    except metadata.PackageNotFoundError:
        return source_tree_version() or UNKNOWN_VERSION
