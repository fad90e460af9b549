"""Diffusion sampler benchmarks: the cost of a sampler per network evaluation (NFE), for a batch of 2^16 samples.

What a sampler adds to the network is arithmetic on the batch between evaluations (EDM Algorithm 1's Heun step,
Algorithm 2's churn, the score-SDE predictor-corrector update). To time that, the "network" is the exact denoiser
of Gaussian data (one multiply), so nearly all of the time is the sampler's; the result is reported per network
evaluation (2N - 1 for Heun and Algorithm 2, N (1 + corrector steps) for PC), comparable across step counts.

CPU: time_ of a whole sampling run (float32 and float64) and peakmem_. GPU (track_, skipped without CUDA): ms per
network evaluation, float32. Before anything is timed, setup checks the implementation against the float64 spec on
a small batch (error budget: 2 x the naive torch sampler's error + floor).

`version` is pinned for the reason given in benchmarks/attention.py.
"""

from __future__ import annotations

import functools

import torch

from eqspec.budget import check_within_budget
from specs import edm, score_sde
from specs.edm import SIGMA_DATA, gaussian_denoiser

from .common import cuda_ms, gpu_benchmark, implementation_or_skip, require_cuda, seeded_normal, warm_up_or_skip

BATCH = 2**16
CHECK_BATCH = 256
STEPS = 18  # EDM's CIFAR-10 setting: 35 network evaluations
PC_STEPS, PC_CORRECTOR = 32, 1  # VP needs N > 20 (discrete beta_max / N < 1 for the corrector's alpha)
SAMPLERS = ("edm.heun_sampler", "edm.stochastic_sampler", "score_sde.pc_sampler")
CPU_IMPLEMENTATIONS = ("torch.batched", "spec")
CPU_DTYPES = ("float32", "float64")


def gaussian_score(x, t):
    return score_sde.gaussian_score(x, t, kind="vp", sigma_data=SIGMA_DATA)


def nfe(sampler: str) -> int:
    return 2 * STEPS - 1 if sampler.startswith("edm.") else PC_STEPS * (PC_CORRECTOR + 1)


def sampler_call(sampler: str, fn, batch: int, dtype: torch.dtype, device: str):
    """A zero-argument call of the sampler on seeded inputs, and the same call of the float64 spec."""
    (x_T,) = seeded_normal("diffusion.x_T", (batch,), dtype=dtype, device=device)
    if sampler == "score_sde.pc_sampler":
        (noise,) = seeded_normal("diffusion.noise", (PC_STEPS, PC_CORRECTOR + 1, batch), dtype=dtype, device=device)
        kw = dict(kind="vp", N=PC_STEPS, corrector_steps=PC_CORRECTOR, predictor="euler_maruyama")
        return (functools.partial(fn, gaussian_score, x_T, noise, **kw),
                functools.partial(score_sde.pc_sampler, gaussian_score, x_T.cpu().double(), noise.cpu().double(),
                                  **kw))
    sigmas = edm.time_steps(STEPS)
    x_T = x_T * float(sigmas[0])
    if sampler == "edm.heun_sampler":
        return (functools.partial(fn, gaussian_denoiser, x_T, sigmas),
                functools.partial(edm.heun_sampler, gaussian_denoiser, x_T.cpu().double(), sigmas))
    (noise,) = seeded_normal("diffusion.noise", (STEPS, batch), dtype=dtype, device=device)
    kw = dict(S_churn=40.0, S_tmin=0.05, S_tmax=50.0, S_noise=1.003)
    return (functools.partial(fn, gaussian_denoiser, x_T, sigmas, noise, **kw),
            functools.partial(edm.stochastic_sampler, gaussian_denoiser, x_T.cpu().double(), sigmas,
                              noise.cpu().double(), **kw))


def checked_sampler(sampler: str, name: str, dtype: torch.dtype, device: str):
    """The implementation, loaded and checked once on a small batch against the float64 spec."""
    impl = implementation_or_skip(sampler, name, device=device, dtype=dtype)
    fn = impl.load()
    naive = implementation_or_skip(sampler, "torch.batched", device=device, dtype=dtype).load()
    run, reference = sampler_call(sampler, fn, CHECK_BATCH, dtype, device)
    base, _ = sampler_call(sampler, naive, CHECK_BATCH, dtype, device)
    ref = reference()
    check_within_budget(f"{name} {sampler} ({dtype}, {device})", run(), ref, base(),
                        magnitude=float(ref.abs().max()) + 4, terms=8 * STEPS)
    return fn


# ---------------------------------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------------------------------

class SamplerCPU:
    """A whole sampling run of 2^16 one-dimensional samples on the CPU (divide by nfe() for the cost per NFE:
    35 for the EDM samplers, 64 for PC)."""

    version = 1
    params = (SAMPLERS, CPU_IMPLEMENTATIONS, CPU_DTYPES)
    param_names = ("sampler", "implementation", "dtype")
    number = 1
    timeout = 300

    def setup(self, sampler, name, dtype):
        fn = checked_sampler(sampler, name, getattr(torch, dtype), "cpu")
        self.run, _ = sampler_call(sampler, fn, BATCH, getattr(torch, dtype), "cpu")
        self.run()  # warm-up, outside the timing

    def time_sampler(self, sampler, name, dtype):
        self.run()

    def peakmem_sampler(self, sampler, name, dtype):
        self.run()


# ---------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------

class SamplerGPU:
    """Milliseconds per network evaluation of each sampler on the GPU (2^16 samples, float32)."""

    version = 1
    params = (SAMPLERS, ("torch.batched",))
    param_names = ("sampler", "implementation")
    timeout = 300

    def setup(self, sampler, name):
        require_cuda()
        fn = checked_sampler(sampler, name, torch.float32, "cuda")
        self.run, _ = sampler_call(sampler, fn, BATCH, torch.float32, "cuda")
        warm_up_or_skip(self.run)

    @gpu_benchmark
    def track_ms_per_nfe(self, sampler, name):
        return cuda_ms(self.run) / nfe(sampler)

    track_ms_per_nfe.unit = "ms"
