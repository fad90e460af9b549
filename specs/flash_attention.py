"""FlashAttention: exact attention computed tile by tile with an online softmax.

Papers: Dao et al. 2022, "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness"
(arXiv:2205.14135, "FA1"); Dao 2023, "FlashAttention-2" (arXiv:2307.08691, "FA2"); Milakov & Gimelshein 2018,
"Online normalizer calculation for softmax" (arXiv:1805.02867). Post: the seed's FlashAttention article (online
softmax, tiling). Equations and conventions: catalogue/flash_attention.md.

Notation (FA1 §2, FA2 §2.2), one head: S = tau Q K^T, P = softmax_row(S), O = P V, and the log-sum-exp
L_i = log sum_j exp(S_ij) that FlashAttention returns as ``softmax_lse`` (natural log of the *scaled* scores).

Conventions (design.md): causal masks are aligned bottom-right when Sq != Sk; a fully masked row gives
O = 0 and L = -inf; query head h reads KV head h // (H / Hkv) (GQA). Everything here is float64.
"""

from __future__ import annotations

import math

import torch

from eqspec.contracts import ArgumentError
from eqspec.outputs import Output
from eqspec.registry import REGISTRY, Implementation, claim, operation, spec

from .validators import check_dim, check_same, check_shape, check_tensor

DOC = "flash_attention"
F64 = torch.float64


def _f64(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(x.to(F64) for x in xs)  # no detach: autograd through the spec is the gradients' reference


# ---------------------------------------------------------------------------------------------------
# Softmax with its log-sum-exp
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"m_i=\max_j x_{ij},\quad L_i = m_i + \log\sum_j e^{x_{ij}-m_i},\quad y_{ij}=e^{x_{ij}-L_i}",
    source="FA1 §2.1 (safe softmax); catalogue/flash_attention.md, property 2",
    returns="(y, lse)",
    summary="Row softmax over the last dimension with its natural-log log-sum-exp. "
            "x (..., N) -> y (..., N) in x's dtype, lse (...) in float32 or wider.",
    convention="A row of -inf gives y = 0 and lse = -inf (as a fully masked attention row).",
    baseline="torch.naive",
    outputs=(
        Output("y", shape="x.shape", dtype="x", device="x"),
        Output("lse", shape="x.shape[:-1]", dtype="float32|float64", device="x", requires="lse"),
    ),
    capabilities=("lse",),
)
def softmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("x", x)
    (x64,) = _f64(x)
    m = x64.amax(dim=-1, keepdim=True)
    m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)  # all -inf: avoid (-inf) - (-inf)
    e = torch.exp(x64 - m_safe)
    ell = e.sum(dim=-1, keepdim=True)
    y = e / torch.where(ell == 0, torch.ones_like(ell), ell)  # a row of -inf: 0 / 1, and no NaN in autograd
    L = m_safe + torch.log(ell)
    return y.to(x.dtype), L.squeeze(-1)


@spec(
    DOC,
    latex=r"m^{(j)}=\max\big(m^{(j-1)},\mathrm{rowmax}(S^{(j)})\big),\ \tilde P^{(j)}=e^{S^{(j)}-m^{(j)}},\ "
          r"\alpha=e^{m^{(j-1)}-m^{(j)}},\ \ell^{(j)}=\alpha\,\ell^{(j-1)}+\mathrm{rowsum}(\tilde P^{(j)})",
    source="Milakov & Gimelshein 2018, Alg. 3; FA1 §3.1 (Alg. 1 lines 9-12)",
    convention="The rescale uses 0 in place of a running max of -inf, so (-inf) - (-inf) never occurs.",
)
def online_softmax_step(m: torch.Tensor, ell: torch.Tensor, s_block: torch.Tensor):
    """One step of the online-softmax recurrence: fold the block s_block into the running (m, ell)."""
    m_new = torch.maximum(m, s_block.amax(dim=-1))
    m_safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
    P_tilde = torch.exp(s_block - m_safe[..., None])
    alpha = torch.exp(m - m_safe)
    ell_new = alpha * ell + P_tilde.sum(dim=-1)
    return m_new, ell_new, alpha, P_tilde


def _check_partition(block_sizes, n: int) -> list[int]:
    sizes = [int(b) for b in block_sizes]
    if not sizes or any(b <= 0 for b in sizes) or sum(sizes) != n:
        raise ArgumentError("block_sizes",
                            f"block_sizes must be positive integers summing to x.shape[-1] = {n}, got {block_sizes}")
    return sizes


@operation(
    DOC,
    latex=r"(m,\ell)\leftarrow(-\infty,0);\ \text{for each block } j:\ (m,\ell)\leftarrow\mathrm{step}(m,\ell,x^{(j)});"
          r"\quad L=m+\log\ell,\ y=e^{x-L}",
    source="Milakov & Gimelshein 2018, Alg. 3 (online normaliser); FA1 §3.1",
    returns="(y, lse)",
    summary="Softmax of x over its last dimension computed by the online recurrence over the blocks "
            "block_sizes (a partition of the row). Same outputs as softmax.",
    dtypes=("float64",),
    outputs=(
        Output("y", shape="x.shape", dtype="x", device="x"),
        Output("lse", shape="x.shape[:-1]", dtype="float32|float64", device="x"),
    ),
)
def online_softmax(x: torch.Tensor, block_sizes) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("x", x)
    sizes = _check_partition(block_sizes, x.shape[-1])
    (x64,) = _f64(x)
    m = torch.full(x64.shape[:-1], -math.inf, dtype=F64, device=x.device)
    ell = torch.zeros(x64.shape[:-1], dtype=F64, device=x.device)
    for s_block in torch.split(x64, sizes, dim=-1):
        m, ell, _, _ = online_softmax_step(m, ell, s_block)
    m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    L = m_safe + torch.log(ell)
    y = torch.where(ell[..., None] == 0, torch.zeros_like(x64), torch.exp(x64 - L[..., None]))
    return y.to(x.dtype), L


# ---------------------------------------------------------------------------------------------------
# Attention: scores, masks, GQA, the one-shot reference
# ---------------------------------------------------------------------------------------------------

