"""DPO: direct preference optimisation, with the variants cDPO, robust DPO, IPO and hinge.

Paper: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model"
(arXiv:2305.18290). Post: the seed's DPO article. Equations, TRL's conventions and the variants:
catalogue/dpo.md.

The KL-regularised RLHF objective max_pi E[r] - beta KL(pi || pi_ref) has the optimum (§4, eq. 4)
pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x); so r = beta log(pi*/pi_ref) + beta log Z(x), and under the
Bradley-Terry model p(y_w > y_l) = sigma(r_w - r_l) the partition function cancels (eq. 7):

    L_DPO = -E log sigma(beta h),   h = log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l).

Conventions (catalogue/dpo.md, TRL dpo_trainer.py): a batch is [chosen; rejected] concatenated along the batch
axis; the sequence log-probability sums the next-token log-softmax over the completion tokens (logits shifted by
one, prompt and padding masked out); IPO uses per-token *averaged* log-ratios (TRL PR #1265); "cdpo" is
Mitchell's conservative DPO (TRL's sigmoid with label_smoothing before e3b7897c8). Everything here is float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from eqspec.contracts import ArgumentError
from eqspec.domain import FLAG, Choice, Domain, Int, Optional, Real, completion_mask, integers, log_probs, normal
from eqspec.outputs import Output
from eqspec.registry import REGISTRY, claim, operation, spec

from .validators import check_mask, check_same, check_tensor, check_token_ids

DOC = "dpo"
F64 = torch.float64
LOSS_TYPES = ("sigmoid", "cdpo", "robust", "ipo", "hinge")
AVERAGED = ("ipo",)  # loss types that take length-averaged log-ratios


# ---------------------------------------------------------------------------------------------------
# Sequence log-probabilities
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\log\pi(y_t\mid x,y_{<t})=z_{t-1,y_t}-\log\sum_v e^{z_{t-1,v}}",
      source="TRL trainer/utils.py selective_log_softmax; catalogue/dpo.md (sequence log-probs)")
def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[..., index]: the log-probability of each target token."""
    return torch.log_softmax(logits, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)


def check_sequence_args(logits, input_ids, completion_mask) -> None:
    check_tensor("logits", logits, rank=3)
    N, T, V = logits.shape
    if T < 2:
        raise ArgumentError("logits.shape[1]",
                            f"logits.shape[1] (sequence length T) must be at least 2 (prompt + completion), got {T}")
    check_token_ids("input_ids", input_ids, (N, T), V)
    check_mask("completion_mask", completion_mask, (N, T))


@operation(
    DOC,
    latex=r"\log\pi(y\mid x)=\sum_{t=1}^{T-1} m_t\,\log\mathrm{softmax}(z_{t-1})_{y_t},\quad "
          r"\overline{\log\pi}=\frac{\sum_t m_t\log\mathrm{softmax}(z_{t-1})_{y_t}}{\sum_t m_t}",
    source="TRL dpo_trainer.py _compute_loss L1329-1400 (shift, selective_log_softmax, mask, sum); §3 eq. 7",
    returns="logps",
    summary="Sequence log-probabilities: logits (N, T, V), input_ids (N, T), completion_mask (N, T) 0/1 (1 on "
            "completion tokens) -> (N,) sums (average=True: means) of log softmax(logits[:, t-1])[input_ids[:, t]] "
            "over the completion positions t >= 1.",
    convention="Shift by one: the logits at t-1 score token t, and completion_mask[:, 0] is never used; an average "
               "over zero completion tokens is 0 (count clamped to 1, as TRL).",
    baseline="torch.naive",
    outputs=(Output("logps", shape="(logits.shape[0],)", dtype="logits|float64", device="logits"),),
)
def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor, *,
                   average: bool = False) -> torch.Tensor:
    check_sequence_args(logits, input_ids, completion_mask)
    z = logits.to(F64)[:, :-1]
    labels = input_ids.long()[:, 1:]
    m = completion_mask.to(F64)[:, 1:]
    per_token = selective_log_softmax(z, labels) * m
    total = per_token.sum(-1)
    return total / m.sum(-1).clamp(min=1.0) if average else total


