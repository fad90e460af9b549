"""Score-SDE predictor, corrector and PC sampler in plain torch: batched, in the input's dtype, on its device.

Arguments are validated by the spec's own checks (specs/score_sde.py); the arithmetic is done here, in x's dtype.
"""

from __future__ import annotations

import math

import torch

from specs import score_sde as spec


def predictor_step(x, t, score, z, *, kind="vp", predictor="euler_maruyama", N=spec.N_DEFAULT,
                   probability_flow=False, **sde_params):
    spec.check_predictor_args(x, score, z, kind, predictor, N, probability_flow)  # ancestral: VP, VE, no flow
    T = spec._t(t, x).to(x.dtype)
    beta_min, beta_max = sde_params.get("beta_min", spec.BETA_MIN), sde_params.get("beta_max", spec.BETA_MAX)
    sigma_min, sigma_max = sde_params.get("sigma_min", spec.SIGMA_MIN), sde_params.get("sigma_max", spec.SIGMA_MAX)
    half = 0.5 if probability_flow else 1.0
    if predictor == "euler_maruyama":
        if kind == "ve":
            f = torch.zeros_like(x)
            g = sigma_min * (sigma_max / sigma_min) ** T * math.sqrt(2 * math.log(sigma_max / sigma_min))
        else:
            beta = beta_min + T * (beta_max - beta_min)
            B = beta_min * T + 0.5 * (beta_max - beta_min) * T**2
            f = -0.5 * beta * x
            g = torch.sqrt(beta) if kind == "vp" else torch.sqrt(beta * (1 - torch.exp(-2 * B)))
        x_mean = x - (f - g**2 * score * half) / N
        return (x_mean if probability_flow else x_mean + g * math.sqrt(1 / N) * z), x_mean
    i = torch.floor(spec._t(t, x) * (N - 1)).long()
    if kind == "subvp":
        f, G = (v.to(x.dtype) for v in spec.discretize(x, t, kind=kind, N=N, **sde_params))
        x_mean = x - f + G**2 * score * half
        return (x_mean if probability_flow else x_mean + G * z), x_mean
    if kind == "vp":
        beta = torch.linspace(beta_min / N, beta_max / N, N, dtype=x.dtype, device=x.device)[i]
        if predictor == "reverse_diffusion":
            x_mean = x - (torch.sqrt(1 - beta) - 1) * x + beta * score * half
            return (x_mean if probability_flow else x_mean + torch.sqrt(beta) * z), x_mean
        x_mean = (x + beta * score) / torch.sqrt(1 - beta)
        return x_mean + torch.sqrt(beta) * z, x_mean
    sig = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), N, dtype=x.dtype, device=x.device))
    s_i = sig[i]
    s_prev = torch.where(i == 0, torch.zeros_like(s_i), sig[(i - 1).clamp(min=0)])
    if predictor == "reverse_diffusion":
        G2 = s_i**2 - s_prev**2
        x_mean = x + G2 * score * half
        return (x_mean if probability_flow else x_mean + torch.sqrt(G2) * z), x_mean
    x_mean = x + (s_i**2 - s_prev**2) * score
    return x_mean + torch.sqrt(s_prev**2 * (s_i**2 - s_prev**2) / s_i**2) * z, x_mean


def langevin_step(x, score, z, *, snr=0.16, alpha=1.0, step_size=None):
    spec.check_step_fields(x, score, z, batched=True)
    if step_size is None:
        snr, alpha = spec.check_real("snr", snr, low=0.0), spec.check_real("alpha", alpha, low=0.0)
        grad_norm = torch.linalg.vector_norm(score.reshape(x.shape[0], -1), dim=-1).mean()
        noise_norm = torch.linalg.vector_norm(z.reshape(x.shape[0], -1), dim=-1).mean()
        eps = 2 * alpha * (snr * noise_norm / grad_norm) ** 2
    else:
        eps = torch.tensor(spec.check_real("step_size", step_size, low=0.0), dtype=x.dtype, device=x.device)
    x_mean = x + eps * score
    return x_mean + torch.sqrt(2 * eps) * z, x_mean


def pc_sampler(score_fn, x_T, noise, *, kind="vp", N=spec.N_DEFAULT, predictor="euler_maruyama", corrector_steps=0,
               snr=0.16, eps=spec.SAMPLING_EPS, probability_flow=False, denoise=True, **sde_params):
    eps = spec.check_pc_sampler_args(score_fn, x_T, noise, kind, predictor, N, corrector_steps, eps)
    betas = {k: v for k, v in sde_params.items() if k.startswith("beta")}
    x = x_mean = x_T.clone()  # no step at all: a copy, never the caller's x_T
    for i, t in enumerate(torch.linspace(1.0, eps, N, dtype=torch.float64).tolist()):
        for j in range(corrector_steps):
            x, x_mean = langevin_step(x, score_fn(x, t), noise[i, j].to(x.dtype), snr=snr,
                                      alpha=spec.langevin_alpha(t, kind, N, **betas))
        if predictor != "none":
            x, x_mean = predictor_step(x, t, score_fn(x, t), noise[i, -1].to(x.dtype), kind=kind,
                                       predictor=predictor, N=N, probability_flow=probability_flow, **sde_params)
    return x_mean if denoise else x
