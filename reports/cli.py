"""python -m reports: render results (+ mutants, + asv results) and the registry into HTML, Markdown and JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .asv_results import load_asv_results
from .conformance import build_report, to_json
from .coverage import DEFAULT_MUTATION_SCORE, load_mutation_score
from .formatting import kill_rate_text, totals_text
from .html import render_html
from .load import ResultsNotFound, load_results, merge_results
from .markdown import render_markdown

DEFAULT_RESULTS = "reports/out/results.json"
DEFAULT_MUTANTS = "reports/out/mutants.json"
DEFAULT_ASV = "benchmarks/results"
DEFAULT_OUT = "reports/out"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("--results", action="append", default=None, metavar="PATH",
                        help="results of the property tests (its .jsonl twin is read when the run was aborted); "
                             "repeat it to merge several runs into one report: rows of the same test node, "
                             f"implementation, device and dtype are taken from the later file (default: "
                             f"{DEFAULT_RESULTS})")
    parser.add_argument("--mutants", default=DEFAULT_MUTANTS, help="results of the mutants run, if any")
    parser.add_argument("--mutation-score", default=DEFAULT_MUTATION_SCORE,
                        help="the generated-mutant score tox -e mutation writes, if any")
    parser.add_argument("--asv-results", default=DEFAULT_ASV, help="asv's results directory")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where index.html, conformance.md and .json go")
    parser.add_argument("--fail-on-failure", action="store_true",
                        help="exit 1 when any result failed (by default failures are content, exit 0)")
    args = parser.parse_args(argv)
    args.results = args.results or [DEFAULT_RESULTS]
    return args


def load_registry():
    """The registry with every spec module; if one fails to import, the documents alone and the reason."""
    from eqspec.registry import REGISTRY, Registry

    try:
        from implementations import load_all

        return load_all(), []
    except Exception as exc:  # a broken spec module must not hide the results of all the others
        fallback = Registry()
        for doc in REGISTRY.documents.values():
            fallback.add_document(doc)
        return fallback, [f"the registry could not be loaded ({type(exc).__name__}: {exc}); equations and claims "
                          f"without results are missing from this report"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = []
    for path in args.results:
        try:
            runs.append(load_results(path))
        except ResultsNotFound as exc:
            print(f"{exc}\nRun the property tests first (python -m pytest property_tests); they write it.",
                  file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"cannot read {path}: {exc}", file=sys.stderr)
            return 2
    results = merge_results(runs)

    mutants = None
    try:
        mutants = load_results(args.mutants)
    except ResultsNotFound:
        if args.mutants != DEFAULT_MUTANTS:
            print(f"warning: no mutants results at {args.mutants}", file=sys.stderr)
    except ValueError as exc:
        print(f"warning: cannot read {args.mutants}: {exc}", file=sys.stderr)

    registry, notes = load_registry()
    report = build_report(results, registry, mutants, notes, load_mutation_score(args.mutation_score))
    asv = load_asv_results(args.asv_results)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "index.html": render_html(report, asv),
        "conformance.md": render_markdown(report),
        "conformance.json": json.dumps(to_json(report), indent=1, allow_nan=False) + "\n",
    }
    for name, text in written.items():
        (out / name).write_text(text, encoding="utf-8")

    if results.sources:
        print("merged: " + "; ".join(f"{s['label']} ({s['shown']} of its {s['rows']} rows shown)"
                                     for s in results.sources))
    print(f"{totals_text(report.totals)}; {kill_rate_text(report.kill)}")
    if not results.complete:
        print("INCOMPLETE RUN: " + "; ".join(report.notes))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print("wrote " + ", ".join(str(out / name) for name in written))
    return 1 if args.fail_on_failure and report.failures else 0
