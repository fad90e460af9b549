"""Domains: every argument of every EDM operation over its whole range (eqspec/domain.py); the differential tests
(property_tests/test_matches_spec.py) draw from them.

Scalars the operations take as "numbers or tensors broadcastable to x" are drawn in each form (a Python float, a 0-d
tensor, one value per sample); noise levels span many decades; time grids reach t = 0, the first and last steps,
windows that include and exclude steps exactly at their boundaries; the samplers get a few module-level denoisers.
"""

from __future__ import annotations

import math

import torch

from eqspec.domain import FLAG, OMIT, Built, Choice, Domain, Int, Optional, Real, normal, resolve, shape_of
from eqspec.registry import REGISTRY

from ..validators import F64
from .discretization import iddpm_u, rho_steps
from .gaussian import gaussian_denoiser
from .ode import PREDICTIONS
from .steps import SPACINGS
from .table1 import (
    EDM_SIGMA_MAX,
    EDM_SIGMA_MIN,
    KINDS,
    SCHEDULES,
    SIGMA_DATA,
    VE_SIGMA_MIN,
    schedule,
    sigma_inv,
)

# ---------------------------------------------------------------------------------------------------
# Callables the samplers and the loss are given: module-level, so that a falsifying example names them
# ---------------------------------------------------------------------------------------------------


def linear_denoiser(y, sigma):
    """D(y; sigma) = y / (1 + sigma): a sigma-dependent shrinkage (not an exact posterior mean)."""
    return y / (1.0 + sigma)


def zero_denoiser(y, sigma):
    """D = 0: the ideal denoiser of data concentrated at the origin."""
    return y * 0.0


def mixture_denoiser(y, sigma):
    """The ideal denoiser of a two-component isotropic Gaussian mixture (means +-0.8 in every coordinate, variances
    0.05 and 0.3, weights 0.3 and 0.7): ideal_denoiser's formula, its softmax over two components written out (torch's
    softmax is slow on tiny inputs with several threads). Computed in y's dtype."""
    d = y.shape[-1]
    mu = torch.tensor([0.8, -0.8], dtype=y.dtype, device=y.device)
    v = torch.tensor([0.05, 0.3], dtype=y.dtype, device=y.device)
    w = torch.tensor([0.3, 0.7], dtype=y.dtype, device=y.device)
    var = v + sigma**2
    sq = ((y[:, None, :] - mu[None, :, None]) ** 2).sum(-1)  # (B, 2)
    log_r = torch.log(w) - 0.5 * d * torch.log(var) - 0.5 * sq / var
    e = torch.exp(log_r - log_r.amax(dim=1, keepdim=True))
    r = e / e.sum(dim=1, keepdim=True)
    shrink = (v / var)[None, :, None]
    return (r[..., None] * (mu[None, :, None] + shrink * (y[:, None, :] - mu[None, :, None]))).sum(1)


DENOISERS = (gaussian_denoiser, linear_denoiser, mixture_denoiser, zero_denoiser)


def raw_zero(x_in, c_noise):
    """F = 0: the denoiser is c_skip x."""
    return x_in * 0.0


def raw_linear(x_in, c_noise):
    return 0.5 * x_in - 0.01 * c_noise


def raw_tanh(x_in, c_noise):
    return torch.tanh(x_in + 0.001 * c_noise)


RAW_NETWORKS = (raw_linear, raw_tanh, raw_zero)


# ---------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------

def _opt(case: dict, name: str, default):
    v = case.get(name, OMIT)
    return default if v is OMIT else v


def _pick(gen, n: int) -> int:
    return int(torch.randint(0, n, (), generator=gen))


