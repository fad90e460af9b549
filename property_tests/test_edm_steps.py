"""Property tests of the other samplers' steps in EDM's frame (specs/edm/steps.py): Euler, DDIM, DDPM and flow
steps, flow shift, ancestral split, discrete timesteps.

Identities that are exact in float64 are asserted at a tolerance derived from float64 rounding (stated per test);
float32 implementations are held to the error budget against the naive torch code (torch.batched); statistical
claims state their bound and false-alarm probability and use fixed seeds. Shared helpers: edm_helpers.py,
oracles_diffusion.py.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given

from eqspec.budget import distinct_digits, rounding_atol
from specs import edm

from .edm_helpers import CLAIM_RTOL_F64, U64, X4, log_uniform, seeds
from .harness import checks, close, expect_rejection, within_budget
from .oracles_diffusion import F64, eps_of, same, within_tolerance
from .strategies import randn

# --- A.7: equivalences, and where they fail ----------------------------------------------------------------

def nonlinear_predictor(seed: int):
    """A random nonlinear map x -> prediction (not a trained model: the equivalences hold for any)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(4, 4, generator=g, dtype=F64)
    return lambda x: torch.tanh(x.double() @ W.to(x.device)) * 1.7 + 0.2 * x.double() ** 2


def _agreement(name, got, want, magnitude, target, reference_error=0.0):
    # the claim's bounds: float64 1e-12 relative to the terms; float32 64 roundings of the terms (each path has ~10
    # operations, and the inputs themselves are rounded); plus the float64 reference's own error where it is
    # ill-conditioned
    if isinstance(reference_error, torch.Tensor):
        reference_error = reference_error.cpu()
    tol = (CLAIM_RTOL_F64 if target.dtype == "float64" else 64 * eps_of(target)) * magnitude.cpu() + reference_error
    within_tolerance(f"{name} (relative to the terms)", got, want.cpu(), tol)


@checks("edm.parameterisations_agree", operation="edm.ddim_step")
@given(seed=seeds, data=st.data())
def test_ddim_equals_edm_euler(target, seed, data):
    a = data.draw(st.floats(0.01, 0.98), label="alpha_bar")
    a_prev = data.draw(st.floats(a + 0.01, 0.999), label="alpha_bar_prev")
    x = target.tensor(randn(seed, 16, 4, scale=2.0))
    eps_hat = target.tensor(nonlinear_predictor(seed + 1)(x))
    got = target(eps_hat, x, a, a_prev, eta=0.0)
    X, E = x.double(), eps_hat.double()
    sigma, sigma_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)
    y = X / math.sqrt(a)
    D = edm.to_denoised(E, X, sigma, math.sqrt(a), prediction="epsilon")
    want = math.sqrt(a_prev) * edm.euler_step(D, y, sigma, sigma_prev)
    _agreement("DDIM(eta = 0) vs EDM Euler", got, want, (y.abs() + sigma * E.abs()) * (1 + sigma), target)


@checks("edm.parameterisations_agree", operation="edm.euler_step")
@given(seed=seeds, data=st.data())
def test_edm_euler_equals_ddim(target, seed, data):
    sigma = data.draw(st.floats(0.05, 50.0), label="sigma")
    sigma_next = data.draw(st.floats(0.0, sigma * 0.95), label="sigma_next")
    y = target.tensor(randn(seed, 16, 4, scale=math.sqrt(sigma**2 + 0.25)))
    D = target.tensor(nonlinear_predictor(seed + 1)(y / math.sqrt(sigma**2 + 1)))
    got = target(D, y, sigma, sigma_next)
    a, a_prev = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
    Y, Dd = y.double(), D.double()
    eps_hat = (Y - Dd) / sigma
    want = edm.ddim_step(eps_hat, math.sqrt(a) * Y, a, a_prev) / math.sqrt(a_prev)
    # the float64 DDIM side reads sigma' back from alpha_bar' = 1 / (1 + sigma'^2): rounding alpha_bar' (u) moves
    # sqrt(1 - alpha_bar') by u / (2 sigma'), times |eps_hat| (measured 6e-9 at sigma' = 1e-5); sigma' = 0 is exact
    reference_error = U64 * eps_hat.abs() / sigma_next if sigma_next > 0 else torch.zeros_like(eps_hat)
    _agreement("EDM Euler vs DDIM(eta = 0)", got, want, Y.abs() + Dd.abs() + eps_hat.abs(), target,
               reference_error=reference_error)


