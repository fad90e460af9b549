"""transformers' MoE modules as implementations of kimi_vl.route / moe / balance_loss.

Modules built on their own are not initialised (torch.empty weights), so every adapter copies our weights in
explicitly. ``DeepseekV3TopkRouter`` and ``MixtralTopKRouter`` take hidden states, not logits: the adapters give
them hidden size E and the identity as router weight, so the logits they compute are ours exactly (x_i + 0s).
Routing weights come back in float32 (DeepSeek's router casts to float32 itself). The layers run in float32.
"""

from __future__ import annotations

import functools
import math

import torch

from eqspec.contracts import ArgumentError


@functools.lru_cache(maxsize=64)
def _deepseek_config(hidden: int, E: int, top_k: int, n_group: int, topk_group: int, norm: bool, rsf: float,
                     F: int = 1, n_shared: int = 1):
    from transformers import DeepseekV3Config

    return DeepseekV3Config(hidden_size=hidden, n_routed_experts=E, num_experts_per_tok=top_k, n_group=n_group,
                            topk_group=topk_group, norm_topk_prob=norm, routed_scaling_factor=rsf,
                            moe_intermediate_size=F, n_shared_experts=n_shared, intermediate_size=F,
                            num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1, vocab_size=8,
                            hidden_act="silu", experts_implementation="eager")


def _deepseek_supports(config, E: int) -> None:
    """Refuse what DeepseekV3TopkRouter cannot express (NotImplementedError: a configuration it lacks)."""
    if config.scoring != "sigmoid":
        raise NotImplementedError(f"DeepseekV3TopkRouter scores with a sigmoid only, not {config.scoring!r}")
    if E // config.n_group < 2:
        # it scores every group by its top-2 sum even with n_group = 1: topk(2) of a 1-expert group raises
        raise NotImplementedError(f"DeepseekV3TopkRouter needs at least 2 experts per group (it always takes each "
                                  f"group's top-2 sum), got E = {E} in {config.n_group} group(s)")


def _deepseek_router(E: int, config):
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    _deepseek_supports(config, E)
    return DeepseekV3TopkRouter(_deepseek_config(E, E, config.top_k, config.n_group, config.topk_group,
                                                 config.norm_topk_prob, float(config.routed_scaling_factor)))


@torch.no_grad()
def deepseek_v3_route(logits, bias, config):
    E = logits.shape[1]
    router = _deepseek_router(E, config).to(logits.device)
    router.weight.copy_(torch.eye(E))
    router.e_score_correction_bias.copy_(bias)
    _, weights, indices = router(logits.float())
    return indices, weights  # its topk(sorted=False) order: a route is a set of (expert, weight) pairs


def _mixtral_supports(config, bias, E: int) -> None:
    """MixtralTopKRouter has no bias, groups, scaling or sigmoid and always renormalises: refuse (NotImplementedError)
    a configuration it cannot express."""
    if config.scoring != "softmax" or config.n_group != 1 or config.routed_scaling_factor != 1.0:
        raise NotImplementedError(f"MixtralTopKRouter is softmax top-k without groups or scaling: {config}")
    if not config.norm_topk_prob and config.top_k != E:
        # renormalising is the identity only where all E softmax probabilities are kept (they sum to 1)
        raise NotImplementedError(f"MixtralTopKRouter always renormalises its top-k weights: norm_topk_prob=False "
                                  f"is expressible only with top_k = E ({E}), got top_k = {config.top_k}")
    if bias.shape != (E,):
        raise ArgumentError("bias", f"bias must have one entry per expert ({E}), got shape {tuple(bias.shape)}")
    if bool((bias != 0).any()):
        raise NotImplementedError("MixtralTopKRouter has no correction bias (only zeros are expressible)")


@torch.no_grad()
def mixtral_route(logits, bias, config):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    E = logits.shape[1]
    _mixtral_supports(config, bias, E)
    router = MixtralTopKRouter(MixtralConfig(hidden_size=E, num_local_experts=E, num_experts_per_tok=config.top_k))
    router.weight.copy_(torch.eye(E))
    _, weights, indices = router.to(logits.device)(logits.float())
    return indices, weights


