"""MoE layer benchmarks: forward and backward of each implementation of kimi_vl.moe at a scaled-down Moonlight
shape: 64 routed experts, 6 per token, 2 shared experts, sigmoid routing with routed scaling 2.446 (the MOONLIGHT
preset), hidden 512, expert width 352 (Moonlight's 1408 scaled like the hidden size, 2048 -> 512), 2048 tokens.

CPU (time_, peakmem_): float32, one thread, timed in process CPU time (``timer = time.process_time``) so that the
side-by-side ratios do not depend on what else runs on a shared machine; peakmem_ is the process's peak RSS.
GPU (track_, skipped without CUDA): bfloat16 and float32, milliseconds and peak allocated memory.

The implementations: the per-token loop (the equation's shape), the sort/permute grouped layer, the grouped layer
with the Triton permute / unpermute kernels (GPU only: interpreted on the CPU it is far too slow to time), and
transformers' DeepseekV3MoE (eager experts). transformers is not a dependency of the main environment: without it
that benchmark is skipped (NotImplementedError), so one asv run in an environment that has it (--python=same from
the thirdparty tox environment, with asv importable there) times all of them side by side.

Before anything is timed, setup checks the implementation at a small size (16 tokens) against the float64 spec
within the error budget (2 x the per-token loop's error in the same dtype + floor): a wrong layer fails its setup.
For transformers the module is built once, with our weights copied in, outside the timed region.

"Backward" is the backward alone (not timed for the per-token loop: its autograd graph at 2048 tokens is too
slow): setup runs the forward and keeps autograd's graph; the timed call is torch.autograd.grad(y, (x, w_router,
w_gate, w_up, w_down, shared...), dy, retain_graph=True) with a fixed dy; for transformers, x and the module's
parameters. Its peakmem_ is the peak of a training step (forward activations alive, then the backward).
"""

from __future__ import annotations

import functools
import time

import torch

from eqspec.budget import check_within_budget
from specs.moe_routing import MOONLIGHT, moe, moe_magnitudes

from .common import (
    SEEDS,
    cached_entry,
    cached_tracks,
    cuda_ms,
    dtype_name,
    implementation_or_skip,
    measure_grid,
    peak_cuda_mb,
    warm_up_or_skip,
)

MOE = "kimi_vl.moe"
TOKENS, HIDDEN, EXPERTS, WIDTH, SHARED = 2048, 512, 64, 352, 2
CHECK_TOKENS = 16
CPU_IMPLEMENTATIONS = ("torch.loop", "torch.grouped", "thirdparty.deepseek_v3")
GPU_IMPLEMENTATIONS = ("torch.loop", "torch.grouped", "triton.grouped", "thirdparty.deepseek_v3")
GPU_DTYPES = ("bfloat16", "float32")


def moe_inputs(tokens: int, *, dtype: torch.dtype, device: str, requires_grad: bool = False):
    """x (T, D), w_router (E, D), bias (E, float32), w_gate / w_up (E, F, D), w_down (E, D, F) and the shared
    expert (SHARED x F wide), seeded; weights scaled by 1/sqrt(fan-in) so activations stay O(1)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(SEEDS["moe.inputs"])

    def normal(*shape, scale=1.0):
        t = (torch.randn(shape, generator=generator, device=device) * scale).to(dtype)
        return t.requires_grad_(requires_grad)

    D, E, F, Fs = HIDDEN, EXPERTS, WIDTH, SHARED * WIDTH
    x = normal(tokens, D)
    w_router = normal(E, D, scale=D ** -0.5)
    bias = (torch.randn(E, generator=generator, device=device) * 0.1).float()  # a buffer: never trained by SGD
    w_gate, w_up = normal(E, F, D, scale=D ** -0.5), normal(E, F, D, scale=D ** -0.5)
    w_down = normal(E, D, F, scale=F ** -0.5)
    shared = (normal(Fs, D, scale=D ** -0.5), normal(Fs, D, scale=D ** -0.5), normal(D, Fs, scale=Fs ** -0.5))
    return x, w_router, bias, w_gate, w_up, w_down, shared


def trainable(inputs) -> tuple[torch.Tensor, ...]:
    x, w_router, _bias, w_gate, w_up, w_down, shared = inputs
    return (x, w_router, w_gate, w_up, w_down, *shared)


def build(name: str, inputs, *, dtype: torch.dtype, device: str, gradients: bool = False):
    """(forward: x -> y, the tensors a backward differentiates) for the implementation `name` holding the weights
    of `inputs`. transformers' layer is a module built once here, with our weights copied in; its backward
    differentiates x and the module's own parameters."""
    x, w_router, bias, w_gate, w_up, w_down, shared = inputs
    is_module = name.startswith("thirdparty.")
    impl = implementation_or_skip(MOE, name, device=device, dtype=dtype,
                                  needs=("grad",) if gradients and not is_module else ())
    if is_module:
        from implementations.thirdparty.kimi_vl.transformers_moe import deepseek_v3_layer

        layer = deepseek_v3_layer(*(t.detach() for t in (w_router, bias, w_gate, w_up, w_down)), MOONLIGHT,
                                  tuple(s.detach() for s in shared))
        return (lambda x_: layer(x_[None])[0]), (x, *layer.parameters())
    fn = impl.load()
    return (lambda x_: fn(x_, w_router, bias, w_gate, w_up, w_down, MOONLIGHT, shared)), trainable(inputs)


