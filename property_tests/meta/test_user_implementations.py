"""Pointing the suite at users' implementations: broken ones are reported, never crash or stall the run.

One subprocess run verifies, through --impl, an implementation that raises, one that returns the wrong shape,
one that returns NaN, one that hangs, one with the wrong causal alignment (a mutant) and a correct one; the run
must finish with a failure exit code, a row per test with the right failure kind, and a report that shows which
claims broke and how to reproduce them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OP = "flash_attention.attention"
USER_MODULE = textwrap.dedent('''
    import time
    from specs.flash_attention import attention

    def good(q, k, v, *, causal=False, scale=None):
        return attention(q, k, v, causal=causal, scale=scale)

    def raises(q, k, v, *, causal=False, scale=None):
        raise RuntimeError("kernel launch failed")

    def wrong_shape(q, k, v, *, causal=False, scale=None):
        o, lse = attention(q, k, v, causal=causal, scale=scale)
        return o[..., :-1], lse

    def returns_nan(q, k, v, *, causal=False, scale=None):
        o, lse = attention(q, k, v, causal=causal, scale=scale)
        return o * float("nan"), lse

    def hangs(q, k, v, *, causal=False, scale=None):
        time.sleep(3600)

    for _fn in (good, raises, wrong_shape, returns_nan, hangs):  # a user declares what it supports
        _fn.eqspec_provides = {"lse", "causal", "gqa"}
''')
EXPECTED_KIND = {"user_impls:raises": "implementation-error", "user_impls:wrong_shape": "contract",
                 "user_impls:returns_nan": "conformance", "user_impls:hangs": "timeout"}
WRONG_CAUSAL = "property_tests.mutants.flash_attention:top_left_causal"


@pytest.mark.slow
def test_broken_user_implementations_are_reported_and_the_run_goes_on(tmp_path):
    (tmp_path / "user_impls.py").write_text(USER_MODULE)
    names = [*EXPECTED_KIND, "user_impls:good", WRONG_CAUSAL]
    results = tmp_path / "results.json"
    args = [sys.executable, "-m", "pytest", "property_tests/test_flash_attention.py", "-q", "-p", "no:xdist",
            "-k", "test_exact_attention or test_causal_bottom_right", f"--results={results}", "--impl-timeout=2",
            "--dtype=float32", "--device=cpu"]
    for name in names:
        args += ["--impl", f"{OP}={name}", "--only-impl", name]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, f"expected test failures (exit 1), got {proc.returncode}:\n{proc.stdout[-3000:]}"
    rows = [r for r in json.loads(results.read_text())["rows"] if r.get("test") == "test_exact_attention"]
    by_impl = {}
    for row in rows:
        by_impl.setdefault(row["implementation"], []).append(row)
    for name, kind in EXPECTED_KIND.items():
        assert {r["status"] for r in by_impl[name]} == {"failed"}, name
        assert {r["failure_kind"] for r in by_impl[name]} == {kind}, (name, [r["message"] for r in by_impl[name]])
        assert all(f"--impl '{OP}={name}'" in r["repro"] or f"--impl {OP}={name}" in r["repro"]
                   for r in by_impl[name]), by_impl[name][0]["repro"]
    assert {r["status"] for r in by_impl["user_impls:good"]} == {"passed"}
    causal = [r for r in json.loads(results.read_text())["rows"]
              if r.get("test") == "test_causal_bottom_right" and r.get("implementation") == WRONG_CAUSAL]
    assert causal and causal[0]["status"] == "failed" and causal[0]["failure_kind"] == "conformance"
    assert "Sq" in causal[0]["falsifying_example"] and "pytest" in causal[0]["repro"]

    out = tmp_path / "report"
    render = subprocess.run([sys.executable, "-m", "reports", f"--results={results}", f"--out={out}",
                             "--fail-on-failure"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert render.returncode == 1, render.stdout + render.stderr
    html = (out / "index.html").read_text()
    markdown = (out / "conformance.md").read_text()
    repro = f"--impl {OP}={WRONG_CAUSAL}"  # the repro command names the implementation it needs
    for text in (html, markdown):
        assert "causal_bottom_right" in text and "test_causal_bottom_right" in text and repro in text


def test_an_implementation_that_ran_no_test_fails_the_run(tmp_path):
    """Declared nothing the tests need: every test skipped. That is 'untested', exit 1 - not a vacuous pass."""
    (tmp_path / "quiet_impls.py").write_text(textwrap.dedent('''
        from specs import kimi_vl

        def balance_loss(*args, **kwargs):
            return kimi_vl.balance_loss(*args, **kwargs)

        balance_loss.eqspec_provides = set()
    '''))
    args = [sys.executable, "-m", "pytest", "property_tests/test_kimi_vl.py", "-q", "-p", "no:xdist",
            f"--results={tmp_path / 'results.json'}", "--impl", "kimi_vl.balance_loss=quiet_impls:balance_loss",
            "--only-impl", "quiet_impls:balance_loss"]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "UNTESTED: quiet_impls:balance_loss ran no test" in proc.stdout, proc.stdout[-2000:]
