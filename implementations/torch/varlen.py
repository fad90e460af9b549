"""Packed (varlen) attention in plain torch.

``naive_varlen_attention`` runs the naive baseline on each sequence. ``tiled_varlen_attention`` works on the
packed token axis as FlashAttention's varlen kernels do: tiles of packed queries against the tiles of packed
keys that can overlap their sequences, with a block-diagonal mask built from sequence ids and the causal mask
aligned bottom-right inside each sequence.
"""

from __future__ import annotations

import math

import torch

from specs.flash_attention import check_scale, check_varlen_args

from .attention import _acc_dtype, naive_attention


def naive_varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal: bool = False, scale=None):
    cq, ck = check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k)
    tau = check_scale(scale, q.shape[2])
    T, H, Dv = q.shape[0], q.shape[1], v.shape[2]
    o = torch.zeros(T, H, Dv, dtype=q.dtype, device=q.device)
    lse = torch.full((H, T), -math.inf, dtype=torch.promote_types(q.dtype, torch.float32), device=q.device)
    for b in range(len(cq) - 1):
        qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        if qs.start == qs.stop or ks.start == ks.stop:
            continue
        o_b, lse_b = naive_attention(*(x.transpose(0, 1)[None] for x in (q[qs], k[ks], v[ks])), causal=causal,
                                     scale=tau)
        o[qs] = o_b[0].transpose(0, 1)
        lse[:, qs] = lse_b[0]
    return o, lse


def _sequence_ids(cu: torch.Tensor, total: int) -> torch.Tensor:
    """The sequence each packed token belongs to (right-searchsorted skips zero-length sequences)."""
    return torch.searchsorted(cu, torch.arange(total, device=cu.device, dtype=cu.dtype), right=True) - 1


def tiled_varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal: bool = False, scale=None,
                           block_q: int = 64, block_k: int = 64):
    cq, ck = check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k)
    tau = check_scale(scale, q.shape[2])
    Tq, H, _ = q.shape
    Tk, Hkv, Dv = k.shape[0], k.shape[1], v.shape[2]
    acc = _acc_dtype(q)
    cu_q = torch.tensor(cq, device=q.device)
    cu_k = torch.tensor(ck, device=q.device)
    seq_q, seq_k = _sequence_ids(cu_q, Tq), _sequence_ids(cu_k, Tk)
    pos_q, pos_k = torch.arange(Tq, device=q.device) - cu_q[seq_q], torch.arange(Tk, device=q.device) - cu_k[seq_k]
    len_q, len_k = cu_q[1:] - cu_q[:-1], cu_k[1:] - cu_k[:-1]
    qh = q.transpose(0, 1).to(acc) * tau  # (H, Tq, D)
    kh = k.transpose(0, 1).repeat_interleave(H // Hkv, dim=0).to(acc)
    vh = v.transpose(0, 1).repeat_interleave(H // Hkv, dim=0).to(acc)
    o = torch.empty(Tq, H, Dv, dtype=q.dtype, device=q.device)
    lse = torch.empty(H, Tq, dtype=acc, device=q.device)
    for i0 in range(0, Tq, block_q):
        i1 = min(i0 + block_q, Tq)
        sq = seq_q[i0:i1]
        first, last = int(sq[0]), int(sq[-1])
        m = torch.full((H, i1 - i0), -math.inf, dtype=acc, device=q.device)
        ell = torch.zeros(H, i1 - i0, dtype=acc, device=q.device)
        o_acc = torch.zeros(H, i1 - i0, Dv, dtype=acc, device=q.device)
        for j0 in range(ck[first] - ck[first] % block_k, ck[last + 1], block_k):  # keys of these sequences only
            j1 = min(j0 + block_k, Tk)
            allowed = sq[:, None] == seq_k[None, j0:j1]
            if causal:
                shift = (len_k - len_q)[sq]
                allowed &= pos_k[None, j0:j1] <= pos_q[i0:i1, None] + shift[:, None]
            s = (qh[:, i0:i1] @ kh[:, j0:j1].transpose(-1, -2)).masked_fill(~allowed, -math.inf)
            m_new = torch.maximum(m, s.amax(-1))
            m_safe = torch.where(torch.isneginf(m_new), 0.0, m_new)
            p = torch.exp(s - m_safe[..., None])
            alpha = torch.exp(m - m_safe)
            ell = alpha * ell + p.sum(-1)
            o_acc = alpha[..., None] * o_acc + p @ vh[:, j0:j1]
            m = m_new
        no_key = ell == 0  # a NaN ell (NaN input) propagates
        o[i0:i1] = torch.where(no_key[..., None], 0.0, o_acc / ell[..., None]).transpose(0, 1).to(q.dtype)
        lse[:, i0:i1] = torch.where(no_key, -math.inf, m + torch.log(ell))
    return o, lse
