"""Property tests of EDM's preconditioning and training (specs/edm/training.py): Table 1's c_skip, c_out, c_in,
c_noise and loss weight, the training noise distribution, the denoiser loss.

Identities that are exact in float64 are asserted at a tolerance derived from float64 rounding (stated per test);
float32 implementations are held to the error budget against the naive torch code (torch.batched); statistical
claims state their bound and false-alarm probability and use fixed seeds. Shared helpers: edm_helpers.py,
oracles_diffusion.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given

from eqspec.budget import rounding_atol
from specs import edm

from .edm_helpers import SIGMA_DATA, U64, log_uniform, schedule_conditioning, seeds
from .harness import checks, close, expect_rejection
from .oracles_diffusion import F64, eps_of, within_relative
from .strategies import randn

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


# --- the operation's contract ------------------------------------------------------------------------------

@checks("edm.contract", operation="edm.preconditioning")
@pytest.mark.parametrize("case", ["sigma <= 0", "unknown kind"])
def test_preconditioning_rejects_bad_input(target, case):
    if case == "sigma <= 0":
        expect_rejection(target, lambda fn: fn(target.tensor(torch.tensor([1.0, 0.0]))), "sigma", case)
    else:
        expect_rejection(target, lambda fn: fn(target.tensor(torch.ones(2)), kind="cosine"), "kind", case)