def _log_uniform(gen, shape, lo: float, hi: float) -> torch.Tensor:
    u = torch.rand(shape, generator=gen, dtype=F64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def _with_ties(gen, v: torch.Tensor) -> torch.Tensor:
    """Some entries repeated (ties, constant rows)."""
    flat = v.reshape(-1).clone()
    if flat.numel() > 1 and _pick(gen, 3) == 0:
        flat[1:] = flat[0]  # all equal
    elif flat.numel() > 1:
        dup = torch.rand(flat.shape, generator=gen) < 0.25
        flat[dup] = flat[0]
    return flat.reshape(v.shape)


def positive(*shape, center: str = "center", spread: str = "spread") -> Built:
    """Positive values log-uniform in [center / spread, center * spread], some tied."""
    def build(gen, case):
        c, s = float(case[center]), float(case[spread])
        return _with_ties(gen, _log_uniform(gen, shape_of(shape, case), c / s, c * s))
    return Built(build, note=f"positive{shape} around {center} within x/ {spread}")


def _in_form(value: torch.Tensor, case: dict):
    """A per-sample (B, 1) value in the drawn form: a Python float, a 0-d tensor or the (B, 1) tensor."""
    form = case["form"]
    if form == "number":
        return float(value.reshape(-1)[0])
    if form == "tensor0":
        return value.reshape(-1)[0].clone()
    return value


def _as_tensor(v) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=F64)


def _like(v, like):
    """Give a computed float64 tensor the form of ``like`` (a float stays a float)."""
    return float(v) if not isinstance(like, torch.Tensor) else v


def scalar(low: float, high: float, edges: tuple[float, ...] = ()) -> Built:
    """A positive per-sample quantity log-uniform in [low, high] (edges drawn often), in the drawn form."""
    def build(gen, case):
        v = _log_uniform(gen, (resolve("B", case), 1), low, high)
        if edges and _pick(gen, 3) == 0:
            v = torch.full_like(v, edges[_pick(gen, len(edges))])
        return _in_form(_with_ties(gen, v), case)
    return Built(build, note=f"scalar in [{low:g}, {high:g}]")


FORMS = Choice(("number", "tensor0", "per_sample"))
B_SIZE = Int(1, 5, edges=(1,))
D_SIZE = Int(1, 8, edges=(1,))


def _time_grid(gen, case, kind: str) -> torch.Tensor:
    """Times >= 0 valid for ``kind`` (fm: < 1): 0, tiny, many decades, ties."""
    shape = shape_of(("B", "n"), case)
    if kind == "fm":
        t = torch.rand(shape, generator=gen, dtype=F64) * 0.999
        pool = [0.0, 1e-9, 0.5, 0.999, 1 - 1e-6]
    elif kind == "vp":
        t = _log_uniform(gen, shape, 1e-6, 2.5)
        pool = [0.0, 1e-5, 1e-3, 1.0]
    else:
        t = _log_uniform(gen, shape, 1e-8, 1e4)
        pool = [0.0, 1e-300, 1.0, 80.0]
    edge = torch.rand(shape, generator=gen) < 0.2
    t[edge] = torch.tensor(pool, dtype=F64)[torch.randint(0, len(pool), shape, generator=gen)][edge]
    return _with_ties(gen, t)


def _sigma_chain(case, kind: str) -> torch.Tensor:
    """The N + 1 sampling times of a sampler for ``kind``: EDM's rho schedule in sigma (ending in 0 or not),
    mapped to t by the kind's sigma^-1."""
    N, lo, rho = case["N"], case["smin"], case["rho"]
    hi = lo * case["ratio"]
    sig = rho_steps(N, lo, hi, rho) if case["end0"] else rho_steps(N + 1, lo, hi, rho)[:-1]
    t = sig if kind == "edm" else sigma_inv(sig, kind=kind)
    if case["end0"]:
        t[-1] = 0.0
    return t


def _boundary(gen, case, chain: torch.Tensor, low_side: bool):
    """A window boundary that includes or excludes times of ``chain``, often exactly at one of them (a float)."""
    c = chain[chain > 0] if bool((chain > 0).any()) else chain
    k = _pick(gen, 6)
    if k == 0:
        return -math.inf if low_side else math.inf
    if k == 1:
        return 0.0
    v = float(c[_pick(gen, c.numel())])
    if k == 2:
        return v  # exactly at a step: included
    if k == 3:
        return float(torch.tensor(v, dtype=torch.float32))  # at the float32 rounding of a step
    if k == 4:
        return v * (0.5 if low_side else 2.0)
    return v * float(torch.rand((), generator=gen, dtype=F64) * 2)


