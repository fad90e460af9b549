"""Mutants of the BLIP document: the catalogue's plausible bugs (catalogue/blip.md, list 2) and a few more.

Each is the float64 spec with one line wrong (``bug``), so nothing but the bug separates it from the spec.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from specs import blip as BL

from . import mutant

F64 = torch.float64


def _soft_targets(sim_m, alpha, *, bug=""):
    B, K = sim_m.shape
    onehot = torch.zeros(B, K, dtype=F64)
    onehot[range(B), range(B)] = 1
    p = torch.softmax(sim_m.to(F64), dim=1)
    if bug == "alpha_on_onehot":
        return (alpha * onehot + (1 - alpha) * p).to(sim_m.dtype)
    return (alpha * p + onehot).to(sim_m.dtype)  # no_one_minus_alpha


soft_targets_alpha_on_onehot = partial(_soft_targets, bug="alpha_on_onehot")
soft_targets_no_one_minus_alpha = partial(_soft_targets, bug="no_one_minus_alpha")


def _itc(image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp, alpha, *, bug=""):
    BL.check_itc_args(image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue)
    v, w = image_feat.to(F64), text_feat.to(F64)
    detach = (lambda x: x) if bug == "momentum_not_detached" else (lambda x: x.detach())
    v_m, w_m, Q_v, Q_t = (detach(x).to(F64) for x in (image_feat_m, text_feat_m, image_queue, text_queue))
    if bug == "online_columns":  # online rows against online (not momentum) columns
        text_all, image_all = torch.cat([w, Q_t]), torch.cat([v, Q_v])
    else:
        text_all, image_all = torch.cat([w_m, Q_t]), torch.cat([v_m, Q_v])
    if bug == "targets_from_online":
        y_i2t = BL.soft_targets((v @ text_all.T / temp).detach(), alpha)
        y_t2i = BL.soft_targets((w @ image_all.T / temp).detach(), alpha)
    else:
        y_i2t = BL.soft_targets(v_m @ text_all.T / temp, alpha)
        y_t2i = BL.soft_targets(w_m @ image_all.T / temp, alpha)
    loss_i2t = -(F.log_softmax(v @ text_all.T / temp, dim=1) * y_i2t).sum(1).mean()
    loss_t2i = -(F.log_softmax(w @ image_all.T / temp, dim=1) * y_t2i).sum(1).mean()
    return (0.5 * (loss_i2t + loss_t2i)).to(image_feat.dtype)


itc_online_columns = partial(_itc, bug="online_columns")
itc_momentum_not_detached = partial(_itc, bug="momentum_not_detached")
itc_targets_from_online = partial(_itc, bug="targets_from_online")


def momentum_update_swapped(theta_m, theta, m):
    return ((1 - m) * theta_m.to(F64) + m * theta.to(F64)).to(theta_m.dtype)


def _enqueue(queue, ptr, feats, *, bug=""):
    K, B = queue.shape[0], feats.shape[0]
    new = queue.clone()
    new[ptr:ptr + B] = feats.flip(0) if bug == "writes_flipped_batch" else feats
    return new, (ptr + (1 if bug == "pointer_plus_one" else B)) % K


enqueue_pointer_plus_one = partial(_enqueue, bug="pointer_plus_one")
enqueue_unchecked = partial(_enqueue, bug="unchecked")  # no K % B == 0 assert: a batch that does not divide K fits
enqueue_writes_flipped_batch = partial(_enqueue, bug="writes_flipped_batch")


def hard_negative_weights_floor_after_mask(sim, ids=None):
    """fill_diagonal_(0) first, then + 1e-4: the positive can be drawn."""
    p = torch.softmax(sim.to(F64), dim=1)
    mask = torch.eye(sim.shape[0], dtype=torch.bool) if ids is None else ids[:, None] == ids[None, :]
    return (p.masked_fill(mask, 0.0) + BL.HARD_NEGATIVE_FLOOR).to(sim.dtype)


def hard_negative_weights_diagonal_only(sim, ids=None):
    """Masks the diagonal even when ids are given: repeated images become 'negatives' (retrieval needs id masks)."""
    return BL.hard_negative_weights(sim)


def _itm(itm_logits, *, bug=""):
    B = BL.check_itm_args(itm_logits)
    x = itm_logits.to(F64)
    y = torch.tensor([1, 0, 0] * B) if bug == "labels_interleaved" else BL.itm_labels(B)
    return (torch.logsumexp(x, dim=1) - x[torch.arange(3 * B), y]).mean().to(itm_logits.dtype)


itm_labels_interleaved = partial(_itm, bug="labels_interleaved")


def _lm(logits, input_ids, pad_token_id, *, smoothing=0.1, bug=""):
    BL.check_lm_args(logits, input_ids, pad_token_id, smoothing)
    if bug == "no_shift":
        z, y = logits.to(F64), input_ids
    else:
        z, y = logits[:, :-1].to(F64), input_ids[:, 1:]
    keep = torch.ones_like(y, dtype=torch.bool) if bug == "pads_not_ignored" else y != pad_token_id
    log_p = F.log_softmax(z[keep], dim=-1)
    V = z.shape[-1]
    if bug == "eps_over_v_minus_1":
        q = (1 - smoothing) * F.one_hot(y[keep], V).to(F64) + smoothing / (V - 1) * (1 - F.one_hot(y[keep], V))
    else:
        q = BL.smoothed_target(y[keep], V, smoothing)
    return (-(q * log_p).sum(-1).mean()).to(logits.dtype)


lm_no_shift = partial(_lm, bug="no_shift")
lm_pads_not_ignored = partial(_lm, bug="pads_not_ignored")
lm_eps_over_v_minus_1 = partial(_lm, bug="eps_over_v_minus_1")


def capfilt_at_least_half(captions, match_prob, human):
    return [c for c, p, h in zip(captions, match_prob.tolist(), human.tolist()) if h or p >= 0.5]


def capfilt_filters_human(captions, match_prob, human):
    return [c for c, p in zip(captions, match_prob.tolist()) if p > 0.5]


_M = __name__
mutant64 = partial(mutant, dtypes=("float64",))  # the bugs are dtype-independent: one dtype kills them
_B = "blip."
MUTANTS = [
    mutant64(_B + "soft_targets", "soft_targets_alpha_on_onehot", f"{_M}:soft_targets_alpha_on_onehot",
           targets=(_B + "soft_targets_are_distributions", _B + "known_answers"),
           notes="alpha weights the one-hot, 1 - alpha the momentum softmax"),
    mutant64(_B + "soft_targets", "soft_targets_no_one_minus_alpha", f"{_M}:soft_targets_no_one_minus_alpha",
           targets=(_B + "soft_targets_are_distributions",), notes="alpha softmax + onehot (rows sum to 1 + alpha)"),
    mutant64(_B + "itc_loss", "itc_online_columns", f"{_M}:itc_online_columns",
           targets=(_B + "itc_gradient", _B + "losses_within_budget"),
           notes="online rows against the online batch's columns instead of the momentum features"),
    mutant64(_B + "itc_loss", "itc_momentum_not_detached", f"{_M}:itc_momentum_not_detached",
           targets=(_B + "itc_gradient",), notes="the momentum features and queues stay in the graph"),
    mutant64(_B + "itc_loss", "itc_targets_from_online", f"{_M}:itc_targets_from_online",
           targets=(_B + "itc_gradient", _B + "losses_within_budget"),
           notes="soft targets from the online similarities instead of the momentum ones"),
    mutant64(_B + "momentum_update", "momentum_update_swapped", f"{_M}:momentum_update_swapped",
           targets=(_B + "ema_closed_form",), notes="(1 - m) theta_m + m theta"),
    mutant64(_B + "enqueue", "enqueue_pointer_plus_one", f"{_M}:enqueue_pointer_plus_one",
           targets=(_B + "queue_fifo",), notes="advances the pointer by 1 instead of B"),
    mutant64(_B + "enqueue", "enqueue_unchecked", f"{_M}:enqueue_unchecked",
           targets=(_B + "contract",), notes="drops BLIP's assert queue_size % batch_size == 0 and the pointer check"),
    mutant64(_B + "enqueue", "enqueue_writes_flipped_batch", f"{_M}:enqueue_writes_flipped_batch",
           targets=(_B + "queue_fifo",), notes="writes the batch in reverse order"),
    mutant64(_B + "hard_negative_weights", "hard_negative_weights_floor_after_mask",
           f"{_M}:hard_negative_weights_floor_after_mask", targets=(_B + "sampler_never_positive",),
           notes="adds the 1e-4 floor after masking: the positive keeps weight 1e-4"),
    mutant64(_B + "hard_negative_weights", "hard_negative_weights_diagonal_only",
           f"{_M}:hard_negative_weights_diagonal_only", targets=(_B + "sampler_never_positive",),
           notes="ignores the image ids: repeated images are sampled as negatives"),
    mutant64(_B + "itm_loss", "itm_labels_interleaved", f"{_M}:itm_labels_interleaved",
           targets=(_B + "itm_labels",), notes="labels [1, 0, 0] per triple instead of B ones then 2B zeros"),
    mutant64(_B + "lm_loss", "lm_no_shift", f"{_M}:lm_no_shift",
           targets=(_B + "label_smoothing", _B + "losses_within_budget"), notes="position k predicts token k"),
    mutant64(_B + "lm_loss", "lm_pads_not_ignored", f"{_M}:lm_pads_not_ignored",
           targets=(_B + "label_smoothing",),
           notes="pads are targets too (smoothing over padding)"),
    mutant64(_B + "lm_loss", "lm_eps_over_v_minus_1", f"{_M}:lm_eps_over_v_minus_1",
           targets=(_B + "label_smoothing",), notes="spreads eps over the V - 1 other tokens (not PyTorch's eps / V)"),
    mutant64(_B + "capfilt", "capfilt_at_least_half", f"{_M}:capfilt_at_least_half",
           targets=(_B + "capfilt_rule",), notes="keeps captions with match probability >= 1/2"),
    mutant64(_B + "capfilt", "capfilt_filters_human", f"{_M}:capfilt_filters_human",
           targets=(_B + "capfilt_rule",), notes="filters the human-annotated captions as well"),
]
