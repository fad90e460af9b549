"""EDM: one design space for flow matching, score matching (VE) and DDPM/DDIM (VP).

Paper: Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"
(arXiv:2206.00364), with its code NVlabs/edm (training/networks.py, training/loss.py, generate.py). Post: the seed's
"unifying diffusion models after EDM". Equations and conventions: catalogue/edm.md (A.1-A.8).

Notation (EDM §2, eq. 1-4): x_t = s(t) (x_0 + sigma(t) eps), so y = x / s is data plus N(0, sigma^2 I) noise
("EDM space"). A denoiser D(y; sigma) estimates E[x_0 | y]; the score is (D - y) / sigma^2. Flow matching
(s = 1 - t, sigma = t / (1 - t)), VE (s = 1) and VP/DDPM (s = 1 / sqrt(1 + sigma^2)) are all this form.

Conventions (design.md): sigma_data = 0.5; time-step schedules return N + 1 values ending in t_N = 0; the last
sampler step (to sigma = 0) is Euler. Everything is computed in float64 and returned in the input's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from eqspec.contracts import ArgumentError
from eqspec.registry import claim, operation, spec

from .validators import as64, check_choice, check_count, check_real, check_tensor

DOC = "edm"
F64 = torch.float64

SIGMA_DATA = 0.5
VP_BETA_D, VP_BETA_MIN, VP_M = 19.9, 0.1, 1000
VP_EPS_S, VP_EPS_T = 1e-3, 1e-5
VE_SIGMA_MIN, VE_SIGMA_MAX = 0.02, 100.0
EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0
P_MEAN, P_STD = -1.2, 1.2
IDDPM_M, IDDPM_C1, IDDPM_C2, IDDPM_J0 = 1000, 0.001, 0.008, 8
KINDS = ("vp", "ve", "iddpm", "edm")  # Table 1's columns
SCHEDULES = ("vp", "ve", "edm", "fm")  # (s, sigma) pairs: iDDPM samples with sigma = t, s = 1 like EDM
PREDICTIONS = ("epsilon", "x0", "v", "flow", "score")
GAMMA_MAX = math.sqrt(2.0) - 1.0


# ---------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------

def _x(name: str, x: object) -> torch.Tensor:
    return check_tensor(name, x).to(F64)


# ---------------------------------------------------------------------------------------------------
# A.1 / A.2: the schedules sigma(t), s(t), their derivatives and inverses
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\sigma(t)=\sqrt{e^{\frac12\beta_d t^2+\beta_{min}t}-1},\ "
                 r"s(t)=1/\sqrt{e^{\frac12\beta_d t^2+\beta_{min}t}}",
      source="EDM Table 1 (VP); NVlabs/edm issue #1 (s = sqrt(e))")
def vp_sigma_s(t: torch.Tensor, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN):
    e = torch.exp(0.5 * beta_d * t**2 + beta_min * t)
    return torch.sqrt(e - 1), 1 / torch.sqrt(e)


@spec(DOC, latex=r"\dot\sigma=\tfrac12(\beta_{min}+\beta_d t)(\sigma+1/\sigma),\quad \dot s=-\sigma\dot\sigma s^3",
      source="EDM Table 1 (VP derivatives)")
def vp_derivatives(t, sigma, s, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN):
    sigma_dot = 0.5 * (beta_min + beta_d * t) * (sigma + 1 / sigma)
    return sigma_dot, -sigma * sigma_dot * s**3


@spec(DOC, latex=r"\sigma^{-1}(\sigma)=\frac{\sqrt{\beta_{min}^2+2\beta_d\ln(1+\sigma^2)}-\beta_{min}}{\beta_d}",
      source="EDM Table 1 (VP inverse)")
def vp_sigma_inv(sigma, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN):
    return (torch.sqrt(beta_min**2 + 2 * beta_d * torch.log1p(sigma**2)) - beta_min) / beta_d


@spec(DOC, latex=r"\text{VE: }\sigma=\sqrt t;\ \text{EDM, iDDPM: }\sigma=t;\ \text{FM: }s=1-t,\ \sigma=\frac{t}{1-t}",
      source="EDM Table 1; catalogue/edm.md A.1 (flow matching)")
def sigma_inv(sigma, kind: str = "edm", beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN):
    """t = sigma^{-1}(sigma) for each schedule."""
    check_choice("kind", kind, SCHEDULES)
    if kind == "vp":
        return vp_sigma_inv(sigma, beta_d, beta_min)
    if kind == "ve":
        return sigma**2
    if kind == "fm":
        return sigma / (1 + sigma)
    return sigma


def check_schedule_result(result, t, *, kind="edm", provides=frozenset(), **_) -> None:
    from eqspec.contracts import expect_tensor, expect_tuple

    for name, v in zip(("sigma", "s", "sigma_dot", "s_dot"), expect_tuple(result, ("sigma", "s", "sigma_dot", "s_dot"),
                                                                        "edm.schedule")):
        expect_tensor(name, v, tuple(t.shape), (t.dtype,), t.device, "edm.schedule")


@operation(
    DOC,
    latex=r"x_t=s(t)\,(x_0+\sigma(t)\,\epsilon):\ (\sigma,s,\dot\sigma,\dot s)(t)",
    source="EDM §2 eq. 4 and Table 1; catalogue/edm.md A.1-A.2",
    returns="(sigma, s, sigma_dot, s_dot)",
    summary="The noise level sigma(t), the scale s(t) and their time derivatives for kind 'vp' (beta_d, beta_min), "
            "'ve' (sigma = sqrt t), 'edm' (sigma = t; also iDDPM's sampler) or 'fm' (s = 1 - t, sigma = t / (1 - t)). "
            "t: tensor; outputs in t's dtype.",
    dtypes=("float64", "float32"),
    check_result=check_schedule_result,
)
def schedule(t: torch.Tensor, *, kind: str = "edm", beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN):
    check_choice("kind", kind, SCHEDULES)
    T = _x("t", t)
    if bool((T < 0).any()) or (kind == "fm" and bool((T >= 1).any())):
        raise ArgumentError("t", f"t must be >= 0{' and < 1 for kind fm' if kind == 'fm' else ''}")
    one, zero = torch.ones_like(T), torch.zeros_like(T)
    if kind == "vp":
        sigma, s = vp_sigma_s(T, beta_d, beta_min)
        sigma_dot, s_dot = vp_derivatives(T, sigma, s, beta_d, beta_min)
    elif kind == "ve":
        sigma, s, sigma_dot, s_dot = torch.sqrt(T), one, 0.5 / torch.sqrt(T), zero
    elif kind == "edm":
        sigma, s, sigma_dot, s_dot = T, one, one, zero
    else:
        sigma, s, sigma_dot, s_dot = T / (1 - T), 1 - T, 1 / (1 - T) ** 2, -one
    return tuple(v.to(t.dtype) for v in (sigma, s, sigma_dot, s_dot))


# ---------------------------------------------------------------------------------------------------
# A.2 / A.4: time steps
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\bar\alpha_j=\sin^2\!\big(\tfrac{\pi}{2}\tfrac{j}{M(C_2+1)}\big),\ u_M=0,\ "
                 r"u_{j-1}=\sqrt{\frac{u_j^2+1}{\max(\bar\alpha_{j-1}/\bar\alpha_j,\,C_1)}-1}",
      source="EDM Table 1 (iDDPM noise levels); training/networks.py iDDPMPrecond")
def iddpm_u(M: int = IDDPM_M, C1: float = IDDPM_C1, C2: float = IDDPM_C2) -> torch.Tensor:
    def alpha_bar(j):
        return math.sin(0.5 * math.pi * j / M / (C2 + 1)) ** 2

    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C1) - 1)
    return torch.tensor(u, dtype=F64)


@spec(DOC, latex=r"t_{i<N}=\Big(\sigma_{max}^{1/\rho}+\tfrac{i}{N-1}"
                 r"\big(\sigma_{min}^{1/\rho}-\sigma_{max}^{1/\rho}\big)\Big)^\rho,"
                 r"\ t_N=0",
      source="EDM eq. 5; generate.py edm_sampler; k-diffusion get_sigmas_karras",
      convention="N + 1 values: linspace(0, 1, N) then a trailing zero (N = 1 gives sigma_max, 0).")
def rho_steps(N: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    i = torch.arange(N, dtype=F64)
    ramp = i / max(N - 1, 1)
    t = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=F64)])


def check_steps_result(result, N, *, dtype=torch.float64, provides=frozenset(), **_) -> None:
    from eqspec.contracts import expect_tensor

    expect_tensor("t_steps", result, (N + 1,), (dtype,), torch.device("cpu"), "edm.time_steps")


@operation(
    DOC,
    latex=r"\text{EDM: eq. 5};\ \text{VP: }t_i=1+\tfrac{i}{N-1}(\epsilon_s-1);\ "
          r"\text{VE: }t_i=\sigma_{max}^2(\sigma_{min}^2/\sigma_{max}^2)^{i/(N-1)};\ "
          r"\text{iDDPM: }u_{\lfloor j_0+\frac{M-1-j_0}{N-1}i+\frac12\rfloor};\ t_N=0",
    source="EDM Table 1 (time steps) and eq. 5; catalogue/edm.md A.2, A.4",
    returns="t_steps",
    summary="The N + 1 sampling times of Table 1 for kind 'edm' (sigma_min, sigma_max, rho), 'vp' (epsilon_s), 've' or "
            "'iddpm', decreasing and ending in t_N = 0; sigma_min/sigma_max default to the kind's Table 1 values. "
            "Returns a 1-D CPU tensor of the requested dtype.",
    dtypes=("float64", "float32"),
    check_result=check_steps_result,
)
def time_steps(N: int, *, kind: str = "edm", sigma_min: float | None = None, sigma_max: float | None = None,
               rho: float = EDM_RHO, epsilon_s: float = VP_EPS_S, dtype: torch.dtype = torch.float64):
    check_count("N", N, 1)
    check_choice("kind", kind, KINDS)
    check_real("rho", rho, low=1e-3, allow_inf=False)
    if kind == "edm":
        lo = check_real("sigma_min", EDM_SIGMA_MIN if sigma_min is None else sigma_min, low=1e-300)
        hi = check_real("sigma_max", EDM_SIGMA_MAX if sigma_max is None else sigma_max, low=lo)
        t = rho_steps(N, lo, hi, rho)
    elif kind == "vp":
        eps = check_real("epsilon_s", epsilon_s, low=0.0, high=1.0)
        i = torch.arange(N, dtype=F64)
        t = torch.cat([1 + i / max(N - 1, 1) * (eps - 1), torch.zeros(1, dtype=F64)])
    elif kind == "ve":
        lo = check_real("sigma_min", VE_SIGMA_MIN if sigma_min is None else sigma_min, low=1e-300)
        hi = check_real("sigma_max", VE_SIGMA_MAX if sigma_max is None else sigma_max, low=lo)
        i = torch.arange(N, dtype=F64)
        t = torch.cat([hi**2 * (lo**2 / hi**2) ** (i / max(N - 1, 1)), torch.zeros(1, dtype=F64)])
    else:
        u = iddpm_u()
        i = torch.arange(N, dtype=F64)
        j = torch.floor(IDDPM_J0 + (IDDPM_M - 1 - IDDPM_J0) / max(N - 1, 1) * i + 0.5).long()
        t = torch.cat([u[j], torch.zeros(1, dtype=F64)])
    return t.to(dtype)


# ---------------------------------------------------------------------------------------------------
# A.2: preconditioning, loss weight, training noise distribution, the denoiser and its loss
# ---------------------------------------------------------------------------------------------------

def check_precond_result(result, sigma, **_) -> None:
    from eqspec.contracts import expect_tensor, expect_tuple

    names = ("c_skip", "c_out", "c_in", "c_noise", "weight")
    for name, v in zip(names, expect_tuple(result, names, "edm.preconditioning")):
        expect_tensor(name, v, tuple(sigma.shape), (sigma.dtype,), sigma.device, "edm.preconditioning")


@operation(
    DOC,
    latex=r"\text{EDM: }c_{skip}=\frac{\sigma_d^2}{\sigma^2+\sigma_d^2},"
          r"\ c_{out}=\frac{\sigma\sigma_d}{\sqrt{\sigma^2+\sigma_d^2}},"
          r"\ c_{in}=\frac{1}{\sqrt{\sigma^2+\sigma_d^2}},\ c_{noise}=\tfrac14\ln\sigma,\ "
          r"\lambda=\frac{\sigma^2+\sigma_d^2}{(\sigma\sigma_d)^2}",
    source="EDM Table 1 (network and preconditioning; loss weighting); training/networks.py, training/loss.py",
    returns="(c_skip, c_out, c_in, c_noise, weight)",
    summary="Table 1's preconditioning and loss weight lambda(sigma) for kind 'vp', 've', 'iddpm' or 'edm' "
            "(sigma_data for 'edm'). sigma: positive tensor; outputs in its shape and dtype.",
    dtypes=("float64", "float32"),
    check_result=check_precond_result,
)
def preconditioning(sigma: torch.Tensor, *, kind: str = "edm", sigma_data: float = SIGMA_DATA):
    check_choice("kind", kind, KINDS)
    sd = check_real("sigma_data", sigma_data, low=1e-300)
    S = _x("sigma", sigma)
    if not bool((S > 0).all()):
        raise ArgumentError("sigma", "sigma must be > 0 (the preconditioning divides by it)")
    one = torch.ones_like(S)
    if kind == "edm":
        c_skip = sd**2 / (S**2 + sd**2)
        c_out = S * sd / torch.sqrt(S**2 + sd**2)
        c_in = 1 / torch.sqrt(S**2 + sd**2)
        c_noise = 0.25 * torch.log(S)
        weight = (S**2 + sd**2) / (S * sd) ** 2
        return tuple(v.to(sigma.dtype) for v in (c_skip, c_out, c_in, c_noise, weight))
    if kind == "ve":
        c_skip, c_out, c_in, c_noise = one, S, one, torch.log(0.5 * S)
    else:
        c_skip, c_out, c_in = one, -S, 1 / torch.sqrt(S**2 + 1)
        if kind == "vp":
            c_noise = (VP_M - 1) * vp_sigma_inv(S)
        else:
            u = iddpm_u().to(S.device)
            c_noise = (IDDPM_M - 1 - (u[None, :] - S.reshape(-1, 1)).abs().argmin(dim=1)).to(F64).reshape(S.shape)
    weight = 1 / S**2
    return tuple(v.to(sigma.dtype) for v in (c_skip, c_out, c_in, c_noise, weight))


@spec(DOC, latex=r"\ln\sigma\sim\mathcal N(P_{mean},P_{std}^2)\ \Rightarrow\ \sigma=e^{P_{mean}+P_{std}\Phi^{-1}(u)}",
      source="EDM Table 1 (training noise distribution); training/loss.py EDMLoss")
def normal_quantile(u: torch.Tensor) -> torch.Tensor:
    return math.sqrt(2.0) * torch.erfinv(2 * u - 1)


def check_training_sigma_result(result, u, **_) -> None:
    from eqspec.contracts import expect_tensor

    expect_tensor("sigma", result, tuple(u.shape), (u.dtype,), u.device, "edm.training_sigma")


@operation(
    DOC,
    latex=r"\text{EDM: }\sigma=e^{P_{mean}+P_{std}\Phi^{-1}(u)};\ \text{VE: }\ln\sigma\sim U(\ln\sigma_{min},"
          r"\ln\sigma_{max});"
          r"\ \text{VP: }\sigma(t),\ t\sim U(\epsilon_t,1);\ \text{iDDPM: }u_j,\ j\sim U\{0..M-1\}",
    source="EDM Table 1 (training: noise distribution); training/loss.py",
    returns="sigma",
    summary="The training noise level of Table 1 as a function of a uniform u in (0, 1) (its quantile function): "
            "a batch of u ~ U(0, 1) gives sigma ~ p_train for kind 'edm', 've', 'vp' or 'iddpm'.",
    dtypes=("float64", "float32"),
    check_result=check_training_sigma_result,
)
def training_sigma(u: torch.Tensor, *, kind: str = "edm", P_mean: float = P_MEAN, P_std: float = P_STD):
    check_choice("kind", kind, KINDS)
    U = _x("u", u)
    if not bool(((U > 0) & (U < 1)).all()):
        raise ArgumentError("u", "u must lie in the open interval (0, 1)")
    if kind == "edm":
        sigma = torch.exp(P_mean + P_std * normal_quantile(U))
    elif kind == "ve":
        sigma = torch.exp(math.log(VE_SIGMA_MIN) + U * (math.log(VE_SIGMA_MAX) - math.log(VE_SIGMA_MIN)))
    elif kind == "vp":
        sigma, _ = vp_sigma_s(VP_EPS_T + U * (1 - VP_EPS_T))
    else:
        sigma = iddpm_u().to(U.device)[torch.floor(U * IDDPM_M).long().clamp(max=IDDPM_M - 1)]
    return sigma.to(u.dtype)


def _batch_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample (B,) tensor viewed as (B, 1, ..., 1) against x (B, ...); scalars unchanged."""
    return v.reshape(-1, *([1] * (x.dim() - 1))) if v.dim() == 1 and x.dim() > 1 and v.shape[0] == x.shape[0] else v


