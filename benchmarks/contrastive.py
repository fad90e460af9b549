"""Contrastive-loss benchmarks: SigLIP's sigmoid loss, full (n x n logits) and chunked over image rows, and CLIP's
loss; forward + backward together, batch 1024 to 32768, D = 256, float32.

CPU (time_, peakmem_): the timed call is one training step of the loss, loss = f(x, y, ...) then
torch.autograd.grad(loss, (x, y)). peakmem_ is the process's peak RSS with the imported torch included: it shows
whether an implementation holds n x n matrices (the full losses: at n = 16384 each is 1 GiB in float32, and the
forward + backward keeps several) or only (chunk x n) blocks (the chunked SigLIP loss).
GPU (track_, skipped without CUDA): milliseconds and peak allocated memory of the same step, every combination
measured once in setup_cache (benchmarks.common.measure_grid).

Before anything is measured, setup checks the implementation at n = 600 (not a multiple of the chunk: the last
chunk is partial) against the float64 spec: the loss within 2x and both feature gradients within 3x the naive
float32 baseline's error (eqspec/budget.py). A wrong loss fails its setup instead of being timed.

`version` is pinned for the reason given in benchmarks/attention.py.
"""

from __future__ import annotations

import math

import torch

from eqspec.budget import K_FORWARD, K_GRADIENT, check_within_budget
from eqspec.registry import REGISTRY

from .common import (
    cached_entry,
    cached_tracks,
    cuda_ms,
    implementation_or_skip,
    measure_grid,
    peak_cuda_mb,
    seeded_normal,
    warm_up_or_skip,
)

SIGLIP = "siglip.chunked_sigmoid_loss"
CLIP = "clip.clip_loss"
BATCHES = (1024, 2048, 4096, 8192, 16384, 32768)
DIM, DTYPE = 256, torch.float32
# rows per chunk: a (128, n) block, 16 MiB at n = 32768. At n = 16384 the peak RSS of a training step was 576 MB
# with chunks of 256 rows and 498 MB with 128 (the blocks, and the threads' matmul buffers, scale with the chunk),
# for 3% more time; 64 rows saved little more and cost 20%.
CHUNK = 128
SIGLIP_ARGS = (math.log(10.0), -10.0)  # the paper's init t' = ln 10, b = -10
CLIP_ARGS = (math.log(1 / 0.07),)  # CLIP's init logit_scale
CHECK_BATCH = 600  # two full chunks and a partial one; small, so the check adds little to the peak RSS
# The full losses at n = 32768 on the CPU: the logits, the labelled (or log-softmaxed) logits, their sigmoid /
# softmax and the backward's gradient are each a 32768 x 32768 float32 matrix of 4 GiB; forward + backward holds
# four or more at once, more than the 23 GB of the machines these CPU results come from.
FULL_CPU_MAX_BATCH = 16384

SIGLIP_IMPLEMENTATIONS = ("torch.eager", "torch.chunked")  # torch.eager: the full n x n loss (the baseline)
CLIP_IMPLEMENTATIONS = ("torch.eager", "thirdparty.open_clip")


