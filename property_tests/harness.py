"""What a property test needs besides hypothesis: the implementation it runs against, and checks that record.

A test declares the claims it checks and the operation it exercises with ``@checks(...)`` and takes a ``target``
argument; the conftest parametrizes ``target`` over every implementation of that operation (device x dtype),
with a visible skip where an implementation cannot run here or lacks a capability the test needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eqspec import budget as _budget
from eqspec.contracts import ArgumentError, ContractViolation
from eqspec.registry import REGISTRY, Implementation, Operation, check_capabilities
from specs import MATCHES_SPEC

from . import guard, recording
from .domains import convert


def checks(*claims: str, operation: str, requires: tuple[str, ...] = (), dtypes: tuple[str, ...] | None = None):
    """Mark a property test with the claim ids it checks and the operation whose implementations it runs."""
    return pytest.mark.eqspec(claims=tuple(claims), operation=operation, requires=frozenset(requires),
                              dtypes=dtypes)


@dataclass(frozen=True)
class Target:
    """One implementation on one device in one dtype: what a parametrized property test runs against."""

    impl: Implementation
    device: str
    dtype: str | None

    @property
    def name(self) -> str:
        return self.impl.name

    @property
    def operation(self) -> Operation:
        return REGISTRY.operations[self.impl.operation]

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def interpreted(self) -> bool:
        return self.impl.interpreted_on_cpu and self.device == "cpu"

    def provides(self, capability: str) -> bool:
        """Whether the implementation declares ``capability`` (a name of its operation's vocabulary)."""
        check_capabilities({capability}, REGISTRY.operations[self.impl.operation].capabilities,
                           f"a test asks {self.impl.operation} for")
        return capability in self.impl.provides

    def __call__(self, *args, **kwargs):
        """The implementation called on this target's device: every tensor argument is moved there first (index
        tensors, masks and generators' draws built on the host included), outputs are left where it put them."""
        return guard.call(self.impl, *self.on_device(args), **self.on_device(kwargs))

    def baseline(self, *args, **kwargs):
        """The operation's naive same-precision baseline on the same inputs."""
        base = REGISTRY.implementation(self.impl.operation, self.operation.baseline)
        return base.load()(*self.on_device(args), **self.on_device(kwargs))

    def on_device(self, value):
        """``value`` with every tensor in it (through tuples, lists and dicts) on this target's device, dtype kept;
        a tensor already there is passed as it is (the same object: in-place and aliasing checks still see it)."""
        here = torch.device(self.device).type
        return convert(value, lambda x: x if x.device.type == here else x.to(self.device))

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """A float64 tensor rounded to this target's dtype and moved to its device."""
        return x.to(device=self.device, dtype=self.torch_dtype)

    def __str__(self) -> str:
        return f"{self.name}-{self.device}-{self.dtype}"

    def __repr__(self) -> str:
        return f"Target({self.name!r}, device={self.device!r}, dtype={self.dtype!r})"

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints falsifying examples with this
        printer.text(repr(self))


def host(value):
    """An implementation's output(s) on the host, where the specs' references are computed (a no-op on the CPU)."""
    return convert(value, torch.Tensor.cpu)


# --- checks that record what they measured ----------------------------------------------------------

def within_budget(name: str, out, ref, baseline, *, k: float = _budget.K_FORWARD, magnitude=None, terms: int = 0,
                  dtype: torch.dtype | None = None) -> _budget.BudgetCheck:
    result = _budget.check_within_budget(name, out, ref, baseline, k=k, magnitude=magnitude, terms=terms,
                                         dtype=dtype)
    recording.budget(result)
    return result


def close(name: str, out, ref, *, atol: float, rtol: float = 0.0) -> float:
    return _budget.check_close(name, out, ref, atol=atol, rtol=rtol)


def equal(name: str, out, ref) -> None:
    _budget.check_equal(name, out, ref)


def finite_pattern(name: str, out, ref) -> None:
    _budget.check_finite_pattern(name, out, ref)


# --- bad input ------------------------------------------------------------------------------------------

def ours(target: Target) -> bool:
    """Code this project wrote (and its mutants): held to the project's contract of clear argument errors."""
    return target.impl.origin in ("spec", "torch", "triton", "mutant")


def skip_unless_contract_target(target: Target, *, spec_too: bool = True) -> None:
    """The contract tests derived from the spec (its argument bounds, its tensor checks) hold this project's code
    to its convention, in the implementation's first dtype (the checks do not depend on it); ``spec_too=False``
    leaves out the spec itself, whose verdicts are the oracle."""
    if not ours(target) or (not spec_too and target.impl.origin == "spec"):
        pytest.skip("the argument errors of this project's convention (ArgumentError naming the argument), the spec "
                    "not checked against itself; a library's own contract is checked by the document's contract tests")
    if target.dtype != target.impl.dtypes_for(target.operation)[0]:
        pytest.skip("the argument checks do not depend on the dtype: checked in the implementation's first one")


def contract_test(op_id: str, examples: int, suffix: str, doc: str, *, spec_too: bool = True):
    """Decorator: ``body(op, target, data)`` as the hypothesis test ``test_<op>__<suffix>`` of the operation's
    matches-spec claim, over ``examples`` points, for this project's targets (``skip_unless_contract_target``)."""
    op = REGISTRY.operations[op_id]

    def wrap(body):
        @checks(f"{op.document}.{MATCHES_SPEC}", operation=op_id)
        @settings(max_examples=min(examples, settings.default.max_examples))
        @given(data=st.data())
        def test(target, data):
            skip_unless_contract_target(target, spec_too=spec_too)
            body(op, target, data)

        test.__name__ = f"test_{op_id.replace('.', '__')}__{suffix}"
        test.__doc__ = doc
        return test

    return wrap


def drawn_few(data, items: list, n: int, label: str) -> list:
    """``items`` if there are at most ``n``, else ``n`` of them drawn (hypothesis shrinks and replays the draw)."""
    if len(items) <= n:
        return items
    return data.draw(st.permutations(items), label=label)[:n]


def names(arguments: tuple[str, ...], argument: str) -> bool:
    """Whether an ArgumentError's ``arguments`` name ``argument``: "k" is named by "k" and by a part of it
    ("k.shape[1]"); "q, k, v" (arguments that disagree) by all three."""
    def part_of(arg: str, name: str) -> bool:
        return arg == name or arg.startswith((f"{name}.", f"{name}["))

    return all(any(part_of(arg, name.strip()) for arg in arguments) for name in argument.split(","))


def expect_rejection(target: Target, call, argument: str, case: str, *,
                     libraries_may_return_empty: bool = False) -> None:
    """``call(fn)`` with malformed input must be rejected.

    Ours must raise an ArgumentError whose ``arguments`` name ``argument`` (the error carries it as data). A
    library may reject the input with an error of its own, but must not accept it; with
    ``libraries_may_return_empty`` a library may answer empty input with an empty result (a documented
    propagation).
    """
    fn = guard.load(target.impl)
    try:
        result = call(fn)
    except ArgumentError as exc:
        if ours(target) and not names(exc.arguments, argument):
            raise ContractViolation(f"{case}: the error must name {argument!r}, it names "
                                    f"{', '.join(map(repr, exc.arguments))}: {exc}") from exc
        return
    except Exception as exc:
        if ours(target):
            raise ContractViolation(f"{case}: expected an ArgumentError naming {argument!r}, got "
                                    f"{type(exc).__name__}: {exc}") from exc
        return  # a library's own error is a rejection
    if libraries_may_return_empty and case.startswith("empty") and not ours(target):
        return
    raise ContractViolation(f"{case}: malformed input was accepted and returned {type(result).__name__}")


def rejection_test(claim: str, operation: str, cases: dict):
    """A property test that every case of ``cases`` (name -> (call, argument)) is rejected, naming the argument."""

    @checks(claim, operation=operation)
    @pytest.mark.parametrize("case", list(cases))
    def test(target, case):
        call, argument = cases[case]
        expect_rejection(target, call, argument, case)

    test.__name__ = f"test_{operation.rsplit('.', 1)[-1]}_rejects_bad_input"
    return test
