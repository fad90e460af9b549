"""Mutants of the SigLIP document: the catalogue's plausible bugs (catalogue/siglip.md, list 2) and a few more.

Each is the float64 spec with one line wrong (``bug``), so nothing but the bug separates it from the spec.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from specs import siglip as S
from specs.clip import grads_of_ranks, normalize
from specs.validators import check_pair, check_scalar, check_world

from . import mutant

F64 = torch.float64


def _sigmoid_loss(image_features, text_features, t_prime, bias, *, bug=""):
    if bug == "truncates_to_shorter_batch":
        n = min(image_features.shape[0], text_features.shape[0])
        image_features, text_features = image_features[:n], text_features[:n]
    else:
        check_pair(image_features, text_features)
    tp, b = check_scalar("t_prime", t_prime), check_scalar("bias", bias)
    x, y = normalize(image_features.to(F64)), normalize(text_features.to(F64))
    t = tp if bug == "t_without_exp" else torch.exp(tp)
    L = t * x @ y.T + (0.0 if bug == "bias_not_added" else b)
    n = L.shape[0]
    z = S.labels(n)
    if bug == "labels_flipped":
        z = -z
    loss = -F.logsigmoid(z * L).sum() / (n * n if bug == "normalised_by_n_squared" else n)
    return loss.to(image_features.dtype)


_LOSS_BUGS = {  # bug -> (claims it must break, what goes wrong)
    "labels_flipped": (("softplus_form", "known_answers", "loss_within_budget"), "z = 1 - 2 eye: the sign flipped"),
    "normalised_by_n_squared": (("closed_forms", "loss_within_budget"), "divides by n^2 instead of the batch n"),
    "t_without_exp": (("known_answers", "closed_forms"), "multiplies by t' instead of t = exp(t')"),
    "bias_not_added": (("known_answers", "softplus_form", "logits_gradient"), "accepts the bias but never adds it"),
    "truncates_to_shorter_batch": (("contract",), "accepts batches of different sizes, zipped to the shorter"),
}
for _bug in _LOSS_BUGS:
    globals()[f"sigmoid_loss_{_bug}"] = partial(_sigmoid_loss, bug=_bug)


def _pairwise(L, *, bug=""):
    n = L.shape[0]
    L64 = L.to(F64)
    z = S.labels(n)
    if bug == "labels_flipped":
        z = -z
    if bug == "max_subtracted":  # the softmax habit: subtract the row max "for stability" (not shift-invariant here)
        L64 = L64 - L64.amax(dim=1, keepdim=True).detach()
    loss = -F.logsigmoid(z * L64).sum()
    return (loss / (n * n if bug == "mean_over_pairs" else n)).to(L.dtype)


pairwise_mean_over_pairs = partial(_pairwise, bug="mean_over_pairs")
pairwise_labels_flipped = partial(_pairwise, bug="labels_flipped")
pairwise_max_subtracted = partial(_pairwise, bug="max_subtracted")


def _chunked(image_features, text_features, t_prime, bias, *, chunk_size, bug=""):
    n, _ = check_pair(image_features, text_features)
    c = S.check_chunk_size(chunk_size)
    tp, b = check_scalar("t_prime", t_prime), check_scalar("bias", bias)
    x, y = normalize(image_features.to(F64)), normalize(text_features.to(F64))
    total = torch.zeros((), dtype=F64)
    for i0 in range(0, n, c):
        L_c = S.logits(x[i0:i0 + c], y, tp, b)
        rows = L_c.shape[0]
        # square_chunk_labels: the chunk's positives at columns 0..c-1 instead of i0..i0+c-1 (open_clip 357bd97)
        z = S.labels(n, 0 if bug == "square_chunk_labels" else i0, rows)
        term = -F.logsigmoid(z * L_c).sum()
        total = total + (term / rows * n if bug == "chunk_normalised_by_rows" else term)
    return (total / n).to(image_features.dtype)


chunked_square_chunk_labels = partial(_chunked, bug="square_chunk_labels")
chunked_normalised_by_rows = partial(_chunked, bug="chunk_normalised_by_rows")


def _sharded(image_features, text_features, t_prime, bias, *, world_size, schedule="bidir", bug=""):
    n, _ = check_pair(image_features, text_features)
    W = check_world(n, world_size)
    plan = S.exchange_schedule(W, S.check_schedule(schedule))
    if bug == "stale_forward":  # bidir forwards the block it sent, not the one it received (open_clip #742)
        rounds, rem = divmod(W - 1, 2)
        plan = [[(d + 1) % W, (d - 1) % W] * rounds + [(d - 1) % W] * rem for d in range(W)]
    tp, b = check_scalar("t_prime", t_prime).detach(), check_scalar("bias", bias).detach()
    leaves = [x.detach().to(F64).requires_grad_(True) for x in (image_features, text_features)]
    bl = n // W
    with torch.enable_grad():
        x_hat, y_hat = normalize(leaves[0]), normalize(leaves[1])
        block = lambda z, d: z[d * bl:(d + 1) * bl]  # noqa: E731
        losses = []
        for d in range(W):
            total = S.local_block_loss(block(x_hat, d), block(y_hat, d), tp, b)
            for src in plan[d]:
                remote = S.local_block_loss if bug == "remote_blocks_with_positives" else S.negative_only_loss
                total = total + remote(block(x_hat, d), block(y_hat, src), tp, b)
            losses.append(total / (n if bug == "global_normalisation" else bl))
        d_image, d_text = grads_of_ranks(losses, leaves, W)
    visits = torch.tensor(plan, dtype=torch.int64).reshape(W, W - 1)
    return torch.stack(losses).detach(), d_image, d_text, visits


sharded_remote_blocks_with_positives = partial(_sharded, bug="remote_blocks_with_positives")
sharded_global_normalisation = partial(_sharded, bug="global_normalisation")
sharded_stale_forward = partial(_sharded, bug="stale_forward")


def initial_parameters_t_without_log():
    return 10.0, -10.0



_M = __name__
mutant64 = partial(mutant, dtypes=("float64",))  # the bugs are dtype-independent: one dtype kills them
_S = "siglip."
MUTANTS = [
    *(mutant64(_S + "sigmoid_loss", f"sigmoid_loss_{bug}", f"{_M}:sigmoid_loss_{bug}",
             targets=tuple(_S + c for c in claims), notes=notes) for bug, (claims, notes) in _LOSS_BUGS.items()),
    mutant64(_S + "pairwise_loss", "pairwise_mean_over_pairs", f"{_M}:pairwise_mean_over_pairs",
           targets=(_S + "logits_gradient",), notes="averages over the n^2 pairs"),
    mutant64(_S + "pairwise_loss", "pairwise_labels_flipped", f"{_M}:pairwise_labels_flipped",
           targets=(_S + "monotone", _S + "logits_gradient"), notes="positives labelled -1, negatives +1"),
    mutant64(_S + "pairwise_loss", "pairwise_max_subtracted", f"{_M}:pairwise_max_subtracted",
           targets=(_S + "separability",), notes="subtracts each row's max logit before the sigmoid"),
    mutant64(_S + "chunked_sigmoid_loss", "chunked_square_chunk_labels", f"{_M}:chunked_square_chunk_labels",
           targets=(_S + "chunked_equals_full", _S + "known_answers"),
           notes="each chunk's positives at columns 0..c-1 (square (c, c) labels), not at the chunk's offset"),
    mutant64(_S + "chunked_sigmoid_loss", "chunked_normalised_by_rows", f"{_M}:chunked_normalised_by_rows",
           targets=(_S + "chunked_equals_full",), notes="normalises each chunk by its own row count"),
    mutant64(_S + "sharded_loss", "sharded_remote_blocks_with_positives", f"{_M}:sharded_remote_blocks_with_positives",
           targets=(_S + "sharded_equals_single",), notes="forgets negative_only=True for the received blocks"),
    mutant64(_S + "sharded_loss", "sharded_global_normalisation", f"{_M}:sharded_global_normalisation",
           targets=(_S + "sharded_equals_single",), notes="each device divides by the global n, not its b"),
    mutant64(_S + "sharded_loss", "sharded_stale_forward", f"{_M}:sharded_stale_forward",
           targets=(_S + "every_block_once", _S + "sharded_equals_single"),
           notes="bidir keeps exchanging the first neighbours' blocks (repeated blocks, others never seen)"),
    mutant64(_S + "initial_parameters", "initial_parameters_t_without_log", f"{_M}:initial_parameters_t_without_log",
           targets=(_S + "initialisation",), notes="stores t = 10 where t' = ln 10 is meant"),
]
