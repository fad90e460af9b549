"""Score-based generative modelling through stochastic differential equations.

Paper: Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations" (arXiv:2011.13456), with its code yang-song/score_sde_pytorch (sde_lib.py, sampling.py,
losses.py). Post: the seed's "diffusion models from SDEs". Equations and conventions: catalogue/score_sde.md.

A forward SDE dx = f(x, t) dt + g(t) dw on t in [0, 1] turns data into a simple prior; the reverse-time SDE
dx = [f - g^2 grad log p_t] dt + g dw_bar and the probability-flow ODE dx = [f - g^2 grad log p_t / 2] dt share its
marginals. VE (SMLD), VP (DDPM) and sub-VP are the three SDEs of §3.4. Everything is computed in float64 and
returned in the input's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from eqspec.contracts import ArgumentError
from eqspec.outputs import Output
from eqspec.registry import claim, operation, spec

from .edm import SIGMA_DATA  # the data scale of the Gaussian oracles, as EDM sets it
from .validators import as64, check_choice, check_count, check_real, check_shape, check_tensor

DOC = "score_sde"
F64 = torch.float64

KINDS = ("ve", "vp", "subvp")
PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral", "none")
BETA_MIN, BETA_MAX = 0.1, 20.0
SIGMA_MIN, SIGMA_MAX = 0.01, 50.0
N_DEFAULT = 1000
SAMPLING_EPS = 1e-3


def _x(name: str, x: object) -> torch.Tensor:
    return check_tensor(name, x).to(F64)


def _t(t, X) -> torch.Tensor:
    """t as float64, per sample: a number, or a (B,) tensor viewed as (B, 1, ..., 1) against X."""
    T = as64("t", t, None, nonnegative=True).to(X.device)
    if bool((T > 1).any()):
        raise ArgumentError("t", "t must lie in [0, 1] (T = 1)")
    if T.dim() == 1 and X.dim() >= 1 and T.shape[0] == X.shape[0]:
        T = T.reshape(-1, *([1] * (X.dim() - 1)))
    try:
        torch.broadcast_shapes(T.shape, X.shape)
    except RuntimeError:
        raise ArgumentError("t", f"t of shape {tuple(T.shape)} must be a number or have shape (B,) for x of shape "
                            f"{tuple(X.shape)}") from None
    return T


# ---------------------------------------------------------------------------------------------------
# B.2: the three SDEs and their perturbation kernels
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\beta(t)=\beta_0+t(\beta_1-\beta_0),\quad B(t)=\int_0^t\beta=\beta_0t+\tfrac12(\beta_1-\beta_0)t^2",
      source="Song et al. 2021 eq. 11 and App. B eq. 29")
def beta_integral(t, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX):
    return beta_min + t * (beta_max - beta_min), beta_min * t + 0.5 * (beta_max - beta_min) * t**2


@spec(DOC, latex=r"\sigma(t)=\sigma_{min}(\sigma_{max}/\sigma_{min})^t", source="Song et al. 2021 eq. 9 (SMLD/VE)")
def ve_sigma(t, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX):
    return sigma_min * (sigma_max / sigma_min) ** t


@operation(
    DOC,
    latex=r"\text{VE: }f=0,\ g=\sigma(t)\sqrt{2\ln\tfrac{\sigma_{max}}{\sigma_{min}}};\ \text{VP: "
          r"}f=-\tfrac12\beta(t)x,\ "
          r"g=\sqrt{\beta(t)};\ \text{sub-VP: }f=-\tfrac12\beta(t)x,\ g=\sqrt{\beta(t)(1-e^{-2B(t)})}",
    source="Song et al. 2021 §3.4, eq. 9, 11, 12; sde_lib.py VESDE/VPSDE/subVPSDE.sde",
    returns="(drift, diffusion)",
    summary="The forward SDE dx = f(x, t) dt + g(t) dw of kind 've' (sigma_min, sigma_max), 'vp' or 'subvp' (beta_min, "
            "beta_max): drift in x's shape, diffusion g(t) in t's shape viewed against x (t a number or (B,)).",
    dtypes=("float64", "float32"),
    outputs=(Output("drift", shape="x.shape", dtype="x", device="x"), Output("diffusion", dtype="x", device="x")),
)
def sde(x: torch.Tensor, t, *, kind: str = "vp", beta_min: float = BETA_MIN, beta_max: float = BETA_MAX,
        sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX):
    check_choice("kind", kind, KINDS)
    X = _x("x", x)
    T = _t(t, X)
    if kind == "ve":
        drift = torch.zeros_like(X)
        diffusion = ve_sigma(T, sigma_min, sigma_max) * math.sqrt(2 * math.log(sigma_max / sigma_min))
    else:
        beta, B = beta_integral(T, beta_min, beta_max)
        drift = -0.5 * beta * X
        diffusion = torch.sqrt(beta) if kind == "vp" else torch.sqrt(beta * (1 - torch.exp(-2 * B)))
    return drift.to(x.dtype), diffusion.to(x.dtype)


@operation(
    DOC,
    latex=r"\text{VE: }\mathcal N\big(x_0,[\sigma^2(t)-\sigma^2(0)]I\big);\ \text{VP: }\mathcal N\big(e^{-B/2}x_0,"
          r"(1-e^{-B})I\big);"
          r"\ \text{sub-VP: }\mathcal N\big(e^{-B/2}x_0,(1-e^{-B})^2I\big)",
    source="Song et al. 2021 App. B eq. 29; sde_lib.py marginal_prob",
    returns="(mean, std)",
    summary="The perturbation kernel p_0t(x_t | x_0) = N(mean, std^2 I) of kind 've', 'vp' or 'subvp'.",
    convention="VE subtracts sigma(0)^2 (the paper's exact kernel); the reference code uses std = sigma(t), a "
               "small-sigma_min approximation.",
    dtypes=("float64", "float32"),
    outputs=(
        Output("mean", shape="x0.shape", dtype="x0", device="x0"),
        Output("std", dtype="x0", device="x0", broadcasts_to="x0.shape"),
    ),
)
def marginal(x0: torch.Tensor, t, *, kind: str = "vp", beta_min: float = BETA_MIN, beta_max: float = BETA_MAX,
             sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX):
    check_choice("kind", kind, KINDS)
    X = _x("x0", x0)
    T = _t(t, X)
    if kind == "ve":
        mean = X.clone()  # a new tensor, never the caller's x0 itself
        std = torch.sqrt(ve_sigma(T, sigma_min, sigma_max) ** 2 - sigma_min**2)
    else:
        _, B = beta_integral(T, beta_min, beta_max)
        mean = torch.exp(-0.5 * B) * X
        std = torch.sqrt(1 - torch.exp(-B)) if kind == "vp" else 1 - torch.exp(-B)
    return mean.to(x0.dtype), std.to(x0.dtype)


@spec(DOC, latex=r"\text{VE: }\mathcal N(0,\sigma_{max}^2I);\ \text{VP, sub-VP: }\mathcal N(0,I)",
      source="sde_lib.py prior_sampling")
def prior_std(kind: str = "vp", sigma_max: float = SIGMA_MAX) -> float:
    return sigma_max if kind == "ve" else 1.0


# ---------------------------------------------------------------------------------------------------
# B.1: the reverse SDE and the probability-flow ODE
# ---------------------------------------------------------------------------------------------------

@operation(
    DOC,
    latex=r"dx=\big[f-g^2\nabla_x\log p_t(x)\big]dt+g\,d\bar w;\quad "
          r"\text{probability flow: }dx=\big[f-\tfrac12g^2\nabla_x\log p_t(x)\big]dt",
    source="Song et al. 2021 eq. 6 and 13; sde_lib.py SDE.reverse",
    returns="(drift, diffusion)",
    summary="The reverse-time SDE's drift and diffusion at (x, t) given the score at (x, t) (x's shape); with "
            "probability_flow the ODE's drift and a zero diffusion.",
    dtypes=("float64", "float32"),
    outputs=(Output("drift", shape="x.shape", dtype="x", device="x"), Output("diffusion", dtype="x", device="x")),
)
def reverse_sde(x: torch.Tensor, t, score: torch.Tensor, *, kind: str = "vp", probability_flow: bool = False,
                **sde_params):
    X, Sc = _x("x", x), _x("score", score)
    if Sc.shape != X.shape:
        raise ArgumentError("score", f"score must have x's shape {tuple(X.shape)}, got {tuple(Sc.shape)}")
    f, g = (v.to(F64) for v in sde(X, t, kind=kind, **sde_params))
    drift = f - g**2 * Sc * (0.5 if probability_flow else 1.0)
    diffusion = torch.zeros_like(g) if probability_flow else g
    return drift.to(x.dtype), diffusion.to(x.dtype)


# ---------------------------------------------------------------------------------------------------
# B.3: discretisations (DDPM <-> VP, SMLD <-> VE) and the predictors
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\beta_i=\mathrm{linspace}(\beta_0/N,\ \beta_1/N,\ N)_i,\quad \bar\alpha_i=\prod_{j\le i}(1-\beta_j)",
      source="Song et al. 2021 App. B (DDPM <-> VP); sde_lib.py VPSDE.__init__")
def discrete_betas(N: int, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> torch.Tensor:
    return torch.linspace(beta_min / N, beta_max / N, N, dtype=F64)


@spec(DOC, latex=r"\sigma_i=\exp\big(\mathrm{linspace}(\ln\sigma_{min},\ln\sigma_{max},N)_i\big),\ \sigma_{-1}:=0",
      source="sde_lib.py VESDE.__init__ (discrete_sigmas)")
def discrete_sigmas(N: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), N, dtype=F64))


@spec(DOC, latex=r"i=\lfloor t(N-1)/T\rfloor", source="sde_lib.py discretize ((t * (N - 1) / T).long())")
def discrete_index(T: torch.Tensor, N: int) -> torch.Tensor:
    return torch.floor(T * (N - 1)).long()


@operation(
    DOC,
    latex=r"\text{VP: }f_i=(\sqrt{1-\beta_i}-1)x,\ G_i=\sqrt{\beta_i};\ \text{VE: }f_i=0,"
          r"\ G_i=\sqrt{\sigma_i^2-\sigma_{i-1}^2};"
          r"\ \text{else: }f_i=f\,\Delta t,\ G_i=g\sqrt{\Delta t}",
    source="Song et al. 2021 App. E; sde_lib.py VPSDE/VESDE.discretize and SDE.discretize",
    returns="(f, G)",
    summary="The discrete forward step x_{i+1} = x_i + f_i + G_i z of kind 'vp' (DDPM), 've' (SMLD) or 'subvp' "
            "(Euler-Maruyama, dt = 1/N) at time t with N levels; index i = floor(t (N - 1)).",
    dtypes=("float64", "float32"),
    outputs=(Output("f", shape="x.shape", dtype="x", device="x"), Output("G", dtype="x", device="x")),
)
def discretize(x: torch.Tensor, t, *, kind: str = "vp", N: int = N_DEFAULT, beta_min: float = BETA_MIN,
               beta_max: float = BETA_MAX, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX):
    check_choice("kind", kind, KINDS)
    check_count("N", N, 2)
    X = _x("x", x)
    T = _t(t, X)
    i = discrete_index(T, N)
    if kind == "vp":
        beta = discrete_betas(N, beta_min, beta_max).to(X.device)[i]
        f, G = (torch.sqrt(1 - beta) - 1) * X, torch.sqrt(beta)
    elif kind == "ve":
        sig = discrete_sigmas(N, sigma_min, sigma_max).to(X.device)
        prev = torch.where(i == 0, torch.zeros_like(sig[i]), sig[(i - 1).clamp(min=0)])
        f, G = torch.zeros_like(X), torch.sqrt(sig[i] ** 2 - prev**2)
    else:
        drift, g = (v.to(F64) for v in sde(X, t, kind=kind, beta_min=beta_min, beta_max=beta_max))
        f, G = drift / N, g * math.sqrt(1 / N)
    return f.to(x.dtype), G.to(x.dtype)


def check_step_fields(x, score, z, *, batched: bool = False) -> None:
    """x, score and z: floating tensors of one shape (with batched, (B, ...)). x is the reference: a score or a z
    of another shape is named itself, not blamed on the other."""
    for name, v in (("x", x), ("score", score), ("z", z)):
        check_tensor(name, v)
    if batched and x.dim() < 1:
        raise ArgumentError("x", f"x must have a batch axis (B, ...), got shape {tuple(x.shape)}")
    for name, v in (("score", score), ("z", z)):
        check_shape(name, v, x.shape, "x's shape")


def check_predictor_args(x, score, z, kind, predictor, N, probability_flow) -> None:
    check_choice("predictor", predictor, PREDICTORS[:3])
    check_choice("kind", kind, KINDS)  # every predictor reads kind (ancestral too: VP or VE)
    check_count("N", N, 2)
    check_step_fields(x, score, z)
    # the ancestral step exists for VP and VE, without the probability flow: the pair is at fault, not one of them
    if predictor == "ancestral" and kind == "subvp":
        raise ArgumentError(("predictor", "kind"), "predictor 'ancestral' exists for kind 'vp' and 've' only")
    if predictor == "ancestral" and probability_flow:
        raise ArgumentError(("predictor", "probability_flow"),
                            "predictor 'ancestral' has no probability-flow (deterministic) version")


@operation(
    DOC,
    latex=r"\text{EM: }\bar x=x-[f-g^2s_\theta]\tfrac1N,\ x=\bar x+g\sqrt{1/N}\,z;\ "
          r"\text{RD: }\bar x=x-f_i+G_i^2s_\theta,\ x=\bar x+G_iz;\ "
          r"\text{ancestral VP: }\bar x=\frac{x+\beta_is_\theta}{\sqrt{1-\beta_i}},\ x=\bar x+\sqrt{\beta_i}z",
    source="Song et al. 2021 App. E and G (eq. 46-47); sampling.py EulerMaruyamaPredictor, ReverseDiffusionPredictor, "
           "AncestralSamplingPredictor",
    returns="(x, x_mean)",
    summary="One reverse-time predictor step at time t given the score at (x, t) and standard-normal z (x's shape): "
            "predictor 'euler_maruyama' (dt = -1/N), 'reverse_diffusion' or 'ancestral' (VP, VE); with "
            "probability_flow the deterministic ODE version (EM, reverse diffusion). Returns the new x and its mean.",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    outputs=(
        Output("x", shape="x.shape", dtype="x", device="x"),
        Output("x_mean", shape="x.shape", dtype="x", device="x"),
    ),
)
def predictor_step(x: torch.Tensor, t, score: torch.Tensor, z: torch.Tensor, *, kind: str = "vp",
                   predictor: str = "euler_maruyama", N: int = N_DEFAULT, probability_flow: bool = False,
                   **sde_params):
    check_predictor_args(x, score, z, kind, predictor, N, probability_flow)
    X, Sc, Z = (v.to(F64) for v in (x, score, z))
    if predictor == "euler_maruyama":
        dt = -1.0 / N
        drift, diffusion = (v.to(F64) for v in reverse_sde(X, t, Sc, kind=kind, probability_flow=probability_flow,
                                                           **sde_params))
        x_mean = X + drift * dt
        x_new = x_mean + diffusion * math.sqrt(-dt) * Z
    elif predictor == "reverse_diffusion":
        f, G = (v.to(F64) for v in discretize(X, t, kind=kind, N=N, **sde_params))
        rev_f = f - G**2 * Sc * (0.5 if probability_flow else 1.0)
        x_mean = X - rev_f
        x_new = x_mean if probability_flow else x_mean + G * Z
    else:
        i = discrete_index(_t(t, X), N)
        if kind == "vp":
            beta = discrete_betas(N, sde_params.get("beta_min", BETA_MIN), sde_params.get("beta_max", BETA_MAX))
            beta = beta.to(X.device)[i]
            x_mean = (X + beta * Sc) / torch.sqrt(1 - beta)
            x_new = x_mean + torch.sqrt(beta) * Z
        else:
            sig = discrete_sigmas(N, sde_params.get("sigma_min", SIGMA_MIN), sde_params.get("sigma_max", SIGMA_MAX))
            sig = sig.to(X.device)
            s_i = sig[i]
            s_prev = torch.where(i == 0, torch.zeros_like(s_i), sig[(i - 1).clamp(min=0)])
            x_mean = X + (s_i**2 - s_prev**2) * Sc
            x_new = x_mean + torch.sqrt(s_prev**2 * (s_i**2 - s_prev**2) / s_i**2) * Z
    return x_new.to(x.dtype), x_mean.to(x.dtype)


@spec(DOC, latex=r"\alpha_i=1-\beta_i\ (\text{VP, sub-VP}),\quad \alpha_i=1\ (\text{VE})",
      source="sampling.py LangevinCorrector (alpha = sde.alphas[timestep])")
def langevin_alpha(t: float, kind: str = "vp", N: int = N_DEFAULT, beta_min: float = BETA_MIN,
                   beta_max: float = BETA_MAX) -> float:
    if kind == "ve":
        return 1.0
    i = int(math.floor(t * (N - 1)))
    return float(1 - discrete_betas(N, beta_min, beta_max)[i])


@operation(
    DOC,
    latex=r"\epsilon=2\alpha_i\Big(r\frac{\overline{\|z\|}}{\overline{\|s_\theta\|}}\Big)^2,\ "
          r"\bar x=x+\epsilon s_\theta,\ x=\bar x+\sqrt{2\epsilon}\,z",
    source="Song et al. 2021 App. G Algorithm 4-5 (corrector); sampling.py LangevinCorrector",
    returns="(x, x_mean)",
    summary="One Langevin corrector step given the score at x and standard-normal z (x's shape, (B, ...)). The step "
            "epsilon is step_size if given, else 2 alpha (snr mean_b ||z_b|| / mean_b ||score_b||)^2 with per-sample "
            "norms averaged over the batch (one step for the whole batch).",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    outputs=(
        Output("x", shape="x.shape", dtype="x", device="x"),
        Output("x_mean", shape="x.shape", dtype="x", device="x"),
    ),
)
def langevin_step(x: torch.Tensor, score: torch.Tensor, z: torch.Tensor, *, snr: float = 0.16, alpha: float = 1.0,
                  step_size: float | None = None):
    check_step_fields(x, score, z, batched=True)  # (B, ...): the step averages per-sample norms
    X, Sc, Z = (v.to(F64) for v in (x, score, z))
    if step_size is None:
        snr, alpha = check_real("snr", snr, low=0.0), check_real("alpha", alpha, low=0.0)
        grad_norm = torch.linalg.vector_norm(Sc.reshape(X.shape[0], -1), dim=-1).mean()
        noise_norm = torch.linalg.vector_norm(Z.reshape(X.shape[0], -1), dim=-1).mean()
        eps = 2 * alpha * (snr * noise_norm / grad_norm) ** 2
    else:
        eps = torch.tensor(check_real("step_size", step_size, low=0.0), dtype=F64)
    x_mean = X + eps * Sc
    return (x_mean + torch.sqrt(2 * eps) * Z).to(x.dtype), x_mean.to(x.dtype)


def check_pc_sampler_args(score_fn, x_T, noise, kind, predictor, N, corrector_steps, eps) -> float:
    """Validate the sampler's arguments; returns eps as a float."""
    if not callable(score_fn):
        raise ArgumentError("score_fn", f"score_fn must be callable score_fn(x, t), got {type(score_fn).__name__}")
    check_choice("kind", kind, KINDS)
    check_choice("predictor", predictor, PREDICTORS)
    check_count("N", N, 2)
    check_count("corrector_steps", corrector_steps, 0)
    eps = check_real("eps", eps, low=0.0, high=1.0)
    check_tensor("x_T", x_T)
    check_tensor("noise", noise)
    if tuple(noise.shape) != (N, corrector_steps + 1, *x_T.shape):
        raise ArgumentError("noise", f"noise must have shape (N, corrector_steps + 1, *x_T.shape) = "
                            f"{(N, corrector_steps + 1, *x_T.shape)}, got {tuple(noise.shape)}")
    return eps


