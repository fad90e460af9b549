"""DeepSeek-R1's GRPO: group-relative advantages, the clipped surrogate with a k3 KL penalty, rule-based rewards.

Papers: Shao et al. 2024, DeepSeekMath (arXiv:2402.03300) §4.1 (GRPO); DeepSeek-AI 2025, DeepSeek-R1
(arXiv:2501.12948) §2.2 (rule-based accuracy and format rewards). Critiques encoded as options: Dr. GRPO (Liu et
al. 2025, arXiv:2503.20783) and DAPO (arXiv:2503.14476). Post: the seed's post-training / DeepSeek-R1 article.
Equations and TRL's conventions: catalogue/grpo.md.

For a question q, G outputs o_1..o_G are sampled from pi_old and scored r_1..r_G; every token of output i gets
the advantage A_i = (r_i - mean(r)) / std(r), and

    J = E (1/G) sum_i (1/|o_i|) sum_t { min(rho_it A_i, clip(rho_it, 1 - eps_lo, 1 + eps_hi) A_i) - beta D_KL },
    rho_it = pi_theta(o_it | q, o_i,<t) / pi_old(o_it | ...),   D_KL = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1.

Conventions (design.md): the spec exposes std = sample | population | none and the aggregations grpo | bnpo |
dr_grpo | dapo; the DeepSeekMath formula (sample std, no epsilon, 'grpo' sequence means, beta = 0.04) is the
default; TRL's conventions (std + 1e-4, 'dapo', beta = 0) are an implementation's. A group whose rewards are all
equal has A = 0. Groups are contiguous: rewards.view(-1, G). Everything here is float64.
"""

from __future__ import annotations

import math
import re

import torch

from eqspec.contracts import ArgumentError
from eqspec.domain import FLAG, OMIT, Built, Choice, Domain, Int, Optional, Real, normal
from eqspec.domain import completion_mask as mask_builder
from eqspec.outputs import Output
from eqspec.registry import REGISTRY, claim, operation, spec

from .dpo import logits_gradient_magnitudes, scored_token_magnitudes, selective_log_softmax
from .validators import check_mask, check_same, check_tensor, check_token_ids

DOC = "grpo"
F64 = torch.float64
STDS = ("sample", "population", "none")
AGGREGATIONS = ("grpo", "bnpo", "dr_grpo", "dapo")


# ---------------------------------------------------------------------------------------------------
# Group-relative advantages
# ---------------------------------------------------------------------------------------------------

def check_advantage_args(rewards, group_size, std, eps) -> None:
    check_tensor("rewards", rewards, rank=1)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ArgumentError("group_size", f"group_size must be a positive integer, got {group_size!r}")
    if rewards.shape[0] % group_size:
        raise ArgumentError("rewards.shape[0]",
                            f"rewards.shape[0] ({rewards.shape[0]}) must be a multiple of group_size ({group_size}): "
                            f"groups are contiguous")
    if std not in STDS:
        raise ArgumentError("std", f"std must be one of {STDS}, got {std!r}")
    if std == "sample" and group_size < 2:
        raise ArgumentError("group_size", "group_size must be at least 2 for the sample standard deviation (ddof = 1)")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ArgumentError("eps", f"eps must be a non-negative finite number, got {eps!r}")


@operation(
    DOC,
    latex=r"\hat A_{i,t}=\tilde r_i=\frac{r_i-\mathrm{mean}(\mathbf r)}{\mathrm{std}(\mathbf r)+\varepsilon}",
    source="DeepSeekMath §4.1.2 (outcome supervision); Dr. GRPO §3 (std 'none'); TRL grpo_trainer.py L2685-2730",
    returns="advantages",
    summary="Group-relative advantages: rewards (N,) in contiguous groups of group_size -> (N,) "
            "(r - group mean) / (group std + eps); std: sample (ddof 1) | population | none (no division).",
    convention="Contiguous groups (view(-1, G)); a group of equal rewards gets A = 0 exactly.",
    baseline="torch.naive",
    outputs=(Output("advantages", shape="rewards.shape", dtype="rewards|float64", device="rewards"),),
)
def group_advantages(rewards: torch.Tensor, group_size: int, *, std: str = "sample", eps: float = 0.0):
    check_advantage_args(rewards, group_size, std, eps)
    r = rewards.to(F64).view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)
    centred = torch.where(constant, torch.zeros_like(centred), centred)  # no 1-ulp residue of the mean
    if std != "none":
        sigma = r.std(dim=1, keepdim=True, correction=1 if std == "sample" else 0)
        centred = centred / torch.where(constant, torch.ones_like(sigma), sigma + eps)
    return centred.reshape(-1).to(rewards.dtype)


# ---------------------------------------------------------------------------------------------------
# Per-token pieces: log-probs at a temperature, the ratio, the clipped surrogate, the k3 estimator
# ---------------------------------------------------------------------------------------------------

def check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ArgumentError("temperature", f"temperature must be a positive finite number, got {temperature!r}")
    return float(temperature)


def check_token_logps_args(logits, ids, temperature) -> float:
    check_tensor("logits", logits, rank=3)
    check_token_ids("completion_ids", ids, tuple(logits.shape[:2]), logits.shape[2])
    return check_temperature(temperature)


