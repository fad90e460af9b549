"""The MoE dispatch (permute) and combine (unpermute) as Triton kernels, and a grouped MoE layer built on them.

Dispatch: the host sorts the T x K slots by expert (a stable argsort, as specs.moe_routing.dispatch_positions
defines the buffers) and ``_permute_kernel`` copies row ``order[r] // K`` of x to row r of the expert buffers,
ROWS rows per program. Combine: ``_unpermute_kernel`` gives each program ROWS tokens and sums, for each token, the
K expert-output rows it owns at ``positions[t, j]``, weighted by ``weights[t, j]``, accumulating in float32
(float64 for float64 inputs); no atomics, so the result is deterministic.

Under Triton's CPU interpreter (TRITON_INTERPRET=1) the fp32 -> bfloat16 cast truncates instead of rounding, so the
combine writes a float32 buffer that torch casts on the host; the copy of the permute never converts.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from eqspec.contracts import ArgumentError
from specs.moe_routing import check_combine_args, check_indices, check_moe_args
from specs.validators import check_tensor

DTYPES = (torch.float32, torch.bfloat16, torch.float64)


@triton.jit
def _permute_kernel(X, Y, SRC, n_rows, D, stride_x, stride_y, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    in_rows = rows < n_rows
    src = tl.load(SRC + rows, mask=in_rows, other=0).to(tl.int64)
    rows = rows.to(tl.int64)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = in_rows[:, None] & (cols[None, :] < D)
        x = tl.load(X + src[:, None] * stride_x + cols[None, :], mask=mask)
        tl.store(Y + rows[:, None] * stride_y + cols[None, :], x, mask=mask)


@triton.jit
def _unpermute_kernel(YS, W, POS, OUT, n_tokens, K, D, stride_ys, stride_out,
                      ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    tokens = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    in_rows = tokens < n_tokens
    tokens = tokens.to(tl.int64)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = in_rows[:, None] & (cols[None, :] < D)
        acc = tl.zeros([ROWS, BLOCK_D], ACC)
        for j in range(0, K):
            p = tl.load(POS + tokens * K + j, mask=in_rows, other=0).to(tl.int64)
            w = tl.load(W + tokens * K + j, mask=in_rows, other=0.0).to(ACC)
            y = tl.load(YS + p[:, None] * stride_ys + cols[None, :], mask=mask, other=0.0).to(ACC)
            acc += w[:, None] * y
        tl.store(OUT + tokens[:, None] * stride_out + cols[None, :], acc.to(OUT.dtype.element_ty), mask=mask)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _check_device(x: torch.Tensor) -> None:
    if x.dtype not in DTYPES:
        raise ArgumentError("x", f"the Triton MoE kernels take float32, bfloat16 or float64 inputs, got {x.dtype}")
    if x.device.type == "cpu" and not _interpreting():
        raise ArgumentError("x", "Triton kernels run on CPU tensors only under TRITON_INTERPRET=1 "
                            "(set before triton is imported)")


def _blocks(D: int, rows: int) -> tuple[int, int]:
    block_d = min(triton.next_power_of_2(max(D, 1)), 256)
    return max(1, min(16, triton.next_power_of_2(max(rows, 1)))), block_d


def permute_rows(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """y[r] = x[src[r]] (a copy: bit-identical rows)."""
    x = x.contiguous()
    y = torch.empty(src.numel(), x.shape[1], dtype=x.dtype, device=x.device)
    rows, block_d = _blocks(x.shape[1], src.numel())
    _permute_kernel[(triton.cdiv(src.numel(), rows),)](x, y, src.contiguous(), src.numel(), x.shape[1],
                                                       x.stride(0), y.stride(0), ROWS=rows, BLOCK_D=block_d)
    return y


def unpermute(y_sorted: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor, *, out_dtype=None):
    """out[t] = sum_j weights[t, j] y_sorted[positions[t, j]], accumulated in float32 (float64 for float64)."""
    T, K = positions.shape
    y_sorted = y_sorted.contiguous()
    wide = torch.float64 if y_sorted.dtype == torch.float64 else torch.float32
    out_dtype = out_dtype or (wide if _interpreting() else y_sorted.dtype)
    out = torch.empty(T, y_sorted.shape[1], dtype=out_dtype, device=y_sorted.device)
    rows, block_d = _blocks(y_sorted.shape[1], T)
    _unpermute_kernel[(triton.cdiv(T, rows),)](
        y_sorted, weights.contiguous(), positions.contiguous(), out, T, K, y_sorted.shape[1],
        y_sorted.stride(0), out.stride(0), ROWS=rows, BLOCK_D=block_d,
        ACC=tl.float64 if y_sorted.dtype == torch.float64 else tl.float32)
    return out


def _sort_slots(indices: torch.Tensor, n_experts: int):
    flat = indices.reshape(-1)
    order = torch.argsort(flat, stable=True)
    positions = torch.empty_like(order)
    positions[order] = torch.arange(order.numel(), device=order.device)
    return order, torch.bincount(flat, minlength=n_experts), positions.view(indices.shape)


def dispatch(x, indices, n_experts):
    check_tensor("x", x, rank=2)
    check_indices(indices, n_experts, x.shape[0])
    _check_device(x)
    order, counts, positions = _sort_slots(indices, n_experts)
    return permute_rows(x, order // indices.shape[1]), counts, positions


def combine(y_sorted, positions, weights):
    check_combine_args(y_sorted, positions, weights)
    _check_device(y_sorted)
    return unpermute(y_sorted, positions, weights).to(y_sorted.dtype)


def moe_grouped(x, w_router, bias, w_gate, w_up, w_down, config, shared=None):
    """The grouped MoE layer with the Triton permute and unpermute (routing and expert matmuls in torch)."""
    from implementations.torch.kimi_vl.moe import run_experts, swiglu
    from implementations.torch.kimi_vl.routing import route, router_logits

    config = check_moe_args(x, w_router, bias, w_gate, w_up, w_down, config, shared)
    _check_device(x)
    indices, weights = route(router_logits(x, w_router), bias, config)
    order, counts, positions = _sort_slots(indices, w_gate.shape[0])
    x_sorted = permute_rows(x, order // config.top_k)
    y_sorted = run_experts(x_sorted, counts, w_gate, w_up, w_down)
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = unpermute(y_sorted, positions, weights.to(wide), out_dtype=wide)
    if shared is not None:
        y = y + swiglu(x, *shared)
    return y.to(x.dtype)
