"""EDM operations in plain torch: batched, on the input's device and in its dtype (float32 or float64).

Arguments are validated by the spec's own checks (specs/edm/); the arithmetic is done here, in x's dtype.
"""

from __future__ import annotations

import math

import torch

from eqspec.contracts import ArgumentError
from specs import edm as spec
from specs.validators import check_tensor


def _like(name, v, x, **kw):
    """A number or tensor checked by the spec, then in x's dtype on x's device."""
    return spec.as64(name, v, x, **kw).to(dtype=x.dtype)


def _pair(pred_name, pred, x):
    check_tensor(pred_name, pred)
    check_tensor("x", x)
    if pred.shape != x.shape:
        raise ArgumentError(pred_name, f"{pred_name} must have x's shape {tuple(x.shape)}, got {tuple(pred.shape)}")


def to_denoised(pred, x, sigma, s, *, prediction="epsilon"):
    spec.check_choice("prediction", prediction, spec.PREDICTIONS)
    _pair("pred", pred, x)
    S, s_ = _like("sigma", sigma, x, positive=True), _like("s", s, x, positive=True)
    if prediction == "v" and not torch.allclose((s_**2 * (1 + S**2)).double(), torch.ones((), dtype=torch.float64,
                                                                                          device=x.device), rtol=1e-5):
        raise ArgumentError("s", "s must be 1 / sqrt(1 + sigma^2) for a v-prediction (alpha^2 + sigma_vp^2 = 1)")
    if prediction == "flow" and not torch.allclose((s_ * (1 + S)).double(), torch.ones((), dtype=torch.float64,
                                                                                      device=x.device), rtol=1e-5):
        raise ArgumentError("s", "s must be 1 / (1 + sigma) for a flow-matching velocity (s = 1 - t, s sigma = t)")
    if prediction == "epsilon":
        return x / s_ - S * pred
    if prediction == "x0":
        return pred.clone()
    if prediction == "v":
        return s_ * x - s_ * S * pred
    if prediction == "flow":
        return x - s_ * S * pred
    return (x + (s_ * S) ** 2 * pred) / s_


def ode_derivative(denoised, x, sigma, s, sigma_dot, s_dot):
    _pair("denoised", denoised, x)
    S, s_ = _like("sigma", sigma, x, positive=True), _like("s", s, x, positive=True)
    Sd, sd = _like("sigma_dot", sigma_dot, x), _like("s_dot", s_dot, x)
    return (Sd / S + sd / s_) * x - Sd * s_ / S * denoised


def euler_step(denoised, x, sigma, sigma_next):
    _pair("denoised", denoised, x)
    S, S_next = _like("sigma", sigma, x, positive=True), _like("sigma_next", sigma_next, x, nonnegative=True)
    return x + (S_next - S) * (x - denoised) / S


def _alpha_bars(x, alpha_bar, alpha_bar_prev):
    a, a_prev = spec._alpha_bars(x, alpha_bar, alpha_bar_prev)  # the spec's range checks
    return a.to(x.dtype), a_prev.to(x.dtype)


def ddim_step(eps_hat, x, alpha_bar, alpha_bar_prev, *, eta=0.0, noise=None):
    _pair("eps_hat", eps_hat, x)
    a, a_prev = _alpha_bars(x, alpha_bar, alpha_bar_prev)
    eta = spec.check_real("eta", eta, low=0.0)
    if eta > 0 and noise is None:
        raise ArgumentError("noise", "noise must be given (a tensor of x's shape) when eta > 0")
    x0_hat = (x - torch.sqrt(1 - a) * eps_hat) / torch.sqrt(a)
    var = eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev)
    x_prev = torch.sqrt(a_prev) * x0_hat + torch.sqrt((1 - a_prev - var).clamp(min=0)) * eps_hat
    if eta > 0:
        _pair("noise", noise, x)
        x_prev = x_prev + torch.sqrt(var) * noise
    return x_prev


