"""FlashAttention forward in Triton: one program per (block of queries, head), keys streamed tile by tile.

Each program loads a block of ``BLOCK_Q`` query rows once and walks over the keys in tiles of ``BLOCK_K``,
never materialising the Sq x Sk score matrix (FA2 §3.1, Algorithm 1). For every key tile it

1. computes the scores ``s = scale * q k^T`` with ``tl.dot`` and sets the masked ones to -inf (keys past
   the end of the sequence, keys above the causal diagonal): a true -inf, never a finite sentinel, so that
   a masked key contributes nothing however large or small the valid scores are;
2. updates the running row maximum ``m`` and row sum ``l`` with the online-softmax recurrence
   (Milakov & Gimelshein 2018): ``m' = max(m, rowmax(s))``, ``alpha = exp(m - m')``,
   ``l' = alpha l + rowsum(exp(s - m'))``. While a row has seen no visible key ``m'`` is -inf; the
   exponentials then use 0 in its place, so (-inf) - (-inf) = NaN never occurs and the row keeps l = 0;
3. rescales the unnormalised output ``acc`` by ``alpha`` and adds ``exp(s - m') v``.

Normalisation is deferred to the end (FA2): ``o = acc / l`` once per row, and only the log-sum-exp
``lse = m + log(l)`` is kept (the backward recomputes the probabilities from it). A row with l = 0 saw no
key (causal with Sq > Sk, or a varlen sequence without keys): it gets o = 0 and lse = -inf.

Arithmetic is in natural units: ``exp`` and ``lse = m + log(l)`` directly, the natural log the spec asks
for. (The Triton tutorial folds log2(e) into the scale and uses ``exp2``, saving a multiply per score, but
``scale * log2(e)`` is then rounded once for all scores and lse must be converted back from base 2: in
float32 that doubled the error against the naive code. On NVIDIA GPUs ``tl.exp`` of fp32 is ``ex2.approx``
after a multiply by log2(e) anyway.)

Precision. 16-bit inputs: the tensor-core path, fp16 / bf16 operands and fp32 accumulation, with the
probabilities rounded to v's dtype for the second product, as FlashAttention does. fp32 inputs: the
products, the softmax statistics and the accumulator are fp64 (``ACC``). An fp32 kernel has no tensor-core
path without TF32, which would lose three digits; fp32 accumulation would leave it about as accurate as the
naive fp32 code, sometimes a few times worse where the naive code happens to round well, whereas fp64 keeps
it well inside the fp32 error budget. On H100 / H200 fp64 throughput is half of fp32's (fp64 tensor cores
match it).

Dense and packed (varlen) attention share one kernel. Dense: the grid is (query blocks, heads, batch).
Varlen: the host builds a table of (sequence, first query row) pairs, one per query block of each
sequence, and the grid is (table entries, heads); each program reads its sequence's offsets from
cu_seqlens, so sequences never share a tile and no block-diagonal mask is needed. Causal masks are aligned
bottom-right (query i sees key j iff j <= i + Sk - Sq, per sequence), and a program skips the key tiles
that lie wholly above the diagonal. GQA: query head h reads KV head h // (H / Hkv).

Head dims of any size are padded to a power of two >= 16 (``tl.dot``'s minimum) with masked loads that
read zeros, which leave the dot products unchanged.

Under Triton's CPU interpreter (TRITON_INTERPRET=1) two operations differ from the GPU and are worked
around: ``tl.dot`` on bfloat16 operands is wrong there, so 16-bit operands are upcast to fp32 first
(exact: fp32 holds every product of two 16-bit floats); and fp32 -> bfloat16 casts truncate, so the
probabilities fed to the second product are rounded to bfloat16 by hand (to nearest even, as the GPU's
cast) and the output is written to an fp32 buffer that torch casts on the host.
"""

from __future__ import annotations

import itertools
import os

import torch
import triton
import triton.language as tl

