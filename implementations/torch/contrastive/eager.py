"""The contrastive losses of CLIP, SigLIP and BLIP as the obvious torch code, in the inputs' dtype.

These are the naive same-precision baselines of the error budget: every logit matrix is materialised (B x B, or
B x (B + K) with BLIP's queue), and torch's fused cross-entropy / log-sigmoid do the rest. The argument checks
are the specs' own, so malformed input is rejected the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from eqspec.contracts import ArgumentError
from specs.blip import HARD_NEGATIVE_FLOOR, check_hard_negative_args, check_itc_args, check_itm_args, check_lm_args
from specs.validators import check_pair, check_scalar, check_tensor, check_unit_interval, check_world


def _scalar(name, value, like: torch.Tensor) -> torch.Tensor:
    """A number or one-element tensor, in the features' dtype, still in the graph."""
    check_scalar(name, value)
    if isinstance(value, torch.Tensor):
        return value.reshape(()).to(like.dtype)
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


# --- CLIP -----------------------------------------------------------------------------------------------

def contrastive_loss(L: torch.Tensor) -> torch.Tensor:
    check_tensor("L", L, rank=2)
    if L.shape[0] != L.shape[1]:
        raise ArgumentError("L", f"L must be square (N images x N texts), got shape {tuple(L.shape)}")
    y = torch.arange(L.shape[0], device=L.device)
    return (F.cross_entropy(L, y) + F.cross_entropy(L.T, y)) / 2


def clip_loss(image_features, text_features, logit_scale):
    check_pair(image_features, text_features)
    s = _scalar("logit_scale", logit_scale, image_features).exp()
    I, T = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    return contrastive_loss(s * I @ T.T)


def local_loss(image_features, text_features, logit_scale, *, rank: int, world_size: int):
    N, _ = check_pair(image_features, text_features)
    W = check_world(N, world_size)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < W:
        raise ArgumentError("rank", f"rank must be an integer in [0, world_size) = [0, {W}), got {rank!r}")
    s = _scalar("logit_scale", logit_scale, image_features).exp()
    I, T = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    b = N // W
    rows = slice(b * rank, b * (rank + 1))
    y = torch.arange(b, device=I.device) + b * rank
    return (F.cross_entropy(s * I[rows] @ T.T, y) + F.cross_entropy(s * T[rows] @ I.T, y)) / 2


def zero_shot_classifier(class_embeddings: torch.Tensor) -> torch.Tensor:
    check_tensor("class_embeddings", class_embeddings, rank=3)
    return F.normalize(F.normalize(class_embeddings, dim=-1).mean(dim=1), dim=-1).T


# --- SigLIP ---------------------------------------------------------------------------------------------

def siglip_labels(rows: int, cols: int, offset: int, like: torch.Tensor) -> torch.Tensor:
    """+1 where column j is row i's pair (j = offset + i), -1 elsewhere."""
    i = torch.arange(offset, offset + rows, device=like.device)[:, None]
    return torch.where(i == torch.arange(cols, device=like.device)[None, :], 1.0, -1.0).to(like.dtype)


def pairwise_loss(L: torch.Tensor) -> torch.Tensor:
    check_tensor("L", L, rank=2)
    if L.shape[0] != L.shape[1]:
        raise ArgumentError("L", f"L must be square (n images x n texts), got shape {tuple(L.shape)}")
    n = L.shape[0]
    return -F.logsigmoid(siglip_labels(n, n, 0, L) * L).sum() / n


def sigmoid_loss(image_features, text_features, t_prime, bias):
    check_pair(image_features, text_features)
    t = _scalar("t_prime", t_prime, image_features).exp()
    b = _scalar("bias", bias, image_features)
    x, y = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    return pairwise_loss(t * x @ y.T + b)


# --- BLIP -----------------------------------------------------------------------------------------------

def _soft_targets(sim_m: torch.Tensor, alpha: float) -> torch.Tensor:
    onehot = torch.zeros_like(sim_m)
    onehot.fill_diagonal_(1.0)  # the first B columns are the momentum batch: the positive of row i is column i
    return alpha * F.softmax(sim_m, dim=1) + (1 - alpha) * onehot


def soft_targets(sim_m: torch.Tensor, alpha: float) -> torch.Tensor:
    check_tensor("sim_m", sim_m, rank=2)
    if sim_m.shape[1] < sim_m.shape[0]:
        raise ArgumentError("sim_m", f"sim_m must have at least as many columns as rows, got {tuple(sim_m.shape)}")
    return _soft_targets(sim_m, check_unit_interval("alpha", alpha))


def itc_loss(image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue, temp, alpha):
    check_itc_args(image_feat, text_feat, image_feat_m, text_feat_m, image_queue, text_queue)
    alpha = check_unit_interval("alpha", alpha)
    tau = _scalar("temp", temp, image_feat)
    with torch.no_grad():  # blip_pretrain.py: the momentum side under no_grad
        text_all = torch.cat([text_feat_m, text_queue])
        image_all = torch.cat([image_feat_m, image_queue])
        y_i2t = _soft_targets(image_feat_m @ text_all.T / tau, alpha)
        y_t2i = _soft_targets(text_feat_m @ image_all.T / tau, alpha)
    loss_i2t = -(F.log_softmax(image_feat @ text_all.T / tau, dim=1) * y_i2t).sum(1).mean()
    loss_t2i = -(F.log_softmax(text_feat @ image_all.T / tau, dim=1) * y_t2i).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


def hard_negative_weights(sim: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    check_hard_negative_args(sim, ids)
    if ids is None:
        weights = F.softmax(sim, dim=1) + HARD_NEGATIVE_FLOOR
        weights.fill_diagonal_(0)
        return weights
    return F.softmax(sim, dim=1).masked_fill(ids[:, None] == ids[None, :], 0)


def itm_loss(itm_logits: torch.Tensor) -> torch.Tensor:
    B = check_itm_args(itm_logits)
    labels = torch.cat([torch.ones(B, dtype=torch.long), torch.zeros(2 * B, dtype=torch.long)]).to(itm_logits.device)
    return F.cross_entropy(itm_logits, labels)


def lm_loss(logits, input_ids, pad_token_id: int, *, smoothing: float = 0.1):
    check_lm_args(logits, input_ids, pad_token_id, smoothing)
    targets = input_ids.masked_fill(input_ids == pad_token_id, -100)[:, 1:]
    if not bool((targets != -100).any()):
        raise ArgumentError("input_ids", "input_ids must hold at least one non-pad token after the first position")
    z = logits[:, :-1]
    return F.cross_entropy(z.reshape(-1, z.shape[-1]), targets.reshape(-1), ignore_index=-100,
                           label_smoothing=smoothing)


def full_sigmoid_loss(image_features, text_features, t_prime, bias, *, chunk_size: int):
    """The chunked operation's baseline: the full n x n loss, whatever the chunk size."""
    from specs.siglip import check_chunk_size

    check_chunk_size(chunk_size)
    return sigmoid_loss(image_features, text_features, t_prime, bias)
