"""Property tests of the EDM document (specs/edm.py), one or more per claim.

Identities that are exact in float64 are asserted at a tolerance derived from float64 rounding (stated per test);
float32 implementations are held to the error budget against the naive torch code (torch.batched); statistical
claims state their bound and false-alarm probability and use fixed seeds.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given

from eqspec.budget import distinct_digits, rounding_atol
from specs import edm

from . import harness, recording
from .harness import checks, close, equal, within_budget
from .oracles_diffusion import (
    Mixture1D,
    chi2_relative_bounds,
    dkw_bound,
    fitted_slope,
    gaussian_denoiser,
    histogram,
    ks_distance,
    perturbed_start,
    sensitivities,
    within_relative,
    within_tolerance,
)
from .strategies import randn

# These documents' errors name the argument in their first word (e.g. "sigma_next: must ...").
expect_rejection = harness.expect_rejection

F64 = torch.float64


def same(name: str, out: torch.Tensor, ref: torch.Tensor) -> None:
    """Bit-identical, compared on the CPU (a CUDA result against a CPU expectation)."""
    equal(name, out.detach().cpu(), ref.detach().cpu())
U64 = torch.finfo(F64).eps
SIGMA_DATA = edm.SIGMA_DATA
CLAIM_RTOL_F64 = 1e-12  # the claims' stated float64 tolerance for identities (relative to the terms)


def eps_of(target) -> float:
    return torch.finfo(target.torch_dtype).eps


def log_uniform(seed: int, n: int, lo: float, hi: float) -> torch.Tensor:
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


seeds = st.integers(0, 2**31)


def covers(target, what: str) -> bool:
    """A library adapter covers only the kinds / predictions it declares (provides "kind:edm", ...)."""
    return target.impl.origin != "thirdparty" or what in target.impl.provides


# --- Table 1: preconditioning, schedules, time steps, training distribution --------------------------------

PRECONDITIONING_ROUNDINGS = 12  # eps units: see test_preconditioning_identities


@checks("edm.preconditioning_identities", operation="edm.preconditioning")
@pytest.mark.parametrize("kind", edm.KINDS)
@given(seed=seeds)
def test_preconditioning_identities(target, kind, seed):
    sigma = target.tensor(log_uniform(seed, 64, 1e-3, 1e3))
    c_skip, c_out, c_in, c_noise, weight = (v.double() for v in target(sigma, kind=kind))
    S, sd = sigma.double(), SIGMA_DATA
    # each coefficient is a few roundings (u = eps / 2) from exact: at most 4 (c_out: a square, a sum, a root, a
    # quotient; nothing cancels); an identity of total degree 2 in them moves by 2 x 4 u per product, and the
    # unit-variance one adds three such products (1 - c_skip cancels, but only where its square is negligible):
    # 3 x 8 u = 12 eps, plus the test's own float64 arithmetic
    rtol = rounding_atol(target.torch_dtype, 1.0, PRECONDITIONING_ROUNDINGS) + 8 * U64
    one = torch.ones_like(S)
    close("lambda c_out^2", weight * c_out**2, one, atol=0, rtol=rtol)
    if kind == "edm":
        close("c_in^2 (sigma^2 + sigma_d^2)", c_in**2 * (S**2 + sd**2), one, atol=0, rtol=rtol)
        close("c_skip + c_out^2 / sigma_d^2", c_skip + c_out**2 / sd**2, one, atol=0, rtol=rtol)
        close("unit-variance target", c_out**2, (1 - c_skip) ** 2 * sd**2 + c_skip**2 * S**2, atol=0, rtol=rtol)


# catalogue/edm.md known-answer numbers (8 significant digits: relative rounding <= 5e-8)
EDM_PRECOND = {0.5: (0.5, 0.35355339, 1.4142136, -0.1732868, 8.0), 1.0: (0.2, 0.4472136, 0.89442719, 0.0, 5.0),
               80.0: (3.9060974e-5, 0.49999023, 0.012499756, 1.0955067, None)}
VP_SIGMA_1 = 152.16697  # sigma(1) for (19.9, 0.1)
IDDPM_U8 = 80.20370


@checks("edm.preconditioning_known_answers", operation="edm.preconditioning")
def test_preconditioning_known_answers(target):
    # the catalogue's 8 significant digits round by <= 5e-8 relative, and c_noise (printed to 7 decimals, and 0 at
    # sigma = 1) by <= 5e-8 absolute: 1e-7 covers the printing, 8 eps the implementation's roundings
    rtol = 1e-7 + 8 * eps_of(target)
    for sigma, expected in EDM_PRECOND.items():
        got = target(target.tensor(torch.tensor([sigma], dtype=F64)), kind="edm")
        for name, value, want in zip(("c_skip", "c_out", "c_in", "c_noise", "lambda"), got, expected):
            if want is not None:
                close(f"EDM {name} at sigma = {sigma}", value, torch.tensor([want], dtype=F64), atol=1e-7, rtol=rtol)
    sig = target.tensor(torch.tensor([0.3, 1.0, 7.0], dtype=F64))
    c_noise_ve = target(sig, kind="ve")[3]
    # ln(sigma / 2), or ln sigma - ln 2: terms of size |ln sigma| + ln 2, two roundings
    close("VE c_noise = ln(sigma / 2)", c_noise_ve, torch.log(sig.double() / 2),
          atol=rounding_atol(target.torch_dtype, float(sig.double().log().abs().max()) + math.log(2), 2), rtol=0)
    # VP: sigma(1) = 152.16697 is the top of the schedule: c_noise = (M - 1) sigma^-1(sigma(1)) = 999 (the
    # 8-digit sigma moves t by ~3e-8 / (d sigma / dt = 1528) in relative terms: far below 1e-4)
    c_noise_vp = target(target.tensor(torch.tensor([VP_SIGMA_1], dtype=F64)), kind="vp")[3]
    close("VP c_noise at sigma(1)", c_noise_vp, torch.tensor([999.0], dtype=F64), atol=1e-4 + 999 * 8 * eps_of(target))
    c_noise_iddpm = target(target.tensor(torch.tensor([IDDPM_U8], dtype=F64)), kind="iddpm")[3]
    close("iDDPM c_noise at u_8", c_noise_iddpm, torch.tensor([991.0], dtype=F64), atol=0)


def schedule_conditioning(t: torch.Tensor, kind: str):
    """(kappa, slope, kappa_inv) per time: sigma(t) computed in floating point is about kappa roundings of its dtype
    (relative) from exact; d ln sigma / d ln t = slope; sigma^-1 evaluated in float64 is kappa_inv roundings from
    exact.

    VP: sigma = sqrt(e - 1), e = exp(E), E = beta_d t^2 / 2 + beta_min t: E's three roundings (t^2, the products, the
    sum) become a relative error 3 u E of e, exp adds u, and e - 1 cancels terms of size e: a relative error e / (e - 1)
    times that, halved by the root (5e5 u at t = 1e-5, 15 u at t = 1), plus the root's and the difference's: in eps,
    (1 + 3E) e / (4 (e - 1)) + 1 to first order; kappa is twice that. Its inverse subtracts beta_min from
    sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)). FM: sigma = t / (1 - t), where 1 - t cancels terms of size 1. VE: a
    root. EDM: sigma = t itself.
    """
    one = torch.ones_like(t)
    if kind == "vp":
        E = 0.5 * edm.VP_BETA_D * t**2 + edm.VP_BETA_MIN * t
        e = torch.exp(E)
        slope = (edm.VP_BETA_D * t**2 + edm.VP_BETA_MIN * t) * e / (2 * torch.expm1(E))
        root = torch.sqrt(edm.VP_BETA_MIN**2 + 2 * edm.VP_BETA_D * torch.log1p(torch.expm1(E)))
        return 2 + (1 + 3 * E) * e / (2 * torch.expm1(E)), slope, 8 * root / (root - edm.VP_BETA_MIN)
    if kind == "ve":
        return 2 * one, 0.5 * one, 2 * one
    if kind == "fm":
        return 3 + t / (1 - t), 1 / (1 - t), 3 * one
    return one, one, one


@checks("edm.schedule_endpoints_and_inverse", operation="edm.schedule")
@pytest.mark.parametrize("kind", edm.SCHEDULES)
@given(seed=seeds)
def test_schedule_endpoints_and_inverse(target, kind, seed):
    hi = 0.99 if kind == "fm" else 1.0
    t = torch.sort(torch.rand(32, generator=torch.Generator().manual_seed(seed), dtype=F64) * hi + 1e-3).values
    t = target.tensor(t.clamp(max=hi))
    sigma, s, _, _ = (v.double() for v in target(t, kind=kind))
    zero = target(target.tensor(torch.zeros(1, dtype=F64)), kind=kind)[0]
    same("sigma(0)", zero.double(), torch.zeros(1, dtype=F64))
    if not bool((sigma[1:] >= sigma[:-1]).all()):
        raise AssertionError(f"sigma(t) must increase with t ({kind}): {sigma.tolist()[:6]}...")
    # sigma's relative error (kappa roundings of its dtype) becomes t's divided by d ln sigma / d ln t; the float64
    # inverse adds its own (the VP one cancels sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) against beta_min)
    kappa, slope, kappa_inv = schedule_conditioning(t.double(), kind)
    within_relative(f"sigma^-1(sigma(t)) ({kind})", edm.sigma_inv(sigma, kind), t.double(),
                    eps_of(target) * kappa / slope + U64 * kappa_inv)
    if kind == "vp":
        # s = 1 / sqrt(e) is three roundings (six in s^2); sigma^2 = e - 1 cancels terms of size e, and s^2 e = 1:
        # two roundings of e and two of the root's square: ten in all, plus the test's float64 products
        close("s^2 (1 + sigma^2)", s**2 * (1 + sigma**2), torch.ones_like(s), atol=0,
              rtol=rounding_atol(target.torch_dtype, 1.0, 5) + 4 * U64)
        t_known = torch.tensor([1.0, 1e-3, 1e-5], dtype=F64)
        known = target(target.tensor(t_known), kind="vp")[0]
        # 8 printed digits (5e-8 relative) and sigma's own conditioning: e - 1 -> 0 as t -> 0 (1e-6 at t = 1e-5)
        within_relative("VP sigma(1), sigma(1e-3), sigma(1e-5)", known,
                        torch.tensor([152.16697, 0.010485993, 0.0010004976], dtype=F64),
                        1e-7 + eps_of(target) * schedule_conditioning(target.tensor(t_known).double(), "vp")[0])
    if kind == "fm":
        # s = 1 - t and s sigma = t (1 - t) / (1 - t): five roundings of terms of size 1
        close("s + s sigma", s + s * sigma, torch.ones_like(s), atol=0,
              rtol=rounding_atol(target.torch_dtype, 1.0, 3) + 4 * U64)


@checks("edm.schedule_derivatives", operation="edm.schedule", dtypes=("float64",))
@pytest.mark.parametrize("kind", edm.SCHEDULES)
@given(seed=seeds)
def test_schedule_derivatives(target, kind, seed):
    t = 0.05 + 0.9 * torch.rand(16, generator=torch.Generator().manual_seed(seed), dtype=F64)
    h = 1e-6 * torch.ones_like(t)
    sigma_p, s_p, _, _ = target(t + h, kind=kind)
    sigma_m, s_m, _, _ = target(t - h, kind=kind)
    _, _, sigma_dot, s_dot = target(t, kind=kind)
    # central differences: O(h^2) truncation plus O(u |f| / h) rounding, about 1e-9 relative here
    close(f"sigma_dot ({kind})", sigma_dot, (sigma_p - sigma_m) / (2 * h), atol=1e-9, rtol=1e-6)
    close(f"s_dot ({kind})", s_dot, (s_p - s_m) / (2 * h), atol=1e-9, rtol=1e-6)


GEOMETRIC_RHO = 1e6
EDM_STEPS_18 = [80, 57.586, 40.7856, 28.3746, 19.3525, 12.9101, 8.40094, 5.31519, 3.25682, 1.92334, 1.08817,
                0.585348, 0.296442, 0.139516, 0.0599473, 0.0229345, 0.00752802, 0.002, 0]
EDM_STEPS_5 = [80, 17.5278, 2.51522, 0.169753, 0.002, 0]


def rho_steps_rtol(rho: float, dtype: torch.dtype) -> float:
    """Relative error of eq. 5's times in ``dtype``: t_{N-1} = (a + (b - a))^rho with a = sigma_max^(1/rho) and
    b = sigma_min^(1/rho): the sum cancels to b, losing a / b = (sigma_max / sigma_min)^(1/rho), and the power
    multiplies relative errors by rho; four roundings (the two roots, the difference, the sum)."""
    return rounding_atol(dtype, rho * (edm.EDM_SIGMA_MAX / edm.EDM_SIGMA_MIN) ** (1 / rho), 4)


@checks("edm.time_steps", operation="edm.time_steps")
@given(N=st.integers(2, 64), rho=st.sampled_from([1.0, 3.0, 7.0, 20.0]))
def test_time_steps(target, N, rho):
    dtype = target.torch_dtype
    rtol = rho_steps_rtol(rho, dtype)
    t = target(N, kind="edm", rho=rho, dtype=dtype).double()
    if t.shape != (N + 1,) or t[-1] != 0 or not bool((t[1:] < t[:-1]).all()):
        raise AssertionError(f"N + 1 strictly decreasing times ending in 0 expected, got {t.tolist()}")
    close("t_0, t_{N-1}", t[[0, N - 1]], torch.tensor([80.0, 0.002], dtype=F64), atol=0, rtol=rtol)
    if rho == 1.0:  # entries <= 80, each a few roundings at eps x 80
        close("rho = 1 is linspace", t[:-1], torch.linspace(80, 0.002, N, dtype=F64), atol=4 * eps_of(target) * 80,
              rtol=0)
    # rho = 1e6 is geometric only in the limit: with L = ln(sigma_min / sigma_max) = -10.6 the relative gap is
    # rho s (1 - s) / 2 (L / rho)^2 <= 1.4e-5 at s = 1/2, and 1e-4 is 7x the gap; the base sigma^(1/rho) + ramp (...)
    # is rounded twice in the dtype (the sum, and the power's argument), each amplified by rho: 2e6 eps (4.4e-10 in
    # float64; in float32 the formula as written is off by up to 24%, measured 2.9% for k-diffusion's)
    geo = target(N, kind="edm", rho=GEOMETRIC_RHO, dtype=dtype).double()[:-1]
    close("rho = 1e6 is geomspace", geo, torch.exp(torch.linspace(math.log(80), math.log(0.002), N, dtype=F64)),
          atol=0, rtol=1e-4 + rounding_atol(dtype, GEOMETRIC_RHO, 2))


# the end points each kind's time steps must reach: VE t = sigma^2 from sigma_max^2 = 100^2 to sigma_min^2 = 0.02^2;
# VP t from 1 to epsilon_s = 1e-3 (catalogue Table 1)
OTHER_KIND_ENDS = {"ve": [100.0**2, 0.02**2, 0.0], "vp": [1.0, 1e-3, 0.0]}
# VP: t_i = 1 + ramp (epsilon_s - 1) cancels terms of size 1 to reach 1e-3: two roundings of 1, absolute. VE:
# sigma_max^2 (sigma_min^2 / sigma_max^2)^ramp multiplies the exponent's rounding by |ln(4e-8)| = 17 (as exp(ramp ln
# r)), plus three roundings (the ratio, the power, the product)
OTHER_KIND_TOLERANCE = {
    "vp": lambda dtype: dict(atol=rounding_atol(dtype, 1.0, 2), rtol=rounding_atol(dtype, 1.0, 1)),
    "ve": lambda dtype: dict(atol=0, rtol=rounding_atol(dtype, 1.0, 3 + abs(math.log(0.02**2 / 100.0**2)))),
}


@checks("edm.time_steps", operation="edm.time_steps")
@pytest.mark.parametrize("kind", sorted(OTHER_KIND_ENDS))
@given(N=st.integers(2, 64))
def test_time_steps_other_kinds(target, kind, N):
    if not covers(target, f"kind:{kind}"):
        pytest.skip(f"{target.name} has no '{kind}' time steps")
    tt = target(N, kind=kind, dtype=target.torch_dtype).double()
    close(f"{kind} t_0, t_{{N-1}}, t_N", tt[[0, N - 1, N]], torch.tensor(OTHER_KIND_ENDS[kind], dtype=F64),
          **OTHER_KIND_TOLERANCE[kind](target.torch_dtype))
    if not bool((tt[1:] < tt[:-1]).all()):
        raise AssertionError(f"{kind} times must strictly decrease, got {tt.tolist()}")


@checks("edm.time_steps", operation="edm.time_steps")
def test_time_steps_known_answers(target):
    dtype = target.torch_dtype
    rtol = 1e-5 + rho_steps_rtol(edm.EDM_RHO, dtype)  # the catalogue prints 6 significant digits
    close("EDM N = 18", target(18, dtype=dtype), torch.tensor(EDM_STEPS_18, dtype=F64), atol=0, rtol=rtol)
    close("EDM N = 5", target(5, dtype=dtype), torch.tensor(EDM_STEPS_5, dtype=F64), atol=0, rtol=rtol)


@checks("edm.time_steps", operation="edm.time_steps")
def test_time_steps_iddpm_known_answers(target):
    if not covers(target, "kind:iddpm"):
        pytest.skip(f"{target.name} has no 'iddpm' time steps")
    dtype = target.torch_dtype
    iddpm = target(18, kind="iddpm", dtype=dtype)
    close("iDDPM t_0 = u_8, t_{N-1} = u_999", iddpm[[0, 17, 18]], torch.tensor([80.20370, 0.00642541, 0.0], dtype=F64),
          atol=0, rtol=1e-6 + 4 * eps_of(target))
    u = edm.iddpm_u()
    close("iDDPM u_0", u[:1], torch.tensor([20291.17], dtype=F64), atol=0.006)
    n_in = int(((u >= 0.002) & (u <= 81)).sum())
    if n_in != 992:
        raise AssertionError(f"992 iDDPM levels lie in [0.002, 81], got {n_in}")


PHI_1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))  # P(Z <= 1)


@checks("edm.training_distribution", operation="edm.training_sigma")
def test_training_distribution(target):
    u = target.tensor(torch.tensor([0.5, PHI_1, 1 - PHI_1], dtype=F64))
    close("EDM median and ln sigma = P_mean +- P_std at Phi(+-1)", target(u, kind="edm"),
          torch.tensor([0.301194, 1.0, math.exp(-2.4)], dtype=F64), atol=0, rtol=2e-6)
    # E[sigma] = exp(P_mean + P_std^2 / 2) = e^-0.48: a midpoint rule over 2^18 quantiles (the lognormal tail
    # beyond the last midpoint holds < 1e-4 of the mean: measured 2.6e-5 relative error)
    n = 2**18
    mid = target.tensor((torch.arange(n, dtype=F64) + 0.5) / n)
    close("EDM mean e^-0.48", target(mid, kind="edm").double().mean().reshape(1),
          torch.tensor([0.618783], dtype=F64), atol=0, rtol=1e-4)
    q = target.tensor(torch.tensor([0.25, 0.5, 0.75], dtype=F64))
    # VE: exp(ln 0.02 + q ln 5000), or 0.02 x 5000^q: the exponent's rounding times |ln 5000| = 8.5, three more
    close("VE log-uniform on [0.02, 100]", target(q, kind="ve"),
          torch.exp(math.log(0.02) + q.double() * math.log(100 / 0.02)), atol=0,
          rtol=rounding_atol(target.torch_dtype, 1.0, 3 + math.log(100 / 0.02)) + 4 * U64)
    # VP: sigma(t) with t = 1e-5 + q (1 - 1e-5) rounded twice (carried by d ln sigma / d ln t), and sigma's own
    t = edm.VP_EPS_T + q.double() * (1 - edm.VP_EPS_T)
    kappa, slope, _ = schedule_conditioning(t, "vp")
    within_relative("VP sigma(t), t ~ U(1e-5, 1)", target(q, kind="vp"), edm.vp_sigma_s(t)[0],
                    eps_of(target) * (kappa + 2 * slope) + 4 * U64)
    ends = target.tensor(torch.tensor([0.0005, 0.9995], dtype=F64))
    close("iDDPM u_0 and u_999", target(ends, kind="iddpm"), torch.tensor([20291.17, 0.00642541], dtype=F64),
          atol=0, rtol=1e-6)


@checks("edm.prior_std", operation="edm.prior_std")
def test_prior_std(target):
    # sigma(80) s(80) = 80 x 1: a product of exact numbers, a few float64 roundings at most
    close("EDM prior std at t_0 = 80", torch.tensor([target(80.0, kind="edm")], dtype=F64),
          torch.tensor([80.0], dtype=F64), atol=0, rtol=rounding_atol(F64, 1.0, 2))


# (kind, t_0, prior std, rtol): the VP value is printed to 8 decimals (rounding <= 5e-9, under the 1e-8 allowed);
# the VE value sqrt(100^2) = 100 is exact: two float64 roundings (the root, the product by s = 1)
PRIOR_STD_OTHER_KINDS = [("vp", 1.0, 0.99997841, 1e-8), ("ve", 1e4, 100.0, rounding_atol(F64, 1.0, 2))]


@checks("edm.prior_std", operation="edm.prior_std")
@pytest.mark.parametrize("kind, t0, expected, rtol", PRIOR_STD_OTHER_KINDS)
def test_prior_std_other_kinds(target, kind, t0, expected, rtol):
    if not covers(target, f"kind:{kind}"):
        pytest.skip(f"{target.name} has no '{kind}' prior std")
    close(f"{kind} prior std at t = {t0}", torch.tensor([target(t0, kind=kind)], dtype=F64),
          torch.tensor([expected], dtype=F64), atol=0, rtol=rtol)


# --- the denoiser's loss, conversions, the ODE ---------------------------------------------------------------

def random_network(seed: int):
    """A fixed random nonlinear F(x_in, c_noise): any network must satisfy the identities, not only a good one."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(3, generator=g, dtype=F64) * 1.5).tolist()

    def F(x_in, c_noise):
        c = c_noise.reshape(-1, *([1] * (x_in.dim() - 1))) if c_noise.dim() == 1 else c_noise
        return torch.tanh(a * x_in + b * c) + c * x_in.roll(1, dims=-1) * 0.3

    return F


