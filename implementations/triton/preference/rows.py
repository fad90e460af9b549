"""The fused losses' per-chunk row operations as Triton kernels: one pass over a block of logits for each.

The chunked "linear + log-softmax + loss" (implementations/torch/preference/fused.py) computes a block of logits
z = h W^T / T (rows x V) with a matrix product and then needs, per row,

1. ``lse = log sum_v exp(z_v)`` and ``z[target]``: ``_lse_target_kernel`` walks the row in tiles of BLOCK_V with the
   online max and sum (Milakov & Gimelshein 2018) and picks the target's logit on the way: one read of the row,
   where torch's logsumexp and gather read it twice;
2. the gradient ``dz = g (onehot(target) - exp(z - lse)) / T``: ``_logits_gradient_kernel`` overwrites z with it in
   one read and one write, where the torch ops (exp, multiply, scatter, divide) pass over the block four times.

This is Liger-Kernel's fused linear cross-entropy split (the matrix products stay with cuBLAS / the CPU BLAS, the
row work goes to a kernel). Arithmetic is in the block's dtype, float32 or float64 (the fused loss's
accumulator). On the CPU the kernels run under Triton's interpreter.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from eqspec.contracts import ArgumentError

# Columns per tile: a row of a 128k vocabulary is 128 tiles. Under the interpreter the property tests' small
# vocabularies would fit one tile, so tiles of 32 there make the largest (48) cross a tile boundary.
BLOCK_V = 32 if os.environ.get("TRITON_INTERPRET") == "1" else 1024


@triton.jit
def _lse_target_kernel(Z, TARGETS, LSE, Z_TARGET, n_cols, stride_z, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    z_row = Z + row * stride_z
    target = tl.load(TARGETS + row)
    cols = tl.arange(0, BLOCK)
    m = tl.full([BLOCK], float("-inf"), Z.dtype.element_ty)  # per-lane running max and sum, combined at the end
    acc = tl.zeros([BLOCK], Z.dtype.element_ty)
    picked = tl.zeros([BLOCK], Z.dtype.element_ty)
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        z = tl.load(z_row + c, mask=c < n_cols, other=float("-inf"))
        m_new = tl.maximum(m, z)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        acc = acc * tl.exp(m - m_safe) + tl.exp(z - m_safe)
        m = m_new
        picked += tl.where(c == target, z, 0.0)
    m_row = tl.max(m, 0)
    total = tl.sum(acc * tl.exp(m - m_row), 0)
    tl.store(LSE + row, m_row + tl.log(total))
    tl.store(Z_TARGET + row, tl.sum(picked, 0))


@triton.jit
def _logits_gradient_kernel(Z, LSE, TARGETS, G, n_cols, stride_z, inv_temperature, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    z_row = Z + row * stride_z
    lse = tl.load(LSE + row)
    g = tl.load(G + row)
    target = tl.load(TARGETS + row)
    cols = tl.arange(0, BLOCK)
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        mask = c < n_cols
        z = tl.load(z_row + c, mask=mask, other=0.0)
        dz = (tl.where(c == target, 1.0, 0.0) - tl.exp(z - lse)) * g * inv_temperature
        tl.store(z_row + c, dz, mask=mask)


def _check(z: torch.Tensor, targets: torch.Tensor) -> None:
    if z.dtype not in (torch.float32, torch.float64) or z.dim() != 2 or z.stride(1) != 1:
        raise ArgumentError("z", f"z must be a row-contiguous (rows, V) float32 or float64 block, got {z.dtype}, "
                            f"shape {tuple(z.shape)}, strides {z.stride()}")
    if targets.shape != (z.shape[0],):
        raise ArgumentError("targets", f"targets must have shape ({z.shape[0]},), got {tuple(targets.shape)}")


class TritonRowOps:
    """Drop-in for implementations.torch.preference.fused.TorchRowOps."""

    @staticmethod
    def lse_and_target(z: torch.Tensor, targets: torch.Tensor):
        z = z.contiguous()
        _check(z, targets)
        rows, n_cols = z.shape
        lse = torch.empty(rows, dtype=z.dtype, device=z.device)
        z_target = torch.empty(rows, dtype=z.dtype, device=z.device)
        if rows:
            _lse_target_kernel[(rows,)](z, targets.contiguous(), lse, z_target, n_cols, z.stride(0),
                                        BLOCK=min(BLOCK_V, triton.next_power_of_2(n_cols)))
        return lse, z_target

    @staticmethod
    def logits_gradient(z: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor, g: torch.Tensor,
                        temperature: float):
        z = z.contiguous()
        _check(z, targets)
        rows, n_cols = z.shape
        if rows:
            _logits_gradient_kernel[(rows,)](z, lse.to(z.dtype).contiguous(), targets.contiguous(),
                                             g.to(z.dtype).contiguous(), n_cols, z.stride(0), 1.0 / temperature,
                                             BLOCK=min(BLOCK_V, triton.next_power_of_2(n_cols)))
        return z
