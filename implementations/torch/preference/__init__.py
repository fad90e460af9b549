"""torch implementations of the DPO and GRPO operations: the naive eager baselines and the fused chunked losses."""

from eqspec.registry import REGISTRY, Implementation

_M = "implementations.torch.preference"
_EAGER = "naive eager torch in the inputs' dtype (the baseline)"
_FUSED = ("last linear layer + log-softmax + loss, chunked over the scored tokens; never materialises the "
          "(batch x tokens x vocab) logits; gradients in hidden and weight computed in the forward "
          "(torch.autograd.Function); chunk_size tokens per chunk")

for _impl in (
    Implementation("dpo.sequence_logps", "torch.naive", f"{_M}.eager:sequence_logps", "torch", notes=_EAGER),
    Implementation("dpo.dpo_loss", "torch.naive", f"{_M}.eager:dpo_loss", "torch", provides=frozenset({"grad"}),
                   notes=_EAGER),
    Implementation("dpo.fused_linear_dpo_loss", "torch.naive", f"{_M}.eager:fused_linear_dpo_loss", "torch",
                   provides=frozenset({"grad"}), notes=_EAGER + ": materialises the logits"),
    Implementation("dpo.fused_linear_dpo_loss", "torch.chunked", f"{_M}.fused:fused_linear_dpo_loss", "torch",
                   provides=frozenset({"grad", "chunk_size"}), notes=_FUSED),
    Implementation("grpo.group_advantages", "torch.naive", f"{_M}.eager:group_advantages", "torch", notes=_EAGER),
    Implementation("grpo.token_logps", "torch.naive", f"{_M}.eager:token_logps", "torch", notes=_EAGER),
    Implementation("grpo.grpo_loss", "torch.naive", f"{_M}.eager:grpo_loss", "torch", provides=frozenset({"grad"}),
                   notes=_EAGER),
    Implementation("grpo.fused_linear_grpo_loss", "torch.naive", f"{_M}.eager:fused_linear_grpo_loss", "torch",
                   provides=frozenset({"grad"}), notes=_EAGER + ": materialises the logits"),
    Implementation("grpo.fused_linear_grpo_loss", "torch.chunked", f"{_M}.fused:fused_linear_grpo_loss", "torch",
                   provides=frozenset({"grad", "chunk_size"}), notes=_FUSED),
):
    REGISTRY.add_implementation(_impl)
