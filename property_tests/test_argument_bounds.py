"""Every bound the spec checks of a scalar argument, checked on the implementation: beyond it rejected, on it accepted.

The spec's argument checks (specs/validators.py) are the operation's contract: beta > 0, alpha in [0, 1], a count
of at least 1, one of the options, a finite number. They are observed, not written down a second time: the spec
runs at a point of the operation's domain under a profiler that records every check it makes of an argument of the
operation and what it checked it against (``observed_checks``). Each check then gives the values just beyond its
bounds (the next float past the bound, NaN, an infinity, True for a number, the count one below, an unknown option)
and the bounds themselves; an option the spec's choice leaves out but another operation of the document takes for
an argument of the same name is beyond it too. A check the spec writes inline (``n < 1``, ``theta > 1``) is not
observed; for those, every number of the point is also tried ``around`` its value (a bool, an integer as a float,
-1, 0, 1, 2, one either side, NaN and the infinities), each verdict the spec's. For each such value, put in place
of the argument at that point:

- where the spec rejects it with an ArgumentError naming the argument, the implementation must too;
- where the spec accepts it (a bound is inside the contract), the implementation must not raise.

A value the spec does not treat as predicted (the argument checked after a transformation) is left out: the spec
is the oracle of each verdict, never this file. Held to this project's code (its implementations and its mutants,
whose argument errors follow one convention); a library's errors are its own, and the per-document contract tests
say what it must reject.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

from eqspec.contracts import ArgumentError, ContractViolation
from eqspec.domain import OMIT, Choice, Optional, call_arguments, parameters
from implementations import load_all
from specs import validators

from .domains import cases, for_spec, for_target
from .harness import contract_test, drawn_few, expect_rejection, names

REGISTRY = load_all()
EXAMPLES = 4  # points of the domain per implementation: the bounds are the same at every point, the options differ
ACCEPTED_CHECKED = 8  # of the values the spec accepts, how many run through the implementation per point

# validator -> its argument holding the checked value
CHECKED_VALUE = {validators.check_real: "v", validators.check_unit_interval: "value", validators.check_count: "n",
                 validators.check_scalar: "value", validators.as64: "v", validators.check_world: "world_size",
                 validators.check_choice: "value"}
_CODES = {fn.__code__: (fn, value) for fn, value in CHECKED_VALUE.items()}


def observed_checks(fn: Callable, *args, **kwargs) -> list[tuple[Callable, dict]]:
    """(validator, its arguments) for every check of specs/validators.py that ``fn(*args, **kwargs)`` makes."""
    seen: list[tuple[Callable, dict]] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in _CODES:
            seen.append((_CODES[frame.f_code][0], dict(frame.f_locals)))

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - the checks made before a failure are observed all the same
        pass
    finally:
        sys.setprofile(previous)
    return seen


def _below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def _above(x: float) -> float:
    return math.nextafter(x, math.inf)


def beyond_and_on(check: Callable, a: dict) -> tuple[list[tuple[str, object]], list[tuple[str, object]]]:
    """The values just beyond the bounds of one observed check, and the bounds themselves: (label, value) each."""
    beyond: list[tuple[str, object]] = []
    on: list[tuple[str, object]] = []
    if check is validators.check_real:
        low, high = a["low"], a["high"]
        beyond += [("NaN", math.nan), ("True", True)]
        if not a["allow_inf"]:
            beyond += [("inf", math.inf), ("-inf", -math.inf)]
        if math.isfinite(low):
            beyond.append((f"just below {low:g}", _below(low)))
            on.append((f"{low:g}", float(low)))
        if math.isfinite(high):
            beyond.append((f"just above {high:g}", _above(high)))
            on.append((f"{high:g}", float(high)))
    elif check is validators.check_unit_interval:
        beyond += [("just below 0", _below(0.0)), ("just above 1", _above(1.0)), ("NaN", math.nan), ("True", True)]
        on += [("0", 0.0), ("1", 1.0)]
    elif check is validators.check_count:
        m = a["minimum"]
        beyond += [(f"{m - 1}", m - 1), (f"{m}.0", float(m)), ("True", True)]
        on.append((f"{m}", m))
    elif check is validators.check_scalar:
        beyond += [("NaN", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("True", True)]
    elif check is validators.as64:
        beyond += [("NaN", math.nan), ("True", True)]
        if a["positive"]:
            beyond += [("0", 0.0), ("-1", -1.0)]
        if a["nonnegative"]:
            beyond.append(("just below 0", _below(0.0)))
            on.append(("0", 0.0))
    elif check is validators.check_world:
        n = a["n"]
        beyond += [("0", 0), ("True", True), (f"{n + 1} (does not divide {n})", n + 1)]
        on.append(("1", 1))
    elif check is validators.check_choice:
        beyond.append(("an unknown option", "(no such option)"))
    return beyond, on


def sibling_options(op, name: str) -> list[str]:
    """The options another operation of the same document declares for an argument of this name (pc_sampler's
    predictor 'none' for predictor_step's predictor): an option list one too long accepts exactly these."""
    found: list[str] = []
    for other in REGISTRY.operations.values():
        if other.document != op.document or other.domain is None:
            continue
        declared = other.domain.args.get(name)
        declared = declared.inner if isinstance(declared, Optional) else declared
        if isinstance(declared, Choice):
            found += [v for v in declared.options if isinstance(v, str) and v not in found]
    return found


def around(value) -> list[tuple[str, object]]:
    """Values near and at the edges of any scalar, for the checks a spec writes inline (``n < 1``, ``theta > 1``,
    ``isinstance(b, int)``) rather than through specs/validators.py: the spec decides each one's verdict."""
    if isinstance(value, int):
        return [("True", True), (f"{value}.0", float(value)), ("-1", -1), ("0", 0), ("1", 1), ("2", 2),
                (f"{value - 1}", value - 1), (f"{value + 1}", value + 1)]
    return [("NaN", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("True", True), ("-1", -1.0), ("0", 0.0),
            ("1", 1.0), (f"just below {value:g}", _below(value)), (f"just above {value:g}", _above(value))]


def _variants(op, inputs: dict) -> list[tuple[str, str, object, bool | None]]:
    """(argument, label, value, rejected) for every scalar argument of ``op`` at ``inputs``: the bounds of each check
    the spec makes through specs/validators.py (rejected: True beyond a bound, False on it), and the values
    ``around`` each number (rejected: None, the spec decides)."""
    params = {p.name for p in parameters(op.reference)}
    args, kwargs = call_arguments(op.reference, for_spec(inputs))
    found: dict[tuple[str, str], tuple[str, str, object, bool | None]] = {}
    for check, a in observed_checks(op.reference, *args, **kwargs):
        name, value = a.get("name"), a.get(CHECKED_VALUE[check])
        if name not in params or not isinstance(value, (int, float, str)) or isinstance(value, bool):
            continue  # a tensor, or a check of something that is not one of the operation's arguments
        beyond, on = beyond_and_on(check, a)
        if check is validators.check_choice:
            beyond += [(f"{v!r}, an option of another operation", v) for v in sibling_options(op, name)
                       if v not in a["allowed"]]
        for label, v in beyond:
            found.setdefault((name, label), (name, label, v, True))
        for label, v in on:
            found.setdefault((name, label), (name, label, v, False))
    for name, value in inputs.items():
        if name in params and isinstance(value, (int, float)) and not isinstance(value, bool) and (
                not isinstance(value, float) or math.isfinite(value)):
            for label, v in around(value):
                found.setdefault((name, label), (name, label, v, None))
    return list(found.values())


def _spec_verdict(op, inputs: dict, name: str) -> str:
    """"rejects" (an ArgumentError naming ``name``), "accepts", or "other" (another error: no verdict here)."""
    args, kwargs = call_arguments(op.reference, for_spec(inputs))
    try:
        op.reference(*args, **kwargs)
    except ArgumentError as exc:
        return "rejects" if names(exc.arguments, name) else "other"
    except Exception:  # noqa: BLE001 - an overflow at an extreme bound, say: not a verdict on the argument
        return "other"
    return "accepts"


def check_bounds(op, target, data) -> None:
    case = data.draw(cases(op.domain, target, allow_large=False), label="case")
    inputs = case.inputs()
    found = []
    for name, label, value, rejected in _variants(op, inputs):
        verdict = _spec_verdict(op, {**inputs, name: value}, name)
        if verdict == "other" or (rejected is not None and verdict != ("rejects" if rejected else "accepts")):
            continue  # the spec checks a transformed value: this file predicted wrong, the spec decides
        found.append((name, label, value, verdict == "rejects"))
    # each accepted value runs the whole operation: a drawn few per point
    accepted = drawn_few(data, [v for v in found if not v[3]], ACCEPTED_CHECKED, "accepted")
    for name, label, value, rejected in [v for v in found if v[3]] + accepted:
        changed = {**inputs, name: value}
        limit = target.impl.limits.get(name)
        if not rejected and limit is not None and not limit[0] <= value <= limit[1]:
            continue  # a bound beyond what the implementation declares it supports (gloo's world of 2 to 4)
        at = {k: v for k, v in for_target(changed, target).items() if v is not OMIT}
        args, kwargs = call_arguments(op.reference, at)
        if rejected:
            expect_rejection(target, lambda fn, a=args, k=kwargs: fn(*a, **k), name, f"{name} = {label}")
            continue
        try:
            target(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the spec accepts this bound: any error is the finding
            raise ContractViolation(f"{name} = {label} is inside the contract (the spec accepts it), the "
                                    f"implementation raised {type(exc).__name__}: {exc}") from exc


for _op in REGISTRY.operations.values():
    if _op.domain is not None:
        _test = contract_test(_op.id, EXAMPLES, "bounds", f"{_op.id} rejects what its spec rejects at the bounds of "
                              "each scalar argument, and accepts them.")(check_bounds)
        globals()[_test.__name__] = _test
