"""The library's import graph: no cycle, and nothing from configs/ or launch/ (they depend on it)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """{module: the w2v_jax/configs/launch modules it imports anywhere (function bodies too)}."""
    graph = {}
    for path in sorted((ROOT / "w2v_jax").rglob("*.py")):
        name, found = _module(path), set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                found |= {f"{base}.{a.name}" for a in node.names} | {base}
        graph[name] = {m for m in found if m.split(".")[0] in ("w2v_jax", "configs", "launch")}
    return graph


def _resolve(graph: dict[str, set[str]], name: str) -> str | None:
    """The module a dotted import name lands in (`from w2v_jax.train import loop` -> w2v_jax.train.loop)."""
    while name and name not in graph:
        name = name.rpartition(".")[0]
    return name or None


def test_the_library_imports_nothing_from_configs_or_launch():
    offenders = {m: sorted(i for i in deps if i.split(".")[0] in ("configs", "launch"))
                 for m, deps in _imports().items()}
    assert not {m: d for m, d in offenders.items() if d}


def test_the_library_import_graph_has_no_cycle():
    graph = _imports()
    edges = {m: {r for d in deps if (r := _resolve(graph, d)) and r != m
                 and not m.startswith(r + ".")}  # a module's own package __init__ is not a cycle
             for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(edges[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(trail + [node, nxt])
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert len(graph) > 40  # the scan saw the whole package
