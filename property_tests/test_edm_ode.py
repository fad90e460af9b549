"""Property tests of EDM's prediction conversions and probability-flow ODE (specs/edm/ode.py).

Identities that are exact in float64 are asserted at a tolerance derived from float64 rounding (stated per test);
float32 implementations are held to the error budget against the naive torch code (torch.batched); statistical
claims state their bound and false-alarm probability and use fixed seeds. Shared helpers: edm_helpers.py,
oracles_diffusion.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from eqspec.budget import distinct_digits
from specs import edm

from . import recording
from .edm_helpers import CLAIM_RTOL_F64, X4, covers, log_uniform, seeds
from .harness import checks, expect_rejection, within_budget
from .oracles_diffusion import F64, eps_of, within_tolerance
from .strategies import randn


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
        within_budget("D", D, edm.to_denoised(pred_t.double().cpu(), x_t.double().cpu(), sigma, s,  # on the host
                                              prediction=prediction),
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


# --- the operation's contract ------------------------------------------------------------------------------

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