@checks("edm.denoiser_loss", operation="edm.denoiser_loss", dtypes=("float64",))
@pytest.mark.parametrize("kind", edm.KINDS)
@given(seed=seeds)
def test_denoiser_loss(target, kind, seed):
    B, d = 16, 5
    y = randn(seed, B, d, scale=SIGMA_DATA)
    sigma = {"edm": log_uniform(seed + 1, B, 0.002, 80), "ve": log_uniform(seed + 1, B, 0.02, 100),
             "vp": log_uniform(seed + 1, B, 0.01, 150), "iddpm": edm.iddpm_u()[torch.randint(
                 0, 1000, (B,), generator=torch.Generator().manual_seed(seed))]}[kind]
    eps = randn(seed + 2, B, d)
    n = sigma[:, None] * eps
    F = random_network(seed + 3)
    loss = target(F, y, n, sigma, kind=kind).double()
    c_in, c_noise = (edm.preconditioning(sigma, kind=kind)[i] for i in (2, 3))
    F_out = F(c_in[:, None] * (y + n), c_noise)
    f_loss = ((F_out - edm.effective_target(y, n, sigma, kind=kind)) ** 2).sum(1)
    # both sides sum d squares of terms of size ~|F| + |F_target|: relative 1e-12 of that size
    scale = ((F_out.abs() + eps.abs() + y.abs() / sigma[:, None] + 1) ** 2).sum(1)
    if not bool(((loss - f_loss).abs() <= 1e-12 * scale).all()):
        raise AssertionError(f"weighted D-loss {loss.tolist()[:4]} differs from the unit-weight F-loss "
                             f"{f_loss.tolist()[:4]} ({kind})")
    if kind in ("vp", "ve"):
        sign = 1.0 if kind == "ve" else -1.0  # VE: c_out = +sigma, F_target = -eps; VP: c_out = -sigma, +eps
        eps_mse = ((F_out + sign * eps) ** 2).sum(1)
        if not bool(((loss - eps_mse).abs() <= 1e-12 * scale).all()):
            raise AssertionError(f"{kind} D-loss must equal the epsilon-MSE ||F {'+' if sign > 0 else '-'} eps||^2: "
                                 f"{loss.tolist()[:4]} vs {eps_mse.tolist()[:4]}")


