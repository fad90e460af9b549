"""The argument checks every document shares: one place, one wording, so that bad input to any operation gets the
same clear error, naming the argument (ArgumentError carries it as data) and what was expected.

A document's own checks (a DPO pair, an MDP's transitions, a routing config) stay beside its equations; what more
than one document needs is here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from eqspec.contracts import ArgumentError

F64 = torch.float64


def check_tensor(name: str, x: object, *, rank: int | None = None, floating: bool = True) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ArgumentError(name, f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if rank is not None and x.dim() != rank:
        raise ArgumentError(name, f"{name} must have {rank} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ArgumentError(name, f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.numel() == 0:
        raise ArgumentError(name, f"{name} must not be empty, got shape {tuple(x.shape)}")
    return x


def check_same(names: Iterable[str], tensors: Iterable[torch.Tensor], attribute: str) -> None:
    names, tensors = list(names), list(tensors)
    values = [getattr(t, attribute) for t in tensors]
    if any(v != values[0] for v in values[1:]):
        pairs = ", ".join(f"{n}.{attribute}={v}" for n, v in zip(names, values))
        raise ArgumentError(tuple(names), f"{', '.join(names)} must share one {attribute}; got {pairs}")


def check_dim(name: str, x: torch.Tensor, axis: int, expected: int, meaning: str) -> None:
    if x.shape[axis] != expected:
        raise ArgumentError(f"{name}.shape[{axis}]",
                            f"{name}.shape[{axis}] ({meaning}) must be {expected}, got shape {tuple(x.shape)}")


def check_shape(name: str, x: torch.Tensor, shape: tuple[int, ...], meaning: str) -> None:
    """x's whole shape, where it is fixed by the other arguments (meaning: where the expected shape comes from)."""
    if tuple(x.shape) != tuple(shape):
        raise ArgumentError(name, f"{name} must have shape {tuple(shape)} ({meaning}), got {tuple(x.shape)}")


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ArgumentError(name, f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_count(name: str, n: object, minimum: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ArgumentError(name, f"{name} must be an integer >= {minimum}, got {n!r}")
    return n


def check_real(name: str, v: object, *, low: float = -math.inf, high: float = math.inf,
               allow_inf: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or (
            not allow_inf and math.isinf(v)) or not low <= v <= high:
        raise ArgumentError(name, f"{name} must be a real number in [{low:g}, {high:g}], got {v!r}")
    return float(v)


def check_unit_interval(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ArgumentError(name, f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_scalar(name: str, value) -> torch.Tensor:
    """A finite real number or a one-element floating tensor (kept in the graph), as a float64 0-d tensor."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise ArgumentError(name, f"{name} must be a number or a one-element floating tensor, got shape "
                                f"{tuple(value.shape)} {value.dtype}")
        if not bool(torch.isfinite(value).all()):
            raise ArgumentError(name, f"{name} must be finite, got {value.item()}")
        return value.to(F64).reshape(())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArgumentError(name, f"{name} must be a finite real number, got {value!r}")
    return torch.tensor(float(value), dtype=F64)


def as64(name: str, v: object, like: torch.Tensor | None = None, *, positive: bool = False,
         nonnegative: bool = False) -> torch.Tensor:
    """A number or a tensor (broadcastable to ``like``) as float64 on like's device, checked."""
    device = like.device if like is not None else None
    if isinstance(v, torch.Tensor):
        check_tensor(name, v)
        t = v.detach().to(device=device if device is not None else v.device, dtype=F64)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        t = torch.tensor(float(v), dtype=F64, device=device)
    else:
        raise ArgumentError(name, f"{name} must be a number or a floating-point torch.Tensor, got {type(v).__name__}")
    if torch.isnan(t).any():
        raise ArgumentError(name, f"{name} must not be NaN")
    if positive and not bool((t > 0).all()):
        raise ArgumentError(name, f"{name} must be > 0, got min {float(t.min()):g}")
    if nonnegative and not bool((t >= 0).all()):
        raise ArgumentError(name, f"{name} must be >= 0, got min {float(t.min()):g}")
    if like is not None:
        try:
            torch.broadcast_shapes(t.shape, like.shape)
        except RuntimeError:
            raise ArgumentError(name,
                                f"{name} of shape {tuple(t.shape)} does not broadcast to {tuple(like.shape)}") from None
    return t


def check_world(n: int, world_size, name: str = "world_size") -> int:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ArgumentError(name, f"{name} must be a positive integer, got {world_size!r}")
    if n % world_size:
        raise ArgumentError(name, f"{name} ({world_size}) must divide the batch size N = {n} (equal local batches)")
    return world_size


def check_pair(image_features, text_features, names=("image_features", "text_features")) -> tuple[int, int]:
    """Two (N, D) feature matrices of one dtype and device; returns N, D."""
    a, b = names
    check_tensor(a, image_features, rank=2)
    check_tensor(b, text_features, rank=2)
    if image_features.shape != text_features.shape:
        raise ArgumentError(b, f"{b} must have the shape of {a} (N pairs x D), got {tuple(text_features.shape)} "
                            f"and {tuple(image_features.shape)}")
    check_same((a, b), (image_features, text_features), "dtype")
    check_same((a, b), (image_features, text_features), "device")
    return image_features.shape


def check_mask(name: str, mask: object, shape: tuple[int, ...]) -> torch.Tensor:
    """A 0/1 mask (bool, integer or float) of the given shape, returned as float64 0/1 values."""
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(shape):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ArgumentError(name, f"{name} must be a tensor of shape {tuple(shape)}, got {got}")
    m = mask.to(device="cpu", dtype=F64)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ArgumentError(name, f"{name} must hold only 0 and 1 (1 = a completion token)")
    return mask.to(F64)


def check_token_ids(name: str, ids: object, shape: tuple[int, ...], vocab: int) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int32, torch.int64):
        raise ArgumentError(name, f"{name} must be an int32 or int64 tensor, got "
                            f"{ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__}")
    if tuple(ids.shape) != tuple(shape):
        raise ArgumentError(name, f"{name} must have shape {tuple(shape)}, got {tuple(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ArgumentError(name, f"{name} must hold token ids in [0, {vocab}) (the vocabulary), got "
                            f"[{int(ids.min())}, {int(ids.max())}]")
    return ids.long()
