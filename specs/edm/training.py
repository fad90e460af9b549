"""EDM §5 and Table 1's training: the preconditioning c_skip, c_out, c_in, c_noise and the loss weight lambda
(catalogue/edm.md A.2), the training noise distribution, the denoiser D built from a raw network F (eq. 7), its
loss (eq. 2, 8) and the effective training target.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from eqspec.contracts import ArgumentError
from eqspec.outputs import Output
from eqspec.registry import operation, spec

from ..validators import F64, check_choice, check_real
from .conventions import DOC, _x
from .discretization import iddpm_u
from .table1 import (
    IDDPM_M,
    KINDS,
    P_MEAN,
    P_STD,
    SIGMA_DATA,
    VE_SIGMA_MAX,
    VE_SIGMA_MIN,
    VP_EPS_T,
    VP_M,
    vp_sigma_inv,
    vp_sigma_s,
)


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
    outputs=(
        Output("c_skip", shape="sigma.shape", dtype="sigma", device="sigma"),
        Output("c_out", shape="sigma.shape", dtype="sigma", device="sigma"),
        Output("c_in", shape="sigma.shape", dtype="sigma", device="sigma"),
        Output("c_noise", shape="sigma.shape", dtype="sigma", device="sigma"),
        Output("weight", shape="sigma.shape", dtype="sigma", device="sigma"),
    ),
    capabilities=tuple(f"kind:{k}" for k in KINDS),
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
        c_skip, c_out, c_in, c_noise = one, S.clone(), one, torch.log(0.5 * S)  # c_out a copy, not the input
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
    outputs=(Output("sigma", shape="u.shape", dtype="u", device="u"),),
    capabilities=tuple(f"kind:{k}" for k in KINDS),
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


@operation(
    DOC,
    latex=r"\mathcal L=\lambda(\sigma)\,\|D_\theta(y+n;\sigma)-y\|_2^2,\quad n\sim\mathcal N(0,\sigma^2I)",
    source="EDM eq. 2 and 8, Table 1 (loss weighting); training/loss.py (every class)",
    returns="loss",
    summary="Per-sample training loss lambda(sigma) ||D(y + n; sigma) - y||^2 (summed over all but the batch "
            "dimension) with D built from the raw network F(x_in, c_noise) by Table 1's preconditioning. "
            "y, n (B, ...), sigma (B,) -> loss (B,).",
    dtypes=("float64", "float32"),
    outputs=(Output("loss", shape="(y.shape[0],)", dtype="y", device="y"),),
    capabilities=tuple(f"kind:{k}" for k in KINDS),
)
def denoiser_loss(F: Callable, y: torch.Tensor, n: torch.Tensor, sigma: torch.Tensor, *, kind: str = "edm",
                  sigma_data: float = SIGMA_DATA):
    if not callable(F):
        raise ArgumentError("F", f"F must be callable F(x_in, c_noise), got {type(F).__name__}")
    Y, Nn, S = _x("y", y), _x("n", n), _x("sigma", sigma)
    if Y.dim() < 1:
        raise ArgumentError("y", f"y must have a batch axis (B, ...), got shape {tuple(Y.shape)}")
    if Nn.shape != Y.shape:
        raise ArgumentError("n", f"n must have y's shape {tuple(Y.shape)}, got {tuple(Nn.shape)}")
    if S.shape != (Y.shape[0],):
        raise ArgumentError("sigma", f"sigma must have shape (B,) = {(Y.shape[0],)}, got {tuple(S.shape)}")
    weight = preconditioning(S, kind=kind, sigma_data=sigma_data)[4]
    D = denoiser(lambda a, c: F(a, c).to(F64), Y + Nn, S, kind=kind, sigma_data=sigma_data)
    return (weight * ((D - Y) ** 2).reshape(Y.shape[0], -1).sum(1)).to(y.dtype)


@spec(DOC, latex=r"F_{target}=\frac{y-c_{skip}(\sigma)(y+n)}{c_{out}(\sigma)}",
      source="EDM eq. 8; k-diffusion layers.py Denoiser.loss")
def effective_target(y, n, sigma, *, kind: str = "edm", sigma_data: float = SIGMA_DATA):
    c_skip, c_out, *_ = (_batch_view(c, y) for c in preconditioning(sigma, kind=kind, sigma_data=sigma_data))
    return (y - c_skip * (y + n)) / c_out
