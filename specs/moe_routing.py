"""Kimi-VL's language model: the Moonlight / DeepSeek-V3 mixture-of-experts layer, as float64 specs.

Papers: DeepSeek-AI 2024, "DeepSeek-V3 Technical Report" (arXiv:2412.19437) §2.1.2 (DeepSeekMoE with
auxiliary-loss-free load balancing, eqs. 12-16 and 17-20); Kimi Team 2025, "Kimi-VL Technical Report"
(arXiv:2504.07491) §2 (the Moonlight MoE language model); Fedus et al. 2021, "Switch Transformers" eq. 4.
Code read beside them: DeepSeek-V3 ``inference/model.py`` (``Gate``, ``MoE``) and transformers'
``DeepseekV3TopkRouter`` / ``DeepseekV3MoE``. Equations and conventions: catalogue/kimi_vl.md.

Notation: T tokens, E routed experts in G groups, K experts per token (top_k). Router scores s = sigma(W_r x)
(or softmax), selection scores c = s + b with the correction bias b, which only *selects*; the gate weights come
from the unbiased s (design.md's convention: dropped groups masked with -inf; normalise, then multiply by the
routed scaling factor). The layer: MoE(x) = Shared(x) + sum_{i in TopK} w_i E_i(x), E_i a SwiGLU expert.

This module is part of the ``kimi_vl`` document (specs/kimi_vl.py imports it and registers the claims).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from eqspec.contracts import ArgumentError
from eqspec.domain import Built, Choice, Domain, Int, Optional, Real
from eqspec.outputs import Output
from eqspec.registry import REGISTRY, claim, operation, spec  # noqa: F401  (claim: used by specs/kimi_vl.py)

from .validators import check_tensor

DOC = "kimi_vl"
F64 = torch.float64
SCORINGS = ("sigmoid", "softmax")
DTYPES = ("float64", "float32", "bfloat16")


@dataclass(frozen=True)
class RouterConfig:
    """The router's hyper-parameters (names as in DeepSeek-V3's config.json)."""

    top_k: int
    n_group: int = 1
    topk_group: int = 1
    scoring: str = "sigmoid"  # scoring_func
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0


# Moonlight-16B-A3B (moonshotai/Moonlight-16B-A3B config.json; catalogue/kimi_vl.md): 64 routed experts, 6 per
# token, 2 shared experts of width moe_intermediate_size, sigmoid scores, one group, routed scaling 2.446.
MOONLIGHT = RouterConfig(top_k=6, n_group=1, topk_group=1, scoring="sigmoid", norm_topk_prob=True,
                         routed_scaling_factor=2.446)
MOONLIGHT_SHAPE = dict(hidden_size=2048, n_routed_experts=64, n_shared_experts=2, moe_intermediate_size=1408)
NORM_GUARD = 1e-20  # DeepSeek-V3 / transformers: w / (sum w + 1e-20)


def check_config(config, n_experts: int) -> RouterConfig:
    if not isinstance(config, RouterConfig):
        raise ArgumentError("config", f"config must be a RouterConfig, got {type(config).__name__}")
    for name in ("top_k", "n_group", "topk_group"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError("config", f"config.{name} must be a positive integer, got {value!r}")
    if config.scoring not in SCORINGS:
        raise ArgumentError("config.scoring", f"config.scoring must be one of {SCORINGS}, got {config.scoring!r}")
    if n_experts % config.n_group:
        raise ArgumentError("config.n_group",
                            f"config.n_group ({config.n_group}) must divide the number of experts ({n_experts})")
    group_size = n_experts // config.n_group
    if config.n_group > 1 and group_size < 2:
        raise ArgumentError("config",
                            f"each group needs at least 2 experts (its score is a top-2 sum), got {group_size}")
    if config.topk_group > config.n_group:
        raise ArgumentError("config.topk_group",
                            f"config.topk_group ({config.topk_group}) must be at most n_group ({config.n_group})")
    if config.top_k > config.topk_group * group_size:
        raise ArgumentError("config.top_k",
                            f"config.top_k ({config.top_k}) must be at most the experts of the kept groups "
                            f"(topk_group x group size = {config.topk_group * group_size})")
    rsf = config.routed_scaling_factor
    if isinstance(rsf, bool) or not isinstance(rsf, (int, float)) or not math.isfinite(rsf) or rsf <= 0:
        raise ArgumentError("config.routed_scaling_factor",
                            f"config.routed_scaling_factor must be a positive finite number, got {rsf!r}")
    return config


# ---------------------------------------------------------------------------------------------------
# The router (DeepSeek-V3 §2.1.2, eqs. 15-16 with the bias of eq. 16's selection; inference/model.py Gate)
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"s_{i,t}=\sigma(u_t^\top e_i)\quad(\text{or }\mathrm{softmax}_i(u_t^\top e_i))",
      source="DeepSeek-V3 eq. 15 (sigmoid); DeepSeek-V2 (softmax); Gate.forward scoring_func",
      convention="Computed in float32 or wider by every implementation (the router's logits are never 16-bit).")
def affinity(logits: torch.Tensor, scoring: str) -> torch.Tensor:
    return torch.sigmoid(logits) if scoring == "sigmoid" else torch.softmax(logits, dim=-1)


@spec(DOC, latex=r"g_j=\sum \mathrm{top2}\{c_{i,t}: i\in\text{group } j\},\quad c_{i,t}=s_{i,t}+b_i",
      source="DeepSeek-V3 inference/model.py Gate (topk(2).sum when a bias is present); DeepseekV3TopkRouter",
      convention="The top-2 sum is used with or without a bias (the official code uses amax without one).")
def group_scores(c: torch.Tensor, n_group: int) -> torch.Tensor:
    T, E = c.shape
    return c.view(T, n_group, E // n_group).topk(2, dim=-1).values.sum(-1)


@spec(DOC, latex=r"\tilde c_{i,t}=\begin{cases}c_{i,t}&i\in\text{kept groups}\\-\infty&\text{otherwise}\end{cases}",
      source="DeepSeek-V3 inference/model.py Gate (masked_fill(mask, float('-inf')))",
      convention="-inf, never 0.0: with 0.0 a dropped expert beats every kept one whose biased score is negative "
                 "(vLLM PR #13474, SGLang PR #3705).")
def mask_dropped_groups(c: torch.Tensor, n_group: int, topk_group: int) -> torch.Tensor:
    T, E = c.shape
    if n_group == 1:
        return c
    kept = group_scores(c, n_group).topk(topk_group, dim=-1).indices
    keep = torch.zeros(T, n_group, dtype=torch.bool, device=c.device).scatter_(1, kept, True)
    keep = keep[:, :, None].expand(T, n_group, E // n_group).reshape(T, E)
    return c.masked_fill(~keep, -math.inf)


@spec(DOC, latex=r"w_{i,t}=\gamma\,\frac{s_{i,t}}{\sum_{j\in\mathrm{TopK}_t}s_{j,t}+10^{-20}}\ "
                 r"(i\in\mathrm{TopK}_t=\mathrm{topk}(\tilde c_t,K)),\quad \gamma=\text{routed\_scaling\_factor}",
      source="DeepSeek-V3 eq. 13 and 16 (weights from s, not s + b); DeepseekV3TopkRouter",
      convention="Normalise (when norm_topk_prob), then multiply by the routed scaling factor, once.")
def gate_weights(s: torch.Tensor, indices: torch.Tensor, config: RouterConfig) -> torch.Tensor:
    w = s.gather(1, indices)
    if config.norm_topk_prob:
        w = w / (w.sum(-1, keepdim=True) + NORM_GUARD)
    return w * config.routed_scaling_factor


def check_route_args(logits, bias, config):
    check_tensor("logits", logits, rank=2)
    check_tensor("bias", bias, rank=1)
    if bias.shape[0] != logits.shape[1]:
        raise ArgumentError("bias", f"bias must have one entry per expert (logits.shape[1] = {logits.shape[1]}), "
                            f"got shape {tuple(bias.shape)}")
    return check_config(config, logits.shape[1])


@operation(
    DOC,
    latex=r"s=\sigma(\ell),\ c=s+b,\ \mathrm{TopK}_t=\mathrm{topk}(\mathrm{mask}_{G}(c_t),K),\ "
          r"w_t=\gamma\,s_{\mathrm{TopK}_t}/\big(\textstyle\sum s_{\mathrm{TopK}_t}+10^{-20}\big)",
    source="DeepSeek-V3 §2.1.2 eqs. 13-16; inference/model.py Gate; transformers DeepseekV3TopkRouter",
    dtypes=DTYPES,
    returns="(indices, weights)",
    summary="Group-limited top-k routing. logits (T, E) router logits u_t^T e_i, bias (E) the correction bias "
            "(selection only), config a RouterConfig -> indices (T, top_k) int64 (distinct experts, any order), "
            "weights (T, top_k) float32 or wider, weights[t, j] belonging to indices[t, j].",
    convention="Scores in float32 or wider; dropped groups masked with -inf; weights from the unbiased scores.",
    baseline="torch.naive",
    outputs=(
        Output("indices", shape="(logits.shape[0], config.top_k)", dtype="int64", device="logits"),
        Output("weights", shape="(logits.shape[0], config.top_k)", dtype="float32|float64", device="logits"),
    ),
    capabilities=("sigmoid", "softmax", "bias", "groups", "scaling", "shared", "grad"),
)
def route(logits: torch.Tensor, bias: torch.Tensor, config: RouterConfig):
    config = check_route_args(logits, bias, config)
    ell, b = logits.to(F64), bias.to(F64)
    s = affinity(ell, config.scoring)
    c = s + b  # selection only: b never reaches the weights, so it gets no gradient
    indices = mask_dropped_groups(c, config.n_group, config.topk_group).topk(config.top_k, dim=-1).indices
    return indices, gate_weights(s, indices, config)


# ---------------------------------------------------------------------------------------------------
# The aux-loss-free bias update and the balance losses
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"b_i\leftarrow b_i-\gamma\,\mathrm{sign}\big(c_i-\bar c\big),\quad \bar c=\tfrac1E\sum_j c_j",
    source="DeepSeek-V3 §2.1.2 ('decrease b_i by gamma if its expert is overloaded, increase it if underloaded'); "
           "gamma = 0.001 for most of pre-training",
    returns="bias",
    summary="One auxiliary-loss-free balancing step. bias (E) float, counts (E) tokens routed to each expert in "
            "the step, gamma > 0 -> the new bias (E) in bias's dtype. An expert at exactly the mean load keeps "
            "its bias.",
    dtypes=("float64",),
    outputs=(Output("bias", shape="bias.shape", dtype="bias", device="bias"),),
)
def bias_update(bias: torch.Tensor, counts: torch.Tensor, gamma: float = 0.001) -> torch.Tensor:
    check_tensor("bias", bias, rank=1)
    if not isinstance(counts, torch.Tensor) or counts.shape != bias.shape:
        raise ArgumentError("counts",
                            f"counts must be a tensor of shape {tuple(bias.shape)} (one count per expert), got "
                            f"{tuple(counts.shape) if isinstance(counts, torch.Tensor) else type(counts).__name__}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
        raise ArgumentError("gamma", f"gamma must be a positive number, got {gamma!r}")
    load = counts.to(F64)
    return (bias.to(F64) - gamma * torch.sign(load - load.mean())).to(bias.dtype)


BALANCE_FORMS = ("deepseek_v3", "switch", "mixtral")


@spec(DOC, latex=r"\mathcal L=\alpha\sum_i f_iP_i,\ f_i=\frac{N_r}{K_rT}\sum_t\mathbb 1[i\in\mathrm{TopK}_t],\ "
                 r"P_i=\frac1T\sum_t s'_{i,t},\ s'_{i,t}=\frac{s_{i,t}}{\sum_j s_{j,t}}",
      source="DeepSeek-V3 eqs. 17-20 (complementary sequence-wise balance loss)")
def sequence_balance_loss(s: torch.Tensor, counts: torch.Tensor, K: int, alpha: float) -> torch.Tensor:
    T, N_r = s.shape
    f = N_r / (K * T) * counts
    P = (s / s.sum(-1, keepdim=True)).mean(0)
    return alpha * (f * P).sum()


@spec(DOC, latex=r"\mathcal L=\alpha N\sum_i f_iP_i,\ f_i=\frac1T\sum_t\mathbb 1[\arg\max p_t=i],\ "
                 r"P_i=\frac1T\sum_t p_{i,t}",
      source="Fedus et al. 2021, Switch Transformers, eqs. 4-6 (top-1; with K > 1 the fraction counts each slot)")
def switch_balance_loss(p: torch.Tensor, counts: torch.Tensor, K: int, alpha: float) -> torch.Tensor:
    T, N = p.shape
    return alpha * N * ((counts / (T * K)) * p.mean(0)).sum()


@spec(DOC, latex=r"\mathcal L=\alpha E\sum_i \Big(\frac1T\sum_{t,k}\mathbb 1[e_{t,k}=i]\Big)P_i",
      source="transformers models/mixtral load_balancing_loss_func (also Qwen-MoE)",
      convention="The count is not divided by K: the value is top_k (times alpha) at perfect balance.")
def mixtral_balance_loss(p: torch.Tensor, counts: torch.Tensor, K: int, alpha: float) -> torch.Tensor:
    T, E = p.shape
    return alpha * E * ((counts / T) * p.mean(0)).sum()


def check_balance_loss_args(scores, indices, form) -> None:
    check_tensor("scores", scores, rank=2)
    # indices: T rows as scores, and experts in [0, E): an index out of range would count a nonexistent expert
    check_indices(indices, scores.shape[1], scores.shape[0])
    if form not in BALANCE_FORMS:
        raise ArgumentError("form", f"form must be one of {BALANCE_FORMS}, got {form!r}")


@operation(
    DOC,
    latex=r"\mathcal L_{\mathrm{DSv3}}=\alpha\sum_if_iP_i,\quad \mathcal L_{\mathrm{Switch}}=\alpha N\sum_if_iP_i,"
          r"\quad \mathcal L_{\mathrm{Mixtral}}=\alpha E\sum_{i}\Big(\sum_k f_{k,i}\Big)P_i",
    source="DeepSeek-V3 eqs. 17-20; Switch Transformers eq. 4; transformers load_balancing_loss_func",
    returns="loss",
    summary="Balance loss of one sequence. scores (T, E) the router's affinities (sigmoid or softmax), indices "
            "(T, K) the selected experts, form in deepseek_v3 | switch | mixtral, alpha the coefficient -> a "
            "0-d float loss. At perfect balance: alpha (deepseek_v3, switch), alpha x K (mixtral).",
    dtypes=("float64", "float32"),
    baseline="torch.naive",
    outputs=(Output("loss", shape="()", dtype="float32|float64", device="scores"),),
    capabilities=("deepseek_v3", "switch", "mixtral"),
)
def balance_loss(scores: torch.Tensor, indices: torch.Tensor, *, form: str = "deepseek_v3", alpha: float = 1.0):
    check_balance_loss_args(scores, indices, form)
    T, E = scores.shape
    counts = torch.bincount(indices.reshape(-1), minlength=E).to(F64)
    fn = {"deepseek_v3": sequence_balance_loss, "switch": switch_balance_loss, "mixtral": mixtral_balance_loss}[form]
    return fn(scores.to(F64), counts, indices.shape[1], float(alpha))


# ---------------------------------------------------------------------------------------------------
# Dispatch (tokens to expert buffers) and combine (the weighted sum back): capacity-free
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\pi(t,j)=o_{e_{t,j}}+\#\{(t',j'):e_{t',j'}=e_{t,j},\ t'k+j'<tk+j\},\ "
                 r"o_e=\sum_{e'<e}n_{e'}",
      source="the sort/permute MoE (MegaBlocks, Gale et al. 2022 §5; vLLM moe_align_block_size)",
      convention="Expert buffers in expert order; inside a buffer, slots in increasing (token, slot) order (a "
                 "stable sort by expert). No capacity: no token is dropped.")
def dispatch_positions(indices: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions (T, K), counts (E)): where slot (t, j) lands in the concatenated expert buffers."""
    flat = indices.reshape(-1)
    counts = torch.bincount(flat, minlength=n_experts)
    offsets = torch.cumsum(counts, 0) - counts
    positions = torch.empty_like(flat)
    for e in range(n_experts):  # the definition: rank among the slots routed to e, plus e's offset
        slots = (flat == e).nonzero().flatten()
        positions[slots] = offsets[e] + torch.arange(len(slots), device=flat.device)
    return positions.view(indices.shape), counts