def check_scale(scale, head_dim: int) -> float:
    """scale defaults to 1/sqrt(D); anything else must be a finite real number."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ArgumentError("scale", f"scale must be a finite real number or None, got {scale!r}")
    return float(scale)


def check_attention_args(q, k, v, scale) -> tuple[int, int, int, int, int, int, int, float]:
    """Validate (q, k, v, scale); return B, H, Hkv, Sq, Sk, D, Dv and the scale to use."""
    check_tensor("q", q, rank=4)
    check_tensor("k", k, rank=4)
    check_tensor("v", v, rank=4)
    check_same(("q", "k", "v"), (q, k, v), "dtype")
    check_same(("q", "k", "v"), (q, k, v), "device")
    B, H, Sq, D = q.shape
    check_dim("k", k, 0, B, "batch, as q.shape[0]")
    check_dim("k", k, 3, D, "head dim D, as q.shape[3]")
    Hkv, Sk = k.shape[1], k.shape[2]
    if H % Hkv:
        raise ArgumentError("k.shape[1]",
                            f"k.shape[1] (KV heads Hkv = {Hkv}) must divide q.shape[1] (query heads H = {H})")
    check_dim("v", v, 0, B, "batch, as q.shape[0]")
    check_dim("v", v, 1, Hkv, "KV heads, as k.shape[1]")
    check_dim("v", v, 2, Sk, "key length Sk, as k.shape[2]")
    return B, H, Hkv, Sq, Sk, D, v.shape[3], check_scale(scale, D)


@spec(DOC, latex=r"S=\tau\,QK^\top,\quad \tau=1/\sqrt{d}\ \text{by default}",
      source="FA1 §2.2; flash_attn_interface.py docstring (softmax_scale)")
def scores(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    return tau * q @ k.transpose(-1, -2)


@spec(DOC, latex=r"\text{key } j \text{ is masked for query } i \iff j > i + S_k - S_q",
      source="FlashAttention README (v2.1, bottom-right alignment); tests/test_flash_attn.py construct_local_mask",
      convention="Bottom-right alignment when Sq != Sk (FlashAttention >= 2.1); torch SDPA's is_causal is top-left.")
def causal_mask(Sq: int, Sk: int, device=None) -> torch.Tensor:
    """True where query i may attend to key j."""
    i = torch.arange(Sq, device=device)[:, None]
    j = torch.arange(Sk, device=device)[None, :]
    return j <= i + (Sk - Sq)


@spec(DOC, latex=r"h_{kv}=\lfloor h/(H/H_{kv})\rfloor",
      source="flash-attention tests/test_flash_attn.py attention_ref ('(h g)' layout)",
      convention="Contiguous groups: query heads 0..g-1 share KV head 0.")
def repeat_kv(x: torch.Tensor, H: int) -> torch.Tensor:
    """Expand (B, Hkv, S, d) to (B, H, S, d) so that query head h reads KV head h // (H / Hkv)."""
    return x.repeat_interleave(H // x.shape[1], dim=1)


@operation(
    DOC,
    latex=r"S=\tau QK^\top,\ P=\mathrm{softmax}(S),\ O=PV,\ L_i=\log\sum_j e^{S_{ij}}",
    source="FA1 §2.2 (standard attention, Alg. 0); FA2 §2.2; catalogue/flash_attention.md",
    returns="(o, lse)",
    summary="Exact attention with its log-sum-exp. q (B, H, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv) -> "
            "o (B, H, Sq, Dv) in q's dtype, lse (B, H, Sq) natural log, float32 or wider. scale defaults to "
            "1/sqrt(D); causal is aligned bottom-right; query head h uses KV head h // (H / Hkv); a fully masked "
            "row gives o = 0 and lse = -inf.",
    convention="Causal bottom-right; fully masked rows give O = 0, L = -inf; GQA contiguous groups.",
    baseline="torch.naive",
    outputs=(
        Output("o", shape="q.shape[:3] + v.shape[3:]", dtype="q", device="q"),
        Output("lse", shape="q.shape[:3]", dtype="float32|float64", device="q", requires="lse"),
    ),
    capabilities=("lse", "causal", "gqa", "grad", "block_sizes"),
)
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, scale: float | None = None):
    B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_args(q, k, v, scale)
    Q, K, V = _f64(q, k, v)
    K, V = repeat_kv(K, H), repeat_kv(V, H)
    S = scores(Q, K, tau)
    if causal:
        S = S.masked_fill(~causal_mask(Sq, Sk, S.device), -math.inf)
    P, L = softmax(S)
    O = P @ V
    return O.to(q.dtype), L


# ---------------------------------------------------------------------------------------------------
# The tiled FA2 forward, the merge of partial results, the backward with recomputation
# ---------------------------------------------------------------------------------------------------

@spec(
    DOC,
    latex=r"\tilde O^{(j)}=\mathrm{diag}(\alpha)\,\tilde O^{(j-1)}+\tilde P^{(j)}V_j;\quad "
          r"O=\mathrm{diag}(\ell^{(T_c)})^{-1}\tilde O^{(T_c)},\ L=m^{(T_c)}+\log\ell^{(T_c)}",
    source="FA2 §3.1.1 and Alg. 1 (deferred normalisation; only L is stored for the backward)",
    convention="Outer loop over query blocks of block_q rows, inner loop over key blocks of block_k columns; "
               "any positive block sizes, the last block may be partial.",
)
def tiled_attention(q, k, v, *, causal: bool = False, scale: float | None = None, block_q: int = 32,
                    block_k: int = 32):
    B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_args(q, k, v, scale)
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(b, int) or b <= 0:
            raise ArgumentError(name, f"{name} must be a positive integer, got {b!r}")
    Q, K, V = _f64(q, k, v)
    K, V = repeat_kv(K, H), repeat_kv(V, H)
    dev = q.device
    allowed = causal_mask(Sq, Sk, dev) if causal else torch.ones(Sq, Sk, dtype=torch.bool, device=dev)
    O = torch.empty(B, H, Sq, Dv, dtype=F64, device=dev)
    L = torch.empty(B, H, Sq, dtype=F64, device=dev)
    for i0 in range(0, Sq, block_q):
        Q_i = Q[:, :, i0:i0 + block_q]
        rows = Q_i.shape[2]
        m = torch.full((B, H, rows), -math.inf, dtype=F64, device=dev)
        ell = torch.zeros(B, H, rows, dtype=F64, device=dev)
        O_tilde = torch.zeros(B, H, rows, Dv, dtype=F64, device=dev)
        for j0 in range(0, Sk, block_k):
            S_ij = scores(Q_i, K[:, :, j0:j0 + block_k], tau)
            S_ij = S_ij.masked_fill(~allowed[i0:i0 + block_q, j0:j0 + block_k], -math.inf)
            m, ell, alpha, P_tilde = online_softmax_step(m, ell, S_ij)
            O_tilde = alpha[..., None] * O_tilde + P_tilde @ V[:, :, j0:j0 + block_k]
        no_key = ell == 0  # (a NaN ell is not 0: NaN inputs propagate)
        O[:, :, i0:i0 + block_q] = torch.where(no_key[..., None], 0.0, O_tilde / ell[..., None])
        L[:, :, i0:i0 + block_q] = torch.where(no_key, -math.inf, m + torch.log(ell))
    return O.to(q.dtype), L