def _conversion_case(prediction: str, seed: int, n: int = 32):
    x0 = randn(seed, n, 3, scale=0.7)
    eps = randn(seed + 1, n, 3)
    sigma = log_uniform(seed + 2, n, 1e-2, 1e2)[:, None]
    if prediction == "v":
        s = 1 / torch.sqrt(1 + sigma**2)
    elif prediction == "flow":
        s = 1 / (1 + sigma)
    else:
        s = 0.1 + 0.9 * torch.rand(n, 1, generator=torch.Generator().manual_seed(seed + 3), dtype=F64)
    x, pred = edm.prediction_target(x0, eps, sigma, s, prediction=prediction)
    return x0, eps, sigma, s, x, pred


@checks("edm.conversions_round_trip", operation="edm.to_denoised")
@pytest.mark.parametrize("prediction", edm.PREDICTIONS)
@given(seed=seeds)
def test_conversions_round_trip(target, prediction, seed):
    if not covers(target, f"prediction:{prediction}"):
        pytest.skip(f"{target.name} has no '{prediction}' conversion")
    x0, eps, sigma, s, x, pred = _conversion_case(prediction, seed)
    x_t, pred_t = target.tensor(x), target.tensor(pred)
    D = target(pred_t, x_t, sigma, s, prediction=prediction)
    # the terms D sums: |x| / s and the prediction's term, each ~ sigma |eps| in size
    magnitude = x.abs() / s + (sigma * eps).abs() + x0.abs() + (x.abs() * s)
    if target.dtype == "float64":  # the claim's float64 bound, relative to the terms
        within_tolerance(f"{prediction}: D recovers x_0", D, x0, CLAIM_RTOL_F64 * magnitude)
    else:
        within_budget("D", D, edm.to_denoised(pred_t.double(), x_t.double(), sigma, s, prediction=prediction),
                      target.baseline(pred_t, x_t, sigma, s, prediction=prediction), magnitude=magnitude, terms=4)
    if prediction in ("v", "flow") and target.dtype == "float64":  # the EDM-space forms of catalogue A.6
        y = x / s
        alt = (y / (sigma**2 + 1) - sigma / torch.sqrt(sigma**2 + 1) * pred if prediction == "v"
               else y / (1 + sigma) - sigma / (1 + sigma) * pred)
        within_tolerance(f"{prediction}: D equals its EDM-space form", D, alt, CLAIM_RTOL_F64 * magnitude)


