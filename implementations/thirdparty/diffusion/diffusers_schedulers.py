"""diffusers schedulers driven offline, with no model, as implementations of the EDM document's operations.

Each adapter builds a scheduler, points its tables at the inputs (sigmas, alpha bars, timesteps), passes the given
prediction to ``step`` (the network output a model would have produced) and returns what the scheduler computed.
Nothing here re-derives a formula: the numbers are diffusers'. Where a scheduler draws its own noise, the noise the
operation is given is handed to it (``variance_noise``, or diffusers' ``randn_tensor`` for DDPM).
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.schedulers import scheduling_ddpm

from specs import edm as spec

logging.getLogger("diffusers").setLevel(logging.ERROR)  # "scale_model_input was not called" on every step

F64 = torch.float64
T_TRAIN = 1000


def _scalar(name: str, v) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 and not bool((v == v.flatten()[0]).all()):
            # a diffusers scheduler steps the whole batch at one timestep: a value per sample is not its API
            raise NotImplementedError(f"{name}: a diffusers scheduler takes one timestep for the whole batch, got "
                                      f"{v.numel()} different values")
        v = v.flatten()[0].item()
    return float(v)


def _at_step(scheduler, sigmas) -> None:
    """Point a sigma-based scheduler at the two noise levels (sigma, sigma_next) and at step 0."""
    scheduler.sigmas = torch.tensor(sigmas, dtype=F64)
    scheduler.timesteps = torch.arange(len(sigmas) - 1, dtype=torch.float32)
    scheduler._step_index = 0
    scheduler._begin_index = 0
    scheduler.is_scale_input_called = True


# --- EDMEulerScheduler -------------------------------------------------------------------------------------

def edm_euler_time_steps(N, *, kind="edm", sigma_min=None, sigma_max=None, rho=7.0, epsilon_s=1e-3,
                         dtype=torch.float64):
    if kind != "edm":
        raise NotImplementedError(f"kind={kind!r}: EDMEulerScheduler has only EDM's rho schedule")
    lo = spec.EDM_SIGMA_MIN if sigma_min is None else sigma_min
    if lo < torch.finfo(torch.float32).tiny and torch.finfo(dtype).bits > 32:
        # set_timesteps computes in float64 but stores float32: such levels are 0 there, whatever dtype is asked
        raise NotImplementedError(f"sigma_min = {lo:g} in {dtype}: EDMEulerScheduler stores its sigmas in float32, "
                                  "so it has no noise level below 1.2e-38")
    s = EDMEulerScheduler(sigma_min=lo, sigma_max=spec.EDM_SIGMA_MAX if sigma_max is None else sigma_max, rho=rho)
    s.set_timesteps(N)
    return s.sigmas.to(dtype)


def edm_euler_prior_std(t0, *, kind="edm"):
    if kind != "edm":
        raise NotImplementedError(f"kind={kind!r}: EDMEulerScheduler samples in EDM's sigma only")
    return float(EDMEulerScheduler(sigma_max=t0).init_noise_sigma)


def edm_euler_to_denoised(pred, x, sigma, s, *, prediction="epsilon"):
    """precondition_outputs: 'epsilon' as configured (sigma_data 0.5), 'v' as v_prediction with sigma_data = 1."""
    if prediction not in ("epsilon", "v"):
        raise NotImplementedError(f"prediction={prediction!r}: EDMEulerScheduler has 'epsilon' and 'v_prediction'")
    scheduler = EDMEulerScheduler(prediction_type="epsilon" if prediction == "epsilon" else "v_prediction",
                                  sigma_data=0.5 if prediction == "epsilon" else 1.0)
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    y = x / torch.as_tensor(s, dtype=x.dtype, device=x.device)
    return scheduler.precondition_outputs(y, pred, sigma_t).to(x.dtype)


def edm_euler_step(denoised, x, sigma, sigma_next):
    scheduler = EDMEulerScheduler()
    _at_step(scheduler, [_scalar("sigma", sigma), _scalar("sigma_next", sigma_next)])
    out = scheduler.step(torch.zeros_like(x), scheduler.timesteps[0], x, pred_original_sample=denoised,
                         return_dict=False)
    return out[0].to(x.dtype)


def edm_euler_churn(x, t, eps, *, S_churn, N, S_tmin=0.0, S_tmax=math.inf, S_noise=1.0):
    """diffusers has the churn only inside step, which hands the churned (x_hat, sigma_hat) to precondition_outputs
    when no pred_original_sample is given: read there, as step computed them (x_hat in float32, sigma_hat in float64).
    N + 1 noise levels, since diffusers divides S_churn by len(sigmas) - 1."""
    scheduler = EDMEulerScheduler()
    _at_step(scheduler, [float(t)] * (N + 1))
    seen = {}

    def read(sample, model_output, sigma):
        seen["x_hat"], seen["t_hat"] = sample.clone(), float(sigma)
        return torch.zeros_like(sample)

    scheduler.precondition_outputs = read
    with _noise(eps):  # the rest of the step (NaN at t = 0, where it divides by sigma_hat = 0) is not read
        scheduler.step(torch.zeros_like(x), scheduler.timesteps[0], x, s_churn=S_churn, s_tmin=S_tmin, s_tmax=S_tmax,
                       s_noise=S_noise, return_dict=False)
    return seen["x_hat"].to(x.dtype), seen["t_hat"]


@contextlib.contextmanager
def _noise(eps):
    """Hand `eps` to the scheduler modules' randn_tensor (they import it by name)."""
    from diffusers.schedulers import scheduling_edm_euler, scheduling_euler_discrete

    modules = (scheduling_ddpm, scheduling_edm_euler, scheduling_euler_discrete)
    saved = [m.randn_tensor for m in modules]
    for m in modules:
        m.randn_tensor = lambda shape, generator=None, device=None, dtype=None, **kw: eps.to(dtype=dtype)
    try:
        yield
    finally:
        for m, fn in zip(modules, saved):
            m.randn_tensor = fn


