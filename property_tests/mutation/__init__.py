"""Generated mutants: every spec, copied and mutated one edit at a time, registered as a wrong implementation.

The hand-written mutants (property_tests/mutants/) are the bugs the suite's authors imagined; these are the ones
nobody imagined. For each spec module (a document's, or a helper such as moe_routing), every edit of
``operators.py`` inside a function or constant that some operation's reference reaches gives one mutant: a copy of
the module with that edit, and copies of the spec modules that import from it, so that a bug in
``dpo.selective_log_softmax`` also reaches GRPO's losses. The copies are registered as implementations of every
operation whose reference reaches the edited function (origin ``mutant``, float64, the spec's capabilities), and
``pytest --generated-mutants`` runs each such operation's property tests against them. A mutant is killed when a
property test fails on a conformance, contract, exception or timeout: any of these is what a user would see.

Why not mutmut or cosmic-ray: both mutate the project's files in place (mutmut through trampolines in a copy of
the tree) and run the whole test command per mutant; here the reference must stay intact beside the mutated copy
(the copy is the implementation under test, the original is the oracle), and one pytest session parametrizes the
tests over hundreds of mutants at once.

    python -m pytest property_tests/test_grpo.py --generated-mutants -n 2 --dist loadgroup
    python -m property_tests.mutation.score            per-document score, survivors, equivalents

Mutants are numbered per module in a stable order (the module's text decides it); ``Mutant.key`` names an edit
without its number or line, so that the list of equivalent mutants (``equivalents.py``) survives edits
elsewhere.
"""

from __future__ import annotations

import ast
import random
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from eqspec.registry import REGISTRY, Implementation

from . import operators

SPECS = Path(__file__).resolve().parents[2] / "specs"
NOT_MUTATED = frozenset({"__init__", "__main__", "documents"})  # the package and its entry point, not equations
LIVE = "property_tests.mutation.live"


@dataclass(frozen=True)
class Mutant:
    """One edit of one spec module, and the operations whose references reach it."""

    module: str  # short name: "dpo"
    index: int  # its number among the module's mutants
    function: str  # the top-level function (or constant) the edit is in
    edit: operators.Edit
    operations: tuple[str, ...] = field(default=())
    occurrence: int = 1  # the same edit of the same text, again further down the function

    @property
    def name(self) -> str:
        return f"gen.{self.module}.{self.index}"

    @property
    def key(self) -> str:
        """The edit without its number or line: ``dpo.dpo_loss: h * beta -> h / beta``."""
        again = f" (#{self.occurrence})" if self.occurrence > 1 else ""
        return f"{self.module}.{self.function}: {self.edit.before} -> {self.edit.after}{again}"


# --- the static picture: modules, their top-level names, who references whom --------------------------
# A module is named by its path below specs/: "dpo", "validators", "edm" (a package's __init__), "edm.samplers".

@cache
def _files() -> dict[str, Path]:
    found = {}
    for path in sorted(SPECS.rglob("*.py")):
        parts = path.relative_to(SPECS).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts[0] not in NOT_MUTATED and "__pycache__" not in parts:
            found[".".join(parts)] = path
    return found


def _is_package(module: str) -> bool:
    return _files()[module].name == "__init__.py"


@cache
def _tree(module: str) -> ast.Module:
    path = _files()[module]
    return ast.parse(path.read_text(), filename=str(path))


def mutable_modules() -> tuple[str, ...]:
    """Every spec module with code of its own (a package's __init__ only re-exports: it is rebuilt, not mutated)."""
    return tuple(m for m in _files() if not _is_package(m))


def _defined_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def _package_of(module: str) -> str:
    """The package a module's relative imports start from ("" is specs itself)."""
    return module if _is_package(module) else module.rpartition(".")[0]


