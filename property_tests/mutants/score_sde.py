"""Mutants of the score-SDE document: the catalogue's plausible bugs (catalogue/score_sde.md, B bug list).

Each is the spec with one line wrong, computed in float64.
"""

from __future__ import annotations

import math

import torch

from specs import score_sde as spec

from . import mutant

F64 = torch.float64
_M = "property_tests.mutants.score_sde"


def _wrong_B(t, beta_min=spec.BETA_MIN, beta_max=spec.BETA_MAX):
    """B(t) with beta_1 t^2 / 2 instead of (beta_1 - beta_0) t^2 / 2."""
    return beta_min + t * (beta_max - beta_min), beta_min * t + 0.5 * beta_max * t**2


def sde_subvp_wrong_B(x, t, *, kind="vp", **kw):
    drift, g = spec.sde(x, t, kind=kind, **kw)
    if kind == "subvp":
        T = spec._t(t, x.double())
        beta, B = _wrong_B(T)
        g = torch.sqrt(beta * (1 - torch.exp(-2 * B))).to(x.dtype)
    return drift, g


def sde_accepts_any_kind(x, t, *, kind="vp", **kw):
    """No validation: an unknown kind silently falls back to VP; t is not range-checked."""
    T = torch.as_tensor(t, dtype=F64).clamp(0, 1) if not isinstance(t, torch.Tensor) else t.double().clamp(0, 1)
    if T.dim() == 1 and T.shape[0] != x.shape[0]:
        T = T[0]
    return spec.sde(x, T.to(x.dtype), kind=kind if kind in spec.KINDS else "vp", **kw)


def marginal_wrong_B(x0, t, *, kind="vp", **kw):
    if kind == "ve":
        return spec.marginal(x0, t, kind=kind, **kw)
    T = spec._t(t, x0.double())
    _, B = _wrong_B(T)
    mean = torch.exp(-0.5 * B) * x0.double()
    std = torch.sqrt(1 - torch.exp(-B)) if kind == "vp" else 1 - torch.exp(-B)
    return mean.to(x0.dtype), std.to(x0.dtype)


def marginal_subvp_sqrt(x0, t, *, kind="vp", **kw):
    """A square root added to the sub-VP std (the code's 1 - e^-B is right)."""
    mean, std = spec.marginal(x0, t, kind=kind, **kw)
    return (mean, torch.sqrt(std)) if kind == "subvp" else (mean, std)


def marginal_vp_std_half_exponent(x0, t, *, kind="vp", **kw):
    """sqrt(1 - e^-B) replaced by 1 - e^(-B/2)."""
    mean, std = spec.marginal(x0, t, kind=kind, **kw)
    if kind == "vp":
        _, B = spec.beta_integral(spec._t(t, x0.double()))
        std = (1 - torch.exp(-0.5 * B)).to(x0.dtype)
    return mean, std


def reverse_sign_flip(x, t, score, *, kind="vp", probability_flow=False, **kw):
    return spec.reverse_sde(x, t, -score, kind=kind, probability_flow=probability_flow, **kw)


def reverse_pf_without_half(x, t, score, *, kind="vp", probability_flow=False, **kw):
    drift, g = spec.reverse_sde(x, t, score, kind=kind, probability_flow=False, **kw)
    return (drift, torch.zeros_like(g)) if probability_flow else (drift, g)


def predictor_dt_positive(x, t, score, z, *, kind="vp", predictor="euler_maruyama", N=spec.N_DEFAULT,
                          probability_flow=False, **kw):
    """Euler-Maruyama with dt = +1/N in reverse time."""
    if predictor != "euler_maruyama":
        return spec.predictor_step(x, t, score, z, kind=kind, predictor=predictor, N=N,
                                   probability_flow=probability_flow, **kw)
    drift, g = (v.double() for v in spec.reverse_sde(x, t, score, kind=kind, probability_flow=probability_flow, **kw))
    x_mean = x.double() + drift / N
    return (x_mean + g * math.sqrt(1 / N) * z.double()).to(x.dtype), x_mean.to(x.dtype)


