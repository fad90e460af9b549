"""Hypothesis strategies for the contrastive documents (CLIP, SigLIP, BLIP).

A drawn case is a few integers and a seed; the tensors are made from the seed, so a falsifying example prints as
one line that rebuilds them. Texts are their images plus noise of a drawn strength, so the logit matrices range
from flat (pure noise) to sharply diagonal, and every row gets its own norm (the losses normalise inside).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import hypothesis.strategies as st
import torch

from eqspec import budget
from eqspec.contracts import ConformanceError

from .strategies import randn

F64 = torch.float64
U64 = torch.finfo(F64).eps / 2  # float64 unit roundoff


@dataclass(frozen=True)
class FeatureCase:
    N: int
    D: int
    noise: float  # text = image + noise * fresh normal: 0.1 gives peaked rows, 10 almost flat ones
    seed: int

    def float64(self) -> tuple[torch.Tensor, torch.Tensor]:
        image = randn(self.seed, self.N, self.D)
        text = image + self.noise * randn(self.seed + 1, self.N, self.D)
        norms = torch.exp(randn(self.seed + 2, self.N, 2))  # log-normal row norms, ~0.1 to ~10
        return image * norms[:, :1], text * norms[:, 1:]

    def tensors(self, target) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(target.tensor(x) for x in self.float64())


@st.composite
def feature_cases(draw, *, max_n: int = 24, multiple_of: int = 1, min_n: int = 1, max_d: int = 48) -> FeatureCase:
    k = draw(st.integers(max(1, math.ceil(min_n / multiple_of)), max_n // multiple_of), label="N / multiple")
    return FeatureCase(N=k * multiple_of, D=draw(st.sampled_from([1, 2, 7, 16, max_d])),
                       noise=draw(st.sampled_from([0.1, 0.5, 2.0, 10.0])), seed=draw(st.integers(0, 2**31)))


def logit_scales() -> st.SearchStrategy[float]:
    """Stored log-temperatures t in CLIP's clamped range [0, ln 100], with its end points and the init ln(1/0.07)."""
    return st.one_of(st.sampled_from([0.0, math.log(1 / 0.07), math.log(100.0)]), st.floats(0.0, math.log(100.0)))


def random_orthogonal(D: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(randn(seed, D, D))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed, a proper sign convention


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def value_and_grads(fn, tensors: tuple, *args, **kwargs):
    """fn(*tensors, *args, **kwargs) and its gradients with respect to the tensors (autograd)."""
    leaves = tuple(leaf(x) for x in tensors)
    with torch.enable_grad():
        value = fn(*leaves, *args, **kwargs)
        if not (isinstance(value, torch.Tensor) and value.requires_grad):
            raise ConformanceError(f"the loss carries no gradient to its {len(leaves)} feature inputs (no autograd "
                                   f"graph): got {type(value).__name__}")
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
    return value.detach(), grads


def as64(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(x.detach().to(F64) for x in xs)


# --- the conditioning of the contrastive losses: the sizes of the terms that cancel ------------------------------
#
# A loss and its feature gradients are compared with tolerances built from the sizes of what each output sums and
# subtracts, not from the size of the output (design.md, "Tolerances"): a softmax entry p = exp(L - lse) computed in
# a dtype carries the rounding of its exponent, whose terms have the size of the logits; p - 1 on the diagonal
# subtracts terms of size 1 even where the result is e^-60; the gradient through x^ = x / |x| subtracts
# x^ (x^ . dx^) from dx^ and divides by |x|. A magnitude below is that size, in units of one rounding: the budget's
# floor is eps(dtype) times its largest entry (eqspec/budget.py), an identity's tolerance a count of roundings of it.
# On top of that size, an output computed through reductions of lengths n rounds each term more often:
# - a budget's floor takes the statistical growth, about sqrt(n) roundings per term (Higham, "Accuracy and
#   Stability of Numerical Algorithms", §2.8: the worst case n needs every error to have one sign) - the floor only
#   stands in for a naive baseline that was exact by luck, and k x the baseline's error carries the rest;
# - a float64 identity has no baseline beside it, so it takes the worst case: Higham's gamma_n, n roundings, for
#   each of its two sides.
ELEMENTWISE_ROUNDINGS = 8  # normalisation (sqrt, division), the scale, exp / log, the final mean: a few per output


def floor_magnitude(magnitude, *lengths: int):
    """The budget's magnitude: the size of the terms times 1 + sum_n sqrt(n) roundings of reductions of length n."""
    return magnitude * (1 + sum(math.sqrt(n) for n in lengths))


def identity_atol(magnitude, *lengths: int) -> float:
    """The tolerance of a float64 identity whose two sides each round terms of this magnitude (a number or a
    tensor: its largest entry) through reductions of these lengths: gamma_n of every reduction and the elementwise
    roundings, twice."""
    size = float(torch.as_tensor(magnitude, dtype=F64).max())
    return budget.rounding_atol(F64, size, 2 * (sum(lengths) + ELEMENTWISE_ROUNDINGS))


def softmax_exponent_size(logit_bound: float, n: int) -> float:
    """kappa, the relative error of a softmax entry p = exp(L_ij - lse_i) in roundings: its exponent subtracts
    lse_i (|lse_i| <= the bound + ln n, over n entries) from L_ij, itself the rounded product of size <= the bound;
    the subtraction's own rounding moves p by p |log p| <= 1 / e."""
    return 2 * logit_bound + math.log(n) + 1


def normalised_gradient_magnitude(x: torch.Tensor, mag_hat: torch.Tensor) -> torch.Tensor:
    """The gradient through x^ = x / |x| (rows): dx = (dx^ - x^ (x^ . dx^)) / |x| subtracts two terms of the size
    mag_hat of dx^'s own terms, and divides by the norm (a small row amplifies every rounding upstream)."""
    x = x.detach().to(F64)
    norm = x.norm(dim=-1, keepdim=True)
    x_hat = x / norm
    return (mag_hat + x_hat.abs() * (x_hat.abs() * mag_hat).sum(-1, keepdim=True)) / norm


def logit_gradient_magnitudes(x: torch.Tensor, y: torch.Tensor, scale: float, A: torch.Tensor):
    """Magnitudes of d/dx and d/dy for logits L = scale x^ y^^T whose gradient dl/dL has the error weights A
    (entrywise: the terms each dl/dL_ij cancels, times their conditioning): dx^ = scale A y^, dy^ = scale A^T x^."""
    x_hat, y_hat = (z / z.norm(dim=-1, keepdim=True) for z in (x.detach().to(F64), y.detach().to(F64)))
    return (normalised_gradient_magnitude(x, scale * A @ y_hat.abs()),
            normalised_gradient_magnitude(y, scale * A.T @ x_hat.abs()))


