"""Mutants of the DPO document: the catalogue's plausible bugs (catalogue/dpo.md, list 2), each in float64 so that
nothing but the bug separates it from the spec. Each lists the claims whose property tests must catch it.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from specs import dpo
from specs.dpo import check_fused_args, check_loss_options, check_pair_args, check_sequence_args

from . import mutant

F64 = torch.float64


# --- sequence log-probabilities --------------------------------------------------------------------------

def _sequence_logps(logits, input_ids, completion_mask, *, average=False, bug=""):
    check_sequence_args(logits, input_ids, completion_mask)
    z, ids, m = logits.to(F64), input_ids.long(), completion_mask.to(F64)
    if bug == "no_shift":  # the logits at t score token t (off by one)
        per_token, m = dpo.selective_log_softmax(z, ids)[:, 1:], m[:, 1:]
    elif bug == "mask_not_shifted":  # the mask of position t-1 used for token t
        per_token, m = dpo.selective_log_softmax(z[:, :-1], ids[:, 1:]), m[:, :-1]
    else:  # "sums_prompt_and_padding": the mask is ignored
        per_token = dpo.selective_log_softmax(z[:, :-1], ids[:, 1:])
        m = torch.ones_like(m[:, 1:])
    total = (per_token * m).sum(-1)
    return (total / m.sum(-1).clamp(min=1.0) if average else total).to(logits.dtype)


seq_no_shift = partial(_sequence_logps, bug="no_shift")
seq_mask_not_shifted = partial(_sequence_logps, bug="mask_not_shifted")
seq_sums_prompt_and_padding = partial(_sequence_logps, bug="sums_prompt_and_padding")


# --- the pair losses --------------------------------------------------------------------------------------

def _dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta=0.1, loss_type="sigmoid",
              label_smoothing=0.0, bug=""):
    if bug != "no_input_checks":
        check_pair_args(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
        beta, loss_type, eps = check_loss_options(beta, loss_type, label_smoothing)
    else:
        eps = label_smoothing
    pw, pl = chosen_logps.to(F64), rejected_logps.to(F64)
    rw, rl = ref_chosen_logps.to(F64), ref_rejected_logps.to(F64)
    if bug != "ref_not_detached":
        rw, rl = rw.detach(), rl.detach()
    if bug == "rejected_detached":
        pl = pl.detach()
    chosen_ratio, rejected_ratio = pw - rw, pl - rl
    h = chosen_ratio - rejected_ratio
    if bug == "rejected_ratio_sign":
        h = chosen_ratio + rejected_ratio
    elif bug == "margin_reversed":
        h = -h
    if bug == "logsigmoid_without_beta" and loss_type == "sigmoid":
        losses = F.softplus(-h)
    elif bug == "cdpo_with_robust_sign" and loss_type == "cdpo":
        losses = (1 - eps) * F.softplus(-beta * h) - eps * F.softplus(beta * h)
    elif bug == "robust_with_cdpo_sign" and loss_type == "robust":
        losses = ((1 - eps) * F.softplus(-beta * h) + eps * F.softplus(beta * h)) / (1 - 2 * eps)
    elif bug == "robust_unnormalised" and loss_type == "robust":
        losses = (1 - eps) * F.softplus(-beta * h) - eps * F.softplus(beta * h)
    elif bug == "ipo_inverse_beta" and loss_type == "ipo":
        losses = (h - 1 / beta) ** 2
    else:
        losses = dpo.pair_loss(h, beta, loss_type, eps)
    dtype = chosen_logps.dtype
    return losses.to(dtype), (beta * chosen_ratio).detach().to(dtype), (beta * rejected_ratio).detach().to(dtype)


_LOSS_BUGS = {  # bug -> (claims whose tests must catch it, what is wrong)
    "logsigmoid_without_beta": (("known_answers", "swap_symmetry", "optimum_reward_identity"),
                                "-log sigma(h) without beta"),
    "cdpo_with_robust_sign": (("known_answers",), "cDPO's eps term subtracted (robust's sign)"),
    "robust_with_cdpo_sign": (("robust_unbiased",), "robust's eps term added (cDPO's sign)"),
    "robust_unnormalised": (("reference_point", "robust_unbiased"), "robust without the 1/(1 - 2 eps)"),
    "ipo_inverse_beta": (("known_answers", "reference_point"), "IPO target 1/beta instead of 1/(2 beta)"),
    "ref_not_detached": (("gradient_matches_derivation",), "no no_grad on the reference: it gets gradients"),
    "rejected_detached": (("gradient_matches_derivation",), "the rejected log-probs detached: half the gradient"),
    "rejected_ratio_sign": (("shift_invariance",), "h = chosen log-ratio + rejected log-ratio (sign)"),
    "margin_reversed": (("monotone_convex", "known_answers"), "h = rejected minus chosen (sign convention)"),
    "no_input_checks": (("dpo_contract",), "accepts any beta, loss type and shapes"),
}
for _bug in _LOSS_BUGS:
    globals()[f"loss_{_bug}"] = partial(_dpo_loss, bug=_bug)


# --- the fused loss from hidden states --------------------------------------------------------------------

def _fused(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps, *, beta=0.1,
           loss_type="sigmoid", label_smoothing=0.0, chunk_size=None, bug=""):
    check_fused_args(hidden, weight, input_ids, completion_mask, ref_chosen_logps, ref_rejected_logps)
    check_loss_options(beta, loss_type, label_smoothing)
    mask = completion_mask.clone()
    if bug == "drops_last_partial_chunk":  # the loop stops at n - n % chunk: the last tokens are never scored
        chunk = chunk_size or 4
        flat = (mask[:, 1:] != 0).reshape(-1).nonzero().flatten()
        drop = flat[len(flat) - len(flat) % chunk:]
        inner = mask[:, 1:].reshape(-1).clone()
        inner[drop] = 0
        mask[:, 1:] = inner.view(mask.shape[0], -1)
    if bug == "counts_prompt":
        mask = torch.ones_like(mask)
    z = hidden.to(F64) @ weight.to(F64).T
    if bug == "gradient_without_softmax":  # d log p / d z = onehot only: the lse carries no gradient
        logp_all = z - torch.logsumexp(z, -1, keepdim=True).detach()
    else:
        logp_all = torch.log_softmax(z, -1)
    m = mask.to(F64)[:, 1:]
    per_token = logp_all[:, :-1].gather(-1, input_ids[:, 1:, None].long()).squeeze(-1) * m
    logps = per_token.sum(-1)
    counts = m.sum(-1)
    rc, rr = ref_chosen_logps.to(F64), ref_rejected_logps.to(F64)
    if loss_type == "ipo" and bug != "ipo_summed":
        cc, cr = counts.chunk(2)
        logps = logps / counts.clamp(min=1.0)
        rc, rr = rc / cc.clamp(min=1.0), rr / cr.clamp(min=1.0)
    chosen, rejected = logps.chunk(2)
    h = dpo.log_ratio_margin(chosen, rejected, rc, rr)
    return dpo.pair_loss(h, beta, loss_type, label_smoothing).mean().to(hidden.dtype)


_FUSED_BUGS = {
    "drops_last_partial_chunk": (("fused_matches_spec",), "the last partial chunk of tokens is never scored"),
    "gradient_without_softmax": (("fused_matches_spec", "gradient_matches_derivation"),
                                 "backward uses onehot instead of onehot - softmax"),
    "ipo_summed": (("fused_matches_spec",), "IPO on summed instead of averaged log-ratios (TRL #1265)"),
    "counts_prompt": (("fused_matches_spec",), "prompt and padding tokens summed into the log-probs"),
}
for _bug in _FUSED_BUGS:
    globals()[f"fused_{_bug}"] = partial(_fused, bug=_bug)

_M = __name__
_GRAD = frozenset({"grad", "chunk_size"})
MUTANTS = [
    mutant("dpo.sequence_logps", "seq_no_shift", f"{_M}:seq_no_shift", targets=("dpo.sequence_logps_masked",),
           notes="no shift: the logits at t score token t", dtypes=("float64", "float32")),
    mutant("dpo.sequence_logps", "seq_mask_not_shifted", f"{_M}:seq_mask_not_shifted",
           targets=("dpo.sequence_logps_masked",), notes="mask[:, :-1] instead of mask[:, 1:]",
           dtypes=("float64", "float32")),
    mutant("dpo.sequence_logps", "seq_sums_prompt_and_padding", f"{_M}:seq_sums_prompt_and_padding",
           targets=("dpo.sequence_logps_masked",), notes="prompt and padding tokens summed",
           dtypes=("float64", "float32")),
    *(mutant("dpo.dpo_loss", f"loss_{bug}", f"{_M}:loss_{bug}", targets=tuple(f"dpo.{c}" for c in claims),
             notes=notes, provides=frozenset({"grad"}), dtypes=("float64",))
      for bug, (claims, notes) in _LOSS_BUGS.items()),
    *(mutant("dpo.fused_linear_dpo_loss", f"fused_{bug}", f"{_M}:fused_{bug}",
             targets=tuple(f"dpo.{c}" for c in claims), notes=notes, provides=_GRAD, dtypes=("float64",))
      for bug, (claims, notes) in _FUSED_BUGS.items()),
]
