"""Domain coverage and the generated-mutant score, per document, for the report.

Coverage is read from the registry (which arguments each operation declares, with how many values, and which
option values and omissions the differential test pins) and from the run (which of those pinned tests ran and
passed). The mutation score is the file ``tox -e mutation`` writes (property_tests/mutation/score.py --json).
"""

from __future__ import annotations

import json
from pathlib import Path

from eqspec.domain import parameters, pin_id, pins, single_valued, undeclared

DEFAULT_MUTATION_SCORE = "reports/out/mutation-score.json"
DIFFERENTIAL_MODULE = "property_tests/test_matches_spec.py"


def domain_coverage(registry, rows: list[dict]) -> dict[str, dict]:
    """document -> operations declared, arguments declared with two values or more, pins declared and compared."""
    compared: dict[str, set[str]] = {}
    for row in rows:
        if row.get("module") == DIFFERENTIAL_MODULE and row.get("status") in ("passed", "deviation"):
            compared.setdefault(row.get("operation"), set()).add(_pin_of(row))
    table: dict[str, dict] = {}
    for doc in registry.documents:
        ops = registry.operations_of(doc)
        entry = {"operations": len(ops), "declared": 0, "arguments": 0, "varied": 0, "pins": 0, "pins_compared": 0,
                 "undeclared": []}
        for op in ops:
            entry["arguments"] += len(parameters(op.reference))
            if op.domain is None:
                entry["undeclared"].append(op.id)
                continue
            entry["declared"] += 1
            missing = set(undeclared(op.reference, op.domain)) | set(single_valued(op.domain))
            entry["varied"] += len(parameters(op.reference)) - len(missing & {p.name for p in
                                                                           parameters(op.reference)})
            declared_pins = {pin_id(p) for p in pins(op.domain)} or {"any"}
            entry["pins"] += len(declared_pins)
            entry["pins_compared"] += len(declared_pins & compared.get(op.id, set()))
        if ops:
            table[doc] = entry
    return table


def _pin_of(row: dict) -> str:
    """The pin of a differential test's row, from its node id: test_doc__op[target-device-dtype-<pin>]."""
    nodeid = str(row.get("nodeid", ""))
    params = nodeid.rsplit("[", 1)[-1].rstrip("]") if "[" in nodeid else ""
    parts = params.split("-", 3)
    return parts[3] if len(parts) == 4 else "any"


def load_mutation_score(path: str | Path = DEFAULT_MUTATION_SCORE) -> dict | None:
    """The generated-mutant score per document and each survivor, or None when no mutation run wrote it."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None


def coverage_rows(coverage: dict[str, dict], mutation: dict | None) -> list[dict]:
    """One row per document for the renderers: coverage and, when a mutation run wrote its score, the score."""
    rows = []
    for doc, c in coverage.items():
        m = (mutation or {}).get("documents", {}).get(doc)
        rows.append({
            "document": doc,
            "operations": f"{c['declared']}/{c['operations']}",
            "arguments": f"{c['varied']}/{c['arguments']}",
            "pins": f"{c['pins_compared']}/{c['pins']}",
            "mutants": "—" if m is None else f"{m['killed']}/{m['killed'] + m['survived']}",
            "equivalent": "—" if m is None else str(m["equivalent"]),
            "score": "—" if m is None or m.get("score") is None else f"{100 * m['score']:.1f}%",
        })
    return rows


COVERAGE_COLUMNS = (("document", "document"), ("operations", "operations declared"),
                    ("arguments", "arguments varied"), ("pins", "options and omissions compared"),
                    ("mutants", "generated mutants killed"), ("equivalent", "equivalent"), ("score", "score"))


def survivors(mutation: dict | None) -> list[tuple[str, str, str]]:
    """(mutant, edit, verdict or reason) of every mutant not killed: survivors first, then equivalents."""
    if not mutation:
        return []
    found = [(n, e.get("key") or "", "survived") for n, e in mutation.get("mutants", {}).items()
             if e.get("verdict") == "survived"]
    found += [(n, e.get("key") or "", f"equivalent: {e.get('reason', '')}") for n, e in
              mutation.get("mutants", {}).items() if e.get("verdict") == "equivalent"]
    return found