@spec(DOC, latex=r"D_\theta(x;\sigma)=c_{skip}(\sigma)\,x+c_{out}(\sigma)\,"
                 r"F_\theta\big(c_{in}(\sigma)\,x;\ c_{noise}(\sigma)\big)",
      source="EDM eq. 7; training/networks.py (EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond)")
def denoiser(F: Callable, x: torch.Tensor, sigma: torch.Tensor, *, kind: str = "edm", sigma_data: float = SIGMA_DATA):
    c_skip, c_out, c_in, c_noise, _ = (_batch_view(c, x) for c in preconditioning(sigma, kind=kind,
                                                                                  sigma_data=sigma_data))
    return c_skip * x + c_out * F(c_in * x, c_noise)


def check_loss_result(result, F, y, n, sigma, **_) -> None:
    from eqspec.contracts import expect_tensor

    expect_tensor("loss", result, (y.shape[0],), (y.dtype,), y.device, "edm.denoiser_loss")


@operation(
    DOC,
    latex=r"\mathcal L=\lambda(\sigma)\,\|D_\theta(y+n;\sigma)-y\|_2^2,\quad n\sim\mathcal N(0,\sigma^2I)",
    source="EDM eq. 2 and 8, Table 1 (loss weighting); training/loss.py (every class)",
    returns="loss",
    summary="Per-sample training loss lambda(sigma) ||D(y + n; sigma) - y||^2 (summed over all but the batch "
            "dimension) with D built from the raw network F(x_in, c_noise) by Table 1's preconditioning. "
            "y, n (B, ...), sigma (B,) -> loss (B,).",
    dtypes=("float64", "float32"),
    check_result=check_loss_result,
)
def denoiser_loss(F: Callable, y: torch.Tensor, n: torch.Tensor, sigma: torch.Tensor, *, kind: str = "edm",
                  sigma_data: float = SIGMA_DATA):
    if not callable(F):
        raise ArgumentError("F", f"F must be callable F(x_in, c_noise), got {type(F).__name__}")
    Y, Nn, S = _x("y", y), _x("n", n), _x("sigma", sigma)
    if Y.shape != Nn.shape or Y.dim() < 1 or S.shape != (Y.shape[0],):
        raise ArgumentError("y",
                            f"y and n must share a shape (B, ...) and sigma have shape (B,); got y {tuple(Y.shape)}, "
                            f"n {tuple(Nn.shape)}, sigma {tuple(S.shape)}")
    weight = preconditioning(S, kind=kind, sigma_data=sigma_data)[4]
    D = denoiser(lambda a, c: F(a, c).to(F64), Y + Nn, S, kind=kind, sigma_data=sigma_data)
    return (weight * ((D - Y) ** 2).reshape(Y.shape[0], -1).sum(1)).to(y.dtype)


