"""Attention benchmarks: forward and backward of each tracked implementation of flash_attention.attention.

CPU (time_, peakmem_): B = 1, H = 4, D = 64, float32, Sq = Sk from 512 to 8192. peakmem_ is the process's peak
RSS with the imported torch included (a few hundred MB at every size): it shows whether an implementation holds
the Sq x Sk score matrix (the naive one) or only tiles of it (FlashAttention's O(S d) memory).
GPU (track_, skipped without CUDA): bfloat16, D = 128, H = 16, B x S = 16k tokens, causal and not; the TFLOP/s
are read against the machine's measured bf16 matmul rate (benchmarks.common.measured_ceilings).

Before anything is measured, setup checks the implementation at a small size and raises unless its outputs
(and, for the backward, its gradients) are within the error budget of the float64 spec: a wrong kernel fails its
setup instead of being timed.

"Backward" is the backward alone: setup runs the forward and keeps autograd's graph, and the timed call is
torch.autograd.grad(o, (q, k, v), dO, retain_graph=True) with a fixed, seeded dO. Peak memory cannot leave the
forward out (its saved activations are alive during the backward), so the backward's peakmem_ and
track_peak_memory_mb are the peak of a training step: a forward that keeps its activations, then the backward.

Each class pins `version`: asv otherwise versions a benchmark by the hash of its source, and any edit (a comment, a
refactor) would start a new history. Bump it when what is measured changes (shapes, inputs, the timed region).
"""

from __future__ import annotations

import functools

import torch

from eqspec.budget import K_FORWARD, K_GRADIENT
from implementations.torch.attention import autograd_backward
from specs.flash_attention import attention, attention_flops

from .common import (
    attention_inputs,
    attention_output_gradient,
    cached_entry,
    cached_tracks,
    check_against_spec,
    cuda_ms,
    dtype_name,
    implementation_or_skip,
    measure_grid,
    measured_ceilings,
    peak_cuda_mb,
    warm_up_or_skip,
)

ATTENTION = "flash_attention.attention"
ATTENTION_BACKWARD = "flash_attention.attention_backward"

# The same names on every machine, so results line up; setup skips the ones that cannot run here. The Triton
# kernels are not listed for the CPU: interpreted there, they are far too slow to time.
CPU_IMPLEMENTATIONS = ("torch.naive", "torch.tiled", "thirdparty.sdpa", "thirdparty.sdpa_math")
GPU_IMPLEMENTATIONS = ("torch.naive", "torch.tiled", "triton.flash", "thirdparty.sdpa", "thirdparty.sdpa_flash",
                       "thirdparty.sdpa_efficient", "thirdparty.sdpa_cudnn", "thirdparty.sdpa_math")

CPU_BATCH, CPU_HEADS, CPU_HEAD_DIM, CPU_DTYPE = 1, 4, 64, torch.float32
CPU_SEQLENS = (512, 1024, 2048, 4096, 8192)
# Dense only, to keep a quick pass short on a 2-core machine: with causal=True as well it took about three times
# as long. The parameter axis stays so that adding True later keeps the existing results comparable.
CPU_CAUSAL = (False,)

GPU_TOKENS, GPU_HEADS, GPU_HEAD_DIM, GPU_DTYPE = 16 * 1024, 16, 128, torch.bfloat16
GPU_SEQLENS = (1024, 2048, 4096, 8192, 16384)
GPU_CAUSAL = (False, True)

# The size of the check in setup: three tiles of 128 keys, so the online softmax rescales across tiles, and a
# multiple of the usual kernel block sizes, so a kernel that requires them is checked on its own terms.
CHECK_SEQLEN = 384


