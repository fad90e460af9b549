"""Mutants of the EDM document: the catalogue's plausible bugs (catalogue/edm.md, "plausible implementation bugs").

Each one is the spec with one line wrong, in float64, so that nothing but the bug separates it from the spec.
"""

from __future__ import annotations

import math

import torch

from specs import edm

from . import mutant

F64 = torch.float64
_M = "property_tests.mutants.edm"


# --- Table 1 ---------------------------------------------------------------------------------------------

def precond_c_noise_ln_sigma(sigma, *, kind="edm", sigma_data=edm.SIGMA_DATA):
    """c_noise = ln sigma instead of ln(sigma) / 4 (EDM), ln(2 sigma) instead of ln(sigma / 2) (VE)."""
    c_skip, c_out, c_in, c_noise, weight = edm.preconditioning(sigma, kind=kind, sigma_data=sigma_data)
    if kind == "edm":
        c_noise = 4 * c_noise
    elif kind == "ve":
        c_noise = torch.log(2 * sigma)
    return c_skip, c_out, c_in, c_noise, weight


def precond_c_out_without_sqrt(sigma, *, kind="edm", sigma_data=edm.SIGMA_DATA):
    c_skip, c_out, c_in, c_noise, weight = edm.preconditioning(sigma, kind=kind, sigma_data=sigma_data)
    if kind == "edm":
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2)
    return c_skip, c_out, c_in, c_noise, weight


def schedule_s_is_alpha_bar(t, *, kind="edm", **kw):
    """alpha_bar vs sqrt(alpha_bar): s(t) = 1 / e instead of 1 / sqrt(e) for VP."""
    sigma, s, sigma_dot, s_dot = edm.schedule(t, kind=kind, **kw)
    return (sigma, s**2, sigma_dot, s_dot) if kind == "vp" else (sigma, s, sigma_dot, s_dot)


def schedule_sigma_dot_without_half(t, *, kind="edm", **kw):
    sigma, s, sigma_dot, s_dot = edm.schedule(t, kind=kind, **kw)
    return (sigma, s, 2 * sigma_dot, s_dot) if kind == "vp" else (sigma, s, sigma_dot, s_dot)


def time_steps_ascending(N, **kw):
    t = edm.time_steps(N, **kw)
    return torch.cat([t[:-1].flip(0), t[-1:]])


def time_steps_without_trailing_zero(N, **kw):
    t = edm.time_steps(N + 1, **kw)
    return t[:-1]


def time_steps_power_in_float32(N, *, kind="edm", sigma_min=None, sigma_max=None, rho=7.0, dtype=F64, **kw):
    if kind != "edm":
        return edm.time_steps(N, kind=kind, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, dtype=dtype, **kw)
    lo, hi = sigma_min or edm.EDM_SIGMA_MIN, sigma_max or edm.EDM_SIGMA_MAX
    ramp = torch.arange(N, dtype=torch.float32) / max(N - 1, 1)
    t = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1)]).to(dtype)


def training_sigma_std_as_variance(u, *, kind="edm", P_mean=edm.P_MEAN, P_std=edm.P_STD):
    return edm.training_sigma(u, kind=kind, P_mean=P_mean, P_std=P_std**2)


def prior_std_plus_one(t0, *, kind="edm"):
    """Initialising an EDM model with sqrt(sigma_max^2 + 1) (diffusers' init_noise_sigma)."""
    return math.sqrt(edm.prior_std(t0, kind=kind) ** 2 + 1)


def loss_lambda_twice(F, y, n, sigma, *, kind="edm", sigma_data=edm.SIGMA_DATA):
    weight = edm.preconditioning(sigma.double(), kind=kind, sigma_data=sigma_data)[4]
    return edm.denoiser_loss(F, y, n, sigma, kind=kind, sigma_data=sigma_data) * weight.to(y.dtype)


# --- conversions and the ODE ---------------------------------------------------------------------------

def to_denoised_v_sign_flip(pred, x, sigma, s, *, prediction="epsilon"):
    """Issue #1481's claim taken at its word: the v-branch c_out with the opposite sign."""
    return edm.to_denoised(-pred if prediction == "v" else pred, x, sigma, s, prediction=prediction)