@checks("edm.parameterisations_agree", operation="edm.flow_euler_step")
@given(seed=seeds, data=st.data())
def test_flow_euler_equals_edm_euler(target, seed, data):
    t = data.draw(st.floats(0.02, 0.98), label="t")
    t_next = data.draw(st.floats(0.0, t * 0.95), label="t_next")
    x = target.tensor(randn(seed, 16, 4))
    v_hat = target.tensor(nonlinear_predictor(seed + 1)(x))
    got = target(v_hat, x, t, t_next)
    X, V = x.double(), v_hat.double()
    sigma, sigma_next = t / (1 - t), t_next / (1 - t_next)
    D = edm.to_denoised(V, X, sigma, 1 - t, prediction="flow")  # x_0 = x - t v
    want = (1 - t_next) * edm.euler_step(D, X / (1 - t), sigma, sigma_next)
    _agreement("rectified-flow Euler vs EDM Euler", got, want, X.abs() + V.abs(), target)
    x0, eps = D, X + (1 - t) * V  # and the DDIM form (1 - t') x0_hat + t' eps_hat (catalogue A.7 ii)
    _agreement("rectified-flow Euler vs DDIM with alpha = 1 - t", got, (1 - t_next) * x0 + t_next * eps,
               X.abs() + V.abs(), target)


# --- steps and helpers -------------------------------------------------------------------------------------

def naive_ancestral_split(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float):
    """The formula as written (k-diffusion's get_ancestral_step), in the inputs' dtype: the naive same-precision
    baseline of ancestral_split (the operation has no torch implementation of its own)."""
    F_, T_ = sigma_from, sigma_to
    up = torch.minimum(T_, eta * torch.sqrt(T_**2 * (F_**2 - T_**2) / F_**2))
    return torch.sqrt(T_**2 - up**2), up


def ancestral_split_conditioning(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float):
    """Per element, the size (in units of eps) of the error that (sigma_down, sigma_up) computed in floating point
    from these inputs can carry: twice the first-order bound of the formula as written.

    sigma_up = eta T sqrt(F^2 - T^2) / F subtracts T^2 from F^2: their roundings, u (F^2 + T^2), become a relative
    error u (F^2 + T^2) / (2 (F^2 - T^2)) after the square root (unbounded as T -> F), plus ~3.5 u from the other
    five operations. sigma_down = sqrt(T^2 - up^2) subtracts up^2 from T^2 (u (T^2 + up^2) / (2 down)), inherits
    up's error times up / down, and rounds 1.5 u of its own. Where T = F every correct algorithm gives up = 0
    exactly (F^2 - T^2, F - T and 1 - T / F are all exactly 0): the scale there is T.
    """
    F_, T_ = sigma_from.double().cpu(), sigma_to.double().cpu()
    gap = (F_ - T_) * (F_ + T_)  # F^2 - T^2 without the cancellation being measured
    up = eta * T_ * torch.sqrt(gap) / F_
    down = T_ * torch.sqrt((1 - eta**2) * F_**2 + eta**2 * T_**2) / F_  # sqrt(T^2 - up^2), cancellation-free
    # the output's own resolution: a result below the dtype's smallest normal number is off by up to that much
    resolution = torch.finfo(sigma_to.dtype).tiny / torch.finfo(sigma_to.dtype).eps
    cancel = (F_**2 + T_**2) / (2 * gap.clamp(min=torch.finfo(F64).tiny))
    cond_up = torch.where(gap > 0, up * (cancel + 4), T_) + resolution
    # up / down * cond_up, with up^2 = eta^2 T^2 gap / F^2 written out so that gap -> 0 stays finite
    inherited = eta**2 * T_**2 * (F_**2 + T_**2 + 8 * gap) / (2 * F_**2 * down.clamp(min=torch.finfo(F64).tiny))
    cond_down = (T_**2 + up**2) / (2 * down.clamp(min=torch.finfo(F64).tiny)) + 2 * down + inherited + resolution
    return cond_down, cond_up


def _split_within_budget(target, f, to, eta: float, label: str, ref=None):
    """(sigma_down, sigma_up) against the float64 spec (or ``ref``) within the budget of the naive formula in the
    target's dtype, element by element in units of each element's conditioning; returns each element's allowed
    error."""
    got = target(f, to, eta=eta)
    ref = ref if ref is not None else edm.ancestral_split(f.double(), to.double(), eta=eta)
    base = naive_ancestral_split(f, to, eta)
    allowed = []
    for name, out, r, b, cond in zip(("sigma_down", "sigma_up"), got, ref, base,
                                     ancestral_split_conditioning(f, to, eta)):
        # each element divided by its own error scale: one budget for elements of very different conditioning
        cond = cond.cpu()
        out64, r64, b64 = (v.double().cpu() / cond for v in (out, r, b))
        check = within_budget(f"{name} / its conditioning ({label})", out64, r64, b64, magnitude=1.0,
                              dtype=target.torch_dtype)
        allowed.append(check.allowed * cond)
    return got, allowed