def checked_attention(name: str, *, heads: int, head_dim: int, causal: bool, dtype: torch.dtype, device: str,
                      gradients: bool = False):
    """The implementation `name`, loaded and checked once against the spec (outputs; gradients if asked)."""
    needs = [capability for capability, wanted in (("grad", gradients), ("causal", causal)) if wanted]
    impl = implementation_or_skip(ATTENTION, name, device=device, dtype=dtype, needs=needs)
    attend = impl.load()
    label = f"{name} ({dtype_name(dtype)}, {device}, causal={causal})"
    q, k, v = attention_inputs(1, heads, CHECK_SEQLEN, head_dim, dtype=dtype, device=device)
    check_against_spec(attend, ATTENTION, (q, k, v), label=label, output_names=("o", "lse"),
                       provides=impl.provides, call_kwargs={"causal": causal}, k=K_FORWARD)
    if gradients:
        # The backward spec takes the exact O and L: compute them with the forward spec in float64.
        o, lse = attention(*(x.detach().to("cpu", torch.float64) for x in (q, k, v)), causal=causal)
        do = attention_output_gradient(1, heads, CHECK_SEQLEN, head_dim, dtype=dtype, device=device)
        check_against_spec(autograd_backward(attend), ATTENTION_BACKWARD, (q, k, v, o.to(device), lse.to(device), do),
                           label=label, output_names=("dq", "dk", "dv"), provides=impl.provides,
                           call_kwargs={"causal": causal}, k=K_GRADIENT)
    return attend


# ---------------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------------

class AttentionForwardCPU:
    """Forward on the CPU: wall time and peak RSS."""

    version = 1
    params = (CPU_IMPLEMENTATIONS, CPU_SEQLENS, CPU_CAUSAL)
    param_names = ("implementation", "seqlen", "causal")
    number = 1  # one call takes milliseconds to seconds: no need to batch calls per sample
    timeout = 600

    def setup(self, name, seqlen, causal):
        attend = checked_attention(name, heads=CPU_HEADS, head_dim=CPU_HEAD_DIM, causal=causal, dtype=CPU_DTYPE,
                                   device="cpu")
        q, k, v = attention_inputs(CPU_BATCH, CPU_HEADS, seqlen, CPU_HEAD_DIM, dtype=CPU_DTYPE, device="cpu")
        self.forward = functools.partial(attend, q, k, v, causal=causal)

    def time_forward(self, name, seqlen, causal):
        self.forward()

    def peakmem_forward(self, name, seqlen, causal):
        self.forward()


class AttentionBackwardCPU:
    """Backward alone on the CPU (graph built in setup): wall time, and the training step's peak RSS."""

    version = 1
    params = (CPU_IMPLEMENTATIONS, CPU_SEQLENS, CPU_CAUSAL)
    param_names = ("implementation", "seqlen", "causal")
    number = 1
    timeout = 600

    def setup(self, name, seqlen, causal):
        attend = checked_attention(name, heads=CPU_HEADS, head_dim=CPU_HEAD_DIM, causal=causal, dtype=CPU_DTYPE,
                                   device="cpu", gradients=True)
        self.inputs = attention_inputs(CPU_BATCH, CPU_HEADS, seqlen, CPU_HEAD_DIM, dtype=CPU_DTYPE, device="cpu",
                                       requires_grad=True)
        self.do = attention_output_gradient(CPU_BATCH, CPU_HEADS, seqlen, CPU_HEAD_DIM, dtype=CPU_DTYPE,
                                            device="cpu")
        self.o, _ = attend(*self.inputs, causal=causal)

    def run_backward(self):
        return torch.autograd.grad(self.o, self.inputs, self.do, retain_graph=True)

    def time_backward(self, name, seqlen, causal):
        self.run_backward()

    def peakmem_backward(self, name, seqlen, causal):
        self.run_backward()


# ---------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------

def _gpu_problem(seqlen: int, *, requires_grad: bool = False):
    batch = GPU_TOKENS // seqlen
    inputs = attention_inputs(batch, GPU_HEADS, seqlen, GPU_HEAD_DIM, dtype=GPU_DTYPE, device="cuda",
                              requires_grad=requires_grad)
    return batch, inputs


def _too_slow(name: str, seqlen: int) -> None:
    # torch.tiled is FA2 written as a Python loop over 128 x 128 tiles: at 16k tokens per sequence that is 16384
    # tile steps of several launches each, seconds per call, timing the launcher rather than a kernel.
    if name == "torch.tiled" and seqlen > TILED_MAX_SEQLEN:
        raise NotImplementedError(f"torch.tiled is launch-bound past {TILED_MAX_SEQLEN} tokens per sequence")


TILED_MAX_SEQLEN = 4096