@checks("edm.conversions_round_trip", operation="edm.to_denoised")
@pytest.mark.parametrize("prediction", edm.PREDICTIONS)
def test_conversion_round_trip_errors(target, prediction):
    """One fixed sweep of sigma from 1e-2 to 1e2 for the report: the round-trip error in units of eps x the terms."""
    if not covers(target, f"prediction:{prediction}"):
        pytest.skip(f"{target.name} has no '{prediction}' conversion")
    n = 64
    x0, eps = randn(2007, n, 1, scale=0.7), randn(2008, n, 1)
    sigma = torch.logspace(-2, 2, n, dtype=F64)[:, None]
    s = {"v": 1 / torch.sqrt(1 + sigma**2), "flow": 1 / (1 + sigma)}.get(prediction, torch.full_like(sigma, 0.5))
    x, pred = edm.prediction_target(x0, eps, sigma, s, prediction=prediction)
    D = target(target.tensor(pred), target.tensor(x), sigma, s, prediction=prediction).double().cpu()
    magnitude = x.abs() / s + (sigma * eps).abs() + x0.abs() + x.abs() * s
    units = ((D - x0).abs() / (eps_of(target) * magnitude)).reshape(-1)
    recording.series("conversion_round_trip", f"{target.name} {target.dtype}: {prediction}", "log10 sigma",
                     "|D - x_0| / (eps |terms|)", list(zip(torch.log10(sigma).reshape(-1).tolist(), units.tolist())),
                     kind="linear")
    # float64: the 1e-12 relative bound of the claim is ~4500 eps; other dtypes: the inputs are rounded (one eps of
    # each term) and the conversion adds a few roundings: 16 eps of the terms
    limit = CLAIM_RTOL_F64 / eps_of(target) if target.dtype == "float64" else 16.0
    if not float(units.max()) <= limit:
        got, allowed = distinct_digits(float(units.max()), limit)
        raise AssertionError(f"{prediction}: round-trip error {got} eps x |terms| over {allowed}")


