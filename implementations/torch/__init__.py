"""torch implementations: the naive same-precision baselines and the tiled FlashAttention algorithm."""

import torch

from eqspec.registry import REGISTRY, Deviation, Implementation

_M = "implementations.torch"
_ALL = frozenset({"lse", "gqa", "causal"})


def _float16_backward_overflows(arguments: dict) -> bool:
    """Whether a float16 intermediate of autograd through the naive forward can pass float16's largest number at this
    point: dP = dO V^T, or dS K before the scale multiplies it (the gradient of q * tau), whatever the gradients."""
    from specs.flash_attention import magnitude_inputs

    q, do = arguments["q"], arguments["do"]
    if q.dtype != torch.float16:
        return False
    scale = arguments.get("scale")  # an omitted argument is a marker object (eqspec.domain), not None
    _, _, K, V, _, P, _ = magnitude_inputs(q, arguments["k"], arguments["v"], arguments.get("causal") is True,
                                           scale if isinstance(scale, (int, float)) else None)
    dO = do.detach().double()
    dP = dO.abs() @ V.abs().transpose(-1, -2)  # |dO V^T| at most; |D_i| = |sum_j P_ij dP_ij| at most its row's max
    dS_K = (P * (dP + dP.amax(-1, keepdim=True))) @ K.abs()
    return max(float(dP.max()), float(dS_K.max())) > torch.finfo(torch.float16).max


_FLOAT16_OVERFLOW = Deviation(
    "autograd through the naive forward keeps its intermediates in float16: dP = dO V^T, and dS K before the scale "
    "multiplies it, pass 65504 and become inf, then NaN, where the spec's gradients are finite (measured: |dO| and |V| "
    "entries up to e^4, D = 59, Sk = 2048, scale 0: dQ NaN at 5192 of 5664 entries where the spec's is 0); "
    "FlashAttention keeps dP and dS in float32",
    only=(("dtype", ("float16",)),), at=_float16_backward_overflows)

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
                   notes="autograd through the naive forward (the baseline)",
                   deviations={"flash_attention.operations_match_spec": _FLOAT16_OVERFLOW}),
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
