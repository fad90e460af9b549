"""FlashAttention backward in Triton: the probabilities recomputed from the saved lse, tile by tile (FA2 §3.2).

Three launches, as FlashAttention-2:

1. ``_bwd_preprocess``: ``D_i = rowsum(dO_i * O_i)`` per query row (FA2 eq. (4): the row sum of ``P * dP`` needs
   no P, since ``sum_j P_ij dP_ij = dO_i . O_i``).
2. ``_bwd_dkdv``: one program per (block of keys, KV head, batch). It holds ``dK`` and ``dV`` of its keys in
   registers and walks over the query blocks that can see them, for every query head of its GQA group, so the
   group's gradients are summed without atomics. For each tile it recomputes ``s = scale q k^T``,
   ``P = exp(s - lse)``, then ``dV += P^T dO``, ``dP = dO v^T``, ``dS = P * (dP - D)``, ``dK += scale dS^T q``.
3. ``_bwd_dq``: one program per (block of queries, query head, batch), walking over the key tiles it can see:
   ``dQ += scale dS k``. Recomputing P twice costs one more ``q k^T`` per tile but needs no atomic adds into dQ,
   which keeps the result deterministic (FlashAttention-2's default uses atomics; its deterministic mode pays
   the same way).

Masks are those of the forward: for causal attention, keys above the bottom-right diagonal (query i sees key j
iff j <= i + Sk - Sq) get P = 0, on the diagonal tiles only; tiles wholly above the diagonal are skipped. Padding
rows past a sequence's end need no mask: they are read as zeros (and lse as +inf), which makes their contributions
to the stored gradients zero. Keys past the end do, in dQ: read as zeros their score is 0, and P = exp(0 - lse)
overflows where lse < -88 (float32; -709 in float64), a row whose scores are all very negative; inf x k = 0 is
then NaN. A row that saw no key has lse = -inf; it contributes nothing (P = 0
for it), as the spec says: its o is the constant 0. Dense and packed (varlen) inputs share the kernels, as in the
forward: a table of (sequence, first row) entries, one per tile of each sequence, and per-sequence offsets from
cu_seqlens.

Precision follows the forward (attention.py): 16-bit inputs use 16-bit operands with fp32 accumulation, P and
dS rounded to the inputs' dtype before their products (as FlashAttention); fp32 inputs compute in fp64. Under the
CPU interpreter the 16-bit products run in fp32 and bfloat16 rounding is done by hand (attention.py says why).
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from eqspec.contracts import ArgumentError
from specs.flash_attention import check_attention_backward_args, check_scale, check_varlen_args

from .attention import (
    _block_table,
    _check_runnable,
    _interpreting,
    _mma,
    _pow2,
    _round_to_bf16,
    tuned,
)


@triton.jit
def _to_operand(x, ref, DOT: tl.constexpr, ROUND_BF16: tl.constexpr):
    """x rounded as the inputs' dtype before it enters a product (P and dS), kept as that product needs it."""
    if ROUND_BF16:
        x = _round_to_bf16(x)
    elif DOT != "fp64":
        x = x.to(ref.dtype)
    return x


@triton.jit
def _bwd_preprocess(O, DO, DELTA, stride_om, stride_od, stride_dom, stride_dod, M, DV,
                    BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr, ACC: tl.constexpr):
    """D = rowsum(dO * O) over rows flattened to (M, Dv) views (any batch/head layout with a row stride)."""
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.arange(0, BLOCK_DV)
    mask = (rows[:, None] < M) & (cols[None, :] < DV)
    o = tl.load(O + rows[:, None] * stride_om + cols[None, :] * stride_od, mask=mask, other=0.0).to(ACC)
    do = tl.load(DO + rows[:, None] * stride_dom + cols[None, :] * stride_dod, mask=mask, other=0.0).to(ACC)
    tl.store(DELTA + rows, tl.sum(o * do, 1).to(DELTA.dtype.element_ty), mask=rows < M)


@triton.jit
def _sequence(TABLE, CU_Q, CU_K, SEQ_Q, SEQ_K, BLOCK: tl.constexpr, VARLEN: tl.constexpr):
    """(batch or sequence index, first row of this program's tile, q offset, q length, k offset, k length)."""
    if VARLEN:
        t = tl.program_id(0)
        b = tl.load(TABLE + 2 * t)
        start = tl.load(TABLE + 2 * t + 1)
        q_start = tl.load(CU_Q + b)
        seq_q = tl.load(CU_Q + b + 1) - q_start
        k_start = tl.load(CU_K + b)
        seq_k = tl.load(CU_K + b + 1) - k_start
    else:
        b = tl.program_id(2)
        start = tl.program_id(0) * BLOCK
        q_start = 0
        seq_q = SEQ_Q
        k_start = 0
        seq_k = SEQ_K
    return b.to(tl.int64), start, q_start, seq_q, k_start, seq_k