# ---------------------------------------------------------------------------------------------------
# Theory: the KL-regularised optimum, Bradley-Terry, the implicit reward
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\pi^*(y)=\frac{1}{Z}\pi_{ref}(y)\exp\big(r(y)/\beta\big),\ Z=\sum_y\pi_{ref}(y)e^{r(y)/\beta}",
      source="§4 eq. 4 (Appendix A.1)")
def optimal_policy(pi_ref: torch.Tensor, r: torch.Tensor, beta: float) -> torch.Tensor:
    """The optimum of max_pi E_pi[r] - beta KL(pi || pi_ref) on a categorical (last axis)."""
    return torch.softmax(torch.log(pi_ref) + r / beta, dim=-1)


@spec(DOC, latex=r"\hat r_\theta(x,y)=\beta\log\frac{\pi_\theta(y\mid x)}{\pi_{ref}(y\mid x)}", source="§5 eq. 5")
def implicit_reward(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    return beta * (logp - ref_logp)


@spec(DOC, latex=r"p(y_w\succ y_l)=\sigma\big(r(y_w)-r(y_l)\big)", source="§3 eq. 1-2 (Bradley-Terry)")
def bradley_terry(r_w: torch.Tensor, r_l: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(r_w - r_l)


@spec(DOC, latex=r"h=\log\frac{\pi_\theta(y_w)}{\pi_{ref}(y_w)}-\log\frac{\pi_\theta(y_l)}{\pi_{ref}(y_l)}",
      source="§4 eq. 7; catalogue/dpo.md", convention="h = chosen log-ratio minus rejected log-ratio")
def log_ratio_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps) -> torch.Tensor:
    return (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)


# ---------------------------------------------------------------------------------------------------
# The losses
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\ell(h)=-\log\sigma(\beta h)=\mathrm{sp}(-\beta h)", source="§4 eq. 7",
      convention="-log sigma, exact for every h: torch's softplus returns x itself above its threshold 20, off by "
                 "log1p(e^-x) <= e^-20 = 2.1e-9 (measured: l(h) - l(-h) off by 6.2e-12 at beta h = 25.8)")
def sigmoid_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * h)


@spec(DOC, latex=r"\ell_{cDPO}(h)=(1-\epsilon)\,\mathrm{sp}(-\beta h)+\epsilon\,\mathrm{sp}(\beta h)",
      source="Mitchell 2023, 'A note on DPO with noisy preferences' (conservative DPO); catalogue/dpo.md")
