"""Mutants of the CLIP document: the catalogue's plausible bugs (catalogue/clip.md, list 2) and a few more.

Each is the float64 spec with one line wrong (``bug``), so nothing but the bug separates it from the spec.
"""

from __future__ import annotations

from functools import partial

import torch

from specs import clip as C

from . import mutant

F64 = torch.float64


def _clip_loss(image_features, text_features, logit_scale, *, bug=""):
    if bug == "truncates_to_shorter_batch":  # no shape check: zips the two batches to the shorter one
        n = min(image_features.shape[0], text_features.shape[0])
        image_features, text_features = image_features[:n], text_features[:n]
    else:
        C.check_pair(image_features, text_features)
    t = C.check_scalar("logit_scale", logit_scale)
    I, T = image_features.to(F64), text_features.to(F64)
    if bug != "unnormalised":
        I, T = C.normalize(I), C.normalize(T)
    s = t if bug == "scale_without_exp" else torch.exp(t)
    L = s * I @ T.T
    N = L.shape[0]
    y = torch.arange(N)
    if bug == "labels_off_by_one":  # captions shifted by one position in the batch
        y = (y + 1) % N
    ce = lambda M: torch.logsumexp(M, 1) - M[torch.arange(N), y]  # noqa: E731
    if bug == "image_to_text_only":
        loss = ce(L).mean()
    elif bug == "summed_not_averaged":
        loss = 0.5 * (ce(L).sum() + ce(L.T).sum())
    else:
        loss = 0.5 * (ce(L).mean() + ce(L.T).mean())
    return loss.to(image_features.dtype)


_LOSS_BUGS = {  # bug -> (claims it must break, what goes wrong)
    "unnormalised": (("invariances", "loss_within_budget"), "forgets to L2-normalise the features"),
    "scale_without_exp": (("known_answers", "loss_within_budget", "closed_forms"),
                          "multiplies the logits by t instead of exp(t)"),
    "labels_off_by_one": (("joint_permutation", "known_answers"), "pairs image i with text i + 1"),
    "image_to_text_only": (("swap_symmetry",), "drops the text -> image cross-entropy"),
    "summed_not_averaged": (("closed_forms",), "sums the cross-entropies over the batch instead of averaging"),
    "truncates_to_shorter_batch": (("contract",), "accepts batches of different sizes, zipped to the shorter"),
}
for _bug in _LOSS_BUGS:
    globals()[f"clip_loss_{_bug}"] = partial(_clip_loss, bug=_bug)


def contrastive_loss_one_direction(L):
    """Both halves are the image -> text cross-entropy (a copy-paste of the first line)."""
    L64, N = L.to(F64), L.shape[0]
    y = torch.arange(N)
    return C.cross_entropy(L64, y).to(L.dtype)


def _local_loss(image_features, text_features, logit_scale, *, rank, world_size, bug=""):
    N, _ = C.check_pair(image_features, text_features)
    W = C.check_world(N, world_size)
    t = C.check_scalar("logit_scale", logit_scale)
    I, T = C.normalize(image_features.to(F64)), C.normalize(text_features.to(F64))
    b = N // W
    rows = slice(b * rank, b * (rank + 1))
    y = torch.arange(b) + (0 if bug == "no_label_offset" else b * rank)
    loss = 0.5 * (C.cross_entropy(C.logits(I[rows], T, t), y) + C.cross_entropy(C.logits(T[rows], I, t), y))
    return (loss / W if bug == "normalised_by_global_batch" else loss).to(image_features.dtype)


local_loss_no_label_offset = partial(_local_loss, bug="no_label_offset")
local_loss_normalised_by_global_batch = partial(_local_loss, bug="normalised_by_global_batch")