@spec(DOC, latex=r"F_{target}=\frac{y-c_{skip}(\sigma)(y+n)}{c_{out}(\sigma)}",
      source="EDM eq. 8; k-diffusion layers.py Denoiser.loss")
def effective_target(y, n, sigma, *, kind: str = "edm", sigma_data: float = SIGMA_DATA):
    c_skip, c_out, *_ = (_batch_view(c, y) for c in preconditioning(sigma, kind=kind, sigma_data=sigma_data))
    return (y - c_skip * (y + n)) / c_out


# ---------------------------------------------------------------------------------------------------
# A.6: any prediction as a denoiser output D(y; sigma), y = x / s
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"x=s(x_0+\sigma\epsilon);\ \text{eps: }\epsilon;\ \text{v: }s\epsilon-s\sigma x_0;\ "
                 r"\text{flow: }\epsilon-x_0;"
                 r"\ \text{score: }-\epsilon/(s\sigma)",
      source="catalogue/edm.md A.6 (what each parameterisation predicts)")
def prediction_target(x0, eps, sigma, s, *, prediction: str):
    """The noisy x and the exact prediction a perfect network of each kind would output (the test's oracle)."""
    x = s * (x0 + sigma * eps)
    targets = {"epsilon": eps, "x0": x0, "v": s * eps - s * sigma * x0, "flow": eps - x0,
               "score": -eps / (s * sigma)}
    return x, targets[prediction]


def check_to_denoised_result(result, pred, x, sigma, s, **_) -> None:
    from eqspec.contracts import expect_tensor

    expect_tensor("denoised", result, tuple(x.shape), (x.dtype,), x.device, "edm.to_denoised")


@operation(
    DOC,
    latex=r"\text{eps: }D=\tfrac{x}{s}-\sigma\hat\epsilon;\ \text{x0: }D=\hat x_0;\ \text{v: }D=s x-s\sigma\hat v;\ "
          r"\text{flow: }D=x-s\sigma\hat v;\ \text{score: }D=\frac{x+(s\sigma)^2\nabla_x\log p}{s}",
    source="catalogue/edm.md A.6; diffusers scheduling_ddim.py, k-diffusion external.py and VDenoiser, "
           "scheduling_flow_match_euler_discrete.py",
    returns="denoised",
    summary="Convert a network prediction at x = s (x_0 + sigma eps) into the denoiser output D (an estimate of x_0): "
            "prediction 'epsilon', 'x0', 'v' (alpha = s, sigma_vp = s sigma, needs s^2 (1 + sigma^2) = 1), 'flow' "
            "(v = eps - x_0, needs s (1 + sigma) = 1) or 'score' (grad_x log p). sigma, s: numbers or tensors "
            "broadcastable to x.",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    check_result=check_to_denoised_result,
)
def to_denoised(pred: torch.Tensor, x: torch.Tensor, sigma, s, *, prediction: str = "epsilon"):
    check_choice("prediction", prediction, PREDICTIONS)
    P, X = _x("pred", pred), _x("x", x)
    if P.shape != X.shape:
        raise ArgumentError("pred", f"pred must have x's shape {tuple(X.shape)}, got {tuple(P.shape)}")
    S, s_ = as64("sigma", sigma, X, positive=True), as64("s", s, X, positive=True)
    if prediction == "v" and not torch.allclose(s_**2 * (1 + S**2), torch.ones_like(S), rtol=1e-6, atol=0):
        raise ArgumentError("s", "s must be 1 / sqrt(1 + sigma^2) for a v-prediction (alpha^2 + sigma_vp^2 = 1)")
    if prediction == "flow" and not torch.allclose(s_ * (1 + S), torch.ones_like(S), rtol=1e-6, atol=0):
        raise ArgumentError("s", "s must be 1 / (1 + sigma) for a flow-matching velocity (s = 1 - t, s sigma = t)")
    if prediction == "epsilon":
        D = X / s_ - S * P
    elif prediction == "x0":
        D = P
    elif prediction == "v":
        D = s_ * X - s_ * S * P
    elif prediction == "flow":
        D = X - s_ * S * P
    else:
        D = (X + (s_ * S) ** 2 * P) / s_
    return D.to(x.dtype)


