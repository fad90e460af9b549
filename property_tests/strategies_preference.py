"""Hypothesis strategies for the DPO and GRPO documents.

A draw describes a case (shapes, the prompt and completion lengths of each sequence, a seed) and the tensors are
made from the seed, so a falsifying example prints as one line that rebuilds the same tensors. Shapes cover what
fused kernels get wrong: a vocabulary that is not a multiple of anything, one-token completions, all-padding
tails, chunks that do not divide the number of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import torch

from .strategies import randn

F64 = torch.float64


def seeded_ids(seed: int, shape: tuple[int, ...], vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class SequenceCase:
    """N sequences of length T: prompt tokens, then completion tokens, then padding (mask 1 only on completions)."""

    N: int
    T: int
    V: int
    H: int
    prompts: tuple[int, ...]
    completions: tuple[int, ...]
    sharpness: float  # the spread of the logits: flat to peaked next-token distributions
    seed: int

    def mask(self) -> torch.Tensor:
        m = torch.zeros(self.N, self.T, dtype=torch.int64)
        for i, (p, c) in enumerate(zip(self.prompts, self.completions)):
            m[i, p:p + c] = 1
        return m

    def ids(self) -> torch.Tensor:
        return seeded_ids(self.seed + 3, (self.N, self.T), self.V)

    def logits(self) -> torch.Tensor:
        return randn(self.seed, self.N, self.T, self.V, scale=self.sharpness)

    def hidden_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        h = randn(self.seed + 1, self.N, self.T, self.H, scale=self.sharpness / self.H ** 0.25)
        W = randn(self.seed + 2, self.V, self.H, scale=1 / self.H ** 0.25)
        return h, W


@st.composite
def sequence_cases(draw, *, pairs: bool = False, prompt: bool = True, max_T: int = 12, max_V: int = 48):
    """Sequences; ``pairs``: an even number (chosen; rejected); ``prompt``: at least one prompt token each."""
    n = draw(st.integers(1, 3), label="pairs") * 2 if pairs else draw(st.integers(1, 4), label="N")
    T = draw(st.integers(2, max_T), label="T")
    first = 1 if prompt else 0
    prompts, completions = [], []
    for _ in range(n):
        p = draw(st.integers(first, T - 1))
        prompts.append(p)
        completions.append(draw(st.integers(1, T - p)))
    return SequenceCase(N=n, T=T, V=draw(st.sampled_from([2, 5, 17, max_V])), H=draw(st.sampled_from([1, 4, 9, 16])),
                        prompts=tuple(prompts), completions=tuple(completions),
                        sharpness=draw(st.sampled_from([0.5, 2.0, 6.0])), seed=draw(st.integers(0, 2**31)))