from eqspec.contracts import ArgumentError
from specs.flash_attention import check_attention_args, check_scale, check_varlen_args

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _mma(a, b, acc, DOT: tl.constexpr):
    """acc + a @ b, the product computed as DOT says; acc's dtype is the accumulator's.

    "tc": 16-bit operands straight to the tensor cores, fp32 accumulation (the GPU path for fp16 / bf16).
    "fp32": operands upcast to fp32 first, full IEEE precision (16-bit inputs under the interpreter, whose
    bf16 dot is wrong; exact, since fp32 holds every product of two 16-bit floats).
    "fp64": fp64 operands and accumulator (fp32 inputs, see the module docstring).

    out_dtype is given for the fp64 product: triton 3.6 (the GPU machine's release) defaults it to fp32 and rejects
    an fp64 accumulator, where 3.8 takes the accumulator's dtype. The other paths accumulate in fp32, the default.
    """
    if DOT == "fp64":
        acc = tl.dot(a.to(tl.float64), b.to(tl.float64), acc, out_dtype=tl.float64)
    elif DOT == "fp32":
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _round_to_bf16(x):
    """Round fp32 to the nearest bfloat16 value, ties to even, kept in fp32 (the interpreter's cast truncates)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    rounded = ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    return tl.where(x != x, x, rounded)  # NaN stays NaN


@triton.jit
def _fwd_tile(q, k_base, v_base, m_i, l_i, acc, start_n, k_start, seq_k, seq_q, offs_m, offs_n, offs_d, offs_dv,
              stride_ks, stride_vs, D, DV, scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, ACC: tl.constexpr,
              DOT: tl.constexpr, P_ROUND_BF16: tl.constexpr):
    """One key tile of the forward: scores, the online-softmax update, and the rescaled accumulation.

    MASKED: the tile may hold keys past the sequence's end or above the causal diagonal; those scores become
    -inf (a true -inf, never a finite sentinel, so a masked key contributes nothing however large or small the
    valid scores are). Tiles wholly inside every row's visible range skip the mask.
    """
    cols = start_n + offs_n
    rows_k = (k_start + cols).to(tl.int64)
    in_k = cols < seq_k
    kt = tl.load(k_base + rows_k[None, :] * stride_ks, mask=(offs_d[:, None] < D) & in_k[None, :], other=0.0)
    s = _mma(q, kt, tl.zeros([q.shape[0], offs_n.shape[0]], ACC), DOT) * scale
    if MASKED:
        visible = in_k[None, :]
        if CAUSAL:
            visible = visible & (cols[None, :] <= offs_m[:, None] + (seq_k - seq_q))
        s = tl.where(visible, s, float("-inf"))

    # Online softmax step; 0 replaces a running max of -inf so that exp never sees (-inf) - (-inf).
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp(s - m_safe[:, None])
    alpha = tl.exp(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)

    # The out-of-range rows of v are read as zeros: 0 * garbage could be NaN.
    v = tl.load(v_base + rows_k[:, None] * stride_vs, mask=in_k[:, None] & (offs_dv[None, :] < DV), other=0.0)
    # 16-bit inputs: p goes to the second dot in v's dtype, as FlashAttention (tensor-core operands).
    if P_ROUND_BF16:
        p = _round_to_bf16(p)
    elif DOT != "fp64":
        p = p.to(v.dtype)
    acc = _mma(p, v, acc * alpha[:, None], DOT)
    return m_new, l_i, acc


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, OUT, LSE, CU_Q, CU_K, TABLE,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_ob, stride_oh, stride_os, stride_od,
    stride_lb, stride_lh, stride_ls,
    GROUP, SEQ_Q, SEQ_K, D, DV, scale,
    CAUSAL: tl.constexpr, VARLEN: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    ACC: tl.constexpr, DOT: tl.constexpr, P_ROUND_BF16: tl.constexpr,
):
    # --- which rows this program owns ---------------------------------------------------------------
    if VARLEN:
        # TABLE[t] = (sequence, first query row within it); the batch strides are 0, the token offsets
        # q_start / k_start select the sequence inside the packed token axis.
        t = tl.program_id(0)
        b = tl.load(TABLE + 2 * t)
        start_q = tl.load(TABLE + 2 * t + 1)
        q_start = tl.load(CU_Q + b)
        seq_q = tl.load(CU_Q + b + 1) - q_start
        k_start = tl.load(CU_K + b)
        seq_k = tl.load(CU_K + b + 1) - k_start
    else:
        start_q = tl.program_id(0) * BLOCK_Q
        b = tl.program_id(2)
        q_start = 0
        seq_q = SEQ_Q
        k_start = 0
        seq_k = SEQ_K
    h = tl.program_id(1)
    h_kv = (h // GROUP).to(tl.int64)  # GQA: contiguous groups of GROUP query heads share one KV head
    # 64-bit offsets: index x stride overflows int32 for large batches, heads or packed token axes.
    h = h.to(tl.int64)
    b = b.to(tl.int64)

    offs_m = start_q + tl.arange(0, BLOCK_Q)  # query rows, local to the sequence
    offs_n = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    rows_q = (q_start + offs_m).to(tl.int64)

    q_ptrs = (Q + b * stride_qb + h * stride_qh + rows_q[:, None] * stride_qs + offs_d[None, :] * stride_qd)
    q = tl.load(q_ptrs, mask=(offs_m[:, None] < seq_q) & (offs_d[None, :] < D), other=0.0)
    k_base = K + b * stride_kb + h_kv * stride_kh + offs_d[:, None] * stride_kd  # k^T tile: (BLOCK_D, BLOCK_K)
    v_base = V + b * stride_vb + h_kv * stride_vh + offs_dv[None, :] * stride_vd  # v tile: (BLOCK_K, BLOCK_DV)

    # ACC is fp32 for 16-bit inputs, fp64 for fp32 inputs.
    m_i = tl.full([BLOCK_Q], float("-inf"), ACC)  # running row max of the scaled scores
    l_i = tl.zeros([BLOCK_Q], ACC)  # running row sum of exp(s - m_i)
    acc = tl.zeros([BLOCK_Q, BLOCK_DV], ACC)  # unnormalised output

    # Bottom-right causal: row i sees keys j <= i + seq_k - seq_q, so this block's last row sees keys
    # below start_q + BLOCK_Q + seq_k - seq_q; tiles past that are skipped (none at all for rows that see nothing).
    if CAUSAL:
        hi = tl.minimum(seq_k, tl.maximum(start_q + BLOCK_Q + seq_k - seq_q, 0))
    else:
        hi = seq_k
    # Tiles that every row of the block sees whole need no mask (FA2 masks only the tiles on the diagonal and
    # the sequence's last tile): the first row sees keys j <= start_q + seq_k - seq_q, and a tile must end
    # inside the sequence.
    full = (seq_k // BLOCK_K) * BLOCK_K
    if CAUSAL:
        full = tl.minimum(full, tl.maximum(((start_q + seq_k - seq_q + 1) // BLOCK_K) * BLOCK_K, 0))
    for start_n in range(0, full, BLOCK_K):
        m_i, l_i, acc = _fwd_tile(q, k_base, v_base, m_i, l_i, acc, start_n, k_start, seq_k, seq_q, offs_m, offs_n,
                                  offs_d, offs_dv, stride_ks, stride_vs, D, DV, scale, False, CAUSAL, ACC, DOT,
                                  P_ROUND_BF16)
    for start_n in range(full, hi, BLOCK_K):
        m_i, l_i, acc = _fwd_tile(q, k_base, v_base, m_i, l_i, acc, start_n, k_start, seq_k, seq_q, offs_m, offs_n,
                                  offs_d, offs_dv, stride_ks, stride_vs, D, DV, scale, True, CAUSAL, ACC, DOT,
                                  P_ROUND_BF16)

    # --- deferred normalisation ----------------------------------------------------------------------
    # l = 0 exactly when the row saw no key: o = 0, lse = -inf. A NaN l (NaN input) is not 0 and propagates.
    empty = l_i == 0.0
    l_i = tl.where(empty, 1.0, l_i)  # then acc / l = 0 / 1 and log(l) = 0: no division by zero, no log(0)
    o = acc / l_i[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.log(l_i))

    in_q = offs_m < seq_q
    o_ptrs = (OUT + b * stride_ob + h * stride_oh + rows_q[:, None] * stride_os + offs_dv[None, :] * stride_od)
    tl.store(o_ptrs, o.to(OUT.dtype.element_ty), mask=in_q[:, None] & (offs_dv[None, :] < DV))
    tl.store(LSE + b * stride_lb + h * stride_lh + rows_q * stride_ls, lse.to(tl.float32), mask=in_q)


# --- host side -----------------------------------------------------------------------------------------

def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _check_runnable(x: torch.Tensor, interpret: bool) -> None:
    if x.dtype not in DTYPES:
        raise ArgumentError("x", f"the Triton kernels take float32, float16 or bfloat16 inputs, got {x.dtype}")
    if x.device.type == "cpu" and not interpret:
        raise ArgumentError("x", "Triton kernels run on CPU tensors only under TRITON_INTERPRET=1 "
                            "(set before triton is imported)")


def _check_block(name: str, b) -> None:
    if isinstance(b, bool) or not isinstance(b, int) or b < 16 or b & (b - 1):
        raise ArgumentError(name, f"{name} must be a power of two >= 16, got {b!r}")


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _config(block_d: int, dtype: torch.dtype, interpret: bool) -> tuple[int, int, int, int]:
    """(block_q, block_k, num_warps, num_stages) for a padded head dim; fixed configs, no autotuning.

    Bigger head dims take smaller tiles so that q, k, v and the accumulator fit in registers and shared
    memory; fp32 inputs, whose accumulator and score tiles are fp64, take smaller tiles still. Under the
    interpreter each program costs milliseconds whatever its size: fewer, larger tiles.
    """
    if interpret:
        return 64, 64, 4, 1
    if dtype == torch.float32:
        if block_d <= 128:
            return 64, 32, 4 if block_d <= 64 else 8, 2
        return 32, 16, 4, 1
    if block_d <= 64:
        return 128, 64, 4, 3
    if block_d <= 128:
        return 128, 64, 8, 2
    if block_d <= 256:
        return 64, 32, 4, 2
    return 32, 16, 4, 1


def _blocks(block_q, block_k, seq_q: int, seq_k: int, block_d: int, dtype: torch.dtype, interpret: bool):
    """The user's block sizes if given, else the config's shrunk to the (padded) sequence lengths."""
    dq, dk, num_warps, num_stages = _config(block_d, dtype, interpret)
    if block_q is None:
        block_q = min(dq, _pow2(seq_q))
    if block_k is None:
        block_k = min(dk, _pow2(seq_k))
    _check_block("block_q", block_q)
    _check_block("block_k", block_k)
    if block_q < 64:  # a short query tile has too few rows to share among 8 warps
        num_warps = min(num_warps, 4)
    return block_q, block_k, num_warps, num_stages


# Autotuning on the GPU for 16-bit dense inputs, the shapes the benchmarks track: a few tile shapes around
# FlashAttention-2's and the Triton tutorial's choices for head dims up to 128 (fewer, smaller ones would leave the
# tensor cores idle; larger ones spill). Keyed on the head dims and causality, not the sequence lengths, so a new
# length does not re-tune. A config that does not fit the chip's registers or shared memory is discarded by the
# autotuner. The interpreter, fp32 inputs (fp64 tiles) and packed inputs (whose program table depends on the
# query block) keep the fixed configs of _config.
_FWD_CONFIGS = [triton.Config({"BLOCK_Q": bq, "BLOCK_K": bk}, num_warps=w, num_stages=st)
                for bq, bk, w, st in ((128, 64, 8, 2), (128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3),
                                      (128, 32, 4, 4), (64, 128, 4, 2))]
_attn_fwd_tuned = triton.autotune(configs=_FWD_CONFIGS, key=["D", "DV", "CAUSAL", "BLOCK_D"])(_attn_fwd_kernel)


def tuned(q: torch.Tensor, block_q, block_k, interpret: bool) -> bool:
    """Whether a dense launch autotunes its tiles: on the GPU, 16-bit inputs, no block sizes forced."""
    return not interpret and q.dtype != torch.float32 and block_q is None and block_k is None


def _launch(grid, q, k, v, o, lse, cu_q, cu_k, table, strides, group, seq_q, seq_k, D, Dv, tau, causal,
            varlen, block_q, block_k, num_warps, num_stages, interpret, autotune: bool = False):
    if autotune:
        _attn_fwd_tuned[lambda meta: (triton.cdiv(seq_q, meta["BLOCK_Q"]), *grid[1:])](
            q, k, v, o, lse, cu_q, cu_k, table, *strides, group, seq_q, seq_k, D, Dv, tau,
            CAUSAL=bool(causal), VARLEN=False, BLOCK_D=_pow2(D), BLOCK_DV=_pow2(Dv), ACC=tl.float32, DOT="tc",
            P_ROUND_BF16=False)
        return
    _attn_fwd_kernel[grid](
        q, k, v, o, lse, cu_q, cu_k, table, *strides,
        group, seq_q, seq_k, D, Dv, tau,
        CAUSAL=bool(causal), VARLEN=varlen, BLOCK_Q=block_q, BLOCK_K=block_k,
        BLOCK_D=_pow2(D), BLOCK_DV=_pow2(Dv),
        ACC=tl.float64 if q.dtype == torch.float32 else tl.float32,
        DOT="fp64" if q.dtype == torch.float32 else "fp32" if interpret else "tc",
        P_ROUND_BF16=interpret and q.dtype == torch.bfloat16,
        num_warps=num_warps, num_stages=num_stages,
    )


def attention(q, k, v, *, causal: bool = False, scale: float | None = None, block_q: int | None = None,
              block_k: int | None = None):
    """q (B, H, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv) -> o (B, H, Sq, Dv) in q's dtype, lse (B, H, Sq) fp32."""
    B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_args(q, k, v, scale)
    interpret = _interpreting()
    _check_runnable(q, interpret)
    autotune = tuned(q, block_q, block_k, interpret)
    block_q, block_k, num_warps, num_stages = _blocks(block_q, block_k, Sq, Sk, _pow2(max(D, Dv)), q.dtype,
                                                      interpret)
    # The interpreter's fp32 -> bf16 cast truncates: it writes fp32 and torch rounds on the host.
    o = torch.empty(B, H, Sq, Dv, device=q.device, dtype=torch.float32 if interpret else q.dtype)
    lse = torch.empty(B, H, Sq, device=q.device, dtype=torch.float32)
    strides = (*q.stride(), *k.stride(), *v.stride(), *o.stride(), *lse.stride())
    # Query blocks on the first grid axis: consecutive programs share a head and read the same K, V tiles.
    grid = (triton.cdiv(Sq, block_q), H, B)
    _launch(grid, q, k, v, o, lse, lse, lse, lse, strides, H // Hkv, Sq, Sk, D, Dv, tau, causal, False,
            block_q, block_k, num_warps, num_stages, interpret, autotune)
    return o.to(q.dtype), lse


