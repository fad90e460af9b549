"""Attention benchmarks: forward and backward of each tracked implementation of flash_attention.attention.

CPU (time_, peakmem_): B = 1, H = 4, D = 64, float32, Sq = Sk from 512 to 8192. peakmem_ is the process's peak
RSS with the imported torch included (a few hundred MB at every size): it shows whether an implementation holds
the Sq x Sk score matrix (the naive one) or only tiles of it (FlashAttention's O(S d) memory).
GPU (track_, skipped without CUDA): bfloat16, D = 128, H = 16, B x S = 16k tokens, causal and not.

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

from implementations.torch.attention import autograd_backward
from specs.budget import K_FORWARD, K_GRADIENT
from specs.flash_attention import attention, attention_flops

from .common import (
    attention_inputs,
    attention_output_gradient,
    check_against_spec,
    cuda_ms,
    dtype_name,
    gpu_benchmark,
    implementation_or_skip,
    peak_cuda_mb,
    require_cuda,
    warm_up_or_skip,
)

ATTENTION = "flash_attention.attention"
ATTENTION_BACKWARD = "flash_attention.attention_backward"

# The same names on every machine, so results line up; setup skips the ones that cannot run here. The Triton
# kernels are not listed for the CPU: interpreted there, they are far too slow to time.
CPU_IMPLEMENTATIONS = ("torch.naive", "torch.tiled", "thirdparty.sdpa", "thirdparty.sdpa_math")
GPU_IMPLEMENTATIONS = ("torch.naive", "torch.tiled", "triton.flash_fwd", "thirdparty.sdpa", "thirdparty.sdpa_flash",
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

class AttentionForwardGPU:
    """Forward on the GPU: milliseconds, TFLOP/s (attention_flops 'fwd'), and peak allocated memory."""

    version = 1
    params = (GPU_IMPLEMENTATIONS, GPU_SEQLENS, GPU_CAUSAL)
    param_names = ("implementation", "seqlen", "causal")
    timeout = 600

    def setup(self, name, seqlen, causal):
        require_cuda()
        attend = checked_attention(name, heads=GPU_HEADS, head_dim=GPU_HEAD_DIM, causal=causal, dtype=GPU_DTYPE,
                                   device="cuda")
        batch = GPU_TOKENS // seqlen
        q, k, v = attention_inputs(batch, GPU_HEADS, seqlen, GPU_HEAD_DIM, dtype=GPU_DTYPE, device="cuda")
        self.forward = functools.partial(attend, q, k, v, causal=causal)
        warm_up_or_skip(self.forward)
        self.flops = attention_flops(batch, GPU_HEADS, seqlen, seqlen, GPU_HEAD_DIM, causal=causal, mode="fwd")

    @gpu_benchmark
    def track_forward_ms(self, name, seqlen, causal):
        return cuda_ms(self.forward)

    track_forward_ms.unit = "ms"

    @gpu_benchmark
    def track_forward_tflops(self, name, seqlen, causal):
        return self.flops / (cuda_ms(self.forward) * 1e-3) / 1e12

    track_forward_tflops.unit = "TFLOP/s"

    @gpu_benchmark
    def track_peak_memory_mb(self, name, seqlen, causal):
        return peak_cuda_mb(self.forward)

    track_peak_memory_mb.unit = "MiB"


class AttentionBackwardGPU:
    """Backward alone on the GPU: milliseconds, TFLOP/s (attention_flops 'bwd'); the training step's peak memory."""

    version = 1
    params = (GPU_IMPLEMENTATIONS, GPU_SEQLENS, GPU_CAUSAL)
    param_names = ("implementation", "seqlen", "causal")
    timeout = 600

    def setup(self, name, seqlen, causal):
        require_cuda()
        attend = checked_attention(name, heads=GPU_HEADS, head_dim=GPU_HEAD_DIM, causal=causal, dtype=GPU_DTYPE,
                                   device="cuda", gradients=True)
        batch = GPU_TOKENS // seqlen
        inputs = attention_inputs(batch, GPU_HEADS, seqlen, GPU_HEAD_DIM, dtype=GPU_DTYPE, device="cuda",
                                  requires_grad=True)
        do = attention_output_gradient(batch, GPU_HEADS, seqlen, GPU_HEAD_DIM, dtype=GPU_DTYPE, device="cuda")

        def training_step():
            o, _ = attend(*inputs, causal=causal)
            return torch.autograd.grad(o, inputs, do)

        self.training_step = training_step
        warm_up_or_skip(training_step)
        self.o = warm_up_or_skip(lambda: attend(*inputs, causal=causal)[0])  # the graph the backward reuses
        self.inputs, self.do = inputs, do
        self.flops = attention_flops(batch, GPU_HEADS, seqlen, seqlen, GPU_HEAD_DIM, causal=causal, mode="bwd")

    def run_backward(self):
        return torch.autograd.grad(self.o, self.inputs, self.do, retain_graph=True)

    @gpu_benchmark
    def track_backward_ms(self, name, seqlen, causal):
        return cuda_ms(self.run_backward)

    track_backward_ms.unit = "ms"

    @gpu_benchmark
    def track_backward_tflops(self, name, seqlen, causal):
        return self.flops / (cuda_ms(self.run_backward) * 1e-3) / 1e12

    track_backward_tflops.unit = "TFLOP/s"

    @gpu_benchmark
    def track_peak_memory_mb(self, name, seqlen, causal):
        self.o = None  # free setup's graph: the step below holds its own activations
        return peak_cuda_mb(self.training_step)

    track_peak_memory_mb.unit = "MiB"
