"""torch implementations of the Kimi-VL document: the router, the MoE layer (per-token loop and grouped), dispatch /
combine, MoonViT (rotary embedding, position table, packed encoder, merger) and the projector."""

from eqspec.registry import REGISTRY, Implementation

_M = "implementations.torch.kimi_vl"
_D = "kimi_vl"
_ALL_ROUTING = frozenset({"sigmoid", "softmax", "bias", "groups", "scaling", "shared", "grad"})

for _impl in (
    Implementation(f"{_D}.route", "torch.naive", f"{_M}.routing:route", "torch", provides=_ALL_ROUTING,
                   notes="scores in float32 (float64 for float64 logits), -inf group mask; the baseline"),
    Implementation(f"{_D}.moe", "torch.loop", f"{_M}.moe:moe_loop", "torch", provides=_ALL_ROUTING,
                   notes="token by token, expert by expert, in the input dtype (the equation; the baseline)"),
    Implementation(f"{_D}.moe", "torch.grouped", f"{_M}.moe:moe_grouped", "torch", provides=_ALL_ROUTING,
                   notes="stable sort of the slots by expert, one matmul per expert on its buffer, float32 "
                         "index_add combine"),
    Implementation(f"{_D}.dispatch", "torch.sort", f"{_M}.moe:dispatch", "torch",
                   notes="stable argsort of the slots by expert; positions = the inverse permutation"),
    Implementation(f"{_D}.combine", "torch.naive", f"{_M}.moe:combine", "torch",
                   notes="gather K rows per token, weighted sum in the input dtype (the baseline)"),
    Implementation(f"{_D}.balance_loss", "torch.naive", f"{_M}.routing:balance_loss", "torch",
                   provides=frozenset({"deepseek_v3", "switch", "mixtral"}), notes="in the scores' dtype"),
    Implementation(f"{_D}.rope_2d", "torch.naive", f"{_M}.vision:rope_2d", "torch",
                   notes="complex multiply in float32 (moonvit.py apply_rope; float64 inputs in complex128)"),
    Implementation(f"{_D}.pos_emb", "torch.naive", f"{_M}.vision:pos_emb", "torch",
                   notes="F.interpolate bicubic in the table's dtype"),
    Implementation(f"{_D}.moonvit_encode", "torch.naive", f"{_M}.vision:moonvit_encode", "torch",
                   notes="one masked attention over the packed sequence (block-diagonal mask from image ids)"),
    Implementation(f"{_D}.patch_merge", "torch.gather", f"{_M}.vision:patch_merge", "torch",
                   notes="one gather with a window index built from arange"),
    Implementation(f"{_D}.projector", "torch.naive", f"{_M}.vision:projector", "torch",
                   notes="F.layer_norm per patch, gather, F.linear, F.gelu, F.linear in the input dtype"),
):
    REGISTRY.add_implementation(_impl)
