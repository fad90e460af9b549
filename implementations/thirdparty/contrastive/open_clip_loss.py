"""open_clip's ClipLoss and SigLipLoss (src/open_clip/loss.py) as implementations of the CLIP and SigLIP specs.

``import open_clip`` needs torchvision, which cannot be installed beside the CPU torch here; ``loss.py`` needs only
torch, so it is loaded by file location from the installed package. open_clip's losses take features the model has
already normalised and the exponentiated scale: the adapters normalise (F.normalize) and pass exp(t). The
data-parallel variants run in the kept gloo world of implementations.torch.contrastive.distributed, with open_clip's
own collectives: ``torch.distributed.nn.all_gather`` on the default group for ClipLoss (so only the full world),
``batch_isend_irecv`` neighbour exchanges for SigLipLoss.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from eqspec.contracts import ArgumentError
from implementations.torch.contrastive.distributed import MAX_WORLD, run_sharded
from specs.siglip import check_schedule
from specs.validators import check_scalar

_M = __name__


@functools.cache
def loss_module():
    found = importlib.util.find_spec("open_clip")  # finds the package without importing it (and torchvision)
    path = Path(found.submodule_search_locations[0]) / "loss.py"
    spec = importlib.util.spec_from_file_location("open_clip_loss_py", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scale(value, like: torch.Tensor) -> torch.Tensor:
    """The number or one-element tensor as a tensor in the features' dtype (open_clip itself takes any tensor)."""
    if isinstance(value, torch.Tensor):
        return value.reshape(()).to(like.dtype)
    return torch.tensor(value, dtype=like.dtype)


def clip_loss(image_features, text_features, logit_scale):
    I, T = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    return loss_module().ClipLoss()(I, T, _scale(logit_scale, I).exp())


def sigmoid_loss(image_features, text_features, t_prime, bias):
    x, y = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    return loss_module().SigLipLoss()(x, y, _scale(t_prime, x).exp(), _scale(bias, x))


# --- data parallel (run in the gloo world's worker processes) ----------------------------------------------

def clip_rank(image, text, logit_scale: float, *, group):
    import torch.distributed as dist

    rank, W = dist.get_rank(group), dist.get_world_size(group)
    I, T = (torch.from_numpy(a).requires_grad_(True) for a in (image, text))
    loss_fn = loss_module().ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=W)
    loss = loss_fn(F.normalize(I, dim=-1), F.normalize(T, dim=-1), torch.tensor(logit_scale, dtype=I.dtype).exp())
    loss.backward()
    return loss.detach().numpy(), (I.grad / W).numpy(), (T.grad / W).numpy(), None


def siglip_rank(image, text, t_prime: float, bias: float, schedule: str, *, group):
    import torch.distributed as dist

    rank, W = dist.get_rank(group), dist.get_world_size(group)
    x, y = (torch.from_numpy(a).requires_grad_(True) for a in (image, text))
    loss_fn = loss_module().SigLipLoss(rank=rank, world_size=W, dist_impl=schedule)
    received = []
    own_loss = loss_fn._loss

    def recording_loss(image_features, text_features, *args, negative_only=False, **kwargs):
        if negative_only:
            received.append(text_features.detach().numpy().copy())
        return own_loss(image_features, text_features, *args, negative_only=negative_only, **kwargs)

    loss_fn._loss = recording_loss  # only to see which blocks arrived; the loss is open_clip's
    t = torch.tensor(t_prime, dtype=x.dtype).exp()
    loss = loss_fn(F.normalize(x, dim=-1), F.normalize(y, dim=-1), t, torch.tensor(bias, dtype=x.dtype))
    loss.backward()
    import numpy as np

    return loss.detach().numpy(), (x.grad / W).numpy(), (y.grad / W).numpy(), np.stack(received)


def clip_sharded_loss(image_features, text_features, logit_scale, *, world_size: int):
    if world_size != MAX_WORLD:
        raise ArgumentError("world_size",
                            f"world_size must be {MAX_WORLD}: open_clip's ClipLoss gathers over the default process "
                            f"group (the whole gloo world), got {world_size}")
    s = float(check_scalar("logit_scale", logit_scale))
    losses, d_image, d_text, _ = run_sharded(f"{_M}:clip_rank", image_features, text_features, world_size, (s,))
    return losses, d_image, d_text


def siglip_sharded_loss(image_features, text_features, t_prime, bias, *, world_size: int, schedule: str = "bidir"):
    tp, b = float(check_scalar("t_prime", t_prime)), float(check_scalar("bias", bias))
    losses, d_image, d_text, blocks = run_sharded(f"{_M}:siglip_rank", image_features, text_features, world_size,
                                                  (tp, b, check_schedule(schedule)))
    return losses, d_image, d_text, visits_from_blocks(text_features, world_size, blocks)


def visits_from_blocks(text_features: torch.Tensor, world_size: int, blocks: list) -> torch.Tensor:
    """Which rank's text block each received block is, read from its contents (open_clip does not say): the rank
    whose normalised block it equals. Where two ranks hold identical normalised blocks (D = 1, duplicated texts)
    the contents cannot tell them apart and the first such rank is named."""
    y = F.normalize(text_features.detach().cpu().double(), dim=-1)
    shards = y.reshape(world_size, -1, y.shape[-1])
    out = [[int((shards - torch.from_numpy(b).double()).abs().amax(dim=(1, 2)).argmin()) for b in rank_blocks]
           for rank_blocks in blocks]
    return torch.tensor(out, dtype=torch.int64).reshape(world_size, world_size - 1)
