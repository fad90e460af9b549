"""The kill matrix's rules (reports/kill_matrix.py). The mutants run itself is `tox -e mutants`: every claim and
every mutant killed, each mutant by the claims it targets, checked by ``python -m reports.kill_matrix`` (CI runs it
at every landing; it takes twice the rest of the tests, so it is not part of the default run)."""

from __future__ import annotations

import json

import reports.kill_matrix as km


def _row(mutant, op, claim, status, targets=None):
    return {"implementation": mutant, "operation": op, "origin": "mutant", "targets": targets or [claim],
            "claims": [claim], "status": status, "failure_kind": "conformance", "test": f"test_{op}_{claim}"}


def test_mutants_sharing_a_name_on_two_operations_are_two_mutants():
    rows = [_row("mutant.no_checks", op, claim, status)
            for op, claim, status in (("a.f", "a.x", "failed"), ("b.g", "b.y", "passed"))]
    matrix = km.kill_matrix(rows, ["a.x", "b.y"])
    assert set(matrix["mutants"]) == {"mutant.no_checks (a.f)", "mutant.no_checks (b.g)"}
    assert matrix["claims"]["a.x"]["killed"] and not matrix["claims"]["b.y"]["killed"]


def test_the_check_fails_on_a_mutant_that_a_claim_it_targets_misses(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(km, "registered_claims", lambda: ["a.x", "a.y"])
    caught_by_both = [_row("mutant.one", "a.f", "a.x", "failed"), _row("mutant.two", "a.f", "a.y", "failed")]
    results = tmp_path / "mutants.json"
    results.write_text(json.dumps({"rows": caught_by_both}))
    assert km.main(["--mutants", str(results)]) == 0
    # mutant.one also targets a.y, whose test passed on it: a property that should have failed did not
    missed = [*caught_by_both, _row("mutant.one", "a.f", "a.y", "passed", targets=["a.x", "a.y"])]
    results.write_text(json.dumps({"rows": missed}))
    assert km.main(["--mutants", str(results)]) == 1
    assert "a claim they target does not catch (1): mutant.one" in capsys.readouterr().out
