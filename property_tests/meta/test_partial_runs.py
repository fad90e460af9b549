"""A partial run (a file, -k, --document, --only-impl) never replaces the complete run's results file, and its
report shows only what ran."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from property_tests.plugins.options import partial_reasons
from reports.conformance import narrowing
from reports.load import RunResults

ROOT = Path(__file__).resolve().parents[2]


def config(args=("property_tests",), keyword="", **options):
    values = {"--document": None, "--only-impl": None, "--origin": None, "--device": None, "--dtype": None, **options}
    return SimpleNamespace(option=SimpleNamespace(keyword=keyword, markexpr="", lf=False, failedfirst=False),
                           getoption=values.get, rootpath=ROOT, args=list(args))


def test_the_whole_suite_is_not_partial():
    assert partial_reasons(config()) == []
    assert partial_reasons(config(args=[str(ROOT / "property_tests")])) == []


def test_what_narrows_a_run_is_named():
    assert partial_reasons(config(keyword="dpo")) == ["-k dpo"]
    assert partial_reasons(config(**{"--document": ["dpo"]})) == ["--document dpo"]
    assert partial_reasons(config(args=["property_tests/test_dpo.py"])) == ["property_tests/test_dpo.py"]
    assert partial_reasons(config(**{"--only-impl": ["m:f"]})) == ["--only-impl m:f"]


def test_the_report_knows_a_partial_run():
    run = RunResults.__new__(RunResults)
    run.run = {"partial": ["--document dpo"], "only_impl": ["m:f"]}
    assert narrowing(run) == "--document dpo; --only-impl m:f"
    run.run = {"partial": [], "only_impl": None}
    assert narrowing(run) == ""
