"""The house rules of the source tree, checked statically (no module is imported).

(a) no import cycle among the modules of refmask/, adapters/ and conformance/;
(b) no source file there above 600 lines;
(c) the arrows point conformance -> adapters -> refmask: adapters never import the suite,
    refmask never imports adapters, the suite or a framework;
(d) refmask's own dependencies: at module level only NumPy, Numba (with its llvmlite),
    array-api-compat and the standard library; the optional extras (ml_dtypes for bfloat16,
    SciPy's BLAS for the fast path) only inside the functions that need them.

The import graph is built from the AST of every file: absolute and relative imports,
``from package import submodule``, and imports inside functions (a lazy import still ties two
modules together for the reader and for the next refactoring).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: import-name prefix -> source folder (pyproject's package-dir)
PACKAGES = {"refmask.adapters": ROOT / "adapters", "refmask.conformance": ROOT / "conformance",
            "refmask": ROOT / "refmask"}
MAX_LINES = 600
FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow", "keras", "onnx", "onnxruntime", "cupy",
              "transformers", "flax")


def _source_modules() -> dict:
    """Module name -> (path, is_package) for every .py file of the three folders."""
    modules = {}
    for prefix, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if any(part.startswith(".") or part == "__pycache__" for part in parts):
                continue
            is_package = parts[-1] == "__init__"
            name = ".".join((prefix, *(parts[:-1] if is_package else parts)))
            modules[name] = (path, is_package)
    return modules


MODULES = _source_modules()


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imported_names(module: str) -> set:
    """Every dotted name the module imports (``from a import b`` yields ``a`` and ``a.b``)."""
    path, is_package = MODULES[module]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module)
                    if node.level else node.module)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _own_module(name: str) -> str | None:
    """The longest source module that ``name`` names or lies in (None outside the tree)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def import_graph() -> dict:
    """module -> set of source modules it imports (itself and its own parents excluded:
    importing ``a.b`` runs ``a/__init__`` first, which is the package, not an edge)."""
    graph = {}
    for module in MODULES:
        targets = {_own_module(name) for name in imported_names(module)}
        graph[module] = {t for t in targets if t and t != module
                         and not module.startswith(t + ".")}
    return graph


def find_cycles(graph: dict) -> list:
    """Every strongly connected component with more than one module (Tarjan), sorted."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(start):
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(components)


# --- the checker checks itself on hand-made graphs ------------------------------------------

def test_find_cycles_on_hand_made_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}}) == [
        ["a", "b", "c"], ["d", "e"]]


def test_relative_imports_resolve_like_python():
    assert _resolve_relative("refmask.masks.combine", False, 1, "_base") == "refmask.masks._base"
    assert _resolve_relative("refmask.masks", True, 1, "combine") == "refmask.masks.combine"
    assert _resolve_relative("refmask.adapters.torch.sdpa", False, 2, "common") == \
        "refmask.adapters.common"
    assert _resolve_relative("refmask.attention.forward", False, 2, None) == "refmask"


def test_the_tree_is_found():
    # the three folders and some known modules: a walker that finds nothing passes vacuously
    for name in ("refmask", "refmask.masks.causal", "refmask.adapters", "refmask.conformance",
                 "refmask.conformance.runner", "refmask.adapters.torch.sdpa"):
        assert name in MODULES, name
    assert len(MODULES) > 60


# --- the rules ------------------------------------------------------------------------------

def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles (each line one strongly connected set):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_source_file_is_at_most_600_lines(module):
    path, _ = MODULES[module]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (> {MAX_LINES})"


def _violations(prefix: str, forbidden) -> list:
    found = []
    for module in MODULES:
        if module != prefix and not module.startswith(prefix + "."):
            continue
        if prefix == "refmask" and module.startswith(("refmask.adapters", "refmask.conformance")):
            continue
        found.extend(f"{module} imports {name}" for name in sorted(imported_names(module))
                     if forbidden(name))
    return found


def _under(name: str, roots) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def test_adapters_never_import_the_suite():
    assert _violations("refmask.adapters",
                       lambda name: _under(name, ["refmask.conformance"])) == []


def test_refmask_imports_no_adapter_suite_or_framework():
    assert _violations("refmask", lambda name: _under(
        name, ["refmask.adapters", "refmask.conformance", *FRAMEWORKS])) == []


def test_exact_and_fast_paths_import_nothing_from_each_other():
    # the path= dispatch (refmask.attention.dispatch) is the only module that sees both
    exact = ["refmask.attention.forward", "refmask.attention.backward"]
    fast = [name for name in MODULES if name.startswith("refmask.fast")]
    found = [f"{module} imports {name}" for module in exact
             for name in sorted(imported_names(module)) if _under(name, ["refmask.fast"])]
    found += [f"{module} imports {name}" for module in fast
              for name in sorted(imported_names(module))
              if _under(name, [*exact, "refmask.attention.dispatch"])]
    assert found == []


#: What refmask/ may import at module level (besides the standard library and itself) ...
CORE_DEPENDENCIES = {"numpy", "numba", "llvmlite", "array_api_compat"}
#: ... and what only inside a function (optional extras of pyproject.toml).
OPTIONAL_DEPENDENCIES = {"ml_dtypes", "scipy"}


def _third_party_imports(module: str) -> tuple:
    """(module-level, function-level) top-level names of third-party packages imported."""
    path, _ = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    top, inner = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module]
        else:
            continue
        roots = {name.split(".")[0] for name in names} - set(sys.stdlib_module_names) - {
            "refmask"}
        (top if node in tree.body else inner).update(roots)
    return top, inner


def test_refmask_depends_only_on_its_core_and_lazily_on_extras():
    # the reader sees both kinds: refmask.case imports NumPy at the top, ml_dtypes in a function
    assert _third_party_imports("refmask.case") == ({"numpy"}, {"ml_dtypes"})
    found = []
    for module in MODULES:
        if module.startswith(("refmask.adapters", "refmask.conformance")):
            continue
        top, inner = _third_party_imports(module)
        found += [f"{module} imports {name} at module level"
                  for name in sorted(top - CORE_DEPENDENCIES)]
        found += [f"{module} imports {name}" for name in
                  sorted(inner - CORE_DEPENDENCIES - OPTIONAL_DEPENDENCIES)]
    assert found == []
