"""torch implementations of the contrastive documents (CLIP, SigLIP, BLIP): the naive eager losses (the error
budget's baselines), SigLIP's loss chunked over image rows with its own backward, and the data-parallel CLIP and
SigLIP losses on torch.distributed (a kept gloo world of worker processes on the CPU)."""

from eqspec.registry import REGISTRY, Implementation

_M = "implementations.torch.contrastive"
_EAGER = f"{_M}.eager"
_DIST = f"{_M}.distributed"
_DT = ("float64", "float32")
_GRAD = frozenset({"grad"})
_RANKS = {"world_size": (2, 4)}  # a world of worker processes: 2 to 4 ranks (one GPU each under NCCL)

for _impl in (
    Implementation("clip.contrastive_loss", "torch.eager", f"{_EAGER}:contrastive_loss", "torch", dtypes=_DT,
                   provides=_GRAD, notes="F.cross_entropy in both directions (the baseline)"),
    Implementation("clip.clip_loss", "torch.eager", f"{_EAGER}:clip_loss", "torch", dtypes=_DT, provides=_GRAD,
                   notes="F.normalize, the N x N logits, F.cross_entropy both ways (the baseline)"),
    Implementation("clip.local_loss", "torch.eager", f"{_EAGER}:local_loss", "torch", dtypes=_DT, provides=_GRAD,
                   notes="the b x N local logits of one rank, labels offset by b rank (the baseline)"),
    Implementation("clip.zero_shot_classifier", "torch.eager", f"{_EAGER}:zero_shot_classifier", "torch",
                   dtypes=_DT, notes="F.normalize, mean over templates, F.normalize"),
    Implementation("clip.sharded_loss", "torch.distributed_gloo", f"{_DIST}:clip_sharded_loss", "torch",
                   devices=("cpu",), dtypes=_DT, provides=_GRAD, limits=_RANKS,
                   notes="W gloo processes on 127.0.0.1: all_gather with gradient, local loss, labels + b rank"),
    Implementation("clip.sharded_loss", "torch.distributed_nccl", f"{_DIST}:clip_sharded_loss", "torch",
                   devices=("cuda",), dtypes=_DT, provides=_GRAD, limits=_RANKS,
                   notes="the same rank code under NCCL, one GPU per rank (2 to 4 GPUs)"),
    Implementation("siglip.pairwise_loss", "torch.eager", f"{_EAGER}:pairwise_loss", "torch", dtypes=_DT,
                   provides=_GRAD, notes="F.logsigmoid of the labelled n x n logits (the baseline)"),
    Implementation("siglip.sigmoid_loss", "torch.eager", f"{_EAGER}:sigmoid_loss", "torch", dtypes=_DT,
                   provides=_GRAD, notes="the full n x n logits (the baseline)"),
    Implementation("siglip.chunked_sigmoid_loss", "torch.eager", f"{_EAGER}:full_sigmoid_loss", "torch",
                   dtypes=_DT, provides=_GRAD, notes="the full n x n loss, ignoring chunk_size (the baseline)"),
    Implementation("siglip.chunked_sigmoid_loss", "torch.chunked", f"{_M}.chunked:chunked_sigmoid_loss", "torch",
                   dtypes=_DT, provides=_GRAD,
                   notes="row chunks of (chunk_size, n) logits, autograd.Function that recomputes them in backward"),
    Implementation("siglip.sharded_loss", "torch.distributed_gloo", f"{_DIST}:siglip_sharded_loss", "torch",
                   devices=("cpu",), dtypes=_DT, provides=_GRAD, limits=_RANKS,
                   notes="W gloo processes: local block, then other ranks' text blocks by isend/irecv (bidir or "
                         "shift), gradients sent back the same way"),
    Implementation("siglip.sharded_loss", "torch.distributed_nccl", f"{_DIST}:siglip_sharded_loss", "torch",
                   devices=("cuda",), dtypes=_DT, provides=_GRAD, limits=_RANKS,
                   notes="the same rank code under NCCL, one GPU per rank (2 to 4 GPUs)"),
    Implementation("blip.soft_targets", "torch.eager", f"{_EAGER}:soft_targets", "torch", dtypes=_DT,
                   notes="alpha softmax + (1 - alpha) fill_diagonal_ one-hot"),
    Implementation("blip.itc_loss", "torch.eager", f"{_EAGER}:itc_loss", "torch", dtypes=_DT, provides=_GRAD,
                   notes="blip_pretrain.py's ITC: momentum side under no_grad (the baseline)"),
    Implementation("blip.hard_negative_weights", "torch.eager", f"{_EAGER}:hard_negative_weights", "torch",
                   dtypes=_DT, notes="softmax + 1e-4, fill_diagonal_(0); or the same-id mask"),
    Implementation("blip.itm_loss", "torch.eager", f"{_EAGER}:itm_loss", "torch", dtypes=_DT, provides=_GRAD,
                   notes="F.cross_entropy with labels [1] * B + [0] * 2B (the baseline)"),
    Implementation("blip.lm_loss", "torch.eager", f"{_EAGER}:lm_loss", "torch", dtypes=_DT, provides=_GRAD,
                   notes="F.cross_entropy(ignore_index=-100, label_smoothing) on shifted targets (the baseline)"),
):
    REGISTRY.add_implementation(_impl)
