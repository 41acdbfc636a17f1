"""The package's import structure: one direction, no circles, imports at the top.

Layers, bottom to top: the library (every module of `jaxdeid` not listed below), then the
entry points (`jaxdeid.cli`, `jaxdeid.__main__`, `jaxdeid.commands.*`, `jaxdeid.reproduce.*`).
The graph is read from the source with `ast`, function-level imports included, so a
circle hidden inside a function still counts, and so does one through a package's
``__init__`` (importing ``a.b.c`` runs ``a.b``'s first).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxdeid"
ENTRY_POINTS = ("jaxdeid.cli", "jaxdeid.__main__", "jaxdeid.commands", "jaxdeid.reproduce")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _modules()


def _is_entry_point(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in ENTRY_POINTS)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules an import statement loads (the longest known prefix of each name)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    found = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: those packages are edges too,
        # except the importing module's own parent packages (already running when it imports).
        while name:
            if name != module and not module.startswith(name + "."):
                found.append(name)
            name = name.rpartition(".")[0]
    return found


def _imports() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """The import graph, and every function-level import as (module, line, statement)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    local = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        lines = path.read_text().splitlines()
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module].update(_targets(module, node))
                if id(node) in in_functions and not _justified(lines, node.lineno):
                    local.append((module, node.lineno, ast.unparse(node)))
    return graph, local


def _justified(lines: list[str], lineno: int) -> bool:
    """A function-level import that says why it stays local: ``# local: <reason>`` on its line or
    in the comment block just above it."""
    if "# local:" in lines[lineno - 1]:
        return True
    above = lineno - 2
    while above >= 0 and lines[above].strip().startswith("#"):
        if lines[above].strip().startswith("# local:"):
            return True
        above -= 1
    return False


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph, _ = _imports()
    assert _cycles(graph) == []


def test_library_never_imports_an_entry_point():
    graph, _ = _imports()
    wrong = sorted((m, t) for m, targets in graph.items() if not _is_entry_point(m)
                   for t in targets if _is_entry_point(t))
    assert wrong == []


def test_imports_are_at_module_top_unless_justified():
    _, local = _imports()
    assert local == [], "function-level imports need a '# local: <measured reason>' comment:\n" + \
        "\n".join(f"  {m}:{line}: {stmt}" for m, line, stmt in local)


def test_the_checks_see_a_cycle_and_a_wrong_direction():
    """The checks themselves: a planted circle and a library→command edge are found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _is_entry_point("jaxdeid.commands.train") and not _is_entry_point("jaxdeid.components")
