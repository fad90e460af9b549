"""pytest wiring: options, hypothesis profiles, implementation parametrization and result capture.

Options (``python -m pytest property_tests --help``, group "eqspec"):
  --impl OP=module:callable   add a user implementation (repeatable; also EQSPEC_IMPL and entry points)
  --only-impl NAME            run only this implementation (a user callable is named "module:callable")
  --origin ORIGIN             run only implementations of this origin (e.g. thirdparty)
  --device / --dtype          restrict the run
  --mutants                   run the tests against the mutants instead (the kill matrix)
  --generated-mutants         run them against the generated mutants (property_tests/mutation/); narrowed by
                              --mutation-module MODULE and --mutation-sample N (per module, drawn with --mutation-seed)
  --results PATH              where the result rows go (default reports/out/results.json, mutants.json)
  --impl-timeout SECONDS      deadline of one implementation call (default 120, or EQSPEC_IMPL_TIMEOUT)

Every test writes one row (claims, implementation, device, dtype, status, what it measured, and for a failure the
falsifying example and a repro command) to a .jsonl file as it finishes, and the whole run to results.json at the
end; an aborted run still leaves its rows for ``python -m reports``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") is None and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module imports triton (env-notes.md)
if "OMP_NUM_THREADS" not in os.environ:
    # The examples are small: threads cost more than they give, and xdist runs workers side by side. Also, on
    # these CPUs the first multi-threaded torch.exp after a matmul in a fresh process is sometimes off by ~1e-4
    # (measured: 2 of 40 processes with 2 threads, 0 of 40 with one): one thread keeps the suite deterministic.
    torch.set_num_threads(1)

from hypothesis import settings  # noqa: E402

from eqspec.contracts import ConformanceError, ContractViolation  # noqa: E402
from eqspec.registry import REGISTRY  # noqa: E402
from implementations import load_all  # noqa: E402

from . import guard, profiles, recording, user  # noqa: E402
from .harness import Target  # noqa: E402

DEVICES = ("cpu", "cuda")
INTERPRETED_EXAMPLE_SHARE = 4  # Triton under the CPU interpreter costs ~3 ms per program: a quarter of the examples


def pytest_addoption(parser):
    group = parser.getgroup("eqspec")
    group.addoption("--impl", action="append", default=[], metavar="OP=module:callable",
                    help="verify a user implementation of operation OP (repeatable)")
    group.addoption("--only-impl", action="append", default=None, metavar="NAME",
                    help="run only the implementation NAME (repeatable)")
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
    group.addoption("--results", default=None, metavar="PATH", help="result rows (JSON) output path")
    group.addoption("--impl-timeout", type=float, default=guard.DEFAULT_TIMEOUT_S, metavar="SECONDS",
                    help="deadline for one call of an implementation")


def pytest_configure(config):
    config.addinivalue_line("markers", "eqspec(claims, operation, requires, dtypes): claims a property test checks")
    load_all()
    config._eqspec_user = user.collect(config.getoption("--impl"))
    mutants = mutant_mode(config)
    if mutants == "hand":
        from .mutants import load_mutants

        config._eqspec_mutants = load_mutants()
    elif mutants == "generated":
        from . import mutation

        wanted = config.getoption("--mutation-module")
        chosen = [m for m in mutation.all_mutants() if mutation.selected(m.module, wanted)]
        chosen = mutation.sample(chosen, config.getoption("--mutation-sample"), config.getoption("--mutation-seed"))
        config._eqspec_mutants = mutation.implementations(chosen)
    if config.getoption("--hypothesis-profile", default=None) is None:
        settings.load_profile("mutants" if mutants else os.environ.get("EQSPEC_PROFILE", profiles.DEFAULT))
    guard.set_timeout(config.getoption("--impl-timeout"))
    if not hasattr(config, "workerinput"):  # the xdist controller (or a plain run) owns the results
        config._eqspec_results = Results(config)


def mutant_mode(config) -> str | None:
    """"hand" (--mutants), "generated" (--generated-mutants) or None (the implementations)."""
    if config.getoption("--generated-mutants"):
        return "generated"
    return "hand" if config.getoption("--mutants") else None


def pytest_report_header(config):
    lines = [f"eqspec: hypothesis profile {settings._current_profile}, "
             f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')}, "
             f"CUDA {'available: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}"]
    for key in sorted(k for k in os.environ if k.startswith("EQSPEC_")):
        lines.append(f"eqspec: {key}={os.environ[key]}")
    for impl in getattr(config, "_eqspec_user", []):
        lines.append(f"eqspec: user implementation {impl.name} of {impl.operation} ({impl.notes})")
    return lines


# --- parametrizing `target` over implementations ------------------------------------------------------

def _candidates(config, operation: str, claims: tuple[str, ...]):
    if mutant_mode(config) == "generated":  # every test of the operation may catch a bug nobody aimed at
        return [m for m in config._eqspec_mutants if m.operation == operation]
    if mutant_mode(config):
        return [m for m in config._eqspec_mutants if m.operation == operation and set(m.targets) & set(claims)]
    impls = REGISTRY.implementations_of(operation)
    only, origins = config.getoption("--only-impl"), config.getoption("--origin")
    if only:
        impls = [i for i in impls if i.name in only]
    if origins:
        impls = [i for i in impls if i.origin in origins]
    return [i for i in impls if i.origin != "mutant"]


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("eqspec")
    if marker is None or "target" not in metafunc.fixturenames:
        return
    config = metafunc.config
    op_id, claims = marker.kwargs["operation"], marker.kwargs["claims"]
    op = REGISTRY.operations[op_id]
    # CUDA rows only where CUDA exists or was asked for: the header says which devices this run had
    wanted_devices = config.getoption("--device") or (DEVICES if torch.cuda.is_available() else ("cpu",))
    wanted_dtypes = config.getoption("--dtype")
    test_dtypes = marker.kwargs.get("dtypes")
    params = []
    for impl in _candidates(config, op_id, claims):
        deviation = any(c in impl.deviations for c in claims)  # run it even without the capability: to show it
        missing = sorted(marker.kwargs["requires"] - impl.provides)
        for device in wanted_devices:
            if device not in impl.devices:
                continue  # no row for a device an implementation never claimed (python -m specs lists them)
            for dtype in impl.dtypes_for(op):
                if (test_dtypes and dtype not in test_dtypes) or (wanted_dtypes and dtype not in wanted_dtypes):
                    continue
                marks = []
                reason = impl.unavailable_reason(device)
                if reason:
                    marks.append(pytest.mark.skip(reason=f"{impl.name}: {reason}"))
                elif missing and not deviation:
                    marks.append(pytest.mark.skip(
                        reason=f"{impl.name} does not provide {', '.join(missing)} ({impl.notes})"))
                target = Target(impl, device, dtype)
                params.append(pytest.param(target, id=str(target), marks=marks))
    metafunc.parametrize("target", params)


def pytest_collection_modifyitems(config, items):
    kept = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if mutant_mode(config) and not isinstance(params.get("target"), Target):
            continue  # a test with no mutant aimed at its claims
        _mark_deviation(item)
        _count_examples(item)
        kept.append(item)
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
    if mutant_mode(config) == "generated":
        _group_by_mutant(items)


def _group_by_mutant(items) -> None:
    """Each generated mutant's tests one after another on one worker (``--dist loadgroup``), so that the first kill
    skips the rest: a mutant has to be caught once, and most are caught by their first test."""
    def mutant(item):
        return item.callspec.params["target"].impl.name.split("~")[0]

    items.sort(key=mutant)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(mutant(item)))


_KILLED: set[str] = set()  # generated mutants this process has seen caught


def pytest_runtest_setup(item):
    if mutant_mode(item.config) == "generated":
        name = item.callspec.params["target"].impl.name.split("~")[0]
        if name in _KILLED:
            pytest.skip(f"{name} already killed")


def _mark_deviation(item) -> None:
    """A documented deviation turns the test into a strict xfail: it must fail, with an AssertionError."""
    params = dict(getattr(getattr(item, "callspec", None), "params", {}) or {})
    target, marker = params.pop("target", None), item.get_closest_marker("eqspec")
    if not isinstance(target, Target) or marker is None:
        return
    deviation = target.impl.deviation(marker.kwargs["claims"], {**params, "dtype": target.dtype,
                                                                 "device": target.device})
    if deviation is not None:
        item.add_marker(pytest.mark.xfail(strict=deviation.strict, raises=AssertionError,
                                          reason=f"documented deviation: {deviation.reason}"))


def _count_examples(item) -> None:
    fn = getattr(item, "obj", None)
    hyp = getattr(fn, "hypothesis", None)
    if hyp is None or getattr(hyp.inner_test, "_eqspec_counted", False):
        return
    inner = hyp.inner_test

    @functools.wraps(inner)
    def counted(*args, **kwargs):
        recording.example()
        return inner(*args, **kwargs)

    counted._eqspec_counted = True
    hyp.inner_test = counted


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    fn = item.obj
    target = getattr(item, "callspec", None) and item.callspec.params.get("target")
    original = getattr(fn, "_hypothesis_internal_use_settings", None)
    if original is not None and isinstance(target, Target) and target.interpreted:
        fn._hypothesis_internal_use_settings = settings(
            original, max_examples=max(3, original.max_examples // INTERPRETED_EXAMPLE_SHARE))
    recording.start()
    try:
        yield
    finally:
        if original is not None:
            fn._hypothesis_internal_use_settings = original


# --- result rows ------------------------------------------------------------------------------------

def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return _failure_kind(exc.exceptions[0])
    if isinstance(exc, ContractViolation):
        return "contract"
    if isinstance(exc, guard.ImplementationTimeout):
        return "timeout"
    if isinstance(exc, guard.ImplementationError):
        return "implementation-error"
    if isinstance(exc, (ConformanceError, AssertionError)):
        return "conformance"
    return "harness"


REPRODUCE_FAILURE = re.compile(r"@reproduce_failure\([^)]*\)")


def _falsifying_example(exc: BaseException) -> str | None:
    """Hypothesis' notes on the failing case (its arguments and labelled draws), without the blob line."""
    notes = [n.strip() for n in getattr(exc, "__notes__", []) if n.strip() and not REPRODUCE_FAILURE.search(n)]
    return "\n".join(notes) or None


