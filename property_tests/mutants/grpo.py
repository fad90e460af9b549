"""Mutants of the GRPO document: the catalogue's plausible bugs (catalogue/grpo.md, list 2), each in float64 so that
nothing but the bug separates it from the spec. Each lists the claims whose property tests must catch it.
"""

from __future__ import annotations

import re
from functools import partial

import torch

from specs import grpo
from specs.grpo import check_advantage_args, check_grpo_loss_args, check_loss_options

from . import mutant

F64 = torch.float64


# --- advantages -------------------------------------------------------------------------------------------

def _advantages(rewards, group_size, *, std="sample", eps=0.0, bug=""):
    if bug != "no_input_checks":
        check_advantage_args(rewards, group_size, std, eps)
    r = rewards.to(F64)
    if bug == "strided_groups":  # view(G, -1): completion j of every question in one "group"
        r = r.view(group_size, -1).T
    elif bug == "batch_statistics":  # one mean and std over the whole batch (scale_rewards='batch' and more)
        r = r.view(1, -1)
    else:
        r = r.view(-1, group_size)
    centred = r - r.mean(1, keepdim=True)
    constant = (r == r[:, :1]).all(1, keepdim=True)
    centred = torch.where(constant, 0.0, centred)
    if std != "none" and bug != "std_ignored":
        correction = 0 if (std == "population" or bug == "population_for_sample") else 1
        var = r.var(1, keepdim=True, correction=correction)
        sigma = (var + eps).sqrt() if bug == "eps_inside_sqrt" else var.sqrt() + eps
        centred = centred / torch.where(constant, 1.0, sigma)
    out = centred.T if bug == "strided_groups" else centred
    return out.reshape(-1).to(rewards.dtype)


_ADV_BUGS = {
    "population_for_sample": (("advantages_zero_sum", "advantages_known_answers"),
                              "population std where the sample std (ddof 1) is asked (r=[1,0,0,1]: 1 vs 0.866)"),
    "eps_inside_sqrt": (("advantages_known_answers",), "sqrt(var + eps) instead of std + eps"),
    "std_ignored": (("advantages_affine_invariant", "advantages_zero_sum"), "never divides by the std"),
    "batch_statistics": (("groups_never_mix",), "mean and std over the whole batch, not per group"),
    "strided_groups": (("groups_never_mix",), "groups taken as view(G, -1): strided, not contiguous"),
    "no_input_checks": (("grpo_contract",), "accepts any group size, std and eps"),
}
for _bug in _ADV_BUGS:
    globals()[f"adv_{_bug}"] = partial(_advantages, bug=_bug)


# --- the loss from per-token log-probs ---------------------------------------------------------------------

