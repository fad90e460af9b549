"""The other samplers' steps in EDM's frame (catalogue/edm.md A.7-A.8): Euler in sigma, DDIM, DDPM, rectified
flow, the flow-matching time shift, the ancestral split of a step, and the discrete timesteps DDPM/DDIM visit.
"""

from __future__ import annotations

import math

import torch

from eqspec.contracts import ArgumentError
from eqspec.outputs import Output
from eqspec.registry import operation, spec

from ..validators import F64, as64, check_choice, check_count, check_real
from .conventions import DOC, _x


def _step_args(pred_name, pred, x):
    P, X = _x(pred_name, pred), _x("x", x)
    if P.shape != X.shape:
        raise ArgumentError(pred_name, f"{pred_name} must have x's shape {tuple(X.shape)}, got {tuple(P.shape)}")
    return P, X


@operation(
    DOC,
    latex=r"x_{i+1}=x_i+(\sigma_{i+1}-\sigma_i)\,\frac{x_i-D(x_i;\sigma_i)}{\sigma_i}",
    source="EDM Algorithm 1 with sigma = t, s = 1 (Euler); k-diffusion sampling.py sample_euler / to_d",
    returns="x_next",
    summary="One Euler step of dx/dsigma = (x - D) / sigma from sigma to sigma_next (sigma = t, s = 1), given the "
            "denoiser output at (x, sigma). sigma, sigma_next: numbers or tensors broadcastable to x.",
    dtypes=("float64", "float32"),
    baseline="torch.batched",
    outputs=(Output("x_next", shape="x.shape", dtype="x", device="x"),),
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
    # each bound names the argument it bounds; the order of the two is both arguments' fault
    if bool((a >= 1).any()):
        raise ArgumentError("alpha_bar", "alpha_bar must lie in (0, 1)")
    if bool((a_prev > 1).any()):
        raise ArgumentError("alpha_bar_prev", "alpha_bar_prev must lie in (0, 1]")
    if bool((a_prev < a).any()):
        raise ArgumentError(("alpha_bar", "alpha_bar_prev"),
                            "alpha_bar_prev must be >= alpha_bar (the previous step has less noise)")
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
    outputs=(Output("x_prev", shape="x.shape", dtype="x", device="x"),),
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
    outputs=(Output("x_prev", shape="x.shape", dtype="x", device="x"),),
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
    outputs=(Output("x_next", shape="x.shape", dtype="x", device="x"),),
)
def flow_euler_step(v_hat: torch.Tensor, x: torch.Tensor, t, t_next):
    V, X = _step_args("v_hat", v_hat, x)
    T, T_next = as64("t", t, X, nonnegative=True), as64("t_next", t_next, X, nonnegative=True)
    return (X + (T_next - T) * V).to(x.dtype)


@operation(
    DOC,
    latex=r"\sigma'=\frac{s\,\sigma}{1+(s-1)\,\sigma}",
    source="SD3 (Esser et al. 2024) time shift; diffusers FlowMatchEulerDiscreteScheduler (shift)",
    returns="sigma_shifted",
    summary="The flow-matching time shift of sigma in [0, 1] by shift > 0 (a tensor; same shape and dtype).",
    dtypes=("float64", "float32"),
    outputs=(Output("sigma_shifted", shape="sigma.shape", dtype="sigma", device="sigma"),),
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
    outputs=(
        Output("sigma_down", shape="sigma_to.shape", dtype="sigma_to", device="sigma_to"),
        Output("sigma_up", shape="sigma_to.shape", dtype="sigma_to", device="sigma_to"),
    ),
)
def ancestral_split(sigma_from: torch.Tensor, sigma_to: torch.Tensor, *, eta: float = 1.0):
    F_, T_ = _x("sigma_from", sigma_from), _x("sigma_to", sigma_to)
    if F_.shape != T_.shape:
        raise ArgumentError("sigma_to", f"sigma_to must have sigma_from's shape {tuple(F_.shape)}, got "
                            f"{tuple(T_.shape)}")
    if not bool((F_ > 0).all()):
        raise ArgumentError("sigma_from", "sigma_from must be > 0")
    if not bool((T_ >= 0).all()):
        raise ArgumentError("sigma_to", "sigma_to must be >= 0")
    if not bool((T_ <= F_).all()):  # the order of the two is both arguments' fault
        raise ArgumentError(("sigma_from", "sigma_to"), "sigma_to must be <= sigma_from (a step towards less noise)")
    eta = check_real("eta", eta, low=0.0)
    up = torch.minimum(T_, eta * torch.sqrt(T_**2 * (F_**2 - T_**2) / F_**2))
    down = torch.sqrt(T_**2 - up**2)
    return down.to(sigma_to.dtype), up.to(sigma_to.dtype)


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
    outputs=(
        Output("timesteps", shape="(N,)", dtype="int64", device="cpu"),
        Output("prev_timesteps", shape="(N,)", dtype="int64", device="cpu"),
    ),
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
        # the first N of diffusers' arange: its float step T/N can round down and list an N+1-th value (-1 at
        # T = 261, N = 55); the values themselves are T - i T/N in the same arithmetic
        ts = torch.from_numpy(np.round(np.arange(T, 0, -T / N)[:N]) - 1)
    ts = ts.to(torch.int64)
    return ts, torch.cat([ts[1:], torch.tensor([-1], dtype=torch.int64)])