def to_denoised_epsilon_is_F(pred, x, sigma, s, *, prediction="epsilon"):
    """EDMEuler's 'epsilon': c_skip y + c_out F with EDM's c_out = +sigma sigma_d / sqrt(sigma^2 + sigma_d^2)."""
    if prediction != "epsilon":
        return edm.to_denoised(pred, x, sigma, s, prediction=prediction)
    y = x.double() / s
    c_skip, c_out, *_ = edm.preconditioning(torch.as_tensor(sigma, dtype=F64))
    return (c_skip * y + c_out * pred.double()).to(x.dtype)


def to_denoised_accepts_anything(pred, x, sigma, s, *, prediction="epsilon"):
    """No validation: an unknown prediction is treated as epsilon, shapes broadcast."""
    return (x / s - sigma * pred).to(x.dtype)


def ode_without_chain_rule(denoised, x, sigma, s, sigma_dot, s_dot):
    """eq. 4 with the score in y instead of x: the 1/s factor forgotten."""
    D, X = denoised.double(), x.double()
    score_y = edm.score_from_denoised(D, X / s, sigma)
    return edm.ode_derivative_from_score(score_y, X, sigma, s, sigma_dot, s_dot).to(x.dtype)


# --- samplers ------------------------------------------------------------------------------------------

def heun_on_last_step(denoiser, x_T, t_steps, *, kind="edm", second_order=True):
    """Heun also on the step to sigma = 0 (a division by t_N = 0)."""
    T = edm.check_sampler_args(denoiser, x_T, t_steps)
    sig, s, sig_dot, s_dot = (v.tolist() for v in edm.schedule(T, kind=kind))
    x = x_T.double()
    with torch.no_grad():
        for i in range(len(T) - 1):
            h = float(T[i + 1] - T[i])
            d = [None, None]
            for k, j in ((0, i), (1, i + 1)):
                xx = x if k == 0 else x + h * d[0]
                D = denoiser((xx / s[j]).to(x_T.dtype), sig[j]).double()
                d[k] = (sig_dot[j] / sig[j] + s_dot[j] / s[j]) * xx - sig_dot[j] * s[j] / sig[j] * D \
                    if sig[j] != 0 else (xx - D) / 0.0
            x = x + h * (0.5 * d[0] + 0.5 * d[1]) if second_order else x + h * d[0]
    return x.to(x_T.dtype)


def heun_corrector_divides_by_sigma_i(denoiser, x_T, t_steps, *, kind="edm", second_order=True):
    """The second stage denoises x_{i+1} at t_{i+1} but keeps t_i's coefficients (the division by sigma_i that
    diffusers PR #1512 fixed)."""
    T = edm.check_sampler_args(denoiser, x_T, t_steps)
    sig, s, sig_dot, s_dot = (v.tolist() for v in edm.schedule(T, kind=kind))

    def d(x, i, j):
        D = denoiser((x / s[j]).to(x_T.dtype), sig[j]).double()
        return edm.ode_derivative(D, x, sig[i], s[i], sig_dot[i], s_dot[i])

    x = x_T.double()
    for i in range(len(T) - 1):
        h = float(T[i + 1] - T[i])
        d_i = d(x, i, i)
        x_next = x + h * d_i
        if second_order and sig[i + 1] != 0:
            x_next = x + h * (0.5 * d_i + 0.5 * d(x_next, i, i + 1))
        x = x_next
    return x.to(x_T.dtype)


def heun_euler_only(denoiser, x_T, t_steps, *, kind="edm", second_order=True):
    return edm.heun_sampler(denoiser, x_T, t_steps, kind=kind, second_order=False)


def heun_ignores_kind(denoiser, x_T, t_steps, *, kind="edm", second_order=True):
    """Treats every schedule as sigma = t, s = 1 (FM time read as EDM sigma)."""
    return edm.heun_sampler(denoiser, x_T, t_steps, kind="edm", second_order=second_order)


def heun_without_chain_rule(denoiser, x_T, t_steps, *, kind="edm", second_order=True):
    """Algorithm 1 with the denoiser given x instead of x / s."""
    T = edm.check_sampler_args(denoiser, x_T, t_steps)
    sig, s, sig_dot, s_dot = (v.tolist() for v in edm.schedule(T, kind=kind))

    def d(x, i):
        D = denoiser(x.to(x_T.dtype), sig[i]).double()
        return (sig_dot[i] / sig[i] + s_dot[i] / s[i]) * x - sig_dot[i] * s[i] / sig[i] * D

    x = x_T.double()
    for i in range(len(T) - 1):
        h = float(T[i + 1] - T[i])
        d_i = d(x, i)
        x_next = x + h * d_i
        if second_order and sig[i + 1] != 0:
            x_next = x + h * (0.5 * d_i + 0.5 * d(x_next, i + 1))
        x = x_next
    return x.to(x_T.dtype)


