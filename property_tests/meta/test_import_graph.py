"""Imports flow one way (design.md, "Structure"): the infrastructure (eqspec) at the bottom, then the documents
(specs), then the implementations, and the harnesses on top (property_tests, benchmarks, reports, tools).

Read from the source with ``ast`` (nothing is imported), function-local imports included: an upward import hidden in
a function is still an upward import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Which of the project's packages each package may import (itself included).
ALLOWED = {
    "eqspec": {"eqspec"},
    "specs": {"eqspec", "specs"},
    "implementations": {"eqspec", "specs", "implementations"},
    "reports": {"eqspec", "specs", "implementations", "reports"},
    "benchmarks": {"eqspec", "specs", "implementations", "benchmarks"},
    # the suite's own tests test everything below them, the benchmarks' cache and the report included
    "property_tests": {"eqspec", "specs", "implementations", "property_tests", "benchmarks", "reports"},
    "tools": {"eqspec", "specs", "implementations", "property_tests", "benchmarks", "reports", "tools"},
}
# A command-line entry point of a lower package may compose the layers above it: it is a root, nothing imports it.
ENTRY_POINTS = {"specs/__main__.py"}


def _package_modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level project package) of every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = path.relative_to(ROOT).parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = own[: len(own) - node.level]
                target = (*base, *(node.module.split(".") if node.module else ()))
                found.append((node.lineno, target[0] if target else own[0]))
            elif node.module:
                found.append((node.lineno, node.module.split(".")[0]))
    return [(line, name) for line, name in found if name in ALLOWED]


@pytest.mark.parametrize("package", sorted(p for p in ALLOWED if (ROOT / p).is_dir()))
def test_imports_flow_one_way(package):
    wrong = []
    for path in _package_modules(package):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ENTRY_POINTS:
            continue
        wrong += [f"{rel}:{line} imports {name}" for line, name in _imported_packages(path)
                  if name not in ALLOWED[package]]
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(wrong)


def test_the_layers_have_no_cycle():
    """The allowed graph itself is a partial order (a package's allowed set never includes one that allows it back,
    except itself)."""
    for a, allowed in ALLOWED.items():
        for b in allowed - {a}:
            assert a not in ALLOWED[b], f"{a} and {b} may import each other"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    module = tmp_path / "specs" / "x.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from implementations import torch\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert _imported_packages(module) == [(2, "implementations")]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports (relative imports resolved; ``from package import module`` counts the
    module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    found.add(f"{source}.{alias.name}")
                elif source in modules:
                    found.add(source)
    return found - {name}


def test_no_module_imports_itself_back():
    """No import cycle between two modules of the project (a cycle is how specs/documents.py and the registry once
    imported each other)."""
    paths = [p for package in ALLOWED if (ROOT / package).is_dir() for p in _package_modules(package)]
    modules = {_module_name(p): p for p in paths}
    graph = {name: _module_imports(path, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