@triton.jit
def _dkdv_tile(q_base, do_base, l_base, d_base, k, v, dk, dv, start_m, q_start, seq_q, seq_k, offs_m, offs_n,
               offs_d, offs_dv, stride_qs, stride_qd, stride_dos, stride_dod, stride_ls, D, DV, scale,
               CAUSAL_MASK: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr, ROUND_BF16: tl.constexpr):
    """One query tile's contribution to a key block's dV += P^T dO and dK += dS^T q (scaled by the caller)."""
    rows = start_m + offs_m
    in_q = rows < seq_q
    rows_q = (q_start + rows).to(tl.int64)
    q = tl.load(q_base + rows_q[:, None] * stride_qs + offs_d[None, :] * stride_qd,
                mask=in_q[:, None] & (offs_d[None, :] < D), other=0.0)
    do = tl.load(do_base + rows_q[:, None] * stride_dos + offs_dv[None, :] * stride_dod,
                 mask=in_q[:, None] & (offs_dv[None, :] < DV), other=0.0)
    lse = tl.load(l_base + rows_q * stride_ls, mask=in_q, other=float("inf")).to(ACC)
    delta = tl.load(d_base + rows_q * stride_ls, mask=in_q, other=0.0).to(ACC)
    # A row that saw no key (lse = -inf) has P = 0: exp(s - inf) = 0. NaN in lse stays NaN.
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    s = _mma(q, tl.trans(k), tl.zeros([q.shape[0], k.shape[0]], ACC), DOT) * scale
    # keys past the end: their dK, dV rows are not stored, but exp(0 - lse) would overflow there all the same
    p = tl.where(offs_n[None, :] < seq_k, tl.exp(s - lse[:, None]), 0.0)
    if CAUSAL_MASK:
        p = tl.where(offs_n[None, :] <= rows[:, None] + (seq_k - seq_q), p, 0.0)
    dv = _mma(tl.trans(_to_operand(p, do, DOT, ROUND_BF16)), do, dv, DOT)
    dp = _mma(do, tl.trans(v), tl.zeros([q.shape[0], k.shape[0]], ACC), DOT)
    ds = p * (dp - delta[:, None])
    dk = _mma(tl.trans(_to_operand(ds, q, DOT, ROUND_BF16)), q, dk, DOT)
    return dk, dv


@triton.jit
def _dq_tile(q, do, lse, delta, dq, k_base, v_base, start_n, k_start, seq_q, seq_k, rows, offs_n, offs_d, offs_dv,
             stride_ks, stride_kd, stride_vs, stride_vd, D, DV, scale, CAUSAL_MASK: tl.constexpr,
             ACC: tl.constexpr, DOT: tl.constexpr, ROUND_BF16: tl.constexpr):
    """One key tile's contribution to a query block's dQ += dS k (scaled by the caller)."""
    cols = start_n + offs_n
    in_k = cols < seq_k
    rows_k = (k_start + cols).to(tl.int64)
    k = tl.load(k_base + rows_k[:, None] * stride_ks + offs_d[None, :] * stride_kd,
                mask=in_k[:, None] & (offs_d[None, :] < D), other=0.0)
    v = tl.load(v_base + rows_k[:, None] * stride_vs + offs_dv[None, :] * stride_vd,
                mask=in_k[:, None] & (offs_dv[None, :] < DV), other=0.0)
    s = _mma(q, tl.trans(k), tl.zeros([q.shape[0], k.shape[0]], ACC), DOT) * scale
    p = tl.where(in_k[None, :], tl.exp(s - lse[:, None]), 0.0)  # keys past the end (see the module docstring)
    if CAUSAL_MASK:
        p = tl.where(cols[None, :] <= rows[:, None] + (seq_k - seq_q), p, 0.0)
    dp = _mma(do, tl.trans(v), tl.zeros([q.shape[0], k.shape[0]], ACC), DOT)
    ds = p * (dp - delta[:, None])
    return _mma(_to_operand(ds, k, DOT, ROUND_BF16), k, dq, DOT)