def _stochastic(denoiser, x_T, sigmas, noise, *, S_churn=0.0, S_tmin=0.0, S_tmax=math.inf, S_noise=1.0,
                second_order=True, bug=""):
    T = edm.check_sampler_args(denoiser, x_T, sigmas, "sigmas")
    N = len(T) - 1
    t = T.tolist()
    x = x_T.double()
    for i in range(N):
        n_churn = N + 1 if bug == "n_plus_one" else N
        gamma = min(S_churn / n_churn, edm.GAMMA_MAX) if S_tmin <= t[i] <= S_tmax else 0.0
        if bug == "no_cap":
            gamma = S_churn / N if S_tmin <= t[i] <= S_tmax else 0.0
        t_hat = t[i] * (1 + gamma)
        x_hat = x + math.sqrt(t_hat**2 - t[i] ** 2) * S_noise * noise[i].double()
        d_i = (x_hat - denoiser(x_hat.to(x_T.dtype), t_hat).double()) / t_hat
        x_next = x_hat + (t[i + 1] - t_hat) * d_i
        if second_order and t[i + 1] != 0:
            t_c = t_hat if bug == "corrector_at_t_hat" else t[i + 1]
            d_prime = (x_next - denoiser(x_next.to(x_T.dtype), t_c).double()) / t_c
            x_next = x_hat + (t[i + 1] - t_hat) * (0.5 * d_i + 0.5 * d_prime)
        x = x_next
    return x.to(x_T.dtype)


def stochastic_corrector_at_t_hat(denoiser, x_T, sigmas, noise, **kw):
    return _stochastic(denoiser, x_T, sigmas, noise, bug="corrector_at_t_hat", **kw)


def stochastic_churn_n_plus_one(denoiser, x_T, sigmas, noise, **kw):
    return _stochastic(denoiser, x_T, sigmas, noise, bug="n_plus_one", **kw)


def stochastic_no_cap(denoiser, x_T, sigmas, noise, **kw):
    return _stochastic(denoiser, x_T, sigmas, noise, bug="no_cap", **kw)


def churn_n_plus_one(x, t, eps, *, S_churn, N, **kw):
    """S_churn / (N + 1): the number of time steps (N + 1 values) instead of the number of steps."""
    return edm.churn(x, t, eps, S_churn=S_churn, N=N + 1, **kw)


def churn_std_difference(x, t, eps, *, S_churn, N, S_tmin=0.0, S_tmax=math.inf, S_noise=1.0):
    """Adds noise of std t_hat - t instead of sqrt(t_hat^2 - t^2)."""
    gamma = min(S_churn / N, edm.GAMMA_MAX) if S_tmin <= t <= S_tmax else 0.0
    t_hat = t * (1 + gamma)
    return (x.double() + (t_hat - t) * S_noise * eps.double()).to(x.dtype), t_hat


# --- steps ---------------------------------------------------------------------------------------------

def _bars(alpha_bar, alpha_bar_prev):
    """alpha_bar and alpha_bar_prev as float64 tensors: numbers, or tensors broadcast against x (per sample)."""
    return (torch.as_tensor(alpha_bar, dtype=torch.float64), torch.as_tensor(alpha_bar_prev, dtype=torch.float64))


def ddim_clip_sample(eps_hat, x, alpha_bar, alpha_bar_prev, *, eta=0.0, noise=None):
    """diffusers' default clip_sample=True: x0_hat clamped to [-1, 1]."""
    a, a_prev = _bars(alpha_bar, alpha_bar_prev)
    x0 = ((x.double() - torch.sqrt(1 - a) * eps_hat.double()) / torch.sqrt(a)).clamp(-1, 1)
    eps = (x.double() - torch.sqrt(a) * x0) / torch.sqrt(1 - a)  # diffusers re-derives eps from the clipped x0
    return edm.ddim_step(eps, x.double(), a, a_prev, eta=eta, noise=noise).to(x.dtype)