REGISTRY.add_implementation(Implementation(
    operation=f"{DOC}.attention", name="spec.tiled", target="specs.flash_attention:tiled_attention",
    origin="spec", dtypes=("float64",), provides=frozenset({"lse", "gqa", "causal", "block_sizes"}),
    notes="FA2 Algorithm 1 in float64 (deferred normalisation), any block sizes",
))


def check_merge_args(o_a, lse_a, o_b, lse_b) -> None:
    """o_a, o_b of one shape (..., Dv), lse_a, lse_b of the shape (...); o_a's shape is the reference, so each
    mismatch names the other argument."""
    check_tensor("o_a", o_a)
    check_tensor("o_b", o_b)
    check_tensor("lse_a", lse_a)
    check_tensor("lse_b", lse_b)
    check_shape("o_b", o_b, o_a.shape, "as o_a")
    check_shape("lse_a", lse_a, o_a.shape[:-1], "o_a.shape[:-1]")
    check_shape("lse_b", lse_b, o_a.shape[:-1], "o_a.shape[:-1]")


@operation(
    DOC,
    latex=r"L=\mathrm{logaddexp}(L_a,L_b),\quad O=e^{L_a-L}O_a+e^{L_b-L}O_b",
    source="flash-attention csrc flash_fwd_combine (split-KV / flash-decoding); catalogue property 3",
    returns="(o, lse)",
    summary="Combine the partial results (o_a, lse_a), (o_b, lse_b) of attention over two disjoint key sets. "
            "o (..., Dv), lse (...). An empty split has lse = -inf and is the identity.",
    convention="Two empty splits merge to o = 0, lse = -inf.",
    dtypes=("float64", "float32"),
    outputs=(
        Output("o", shape="o_a.shape", dtype="o_a", device="o_a"),
        Output("lse", shape="lse_a.shape", dtype="float32|float64", device="o_a"),
    ),
)
def merge(o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor, lse_b: torch.Tensor):
    check_merge_args(o_a, lse_a, o_b, lse_b)
    Oa, La, Ob, Lb = _f64(o_a, lse_a, o_b, lse_b)
    L = torch.logaddexp(La, Lb)
    L_safe = torch.where(torch.isneginf(L), torch.zeros_like(L), L)  # both empty: weights 0, not NaN
    O = torch.exp(La - L_safe)[..., None] * Oa + torch.exp(Lb - L_safe)[..., None] * Ob
    return O.to(o_a.dtype), L


@spec(DOC, latex=r"D_i=\mathrm{rowsum}(dO_i\circ O_i)=\sum_j P_{ij}\,dP_{ij}",
      source="FA1 Alg. 4 line 19 / eq. (4); flash_attn_triton.py _bwd_preprocess_do_o_dot")
def backward_D(dO: torch.Tensor, O: torch.Tensor) -> torch.Tensor:
    return (dO * O).sum(dim=-1)


@spec(DOC, latex=r"P=\exp(S-L)", source="FA2 §3.1.2 (recompute P from Q, K and the stored L)",
      convention="A fully masked row (L = -inf) recomputes P = 0.")
def recompute_P(S: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    L_safe = torch.where(torch.isneginf(L), torch.zeros_like(L), L)
    return torch.exp(S - L_safe[..., None])


def check_attention_backward_args(q, k, v, o, lse, do, scale) -> tuple[int, int, int, int, int, int, int, float]:
    """check_attention_args, then the forward's saved o, lse and the output gradient do, each shape checked on
    its own (a wrong lse is lse's fault, not o's); returns what check_attention_args returns."""
    B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_args(q, k, v, scale)
    check_tensor("o", o, rank=4)
    check_tensor("do", do, rank=4)
    check_tensor("lse", lse, rank=3)
    check_shape("o", o, (B, H, Sq, Dv), "the forward's output, (B, H, Sq, Dv)")
    check_shape("do", do, (B, H, Sq, Dv), "the gradient of o, (B, H, Sq, Dv)")
    check_shape("lse", lse, (B, H, Sq), "the forward's log-sum-exp, (B, H, Sq)")
    return B, H, Hkv, Sq, Sk, D, Dv, tau


@operation(
    DOC,
    latex=r"D=\mathrm{rowsum}(dO\circ O),\ P=e^{S-L},\ dV=P^\top dO,\ dP=dO\,V^\top,\ dS=P\circ(dP-D),\ "
          r"dQ=\tau\,dS\,K,\ dK=\tau\,dS^\top Q",
    source="FA1 Alg. 4 (backward with recomputation); FA2 §3.2; catalogue/flash_attention.md",
    returns="(dq, dk, dv)",
    summary="Gradients of attention from the saved (o, lse) and the output gradient do. q, k, v as in attention, "
            "o (B, H, Sq, Dv), lse (B, H, Sq), do like o -> dq, dk, dv in the inputs' shapes and dtype "
            "(dk, dv summed over the query heads of each KV group).",
    convention="Fully masked rows contribute nothing (P = 0); GQA gradients are summed over each group.",
    baseline="torch.naive",
    outputs=(
        Output("dq", shape="q.shape", dtype="q", device="q"),
        Output("dk", shape="k.shape", dtype="k", device="q"),
        Output("dv", shape="v.shape", dtype="v", device="q"),
    ),
    capabilities=("lse", "causal", "gqa", "block_sizes"),
)
def attention_backward(q, k, v, o, lse, do, *, causal: bool = False, scale: float | None = None):
    B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_backward_args(q, k, v, o, lse, do, scale)
    Q, K, V, O, L, dO = _f64(q, k, v, o, lse, do)
    K, V = repeat_kv(K, H), repeat_kv(V, H)
    S = scores(Q, K, tau)
    if causal:
        S = S.masked_fill(~causal_mask(Sq, Sk, S.device), -math.inf)
    P = recompute_P(S, L)
    D_ = backward_D(dO, O)
    dV = P.transpose(-1, -2) @ dO
    dP = dO @ V.transpose(-1, -2)
    dS = P * (dP - D_[..., None])
    dQ = tau * dS @ K
    dK = tau * dS.transpose(-1, -2) @ Q
    g = H // Hkv  # sum the gradients of the g query heads that share each KV head
    dK = dK.reshape(B, Hkv, g, Sk, D).sum(2)
    dV = dV.reshape(B, Hkv, g, Sk, Dv).sum(2)
    return dQ.to(q.dtype), dK.to(k.dtype), dV.to(v.dtype)


# ---------------------------------------------------------------------------------------------------
# Varlen (packed) attention
# ---------------------------------------------------------------------------------------------------

def check_cu_seqlens(name: str, cu: object, total: int, batch: int | None = None) -> list[int]:
    if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.dtype not in (torch.int32, torch.int64):
        raise ArgumentError(name, f"{name} must be a 1-D int32 tensor [0, cumsum(lengths)], got "
                            f"{type(cu).__name__ if not isinstance(cu, torch.Tensor) else (cu.dtype, tuple(cu.shape))}")
    values = [int(c) for c in cu.tolist()]
    if len(values) < 2 or values[0] != 0 or any(b < a for a, b in zip(values, values[1:])) or values[-1] != total:
        raise ArgumentError(name, f"{name} must start at 0, never decrease and end at the number of packed tokens "
                            f"({total}); got {values}")
    if batch is not None and len(values) != batch + 1:
        raise ArgumentError(name, f"{name} must have {batch + 1} entries (as cu_seqlens_q), got {len(values)}")
    return values


def check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k):
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x, rank=3)
    check_same(("q", "k", "v"), (q, k, v), "dtype")
    check_dim("k", k, 2, q.shape[2], "head dim D, as q.shape[2]")
    check_dim("v", v, 0, k.shape[0], "packed key tokens, as k.shape[0]")
    check_dim("v", v, 1, k.shape[1], "KV heads, as k.shape[1]")
    if q.shape[1] % k.shape[1]:
        raise ArgumentError("k.shape[1]",
                            f"k.shape[1] (KV heads {k.shape[1]}) must divide q.shape[1] (query heads {q.shape[1]})")
    cq = check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0])
    ck = check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], batch=len(cq) - 1)
    return cq, ck


