"""No import cycles among universality's modules.

What counts as an edge ``A -> B``: any ``import``/``from ... import`` statement
in module ``A`` that names module ``B`` of the package, wherever it stands —
at module level, inside a function or a class (a deferred import still ties the
two modules together, it only hides the cycle until run time). Not counted:
imports under ``if TYPE_CHECKING:`` (they never run), ``importlib`` calls with
a computed name (the host registry's built-in hosts, the package's lazy
attributes), and the implicit import of a module's parent packages (every
submodule would otherwise form a cycle with its package's ``__init__``).
``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
else to ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "universality"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under ``root`` (a package named after its folder)."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = [root.name, *p.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a known module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the package modules it imports (see the module docstring for what counts)."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    pkg = ".".join(base + ([node.module] if node.module else []))
                else:
                    pkg = node.module or ""
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in modules else pkg for a in node.names]
            for t in targets:
                owner = _owner(t, modules)
                if owner is not None and owner != mod:
                    deps.add(owner)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph`` (depth-first search), or ``None`` when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_universality_has_no_import_cycles():
    graph = import_graph(ROOT)
    assert len(graph) > 50 and "universality.sae.registry" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_sae_registry_imports_no_sae_module():
    assert import_graph(ROOT)["universality.sae.registry"] <= {"universality._errors"}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_checker_finds_deferred_cycles_and_ignores_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, {
        "__init__.py": "from .a import f\n",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import g\ndef f():\n    return 1\n",
        "b.py": "from . import a\ndef g():\n    return a.f()\n",
        "sub/__init__.py": "",
        "sub/c.py": "def h():\n    from ..b import g\n    return g()\n",
    })
    graph = import_graph(pkg)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": set(), "pkg.b": {"pkg.a"}, "pkg.sub": set(), "pkg.sub.c": {"pkg.b"}}
    assert find_cycle(graph) is None
    # a function-level import back from a to c closes a cycle a -> sub.c -> b -> a
    (pkg / "a.py").write_text("def f():\n    from .sub.c import h\n    return h\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"pkg.a", "pkg.sub.c", "pkg.b"}