# --- EulerDiscreteScheduler --------------------------------------------------------------------------------

_EULER_PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction", "x0": "sample"}


def euler_discrete_to_denoised(pred, x, sigma, s, *, prediction="epsilon"):
    """step(...).pred_original_sample, with the sample in EDM space y = x / s."""
    if prediction not in _EULER_PREDICTIONS:
        raise NotImplementedError(f"prediction={prediction!r}: EulerDiscreteScheduler has epsilon, v_prediction and "
                                  "sample")
    scheduler = EulerDiscreteScheduler(prediction_type=_EULER_PREDICTIONS[prediction])
    sig = torch.as_tensor(sigma, dtype=F64).reshape(-1)
    s_ = torch.as_tensor(s, dtype=F64, device=x.device)
    if sig.numel() == 1:
        _at_step(scheduler, [float(sig), 0.0])
        out = scheduler.step(pred, scheduler.timesteps[0], x / s_.to(x.dtype), return_dict=True)
        # for 'sample' step passes pred itself through as pred_original_sample: this returns a new tensor
        return out.pred_original_sample.to(x.dtype, copy=True)
    rows = []  # one sigma per sample: one scheduler step per row
    for i in range(x.shape[0]):
        _at_step(scheduler, [float(sig[i]), 0.0])
        s_i = s_.reshape(-1)[i] if s_.numel() > 1 else s_
        rows.append(scheduler.step(pred[i:i + 1], scheduler.timesteps[0], x[i:i + 1] / s_i.to(x.dtype),
                                   return_dict=True).pred_original_sample)
    return torch.cat(rows).to(x.dtype)


def euler_discrete_step(denoised, x, sigma, sigma_next):
    scheduler = EulerDiscreteScheduler(prediction_type="sample")
    _at_step(scheduler, [_scalar("sigma", sigma), _scalar("sigma_next", sigma_next)])
    return scheduler.step(denoised, scheduler.timesteps[0], x, return_dict=False)[0].to(x.dtype)


# --- DDIMScheduler / DDPMScheduler -------------------------------------------------------------------------

def _discrete(cls, alpha_bar, alpha_bar_prev, **config):
    """A scheduler whose table holds alpha_bar at t = 900 and alpha_bar_prev at its previous timestep 800
    (T = 1000, N = 10, 'leading' spacing: the one spacing where DDIM's t - T // N is the listed next timestep)."""
    scheduler = cls(num_train_timesteps=T_TRAIN, timestep_spacing="leading", **config)
    scheduler.set_timesteps(10)
    table = scheduler.alphas_cumprod.to(F64).clone()
    table[900], table[800] = _scalar("alpha_bar", alpha_bar), _scalar("alpha_bar_prev", alpha_bar_prev)
    scheduler.alphas_cumprod = table
    return scheduler