@operation(
    DOC,
    latex=r"O_{b}=\mathrm{attention}(Q_{b},K_{b},V_{b}),\quad "
          r"Q_b=Q[\mathrm{cu}^q_b:\mathrm{cu}^q_{b+1}],\ K_b=K[\mathrm{cu}^k_b:\mathrm{cu}^k_{b+1}]",
    source="flash_attn_varlen_func; bert_padding.unpad_input (cu_seqlens); catalogue/flash_attention.md",
    returns="(o, lse)",
    summary="Packed (varlen) attention: q (Tq, H, D), k (Tk, Hkv, D), v (Tk, Hkv, Dv), cu_seqlens_q and "
            "cu_seqlens_k int32 [0, cumsum(lengths)] of equal length B+1 -> o (Tq, H, Dv), lse (H, Tq). "
            "Block-diagonal: a token of sequence b sees only keys of b; causal alignment is per sequence.",
    convention="Zero-length sequences are allowed; a query sequence with no keys gives o = 0, lse = -inf.",
    baseline="torch.naive",
    outputs=(
        Output("o", shape="q.shape[:2] + v.shape[2:]", dtype="q", device="q"),
        Output("lse", shape="(q.shape[1], q.shape[0])", dtype="float32|float64", device="q", requires="lse"),
    ),
    capabilities=("lse", "causal", "gqa", "grad", "block_sizes"),
)
def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal: bool = False, scale: float | None = None):
    cq, ck = check_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k)
    tau = check_scale(scale, q.shape[2])
    T, H, Dv = q.shape[0], q.shape[1], v.shape[2]
    O = torch.zeros(T, H, Dv, dtype=q.dtype, device=q.device)
    L = torch.full((H, T), -math.inf, dtype=F64, device=q.device)
    for b in range(len(cq) - 1):
        qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        if qs.stop == qs.start:
            continue
        if ks.stop == ks.start:  # no keys: every row of this sequence is fully masked
            continue
        to_bhsd = lambda x: x.permute(1, 0, 2)[None]  # noqa: E731  (T, H, d) -> (1, H, T, d)
        o_b, L_b = attention(to_bhsd(q[qs]), to_bhsd(k[ks]), to_bhsd(v[ks]), causal=causal, scale=tau)
        O[qs] = o_b[0].permute(1, 0, 2)
        L[:, qs] = L_b[0]
    return O, L


# ---------------------------------------------------------------------------------------------------
# Error analysis: the size of the terms each output sums (eqspec/budget.py uses it for the budget's floor)
# ---------------------------------------------------------------------------------------------------
# One rounding of a term t moves the output by about u |t| (Higham, §3.1): an output summing terms t_j is
# conditioned by sum_j |t_j|, not by its own size, which can cancel to 0 (dQ with a single key). Scores are
# terms too: rounding S_ij by u Smag_ij (Smag = tau |Q| |K|^T) moves P_ij by u P_ij Smag_ij.

def magnitude_inputs(q, k, v, causal, scale):
    """The float64 pieces the error analyses start from: the sizes, Q and K, V repeated over the heads, |S| and P, L."""
    B, H, Hkv, Sq, Sk, D, Dv, tau = check_attention_args(q, k, v, scale)
    Q, K, V = (x.detach().to(F64) for x in (q, k, v))
    K, V = repeat_kv(K, H), repeat_kv(V, H)
    S = scores(Q, K, tau)
    S_mag = scores(Q.abs(), K.abs(), abs(tau))
    if causal:
        visible = causal_mask(Sq, Sk, S.device)
        S, S_mag = S.masked_fill(~visible, -math.inf), S_mag.masked_fill(~visible, 0.0)
    P, L = softmax(S)
    return (B, H, Hkv, Sq, Sk, D, Dv, abs(tau)), Q, K, V, S_mag, P, L


def attention_magnitudes(q, k, v, *, causal: bool = False, scale: float | None = None):
    """(mag_o, mag_lse, n): the terms' sizes of o = PV and of lse, and the float64 reduction length."""
    (*_, Sk, D, Dv, tau), Q, K, V, S_mag, P, L = magnitude_inputs(q, k, v, causal, scale)
    O = P @ V
    PS = P * S_mag
    mag_o = P @ V.abs() + PS @ V.abs() + O.abs() * PS.sum(-1, keepdim=True)  # products, and scores' rounding
    mag_lse = S_mag.amax(-1) + torch.where(torch.isfinite(L), L.abs(), 0.0) + 1.0
    return mag_o, mag_lse, Sk + D + 4


