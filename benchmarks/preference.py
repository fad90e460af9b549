"""DPO and GRPO loss benchmarks: the fused chunked "last linear layer + log-softmax + loss" against the naive code.

What is measured is one training step of the loss alone: the loss from the last hidden states and the LM head
weight, and its gradients in both (forward + backward). The naive implementation materialises the (sequences x
tokens x vocab) logits, their log-softmax and their gradients; the chunked one holds chunk_size x vocab logits at a
time (implementations/torch/preference/fused.py).

CPU (time_, peakmem_): float32, hidden 1024, vocab 32k / 64k / 128k, 512 / 1024 / 2048 tokens per sequence. DPO:
8 sequences (4 pairs), GRPO: 8 completions (one group). peakmem_ is the process's peak RSS, torch and the inputs
included (the weight alone is vocab x 1024 x 4 bytes: 128 MiB to 512 MiB, and its gradient as much).
GPU (track_, skipped without CUDA): the same grid in float32 and bfloat16: milliseconds and peak allocated MiB.

Before anything is measured, setup checks the implementation at a small size: its loss and both gradients must be
within the error budget of the float64 spec (2x / 3x the naive same-precision error + floor). A wrong kernel fails
its setup instead of being timed.

`version` is pinned for the reason given in benchmarks/attention.py.
"""

from __future__ import annotations

import functools

import torch

from eqspec.budget import K_FORWARD, K_GRADIENT, check_within_budget
from specs import dpo, grpo

from .common import (
    SEEDS,
    cached_entry,
    cached_tracks,
    cuda_ms,
    dtype_name,
    implementation_or_skip,
    measure_grid,
    peak_cuda_mb,
    seeded_normal,
    warm_up_or_skip,
)

OPERATIONS = {"dpo": "dpo.fused_linear_dpo_loss", "grpo": "grpo.fused_linear_grpo_loss"}
SPECS = {"dpo": (dpo.fused_linear_dpo_loss, dpo.fused_loss_magnitudes),
         "grpo": (grpo.fused_linear_grpo_loss, grpo.fused_loss_magnitudes)}
IMPLEMENTATIONS = ("torch.naive", "torch.chunked")
GPU_IMPLEMENTATIONS = (*IMPLEMENTATIONS, "triton.chunked")  # interpreted on the CPU: too slow to time there
LOSSES = ("dpo", "grpo")
VOCABS = (32768, 65536, 131072)
TOKENS = (512, 1024, 2048)
SEQUENCES = 8  # DPO: 4 (chosen, rejected) pairs; GRPO: one group of 8 completions
HIDDEN = 1024
PROMPT = 64  # DPO: the first 64 tokens of each sequence are prompt (masked); GRPO: the last 64 are padding
CPU_DTYPE = torch.float32
GPU_DTYPES = (torch.float32, torch.bfloat16)

# The naive code holds about five float32 copies of the logits at its peak (the logits, their log-softmax, and in
# the backward the gradients of both plus a temporary): 20 bytes per (token, vocab) entry. On a machine with 23 GB
# of RAM, shared, a combination above 12 GB is skipped rather than swapped: 8 x 2048 x 131072 (40 GiB) and
# 8 x 2048 x 65536 (20 GiB) and 8 x 1024 x 131072 (20 GiB).
NAIVE_BYTES_PER_LOGIT = 20
CPU_NAIVE_LIMIT_BYTES = 12 * 10**9

# The check in setup: small enough for the float64 spec, two chunks at least
CHECK = dict(sequences=4, tokens=24, hidden=32, vocab=1000)


