"""Input and output contracts shared by every operation.

Bad input gets a clear error naming the argument and what was expected (`check_*` raise ArgumentError).
A result that breaks the operation's output contract (shape, dtype, device) raises ContractViolation; a result
that is numerically wrong raises ConformanceError. Both are AssertionErrors, so a property test counts them as
failures of the implementation, not of the harness.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class ArgumentError(ValueError):
    """An operation was called with an argument outside its contract."""


class ContractViolation(AssertionError):
    """An implementation returned something of the wrong structure, shape, dtype or device."""


class ConformanceError(AssertionError):
    """An implementation's values break a claim (outside the error budget, an identity violated, NaN...)."""


def check_tensor(name: str, x: object, *, rank: int | None = None, floating: bool = True) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ArgumentError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if rank is not None and x.dim() != rank:
        raise ArgumentError(f"{name} must have {rank} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ArgumentError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.numel() == 0:
        raise ArgumentError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    return x


def check_same(names: Iterable[str], tensors: Iterable[torch.Tensor], attribute: str) -> None:
    names, tensors = list(names), list(tensors)
    values = [getattr(t, attribute) for t in tensors]
    if any(v != values[0] for v in values[1:]):
        pairs = ", ".join(f"{n}.{attribute}={v}" for n, v in zip(names, values))
        raise ArgumentError(f"{', '.join(names)} must share one {attribute}; got {pairs}")


def check_dim(name: str, x: torch.Tensor, axis: int, expected: int, meaning: str) -> None:
    if x.shape[axis] != expected:
        raise ArgumentError(
            f"{name}.shape[{axis}] ({meaning}) must be {expected}, got shape {tuple(x.shape)}"
        )


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