@operation(
    DOC,
    latex=r"t_i=\mathrm{linspace}(1,\epsilon,N);\ \text{for }i:\ x\leftarrow\mathrm{Langevin}^{n}(x);\ "
          r"(x,\bar x)\leftarrow\mathrm{predictor}(x,t_i);\ \text{return }\bar x",
    source="Song et al. 2021 Algorithm 1 (PC sampling) and App. G; sampling.py get_pc_sampler",
    returns="x_0",
    summary="Predictor-corrector sampling from x_T (drawn from the prior by the caller) over N times linspace(1, eps, "
            "N): corrector_steps Langevin steps (snr) then one predictor step ('euler_maruyama', 'reverse_diffusion', "
            "'ancestral' or 'none') at each time. score_fn(x, t) gets a float t. noise (N, corrector_steps + 1, "
            "*x_T.shape) standard normal: noise[i, j] for corrector step j, noise[i, -1] for the predictor. Returns "
            "the last mean (denoise=True) or the last sample.",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    outputs=(Output("x_0", shape="x_T.shape", dtype="x_T", device="x_T"),),
)
def pc_sampler(score_fn: Callable, x_T: torch.Tensor, noise: torch.Tensor, *, kind: str = "vp", N: int = N_DEFAULT,
               predictor: str = "euler_maruyama", corrector_steps: int = 0, snr: float = 0.16,
               eps: float = SAMPLING_EPS, probability_flow: bool = False, denoise: bool = True, **sde_params):
    eps = check_pc_sampler_args(score_fn, x_T, noise, kind, predictor, N, corrector_steps, eps)
    times = torch.linspace(1.0, eps, N, dtype=F64).tolist()
    x = x_T.to(F64, copy=True)  # with no step at all (predictor "none", no corrector) a copy of x_T, never x_T
    x_mean = x
    for i, t in enumerate(times):
        for j in range(corrector_steps):
            score = score_fn(x.to(x_T.dtype), t).to(F64)
            alpha = langevin_alpha(t, kind, N, **{k: v for k, v in sde_params.items() if k.startswith("beta")})
            x, x_mean = langevin_step(x, score, noise[i, j].to(F64), snr=snr, alpha=alpha)
        if predictor != "none":
            score = score_fn(x.to(x_T.dtype), t).to(F64)
            x, x_mean = predictor_step(x, t, score, noise[i, -1].to(F64), kind=kind, predictor=predictor, N=N,
                                       probability_flow=probability_flow, **sde_params)
    return (x_mean if denoise else x).to(x_T.dtype)