# ---------------------------------------------------------------------------------------------------
# table1
# ---------------------------------------------------------------------------------------------------

BETA_D = Optional(Real(0.0, 50.0, edges=(0.0, 1.0, 19.9, 50.0)))
BETA_MIN = Optional(Real(0.0, 5.0, edges=(0.0, 0.1, 1.0)))

REGISTRY.attach_domain("edm.schedule", Domain(
    sizes=dict(B=Int(1, 3, edges=(1,)), n=Int(1, 12, edges=(1,))),
    args=dict(kind=Optional(Choice(SCHEDULES)),
              t=Built(lambda gen, case: _time_grid(gen, case, _opt(case, "kind", "edm")), note="times of the kind"),
              beta_d=BETA_D, beta_min=BETA_MIN),
))


# ---------------------------------------------------------------------------------------------------
# discretization
# ---------------------------------------------------------------------------------------------------

def _default_min(case) -> float:
    return VE_SIGMA_MIN if _opt(case, "kind", "edm") == "ve" else EDM_SIGMA_MIN


def _sigma_max(gen, case) -> float:
    return _opt(case, "sigma_min", _default_min(case)) * case["ratio"]


REGISTRY.attach_domain("edm.time_steps", Domain(
    sizes=dict(ratio=Real(1.0, 1e6, edges=(1.0, 40000.0), log=True), Nmax=Choice((3, 8, 60))),
    args=dict(N=Int(1, "Nmax", edges=(1, 2, 3, 18)), kind=Optional(Choice(KINDS)),
              sigma_min=Optional(Real(1e-6, 10.0, edges=(1e-300, 1e-150, 1e-30, EDM_SIGMA_MIN, VE_SIGMA_MIN),
                                      log=True)),
              sigma_max=Optional(Built(_sigma_max, note="sigma_min (or the kind's default) times ratio >= 1")),
              rho=Optional(Real(0.05, 100.0, edges=(0.05, 0.5, 1.0, 3.0, 7.0, 100.0), log=True)),
              epsilon_s=Optional(Real(0.0, 1.0, edges=(0.0, 1e-3, 1.0))),
              dtype=Optional(Choice((torch.float64, torch.float32, torch.float16, torch.bfloat16)))),
    large=dict(Nmax=3000),
))


# ---------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------

SIGMA_DATA_RANGE = Optional(Real(1e-3, 100.0, edges=(SIGMA_DATA, 1.0, 1e-3), log=True))
CENTER = Real(1e-8, 1e8, edges=(1.0, 0.002, 80.0), log=True)  # a typical noise level, anywhere over 16 decades
SPREAD = Real(1.0, 1e4, edges=(1.0, 10.0), log=True)


def _noise_levels(gen, case):
    """Positive noise levels over decades; for iDDPM sometimes exactly its grid u_j or midpoints between."""
    shape = shape_of(("B", "n"), case)
    c, s = float(case["center"]), float(case["spread"])
    sigma = _log_uniform(gen, shape, c / s, c * s)
    if _opt(case, "kind", "edm") == "iddpm" and _pick(gen, 2) == 0:
        u = iddpm_u()[:-1]  # u_M = 0 is not a noise level
        j = torch.randint(0, u.numel() - 1, shape, generator=gen)
        mid = torch.rand(shape, generator=gen) < 0.3
        sigma = torch.where(mid, 0.5 * (u[j] + u[j + 1]), u[j])
    return _with_ties(gen, sigma)


REGISTRY.attach_domain("edm.preconditioning", Domain(
    sizes=dict(B=Int(1, 3, edges=(1,)), n=Int(1, 12, edges=(1,)), center=CENTER, spread=SPREAD),
    args=dict(kind=Optional(Choice(KINDS)), sigma=Built(_noise_levels, note="sigma > 0 over decades"),
              sigma_data=SIGMA_DATA_RANGE),
))


