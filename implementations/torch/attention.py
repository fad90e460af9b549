"""Attention in plain torch: the naive same-precision baseline, and a tiled online-softmax version.

``naive_attention`` is "the obvious torch code" in the inputs' dtype; the error budget measures every other
implementation against its error. ``tiled_attention`` is FlashAttention-2's algorithm written with torch ops:
an outer loop over query blocks, an inner loop over key blocks, fp32 accumulators, the unnormalised output
rescaled by alpha and divided by ell once at the end, and a backward that recomputes P from the saved lse
(a ``torch.autograd.Function``). Its memory is O(S x d + block_q x block_k), never O(Sq x Sk).
"""

from __future__ import annotations

import math

import torch

from eqspec.contracts import ArgumentError
from specs.flash_attention import causal_mask, check_attention_args, check_attention_backward_args

ACC = torch.float32  # accumulator dtype for fp32/fp16/bf16 inputs, as FlashAttention


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else ACC


# --- the naive baseline --------------------------------------------------------------------------------

def naive_attention(q, k, v, *, causal: bool = False, scale: float | None = None):
    B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_args(q, k, v, scale)
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    S = (q * tau) @ k.transpose(-1, -2)
    if causal:
        S = S.masked_fill(~causal_mask(Sq, Sk, q.device), -math.inf)
    P = torch.softmax(S, dim=-1)
    if causal and Sq > Sk:  # rows with no visible key: softmax gives NaN, the convention is O = 0
        P = P.masked_fill(torch.isneginf(S).all(-1, keepdim=True), 0.0)
    lse = torch.logsumexp(S, dim=-1)
    return P @ v, lse.to(torch.promote_types(lse.dtype, torch.float32))


def autograd_backward(attention_fn):
    """Turn a differentiable attention into the attention_backward operation (gradients of <o, do>)."""

    def backward(q, k, v, o, lse, do, *, causal: bool = False, scale: float | None = None):
        # o and lse are not read (the forward is recomputed), but the operation's contract holds for them too
        check_attention_backward_args(q, k, v, o, lse, do, scale)
        qg, kg, vg = (x.detach().clone().requires_grad_(True) for x in (q, k, v))
        out, _ = attention_fn(qg, kg, vg, causal=causal, scale=scale)
        dq, dk, dv = torch.autograd.grad(out, (qg, kg, vg), grad_outputs=do)
        return dq, dk, dv

    backward.__name__ = f"autograd_backward({getattr(attention_fn, '__name__', 'attention')})"
    return backward


naive_attention_backward = autograd_backward(naive_attention)


# --- the tiled forward and backward -------------------------------------------------------------------

def _check_blocks(block_q, block_k) -> None:
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
            raise ArgumentError(name, f"{name} must be a positive integer, got {b!r}")


def _causal_tile(i0: int, i1: int, j0: int, j1: int, Sq: int, Sk: int, device) -> torch.Tensor:
    """The bottom-right causal mask of one tile (True: visible), without building the Sq x Sk mask."""
    i = torch.arange(i0, i1, device=device)[:, None]
    j = torch.arange(j0, j1, device=device)[None, :]
    return j <= i + (Sk - Sq)


def _key_range(i0: int, i1: int, Sq: int, Sk: int, causal: bool) -> int:
    """One past the last key any query in [i0, i1) may see: FA2 skips the key blocks above the diagonal."""
    return min(Sk, max(0, i1 - 1 + Sk - Sq + 1)) if causal else Sk


def tiled_forward(q, k, v, *, causal: bool, tau: float, block_q: int, block_k: int):
    """FA2 Algorithm 1 with torch ops; returns o in q's dtype and lse in float32 (float64 for float64 inputs)."""
    B, H, Sq, _ = q.shape
    Hkv, Sk, Dv = k.shape[1], k.shape[2], v.shape[3]
    acc = _acc_dtype(q)
    g = H // Hkv
    o = torch.empty(B, H, Sq, Dv, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, Sq, dtype=acc, device=q.device)
    kv_heads = torch.arange(H, device=q.device) // g
    for i0 in range(0, Sq, block_q):
        i1 = min(i0 + block_q, Sq)
        q_i = q[:, :, i0:i1].to(acc) * tau
        m = torch.full((B, H, i1 - i0), -math.inf, dtype=acc, device=q.device)
        ell = torch.zeros(B, H, i1 - i0, dtype=acc, device=q.device)
        o_acc = torch.zeros(B, H, i1 - i0, Dv, dtype=acc, device=q.device)
        for j0 in range(0, _key_range(i0, i1, Sq, Sk, causal), block_k):
            j1 = min(j0 + block_k, Sk)
            k_j = k[:, kv_heads, j0:j1].to(acc)
            v_j = v[:, kv_heads, j0:j1].to(acc)
            s = q_i @ k_j.transpose(-1, -2)
            if causal and j1 - 1 > i0 + Sk - Sq:  # only blocks crossing the diagonal need the element mask
                s = s.masked_fill(~_causal_tile(i0, i1, j0, j1, Sq, Sk, q.device), -math.inf)
            m_new = torch.maximum(m, s.amax(-1))
            m_safe = torch.where(torch.isneginf(m_new), 0.0, m_new)
            p = torch.exp(s - m_safe[..., None])
            alpha = torch.exp(m - m_safe)
            ell = alpha * ell + p.sum(-1)
            o_acc = alpha[..., None] * o_acc + p @ v_j
            m = m_new
        no_key = ell == 0  # rows with no visible key; a NaN ell (NaN input) must propagate, not become 0
        o[:, :, i0:i1] = torch.where(no_key[..., None], 0.0, o_acc / ell[..., None]).to(q.dtype)
        lse[:, :, i0:i1] = torch.where(no_key, -math.inf, m + torch.log(ell))
    return o, lse


