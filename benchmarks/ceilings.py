"""The GPU's two ceilings, as asv tracks them: every GPU kernel's rate is read against these (fraction_of_*).

copy bandwidth (GB/s, bytes read plus written by a 1 GiB device-to-device copy) and the dense bf16 matmul rate
(TFLOP/s, 8192^3 through torch), both measured on this machine (benchmarks.common.measured_ceilings).
"""

from __future__ import annotations

from .common import gpu_benchmark, measured_ceilings, require_cuda


class CeilingsGPU:
    version = 1
    timeout = 300

    def setup(self):
        require_cuda()

    @gpu_benchmark
    def track_copy_gbps(self):
        return measured_ceilings()["copy_gbps"]

    track_copy_gbps.unit = "GB/s"

    @gpu_benchmark
    def track_bf16_matmul_tflops(self):
        return measured_ceilings()["matmul_tflops"]

    track_bf16_matmul_tflops.unit = "TFLOP/s"