def predictor_ancestral_without_sqrt(x, t, score, z, *, kind="vp", predictor="euler_maruyama", N=spec.N_DEFAULT,
                                     probability_flow=False, **kw):
    """Ancestral VP divides by 1 - beta instead of sqrt(1 - beta)."""
    new, mean = spec.predictor_step(x, t, score, z, kind=kind, predictor=predictor, N=N,
                                    probability_flow=probability_flow, **kw)
    if predictor == "ancestral" and kind == "vp":
        beta = spec.discrete_betas(N)[spec.discrete_index(spec._t(t, x.double()), N)]
        mean = (mean.double() / torch.sqrt(1 - beta)).to(x.dtype)
        new = (mean.double() + torch.sqrt(beta) * z.double()).to(x.dtype)
    return new, mean


def predictor_accepts_any(x, t, score, z, *, kind="vp", predictor="euler_maruyama", N=spec.N_DEFAULT, **kw):
    """No validation: an unknown predictor means Euler-Maruyama; shapes broadcast."""
    drift, g = (v.double() for v in spec.sde(x, t, kind=kind))
    x_mean = x.double() - (drift - g**2 * score.double()) / N
    return (x_mean + g * math.sqrt(1 / N) * z.double()).to(x.dtype), x_mean.to(x.dtype)


def discretize_unscaled_betas(x, t, *, kind="vp", N=spec.N_DEFAULT, **kw):
    """DDPM betas linspace(0.1, 20, N) used without dividing by N (clamped below 1 to stay a probability)."""
    if kind != "vp":
        return spec.discretize(x, t, kind=kind, N=N, **kw)
    X = x.double()
    i = spec.discrete_index(spec._t(t, X), N)
    beta = (spec.discrete_betas(N) * N).clamp(max=0.999)[i]
    return ((torch.sqrt(1 - beta) - 1) * X).to(x.dtype), torch.sqrt(beta).to(x.dtype)


def discretize_round_index(x, t, *, kind="vp", N=spec.N_DEFAULT, **kw):
    """Index round(t (N - 1)) instead of floor."""
    if kind != "vp":
        return spec.discretize(x, t, kind=kind, N=N, **kw)
    X = x.double()
    i = torch.round(spec._t(t, X) * (N - 1)).long()
    beta = spec.discrete_betas(N)[i]
    return ((torch.sqrt(1 - beta) - 1) * X).to(x.dtype), torch.sqrt(beta).to(x.dtype)


def langevin_per_sample_norms(x, score, z, *, snr=0.16, alpha=1.0, step_size=None):
    if step_size is not None:
        return spec.langevin_step(x, score, z, step_size=step_size)
    X, S, Z = x.double(), score.double(), z.double()
    ratio = Z.reshape(X.shape[0], -1).norm(dim=1) / S.reshape(X.shape[0], -1).norm(dim=1)
    eps = (2 * alpha * (snr * ratio) ** 2).reshape(-1, *([1] * (X.dim() - 1)))
    x_mean = X + eps * S
    return (x_mean + torch.sqrt(2 * eps) * Z).to(x.dtype), x_mean.to(x.dtype)


def langevin_without_alpha(x, score, z, *, snr=0.16, alpha=1.0, step_size=None):
    return spec.langevin_step(x, score, z, snr=snr, alpha=1.0, step_size=step_size)


def langevin_step_not_doubled(x, score, z, *, snr=0.16, alpha=1.0, step_size=None):
    """Noise sqrt(eps) z instead of sqrt(2 eps) z: the chain then targets half the variance."""
    X, S, Z = x.double(), score.double(), z.double()
    if step_size is None:
        return spec.langevin_step(x, score, z, snr=snr, alpha=alpha)
    x_mean = X + step_size * S
    return (x_mean + math.sqrt(step_size) * Z).to(x.dtype), x_mean.to(x.dtype)


def pc_probability_flow_full_score(score_fn, x_T, noise, **kw):
    """The probability flow run with the reverse SDE's full g^2 score and no noise (the 1/2 forgotten)."""
    if not kw.get("probability_flow"):
        return spec.pc_sampler(score_fn, x_T, noise, **kw)
    return spec.pc_sampler(lambda x, t: 2 * score_fn(x, t), x_T, noise, **kw)  # (g^2 / 2) (2 s) = g^2 s


def pc_without_final_denoise(score_fn, x_T, noise, **kw):
    return spec.pc_sampler(score_fn, x_T, noise, **{**kw, "denoise": False})


