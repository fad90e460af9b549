"""EDM: one design space for flow matching, score matching (VE) and DDPM/DDIM (VP).

Paper: Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"
(arXiv:2206.00364), with its code NVlabs/edm (training/networks.py, training/loss.py, generate.py). Post: the seed's
"unifying diffusion models after EDM". Equations and conventions: catalogue/edm.md (A.1-A.8).

Notation (EDM §2, eq. 1-4): x_t = s(t) (x_0 + sigma(t) eps), so y = x / s is data plus N(0, sigma^2 I) noise
("EDM space"). A denoiser D(y; sigma) estimates E[x_0 | y]; the score is (D - y) / sigma^2. Flow matching
(s = 1 - t, sigma = t / (1 - t)), VE (s = 1) and VP/DDPM (s = 1 / sqrt(1 + sigma^2)) are all this form.

Conventions (design.md): sigma_data = 0.5; time-step schedules return N + 1 values ending in t_N = 0; the last
sampler step (to sigma = 0) is Euler. Everything is computed in float64 and returned in the input's dtype.

The package follows the paper: table1 (Table 1's schedules sigma(t), s(t), their derivatives and constants),
discretization (eq. 5 and Table 1's time steps), training (§5: Table 1's preconditioning, training noise
distribution and loss weighting; the denoiser of eq. 7 and its loss, eq. 2 and 8), ode (prediction conversions, the
score and the probability-flow ODE; eq. 3-4), samplers (Algorithms 1 and 2), steps (Euler, DDIM, DDPM and flow
steps, flow shift, ancestral split, discrete timesteps), gaussian (exact Gaussian and Gaussian-mixture oracles) and
claims. Importing the package registers them in that order; every name is re-exported here.
"""

from __future__ import annotations

from eqspec.contracts import ArgumentError

from ..validators import F64, as64, check_choice, check_count, check_real, check_tensor

# Each submodule registers its specs, operations and claims when imported: in the paper's order (the registry's
# and `python -m specs`'s), each after the ones it builds on, the claims last (they name registered operations).
# isort: off
from .conventions import DOC
from .table1 import (
    EDM_RHO,
    EDM_SIGMA_MAX,
    EDM_SIGMA_MIN,
    IDDPM_C1,
    IDDPM_C2,
    IDDPM_J0,
    IDDPM_M,
    KINDS,
    P_MEAN,
    P_STD,
    SCHEDULES,
    SIGMA_DATA,
    VE_SIGMA_MAX,
    VE_SIGMA_MIN,
    VP_BETA_D,
    VP_BETA_MIN,
    VP_EPS_S,
    VP_EPS_T,
    VP_M,
    schedule,
    sigma_inv,
    vp_derivatives,
    vp_sigma_inv,
    vp_sigma_s,
)
from .discretization import iddpm_u, rho_steps, time_steps
from .training import (
    denoiser,
    denoiser_loss,
    effective_target,
    normal_quantile,
    preconditioning,
    training_sigma,
)
from .ode import (
    PREDICTIONS,
    ode_derivative,
    ode_derivative_from_score,
    prediction_target,
    score_from_denoised,
    to_denoised,
)
from .samplers import (
    GAMMA_MAX,
    check_sampler_args,
    churn,
    heun_sampler,
    prior_std,
    stochastic_sampler,
)
from .steps import (
    SPACINGS,
    _alpha_bars,
    ancestral_split,
    ddim_step,
    ddim_variance,
    ddpm_step,
    dynamic_shift,
    euler_step,
    flow_euler_step,
    flow_shift,
    sampling_timesteps,
)
from .gaussian import gaussian_denoiser, gaussian_flow, ideal_denoiser
from .claims import _op
from .domains import DENOISERS  # noqa: F401 - the operations' domains (eqspec/domain.py), attached once all are registered
# isort: on

__all__ = [
    "ArgumentError", "DOC", "EDM_RHO", "EDM_SIGMA_MAX", "EDM_SIGMA_MIN", "F64", "GAMMA_MAX", "IDDPM_C1", "IDDPM_C2",
    "IDDPM_J0", "IDDPM_M", "KINDS", "PREDICTIONS", "P_MEAN", "P_STD", "SCHEDULES", "SIGMA_DATA", "SPACINGS",
    "VE_SIGMA_MAX", "VE_SIGMA_MIN", "VP_BETA_D", "VP_BETA_MIN", "VP_EPS_S", "VP_EPS_T", "VP_M", "_alpha_bars", "_op",
    "ancestral_split", "as64", "check_choice", "check_count", "check_real", "check_sampler_args", "check_tensor",
    "churn", "ddim_step", "ddim_variance", "ddpm_step", "denoiser", "denoiser_loss",
    "dynamic_shift", "effective_target", "euler_step", "flow_euler_step", "flow_shift", "gaussian_denoiser",
    "gaussian_flow", "heun_sampler", "iddpm_u", "ideal_denoiser", "normal_quantile", "ode_derivative",
    "ode_derivative_from_score", "preconditioning", "prediction_target", "prior_std", "rho_steps", "sampling_timesteps",
    "schedule", "score_from_denoised", "sigma_inv", "stochastic_sampler", "time_steps", "to_denoised", "training_sigma",
    "vp_derivatives", "vp_sigma_inv", "vp_sigma_s",
]