def deepseek_v3_layer(w_router, bias, w_gate, w_up, w_down, config, shared=None):
    """A DeepseekV3MoE holding our weights (its own dtype and device: w_gate's)."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    E, F, D = w_gate.shape
    _deepseek_supports(config, E)
    n_shared = 1 if shared is None else shared[0].shape[0] // F  # no shared expert: one with zero weights
    cfg = _deepseek_config(D, E, config.top_k, config.n_group, config.topk_group, config.norm_topk_prob,
                           float(config.routed_scaling_factor), F, n_shared)
    layer = DeepseekV3MoE(cfg).to(device=w_gate.device, dtype=w_gate.dtype)
    with torch.no_grad():
        layer.gate.weight.copy_(w_router)
        layer.gate.e_score_correction_bias.copy_(bias)
        layer.experts.gate_up_proj.copy_(torch.cat((w_gate, w_up), dim=1))  # chunk(2): gate first, then up
        layer.experts.down_proj.copy_(w_down)
        mlp = layer.shared_experts
        for linear, w in zip((mlp.gate_proj, mlp.up_proj, mlp.down_proj), shared or (None, None, None)):
            linear.weight.copy_(w if w is not None else torch.zeros_like(linear.weight))
    return layer


def deepseek_v3_moe(x, w_router, bias, w_gate, w_up, w_down, config, shared=None):
    return deepseek_v3_layer(w_router, bias, w_gate, w_up, w_down, config, shared)(x[None])[0]


def mixtral_moe(x, w_router, bias, w_gate, w_up, w_down, config, shared=None):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    E, F, D = w_gate.shape
    _mixtral_supports(config, bias, E)
    if shared is not None:
        raise NotImplementedError("MixtralSparseMoeBlock has no shared experts")
    cfg = MixtralConfig(hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=config.top_k,
                        hidden_act="silu", experts_implementation="eager")
    block = MixtralSparseMoeBlock(cfg).to(device=x.device, dtype=x.dtype).eval()
    with torch.no_grad():
        block.gate.weight.copy_(w_router)
        block.experts.gate_up_proj.copy_(torch.cat((w_gate, w_up), dim=1))
        block.experts.down_proj.copy_(w_down)
    return block(x[None])[0]


def mixtral_balance_loss(scores, indices, *, form="deepseek_v3", alpha=1.0):
    """load_balancing_loss_func takes router logits, softmaxes them and picks its own top-k: log(scores) are logits
    whose softmax is scores where each row sums to 1 (softmax scores), and its counts are those of indices where
    they are a top-k of scores whose ties (if any) it cannot break into another loss. Other points are not
    expressible (NotImplementedError)."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    if form != "mixtral":
        raise NotImplementedError(f"transformers implements the Mixtral form only, not {form!r}")
    T, E = scores.shape
    K = indices.shape[1]
    # a float softmax row sums to 1 within about E roundings; a sigmoid row is renormalised by the softmax
    off = float((scores.double().sum(-1) - 1).abs().max()) if T else 0.0
    if off > E * torch.finfo(scores.dtype).eps:
        raise NotImplementedError(f"load_balancing_loss_func softmaxes router logits: scores whose rows do not sum to "
                                  f"1 (sigmoid scores; off by {off:.3g}) cannot be given to it")
    if K < E and T:
        chosen = torch.zeros(T, E, dtype=torch.bool, device=scores.device).scatter_(1, indices, True)
        low = scores.masked_fill(~chosen, float("inf")).amin(-1, keepdim=True)
        high = scores.masked_fill(chosen, float("-inf")).amax(-1, keepdim=True)
        # where it may break a tie at the boundary its own way, the loss (counts x mean scores) is unchanged only
        # if the tied experts have the same mean score
        tied = (scores == low) & (low == high)
        P = scores.double().mean(0).expand(T, E)
        spread = P.masked_fill(~tied, -math.inf).amax(-1) - P.masked_fill(~tied, math.inf).amin(-1)
        if bool((low < high).any()) or bool((spread > 0).any()):
            raise NotImplementedError("load_balancing_loss_func selects its own top-k of the logits: indices that are "
                                      "not a top-k of scores, or ties it may break to another loss, cannot be given")
    loss = load_balancing_loss_func((torch.log(scores),), E, top_k=K)
    return alpha * loss