def checked_layer(name: str, *, dtype: torch.dtype, device: str, gradients: bool = False) -> None:
    """Raise unless `name` is within the error budget of the float64 spec at CHECK_TOKENS tokens (baseline: the
    per-token loop in the same dtype); NotImplementedError (asv: skipped) where it cannot run here."""
    inputs = moe_inputs(CHECK_TOKENS, dtype=dtype, device=device)
    forward, _ = build(name, inputs, dtype=dtype, device=device, gradients=gradients)
    loop, _ = build("torch.loop", inputs, dtype=dtype, device=device)
    forward(inputs[0])  # the first call pays for lazy initialisation (Triton compilation)
    y = forward(inputs[0])
    as64 = lambda t: t.detach().to("cpu", torch.float64)  # noqa: E731
    weights = [as64(t) for t in inputs[:6]]
    shared = tuple(as64(s) for s in inputs[6])
    magnitude, terms = moe_magnitudes(*weights, MOONLIGHT, shared)
    check_within_budget(f"{name} ({dtype_name(dtype)}, {device})", y, moe(*weights, MOONLIGHT, shared),
                        loop(inputs[0]), magnitude=magnitude, terms=terms)


def output_gradient(shape, *, dtype: torch.dtype, device: str) -> torch.Tensor:
    generator = torch.Generator(device=device)
    generator.manual_seed(SEEDS["moe.dy"])
    return torch.randn(shape, generator=generator, device=device).to(dtype)


# ---------------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------------

class MoEForwardCPU:
    """The MoE layer's forward on the CPU (float32): wall time and peak RSS."""

    version = 1
    params = (CPU_IMPLEMENTATIONS, (TOKENS,))
    param_names = ("implementation", "tokens")
    number = 1
    repeat = (1, 5, 30.0)  # the loop takes ~10 s a call: 3 samples of it, 5 of the others
    timeout = 900
    timer = time.process_time

    def setup(self, name, tokens):
        torch.set_num_threads(1)
        checked_layer(name, dtype=torch.float32, device="cpu")
        inputs = moe_inputs(tokens, dtype=torch.float32, device="cpu")
        forward, _ = build(name, inputs, dtype=torch.float32, device="cpu")
        self.forward = torch.no_grad()(functools.partial(forward, inputs[0]))

    def time_forward(self, name, tokens):
        self.forward()

    def peakmem_forward(self, name, tokens):
        self.forward()


class MoEBackwardCPU:
    """The backward alone on the CPU (graph built in setup): wall time, and the training step's peak RSS."""

    version = 1
    params = (CPU_IMPLEMENTATIONS, (TOKENS,))
    param_names = ("implementation", "tokens")
    number = 1
    repeat = (1, 5, 60.0)
    timeout = 900
    timer = time.process_time

    def setup(self, name, tokens):
        if name == "torch.loop":
            # 2048 x 6 token-expert steps make an autograd graph of ~10^5 small nodes: one backward took over 3
            # CPU minutes before it was stopped, per timed sample, on the 2-core machine these ran on
            raise NotImplementedError("torch.loop's backward at 2048 tokens is too slow to time")
        torch.set_num_threads(1)
        checked_layer(name, dtype=torch.float32, device="cpu", gradients=True)
        inputs = moe_inputs(tokens, dtype=torch.float32, device="cpu", requires_grad=True)
        forward, self.wrt = build(name, inputs, dtype=torch.float32, device="cpu", gradients=True)
        self.y = forward(inputs[0])
        self.dy = output_gradient(self.y.shape, dtype=torch.float32, device="cpu")

    def run_backward(self):
        return torch.autograd.grad(self.y, self.wrt, self.dy, retain_graph=True)

    def time_backward(self, name, tokens):
        self.run_backward()

    def peakmem_backward(self, name, tokens):
        self.run_backward()


# ---------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------

def measure_moe_gpu(name: str, dtype_label: str) -> dict[str, float]:
    dtype = getattr(torch, dtype_label)
    if name == "torch.loop":
        # 12288 (token, expert) steps of three tiny launches each: the launcher, not the GPU, would be timed
        raise NotImplementedError("torch.loop is launch-bound on the GPU at 2048 tokens")
    checked_layer(name, dtype=dtype, device="cuda")
    backward = not name.startswith("triton.")  # the Triton layer is forward only
    inputs = moe_inputs(TOKENS, dtype=dtype, device="cuda", requires_grad=backward)
    forward, wrt = build(name, inputs, dtype=dtype, device="cuda")
    x = inputs[0]
    with torch.no_grad():
        warm_up_or_skip(lambda: forward(x))
        result = {"forward_ms": cuda_ms(lambda: forward(x)), "forward_peak_mb": peak_cuda_mb(lambda: forward(x))}
    if not backward:
        return result
    dy = output_gradient((TOKENS, HIDDEN), dtype=dtype, device="cuda")
    warm_up_or_skip(lambda: torch.autograd.grad(forward(x), wrt, dy))
    result["training_step_peak_mb"] = peak_cuda_mb(lambda: torch.autograd.grad(forward(x), wrt, dy))
    y = warm_up_or_skip(lambda: forward(x))
    result["backward_ms"] = cuda_ms(lambda: torch.autograd.grad(y, wrt, dy, retain_graph=True))
    return result


@cached_tracks({
    "track_forward_ms": ("forward_ms", "ms"),
    "track_backward_ms": ("backward_ms", "ms"),
    "track_forward_peak_mb": ("forward_peak_mb", "MiB"),
    "track_training_step_peak_mb": ("training_step_peak_mb", "MiB"),
})
class MoEGPU:
    """The MoE layer on the GPU: forward and backward milliseconds, peak allocated MiB (measured once per
    combination in setup_cache, see benchmarks.common.measure_grid)."""

    version = 1
    params = (GPU_IMPLEMENTATIONS, GPU_DTYPES)
    param_names = ("implementation", "dtype")
    timeout = 1800

    def setup_cache(self):
        return measure_grid(self.params, measure_moe_gpu)

    def setup(self, cache, name, dtype):
        self.entry = cached_entry(cache, (name, dtype))