def _uniforms(gen, case):
    """u in (0, 1): uniform, near 0 and 1 (as near as float32 allows), exactly on iDDPM's bin edges j / M, ties."""
    shape = shape_of(("B", "n"), case)
    top = 1 - 2**-24  # the largest float32 below 1: u stays in (0, 1) in every dtype
    u = torch.rand(shape, generator=gen, dtype=F64).clamp(1e-30, top)
    pool = torch.tensor([1e-30, 1e-12, 1e-3, 0.5, 0.999, 1 - 1e-6, top, 0.25, 0.75], dtype=F64)
    edge = torch.rand(shape, generator=gen) < 0.25
    u[edge] = pool[torch.randint(0, pool.numel(), shape, generator=gen)][edge]
    grid = torch.rand(shape, generator=gen) < 0.15
    u[grid] = (torch.randint(1, 1000, shape, generator=gen).to(F64) / 1000)[grid]
    return _with_ties(gen, u)


REGISTRY.attach_domain("edm.training_sigma", Domain(
    sizes=dict(B=Int(1, 3, edges=(1,)), n=Int(1, 16, edges=(1,))),
    args=dict(u=Built(_uniforms, note="u in (0, 1), edges and iDDPM bin edges"), kind=Optional(Choice(KINDS)),
              P_mean=Optional(Real(-5.0, 5.0, edges=(-1.2, 0.0, 2.0))),
              P_std=Optional(Real(0.0, 5.0, edges=(0.0, 1.2, 0.1)))),
))


def _sample_shape(case) -> tuple[int, ...]:
    B, D = case["B"], case["D"]
    return {1: (B,), 2: (B, D), 3: (B, 2, D)}[case["rank"]]


def _loss_y(gen, case):
    return torch.randn(_sample_shape(case), generator=gen, dtype=F64) * _opt(case, "sigma_data", SIGMA_DATA)


def _loss_sigma(gen, case):
    c, s = float(case["center"]), float(case["spread"])
    return _with_ties(gen, _log_uniform(gen, (case["B"],), c / s, c * s))


def _loss_noise(gen, case):
    y, sigma = case["y"], case["sigma"]
    return torch.randn(y.shape, generator=gen, dtype=F64) * sigma.reshape(-1, *([1] * (y.dim() - 1)))


REGISTRY.attach_domain("edm.denoiser_loss", Domain(
    sizes=dict(B=B_SIZE, D=D_SIZE, rank=Choice((1, 2, 3)), center=Real(1e-4, 1e4, edges=(1.0,), log=True),
               spread=Real(1.0, 100.0, edges=(1.0,), log=True)),
    args=dict(F=Choice(RAW_NETWORKS), kind=Optional(Choice(KINDS)), sigma_data=SIGMA_DATA_RANGE,
              y=Built(_loss_y, note="data of scale sigma_data, (B,), (B, D) or (B, 2, D)"),
              sigma=Built(_loss_sigma, note="(B,) noise levels over decades"),
              n=Built(_loss_noise, note="N(0, sigma^2) per sample")),
))


# ---------------------------------------------------------------------------------------------------
# ode
# ---------------------------------------------------------------------------------------------------

def _prediction(case) -> str:
    return _opt(case, "prediction", "epsilon")


def _s_for(gen, case):
    """s: forced by the prediction ('v': 1 / sqrt(1 + sigma^2), 'flow': 1 / (1 + sigma)), else 1, the VP scale or
    any positive value."""
    sigma = _as_tensor(case["sigma"])
    p = _prediction(case)
    k = 1 if p == "v" else 2 if p == "flow" else _pick(gen, 4)
    if k == 0:
        s = torch.ones_like(sigma)
    elif k == 1:
        s = 1 / torch.sqrt(1 + sigma**2)
    elif k == 2:
        s = 1 / (1 + sigma)
    else:
        s = _log_uniform(gen, sigma.shape, 1e-3, 10.0)
    return _like(s, case["sigma"])


