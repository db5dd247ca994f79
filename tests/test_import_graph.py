"""The code's shape: no import circles in agent/, pipelines/ and testkit/ (computed from the source,
TYPE_CHECKING and function-level imports included), and no module over 400 lines without a reason."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "pipelines", "testkit")
MAX_LINES = 400
SIZE_REASON = "Over 400 lines:"
"""How a long module says why it is long: a line of its docstring that starts with this."""


def modules() -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The known modules `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
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
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_graph_finder_sees_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    known = modules()
    graph = {name: set(imported(name, path, known)) for name, path in known.items()}
    assert circles(graph) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_400_lines_without_a_reason(package: str) -> None:
    long = []
    for path in sorted((REPO / package).rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        doc = ast.get_docstring(ast.parse(source)) or ""
        if len(lines) > MAX_LINES and not any(line.startswith(SIZE_REASON) for line in doc.splitlines()):
            long.append(f"{path.relative_to(REPO)}: {len(lines)} lines")
    assert long == []


CARRIER_FOLDERS = ("agent/telephony/piopiy/",)
CARRIER_REGISTRY = "agent/telephony/carriers.py"
"""The one module outside a carrier's folder that names it (its routes and `hotline call`)."""


def test_outside_its_folder_no_module_imports_a_carrier() -> None:
    """The call, the worker, the web app and the records talk to the carrier-neutral link
    (agent/telephony/carrier.py); only agent/telephony/carriers.py wires the carriers in."""
    known = modules()
    carrier_modules = {name for name, path in known.items() if _in_carrier_folder(path)}
    naming = []
    for name, path in known.items():
        relative = path.relative_to(REPO).as_posix()
        if _in_carrier_folder(path) or relative == CARRIER_REGISTRY or relative.startswith("testkit/"):
            continue  # testkit plays the carrier's far end (the PIOPIY simulator)
        naming += [
            f"{relative} imports {target}"
            for target in imported(name, path, known)
            if target in carrier_modules
        ]
    assert naming == []


def _in_carrier_folder(path: Path) -> bool:
    return any(path.relative_to(REPO).as_posix().startswith(folder) for folder in CARRIER_FOLDERS)
