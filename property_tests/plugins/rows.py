"""One result row per test phase, assembled where the test ran (an xdist worker sends it to the controller in the
report's user_properties): the claims and the implementation, what the test measured, and for a failure its kind,
the falsifying example and the command that reproduces it. The controller adds the outcome (results.py)."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import settings

from eqspec.contracts import ConformanceError, ContractViolation
from eqspec.domain import pin_id
from reports.repro import repro_command

from .. import guard, recording
from ..harness import Target
from .options import mutant_flags, mutant_mode

REPRODUCE_FAILURE = re.compile(r"@reproduce_failure\([^)]*\)")


def failure_kind(exc: BaseException) -> str:
    """contract, timeout, implementation-error (it raised), conformance (wrong values), or harness (the suite's)."""
    if isinstance(exc, BaseExceptionGroup):
        return failure_kind(exc.exceptions[0])
    if isinstance(exc, ContractViolation):
        return "contract"
    if isinstance(exc, guard.ImplementationTimeout):
        return "timeout"
    if isinstance(exc, guard.ImplementationError):
        return "implementation-error"
    if isinstance(exc, (ConformanceError, AssertionError)):
        return "conformance"
    return "harness"


def falsifying_example(exc: BaseException) -> str | None:
    """Hypothesis' notes on the failing case (its arguments and labelled draws), without the blob line."""
    notes = [n.strip() for n in getattr(exc, "__notes__", []) if n.strip() and not REPRODUCE_FAILURE.search(n)]
    return "\n".join(notes) or None


def repro(item, exc: BaseException | None) -> str:
    config = item.config
    target = item.callspec.params.get("target") if hasattr(item, "callspec") else None
    impl_args = config.getoption("--impl")
    command = repro_command(
        item.nodeid, profile=settings._current_profile, impl_args=impl_args,
        flags=mutant_flags(config, target.impl.name) if isinstance(target, Target) else [],
        seed=config.getoption("--hypothesis-seed", default=None),
        pythonpath=os.environ.get("PYTHONPATH") if impl_args else None)
    blob = next((m.group(0) for n in getattr(exc, "__notes__", []) for m in [REPRODUCE_FAILURE.search(n)] if m), None)
    return command + (f"\n# or decorate the test with {blob}" if blob else "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("eqspec")
    params = dict(getattr(getattr(item, "callspec", None), "params", {}) or {})
    target = params.pop("target", None)
    row = {
        "nodeid": item.nodeid, "test": item.originalname, "module": item.nodeid.split("::")[0],
        "claims": list(marker.kwargs["claims"]) if marker else [],
        "operation": marker.kwargs["operation"] if marker else None,
        # a differential test's pin as its test id shows it ("loss_type=omitted"), not a sentinel object's repr
        "params": {k: pin_id(v) if k == "pin" and (v is None or isinstance(v, tuple)) else
                   v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for k, v in params.items()},
    }
    module = item.module.__name__.rsplit(".", 1)[-1]
    row["document"] = row["claims"][0].split(".")[0] if row["claims"] else module.removeprefix("test_")
    if isinstance(target, Target):
        row.update(implementation=target.name, origin=target.impl.origin, device=target.device, dtype=target.dtype)
        if target.impl.origin == "mutant":
            row["targets"] = list(target.impl.targets)
            if mutant_mode(item.config) == "generated":
                row["mutation"] = target.impl.notes
    if call.when == "call":
        rec = recording.stop()
        if rec is not None:
            row.update(rec.as_dict())
        if call.excinfo is not None and report.failed:
            exc = call.excinfo.value
            row["failure_kind"] = failure_kind(exc)
            row["message"] = str(exc).strip()[:2000]
            row["falsifying_example"] = falsifying_example(exc)
            row["repro"] = repro(item, exc)
    report.user_properties.append(("eqspec", row))
