"""Helpers shared by the EDM property tests (test_edm_*.py): tolerances, draws, what a library adapter covers, the
schedules' conditioning and a malformed-input fixture. Oracles and bounds shared with score_sde: oracles_diffusion.py.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import torch

from specs import edm

from .oracles_diffusion import F64
from .strategies import randn

U64 = torch.finfo(F64).eps
SIGMA_DATA = edm.SIGMA_DATA
CLAIM_RTOL_F64 = 1e-12  # the claims' stated float64 tolerance for identities (relative to the terms)


def log_uniform(seed: int, n: int, lo: float, hi: float) -> torch.Tensor:
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


seeds = st.integers(0, 2**31)


def covers(target, what: str) -> bool:
    """A library adapter or a user's callable covers only the kinds / predictions it declares ("kind:edm", ...)."""
    return target.impl.origin not in ("thirdparty", "user") or what in target.impl.provides


def schedule_conditioning(t: torch.Tensor, kind: str):
    """(kappa, slope, kappa_inv) per time: sigma(t) computed in floating point is about kappa roundings of its dtype
    (relative) from exact; d ln sigma / d ln t = slope; sigma^-1 evaluated in float64 is kappa_inv roundings from
    exact.

    VP: sigma = sqrt(e - 1), e = exp(E), E = beta_d t^2 / 2 + beta_min t: E's three roundings (t^2, the products, the
    sum) become a relative error 3 u E of e, exp adds u, and e - 1 cancels terms of size e: a relative error e / (e - 1)
    times that, halved by the root (5e5 u at t = 1e-5, 15 u at t = 1), plus the root's and the difference's: in eps,
    (1 + 3E) e / (4 (e - 1)) + 1 to first order; kappa is twice that. Its inverse subtracts beta_min from
    sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)). FM: sigma = t / (1 - t), where 1 - t cancels terms of size 1. VE: a
    root. EDM: sigma = t itself.
    """
    one = torch.ones_like(t)
    if kind == "vp":
        E = 0.5 * edm.VP_BETA_D * t**2 + edm.VP_BETA_MIN * t
        e = torch.exp(E)
        slope = (edm.VP_BETA_D * t**2 + edm.VP_BETA_MIN * t) * e / (2 * torch.expm1(E))
        root = torch.sqrt(edm.VP_BETA_MIN**2 + 2 * edm.VP_BETA_D * torch.log1p(torch.expm1(E)))
        return 2 + (1 + 3 * E) * e / (2 * torch.expm1(E)), slope, 8 * root / (root - edm.VP_BETA_MIN)
    if kind == "ve":
        return 2 * one, 0.5 * one, 2 * one
    if kind == "fm":
        return 3 + t / (1 - t), 1 / (1 - t), 3 * one
    return one, one, one


X4 = randn(1, 2, 4)  # malformed-input cases of the operations' contracts