@functools.cache
def _checked_gpu(name: str, causal: bool, gradients: bool):
    """Checked once per process, not once per sequence length (the check does not depend on it)."""
    return checked_attention(name, heads=GPU_HEADS, head_dim=GPU_HEAD_DIM, causal=causal, dtype=GPU_DTYPE,
                             device="cuda", gradients=gradients)


def measure_forward_gpu(name: str, seqlen: int, causal: bool) -> dict[str, float]:
    _too_slow(name, seqlen)
    attend = _checked_gpu(name, causal, False)
    batch, (q, k, v) = _gpu_problem(seqlen)
    forward = functools.partial(attend, q, k, v, causal=causal)
    warm_up_or_skip(forward)
    ms = cuda_ms(forward)
    tflops = attention_flops(batch, GPU_HEADS, seqlen, seqlen, GPU_HEAD_DIM, causal=causal, mode="fwd") / ms / 1e9
    return {"ms": ms, "tflops": tflops, "fraction_of_matmul": tflops / measured_ceilings()["matmul_tflops"],
            "peak_mb": peak_cuda_mb(forward)}


def measure_backward_gpu(name: str, seqlen: int, causal: bool) -> dict[str, float]:
    _too_slow(name, seqlen)
    attend = _checked_gpu(name, causal, True)
    batch, inputs = _gpu_problem(seqlen, requires_grad=True)
    do = attention_output_gradient(batch, GPU_HEADS, seqlen, GPU_HEAD_DIM, dtype=GPU_DTYPE, device="cuda")

    def training_step():
        o, _ = attend(*inputs, causal=causal)
        return torch.autograd.grad(o, inputs, do)

    warm_up_or_skip(training_step)
    peak_mb = peak_cuda_mb(training_step)
    o = warm_up_or_skip(lambda: attend(*inputs, causal=causal)[0])  # the graph the timed backward reuses
    ms = cuda_ms(lambda: torch.autograd.grad(o, inputs, do, retain_graph=True))
    tflops = attention_flops(batch, GPU_HEADS, seqlen, seqlen, GPU_HEAD_DIM, causal=causal, mode="bwd") / ms / 1e9
    return {"ms": ms, "tflops": tflops, "fraction_of_matmul": tflops / measured_ceilings()["matmul_tflops"],
            "peak_mb": peak_mb}


@cached_tracks({
    "track_forward_ms": ("ms", "ms"),
    "track_forward_tflops": ("tflops", "TFLOP/s"),
    "track_forward_fraction_of_matmul": ("fraction_of_matmul", "fraction"),
    "track_peak_memory_mb": ("peak_mb", "MiB"),
})
class AttentionForwardGPU:
    """Forward on the GPU: milliseconds, TFLOP/s (attention_flops 'fwd'), its fraction of the measured bf16
    matmul rate, and peak allocated memory. Measured for every combination once, in setup_cache
    (benchmarks.common.measure_grid says why)."""

    version = 2
    params = (GPU_IMPLEMENTATIONS, GPU_SEQLENS, GPU_CAUSAL)
    param_names = ("implementation", "seqlen", "causal")
    timeout = 1800

    def setup_cache(self):
        return measure_grid(self.params, measure_forward_gpu)

    def setup(self, cache, name, seqlen, causal):
        self.entry = cached_entry(cache, (name, seqlen, causal))


@cached_tracks({
    "track_backward_ms": ("ms", "ms"),
    "track_backward_tflops": ("tflops", "TFLOP/s"),
    "track_backward_fraction_of_matmul": ("fraction_of_matmul", "fraction"),
    "track_peak_memory_mb": ("peak_mb", "MiB"),
})
class AttentionBackwardGPU:
    """Backward alone on the GPU (the graph of one forward reused): milliseconds, TFLOP/s (attention_flops 'bwd'),
    its fraction of the measured bf16 matmul rate; and the training step's peak memory (forward + backward)."""

    version = 2
    params = (GPU_IMPLEMENTATIONS, GPU_SEQLENS, GPU_CAUSAL)
    param_names = ("implementation", "seqlen", "causal")
    timeout = 1800

    def setup_cache(self):
        return measure_grid(self.params, measure_backward_gpu)

    def setup(self, cache, name, seqlen, causal):
        self.entry = cached_entry(cache, (name, seqlen, causal))
