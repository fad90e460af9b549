"""Property tests of EDM Table 1's schedules (specs/edm/table1.py): sigma(t), s(t), their derivatives and inverses.

Identities that are exact in float64 are asserted at a tolerance derived from float64 rounding (stated per test);
float32 implementations are held to the error budget against the naive torch code (torch.batched); statistical
claims state their bound and false-alarm probability and use fixed seeds. Shared helpers: edm_helpers.py,
oracles_diffusion.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from eqspec.budget import rounding_atol
from specs import edm

from .edm_helpers import U64, schedule_conditioning, seeds
from .harness import checks, close
from .oracles_diffusion import F64, eps_of, same, within_relative


@checks("edm.schedule_endpoints_and_inverse", operation="edm.schedule")
@pytest.mark.parametrize("kind", edm.SCHEDULES)
@given(seed=seeds)
def test_schedule_endpoints_and_inverse(target, kind, seed):
    hi = 0.99 if kind == "fm" else 1.0
    t = torch.sort(torch.rand(32, generator=torch.Generator().manual_seed(seed), dtype=F64) * hi + 1e-3).values
    t = target.tensor(t.clamp(max=hi))
    sigma, s, _, _ = (v.double() for v in target(t, kind=kind))
    zero = target(target.tensor(torch.zeros(1, dtype=F64)), kind=kind)[0]
    same("sigma(0)", zero.double(), torch.zeros(1, dtype=F64))
    if not bool((sigma[1:] >= sigma[:-1]).all()):
        raise AssertionError(f"sigma(t) must increase with t ({kind}): {sigma.tolist()[:6]}...")
    # sigma's relative error (kappa roundings of its dtype) becomes t's divided by d ln sigma / d ln t; the float64
    # inverse adds its own (the VP one cancels sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) against beta_min)
    kappa, slope, kappa_inv = schedule_conditioning(t.double(), kind)
    within_relative(f"sigma^-1(sigma(t)) ({kind})", edm.sigma_inv(sigma, kind), t.double(),
                    eps_of(target) * kappa / slope + U64 * kappa_inv)
    if kind == "vp":
        # s = 1 / sqrt(e) is three roundings (six in s^2); sigma^2 = e - 1 cancels terms of size e, and s^2 e = 1:
        # two roundings of e and two of the root's square: ten in all, plus the test's float64 products
        close("s^2 (1 + sigma^2)", s**2 * (1 + sigma**2), torch.ones_like(s), atol=0,
              rtol=rounding_atol(target.torch_dtype, 1.0, 5) + 4 * U64)
        t_known = torch.tensor([1.0, 1e-3, 1e-5], dtype=F64)
        known = target(target.tensor(t_known), kind="vp")[0]
        # 8 printed digits (5e-8 relative) and sigma's own conditioning: e - 1 -> 0 as t -> 0 (1e-6 at t = 1e-5)
        within_relative("VP sigma(1), sigma(1e-3), sigma(1e-5)", known,
                        torch.tensor([152.16697, 0.010485993, 0.0010004976], dtype=F64),
                        1e-7 + eps_of(target) * schedule_conditioning(target.tensor(t_known).double(), "vp")[0])
    if kind == "fm":
        # s = 1 - t and s sigma = t (1 - t) / (1 - t): five roundings of terms of size 1
        close("s + s sigma", s + s * sigma, torch.ones_like(s), atol=0,
              rtol=rounding_atol(target.torch_dtype, 1.0, 3) + 4 * U64)


@checks("edm.schedule_derivatives", operation="edm.schedule", dtypes=("float64",))
@pytest.mark.parametrize("kind", edm.SCHEDULES)
@given(seed=seeds)
def test_schedule_derivatives(target, kind, seed):
    t = 0.05 + 0.9 * torch.rand(16, generator=torch.Generator().manual_seed(seed), dtype=F64)
    h = 1e-6 * torch.ones_like(t)
    sigma_p, s_p, _, _ = target(t + h, kind=kind)
    sigma_m, s_m, _, _ = target(t - h, kind=kind)
    _, _, sigma_dot, s_dot = target(t, kind=kind)
    # central differences: O(h^2) truncation plus O(u |f| / h) rounding, about 1e-9 relative here
    close(f"sigma_dot ({kind})", sigma_dot, (sigma_p - sigma_m) / (2 * h), atol=1e-9, rtol=1e-6)
    close(f"s_dot ({kind})", s_dot, (s_p - s_m) / (2 * h), atol=1e-9, rtol=1e-6)