def _noisy_x(gen, case):
    """x = s (x_0 + sigma eps), x_0 of scale 1."""
    shape = shape_of(("B", "D"), case)
    x0 = torch.randn(shape, generator=gen, dtype=F64)
    eps = torch.randn(shape, generator=gen, dtype=F64)
    return _as_tensor(case["s"]) * (x0 + _as_tensor(case["sigma"]) * eps)


def _pred(gen, case):
    """A network output of the prediction's natural scale (the score's is 1 / (s sigma))."""
    shape = shape_of(("B", "D"), case)
    z = torch.randn(shape, generator=gen, dtype=F64)
    if _prediction(case) == "score":
        z = z / (_as_tensor(case["s"]) * _as_tensor(case["sigma"]))
    return z * case["pscale"]


REGISTRY.attach_domain("edm.to_denoised", Domain(
    sizes=dict(B=B_SIZE, D=D_SIZE, form=FORMS, pscale=Real(0.01, 100.0, edges=(1.0,), log=True)),
    args=dict(prediction=Optional(Choice(PREDICTIONS)),
              sigma=scalar(1e-6, 1e6, edges=(1e-6, 1.0, 80.0, 1e6)),
              s=Built(_s_for, note="s consistent with the prediction"),
              x=Built(_noisy_x, note="x = s (x0 + sigma eps)"), pred=Built(_pred, note="a network output")),
))


def _ode_coefficients(gen, case):
    """(s, sigma_dot, s_dot) at sigma for the drawn schedule (or free ones), in sigma's form."""
    sigma = _as_tensor(case["sigma"])
    kind = case["ode_kind"]
    if kind == "free":
        s = _log_uniform(gen, sigma.shape, 1e-3, 10.0)
        sd = torch.randn(sigma.shape, generator=gen, dtype=F64) * 10
        sdot = torch.randn(sigma.shape, generator=gen, dtype=F64)
        zero = torch.rand(sigma.shape, generator=gen) < 0.3
        sd, sdot = torch.where(zero, 0.0, sd), torch.where(zero, 0.0, sdot)
    else:
        t = sigma_inv(sigma, kind=kind)
        if kind == "fm":
            t = t.clamp(max=1 - 1e-12)
        _, s, sd, sdot = schedule(t, kind=kind)
    return tuple(_like(v, case["sigma"]) for v in (s, sd, sdot))


def _ode_part(i: int):
    def build(gen, case):
        if "_coef" not in case:  # made once per case, by the first of the three
            case["_coef"] = _ode_coefficients(gen, case)
        return case["_coef"][i]
    return build


def _ode_x(gen, case):
    shape = shape_of(("B", "D"), case)
    s, sigma = _as_tensor(case["s"]), _as_tensor(case["sigma"])
    return s * (torch.randn(shape, generator=gen, dtype=F64) * 0.5 + sigma * torch.randn(shape, generator=gen,
                                                                                        dtype=F64))


def _ode_denoised(gen, case):
    """A denoiser output near the Gaussian posterior mean of y = x / s, plus an error."""
    y = case["x"] / _as_tensor(case["s"])
    sigma = _as_tensor(case["sigma"])
    return SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2) * y + case["err"] * torch.randn(y.shape, generator=gen,
                                                                                     dtype=F64)


REGISTRY.attach_domain("edm.ode_derivative", Domain(
    sizes=dict(B=B_SIZE, D=D_SIZE, form=FORMS, ode_kind=Choice((*SCHEDULES, "free")),
               err=Real(0.0, 10.0, edges=(0.0, 0.01))),
    args=dict(sigma=scalar(1e-5, 1e5, edges=(1e-5, 1.0, 80.0)),
              s=Built(_ode_part(0), note="s(t) of the schedule at sigma"),
              sigma_dot=Built(_ode_part(1), note="sigma'(t)"), s_dot=Built(_ode_part(2), note="s'(t)"),
              x=Built(_ode_x, note="x = s (x0 + sigma eps)"), denoised=Built(_ode_denoised, note="D(x / s)")),
))


# ---------------------------------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------------------------------