def preference_inputs(loss: str, sequences: int, tokens: int, hidden: int, vocab: int, *, dtype, device: str):
    """(hidden states, weight, the other arguments, keyword options) of one loss, seeded (benchmarks.common)."""
    (h,) = seeded_normal("preference.hidden", (sequences, tokens, hidden), dtype=dtype, device=device)
    (w,) = seeded_normal("preference.weight", (vocab, hidden), dtype=torch.float32, device=device)
    w = (w / hidden**0.5).to(dtype)  # logits of order 1, as a trained LM head gives
    generator = torch.Generator(device=device)
    generator.manual_seed(SEEDS["preference.ids"])
    ids = torch.randint(0, vocab, (sequences, tokens), generator=generator, device=device)
    mask = torch.ones(sequences, tokens, dtype=torch.int64, device=device)
    prompt = min(PROMPT, tokens // 2)
    if loss == "dpo":
        mask[:, :prompt] = 0
        (ref,) = seeded_normal("preference.ref", (2, sequences // 2), dtype=torch.float32, device=device)
        ref = (ref - (tokens - prompt) * 10.0).to(dtype)  # summed log-probs of the completions
        return h, w, (ids, mask, ref[0], ref[1]), {"beta": 0.1}
    mask[:, tokens - prompt:] = 0
    (A,) = seeded_normal("preference.advantages", (sequences,), dtype=dtype, device=device)
    return h, w, (ids, mask, A), {"beta": 0.0}


def _loss_and_grads(fn, h, w, args, kwargs):
    h = h.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    loss = fn(h, w, *args, **kwargs)
    return (loss, *torch.autograd.grad(loss, (h, w)))


def checked_loss(loss: str, name: str, *, dtype, device: str):
    """The implementation, checked once at a small size: loss and gradients within budget of the float64 spec."""
    impl = implementation_or_skip(OPERATIONS[loss], name, device=device, dtype=dtype, needs=("grad",))
    fn = impl.load()
    base = implementation_or_skip(OPERATIONS[loss], "torch.naive", device=device, dtype=dtype).load()
    spec_fn, magnitudes = SPECS[loss]
    h, w, args, kwargs = preference_inputs(loss, CHECK["sequences"], CHECK["tokens"], CHECK["hidden"],
                                           CHECK["vocab"], dtype=dtype, device=device)
    extra = {"chunk_size": 7} if "chunk_size" in impl.provides else {}  # 7 does not divide the tokens
    out = _loss_and_grads(functools.partial(fn, **extra), h, w, args, kwargs)
    ref = _loss_and_grads(spec_fn, h.double().cpu(), w.double().cpu(), [a.cpu() for a in args], kwargs)
    naive = _loss_and_grads(base, h, w, args, kwargs)
    mag, n = magnitudes(h.cpu(), w.cpu(), *[a.cpu() for a in args], **kwargs)
    z_max = float((h.detach().double().abs().cpu() @ w.detach().double().abs().cpu().T).max())
    label = f"{name} {loss} ({dtype_name(dtype)}, {device})"
    check_within_budget(f"{label}: loss", out[0], ref[0], naive[0], k=K_FORWARD, magnitude=mag, terms=n)
    for what, o, r, b in zip(("d/d hidden", "d/d weight"), out[1:], ref[1:], naive[1:]):
        check_within_budget(f"{label}: {what}", o, r, b, k=K_GRADIENT, terms=n,
                            magnitude=float(r.abs().max()) * (1 + 2 * z_max))
    return fn


def training_step(fn, h, w, args, kwargs):
    """Loss and its gradients in hidden and weight (leaves that require grad): what a training step asks of the
    loss. No copies of the inputs, so that the peak memory is the loss's own."""
    loss = fn(h, w, *args, **kwargs)
    return (loss, *torch.autograd.grad(loss, (h, w)))


# ---------------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------------

class PreferenceLossCPU:
    """Loss forward + backward on the CPU: wall time and peak RSS."""

    version = 1
    params = (LOSSES, IMPLEMENTATIONS, VOCABS, TOKENS)
    param_names = ("loss", "implementation", "vocab", "tokens")
    number = 1
    repeat = (1, 3, 60.0)
    timeout = 1200

    def setup(self, loss, name, vocab, tokens):
        if name == "torch.naive" and SEQUENCES * tokens * vocab * NAIVE_BYTES_PER_LOGIT > CPU_NAIVE_LIMIT_BYTES:
            # does not fit in this machine's RAM beside the others' work (see NAIVE_BYTES_PER_LOGIT)
            raise NotImplementedError(f"the naive logits of {SEQUENCES} x {tokens} x {vocab} would need "
                                      f"~{SEQUENCES * tokens * vocab * NAIVE_BYTES_PER_LOGIT / 1e9:.0f} GB")
        fn = checked_loss(loss, name, dtype=CPU_DTYPE, device="cpu")
        h, w, args, kwargs = preference_inputs(loss, SEQUENCES, tokens, HIDDEN, vocab, dtype=CPU_DTYPE, device="cpu")
        self.step = functools.partial(training_step, fn, h.requires_grad_(True), w.requires_grad_(True), args, kwargs)

    def time_loss_forward_backward(self, loss, name, vocab, tokens):
        self.step()

    def peakmem_loss_forward_backward(self, loss, name, vocab, tokens):
        self.step()


# ---------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------

def measure_preference_gpu(loss: str, name: str, dtype: torch.dtype, vocab: int, tokens: int) -> dict[str, float]:
    fn = checked_loss(loss, name, dtype=dtype, device="cuda")
    h, w, args, kwargs = preference_inputs(loss, SEQUENCES, tokens, HIDDEN, vocab, dtype=dtype, device="cuda")
    step = functools.partial(training_step, fn, h.requires_grad_(True), w.requires_grad_(True), args, kwargs)
    warm_up_or_skip(step)
    return {"ms": cuda_ms(step), "peak_mib": peak_cuda_mb(step)}


@cached_tracks({
    "track_ms": ("ms", "ms"),
    "track_peak_memory_mb": ("peak_mib", "MiB"),
})
class PreferenceLossGPU:
    """Loss forward + backward on the GPU: milliseconds and peak allocated memory (inputs included). Measured once
    per combination in setup_cache (benchmarks.common.measure_grid)."""

    version = 1
    params = (LOSSES, GPU_IMPLEMENTATIONS, tuple(dtype_name(d) for d in GPU_DTYPES), VOCABS, TOKENS)
    param_names = ("loss", "implementation", "dtype", "vocab", "tokens")
    timeout = 1800

    def setup_cache(self):
        return measure_grid(self.params, lambda loss, name, dtype, vocab, tokens: measure_preference_gpu(
            loss, name, getattr(torch, dtype), vocab, tokens))

    def setup(self, cache, loss, name, dtype, vocab, tokens):
        self.entry = cached_entry(cache, (loss, name, dtype, vocab, tokens))