def cdpo_loss(h: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    return -(1 - epsilon) * F.logsigmoid(beta * h) - epsilon * F.logsigmoid(-beta * h)


@spec(DOC,
      latex=r"\ell_{rob}(h)=\frac{(1-\epsilon)\,\mathrm{sp}(-\beta h)-\epsilon\,\mathrm{sp}(\beta h)}{1-2\epsilon}",
      source="Chowdhury et al. 2024, robust DPO (arXiv:2403.00409) eq. 8; TRL loss_type='robust'")
def robust_loss(h: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    return (-(1 - epsilon) * F.logsigmoid(beta * h) + epsilon * F.logsigmoid(-beta * h)) / (1 - 2 * epsilon)


@spec(DOC, latex=r"\ell_{IPO}(\bar h)=\Big(\bar h-\frac{1}{2\beta}\Big)^2",
      source="Azar et al. 2023, IPO (arXiv:2310.12036) eq. 17; TRL loss_type='ipo'",
      convention="h-bar from per-token averaged log-ratios (TRL PR #1265, confirmed with the IPO authors)")
def ipo_loss(h_bar: torch.Tensor, beta: float) -> torch.Tensor:
    return (h_bar - 1 / (2 * beta)) ** 2


@spec(DOC, latex=r"\ell_{hinge}(h)=\max(0,1-\beta h)", source="SLiC (Zhao et al. 2023); TRL loss_type='hinge'")
def hinge_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.relu(1 - beta * h)


def check_loss_options(beta, loss_type, label_smoothing) -> tuple[float, str, float]:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ArgumentError("beta", f"beta must be a positive finite number, got {beta!r}")
    if loss_type not in LOSS_TYPES:
        raise ArgumentError("loss_type", f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not (
            0 <= label_smoothing < 0.5):
        raise ArgumentError("label_smoothing", f"label_smoothing must be a number in [0, 0.5), got {label_smoothing!r}")
    return float(beta), loss_type, float(label_smoothing)


def pair_loss(h: torch.Tensor, beta: float, loss_type: str, label_smoothing: float) -> torch.Tensor:
    """The per-pair loss of each variant as a function of the margin h (h-bar for IPO)."""
    if loss_type == "sigmoid":
        return sigmoid_loss(h, beta)
    if loss_type == "cdpo":
        return cdpo_loss(h, beta, label_smoothing)
    if loss_type == "robust":
        return robust_loss(h, beta, label_smoothing)
    if loss_type == "ipo":
        return ipo_loss(h, beta)
    return hinge_loss(h, beta)


def check_pair_args(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps):
    names = ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    xs = (chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    for name, x in zip(names, xs):
        check_tensor(name, x, rank=1)
    check_same(names, xs, "shape")
    check_same(names, xs, "device")


@operation(
    DOC,
    latex=r"\ell_i=\ell\big(h_i\big),\ h_i=\log\frac{\pi_\theta(y_{w,i})}{\pi_{ref}(y_{w,i})}-"
          r"\log\frac{\pi_\theta(y_{l,i})}{\pi_{ref}(y_{l,i})},\ \hat r_{w,i}=\beta\log\frac{\pi_\theta(y_{w,i})}"
          r"{\pi_{ref}(y_{w,i})}",
    source="§4 eq. 7 (sigmoid); Mitchell's note (cdpo); Chowdhury et al. eq. 8 (robust); IPO eq. 17; SLiC (hinge)",
    returns="(losses, chosen_rewards, rejected_rewards)",
    summary="Per-pair DPO losses from sequence log-probs: chosen_logps, rejected_logps, ref_chosen_logps, "
            "ref_rejected_logps (B,) -> losses (B,), implicit rewards beta log(pi/pi_ref) of chosen and rejected "
            "(B,). loss_type: sigmoid | cdpo | robust | ipo | hinge; label_smoothing = epsilon of cdpo/robust.",
    convention="For ipo the four inputs must already be per-token averages; the rewards carry no gradient to the "
               "reference log-probs.",
    baseline="torch.naive",
    outputs=(
        Output("losses", shape="chosen_logps.shape", dtype="chosen_logps", device="chosen_logps"),
        Output("chosen_rewards", shape="chosen_logps.shape", dtype="chosen_logps", device="chosen_logps"),
        Output("rejected_rewards", shape="chosen_logps.shape", dtype="chosen_logps", device="chosen_logps"),
    ),
    capabilities=("grad",),
)
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float = 0.1,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    check_pair_args(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    beta, loss_type, eps = check_loss_options(beta, loss_type, label_smoothing)
    pw, pl = chosen_logps.to(F64), rejected_logps.to(F64)
    rw, rl = ref_chosen_logps.to(F64).detach(), ref_rejected_logps.to(F64).detach()  # no gradient to the reference
    h = log_ratio_margin(pw, pl, rw, rl)
    losses = pair_loss(h, beta, loss_type, eps)
    dtype = chosen_logps.dtype
    return (losses.to(dtype), implicit_reward(pw, rw, beta).detach().to(dtype),
            implicit_reward(pl, rl, beta).detach().to(dtype))


@spec(DOC, latex=r"\nabla_\theta\mathcal L=-\beta\,\sigma(\hat r_l-\hat r_w)\big(\nabla_\theta\log\pi_\theta(y_w)-"
                 r"\nabla_\theta\log\pi_\theta(y_l)\big)",
      source="§4 'What does the DPO update do?' (gradient of eq. 7)")
def dpo_gradient(h: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """d l / d log pi(y_w) and d l / d log pi(y_l) of the sigmoid loss: -beta sigma(-beta h) and its negative."""
    weight = torch.sigmoid(-beta * h)  # = sigma(r_l - r_w): large when the implicit reward orders the pair wrongly
    return -beta * weight, beta * weight


# ---------------------------------------------------------------------------------------------------
# The whole loss from the last hidden states: what the fused (chunked) implementations compute
# ---------------------------------------------------------------------------------------------------

def check_fused_args(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps):
    check_tensor("hidden", hidden, rank=3)
    check_tensor("weight", weight, rank=2)
    check_same(("hidden", "weight"), (hidden, weight), "dtype")
    check_same(("hidden", "weight"), (hidden, weight), "device")
    N, T, H = hidden.shape
    if weight.shape[1] != H:
        raise ArgumentError("weight.shape[1]",
                            f"weight.shape[1] (hidden size) must be {H}, as hidden.shape[2], got shape "
                            f"{tuple(weight.shape)}")
    if N % 2:
        raise ArgumentError("hidden.shape[0]",
                            f"hidden.shape[0] must be even (the batch is [chosen; rejected]), got {N}")
    if T < 2:
        raise ArgumentError("hidden.shape[1]", f"hidden.shape[1] (sequence length T) must be at least 2, got {T}")
    check_token_ids("input_ids", input_ids, (N, T), weight.shape[0])
    check_mask("completion_mask", completion_mask, (N, T))
    for name, x in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
        check_tensor(name, x, rank=1)
        if x.shape[0] != N // 2:
            raise ArgumentError(name, f"{name} must have shape ({N // 2},) (one per pair), got {tuple(x.shape)}")


def _pair_from_sequence(logps, counts, ref_chosen_logps, ref_rejected_logps, *, beta, loss_type, label_smoothing):
    """The batch loss from the (2B,) summed policy log-probs: average for IPO, split, per-pair loss, mean."""
    rc, rr = ref_chosen_logps, ref_rejected_logps
    if loss_type in AVERAGED:
        cc, cr = counts.chunk(2)
        logps = logps / counts.clamp(min=1.0)
        rc, rr = rc / cc.clamp(min=1.0), rr / cr.clamp(min=1.0)
    chosen, rejected = logps.chunk(2)
    losses, _, _ = dpo_loss(chosen, rejected, rc, rr, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
    return losses.mean()


@operation(
    DOC,
    latex=r"z=h W^\top,\ \mathcal L=\frac1B\sum_{i=1}^B\ell\big(h_i\big),\ "
          r"\log\pi(y)=\sum_t m_t\log\mathrm{softmax}(z_{t-1})_{y_t}",
    source="§4 eq. 7 with TRL's sequence log-probs; Liger-Kernel fused_linear_preference (anchors.md §3)",
    returns="loss",
    summary="The DPO batch loss from the last hidden states: hidden (2B, T, H) [chosen; rejected], the LM head "
            "weight (V, H), input_ids (2B, T), completion_mask (2B, T), ref_chosen_logps and ref_rejected_logps "
            "(B,) summed over completion tokens -> the mean over pairs of the per-pair loss (a scalar, "
            "differentiable in hidden and weight).",
    convention="For ipo the policy and reference log-probs are both divided by the number of completion tokens "
               "(shifted mask, clamped to 1).",
    dtypes=("float64", "float32", "bfloat16"),
    baseline="torch.naive",
    outputs=(Output("loss", shape="()", dtype="hidden|float64", device="hidden"),),
    capabilities=("grad", "chunk_size"),
)
def fused_linear_dpo_loss(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *,
                          beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    check_fused_args(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps)
    check_loss_options(beta, loss_type, label_smoothing)
    logits = hidden.to(F64) @ weight.to(F64).T
    logps = sequence_logps(logits, input_ids, completion_mask)
    counts = completion_mask.to(F64)[:, 1:].sum(-1)
    return _pair_from_sequence(logps, counts, ref_chosen_logps.to(F64), ref_rejected_logps.to(F64), beta=beta,
                               loss_type=loss_type, label_smoothing=label_smoothing)


# ---------------------------------------------------------------------------------------------------
# Error analysis of the fused losses: the size of the terms each output sums (eqspec/budget.py), for the floors
# ---------------------------------------------------------------------------------------------------

def pair_loss_sensitivity(h: torch.Tensor, beta: float, loss_type: str, label_smoothing: float):
    """(terms of l, l', terms of l', |l''|) at the margins h: what one rounding of each operation of l(h) and of its
    derivative l'(h) can cost, with l'' the rate at which an error in h moves l'.

    The softplus variants are l = a sp(-x) + b sp(x), x = beta h: (a, b) = (1, 0) for sigmoid, (1 - eps, eps) for
    cDPO, (1 - eps, -eps) / (1 - 2 eps) for robust. A softplus sums max(x, 0) and log1p(e^-|x|) <= 1; the product
    beta h rounds once, which moves l by |l'| |h|. l' = beta (b sigma(x) - a sigma(-x)) rounds in sigma (exp, 1 +, the
    division) and in the product by beta: four roundings of each term; an error in h moves it by
    |l''| = beta^2 (|a| + |b|) sigma(x) sigma(-x). IPO: l = (h - c)^2, c = 1 / (2 beta), l' = 2 (h - c), l'' = 2.
    Hinge: l = relu(1 - x), l' = -beta or 0, l'' = 0 away from its kink at x = 1.
    """
    x = beta * h
    if loss_type == "ipo":
        c = 1 / (2 * beta)
        loss = (h - c) ** 2
        return 2 * (h - c).abs() * (h.abs() + c) + loss, 2 * (h - c), 2 * (h.abs() + 2 * c), torch.full_like(h, 2.0)
    if loss_type == "hinge":
        dl = torch.where(x < 1, -beta, 0.0)
        return 1 + 2 * x.abs() + torch.relu(1 - x), dl, dl.abs(), torch.zeros_like(h)
    eps = label_smoothing
    a, b = {"sigmoid": (1.0, 0.0), "cdpo": (1 - eps, eps),
            "robust": ((1 - eps) / (1 - 2 * eps), -eps / (1 - 2 * eps))}[loss_type]
    s_pos, s_neg = torch.sigmoid(x), torch.sigmoid(-x)
    slopes = beta * (abs(a) * s_neg + abs(b) * s_pos)
    d2l = beta ** 2 * (abs(a) + abs(b)) * s_pos * s_neg
    # softplus returns x itself beyond its threshold (exp(x) overflows past 709, and 0 x inf is NaN where b = 0)
    terms_l = abs(a) * (F.softplus(-x) + 1) + abs(b) * (F.softplus(x) + 1) \
        + slopes * h.abs()
    return terms_l + pair_loss(h, beta, loss_type, eps).abs(), beta * (b * s_pos - a * s_neg), \
        4 * slopes + d2l * h.abs(), d2l


def scored_token_magnitudes(rows: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0):
    """The float64 logits of scored rows of hidden states (n, H), z = rows W^T / T, and the size of the terms whose
    rounding moves what is computed from them: (z, p, lse, logp, zabs, lse_terms, a).

    zabs = |rows| |W|^T / T + |z|: each logit's products and the division by T. lse = m + log sum_v exp(z_v - m) rounds
    in the subtractions z_v - m and the logits themselves (weighted by p), exp and the sum (relative, once each), the
    log (|lse - m|) and the final sum (|lse|): lse_terms. log p = z_y - lse moves with z_y's terms, lse's and the
    difference (or, as log_softmax computes it, (z_y - m) - log s): a. The logits of the target and of the lse are
    not assumed to round alike (a kernel may compute them in other tiles), so their errors are not assumed to cancel.
    """
    rows, W = rows.detach().to(F64), weight.detach().to(F64)
    z = rows @ W.T / temperature
    zabs = rows.abs() @ W.abs().T / temperature + z.abs()
    lse = torch.logsumexp(z, -1)
    p = torch.exp(z - lse[:, None])
    m = z.amax(-1)
    lse_terms = (p * ((z - m[:, None]).abs() + zabs)).sum(-1) + 2 + (lse - m).abs() + lse.abs()
    z_y = z.gather(-1, targets[:, None]).squeeze(-1)
    logp = z_y - lse
    a = zabs.gather(-1, targets[:, None]).squeeze(-1) + (z_y - m).abs() + lse_terms + logp.abs()
    return z, p, lse, logp, zabs, lse_terms, a


def logits_gradient_magnitudes(rows, weight, targets, z, p, lse, zabs, lse_terms, g, g_err, temperature: float = 1.0):
    """(mag_drows (n, H), mag_dW (V, H)) of d rows = dz W and dW = dz^T rows with dz = g (onehot - p) / T, from the
    size of the error g_err of each row's g = d loss / d log p: g rounds (g_err); p = exp(z - lse) moves with its
    logit's terms, lse's, the subtraction and exp; dz rounds in the product and the division; then each product of
    the two matrix products rounds once."""
    rows, W = rows.detach().to(F64), weight.detach().to(F64)
    d = (F.one_hot(targets, W.shape[0]).to(F64) - p).abs()
    p_terms = p * (zabs + lse_terms[:, None] + (z - lse[:, None]).abs() + 1)
    E = (g_err[:, None] * d + g.abs()[:, None] * (p_terms + 2 * d)) / temperature
    return E @ W.abs(), E.T @ rows.abs()


def fused_pair_margins(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *,
                       loss_type: str = "sigmoid"):
    """(h, H, tokens): each pair's margin h (h-bar for IPO) in float64, the size H of the terms whose rounding moves
    it (each sequence's tokens' a, the sum over its tokens, the four log-probs of the difference, h itself), and the
    scored tokens' pieces (seq, rows, targets, scored_token_magnitudes, counts) for the gradients."""
    h64, W = hidden.detach().to(F64), weight.detach().to(F64)
    N = h64.shape[0]
    scored = completion_mask[:, 1:] != 0
    seq, t = scored.nonzero(as_tuple=True)
    rows, targets = h64[seq, t], input_ids[seq, t + 1].long()
    z, p, lse, logp, zabs, lse_terms, a = scored_token_magnitudes(rows, W, targets)
    zeros = torch.zeros(N, dtype=F64, device=h64.device)
    logps = zeros.index_add(0, seq, logp)
    terms = zeros.index_add(0, seq, a + logp.abs())  # each token, and one rounding per term
    refs = torch.cat([ref_chosen_logps.detach().to(F64), ref_rejected_logps.detach().to(F64)])
    counts = scored.to(F64).sum(-1).clamp(min=1.0)
    if loss_type in AVERAGED:  # the division by the count rounds once more
        logps, terms, refs = logps / counts, (terms + logps.abs()) / counts, refs / counts
    else:
        counts = torch.ones_like(counts)
    lp_w, lp_l = logps.chunk(2)
    r_w, r_l = refs.chunk(2)
    margin = (lp_w - r_w) - (lp_l - r_l)
    t_w, t_l = terms.chunk(2)
    size = t_w + t_l + 2 * (lp_w.abs() + r_w.abs() + lp_l.abs() + r_l.abs()) + margin.abs()
    return margin, size, (seq, rows, targets, (z, p, lse, logp, zabs, lse_terms, a), counts)


def fused_magnitudes(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *,
                     beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0, **_):
    """(mag_loss, mag_dhidden, mag_dweight, n): the loss moves by |l'(h)| u H and l's own roundings per pair (mean over
    pairs); the gradient d loss / d log pi of a sequence is +-l'(h) / B (/ its count for IPO), off by |l''| u H and
    l''s own roundings; then through dz = g (onehot - p) into d hidden and d weight (logits_gradient_magnitudes)."""
    h, size, (seq, rows, targets, (z, p, lse, logp, zabs, lse_terms, a), counts) = fused_pair_margins(
        hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, loss_type=loss_type)
    B = h.shape[0]
    terms_l, dl, terms_dl, d2l = pair_loss_sensitivity(h, beta, loss_type, label_smoothing)
    mag_loss = float((dl.abs() * size + terms_l).sum() / B)
    g = torch.cat([dl, -dl]) / (B * counts)
    g_err = torch.cat([d2l * size + terms_dl + dl.abs()] * 2) / (B * counts)
    mag_rows, mag_dW = logits_gradient_magnitudes(rows, weight, targets, z, p, lse, zabs, lse_terms, g[seq],
                                                  g_err[seq])
    n = hidden.shape[-1] + weight.shape[0] + hidden.shape[1]
    return mag_loss, float(mag_rows.max()) if mag_rows.numel() else 0.0, float(mag_dW.max()), n


def fused_loss_magnitudes(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, **kw):
    """(mag_loss, n) of fused_magnitudes: the loss's floor alone."""
    mag_loss, _, _, n = fused_magnitudes(hidden, weight, input_ids, completion_mask, ref_chosen_logps,
                                         ref_rejected_logps, **kw)
    return mag_loss, n


REGISTRY.attach_magnitudes(f"{DOC}.fused_linear_dpo_loss", fused_loss_magnitudes)


def fused_gradient_magnitudes(weights, *args, **kw):
    """({"hidden": .., "weight": ..}, n) of fused_magnitudes for the gradient of w x loss: the gradients' floors (the
    logits' p - onehot cancels to 1e-9 of p's rounding at sharp logits: measured 1.5e-13 off a float64 d hidden of
    1.5e-9 at sharp = 10)."""
    _, mag_rows, mag_dW, n = fused_magnitudes(*args, **kw)
    w = float(weights[0].abs().max())
    return {"hidden": w * mag_rows, "weight": w * mag_dW}, n


REGISTRY.attach_gradient_magnitudes(f"{DOC}.fused_linear_dpo_loss", fused_gradient_magnitudes)


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue/dpo.md, "Checkable properties", and the list)
# ---------------------------------------------------------------------------------------------------

SEQ, LOSS, FUSED = f"{DOC}.sequence_logps", f"{DOC}.dpo_loss", f"{DOC}.fused_linear_dpo_loss"

claim(DOC, "sequence_logps_masked", kind="identity", operations=(SEQ,),
      statement="The completion log-prob equals the manual sum of next-token log-softmax over completion tokens "
                "(shift by one); changing logits at prompt or padding positions, or appending padding, changes "
                "nothing (up to the rounding of each log-prob's terms and of the sum).",
      source="catalogue property 6; TRL _compute_loss (shift, mask, sum)")
claim(DOC, "known_answers", kind="known-answer", operations=(LOSS,),
      statement="beta = 0.1: sigmoid loss 0.693147 / 0.644397 / 0.744397 / 0.474077 at h = 0 / 1 / -1 / 5 "
                "(weights 0.5 / 0.475021 / 0.377541); hinge 0.9 at h = 1; ipo 25 at h-bar = 0 and 0 at 5; "
                "eps = 0.1, h = 2: cDPO 0.618139, robust 0.573139.",
      source="catalogue/dpo.md, known answers")
claim(DOC, "reference_point", kind="exact", operations=(LOSS,),
      statement="At pi = pi_ref (h = 0): sigmoid, cDPO and robust losses ln 2, gradient weight sigma(0) = 1/2, "
                "hinge 1, ipo 1/(4 beta^2), and both implicit rewards 0.",
      source="catalogue property 1")
claim(DOC, "gradient_matches_derivation", kind="identity", operations=(LOSS, FUSED),
      statement="The paper's closed-form gradient -beta sigma(r_l - r_w)(grad log pi_w - grad log pi_l) equals "
                "autograd of the loss (up to rounding), the reference log-probs receive no gradient, and on a tiny "
                "model's parameters (hidden states and LM head) autograd equals central finite differences (up to "
                "their truncation error, measured by Richardson extrapolation, and rounding).",
      source="§4 'What does the DPO update do?'; catalogue property 4")
claim(DOC, "shift_invariance", kind="identity", operations=(LOSS,),
      statement="Adding one constant to the chosen and rejected sequence log-probs (of the policy or of the "
                "reference) leaves every pairwise loss unchanged: Z(x) cancels (up to rounding at the size of the "
                "shifted log-probs).",
      source="§4 (Z cancels in eq. 6-7); catalogue property 2")
claim(DOC, "swap_symmetry", kind="identity", operations=(LOSS,),
      statement="Swapping chosen and rejected negates h, and l(h) - l(-h) = -beta h for the sigmoid loss "
                "(softplus identity, up to rounding at the size of |beta h|).",
      source="catalogue property 3")
claim(DOC, "monotone_convex", kind="exact", operations=(LOSS,),
      statement="Every variant's loss is convex in h; sigmoid, robust and hinge are non-increasing in h, while cDPO "
                "decreases up to its minimum beta h* = log((1 - eps)/eps) and IPO up to h* = 1/(2 beta), then "
                "increase (second and first differences on a grid, up to rounding).",
      source="catalogue property 5")
claim(DOC, "robust_unbiased", kind="identity", operations=(LOSS,),
      statement="The robust loss is unbiased under label flips with probability eps: (1 - eps) l_rob(h) + eps "
                "l_rob(-h) = -log sigma(beta h) exactly (up to rounding); cDPO is not.",
      source="Chowdhury et al. 2024 Lemma 3.1; catalogue property 5")
claim(DOC, "optimum_reward_identity", kind="identity", operations=(LOSS,),
      statement="On categorical toys, pi* proportional to pi_ref exp(r/beta) satisfies beta log(pi*/pi_ref) - r = "
                "const over y; the sigmoid loss is the Bradley-Terry negative log-likelihood of the "
                "implicit rewards; and the population DPO loss under Bradley-Terry preferences with reward r is "
                "stationary at pi* (each up to rounding).",
      source="§4 eq. 4-7, Theorem 1; catalogue property 7")
claim(DOC, "fused_matches_spec", kind="budget", operations=(FUSED,),
      statement="The batch loss from hidden states (every loss type, IPO length-averaged, any chunk size) and its "
                "gradients in hidden and weight are within the error budget of the float64 spec (2x / 3x the "
                "naive same-precision implementation's error + floor).",
      source="Liger-Kernel fused linear preference loss (anchors.md §3); catalogue (2): IPO averaged (TRL #1265)")
claim(DOC, "dpo_contract", kind="contract", operations=(SEQ, LOSS, FUSED),
      statement="Malformed input (odd batch, wrong ranks or shapes, token ids outside the vocabulary, a mask that "
                "is not 0/1, beta <= 0, an unknown loss type, label_smoothing outside [0, 0.5)) is rejected with "
                "an error naming the argument.",
      source="design.md (bad input)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------

BETA = Optional(Real(1e-3, 20.0, edges=(0.1, 0.5, 1.0), log=True))
LOSS_OPTIONS = dict(beta=BETA, loss_type=Optional(Choice(LOSS_TYPES)),
                    label_smoothing=Optional(Real(0.0, 0.49, edges=(0.0, 0.1, 0.25))))
SHARPNESS = Real(0.1, 30.0, edges=(1.0, 10.0), log=True)  # the spread of the logits: flat to one-hot rows

REGISTRY.attach_domain(SEQ, Domain(
    sizes=dict(N=Int(1, 5, edges=(1,)), T=Int(2, 12, edges=(2,)), V=Int(2, 40, edges=(2,)), sharp=SHARPNESS),
    args=dict(logits=normal("N", "T", "V", scale="sharp"), input_ids=integers("N", "T", high="V"),
              completion_mask=completion_mask("N", "T"), average=Optional(FLAG)),
    large=dict(T=64, V=4096),
))
REGISTRY.attach_domain(LOSS, Domain(
    sizes=dict(B=Int(1, 8, edges=(1,)), spread=Real(0.01, 200.0, edges=(1.0,), log=True)),
    args=dict(chosen_logps=log_probs("B", scale="spread"), rejected_logps=log_probs("B", scale="spread"),
              ref_chosen_logps=log_probs("B", scale="spread"), ref_rejected_logps=log_probs("B", scale="spread"),
              **LOSS_OPTIONS),
    large=dict(B=4096),
))
REGISTRY.attach_domain(FUSED, Domain(
    sizes=dict(B=Int(1, 3, edges=(1,)), T=Int(2, 8, edges=(2,)), H=Int(1, 16, edges=(1,)), V=Int(2, 40, edges=(2,)),
               sharp=SHARPNESS, spread=Real(0.1, 50.0, log=True)),
    args=dict(hidden=normal("2 * B", "T", "H"), weight=normal("V", "H", scale="sharp / math.sqrt(H)"),
              input_ids=integers("2 * B", "T", high="V"), completion_mask=completion_mask("2 * B", "T"),
              ref_chosen_logps=log_probs("B", scale="spread"), ref_rejected_logps=log_probs("B", scale="spread"),
              **LOSS_OPTIONS),
    large=dict(T=48, V=2048),
))
