"""torch implementations: the naive same-precision baselines and the tiled FlashAttention algorithm."""

from eqspec.registry import REGISTRY, Deviation, Implementation

_M = "implementations.torch"
_ALL = frozenset({"lse", "gqa", "causal"})

for _impl in (
    Implementation("flash_attention.softmax", "torch.naive", f"{_M}.softmax:naive_softmax", "torch",
                   provides=frozenset({"lse"}), notes="max-subtracted exp / sum in the input dtype (the baseline)"),
    Implementation("flash_attention.attention", "torch.naive", f"{_M}.attention:naive_attention", "torch",
                   provides=_ALL | {"grad"}, notes="materialises S and P in the input dtype (the baseline)",
                   deviations={"flash_attention.nan_propagation": Deviation(
                       "torch's bfloat16 CPU matmul spreads a NaN in one row of P to a neighbouring output row "
                       "(measured: P of 200 x 200 with one NaN in row 3 gives NaN in rows 2 and 3)",
                       only=(("dtype", ("bfloat16",)), ("device", ("cpu",))), strict=False)}),
    Implementation("flash_attention.attention", "torch.tiled", f"{_M}.attention:tiled_attention", "torch",
                   provides=_ALL | {"grad", "block_sizes"},
                   notes="FA2 forward and backward with recomputation in torch ops, fp32 accumulators, "
                         "any block sizes (block_q, block_k)"),
    Implementation("flash_attention.attention_backward", "torch.naive",
                   f"{_M}.attention:naive_attention_backward", "torch", provides=_ALL,
                   notes="autograd through the naive forward (the baseline)"),
    Implementation("flash_attention.attention_backward", "torch.tiled",
                   f"{_M}.attention:tiled_attention_backward", "torch", provides=_ALL | {"block_sizes"},
                   notes="D = rowsum(dO o O), P recomputed from lse tile by tile"),
    Implementation("flash_attention.varlen_attention", "torch.naive", f"{_M}.varlen:naive_varlen_attention",
                   "torch", provides=_ALL, notes="the naive baseline on each sequence"),
    Implementation("flash_attention.varlen_attention", "torch.tiled", f"{_M}.varlen:tiled_varlen_attention",
                   "torch", provides=_ALL | {"block_sizes"},
                   notes="packed tiles with a block-diagonal mask from sequence ids"),
):
    REGISTRY.add_implementation(_impl)
