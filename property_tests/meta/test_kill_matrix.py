"""Every claim's property tests kill at least one of its mutants, and every mutant is killed (design.md).

Runs the property tests against the mutants in a subprocess (``--mutants``: no shrinking, derandomized) and
reads the kill matrix from its result rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from implementations import load_all
from reports.kill_matrix import format_kill_matrix, kill_matrix

ROOT = Path(__file__).resolve().parents[2]


def test_every_claim_and_every_mutant_is_killed(tmp_path):
    out = tmp_path / "mutants.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "property_tests", "--mutants", "--ignore=property_tests/meta",
         f"--results={out}", "-q", "-n", "2", "-p", "no:randomly"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert out.exists(), f"the mutants run wrote no results:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rows = json.loads(out.read_text())["rows"]
    claims = sorted(load_all().claims)
    matrix = kill_matrix(rows, claims)
    table = format_kill_matrix(matrix)
    unkilled_claims = [c for c, entry in matrix["claims"].items() if not entry["killed"]]
    unkilled_mutants = [m for m, entry in matrix["mutants"].items() if not entry["killed"]]
    assert not unkilled_claims, f"claims no mutant fails: {unkilled_claims}\n{table}"
    assert not unkilled_mutants, f"mutants no property catches: {unkilled_mutants}\n{table}"
    missed = {m: e["missed_targets"] for m, e in matrix["mutants"].items() if e["missed_targets"]}
    assert not missed, f"mutants that a claim they target did not catch: {missed}\n{table}"


def test_mutants_sharing_a_name_on_two_operations_are_two_mutants():
    rows = [{"implementation": "mutant.no_checks", "operation": op, "origin": "mutant", "targets": [claim],
             "claims": [claim], "status": status, "failure_kind": "conformance", "test": f"test_{op}"}
            for op, claim, status in (("a.f", "a.x", "failed"), ("b.g", "b.y", "passed"))]
    matrix = kill_matrix(rows, ["a.x", "b.y"])
    assert set(matrix["mutants"]) == {"mutant.no_checks (a.f)", "mutant.no_checks (b.g)"}
    assert matrix["claims"]["a.x"]["killed"] and not matrix["claims"]["b.y"]["killed"]