# ---------------------------------------------------------------------------------------------------
# A.3: the score and the probability-flow ODE in (s, sigma) form
# ---------------------------------------------------------------------------------------------------

@spec(DOC, latex=r"\nabla_y\log p(y;\sigma)=\frac{D(y;\sigma)-y}{\sigma^2}", source="EDM eq. 3")
def score_from_denoised(denoised, y, sigma):
    return (denoised - y) / sigma**2


@spec(DOC, latex=r"\frac{dx}{dt}=\frac{\dot s}{s}x-s^2\dot\sigma\sigma\,\nabla_x\log p\big(\tfrac{x}{s};\sigma\big)",
      source="EDM eq. 4 (the gradient is taken with respect to x: a factor 1/s from the chain rule)")
def ode_derivative_from_score(score_x, x, sigma, s, sigma_dot, s_dot):
    return s_dot / s * x - s**2 * sigma_dot * sigma * score_x


def check_ode_result(result, denoised, x, *args, **_) -> None:
    from eqspec.contracts import expect_tensor

    expect_tensor("dx_dt", result, tuple(x.shape), (x.dtype,), x.device, "edm.ode_derivative")


@operation(
    DOC,
    latex=r"\frac{dx}{dt}=\Big(\frac{\dot\sigma}{\sigma}+\frac{\dot "
          r"s}{s}\Big)x-\frac{\dot\sigma\,s}{\sigma}\,D\big(\tfrac{x}{s};\sigma\big)",
    source="EDM eq. 4 with eq. 3 substituted; Algorithm 1 line 4; generate.py ablation_sampler (d_cur)",
    returns="dx_dt",
    summary="The probability-flow ODE's dx/dt at x given the denoiser output D(x/s; sigma) and (sigma, s, sigma_dot, "
            "s_dot) at t (numbers or tensors broadcastable to x).",
    dtypes=("float64", "float32"),
    check_result=check_ode_result,
)
def ode_derivative(denoised: torch.Tensor, x: torch.Tensor, sigma, s, sigma_dot, s_dot):
    D, X = _x("denoised", denoised), _x("x", x)
    if D.shape != X.shape:
        raise ArgumentError("denoised", f"denoised must have x's shape {tuple(X.shape)}, got {tuple(D.shape)}")
    S, s_ = as64("sigma", sigma, X, positive=True), as64("s", s, X, positive=True)
    Sd, sd = as64("sigma_dot", sigma_dot, X), as64("s_dot", s_dot, X)
    return ((Sd / S + sd / s_) * X - Sd * s_ / S * D).to(x.dtype)


# ---------------------------------------------------------------------------------------------------
# A.5: Algorithm 1 (Heun, any s and sigma) and Algorithm 2 (stochastic churn)
# ---------------------------------------------------------------------------------------------------

def check_sampler_args(denoiser_fn, x_T, t_steps, name: str = "t_steps") -> torch.Tensor:
    if not callable(denoiser_fn):
        raise ArgumentError("denoiser",
                            f"denoiser must be callable denoiser(y, sigma) -> D, got {type(denoiser_fn).__name__}")
    check_tensor("x_T", x_T)
    check_tensor(name, t_steps, rank=1)
    T = t_steps.detach().to(device="cpu", dtype=F64)
    if T.numel() < 2 or not bool((T[1:] < T[:-1]).all()) or bool((T < 0).any()):
        raise ArgumentError(name, f"{name} must be a strictly decreasing 1-D tensor of >= 2 non-negative times, "
                            f"got {T.tolist()[:8]}")
    return T


def check_sample_result(result, denoiser_fn, x_T, *args, **_) -> None:
    from eqspec.contracts import expect_tensor

    expect_tensor("x_0", result, tuple(x_T.shape), (x_T.dtype,), x_T.device, "edm sampler")


@operation(
    DOC,
    latex=r"d_i=\big(\tfrac{\dot\sigma}{\sigma}+\tfrac{\dot s}{s}\big)x_i-\tfrac{\dot\sigma "
          r"s}{\sigma}D\big(\tfrac{x_i}{s};\sigma\big)"
          r"\big|_{t_i},\ x_{i+1}=x_i+(t_{i+1}-t_i)\,d_i;\ \text{if }\sigma(t_{i+1})\neq0:\ "
          r"x_{i+1}=x_i+(t_{i+1}-t_i)\big(\tfrac12d_i+\tfrac12d'_i\big)",
    source="EDM Algorithm 1 (deterministic sampling with Heun's 2nd order method, arbitrary sigma(t) and s(t))",
    returns="x_0",
    summary="Algorithm 1: integrate the probability-flow ODE from x_T at t_steps[0] along t_steps (strictly "
            "decreasing, usually ending at sigma = 0) for schedule kind 'edm', 'vp', 've' or 'fm'. denoiser(y, sigma) "
            "takes y = x / s in x_T's dtype and a float sigma and returns D(y; sigma). Heun (second_order) except "
            "the step to sigma = 0, which is Euler (2N - 1 evaluations); second_order=False is Euler throughout.",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    check_result=check_sample_result,
)
def heun_sampler(denoiser: Callable, x_T: torch.Tensor, t_steps: torch.Tensor, *, kind: str = "edm",
                 second_order: bool = True):
    T = check_sampler_args(denoiser, x_T, t_steps)
    check_choice("kind", kind, SCHEDULES)
    sig, s, sig_dot, s_dot = (v.tolist() for v in schedule(T, kind=kind))

    def d(x, i):  # dx/dt at (x, t_i), the denoiser evaluated in x_T's dtype
        D = denoiser((x / s[i]).to(x_T.dtype), sig[i]).to(F64)
        return ode_derivative(D, x, sig[i], s[i], sig_dot[i], s_dot[i])

    x = x_T.to(F64)
    for i in range(len(T) - 1):
        h = float(T[i + 1] - T[i])
        d_i = d(x, i)
        x_next = x + h * d_i
        if second_order and sig[i + 1] != 0:
            x_next = x + h * (0.5 * d_i + 0.5 * d(x_next, i + 1))
        x = x_next
    return x.to(x_T.dtype)


def check_churn_result(result, x, t, eps, **_) -> None:
    from eqspec.contracts import ContractViolation, expect_tensor, expect_tuple

    x_hat, t_hat = expect_tuple(result, ("x_hat", "t_hat"), "edm.churn")
    expect_tensor("x_hat", x_hat, tuple(x.shape), (x.dtype,), x.device, "edm.churn")
    if isinstance(t_hat, bool) or not isinstance(t_hat, (int, float)):
        raise ContractViolation(f"edm.churn: t_hat must be a Python float, got {type(t_hat).__name__}")


