"""The mutation score: which generated mutants the property tests caught, per document, and the survivors.

    python -m property_tests.mutation.score [--results reports/out/mutation.json] [--json OUT] [--min 0.95]

A mutant is killed when one of its tests failed on a conformance, contract, exception or timeout (a harness error
is the suite's own fault and kills nothing). It belongs to its spec module's document (a helper module's mutants
to every document whose operations reach them). Survivors declared in ``equivalents.py`` are left out of the
score, with their reason; every other survivor is listed with its edit, for a test to kill it later.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eqspec.registry import REGISTRY

from . import parse_name
from .equivalents import EQUIVALENT

KILLING = frozenset({"conformance", "contract", "implementation-error", "timeout"})


def _mutant(row: dict) -> str:
    return str(row.get("implementation", "")).split("~")[0]


def score(rows: list[dict]) -> dict:
    """Per mutant and per document: killed, surviving, equivalent, not run (no test could take it)."""
    mutants: dict[str, dict] = {}
    for row in rows:
        if row.get("origin") != "mutant":
            continue
        entry = mutants.setdefault(_mutant(row), {"key": row.get("mutation"), "documents": set(), "killed_by": None,
                                                  "ran": False, "harness": []})
        document = _mutant(row).split(".")[1]  # gen.<module>.<index>: a document's module, or a shared helper's
        entry["documents"].add(document if document in REGISTRY.documents else row.get("document"))
        status = row.get("status")
        if status in ("failed", "error"):
            entry["ran"] = True
            if row.get("failure_kind") in KILLING and entry["killed_by"] is None:
                entry["killed_by"] = f"{row.get('test')} ({row.get('failure_kind')})"
            elif row.get("failure_kind") not in KILLING:
                entry["harness"].append(row.get("nodeid"))
        elif status in ("passed", "deviation") or "already killed" in str(row.get("reason", "")):
            entry["ran"] = True
    documents: dict[str, dict] = {}
    for _, entry in sorted(mutants.items(), key=lambda kv: parse_name(kv[0])):
        entry["documents"] = sorted(d for d in entry["documents"] if d)
        if entry["killed_by"]:
            entry["verdict"] = "killed"
        elif not entry["ran"]:
            entry["verdict"] = "not run"
        elif entry["key"] in EQUIVALENT:
            entry["verdict"], entry["reason"] = "equivalent", EQUIVALENT[entry["key"]]
        else:
            entry["verdict"] = "survived"
        for doc in entry["documents"]:
            d = documents.setdefault(doc, {"killed": 0, "survived": 0, "equivalent": 0, "not run": 0})
            d[entry["verdict"]] += 1
    for d in documents.values():
        scored = d["killed"] + d["survived"]
        d["score"] = d["killed"] / scored if scored else None
    return {"documents": dict(sorted(documents.items())), "mutants": mutants}


def format_score(result: dict) -> str:
    lines = [f"{'document':26} {'killed':>7} {'survived':>9} {'equivalent':>11} {'not run':>8} {'score':>7}"]
    for doc, d in result["documents"].items():
        rate = "n/a" if d["score"] is None else f"{100 * d['score']:.1f}%"
        lines.append(f"{doc:26} {d['killed']:7} {d['survived']:9} {d['equivalent']:11} {d['not run']:8} {rate:>7}")
    survivors = [(n, e) for n, e in result["mutants"].items() if e["verdict"] == "survived"]
    if survivors:
        lines.append(f"\nsurvivors ({len(survivors)}): a test should kill each, or equivalents.py say why it cannot")
        lines += [f"  {name:24} {entry['key']}" for name, entry in survivors]
    harness = [(n, e) for n, e in result["mutants"].items() if e["harness"]]
    if harness:
        lines.append(f"\nharness errors under {len(harness)} mutants (the suite's fault, not a kill):")
        lines += [f"  {name:24} {entry['harness'][0]}" for name, entry in harness]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m property_tests.mutation.score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="reports/out/mutation.json")
    parser.add_argument("--json", default=None, help="also write the score as JSON here (the report reads it)")
    parser.add_argument("--min", type=float, default=None, help="exit 1 when a document's score is below this")
    args = parser.parse_args(argv)
    from implementations import load_all

    load_all()
    path = Path(args.results)
    if not path.exists():
        print(f"no results at {path}: run pytest with --generated-mutants first", file=sys.stderr)
        return 2
    result = score(json.loads(path.read_text())["rows"])
    print(format_score(result))
    if args.json:
        serialisable = {"documents": result["documents"],
                        "mutants": {n: {k: v for k, v in e.items() if k != "harness"}
                                    for n, e in result["mutants"].items()}}
        Path(args.json).write_text(json.dumps(serialisable, indent=1))
    low = [doc for doc, d in result["documents"].items() if args.min is not None and d["score"] is not None
           and d["score"] < args.min]
    if low:
        print(f"\nbelow {100 * args.min:.0f}%: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