@operation(
    DOC,
    latex=r"\log\pi_\theta(o_t\mid\cdot)=\log\mathrm{softmax}(z_t/T)_{o_t}",
    source="TRL grpo_trainer.py L1517-1519 (logits divided by the sampling temperature); catalogue property 7",
    returns="logps",
    summary="Per-token log-probabilities at the sampling temperature: logits (N, T, V) at the completion "
            "positions, completion_ids (N, T) -> (N, T) log softmax(logits / temperature) gathered at the ids.",
    convention="The logits are divided by T before the log-softmax (not the log-probs after it).",
    baseline="torch.naive",
    outputs=(Output("logps", shape="logits.shape[:2]", dtype="logits|float64", device="logits"),),
)
def token_logps(logits: torch.Tensor, completion_ids: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    T = check_token_logps_args(logits, completion_ids, temperature)
    return selective_log_softmax(logits.to(F64) / T, completion_ids.long())


@spec(DOC, latex=r"\rho_{i,t}=\exp\big(\log\pi_\theta-\log\pi_{\theta_{old}}\big)", source="DeepSeekMath eq. 3")
def ratio(logps: torch.Tensor, old_logps: torch.Tensor) -> torch.Tensor:
    return torch.exp(logps - old_logps)


@spec(DOC, latex=r"\ell^{clip}_{i,t}=-\min\big(\rho A,\ \mathrm{clip}(\rho,1-\epsilon_{low},1+\epsilon_{high})A\big)",
      source="DeepSeekMath eq. 3 (PPO's surrogate); DAPO §3.1 (clip-higher: eps_low, eps_high)")
def clipped_surrogate(rho: torch.Tensor, A: torch.Tensor, epsilon_low: float, epsilon_high: float) -> torch.Tensor:
    return -torch.minimum(rho * A, torch.clamp(rho, 1 - epsilon_low, 1 + epsilon_high) * A)


@spec(DOC, latex=r"\mathbb D_{KL}=\frac{\pi_{ref}}{\pi_\theta}-\log\frac{\pi_{ref}}{\pi_\theta}-1",
      source="DeepSeekMath eq. 4 (Schulman 2020, 'Approximating KL divergence', k3)",
      convention="delta = log pi_ref - log pi_theta; unbiased for KL(pi_theta || pi_ref) under samples of pi_theta")
def k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


@spec(DOC, latex=r"\mathrm{KL}(\pi\|\pi_{ref})=\sum_y\pi(y)\log\frac{\pi(y)}{\pi_{ref}(y)}", source="definition")
def kl_categorical(pi: torch.Tensor, pi_ref: torch.Tensor) -> torch.Tensor:
    return (pi * (torch.log(pi) - torch.log(pi_ref))).sum(-1)


@spec(DOC, latex=r"\mathrm{grpo}:\frac1N\sum_i\frac{\sum_tm_{it}\ell_{it}}{\sum_tm_{it}},\ "
                 r"\mathrm{bnpo}=\mathrm{dapo}:\frac{\sum_{it}m\ell}{\sum_{it}m},\ "
                 r"\mathrm{dr\_grpo}:\frac{\sum_{it}m\ell}{N\,L_{max}}",
      source="DeepSeekMath eq. 3 (grpo); DAPO eq. 8 (token mean); Dr. GRPO eq. 5; TRL grpo_config.py L244-274",
      convention="On one process dapo (global active tokens / processes) equals bnpo; sequences with no active "
                 "token count 1 in the grpo denominator (TRL clamps it)")
def aggregate(per_token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str, max_completion_length: int):
    total = (per_token_loss * mask)
    if loss_type == "grpo":
        return (total.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type in ("bnpo", "dapo"):
        return total.sum() / mask.sum().clamp(min=1.0)
    return total.sum() / (per_token_loss.shape[0] * max_completion_length)


def check_loss_options(beta, epsilon_low, epsilon_high, loss_type, max_completion_length, T):
    for name, x in (("beta", beta), ("epsilon_low", epsilon_low)):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise ArgumentError(name, f"{name} must be a non-negative finite number, got {x!r}")
    eps_hi = epsilon_low if epsilon_high is None else epsilon_high
    if isinstance(eps_hi, bool) or not isinstance(eps_hi, (int, float)) or not math.isfinite(eps_hi) or eps_hi < 0:
        raise ArgumentError("epsilon_high",
                            f"epsilon_high must be a non-negative finite number or None, got {epsilon_high!r}")
    if epsilon_low >= 1:
        raise ArgumentError("epsilon_low",
                            f"epsilon_low must be below 1 (the lower clip is 1 - epsilon_low), got {epsilon_low!r}")
    if loss_type not in AGGREGATIONS:
        raise ArgumentError("loss_type", f"loss_type must be one of {AGGREGATIONS}, got {loss_type!r}")
    L = T if max_completion_length is None else max_completion_length
    if isinstance(L, bool) or not isinstance(L, int) or L < T:
        raise ArgumentError("max_completion_length",
                            f"max_completion_length must be an integer >= the completion length {T}, got {L!r}")
    return float(beta), float(epsilon_low), float(eps_hi), L


def check_grpo_loss_args(logps, old_logps, ref_logps, advantages, completion_mask, beta):
    check_tensor("logps", logps, rank=2)
    shape = tuple(logps.shape)
    for name, x in (("old_logps", old_logps), ("ref_logps", ref_logps)):
        if x is None:
            if name == "ref_logps" and beta != 0:
                raise ArgumentError("ref_logps",
                                    "ref_logps must be given when beta != 0 (the KL penalty needs the reference)")
            continue
        check_tensor(name, x, rank=2)
        if tuple(x.shape) != shape:
            raise ArgumentError(name, f"{name} must have shape {shape}, as logps, got {tuple(x.shape)}")
    check_tensor("advantages", advantages, rank=1)
    if advantages.shape[0] != shape[0]:
        raise ArgumentError("advantages", f"advantages must have shape ({shape[0]},) (one per completion), got "
                            f"{tuple(advantages.shape)}")
    check_mask("completion_mask", completion_mask, shape)


@operation(
    DOC,
    latex=r"\mathcal L=\mathrm{agg}_{i,t}\Big[-\min\big(\rho_{it}A_i,\mathrm{clip}(\rho_{it},1-\epsilon_{low},"
          r"1+\epsilon_{high})A_i\big)+\beta\,\mathbb D_{KL,it}\Big]",
    source="DeepSeekMath eq. 3-4; DeepSeek-R1 §2.2.1 eq. 1-3; TRL grpo_trainer.py _compute_loss L2991-3146",
    returns="loss",
    summary="The GRPO loss from per-token log-probs: logps, old_logps (None: on-policy, logps detached), ref_logps "
            "(None allowed when beta = 0) (N, T), advantages (N,), completion_mask (N, T) -> a scalar; "
            "loss_type grpo | bnpo | dr_grpo | dapo; epsilon_high defaults to epsilon_low; max_completion_length "
            "(dr_grpo) defaults to T.",
    convention="Defaults are DeepSeekMath's: beta = 0.04, eps = 0.2, 'grpo' (per-sequence means).",
    baseline="torch.naive",
    outputs=(Output("loss", shape="()", dtype="logps|float64", device="logps"),),
    capabilities=("grad",),
)
def grpo_loss(logps, old_logps, ref_logps, advantages, completion_mask, *, beta: float = 0.04,
              epsilon_low: float = 0.2, epsilon_high: float | None = None, loss_type: str = "grpo",
              max_completion_length: int | None = None):
    check_grpo_loss_args(logps, old_logps, ref_logps, advantages, completion_mask, beta)
    beta, eps_lo, eps_hi, L = check_loss_options(beta, epsilon_low, epsilon_high, loss_type, max_completion_length,
                                                 logps.shape[1])
    m = completion_mask.to(F64)
    active = m > 0

    def masked(x):  # masked positions may hold anything (even inf): they are replaced before any arithmetic
        return torch.where(active, x.to(F64), torch.zeros_like(m))

    lp = masked(logps)
    old = lp.detach() if old_logps is None else masked(old_logps.detach())
    A = advantages.to(F64).detach()[:, None]
    per_token = clipped_surrogate(ratio(lp, old), A, eps_lo, eps_hi)
    if beta != 0:
        per_token = per_token + beta * k3(lp, masked(ref_logps.detach()))
    return aggregate(per_token, m, loss_type, L).to(logps.dtype)


# ---------------------------------------------------------------------------------------------------
# The whole loss from the last hidden states (what the fused, chunked implementations compute)
# ---------------------------------------------------------------------------------------------------

def check_fused_args(hidden, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps, beta):
    check_tensor("hidden", hidden, rank=3)
    check_tensor("weight", weight, rank=2)
    check_same(("hidden", "weight"), (hidden, weight), "dtype")
    check_same(("hidden", "weight"), (hidden, weight), "device")
    N, T, H = hidden.shape
    if weight.shape[1] != H:
        raise ArgumentError("weight.shape[1]",
                            f"weight.shape[1] (hidden size) must be {H}, as hidden.shape[2], got shape "
                            f"{tuple(weight.shape)}")
    check_token_ids("completion_ids", completion_ids, (N, T), weight.shape[0])
    dummy = torch.empty(N, T)
    check_grpo_loss_args(dummy, old_logps, ref_logps, advantages, completion_mask, beta)


@operation(
    DOC,
    latex=r"z_{it}=h_{it}W^\top/T,\ \log\pi_{it}=\log\mathrm{softmax}(z_{it})_{o_{it}},\ "
          r"\mathcal L=\mathrm{grpo\_loss}(\log\pi,\log\pi_{old},\log\pi_{ref},A,m)",
    source="DeepSeekMath eq. 3-4; TRL fused LM head (add_fused_lm_head); Liger-Kernel fused linear GRPO "
           "(anchors.md §3)",
    returns="loss",
    summary="The GRPO loss from hidden states: hidden (N, T, H) at the positions that predict completion_ids "
            "(N, T), the LM head weight (V, H), completion_mask (N, T), advantages (N,), old_logps and ref_logps "
            "(N, T) or None -> a scalar, differentiable in hidden and weight; temperature divides the logits.",
    convention="As grpo_loss; hidden[:, t] scores completion_ids[:, t] (no further shift).",
    dtypes=("float64", "float32", "bfloat16"),
    baseline="torch.naive",
    outputs=(Output("loss", shape="()", dtype="hidden|float64", device="hidden"),),
    capabilities=("grad", "chunk_size"),
)
def fused_linear_grpo_loss(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None,
                           ref_logps=None, *, temperature: float = 1.0, beta: float = 0.04, epsilon_low: float = 0.2,
                           epsilon_high: float | None = None, loss_type: str = "grpo",
                           max_completion_length: int | None = None):
    check_fused_args(hidden, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps, beta)
    logits = hidden.to(F64) @ weight.to(F64).T
    logps = token_logps(logits, completion_ids, temperature=temperature)
    return grpo_loss(logps, old_logps, ref_logps, advantages, completion_mask, beta=beta, epsilon_low=epsilon_low,
                     epsilon_high=epsilon_high, loss_type=loss_type, max_completion_length=max_completion_length)


def fused_token_magnitudes(hidden, weight, completion_ids, completion_mask, *, temperature: float = 1.0):
    """(logps (N, T), a (N, T), scored tokens): the float64 log-probs at the scored positions (0 elsewhere), the size
    a of the terms whose rounding moves each one (dpo.scored_token_magnitudes), and the scored tokens' pieces."""
    h64 = hidden.detach().to(F64)
    N, T = completion_mask.shape
    seq, t = (completion_mask != 0).nonzero(as_tuple=True)
    rows, targets = h64[seq, t], completion_ids[seq, t].long()
    z, p, lse, logp, zabs, lse_terms, a = scored_token_magnitudes(rows, weight, targets, temperature)
    logps = torch.zeros(N, T, dtype=F64, device=h64.device).index_put((seq, t), logp)
    sizes = torch.zeros(N, T, dtype=F64, device=h64.device).index_put((seq, t), a)
    return logps, sizes, (seq, t, rows, targets, (z, p, lse, logp, zabs, lse_terms, a))


def fused_magnitudes(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None, ref_logps=None, *,
                     temperature: float = 1.0, beta: float = 0.04, epsilon_low: float = 0.2,
                     epsilon_high: float | None = None, loss_type: str = "grpo", max_completion_length=None, **_):
    """(mag_loss, mag_dhidden, mag_dweight, n). Per token, with w its aggregation weight (<= 1): the ratio
    rho = exp(log pi - log pi_old) moves by rho u (a + |log pi| + |log pi_old| + 2) (off-policy; on-policy it is
    exp(0) = 1 exactly), the surrogate by |A| times that; k3 = e^delta - delta - 1, delta = log pi_ref - log pi, by
    |e^delta - 1| u (a + |log pi_ref| + |log pi|) and its own roundings u (e^delta + |delta| + 1). The gradient
    g = d loss / d log pi = w (-rho A [unclipped] + beta (1 - e^delta)) moves by w (rho |A| (...) + beta e^delta (...)),
    then through dz = g (onehot - p) / T into d hidden and d weight (dpo.logits_gradient_magnitudes)."""
    logps, sizes, (seq, t, rows, targets, (z, p, lse, logp, zabs, lse_terms, a)) = fused_token_magnitudes(
        hidden, weight, completion_ids, completion_mask, temperature=temperature)
    m = completion_mask.to(F64)
    A = advantages.detach().to(F64)[:, None].expand_as(logps)
    lp = logps.clone().requires_grad_(True)
    per_token = torch.zeros_like(logps, requires_grad=True)
    kw = dict(beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type,
              max_completion_length=max_completion_length)
    (g,) = torch.autograd.grad(grpo_loss(lp, old_logps, ref_logps, advantages, completion_mask, **kw), lp)
    _, _, _, L = check_loss_options(beta, epsilon_low, epsilon_high, loss_type, max_completion_length, m.shape[1])
    (w,) = torch.autograd.grad(aggregate(per_token, m, loss_type, L), per_token)
    w = w.abs()
    if old_logps is None:
        rho, rho_err = torch.ones_like(logps), torch.full_like(logps, 2.0)
    else:
        old = torch.where(m > 0, old_logps.detach().to(F64), 0.0)
        rho = torch.exp(logps - old)
        rho_err = sizes + logps.abs() + old.abs() + 2
    surrogate = rho * A.abs() * rho_err
    value = clipped_surrogate(rho, A, epsilon_low, epsilon_low if epsilon_high is None else epsilon_high)
    k3_terms, k3_grad_terms = torch.zeros_like(logps), torch.zeros_like(logps)
    if beta != 0:
        ref = torch.where(m > 0, ref_logps.detach().to(F64), 0.0)
        delta = ref - logps
        e = torch.exp(delta)
        k3_terms = beta * ((e - 1).abs() * (sizes + ref.abs() + logps.abs()) + e + delta.abs() + 1)
        k3_grad_terms = beta * (e * (sizes + ref.abs() + logps.abs() + 1) + 1)
        value = value + beta * k3(logps, ref)
    mag_loss = float((w * (surrogate + k3_terms + 2 * value.abs()) * m).sum())
    g_err = w * (surrogate + k3_grad_terms) + 2 * g.abs()
    mag_rows, mag_dW = logits_gradient_magnitudes(rows, weight, targets, z, p, lse, zabs, lse_terms, g[seq, t],
                                                  g_err[seq, t], temperature)
    n = hidden.shape[-1] + weight.shape[0] + hidden.shape[1]
    return mag_loss, float(mag_rows.max()) if mag_rows.numel() else 0.0, float(mag_dW.max()), n


def fused_loss_magnitudes(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None,
                          ref_logps=None, **kw):
    """(mag_loss, n) of fused_magnitudes: the loss's floor alone."""
    mag_loss, _, _, n = fused_magnitudes(hidden, weight, completion_ids, completion_mask, advantages, old_logps,
                                         ref_logps, **kw)
    return mag_loss, n


REGISTRY.attach_magnitudes(f"{DOC}.fused_linear_grpo_loss", fused_loss_magnitudes)


def fused_gradient_magnitudes(weights, *args, **kw):
    """({"hidden": .., "weight": ..}, n) of fused_magnitudes for the gradient of w x loss: the gradients' floors (the
    logits' p - onehot cancels to 1e-9 of p's rounding at sharp logits: measured 1.5e-13 off a float64 d hidden of
    1.5e-9 at sharp = 10)."""
    _, mag_rows, mag_dW, n = fused_magnitudes(*args, **kw)
    w = float(weights[0].abs().max())
    return {"hidden": w * mag_rows, "weight": w * mag_dW}, n


REGISTRY.attach_gradient_magnitudes(f"{DOC}.fused_linear_grpo_loss", fused_gradient_magnitudes)


# ---------------------------------------------------------------------------------------------------
# DeepSeek-R1's rule-based rewards
# ---------------------------------------------------------------------------------------------------

# R1-Zero's template: the reasoning inside <think>...</think>, then the answer inside <answer>...</answer>. DOTALL:
# a thought spans lines; one <think> only (TRL/open-r1's negative look-ahead).
FORMAT = re.compile(r"^<think>(?!.*<think>).*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)


def check_completions(name: str, xs: object) -> list[str]:
    if not isinstance(xs, (list, tuple)) or not xs or not all(isinstance(x, str) for x in xs):
        raise ArgumentError(name, f"{name} must be a non-empty list of strings, got {type(xs).__name__}")
    return list(xs)


@operation(
    DOC,
    latex=r"r_{fmt}(o)=\mathbb 1\big[o\ \text{matches}\ \texttt{<think>}\ldots\texttt{</think>}\,"
          r"\texttt{<answer>}\ldots\texttt{</answer>}\big]",
    source="DeepSeek-R1 §2.2.2 (format reward) and Table 1 (template); TRL rewards/format_rewards.py (DOTALL)",
    returns="rewards",
    summary="R1's format reward: completions (list of N strings) -> (N,) float64, 1 where the completion is one "
            "<think>...</think> (thoughts may span lines) followed by <answer>...</answer>, else 0.",
    convention="A second <think> inside the thought is rejected (open-r1's look-ahead); whitespace between the "
               "blocks and at the end is allowed.",
    dtypes=("float64",),
    outputs=(Output("rewards", shape="(len(completions),)", dtype="float64", device="cpu"),),
)
def format_reward(completions) -> torch.Tensor:
    completions = check_completions("completions", completions)
    return torch.tensor([1.0 if FORMAT.match(c) else 0.0 for c in completions], dtype=F64)


@spec(DOC, latex=r"\mathrm{boxed}(s)=\text{content of the last }\texttt{\textbackslash boxed\{}\ldots\texttt{\}}",
      source="DeepSeek-R1 §2.2.2 ('the final answer in a specified format (e.g. within a box)')",
      convention="Braces nest; returns None when there is no complete \\boxed{...}")
def last_boxed(s: str) -> str | None:
    start = s.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i:j]
    return None


def _normalise(answer: str) -> str | float:
    a = re.sub(r"\s+", "", answer).strip("$").rstrip(".")
    try:
        return float(a)
    except ValueError:
        return a


@operation(
    DOC,
    latex=r"r_{acc}(o)=\mathbb 1\big[\mathrm{boxed}(o)=\mathrm{answer}\big]",
    source="DeepSeek-R1 §2.2.2 (accuracy reward); TRL rewards/accuracy_rewards.py (unparseable gold -> None)",
    returns="rewards",
    summary="R1's accuracy reward: completions and solutions (lists of N strings) -> (N,) float64: 1 where the "
            "last \\boxed{...} of the completion equals the solution's (numbers compared as numbers, whitespace "
            "ignored), 0 where not, NaN where the solution has no answer to compare with.",
    convention="The solution's answer is its last \\boxed{...} or, without one, the whole solution; an empty "
               "answer is unparseable (NaN: skipped, as TRL's None).",
    dtypes=("float64",),
    outputs=(Output("rewards", shape="(len(completions),)", dtype="float64", device="cpu"),),
)
def accuracy_reward(completions, solutions) -> torch.Tensor:
    completions = check_completions("completions", completions)
    solutions = check_completions("solutions", solutions)
    if len(solutions) != len(completions):
        raise ArgumentError("solutions",
                            f"solutions must have one entry per completion ({len(completions)}), got {len(solutions)}")
    out = []
    for c, s in zip(completions, solutions):
        gold = last_boxed(s)
        gold = s if gold is None else gold
        if not gold.strip():
            out.append(math.nan)
            continue
        got = last_boxed(c)
        out.append(1.0 if got is not None and _normalise(got) == _normalise(gold) else 0.0)
    return torch.tensor(out, dtype=F64)


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue/grpo.md, "Checkable properties", and the list)
# ---------------------------------------------------------------------------------------------------

ADV, LOGPS, LOSS, FUSED = f"{DOC}.group_advantages", f"{DOC}.token_logps", f"{DOC}.grpo_loss", \
    f"{DOC}.fused_linear_grpo_loss"

claim(DOC, "advantages_zero_sum", kind="identity", operations=(ADV,),
      statement="Each group's advantages sum to 0 (up to G^2 roundings of max|r| / std); with eps = 0 their sample "
                "(population) standard deviation is 1 for std = sample (population); a constant-reward group gets "
                "A = 0.",
      source="catalogue property 1")
claim(DOC, "advantages_affine_invariant", kind="identity", operations=(ADV,),
      statement="r -> a r + c with a > 0 leaves the normalised advantages unchanged (eps = 0, up to rounding) and "
                "scales Dr. GRPO's (std = none) by a.",
      source="catalogue property 2")
claim(DOC, "advantages_known_answers", kind="known-answer", operations=(ADV,),
      statement="r = [1,0,0,1]: sample std 0.577350, A = +-0.865875 with eps = 1e-4 (TRL), +-1 with the population "
                "std; r = [1,0,0,0]: TRL A = [1.499700, -0.499900 x 3], Dr. GRPO A = [.75, -.25 x 3].",
      source="catalogue/grpo.md, known answers")
claim(DOC, "groups_never_mix", kind="exact", operations=(ADV,),
      statement="Changing the rewards of one group leaves every other group's advantages bit-identical, and "
                "permuting completions within a group permutes their advantages identically.",
      source="catalogue property 8")
claim(DOC, "on_policy_reinforce", kind="identity", operations=(LOSS,),
      statement="On-policy (rho = 1), beta = 0: the grpo loss value is 0 (float64 rounding) while its gradient is "
                "REINFORCE with the group baseline: d loss / d log pi_it = -A_i / (N |o_i|) (grpo), -A_i / (N "
                "L_max) (dr_grpo), -A_i / sum|o| (bnpo, dapo), whose value is -sum_i A_i |o_i| / sum_i |o_i| "
                "(up to rounding).",
      source="catalogue properties 3-4 (TRL #2703, open-r1 #239)")
claim(DOC, "clipping", kind="exact", operations=(LOSS,),
      statement="The gradient in log pi is exactly 0 where A > 0 and rho > 1 + eps_high or A < 0 and rho < 1 - "
                "eps_low, and -rho A times the aggregation weight elsewhere (up to rounding; ratios within their "
                "rounding of the bound, where the gradient jumps, are excluded).",
      source="catalogue property 5; DAPO §3.1 (clip-higher)")
claim(DOC, "surrogate_known_answers", kind="known-answer", operations=(LOSS,),
      statement="Per-token loss, eps = 0.2: (rho, A) = (1.5, 1) -> -1.2 (eps_high = 0.28: -1.28), (1.5, -1) -> 1.5, "
                "(0.5, 1) -> -0.5, (0.5, -1) -> 0.8, (1.1, 1) -> -1.1; k3 at delta = 0.1, -0.1, 1, -1: 0.0051709, "
                "0.0048374, 0.7182818, 0.3678794.",
      source="catalogue/grpo.md, known answers")
claim(DOC, "k3_nonnegative", kind="exact", operations=(LOSS,),
      statement="k3 >= 0 (up to its rounding), = 0 exactly where log pi = log pi_ref, and d k3 / d log pi = 1 - "
                "exp(log pi_ref - log pi) (up to rounding).",
      source="catalogue property 6")
claim(DOC, "k3_unbiased", kind="statistical", operations=(LOSS,),
      statement="Over tokens sampled from pi on a categorical, the mean of k3 equals KL(pi || pi_ref) within a "
                "Hoeffding bound (k3 is bounded on a finite support; i.i.d. samples) at false-alarm probability "
                "1e-6.",
      source="Schulman 2020 (k3 unbiased); catalogue property 6")
claim(DOC, "masked_tokens_never_matter", kind="exact", operations=(LOSS, FUSED),
      statement="Changing log-probs, old and reference log-probs, hidden states or token ids at masked positions "
                "leaves the loss and the gradients at unmasked positions bit-identical, and gives masked positions "
                "zero gradient.",
      source="catalogue property 7")
claim(DOC, "temperature_scaled_logps", kind="identity", operations=(LOGPS,),
      statement="Per-token log-probs are log softmax(logits / T) at the sampled ids (up to rounding), equal to the "
                "unscaled ones at T = 1, and exp of them sums to 1 over the vocabulary.",
      source="catalogue property 7 (TRL #4159, prime-rl PR #697)")
claim(DOC, "format_reward", kind="exact", operations=(f"{DOC}.format_reward",),
      statement="The format reward is 1 for <think>...</think><answer>...</answer> with thoughts over several "
                "lines, and 0 without the tags, with a nested <think>, or with text after the answer.",
      source="DeepSeek-R1 §2.2.2; catalogue (2) (format regex without DOTALL)")
claim(DOC, "accuracy_reward", kind="exact", operations=(f"{DOC}.accuracy_reward",),
      statement="The accuracy reward compares the last \\boxed{...} (nested braces) with the solution: 1 when "
                "equal (as numbers or strings), 0 otherwise or without a box, NaN for an unparseable solution.",
      source="DeepSeek-R1 §2.2.2; TRL accuracy_reward (None for unparseable gold)")
claim(DOC, "fused_matches_spec", kind="budget", operations=(FUSED,),
      statement="The GRPO loss from hidden states (every aggregation, clip-higher, k3 penalty, temperature, any "
                "chunk size) and its gradients in hidden and weight are within the error budget of the float64 "
                "spec (2x / 3x the naive same-precision implementation's error + floor).",
      source="Liger-Kernel fused linear GRPO (anchors.md §3); TRL fused LM head")
claim(DOC, "deepseekmath_defaults", kind="identity", operations=(FUSED,),
      statement="Called with only its tensors, the GRPO loss is DeepSeekMath's: per-sequence means ('grpo'), a k3 "
                "penalty with beta = 0.04, eps = 0.2 on both sides (within the error budget of the spec with those "
                "options given explicitly).",
      source="DeepSeekMath §4.1 eq. 3 and §4.2 (beta = 0.04); design.md (the DeepSeekMath formula is the default)")
claim(DOC, "grpo_contract", kind="contract",
      operations=(ADV, LOGPS, LOSS, FUSED, f"{DOC}.format_reward", f"{DOC}.accuracy_reward"),
      statement="Malformed input (rewards not a multiple of the group size, a group of one for the sample std, an "
                "unknown std or loss type, a negative, NaN or boolean beta or clip range, shapes that disagree, ids "
                "outside the vocabulary, temperature <= 0, a missing reference with beta != 0, completions that are "
                "not a non-empty list of strings) is rejected with an error naming the argument.",
      source="design.md (bad input)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------

def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """One integer in [low, high) from the generator."""
    return int(torch.randint(low, high, (), generator=gen))


def _rewards(gen, case):
    """(n G,) rewards, each group of one kind: binary (R1's rule-based rewards), continuous of spread
    case["scale"] around an offset, constant, near-constant (a relative spread of 1e-9), ties among a few
    values, or all equal but one."""
    G, n, scale = case["group_size"], case["n"], case["scale"]
    groups = []
    for _ in range(n):
        kind = _randint(gen, 0, 6)
        offset = [0.0, 1.0, -3.0, 100.0][_randint(gen, 0, 4)]
        x = torch.randn(G, generator=gen, dtype=F64)
        if kind == 0:
            r = (x > 0).to(F64)
        elif kind == 1:
            r = offset + scale * x
        elif kind == 2:
            r = torch.full((G,), offset + scale * float(x[0]), dtype=F64)
        elif kind == 3:
            c = offset + scale * float(x[0])
            r = c + 1e-9 * max(abs(c), 1.0) * torch.randn(G, generator=gen, dtype=F64)
        elif kind == 4:
            r = torch.tensor([-1.0, 0.0, 0.5, 1.0], dtype=F64)[torch.randint(0, 4, (G,), generator=gen)] * scale
        else:
            r = torch.full((G,), offset, dtype=F64)
            r[_randint(gen, 0, G)] = offset + scale * float(x[0])
        groups.append(r)
    return torch.cat(groups)


def _logits(gen, case):
    """(N, T, V) logits of spread case["sharp"]; some rows constant (every token tied)."""
    x = torch.randn(case["N"], case["T"], case["V"], generator=gen, dtype=F64) * case["sharp"]
    flat = torch.rand(case["N"], case["T"], generator=gen) < 0.15
    x[flat] = x[flat][:, :1]
    return x


def _token_ids(gen, case):
    """(N, T) ids in [0, V), int64 or int32."""
    ids = torch.randint(0, case["V"], (case["N"], case["T"]), generator=gen)
    return ids if _randint(gen, 0, 2) else ids.to(torch.int32)


def _mask(gen, case):
    """A (N, T) completion mask (eqspec.domain.completion_mask: all-zero rows = empty completions, full rows, cut
    rows: unequal lengths) as int64, bool or float64."""
    m = mask_builder("N", "T").build(gen, case)
    return m.to([torch.int64, torch.bool, F64][_randint(gen, 0, 3)])


def _junk(gen, case, x):
    """x with its masked positions holding anything when case["junk"]: values of either sign up to 1e3 (whose
    exp overflows in every dtype: a masked position that reaches the arithmetic turns the loss into NaN)."""
    if not case["junk"]:
        return x
    masked = case["completion_mask"] == 0
    size = 10 ** (3 * torch.rand(x.shape, generator=gen, dtype=F64))
    return torch.where(masked, torch.where(torch.rand(x.shape, generator=gen) < 0.5, -size, size), x)


def _policy_logps(gen, case):
    """(N, T) log-probs of spread case["spread"] (some exactly 0)."""
    x = -torch.randn(case["N"], case["T"], generator=gen, dtype=F64).abs() * case["spread"]
    x = torch.where(torch.rand(x.shape, generator=gen) < 0.1, torch.zeros_like(x), x)
    return _junk(gen, case, x)


def _near(base: str, exact_share: float):
    """Log-probs near case[base] (old or reference): moved by case["drift"] (ratios inside and outside the clip
    range on both sides), a share of them exactly equal (rho = 1, delta = 0)."""
    def build(gen, case):
        x = case[base]
        y = (x + case["drift"] * torch.randn(x.shape, generator=gen, dtype=F64)).clamp(max=0.0)  # log-probs <= 0
        y = torch.where(torch.rand(x.shape, generator=gen) < exact_share, x, y)
        return _junk(gen, case, y)
    return build


def _advantages(gen, case):
    """(N,) advantages of spread case["A_scale"], some exactly 0 (a constant group), signs mixed."""
    A = torch.randn(case["N"], generator=gen, dtype=F64) * case["A_scale"]
    return torch.where(torch.rand(case["N"], generator=gen) < 0.2, torch.zeros_like(A), A)


def _or_none(flag: str, build):
    """None where case[flag], else build(gen, case)."""
    return lambda gen, case: None if case[flag] else build(gen, case)


def _current_logps(case):
    """The log-probs the fused loss computes from hidden and weight (float64), at the drawn temperature."""
    T = 1.0 if case["temperature"] is OMIT else case["temperature"]
    return selective_log_softmax(case["hidden"] @ case["weight"].T / T, case["completion_ids"].long())


def _fused_near(gen, case):
    """Old or reference log-probs near the current ones: moved by case["drift"] (never 0 here: the fused
    implementations' log-probs differ from the spec's by rounding, and a ratio of exactly 1 on a clip bound of
    eps = 0 would put the gradient's jump within that rounding); junk at masked positions when case["junk"]."""
    x = _current_logps(case)
    return _junk(gen, case, (x + case["drift"] * torch.randn(x.shape, generator=gen, dtype=F64)).clamp(max=0.0))


def _beta_unless_flagged(gen, case):
    """beta: case["b"] (0 included), or 0 where case["ref_none"] (no reference log-probs will be passed)."""
    return 0.0 if case["ref_none"] else case["b"]


def _beta_unless_omitted(gen, case):
    """beta: case["b"] (0 included), or 0 where ref_logps is omitted (None)."""
    return 0.0 if case["ref_logps"] is OMIT else case["b"]


BETAS = Real(1e-3, 10.0, edges=(0.0, 0.04, 1.0), log=True)
CLIP_OPTIONS = dict(epsilon_low=Optional(Real(0.0, 0.99, edges=(0.0, 0.2, 0.5))),
                    epsilon_high=Optional(Real(1e-3, 10.0, edges=(0.0, 0.2, 0.28), log=True)),
                    loss_type=Optional(Choice(AGGREGATIONS)),
                    max_completion_length=Optional(Int("T", "3 * T + 4")))
SHARPNESS = Real(0.1, 30.0, edges=(1.0, 10.0), log=True)
DRIFT = Real(1e-3, 3.0, edges=(0.1, 0.3, 1.0), log=True)  # ratios within the clip range and beyond it

REGISTRY.attach_domain(ADV, Domain(
    sizes=dict(n=Int(1, 6, edges=(1,)), scale=Real(1e-3, 1e3, edges=(1.0,), log=True)),
    args=dict(std=Optional(Choice(STDS)),
              group_size=Int("1 if std in ('population', 'none') else 2", 8, edges=(1, 2)),
              rewards=Built(_rewards, note="(n G,) rewards: binary, continuous, constant and near-constant groups"),
              eps=Optional(Real(1e-10, 10.0, edges=(0.0, 1e-4), log=True))),
    large=dict(n=1024),
))
REGISTRY.attach_domain(LOGPS, Domain(
    sizes=dict(N=Int(1, 4, edges=(1,)), T=Int(1, 8, edges=(1,)), V=Int(1, 40, edges=(1, 2)), sharp=SHARPNESS),
    args=dict(logits=Built(_logits, note="(N, T, V), some rows constant"),
              completion_ids=Built(_token_ids, note="(N, T) int64 or int32"),
              temperature=Optional(Real(0.05, 20.0, edges=(1.0, 0.1, 10.0), log=True))),
    large=dict(T=64, V=4096),
))
REGISTRY.attach_domain(LOSS, Domain(
    sizes=dict(N=Int(1, 6, edges=(1,)), T=Int(1, 10, edges=(1,)), spread=Real(0.01, 10.0, edges=(1.0,), log=True),
               drift=DRIFT, A_scale=Real(1e-3, 100.0, edges=(1.0,), log=True), b=BETAS, old_none=FLAG,
               ref_none=FLAG, junk=FLAG),
    args=dict(completion_mask=Built(_mask, note="(N, T): empty, full and cut rows; int64, bool or float"),
              logps=Built(_policy_logps, note="(N, T) log-probs, junk at masked positions"),
              old_logps=Built(_or_none("old_none", _near("logps", 0.2)), note="None (on-policy) or near logps"),
              beta=Optional(Built(_beta_unless_flagged, note="b, or 0 where ref_logps is None")),
              ref_logps=Built(lambda gen, case: None if case["ref_none"] and case["beta"] is not OMIT
                              else _near("logps", 0.1)(gen, case), note="None (beta = 0) or near logps"),
              advantages=Built(_advantages, note="(N,), some 0"),
              **CLIP_OPTIONS),
    large=dict(N=8, T=1024),
))
REGISTRY.attach_domain(FUSED, Domain(
    sizes=dict(N=Int(1, 4, edges=(1,)), T=Int(1, 8, edges=(1,)), H=Int(1, 16, edges=(1,)),
               V=Int(2, 40, edges=(2,)), sharp=SHARPNESS, drift=DRIFT,
               A_scale=Real(1e-3, 100.0, edges=(1.0,), log=True), b=BETAS, junk=FLAG),
    args=dict(hidden=normal("N", "T", "H"), weight=normal("V", "H", scale="sharp / math.sqrt(H)"),
              completion_ids=Built(_token_ids, note="(N, T) int64 or int32"),
              completion_mask=Built(_mask, note="(N, T): empty, full and cut rows; int64, bool or float"),
              advantages=Built(_advantages, note="(N,), some 0"),
              temperature=Optional(Real(0.1, 10.0, edges=(1.0, 0.3, 3.0), log=True)),
              old_logps=Optional(Built(_fused_near, note="near the current log-probs")),
              ref_logps=Optional(Built(_fused_near, note="near the current log-probs")),
              beta=Optional(Built(_beta_unless_omitted, note="b, or 0 where ref_logps is omitted")),
              **CLIP_OPTIONS),
    where=lambda d: d["beta"] is not OMIT or d["ref_logps"] is not OMIT,  # the default beta 0.04 needs ref_logps
    large=dict(T=48, V=2048),
))


_THOUGHTS = ("", "x", "2 + 2 = 4", "first\nthen\n\nso", "<answer>4</answer>", "</think")
_ANSWERS = ("", "4", "\n4\n", "x </answer", "<think>y</think>", "a\nb")
_SPACES = ("", " ", "\n", "\n\n\t ", "  \r\n")
_BREAKS = ("before", "after", "nested", "tag", "tag")


def _pick(gen, pool):
    return pool[_randint(gen, 0, len(pool))]


def _completion(gen) -> str:
    """R1's template <think>...</think><answer>...</answer> with random contents and spacing (a thought over several
    lines), half of the time broken once: text before or after, a second <think>, a tag dropped or misspelt."""
    parts = ["", "<think>", _pick(gen, _THOUGHTS), "</think>", _pick(gen, _SPACES), "<answer>", _pick(gen, _ANSWERS),
             "</answer>", _pick(gen, _SPACES), ""]
    if _randint(gen, 0, 2):
        return "".join(parts)
    broken = _pick(gen, _BREAKS)
    if broken == "before":
        parts[0] = _pick(gen, (" ", "\n", "x", "<think>"))
    elif broken == "after":
        parts[9] = _pick(gen, ("x", " and more", "</answer>", "\n<answer>5</answer>"))
    elif broken == "nested":
        parts[2] = _pick(gen, ("<think>", "a <think> b", "a\n<think>"))
    else:
        i = _pick(gen, (1, 3, 5, 7))
        parts[i] = _pick(gen, ("", parts[i][1:], parts[i][:-1], parts[i].upper(), parts[i].replace(">", " >")))
    return "".join(parts)


def _format_completions(gen, case):
    """N completions: the template, broken or not, the empty string and duplicates."""
    out = []
    for _ in range(case["N"]):
        kind = _randint(gen, 0, 8)
        out.append("" if kind == 0 else out[_randint(gen, 0, len(out))] if kind == 1 and out else _completion(gen))
    return out


# Answers in classes that the accuracy reward holds equal (as numbers, or as strings without spaces, $ and a final
# dot); the last classes are unparseable as a solution (NaN) or break the braces
_ANSWER_CLASSES = (("4", "4.0", " 4 ", "$4$", "4.", "04", "4e0"), ("-3", "-3.0", "$-3$"), ("1e2", "100", "100.0"),
                   ("\\frac{1}{2}", "\\frac {1}{2}", "\\frac{1}{2}."), ("\\frac{1}{3}",), ("x^{2}", "x^{ 2 }"),
                   ("a b", "ab", "$ab$"), ("nan",), ("", "  "), ("{",))


def _answer(gen, cls: int | None = None) -> str:
    if cls is None:
        cls = _randint(gen, 0, len(_ANSWER_CLASSES))
    return _pick(gen, _ANSWER_CLASSES[cls])


def _class_of(answer: str) -> int | None:
    return next((i for i, c in enumerate(_ANSWER_CLASSES) if answer in c), None)


def _box(answer: str) -> str:
    return "\\boxed{" + answer + "}"


def _boxed(gen, answer: str) -> str:
    """A completion around ``answer``: boxed once, after a wrong box, with nested braces, unclosed, a later unclosed
    box, or no box at all."""
    wrong = _answer(gen)
    return _pick(gen, ("the answer is " + _box(answer), _box(wrong) + " no, " + _box(answer),
                       _box(answer) + " no, " + _box(wrong), _box("{" + answer + "}"), _box(answer)[:-1],
                       _box(answer) + " then " + _box(wrong)[:-1], "the answer is " + answer, _box(answer) + ".",
                       _box(answer)))


def _solution(gen, answer: str) -> str:
    """A solution: the bare answer, boxed, in a sentence, or an unclosed box (then the whole text is the gold)."""
    return _pick(gen, (answer, _box(answer), "so " + _box(answer) + ".", _box(answer)[:-1]))


def _solutions(gen, case):
    """N solutions over the pool of answers (numbers, fractions, empty and blank ones: NaN), duplicates included."""
    out = []
    for _ in range(case["N"]):
        out.append(out[_randint(gen, 0, len(out))] if out and _randint(gen, 0, 6) == 0
                   else _solution(gen, _answer(gen)))
    return out


def _accuracy_completions(gen, case):
    """One completion per solution: around an answer of the solution's class (equal to it) two times in three,
    around any answer of the pool otherwise; duplicates."""
    out = []
    for s in case["solutions"]:
        gold = last_boxed(s)
        cls = _class_of(s if gold is None else gold)
        said = _answer(gen, cls if cls is not None and _randint(gen, 0, 3) else None)
        out.append(out[-1] if out and _randint(gen, 0, 6) == 0 else _boxed(gen, said))
    return out


REGISTRY.attach_domain(f"{DOC}.format_reward", Domain(
    sizes=dict(N=Int(1, 16)),
    args=dict(completions=Built(_format_completions, note="N strings: the template, broken or not")),
    exact=("rewards",),
))
REGISTRY.attach_domain(f"{DOC}.accuracy_reward", Domain(
    sizes=dict(N=Int(1, 16)),
    args=dict(solutions=Built(_solutions, note="N solutions: bare, boxed, unclosed, empty"),
              completions=Built(_accuracy_completions, note="N completions around a boxed answer")),
    exact=("rewards",),
))