CHAIN_SIZES = dict(N=Int(1, 12, edges=(1, 2)), smin=Real(1e-3, 2.0, edges=(EDM_SIGMA_MIN,), log=True),
                   ratio=Real(4.0, 1e5, edges=(EDM_SIGMA_MAX / EDM_SIGMA_MIN,), log=True),
                   rho=Real(0.5, 10.0, edges=(1.0, 7.0)), end0=FLAG, B=Int(1, 4, edges=(1,)),
                   D=Int(1, 6, edges=(1,)))


def _x_T(chain: str) -> Built:
    """The prior N(0, (sigma(t_0) s(t_0))^2 I) at the chain's first time, times xscale (a mis-scaled start)."""
    def build(gen, case):
        sigma, s, _, _ = schedule(case[chain][:1], kind=_opt(case, "kind", "edm"))
        scale = float(sigma[0] * s[0]) * case["xscale"]
        return torch.randn(shape_of(("B", "D"), case), generator=gen, dtype=F64) * scale
    return Built(build, note=f"the prior at {chain}[0]")


REGISTRY.attach_domain("edm.heun_sampler", Domain(
    sizes=dict(**CHAIN_SIZES, xscale=Real(0.1, 10.0, edges=(1.0,), log=True)),
    args=dict(kind=Optional(Choice(SCHEDULES)), denoiser=Choice(DENOISERS),
              t_steps=Built(lambda gen, case: _sigma_chain(case, _opt(case, "kind", "edm")),
                            note="strictly decreasing times of the kind, ending in 0 or not"),
              x_T=_x_T("t_steps"), second_order=Optional(FLAG)),
    large=dict(N=60, B=16, D=32),
))


def _window(low_side: bool, chain: str):
    return Built(lambda gen, case: _boundary(gen, case, case[chain], low_side),
                 note="a window edge at, between or beyond the steps")


def _churn_chain(gen, case):
    """The one time churn sees, as a one-element chain for the window edges."""
    return torch.tensor([case["t"]], dtype=F64)


REGISTRY.attach_domain("edm.churn", Domain(
    sizes=dict(B=B_SIZE, D=D_SIZE),
    args=dict(t=Real(1e-4, 500.0, edges=(0.0, 1e-300, 1.0, 80.0), log=True), x=normal("B", "D", scale="t + 1"),
              eps=normal("B", "D"), S_churn=Real(0.0, 100.0, edges=(0.0, 1.0, 40.0, 1e6)),
              N=Int(1, 1000, edges=(1, 2, 18)),
              S_tmin=Optional(Built(lambda gen, case: _boundary(gen, case, _churn_chain(gen, case), True),
                                    note="at, below or above t")),
              S_tmax=Optional(Built(lambda gen, case: _boundary(gen, case, _churn_chain(gen, case), False),
                                    note="at, below or above t")),
              S_noise=Optional(Real(0.0, 3.0, edges=(0.0, 1.0, 1.007)))),
))

REGISTRY.attach_domain("edm.stochastic_sampler", Domain(
    sizes=dict(**CHAIN_SIZES, xscale=Real(0.1, 10.0, edges=(1.0,), log=True)),
    args=dict(denoiser=Choice(DENOISERS),
              sigmas=Built(lambda gen, case: _sigma_chain(case, "edm"), note="strictly decreasing, ending in 0 or not"),
              x_T=_x_T("sigmas"),
              noise=normal("len(sigmas) - 1", "B", "D"),
              S_churn=Optional(Real(0.0, 100.0, edges=(0.0, 1.0, 40.0, 1e6))),
              S_tmin=Optional(_window(True, "sigmas")), S_tmax=Optional(_window(False, "sigmas")),
              S_noise=Optional(Real(0.0, 3.0, edges=(0.0, 1.0, 1.007))), second_order=Optional(FLAG)),
    large=dict(N=60, B=16, D=32),
))


def _t0(gen, case):
    kind = _opt(case, "kind", "edm")
    k = _pick(gen, 4)
    if kind == "fm":
        return [0.0, 0.5, 1 - 1e-9, float(torch.rand((), generator=gen, dtype=F64) * 0.999)][k]
    hi = 8.0 if kind == "vp" else 1e4  # VP: exp(beta_d t^2 / 2) overflows past t = 8.4
    return [0.0, 1.0, hi, float(_log_uniform(gen, (), 1e-8, hi))][k]