@checks("edm.ode_forms_agree", operation="edm.ode_derivative", dtypes=("float64",))
@pytest.mark.parametrize("kind", edm.SCHEDULES)
@given(seed=seeds)
def test_ode_forms_agree(target, kind, seed):
    t = 0.05 + 0.9 * torch.rand(8, 1, generator=torch.Generator().manual_seed(seed), dtype=F64)
    sigma, s, sigma_dot, s_dot = edm.schedule(t, kind=kind)
    x = randn(seed + 1, 8, 4) * s * torch.sqrt(sigma**2 + 1)
    D = randn(seed + 2, 8, 4, scale=0.5)
    got = target(D, x, sigma, s, sigma_dot, s_dot)
    score_x = edm.score_from_denoised(D, x / s, sigma) / s  # grad_x log p(x / s; sigma): chain rule gives 1/s
    want = edm.ode_derivative_from_score(score_x, x, sigma, s, sigma_dot, s_dot)
    mag = (sigma_dot / sigma + s_dot.abs() / s) * x.abs() + sigma_dot * s / sigma * D.abs()
    within_tolerance(f"D-form = eq. 4 ({kind})", got, want, CLAIM_RTOL_F64 * mag)
    if kind == "edm":  # relative to the terms x / sigma and D / sigma, which cancel where D ~ x (measured 1.8e-15 on
        # a result of 1.1e-4: 1.7e-11 relative to the result)
        within_tolerance("dx/dsigma = (x - D) / sigma", got, (x - D) / sigma, CLAIM_RTOL_F64 * mag)


# --- A.7: equivalences, and where they fail ----------------------------------------------------------------