def ddim_alpha_not_sqrt(eps_hat, x, alpha_bar, alpha_bar_prev, *, eta=0.0, noise=None):
    """alpha_bar where sqrt(alpha_bar) belongs (the diffusers #7046 confusion)."""
    a, a_prev = _bars(alpha_bar, alpha_bar_prev)
    x0 = (x.double() - (1 - a) * eps_hat.double()) / a
    var = edm.ddim_variance(a, a_prev, eta)
    out = a_prev * x0 + torch.sqrt((1 - a_prev - var).clamp(min=0)) * eps_hat.double()
    if eta > 0:
        out = out + torch.sqrt(var) * noise.double()
    return out.to(x.dtype)


def ddim_eta_not_squared(eps_hat, x, alpha_bar, alpha_bar_prev, *, eta=0.0, noise=None):
    a, a_prev = _bars(alpha_bar, alpha_bar_prev)
    x0 = (x.double() - torch.sqrt(1 - a) * eps_hat.double()) / torch.sqrt(a)
    var = eta * (1 - a_prev) / (1 - a) * (1 - a / a_prev)
    out = torch.sqrt(a_prev) * x0 + torch.sqrt((1 - a_prev - var).clamp(min=0)) * eps_hat.double()
    if eta > 0:
        out = out + torch.sqrt(var) * noise.double()
    return out.to(x.dtype)


def ddpm_variance_beta(eps_hat, x, alpha_bar, alpha_bar_prev, noise):
    """fixed_large: beta_t instead of the posterior beta_tilde."""
    a, a_prev = _bars(alpha_bar, alpha_bar_prev)
    beta = 1 - a / a_prev
    mean = edm.ddpm_step(eps_hat, x, a, a_prev, torch.zeros_like(noise)).double()
    return (mean + torch.sqrt(beta) * noise.double()).to(x.dtype)


def euler_divides_by_sigma_next(denoised, x, sigma, sigma_next):
    S, S_next = float(sigma), float(sigma_next)
    if S_next == 0:
        return edm.euler_step(denoised, x, sigma, sigma_next)
    return (x.double() + (S_next - S) * (x.double() - denoised.double()) / S_next).to(x.dtype)


def flow_euler_sign_flip(v_hat, x, t, t_next):
    return edm.flow_euler_step(-v_hat, x, t, t_next)


def flow_shift_inverted(sigma, shift):
    return edm.flow_shift(sigma, 1 / shift)


def ancestral_split_variance_as_std(sigma_from, sigma_to, *, eta=1.0):
    down, up = edm.ancestral_split(sigma_from, sigma_to, eta=eta)
    return sigma_to - up, up


def sampling_timesteps_fixed_stride(num_train_timesteps, N, *, spacing="leading"):
    """DDIM's prev = t - T // N whatever the spacing (diffusers #12633)."""
    ts, _ = edm.sampling_timesteps(num_train_timesteps, N, spacing=spacing)
    prev = ts - num_train_timesteps // N
    return ts, torch.where(prev < 0, torch.full_like(prev, -1), prev)


def _m(op, name, fn, targets, notes, **kw):
    # float64 only: the bugs are in the formulas, not in rounding, and one dtype keeps the kill matrix quick
    return mutant(f"edm.{op}", f"edm.{name}", f"{_M}:{fn.__name__}", targets=targets, notes=notes,
                  dtypes=("float64",), **kw)