REGISTRY.attach_domain("edm.prior_std", Domain(
    args=dict(kind=Optional(Choice(SCHEDULES)), t0=Built(_t0, note="t0 >= 0 (< 1 for fm), decades")),
))


# ---------------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------------

def _next_level(gen, case, name: str):
    """The next level from ``name``: 0, equal, smaller, larger (sampling back up), in its form."""
    v = _as_tensor(case[name])
    k = _pick(gen, 5)
    f = [0.0, 1.0, float(torch.rand((), generator=gen, dtype=F64)), 1.0 + float(_log_uniform(gen, (), 1e-3, 10.0)),
         float(torch.rand((), generator=gen, dtype=F64))][k]
    nxt = v * f
    if k == 4 and isinstance(case[name], torch.Tensor) and v.dim():  # per-sample factors
        nxt = v * torch.rand(v.shape, generator=gen, dtype=F64)
    return _like(nxt, case[name])


def _euler_x(gen, case):
    shape = shape_of(("B", "D"), case)
    sigma = _as_tensor(case["sigma"])
    return torch.randn(shape, generator=gen, dtype=F64) * 0.5 + sigma * torch.randn(shape, generator=gen, dtype=F64)


def _euler_denoised(gen, case):
    sigma = _as_tensor(case["sigma"])
    x = case["x"]
    return SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2) * x + case["err"] * torch.randn(x.shape, generator=gen,
                                                                                     dtype=F64)


REGISTRY.attach_domain("edm.euler_step", Domain(
    sizes=dict(B=B_SIZE, D=D_SIZE, form=FORMS, err=Real(0.0, 1.0, edges=(0.0,))),
    args=dict(sigma=scalar(1e-6, 1e4, edges=(1e-6, 0.002, 1.0, 80.0)),
              sigma_next=Built(lambda gen, case: _next_level(gen, case, "sigma"), note="0, equal, below, above"),
              x=Built(_euler_x, note="x0 + sigma eps"), denoised=Built(_euler_denoised, note="D(x; sigma)")),
))


def _alpha_bar(gen, case):
    """alpha_bar in (0, 1): from 1e-6 (pure noise) to 1 - 1e-6 (almost clean)."""
    shape = (case["B"], 1)
    a = torch.where(torch.rand(shape, generator=gen) < 0.5, _log_uniform(gen, shape, 1e-6, 1.0),
                    1 - _log_uniform(gen, shape, 1e-6, 1.0)).clamp(1e-6, 1 - 1e-6)
    if _pick(gen, 4) == 0:
        a = torch.full_like(a, [1e-6, 0.5, 1 - 1e-6, 0.9][_pick(gen, 4)])
    return _in_form(_with_ties(gen, a), case)


def _alpha_bar_prev(gen, case):
    """alpha_bar_prev in [alpha_bar, 1]: equal, 1 (the last step), or between."""
    a = _as_tensor(case["alpha_bar"])
    k = _pick(gen, 4)
    if k == 0:
        prev = a.clone()
    elif k == 1:
        prev = torch.ones_like(a)
    else:
        prev = a + (1 - a) * torch.rand(a.shape, generator=gen, dtype=F64)
    return _like(prev, case["alpha_bar"])


def _vp_x(gen, case):
    a = _as_tensor(case["alpha_bar"])
    shape = shape_of(("B", "D"), case)
    return torch.sqrt(a) * torch.randn(shape, generator=gen, dtype=F64) + torch.sqrt(1 - a) * torch.randn(
        shape, generator=gen, dtype=F64)


ALPHA_ARGS = dict(alpha_bar=Built(_alpha_bar, note="in (0, 1)"),
                  alpha_bar_prev=Built(_alpha_bar_prev, note="in [alpha_bar, 1]"),
                  x=Built(_vp_x, note="sqrt(a) x0 + sqrt(1 - a) eps"), eps_hat=normal("B", "D", scale="pscale"))

