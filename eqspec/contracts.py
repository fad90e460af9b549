"""Input and output contracts shared by every operation.

Bad input gets a clear error naming the argument and what was expected (`check_*` raise ArgumentError).
A result that breaks the operation's output contract (shape, dtype, device) raises ContractViolation; a result
that is numerically wrong raises ConformanceError. Both are AssertionErrors, so a property test counts them as
failures of the implementation, not of the harness.
"""

from __future__ import annotations

import torch


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


def expect_tuple(result: object, names: tuple[str, ...], operation: str) -> tuple:
    if not isinstance(result, (tuple, list)) or len(result) != len(names):
        got = type(result).__name__ + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        raise ContractViolation(f"{operation} must return a tuple ({', '.join(names)}), got {got}")
    return tuple(result)


def expect_tensor(name: str, x: object, shape: tuple[int, ...], dtypes: tuple[torch.dtype, ...],
                  device: torch.device, operation: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ContractViolation(f"{operation}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise ContractViolation(f"{operation}: {name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if x.dtype not in dtypes:
        allowed = " or ".join(str(d) for d in dtypes)
        raise ContractViolation(f"{operation}: {name} must have dtype {allowed}, got {x.dtype}")
    if x.device.type != device.type:
        raise ContractViolation(f"{operation}: {name} must be on {device.type}, got {x.device.type}")


def check_scalar_result(result, *args, provides=frozenset(), **kwargs) -> None:
    if not isinstance(result, torch.Tensor) or result.numel() != 1:
        raise ContractViolation(f"the loss must be a one-element tensor, got {type(result).__name__} "
                                f"{tuple(getattr(result, 'shape', ()))}")
    ref = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if ref is not None and ref.is_floating_point() and result.dtype != ref.dtype:
        raise ContractViolation(f"the loss must be in the inputs' dtype {ref.dtype}, got {result.dtype}")