def tiled_backward(q, k, v, o, lse, do, dlse, *, causal: bool, tau: float, block_q: int, block_k: int):
    """FA2 backward with recomputation: outer loop over key blocks, inner over query blocks."""
    B, H, Sq, D = q.shape
    Hkv, Sk, Dv = k.shape[1], k.shape[2], v.shape[3]
    acc = _acc_dtype(q)
    g = H // Hkv
    kv_heads = torch.arange(H, device=q.device) // g
    Delta = (do.to(acc) * o.to(acc)).sum(-1)  # D_i = rowsum(dO o O)
    if dlse is not None:  # a loss that also reads lse: dL/dS_ij gains dlse_i P_ij
        Delta = Delta - dlse.to(acc)
    lse_safe = torch.where(torch.isneginf(lse), 0.0, lse).to(acc)
    dq = torch.zeros(B, H, Sq, D, dtype=acc, device=q.device)
    dk = torch.zeros(B, H, Sk, D, dtype=acc, device=q.device)
    dv = torch.zeros(B, H, Sk, Dv, dtype=acc, device=q.device)
    for j0 in range(0, Sk, block_k):
        j1 = min(j0 + block_k, Sk)
        k_j = k[:, kv_heads, j0:j1].to(acc)
        v_j = v[:, kv_heads, j0:j1].to(acc)
        first_q = max(0, j0 - (Sk - Sq)) if causal else 0  # query blocks above the diagonal see none of these keys
        for i0 in range((first_q // block_q) * block_q, Sq, block_q):
            i1 = min(i0 + block_q, Sq)
            q_i, do_i = q[:, :, i0:i1].to(acc), do[:, :, i0:i1].to(acc)
            s = tau * q_i @ k_j.transpose(-1, -2)
            p = torch.exp(s - lse_safe[:, :, i0:i1, None])
            if causal and j1 - 1 > i0 + Sk - Sq:  # only tiles crossing the diagonal need the element mask
                p = p.masked_fill(~_causal_tile(i0, i1, j0, j1, Sq, Sk, q.device), 0.0)
            p = p.masked_fill(torch.isneginf(lse[:, :, i0:i1])[..., None], 0.0)
            dv[:, :, j0:j1] += p.transpose(-1, -2) @ do_i
            dp = do_i @ v_j.transpose(-1, -2)
            ds = p * (dp - Delta[:, :, i0:i1, None])
            dq[:, :, i0:i1] += tau * ds @ k_j
            dk[:, :, j0:j1] += tau * ds.transpose(-1, -2) @ q_i
    dk = dk.reshape(B, Hkv, g, Sk, D).sum(2)
    dv = dv.reshape(B, Hkv, g, Sk, Dv).sum(2)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, tau, block_q, block_k):
        o, lse = tiled_forward(q, k, v, causal=causal, tau=tau, block_q=block_q, block_k=block_k)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.config = (causal, tau, block_q, block_k)
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, o, lse = ctx.saved_tensors
        causal, tau, block_q, block_k = ctx.config
        dq, dk, dv = tiled_backward(q, k, v, o, lse, do, dlse, causal=causal, tau=tau, block_q=block_q,
                                    block_k=block_k)
        return dq, dk, dv, None, None, None, None


def tiled_attention(q, k, v, *, causal: bool = False, scale: float | None = None, block_q: int = 128,
                    block_k: int = 128):
    *_, tau = check_attention_args(q, k, v, scale)
    _check_blocks(block_q, block_k)
    return TiledAttention.apply(q, k, v, bool(causal), tau, block_q, block_k)


def tiled_attention_backward(q, k, v, o, lse, do, *, causal: bool = False, scale: float | None = None,
                             block_q: int = 128, block_k: int = 128):
    *_, tau = check_attention_backward_args(q, k, v, o, lse, do, scale)
    _check_blocks(block_q, block_k)
    return tiled_backward(q, k, v, o, lse, do, None, causal=bool(causal), tau=tau, block_q=block_q,
                          block_k=block_k)
