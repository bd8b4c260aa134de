"""Packaging: the version has one source, the package is typed, the source-tree fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest

import refmask
from refmask._pyproject import _parse_minimal, read_pyproject
from refmask._version import source_tree_version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_is_the_one_written_in_pyproject():
    assert refmask.__version__ == PYPROJECT["project"]["version"]
    assert source_tree_version(ROOT / "pyproject.toml") == PYPROJECT["project"]["version"]


def test_source_tree_version_reads_only_the_project_table(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.other]\nversion = "9.9"\n\n[project]\nname = "x"\n'
                         'dependencies = ["a[b]>=1"]\nversion = "1.2.3"\n')
    assert source_tree_version(pyproject) == "1.2.3"
    assert source_tree_version(tmp_path / "missing.toml") is None
    pyproject.write_text("[project]\nname = 'x'\n")
    assert source_tree_version(pyproject) is None


def test_minimal_reader_agrees_with_tomllib_on_the_tables_refmask_reads():
    """The Python 3.10 fallback reader gives what tomllib gives for the version and the
    adapter entry points of the real pyproject."""
    minimal = _parse_minimal((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert minimal["project"]["version"] == PYPROJECT["project"]["version"]
    group = "refmask.adapters"
    assert minimal["project"]["entry-points"][group] == PYPROJECT["project"]["entry-points"][group]
    assert read_pyproject(ROOT / "pyproject.toml") == PYPROJECT


def test_package_is_marked_typed():
    assert (ROOT / "refmask" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["refmask"]