@checks("edm.ancestral_split", operation="edm.ancestral_split")
@given(seed=seeds, eta=st.floats(0.0, 1.0))
def test_ancestral_split(target, seed, eta):
    f = target.tensor(log_uniform(seed, 32, 1e-2, 1e2))
    to = f.double().cpu() * torch.rand(32, generator=torch.Generator().manual_seed(seed), dtype=F64)
    to = target.tensor(to)
    # the ill-conditioned end is always drawn: sigma_to = sigma_from, and sigma_to one unit below sigma_from
    to[0] = f[0]
    to[1] = torch.nextafter(f[1], torch.zeros_like(f[1]))
    (down, up), (a_down, a_up) = _split_within_budget(target, f, to, eta, f"eta = {eta:.6g}")
    down, up, T, Fr = down.double().cpu(), up.double().cpu(), to.double().cpu(), f.double().cpu()
    # the identity holds for the spec to float64 rounding of T^2; an implementation within budget moves down^2 and
    # up^2 by 2 down a_down and 2 up a_up
    tol = 2 * down * a_down + 2 * up * a_up + rounding_atol(target.torch_dtype, 1.0, 4) * T**2
    within_tolerance("sigma_down^2 + sigma_up^2 = sigma_to^2", down**2 + up**2, T**2, tol)
    if not bool((up <= T + a_up).all()):
        i = int((up - T - a_up).argmax())
        got, limit = distinct_digits(float(up[i]), float(T[i]))
        raise AssertionError(f"sigma_up must not exceed sigma_to (beyond its error budget): at {i}, {got} > {limit}")
    _, up0 = target(f, to, eta=0.0)
    same("eta = 0: sigma_up = 0", up0.double(), torch.zeros_like(T))  # 0 x anything finite: exact for every algorithm
    # eta = 1: DDPM's posterior std T sqrt(F^2 - T^2) / F and sigma_down = T^2 / F, written independently of the spec
    # (and free of its cancellations)
    posterior = T * torch.sqrt((Fr - T) * (Fr + T)) / Fr
    _split_within_budget(target, f, to, 1.0, "eta = 1: DDPM posterior std", ref=(T**2 / Fr, posterior))


@checks("edm.flow_shift", operation="edm.flow_shift")
@given(seed=seeds, s1=st.floats(0.1, 10.0), s2=st.floats(0.1, 10.0))
def test_flow_shift(target, seed, s1, s2):
    sigma = target.tensor(torch.rand(32, generator=torch.Generator().manual_seed(seed), dtype=F64))
    # a shift by s multiplies relative errors by at most max(s, 1/s) (its log-log slope): s sigma / (1 + (s - 1)
    # sigma) is four roundings (u each; nothing cancels for sigma in [0, 1]) per shift, amplified by both shifts
    amplification = max(s1, 1 / s1) * max(s2, 1 / s2)
    rtol = rounding_atol(target.torch_dtype, 1 + amplification, 4)
    close("shift s2 after s1 = shift s1 s2", target(target(sigma, s1), s2), target(sigma, s1 * s2), atol=1e-300,
          rtol=rtol)
    close("exponential form with mu = ln s", target(sigma, s1), edm.dynamic_shift(sigma.double(), math.log(s1)),
          atol=1e-300, rtol=rtol)
    ends = target(target.tensor(torch.tensor([0.0, 1.0], dtype=F64)), s1)
    close("0 and 1 are fixed", ends, torch.tensor([0.0, 1.0], dtype=F64), atol=0, rtol=rtol)
    close("shift 3 at 0.5", target(target.tensor(torch.tensor([0.5], dtype=F64)), 3.0),
          torch.tensor([0.75], dtype=F64), atol=0, rtol=rtol)


def _exact_step_case(seed: int, data):
    a = data.draw(st.floats(0.01, 0.98), label="alpha_bar")
    a_prev = data.draw(st.floats(a + 0.01, 0.999), label="alpha_bar_prev")
    x0, eps, z = randn(seed, 64, scale=0.8), randn(seed + 1, 64), randn(seed + 2, 64)
    x = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    return a, a_prev, x0, eps, z, x


def _posterior(a, a_prev):
    beta = 1 - a / a_prev
    return beta, (1 - a_prev) / (1 - a) * beta