def features(batch: int, device: str, requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    (x,) = seeded_normal("contrastive.image", (batch, DIM), dtype=DTYPE, device=device)
    (y,) = seeded_normal("contrastive.text", (batch, DIM), dtype=DTYPE, device=device)
    return x.requires_grad_(requires_grad), y.requires_grad_(requires_grad)


def _call(operation: str, fn, x, y):
    if operation == SIGLIP:
        return fn(x, y, *SIGLIP_ARGS, chunk_size=CHUNK)
    return fn(x, y, *CLIP_ARGS)


def training_step(operation: str, fn, x, y):
    """The loss and its gradients with respect to both feature sets."""
    loss = _call(operation, fn, x, y)
    return loss, torch.autograd.grad(loss, (x, y))


def checked(operation: str, name: str, device: str):
    """The implementation `name`, loaded and checked once against the float64 spec (loss and gradients)."""
    impl = implementation_or_skip(operation, name, device=device, dtype=DTYPE, needs=("grad",))
    fn = impl.load()
    label = f"{name} ({operation}, float32, {device}, n = {CHECK_BATCH})"
    x, y = features(CHECK_BATCH, device)
    training_step(operation, fn, x, y)  # what is checked is what is timed: not a fresh process's first call
    loss, grads = training_step(operation, fn, x, y)
    op = REGISTRY.operations[operation]
    base_loss, base_grads = training_step(operation, REGISTRY.implementation(operation, op.baseline).load(), x, y)
    x64, y64 = (t.detach().cpu().double().requires_grad_(True) for t in (x, y))
    ref_loss, ref_grads = training_step(operation, op.reference, x64, y64)
    terms = CHECK_BATCH + DIM + 8
    check_within_budget(f"{label}: loss", loss, ref_loss, base_loss, k=K_FORWARD, terms=terms)
    for what, g, r, b in zip(("d image", "d text"), grads, ref_grads, base_grads):
        check_within_budget(f"{label}: {what}", g, r, b, k=K_GRADIENT, terms=terms)
    return fn


def _skip_full_on_cpu(name: str, batch: int) -> None:
    if name in ("torch.eager", "thirdparty.open_clip") and batch > FULL_CPU_MAX_BATCH:
        raise NotImplementedError(f"{name} holds several {batch} x {batch} float32 matrices (4 GiB each) in "
                                  f"forward + backward: more memory than this benchmark may take on the CPU")


# ---------------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------------

class _StepCPU:
    operation = ""
    number = 1  # one step takes milliseconds to seconds
    repeat = (1, 5, 30.0)
    timeout = 900

    def setup(self, name, batch):
        _skip_full_on_cpu(name, batch)
        self.fn = checked(self.operation, name, "cpu")
        self.x, self.y = features(batch, "cpu")

    def run(self):
        return training_step(self.operation, self.fn, self.x, self.y)


class SiglipLossCPU(_StepCPU):
    """SigLIP forward + backward on the CPU, full vs chunked: wall time and peak RSS."""

    version = 2  # chunks of 128 rows (were 256)
    operation = SIGLIP
    params = (SIGLIP_IMPLEMENTATIONS, BATCHES)
    param_names = ("implementation", "batch")

    def time_forward_backward(self, name, batch):
        self.run()

    def peakmem_forward_backward(self, name, batch):
        self.run()


class ClipLossCPU(_StepCPU):
    """CLIP forward + backward on the CPU: wall time and peak RSS."""

    version = 1
    operation = CLIP
    params = (CLIP_IMPLEMENTATIONS, BATCHES)
    param_names = ("implementation", "batch")

    def time_forward_backward(self, name, batch):
        self.run()

    def peakmem_forward_backward(self, name, batch):
        self.run()


# ---------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------

def _measure_gpu(operation: str):
    def measure(name: str, batch: int) -> dict[str, float]:
        fn = checked(operation, name, "cuda")
        x, y = features(batch, "cuda")
        step = lambda: training_step(operation, fn, x, y)  # noqa: E731
        warm_up_or_skip(step)
        return {"ms": cuda_ms(step), "peak_mb": peak_cuda_mb(step)}

    return measure


class _StepGPU:
    operation = ""
    timeout = 1800

    def setup_cache(self):
        return measure_grid(self.params, _measure_gpu(self.operation))

    def setup(self, cache, name, batch):
        self.entry = cached_entry(cache, (name, batch))


@cached_tracks({
    "track_forward_backward_ms": ("ms", "ms"),
    "track_peak_memory_mb": ("peak_mb", "MiB"),
})
class SiglipLossGPU(_StepGPU):
    """SigLIP forward + backward on the GPU, full vs chunked: milliseconds and peak allocated memory."""

    version = 2  # chunks of 128 rows (were 256)
    operation = SIGLIP
    params = (SIGLIP_IMPLEMENTATIONS, BATCHES)
    param_names = ("implementation", "batch")


@cached_tracks({
    "track_forward_backward_ms": ("ms", "ms"),
    "track_peak_memory_mb": ("peak_mb", "MiB"),
})
class ClipLossGPU(_StepGPU):
    """CLIP forward + backward on the GPU: milliseconds and peak allocated memory."""

    version = 1
    operation = CLIP
    params = (CLIP_IMPLEMENTATIONS, BATCHES)
    param_names = ("implementation", "batch")
