"""EDM Table 1: the schedules sigma(t) and s(t) of VP, VE, EDM (also iDDPM's sampler) and flow matching, their
derivatives and inverses, and the constants of Table 1's columns (catalogue/edm.md A.1-A.2).
"""

from __future__ import annotations

import torch

from eqspec.contracts import ArgumentError
from eqspec.outputs import Output
from eqspec.registry import operation, spec

from ..validators import check_choice
from .conventions import DOC, _x

SIGMA_DATA = 0.5
VP_BETA_D, VP_BETA_MIN, VP_M = 19.9, 0.1, 1000
VP_EPS_S, VP_EPS_T = 1e-3, 1e-5
VE_SIGMA_MIN, VE_SIGMA_MAX = 0.02, 100.0
EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0
P_MEAN, P_STD = -1.2, 1.2
IDDPM_M, IDDPM_C1, IDDPM_C2, IDDPM_J0 = 1000, 0.001, 0.008, 8
KINDS = ("vp", "ve", "iddpm", "edm")  # Table 1's columns
SCHEDULES = ("vp", "ve", "edm", "fm")  # (s, sigma) pairs: iDDPM samples with sigma = t, s = 1 like EDM


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


@operation(
    DOC,
    latex=r"x_t=s(t)\,(x_0+\sigma(t)\,\epsilon):\ (\sigma,s,\dot\sigma,\dot s)(t)",
    source="EDM §2 eq. 4 and Table 1; catalogue/edm.md A.1-A.2",
    returns="(sigma, s, sigma_dot, s_dot)",
    summary="The noise level sigma(t), the scale s(t) and their time derivatives for kind 'vp' (beta_d, beta_min), "
            "'ve' (sigma = sqrt t), 'edm' (sigma = t; also iDDPM's sampler) or 'fm' (s = 1 - t, sigma = t / (1 - t)). "
            "t: tensor; outputs in t's dtype.",
    dtypes=("float64", "float32"),
    outputs=(
        Output("sigma", shape="t.shape", dtype="t", device="t"),
        Output("s", shape="t.shape", dtype="t", device="t"),
        Output("sigma_dot", shape="t.shape", dtype="t", device="t"),
        Output("s_dot", shape="t.shape", dtype="t", device="t"),
    ),
    capabilities=tuple(f"kind:{k}" for k in SCHEDULES),
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
        sigma, s, sigma_dot, s_dot = T.clone(), one, one, zero  # sigma a copy: no output aliasing the input t
    else:
        sigma, s, sigma_dot, s_dot = T / (1 - T), 1 - T, 1 / (1 - T) ** 2, -one
    return tuple(v.to(t.dtype) for v in (sigma, s, sigma_dot, s_dot))
