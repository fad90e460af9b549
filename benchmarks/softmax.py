"""Row-softmax benchmarks on the GPU (track_, skipped without CUDA): milliseconds and achieved bandwidth.

Softmax is memory-bound: the bandwidth counts one read of x and one write of y (2 x numel x element size bytes);
the lse it also writes is one value per row and left out. bfloat16, rows x columns from a few million elements
to 8192 x 32768 (512 MiB per tensor). Before anything is timed, setup checks the implementation once on 64 rows
of the same length against the float64 spec (benchmarks.common.check_against_spec).

`version` is pinned for the reason given in benchmarks/attention.py.
"""

from __future__ import annotations

import functools

import torch

from specs.budget import K_FORWARD

from .common import (
    check_against_spec,
    cuda_ms,
    dtype_name,
    gpu_benchmark,
    implementation_or_skip,
    require_cuda,
    softmax_input,
    warm_up_or_skip,
)

SOFTMAX = "flash_attention.softmax"

# The same names on every machine, so results line up; setup skips the ones that cannot run here.
IMPLEMENTATIONS = ("torch.naive", "thirdparty.torch_softmax", "triton.softmax")
SHAPES = ((4096, 4096), (4096, 16384), (8192, 32768))  # (rows, columns)
GPU_DTYPE = torch.bfloat16
CHECK_ROWS = 64


class SoftmaxGPU:
    """Row softmax with its log-sum-exp on the GPU."""

    version = 1
    params = (IMPLEMENTATIONS, SHAPES)
    param_names = ("implementation", "shape")
    timeout = 600

    def setup(self, name, shape):
        require_cuda()
        impl = implementation_or_skip(SOFTMAX, name, device="cuda", dtype=GPU_DTYPE)
        softmax = impl.load()
        rows, cols = shape
        check_against_spec(softmax, SOFTMAX, (softmax_input(CHECK_ROWS, cols, dtype=GPU_DTYPE, device="cuda"),),
                           label=f"{name} ({dtype_name(GPU_DTYPE)}, cuda)", output_names=("y", "lse"),
                           provides=impl.provides, k=K_FORWARD)
        x = softmax_input(rows, cols, dtype=GPU_DTYPE, device="cuda")
        self.run = functools.partial(softmax, x)
        warm_up_or_skip(self.run)
        self.bytes_moved = 2 * x.numel() * x.element_size()

    @gpu_benchmark
    def track_ms(self, name, shape):
        return cuda_ms(self.run)

    track_ms.unit = "ms"

    @gpu_benchmark
    def track_gbps(self, name, shape):
        return self.bytes_moved / (cuda_ms(self.run) * 1e-3) / 1e9

    track_gbps.unit = "GB/s"