REGISTRY.attach_domain("edm.ddim_step", Domain(
    sizes=dict(B=B_SIZE, D=D_SIZE, form=FORMS, pscale=Real(0.1, 10.0, edges=(1.0,), log=True)),
    # eta: 0 (deterministic), 1 (DDPM-like) and beyond, where the variance exceeds 1 - alpha_bar_prev and is clamped
    args=dict(**ALPHA_ARGS, eta=Optional(Real(0.0, 3.0, edges=(0.0, 0.5, 1.0, 3.0))), noise=Optional(normal("B", "D"))),
    where=lambda d: d["noise"] is not OMIT or d["eta"] is OMIT or d["eta"] == 0,
))
REGISTRY.attach_domain("edm.ddpm_step", Domain(
    sizes=dict(B=B_SIZE, D=D_SIZE, form=FORMS, pscale=Real(0.1, 10.0, edges=(1.0,), log=True)),
    args=dict(**ALPHA_ARGS, noise=normal("B", "D")),
))


def _flow_t(gen, case):
    """Flow time t in [0, 1] (0, 1 and beyond 1 included), in the drawn form."""
    shape = (case["B"], 1)
    t = torch.rand(shape, generator=gen, dtype=F64)
    if _pick(gen, 3) == 0:
        t = torch.full_like(t, [0.0, 1.0, 1e-6, 1 - 1e-6, 1.5][_pick(gen, 5)])
    return _in_form(_with_ties(gen, t), case)


REGISTRY.attach_domain("edm.flow_euler_step", Domain(
    sizes=dict(B=B_SIZE, D=D_SIZE, form=FORMS),
    args=dict(t=Built(_flow_t, note="t >= 0"),
              t_next=Built(lambda gen, case: _next_level(gen, case, "t"), note="0, equal, below, above"),
              x=normal("B", "D"), v_hat=normal("B", "D")),
))


def _unit_times(gen, case):
    shape = shape_of(("n",), case)
    s = torch.rand(shape, generator=gen, dtype=F64)
    edge = torch.rand(shape, generator=gen) < 0.3
    pool = torch.tensor([0.0, 1.0, 1e-6, 1 - 1e-6, 0.5], dtype=F64)
    s[edge] = pool[torch.randint(0, pool.numel(), shape, generator=gen)][edge]
    return _with_ties(gen, s)


REGISTRY.attach_domain("edm.flow_shift", Domain(
    sizes=dict(n=Int(1, 20, edges=(1,))),
    args=dict(sigma=Built(_unit_times, note="sigma in [0, 1], 0 and 1 included"),
              shift=Real(1e-4, 1e4, edges=(1.0, 3.0, 0.5), log=True)),
))


def _sigma_to(gen, case):
    F_ = case["sigma_from"]
    f = torch.rand(F_.shape, generator=gen, dtype=F64)
    k = torch.randint(0, 4, F_.shape, generator=gen)
    f = torch.where(k == 0, 0.0, torch.where(k == 1, 1.0, f))
    return F_ * f


REGISTRY.attach_domain("edm.ancestral_split", Domain(
    sizes=dict(B=Int(1, 3, edges=(1,)), n=Int(1, 12, edges=(1,)), center=CENTER, spread=SPREAD),
    args=dict(sigma_from=Built(lambda gen, case: _with_ties(gen, _log_uniform(
                  gen, shape_of(("B", "n"), case), case["center"] / case["spread"], case["center"] * case["spread"])),
                  note="sigma_from > 0 over decades"),
              sigma_to=Built(_sigma_to, note="0, sigma_from or between"),
              eta=Optional(Real(0.0, 5.0, edges=(0.0, 0.5, 1.0, 5.0)))),
))

REGISTRY.attach_domain("edm.sampling_timesteps", Domain(
    args=dict(num_train_timesteps=Int(2, 2000, edges=(2, 3, 1000)),
              N=Int(1, "num_train_timesteps", edges=(1, 2, 7, 10, 47, 48)), spacing=Optional(Choice(SPACINGS))),
))