def pc_predictor_before_corrector(score_fn, x_T, noise, *, kind="vp", N=spec.N_DEFAULT, predictor="euler_maruyama",
                                  corrector_steps=0, snr=0.16, eps=spec.SAMPLING_EPS, probability_flow=False,
                                  denoise=True, **kw):
    x = x_T.double()
    x_mean = x
    for i, t in enumerate(torch.linspace(1.0, eps, N, dtype=F64).tolist()):
        if predictor != "none":
            x, x_mean = spec.predictor_step(x, t, score_fn(x.to(x_T.dtype), t).double(), noise[i, -1].double(),
                                            kind=kind, predictor=predictor, N=N, probability_flow=probability_flow)
        for j in range(corrector_steps):
            x, x_mean = spec.langevin_step(x, score_fn(x.to(x_T.dtype), t).double(), noise[i, j].double(), snr=snr,
                                           alpha=spec.langevin_alpha(t, kind, N))
    return (x_mean if denoise else x).to(x_T.dtype)


def _m(op, name, fn, targets, notes):
    # float64 only: the bugs are in the formulas, not in rounding, and one dtype keeps the kill matrix quick
    return mutant(f"score_sde.{op}", f"score_sde.{name}", f"{_M}:{fn.__name__}", targets=targets, notes=notes,
                  dtypes=("float64",))


MUTANTS = [
    _m("sde", "subvp_wrong_B", sde_subvp_wrong_B, ("score_sde.kernels_match_euler_maruyama", "score_sde.moment_odes"),
       "B(t) with beta_1 t^2 / 2 in the sub-VP diffusion"),
    _m("sde", "accepts_any_kind", sde_accepts_any_kind, ("score_sde.contract",), "no argument checks"),
    _m("marginal", "wrong_B", marginal_wrong_B, ("score_sde.known_answers", "score_sde.moment_odes"),
       "B(t) with beta_1 t^2 / 2"),
    _m("marginal", "subvp_sqrt", marginal_subvp_sqrt, ("score_sde.subvp_below_vp", "score_sde.known_answers"),
       "sqrt added to the sub-VP std"),
    _m("marginal", "vp_std_half_exponent", marginal_vp_std_half_exponent,
       ("score_sde.known_answers", "score_sde.moment_odes"), "1 - e^(-B/2) for the VP std"),
    _m("reverse_sde", "sign_flip", reverse_sign_flip, ("score_sde.reverse_sde",), "+ g^2 score in the reverse drift"),
    _m("reverse_sde", "pf_without_half", reverse_pf_without_half, ("score_sde.reverse_sde",),
       "probability flow without the 1/2"),
    _m("predictor_step", "dt_positive", predictor_dt_positive, ("score_sde.reverse_sde",), "dt = +1/N in reverse"),
    _m("predictor_step", "ancestral_without_sqrt", predictor_ancestral_without_sqrt, ("score_sde.ddpm_is_vp",),
       "ancestral VP divides by 1 - beta"),
    _m("predictor_step", "accepts_any", predictor_accepts_any, ("score_sde.contract",), "no argument checks"),
    _m("discretize", "unscaled_betas", discretize_unscaled_betas, ("score_sde.ddpm_is_vp", "score_sde.known_answers"),
       "beta 0.1..20 used unscaled by N"),
    _m("discretize", "round_index", discretize_round_index, ("score_sde.ddpm_is_vp",), "round(t (N-1)) index"),
    _m("langevin_step", "per_sample_norms", langevin_per_sample_norms, ("score_sde.langevin",),
       "per-sample step sizes"),
    _m("langevin_step", "without_alpha", langevin_without_alpha, ("score_sde.langevin",), "alpha_i ignored"),
    _m("langevin_step", "noise_not_doubled", langevin_step_not_doubled, ("score_sde.langevin",),
       "sqrt(eps) z instead of sqrt(2 eps) z"),
    _m("pc_sampler", "probability_flow_full_score", pc_probability_flow_full_score,
       ("score_sde.samplers_reach_data",), "probability flow without the 1/2 on g^2 score"),
    _m("pc_sampler", "without_final_denoise", pc_without_final_denoise, ("score_sde.pc_sampler_within_budget",),
       "returns x instead of x_mean"),
    _m("pc_sampler", "predictor_first", pc_predictor_before_corrector, ("score_sde.pc_sampler_within_budget",),
       "predictor before the corrector"),
]