@operation(
    DOC,
    latex=r"\gamma_i=\begin{cases}\min(S_{churn}/N,\sqrt2-1)&t_i\in[S_{tmin},S_{tmax}]\\0&\text{else}\end{cases},\ "
          r"\hat t_i=t_i(1+\gamma_i),\ \hat x_i=x_i+\sqrt{\hat t_i^2-t_i^2}\,S_{noise}\,\epsilon_i",
    source="EDM Algorithm 2 lines 4-6; generate.py edm_sampler",
    returns="(x_hat, t_hat)",
    summary="Algorithm 2's churn (sigma = t, s = 1): raise the noise level of x at t to t_hat = t (1 + gamma) by "
            "adding fresh noise eps ~ N(0, I) (x's shape). N is the number of sampling steps; returns x_hat and "
            "t_hat as a Python float.",
    dtypes=("float64", "float32"),
    check_result=check_churn_result,
)
def churn(x: torch.Tensor, t: float, eps: torch.Tensor, *, S_churn: float, N: int, S_tmin: float = 0.0,
          S_tmax: float = math.inf, S_noise: float = 1.0):
    X, E = _x("x", x), _x("eps", eps)
    if E.shape != X.shape:
        raise ArgumentError("eps", f"eps must have x's shape {tuple(X.shape)}, got {tuple(E.shape)}")
    t = check_real("t", t, low=0.0)
    check_count("N", N, 1)
    S_churn = check_real("S_churn", S_churn, low=0.0)
    S_tmin, S_tmax = check_real("S_tmin", S_tmin, allow_inf=True), check_real("S_tmax", S_tmax, allow_inf=True)
    S_noise = check_real("S_noise", S_noise, low=0.0)
    gamma = min(S_churn / N, GAMMA_MAX) if S_tmin <= t <= S_tmax else 0.0
    t_hat = t * (1 + gamma)
    x_hat = X + math.sqrt(t_hat**2 - t**2) * S_noise * E
    return x_hat.to(x.dtype), t_hat


@operation(
    DOC,
    latex=r"(\hat x_i,\hat t_i)=\mathrm{churn}(x_i,t_i,\epsilon_i),\ d_i=\frac{\hat x_i-D(\hat x_i;\hat t_i)}{\hat "
          r"t_i},\ "
          r"x_{i+1}=\hat x_i+(t_{i+1}-\hat t_i)d_i;\ \text{if }t_{i+1}\neq0:\ d'_i=\frac{x_{i+1}-D(x_{i+1};"
          r"t_{i+1})}{t_{i+1}},"
          r"\ x_{i+1}=\hat x_i+(t_{i+1}-\hat t_i)\big(\tfrac12d_i+\tfrac12d'_i\big)",
    source="EDM Algorithm 2 (stochastic sampler, sigma(t) = t, s(t) = 1); generate.py edm_sampler",
    returns="x_0",
    summary="Algorithm 2 over sigmas (N + 1 noise levels, strictly decreasing, usually ending in 0) with the churn "
            "noise given: noise (N, *x_T.shape) standard normal, noise[i] used at step i. denoiser(x, sigma) as for "
            "heun_sampler. S_churn = 0 gives Algorithm 1 (deterministic).",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    check_result=check_sample_result,
)
def stochastic_sampler(denoiser: Callable, x_T: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor, *,
                       S_churn: float = 0.0, S_tmin: float = 0.0, S_tmax: float = math.inf, S_noise: float = 1.0,
                       second_order: bool = True):
    T = check_sampler_args(denoiser, x_T, sigmas, "sigmas")
    N = len(T) - 1
    check_tensor("noise", noise)
    if tuple(noise.shape) != (N, *x_T.shape):
        raise ArgumentError("noise",
                            f"noise must have shape (N, *x_T.shape) = {(N, *x_T.shape)}, got {tuple(noise.shape)}")
    t = T.tolist()

    def D(x, sigma):
        return denoiser(x.to(x_T.dtype), sigma).to(F64)

    x = x_T.to(F64)
    for i in range(N):
        x_hat, t_hat = churn(x, t[i], noise[i].to(F64), S_churn=S_churn, N=N, S_tmin=S_tmin, S_tmax=S_tmax,
                             S_noise=S_noise)
        d_i = (x_hat - D(x_hat, t_hat)) / t_hat
        x_next = x_hat + (t[i + 1] - t_hat) * d_i
        if second_order and t[i + 1] != 0:
            d_prime = (x_next - D(x_next, t[i + 1])) / t[i + 1]
            x_next = x_hat + (t[i + 1] - t_hat) * (0.5 * d_i + 0.5 * d_prime)
        x = x_next
    return x.to(x_T.dtype)


def check_prior_result(result, t0, **_) -> None:
    from eqspec.contracts import ContractViolation

    if isinstance(result, bool) or not isinstance(result, (int, float)):
        raise ContractViolation(f"edm.prior_std must return a Python float, got {type(result).__name__}")


@operation(
    DOC,
    latex=r"x_0\sim\mathcal N\big(0,\ \sigma(t_0)^2\,s(t_0)^2\,I\big)",
    source="EDM Algorithm 1 line 1",
    returns="std",
    summary="The standard deviation of the sampler's initial noise at the first time t0 of schedule kind "
            "('edm', 'vp', 've', 'fm'): sigma(t0) s(t0), a Python float.",
    dtypes=("float64",),
    check_result=check_prior_result,
)
def prior_std(t0: float, *, kind: str = "edm") -> float:
    t0 = check_real("t0", t0, low=0.0)
    sigma, s, _, _ = schedule(torch.tensor([t0], dtype=F64), kind=kind)
    return float(sigma[0] * s[0])


# ---------------------------------------------------------------------------------------------------
# The other samplers' steps: Euler in sigma, DDIM, DDPM, rectified flow, ancestral split, shift
# ---------------------------------------------------------------------------------------------------

def _step_args(pred_name, pred, x):
    P, X = _x(pred_name, pred), _x("x", x)
    if P.shape != X.shape:
        raise ArgumentError(pred_name, f"{pred_name} must have x's shape {tuple(X.shape)}, got {tuple(P.shape)}")
    return P, X


def check_step_result(result, pred, x, *args, **_) -> None:
    from eqspec.contracts import expect_tensor

    expect_tensor("x_next", result, tuple(x.shape), (x.dtype,), x.device, "edm step")


@operation(
    DOC,
    latex=r"x_{i+1}=x_i+(\sigma_{i+1}-\sigma_i)\,\frac{x_i-D(x_i;\sigma_i)}{\sigma_i}",
    source="EDM Algorithm 1 with sigma = t, s = 1 (Euler); k-diffusion sampling.py sample_euler / to_d",
    returns="x_next",
    summary="One Euler step of dx/dsigma = (x - D) / sigma from sigma to sigma_next (sigma = t, s = 1), given the "
            "denoiser output at (x, sigma). sigma, sigma_next: numbers or tensors broadcastable to x.",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    check_result=check_step_result,
)
def euler_step(denoised: torch.Tensor, x: torch.Tensor, sigma, sigma_next):
    D, X = _step_args("denoised", denoised, x)
    S, S_next = as64("sigma", sigma, X, positive=True), as64("sigma_next", sigma_next, X, nonnegative=True)
    return (X + (S_next - S) * (X - D) / S).to(x.dtype)


@spec(DOC, latex=r"\sigma_t^2(\eta)=\eta^2\,\frac{1-\bar\alpha_{prev}}{1-\bar\alpha_t}"
                 r"\Big(1-\frac{\bar\alpha_t}{\bar\alpha_{prev}}\Big)",
      source="DDIM (Song et al. 2021) eq. 16; diffusers scheduling_ddim.py _get_variance")
def ddim_variance(alpha_bar, alpha_bar_prev, eta):
    return eta**2 * (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)