def _sharded(image_features, text_features, logit_scale, *, world_size, bug=""):
    """W ranks simulated in one process, with one of the data-parallel bugs."""
    N, _ = C.check_pair(image_features, text_features)
    W = C.check_world(N, world_size)
    leaves = [x.detach().to(F64).requires_grad_(True) for x in (image_features, text_features)]
    b = N // W
    with torch.enable_grad():
        losses = []
        for r in range(W):
            I, T = leaves
            if bug == "gather_without_grad":  # other ranks' slots are plain tensors: no gradient flows back to them
                mine = torch.zeros(N, 1, dtype=F64)
                mine[b * r:b * (r + 1)] = 1
                I, T = (mine * x + (1 - mine) * x.detach() for x in (I, T))
            off = bug == "no_label_offset"
            losses.append(_local_loss(I, T, logit_scale, rank=r, world_size=W, bug="no_label_offset" if off else ""))
        d_image, d_text = C.grads_of_ranks(losses, leaves, W)
    return torch.stack(losses).detach(), d_image, d_text


sharded_gather_without_grad = partial(_sharded, bug="gather_without_grad")
sharded_no_label_offset = partial(_sharded, bug="no_label_offset")


def zero_shot_average_unnormalised(class_embeddings):
    return C.normalize(class_embeddings.to(F64).mean(1)).T.to(class_embeddings.dtype)


def zero_shot_not_renormalised(class_embeddings):
    return C.normalize(class_embeddings.to(F64)).mean(1).T.to(class_embeddings.dtype)


def clamp_scale_to_100(logit_scale):
    """Clamps the stored log-temperature itself to [0, 100] (the scale's bound applied to its log)."""
    return logit_scale.clamp(0.0, 100.0)


_M = __name__
mutant64 = partial(mutant, dtypes=("float64",))  # the bugs are dtype-independent: one dtype kills them
_C = "clip."
MUTANTS = [
    *(mutant64(_C + "clip_loss", f"clip_loss_{bug}", f"{_M}:clip_loss_{bug}", targets=tuple(_C + c for c in claims),
             notes=notes) for bug, (claims, notes) in _LOSS_BUGS.items()),
    mutant64(_C + "contrastive_loss", "contrastive_loss_one_direction", f"{_M}:contrastive_loss_one_direction",
           targets=(_C + "logits_gradient",), notes="uses the image -> text cross-entropy for both halves"),
    mutant64(_C + "local_loss", "local_loss_no_label_offset", f"{_M}:local_loss_no_label_offset",
           targets=(_C + "local_loss_sharding",), notes="labels arange(b) without + b rank"),
    mutant64(_C + "local_loss", "local_loss_normalised_by_global_batch", f"{_M}:local_loss_normalised_by_global_batch",
           targets=(_C + "local_loss_sharding",), notes="divides the local loss by W once more"),
    mutant64(_C + "sharded_loss", "sharded_gather_without_grad", f"{_M}:sharded_gather_without_grad",
           targets=(_C + "distributed_equals_single",),
           notes="all_gather without gradient: other ranks' losses send nothing back (1/W too small)"),
    mutant64(_C + "sharded_loss", "sharded_no_label_offset", f"{_M}:sharded_no_label_offset",
           targets=(_C + "distributed_equals_single",), notes="every rank uses labels arange(b)"),
    mutant64(_C + "zero_shot_classifier", "zero_shot_average_unnormalised", f"{_M}:zero_shot_average_unnormalised",
           targets=(_C + "zero_shot_classifier",), notes="averages the template embeddings before normalising them"),
    mutant64(_C + "zero_shot_classifier", "zero_shot_not_renormalised", f"{_M}:zero_shot_not_renormalised",
           targets=(_C + "zero_shot_classifier",), notes="does not renormalise the averaged embedding"),
    mutant64(_C + "clamp_logit_scale", "clamp_scale_to_100", f"{_M}:clamp_scale_to_100",
           targets=(_C + "logit_scale_clamp",), notes="clamps t to [0, 100] instead of [0, ln 100]"),
]