def _loss(logps, old_logps, ref_logps, advantages, completion_mask, *, beta=0.04, epsilon_low=0.2, epsilon_high=None,
          loss_type="grpo", max_completion_length=None, bug=""):
    check_grpo_loss_args(logps, old_logps, ref_logps, advantages, completion_mask, beta)
    beta, eps_lo, eps_hi, L = check_loss_options(beta, epsilon_low, epsilon_high, loss_type, max_completion_length,
                                                 logps.shape[1])
    if bug == "symmetric_clip":
        eps_hi = eps_lo
    m = completion_mask.to(F64)
    active = m > 0
    masked = lambda x: torch.where(active, x.to(F64), 0.0)  # noqa: E731
    if bug == "mask_ignored_in_sum":  # masked positions are neither replaced nor dropped from the numerator
        masked = lambda x: x.to(F64)  # noqa: E731
    lp = masked(logps)
    old = lp.detach() if old_logps is None else masked(old_logps.detach())
    A = advantages.to(F64)[:, None]
    rho = torch.exp(lp - old)
    clipped = torch.clamp(rho, 1 - eps_lo, 1 + eps_hi)
    pick = torch.maximum if bug == "max_instead_of_min" else torch.minimum
    per_token = -pick(rho * A, clipped * A)
    if beta != 0:
        ref = masked(ref_logps.detach())
        if bug == "k3_swapped":  # pi / pi_ref instead of pi_ref / pi
            penalty = grpo.k3(ref, lp)
        elif bug == "k1_estimator":  # log pi - log pi_ref: unbiased but negative per token
            penalty = lp - ref
        else:
            penalty = grpo.k3(lp, ref)
        per_token = per_token + beta * penalty
    if bug == "mask_ignored_in_sum":
        m_sum = torch.ones_like(m)
    else:
        m_sum = m
    if loss_type == "grpo" and bug == "grpo_as_token_mean":
        loss_type = "bnpo"
    if loss_type == "dr_grpo" and bug == "dr_grpo_by_lengths":
        return ((per_token * m_sum).sum(-1) / m.sum(-1).clamp(min=1.0)).sum() / L
    total = per_token * m_sum
    if loss_type == "grpo":
        loss = (total.sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    elif loss_type in ("bnpo", "dapo"):
        loss = total.sum() / m.sum().clamp(min=1.0)
    else:
        loss = total.sum() / (logps.shape[0] * L)
    return loss.to(logps.dtype)


_LOSS_BUGS = {
    "grpo_as_token_mean": (("on_policy_reinforce",), "'grpo' aggregated as a token mean (no 1/|o_i|)"),
    "dr_grpo_by_lengths": (("on_policy_reinforce",), "dr_grpo divides by each sequence's length, not L_max"),
    "max_instead_of_min": (("clipping", "surrogate_known_answers"), "max of the clipped and unclipped terms"),
    "symmetric_clip": (("clipping", "surrogate_known_answers"), "epsilon_high ignored (no clip-higher)"),
    "k3_swapped": (("k3_nonnegative", "k3_unbiased", "surrogate_known_answers"),
                   "k3 of pi / pi_ref instead of pi_ref / pi (direction swapped)"),
    "k1_estimator": (("k3_nonnegative",), "log pi - log pi_ref (k1) instead of k3"),
    "mask_ignored_in_sum": (("masked_tokens_never_matter",), "masked positions reach the numerator"),
}
for _bug in _LOSS_BUGS:
    globals()[f"loss_{_bug}"] = partial(_loss, bug=_bug)


# --- per-token log-probs, rewards ----------------------------------------------------------------------------

def logps_divides_logprobs(logits, completion_ids, *, temperature=1.0):
    """prime-rl PR #697: the log-probs divided by T instead of the logits."""
    return grpo.token_logps(logits, completion_ids) / temperature


def logps_ignores_temperature(logits, completion_ids, *, temperature=1.0):
    """TRL #4159: scoring at T = 1 what was sampled at T."""
    return grpo.token_logps(logits, completion_ids)


_NO_DOTALL = re.compile(r"^<think>(?!.*<think>).*?</think>\s*<answer>.*?</answer>\s*$")


def format_without_dotall(completions):
    """The regex of public GRPO tutorials: '.' stops at a newline, so multi-line thoughts score 0."""
    return torch.tensor([1.0 if _NO_DOTALL.match(c) else 0.0 for c in completions], dtype=F64)


def _accuracy(completions, solutions, *, bug=""):
    out = []
    for c, s in zip(completions, solutions):
        gold = grpo.last_boxed(s)
        gold = s if gold is None else gold
        if not gold.strip():
            out.append(float("nan"))
            continue
        if bug == "first_box":
            start = c.find("\\boxed{")
            got = None if start < 0 else grpo.last_boxed(c[:c.find("}", start) + 1])
        else:  # "flat_braces": \boxed{([^}]*)} stops at the first closing brace
            hit = re.findall(r"\\boxed\{([^}]*)\}", c)
            got = hit[-1] if hit else None
        out.append(1.0 if got is not None and grpo._normalise(got) == grpo._normalise(gold) else 0.0)
    return torch.tensor(out, dtype=F64)


accuracy_first_box = partial(_accuracy, bug="first_box")
accuracy_flat_braces = partial(_accuracy, bug="flat_braces")


# --- the fused loss from hidden states -----------------------------------------------------------------------

def _fused(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None, ref_logps=None, *,
           temperature=1.0, beta=0.04, epsilon_low=0.2, epsilon_high=None, loss_type="grpo",
           max_completion_length=None, chunk_size=None, bug=""):
    grpo.check_fused_args(hidden, weight, completion_ids, completion_mask, advantages, old_logps, ref_logps, beta)
    mask = completion_mask.clone()
    if bug == "drops_last_partial_chunk":
        chunk = chunk_size or 4
        flat = (mask != 0).reshape(-1).nonzero().flatten()
        inner = mask.reshape(-1).clone()
        inner[flat[len(flat) - len(flat) % chunk:]] = 0
        mask = inner.view(mask.shape)
    z = hidden.to(F64) @ weight.to(F64).T
    T = 1.0 if bug == "forgets_temperature" else temperature
    logps = grpo.token_logps(z, completion_ids, temperature=T)
    if bug == "hidden_off_by_one":  # hidden[:, t-1] scores token t (a causal-LM shift applied once too often)
        logps = grpo.token_logps(torch.roll(z, 1, dims=1), completion_ids, temperature=T)
    return grpo.grpo_loss(logps, old_logps, ref_logps, advantages, mask, beta=beta, epsilon_low=epsilon_low,
                          epsilon_high=epsilon_high, loss_type=loss_type, max_completion_length=max_completion_length)


_FUSED_BUGS = {
    "forgets_temperature": (("fused_matches_spec",), "log-probs of logits not divided by the temperature"),
    "drops_last_partial_chunk": (("fused_matches_spec",), "the last partial chunk of tokens is never scored"),
    "hidden_off_by_one": (("masked_tokens_never_matter", "fused_matches_spec"),
                          "hidden[:, t-1] scores token t: the padding's hidden state reaches the loss"),
}
for _bug in _FUSED_BUGS:
    globals()[f"fused_{_bug}"] = partial(_fused, bug=_bug)

def fused_trl_defaults(hidden, weight, completion_ids, completion_mask, advantages, old_logps=None, ref_logps=None, *,
                       temperature=1.0, beta=0.0, epsilon_low=0.2, epsilon_high=None, loss_type="dapo",
                       max_completion_length=None, chunk_size=None):
    """trl's defaults (beta = 0, 'dapo') where DeepSeekMath's are documented."""
    return grpo.fused_linear_grpo_loss(hidden, weight, completion_ids, completion_mask, advantages, old_logps,
                                       ref_logps, temperature=temperature, beta=beta, epsilon_low=epsilon_low,
                                       epsilon_high=epsilon_high, loss_type=loss_type,
                                       max_completion_length=max_completion_length)


_M = __name__
_F64 = ("float64",)
MUTANTS = [
    *(mutant("grpo.group_advantages", f"adv_{bug}", f"{_M}:adv_{bug}", targets=tuple(f"grpo.{c}" for c in claims),
             notes=notes, dtypes=_F64) for bug, (claims, notes) in _ADV_BUGS.items()),
    *(mutant("grpo.grpo_loss", f"loss_{bug}", f"{_M}:loss_{bug}", targets=tuple(f"grpo.{c}" for c in claims),
             notes=notes, provides=frozenset({"grad"}), dtypes=_F64) for bug, (claims, notes) in _LOSS_BUGS.items()),
    mutant("grpo.token_logps", "logps_divides_logprobs", f"{_M}:logps_divides_logprobs",
           targets=("grpo.temperature_scaled_logps",), notes="log softmax(z) / T (prime-rl PR #697)", dtypes=_F64),
    mutant("grpo.token_logps", "logps_ignores_temperature", f"{_M}:logps_ignores_temperature",
           targets=("grpo.temperature_scaled_logps",), notes="scores at T = 1 (TRL #4159)", dtypes=_F64),
    mutant("grpo.format_reward", "format_without_dotall", f"{_M}:format_without_dotall",
           targets=("grpo.format_reward",), notes="regex without DOTALL: multi-line thoughts score 0", dtypes=_F64),
    mutant("grpo.accuracy_reward", "accuracy_first_box", f"{_M}:accuracy_first_box", targets=("grpo.accuracy_reward",),
           notes="compares the first \\boxed{} of the completion, not the last", dtypes=_F64),
    mutant("grpo.accuracy_reward", "accuracy_flat_braces", f"{_M}:accuracy_flat_braces",
           targets=("grpo.accuracy_reward",), notes="\\boxed{([^}]*)}: nested braces cut", dtypes=_F64),
    mutant("grpo.fused_linear_grpo_loss", "fused_trl_defaults", f"{_M}:fused_trl_defaults",
           targets=("grpo.deepseekmath_defaults",), notes="defaults beta = 0 and 'dapo' (trl's)",
           provides=frozenset({"grad", "chunk_size"}), dtypes=_F64),
    *(mutant("grpo.fused_linear_grpo_loss", f"fused_{bug}", f"{_M}:fused_{bug}",
             targets=tuple(f"grpo.{c}" for c in claims), notes=notes, provides=frozenset({"grad", "chunk_size"}),
             dtypes=_F64) for bug, (claims, notes) in _FUSED_BUGS.items()),
]
