"""Mutants of the FlashAttention document: the catalogue's plausible bugs (catalogue/flash_attention.md, list 2).

Most are one FA2-style tiled forward, ``_online_attention``, computed in float64 so that nothing but the bug
separates it from the spec; ``bug`` names the one line that is wrong. Each mutant lists the claims whose
property tests must catch it.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from specs.flash_attention import (
    attention_backward,
    causal_mask,
    check_attention_args,
    check_scale,
    check_varlen_args,
    repeat_kv,
    scores,
)

from . import mutant

F64 = torch.float64
LN2 = math.log(2.0)


def _online_attention(q, k, v, *, causal=False, scale=None, block_q=16, block_k=16, bug=""):
    if bug == "gqa_modulo":  # no divisibility check, and query head h reads KV head h % Hkv
        B, H, Sq, D = q.shape
        Hkv, Sk, Dv, tau = k.shape[1], k.shape[2], v.shape[3], check_scale(scale, q.shape[-1])
        heads = torch.arange(H) % Hkv
        K, V = k.to(F64)[:, heads], v.to(F64)[:, heads]
    else:
        B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_args(q, k, v, scale)
        K, V = repeat_kv(k.to(F64), H), repeat_kv(v.to(F64), H)
    Q = q.to(F64)
    if not causal:
        allowed = torch.ones(Sq, Sk, dtype=torch.bool)
    elif bug == "top_left_causal":
        allowed = torch.ones(Sq, Sk, dtype=torch.bool).tril()
    else:
        allowed = causal_mask(Sq, Sk)
    O = torch.empty(B, H, Sq, Dv, dtype=F64)
    L = torch.empty(B, H, Sq, dtype=F64)
    last_start = Sk - block_k + 1 if bug == "drops_last_partial_tile" else Sk
    for i0 in range(0, Sq, block_q):
        rows = Q[:, :, i0:i0 + block_q].shape[2]
        m = torch.full((B, H, rows), -1e30 if bug == "tutorial_init" else -math.inf, dtype=F64)
        ell = torch.full((B, H, rows), 1.0 if bug == "tutorial_init" else 0.0, dtype=F64)
        O_t = torch.zeros(B, H, rows, Dv, dtype=F64)
        for j0 in range(0, max(last_start, 1), block_k):
            S = scores(Q[:, :, i0:i0 + block_q], K[:, :, j0:j0 + block_k], tau)
            visible = allowed[i0:i0 + block_q, j0:j0 + block_k]
            if bug == "finite_sentinel_replace":
                S = S.masked_fill(~visible, -1e6)
            elif bug == "finite_sentinel_additive":
                S = S + (~visible) * -1e6
            else:
                S = S.masked_fill(~visible, -math.inf)
            if bug == "no_max_subtraction":
                P = torch.exp(S)
                ell = ell + P.sum(-1)
                O_t = O_t + P @ V[:, :, j0:j0 + block_k]
                continue
            m_new = torch.maximum(m, S.amax(-1))
            m_safe = m_new if bug == "nan_on_fully_masked" else torch.where(torch.isneginf(m_new), 0.0, m_new)
            P = torch.exp(S - m_safe[..., None])
            alpha = torch.exp(m - m_safe)
            ell = alpha * ell + P.sum(-1)
            O_t = (O_t if bug == "rescales_ell_not_o" else alpha[..., None] * O_t) + P @ V[:, :, j0:j0 + block_k]
            m = m_new
        if bug == "forgets_final_normalisation":
            O_i = O_t
        elif bug == "nan_on_fully_masked":
            O_i = O_t / ell[..., None]
        else:
            O_i = torch.where(ell[..., None] > 0, O_t / torch.where(ell > 0, ell, 1.0)[..., None], 0.0)
        m_out = torch.zeros_like(m) if bug in ("no_max_subtraction", "lse_without_max") else m
        lse = m_out + torch.log(ell)
        O[:, :, i0:i0 + block_q] = O_i
        L[:, :, i0:i0 + block_q] = lse / LN2 if bug == "base2_lse" else lse
    out = O.to(q.dtype)
    if bug == "hides_nan":
        out = torch.nan_to_num(out)
    return out, (L.to(q.dtype) if bug == "lse_in_input_dtype" else L.float() if q.dtype != F64 else L)


_A = "flash_attention.attention"
_C = "flash_attention."
_ATTENTION_BUGS = {  # bug -> (claims it must break, what goes wrong)
    "forgets_final_normalisation": (("exact_attention", "tiled_any_block_size", "known_answers"),
                                    "returns the unnormalised O~ (FA2's deferred 1/ell never applied)"),
    "rescales_ell_not_o": (("tiled_any_block_size", "exact_attention"),
                           "rescales ell by alpha when the max grows but not the accumulator O~"),
    "drops_last_partial_tile": (("tiled_any_block_size", "exact_attention"),
                                "the key loop stops before a last partial tile"),
    "finite_sentinel_replace": (("masked_keys_never_contribute",), "masks with masked_fill(-1e6), not -inf"),
    "finite_sentinel_additive": (("masked_keys_never_contribute",), "adds -1e6 to masked scores (Triton tutorial)"),
    "top_left_causal": (("causal_bottom_right", "fully_masked_rows"), "aligns the causal mask top-left"),
    "nan_on_fully_masked": (("fully_masked_rows",), "computes (-inf) - (-inf) on rows with no visible key"),
    "tutorial_init": (("fully_masked_rows",), "initialises m = -1e30 and ell = 1 (lse of a masked row is finite)"),
    "base2_lse": (("exact_attention", "split_kv", "shift_invariance"), "returns the tutorial's base-2 M as lse"),
    "lse_without_max": (("shift_invariance", "exact_attention"), "returns log(ell) without the running max"),
    "no_max_subtraction": (("shift_invariance",), "sums exp(S) without subtracting the running max"),
    "gqa_modulo": (("gqa", "attention_contract"), "maps query head h to KV head h % Hkv, without checking H % Hkv"),
    "lse_in_input_dtype": (("attention_contract",), "returns lse in q's dtype (fp16/bf16), not float32"),
    "hides_nan": (("nan_propagation",), "applies nan_to_num to the output"),
}
for _bug in _ATTENTION_BUGS:
    globals()[_bug] = partial(_online_attention, bug=_bug)
    globals()[_bug].eqspec_provides = {"lse", "gqa", "causal"}  # as a user's --impl: what the tests may ask of it


# --- merge ------------------------------------------------------------------------------------------------

def merge_without_rescale(o_a, lse_a, o_b, lse_b):
    return (o_a + o_b), torch.logaddexp(lse_a.double(), lse_b.double())


def merge_with_max_lse(o_a, lse_a, o_b, lse_b):
    L = torch.maximum(lse_a.double(), lse_b.double())
    w_a, w_b = torch.exp(lse_a - L), torch.exp(lse_b - L)
    return (w_a[..., None] * o_a + w_b[..., None] * o_b) / (w_a + w_b)[..., None], L


# --- softmax and the online recurrence -----------------------------------------------------------------

def softmax_without_max(x):
    e = torch.exp(x.double())
    s = e.sum(-1, keepdim=True)
    return (e / s).to(x.dtype), torch.log(s).squeeze(-1)


def softmax_base2_lse(x):
    x64 = x.double()
    return torch.softmax(x64, -1).to(x.dtype), torch.logsumexp(x64, -1) / LN2


def softmax_nan_on_masked_row(x):
    x64 = x.double()
    m = x64.amax(-1, keepdim=True)
    e = torch.exp(x64 - m)
    s = e.sum(-1, keepdim=True)
    return (e / s).to(x.dtype), (m + torch.log(s)).squeeze(-1)


def online_softmax_ell_not_rescaled(x, block_sizes):
    x64 = x.double()
    m = torch.full(x64.shape[:-1], -math.inf, dtype=F64)
    ell = torch.zeros(x64.shape[:-1], dtype=F64)
    for block in torch.split(x64, list(block_sizes), dim=-1):
        m_new = torch.maximum(m, block.amax(-1))
        m_safe = torch.where(torch.isneginf(m_new), 0.0, m_new)
        ell = ell + torch.exp(block - m_safe[..., None]).sum(-1)  # the bug: alpha * ell forgotten
        m = m_new
    m_safe = torch.where(torch.isneginf(m), 0.0, m)
    L = m_safe + torch.log(ell)
    return torch.where(ell[..., None] > 0, torch.exp(x64 - L[..., None]), 0.0).to(x.dtype), L


# --- backward -------------------------------------------------------------------------------------------

def _backward(q, k, v, o, lse, do, *, causal=False, scale=None, bug=""):
    B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_args(q, k, v, scale)
    if bug not in ("wrong_D", "nan_on_fully_masked"):
        dq, dk, dv = attention_backward(q, k, v, o, lse, do, causal=causal, scale=scale)
        return (dq / tau).to(q.dtype), dk, dv  # dq_without_scale: tau forgotten in dQ = tau dS K
    Q, K, V, L, dO = q.double(), repeat_kv(k.double(), H), repeat_kv(v.double(), H), lse.double(), do.double()
    S = scores(Q, K, tau)
    if causal:
        S = S.masked_fill(~causal_mask(Sq, Sk), -math.inf)
    P = torch.exp(S - L[..., None])  # nan_on_fully_masked: exp(-inf - (-inf)) on rows with no visible key
    if bug == "wrong_D":
        P = torch.nan_to_num(P)
    D_ = dO.sum(-1) if bug == "wrong_D" else (dO * o.double()).sum(-1)
    dS = P * (dO @ V.transpose(-1, -2) - D_[..., None])
    g = H // Hkv
    dK = (tau * dS.transpose(-1, -2) @ Q).reshape(B, Hkv, g, Sk, D).sum(2)
    dV = (P.transpose(-1, -2) @ dO).reshape(B, Hkv, g, Sk, Dv).sum(2)
    return (tau * dS @ K).to(q.dtype), dK.to(k.dtype), dV.to(v.dtype)


backward_wrong_D = partial(_backward, bug="wrong_D")
backward_dq_without_scale = partial(_backward, bug="dq_without_scale")
backward_nan_on_fully_masked = partial(_backward, bug="nan_on_fully_masked")


# --- varlen ---------------------------------------------------------------------------------------------

def _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None, bug=""):
    cq, ck = check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k)
    Tq, Tk = q.shape[0], k.shape[0]
    seq_q = torch.searchsorted(torch.tensor(cq), torch.arange(Tq), right=True) - 1
    seq_k = torch.searchsorted(torch.tensor(ck), torch.arange(Tk), right=True) - 1
    allowed = torch.ones(Tq, Tk, dtype=torch.bool) if bug == "leaks_across_sequences" else seq_q[:, None] == seq_k
    if causal:  # the bug "packed_causal": bottom-right over the packed axis, not per sequence
        allowed = allowed & (causal_mask(Tq, Tk) if bug == "packed_causal" else _per_sequence_causal(cq, ck))
    o, lse = _masked_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], allowed,
                               check_scale(scale, q.shape[-1]))
    return o[0].transpose(0, 1).to(q.dtype), lse[0].float() if q.dtype != F64 else lse[0]


def _per_sequence_causal(cq, ck):
    allowed = torch.zeros(cq[-1], ck[-1], dtype=torch.bool)
    for b in range(len(cq) - 1):
        allowed[cq[b]:cq[b + 1], ck[b]:ck[b + 1]] = causal_mask(cq[b + 1] - cq[b], ck[b + 1] - ck[b])
    return allowed


def _masked_attention(q, k, v, allowed, tau):
    H = q.shape[1]
    S = scores(q.double(), repeat_kv(k.double(), H), tau).masked_fill(~allowed, -math.inf)
    m = torch.where(torch.isneginf(S.amax(-1)), 0.0, S.amax(-1))
    e = torch.exp(S - m[..., None])
    ell = e.sum(-1)
    return (e / torch.where(ell > 0, ell, 1.0)[..., None]) @ repeat_kv(v.double(), H), m + torch.log(ell)


varlen_leaks_across_sequences = partial(_varlen, bug="leaks_across_sequences")
varlen_packed_causal = partial(_varlen, bug="packed_causal")


# --- the FLOP count -------------------------------------------------------------------------------------

def flops_counts_macs(batch, heads, seqlen_q, seqlen_k, head_dim, head_dim_v=None, *, causal=False, mode="fwd"):
    from specs.flash_attention import attention_flops

    return attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, head_dim_v, causal=causal, mode=mode) // 2


def flops_causal_half(batch, heads, seqlen_q, seqlen_k, head_dim, head_dim_v=None, *, causal=False, mode="fwd"):
    from specs.flash_attention import attention_flops

    dense = attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, head_dim_v, mode=mode)
    return dense // 2 if causal else dense


_M = __name__
MUTANTS = [
    *(mutant(_A, bug, f"{_M}:{bug}", targets=tuple(_C + c for c in claims), notes=notes)
      for bug, (claims, notes) in _ATTENTION_BUGS.items()),
    mutant(_C + "merge", "merge_without_rescale", f"{_M}:merge_without_rescale",
           targets=(_C + "merge_associative",), notes="adds o_a + o_b without the exp(L_a - L) weights"),
    mutant(_C + "merge", "merge_with_max_lse", f"{_M}:merge_with_max_lse",
           targets=(_C + "merge_associative",), notes="returns max(L_a, L_b) as the merged lse"),
    mutant(_C + "softmax", "softmax_without_max", f"{_M}:softmax_without_max",
           targets=(_C + "softmax_lse",), notes="exp(x) / sum exp(x) without subtracting the row max"),
    mutant(_C + "softmax", "softmax_base2_lse", f"{_M}:softmax_base2_lse",
           targets=(_C + "softmax_lse",), notes="returns log2 sum exp x as lse"),
    mutant(_C + "softmax", "softmax_nan_on_masked_row", f"{_M}:softmax_nan_on_masked_row",
           targets=(_C + "softmax_masked_row",), notes="computes (-inf) - (-inf) on a row of -inf"),
    mutant(_C + "online_softmax", "online_softmax_ell_not_rescaled", f"{_M}:online_softmax_ell_not_rescaled",
           targets=(_C + "online_softmax_any_partition",), notes="forgets alpha * ell when the max grows"),
    mutant(_C + "attention_backward", "backward_wrong_D", f"{_M}:backward_wrong_D",
           targets=(_C + "backward_identity", _C + "gradients", _C + "known_answers"),
           notes="D = rowsum(dO) instead of rowsum(dO o O)"),
    mutant(_C + "attention_backward", "backward_dq_without_scale", f"{_M}:backward_dq_without_scale",
           targets=(_C + "gradients", _C + "known_answers"), notes="dQ = dS K without the softmax scale tau"),
    mutant(_C + "attention_backward", "backward_nan_on_fully_masked", f"{_M}:backward_nan_on_fully_masked",
           targets=(_C + "fully_masked_rows",), notes="recomputes P = exp(S - L) with L = -inf"),
    mutant(_C + "varlen_attention", "varlen_leaks_across_sequences", f"{_M}:varlen_leaks_across_sequences",
           targets=(_C + "varlen_block_diagonal",), notes="no block-diagonal mask: tokens see other sequences"),
    mutant(_C + "varlen_attention", "varlen_packed_causal", f"{_M}:varlen_packed_causal",
           targets=(_C + "varlen_block_diagonal",), notes="causal mask over the packed axis, not per sequence"),
    mutant(_C + "attention_flops", "flops_counts_macs", f"{_M}:flops_counts_macs",
           targets=(_C + "flop_count",), notes="counts multiply-adds, not FLOPs (factor 2)"),
    mutant(_C + "attention_flops", "flops_causal_half", f"{_M}:flops_causal_half",
           targets=(_C + "flop_count",), notes="halves the dense count for causal instead of counting pairs"),
]