def _repro(item, config, exc: BaseException | None) -> str:
    parts = ["python", "-m", "pytest", item.nodeid, f"--hypothesis-profile={settings._current_profile}"]
    for value in config.getoption("--impl"):
        parts += ["--impl", value]
    if config.getoption("--mutants"):
        parts.append("--mutants")
    target = item.callspec.params.get("target") if hasattr(item, "callspec") else None
    if config.getoption("--generated-mutants") and isinstance(target, Target):
        parts += ["--generated-mutants", "--mutation-module",
                  target.impl.name.split("~")[0].removeprefix("gen.").rpartition(".")[0]]
    seed = config.getoption("--hypothesis-seed", default=None)
    if seed is not None:
        parts.append(f"--hypothesis-seed={seed}")
    blob = next((m.group(0) for n in getattr(exc, "__notes__", []) for m in [REPRODUCE_FAILURE.search(n)] if m), None)
    return shlex.join(parts) + (f"\n# or decorate the test with {blob}" if blob else "")


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
        "params": {k: v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for k, v in params.items()},
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
            row["failure_kind"] = _failure_kind(exc)
            row["message"] = str(exc).strip()[:2000]
            row["falsifying_example"] = _falsifying_example(exc)
            row["repro"] = _repro(item, item.config, exc)
            if isinstance(target, Target) and target.impl.origin == "mutant" and row["failure_kind"] != "harness":
                _KILLED.add(target.impl.name.split("~")[0])
    report.user_properties.append(("eqspec", row))


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
        default = {"hand": "reports/out/mutants.json", "generated": "reports/out/mutation.json"}.get(
            mutant_mode(config), "reports/out/results.json")
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
                    "started": _now(), "finished": None, "complete": False},
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


def pytest_runtest_logreport(report):
    results = getattr(_config, "_eqspec_results", None) if _config else None
    if results is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed) or (
            report.when == "teardown" and report.failed):
        results.add(report)


_config = None


def pytest_sessionstart(session):
    global _config
    _config = session.config
    results = getattr(session.config, "_eqspec_results", None)
    if results is not None:
        results.session_started(session.config)


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


def pytest_sessionfinish(session, exitstatus):
    results = getattr(session.config, "_eqspec_results", None)
    if results is not None:
        results.finish()


def pytest_terminal_summary(terminalreporter, config):
    results = getattr(config, "_eqspec_results", None)
    if results is not None:
        terminalreporter.write_line(f"eqspec: {len(results.rows)} result rows in {results.path}; "
                                    f"render the report with `python -m reports`")


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