@cache
def _imports(module: str) -> dict[str, tuple[str, str]]:
    """Local name -> (spec module, name) of every relative ``from .other import name`` (``..`` included)."""
    found = {}
    for stmt in _tree(module).body:
        if not isinstance(stmt, ast.ImportFrom) or stmt.level == 0:
            continue
        base = _package_of(module)
        for _ in range(stmt.level - 1):
            base = base.rpartition(".")[0]
        source = ".".join(p for p in (base, stmt.module or "") if p)
        if source in _files():
            for alias in stmt.names:
                found[alias.asname or alias.name] = (source, alias.name)
    return found


@cache
def _resolve(module: str, name: str) -> tuple[str, str]:
    """Where ``name`` of ``module`` is defined, through re-exports (a package's __init__)."""
    source = _imports(module).get(name)
    return _resolve(*source) if source is not None else (module, name)


@cache
def _references() -> dict[tuple[str, str], frozenset[tuple[str, str]]]:
    """(module, top-level name) -> the (module, name) pairs its code refers to (decorators excluded)."""
    graph = {}
    for module in mutable_modules():
        tops = {name: stmt for stmt in _tree(module).body for name in _defined_names(stmt)}
        imported = _imports(module)
        for name, stmt in tops.items():
            refs = set()
            for node in operators.walk(stmt):
                if isinstance(node, ast.Name):
                    if node.id in tops and node.id != name:
                        refs.add((module, node.id))
                    elif node.id in imported:
                        refs.add(_resolve(*imported[node.id]))
            graph[(module, name)] = frozenset(refs)
    return graph


@cache
def _reach(entry: tuple[str, str]) -> frozenset[tuple[str, str]]:
    graph, seen, todo = _references(), {entry}, [entry]
    while todo:
        for ref in graph.get(todo.pop(), ()):
            if ref not in seen:
                seen.add(ref)
                todo.append(ref)
    return frozenset(seen)


def _spec_implementations() -> list[Implementation]:
    return [i for i in REGISTRY.implementations.values() if i.origin == "spec"]


def _entry(impl: Implementation) -> tuple[str, str]:
    module, _, qualname = impl.target.partition(":")
    return _resolve(module.removeprefix("specs."), qualname.split(".")[0])


@cache
def _reached_by() -> dict[tuple[str, str], tuple[str, ...]]:
    """(module, name) -> the operations whose spec implementation reaches it."""
    found: dict[tuple[str, str], set[str]] = {}
    for impl in _spec_implementations():
        for node in _reach(_entry(impl)):
            found.setdefault(node, set()).add(impl.operation)
    return {node: tuple(sorted(ops)) for node, ops in found.items()}


@cache
def mutants_of(module: str) -> tuple[Mutant, ...]:
    """Every mutant of one spec module that some operation reaches, numbered in source order."""
    reached, found, seen = _reached_by(), [], {}
    for stmt in _tree(module).body:
        names = _defined_names(stmt)
        operations = tuple(sorted({op for name in names for op in reached.get((module, name), ())}))
        if not operations:
            continue  # code no operation runs (a claim's helper, a benchmark's): a mutant there changes nothing
        for edit in operators.edits(stmt):
            text = (names[0], edit.before, edit.after)
            seen[text] = seen.get(text, 0) + 1
            found.append(Mutant(module, len(found), names[0], edit, operations, seen[text]))
    return tuple(found)


def all_mutants() -> list[Mutant]:
    return [m for module in mutable_modules() for m in mutants_of(module)]


def sample(mutants: list[Mutant], per_module: int | None, seed: int) -> list[Mutant]:
    """``per_module`` mutants of each module, drawn with ``seed`` (all of them when None)."""
    if per_module is None:
        return list(mutants)
    rng, chosen = random.Random(seed), []
    for module in sorted({m.module for m in mutants}):
        own = [m for m in mutants if m.module == module]
        chosen += sorted(rng.sample(own, min(per_module, len(own))), key=lambda m: m.index)
    return chosen


# --- building one mutant: the edited module and the spec modules that import from it --------------------