# ---------------------------------------------------------------------------------------------------
# The exact oracle: Gaussian data N(mu, sigma_d^2 I), whose score at every t is closed-form
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\nabla_x\log p_t(x)=-\frac{x-m(t)\mu}{m(t)^2\sigma_d^2+\mathrm{std}(t)^2}",
      source="catalogue/score_sde.md property 3 (Gaussian data through a linear SDE stays Gaussian)")
def gaussian_score(x: torch.Tensor, t: float, *, kind: str = "vp", mu: float = 0.0, sigma_data: float = SIGMA_DATA,
                   **sde_params) -> torch.Tensor:
    one = torch.ones((), dtype=x.dtype, device=x.device)
    m, std = marginal(one, t, kind=kind, **sde_params)
    return -(x - m * mu) / (m**2 * sigma_data**2 + std**2)


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue/score_sde.md properties 1-8, known answers, bug list, contracts)
# ---------------------------------------------------------------------------------------------------

def _op(name: str) -> str:
    return f"{DOC}.{name}"


claim(DOC, "kernels_match_euler_maruyama", kind="statistical", operations=(_op("sde"), _op("marginal")),
      statement="Forward Euler-Maruyama paths of every SDE from a scalar x_0 end with mean and variance equal to the "
                "exact moments of the EM recursion (a linear Gaussian recursion: the endpoint is exactly Gaussian, so "
                "a 5.33-sigma z bound on the mean and a Laurent-Massart chi-square bound on the variance give false "
                "alarm <= 1e-6 together), and those moments converge to the closed-form kernel at first order (the "
                "gap halves, 1.6-2.4x, per doubling of N; VE with sigma(0)^2 subtracted).",
      source="Song et al. 2021 App. B eq. 29; catalogue property 1")
