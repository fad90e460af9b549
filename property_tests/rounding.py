"""Monte Carlo arithmetic: the spec re-run with every intermediate result rounded at random in a lower precision.

How far a correct implementation in dtype d may be from the float64 spec depends on what is computed - on the
sizes of the intermediate terms that cancel, not of the result (a gradient that sums terms of size 10 to 1e-3).
Parker's Monte Carlo arithmetic (Parker, Pierce & Eggert 2000, "Monte Carlo Arithmetic: how to gamble with floating
point and win") measures it without an error analysis per operation: every floating result of every aten operation
the spec (and its autograd backward) executes is multiplied by (1 + delta), delta uniform in [-u, u] with u the
unit roundoff of d, and the spread of the outputs is the rounding error an implementation that performs the same
operations in d makes. The generic differential test (test_matches_spec.py) takes the largest deviation of a few
such runs as its measured conditioning; its k (2 forward, 3 gradients) is the room left for an algorithm that
orders the same operations differently.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from eqspec.contracts import ArgumentError

from .kept import KeptLast

aten = torch.ops.aten

# Operations that round nothing: they move, select or compare values (a perturbation there would be noise)
_EXACT = {
    "view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "squeeze", "unsqueeze", "slice",
    "select", "index", "index_select", "gather", "scatter", "cat", "stack", "clone", "copy", "_to_copy", "detach",
    "alias", "lift_fresh", "split", "split_with_sizes", "chunk", "unbind", "narrow", "flip", "roll", "repeat",
    "where", "masked_fill", "zeros_like", "ones_like", "full_like", "empty_like", "zeros", "ones", "full", "empty",
    "new_zeros", "new_ones", "new_full", "new_empty", "empty_strided", "fill", "arange", "clamp", "clamp_min",
    "clamp_max", "relu", "abs", "neg", "max", "min", "maximum", "minimum", "amax", "amin", "sort", "topk", "argmax",
    "argmin", "argsort", "eq", "ne", "lt", "le", "gt", "ge", "sign", "floor", "ceil", "round", "trunc", "diagonal",
    "tril", "triu", "index_put", "index_add", "_index_put_impl", "as_strided", "unfold", "masked_select", "nonzero",
    "one_hot", "constant_pad_nd", "pad", "embedding", "isnan", "isinf", "isfinite", "logical_and", "logical_or",
    "logical_not", "bitwise_and", "bitwise_or", "lift", "set_", "resize_", "_local_scalar_dense", "item",
    "scalar_tensor", "scalar", "eye", "linspace", "randn", "rand", "randint", "normal", "bernoulli", "multinomial",
    "split_copy", "view_copy", "expand_copy", "permute_copy", "t_copy", "slice_copy", "select_copy", "unsqueeze_copy",
    "squeeze_copy", "transpose_copy", "zero", "_reshape_alias", "masked_scatter", "repeat_interleave",
}


class RandomRounding(TorchDispatchMode):
    """Every floating result of a rounding operation times (1 + delta), |delta| <= unit_roundoff."""

    def __init__(self, unit_roundoff: float, generator: torch.Generator):
        super().__init__()
        self.u = unit_roundoff
        self.gen = generator

    def _round(self, t):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0:
            return t
        delta = (torch.rand(t.shape, generator=self.gen, dtype=t.dtype, device="cpu").to(t.device) * 2 - 1) * self.u
        # small integers are exact in the dtype and every correctly rounded operation returns them exactly (exp(0)
        # is 1, so 1 - exp(0) is 0 and its square root is 0, not NaN): they are not perturbed
        exact = (t == t.round()) & (t.abs() <= 1 / self.u)
        return torch.where(exact, t, t * (1 + delta))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name.endswith("_") or name.rstrip("_") in _EXACT or func.overloadpacket in (aten.copy_,):
            return out
        return tree_map(self._round, out)


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


# Monte Carlo arithmetic runs of the spec: the largest deviation is the conditioning. Measured: two runs fell 3x
# short of a correct float32 chunked GRPO loss's error (20 runs spread to 7.5e-8; it was off by 2.2e-8)
ROUNDING_RUNS = 4
# The random roundings are drawn at this many unit roundoffs of the dtype: a correct algorithm may order, block and
# fuse the same operations differently, and its errors then add up rather than average out (measured: the chunked
# DPO losses' errors reached 4x the spread of runs at one unit roundoff, on gradients that cancel).
ROUNDING_SCALE = 8


def rounded(dtype: torch.dtype, seed: int, run: int, fn, /, *args, **kwargs):
    """``fn`` under Monte Carlo arithmetic at ROUNDING_SCALE unit roundoffs of ``dtype`` (run ``run`` of
    ROUNDING_RUNS), or None where the rounding pushed an intermediate out of what the spec accepts (a probability
    above 1): no measurement."""
    u = ROUNDING_SCALE * unit_roundoff(dtype)
    with RandomRounding(u, torch.Generator().manual_seed(seed * (ROUNDING_RUNS + 1) + run)):
        try:
            return fn(*args, **kwargs)
        except ArgumentError:
            return None


# The rounded runs of the spec at one point depend on the point, the dtype and the seed, never on the implementation:
# kept for the last few points, they are computed once for every implementation that meets the same derandomized
# example (each mutant of an operation sees the same first examples: measured, a Robbins-Monro kill at K = 2000
# spent 17 s on the four runs, for each of three mutants)
RUNS_KEPT = 16
_KEPT = KeptLast(RUNS_KEPT)


def rounded_runs(key, dtype: torch.dtype, seed: int, fn, /, *args, **kwargs) -> list:
    """The ROUNDING_RUNS runs of ``rounded`` (None for a run that left the spec's domain); ``key`` names the point
    (with everything the runs depend on besides ``dtype`` and ``seed``), or None where it has no name to keep it by."""
    name = None if key is None else (key, dtype, seed)
    kept = _KEPT.get(name) if name is not None else None
    if kept is not None:
        return kept
    runs = [rounded(dtype, seed, run, fn, *args, **kwargs) for run in range(ROUNDING_RUNS)]
    if name is not None:
        _KEPT.put(name, runs)
    return runs


def largest_error(a: torch.Tensor, r: torch.Tensor) -> float:
    """The largest |a - r| over the entries where the spec's ``r`` is finite (0 where ``a`` has a NaN there)."""
    finite = torch.isfinite(r)
    if not bool(finite.any()):
        return 0.0
    d = (a.double() - r.double()).abs()[finite]
    return float(d.max()) if not bool(d.isnan().any()) else 0.0


def farthest(candidates: list[torch.Tensor], r: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
    """Of the alternative answers (the naive baseline, the spec's randomly rounded runs), the one farthest from the
    spec's ``r``: its error is the measured conditioning a budget is scaled from."""
    return max(candidates, key=lambda a: largest_error(a, r), default=default)
