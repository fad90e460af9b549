"""Every operation's spec, plugged in through ``--impl`` as a user would, passes every claim that applies to it.

A user's callable starts with no capability it did not declare (property_tests/user.py); here each one is a plain
function that calls the spec and declares what the spec itself provides, in float64. Any failure is a bug of the
suite: a strategy that grants a capability only to the suite's own implementations, a test that reads an attribute
a user callable lacks, a claim that does not apply and is not skipped. One subprocess runs them all, with a few
examples each (the plumbing, not the numbers, is what differs from the spec's own column, which the ci profile
runs in full).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eqspec.registry import ALGORITHM_KNOBS
from implementations import load_all

ROOT = Path(__file__).resolve().parents[2]
MODULE = "specs_as_user"


def user_module(operations) -> str:
    lines = ["import importlib", ""]
    for i, op in enumerate(operations):
        fn = op.reference
        provides = sorted(set(op.capabilities) - ALGORITHM_KNOBS)
        lines += [
            f"def op_{i}(*args, **kwargs):  # {op.id}",
            f"    return importlib.import_module({fn.__module__!r}).{fn.__qualname__}(*args, **kwargs)",
            "",
            f"op_{i}.eqspec_provides = {provides!r}",
            f"op_{i}.eqspec_dtypes = ('float64',)",
            "",
        ]
    return "\n".join(lines)


@pytest.mark.slow
def test_every_spec_through_impl_passes_what_applies(tmp_path):
    operations = sorted(load_all().operations.values(), key=lambda op: op.id)
    (tmp_path / f"{MODULE}.py").write_text(user_module(operations))
    results = tmp_path / "results.json"
    args = [sys.executable, "-m", "pytest", "property_tests", "--ignore=property_tests/meta", "-q", "-p", "no:xdist",
            "--hypothesis-profile=smoke", "--dtype=float64", f"--results={results}", "-rfE", "--tb=line"]
    for i, op in enumerate(operations):
        args += ["--impl", f"{op.id}={MODULE}:op_{i}", "--only-impl", f"{MODULE}:op_{i}"]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert results.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for r in json.loads(results.read_text())["rows"] if str(r.get("implementation")).startswith(MODULE)]
    failed = [f"{r['implementation']} {r.get('operation')} {r.get('test')}: {str(r.get('message'))[:300]}"
              for r in rows if r["status"] == "failed"]
    assert not failed, "\n".join(failed)
    passed = {r["operation"] for r in rows if r["status"] == "passed"}
    untested = [op.id for op in operations if op.id not in passed]
    assert not untested, f"operations whose spec, as a user's callable, ran no test: {untested}"
    assert proc.returncode == 0, proc.stdout[-3000:]