@checks("edm.ddim_ddpm_steps", operation="edm.ddim_step")
@given(seed=seeds, eta=st.floats(0.0, 1.0), data=st.data())
def test_ddim_step_exact_epsilon(target, seed, eta, data):
    a, a_prev, x0, eps, z, x = _exact_step_case(seed, data)
    got = target(target.tensor(eps), target.tensor(x), a, a_prev, eta=eta, noise=target.tensor(z)).double()
    var = eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev)  # catalogue A.8, the DDIM variance
    want = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - var) * eps + math.sqrt(var) * z
    _agreement("DDIM step with the exact epsilon", got, want, x0.abs() + eps.abs() + z.abs() + 1, target)
    if eta == 1.0 or data.draw(st.booleans(), label="compare eta = 1 with DDPM"):
        one = target(target.tensor(eps), target.tensor(x), a, a_prev, eta=1.0, noise=target.tensor(z)).double()
        _, var_ddpm = _posterior(a, a_prev)
        beta = 1 - a / a_prev
        mean = (math.sqrt(a_prev) * beta / (1 - a) * x0 + math.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * x)
        _agreement("DDIM(eta = 1) = DDPM posterior", one, mean + math.sqrt(var_ddpm) * z,
                   x0.abs() + eps.abs() + z.abs() + 1, target)


@checks("edm.ddim_ddpm_steps", operation="edm.ddpm_step")
@given(seed=seeds, data=st.data())
def test_ddpm_step_exact_epsilon(target, seed, data):
    a, a_prev, x0, eps, z, x = _exact_step_case(seed, data)
    got = target(target.tensor(eps), target.tensor(x), a, a_prev, target.tensor(z)).double()
    beta, var = _posterior(a, a_prev)
    # with the exact epsilon the posterior mean is sqrt(abar_prev) x0 + sqrt(1 - abar_prev - var) eps (DDIM eq. 7)
    want = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - var) * eps + math.sqrt(var) * z
    _agreement("DDPM step with the exact epsilon", got, want, x0.abs() + eps.abs() + z.abs() + 1, target)


@checks("edm.sampling_timesteps", operation="edm.sampling_timesteps")
@pytest.mark.parametrize("spacing", edm.SPACINGS)
@given(N=st.integers(1, 60))
def test_sampling_timesteps(target, spacing, N):
    ts, prev = target(1000, N, spacing=spacing)
    ref_ts, _ = edm.sampling_timesteps(1000, N, spacing=spacing)
    same("listed timesteps", ts, ref_ts)
    if not bool((ts[1:] < ts[:-1]).all()):
        raise AssertionError(f"timesteps must strictly decrease, got {ts.tolist()}")
    nxt = torch.cat([ts[1:], torch.tensor([-1])])
    if not bool((prev == nxt).all()):
        i = int((prev != nxt).nonzero()[0])
        raise AssertionError(f"{spacing}, N = {N}: the step from t = {int(ts[i])} goes to {int(prev[i])}, but the next "
                             f"listed timestep is {int(nxt[i])}")


# T = 1000 by hand: linspace N = 10 (999 i / 9 exact); leading N = 10; trailing N = 7 (round(1000 - 1000 i / 7) - 1)
SPACING_KNOWN = {"linspace": (10, list(range(999, -1, -111))), "leading": (10, list(range(900, -1, -100))),
                 "trailing": (7, [999, 856, 713, 570, 428, 285, 142])}


@checks("edm.sampling_timesteps", operation="edm.sampling_timesteps")
@pytest.mark.parametrize("spacing", edm.SPACINGS)
def test_sampling_timesteps_known_answers(target, spacing):
    N, want = SPACING_KNOWN[spacing]
    ts, prev = target(1000, N, spacing=spacing)
    same(f"{spacing} timesteps (T = 1000, N = {N})", ts, torch.tensor(want, dtype=torch.int64))
    same(f"{spacing} previous timesteps", prev, torch.tensor(want[1:] + [-1], dtype=torch.int64))


# --- the operation's contract ------------------------------------------------------------------------------

@checks("edm.contract", operation="edm.ddim_step")
@pytest.mark.parametrize("case", ["alpha_bar outside (0, 1)", "eta > 0 without noise"])
def test_ddim_step_rejects_bad_input(target, case):
    x = target.tensor(X4)
    if case == "eta > 0 without noise":
        expect_rejection(target, lambda fn: fn(x, x, 0.5, 0.9, eta=0.5), "noise", case)
    else:
        expect_rejection(target, lambda fn: fn(x, x, 1.5, 0.9), "alpha_bar", case)


@checks("edm.contract", operation="edm.flow_shift")
@pytest.mark.parametrize("case", ["one sigma above 1", "one sigma below 0", "shift = 0"])
def test_flow_shift_rejects_bad_input(target, case):
    """One time outside [0, 1] among valid ones is bad input, not only a whole vector of them."""
    sigma = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    if case == "shift = 0":
        expect_rejection(target, lambda fn: fn(target.tensor(sigma), 0.0), "shift", case)
        return
    sigma[1] = 1.5 if case == "one sigma above 1" else -0.5
    expect_rejection(target, lambda fn: fn(target.tensor(sigma), 2.0), "sigma", case)