def ddpm_step(eps_hat, x, alpha_bar, alpha_bar_prev, noise):
    _pair("eps_hat", eps_hat, x)
    _pair("noise", noise, x)
    a, a_prev = _alpha_bars(x, alpha_bar, alpha_bar_prev)
    beta = 1 - a / a_prev
    x0_hat = (x - torch.sqrt(1 - a) * eps_hat) / torch.sqrt(a)
    mean = torch.sqrt(a_prev) * beta / (1 - a) * x0_hat + torch.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * x
    return mean + torch.sqrt((1 - a_prev) / (1 - a) * beta) * noise


def flow_euler_step(v_hat, x, t, t_next):
    _pair("v_hat", v_hat, x)
    T, T_next = _like("t", t, x, nonnegative=True), _like("t_next", t_next, x, nonnegative=True)
    return x + (T_next - T) * v_hat


def _denoised(denoiser, x, sigma):
    """The denoiser's output, which must have the shape of what it was given: broadcast against x, a wrong shape
    would pass silently where the spec's step rejects it."""
    D = denoiser(x, sigma)
    if not isinstance(D, torch.Tensor) or D.shape != x.shape:
        got = tuple(D.shape) if isinstance(D, torch.Tensor) else type(D).__name__
        raise ArgumentError("denoised", f"denoised (the denoiser's output) must have x's shape {tuple(x.shape)}, "
                            f"got {got}")
    return D


def heun_sampler(denoiser, x_T, t_steps, *, kind="edm", second_order=True):
    T = spec.check_sampler_args(denoiser, x_T, t_steps)
    spec.check_choice("kind", kind, spec.SCHEDULES)
    sig, s, sig_dot, s_dot = (v.tolist() for v in spec.schedule(T, kind=kind))  # the times, on the host

    def d(x, i):
        D = _denoised(denoiser, x / s[i], sig[i])
        return (sig_dot[i] / sig[i] + s_dot[i] / s[i]) * x - sig_dot[i] * s[i] / sig[i] * D

    x = x_T
    for i in range(len(T) - 1):
        h = float(T[i + 1] - T[i])
        d_i = d(x, i)
        x_next = x + h * d_i
        if second_order and sig[i + 1] != 0:
            x_next = x + h * (0.5 * d_i + 0.5 * d(x_next, i + 1))
        x = x_next
    return x


def stochastic_sampler(denoiser, x_T, sigmas, noise, *, S_churn=0.0, S_tmin=0.0, S_tmax=math.inf, S_noise=1.0,
                       second_order=True):
    T = spec.check_sampler_args(denoiser, x_T, sigmas, "sigmas")
    N = len(T) - 1
    check_tensor("noise", noise)
    if tuple(noise.shape) != (N, *x_T.shape):
        raise ArgumentError("noise",
                            f"noise must have shape (N, *x_T.shape) = {(N, *x_T.shape)}, got {tuple(noise.shape)}")
    S_churn = spec.check_real("S_churn", S_churn, low=0.0)
    S_tmin = spec.check_real("S_tmin", S_tmin, allow_inf=True)
    S_tmax = spec.check_real("S_tmax", S_tmax, allow_inf=True)
    S_noise = spec.check_real("S_noise", S_noise, low=0.0)
    t = T.tolist()
    x = x_T
    for i in range(N):
        gamma = min(S_churn / N, spec.GAMMA_MAX) if S_tmin <= t[i] <= S_tmax else 0.0
        t_hat = t[i] * (1 + gamma)
        x_hat = x + math.sqrt(t_hat**2 - t[i] ** 2) * S_noise * noise[i].to(x.dtype) if gamma > 0 else x
        d_i = (x_hat - _denoised(denoiser, x_hat, t_hat)) / t_hat
        x_next = x_hat + (t[i + 1] - t_hat) * d_i
        if second_order and t[i + 1] != 0:
            d_prime = (x_next - _denoised(denoiser, x_next, t[i + 1])) / t[i + 1]
            x_next = x_hat + (t[i + 1] - t_hat) * (0.5 * d_i + 0.5 * d_prime)
        x = x_next
    return x
