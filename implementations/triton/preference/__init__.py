"""Triton versions of the fused DPO and GRPO losses: the chunk loop and the matrix products of the torch fused
loss, the per-chunk log-sum-exp, target gather and logits gradient in one-pass Triton kernels."""

from eqspec.registry import REGISTRY, Implementation

_M = "implementations.triton.preference"
_KERNEL = dict(origin="triton", modules=("triton",), devices=("cpu", "cuda"), interpreted_on_cpu=True,
               dtypes=("float64", "float32", "bfloat16"), provides=frozenset({"grad"}))
_NOTES = ("the torch fused chunked loss with its row work (online log-sum-exp and target gather; the logits "
          "gradient written in place) in Triton kernels, one pass over each block of logits; chunk_size is "
          "accepted, but the sweep over it is left to torch.chunked (interpreted, it costs 18 s of the test run)")

for _impl in (
    Implementation("dpo.fused_linear_dpo_loss", "triton.chunked", f"{_M}.fused:fused_linear_dpo_loss",
                   notes=_NOTES, **_KERNEL),
    Implementation("grpo.fused_linear_grpo_loss", "triton.chunked", f"{_M}.fused:fused_linear_grpo_loss",
                   notes=_NOTES, **_KERNEL),
):
    REGISTRY.add_implementation(_impl)
