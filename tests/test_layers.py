"""The package's layers import downward only and no module imports itself back through a cycle.

Read from the source (every ``import`` statement, at module level or inside a function), not from a linter:
util -> model -> weights -> zoo -> formats -> reference -> mmpretrain -> tools -> cli, where each arrow points
to the layer that may import everything before it. The checker is tested on small packages of its own, so a
checker that saw nothing would fail here too.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mixer_zoo"

LAYERS = ("util", "model", "weights", "zoo", "formats", "reference", "mmpretrain", "tools", "cli")
"""Bottom to top. ``reference`` (the Flax oracle) sits beside the formats: it reads dims with their keys."""

LAYER_OF_TOP_LEVEL = {"_version": "util", "train": "cli", "test": "cli"}
"""Single-file modules at the top of the package and the layer they belong to."""


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path) -> Dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "configs" not in p.parts}


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """The package modules that ``name`` imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    top = name.split(".")[0]
    found: Set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, name, path.name == "__init__.py")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import pkg.sub.attr` or a name inside a module
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] == top and target != name:
                found.add(target)
    return found


def unresolved_imports(root: Path) -> List[str]:
    """Relative imports whose module does not exist (a leftover of a move that only a run would find)."""
    modules = package_modules(root)
    bad = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = _resolve(node, name, path.name == "__init__.py")
                if base not in modules:
                    bad.append(f"{name}: line {node.lineno}: no module {base}")
    return bad


def import_graph(root: Path) -> Dict[str, Set[str]]:
    modules = package_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def layer_of(module: str, layers: Tuple[str, ...] = LAYERS, top_level: Optional[Dict[str, str]] = None) -> int:
    """Rank of a module's layer; the package root (``__init__``, which re-exports the model) ranks above all."""
    parts = module.split(".")
    if len(parts) == 1:
        return len(layers)
    first = (top_level if top_level is not None else LAYER_OF_TOP_LEVEL).get(parts[1], parts[1])
    if first not in layers:
        raise AssertionError(f"{module}: not in any layer; add it to LAYERS or LAYER_OF_TOP_LEVEL")
    return layers.index(first)


def upward_imports(graph: Dict[str, Set[str]], layers: Tuple[str, ...] = LAYERS,
                   top_level: Optional[Dict[str, str]] = None) -> List[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target, layers, top_level) > layer_of(module, layers, top_level):
                bad.append(f"{module} imports {target}, a layer above it")
    return bad


# ---- the package --------------------------------------------------------------------------------------------

def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph(PACKAGE)) is None


def test_every_import_points_down_the_layers():
    assert upward_imports(import_graph(PACKAGE)) == []


def test_every_relative_import_names_a_module_of_the_package():
    assert unresolved_imports(PACKAGE) == []


def test_every_module_belongs_to_a_layer():
    for module in import_graph(PACKAGE):
        layer_of(module)  # raises for a module outside the map


def test_the_graph_sees_the_imports_it_must():
    graph = import_graph(PACKAGE)
    assert "mixer_zoo.model.mixer" in graph["mixer_zoo.model"]
    assert "mixer_zoo.formats.keys" in graph["mixer_zoo.tools.convert"]  # from ..formats.keys import ...
    assert "mixer_zoo.zoo" in graph["mixer_zoo.tools.manifest_check"]  # from .. import zoo
    assert "mixer_zoo.mmpretrain.launch" in graph["mixer_zoo.cli.train"]  # imported inside a function


@pytest.mark.parametrize("limit", [400])
def test_modules_stay_small(limit):
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in package_modules(PACKAGE).items()}
    assert {m: n for m, n in sizes.items() if n > limit} == {}


# ---- the checker, on packages made for it ---------------------------------------------------------------------

def _package(tmp_path: Path, files: Dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_checker_finds_a_cycle_through_relative_and_lazy_imports(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "def f():\n    from ..high import b\n",
        "high/__init__.py": "",
        "high/b.py": "from pkg.low import a\n",
    })
    graph = import_graph(root)
    assert graph["pkg.low.a"] == {"pkg.high.b"} and graph["pkg.high.b"] == {"pkg.low.a"}
    assert find_cycle(graph) in (["pkg.high.b", "pkg.low.a", "pkg.high.b"], ["pkg.low.a", "pkg.high.b", "pkg.low.a"])
    assert upward_imports(graph, ("low", "high"), {}) == ["pkg.low.a imports pkg.high.b, a layer above it"]


def test_checker_finds_an_import_of_a_module_that_moved_away(tmp_path):
    root = _package(tmp_path, {"__init__.py": "", "low/__init__.py": "", "low/a.py": "def f():\n    from .gone import x\n"})
    assert unresolved_imports(root) == ["pkg.low.a: line 2: no module pkg.low.gone"]


def test_checker_accepts_downward_imports_and_names_from_modules(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "from .high import b\n",
        "low/__init__.py": "from .a import VALUE\n",
        "low/a.py": "VALUE = 1\n",
        "high/__init__.py": "",
        "high/b.py": "from ..low import VALUE\nfrom ..low.a import VALUE as V\nimport pkg.low.a\n",
    })
    graph = import_graph(root)
    assert graph["pkg.high.b"] == {"pkg.low", "pkg.low.a"}
    assert find_cycle(graph) is None
    assert upward_imports(graph, ("low", "high"), {}) == []


def test_checker_flags_importing_the_package_root(tmp_path):
    root = _package(tmp_path, {"__init__.py": "from .low import a\n", "low/__init__.py": "",
                               "low/a.py": "from .. import __doc__\n"})
    graph = import_graph(root)
    assert unresolved_imports(root) == []
    assert find_cycle(graph) == ["pkg", "pkg.low.a", "pkg"]
    assert upward_imports(graph, ("low",), {}) == ["pkg.low.a imports pkg, a layer above it"]
