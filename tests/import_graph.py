"""The import graph of a package, read with ast (nothing is imported), and the rules ragfn's rooms keep.

Every import counts: at module level, inside a function, or under TYPE_CHECKING, because each is a dependency a
reader must follow. A room (subpackage) states in its `__init__` docstring what it may import ("May import:
ragfn.core, ragfn.eventing." or "May import: nothing of ragfn."); those lines are the layering, and the checks
below hold the code to them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

MAY_IMPORT = re.compile(r"^May import: ([^.]+(?:\.\w+[^.]*)*)\.$", re.MULTILINE)  # may wrap


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(root, path): path for path in sorted(root.rglob("*.py"))}


def _imported(node: ast.AST, current: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against the importing module's package
            package = current.split(".") if is_package else current.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # `from a import b` names module a.b when b is a submodule; the caller keeps whichever exists
        return [base] + [f"{base}.{alias.name}" for alias in node.names]
    return []


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (a submodule import also depends on its packages' __init__)."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for target in _imported(node, name, path.name == "__init__.py"):
                if target in known and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted, the list sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def room_of(module: str, rooms: set[str]) -> str | None:
    """`ragfn.ingest.chunking` -> `ragfn.ingest`; None for the package itself and its top-level modules."""
    room = ".".join(module.split(".")[:2])
    return room if room in rooms else None


def declared_layers(root: Path) -> dict[str, set[str]]:
    """room -> the rooms its `__init__` docstring says it may import."""
    layers = {}
    for init in sorted(root.glob("*/__init__.py")):
        room = module_name(root, init)
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        match = MAY_IMPORT.search(doc)
        if match is None:
            raise AssertionError(f"{init}: its docstring has no 'May import: ...' line")
        names = " ".join(match.group(1).split())
        layers[room] = set() if names == f"nothing of {root.name}" else {n.strip() for n in names.split(",")}
    return layers


def layering_violations(root: Path) -> list[str]:
    """Imports from one room into another that the importing room's docstring does not allow."""
    layers = declared_layers(root)
    problems = []
    for module, targets in sorted(import_graph(root).items()):
        room = room_of(module, set(layers))
        if room is None:
            continue  # ragfn/__main__.py and ragfn/__init__.py sit above every room
        for target in sorted(targets):
            other = room_of(target, set(layers))
            if other is None and target != root.name:
                problems.append(f"{module} imports {target}, a top-level module: rooms do not import upwards")
            elif other is not None and other != room and other not in layers[room]:
                problems.append(f"{module} imports {target}, but {room} may import only "
                                f"{', '.join(sorted(layers[room])) or 'nothing'}")
    return problems
