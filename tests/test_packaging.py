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


def _unannotated(root: Path) -> list[str]:
    """Public functions (and methods of public classes) of public modules under ``root`` with
    a parameter or the return left unannotated (``self``/``cls`` and ``__init__``'s return
    excepted)."""
    import ast

    missing = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(part.startswith("_") and part != "__init__.py" for part in parts):
            continue

        def visit(body, prefix: str, in_class: bool, path: Path = path) -> None:
            for node in body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    visit(node.body, f"{prefix}{node.name}.", True)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                        not node.name.startswith("_")):
                    args = node.args
                    params = [*args.posonlyargs, *args.args, *args.kwonlyargs,
                              *(a for a in (args.vararg, args.kwarg) if a)]
                    if in_class and params and params[0].arg in ("self", "cls"):
                        params = params[1:]
                    bad = [p.arg for p in params if p.annotation is None]
                    if node.returns is None and node.name != "__init__":
                        bad.append("return")
                    if bad:
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno} "
                                       f"{prefix}{node.name}: {', '.join(bad)}")

        visit(ast.parse(path.read_text(encoding="utf-8")).body, "", False)
    return missing


def test_every_public_function_is_annotated():
    """Parameters and return of every public function of refmask/, adapters/, conformance/."""
    missing = [line for part in ("refmask", "adapters", "conformance")
               for line in _unannotated(ROOT / part)]
    assert not missing, "unannotated public functions:\n" + "\n".join(missing)