claim(DOC, "moment_odes", kind="identity", operations=(_op("marginal"), _op("sde")),
      statement="The kernels solve the moment ODEs dm/dt = -beta m / 2 and dv/dt = -beta v + g^2 (VP, sub-VP) and "
                "dv/dt = g^2 (VE), checked by central differences (relative 1e-6).",
      source="Song et al. 2021 App. B eq. 5.50-5.51 (Särkkä & Solin); catalogue property 2")
claim(DOC, "known_answers", kind="known-answer", operations=(_op("marginal"), _op("sde"), _op("discretize")),
      statement="VP (0.1, 20): mean coefficient e^-5.025 = 0.0065715865 and std 0.99997841 at t = 1, 0.28118288 and "
                "0.95965420 at t = 0.5, std 0.010485416 at 1e-3; sub-VP std 0.92093619 at 0.5; VE (0.01, 50): "
                "sigma(0.5) = 0.70710678, g/sigma = 4.1272735, g(1) = 206.36367; DDPM alpha_bar_0 = 0.9999, "
                "alpha_bar_499 = 0.078587243, alpha_bar_999 = 4.0358298e-5 (8 digits).",
      source="catalogue/score_sde.md known-answer numbers")
claim(DOC, "subvp_below_vp", kind="exact", operations=(_op("marginal"),),
      statement="The sub-VP variance (1 - e^-B)^2 is at most the VP variance 1 - e^-B for every t in (0, 1], with the "
                "same mean; the sub-VP std has no square root.",
      source="Song et al. 2021 §3.4; catalogue property 8")
