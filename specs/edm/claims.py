"""The EDM document's claims: catalogue/edm.md properties 1-11, A.7, the bug lists, and the operations'
contracts.
"""

from __future__ import annotations

from eqspec.registry import claim

from .conventions import DOC


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