MUTANTS = [
    _m("preconditioning", "c_noise_ln_sigma", precond_c_noise_ln_sigma, ("edm.preconditioning_known_answers",),
       "c_noise = ln sigma (EDM) and ln(2 sigma) (VE)"),
    _m("preconditioning", "c_out_without_sqrt", precond_c_out_without_sqrt, ("edm.preconditioning_identities",),
       "c_out = sigma sigma_d / (sigma^2 + sigma_d^2)"),
    _m("schedule", "s_is_alpha_bar", schedule_s_is_alpha_bar, ("edm.schedule_endpoints_and_inverse",),
       "VP s = alpha_bar instead of sqrt(alpha_bar)"),
    _m("schedule", "sigma_dot_without_half", schedule_sigma_dot_without_half, ("edm.schedule_derivatives",),
       "VP sigma_dot without the 1/2"),
    _m("time_steps", "ascending", time_steps_ascending, ("edm.time_steps",), "reversed (ascending) schedule"),
    _m("time_steps", "without_trailing_zero", time_steps_without_trailing_zero, ("edm.time_steps",),
       "N + 1 values without the trailing zero"),
    _m("time_steps", "power_in_float32", time_steps_power_in_float32, ("edm.time_steps",),
       "the rho = 7 power computed in float32"),
    _m("training_sigma", "std_as_variance", training_sigma_std_as_variance, ("edm.training_distribution",),
       "ln sigma with P_std used as a variance"),
    _m("prior_std", "plus_one", prior_std_plus_one, ("edm.prior_std",), "sqrt(sigma_max^2 + 1) initial noise"),
    _m("denoiser_loss", "lambda_twice", loss_lambda_twice, ("edm.denoiser_loss",),
       "lambda applied on top of the unit-weight F-loss"),
    _m("to_denoised", "v_sign_flip", to_denoised_v_sign_flip, ("edm.conversions_round_trip",),
       "c_out sign flipped for v-prediction"),
    _m("to_denoised", "epsilon_is_F", to_denoised_epsilon_is_F, ("edm.conversions_round_trip",),
       "EDMEuler's 'epsilon' (the network output F) taken as true epsilon"),
    _m("to_denoised", "accepts_anything", to_denoised_accepts_anything, ("edm.contract",),
       "no argument checks"),
    _m("ode_derivative", "without_chain_rule", ode_without_chain_rule, ("edm.ode_forms_agree",),
       "the 1/s chain-rule factor omitted"),
    _m("heun_sampler", "heun_on_last_step", heun_on_last_step, ("edm.heun_nfe_and_last_step",),
       "Heun on the last step (division by t_N = 0)"),
    _m("heun_sampler", "euler_only", heun_euler_only, ("edm.heun_order",), "second order never applied"),
    _m("heun_sampler", "heun_without_chain_rule", heun_without_chain_rule, ("edm.heun_order",),
       "denoiser fed x instead of x / s"),
    _m("heun_sampler", "ignores_kind", heun_ignores_kind, ("edm.heun_is_not_equivariant",),
       "every schedule integrated as sigma = t"),
    _m("heun_sampler", "corrector_divides_by_sigma_i", heun_corrector_divides_by_sigma_i,
       ("edm.samplers_reach_data",), "Heun's second stage divides by sigma_i"),
    _m("stochastic_sampler", "corrector_at_t_hat", stochastic_corrector_at_t_hat, ("edm.samplers_within_budget",),
       "Heun corrector evaluated at t_hat (diffusers #1512 class)"),
    _m("stochastic_sampler", "churn_n_plus_one", stochastic_churn_n_plus_one, ("edm.churn",),
       "S_churn / (N + 1)"),
    _m("stochastic_sampler", "no_cap", stochastic_no_cap, ("edm.churn",), "gamma not capped at sqrt 2 - 1"),
    _m("churn", "n_plus_one", churn_n_plus_one, ("edm.churn",), "S_churn / (N + 1)"),
    _m("churn", "std_difference", churn_std_difference, ("edm.churn",), "noise std t_hat - t"),
    _m("ddim_step", "clip_sample", ddim_clip_sample, ("edm.parameterisations_agree",),
       "clip_sample left on"),
    _m("ddim_step", "alpha_not_sqrt", ddim_alpha_not_sqrt, ("edm.parameterisations_agree", "edm.ddim_ddpm_steps"),
       "alpha_bar vs sqrt(alpha_bar)"),
    _m("ddim_step", "eta_not_squared", ddim_eta_not_squared, ("edm.ddim_ddpm_steps",), "variance with eta, not eta^2"),
    _m("ddpm_step", "variance_beta", ddpm_variance_beta, ("edm.ddim_ddpm_steps",), "beta_t instead of beta_tilde"),
    _m("euler_step", "divides_by_sigma_next", euler_divides_by_sigma_next, ("edm.parameterisations_agree",),
       "(x - D) / sigma_next"),
    _m("flow_euler_step", "sign_flip", flow_euler_sign_flip, ("edm.parameterisations_agree",), "v = x_0 - eps"),
    _m("flow_shift", "inverted", flow_shift_inverted, ("edm.flow_shift",), "shift 1 / s"),
    _m("sampling_timesteps", "fixed_stride", sampling_timesteps_fixed_stride, ("edm.sampling_timesteps",),
       "prev timestep t - T // N under every spacing"),
    _m("ancestral_split", "linear", ancestral_split_variance_as_std, ("edm.ancestral_split",),
       "sigma_down = sigma_to - sigma_up"),
]
