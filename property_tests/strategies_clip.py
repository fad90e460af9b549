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
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
    return value.detach(), grads


def as64(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(x.detach().to(F64) for x in xs)