def _ddim(eps_hat, x, alpha_bar, alpha_bar_prev, eta, noise, **config):
    if eta > 1:
        # the spec clamps 1 - alpha_bar_prev - sigma_t^2 at 0 beyond eta = 1; step takes its square root as it is
        raise NotImplementedError(f"eta = {eta:g}: DDIMScheduler has DDIM's eta in [0, 1] (eta = 1 is DDPM); beyond "
                                  "1 sigma_t^2 may exceed 1 - alpha_bar_prev and step returns NaN, where the spec "
                                  "clamps the direction term at 0")
    scheduler = _discrete(DDIMScheduler, alpha_bar, alpha_bar_prev, **config)
    out = scheduler.step(eps_hat, 900, x, eta=eta, variance_noise=noise if eta > 0 else None, return_dict=False)
    return out[0].to(x.dtype)


def ddim_step(eps_hat, x, alpha_bar, alpha_bar_prev, *, eta=0.0, noise=None):
    return _ddim(eps_hat, x, alpha_bar, alpha_bar_prev, eta, noise, clip_sample=False)


def ddim_step_clipped(eps_hat, x, alpha_bar, alpha_bar_prev, *, eta=0.0, noise=None):
    """DDIMScheduler with its default clip_sample=True."""
    return _ddim(eps_hat, x, alpha_bar, alpha_bar_prev, eta, noise)


def ddpm_step(eps_hat, x, alpha_bar, alpha_bar_prev, noise):
    scheduler = _discrete(DDPMScheduler, alpha_bar, alpha_bar_prev, clip_sample=False)
    batched = (lambda v: v.reshape(1, -1)) if x.dim() < 2 else (lambda v: v)  # step reads sample.shape[1]
    with _noise(batched(noise)):
        out = scheduler.step(batched(eps_hat), 900, batched(x), return_dict=False)
    return out[0].reshape(x.shape).to(x.dtype)


def _pairs(scheduler, prev_of) -> tuple[torch.Tensor, torch.Tensor]:
    ts = scheduler.timesteps.to(torch.int64)
    return ts, torch.tensor([prev_of(int(t)) for t in ts], dtype=torch.int64)


def ddim_sampling_timesteps(num_train_timesteps, N, *, spacing="leading"):
    """The timesteps DDIMScheduler lists, and the previous timestep its step really uses, read from the step
    itself: with eps_hat = 0 and eta = 0 a step maps x = 1 to sqrt(alpha_bar_prev / alpha_bar)."""
    scheduler = DDIMScheduler(num_train_timesteps=num_train_timesteps, timestep_spacing=spacing, clip_sample=False,
                              set_alpha_to_one=True)
    scheduler.set_timesteps(N)
    table = scheduler.alphas_cumprod.to(F64)
    scheduler.alphas_cumprod = table

    def prev_of(t: int) -> int:
        one = torch.ones(1, dtype=F64)
        x_prev = scheduler.step(torch.zeros(1, dtype=F64), t, one, eta=0.0, return_dict=False)[0]
        a_prev = float(x_prev[0]) ** 2 * float(table[t])
        if abs(a_prev - 1.0) < 1e-9:
            return -1
        return int((table - a_prev).abs().argmin())

    return _pairs(scheduler, prev_of)


def ddpm_sampling_timesteps(num_train_timesteps, N, *, spacing="leading"):
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, timestep_spacing=spacing)
    scheduler.set_timesteps(N)
    return _pairs(scheduler, lambda t: int(scheduler.previous_timestep(t)))


# --- FlowMatchEulerDiscreteScheduler -----------------------------------------------------------------------

def flow_match_euler_step(v_hat, x, t, t_next):
    scheduler = FlowMatchEulerDiscreteScheduler()
    _at_step(scheduler, [_scalar("t", t), _scalar("t_next", t_next)])
    return scheduler.step(v_hat, scheduler.timesteps[0], x, return_dict=False)[0].to(x.dtype)


def flow_match_shift(sigma, shift):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=sigma.reshape(-1).tolist())
    return scheduler.sigmas[:-1].reshape(sigma.shape).to(sigma.dtype)
