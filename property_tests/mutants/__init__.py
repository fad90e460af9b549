"""Mutants: plausible wrong implementations (catalogue "plausible implementation bugs"), one module per document.

Every claim keeps at least one mutant here that its property tests must kill (design.md, "Every property must be
able to fail"). ``pytest --mutants`` runs each test against the mutants whose ``targets`` include one of the
test's claims; ``python -m reports.kill_matrix`` prints which claims and mutants were killed. A mutant is also a
ready-made wrong implementation for trying ``--impl``.
"""

from __future__ import annotations

import importlib
import pkgutil

from eqspec.registry import Implementation


def mutant(operation: str, name: str, target: str, *, targets: tuple[str, ...], notes: str,
           provides: frozenset[str] = frozenset({"lse", "gqa", "causal", "grad", "block_sizes"}),
           dtypes: tuple[str, ...] | None = None) -> Implementation:
    return Implementation(operation=operation, name=f"mutant.{name}", target=target, origin="mutant",
                          devices=("cpu",), dtypes=dtypes, provides=provides, targets=targets, notes=notes)


def load_mutants() -> list[Implementation]:
    found: list[Implementation] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "MUTANTS", []))
    return found