def attention_backward_magnitudes(q, k, v, o, lse, do, *, causal: bool = False, scale: float | None = None,
                                  dlse: torch.Tensor | None = None):
    """(mag_dq, mag_dk, mag_dv, n) for the backward's dS = P o (dP - D), dQ = tau dS K, dK = tau dS^T Q, dV = P^T dO.

    ``dlse``: a gradient flowing into lse too (dlse/dS = P), which enters as dS = P o (dP - D + dlse)."""
    (B, H, Hkv, Sq, Sk, D, Dv, tau), Q, K, V, S_mag, P, L = magnitude_inputs(q, k, v, causal, scale)
    dO, O = do.detach().to(F64), o.detach().to(F64)
    dP = dO @ V.transpose(-1, -2)
    D_ = backward_D(dO, O)
    dP_mag = dO.abs() @ V.abs().transpose(-1, -2)
    D_mag = backward_D(dO.abs(), O.abs())
    if dlse is not None:
        dL = torch.where(torch.isfinite(L), dlse.detach().to(F64), 0.0)
        D_, D_mag = D_ - dL, D_mag + dL.abs()
    dS_mag = P * (dP_mag + D_mag[..., None]) + (P * (dP - D_[..., None])).abs() * S_mag
    # A safe softmax differentiated through its max (S - max S without detaching the max, as autograd does for such
    # code) adds the row's sum of dS, exactly 0, to the max key's dS: its rounding is the size of the row's terms.
    at_max = (P == P.amax(-1, keepdim=True)) & (P > 0)
    dS_mag = dS_mag + at_max * dS_mag.sum(-1, keepdim=True)
    g = H // Hkv
    mag_dq = tau * dS_mag @ K.abs()
    mag_dk = (tau * dS_mag.transpose(-1, -2) @ Q.abs()).reshape(B, Hkv, g, Sk, D).sum(2)
    mag_dv = ((P * (1 + S_mag)).transpose(-1, -2) @ dO.abs()).reshape(B, Hkv, g, Sk, Dv).sum(2)
    return mag_dq, mag_dk, mag_dv, Sq + Sk + D + Dv + 8


def softmax_magnitudes(x: torch.Tensor):
    """(mag_y, mag_lse, n): y = exp(x - L) moves by y u (|x - m| + |L| + 1); lse by u (2 max|x| + |L| + 1)."""
    x64 = x.detach().to(F64)
    y, L = softmax(x64)
    finite_x = torch.where(torch.isfinite(x64), x64.abs(), 0.0)
    L_abs = torch.where(torch.isfinite(L), L.abs(), 0.0)
    x_max = finite_x.amax(-1)
    mag_y = y * (1 + finite_x + x_max[..., None] + L_abs[..., None])
    return mag_y, 1 + 2 * x_max + L_abs, x.shape[-1] + 4


REGISTRY.attach_magnitudes(f"{DOC}.attention", attention_magnitudes)
REGISTRY.attach_magnitudes(f"{DOC}.attention_backward", attention_backward_magnitudes)
REGISTRY.attach_magnitudes(f"{DOC}.softmax", softmax_magnitudes)


def attention_gradient_magnitudes(weights, q, k, v, *, causal: bool = False, scale: float | None = None):
    """The gradient of w_o . o + w_lse . lse with respect to q, k and v is the backward's with dO = w_o and
    dlse = w_lse: its terms' sizes (a tiled backward recomputes P = exp(S - L) from its own lse, whose rounding,
    u |L|, the naive autograd never makes: measured 1.3e-12 on dQ of size 46 with |L| ~ 150)."""
    o, lse = attention(q, k, v, causal=causal, scale=scale)
    w_o, w_lse = weights
    mag_dq, mag_dk, mag_dv, n = attention_backward_magnitudes(q, k, v, o, lse, w_o, causal=causal, scale=scale,
                                                              dlse=w_lse)
    return {"q": mag_dq, "k": mag_dk, "v": mag_dv}, n


REGISTRY.attach_gradient_magnitudes(f"{DOC}.attention", attention_gradient_magnitudes)


# ---------------------------------------------------------------------------------------------------
# The FLOP count the benchmarks divide by
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\#\{(i,j): j\le i+S_k-S_q\}\ \text{(causal)},\quad S_qS_k\ \text{(dense)}",
      source="catalogue/flash_attention.md (bottom-right mask)")
def unmasked_pairs(Sq: int, Sk: int, causal: bool) -> int:
    if not causal:
        return Sq * Sk
    return sum(min(Sk, max(0, i + Sk - Sq + 1)) for i in range(Sq))


@operation(
    DOC,
    latex=r"\mathrm{fwd}=2BH\,n_{pairs}(D+D_v),\quad \mathrm{bwd}=2BH\,n_{pairs}(3D+2D_v)\ "
          r"(=2.5\times\mathrm{fwd}\text{ for }D=D_v)",
    source="FA2 §4.1 and benchmarks/benchmark_flash_attention.py (4 B S^2 H D, x2.5 bwd); tritonbench flops",
    returns="flops",
    summary="Matmul FLOPs of attention forward ('fwd'), backward with recomputation ('bwd') or both "
            "('fwd_bwd'): 2 multiply-add FLOPs per unmasked (query, key) pair and head-dim element.",
    convention="Counts the unmasked pairs exactly: causal is Sq(Sq+1)/2 pairs for Sq = Sk, where FlashAttention's "
               "benchmarks use Sq^2/2 (a factor N/(N+1), under 0.1% from N = 1024).",
    dtypes=("float64",),
    outputs=(Output("flops", kind="number", holds="flops >= 0"),),
)
def attention_flops(batch: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int,
                    head_dim_v: int | None = None, *, causal: bool = False, mode: str = "fwd") -> int:
    sizes = (("batch", batch), ("heads", heads), ("seqlen_q", seqlen_q), ("seqlen_k", seqlen_k), ("head_dim", head_dim))
    for name, n in sizes + ((("head_dim_v", head_dim_v),) if head_dim_v is not None else ()):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ArgumentError(name, f"{name} must be a non-negative integer, got {n!r}")
    Dv = head_dim if head_dim_v is None else head_dim_v
    pairs = batch * heads * unmasked_pairs(seqlen_q, seqlen_k, causal)
    fwd = 2 * pairs * (head_dim + Dv)  # S = QK^T, then O = PV
    bwd = 2 * pairs * (3 * head_dim + 2 * Dv)  # recompute S; dV, dP; dQ, dK
    counts = {"fwd": fwd, "bwd": bwd, "fwd_bwd": fwd + bwd}
    if mode not in counts:
        raise ArgumentError("mode", f"mode must be one of {sorted(counts)}, got {mode!r}")
    return counts[mode]


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue/flash_attention.md, "Checkable properties", plus the contracts of the operations)
# ---------------------------------------------------------------------------------------------------