def nonlinear_predictor(seed: int):
    """A random nonlinear map x -> prediction (not a trained model: the equivalences hold for any)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(4, 4, generator=g, dtype=F64)
    return lambda x: torch.tanh(x.double() @ W) * 1.7 + 0.2 * x.double() ** 2


def _agreement(name, got, want, magnitude, target, reference_error=0.0):
    # the claim's bounds: float64 1e-12 relative to the terms; float32 64 roundings of the terms (each path has ~10
    # operations, and the inputs themselves are rounded); plus the float64 reference's own error where it is
    # ill-conditioned
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


@checks("edm.heun_is_not_equivariant", operation="edm.heun_sampler", dtypes=("float64",))
def test_heun_depends_on_the_time_variable(target):
    """Heun in FM time and Heun in EDM sigma solve the same ODE but are different methods: their results differ by
    a second-order discretisation difference (falls ~4x per doubling of N), far above float64 rounding."""
    D = gaussian_denoiser()
    y_T = torch.linspace(-2, 2, 9, dtype=F64) * 80
    diffs = []
    for N in (16, 32, 64):
        sigmas = edm.time_steps(N)
        in_edm = target(D, y_T, sigmas, kind="edm")
        in_fm = target(D, y_T / 81, sigmas / (1 + sigmas), kind="fm")  # x = s y, t = sigma / (1 + sigma); s(0) = 1
        diffs.append(float((in_edm - in_fm).abs().max()))
    ratios = [a / b for a, b in zip(diffs, diffs[1:])]
    recording.series("heun_fm_vs_edm", f"{target.name}: |Heun(FM t) - Heun(EDM sigma)|", "N", "max difference",
                     list(zip((16, 32, 64), diffs)), kind="loglog")
    # measured for the spec: differences 0.059, 0.012, 0.0027 (ratios 4.86, 4.40); float64 rounding is ~1e-13 of
    # these sizes, so 1e-4 separates a real difference from rounding; the band [3, 5.5] is around the second-order
    # ratio 4 with room for the measured pre-asymptotic 4.86
    if not diffs[0] > 1e-4:
        raise AssertionError(f"Heun in FM time and in EDM sigma should differ (A.7 iii); max difference "
                             f"{distinct_digits(diffs[0], 1e-4)[0]} <= 1e-4")
    if not all(3.0 <= r <= 5.5 for r in ratios):
        raise AssertionError(f"the FM/EDM Heun difference should shrink ~4x per doubling of N, got ratios {ratios}")
    # Euler in VP time (ablation sampler, vp schedule and scaling) is not DDIM either
    N = 16
    t = edm.time_steps(N, kind="vp")
    sig, s, _, _ = edm.schedule(t, kind="vp")
    x_T = y_T / 80 * float(sig[0] * s[0])
    euler_vp = target(D, x_T, t, kind="vp", second_order=False)
    x = x_T.clone()
    a = (s**2).tolist()
    for i in range(N):
        y = x / math.sqrt(a[i])
        eps_hat = (y - D(y, float(sig[i]))) / float(sig[i])
        x = edm.ddim_step(eps_hat, x, a[i], a[i + 1]) if a[i + 1] < 1 else edm.to_denoised(
            eps_hat, x, float(sig[i]), math.sqrt(a[i]))
    gap = float((euler_vp - x).abs().max())
    recording.statistic("max |Euler in VP time - DDIM| (N = 16)", gap, 1e-4, 0.0)
    if not gap > 1e-4:
        raise AssertionError(f"Euler in VP time should differ from DDIM (A.7 iii), max difference "
                             f"{distinct_digits(gap, 1e-4)[0]} <= 1e-4")


ORDER_NS = (16, 32, 64, 128)


@checks("edm.heun_order", operation="edm.heun_sampler", dtypes=("float64",))
@pytest.mark.parametrize("kind", ["edm", "vp"])
def test_heun_order(target, kind):
    D = gaussian_denoiser()
    results = {}
    # ratios per doubling of N around 4 (second order) and 2 (first order); measured for the spec: Heun 4.60, 4.28,
    # 4.13 (edm) and 3.93-3.99 (vp); Euler 1.97-1.99 (edm) and 1.73, 1.89, 1.95 (vp, pre-asymptotic at N = 16)
    for second_order, (lo, hi) in ((True, (3.3, 5.0)), (False, (1.7, 2.3))):
        errors = []
        for N in ORDER_NS:
            t = edm.time_steps(N, kind=kind)[:-1]  # end at sigma_min: every step is Heun (the last-step rule apart)
            sig, s, _, _ = edm.schedule(t, kind=kind)
            y_T = torch.linspace(-2, 2, 9, dtype=F64) * float(sig[0])
            x = target(D, y_T * float(s[0]), t, kind=kind, second_order=second_order)
            exact = float(s[-1]) * edm.gaussian_flow(y_T, float(sig[0]), float(sig[-1]))
            errors.append(float((x.double() - exact).abs().max()))
        ratios = [a / b for a, b in zip(errors, errors[1:])]
        slope = fitted_slope(list(ORDER_NS), errors)
        name = "Heun" if second_order else "Euler"
        recording.series(f"error_vs_steps_{kind}", f"{name} {kind} (slope {slope:.2f})", "N (steps)",
                         "max |x_N - exact|", list(zip(ORDER_NS, errors)), kind="loglog")
        recording.statistic(f"{name} {kind}: error ratio per doubling (min)", min(ratios), lo, 0.0)
        results[name] = ratios
        if not all(lo <= r <= hi for r in ratios):
            raise AssertionError(f"{name} ({kind}): error ratios per doubling of N {ratios} outside [{lo}, {hi}] "
                                 f"(errors {errors})")


class CountingDenoiser:
    """Records each call's sigma, its input y and its output D (float64, on the CPU): a sampler's trajectory."""

    def __init__(self, D):
        self.D, self.sigmas, self.ys, self.Ds = D, [], [], []

    def __call__(self, y, sigma):
        out = self.D(y, sigma)
        self.sigmas.append(float(sigma))
        self.ys.append(y.detach().double().cpu().reshape(-1))
        self.Ds.append(out.detach().double().cpu().reshape(-1))
        return out


# Each term of a sampler step is rounded about four times (u = eps / 2 each) in the implementation's dtype: its
# coefficient, the product, the sum, and the denoiser's own output: 2 eps
SAMPLER_ROUNDINGS = 2


def heun_step_terms(x, D, a: float, b: float, h: float, corrector=None):
    """Per element, the size of the terms one step of Algorithm 1 sums, d = a x - b D: the Euler step x + h d, and
    with a corrector (D', a', b') evaluated at that Euler point (carrying its rounding, amplified by h a' / 2: large
    where a step ends at a small sigma), x + h / 2 (d + d')."""
    euler = x.abs() + h * (a * x.abs() + b * D.abs())
    if corrector is None:
        return euler
    D2, a2, b2 = corrector
    return euler + x.abs() + h / 2 * (a * x.abs() + b * D.abs()) + h / 2 * (a2 * euler + b2 * D2.abs())


def heun_sampler_magnitude(run, x_T: torch.Tensor, t_steps: torch.Tensor, kind: str, second_order: bool) -> float:
    """max over elements of the terms of every step of Algorithm 1 (heun_step_terms) along the float64 reference's
    trajectory, each carried to the output by the trajectory's own sensitivity: what rounding errors of the size of
    those terms, made anywhere, can move the result by. ``run(denoiser, x)`` runs the reference."""
    calls, calls_p = CountingDenoiser(MIXTURE.denoiser()), CountingDenoiser(MIXTURE.denoiser())
    out, out_p = run(calls, x_T), run(calls_p, perturbed_start(x_T))
    T = t_steps.tolist()
    sig, s, sig_dot, s_dot = (v.tolist() for v in edm.schedule(t_steps, kind=kind))
    a = [abs(sig_dot[i] / sig[i] + s_dot[i] / s[i]) if sig[i] > 0 else 0.0 for i in range(len(T))]
    b = [abs(sig_dot[i] * s[i] / sig[i]) if sig[i] > 0 else 0.0 for i in range(len(T))]
    k, terms, states, states_p = 0, [], [], []
    for i in range(len(T) - 1):
        x, D = s[i] * calls.ys[k], calls.Ds[k]
        if i > 0:  # the state this step starts from, in both runs
            states.append(x)
            states_p.append(s[i] * calls_p.ys[k])
        k += 1
        corrector = None
        if second_order and sig[i + 1] != 0:
            corrector, k = (calls.Ds[k], a[i + 1], b[i + 1]), k + 1
        terms.append(heun_step_terms(x, D, a[i], b[i], abs(T[i + 1] - T[i]), corrector))
    carried = sensitivities(states, states_p, out, out_p) + [torch.ones_like(terms[-1])]
    return float(sum(c.abs() * m for c, m in zip(carried, terms)).max())


def stochastic_sampler_magnitude(run, x_T: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor,
                                 **churn) -> float:
    """As heun_sampler_magnitude for Algorithm 2 (a = b = 1 / t): each step first adds sqrt(t_hat^2 - t^2) S_noise eps
    to x (terms |x_hat| + that noise), then takes a Heun step from t_hat."""
    calls, calls_p = CountingDenoiser(MIXTURE.denoiser()), CountingDenoiser(MIXTURE.denoiser())
    out, out_p = run(calls, x_T), run(calls_p, perturbed_start(x_T))
    t, N = sigmas.tolist(), len(sigmas) - 1
    k, terms, states, states_p = 0, [], [], []
    for i in range(N):
        t_hat = edm.churn(torch.zeros(1, dtype=F64), t[i], torch.zeros(1, dtype=F64), N=N, **churn)[1]
        added = math.sqrt(t_hat**2 - t[i] ** 2) * churn.get("S_noise", 1.0) * noise[i].abs().reshape(-1)
        x_hat, D = calls.ys[k], calls.Ds[k]
        if i > 0:
            states.append(x_hat)
            states_p.append(calls_p.ys[k])
        k += 1
        corrector = None
        if t[i + 1] != 0:
            corrector, k = (calls.Ds[k], 1 / t[i + 1], 1 / t[i + 1]), k + 1
        terms.append(added + heun_step_terms(x_hat, D, 1 / t_hat, 1 / t_hat, abs(t[i + 1] - t_hat), corrector))
    carried = sensitivities(states, states_p, out, out_p) + [torch.ones_like(terms[-1])]
    return float(sum(c.abs() * m for c, m in zip(carried, terms)).max())


@checks("edm.heun_nfe_and_last_step", operation="edm.heun_sampler")
@given(N=st.integers(1, 40))
def test_heun_nfe_and_last_step(target, N):
    D = CountingDenoiser(gaussian_denoiser())
    sigmas = edm.time_steps(N)
    x_T = target.tensor(randn(N, 64, scale=80.0))
    x = target(D, x_T, sigmas, kind="edm")
    if len(D.sigmas) != 2 * N - 1 or 0.0 in D.sigmas:
        raise AssertionError(f"Heun with N = {N} must evaluate the denoiser 2N - 1 = {2 * N - 1} times, never at "
                             f"sigma = 0; got {len(D.sigmas)} calls at {D.sigmas[-3:]}")
    x_prev = target(gaussian_denoiser(), x_T, sigmas[:-1], kind="edm") if N > 1 else x_T
    last = gaussian_denoiser()(x_prev.double(), float(sigmas[-2]))  # the Euler step to 0 returns D(x; sigma_{N-1})
    # x + (0 - t)(x - D) / t: D's two roundings, then (x - D), the quotient, the product, the sum, each at most one
    # rounding of |x| ~ |D| (t = 0.002: D ~ x): four eps of |x_{N-1}|, plus one for D near 0
    close("last step = D(x_{N-1})", x, last, atol=rounding_atol(target.torch_dtype, float(x_prev.abs().max()) + 1, 4),
          rtol=0)


@checks("edm.heun_nfe_and_last_step", operation="edm.stochastic_sampler")
@given(N=st.integers(1, 40))
def test_stochastic_sampler_nfe(target, N):
    D = CountingDenoiser(gaussian_denoiser())
    sigmas = edm.time_steps(N)
    x_T = target.tensor(randn(N, 64, scale=80.0))
    noise = target.tensor(randn(N + 1, N, 64))
    target(D, x_T, sigmas, noise, S_churn=40.0)
    if len(D.sigmas) != 2 * N - 1 or 0.0 in D.sigmas:
        raise AssertionError(f"Algorithm 2 with N = {N} must evaluate the denoiser 2N - 1 times, never at 0; got "
                             f"{len(D.sigmas)}")


# --- sampling the data distribution -------------------------------------------------------------------------

MIXTURE = Mixture1D()
N_SAMPLES = 2**14
DISCRETISATION_ALLOWANCE = 0.01  # measured KS distance of Heun N = 32 with 2^20 samples: ~2e-3


def _mixture_check(target, x, label: str):
    ks = ks_distance(x, MIXTURE.cdf)
    bound = dkw_bound(x.numel()) + DISCRETISATION_ALLOWANCE
    recording.statistic(f"{label}: KS distance to the mixture CDF", ks, bound, 1e-6)
    recording.series("sampled_vs_density", f"{target.name} {target.dtype}: {label}", "x", "density",
                     histogram(x, -2.0, 2.5), kind="histogram")
    if not ks <= bound:
        got, allowed = distinct_digits(ks, bound)
        raise AssertionError(f"{label}: KS distance {got} to the data CDF exceeds the DKW bound + allowance "
                             f"{allowed} (false alarm 1e-6)")


@checks("edm.samplers_reach_data", operation="edm.heun_sampler")
def test_heun_reaches_mixture(target):
    x_T = target.tensor(randn(2001, N_SAMPLES, scale=80.0))
    x = target(MIXTURE.denoiser(target.torch_dtype, target.device), x_T, edm.time_steps(32), kind="edm")
    if target.dtype == "float64":
        density = MIXTURE.pdf(torch.linspace(-2.0, 2.5, 60, dtype=F64) + 4.5 / 120)
        recording.series("sampled_vs_density", "mixture density", "x", "density",
                         list(zip((torch.linspace(-2.0, 2.5, 60, dtype=F64) + 4.5 / 120).tolist(), density.tolist())),
                         kind="histogram")
    _mixture_check(target, x, "Heun N = 32")


@checks("edm.samplers_reach_data", operation="edm.heun_sampler")
def test_heun_gaussian_std(target):
    n = N_SAMPLES
    x = target(gaussian_denoiser(), target.tensor(randn(2002, n, scale=80.0)), edm.time_steps(64), kind="edm")
    # the ODE maps N(0, 80^2) linearly, so x is exactly Gaussian: sum x^2 / var ~ var chi^2_n (mean 0 known)
    var = (x.double() ** 2).mean()
    want = (80 * SIGMA_DATA) ** 2 / (80**2 + SIGMA_DATA**2)
    lo, hi = chi2_relative_bounds(n)
    rel = float(var / want - 1)
    recording.statistic("Heun N = 64: relative error of the output variance", rel, 0.02 + hi, 1e-6)
    if not -(0.02 + lo) <= rel <= 0.02 + hi:  # std within 1% is variance within ~2%
        edge = -(0.02 + lo) if rel < 0 else 0.02 + hi
        got, allowed = distinct_digits(rel, edge)
        raise AssertionError(f"output variance {float(var):.6g} vs {want:.6g}: relative {got} beyond {allowed} "
                             f"(allowed [-{0.02 + lo:.4f}, {0.02 + hi:.4f}])")


@checks("edm.samplers_reach_data", operation="edm.stochastic_sampler")
def test_stochastic_sampler_reaches_mixture(target):
    N = 32
    x_T = target.tensor(randn(2003, N_SAMPLES, scale=80.0))
    noise = target.tensor(randn(2004, N, N_SAMPLES))
    x = target(MIXTURE.denoiser(target.torch_dtype, target.device), x_T, edm.time_steps(N), noise, S_churn=40.0,
               S_tmin=0.05, S_tmax=50.0, S_noise=1.003)
    _mixture_check(target, x, "Algorithm 2, S_churn = 40, N = 32")


@checks("edm.samplers_within_budget", operation="edm.heun_sampler")
@pytest.mark.parametrize("kind", edm.SCHEDULES)
@given(seed=seeds, N=st.integers(1, 24), second_order=st.booleans())
def test_heun_sampler_within_budget(target, kind, seed, N, second_order):
    t = edm.time_steps(N, kind="vp" if kind in ("vp", "fm") else "edm")
    if kind == "ve":
        t = t**2  # t = sigma^2
    if kind == "fm":
        t = t * 0.99
    sig, s, _, _ = edm.schedule(t, kind=kind)
    x_T = target.tensor(randn(seed, 8, 3, scale=float(sig[0] * s[0])))
    D = MIXTURE.denoiser(target.torch_dtype, target.device)
    D2 = lambda y, sigma: D(y.reshape(-1), sigma).reshape(y.shape)  # noqa: E731
    out = target(D2, x_T, t, kind=kind, second_order=second_order)
    ref = edm.heun_sampler(MIXTURE.denoiser(), x_T.double(), t, kind=kind, second_order=second_order)
    base = target.baseline(D2, x_T, t, kind=kind, second_order=second_order)
    magnitude = heun_sampler_magnitude(lambda D_, x: edm.heun_sampler(D_, x, t, kind=kind, second_order=second_order),
                                       x_T.double().cpu(), t, kind, second_order)
    within_budget("x_0", out, ref, base, magnitude=SAMPLER_ROUNDINGS * magnitude)


@checks("edm.samplers_within_budget", operation="edm.stochastic_sampler")
@given(seed=seeds, N=st.integers(1, 24), S_churn=st.sampled_from([0.0, 10.0, 40.0, 80.0]))
def test_stochastic_sampler_within_budget(target, seed, N, S_churn):
    sigmas = edm.time_steps(N)
    x_T = target.tensor(randn(seed, 16, scale=80.0))
    noise = target.tensor(randn(seed + 1, N, 16))
    D = MIXTURE.denoiser(target.torch_dtype, target.device)
    kw = dict(S_churn=S_churn, S_tmin=0.05, S_tmax=50.0, S_noise=1.003)
    out = target(D, x_T, sigmas, noise, **kw)
    ref = edm.stochastic_sampler(MIXTURE.denoiser(), x_T.double(), sigmas, noise.double(), **kw)
    base = target.baseline(D, x_T, sigmas, noise, **kw)
    noise64 = noise.double().cpu()
    magnitude = stochastic_sampler_magnitude(lambda D_, x: edm.stochastic_sampler(D_, x, sigmas, noise64, **kw),
                                             x_T.double().cpu(), sigmas, noise64, **kw)
    within_budget("x_0", out, ref, base, magnitude=SAMPLER_ROUNDINGS * magnitude)


# --- Algorithm 2's churn ------------------------------------------------------------------------------------

@checks("edm.churn", operation="edm.churn")
@given(S_churn=st.floats(0.0, 200.0), N=st.integers(1, 300), t=st.floats(0.01, 80.0))
def test_churn_gamma(target, S_churn, N, t):
    x = target.tensor(torch.zeros(4, dtype=F64))
    eps = target.tensor(torch.ones(4, dtype=F64))
    _, t_hat = target(x, t, eps, S_churn=S_churn, N=N)
    gamma = min(S_churn / N, math.sqrt(2) - 1)
    # t (1 + gamma), or t + gamma t: about three roundings (the ratio, the sum, the product) in the dtype t_hat is
    # computed in, each side; four allowed
    rtol = rounding_atol(target.torch_dtype, 1.0, 2)
    close("t_hat = t (1 + gamma)", torch.tensor([t_hat], dtype=F64), torch.tensor([t * (1 + gamma)], dtype=F64),
          atol=0, rtol=rtol)
    _, t_out = target(x, t, eps, S_churn=S_churn, N=N, S_tmin=t * 1.5)
    _, t_out2 = target(x, t, eps, S_churn=S_churn, N=N, S_tmax=t * 0.5)
    if t_out != t or t_out2 != t:
        raise AssertionError(f"outside [S_tmin, S_tmax] gamma must be 0: t_hat {t_out}, {t_out2} for t = {t}")
    _, t_img = target(x, 10.0, eps, S_churn=40.0, N=256, S_tmin=0.05, S_tmax=50.0)
    # t_hat / t - 1 cancels terms of size t_hat / t = 1.15625: t_hat's error, absolute
    close("ImageNet gamma = 40/256", torch.tensor([t_img / 10.0 - 1], dtype=F64), torch.tensor([0.15625], dtype=F64),
          atol=rtol * t_img / 10.0, rtol=0)


@checks("edm.churn", operation="edm.churn")
def test_churn_variance(target):
    n, t, N, S_churn = 2**18, 2.0, 10, 3.0
    x = target.tensor(randn(2005, n, scale=math.sqrt(SIGMA_DATA**2 + t**2)))
    eps = target.tensor(randn(2006, n))
    x_hat, t_hat = target(x, t, eps, S_churn=S_churn, N=N)
    want = SIGMA_DATA**2 + (t * (1 + S_churn / N)) ** 2
    var = float((x_hat.double() ** 2).mean())  # mean 0 known: n var chi^2_n / n, exactly (x_hat is Gaussian)
    lo, hi = chi2_relative_bounds(n)
    rel = var / want - 1
    recording.statistic("churn: relative error of the variance", rel, hi, 1e-6)
    if not -lo <= rel <= hi:
        got, allowed = distinct_digits(rel, -lo if rel < 0 else hi)
        raise AssertionError(f"churned variance {var:.6g} vs sigma_d^2 + t_hat^2 = {want:.6g} (relative {got} beyond "
                             f"{allowed}, false alarm 1e-6)")


@checks("edm.churn", operation="edm.stochastic_sampler")
def test_no_churn_is_deterministic(target):
    N = 8
    x_T = target.tensor(randn(7, 128, scale=80.0))
    sigmas = edm.time_steps(N)
    D = gaussian_denoiser()
    a = target(D, x_T, sigmas, target.tensor(randn(8, N, 128)), S_churn=0.0)
    b = target(D, x_T, sigmas, target.tensor(randn(9, N, 128)), S_churn=0.0)
    same("S_churn = 0 ignores the noise", a, b)
    c = target(D, x_T, sigmas, target.tensor(randn(8, N, 128)), S_churn=5.0)
    if bool((a == c).all()):
        raise AssertionError("S_churn = 5 must use the noise")
    gap = float((target(D, x_T, sigmas, target.tensor(randn(8, N, 128)), S_churn=1e6).double()
                 - target(D, x_T, sigmas, target.tensor(randn(8, N, 128)), S_churn=N * (math.sqrt(2) - 1))
                 .double()).abs().max())
    same("gamma is capped at sqrt 2 - 1", torch.tensor([gap], dtype=F64), torch.tensor([0.0], dtype=F64))


# --- steps and helpers --------------------------------------------------------------------------------------

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
        out64, r64, b64 = (v.double().cpu() / cond for v in (out, r, b))
        check = within_budget(f"{name} / its conditioning ({label})", out64, r64, b64, magnitude=1.0,
                              dtype=target.torch_dtype)
        allowed.append(check.allowed * cond)
    return got, allowed


@checks("edm.ancestral_split", operation="edm.ancestral_split")
@given(seed=seeds, eta=st.floats(0.0, 1.0))
def test_ancestral_split(target, seed, eta):
    f = target.tensor(log_uniform(seed, 32, 1e-2, 1e2))
    to = f.double() * torch.rand(32, generator=torch.Generator().manual_seed(seed), dtype=F64)
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


# --- the operations' contracts ------------------------------------------------------------------------------



X4 = randn(1, 2, 4)
TO_DENOISED_BAD = {
    "unknown prediction": (lambda f, t: f(t(X4), t(X4), 1.0, 1.0, prediction="noise"), "prediction"),
    "shape mismatch": (lambda f, t: f(t(X4[:1]), t(X4), 1.0, 1.0), "pred"),
    "sigma <= 0": (lambda f, t: f(t(X4), t(X4), 0.0, 1.0), "sigma"),
    "v with an inconsistent s": (lambda f, t: f(t(X4), t(X4), 1.0, 1.0, prediction="v"), "s"),
    "flow with an inconsistent s": (lambda f, t: f(t(X4), t(X4), 1.0, 0.9, prediction="flow"), "s"),
    "integer x": (lambda f, t: f(t(X4), torch.ones(2, 4, dtype=torch.long), 1.0, 1.0), "x"),
}


@checks("edm.contract", operation="edm.to_denoised")
@pytest.mark.parametrize("case", list(TO_DENOISED_BAD))
def test_to_denoised_rejects_bad_input(target, case):
    make, argument = TO_DENOISED_BAD[case]
    expect_rejection(target, lambda fn: make(fn, target.tensor), argument, case)


SAMPLER_BAD = {
    "increasing t_steps": (lambda f, t: f(gaussian_denoiser(), t(X4), torch.tensor([0.0, 1.0])), "t_steps"),
    "not callable": (lambda f, t: f(3, t(X4), torch.tensor([1.0, 0.0])), "denoiser"),
    "unknown kind": (lambda f, t: f(gaussian_denoiser(), t(X4), torch.tensor([1.0, 0.0]), kind="cosine"), "kind"),
}


@checks("edm.contract", operation="edm.heun_sampler")
@pytest.mark.parametrize("case", list(SAMPLER_BAD))
def test_heun_sampler_rejects_bad_input(target, case):
    make, argument = SAMPLER_BAD[case]
    expect_rejection(target, lambda fn: make(fn, target.tensor), argument, case)


@checks("edm.contract", operation="edm.stochastic_sampler")
@pytest.mark.parametrize("case", ["noise of the wrong shape", "increasing sigmas"])
def test_stochastic_sampler_rejects_bad_input(target, case):
    x, D = target.tensor(X4), gaussian_denoiser()
    if case == "increasing sigmas":
        expect_rejection(target, lambda fn: fn(D, x, torch.tensor([0.0, 1.0]), target.tensor(randn(1, 1, 2, 4))),
                          "sigmas", case)
    else:
        expect_rejection(target, lambda fn: fn(D, x, torch.tensor([2.0, 1.0, 0.0]), target.tensor(randn(1, 1, 2, 4))),
                          "noise", case)


@checks("edm.contract", operation="edm.time_steps")
@pytest.mark.parametrize("case", ["N = 0", "unknown kind"])
def test_time_steps_rejects_bad_input(target, case):
    if case == "N = 0":
        expect_rejection(target, lambda fn: fn(0), "N", case)
    else:
        expect_rejection(target, lambda fn: fn(8, kind="cosine"), "kind", case)


@checks("edm.contract", operation="edm.preconditioning")
@pytest.mark.parametrize("case", ["sigma <= 0", "unknown kind"])
def test_preconditioning_rejects_bad_input(target, case):
    if case == "sigma <= 0":
        expect_rejection(target, lambda fn: fn(target.tensor(torch.tensor([1.0, 0.0]))), "sigma", case)
    else:
        expect_rejection(target, lambda fn: fn(target.tensor(torch.ones(2)), kind="cosine"), "kind", case)


@checks("edm.contract", operation="edm.ddim_step")
@pytest.mark.parametrize("case", ["alpha_bar outside (0, 1)", "eta > 0 without noise"])
def test_ddim_step_rejects_bad_input(target, case):
    x = target.tensor(X4)
    if case == "eta > 0 without noise":
        expect_rejection(target, lambda fn: fn(x, x, 0.5, 0.9, eta=0.5), "noise", case)
    else:
        expect_rejection(target, lambda fn: fn(x, x, 1.5, 0.9), "alpha_bar", case)

