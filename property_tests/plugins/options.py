"""The command-line options of the suite (``python -m pytest property_tests --help``, group "eqspec")."""

from __future__ import annotations

from pathlib import Path

from .. import guard
from ..mutation import parse_name

DEVICES = ("cpu", "cuda")


def add_options(parser) -> None:
    group = parser.getgroup("eqspec")
    group.addoption("--impl", action="append", default=[], metavar="OP=module:callable",
                    help="verify a user implementation of operation OP (repeatable)")
    group.addoption("--only-impl", action="append", default=None, metavar="NAME",
                    help="run only the implementation NAME (repeatable)")
    group.addoption("--skip-impl", action="append", default=None, metavar="PATTERN",
                    help="leave out the implementations whose name matches PATTERN, e.g. 'thirdparty.flex_*' "
                         "(repeatable; fnmatch)")
    group.addoption("--origin", action="append", default=None, metavar="ORIGIN",
                    help="run only implementations of this origin: spec, torch, triton, thirdparty, user (repeatable)")
    group.addoption("--device", action="append", choices=DEVICES, default=None, help="restrict to these devices")
    group.addoption("--dtype", action="append", default=None, help="restrict to these dtypes (e.g. bfloat16)")
    group.addoption("--mutants", action="store_true", help="run the property tests against the mutants")
    group.addoption("--generated-mutants", action="store_true",
                    help="run the property tests against the generated mutants (property_tests/mutation/)")
    group.addoption("--mutation-module", action="append", default=None, metavar="MODULE",
                    help="only the generated mutants of this spec module, e.g. dpo (repeatable)")
    group.addoption("--mutation-sample", type=int, default=None, metavar="N",
                    help="N generated mutants per spec module, drawn with --mutation-seed (default: all)")
    group.addoption("--mutation-seed", type=int, default=0, metavar="SEED", help="the draw of --mutation-sample")
    group.addoption("--document", action="append", default=None, metavar="DOC",
                    help="only the property tests of this document, e.g. dpo (repeatable; python -m specs lists them)")
    group.addoption("--results", default=None, metavar="PATH",
                    help="result rows (JSON) output path (default reports/out/results.json; a partial run - -k, "
                         "--document, --only-impl, a file - writes reports/out/results-partial.json instead)")
    group.addoption("--impl-timeout", type=float, default=guard.DEFAULT_TIMEOUT_S, metavar="SECONDS",
                    help="deadline for one call of an implementation")


def mutant_mode(config) -> str | None:
    """"hand" (--mutants), "generated" (--generated-mutants) or None (the implementations)."""
    if config.getoption("--generated-mutants"):
        return "generated"
    return "hand" if config.getoption("--mutants") else None


def mutant_flags(config, implementation_name: str) -> list[str]:
    """The options that bring a mutant back, for its repro command."""
    if mutant_mode(config) == "generated":
        return ["--generated-mutants", "--mutation-module", parse_name(implementation_name)[0]]
    return ["--mutants"] if mutant_mode(config) == "hand" else []


def partial_reasons(config) -> list[str]:
    """What narrows this run to part of the suite: its results must not replace a complete run's."""
    reasons = []
    for option, shown in (("keyword", "-k"), ("markexpr", "-m")):
        value = getattr(config.option, option, "")
        if value:
            reasons.append(f"{shown} {value}")
    for option in ("--document", "--only-impl", "--skip-impl", "--origin", "--device", "--dtype"):
        if config.getoption(option):
            reasons.append(f"{option} {' '.join(map(str, config.getoption(option)))}")
    suite = (config.rootpath / "property_tests").resolve()
    narrower = [a for a in config.args if Path(a.split("::")[0]).resolve() != suite]
    if narrower:
        reasons.append(" ".join(narrower))
    if getattr(config.option, "lf", False) or getattr(config.option, "failedfirst", False):
        reasons.append("--lf")
    return reasons
