"""DPO and GRPO in plain torch, in the inputs' dtype: the naive same-precision baselines.

Each function is "the obvious torch code" for its operation (specs/dpo.py, specs/grpo.py): the full
(batch x tokens x vocab) logits are materialised, log-softmaxed and gathered. The error budget measures every other
implementation against their error; the fused chunked versions (fused.py) reuse the loss-from-log-probs functions
here, so the only thing they change is how the log-probs and their gradients are computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specs import dpo as dpo_spec
from specs import grpo as grpo_spec

# --- DPO ------------------------------------------------------------------------------------------

def sequence_logps(logits, input_ids, completion_mask, *, average: bool = False):
    dpo_spec.check_sequence_args(logits, input_ids, completion_mask)
    per_token = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None].long()).squeeze(-1)
    m = completion_mask[:, 1:].to(per_token.dtype)
    total = (per_token * m).sum(-1)
    return total / m.sum(-1).clamp(min=1.0) if average else total


def pair_losses(h, beta: float, loss_type: str, eps: float):
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * h)
    if loss_type == "cdpo":
        return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    if loss_type == "robust":
        return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return torch.relu(1 - beta * h)


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float = 0.1,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    dpo_spec.check_pair_args(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    beta, loss_type, eps = dpo_spec.check_loss_options(beta, loss_type, label_smoothing)
    chosen_ratio = chosen_logps - ref_chosen_logps.detach()
    rejected_ratio = rejected_logps - ref_rejected_logps.detach()
    losses = pair_losses(chosen_ratio - rejected_ratio, beta, loss_type, eps)
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def dpo_batch_loss(logps, counts, ref_chosen_logps, ref_rejected_logps, *, beta, loss_type, label_smoothing):
    """The mean pair loss from the (2B,) summed log-probs [chosen; rejected] and completion-token counts."""
    rc, rr = ref_chosen_logps.to(logps.dtype), ref_rejected_logps.to(logps.dtype)
    if loss_type in dpo_spec.AVERAGED:
        cc, cr = counts.chunk(2)
        logps = logps / counts.clamp(min=1.0)
        rc, rr = rc / cc.clamp(min=1.0), rr / cr.clamp(min=1.0)
    chosen, rejected = logps.chunk(2)
    losses, _, _ = dpo_loss(chosen, rejected, rc, rr, beta=beta, loss_type=loss_type,
                            label_smoothing=label_smoothing)
    return losses.mean()


def fused_linear_dpo_loss(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *,
                          beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    """Materialises the (2B, T, V) logits in the inputs' dtype."""
    dpo_spec.check_fused_args(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps)
    dpo_spec.check_loss_options(beta, loss_type, label_smoothing)
    logits = hidden @ weight.T
    logps = sequence_logps(logits, input_ids, completion_mask)
    counts = completion_mask[:, 1:].to(logps.dtype).sum(-1)
    return dpo_batch_loss(logps, counts, ref_chosen_logps, ref_rejected_logps, beta=beta, loss_type=loss_type,
                          label_smoothing=label_smoothing)


# --- GRPO -----------------------------------------------------------------------------------------

def group_advantages(rewards, group_size: int, *, std: str = "sample", eps: float = 0.0):
    grpo_spec.check_advantage_args(rewards, group_size, std, eps)
    r = rewards.view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)
    centred = centred.masked_fill(constant, 0.0)
    if std != "none":
        sigma = r.std(dim=1, keepdim=True, correction=1 if std == "sample" else 0)
        centred = centred / (sigma + eps).masked_fill(constant, 1.0)
    return centred.reshape(-1)


def token_logps(logits, completion_ids, *, temperature: float = 1.0):
    T = grpo_spec.check_token_logps_args(logits, completion_ids, temperature)
    return torch.log_softmax(logits / T, dim=-1).gather(-1, completion_ids[..., None].long()).squeeze(-1)


def grpo_loss(logps, old_logps, ref_logps, advantages, completion_mask, *, beta: float = 0.04,
              epsilon_low: float = 0.2, epsilon_high: float | None = None, loss_type: str = "grpo",
              max_completion_length: int | None = None):
    grpo_spec.check_grpo_loss_args(logps, old_logps, ref_logps, advantages, completion_mask, beta)
    beta, eps_lo, eps_hi, L = grpo_spec.check_loss_options(beta, epsilon_low, epsilon_high, loss_type,
                                                           max_completion_length, logps.shape[1])
    old = logps.detach() if old_logps is None else old_logps.detach().to(logps.dtype)
    A = advantages.detach().to(logps.dtype)[:, None]
    m = completion_mask.to(logps.dtype)
    # masked positions may hold anything: zero them before exp, or 0 x inf = NaN reaches the gradient
    active = m > 0
    logps = torch.where(active, logps, torch.zeros_like(logps))
    old = torch.where(active, old, torch.zeros_like(old))
    rho = torch.exp(logps - old)
    per_token = -torch.min(rho * A, torch.clamp(rho, 1 - eps_lo, 1 + eps_hi) * A)
    if beta != 0:
        ref = torch.where(active, ref_logps.detach().to(logps.dtype), torch.zeros_like(logps))
        delta = ref - logps
        per_token = per_token + beta * (torch.exp(delta) - delta - 1)
    if loss_type == "grpo":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    if loss_type in ("bnpo", "dapo"):
        return (per_token * m).sum() / m.sum().clamp(min=1.0)
    return (per_token * m).sum() / (logps.shape[0] * L)


def fused_linear_grpo_loss(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None,
                           ref_logps=None, *, temperature: float = 1.0, beta: float = 0.04, epsilon_low: float = 0.2,
                           epsilon_high: float | None = None, loss_type: str = "grpo",
                           max_completion_length: int | None = None):
    """Materialises the (N, T, V) logits in the inputs' dtype."""
    grpo_spec.check_fused_args(hidden, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps,
                               beta)
    logps = token_logps(hidden @ weight.T, completion_ids, temperature=temperature)
    return grpo_loss(logps, old_logps, ref_logps, advantages, completion_mask, beta=beta, epsilon_low=epsilon_low,
                     epsilon_high=epsilon_high, loss_type=loss_type, max_completion_length=max_completion_length)