ATT, SMX = f"{DOC}.attention", f"{DOC}.softmax"

claim(DOC, "exact_attention", kind="budget", operations=(ATT,),
      statement="Attention computed by any implementation equals exact softmax attention: o and lse within the "
                "error budget of the float64 spec (2 x the naive same-precision baseline's error + floor).",
      source="FA1 abstract and §3.1 ('exact attention'); FA2 test rule (tests/test_flash_attn.py)")
claim(DOC, "softmax_lse", kind="budget", operations=(SMX,),
      statement="Softmax rows sum to 1, y = exp(x - lse), and lse = log sum exp x (natural log) within budget, "
                "including rows with large logits.",
      source="catalogue property 2; FA1 §2.1")
claim(DOC, "softmax_masked_row", kind="contract", operations=(SMX,),
      statement="A row of -inf (every key masked) gives y = 0 and lse = -inf, never NaN, as a fully masked "
                "attention row does.",
      source="design.md convention (fully masked rows); flash-attention softmax.h (max == -inf ? 0 : max)")
claim(DOC, "online_softmax_any_partition", kind="identity", operations=(f"{DOC}.online_softmax", SMX),
      statement="The online-softmax recurrence over any partition of a row into blocks gives the one-shot softmax "
                "and log-sum-exp (float64: 1e-12 relative).",
      source="Milakov & Gimelshein 2018, Theorem 1; catalogue property 1")
claim(DOC, "tiled_any_block_size", kind="identity", operations=(ATT,),
      statement="The tiled forward with deferred normalisation gives one-shot attention for any block sizes "
                "(float64: 1e-12; other dtypes: within budget).",
      source="FA2 §3.1.1 and Alg. 1; catalogue property 1")
claim(DOC, "merge_associative", kind="identity", operations=(f"{DOC}.merge", ATT),
      statement="Merging the (o, lse) of disjoint key splits in any order or grouping gives the same (o, lse), "
                "equal to attention over all keys; merging an empty split (lse = -inf) is the identity.",
      source="flash_fwd_combine; catalogue property 3")
claim(DOC, "split_kv", kind="budget", operations=(ATT, f"{DOC}.merge"),
      statement="An implementation's (o, lse) on two key splits, merged, equals its result on all keys: its lse is "
                "usable for split-KV decoding (within budget).",
      source="flash-decoding / split-KV (flash_fwd_combine); catalogue property 3")
claim(DOC, "shift_invariance", kind="identity", operations=(ATT,),
      statement="Adding a per-row constant c_i to the scores leaves O unchanged and shifts L by c_i.",
      source="catalogue property 4")
claim(DOC, "backward_identity", kind="identity", operations=(f"{DOC}.attention_backward",),
      statement="D_i = rowsum(dO o O) = rowsum(P o dP), and every row of dS = P o (dP - D) sums to 0; checked on "
                "any backward through their consequences sum_j dK_j = 0 and sum_j <dV_j, v_j> = sum_i D_i "
                "(within the gradient budget).",
      source="FA1 Alg. 4 and eq. (4); catalogue property 5")
claim(DOC, "gradients", kind="budget", operations=(f"{DOC}.attention_backward", ATT),
      statement="dQ, dK, dV equal autograd and central finite differences of <O, dO> (float64), and every "
                "implementation's gradients are within 3 x the naive baseline's error.",
      source="FA1 Alg. 4; FA2 test rule (3x for gradients); catalogue property 6")
claim(DOC, "causal_bottom_right", kind="exact", operations=(ATT,),
      statement="Causal attention is aligned bottom-right: query i sees key j iff j <= i + Sk - Sq; for Sq = Sk "
                "this is the lower triangle.",
      source="FlashAttention README (v2.1); catalogue property 7")
claim(DOC, "fully_masked_rows", kind="exact", operations=(ATT, f"{DOC}.attention_backward"),
      statement="A fully masked row (causal with Sq > Sk) gives O = 0 and lse = -inf, and no NaN in O or in "
                "the gradients.",
      source="design.md convention; catalogue property 7 and bug list (NaN from (-inf) - (-inf))")
claim(DOC, "masked_keys_never_contribute", kind="exact", operations=(ATT,),
      statement="A masked key contributes nothing however large its score: no finite mask sentinel.",
      source="catalogue bug list (finite sentinel: lattice PR #373, flashinfer #4401, Triton's -1e6)")
claim(DOC, "varlen_block_diagonal", kind="identity", operations=(f"{DOC}.varlen_attention",),
      statement="Packed attention equals attention on each sequence separately (per-sequence causal alignment), "
                "and perturbing one sequence leaves every other sequence's output bit-identical.",
      source="flash_attn_varlen_func; catalogue property 8")
claim(DOC, "gqa", kind="identity", operations=(ATT,),
      statement="GQA with Hkv = H is multi-head attention; with groups it equals explicitly repeating each KV "
                "head for its H / Hkv query heads (contiguous groups).",
      source="attention_ref '(h g)' layout; catalogue property 9")
claim(DOC, "known_answers", kind="known-answer", operations=(ATT, f"{DOC}.attention_backward"),
      statement="The catalogue's N = d = 4, dv = 2, tau = 1/2 vectors: O, L, causal O and L, D, dV, dQ row 0.",
      source="catalogue/flash_attention.md, known-answer vectors (recomputed in float64)")
claim(DOC, "flop_count", kind="exact", operations=(f"{DOC}.attention_flops",),
      statement="The analytic FLOP count equals torch's FlopCounterMode on the dense forward and on the backward "
                "with recomputation; backward = 2.5 x forward for D = Dv.",
      source="FA2 §4.1; tritonbench flops; torch.utils.flop_counter")
claim(DOC, "nan_propagation", kind="exact", operations=(ATT,),
      statement="A NaN in query row i makes o row i NaN and leaves every other row finite: NaN is neither "
                "hidden nor spread (documented propagation for NaN inputs).",
      source="design.md (bad input: documented propagation)")
claim(DOC, "attention_contract", kind="contract",
      operations=(ATT, SMX, f"{DOC}.online_softmax", f"{DOC}.varlen_attention"),
      statement="Malformed input (wrong rank, Hkv not dividing H, head-dim mismatch, dtype mismatch, empty "
                "tensors, bad cu_seqlens, block sizes that are not positive or do not partition the row) is "
                "rejected with an error; results have the documented shapes and "
                "dtypes (o in q's dtype, lse float32 or wider).",
      source="design.md (bad input); the operation signatures")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------
