"""FlashAttention in Triton as one differentiable operation: the forward kernel (attention.py) saves o and lse, the
backward kernels (attention_backward.py) recompute P from them (FlashAttention-2, Algorithm 2)."""

from __future__ import annotations

import torch

from .attention import attention, varlen_attention
from .attention_backward import attention_backward, varlen_attention_backward


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, block_q, block_k):
        o, lse = attention(q, k, v, causal=causal, scale=scale, block_q=block_q, block_k=block_k)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.args = dict(causal=causal, scale=scale)
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, _dlse):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = attention_backward(q, k, v, o, lse, do, **ctx.args)
        return dq, dk, dv, None, None, None, None


class _FlashVarlenAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale, block_q, block_k):
        o, lse = varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale, block_q=block_q,
                                  block_k=block_k)
        ctx.save_for_backward(q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k)
        ctx.args = dict(causal=causal, scale=scale)
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, _dlse):
        q, k, v, o, lse, cu_q, cu_k = ctx.saved_tensors
        dq, dk, dv = varlen_attention_backward(q, k, v, o, lse, do, cu_q, cu_k, **ctx.args)
        return dq, dk, dv, None, None, None, None, None, None


def flash_attention(q, k, v, *, causal: bool = False, scale: float | None = None, block_q: int | None = None,
                    block_k: int | None = None):
    """The Triton forward, differentiable through the Triton backward: (o, lse) as the operation returns them."""
    return _FlashAttention.apply(q, k, v, causal, scale, block_q, block_k)


def flash_varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal: bool = False, scale: float | None = None,
                           block_q: int | None = None, block_k: int | None = None):
    """Packed attention through the Triton forward and backward kernels."""
    return _FlashVarlenAttention.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale, block_q, block_k)
