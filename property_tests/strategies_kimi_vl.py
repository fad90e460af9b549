"""Hypothesis strategies for the Kimi-VL document: router and MoE cases, packed images.

As in strategies.py, a draw describes a case (sizes, a configuration, a seed) and the tensors are made from the
seed, so a falsifying example prints as one line. Routing is discrete: a case whose float64 selection has a near
tie (a gap between the last chosen and the first rejected score, or between kept and dropped groups, within what
the router's rounding may move it: decision_rounding) is rejected with ``assume`` by the tests, since rounding may
legitimately break a tie either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import hypothesis.strategies as st
import torch

from specs.moe_routing import RouterConfig, affinity, group_scores

from .strategies import randn

F64 = torch.float64
ALL_CAPS = frozenset({"sigmoid", "softmax", "bias", "groups", "scaling", "shared", "grad"})


def capabilities(target) -> frozenset:
    """What a target can be asked: the spec and the mutants everything, others what they declare."""
    return ALL_CAPS if target.impl.origin in ("spec", "mutant") else target.impl.provides


def _divisors(n: int) -> list[int]:
    return [g for g in range(1, n + 1) if n % g == 0]


@st.composite
def router_configs(draw, caps: frozenset, E: int, *, groups: bool | None = None) -> RouterConfig:
    scorings = [s for s in ("sigmoid", "softmax") if s in caps]
    scoring = draw(st.sampled_from(scorings), label="scoring")
    n_group = 1
    if "groups" in caps and groups is not False:
        choices = [g for g in _divisors(E) if g > 1 and E // g >= 2]
        if choices and (groups or draw(st.booleans(), label="grouped")):
            n_group = draw(st.sampled_from(choices), label="n_group")
    topk_group = draw(st.integers(1, n_group), label="topk_group") if n_group > 1 else 1
    kept = topk_group * (E // n_group)
    top_k = draw(st.integers(1, min(kept, 6)), label="top_k")
    if "scaling" in caps:
        norm = draw(st.booleans(), label="norm_topk_prob")
        rsf = draw(st.sampled_from([1.0, 2.446, 0.5]), label="routed_scaling_factor")
    else:
        norm, rsf = True, 1.0
    return RouterConfig(top_k=top_k, n_group=n_group, topk_group=topk_group, scoring=scoring,
                        norm_topk_prob=norm, routed_scaling_factor=rsf)


@dataclass(frozen=True)
class RouteCase:
    T: int
    E: int
    config: RouterConfig
    bias_scale: float
    seed: int

    def logits(self) -> torch.Tensor:
        return randn(self.seed, self.T, self.E, scale=2.0)

    def bias(self) -> torch.Tensor:
        return randn(self.seed + 1, self.E, scale=self.bias_scale)


@st.composite
def route_cases(draw, target, *, groups: bool | None = None, bias_scales=(0.0, 0.1, 1.0), max_T: int = 12):
    caps = capabilities(target)
    E = draw(st.sampled_from([4, 6, 8, 12, 16]), label="E")
    config = draw(router_configs(caps, E, groups=groups))
    scale = draw(st.sampled_from(bias_scales), label="bias_scale") if "bias" in caps else 0.0
    return RouteCase(draw(st.integers(1, max_T), label="T"), E, config, scale,
                     draw(st.integers(0, 2**20), label="seed"))


def selection_margin(logits: torch.Tensor, bias: torch.Tensor, config: RouterConfig) -> float:
    """The smallest gap, over tokens, that decides the selection in float64 (inf when nothing is decided)."""
    s = affinity(logits.to(F64), config.scoring)
    c = s + bias.to(F64)
    gaps = [math.inf]
    T, E = c.shape
    if config.n_group > 1 and config.topk_group < config.n_group:
        g = group_scores(c, config.n_group).sort(-1, descending=True).values
        gaps.append(float((g[:, config.topk_group - 1] - g[:, config.topk_group]).min()))
        kept = group_scores(c, config.n_group).topk(config.topk_group, -1).indices
        keep = torch.zeros(T, config.n_group, dtype=torch.bool, device=c.device).scatter_(1, kept, True)
        c = c.masked_fill(~keep.repeat_interleave(E // config.n_group, 1), -math.inf)
    # ties inside a group's top-2 sum do not matter; ties around the k-th expert do
    cs = c.sort(-1, descending=True).values
    if config.top_k < E:
        nxt = cs[:, config.top_k]
        gap = cs[:, config.top_k - 1] - nxt
        gaps.append(float(torch.where(torch.isinf(nxt), math.inf, gap).min()))
    return min(gaps)


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The router's scores are computed in float32 or wider (specs.moe_routing.affinity's convention)."""
    return F64 if dtype == F64 else torch.float32


def decision_rounding(dtype: torch.dtype, config: RouterConfig, E: int, bias_size: float,
                      input_error: float = 0.0) -> float:
    """How far rounding may move one quantity the selection compares (a selection score c = s + b, or a group's
    top-2 sum of them) in a router working in ``dtype``: the affinity's roundings (sigmoid: 3; softmax: an E-term sum,
    the exp and the division), the bias's addition and the group sum's, of scores <= 1 plus |b|, for each of the two
    scores a group sums; plus the error of each score's inputs (logits computed in the score dtype, or a bias
    rounded once more; the affinity is at most 1-Lipschitz)."""
    u = torch.finfo(score_dtype(dtype)).eps / 2
    affinity = E + 2 if config.scoring == "softmax" else 3
    return 2 * ((affinity + 2) * u * (1 + bias_size) + input_error)


