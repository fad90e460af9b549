"""Row softmax with its log-sum-exp in Triton: several rows per program.

The input is viewed as a matrix of rows (every leading dimension flattened) and each program owns ``ROWS``
consecutive rows. Two paths, chosen on the host:

* one pass, when a row fits in one tile of ``BLOCK_N`` columns: load the rows (padding reads -inf, which
  contributes exp(-inf) = 0), ``m = rowmax(x)``, ``l = rowsum(exp(x - m))``, ``y = exp(x - m) / l``;
* two passes, for longer rows: the first walks the row in tiles keeping the running max and sum with the
  online-softmax recurrence (Milakov & Gimelshein 2018), ``m' = max(m, rowmax(x_j))``,
  ``l' = exp(m - m') l + rowsum(exp(x_j - m'))``; the second reads the row again and writes
  ``y = exp(x - m) / l``.

In both, ``lse = m + log(l)`` (natural log, stored in fp32). A row of -inf has m = -inf: 0 takes its place inside
the exponentials so that (-inf) - (-inf) = NaN never occurs, l stays 0, and the row gets y = 0 and
lse = -inf. y is computed as ``exp(x - m) / l`` rather than ``exp(x - lse)``: x - m is exact for nearby
values, while lse carries a rounding error proportional to |lse| that exp would amplify for large logits.

Precision: 16-bit inputs are computed in fp32; fp32 inputs in fp64 (``ACC``). Computed in fp32, an fp32
result is about as accurate as the naive fp32 code but often more than twice as far off where that code
happens to round well (torch's fp32 exp is more accurate than numpy's, which the interpreter uses, or the
GPU's ex2.approx); in fp64 only the final rounding to fp32 remains. The kernel is bound by memory traffic,
so the wider arithmetic costs little.

Under Triton's CPU interpreter (TRITON_INTERPRET=1) the fp32 -> bfloat16 cast truncates instead of rounding,
so the kernel writes an fp32 buffer that torch casts on the host.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from eqspec.contracts import ArgumentError
from specs.validators import check_tensor

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _softmax_kernel(
    X, Y, LSE, n_rows, n_cols, stride_xr, stride_xc, stride_yr, stride_yc,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ONE_PASS: tl.constexpr, ACC: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    in_rows = rows < n_rows
    rows = rows.to(tl.int64)  # 64-bit offsets for large inputs
    cols = tl.arange(0, BLOCK_N)
    x_rows = X + rows[:, None] * stride_xr
    y_rows = Y + rows[:, None] * stride_yr

    if ONE_PASS:
        mask = in_rows[:, None] & (cols[None, :] < n_cols)
        x = tl.load(x_rows + cols[None, :] * stride_xc, mask=mask, other=float("-inf")).to(ACC)
        m = tl.max(x, 1)
        m_safe = tl.where(m == float("-inf"), 0.0, m)  # a row of -inf: exp(-inf - 0) = 0, not NaN
        e = tl.exp(x - m_safe[:, None])
        ell = tl.sum(e, 1)
        # ell = 0 only for a row of -inf (y = 0); a NaN ell (NaN input) is not 0 and propagates.
        y = e / tl.where(ell == 0.0, 1.0, ell)[:, None]
        tl.store(y_rows + cols[None, :] * stride_yc, y.to(Y.dtype.element_ty), mask=mask)
    else:
        m = tl.full([ROWS], float("-inf"), ACC)
        ell = tl.zeros([ROWS], ACC)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            x = tl.load(x_rows + c[None, :] * stride_xc, mask=in_rows[:, None] & (c[None, :] < n_cols),
                        other=float("-inf")).to(ACC)
            m_new = tl.maximum(m, tl.max(x, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            ell = ell * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), 1)
            m = m_new
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        l_div = tl.where(ell == 0.0, 1.0, ell)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            mask = in_rows[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_rows + c[None, :] * stride_xc, mask=mask, other=float("-inf")).to(ACC)
            y = tl.exp(x - m_safe[:, None]) / l_div[:, None]
            tl.store(y_rows + c[None, :] * stride_yc, y.to(Y.dtype.element_ty), mask=mask)

    lse = tl.where(ell == 0.0, float("-inf"), m_safe + tl.log(tl.where(ell == 0.0, 1.0, ell)))
    tl.store(LSE + rows, lse.to(tl.float32), mask=in_rows)


def _config(n_rows: int, n_cols: int, block_n, interpret: bool) -> tuple[int, int, bool, int]:
    """(ROWS, BLOCK_N, ONE_PASS, num_warps). Fixed rules, no autotuning.

    A row of up to max_one_pass columns is handled in one tile; longer rows loop. Short rows are packed
    several to a program (the interpreter pays milliseconds per program, the GPU a launch-wide tail).
    """
    # On an H200 (bf16, 8192 x 32768) one tile per row ran 0.338 ms (0.75 of the copy bandwidth), the two passes over
    # tiles of 4096 0.388 ms (0.66): rows up to 32768 columns take one tile
    max_one_pass, tile = (16384, 16384) if interpret else (32768, 4096)
    if block_n is None:
        block_n = triton.next_power_of_2(n_cols) if n_cols <= max_one_pass else tile
    elif isinstance(block_n, bool) or not isinstance(block_n, int) or block_n < 1 or block_n & (block_n - 1):
        raise ArgumentError("block_n", f"block_n must be a power of two, got {block_n!r}")
    one_pass = n_cols <= block_n
    rows = max(1, min(tile // block_n, triton.next_power_of_2(n_rows), 64))
    num_warps = 4 if rows * block_n <= 2048 else 8 if rows * block_n <= 8192 else 16
    return rows, block_n, one_pass, num_warps


def softmax(x: torch.Tensor, *, block_n: int | None = None):
    """Softmax over the last dimension: y in x's dtype, lse (x.shape[:-1]) in float32.

    block_n (a power of two) forces the column tile; rows longer than it take the two-pass path.
    """
    check_tensor("x", x)
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if x.dtype not in DTYPES:
        raise ArgumentError("x", f"the Triton kernels take float32, float16 or bfloat16 inputs, got {x.dtype}")
    if x.device.type == "cpu" and not interpret:
        raise ArgumentError("x", "Triton kernels run on CPU tensors only under TRITON_INTERPRET=1 "
                            "(set before triton is imported)")
    n_cols = x.shape[-1] if x.dim() else 1  # a 0-d tensor is one row of one element, as torch.softmax
    x2 = x.reshape(-1, n_cols)  # a view when it can be; the strides go to the kernel either way
    n_rows = x2.shape[0]
    y = torch.empty(n_rows, n_cols, device=x.device, dtype=torch.float32 if interpret else x.dtype)
    lse = torch.empty(n_rows, device=x.device, dtype=torch.float32)
    rows, block_n, one_pass, num_warps = _config(n_rows, n_cols, block_n, interpret)
    _softmax_kernel[(triton.cdiv(n_rows, rows),)](
        x2, y, lse, n_rows, n_cols, x2.stride(0), x2.stride(1), y.stride(0), y.stride(1),
        ROWS=rows, BLOCK_N=block_n, ONE_PASS=one_pass, num_warps=num_warps,
        ACC=tl.float64 if x.dtype == torch.float32 else tl.float32,
    )
    return y.to(x.dtype).reshape(x.shape), lse.reshape(x.shape[:-1])
