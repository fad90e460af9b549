"""What a property test needs besides hypothesis: the implementation it runs against, and checks that record.

A test declares the claims it checks and the operation it exercises with ``@checks(...)`` and takes a ``target``
argument; the conftest parametrizes ``target`` over every implementation of that operation (device x dtype),
with a visible skip where an implementation cannot run here or lacks a capability the test needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from implementations import guard
from specs import budget as _budget
from specs.registry import REGISTRY, Implementation, Operation

from . import recording


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
        return capability in self.impl.provides

    def __call__(self, *args, **kwargs):
        return guard.call(self.impl, *args, **kwargs)

    def baseline(self, *args, **kwargs):
        """The operation's naive same-precision baseline on the same inputs."""
        base = REGISTRY.implementation(self.impl.operation, self.operation.baseline)
        return base.load()(*args, **kwargs)

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """A float64 tensor rounded to this target's dtype and moved to its device."""
        return x.to(device=self.device, dtype=self.torch_dtype)

    def __str__(self) -> str:
        return f"{self.name}-{self.device}-{self.dtype}"

    def __repr__(self) -> str:
        return f"Target({self.name!r}, device={self.device!r}, dtype={self.dtype!r})"

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints falsifying examples with this
        printer.text(repr(self))


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
