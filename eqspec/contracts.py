"""Input and output contracts shared by every operation.

Bad input gets a clear error naming the argument and what was expected (`check_*` raise ArgumentError). A result
that breaks the operation's declared output rules (shape, dtype, device: eqspec/outputs.py) raises
ContractViolation; a result that is numerically wrong raises ConformanceError. Both are AssertionErrors, so a property
test counts them as failures of the implementation, not of the harness.
"""

from __future__ import annotations


class ArgumentError(ValueError):
    """An operation was called with an argument outside its contract: ``argument`` names it, or the part of it at
    fault ("k.shape[1]", "config.top_k"), or a tuple of names when arguments disagree with each other. It is data,
    so that a test compares it instead of parsing the message."""

    def __init__(self, argument: str | tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.arguments: tuple[str, ...] = (argument,) if isinstance(argument, str) else tuple(argument)
        self.argument = self.arguments[0]


class ContractViolation(AssertionError):
    """An implementation returned something of the wrong structure, shape, dtype or device."""


class ConformanceError(AssertionError):
    """An implementation's values break a claim (outside the error budget, an identity violated, NaN...)."""