claim(DOC, "reverse_sde", kind="identity", operations=(_op("reverse_sde"), _op("predictor_step")),
      statement="The reverse drift is f - g^2 score with diffusion g; the probability flow's is f - g^2 score / 2 "
                "with zero diffusion, so its steps do not depend on the noise; Euler-Maruyama steps backwards "
                "(dt = -1/N) (float64 1e-12).",
      source="Song et al. 2021 eq. 6, 13; sde_lib.py SDE.reverse; catalogue property 6")
claim(DOC, "ddpm_is_vp", kind="identity", operations=(_op("discretize"), _op("predictor_step")),
      statement="DDPM's discrete betas are linspace(beta_0/N, beta_1/N, N) with N beta_i = beta((i-1)/(N-1)); "
                "|ln prod(1 - beta_i) + B(1)| <= sum beta_i^2 / 2 + 1e-3 (N >= 1000); the reverse-diffusion and "
                "ancestral VP "
                "updates differ by O(beta^2): |(2 - sqrt(1-beta)) - 1/sqrt(1-beta)| <= beta^2 and "
                "|beta - beta/sqrt(1-beta)| <= beta^2.",
      source="Song et al. 2021 App. B, E; catalogue properties 4-5")
claim(DOC, "samplers_reach_data", kind="statistical", operations=(_op("pc_sampler"),),
      statement="With the exact score of Gaussian data N(0, 0.5^2), the reverse-SDE Euler-Maruyama sampler "
                "(N = 250) and the probability-flow ODE (Euler, N = 250) map N(0, I) to a std within 2% "
                "(discretisation) + a Laurent-Massart chi-square bound of 0.5 (false alarm 1e-6; the outputs are "
                "exactly Gaussian, a linear recursion of Gaussians); PC with a Langevin corrector too (VE).",
      source="Song et al. 2021 §4; catalogue property 3")