def well_separated(margin: float, rounding: float) -> bool:
    """A selection decided by a gap larger than what rounding may move it by on both sides."""
    return margin > 2 * rounding


@dataclass(frozen=True)
class MoECase:
    T: int
    D: int
    F: int
    E: int
    config: RouterConfig
    n_shared: int  # shared experts of width F each (0: none)
    bias_scale: float
    seed: int

    def tensors(self, dtype=F64, device="cpu"):
        s = self.seed
        make = lambda *shape, scale=1.0, k=0: randn(s + k, *shape, scale=scale).to(device=device, dtype=dtype)  # noqa: E731
        x = make(self.T, self.D, k=0)
        w_router = make(self.E, self.D, scale=2.0 / math.sqrt(self.D), k=1)
        bias = randn(s + 2, self.E, scale=self.bias_scale).to(device=device, dtype=torch.float32)
        w_gate = make(self.E, self.F, self.D, scale=1 / math.sqrt(self.D), k=3)
        w_up = make(self.E, self.F, self.D, scale=1 / math.sqrt(self.D), k=4)
        w_down = make(self.E, self.D, self.F, scale=1 / math.sqrt(self.F), k=5)
        shared = None
        if self.n_shared:
            Fs = self.n_shared * self.F
            s_in = 1 / math.sqrt(self.D)
            shared = (make(Fs, self.D, scale=s_in, k=6), make(Fs, self.D, scale=s_in, k=7),
                      make(self.D, Fs, scale=1 / math.sqrt(Fs), k=8))
        return x, w_router, bias, w_gate, w_up, w_down, shared


@st.composite
def moe_cases(draw, target, *, groups: bool | None = None, bias_scales=(0.0, 0.5)):
    caps = capabilities(target)
    E = draw(st.sampled_from([4, 6, 8]), label="E")
    config = draw(router_configs(caps, E, groups=groups))
    n_shared = draw(st.sampled_from([0, 1, 2]), label="n_shared") if "shared" in caps else 0
    scale = draw(st.sampled_from(bias_scales), label="bias_scale") if "bias" in caps else 0.0
    return MoECase(draw(st.integers(1, 8), label="T"), draw(st.sampled_from([4, 8, 16]), label="D"),
                   draw(st.sampled_from([4, 8]), label="F"), E, config, n_shared, scale,
                   draw(st.integers(0, 2**20), label="seed"))


def moe_margin(case: MoECase, x, w_router, bias) -> float:
    return selection_margin(x.to(F64) @ w_router.to(F64).T, bias, case.config)


def moe_decision_rounding(case: MoECase, x, w_router, bias) -> float:
    """decision_rounding for the layer's router, whose logits x W_r^T are D-term sums in the score dtype."""
    X, W = x.detach().to(F64).abs(), w_router.detach().to(F64).abs()
    u = torch.finfo(score_dtype(x.dtype)).eps / 2
    logit_error = case.D * u * float((X @ W.T).max())
    return decision_rounding(x.dtype, case.config, case.E, float(bias.detach().abs().max()), logit_error)


def group_preserving_permutation(E: int, n_group: int, seed: int) -> torch.Tensor:
    """perm with new expert i = old expert perm[i], moving whole groups and experts inside groups."""
    gen = torch.Generator().manual_seed(seed)
    size = E // n_group
    groups = torch.randperm(n_group, generator=gen)
    return torch.cat([g * size + torch.randperm(size, generator=gen) for g in groups.tolist()])


@st.composite
def grids(draw, *, images: tuple[int, int] = (1, 3), max_side: int = 4, even: bool = False):
    n = draw(st.integers(*images), label="images")
    sides = st.sampled_from([2, 4, 6]) if even else st.integers(1, max_side)
    return [(draw(sides, label="h"), draw(sides, label="w")) for _ in range(n)]


def encoder_params(seed: int, *, D: int = 8, P: int = 12, M: int = 16, layers: int = 1, table=(4, 4)):
    def r(k, *shape, scale=1.0):
        return randn(seed + k, *shape, scale=scale)

    params = {"patch_w": r(0, D, P, scale=1 / math.sqrt(P)), "patch_b": r(1, D, scale=0.1),
              "pos": r(2, *table, D, scale=0.5), "final_w": 1 + r(3, D, scale=0.1), "final_b": r(4, D, scale=0.1),
              "layers": []}
    for i in range(layers):
        k = 20 * (i + 1)
        params["layers"].append({
            "ln1_w": 1 + r(k, D, scale=0.1), "ln1_b": r(k + 1, D, scale=0.1),
            "qkv_w": r(k + 2, 3 * D, D, scale=1 / math.sqrt(D)), "qkv_b": r(k + 3, 3 * D, scale=0.1),
            "o_w": r(k + 4, D, D, scale=1 / math.sqrt(D)), "o_b": r(k + 5, D, scale=0.1),
            "ln2_w": 1 + r(k + 6, D, scale=0.1), "ln2_b": r(k + 7, D, scale=0.1),
            "fc1_w": r(k + 8, M, D, scale=1 / math.sqrt(D)), "fc1_b": r(k + 9, M, scale=0.1),
            "fc2_w": r(k + 10, D, M, scale=1 / math.sqrt(M)), "fc2_b": r(k + 11, D, scale=0.1),
        })
    return params


def params_to(params: dict, dtype, device="cpu") -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device=device, dtype=dtype)
        elif k == "layers":
            out[k] = [{n: t.to(device=device, dtype=dtype) for n, t in layer.items()} for layer in v]
        else:
            out[k] = v
    return out