def _alpha_bars(x, alpha_bar, alpha_bar_prev):
    a = as64("alpha_bar", alpha_bar, x, positive=True)
    a_prev = as64("alpha_bar_prev", alpha_bar_prev, x, positive=True)
    if bool((a >= 1).any()) or bool((a_prev > 1).any()) or bool((a_prev < a).any()):
        raise ArgumentError("alpha_bar",
                            "alpha_bar must lie in (0, 1) and alpha_bar_prev in [alpha_bar, 1] (less noise)")
    return a, a_prev


@operation(
    DOC,
    latex=r"\hat x_0=\frac{x_t-\sqrt{1-\bar\alpha_t}\hat\epsilon}{\sqrt{\bar\alpha_t}},\ "
          r"x_{prev}=\sqrt{\bar\alpha_{prev}}\hat x_0+\sqrt{1-\bar\alpha_{prev}-\sigma_t^2}\,\hat\epsilon+\sigma_t z",
    source="DDIM eq. 12; diffusers scheduling_ddim.py step (clip_sample off); catalogue/edm.md A.8",
    returns="x_prev",
    summary="One DDIM step from alpha_bar to alpha_bar_prev (> alpha_bar) given eps_hat, with eta and the noise z "
            "(x's shape; needed when eta > 0). alpha bars: numbers or tensors broadcastable to x.",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    check_result=check_step_result,
)
def ddim_step(eps_hat: torch.Tensor, x: torch.Tensor, alpha_bar, alpha_bar_prev, *, eta: float = 0.0,
              noise: torch.Tensor | None = None):
    E, X = _step_args("eps_hat", eps_hat, x)
    a, a_prev = _alpha_bars(X, alpha_bar, alpha_bar_prev)
    eta = check_real("eta", eta, low=0.0)
    if eta > 0 and noise is None:
        raise ArgumentError("noise", "noise must be given (a tensor of x's shape) when eta > 0")
    x0_hat = (X - torch.sqrt(1 - a) * E) / torch.sqrt(a)
    var = ddim_variance(a, a_prev, eta)
    x_prev = torch.sqrt(a_prev) * x0_hat + torch.sqrt((1 - a_prev - var).clamp(min=0)) * E
    if eta > 0:
        x_prev = x_prev + torch.sqrt(var) * _step_args("noise", noise, x)[0]
    return x_prev.to(x.dtype)


@operation(
    DOC,
    latex=r"\beta_t=1-\frac{\bar\alpha_t}{\bar\alpha_{prev}},"
          r"\ \tilde\mu=\frac{\sqrt{\bar\alpha_{prev}}\beta_t}{1-\bar\alpha_t}\hat x_0"
          r"+\frac{\sqrt{1-\beta_t}(1-\bar\alpha_{prev})}{1-\bar\alpha_t}x_t,\ "
          r"x_{prev}=\tilde\mu+\sqrt{\tfrac{1-\bar\alpha_{prev}}{1-\bar\alpha_t}\beta_t}\,z",
    source="DDPM (Ho et al. 2020) eq. 6-7; diffusers scheduling_ddpm.py step (fixed_small variance, clip_sample off)",
    returns="x_prev",
    summary="One DDPM ancestral step (posterior q(x_prev | x_t, x0_hat), variance beta_tilde) from alpha_bar to "
            "alpha_bar_prev given eps_hat and standard-normal noise z of x's shape.",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    check_result=check_step_result,
)
def ddpm_step(eps_hat: torch.Tensor, x: torch.Tensor, alpha_bar, alpha_bar_prev, noise: torch.Tensor):
    E, X = _step_args("eps_hat", eps_hat, x)
    Z = _step_args("noise", noise, x)[0]
    a, a_prev = _alpha_bars(X, alpha_bar, alpha_bar_prev)
    beta = 1 - a / a_prev
    x0_hat = (X - torch.sqrt(1 - a) * E) / torch.sqrt(a)
    mean = torch.sqrt(a_prev) * beta / (1 - a) * x0_hat + torch.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * X
    var = (1 - a_prev) / (1 - a) * beta
    return (mean + torch.sqrt(var) * Z).to(x.dtype)


@operation(
    DOC,
    latex=r"x_{t'}=x_t+(t'-t)\,\hat v,\quad \hat v\approx\epsilon-x_0",
    source="Rectified flow / flow matching Euler step; diffusers scheduling_flow_match_euler_discrete.py step",
    returns="x_next",
    summary="One Euler step of the flow-matching ODE x_t = (1 - t) x_0 + t eps from t to t_next given the "
            "velocity v_hat (numbers or tensors broadcastable to x).",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    check_result=check_step_result,
)
def flow_euler_step(v_hat: torch.Tensor, x: torch.Tensor, t, t_next):
    V, X = _step_args("v_hat", v_hat, x)
    T, T_next = as64("t", t, X, nonnegative=True), as64("t_next", t_next, X, nonnegative=True)
    return (X + (T_next - T) * V).to(x.dtype)


def check_shift_result(result, sigma, shift, **_) -> None:
    from eqspec.contracts import expect_tensor

    expect_tensor("sigma_shifted", result, tuple(sigma.shape), (sigma.dtype,), sigma.device, "edm.flow_shift")


@operation(
    DOC,
    latex=r"\sigma'=\frac{s\,\sigma}{1+(s-1)\,\sigma}",
    source="SD3 (Esser et al. 2024) time shift; diffusers FlowMatchEulerDiscreteScheduler (shift)",
    returns="sigma_shifted",
    summary="The flow-matching time shift of sigma in [0, 1] by shift > 0 (a tensor; same shape and dtype).",
    dtypes=("float64", "float32"),
    check_result=check_shift_result,
)
def flow_shift(sigma: torch.Tensor, shift: float):
    S = _x("sigma", sigma)
    shift = check_real("shift", shift, low=1e-300)
    if bool(((S < 0) | (S > 1)).any()):
        raise ArgumentError("sigma", "sigma must lie in [0, 1] (flow-matching time)")
    return (shift * S / (1 + (shift - 1) * S)).to(sigma.dtype)


@spec(DOC, latex=r"\sigma'=\frac{e^\mu}{e^\mu+(1/\sigma-1)}",
      source="diffusers FlowMatchEulerDiscreteScheduler.time_shift (exponential, sigma = 1)")
def dynamic_shift(sigma, mu: float):
    return math.exp(mu) / (math.exp(mu) + (1 / sigma - 1))


def check_split_result(result, sigma_from, sigma_to, **_) -> None:
    from eqspec.contracts import expect_tensor, expect_tuple

    for name, v in zip(("sigma_down", "sigma_up"), expect_tuple(result, ("sigma_down", "sigma_up"),
                                                                "edm.ancestral_split")):
        expect_tensor(name, v, tuple(sigma_to.shape), (sigma_to.dtype,), sigma_to.device, "edm.ancestral_split")


@operation(
    DOC,
    latex=r"\sigma_{up}=\min\Big(\sigma_{to},"
          r"\ \eta\sqrt{\sigma_{to}^2(\sigma_{from}^2-\sigma_{to}^2)/\sigma_{from}^2}\Big),\ "
          r"\sigma_{down}=\sqrt{\sigma_{to}^2-\sigma_{up}^2}",
    source="k-diffusion sampling.py get_ancestral_step; catalogue/edm.md A.8",
    returns="(sigma_down, sigma_up)",
    summary="Split an ancestral step from sigma_from to sigma_to (<= sigma_from; tensors of one shape) into a "
            "deterministic step to sigma_down and fresh noise sigma_up, with eta in [0, 1].",
    dtypes=("float64", "float32"),
    check_result=check_split_result,
)
def ancestral_split(sigma_from: torch.Tensor, sigma_to: torch.Tensor, *, eta: float = 1.0):
    F_, T_ = _x("sigma_from", sigma_from), _x("sigma_to", sigma_to)
    if F_.shape != T_.shape or not bool((F_ > 0).all()) or not bool(((T_ >= 0) & (T_ <= F_)).all()):
        raise ArgumentError("sigma_from",
                            "sigma_from and sigma_to must share a shape with 0 <= sigma_to <= sigma_from, "
                            "sigma_from > 0")
    eta = check_real("eta", eta, low=0.0)
    up = torch.minimum(T_, eta * torch.sqrt(T_**2 * (F_**2 - T_**2) / F_**2))
    down = torch.sqrt(T_**2 - up**2)
    return down.to(sigma_to.dtype), up.to(sigma_to.dtype)