@triton.jit
def _bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV_, CU_Q, CU_K, TABLE,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_dob, stride_doh, stride_dos, stride_dod,
    stride_lb, stride_lh, stride_ls,
    stride_dkb, stride_dkh, stride_dks, stride_dkd,
    stride_dvb, stride_dvh, stride_dvs, stride_dvd,
    GROUP, SEQ_Q, SEQ_K, D, DV, scale,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, ROUND_BF16: tl.constexpr,
):
    b, start_n, q_start, seq_q, k_start, seq_k = _sequence(TABLE, CU_Q, CU_K, SEQ_Q, SEQ_K, BLOCK_K, VARLEN)
    h_kv = tl.program_id(1).to(tl.int64)

    offs_n = start_n + tl.arange(0, BLOCK_K)  # this program's keys, local to the sequence
    offs_m = tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    in_k = offs_n < seq_k
    rows_k = (k_start + offs_n).to(tl.int64)
    k = tl.load(K + b * stride_kb + h_kv * stride_kh + rows_k[:, None] * stride_ks + offs_d[None, :] * stride_kd,
                mask=in_k[:, None] & (offs_d[None, :] < D), other=0.0)  # (BLOCK_K, BLOCK_D)
    v = tl.load(V + b * stride_vb + h_kv * stride_vh + rows_k[:, None] * stride_vs + offs_dv[None, :] * stride_vd,
                mask=in_k[:, None] & (offs_dv[None, :] < DV), other=0.0)  # (BLOCK_K, BLOCK_DV)
    dk = tl.zeros([BLOCK_K, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_K, BLOCK_DV], ACC)

    # Bottom-right causal: key j is seen by rows i >= j - (seq_k - seq_q); earlier query tiles are skipped.
    if CAUSAL:
        lo = tl.maximum(start_n - (seq_k - seq_q), 0)
        lo = (lo // BLOCK_Q) * BLOCK_Q
    else:
        lo = 0
    # Query tiles from full_lo on see all of this program's keys (their first row sees the last key): no mask.
    # Without causality no tile needs one: a padding query row has q = 0, dO = 0 and lse = +inf (read so), hence
    # P = 0; a padding key's row of dK and dV is never stored.
    if CAUSAL:
        full_lo = tl.maximum(start_n + BLOCK_K - 1 - (seq_k - seq_q), lo)
        full_lo = tl.minimum(((full_lo + BLOCK_Q - 1) // BLOCK_Q) * BLOCK_Q, seq_q)
    else:
        full_lo = lo
    for g in range(0, GROUP):
        h = h_kv * GROUP + g  # GQA: the query heads of this KV head's group
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        # D is laid out as lse (the host allocates it so): the same strides address it.
        l_base = LSE + b * stride_lb + h * stride_lh
        d_base = DELTA + b * stride_lb + h * stride_lh
        for start_m in range(lo, full_lo, BLOCK_Q):
            dk, dv = _dkdv_tile(q_base, do_base, l_base, d_base, k, v, dk, dv, start_m, q_start, seq_q, seq_k,
                                offs_m, offs_n, offs_d, offs_dv, stride_qs, stride_qd, stride_dos, stride_dod,
                                stride_ls, D, DV, scale, True, ACC, DOT, ROUND_BF16)
        for start_m in range(full_lo, seq_q, BLOCK_Q):
            dk, dv = _dkdv_tile(q_base, do_base, l_base, d_base, k, v, dk, dv, start_m, q_start, seq_q, seq_k,
                                offs_m, offs_n, offs_d, offs_dv, stride_qs, stride_qd, stride_dos, stride_dod,
                                stride_ls, D, DV, scale, False, ACC, DOT, ROUND_BF16)
    dk = dk * scale
    tl.store(DK + b * stride_dkb + h_kv * stride_dkh + rows_k[:, None] * stride_dks + offs_d[None, :] * stride_dkd,
             dk.to(DK.dtype.element_ty), mask=in_k[:, None] & (offs_d[None, :] < D))
    tl.store(DV_ + b * stride_dvb + h_kv * stride_dvh + rows_k[:, None] * stride_dvs + offs_dv[None, :] * stride_dvd,
             dv.to(DV_.dtype.element_ty), mask=in_k[:, None] & (offs_dv[None, :] < DV))


@triton.jit
def _bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ, CU_Q, CU_K, TABLE,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_dob, stride_doh, stride_dos, stride_dod,
    stride_lb, stride_lh, stride_ls,
    stride_dqb, stride_dqh, stride_dqs, stride_dqd,
    GROUP, SEQ_Q, SEQ_K, D, DV, scale,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, ROUND_BF16: tl.constexpr,
):
    b, start_m, q_start, seq_q, k_start, seq_k = _sequence(TABLE, CU_Q, CU_K, SEQ_Q, SEQ_K, BLOCK_Q, VARLEN)
    h = tl.program_id(1).to(tl.int64)
    h_kv = h // GROUP

    rows = start_m + tl.arange(0, BLOCK_Q)
    offs_n = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    in_q = rows < seq_q
    rows_q = (q_start + rows).to(tl.int64)
    q = tl.load(Q + b * stride_qb + h * stride_qh + rows_q[:, None] * stride_qs + offs_d[None, :] * stride_qd,
                mask=in_q[:, None] & (offs_d[None, :] < D), other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + rows_q[:, None] * stride_dos + offs_dv[None, :] * stride_dod,
                 mask=in_q[:, None] & (offs_dv[None, :] < DV), other=0.0)
    lse = tl.load(LSE + b * stride_lb + h * stride_lh + rows_q * stride_ls, mask=in_q, other=float("inf")).to(ACC)
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    delta = tl.load(DELTA + b * stride_lb + h * stride_lh + rows_q * stride_ls, mask=in_q, other=0.0).to(ACC)
    dq = tl.zeros([BLOCK_Q, BLOCK_D], ACC)

    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh
    if CAUSAL:
        hi = tl.minimum(seq_k, tl.maximum(start_m + BLOCK_Q + seq_k - seq_q, 0))
    else:
        hi = seq_k
    # Key tiles below full are seen whole by every row of the block; only the tiles on the causal diagonal need
    # the mask. A padding key (k = 0, v = 0) adds dS k = 0 to dQ, so the sequence's end needs no mask.
    if CAUSAL:
        full = tl.minimum(tl.maximum(((start_m + seq_k - seq_q + 1) // BLOCK_K) * BLOCK_K, 0), hi)
    else:
        full = hi
    for start_n in range(0, full, BLOCK_K):
        dq = _dq_tile(q, do, lse, delta, dq, k_base, v_base, start_n, k_start, seq_q, seq_k, rows, offs_n, offs_d,
                      offs_dv, stride_ks, stride_kd, stride_vs, stride_vd, D, DV, scale, False, ACC, DOT, ROUND_BF16)
    for start_n in range(full, hi, BLOCK_K):
        dq = _dq_tile(q, do, lse, delta, dq, k_base, v_base, start_n, k_start, seq_q, seq_k, rows, offs_n, offs_d,
                      offs_dv, stride_ks, stride_kd, stride_vs, stride_vd, D, DV, scale, True, ACC, DOT, ROUND_BF16)
    dq = dq * scale
    tl.store(DQ + b * stride_dqb + h * stride_dqh + rows_q[:, None] * stride_dqs + offs_d[None, :] * stride_dqd,
             dq.to(DQ.dtype.element_ty), mask=in_q[:, None] & (offs_d[None, :] < D))


# --- host side -----------------------------------------------------------------------------------------

def _bwd_config(block_d: int, dtype: torch.dtype, interpret: bool) -> tuple[int, int, int, int]:
    """(block_q, block_k, num_warps, num_stages): fixed configs, as the forward's. The backward holds more tiles
    per program than the forward (k, v, dk, dv and a q, dO pair), so its tiles are smaller."""
    if interpret:
        return 64, 64, 4, 1
    if dtype == torch.float32:
        return (32, 32, 4, 1) if block_d <= 64 else (16, 16, 4, 1)
    if block_d <= 64:
        return 64, 64, 4, 2
    if block_d <= 128:
        return 64, 64, 8, 2
    return 32, 32, 4, 1


def _blocks(block_q, block_k, seq_q: int, seq_k: int, block_d: int, dtype, interpret: bool):
    dq, dk, num_warps, num_stages = _bwd_config(block_d, dtype, interpret)
    block_q = min(dq, _pow2(seq_q)) if block_q is None else block_q
    block_k = min(dk, _pow2(seq_k)) if block_k is None else block_k
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if isinstance(b, bool) or not isinstance(b, int) or b < 16 or b & (b - 1):
            raise ArgumentError(name, f"{name} must be a power of two >= 16, got {b!r}")
    return block_q, block_k, num_warps, num_stages


def _delta(o: torch.Tensor, do: torch.Tensor, Dv: int, interpret: bool) -> torch.Tensor:
    """D = rowsum(dO * O) for rows laid out (..., Dv) contiguous; one float32 per row."""
    o2, do2 = o.reshape(-1, Dv), do.reshape(-1, Dv)
    M = o2.shape[0]
    delta = torch.empty(M, device=o.device, dtype=torch.float32)
    block_m = 64
    _bwd_preprocess[(triton.cdiv(M, block_m),)](
        o2, do2, delta, o2.stride(0), o2.stride(1), do2.stride(0), do2.stride(1), M, Dv,
        BLOCK_M=block_m, BLOCK_DV=_pow2(Dv), ACC=tl.float64 if o.dtype == torch.float32 else tl.float32)
    return delta


# Autotuning on the GPU for 16-bit dense inputs (see attention.py): dK/dV programs hold a large block of keys and
# stream small query tiles, dQ programs the reverse (the Triton tutorial's split), a few shapes of each.
_DKDV_CONFIGS = [triton.Config({"BLOCK_Q": bq, "BLOCK_K": bk}, num_warps=w, num_stages=st)
                 for bq, bk, w, st in ((32, 128, 4, 3), (64, 128, 8, 2), (32, 64, 4, 3), (64, 64, 4, 2))]
_DQ_CONFIGS = [triton.Config({"BLOCK_Q": bq, "BLOCK_K": bk}, num_warps=w, num_stages=st)
               for bq, bk, w, st in ((128, 32, 4, 3), (128, 64, 8, 2), (64, 32, 4, 3), (64, 64, 4, 2))]
_TUNE_KEY = ["D", "DV", "CAUSAL", "BLOCK_D"]
_bwd_dkdv_tuned = triton.autotune(configs=_DKDV_CONFIGS, key=_TUNE_KEY)(_bwd_dkdv)
_bwd_dq_tuned = triton.autotune(configs=_DQ_CONFIGS, key=_TUNE_KEY)(_bwd_dq)


def _launch(q, k, v, do, lse, delta, dq, dk, dv, cu_q, cu_k, tables, grids, strides, group, seq_q, seq_k,
            D, Dv, tau, causal, varlen, block_q, block_k, num_warps, num_stages, interpret, autotune=False):
    sq, sk, sv, sdo, sl, sdq, sdk, sdv = strides
    common = dict(CAUSAL=bool(causal), VARLEN=varlen, BLOCK_D=_pow2(D), BLOCK_DV=_pow2(Dv),
                  ACC=tl.float64 if q.dtype == torch.float32 else tl.float32,
                  DOT="fp64" if q.dtype == torch.float32 else "fp32" if interpret else "tc",
                  ROUND_BF16=interpret and q.dtype == torch.bfloat16)
    dkdv_args = (q, k, v, do, lse, delta, dk, dv, cu_q, cu_k, tables[0], *sq, *sk, *sv, *sdo, *sl, *sdk, *sdv,
                 group, seq_q, seq_k, D, Dv, tau)
    dq_args = (q, k, v, do, lse, delta, dq, cu_q, cu_k, tables[1], *sq, *sk, *sv, *sdo, *sl, *sdq,
               group, seq_q, seq_k, D, Dv, tau)
    if autotune:
        _bwd_dkdv_tuned[lambda meta: (triton.cdiv(seq_k, meta["BLOCK_K"]), *grids[0][1:])](*dkdv_args, **common)
        _bwd_dq_tuned[lambda meta: (triton.cdiv(seq_q, meta["BLOCK_Q"]), *grids[1][1:])](*dq_args, **common)
        return
    fixed = dict(BLOCK_Q=block_q, BLOCK_K=block_k, num_warps=num_warps, num_stages=num_stages)
    _bwd_dkdv[grids[0]](*dkdv_args, **common, **fixed)
    _bwd_dq[grids[1]](*dq_args, **common, **fixed)


def _check_saved(o, lse, do, o_shape, lse_shape) -> None:
    for name, x, shape in (("o", o, o_shape), ("do", do, o_shape), ("lse", lse, lse_shape)):
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(shape):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ArgumentError(name, f"{name} must have shape {tuple(shape)}, got {got}")


def attention_backward(q, k, v, o, lse, do, *, causal: bool = False, scale: float | None = None,
                       block_q: int | None = None, block_k: int | None = None):
    """Gradients of <o, do> with respect to q, k, v, from the forward's o and lse (B, H, Sq) natural log."""
    B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_backward_args(q, k, v, o, lse, do, scale)
    interpret = _interpreting()
    _check_runnable(q, interpret)
    autotune = tuned(q, block_q, block_k, interpret)
    block_q, block_k, num_warps, num_stages = _blocks(block_q, block_k, Sq, Sk, _pow2(max(D, Dv)), q.dtype,
                                                      interpret)
    o, do = o.contiguous(), do.to(q.dtype).contiguous()
    lse = lse.to(torch.float32).contiguous()
    delta = _delta(o, do, Dv, interpret).view(B, H, Sq)
    # The interpreter's fp32 -> bf16 cast truncates: the gradients are written in fp32 and rounded by torch.
    grad_dtype = torch.float32 if interpret else q.dtype
    dq = torch.empty(B, H, Sq, D, device=q.device, dtype=grad_dtype)
    dk = torch.empty(B, Hkv, Sk, D, device=q.device, dtype=grad_dtype)
    dv = torch.empty(B, Hkv, Sk, Dv, device=q.device, dtype=grad_dtype)
    strides = (q.stride(), k.stride(), v.stride(), do.stride(), lse.stride(), dq.stride(), dk.stride(), dv.stride())
    grids = ((triton.cdiv(Sk, block_k), Hkv, B), (triton.cdiv(Sq, block_q), H, B))
    _launch(q, k, v, do, lse, delta, dq, dk, dv, lse, lse, (lse, lse), grids, strides, H // Hkv, Sq, Sk, D, Dv,
            tau, causal, False, block_q, block_k, num_warps, num_stages, interpret, autotune)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def varlen_attention_backward(q, k, v, o, lse, do, cu_seqlens_q, cu_seqlens_k, *, causal: bool = False,
                              scale: float | None = None, block_q: int | None = None, block_k: int | None = None):
    """Packed gradients: q (Tq, H, D), k (Tk, Hkv, D), v (Tk, Hkv, Dv), o and do (Tq, H, Dv), lse (H, Tq)."""
    cq, ck = check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k)
    tau = check_scale(scale, q.shape[2])
    interpret = _interpreting()
    _check_runnable(q, interpret)
    Tq, H, D = q.shape
    Tk, Hkv, Dv = k.shape[0], k.shape[1], v.shape[2]
    _check_saved(o, lse, do, (Tq, H, Dv), (H, Tq))
    max_q = max([b - a for a, b in itertools.pairwise(cq)] + [1])
    max_k = max([b - a for a, b in itertools.pairwise(ck)] + [1])
    block_q, block_k, num_warps, num_stages = _blocks(block_q, block_k, max_q, max_k, _pow2(max(D, Dv)), q.dtype,
                                                      interpret)
    do = do.to(q.dtype)
    lse = lse.to(torch.float32).contiguous()
    # D must be laid out as lse (H, Tq): the row sums are taken over (H, Tq, Dv) views.
    delta = _delta(o.transpose(0, 1).contiguous(), do.transpose(0, 1).contiguous(), Dv, interpret).view(H, Tq)
    grad_dtype = torch.float32 if interpret else q.dtype
    dq = torch.empty(Tq, H, D, device=q.device, dtype=grad_dtype)
    dk = torch.empty(Tk, Hkv, D, device=q.device, dtype=grad_dtype)
    dv = torch.empty(Tk, Hkv, Dv, device=q.device, dtype=grad_dtype)
    packed = lambda x: (0, x.stride(1), x.stride(0), x.stride(2))  # no batch axis: tokens play the sequence axis
    strides = (packed(q), packed(k), packed(v), packed(do), (0, lse.stride(0), lse.stride(1)), packed(dq),
               packed(dk), packed(dv))
    key_table = _block_table(ck, block_k, q.device)
    query_table = _block_table(cq, block_q, q.device)
    cu_q = torch.tensor(cq, dtype=torch.int32, device=q.device)
    cu_k = torch.tensor(ck, dtype=torch.int32, device=q.device)
    grids = ((key_table.numel() // 2, Hkv, 1), (query_table.numel() // 2, H, 1))
    _launch(q, k, v, do, lse, delta, dq, dk, dv, cu_q, cu_k, (key_table, query_table), grids, strides, H // Hkv,
            0, 0, D, Dv, tau, causal, True, block_q, block_k, num_warps, num_stages, interpret)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
