"""Property tests of the score-SDE document (specs/score_sde.py), one or more per claim.

Gaussian data keeps every linear SDE Gaussian, so the exact score is closed-form and the samplers' outputs are
exactly Gaussian: the statistical checks use exact z and chi-square bounds, not CLT approximations.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from eqspec.budget import distinct_digits, rounding_atol
from specs import edm as edm_spec
from specs import score_sde as sde_spec

from . import harness, recording
from .harness import checks, close, within_budget
from .oracles_diffusion import (
    chi2_relative_bounds,
    eps_of,
    fitted_slope,
    normal_z,
    perturbed_start,
    same,
    sensitivities,
    within_relative,
    within_tolerance,
)
from .strategies import randn

expect_rejection = harness.expect_rejection

F64 = torch.float64
KINDS = sde_spec.KINDS
EPS64 = torch.finfo(torch.float64).eps
SIGMA_DATA = edm_spec.SIGMA_DATA


# --- how far from exact a correct implementation's coefficients can be, in roundings (eps) of its dtype ------------
# (the terms that cancel, not the size of the result; every kernel and drift below is one of these)

def mean_roundings(B: torch.Tensor) -> torch.Tensor:
    """e^(-B / 2): B's three roundings (t^2, the products, the sum) scaled by B / 2 in the exponent, exp's, and one
    product."""
    return 2 + 1.5 * B


def one_minus_exp_roundings(B: torch.Tensor) -> torch.Tensor:
    """1 - e^-B, relative: e^-B carries 1 + 1.5 B roundings (as above), and the difference cancels terms of size 1 down
    to 1 - e^-B (to 1e-4 at t = 1e-3: ~1e4 roundings for the formula as written, none with expm1)."""
    return (1 + torch.exp(-B) * (1 + 1.5 * B)) / -torch.expm1(-B)


def diffusion_roundings(kind: str, t) -> torch.Tensor:
    """g(t), relative. VE: sigma_min (sigma_max / sigma_min)^t sqrt(2 ln(sigma_max / sigma_min)): the power multiplies
    t's rounding (and its exponent's) by t ln(sigma_max / sigma_min) = 8.5 t, plus three roundings. VP: sqrt(beta) with
    beta = beta_min + t (beta_max - beta_min): three. sub-VP: sqrt(beta (1 - e^-2B)): half the cancellation of
    1 - e^-2B on top."""
    T = torch.as_tensor(t, dtype=F64)
    if kind == "ve":
        return 3 + T * math.log(sde_spec.SIGMA_MAX / sde_spec.SIGMA_MIN)
    if kind == "vp":
        return 3 + 0 * T
    return 3 + one_minus_exp_roundings(2 * sde_spec.beta_integral(T)[1]) / 2


# --- the forward SDEs and their kernels -----------------------------------------------------------------------

CHECK_TIMES = (0.1, 0.3, 1.0)


def _em_moments(target, kind: str, x0: float, N: int):
    """Exact means and variances at CHECK_TIMES of N forward Euler-Maruyama steps (dt = 1/N) of the linear SDE from
    x0 whose drift and diffusion `target` returns (an implementation, or sde_spec.sde): with f = a(t) x,
    m' = (1 + a dt) m and v' = (1 + a dt)^2 v + g^2 dt."""
    dt = 1.0 / N
    t = torch.arange(N, dtype=F64) * dt
    if target is sde_spec.sde:
        f, g = sde_spec.sde(torch.ones(N, dtype=F64), t, kind=kind)
    else:
        f, g = target(target.tensor(torch.ones(N, dtype=F64)), target.tensor(t), kind=kind)
    a, g2 = f.double().tolist(), (g.double().reshape(-1) ** 2).tolist()
    m, v, out = x0, 0.0, {}
    checkpoints = {round(c * N): c for c in CHECK_TIMES}
    for k in range(N):
        m, v = (1 + a[k] * dt) * m, (1 + a[k] * dt) ** 2 * v + g2[k] * dt
        if k + 1 in checkpoints:
            out[checkpoints[k + 1]] = (m, v)
    return out


@checks("score_sde.kernels_match_euler_maruyama", operation="score_sde.sde")
@pytest.mark.parametrize("kind", KINDS)
def test_kernels_match_euler_maruyama(target, kind):
    x0, n, N = 1.3, 2**14, 200
    gen = torch.Generator().manual_seed(2010 + KINDS.index(kind))
    x = target.tensor(torch.full((n,), x0, dtype=F64))
    dt = 1.0 / N
    for k in range(N):
        f, g = target(x, k * dt, kind=kind)
        x = x + f * dt + g * math.sqrt(dt) * target.tensor(torch.randn(n, generator=gen, dtype=F64))
    # the recursion uses the spec's drift and diffusion, not the target's: this checks the target's stepping and
    # its f, g together (the convergence of the target's own EM moments to sde_spec.marginal is checked below)
    m_em, v_em = _em_moments(sde_spec.sde, kind, x0, N)[1.0]
    # the endpoint is exactly N(m_em, v_em): a z bound on the mean and a chi-square bound on the variance, each with
    # half the false-alarm budget of 1e-6
    z = normal_z(5e-7)
    mean, var = float(x.double().mean()), float(x.double().var())
    lo, hi = chi2_relative_bounds(n - 1, 5e-7)
    recording.statistic(f"{kind}: |mean - EM mean| / (z sd)", abs(mean - m_em) / (z * math.sqrt(v_em / n)), 1.0, 5e-7)
    recording.statistic(f"{kind}: var / EM var - 1", var / v_em - 1, hi, 5e-7)
    if abs(mean - m_em) > z * math.sqrt(v_em / n) or not -lo <= var / v_em - 1 <= hi:
        raise AssertionError(f"{kind}: EM paths have mean {mean:.6g}, var {var:.6g}; the EM recursion gives "
                             f"{m_em:.6g}, {v_em:.6g}: |mean - EM mean| / (z sd) = "
                             f"{distinct_digits(abs(mean - m_em) / (z * math.sqrt(v_em / n)), 1.0)[0]} (at most 1), "
                             f"var / EM var - 1 = {distinct_digits(var / v_em - 1, -lo if var < v_em else hi)[0]} "
                             f"(within [-{lo:.4f}, {hi:.4f}])")
    Ns = (250, 500, 1000, 2000)
    moments = {n_steps: _em_moments(target, kind, x0, n_steps) for n_steps in Ns}
    for t in CHECK_TIMES:
        mean_k, std_k = (float(v) for v in sde_spec.marginal(torch.tensor(x0, dtype=F64), t, kind=kind))
        gaps = [abs(moments[n_][t][0] - mean_k) + abs(moments[n_][t][1] - std_k**2) / max(std_k**2, 1.0) for n_ in Ns]
        ratios = [a / b for a, b in zip(gaps, gaps[1:])]
        if t == 1.0:
            recording.series("em_vs_kernel", f"{target.name} {kind} (slope {fitted_slope(list(Ns), gaps):.2f})",
                             "N (steps)", "|EM moments - kernel| at t = 1", list(zip(Ns, gaps)), kind="loglog")
        if not all(1.6 <= r <= 2.4 for r in ratios):
            raise AssertionError(f"{kind}, t = {t}: the EM moments should converge to the closed-form kernel at first "
                                 f"order (gap halves per doubling), got gaps {gaps}")
        # Richardson extrapolation 2 m(2N) - m(N) removes the first-order error: what is left is O(1/N^2), measured
        # below 2e-5 of the variance for every kind and time; 1e-3 of it (plus 1e-7) is the bound
        (m1, v1), (m2, v2) = moments[1000][t], moments[2000][t]
        if abs(2 * v2 - v1 - std_k**2) > 1e-3 * std_k**2 + 1e-7 or abs(2 * m2 - m1 - mean_k) > 1e-3 * abs(mean_k):
            (m_x, m_k), (v_x, v_k) = distinct_digits(2 * m2 - m1, mean_k), distinct_digits(2 * v2 - v1, std_k**2)
            raise AssertionError(f"{kind}, t = {t}: extrapolated EM moments ({m_x}, {v_x}) differ from the kernel "
                                 f"({m_k}, {v_k}) by more than 1e-3 of the kernel's")


@checks("score_sde.moment_odes", operation="score_sde.marginal", dtypes=("float64",))
@pytest.mark.parametrize("kind", KINDS)
@given(t=st.floats(0.02, 0.98))
def test_moment_odes(target, kind, t):
    h = 1e-6
    x0 = torch.tensor([1.0], dtype=F64)
    # on the host, beside the spec's f and g
    (m_p, s_p), (m_m, s_m), (m, s) = ((v.cpu() for v in target(x0, torch.tensor([tt], dtype=F64), kind=kind))
                                      for tt in (t + h, t - h, t))
    dm, dv = (m_p - m_m) / (2 * h), (s_p**2 - s_m**2) / (2 * h)
    f, g = sde_spec.sde(torch.ones(1, dtype=F64), torch.tensor([t], dtype=F64), kind=kind)  # f = a(t) x: f(1) = a
    a = f
    # central differences: O(h^2) + O(u v / h) ~ 1e-10 relative at these scales
    close(f"dm/dt = a m ({kind})", dm, a * m, atol=1e-9, rtol=1e-6)
    close(f"dv/dt = 2 a v + g^2 ({kind})", dv, 2 * a * s**2 + g**2, atol=1e-9, rtol=1e-6)


@checks("score_sde.moment_odes", operation="score_sde.sde", dtypes=("float64",))
@pytest.mark.parametrize("kind", KINDS)
@given(t=st.floats(0.02, 0.98))
def test_sde_solves_the_kernel_odes(target, kind, t):
    h = 1e-6
    x0 = torch.tensor([1.0], dtype=F64)
    (m_p, s_p), (m_m, s_m), (m, s) = (sde_spec.marginal(x0, torch.tensor([tt], dtype=F64), kind=kind)
                                      for tt in (t + h, t - h, t))
    f, g = (v.cpu() for v in target(torch.ones(1, dtype=F64), torch.tensor([t], dtype=F64), kind=kind))  # beside m, s
    close(f"dm/dt = a m ({kind})", (m_p - m_m) / (2 * h), f * m, atol=1e-9, rtol=1e-6)
    close(f"dv/dt = 2 a v + g^2 ({kind})", (s_p**2 - s_m**2) / (2 * h), 2 * f * s**2 + g**2, atol=1e-9, rtol=1e-6)


# catalogue/score_sde.md known answers (8 significant digits)
KA_RTOL = 1e-7


@checks("score_sde.known_answers", operation="score_sde.marginal")
def test_marginal_known_answers(target):
    eps = eps_of(target)
    one = target.tensor(torch.ones(3, dtype=F64))
    t = target.tensor(torch.tensor([1.0, 0.5, 1e-3], dtype=F64))
    B = sde_spec.beta_integral(t.double())[1]
    mean, std = target(one, t, kind="vp")
    # the printed digits, and each value's own conditioning: sqrt(1 - e^-B) halves 1 - e^-B's, which is large at
    # t = 1e-3 (B = 1.1e-4)
    within_relative("VP mean coefficients", mean[:2], torch.tensor([0.0065715865, 0.28118288], dtype=F64),
                    KA_RTOL + eps * mean_roundings(B[:2]))
    within_relative("VP std", std, torch.tensor([0.99997841, 0.95965420, 0.010485416], dtype=F64),
                    KA_RTOL + eps * (1 + one_minus_exp_roundings(B) / 2))
    _, std_sub = target(one[:1], target.tensor(torch.tensor([0.5], dtype=F64)), kind="subvp")
    within_relative("sub-VP std at 0.5", std_sub, torch.tensor([0.92093619], dtype=F64),
                    KA_RTOL + eps * one_minus_exp_roundings(B[1:2]))
    _, std_small = target(one[:1], target.tensor(torch.tensor([1e-3], dtype=F64)), kind="subvp")
    # printed to 5 digits
    within_relative("sub-VP std at 1e-3", std_small, torch.tensor([1.0994e-4], dtype=F64),
                    1e-4 + eps * one_minus_exp_roundings(B[2:]))


@checks("score_sde.known_answers", operation="score_sde.sde")
def test_sde_known_answers(target):
    rtol = KA_RTOL + eps_of(target) * float(diffusion_roundings("ve", 1.0))  # the printed digits and g's conditioning
    x = target.tensor(torch.ones(2, dtype=F64))
    _, g = target(x, target.tensor(torch.tensor([0.5, 1.0], dtype=F64)), kind="ve")
    sigma_half = sde_spec.ve_sigma(0.5)
    close("VE g(0.5) / sigma(0.5)", g[:1] / sigma_half, torch.tensor([4.1272735], dtype=F64), atol=0, rtol=rtol)
    close("VE sigma(0.5)", torch.tensor([sigma_half], dtype=F64), torch.tensor([0.70710678], dtype=F64), atol=0,
          rtol=KA_RTOL)
    close("VE g(1)", g[1:], torch.tensor([206.36367], dtype=F64), atol=0, rtol=rtol)


@checks("score_sde.known_answers", operation="score_sde.discretize")
def test_ddpm_alpha_bar_known_answers(target):
    betas = _discrete_betas(target, 1000)
    alpha_bar = torch.cumprod(1 - betas, 0)
    # a product of up to 1000 factors 1 - beta_i, each beta_i = G_i^2 about four roundings from exact (linspace's two,
    # the root's and its square's), relative to beta_i < 1: at most 1000 x 4 roundings of the product
    close("DDPM alpha_bar_0, _499, _999", alpha_bar[[0, 499, 999]],
          torch.tensor([0.9999, 0.078587243, 4.0358298e-5], dtype=F64), atol=0,
          rtol=1e-7 + rounding_atol(target.torch_dtype, 1000, 4))


@checks("score_sde.subvp_below_vp", operation="score_sde.marginal")
@given(seed=st.integers(0, 2**31))
def test_subvp_below_vp(target, seed):
    t = target.tensor(1e-3 + torch.rand(64, generator=torch.Generator().manual_seed(seed), dtype=F64) * (1 - 1e-3))
    x0 = target.tensor(randn(seed, 64))
    m_vp, s_vp = target(x0, t, kind="vp")
    m_sub, s_sub = target(x0, t, kind="subvp")
    B = sde_spec.beta_integral(t.double())[1]
    # the same e^(-B/2) x0, which an implementation may compute along two paths: each within its roundings
    within_relative("same mean", m_sub, m_vp, eps_of(target) * 2 * mean_roundings(B))
    if not bool((s_sub.double() ** 2 < s_vp.double() ** 2).all()):
        raise AssertionError("the sub-VP variance must lie strictly below the VP variance for t in (0, 1]")
    # 1 - e^-B exactly (expm1), against the implementation's rounding of the terms that cancel
    one_minus = -torch.expm1(-B)
    within_relative("sub-VP std = 1 - e^-B (no square root)", s_sub, one_minus,
                    eps_of(target) * one_minus_exp_roundings(B))


# --- the reverse SDE, discretisations, predictors --------------------------------------------------------------

@checks("score_sde.reverse_sde", operation="score_sde.reverse_sde")
@pytest.mark.parametrize("kind", KINDS)
@given(seed=st.integers(0, 2**31), t=st.floats(0.01, 1.0))
def test_reverse_sde(target, kind, seed, t):
    x, score = target.tensor(randn(seed, 8, 3)), target.tensor(randn(seed + 1, 8, 3))
    f, g = (v.double() for v in sde_spec.sde(x.double(), t, kind=kind))
    drift, diffusion = (v.double() for v in target(x, t, score, kind=kind))
    kappa = diffusion_roundings(kind, t)
    # f = -beta x / 2: four roundings; g^2 score: twice g's and the product's; the difference: one of each term
    tol = eps_of(target) * (5 * f.abs() + (2 * kappa + 2) * g**2 * score.double().abs())
    within_tolerance(f"reverse drift = f - g^2 score ({kind})", drift, f - g**2 * score.double(), tol)
    close("reverse diffusion = g", diffusion, g.expand_as(diffusion), atol=0, rtol=eps_of(target) * float(kappa))
    drift_pf, diffusion_pf = (v.double() for v in target(x, t, score, kind=kind, probability_flow=True))
    within_tolerance(f"probability-flow drift = f - g^2 score / 2 ({kind})", drift_pf,
                     f - 0.5 * g**2 * score.double(), tol)
    same("probability-flow diffusion", diffusion_pf, torch.zeros_like(diffusion_pf))  # 0: exact for every algorithm


@checks("score_sde.reverse_sde", operation="score_sde.predictor_step")
@pytest.mark.parametrize("kind", KINDS)
@given(seed=st.integers(0, 2**31), t=st.floats(0.01, 1.0), N=st.integers(2, 2000))
def test_predictors_step_backwards(target, kind, seed, t, N):
    x, score = target.tensor(randn(seed, 8, 3)), target.tensor(randn(seed + 1, 8, 3))
    z1, z2 = target.tensor(randn(seed + 2, 8, 3)), target.tensor(randn(seed + 3, 8, 3))
    drift, g = (v.double() for v in sde_spec.reverse_sde(x.double(), t, score.double(), kind=kind))
    f, _ = (v.double() for v in sde_spec.sde(x.double(), t, kind=kind))
    new, mean = target(x, t, score, z1, kind=kind, N=N)
    kappa = diffusion_roundings(kind, t)
    X, S, Z = x.double(), score.double(), z1.double()
    # as in test_reverse_sde for the drift, divided by N, and two roundings of x - drift / N
    tol_mean = eps_of(target) * (2 * (X.abs() + drift.abs() / N) + (5 * f.abs() + (2 * kappa + 2) * g**2 * S.abs())
                                 / N)
    within_tolerance(f"Euler-Maruyama steps backwards: x_mean = x - (f - g^2 s) / N ({kind})", mean, X - drift / N,
                     tol_mean)
    # g sqrt(1/N) z: g's roundings and two more; the sum x_mean + noise rounded once at the size of the new x
    tol_noise = eps_of(target) * (new.double().abs() + (kappa + 2) * g * Z.abs() / math.sqrt(N))
    within_tolerance(f"Euler-Maruyama noise = g sqrt(1/N) z ({kind})", new.double() - mean.double(),
                     g * Z / math.sqrt(N), tol_noise)
    for predictor in ("euler_maruyama", "reverse_diffusion"):
        a, _ = target(x, t, score, z1, kind=kind, N=N, predictor=predictor, probability_flow=True)
        b, _ = target(x, t, score, z2, kind=kind, N=N, predictor=predictor, probability_flow=True)
        same(f"probability flow ({predictor}) ignores the noise", a, b)


@checks("score_sde.reverse_sde", operation="score_sde.predictor_step")
@given(data=st.data())
def test_every_predictor_matches_the_spec(target, data):
    """Every kind, every predictor, with and without the probability flow: the noise is passed in, so both outputs
    of the step are determined, and each is compared with the spec's (within what one step's roundings can move x
    by: predictor_terms)."""
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    predictor = data.draw(st.sampled_from(sde_spec.PREDICTORS[:3]), label="predictor")
    probability_flow = data.draw(st.booleans(), label="probability_flow") if predictor != "ancestral" else False
    if predictor == "ancestral" and kind == "subvp":  # ancestral sampling exists for VP and VE only
        kind = data.draw(st.sampled_from(("vp", "ve")), label="kind for ancestral")
    # VP's discrete betas are beta_max / N at most: sqrt(1 - beta) needs N > beta_max = 20 (NaN below, in the spec too)
    discrete_vp = kind != "ve" and predictor != "euler_maruyama"
    N = data.draw(st.integers(21 if discrete_vp else 2, 2000), label="N")
    t = data.draw(st.floats(0.01, 1.0), label="t")
    seed = data.draw(st.integers(0, 2**31), label="seed")
    x, score, z = (target.tensor(randn(seed + i, 8, 3)) for i in range(3))
    kw = dict(kind=kind, predictor=predictor, N=N, probability_flow=probability_flow)
    new, mean = target(x, t, score, z, **kw)
    X, S, Z = x.double(), score.double(), z.double()
    ref_new, ref_mean = sde_spec.predictor_step(X, t, S, Z, **kw)
    terms = predictor_terms(X, t, S, Z, kind=kind, predictor=predictor, N=N)
    tol = (2 * eps_of(target) + 2 * EPS64) * terms
    within_tolerance(f"x_mean ({kind}, {predictor}, probability_flow={probability_flow})", mean, ref_mean, tol)
    within_tolerance(f"x ({kind}, {predictor}, probability_flow={probability_flow})", new, ref_new, tol)


def _discrete_betas(target, N: int) -> torch.Tensor:
    """beta_i = G_i^2 of the target's VP discretisation, read at t = (i + 0.7) / (N - 1) (floor gives i; a round
    would give i + 1) and at t = 1 for the last level."""
    t = torch.clamp((torch.arange(N, dtype=F64) + 0.7) / (N - 1), max=1.0)
    _, G = target(target.tensor(torch.zeros(N, dtype=F64)), target.tensor(t), kind="vp", N=N)
    return G.double().reshape(-1) ** 2


@checks("score_sde.ddpm_is_vp", operation="score_sde.discretize")
@given(N=st.integers(1000, 3000))  # the catalogue's bound: the next term, sum beta^3 / 3 ~ 700 / N^2, is < 1e-3
def test_ddpm_betas_are_the_vp_sde(target, N):
    betas = _discrete_betas(target, N)
    i = torch.arange(N, dtype=F64)
    beta_cont, B1 = sde_spec.beta_integral(i / (N - 1))[0], sde_spec.beta_integral(torch.tensor(1.0, dtype=F64))[1]
    # beta_i = linspace(...)_i: two roundings (nothing cancels), read back as G_i^2: the root's and its square's
    close("N beta_i = beta((i - 1) / (N - 1))", N * betas, beta_cont, atol=0,
          rtol=rounding_atol(target.torch_dtype, 1.0, 4) + 4 * torch.finfo(F64).eps)
    gap = abs(float(torch.log1p(-betas).sum()) + float(B1))
    bound = 0.5 * float((betas**2).sum()) + 1e-3
    if gap > bound:
        got, allowed = distinct_digits(gap, bound)
        raise AssertionError(f"|ln prod(1 - beta_i) + B(1)| = {got} exceeds sum beta^2 / 2 + 1e-3 = {allowed}")
    x = target.tensor(torch.ones(3, dtype=F64))
    f, _ = target(x, 0.5, kind="vp", N=N)
    b = betas[int(math.floor(0.5 * (N - 1)))]
    # sqrt(1 - beta) - 1 cancels terms of size 1 (to -beta / 2): three roundings of 1, absolute (x = 1)
    close("f_i = (sqrt(1 - beta_i) - 1) x", f, (torch.sqrt(1 - b) - 1).expand(3),
          atol=rounding_atol(target.torch_dtype, 1.0, 3) + 4 * torch.finfo(F64).eps, rtol=0)


@checks("score_sde.ddpm_is_vp", operation="score_sde.predictor_step")
@given(N=st.integers(50, 2000), t=st.floats(0.0, 1.0))
def test_reverse_diffusion_vs_ancestral(target, N, t):
    """x and score coefficients of the two VP updates, read off with (x, score) = (1, 0) and (0, 1), z = 0."""
    one, zero = target.tensor(torch.ones(1, 2, dtype=F64)), target.tensor(torch.zeros(1, 2, dtype=F64))
    coeffs = {}
    for predictor in ("reverse_diffusion", "ancestral"):
        _, cx = target(one, t, zero, zero, kind="vp", N=N, predictor=predictor)
        _, cs = target(zero, t, one, zero, kind="vp", N=N, predictor=predictor)
        coeffs[predictor] = (float(cx[0, 0]), float(cs[0, 0]))
    beta = float(sde_spec.discrete_betas(N)[int(math.floor(t * (N - 1)))])
    (rd_x, rd_s), (an_x, an_s) = coeffs["reverse_diffusion"], coeffs["ancestral"]
    # each coefficient is a few operations on 1 and beta (1 - beta, a root, a difference or quotient, beta's own
    # two): four roundings of terms of size 1
    slack = rounding_atol(target.torch_dtype, 1.0, 4)
    close("reverse diffusion: 2 - sqrt(1 - beta), beta", torch.tensor([rd_x, rd_s], dtype=F64),
          torch.tensor([2 - math.sqrt(1 - beta), beta], dtype=F64), atol=0, rtol=slack)
    close("ancestral: 1 / sqrt(1 - beta), beta / sqrt(1 - beta)", torch.tensor([an_x, an_s], dtype=F64),
          torch.tensor([1 / math.sqrt(1 - beta), beta / math.sqrt(1 - beta)], dtype=F64), atol=0, rtol=slack)
    if abs(rd_x - an_x) > beta**2 + slack or abs(rd_s - an_s) > beta**2 + slack:
        raise AssertionError(f"the two updates should differ by O(beta^2) = {beta**2:.3g}: x {rd_x} vs {an_x}, "
                             f"score {rd_s} vs {an_s}")


# --- sampling with the exact score --------------------------------------------------------------------------

N_SAMPLES = 2**14


def gaussian_score_fn(kind: str):
    return lambda x, t: sde_spec.gaussian_score(x, t, kind=kind, sigma_data=SIGMA_DATA)


def _std_check(target, x, label: str, allowance: float):
    n = x.numel()
    var = float((x.double() ** 2).mean())  # mean 0 known; x is Gaussian (a linear recursion of Gaussians)
    lo, hi = chi2_relative_bounds(n)
    rel_std = math.sqrt(var) / SIGMA_DATA - 1
    # std within `allowance` <=> variance within (1 +- allowance)^2; the chi-square bound is on the variance
    upper, lower = (1 + allowance) ** 2 * (1 + hi), (1 - allowance) ** 2 * (1 - lo)
    recording.statistic(f"{label}: relative error of the output std", rel_std, math.sqrt(upper) - 1, 1e-6)
    if not lower <= var / SIGMA_DATA**2 <= upper:
        got, edge = distinct_digits(var / SIGMA_DATA**2, lower if var < SIGMA_DATA**2 else upper)
        raise AssertionError(f"{label}: output std {math.sqrt(var):.6g} vs the data's {SIGMA_DATA} (relative "
                             f"{rel_std:.4f}): var / sigma_d^2 = {got} beyond {edge} (allowed {allowance} in the std + "
                             f"the chi-square bound)")


@checks("score_sde.samplers_reach_data", operation="score_sde.pc_sampler")
@pytest.mark.parametrize("mode", ["reverse SDE (EM)", "probability flow", "PC, VE, Langevin corrector"])
def test_pc_sampler_reaches_data(target, mode):
    N = 250
    kind = "ve" if mode.startswith("PC") else "vp"
    corrector = 1 if mode.startswith("PC") else 0
    x_T = target.tensor(randn(2020, N_SAMPLES, scale=sde_spec.prior_std(kind)))
    noise = target.tensor(randn(2021, N, corrector + 1, N_SAMPLES))
    x = target(gaussian_score_fn(kind), x_T, noise, kind=kind, N=N, corrector_steps=corrector,
               predictor="reverse_diffusion" if kind == "ve" else "euler_maruyama",
               probability_flow=mode == "probability flow")
    # discretisation allowance 2% (catalogue property 3; measured with N = 250: -0.3% for EM, -0.1% for the
    # probability flow, +1.7% for PC on VE)
    _std_check(target, x, mode, 0.02)


@checks("score_sde.pc_sampler_within_budget", operation="score_sde.pc_sampler")
@settings(max_examples=10)  # each example runs three samplers of ~50 steps
@given(seed=st.integers(0, 2**31), N=st.integers(21, 26), corrector=st.integers(0, 2),  # VP: beta_max / N < 1
       predictor=st.sampled_from(sde_spec.PREDICTORS), kind=st.sampled_from(KINDS))
def test_pc_sampler_matches_spec(target, seed, N, corrector, predictor, kind):
    if predictor == "ancestral" and kind == "subvp":
        predictor = "reverse_diffusion"
    x_T = target.tensor(randn(seed, 16, 2, scale=sde_spec.prior_std(kind)))
    noise = target.tensor(randn(seed + 1, N, corrector + 1, 16, 2))
    kw = dict(kind=kind, N=N, corrector_steps=corrector, predictor=predictor)
    out = target(gaussian_score_fn(kind), x_T, noise, **kw)
    ref = sde_spec.pc_sampler(gaussian_score_fn(kind), x_T.double(), noise.double(), **kw)
    base = target.baseline(gaussian_score_fn(kind), x_T, noise, **kw)
    within_budget("x_0", out, ref, base, magnitude=pc_sampler_magnitude(x_T.double().cpu(), noise.double().cpu(), **kw))


class RecordingScore:
    """A score function that records each call's (t, x, score) in float64: the reference run's trajectory."""

    def __init__(self, score_fn):
        self.score_fn, self.calls = score_fn, []

    def __call__(self, x, t):
        out = self.score_fn(x, t)
        self.calls.append((t, x.detach().double().cpu(), out.detach().double().cpu()))
        return out


SCORE_ROUNDINGS = 3  # the Gaussian score -(x - m mu) / (m^2 sigma_d^2 + std^2) in the dtype: nothing cancels


def predictor_terms(x, t, score, z, *, kind, predictor, N):
    """Per element, the sizes of the terms one predictor step sums, each weighted by the roundings it carries (its
    coefficient's conditioning, the score's, the products'): what that step's rounding can move x by, in eps."""
    S, Z = score.abs() * (SCORE_ROUNDINGS + 2), z.abs()
    kappa = diffusion_roundings(kind, t)
    if predictor == "euler_maruyama":
        f, g = sde_spec.sde(x, t, kind=kind)
        return x.abs() + (5 * f.abs() + 2 * kappa * g**2 * S) / N + (kappa + 2) * g * Z / math.sqrt(N)
    f, G = sde_spec.discretize(x, t, kind=kind, N=N)
    if kind == "ve":
        # G^2 = sigma_i^2 - sigma_{i-1}^2 cancels terms of size sigma_i^2. Each level is the exp of a log between
        # ln sigma_min and ln sigma_max, rounded at the size of those ends (not of ln sigma_i, which is near 0
        # mid-grid: measured, a float32 step at t = 0.5, N = 1255 off by 1.2x a bound of |ln sigma_i| roundings)
        i = sde_spec.discrete_index(sde_spec._t(t, x), N)
        sig = sde_spec.discrete_sigmas(N)[i]
        log_ends = abs(math.log(sde_spec.SIGMA_MIN)) + abs(math.log(sde_spec.SIGMA_MAX))
        kappa_G2 = (2 + 2 * log_ends) * sig**2 / G.clamp(min=torch.finfo(F64).tiny) ** 2
    elif kind == "vp":
        kappa_G2 = 4 + 0 * G  # beta_i from linspace: two roundings, its root and square two more
    else:
        kappa_G2 = 2 * kappa
    if predictor == "ancestral" and kind == "vp":
        return (x.abs() + kappa_G2 * G**2 * S) / torch.sqrt(1 - G**2) * 3 + (kappa_G2 + 2) * G * Z
    # reverse diffusion (and VE ancestral, the same terms): x - f_i + G^2 score + G z, where VP's
    # f_i = (sqrt(1 - beta) - 1) x cancels terms of size |x| (three roundings)
    f_terms = 3 * x.abs() if kind == "vp" else 5 * f.abs()
    return x.abs() + f_terms + kappa_G2 * G**2 * S + (kappa_G2 + 2) * G * Z


def pc_sampler_magnitude(x_T, noise, *, kind, N, corrector_steps, predictor, snr=0.16) -> float:
    """max over elements of the terms of every corrector and predictor step (in roundings: predictor_terms, and
    Langevin's x + eps score + sqrt(2 eps) z) along the float64 reference's trajectory, each carried to the output by
    the trajectory's own sensitivity (the Gaussian score acts element by element): what rounding errors of the size of
    those terms, made anywhere, can move the result by."""
    runs = []
    for start in (x_T, perturbed_start(x_T)):
        calls = RecordingScore(gaussian_score_fn(kind))
        out = sde_spec.pc_sampler(calls, start, noise, kind=kind, N=N, corrector_steps=corrector_steps,
                                  predictor=predictor, snr=snr)
        runs.append((calls.calls, out))
    (steps, out), (steps_p, out_p) = runs
    terms, k = [], 0
    for i in range(N):
        for j in range(corrector_steps):
            t, x, score = steps[k]
            alpha = sde_spec.langevin_alpha(t, kind, N)
            new, mean = sde_spec.langevin_step(x, score, noise[i, j], snr=snr, alpha=alpha)
            # the step eps carries LANGEVIN_STEP_ROUNDINGS, the score its own, the products and sums two more
            carried = LANGEVIN_STEP_ROUNDINGS + SCORE_ROUNDINGS + 2
            terms.append((x.abs() + carried * ((mean - x).abs() + (new - mean).abs())).reshape(-1))
            k += 1
        if predictor != "none":
            t, x, score = steps[k]
            terms.append(predictor_terms(x, t, score, noise[i, -1], kind=kind, predictor=predictor, N=N).reshape(-1))
            k += 1
    if not terms:  # no predictor and no corrector: x_T itself is returned
        return float(x_T.abs().max())
    # the state each sub-step starts from, after the first; the last one's terms land in the output directly
    carried_to_output = sensitivities([x for _, x, _ in steps[1:]], [x for _, x, _ in steps_p[1:]], out, out_p)
    carried_to_output.append(torch.ones_like(terms[-1]))
    return float(sum(c.abs() * m for c, m in zip(carried_to_output, terms)).max())


# --- Langevin ------------------------------------------------------------------------------------------------

# the snr step 2 alpha (snr mean||z|| / mean||s||)^2: per norm a sum of 6 squares and a root (~4 roundings, u each),
# the means, the ratio and its square (doubling what came before): about 2 x (4 + 2 + 1) + 2 u = 8 eps
LANGEVIN_STEP_ROUNDINGS = 8


@checks("score_sde.langevin", operation="score_sde.langevin_step")
@given(seed=st.integers(0, 2**31), snr=st.floats(0.05, 0.5), alpha=st.floats(0.5, 1.0))
def test_langevin_step_size(target, seed, snr, alpha):
    # per-sample norms differ (rows scaled 1..4): a per-sample step or a global norm would give another epsilon
    scale = torch.arange(1, 5, dtype=F64)[:, None]
    x, score, z = (target.tensor(randn(seed + k, 4, 6) * (scale if k else 1)) for k in range(3))
    new, mean = target(x, score, z, snr=snr, alpha=alpha)
    S, Z = score.double(), z.double()
    eps = 2 * alpha * (snr * Z.norm(dim=1).mean() / S.norm(dim=1).mean()) ** 2
    # eps is LANGEVIN_STEP_ROUNDINGS from exact (sums of squares, roots, means, a ratio, a square: nothing cancels);
    # eps score and sqrt(2 eps) z carry it (and a product's rounding); each sum rounds once at the size of its result
    kappa = LANGEVIN_STEP_ROUNDINGS + 1
    tol_mean = eps_of(target) * (mean.double().abs() + kappa * eps * S.abs())
    within_tolerance("x_mean = x + eps score, eps = 2 alpha (snr mean||z|| / mean||s||)^2", mean, x.double() + eps * S,
                     tol_mean)
    tol_noise = eps_of(target) * (new.double().abs() + kappa * torch.sqrt(2 * eps) * Z.abs())
    within_tolerance("the Langevin noise = sqrt(2 eps) z", new.double() - mean.double(), torch.sqrt(2 * eps) * Z,
                     tol_noise)


@checks("score_sde.langevin", operation="score_sde.langevin_step")
def test_langevin_converges(target):
    mu, v, eps, steps, n = 1.5, 0.25, 5e-3, 1000, 2**13
    gen = torch.Generator().manual_seed(2030)
    x = target.tensor(torch.zeros(n, 1, dtype=F64))
    for _ in range(steps):
        score = -(x - mu) / v
        x, _ = target(x, score, target.tensor(torch.randn(n, 1, generator=gen, dtype=F64)), step_size=eps)
    # the chain x' = (1 - eps/v) x + eps mu/v + sqrt(2 eps) z is Gaussian at every step: after 1000 steps its mean is
    # mu (1 - (1 - eps/v)^1000) = mu - 3e-9 and its variance v / (1 - eps/(2v)) (1 - (1 - eps/v)^2000)
    r = 1 - eps / v
    m_k, v_k = mu * (1 - r**steps), v / (1 - eps / (2 * v)) * (1 - r ** (2 * steps))
    mean, var = float(x.double().mean()), float(x.double().var())
    z = normal_z(5e-7)
    lo, hi = chi2_relative_bounds(n - 1, 5e-7)
    recording.statistic("Langevin: |mean - mu| / (z sd)", abs(mean - m_k) / (z * math.sqrt(v_k / n)), 1.0, 5e-7)
    recording.statistic("Langevin: var / chain var - 1", var / v_k - 1, hi, 5e-7)
    if abs(mean - m_k) > z * math.sqrt(v_k / n) or not -lo <= var / v_k - 1 <= hi:
        raise AssertionError(f"Langevin chains: mean {mean:.6g}, var {var:.6g}; expected {m_k:.6g}, {v_k:.6g} "
                             f"(the target N({mu}, {v}) up to the stationary bias eps / 2v): |mean - m| / (z sd) = "
                             f"{distinct_digits(abs(mean - m_k) / (z * math.sqrt(v_k / n)), 1.0)[0]} (at most 1), "
                             f"var / v - 1 = {distinct_digits(var / v_k - 1, -lo if var < v_k else hi)[0]} "
                             f"(within [-{lo:.4f}, {hi:.4f}])")


# --- the operations' contracts ------------------------------------------------------------------------------



X = randn(1, 4, 3)


@checks("score_sde.contract", operation="score_sde.sde")
@pytest.mark.parametrize("case", ["unknown kind", "t > 1", "t of the wrong shape"])
def test_sde_rejects_bad_input(target, case):
    x = target.tensor(X)
    call = {"unknown kind": lambda fn: fn(x, 0.5, kind="cosine"), "t > 1": lambda fn: fn(x, 1.5),
            "t of the wrong shape": lambda fn: fn(x, target.tensor(torch.ones(2, dtype=F64)) * 0.5)}[case]
    expect_rejection(target, call, "kind" if case == "unknown kind" else "t", case)


@checks("score_sde.contract", operation="score_sde.predictor_step")
@pytest.mark.parametrize("case", ["unknown predictor", "score of the wrong shape"])
def test_predictor_step_rejects_bad_input(target, case):
    x = target.tensor(X)
    if case == "unknown predictor":
        expect_rejection(target, lambda fn: fn(x, 0.5, x, x, predictor="heun"), "predictor", case)
    else:
        expect_rejection(target, lambda fn: fn(x, 0.5, x[:2], x), "score", case)


@checks("score_sde.contract", operation="score_sde.pc_sampler")
@pytest.mark.parametrize("case", ["noise of the wrong shape", "score_fn not callable"])
def test_pc_sampler_rejects_bad_input(target, case):
    x = target.tensor(X)
    if case == "score_fn not callable":
        expect_rejection(target, lambda fn: fn(None, x, target.tensor(randn(2, 3, 1, 4, 3)), N=3), "score_fn", case)
    else:
        expect_rejection(target, lambda fn: fn(gaussian_score_fn("vp"), x, target.tensor(randn(2, 3, 4, 3)), N=3),
                          "noise", case)
