"""``--generated-mutants``: each mutant's tests one after another on one worker (``--dist loadgroup``), and the rest
of them skipped once one has caught it - a mutant has to be caught once, and most are caught by their first test."""

from __future__ import annotations

import pytest

from ..harness import Target
from .rows import failure_kind


def _mutant(item) -> str | None:
    target = getattr(getattr(item, "callspec", None), "params", {}).get("target")
    return target.impl.name.split("~")[0] if isinstance(target, Target) else None


class GeneratedMutants:
    def __init__(self) -> None:
        self.killed: set[str] = set()  # the mutants this process has seen caught

    @pytest.hookimpl(trylast=True)  # after the other plugins kept the tests that have a mutant to run
    def pytest_collection_modifyitems(self, items):
        items.sort(key=lambda item: _mutant(item) or "")
        for item in items:
            item.add_marker(pytest.mark.xdist_group(_mutant(item) or "none"))

    def pytest_runtest_setup(self, item):
        name = _mutant(item)
        if name in self.killed:
            pytest.skip(f"{name} already killed")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if call.when == "call" and report.failed and call.excinfo is not None and (
                failure_kind(call.excinfo.value) != "harness"):
            self.killed.add(_mutant(item))