def _dependents(module: str) -> list[str]:
    """The spec modules that import (directly or not) from ``module``, each after the ones it imports from."""
    found: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for other in _files():
            if other not in found and other != module and any(src == current for src, _ in _imports(other).values()):
                found.add(other)
                todo.append(other)
    return sorted(found, key=_depth)


@cache
def _depth(module: str) -> int:
    sources = {src for src, _ in _imports(module).values()}
    return 1 + max((_depth(s) for s in sources), default=0)


def _key(module: str) -> str:
    """A module's name as an identifier: "edm.samplers" -> "edm__samplers"."""
    return module.replace(".", "__")


def _execute(module: str, tree: ast.Module, name: str) -> types.ModuleType:
    copy = types.ModuleType(name)
    copy.__file__ = str(_files()[module])
    copy.__package__ = ".".join(p for p in ("specs", _package_of(module)) if p)
    if _is_package(module):
        copy.__path__ = [str(_files()[module].parent)]
    sys.modules[name] = copy  # a dataclass looks its module up while it is created
    exec(compile(tree, copy.__file__, "exec"), copy.__dict__)
    return copy


def build(mutant: Mutant) -> dict[str, types.ModuleType]:
    """The mutated module and its dependents' copies, by module key; the registry is left as it was."""
    original = _tree(mutant.module)
    position = next(i for i, stmt in enumerate(original.body) if mutant.function in _defined_names(stmt))
    edited = ast.Module(body=list(original.body), type_ignores=[])
    edited.body[position] = operators.apply(original.body[position], mutant.edit)
    saved = {attr: dict(getattr(REGISTRY, attr)) for attr in ("specs", "operations", "claims", "implementations")}
    patched: dict[str, types.ModuleType] = {}
    copies: dict[str, types.ModuleType] = {}
    prefix = f"{LIVE}._copies.{_key(mutant.module)}_{mutant.index}"
    try:
        copies[mutant.module] = _execute(mutant.module, edited, f"{prefix}.{_key(mutant.module)}")
        for dependent in _dependents(mutant.module):
            for module, copy in copies.items():  # `from .dpo import f` in the dependent finds the mutated dpo
                full = f"specs.{module}"
                patched.setdefault(full, sys.modules[full])
                sys.modules[full] = copy
            copies[dependent] = _execute(dependent, _tree(dependent), f"{prefix}.{_key(dependent)}")
    finally:
        for full, module in patched.items():
            sys.modules[full] = module
        for attr, value in saved.items():  # the copies re-registered their operations: put the originals back
            getattr(REGISTRY, attr).clear()
            getattr(REGISTRY, attr).update(value)
    return {_key(module): copy for module, copy in copies.items()}


def implementations(mutants: Iterable[Mutant]) -> list[Implementation]:
    """One implementation per (mutant, operation it reaches), loaded lazily through ``live``."""
    found = []
    for mutant in mutants:
        for impl in _spec_implementations():
            if (mutant.module, mutant.function) in _reach(_entry(impl)):
                module, _, qualname = impl.target.partition(":")
                suffix = "" if impl.name == "spec" else f"~{impl.name}"
                found.append(Implementation(
                    operation=impl.operation, name=f"{mutant.name}{suffix}",
                    target=f"{LIVE}:{_key(mutant.module)}_{mutant.index}.{_key(module.removeprefix('specs.'))}.{qualname}",
                    origin="mutant", devices=("cpu",), dtypes=impl.dtypes, provides=impl.provides,
                    targets=(), notes=mutant.key))
    return found


def parse_name(name: str) -> tuple[str, int]:
    """(module, index) of an implementation named ``gen.<module>.<index>[~<spec implementation>]`` (the module
    may be dotted: gen.edm.samplers.3)."""
    module, _, index = name.split("~")[0].removeprefix("gen.").rpartition(".")
    return module, int(index)


def selected(module: str, wanted: Iterable[str] | None) -> bool:
    """Whether ``--mutation-module`` values select ``module`` ("edm" selects edm.samplers too)."""
    return not wanted or any(module == w or module.startswith(f"{w}.") for w in wanted)
