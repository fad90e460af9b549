"""Exact oracles: Gaussian and Gaussian-mixture data, whose denoiser and probability flow are closed-form (EDM
App. B.3; catalogue/edm.md property 3). The tests' and benchmarks' stand-in for a trained network.
"""

from __future__ import annotations

import math

import torch

from eqspec.registry import spec

from .conventions import DOC
from .table1 import SIGMA_DATA


@spec(DOC, latex=r"D(y;\sigma)=\sum_k r_k(y)\Big(\mu_k+\frac{v_k}{v_k+\sigma^2}(y-\mu_k)\Big),\ "
                 r"r_k\propto w_k\,\mathcal N(y;\mu_k,(v_k+\sigma^2)I)",
      source="EDM App. B.3 (the ideal denoiser of a finite data set, v_k = 0), generalised to Gaussian components",
      convention="Components are isotropic; y (B, d); means (K, d); variances, weights (K,). Computed in y's dtype.")
def ideal_denoiser(y: torch.Tensor, sigma, means: torch.Tensor, variances: torch.Tensor, weights: torch.Tensor):
    mu, v, w = (t.to(device=y.device, dtype=y.dtype) for t in (means, variances, weights))
    var = v + sigma**2  # (K,)
    d = y.shape[-1]
    sq = ((y[:, None, :] - mu[None]) ** 2).sum(-1)  # (B, K)
    log_r = torch.log(w) - 0.5 * d * torch.log(var) - 0.5 * sq / var
    r = torch.softmax(log_r, dim=1)
    shrink = (v / var)[None, :, None]
    return (r[..., None] * (mu[None] + shrink * (y[:, None, :] - mu[None]))).sum(1)


@spec(DOC, latex=r"y(\sigma)=y(\sigma_0)\frac{\sqrt{\sigma^2+\sigma_d^2}}{\sqrt{\sigma_0^2+\sigma_d^2}}\ \ "
                 r"\text{for data }\mathcal N(0,\sigma_d^2I)",
      source="catalogue/edm.md property 3 (exact solution of dy/dsigma = (y - D) / sigma)")
def gaussian_flow(y0, sigma0, sigma, sigma_data: float = SIGMA_DATA):
    return y0 * math.sqrt(sigma**2 + sigma_data**2) / math.sqrt(sigma0**2 + sigma_data**2)


def gaussian_denoiser(y, sigma, sigma_data: float = SIGMA_DATA):
    """D(y; sigma) = sigma_d^2 / (sigma^2 + sigma_d^2) y: the exact denoiser E[x_0 | y] of N(0, sigma_d^2 I) data
    (ideal_denoiser with one component of mean 0 and variance sigma_d^2; gaussian_flow is the probability flow it
    drives). Any shape of y; sigma a number or a tensor broadcastable to y."""
    return sigma_data**2 / (sigma**2 + sigma_data**2) * y