# Sizes stay small: the Triton kernels run under the CPU interpreter (one 64 x 64 tile per program there, so
# lengths 64 / 65 and a few above reach a second tile). Head dims are the ones kernels get wrong (1, below tl.dot's
# 16, odd, just below a power of two, 128). Scores are drawn at a chosen spread ``sharp`` whatever the scale and
# head dim: flat rows to one-hot rows (large logits), constant and tied rows, masked entries and masked rows.

from eqspec.domain import FLAG, OMIT, Built, Choice, Domain, Int, Optional, Real  # noqa: E402

HEAD_DIMS = (1, 8, 16, 59, 64, 111, 128)
SCALE = Optional(Real(-2.0, 4.0, edges=(0.0, 1.0, 0.125, -0.5, 1e-3)))  # any finite real: 0, negative, != 1/sqrt(D)
SHARP = Real(0.01, 300.0, edges=(1.0, 30.0), log=True)  # the scores' spread: flat rows to one-hot rows
V_SCALE = Real(0.01, 100.0, edges=(1.0,), log=True)


def _pick(gen: torch.Generator, n: int) -> int:
    return int(torch.randint(0, n, (), generator=gen))


def _rows(gen: torch.Generator, shape, sharp: float, offset: float, masked: str) -> torch.Tensor:
    """Logit rows (..., N): gaussian x sharp + offset; some rows constant, some with duplicated values; with
    masked != "none" entries of -inf (each row keeps one finite), with "rows" also whole rows of -inf."""
    x = torch.randn(shape, generator=gen, dtype=F64) * sharp + offset
    rows = x.reshape(-1, shape[-1])
    n = rows.shape[1]
    for r in range(rows.shape[0]):
        kind = _pick(gen, 8)
        if kind == 0:
            rows[r] = offset  # a constant row: the uniform distribution
        elif kind == 1:
            rows[r] = offset + sharp * torch.randint(-1, 2, (n,), generator=gen).to(F64)  # ties at the max
        if masked != "none":
            drop = torch.rand(n, generator=gen) < 0.4
            drop[_pick(gen, n)] = False
            rows[r] = rows[r].masked_fill(drop, -math.inf)
            if masked == "rows" and _pick(gen, 3) == 0:
                rows[r] = -math.inf  # a fully masked row: y = 0, lse = -inf
    return x


def _softmax_input(gen: torch.Generator, case: dict) -> torch.Tensor:
    shape = ((case["N"],), (case["R"], case["N"]), (2, case["R"], case["N"]))[case["rank"] - 1]
    return _rows(gen, shape, case["sharp"], case["offset"], case["masked"])


def _partition(gen: torch.Generator, case: dict) -> list[int]:
    """A partition of the row into positive blocks: one block, single columns, or random cuts."""
    n = case["N"]
    kind = _pick(gen, 4)
    if kind == 0:
        return [n]
    if kind == 1:
        return [1] * n
    cuts = sorted(set(torch.randint(1, n, (_pick(gen, n) + 1,), generator=gen).tolist())) if n > 1 else []
    bounds = [0, *cuts, n]
    return [b - a for a, b in zip(bounds, bounds[1:])]


SOFTMAX_SIZES = dict(rank=Choice((1, 2, 3)), R=Int(1, 6, edges=(1,)), N=Int(1, 70, edges=(1, 2, 64, 65)),
                     sharp=Real(0.01, 1e3, edges=(1.0, 100.0), log=True),
                     offset=Real(-1e4, 1e4, edges=(0.0, 1e3, -1e3)), masked=Choice(("none", "some", "rows")))

REGISTRY.attach_domain(f"{DOC}.softmax", Domain(
    sizes=SOFTMAX_SIZES,
    args=dict(x=Built(_softmax_input, note="logit rows: large, tied, constant, partly and fully masked")),
    large=dict(N=4096, R=4),
))
REGISTRY.attach_domain(f"{DOC}.online_softmax", Domain(
    sizes=SOFTMAX_SIZES,
    args=dict(x=Built(_softmax_input, note="logit rows: large, tied, constant, partly and fully masked"),
              block_sizes=Built(_partition, note="a partition of the row: one block, single columns, random")),
    large=dict(N=4096, R=4),
))


def _tau(case: dict) -> float:
    scale = case.get("scale", OMIT)
    return 1.0 / math.sqrt(case["D"]) if scale is OMIT or scale is None else float(scale)


def _dv(case: dict) -> int:
    return case["D"] if case["Dv"] == 0 else case["Dv"]


def _qk_entries(case: dict) -> float:
    """The size of q and k entries that gives scores of spread ``sharp`` under the scale in use."""
    tau = abs(_tau(case))
    return 1.0 if tau == 0 else min(16.0, math.sqrt(case["sharp"] / (tau * math.sqrt(case["D"]))))


def _tokens(gen: torch.Generator, shape, axis: int, size: float) -> torch.Tensor:
    """Gaussian rows along ``axis`` (the tokens); some draws with every token equal (tied scores: uniform
    attention) or pairs of duplicated tokens, some with a zero token."""
    x = torch.randn(shape, generator=gen, dtype=F64) * size
    x = x.movedim(axis, 0)
    kind = _pick(gen, 6)
    if kind == 0 and x.shape[0] > 1:
        x[1:] = x[:1].clone()
    elif kind == 1 and x.shape[0] > 1:
        x[1::2] = x[0:x.shape[0] - 1:2][:x[1::2].shape[0]].clone()
    elif kind == 2:
        x[_pick(gen, x.shape[0])] = 0.0
    return x.movedim(0, axis).contiguous()


def _dense(which: str) -> Built:
    def build(gen, case):
        B, Hkv, Sq, Sk, D = case["B"], case["Hkv"], case["Sq"], case["Sk"], case["D"]
        H = Hkv * case["G"]
        if which == "q":
            return _tokens(gen, (B, H, Sq, D), 2, _qk_entries(case))
        if which == "k":
            return _tokens(gen, (B, Hkv, Sk, D), 2, _qk_entries(case))
        return _tokens(gen, (B, Hkv, Sk, _dv(case)), 2, case["vscale"])
    return Built(build, note=f"{which}: scores of spread sharp, tied / duplicated / zero tokens")


def _causal(case: dict) -> bool:
    return case["causal"] is not OMIT and bool(case["causal"])


def _forward(which: int) -> Built:
    """o (which = 0) or lse (which = 1) of the float64 forward on the drawn q, k, v: the saved results."""
    def build(gen, case):
        scale = case["scale"] if case["scale"] is not OMIT else None
        return attention(case["q"], case["k"], case["v"], causal=_causal(case), scale=scale)[which].detach()
    return Built(build, note=("o", "lse")[which] + " of the forward")


