"""The dependency rules of docs/ARCHITECTURE.md, read off the sources: every `import` of an
lmforge module, at the top of a file or inside a function, is an arrow; the arrows between
packages must be among the allowed ones, and no modules may import each other in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import lmforge

SRC = Path(lmforge.__file__).parent

# Each package and the packages it may import (docs/ARCHITECTURE.md, "Dependencies"). The
# arrows point one way: from the commands down to the building blocks.
BASE = {"errors", "fileio", "config"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "fileio": {"errors"},
    "config": {"errors"},
    "device": {"errors"},
    "text": {"errors", "fileio"},
    "tokenizers": {"errors", "fileio"},
    "embeddings": {"errors", "fileio", "text", "tokenizers"},
    "data": BASE | {"text", "tokenizers"},
    "nn": {"config", "errors"},
    "models": BASE | {"nn", "tokenizers"},
    "infer": BASE | {"device", "nn", "models", "tokenizers"},
    "train": BASE | {"device", "text", "tokenizers", "data", "nn", "models", "infer"},
    "tasks": BASE
    | {"device", "text", "tokenizers", "data", "nn", "models", "infer", "train", "embeddings"},
    "interpret": BASE | {"device", "nn", "models", "tokenizers", "infer"},
    "serve": BASE | {"device", "models", "tokenizers", "infer"},
    "export": BASE | {"nn", "models", "tokenizers"},
    "cli": BASE
    | {"device", "text", "tokenizers", "embeddings", "data", "nn", "models", "infer", "train"}
    | {"tasks", "interpret", "serve", "export", "(root)"},
    "__main__": {"cli"},
    "(root)": {"errors", "tasks"},  # lmforge.pipeline
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the lmforge modules it imports. `from pkg import sub` is an arrow to the
    submodule sub; a module's own parent packages, which Python loads first anyway, are
    not arrows."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                found = [s for s in subs if s in modules]
                targets = found if len(found) == len(subs) else [node.module, *found]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
            graph[name] |= {t for t in targets if t in modules and t not in ancestors | {name}}
    return graph


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others():
    assert cycles(import_graph()) == []


def test_packages_import_only_what_the_architecture_allows():
    graph = import_graph()
    assert set(map(package, graph)) <= set(ALLOWED), "a new package: add its row to ALLOWED"
    wrong = sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if package(a) != package(b) and package(b) not in ALLOWED[package(a)]
    )
    assert wrong == []


def test_the_checker_sees_a_cycle_and_a_wrong_arrow():
    """The two checks can fail: on a made-up graph with both faults."""
    graph = {"lmforge.nn.a": {"lmforge.models.b"}, "lmforge.models.b": {"lmforge.nn.a"}}
    assert cycles(graph) == [["lmforge.models.b", "lmforge.nn.a"]]
    assert "models" not in ALLOWED[package("lmforge.nn.a")]
