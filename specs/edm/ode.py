"""EDM eq. 3-4: any network prediction (epsilon, x0, v, flow velocity, score) as a denoiser output D(y; sigma),
y = x / s (catalogue/edm.md A.6), the score, and the probability-flow ODE in (s, sigma) form (A.3).
"""

from __future__ import annotations

import torch

from eqspec.contracts import ArgumentError
from eqspec.outputs import Output
from eqspec.registry import operation, spec

from ..validators import as64, check_choice
from .conventions import DOC, _x

PREDICTIONS = ("epsilon", "x0", "v", "flow", "score")


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
    outputs=(Output("denoised", shape="x.shape", dtype="x", device="x"),),
    capabilities=tuple(f"prediction:{p}" for p in PREDICTIONS),
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
        D = P.clone()  # a new tensor, not the caller's pred
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


@operation(
    DOC,
    latex=r"\frac{dx}{dt}=\Big(\frac{\dot\sigma}{\sigma}+\frac{\dot "
          r"s}{s}\Big)x-\frac{\dot\sigma\,s}{\sigma}\,D\big(\tfrac{x}{s};\sigma\big)",
    source="EDM eq. 4 with eq. 3 substituted; Algorithm 1 line 4; generate.py ablation_sampler (d_cur)",
    returns="dx_dt",
    summary="The probability-flow ODE's dx/dt at x given the denoiser output D(x/s; sigma) and (sigma, s, sigma_dot, "
            "s_dot) at t (numbers or tensors broadcastable to x).",
    dtypes=("float64", "float32"),
    outputs=(Output("dx_dt", shape="x.shape", dtype="x", device="x"),),
)
def ode_derivative(denoised: torch.Tensor, x: torch.Tensor, sigma, s, sigma_dot, s_dot):
    D, X = _x("denoised", denoised), _x("x", x)
    if D.shape != X.shape:
        raise ArgumentError("denoised", f"denoised must have x's shape {tuple(X.shape)}, got {tuple(D.shape)}")
    S, s_ = as64("sigma", sigma, X, positive=True), as64("s", s, X, positive=True)
    Sd, sd = as64("sigma_dot", sigma_dot, X), as64("s_dot", s_dot, X)
    return ((Sd / S + sd / s_) * X - Sd * s_ / S * D).to(x.dtype)