def check_timesteps_result(result, num_train_timesteps, N, **_) -> None:
    from eqspec.contracts import expect_tensor, expect_tuple

    for name, v in zip(("timesteps", "prev_timesteps"), expect_tuple(result, ("timesteps", "prev_timesteps"),
                                                                    "edm.sampling_timesteps")):
        expect_tensor(name, v, (N,), (torch.int64,), torch.device("cpu"), "edm.sampling_timesteps")


SPACINGS = ("linspace", "leading", "trailing")


@operation(
    DOC,
    latex=r"\text{linspace: }\mathrm{round}(\mathrm{linspace}(0,T-1,N));\ \text{leading: }\lfloor "
          r"T/N\rfloor\,(0..N-1);\ "
          r"\text{trailing: }\mathrm{round}(T-\tfrac TN\,(0..N-1))-1;\ t^{prev}_i=t_{i+1},\ t^{prev}_{N-1}=-1",
    source="Lin et al. 2024 (Common Diffusion Noise Schedules and Sample Steps Are Flawed) Table 2; diffusers "
           "set_timesteps (timestep_spacing); catalogue/edm.md A.8 (DDIM prev-timestep stride)",
    returns="(timesteps, prev_timesteps)",
    convention="Computed with numpy's float64 linspace / arange and round-half-to-even, as diffusers does: ties "
               "then fall by float rounding (T = 1000, N = 47 lists 499 where the exact 499.5 rounds to 500; "
               "trailing N = 48 lists 936 where the exact 937.5 - 1 rounds to 937).",
    summary="The N discrete timesteps (descending, of num_train_timesteps) a DDPM/DDIM sampler visits for spacing "
            "'linspace', 'leading' or 'trailing', and the timestep each step goes to: the next listed one, -1 "
            "(alpha_bar = 1) after the last. int64 CPU tensors.",
    dtypes=("float64",),
    check_result=check_timesteps_result,
)
def sampling_timesteps(num_train_timesteps: int, N: int, *, spacing: str = "leading"):
    T = check_count("num_train_timesteps", num_train_timesteps, 2)
    check_count("N", N, 1)
    check_choice("spacing", spacing, SPACINGS)
    if N > T:
        raise ArgumentError("N", f"N must not exceed num_train_timesteps ({T}), got {N}")
    import numpy as np  # the float arithmetic of numpy's linspace and arange decides ties (see the convention)

    if spacing == "linspace":
        ts = torch.from_numpy(np.linspace(0, T - 1, N).round()[::-1].copy())
    elif spacing == "leading":
        ts = (torch.arange(N, dtype=F64) * (T // N)).flip(0)
    else:
        ts = torch.from_numpy(np.round(np.arange(T, 0, -T / N)) - 1)
    ts = ts.to(torch.int64)
    return ts, torch.cat([ts[1:], torch.tensor([-1], dtype=torch.int64)])


# ---------------------------------------------------------------------------------------------------
# Exact oracles: Gaussian-mixture data, whose denoiser and probability flow are closed-form
# ---------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------
# Claims (catalogue/edm.md properties 1-11, A.7, the bug lists, and the operations' contracts)
# ---------------------------------------------------------------------------------------------------

def _op(name: str) -> str:
    return f"{DOC}.{name}"


claim(DOC, "preconditioning_identities", kind="identity", operations=(_op("preconditioning"),),
      statement="For every Table 1 kind lambda c_out^2 = 1 (the effective F-target has unit weight, EDM §5); for EDM "
                "also c_in^2 (sigma^2 + sigma_d^2) = 1, c_skip + c_out^2 / sigma_d^2 = 1 and c_out^2 = (1 - c_skip)^2 "
                "sigma_d^2 + c_skip^2 sigma^2 (unit-variance target), for sigma log-uniform in [1e-3, 1e3] "
                "(float64 relative 1e-12).",
      source="EDM §5 and App. B.6; catalogue property 1")
claim(DOC, "preconditioning_known_answers", kind="known-answer", operations=(_op("preconditioning"),),
      statement="EDM preconditioning at sigma = 0.5, 1, 80; VE c_noise = ln(sigma/2); VP c_noise = 999 "
                "sigma^-1(sigma); "
                "iDDPM c_noise = M - 1 - argmin_j |u_j - sigma| (catalogue values, 8 digits).",
      source="catalogue/edm.md A.2 and known-answer numbers")
claim(DOC, "schedule_endpoints_and_inverse", kind="identity", operations=(_op("schedule"),),
      statement="sigma(0) = 0 for every schedule; sigma is increasing; sigma^-1(sigma(t)) = t (1e-12); VP: "
                "s^2 (1 + sigma^2) = 1 and the catalogue's sigma(1), sigma(1e-3), sigma(1e-5); FM: s + s sigma = 1.",
      source="EDM Table 1; catalogue property 9 and known answers")
claim(DOC, "schedule_derivatives", kind="identity", operations=(_op("schedule"),),
      statement="sigma_dot and s_dot equal central finite differences of sigma(t) and s(t) (relative 1e-6) for "
                "VP, VE, EDM and FM.",
      source="EDM Table 1 (derivatives); catalogue property 9")
claim(DOC, "time_steps", kind="identity", operations=(_op("time_steps"),),
      statement="N + 1 strictly decreasing times with t_0 = sigma_max, t_{N-1} = sigma_min and t_N = 0 (EDM, VE in "
                "t = sigma^2; VP from 1 to epsilon_s); rho = 1 gives linspace (1e-12) and rho = 1e6 geomspace "
                "(relative 1e-4); the catalogue's N = 18 and N = 5 EDM steps and iDDPM levels u_8, u_0, u_999 "
                "(992 levels in [0.002, 81]).",
      source="EDM eq. 5 and Table 1; catalogue property 2 and known answers")
claim(DOC, "training_distribution", kind="known-answer", operations=(_op("training_sigma"),),
      statement="The training noise quantile functions: EDM median e^-1.2 = 0.301194 and ln sigma quartiles "
                "P_mean +- 0.6745 P_std (P_std a standard deviation, not a variance), mean e^-0.48 = 0.618783 "
                "(quadrature); VE log-uniform on [0.02, 100]; VP sigma(t) with t uniform on [1e-5, 1]; iDDPM levels "
                "u_j with j uniform.",
      source="EDM Table 1 (training); catalogue known answers")
claim(DOC, "denoiser_loss", kind="identity", operations=(_op("denoiser_loss"),),
      statement="The weighted D-loss lambda ||D(y + n) - y||^2 equals the unit-weight F-loss ||F - F_target||^2 with "
                "F_target = (y - c_skip (y + n)) / c_out (EDM eq. 8), and for VP and VE the epsilon-MSE ||F -+ eps||^2 "
                "(NVlabs/edm #9), float64 relative 1e-12; other dtypes within budget.",
      source="EDM eq. 2, 8 and §5; NVlabs/edm issue #9")
claim(DOC, "conversions_round_trip", kind="identity", operations=(_op("to_denoised"),),
      statement="Every prediction (epsilon, x0, v, flow velocity, score) made exactly from (x_0, eps) at random "
                "(sigma, s) converts back to D = x_0 (float64 relative 1e-12; other dtypes within budget); the v and "
                "flow conversions are D = y/(sigma^2+1) - sigma/sqrt(sigma^2+1) v and y/(1+sigma) - sigma/(1+sigma) v.",
      source="catalogue/edm.md A.6 and property 4")
claim(DOC, "ode_forms_agree", kind="identity", operations=(_op("ode_derivative"),),
      statement="The D-form of the probability-flow ODE equals eq. 4 with the score taken with respect to x (the "
                "chain-rule factor 1/s), for every schedule, and reduces to dx/dsigma = (x - D) / sigma for EDM "
                "(float64 relative 1e-12).",
      source="EDM eq. 3-4, Algorithm 1 line 4; k-diffusion to_d")
claim(DOC, "parameterisations_agree", kind="identity",
      operations=(_op("ddim_step"), _op("euler_step"), _op("flow_euler_step")),
      statement="A DDIM (eta = 0) step equals an EDM Euler step in (y = x / sqrt(alpha_bar), sigma = "
                "sqrt((1 - alpha_bar) / alpha_bar)) rescaled by sqrt(alpha_bar_prev), and equals a rectified-flow "
                "Euler step in (t = sigma / (1 + sigma), x = (1 - t) y), for any denoiser including a random "
                "nonlinear one (float64: 1e-12 relative; float32: 64 eps of the terms).",
      source="DDIM §4.3; EDM §3; catalogue/edm.md A.7 (i)-(ii), property 5")
claim(DOC, "heun_is_not_equivariant", kind="identity", operations=(_op("heun_sampler"),),
      statement="Where equivalence does not hold: Heun in FM time differs from Heun in EDM sigma, and Euler in VP "
                "time differs from DDIM, by far more than rounding (> 1e-4 against ~1e-15) and by a discretisation "
                "difference that shrinks with the step (Heun: by 3-5.5x per doubling of N, a second-order "
                "difference), so it is real, not noise.",
      source="catalogue/edm.md A.7 (iii)")
claim(DOC, "heun_order", kind="budget", operations=(_op("heun_sampler"),),
      statement="With the exact Gaussian oracle (data N(0, sigma_d^2)) the global error of Heun falls 3.3-5x per "
                "doubling of N (second order) and Euler's 1.7-2.3x (first order), for EDM and VP schedules; the "
                "fitted log-log slopes are reported.",
      source="EDM §3 (Heun second order); catalogue property 3")
claim(DOC, "heun_nfe_and_last_step", kind="exact", operations=(_op("heun_sampler"), _op("stochastic_sampler")),
      statement="Heun uses 2N - 1 denoiser evaluations, never evaluates the denoiser at sigma = 0, and the step to "
                "sigma = 0 is Euler (returns D(x_{N-1}; t_{N-1}) exactly for EDM).",
      source="EDM Algorithm 1 lines 5-8; catalogue property 8")
claim(DOC, "samplers_reach_data", kind="statistical",
      operations=(_op("heun_sampler"), _op("stochastic_sampler")),
      statement="Started from N(0, sigma_max^2), Heun (N = 32) and the stochastic sampler (S_churn = 40) with the "
                "exact "
                "Gaussian-mixture denoiser produce samples whose empirical CDF is within the DKW bound "
                "sqrt(ln(2/1e-6) / 2n) + 0.01 (discretisation allowance) of the mixture's CDF; for Gaussian data the "
                "Heun output std is within 1% + a chi-square bound of sigma_max sigma_d / sqrt(sigma_max^2 + "
                "sigma_d^2). "
                "False alarm <= 1e-6 each (DKW: i.i.d. samples, continuous CDF; Laurent-Massart chi-square tail).",
      source="EDM §3-4; catalogue property 3")
claim(DOC, "samplers_within_budget", kind="budget", operations=(_op("heun_sampler"), _op("stochastic_sampler")),
      statement="Any implementation of Algorithm 1 or 2 returns the float64 spec's samples for the same start and "
                "churn noise within the error budget (2 x the naive same-precision torch sampler's error + floor).",
      source="EDM Algorithms 1-2; design.md (error budget)")
claim(DOC, "churn", kind="statistical", operations=(_op("churn"), _op("stochastic_sampler")),
      statement="gamma = min(S_churn / N, sqrt 2 - 1) inside [S_tmin, S_tmax] and 0 outside, t_hat = t (1 + gamma); "
                "S_churn = 0 makes the sampler bitwise deterministic; a churn step maps N(0, sigma_d^2 + t^2) samples "
                "to "
                "variance sigma_d^2 + t_hat^2 within a chi-square (Laurent-Massart) bound at false alarm 1e-6.",
      source="EDM Algorithm 2; catalogue properties 6-7")
claim(DOC, "ancestral_split", kind="identity", operations=(_op("ancestral_split"),),
      statement="sigma_down^2 + sigma_up^2 = sigma_to^2, sigma_up <= sigma_to, eta = 0 gives sigma_up = 0, eta = 1 the "
                "DDPM posterior std sigma_to sqrt(1 - sigma_to^2 / sigma_from^2); within the error budget of the "
                "formula evaluated in the same dtype, element by element in units of its conditioning (sigma_up "
                "subtracts sigma_to^2 from sigma_from^2: ill-conditioned as sigma_to -> sigma_from).",
      source="k-diffusion get_ancestral_step; catalogue property 10")
claim(DOC, "flow_shift", kind="identity", operations=(_op("flow_shift"),),
      statement="Shifting by s1 then s2 equals shifting by s1 s2; the exponential form with mu = ln s equals the "
                "static "
                "shift; 0 and 1 are fixed; shift 3 maps 0.5 to 0.75 (float64 1e-12).",
      source="diffusers FlowMatchEulerDiscreteScheduler; catalogue property 11")
claim(DOC, "ddim_ddpm_steps", kind="identity", operations=(_op("ddim_step"), _op("ddpm_step")),
      statement="With the exact epsilon of a point x_0, DDIM (any eta, any noise) and DDPM steps land on the "
                "forward process of that x_0: the mean sqrt(alpha_bar_prev) x_0 and the DDPM posterior variance; DDIM "
                "with eta = 1 has the DDPM step's variance (float64 1e-12).",
      source="DDIM §4.1 (eta = 1 is DDPM); DDPM eq. 7; catalogue A.8 (variance)")
claim(DOC, "prior_std", kind="known-answer", operations=(_op("prior_std"),),
      statement="The sampler's initial noise std is sigma(t_0) s(t_0): sigma_max = 80 for EDM (not sqrt(80^2 + 1) = "
                "80.00625), and for VP at t = 1 it is sigma(1) / sqrt(1 + sigma(1)^2) = 0.99997841.",
      source="EDM Algorithm 1 line 1; catalogue bug list (initial noise scale)")
claim(DOC, "sampling_timesteps", kind="known-answer", operations=(_op("sampling_timesteps"),),
      statement="A discrete sampler steps from each listed timestep to the next listed one (the last to -1, "
                "alpha_bar = 1): for T = 1000 and N = 10, linspace lists 999, 888, ..., 0 (stride 111) and leading "
                "900, ..., 0 (stride 100); trailing with N = 7 lists 999, 856, 713, 570, 428, 285, 142; every list "
                "is strictly decreasing.",
      source="Lin et al. 2024 Table 2; diffusers issues #12633, #11347 (DDIM) and PR #9384 (DDPM's fix)")
claim(DOC, "contract", kind="contract",
      operations=(_op("to_denoised"), _op("heun_sampler"), _op("stochastic_sampler"), _op("time_steps"),
                  _op("preconditioning"), _op("ddim_step")),
      statement="Malformed input (unknown kind or prediction, shape mismatch, non-decreasing time steps, sigma <= 0, "
                "alpha_bar outside (0, 1), v or flow with an inconsistent s, a denoiser that is not callable) is "
                "rejected with an error naming the argument.",
      source="design.md (bad input)")
