"""The product's import graph, read with `ast`: no cycles, and the layering rules.

Modules are named as installed: tritonlite/X.py is tritonlite.X, workers/X.py
is tritonlite.workers.X, shm/X.py tritonlite.shm.X (protos/ holds generated
leaves and is left out). Imports at module level and inside functions count;
those under `if TYPE_CHECKING:` do not (they never run). An import names the
deepest module it reaches (`from a.b import c` is a.b.c when that is a module,
else a.b); the parent packages Python initializes on the way are not edges,
since a package's __init__ importing its own submodules is not a cycle.
"""

from __future__ import annotations

import ast
import os

import pytest

from tests.server_harness import ROOT

# Source folder -> the package name it installs as.
FOLDERS = {"tritonlite": "tritonlite", "workers": "tritonlite.workers", "shm": "tritonlite.shm"}


def _module_files() -> dict[str, str]:
    """Installed module name -> file path."""
    modules: dict[str, str] = {}
    for folder, package in FOLDERS.items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            # (An installed copy of workers/ or shm/ inside tritonlite/ would double the names.)
            skip = {"__pycache__", "protos", *(FOLDERS if dirpath == base else ())}
            dirnames[:] = sorted(d for d in dirnames if d not in skip)
            for filename in sorted(filenames):
                if not filename.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, filename), base)[:-3]
                parts = [p for p in rel.split(os.sep) if p != "__init__"]
                name = ".".join([package, *parts])
                modules[name] = os.path.join(dirpath, filename)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (any depth), except TYPE_CHECKING blocks."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _canonical(name: str) -> str:
    """`workers.x` / `shm.x` (a source-checkout spelling) -> the installed name."""
    head = name.split(".", 1)[0]
    if head in ("workers", "shm"):
        return "tritonlite." + name
    return name


def _deepest(name: str, modules: dict[str, str]) -> str | None:
    if name == "tritonlite.protos" or name.startswith("tritonlite.protos."):
        return None  # generated leaves, left out (not an edge to the tritonlite package)
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def build_graph() -> dict[str, set[str]]:
    modules = _module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")
        package = name if is_package else name.rpartition(".")[0]
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [_canonical(alias.name) for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = _canonical(node.module or "")
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    targets.append(sub if sub in modules else origin)
            for target in targets:
                resolved = _deepest(target, modules)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return build_graph()


def test_the_graph_sees_the_known_edges(graph):
    # Guards the reader itself: a resolver that dropped edges would pass every rule.
    assert "tritonlite.core.model_registry" in graph["tritonlite.core.inference_server"]
    assert "tritonlite.errors" in graph["tritonlite.shm.region_registry"]
    assert "tritonlite.workers.messages" in graph["tritonlite.core.worker_process"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_shm_imports_only_shm_and_errors(graph):
    allowed = ("tritonlite.shm", "tritonlite.errors")
    bad = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("tritonlite.shm")
        for target in targets
        if target.startswith("tritonlite") and not target.startswith(allowed)
    }
    assert bad == set()


def test_metrics_imports_no_frontend(graph):
    reached: set[str] = set()
    todo = ["tritonlite.metrics"]
    while todo:
        module = todo.pop()
        for target in graph[module]:
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert sorted(m for m in reached if m.startswith("tritonlite.frontends")) == []
