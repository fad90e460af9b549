"""EDM's samplers (catalogue/edm.md A.5): Algorithm 1 (Heun's method for any s(t) and sigma(t), the last step
Euler), Algorithm 2's churn and its stochastic sampler, and the initial noise of Algorithm 1 line 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from eqspec.contracts import ArgumentError
from eqspec.outputs import Output
from eqspec.registry import operation

from ..validators import F64, check_choice, check_count, check_real, check_tensor
from .conventions import DOC, _x
from .ode import ode_derivative
from .table1 import SCHEDULES, schedule

GAMMA_MAX = math.sqrt(2.0) - 1.0


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
    outputs=(Output("x_0", shape="x_T.shape", dtype="x_T", device="x_T"),),
    capabilities=tuple(f"kind:{k}" for k in SCHEDULES),
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
    outputs=(Output("x_hat", shape="x.shape", dtype="x", device="x"), Output("t_hat", kind="number")),
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
    outputs=(Output("x_0", shape="x_T.shape", dtype="x_T", device="x_T"),),
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


@operation(
    DOC,
    latex=r"x_0\sim\mathcal N\big(0,\ \sigma(t_0)^2\,s(t_0)^2\,I\big)",
    source="EDM Algorithm 1 line 1",
    returns="std",
    summary="The standard deviation of the sampler's initial noise at the first time t0 of schedule kind "
            "('edm', 'vp', 've', 'fm'): sigma(t0) s(t0), a Python float.",
    dtypes=("float64",),
    outputs=(Output("std", kind="number"),),
    capabilities=tuple(f"kind:{k}" for k in SCHEDULES),
)
def prior_std(t0: float, *, kind: str = "edm") -> float:
    t0 = check_real("t0", t0, low=0.0)
    sigma, s, _, _ = schedule(torch.tensor([t0], dtype=F64), kind=kind)
    return float(sigma[0] * s[0])
