"""transformers' MoE modules as implementations of kimi_vl.route / moe / balance_loss.

Modules built on their own are not initialised (torch.empty weights), so every adapter copies our weights in
explicitly. ``DeepseekV3TopkRouter`` and ``MixtralTopKRouter`` take hidden states, not logits: the adapters give
them hidden size E and the identity as router weight, so the logits they compute are ours exactly (x_i + 0s).
Routing weights come back in float32 (DeepSeek's router casts to float32 itself). The layers run in float32.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=64)
def _deepseek_config(hidden: int, E: int, top_k: int, n_group: int, topk_group: int, norm: bool, rsf: float,
                     F: int = 1, n_shared: int = 1):
    from transformers import DeepseekV3Config

    return DeepseekV3Config(hidden_size=hidden, n_routed_experts=E, num_experts_per_tok=top_k, n_group=n_group,
                            topk_group=topk_group, norm_topk_prob=norm, routed_scaling_factor=rsf,
                            moe_intermediate_size=F, n_shared_experts=n_shared, intermediate_size=F,
                            num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1, vocab_size=8,
                            hidden_act="silu", experts_implementation="eager")


def _deepseek_router(E: int, config):
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    if config.scoring != "sigmoid":
        raise ValueError(f"DeepseekV3TopkRouter scores with a sigmoid only, not {config.scoring!r}")
    return DeepseekV3TopkRouter(_deepseek_config(E, E, config.top_k, config.n_group, config.topk_group,
                                                 config.norm_topk_prob, float(config.routed_scaling_factor)))


@torch.no_grad()
def deepseek_v3_route(logits, bias, config):
    E = logits.shape[1]
    router = _deepseek_router(E, config).to(logits.device)
    router.weight.copy_(torch.eye(E))
    router.e_score_correction_bias.copy_(bias)
    _, weights, indices = router(logits.float())
    return indices, weights


def _mixtral_supports(config, bias, E: int) -> None:
    """MixtralTopKRouter has no bias, groups, scaling or sigmoid: refuse a configuration it cannot express."""
    if config.scoring != "softmax" or config.n_group != 1 or not config.norm_topk_prob or \
            config.routed_scaling_factor != 1.0:
        raise ValueError(f"MixtralTopKRouter is softmax top-k renormalised, without groups or scaling: {config}")
    if bias.shape != (E,) or bool((bias != 0).any()):
        raise ValueError("MixtralTopKRouter has no correction bias (need zeros of length E)")


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
    if config.scoring != "sigmoid":
        raise ValueError(f"DeepseekV3MoE scores with a sigmoid only, not {config.scoring!r}")
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
        raise ValueError("MixtralSparseMoeBlock has no shared experts")
    cfg = MixtralConfig(hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=config.top_k,
                        hidden_act="silu", experts_implementation="eager")
    block = MixtralSparseMoeBlock(cfg).to(device=x.device, dtype=x.dtype).eval()
    with torch.no_grad():
        block.gate.weight.copy_(w_router)
        block.experts.gate_up_proj.copy_(torch.cat((w_gate, w_up), dim=1))
        block.experts.down_proj.copy_(w_down)
    return block(x[None])[0]


def mixtral_balance_loss(scores, indices, *, form="mixtral", alpha=1.0):
    """load_balancing_loss_func takes router logits and picks its own top-k: log(scores) are logits whose softmax
    is scores (rows of probabilities), and its top-k then equals indices wherever they are the top-k of scores."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    if form != "mixtral":
        raise ValueError(f"transformers implements the Mixtral form only, not {form!r}")
    loss = load_balancing_loss_func((torch.log(scores),), scores.shape[1], top_k=indices.shape[1])
    return alpha * loss