def _block_table(cu: list[int], block_q: int, device) -> torch.Tensor:
    """(sequence, first row) for every query block of every sequence, flattened to int32 [s0, r0, s1, r1, ...]."""
    lengths = torch.tensor(cu[1:], dtype=torch.int64) - torch.tensor(cu[:-1], dtype=torch.int64)
    n_blocks = (lengths + block_q - 1) // block_q  # zero-length sequences get no program
    seq = torch.repeat_interleave(torch.arange(len(lengths)), n_blocks)
    first_block = torch.cumsum(n_blocks, 0) - n_blocks  # index of each sequence's first table entry
    row = (torch.arange(len(seq)) - first_block[seq]) * block_q
    return torch.stack((seq, row), 1).to(dtype=torch.int32, device=device).reshape(-1)


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal: bool = False, scale: float | None = None,
                     block_q: int | None = None, block_k: int | None = None):
    """Packed attention: q (Tq, H, D), k (Tk, Hkv, D), v (Tk, Hkv, Dv) -> o (Tq, H, Dv), lse (H, Tq) fp32."""
    cq, ck = check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k)
    tau = check_scale(scale, q.shape[2])
    interpret = _interpreting()
    _check_runnable(q, interpret)
    Tq, H, D = q.shape
    Hkv, Dv = k.shape[1], v.shape[2]
    max_q = max(b - a for a, b in itertools.pairwise(cq))
    max_k = max(b - a for a, b in itertools.pairwise(ck))
    block_q, block_k, num_warps, num_stages = _blocks(block_q, block_k, max(max_q, 1), max(max_k, 1),
                                                      _pow2(max(D, Dv)), q.dtype, interpret)
    o = torch.empty(Tq, H, Dv, device=q.device, dtype=torch.float32 if interpret else q.dtype)
    lse = torch.empty(H, Tq, device=q.device, dtype=torch.float32)
    table = _block_table(cq, block_q, q.device)
    cu_q = torch.tensor(cq, dtype=torch.int32, device=q.device)
    cu_k = torch.tensor(ck, dtype=torch.int32, device=q.device)
    # Packed layouts have no batch axis: batch strides 0, the token axis plays the sequence axis.
    strides = (0, q.stride(1), q.stride(0), q.stride(2), 0, k.stride(1), k.stride(0), k.stride(2),
               0, v.stride(1), v.stride(0), v.stride(2), 0, o.stride(1), o.stride(0), o.stride(2),
               0, lse.stride(0), lse.stride(1))
    grid = (table.numel() // 2, H, 1)
    _launch(grid, q, k, v, o, lse, cu_q, cu_k, table, strides, H // Hkv, 0, 0, D, Dv, tau, causal, True,
            block_q, block_k, num_warps, num_stages, interpret)
    return o.to(q.dtype), lse