def _gqa(case: dict) -> set[str]:
    return {"gqa"} if case["G"] > 1 else set()


ATTENTION_SIZES = dict(B=Int(1, 2, edges=(1,)), Hkv=Int(1, 2, edges=(1,)), G=Int(1, 4, edges=(1, 3)),
                       Sq=Int(1, 80, edges=(1, 64, 65)), Sk=Int(1, 80, edges=(1, 64, 65)), D=Choice(HEAD_DIMS),
                       Dv=Choice((0, 1, 16, 59, 128)),  # 0: Dv = D
                       sharp=SHARP, vscale=V_SCALE)

REGISTRY.attach_domain(f"{DOC}.attention", Domain(
    sizes=ATTENTION_SIZES,
    args=dict(scale=SCALE, causal=Optional(FLAG), q=_dense("q"), k=_dense("k"), v=_dense("v")),
    large=dict(Sq=96, Sk=2048),    needs=_gqa,
))
REGISTRY.attach_domain(f"{DOC}.attention_backward", Domain(
    sizes=dict(ATTENTION_SIZES, doscale=V_SCALE),
    args=dict(scale=SCALE, causal=Optional(FLAG), q=_dense("q"), k=_dense("k"), v=_dense("v"),
              o=_forward(0), lse=_forward(1),
              do=Built(lambda gen, case: _tokens(gen, tuple(case["o"].shape), 2, case["doscale"]),
                       note="output gradient")),
    large=dict(Sq=96, Sk=2048),    needs=_gqa,
))


def _merge_o(gen: torch.Generator, case: dict) -> torch.Tensor:
    return torch.randn(case["R"], case["S"], case["Dv"], generator=gen, dtype=F64) * case["oscale"]


def _merge_lse(first: bool):
    def build(gen, case):
        shape = (case["R"], case["S"])
        if first:
            L = case["offset"] + case["spread"] * torch.randn(shape, generator=gen, dtype=F64)
        else:
            L = case["lse_a"] + case["gap"] * torch.randn(shape, generator=gen, dtype=F64)
            L = torch.where(torch.rand(shape, generator=gen) < 0.2, case["lse_a"], L)  # ties
            L = torch.where(torch.isneginf(L), case["offset"], L)
        empty = torch.rand(shape, generator=gen) < case["empty"]
        return L.masked_fill(empty, -math.inf)  # an empty split (both empty now and then)
    return Built(build, note=f"lse_{'a' if first else 'b'}: offset +- spread, gaps, ties, -inf")


REGISTRY.attach_domain(f"{DOC}.merge", Domain(
    sizes=dict(R=Int(1, 3, edges=(1,)), S=Int(1, 8, edges=(1,)), Dv=Int(1, 70, edges=(1, 64)),
               oscale=V_SCALE, offset=Real(-1e4, 1e4, edges=(0.0, 80.0, -80.0)),
               spread=Real(0.01, 1e3, edges=(1.0,), log=True), gap=Real(0.0, 1e3, edges=(0.0, 1.0, 50.0)),
               empty=Real(0.0, 1.0, edges=(0.0, 0.3, 1.0))),
    args=dict(o_a=Built(_merge_o, note="partial outputs"), lse_a=_merge_lse(True),
              o_b=Built(_merge_o, note="partial outputs"), lse_b=_merge_lse(False)),
    large=dict(S=2048, Dv=128),
))


def _cu_seqlens(which: str) -> Built:
    """[0, cumsum(lengths)] int32 over NB sequences: zero-length sequences, lengths across a tile, the keys' lengths
    equal to the queries', independent, or zero where the queries are not (no keys: o = 0, lse = -inf)."""
    def build(gen, case):
        nb, most = case["NB"], case["Lmax"]
        lengths = torch.randint(0, most + 1, (nb,), generator=gen)
        lengths = torch.where(torch.rand(nb, generator=gen) < 0.25, 0, lengths)
        if which == "k":
            cq = case["cu_seqlens_q"].to(torch.int64)
            kind = _pick(gen, 3)
            if kind == 0:
                lengths = cq.diff()
            elif kind == 1:
                lengths = torch.where(cq.diff() > 0, torch.randint(1, most + 1, (nb,), generator=gen), lengths)
        if int(lengths.sum()) == 0:
            lengths[_pick(gen, nb)] = 1 + _pick(gen, most)
        return torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(torch.int32)
    return Built(build, note=f"cu_seqlens_{which}")


def _packed(which: str) -> Built:
    def build(gen, case):
        Hkv, D = case["Hkv"], case["D"]
        if which == "q":
            return _tokens(gen, (int(case["cu_seqlens_q"][-1]), Hkv * case["G"], D), 0, _qk_entries(case))
        Tk = int(case["cu_seqlens_k"][-1])
        if which == "k":
            return _tokens(gen, (Tk, Hkv, D), 0, _qk_entries(case))
        return _tokens(gen, (Tk, Hkv, _dv(case)), 0, case["vscale"])
    return Built(build, note=f"packed {which}")


REGISTRY.attach_domain(f"{DOC}.varlen_attention", Domain(
    sizes=dict(NB=Int(1, 4, edges=(1,)), Lmax=Int(1, 70, edges=(1, 64, 65)), Hkv=Int(1, 2, edges=(1,)),
               G=Int(1, 4, edges=(1, 3)), D=Choice(HEAD_DIMS), Dv=Choice((0, 1, 16, 59, 128)), sharp=SHARP,
               vscale=V_SCALE),
    args=dict(scale=SCALE, causal=Optional(FLAG), cu_seqlens_q=_cu_seqlens("q"), cu_seqlens_k=_cu_seqlens("k"),
              q=_packed("q"), k=_packed("k"), v=_packed("v")),
    large=dict(NB=3, Lmax=1024),    needs=_gqa,
))

# 0 is in every range (an empty batch counts nothing); the edges favour non-empty sizes so that most draws count
# pairs: a causal count with Sq > Sk (rows that see no key) must meet batch and heads >= 1 to be seen
SEQLEN = Int(0, 20000, edges=(0, 1, 2, 1024))
REGISTRY.attach_domain(f"{DOC}.attention_flops", Domain(
    args=dict(batch=Int(0, 64, edges=(1, 3)), heads=Int(0, 128, edges=(1, 16)), seqlen_q=SEQLEN, seqlen_k=SEQLEN,
              head_dim=Int(0, 256, edges=(0, 1, 64, 128)), head_dim_v=Optional(Int(0, 256, edges=(0, 1, 64))),
              causal=Optional(FLAG), mode=Optional(Choice(("fwd", "bwd", "fwd_bwd")))),
    exact=("flops",),
))
