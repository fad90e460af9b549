"""Each property test over the implementations of its operation: one ``target`` per (implementation, device, dtype),
a visible skip where one cannot run here or lacks a capability the test requires, a documented deviation as a
strict xfail, its hypothesis examples counted, and fewer examples for Triton under the CPU interpreter."""

from __future__ import annotations

import fnmatch
import functools

import pytest
import torch
from hypothesis import Phase, settings
from hypothesis.errors import Unsatisfiable

from eqspec.domain import pins
from eqspec.registry import REGISTRY, check_capabilities

from .. import guard, recording
from ..harness import Target
from .options import DEVICES, mutant_mode

INTERPRETED_EXAMPLE_SHARE = 4  # Triton under the CPU interpreter costs ~3 ms per program: a quarter of the examples


def _candidates(config, operation: str, claims: tuple[str, ...]):
    if mutant_mode(config) == "generated":  # every test of the operation may catch a bug nobody aimed at
        return [m for m in config._eqspec_mutants if m.operation == operation]
    if mutant_mode(config):
        return [m for m in config._eqspec_mutants if m.operation == operation and set(m.targets) & set(claims)]
    impls = REGISTRY.implementations_of(operation)
    only, origins = config.getoption("--only-impl"), config.getoption("--origin")
    if only:
        impls = [i for i in impls if i.name in only]
    if skipped := config.getoption("--skip-impl"):
        impls = [i for i in impls if not any(fnmatch.fnmatchcase(i.name, pattern) for pattern in skipped)]
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
    check_capabilities(marker.kwargs["requires"], op.capabilities, f"{metafunc.definition.nodeid}: requires")
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
    documents = config.getoption("--document")
    if documents:
        unknown = sorted(set(documents) - set(REGISTRY.documents))
        if unknown:
            raise pytest.UsageError(f"--document: unknown {', '.join(unknown)}; the documents are "
                                    f"{', '.join(REGISTRY.documents)}")
    names = [impl.name for impl in REGISTRY.implementations.values()]
    for pattern in config.getoption("--skip-impl") or ():
        if not fnmatch.filter(names, pattern):
            raise pytest.UsageError(f"--skip-impl: {pattern!r} matches no implementation (python -m specs lists them)")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if mutant_mode(config) and not isinstance(params.get("target"), Target):
            continue  # a test with no mutant aimed at its claims
        narrowed = config.getoption("--only-impl") or config.getoption("--origin") or config.getoption("--skip-impl")
        if narrowed and "target" in item.fixturenames and not isinstance(params.get("target"), Target):
            continue  # no selected implementation has this test: nothing to run, not a skip
        marker = item.get_closest_marker("eqspec")
        if documents and (marker is None or REGISTRY.operations[marker.kwargs["operation"]].document not in documents):
            continue
        if not _wanted_pin(item, params):
            continue
        _mark_deviation(item)
        _count_examples(item)
        kept.append(item)
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def _wanted_pin(item, params: dict) -> bool:
    """The differential tests (test_matches_spec.py) pin each option value in float64 and draw freely, unpinned, in
    the other dtypes (and in float64 where the domain has nothing to pin)."""
    marker = item.get_closest_marker("eqspec")
    if "pin" not in params or not isinstance(params.get("target"), Target) or marker is None:
        return True
    if not pins(REGISTRY.operations[marker.kwargs["operation"]].domain):
        return True
    return (params["target"].dtype == "float64") == (params["pin"] is not None)


def _mark_deviation(item) -> None:
    """A documented deviation turns the test into a strict xfail: it must fail, with an AssertionError."""
    params = dict(getattr(getattr(item, "callspec", None), "params", {}) or {})
    target, marker = params.pop("target", None), item.get_closest_marker("eqspec")
    if not isinstance(target, Target) or marker is None:
        return
    deviation = target.impl.deviation(marker.kwargs["claims"], {**params, "dtype": target.dtype,
                                                                 "device": target.device})
    if deviation is not None:
        item.eqspec_deviation = deviation
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


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """A differential test rejects the points an implementation does not support (its NotImplementedError); where it
    supported none of those drawn, hypothesis gives up (Unsatisfiable): that is a skip with the implementation's
    own reason, as for a per-claim test."""
    try:
        return (yield)
    except Unsatisfiable:
        target = pyfuncitem.callspec.params.get("target") if hasattr(pyfuncitem, "callspec") else None
        reason = guard.UNSUPPORTED.get(getattr(target, "name", None))
        if reason is None:
            raise
        pytest.skip(f"{reason} (at every point drawn)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    fn = item.obj
    target = getattr(item, "callspec", None) and item.callspec.params.get("target")
    original = getattr(fn, "_hypothesis_internal_use_settings", None)
    if original is not None and isinstance(target, Target) and target.interpreted:
        fn._hypothesis_internal_use_settings = settings(
            original, max_examples=max(3, original.max_examples // INTERPRETED_EXAMPLE_SHARE))
    if original is not None and getattr(item, "eqspec_deviation", None) is not None:
        # A documented deviation must fail, and its first failing example is what the report shows; shrinking it is
        # wasted (measured: the libraries' float32-internal losses spent 120 to 460 examples each shrinking a
        # failure, 10 to 20 s per test, most of the thirdparty run)
        current = fn._hypothesis_internal_use_settings
        fn._hypothesis_internal_use_settings = settings(
            current, phases=[p for p in current.phases if p not in (Phase.shrink, Phase.explain)])
    recording.start()
    try:
        yield
    finally:
        if original is not None:
            fn._hypothesis_internal_use_settings = original
