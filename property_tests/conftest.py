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

The jobs live in property_tests/plugins/ (options, parametrize, rows, results, generated); this file adds the options,
fixes the environment before anything imports triton, loads the registry and registers the plugins.

Every test writes one row (claims, implementation, device, dtype, status, what it measured, and for a failure the
falsifying example and a repro command) to a .jsonl file as it finishes, and the whole run to results.json at the
end; an aborted run still leaves its rows for ``python -m reports``.
"""

from __future__ import annotations

import logging
import os

import torch

if os.environ.get("TRITON_INTERPRET") is None and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module imports triton (env-notes.md)
if "OMP_NUM_THREADS" not in os.environ:
    # The examples are small: threads cost more than they give, and xdist runs workers side by side. Also, on
    # these CPUs the first multi-threaded torch.exp after a matmul in a fresh process is sometimes off by ~1e-4
    # (measured: 2 of 40 processes with 2 threads, 0 of 40 with one): one thread keeps the suite deterministic.
    torch.set_num_threads(1)

from hypothesis import settings  # noqa: E402

from implementations import load_all  # noqa: E402

from . import guard, profiles, user  # noqa: E402
from .plugins import generated, parametrize, rows  # noqa: E402
from .plugins.options import add_options, mutant_mode  # noqa: E402
from .plugins.results import ResultsPlugin  # noqa: E402


def pytest_addoption(parser):
    add_options(parser)


# The libraries' own chatter (FlexAttention's compile logs run to hundreds of KB): errors only; their findings are in
# the results and the report
QUIET_LOGGERS = ("torch._inductor", "torch._dynamo", "torch.fx", "torch._functorch", "transformers", "diffusers",
                 "open_clip", "trl", "gymnasium", "liger_kernel", "k_diffusion")


def pytest_configure(config):
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    config.addinivalue_line("markers", "eqspec(claims, operation, requires, dtypes): claims a property test checks")
    config.addinivalue_line("markers", "slow: a meta test that runs the suite again in a subprocess (a minute or "
                            "more); the default test run leaves them out (-m 'not slow'), CI runs them (-m slow)")
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
    plugins = config.pluginmanager
    plugins.register(parametrize, "eqspec-parametrize")
    plugins.register(rows, "eqspec-rows")
    if mutants:
        from reports.kill_matrix import KILLING_FAILURES

        from .mutation.score import KILLING

        plugins.register(generated.KillOnce(generated.per_mutant, KILLING) if mutants == "generated" else
                         generated.KillOnce(generated.per_mutant_and_test, KILLING_FAILURES), "eqspec-kill-once")
    # the controller (or a plain run) owns the results; a --collect-only run writes them only where told to
    if not hasattr(config, "workerinput") and (not config.option.collectonly or config.getoption("--results")):
        plugins.register(ResultsPlugin(config), "eqspec-results")


def pytest_report_header(config):
    lines = [f"eqspec: hypothesis profile {settings._current_profile}, "
             f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')}, "
             f"CUDA {'available: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}"]
    for key in sorted(k for k in os.environ if k.startswith("EQSPEC_")):
        lines.append(f"eqspec: {key}={os.environ[key]}")
    for impl in getattr(config, "_eqspec_user", []):
        lines.append(f"eqspec: user implementation {impl.name} of {impl.operation} ({impl.notes})")
    return lines
