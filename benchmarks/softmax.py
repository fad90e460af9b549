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

from eqspec.budget import K_FORWARD

from .common import (
    cached_entry,
    cached_tracks,
    check_against_spec,
    cuda_ms,
    dtype_name,
    implementation_or_skip,
    measure_grid,
    measured_ceilings,
    softmax_input,
    warm_up_or_skip,
)

SOFTMAX = "flash_attention.softmax"

# The same names on every machine, so results line up; setup skips the ones that cannot run here.
IMPLEMENTATIONS = ("torch.naive", "thirdparty.torch_softmax", "triton.softmax")
SHAPES = ((4096, 4096), (4096, 16384), (8192, 32768))  # (rows, columns)
GPU_DTYPE = torch.bfloat16
CHECK_ROWS = 64


def measure_softmax_gpu(name: str, shape: tuple[int, int]) -> dict[str, float]:
    impl = implementation_or_skip(SOFTMAX, name, device="cuda", dtype=GPU_DTYPE)
    softmax = impl.load()
    rows, cols = shape
    check_against_spec(softmax, SOFTMAX, (softmax_input(CHECK_ROWS, cols, dtype=GPU_DTYPE, device="cuda"),),
                       label=f"{name} ({dtype_name(GPU_DTYPE)}, cuda)", output_names=("y", "lse"),
                       provides=impl.provides, k=K_FORWARD)
    x = softmax_input(rows, cols, dtype=GPU_DTYPE, device="cuda")
    run = functools.partial(softmax, x)
    warm_up_or_skip(run)
    ms = cuda_ms(run)
    gbps = 2 * x.numel() * x.element_size() / (ms * 1e-3) / 1e9
    return {"ms": ms, "gbps": gbps, "fraction_of_copy": gbps / measured_ceilings()["copy_gbps"]}


@cached_tracks({
    "track_ms": ("ms", "ms"),
    "track_gbps": ("gbps", "GB/s"),
    "track_fraction_of_copy": ("fraction_of_copy", "fraction"),
})
class SoftmaxGPU:
    """Row softmax with its log-sum-exp on the GPU: milliseconds, GB/s and the fraction of the measured
    device-to-device copy bandwidth. Measured once per combination in setup_cache (benchmarks.common.measure_grid)."""

    version = 2
    params = (IMPLEMENTATIONS, SHAPES)
    param_names = ("implementation", "shape")
    timeout = 1200

    def setup_cache(self):
        return measure_grid(self.params, measure_softmax_gpu)

    def setup(self, cache, name, shape):
        self.entry = cached_entry(cache, (name, shape))
