"""The results file: rows written as tests finish (a .jsonl that survives an aborted run), then the whole run as one
JSON file with a header (the suite's commit, the environment, the hypothesis profile and seed). Only the xdist
controller (or a plain run) writes it."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import time
from collections import Counter
from pathlib import Path

import torch
from hypothesis import settings

from .options import mutant_mode, partial_reasons

PARTIAL = "reports/out/results-partial.json"


def _status(report) -> tuple[str, str | None, str | None]:
    """(status, reason, message) of one pytest phase report."""
    if report.skipped and hasattr(report, "wasxfail"):
        return "deviation", report.wasxfail.removeprefix("reason: "), None
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return "skipped", reason.removeprefix("Skipped: "), None
    if report.failed and report.when == "call" and "XPASS(strict)" in str(report.longrepr):
        return "failed", None, f"documented deviation no longer observed ({report.longrepr}): update the declaration"
    if report.failed:
        return ("failed" if report.when == "call" else "error"), None, None
    return "passed", None, None


class Results:
    """Rows written as tests finish (.jsonl, survives an aborted run), then the whole run as one JSON file."""

    def __init__(self, config):
        self.partial = partial_reasons(config) if not mutant_mode(config) else []
        default = {"hand": "reports/out/mutants.json", "generated": "reports/out/mutation.json"}.get(
            mutant_mode(config), PARTIAL if self.partial else "reports/out/results.json")
        self.path = Path(config.getoption("--results") or config.rootpath / default)
        self.lines = self.path.with_suffix(".jsonl")
        self.rows: list[dict] = []
        self.started = time.time()
        self.header = {
            "schema": 1, "suite": _suite(config.rootpath), "environment": _environment(),
            "run": {"profile": None,
                    "mode": {"hand": "mutants", "generated": "generated-mutants"}.get(mutant_mode(config), "suite"),
                    "command": shlex.join(["python", "-m", "pytest", *config.invocation_params.args]),
                    "impl_args": config.getoption("--impl"), "only_impl": config.getoption("--only-impl"),
                    "pythonpath": os.environ.get("PYTHONPATH") if config.getoption("--impl") else None,
                    "partial": self.partial, "started": _now(), "finished": None, "complete": False},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # a stale results.json must never pass for this run's
        self.header["run"].update(hypothesis_settings(config))
        self.lines.write_text(json.dumps({"header": self.header}) + "\n")

    def session_started(self, config) -> None:
        """Record the hypothesis profile and seed in force: hypothesis' own plugin loads the profile named by
        --hypothesis-profile in its pytest_configure, which may run after this conftest's."""
        self.header["run"].update(hypothesis_settings(config))
        self.lines.write_text(json.dumps({"header": self.header}) + "\n")  # no rows yet: tests start after this

    def add(self, report) -> None:
        row = dict(next((v for k, v in report.user_properties if k == "eqspec"), {"nodeid": report.nodeid}))
        status, reason, message = _status(report)
        row.update(status=status, duration_s=round(report.duration, 4))
        if reason:
            row["reason"] = reason
        if message:
            row["message"] = message
        if status == "error" and "message" not in row:
            row["failure_kind"] = "harness"
            row["message"] = str(report.longrepr)[-2000:]
        self.rows.append(row)
        with self.lines.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")

    def finish(self) -> None:
        run = self.header["run"]
        run.update(finished=_now(), complete=True, duration_s=round(time.time() - self.started, 2))
        self.path.write_text(json.dumps({**self.header, "rows": self.rows}, indent=1, default=str))
        self.lines.unlink(missing_ok=True)


def hypothesis_settings(config) -> dict:
    """The hypothesis profile in force and how its examples are drawn, for the results header.

    seed: the --hypothesis-seed value; "derandomized" when the profile derandomizes (hypothesis then draws from
    each test's own fixed seed and does not use --hypothesis-seed); "random" otherwise (a fresh seed per test).
    """
    profile = settings._current_profile or "default"
    requested = config.getoption("--hypothesis-profile", default=None)
    if requested and not profile.startswith(requested):  # hypothesis' plugin has not loaded it yet
        profile = requested
    given = config.getoption("--hypothesis-seed", default=None)
    derandomize = bool(settings.get_profile(profile).derandomize)
    if derandomize:
        seed = "derandomized" + (f" (--hypothesis-seed={given} has no effect)" if given is not None else "")
    else:
        seed = str(given) if given is not None else "random"
    return {"profile": profile, "seed": seed, "derandomize": derandomize,
            "hypothesis_seed": None if given is None else str(given)}


class ResultsPlugin:
    """The hooks of the controller's writer, holding its Results."""

    def __init__(self, config) -> None:
        self.results = Results(config)

    def pytest_sessionstart(self, session):
        self.results.session_started(session.config)

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and not report.passed) or (
                report.when == "teardown" and report.failed):
            self.results.add(report)

    def pytest_sessionfinish(self, session, exitstatus):
        self.results.finish()
        self.untested = untested(session.config, self.results.rows)
        if self.untested and session.exitstatus in (0, 5):  # a vacuous pass is not a pass
            session.exitstatus = 1

    def pytest_terminal_summary(self, terminalreporter, config):
        path = self.results.path
        shown = path.relative_to(config.rootpath) if path.is_relative_to(config.rootpath) else path
        render = "python -m reports" + ("" if shown == Path("reports/out/results.json") else f" --results {shown}")
        if self.results.partial:
            terminalreporter.write_line(f"eqspec: a partial run ({'; '.join(self.results.partial)}): "
                                        f"reports/out/results.json, the last complete run, is left as it was")
        terminalreporter.write_line(f"eqspec: {len(self.results.rows)} result rows in {shown}; "
                                    f"render the report with `{render}`")
        for name, reasons in getattr(self, "untested", {}).items():
            terminalreporter.write_line(f"eqspec: UNTESTED: {name} ran no test; skipped because: "
                                        f"{'; '.join(reasons) or 'no test was collected for it'}", red=True)


def untested(config, rows: list[dict]) -> dict[str, list[str]]:
    """The implementations this run was asked about (--only-impl, --impl) that executed no test, with the most
    frequent reasons their tests were skipped."""
    named = list(config.getoption("--only-impl") or []) + [
        value.partition("=")[2].strip() for value in config.getoption("--impl")]
    found = {}
    for name in dict.fromkeys(n for n in named if n):
        own = [r for r in rows if r.get("implementation") == name]
        if not any(r.get("status") in ("passed", "failed", "deviation", "error") for r in own):
            reasons = Counter(str(r.get("reason", ""))[:160] for r in own)
            found[name] = [f"{reason} ({n}x)" for reason, n in reasons.most_common(3)]
    return found


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _suite(root: Path) -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    from importlib.metadata import PackageNotFoundError, version

    try:
        suite_version = version("eqspec")
    except PackageNotFoundError:
        suite_version = None
    return {"name": "eqspec", "version": suite_version, "commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    return {"date": _now(), "python": platform.python_version(), "torch": torch.__version__, "triton": v("triton"),
            "numpy": v("numpy"), "scipy": v("scipy"), "hypothesis": v("hypothesis"), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cuda": torch.version.cuda if cuda else None,
            "gpu": torch.cuda.get_device_name() if cuda else None,
            "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
            # the libraries the thirdparty adapters check (None: not installed, their rows are skips)
            **{name: v(dist) for name, dist in THIRD_PARTY_DISTRIBUTIONS.items()}}


THIRD_PARTY_DISTRIBUTIONS = {"transformers": "transformers", "diffusers": "diffusers", "gymnasium": "gymnasium",
                             "trl": "trl", "open_clip": "open_clip_torch"}