def check_indices(indices, n_experts: int, T: int | None = None) -> None:
    if not isinstance(indices, torch.Tensor) or indices.dim() != 2 or indices.dtype != torch.int64:
        got = (indices.dtype, tuple(indices.shape)) if isinstance(indices, torch.Tensor) else type(indices)
        raise ArgumentError("indices", f"indices must be an int64 tensor (T, K), got {got}")
    if T is not None and indices.shape[0] != T:
        raise ArgumentError("indices.shape[0]",
                            f"indices.shape[0] must be the number of tokens {T}, got shape {tuple(indices.shape)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_experts):
        raise ArgumentError("indices", f"indices must lie in [0, n_experts = {n_experts}), got values in "
                            f"[{int(indices.min())}, {int(indices.max())}]")


@operation(
    DOC,
    latex=r"X^{\mathrm{sorted}}_{\pi(t,j)}=x_t",
    source="the sort/permute MoE dispatch; catalogue/kimi_vl.md ('dispatch is a bijection onto the expert buffers')",
    dtypes=DTYPES,
    returns="(x_sorted, counts, positions)",
    summary="Copy each token to its K expert buffers. x (T, D), indices (T, K) int64, n_experts -> x_sorted "
            "(T K, D) in x's dtype (buffers in expert order, stable), counts (E) int64, positions (T, K) int64 "
            "with x_sorted[positions[t, j]] = x[t].",
    convention="Stable order inside each expert's buffer; capacity-free.",
    outputs=(
        Output("x_sorted", shape="(indices.numel(), x.shape[1])", dtype="x", device="x"),
        Output("counts", shape="(n_experts,)", dtype="int64", device="x"),
        Output("positions", shape="indices.shape", dtype="int64", device="x"),
    ),
)
def dispatch(x: torch.Tensor, indices: torch.Tensor, n_experts: int):
    check_tensor("x", x, rank=2)
    check_indices(indices, n_experts, x.shape[0])
    positions, counts = dispatch_positions(indices, n_experts)
    x_sorted = torch.empty(indices.numel(), x.shape[1], dtype=x.dtype, device=x.device)
    x_sorted[positions.reshape(-1)] = x.repeat_interleave(indices.shape[1], dim=0)
    return x_sorted, counts, positions


def check_combine_args(y_sorted, positions, weights) -> None:
    check_tensor("y_sorted", y_sorted, rank=2)
    check_tensor("weights", weights, rank=2)
    check_indices(positions, y_sorted.shape[0])
    if positions.shape != weights.shape:
        raise ArgumentError("weights", f"weights must have the shape of positions {tuple(positions.shape)}, got "
                            f"{tuple(weights.shape)}")


@operation(
    DOC,
    latex=r"y_t=\sum_{j<K}w_{t,j}\,Y^{\mathrm{sorted}}_{\pi(t,j)}",
    source="the sort/permute MoE combine (unpermute); DeepSeek-V3 eq. 12's routed sum",
    dtypes=DTYPES,
    returns="y",
    summary="The weighted sum back to token order. y_sorted (T K, D) expert outputs in buffer order, positions "
            "(T, K) int64 from dispatch, weights (T, K) -> y (T, D) in y_sorted's dtype.",
    baseline="torch.naive",
    outputs=(Output("y", shape="(positions.shape[0], y_sorted.shape[1])", dtype="y_sorted", device="y_sorted"),),
)
def combine(y_sorted: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    check_combine_args(y_sorted, positions, weights)
    Y, w = y_sorted.to(F64), weights.to(F64)
    y = (w[:, :, None] * Y[positions]).sum(1)
    return y.to(y_sorted.dtype)


# ---------------------------------------------------------------------------------------------------
# The MoE layer: shared experts plus routed SwiGLU experts
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"E(x)=W_d\big(\mathrm{SiLU}(W_gx)\odot W_ux\big)",
      source="Shazeer 2020 (GLU variants); transformers DeepseekV3MLP; inference/model.py Expert")
def swiglu(x: torch.Tensor, W_g: torch.Tensor, W_u: torch.Tensor, W_d: torch.Tensor) -> torch.Tensor:
    return (torch.nn.functional.silu(x @ W_g.T) * (x @ W_u.T)) @ W_d.T


def check_moe_args(x, w_router, bias, w_gate, w_up, w_down, config, shared):
    check_tensor("x", x, rank=2)
    check_tensor("w_router", w_router, rank=2)
    T, D = x.shape
    E = w_router.shape[0]
    if w_router.shape[1] != D:
        raise ArgumentError("w_router", f"w_router must have shape (E, D = {D}), got {tuple(w_router.shape)}")
    check_tensor("w_gate", w_gate, rank=3)
    F = w_gate.shape[1]
    for name, w, shape in (("w_gate", w_gate, (E, F, D)), ("w_up", w_up, (E, F, D)), ("w_down", w_down, (E, D, F))):
        check_tensor(name, w, rank=3)
        if tuple(w.shape) != shape:
            raise ArgumentError(name, f"{name} must have shape (E, F, D) / (E, D, F) = {shape}, got {tuple(w.shape)}")
    if shared is not None:
        if not isinstance(shared, (tuple, list)) or len(shared) != 3:
            raise ArgumentError("shared",
                                "shared must be None or a tuple (s_gate (Fs, D), s_up (Fs, D), s_down (D, Fs))")
        Fs = shared[0].shape[0] if isinstance(shared[0], torch.Tensor) and shared[0].dim() == 2 else -1
        for name, w, shape in zip(("s_gate", "s_up", "s_down"), shared, ((Fs, D), (Fs, D), (D, Fs))):
            check_tensor(f"shared {name}", w, rank=2)
            if tuple(w.shape) != shape:
                raise ArgumentError("shared", f"shared {name} must have shape {shape}, got {tuple(w.shape)}")
    return check_route_args(x.new_zeros(1, E), bias, config)


@operation(
    DOC,
    latex=r"\mathrm{MoE}(x_t)=\mathrm{Shared}(x_t)+\sum_{i\in\mathrm{TopK}_t}w_{i,t}\,E_i(x_t),\quad "
          r"E_i(x)=W^{(i)}_d\big(\mathrm{SiLU}(W^{(i)}_gx)\odot W^{(i)}_ux\big)",
    source="DeepSeek-V3 eq. 12 (without the residual, which the decoder layer adds); transformers DeepseekV3MoE",
    dtypes=DTYPES,
    returns="y",
    summary="The DeepSeekMoE layer. x (T, D), w_router (E, D), bias (E), w_gate and w_up (E, F, D), w_down "
            "(E, D, F), config a RouterConfig, shared None or (s_gate (Fs, D), s_up (Fs, D), s_down (D, Fs)) -> "
            "y (T, D) in x's dtype. Router logits are computed in float32 or wider.",
    convention="Capacity-free: every token reaches its K experts. The shared experts are one SwiGLU of width "
               "n_shared x moe_intermediate_size.",
    baseline="torch.loop",
    outputs=(Output("y", shape="x.shape", dtype="x", device="x"),),
    capabilities=("sigmoid", "softmax", "bias", "groups", "scaling", "shared", "grad"),
)
def moe(x, w_router, bias, w_gate, w_up, w_down, config: RouterConfig, shared=None):
    config = check_moe_args(x, w_router, bias, w_gate, w_up, w_down, config, shared)
    X = x.to(F64)
    indices, weights = route(X @ w_router.to(F64).T, bias, config)
    W_g, W_u, W_d = (w.to(F64) for w in (w_gate, w_up, w_down))
    y = torch.zeros_like(X)
    for t in range(X.shape[0]):  # the equation, token by token
        for j in range(config.top_k):
            i = int(indices[t, j])
            y[t] = y[t] + weights[t, j] * swiglu(X[t], W_g[i], W_u[i], W_d[i])
    if shared is not None:
        y = y + swiglu(X, *(w.to(F64) for w in shared))
    return y.to(x.dtype)


def moe_magnitudes(x, w_router, bias, w_gate, w_up, w_down, config, shared=None):
    """(mag_y, n): the size of the terms y sums, |w| |W_d| |SiLU(W_g x) o W_u x| over the routed and shared experts
    plus the inner products' terms, and the float64 reduction length."""
    X = x.detach().to(F64)
    indices, weights = route(X @ w_router.detach().to(F64).T, bias.detach(), config)

    def size(Wg, Wu, Wd):
        g, u = X @ Wg.T, X @ Wu.T
        g_mag, u_mag = X.abs() @ Wg.abs().T, X.abs() @ Wu.abs().T
        h_mag = torch.nn.functional.silu(g).abs() * u_mag + (g_mag * u.abs())  # SiLU is 1.1-Lipschitz: ~g_mag
        return h_mag @ Wd.abs().T

    W_g, W_u, W_d = (w.detach().to(F64) for w in (w_gate, w_up, w_down))
    mag = torch.zeros_like(X)
    for i in indices.unique().tolist():
        chosen = (indices == i)
        w_i = (weights.abs() * chosen).sum(-1, keepdim=True)
        mag = mag + w_i * size(W_g[i], W_u[i], W_d[i])
    if shared is not None:
        mag = mag + size(*(w.detach().to(F64) for w in shared))
    return mag, x.shape[1] + w_gate.shape[1] + config.top_k + 4


REGISTRY.attach_magnitudes(f"{DOC}.moe", moe_magnitudes)


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------

EXPERTS = Choice((1, 2, 3, 4, 6, 8, 12, 16))  # 1 expert, odd counts (groups of 3), the usual powers of two
LOGIT_QUANTUM = 2.0 ** -3  # logits on a grid of 1/8 (exact in bfloat16 below 32): distinct values stay apart
BIAS_QUANTUM = 2.0 ** -6
NEAR = 2.0 ** -8  # a near tie: one column 1/256 above another, resolved by a float32 router


def _router_config(gen, case) -> RouterConfig:
    """A valid RouterConfig for E = case["E"]: scoring, norm_topk_prob and routed_scaling_factor from the drawn
    sizes; n_group among the divisors of E leaving groups of >= 2 (or 1, half the time), topk_group and top_k
    anywhere in their valid ranges (1 ... the kept experts, at most 8)."""
    E = case["E"]
    divisors = [g for g in range(2, E + 1) if E % g == 0 and E // g >= 2]
    n_group = 1
    if case["groups"] and divisors:
        n_group = divisors[int(torch.randint(0, len(divisors), (), generator=gen))]
    topk_group = int(torch.randint(1, n_group + 1, (), generator=gen))
    kept = topk_group * (E // n_group)
    top_k = 1 if case["top1"] else int(torch.randint(1, min(kept, 8) + 1, (), generator=gen))
    return RouterConfig(top_k=top_k, n_group=n_group, topk_group=topk_group, scoring=case["scoring"],
                        norm_topk_prob=case["norm"], routed_scaling_factor=case["rsf"] if case["scaling"] else 1.0)


# The draws named like capabilities (scoring values, groups, scaling, bias) are drawn only for implementations that
# declare them (a Mixtral router has softmax scoring and none of the others)
CONFIG_SIZES = dict(scoring=Choice(SCORINGS), groups=Choice((False, True)), top1=Choice((False, True)),
                    norm=Choice((True, False)), scaling=Choice((False, True)),
                    rsf=Real(0.01, 10.0, edges=(1.0, 2.446, 0.5), log=True))
CONFIG = Built(_router_config, note="RouterConfig: scoring, groups, top_k, norm, scaling")


def _tie_pattern(gen, case) -> dict:
    """Which columns are tied (shared by the logits and the bias so that the selection scores tie too)."""
    E = case["E"]
    kind = int(torch.randint(0, 4, (), generator=gen))  # 0: none, 1: exact ties, 2: near ties, 3: all equal
    pairs = torch.randint(0, E, (int(torch.randint(1, E + 1, (), generator=gen)), 2), generator=gen).tolist()
    return dict(kind=kind, pairs=pairs)


def _apply_ties(t: torch.Tensor, ties: dict, near: float) -> torch.Tensor:
    t = t.clone()
    if ties["kind"] == 3:
        return t[..., :1].expand(t.shape).clone()
    if ties["kind"] in (1, 2):
        for src, dst in ties["pairs"]:
            if src != dst:
                t[..., dst] = t[..., src] + (near if ties["kind"] == 2 else 0.0)
    return t


def _route_logits(gen, case) -> torch.Tensor:
    """(T, E) logits of spread ``scale`` on a grid of 1/8, clamped to +-10 (where a float32 sigmoid still tells
    grid neighbours apart), with exact ties, near ties (1/256 apart) or all-equal rows per the tie pattern."""
    x = torch.randn(case["T"], case["E"], generator=gen, dtype=F64) * case["scale"]
    x = (x / LOGIT_QUANTUM).round().clamp(-10 / LOGIT_QUANTUM, 10 / LOGIT_QUANTUM) * LOGIT_QUANTUM
    return _apply_ties(x, case["ties"], NEAR)


def _route_bias(gen, case) -> torch.Tensor:
    """(E) correction bias: none (zeros) unless the case is biased, then one constant for all, or spread
    ``bias_scale`` on a grid of 1/64, with the logits' exact ties repeated (tied columns keep tied selection scores).
    A biased case always has a nonzero bias: a constant changes no selection but every weight taken from s + b."""
    E, kind = case["E"], int(torch.randint(0, 2, (), generator=gen))
    if not case["biased"]:
        return torch.zeros(E, dtype=F64)
    if kind == 0:
        return torch.full((E,), float(torch.randn((), generator=gen, dtype=F64)) * case["bias_scale"], dtype=F64)
    b = torch.randn(E, generator=gen, dtype=F64) * case["bias_scale"]
    b = (b / BIAS_QUANTUM).round().clamp(-100, 100) * BIAS_QUANTUM
    return _apply_ties(b, case["ties"], 0.0)


ROUTE_SIZES = dict(T=Int(1, 12, edges=(1,)), E=EXPERTS, scale=Real(0.05, 8.0, edges=(1.0, 8.0), log=True),
                   bias_scale=Real(0.01, 1.5, edges=(0.1, 1.0), log=True),
                   ties=Built(_tie_pattern, note="tied columns"), biased=Choice((False, True)), **CONFIG_SIZES)


def _needs_bias(case: dict) -> set[str]:
    """A nonzero correction bias needs an implementation that takes one ("bias")."""
    return {"bias"} if case["biased"] else set()

def experts_by_index(result):
    """(indices, weights) with each token's experts in increasing index, each weight kept with its expert: the route
    is a set of (expert, weight) pairs, in whatever order a top-k returns them."""
    indices, weights = result
    order = indices.argsort(dim=-1)
    return indices.gather(-1, order), weights.gather(-1, order.to(weights.device))


REGISTRY.attach_domain(f"{DOC}.route", Domain(
    sizes=ROUTE_SIZES,
    args=dict(logits=Built(_route_logits, note="(T, E) logits on a 1/8 grid with ties"),
              bias=Built(_route_bias, note="(E) bias: zeros, constant or spread"), config=CONFIG),
    exact=("indices",),
    large=dict(T=4096, E=64),
    needs=_needs_bias,
    canonical=experts_by_index,
))


def _loads(gen, case) -> torch.Tensor:
    """(E) token counts: at random, all equal (every expert at the mean), one expert taking everything, all zero,
    or balanced but for a pair; int64, int32 or float64 (fractional loads)."""
    E, kind = case["E"], int(torch.randint(0, 5, (), generator=gen))
    if kind == 0:
        c = torch.randint(0, 50, (E,), generator=gen).to(F64)
    elif kind == 1:
        c = torch.full((E,), 7.0, dtype=F64)
    elif kind == 2:
        c = torch.zeros(E, dtype=F64)
        c[int(torch.randint(0, E, (), generator=gen))] = 100.0
    elif kind == 3:
        c = torch.zeros(E, dtype=F64)
    else:
        c = torch.full((E,), 4.0, dtype=F64)
        if E >= 2:
            c[0], c[-1] = 3.0, 5.0
    dtype = (torch.int64, torch.int32, F64)[int(torch.randint(0, 3, (), generator=gen))]
    if dtype == F64 and kind == 0:
        return c * 0.37  # fractional loads
    return c.to(dtype)


REGISTRY.attach_domain(f"{DOC}.bias_update", Domain(
    sizes=dict(E=Int(1, 16, edges=(1, 2)), spread=Real(0.0, 2.0, edges=(0.0, 0.01))),
    args=dict(bias=Built(lambda gen, case: torch.randn(case["E"], generator=gen, dtype=F64) * case["spread"],
                         note="(E) bias"),
              counts=Built(_loads, note="(E) loads"),
              gamma=Optional(Real(1e-8, 10.0, edges=(1e-3, 1e-8, 1.0), log=True))),
    exact=("bias",),
    large=dict(E=4096),
))


def _affinities(gen, case) -> torch.Tensor:
    """(T, E) router scores: sigmoid or softmax of logits of spread ``scale``."""
    x = torch.randn(case["T"], case["E"], generator=gen, dtype=F64) * case["scale"]
    x = _apply_ties(x, case["ties"], 1e-3)
    return torch.sigmoid(x) if case["scoring"] == "sigmoid" else torch.softmax(x, -1)


def _selected(gen, case) -> torch.Tensor:
    """(T, K) int64: the top-K of the scores (the router's choice), or K distinct experts at random, or every token
    on the same K experts (the most unbalanced routing)."""
    T, E, K = case["T"], case["E"], case["K"]
    kind = int(torch.randint(0, 3, (), generator=gen))
    if kind == 0:
        return case["scores"].topk(K, dim=-1).indices
    if kind == 1:
        return torch.stack([torch.randperm(E, generator=gen)[:K] for _ in range(T)])
    return torch.randperm(E, generator=gen)[:K].expand(T, K).clone()


REGISTRY.attach_domain(f"{DOC}.balance_loss", Domain(
    sizes=dict(T=Int(1, 12, edges=(1,)), E=Int(1, 16, edges=(2, 8)), K=Int(1, "E"),
               scale=Real(0.05, 10.0, edges=(1.0,), log=True), scoring=Choice(SCORINGS),
               ties=Built(_tie_pattern, note="tied columns")),
    args=dict(scores=Built(_affinities, note="(T, E) sigmoid or softmax scores"),
              indices=Built(_selected, note="(T, K) selected experts"),
              form=Optional(Choice(BALANCE_FORMS)), alpha=Optional(Real(0.0, 10.0, edges=(1.0, 0.0)))),
    large=dict(T=4096, E=64, K=6),
))


def _indices(gen, case) -> torch.Tensor:
    """(T, K) expert ids in [0, n_experts): at random (repeats inside a token allowed: the dispatch is
    capacity-free), all on one expert, or on the last expert only (the others' buffers empty)."""
    T, K, E = case["T"], case["K"], case["n_experts"]
    kind = int(torch.randint(0, 3, (), generator=gen))
    if kind == 1:
        return torch.zeros(T, K, dtype=torch.int64)
    if kind == 2:
        return torch.full((T, K), E - 1, dtype=torch.int64)
    return torch.randint(0, E, (T, K), generator=gen)


REGISTRY.attach_domain(f"{DOC}.dispatch", Domain(
    sizes=dict(T=Int(1, 12, edges=(1,)), K=Int(1, 6, edges=(1,)), D=Int(1, 8, edges=(1,))),
    args=dict(x=Built(lambda gen, case: torch.randn(case["T"], case["D"], generator=gen, dtype=F64),
                      note="(T, D) tokens"),
              n_experts=Int(1, 16, edges=(1, 16)), indices=Built(_indices, note="(T, K) expert ids")),
    exact=("x_sorted", "counts", "positions"),
    large=dict(T=4096, K=6, D=16),
))


def _positions(gen, case) -> torch.Tensor:
    """(T, K) rows of y_sorted: a permutation of the T K slots (what dispatch returns), or rows drawn with repeats
    (a slot read twice, the extra rows never)."""
    T, K, N = case["T"], case["K"], case["N"]
    if int(torch.randint(0, 2, (), generator=gen)) == 0:
        return torch.randperm(N, generator=gen)[:T * K].view(T, K)
    return torch.randint(0, N, (T, K), generator=gen)


def _combine_weights(gen, case) -> torch.Tensor:
    """(T, K) weights: non-negative router weights, signed ones, or zeros."""
    T, K = case["T"], case["K"]
    kind = int(torch.randint(0, 3, (), generator=gen))
    w = torch.rand(T, K, generator=gen, dtype=F64) * 2.446
    if kind == 1:
        w = torch.randn(T, K, generator=gen, dtype=F64)
    if kind == 2:
        w = torch.zeros(T, K, dtype=F64)
    return w


REGISTRY.attach_domain(f"{DOC}.combine", Domain(
    sizes=dict(T=Int(1, 12, edges=(1,)), K=Int(1, 6, edges=(1,)), D=Int(1, 8, edges=(1,)),
               N=Int("T * K", "T * K + 3"), scale=Real(1e-3, 1e3, edges=(1.0,), log=True)),
    args=dict(y_sorted=Built(lambda gen, case: torch.randn(case["N"], case["D"], generator=gen, dtype=F64)
                             * case["scale"], note="(N, D) expert outputs"),
              positions=Built(_positions, note="(T, K) rows"), weights=Built(_combine_weights, note="(T, K)")),
    large=dict(T=4096, K=6, D=16),
))


def _moe_weights(gen, case) -> dict:
    """Router rows, bias and SwiGLU experts; some experts are exact copies of others (router row, bias and expert
    weights), so that ties in the selection are ties between identical experts."""
    E, D, F = case["E"], case["D"], case["F"]
    w_router = torch.randn(E, D, generator=gen, dtype=F64) * (case["sharp"] / math.sqrt(D))
    kind = int(torch.randint(0, 4, (), generator=gen))  # 0: a zero bias where one is taken, 2: duplicated experts
    biased = kind != 0 and case["biased"]
    bias = torch.randn(E, generator=gen, dtype=F64) * 0.5 if biased else torch.zeros(E, dtype=F64)
    w_gate = torch.randn(E, F, D, generator=gen, dtype=F64) / math.sqrt(D)
    w_up = torch.randn(E, F, D, generator=gen, dtype=F64) / math.sqrt(D)
    w_down = torch.randn(E, D, F, generator=gen, dtype=F64) / math.sqrt(F)
    if kind == 2 and E >= 2:
        for _ in range(int(torch.randint(1, E, (), generator=gen))):
            src, dst = torch.randint(0, E, (2,), generator=gen).tolist()
            for t in (w_router, bias, w_gate, w_up, w_down):
                t[dst] = t[src]
    return dict(w_router=w_router, bias=bias, w_gate=w_gate, w_up=w_up, w_down=w_down)


def _part(name: str) -> Built:
    return Built(lambda gen, case: case["experts"][name], note=f"{name} of the drawn experts")


def _shared(gen, case):
    Fs, D = case["n_shared"] * case["F"], case["D"]
    return (torch.randn(Fs, D, generator=gen, dtype=F64) / math.sqrt(D),
            torch.randn(Fs, D, generator=gen, dtype=F64) / math.sqrt(D),
            torch.randn(D, Fs, generator=gen, dtype=F64) / math.sqrt(Fs))


REGISTRY.attach_domain(f"{DOC}.moe", Domain(
    sizes=dict(T=Int(1, 8, edges=(1,)), D=Choice((1, 4, 8, 16)), F=Choice((1, 4, 8)), E=Choice((1, 2, 4, 6, 8)),
               n_shared=Int(1, 2), sharp=Real(0.1, 10.0, edges=(2.0,), log=True),
               xscale=Real(0.01, 30.0, edges=(1.0,), log=True), **CONFIG_SIZES, biased=Choice((False, True)),
               experts=Built(_moe_weights, note="router, bias and experts, some duplicated")),
    args=dict(x=Built(lambda gen, case: torch.randn(case["T"], case["D"], generator=gen, dtype=F64) * case["xscale"],
                      note="(T, D) tokens"),
              w_router=_part("w_router"), bias=_part("bias"), w_gate=_part("w_gate"), w_up=_part("w_up"),
              w_down=_part("w_down"), config=CONFIG,
              shared=Optional(Built(_shared, note="(s_gate, s_up, s_down) of width n_shared F"))),
    needs=_needs_bias,
))  # no large size: each token's output is its own short sums (the spec's per-token loop makes thousands slow)
