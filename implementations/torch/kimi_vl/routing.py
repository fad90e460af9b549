"""The router and the balance loss in torch: what a model's code does, scores in float32 (float64 inputs in float64).

``route`` is the naive same-precision baseline of kimi_vl.route, and every torch / Triton MoE layer routes with it.
"""

from __future__ import annotations

import torch

from specs.moe_routing import NORM_GUARD, check_balance_loss_args, check_route_args


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def route(logits: torch.Tensor, bias: torch.Tensor, config):
    config = check_route_args(logits, bias, config)
    acc = score_dtype(logits.dtype)
    ell = logits.to(acc)
    s = ell.sigmoid() if config.scoring == "sigmoid" else ell.softmax(-1)
    c = s.detach() + bias.detach().to(acc)  # selection scores: no gradient to the bias (it only selects)
    T, E = c.shape
    if config.n_group > 1:
        groups = c.view(T, config.n_group, -1).topk(2, dim=-1).values.sum(-1)
        kept = groups.topk(config.topk_group, dim=-1).indices
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, kept, True)
        c = c.masked_fill(~keep.repeat_interleave(E // config.n_group, dim=1), float("-inf"))
    indices = c.topk(config.top_k, dim=-1).indices
    weights = s.gather(1, indices)
    if config.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + NORM_GUARD)
    return indices, weights * config.routed_scaling_factor


def router_logits(x: torch.Tensor, w_router: torch.Tensor) -> torch.Tensor:
    """u_t^T e_i in float32 (float64 for float64 inputs), as DeepseekV3TopkRouter computes them."""
    acc = score_dtype(x.dtype)
    return x.to(acc) @ w_router.to(acc).T


def balance_loss(scores: torch.Tensor, indices: torch.Tensor, *, form: str = "deepseek_v3", alpha: float = 1.0):
    check_balance_loss_args(scores, indices, form)
    T, E = scores.shape
    K = indices.shape[1]
    counts = torch.zeros(E, dtype=scores.dtype, device=scores.device).index_add_(
        0, indices.reshape(-1), torch.ones(indices.numel(), dtype=scores.dtype, device=scores.device))
    if form == "deepseek_v3":
        P = (scores / scores.sum(-1, keepdim=True)).mean(0)
        return alpha * (E / (K * T) * counts * P).sum()
    if form == "switch":
        return alpha * E * (counts / (T * K) * scores.mean(0)).sum()
    return alpha * E * (counts / T * scores.mean(0)).sum()
