"""The kill matrix: which mutants (plausible wrong implementations) each claim's property test catches.

A property that no wrong implementation can fail is worth nothing, so the matrix counts a kill only when the
property itself caught wrong values: a conformance or contract failure. A mutant that crashed or hung was
not caught by the property, whatever the test outcome says.

    python -m reports.kill_matrix [--mutants reports/out/mutants.json]

prints the matrix and exits 1 when a claim or a mutant is not killed, or a mutant is caught but not by a claim it
targets (design.md: every claim's property test kills at least one mutant). `tox -e mutants` runs the mutants and
this check; CI runs it at every landing.
"""

from __future__ import annotations

import argparse
import sys

KILLING_FAILURES = frozenset({"conformance", "contract"})


def _mutant_rows(rows: list[dict]) -> list[dict]:
    # A mutants run may also run the spec as a control; only rows of mutants (or rows that do not say) count.
    return [r for r in rows if r.get("origin") in (None, "mutant")]


def kill_matrix(rows: list[dict], claims: list[str]) -> dict:
    """Claims x mutants from the rows of a mutants run (see the module docstring for what counts as a kill)."""
    rows = _mutant_rows(rows)
    mutants: dict[str, dict] = {}
    killed_pairs: set[tuple[str, str]] = set()
    # Mutants are named per operation: two of one name on different operations are different mutants.
    operations_of: dict[str, set] = {}
    for row in rows:
        operations_of.setdefault(str(row.get("implementation") or "(unnamed)"), set()).add(row.get("operation"))
    for row in rows:
        name = str(row.get("implementation") or "(unnamed)")
        if len(operations_of[name]) > 1:
            name = f"{name} ({row.get('operation')})"
        entry = mutants.setdefault(name, {"targets": [], "killed_by": [], "killed": False, "killed_claims": []})
        for target in row.get("targets") or []:
            if target not in entry["targets"]:
                entry["targets"].append(target)
        if row.get("status") == "failed" and row.get("failure_kind") in KILLING_FAILURES:
            entry["killed"] = True
            test = str(row.get("test") or row.get("nodeid"))
            if test not in entry["killed_by"]:
                entry["killed_by"].append(test)
            for claim in row.get("claims") or []:
                killed_pairs.add((claim, name))
                if claim not in entry["killed_claims"]:
                    entry["killed_claims"].append(claim)
    for entry in mutants.values():
        # A mutant that is caught, but not by the claims it was written to break, points at a weak property.
        entry["missed_targets"] = [t for t in entry["targets"] if t not in entry["killed_claims"]]

    all_claims = list(dict.fromkeys(list(claims) + [c for c, _ in sorted(killed_pairs) if c not in claims]))
    claim_table = {}
    for claim in all_claims:
        killers = [m for m in mutants if (claim, m) in killed_pairs]
        claim_table[claim] = {"mutants": killers, "killed": bool(killers)}
    return {
        "claims": claim_table,
        "mutants": mutants,
        "kill_rate": _fraction(sum(c["killed"] for c in claim_table.values()), len(claim_table)),
        "mutant_kill_rate": _fraction(sum(m["killed"] for m in mutants.values()), len(mutants)),
    }


def _fraction(n: int, total: int) -> float | None:
    return n / total if total else None


def format_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.0f}%"


def format_kill_matrix(matrix: dict) -> str:
    """A plain-text table for the terminal: x = killed, o = a target the mutant did not break, . = neither."""
    claims, mutants = matrix["claims"], matrix["mutants"]
    names = list(mutants)
    killed_claims = sum(c["killed"] for c in claims.values())
    killed_mutants = sum(m["killed"] for m in mutants.values())
    lines = [
        f"Kill matrix: {killed_claims}/{len(claims)} claims killed ({format_rate(matrix['kill_rate'])}), "
        f"{killed_mutants}/{len(mutants)} mutants killed ({format_rate(matrix['mutant_kill_rate'])})",
        "",
    ]
    width = max([len("claim")] + [len(c) for c in claims])
    labels = [f"M{i + 1}" for i in range(len(names))]
    col = max([3] + [len(x) for x in labels])
    lines.append(f"{'claim':<{width}}  " + " ".join(f"{x:>{col}}" for x in labels) + "  killed")
    for claim, entry in claims.items():
        cells = []
        for name in names:
            mark = "x" if name in entry["mutants"] else "o" if claim in mutants[name]["targets"] else "."
            cells.append(f"{mark:>{col}}")
        lines.append(f"{claim:<{width}}  " + " ".join(cells) + f"  {'yes' if entry['killed'] else 'NO'}")
    lines += ["", "x = killed by this mutant, o = targeted by this mutant but not killed, . = neither", ""]
    for label, name in zip(labels, names):
        m = mutants[name]
        status = f"killed by {', '.join(m['killed_by'])}" if m["killed"] else "NOT KILLED"
        lines.append(f"{label:>{col}} = {name}: {status}")
        if m["targets"]:
            lines.append(f"{'':>{col}}   targets: {', '.join(m['targets'])}")
        if m.get("missed_targets") and m["killed"]:
            lines.append(f"{'':>{col}}   targets it did not break: {', '.join(m['missed_targets'])}")
    unkilled_claims = [c for c, e in claims.items() if not e["killed"]]
    unkilled_mutants = [n for n in names if not mutants[n]["killed"]]
    missed = [n for n in names if mutants[n]["killed"] and mutants[n].get("missed_targets")]
    if unkilled_claims or unkilled_mutants or missed:
        lines.append("")
    if unkilled_claims:
        lines.append(f"Claims no mutant kills ({len(unkilled_claims)}): {', '.join(unkilled_claims)}")
    if unkilled_mutants:
        lines.append(f"Mutants no property kills ({len(unkilled_mutants)}): {', '.join(unkilled_mutants)}")
    if missed:
        lines.append(f"Mutants a claim they target does not catch ({len(missed)}): {', '.join(missed)}")
    return "\n".join(lines)


def registered_claims() -> list[str]:
    """Every claim in the registry: each must have a mutant its property kills."""
    from implementations import load_all

    return list(load_all().claims)


def main(argv: list[str] | None = None) -> int:
    from .load import ResultsNotFound, load_results

    parser = argparse.ArgumentParser(prog="python -m reports.kill_matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", default="reports/out/mutants.json", help="results of the mutants run")
    args = parser.parse_args(argv)
    try:
        mutants = load_results(args.mutants)
    except ResultsNotFound as exc:
        print(f"{exc}\nRun the mutants first (tox -e mutants).", file=sys.stderr)
        return 2
    matrix = kill_matrix(mutants.rows, registered_claims())
    print(format_kill_matrix(matrix))
    for note in mutants.notes:
        print(f"note: {note}")
    everything_killed = all(c["killed"] for c in matrix["claims"].values()) and all(
        m["killed"] and not m["missed_targets"] for m in matrix["mutants"].values())
    return 0 if everything_killed and matrix["mutants"] else 1


if __name__ == "__main__":
    sys.exit(main())