claim(DOC, "pc_sampler_within_budget", kind="budget", operations=(_op("pc_sampler"),),
      statement="Any implementation of the PC sampler returns the float64 spec's samples for the same start and noise "
                "within the error budget (2 x the naive same-precision torch sampler's error + floor), for every "
                "predictor, kind and number of corrector steps: corrector before predictor, the last mean returned.",
      source="Song et al. 2021 Algorithm 1 and App. G; sampling.py get_pc_sampler; design.md (error budget)")
claim(DOC, "langevin", kind="statistical", operations=(_op("langevin_step"),),
      statement="The snr step is 2 alpha (r mean||z|| / mean||s||)^2 with batch-averaged norms (exact); Langevin with "
                "the exact score of N(mu, v) and a small fixed step converges to that Gaussian: after 1000 steps at "
                "eps = 5e-3 (v = 0.25) the chains' mean and variance are within a z bound and a chi-square bound "
                "(false alarm 1e-6 together) of the target, up to the stationary bias v / (1 - eps / 2v) (1%).",
      source="Song et al. 2021 App. G; sampling.py LangevinCorrector; catalogue property 7")
claim(DOC, "contract", kind="contract", operations=(_op("sde"), _op("predictor_step"), _op("pc_sampler")),
      statement="Malformed input (unknown kind or predictor, t outside [0, 1], shape mismatch, a noise tensor of the "
                "wrong shape, a score_fn that is not callable) is rejected with an error naming the argument.",
      source="design.md (bad input)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------

from eqspec.domain import FLAG, OMIT, Built, Choice, Domain, Int, Optional, Real  # noqa: E402
from eqspec.registry import REGISTRY  # noqa: E402

SDE_DEFAULTS = dict(beta_min=BETA_MIN, beta_max=BETA_MAX, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)


def _given(case: dict, name: str, default):
    """A drawn argument, or the reference's default where the domain omitted it."""
    value = case.get(name, OMIT)
    return default if value is OMIT else value


def _params(case: dict) -> dict:
    """The SDE parameters in force (drawn or default)."""
    return {k: _given(case, k, v) for k, v in SDE_DEFAULTS.items()}


def _shape(case: dict) -> tuple[int, ...]:
    """A batch of B states: (B,), (B, D) or (B, 2, D) (images in miniature), or one scalar state ()."""
    B, D = case["B"], case["D"]
    return ((), (B,), (B, D), (B, 2, D))[case["rank"]]


def _field(scale: str | None = None, *, zeros: bool = False) -> Built:
    """Gaussian entries of the state's shape times the drawn size ``scale``; some batches with every sample equal
    (ties), some with exact zeros (``zeros``: not for a score, whose batch norm must not vanish)."""
    def build(gen, case):
        x = torch.randn(_shape(case), generator=gen, dtype=F64) * (case[scale] if scale else 1.0)
        kind = int(torch.randint(0, 4, (), generator=gen))
        if kind == 1 and x.dim():
            x = x[:1].expand_as(x).clone()
        elif kind == 2 and zeros:
            x = torch.where(torch.rand(x.shape, generator=gen) < 0.3, torch.zeros_like(x), x)
        return x
    return Built(build, note=f"normal state x {scale or 1}")


def _times() -> Built:
    """t in [0, 1]: the drawn t0 as a number, a 0-d tensor, or one time per sample (B,) starting with t0, the rest
    spread over [0, 1] with the grid's ends, its second and next-to-last levels (where N is drawn before t) and
    duplicates (a scalar state takes a number)."""
    def build(gen, case):
        form, t0 = case["t_form"], case["t0"]
        if form == "number" or (form == "per sample" and case["rank"] == 0):
            return float(t0)
        if form == "0-d tensor":
            return torch.tensor(t0, dtype=F64)
        B = case["B"]
        t = torch.rand(B, generator=gen, dtype=F64)
        pick = torch.randint(0, 7, (B,), generator=gen)
        t = torch.where(pick == 0, torch.full_like(t, t0), t)
        t = torch.where(pick == 1, torch.ones_like(t), t)
        t = torch.where(pick == 2, torch.full_like(t, SAMPLING_EPS), t)
        N = _given(case, "N", N_DEFAULT) if "N" in case else 0
        if N >= 3:  # on a grid of 3 levels or more: the second level and the next-to-last (both neighbours exist)
            t = torch.where(pick == 3, torch.full_like(t, 1.5 / (N - 1)), t)
            t = torch.where(pick == 4, torch.full_like(t, (N - 1.5) / (N - 1)), t)
        t[0] = t0
        return t
    return Built(build, note="t: a number, a 0-d tensor or (B,)")


# The first edge and option of each is what hypothesis draws first (its simplest example): a generic point, not a
# degenerate one; the boundaries follow.
STATE = dict(B=Int(1, 4, edges=(3, 1)), D=Int(1, 5, edges=(2, 1)), rank=Choice((2, 1, 3, 0)),
             spread=Real(1e-3, 1e3, edges=(1.0,), log=True))
BATCH = dict(STATE, rank=Choice((2, 1, 3)))  # a batch (B, ...): the corrector's norms are per sample
TIME = dict(t0=Real(0.0, 1.0, edges=(0.5, 1.0, 0.0, 1e-5, SAMPLING_EPS)),
            t_form=Choice(("per sample", "number", "0-d tensor")))
# on a grid of N levels (index floor(t (N - 1))): the first level, the middle, the last
GRID_TIME = dict(TIME, t0=Real(0.0, 1.0, edges=(0.5, 1.0, 0.0, SAMPLING_EPS)))
SDE_PARAMS = dict(
    beta_min=Optional(Real(0.0, 5.0, edges=(BETA_MIN, 0.0, 1.0))),
    beta_max=Optional(Real(0.0, 40.0, edges=(BETA_MAX, 0.0, 1.0, 40.0))),
    sigma_min=Optional(Real(1e-4, 1.0, edges=(SIGMA_MIN, 1.0), log=True)),
    sigma_max=Optional(Real(1.0, 1000.0, edges=(SIGMA_MAX, 1.0, 1000.0), log=True)),
)
KIND = Optional(Choice(("ve", "subvp", "vp")))  # omitted: "vp"; hypothesis draws the first options most
STEPS = Optional(Int(2, 2000, edges=(N_DEFAULT, 2, 3, 5)))  # N: the discretisation's levels (cheap: one linspace)


def _discrete_vp_ok(case: dict, N: int, *, inclusive: bool) -> bool:
    """DDPM's discrete betas linspace(beta_min / N, beta_max / N, N) stay below 1 (sqrt(1 - beta) real; the
    ancestral step divides by it), or at most 1 (``inclusive``: the Langevin alpha = 1 - beta_i >= 0)."""
    p = _params(case)
    top = max(p["beta_min"], p["beta_max"]) / N
    return top <= 1.0 if inclusive else top < 1.0


def _discretize_valid(case: dict) -> bool:
    return _given(case, "kind", "vp") != "vp" or _discrete_vp_ok(case, _given(case, "N", N_DEFAULT), inclusive=False)


def _predictor_valid(case: dict) -> bool:
    kind, predictor = _given(case, "kind", "vp"), _given(case, "predictor", "euler_maruyama")
    if predictor == "ancestral" and (kind == "subvp" or _given(case, "probability_flow", False)):
        return False  # the ancestral step exists for VP and VE, without the probability flow
    if kind == "vp" and predictor in ("reverse_diffusion", "ancestral"):
        return _discrete_vp_ok(case, _given(case, "N", N_DEFAULT), inclusive=False)
    return True


def _sampler_valid(case: dict) -> bool:
    if not _predictor_valid(case):
        return False
    if _given(case, "kind", "vp") != "ve" and _given(case, "corrector_steps", 0) > 0:
        return _discrete_vp_ok(case, case["N"], inclusive=True)  # the corrector's alpha_i = 1 - beta_i
    return True


class GaussianDataScore:
    """score_fn(x, t) of a sampler: the exact score of data N(mu, sigma_data^2 I) under the sampled SDE (kind and
    parameters; gaussian_score), times (1 + warp tanh x) where ``warp`` (a trained model's nonlinear error)."""

    def __init__(self, kind: str, params: dict, mu: float, sigma_data: float, warp: float):
        self.kind, self.params, self.mu, self.sigma_data, self.warp = kind, params, mu, sigma_data, warp

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        # gaussian_score's kernel, its variance written without cancellation (expm1): at t = 0 the VE variance
        # sigma(0)^2 - sigma_min^2 is exactly 0, not the square root of a rounded difference
        p = self.params
        if self.kind == "ve":
            m, var = 1.0, p["sigma_min"] ** 2 * math.expm1(2 * t * math.log(p["sigma_max"] / p["sigma_min"]))
        else:
            B = float(beta_integral(t, p["beta_min"], p["beta_max"])[1])
            m, var = math.exp(-0.5 * B), -math.expm1(-B)
            var = var if self.kind == "vp" else var**2
        s = -(x - m * self.mu) / (m**2 * self.sigma_data**2 + var)
        return s * (1 + self.warp * torch.tanh(x)) if self.warp else s

    def __repr__(self) -> str:
        return (f"GaussianDataScore({self.kind!r}, {self.params}, mu={self.mu:g}, sigma_data={self.sigma_data:g}, "
                f"warp={self.warp:g})")


def _score_fn(gen, case) -> GaussianDataScore:
    return GaussianDataScore(_given(case, "kind", "vp"), _params(case), case["mu"], case["sigma_data"], case["warp"])


def _prior_sample(gen, case) -> torch.Tensor:
    """x_T from the prior of the sampled SDE: N(0, sigma_max^2 I) (VE) or N(0, I)."""
    std = prior_std(_given(case, "kind", "vp"), _params(case)["sigma_max"])
    return torch.randn(_shape(case), generator=gen, dtype=F64) * std


def _sampler_noise(gen, case) -> torch.Tensor:
    steps = _given(case, "corrector_steps", 0) + 1
    return torch.randn((case["N"], steps, *_shape(case)), generator=gen, dtype=F64)


REGISTRY.attach_domain(_op("sde"), Domain(
    sizes=dict(**STATE, **TIME),
    args=dict(x=_field("spread", zeros=True), t=_times(), kind=KIND, **SDE_PARAMS),
))
REGISTRY.attach_domain(_op("marginal"), Domain(
    sizes=dict(**STATE, **TIME),
    args=dict(x0=_field("spread", zeros=True), t=_times(), kind=KIND, **SDE_PARAMS),
))
REGISTRY.attach_domain(_op("reverse_sde"), Domain(
    sizes=dict(**STATE, **TIME, score_scale=Real(1e-3, 1e3, edges=(1.0,), log=True)),
    args=dict(x=_field("spread", zeros=True), t=_times(), score=_field("score_scale", zeros=True), kind=KIND,
              probability_flow=Optional(FLAG), **SDE_PARAMS),
))
REGISTRY.attach_domain(_op("discretize"), Domain(
    sizes=dict(**STATE, **GRID_TIME),
    args=dict(N=STEPS, x=_field("spread", zeros=True), t=_times(), kind=KIND, **SDE_PARAMS),
    where=_discretize_valid,
))
REGISTRY.attach_domain(_op("predictor_step"), Domain(
    sizes=dict(**STATE, **GRID_TIME, score_scale=Real(1e-3, 1e3, edges=(1.0,), log=True)),
    args=dict(N=STEPS, x=_field("spread", zeros=True), t=_times(), score=_field("score_scale", zeros=True),
              z=_field(), kind=KIND, predictor=Optional(Choice(("ancestral", "reverse_diffusion", "euler_maruyama"))),
              probability_flow=Optional(FLAG),
              **SDE_PARAMS),
    where=_predictor_valid,
))
REGISTRY.attach_domain(_op("langevin_step"), Domain(
    sizes=dict(**BATCH, score_scale=Real(1e-3, 1e3, edges=(1.0,), log=True)),
    args=dict(x=_field("spread", zeros=True), score=_field("score_scale"), z=_field(zeros=True),
              snr=Optional(Real(0.0, 1.0, edges=(0.16, 0.0, 1.0))), alpha=Optional(Real(0.0, 1.5, edges=(1.0, 0.0))),
              step_size=Optional(Real(1e-8, 10.0, edges=(1e-3, 0.0, 1.0), log=True))),
    large=dict(B=256, D=512),
))
REGISTRY.attach_domain(_op("pc_sampler"), Domain(
    sizes=dict(**BATCH, mu=Real(-2.0, 2.0, edges=(0.5, 0.0)), sigma_data=Real(0.05, 2.0, edges=(SIGMA_DATA,)),
               warp=Real(0.0, 0.5, edges=(0.2, 0.0))),
    # N is not left to its default of 1000 steps: one example would take minutes under the random roundings
    args=dict(kind=KIND, N=Int(2, 24, edges=(21, 2, 5)), corrector_steps=Optional(Int(0, 2, edges=(1, 0))),
              **SDE_PARAMS, score_fn=Built(_score_fn, note="the exact (or warped) score of Gaussian data"),
              x_T=Built(_prior_sample, note="a prior sample"), noise=Built(_sampler_noise, note="standard normal"),
              predictor=Optional(Choice(("ancestral", "reverse_diffusion", "euler_maruyama", "none"))),
              snr=Optional(Real(0.0, 1.0, edges=(0.16, 0.0, 1.0))),
              eps=Optional(Real(0.0, 1.0, edges=(SAMPLING_EPS, 0.0, 1e-5, 1.0))), probability_flow=Optional(FLAG),
              denoise=Optional(FLAG)),
    where=_sampler_valid,
))
