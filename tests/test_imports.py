"""The house rules of imports: module-level imports between the project's modules run one way (no
cycle), and network/ imports nothing of lib/ (a model is usable without the training stack)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (imports inside functions are the
    deliberate way to break a cycle, and are left out)."""
    files = [*ROOT.glob("lib/**/*.py"), *ROOT.glob("network/**/*.py")]
    names = {_module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in names:
                # "from package import submodule" depends on the submodule, not on the package
                subs = {f"{node.module}.{a.name}" for a in node.names} & names
                deps |= subs or {node.module}
                if len(subs) < len(node.names):
                    deps.add(node.module)
        graph[_module_name(path)] = deps - {_module_name(path)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_module_imports_have_no_cycle():
    graph = import_graph()
    assert {"lib.train", "lib.optim", "lib.checkpoint", "lib.figures", "lib.grid"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert "lib.grid" not in graph["lib.figures"] and "lib.train" not in graph["lib.optim"]


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_network_imports_nothing_of_lib():
    graph = import_graph()
    offenders = {
        m: sorted(d for d in deps if d.startswith("lib"))
        for m, deps in graph.items()
        if m.startswith("network")
    }
    assert not any(offenders.values()), offenders
    # also not inside functions
    for path in ROOT.glob("network/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert not node.module.startswith("lib"), (path, node.module)
