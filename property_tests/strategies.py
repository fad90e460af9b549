"""Hypothesis strategies for the FlashAttention document.

Draws describe a case (shapes, a sharpness, a seed) and the tensors are made from the seed, so a falsifying
example prints as one readable line that rebuilds the same tensors, and hypothesis never has to draw thousands of
floats one by one. Shapes cover what kernels get wrong: odd head dims (59, 111), Sq != Sk both ways, Sk = 1,
causal rows with no visible key, grouped KV heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import torch

HEAD_DIMS = (1, 8, 16, 59, 64, 111, 128)
EDGE_LENGTHS = (1, 2, 16, 17, 63, 64, 65, 113)
F64 = torch.float64


def randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64) * scale


@dataclass(frozen=True)
class AttentionShape:
    B: int
    H: int
    Hkv: int
    Sq: int
    Sk: int
    D: int
    Dv: int
    sharpness: float  # multiplies q: the typical spread of the scores, so softmax rows range from flat to peaked
    seed: int

    def tensors(self, target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v rounded to the target's dtype, on its device (the spec rounds nothing further)."""
        q = randn(self.seed, self.B, self.H, self.Sq, self.D, scale=self.sharpness)
        k = randn(self.seed + 1, self.B, self.Hkv, self.Sk, self.D)
        v = randn(self.seed + 2, self.B, self.Hkv, self.Sk, self.Dv)
        return target.tensor(q), target.tensor(k), target.tensor(v)


def lengths(max_len: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([n for n in EDGE_LENGTHS if n <= max_len]), st.integers(1, max_len))


@st.composite
def attention_shapes(draw, target, *, gqa: bool = True, max_len: int | None = None) -> AttentionShape:
    max_len = max_len or (48 if target.interpreted else 96)
    Hkv = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 2, 3])) if gqa and target.provides("gqa") else 1
    D = draw(st.sampled_from(HEAD_DIMS))
    Dv = draw(st.one_of(st.just(D), st.sampled_from(HEAD_DIMS)))
    return AttentionShape(
        B=draw(st.integers(1, 2)), H=Hkv * group, Hkv=Hkv, Sq=draw(lengths(max_len)), Sk=draw(lengths(max_len)),
        D=D, Dv=Dv, sharpness=draw(st.sampled_from([0.25, 1.0, 2.0, 4.0])), seed=draw(st.integers(0, 2**31)),
    )


@dataclass(frozen=True)
class SoftmaxCase:
    rows: int
    N: int
    magnitude: float  # largest |x|: 1e4 overflows exp without the max subtraction in float32
    masked_rows: tuple[int, ...]  # rows set to -inf entirely
    seed: int

    def tensor(self, target) -> torch.Tensor:
        x = randn(self.seed, self.rows, self.N, scale=self.magnitude / 4)
        x = x.clamp(-self.magnitude, self.magnitude)
        for r in self.masked_rows:
            x[r] = float("-inf")
        return target.tensor(x)


def magnitudes(dtype: str) -> st.SearchStrategy[float]:
    big = {"float64": 1e5, "float32": 1e4, "bfloat16": 1e4, "float16": 1e4}[dtype]
    return st.sampled_from([1.0, 10.0, 100.0, big])


@st.composite
def softmax_cases(draw, target, *, masked: bool = False) -> SoftmaxCase:
    rows = draw(st.integers(1, 8))
    max_n = 300 if target.interpreted else 3000
    masked_rows = tuple(sorted(draw(st.sets(st.integers(0, rows - 1), min_size=1)))) if masked else ()
    return SoftmaxCase(rows=rows, N=draw(lengths(max_n)), magnitude=draw(magnitudes(target.dtype)),
                       masked_rows=masked_rows, seed=draw(st.integers(0, 2**31)))


@st.composite
def partitions(draw, n: int) -> tuple[int, ...]:
    """Any partition of n into positive block sizes."""
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(n - 1, 12)))) if n > 1 else []
    edges = [0, *cuts, n]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


@dataclass(frozen=True)
class VarlenCase:
    lengths_q: tuple[int, ...]
    lengths_k: tuple[int, ...]
    H: int
    Hkv: int
    D: int
    Dv: int
    seed: int

    def cu_seqlens(self, lengths: tuple[int, ...], device: str) -> torch.Tensor:
        return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)

    def tensors(self, target):
        Tq, Tk = sum(self.lengths_q), sum(self.lengths_k)
        q = randn(self.seed, Tq, self.H, self.D)
        k = randn(self.seed + 1, Tk, self.Hkv, self.D)
        v = randn(self.seed + 2, Tk, self.Hkv, self.Dv)
        return (target.tensor(q), target.tensor(k), target.tensor(v),
                self.cu_seqlens(self.lengths_q, target.device), self.cu_seqlens(self.lengths_k, target.device))


@st.composite
def varlen_cases(draw, target) -> VarlenCase:
    max_len = 24 if target.interpreted else 70
    batch = draw(st.integers(1, 4))
    lengths_q = tuple(draw(st.lists(st.integers(0, max_len), min_size=batch, max_size=batch)))
    lengths_k = tuple(draw(st.lists(st.integers(0, max_len), min_size=batch, max_size=batch)))
    if sum(lengths_q) == 0 or sum(lengths_k) == 0:  # an empty packed tensor is malformed input, not a case
        lengths_q, lengths_k = lengths_q + (1,), lengths_k + (1,)
    Hkv = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 2])) if target.provides("gqa") else 1
    D = draw(st.sampled_from(HEAD_DIMS))
    return VarlenCase(lengths_q, lengths_k, H=Hkv * group, Hkv=Hkv, D=D, Dv=draw(st.sampled_from([D, 8])),
                      seed=draw(st.integers(0, 2**31)))
