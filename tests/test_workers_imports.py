"""The worker package's import graph: no cycles, and no reach into the server.

Read with `ast` (nothing is imported), every import counted, those under
`if TYPE_CHECKING:` included: a type-only cycle is still two modules that
cannot be understood apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ROOT / "workers"
PREFIX = "tritonlite.workers"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(WORKERS).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PREFIX, *parts])


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(WORKERS.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules `path` names in its imports (a `from pkg import sub` names pkg.sub)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: {m for m in _imports(path, known) if m in known and m != name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_the_worker_modules() -> None:
    graph = _graph()
    # The checker must see real edges, or "no cycle" means nothing.
    assert f"{PREFIX}.bls_client" in graph[f"{PREFIX}.worker_main"]
    assert f"{PREFIX}.worker_link" in graph[f"{PREFIX}.response_sender"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_worker_modules() -> None:
    assert _cycle(_graph()) is None


def test_link_users_do_not_import_the_worker() -> None:
    graph = _graph()
    for user in ("bls_client", "response_sender", "python_execution", "channel_dispatch"):
        assert f"{PREFIX}.worker_main" not in graph[f"{PREFIX}.{user}"], user


def test_workers_do_not_import_the_server_core() -> None:
    for name, path in _modules().items():
        imported = _imports(path, set())
        server = sorted(
            m for m in imported if m.startswith(("tritonlite.core", "tritonlite.frontends"))
        )
        assert not server, f"{name} imports {server}"
