"""Property tests of the stochastic-approximation document (specs/stochastic_approximation.py).

The algorithms take their noise as an argument; the statistical tests draw it from seeded generators (the ci
profile is derandomized) and compare the iterates with the exact distribution of the unrolled linear recursion
(Gaussian noise, linear g): the normalised squared errors of M independent runs must fall in the Laurent-Massart
chi-square band at false-alarm probability 1e-6 per test and implementation (split evenly over the horizons checked
and the examples a test runs: a union bound).
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eqspec.budget import distinct_digits
from specs import stochastic_approximation as sa
from specs.mdp import EPS, F64

from . import recording
from .harness import checks, close, rejection_test

DOC = "stochastic_approximation"
FALSE_ALARM = 1e-6  # per test and implementation, over all its examples and horizons (union bound)
RUNS = 2000
HORIZONS = (10, 100, 1000)
STAT_EXAMPLES = 8  # max_examples of the statistical tests: each chi-square check gets FALSE_ALARM / (8 x 3)
CHECK_FALSE_ALARM = FALSE_ALARM / (STAT_EXAMPLES * len(HORIZONS))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _harmonic(K: int) -> torch.Tensor:
    return 1.0 / torch.arange(1, K + 1, dtype=F64)


# --- the incremental mean ----------------------------------------------------------------------------

@checks("stochastic_approximation.incremental_mean", operation=f"{DOC}.incremental_mean")
@given(n=st.integers(1, 200), width=st.integers(0, 3), w1=st.floats(-1e3, 1e3), seed=st.integers(0, 2**31 - 1))
def test_incremental_mean_is_the_batch_mean(target, n, width, w1, seed):
    shape = (n,) if width == 0 else (n, width)
    x = torch.randn(shape, generator=_gen(seed), dtype=F64) * 10 + 3
    w = target(x, w1=w1)
    batch = x.cumsum(0) / torch.arange(1, n + 1, dtype=F64).reshape(-1, *([1] * (x.dim() - 1)))
    # each step rounds ~4 times, at most eps max(|x|, |w_1|) each (the first step computes w_1 - (w_1 - x_1)),
    # and the factors (1 - 1/k) do not amplify old errors
    close("w_{k+1} = mean(x_1..x_k)", w[1:], batch, atol=4 * n * EPS * max(abs(w1), float(x.abs().max())))


@checks("stochastic_approximation.incremental_mean", operation=f"{DOC}.incremental_mean")
@given(n=st.integers(1, 100), w1=st.floats(-10, 10), seed=st.integers(0, 2**31 - 1))
def test_incremental_estimate_with_general_steps(target, n, w1, seed):
    g = _gen(seed)
    x = torch.randn(n, generator=g, dtype=F64)
    alpha = torch.rand(n, generator=g, dtype=F64)
    w = target(x, w1=w1, alpha=alpha)
    # w_{K+1} = prod_k (1 - alpha_k) w_1 + sum_k alpha_k prod_{j>k} (1 - alpha_j) x_k
    keep = torch.cat([torch.flip(torch.cumprod(torch.flip(1 - alpha, [0]), 0), [0])[1:], torch.ones(1, dtype=F64)])
    expected = torch.prod(1 - alpha) * w1 + (alpha * keep * x).sum()
    # the recursion rounds ~3 times per step (u max(|w_1|, |x|) each; factors 1 - alpha_k <= 1 never amplify them);
    # the unrolled form rounds each product of n factors (n u relative), the products with alpha and x and the sum
    # (3 u per term): 4 n u on each side, 8 n eps in all
    close("w_{K+1} (unrolled)", w[-1], expected, atol=8 * n * EPS * max(1.0, abs(w1), float(x.abs().max())))


# --- Robbins-Monro ----------------------------------------------------------------------------------

RM_TANH = {1: "3", 2: "2.035972", 3: "1.647826", 4: "1.457758", 5: "1.350694", 6: "1.283296", 50: "1.029376",
           200: "1.007234"}


@checks("stochastic_approximation.robbins_monro_trajectory", operation=f"{DOC}.robbins_monro")
def test_robbins_monro_tanh_trajectory(target):
    K = 200
    w = target(lambda w: torch.tanh(w - 1), 3.0, _harmonic(K), torch.zeros(K, dtype=F64))
    for k, printed in RM_TANH.items():
        if abs(float(w[k - 1]) - float(printed)) > 0.5e-6:
            raise AssertionError(f"w_{k} = {float(w[k - 1]):.7f}, the catalogue gives {printed}")
    if not bool((w[1:] < w[:-1]).all() and (w > 1).all()):
        raise AssertionError("the noise-free iterates must decrease monotonically towards 1")
    # The catalogue's fixed-seed check: with eta ~ N(0, 1) the iterates reach |w - 1| < 0.05 after 1e4 steps (the
    # asymptotic standard deviation is 1 / sqrt(K (2 g'(1) - 1)) = 0.01: 0.05 is five of them). Seeds 3001-3003.
    # False alarm, in the normal approximation of w_K (its bias from w_1 = 3 decays like 1/K, far below 0.01):
    # P(|Z| >= 5) = 5.7e-7 per seed, <= 1.8e-6 for the three.
    noisy = target(lambda w: torch.tanh(w - 1), 3.0, _harmonic(10_000),
                   torch.stack([torch.randn(10_000, generator=_gen(seed), dtype=F64) for seed in (3001, 3002, 3003)],
                               dim=1))
    if float((noisy[-1] - 1).abs().max()) >= 0.05:
        raise AssertionError(f"noisy RM after 1e4 steps: |w - 1| = {(noisy[-1] - 1).abs().tolist()}, not all < 0.05")
    recording.series("robbins_monro_iterates", f"{target.name}: eta = 0", "k", "w_k",
                     [(k, float(w[k - 1])) for k in range(1, K + 1)], kind="linear")
    recording.series("robbins_monro_iterates", f"{target.name}: eta ~ N(0, 1), seed 3001", "k", "w_k",
                     [(k, float(noisy[k - 1, 0])) for k in range(1, K + 1)], kind="linear")


def _chi2_check(name: str, errors: torch.Tensor, mean: float, var: float, false_alarm: float) -> float:
    """The runs' (x - mean)^2 / var averaged: chi2_M / M for exactly Gaussian x; raise outside the band."""
    ratio = float(((errors - mean) ** 2).mean() / var)
    lo, hi = sa.chi2_band(errors.numel(), false_alarm)
    recording.statistic(name, ratio, hi, false_alarm)
    if not lo <= ratio <= hi:
        got, edge = distinct_digits(ratio, lo if ratio < lo else hi)
        raise AssertionError(f"{name}: mean squared normalised error {got} outside the chi-square band "
                             f"[{lo:.4f}, {hi:.4f}] (edge {edge}, false alarm {false_alarm:.1e})")
    return ratio


@checks("stochastic_approximation.robbins_monro_converges", operation=f"{DOC}.robbins_monro")
@settings(max_examples=STAT_EXAMPLES)  # 1000 steps of 2000 runs per example
@given(c=st.floats(0.6, 2.0), w_star=st.floats(-5, 5), w1=st.floats(-10, 10), sigma=st.floats(0.1, 3.0),
       seed=st.integers(0, 2**31 - 1))
def test_robbins_monro_converges(target, c, w_star, w1, sigma, seed):
    K = max(HORIZONS)
    a = _harmonic(K)
    eta = torch.randn(K, RUNS, generator=_gen(seed), dtype=F64) * sigma
    w = target(lambda w: c * (w - w_star), w1, a, eta)
    points = []
    for horizon in HORIZONS:
        # e_{k+1} = (1 - c a_k) e_k - a_k eta_k: Dvoretzky's recursion with alpha = c a, beta = a
        mean, var = sa.dvoretzky_moments(w1 - w_star, c * a[:horizon], a[:horizon], sigma)
        _chi2_check(f"RM error at K = {horizon}", w[horizon] - w_star, mean, var, CHECK_FALSE_ALARM)
        points.append((horizon, float((w[horizon] - w_star).pow(2).mean().sqrt())))
    if recording.current().examples <= 1:
        recording.series("robbins_monro_error", f"{target.name}: RMS |w_K - w*|", "K", "error", points, kind="loglog")


@checks("stochastic_approximation.robbins_monro_stalls", operation=f"{DOC}.robbins_monro")
def test_robbins_monro_stalls_with_summable_steps(target):
    K = 60
    a = 2.0 ** -torch.arange(1, K + 1, dtype=F64)
    w = target(lambda w: torch.tanh(w - 1), 3.0, a, torch.zeros(K, dtype=F64))
    # tanh(e) <= e for e >= 0, so e_{k+1} >= (1 - a_k) e_k: every iterate stays above 1 + 2 prod_k (1 - 2^-k)
    floor = 1 + 2 * math.prod(1 - 2.0 ** -k for k in range(1, K + 1))
    # each of the K steps w - a tanh(w - 1) rounds ~4 times (u |w| each, the errors never amplified: the map has
    # slope in [0, 1]); the floor's product K times (u each, of numbers <= 1, times 2)
    tol = K * (4 * float(w.abs().max()) + 2) * EPS / 2
    if float(w.min()) < floor - tol:
        low, bound = distinct_digits(float(w.min()), floor)
        raise AssertionError(f"RM with sum a_k < infinity went below {bound}: min w = {low}")


@checks("stochastic_approximation.robbins_monro_converges", operation=f"{DOC}.robbins_monro")
@given(c=st.floats(0.6, 2.0), w_star=st.floats(-5, 5), w1=st.floats(-10, 10), sigma=st.floats(0.1, 3.0))
def test_robbins_monro_reference_error_shrinks(c, w_star, w1, sigma):
    """The spec's moment recursion alone (no implementation runs here): the exact mean squared error E (w_K - w*)^2
    that test_robbins_monro_converges pins the runs to falls by at least 3x per decade of K (1/K for c > 1/2, K^-2c
    below), so the band there is a convergence check."""
    a = _harmonic(max(HORIZONS))
    mse = []
    for horizon in HORIZONS:
        mean, var = sa.dvoretzky_moments(w1 - w_star, c * a[:horizon], a[:horizon], sigma)
        mse.append(mean ** 2 + var)
    if not all(later * 3 < earlier for earlier, later in zip(mse, mse[1:])):
        raise AssertionError(f"E (w_K - w*)^2 does not shrink with K: {mse}")


# --- Dvoretzky --------------------------------------------------------------------------------------

@checks("stochastic_approximation.dvoretzky", operation=f"{DOC}.dvoretzky")
@settings(max_examples=STAT_EXAMPLES)
@given(delta1=st.floats(-10, 10), sigma=st.floats(0.1, 3.0), seed=st.integers(0, 2**31 - 1))
def test_dvoretzky(target, delta1, sigma, seed):
    K = max(HORIZONS)
    alpha, beta = _dvoretzky_steps(K)
    eta = torch.randn(K, RUNS, generator=_gen(seed), dtype=F64) * sigma
    delta = target(delta1, alpha, beta, eta)
    for horizon in HORIZONS:
        mean, var = sa.dvoretzky_moments(delta1, alpha[:horizon], beta[:horizon], sigma)
        _chi2_check(f"Delta at K = {horizon}", delta[horizon], mean, var, CHECK_FALSE_ALARM)


def _dvoretzky_steps(K: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.arange(1, K + 1, dtype=F64)
    return 1.0 / k, k ** -0.6  # sum beta = infinity is allowed; sum beta^2 < infinity is what matters


@checks("stochastic_approximation.dvoretzky", operation=f"{DOC}.dvoretzky")
@given(delta1=st.floats(-10, 10), sigma=st.floats(0.1, 3.0))
def test_dvoretzky_reference_variance_shrinks(delta1, sigma):
    """The spec's moment recursion alone (no implementation runs here): the exact variance of Delta_K that
    test_dvoretzky pins the runs to decreases towards 0 over the horizons, so the band there is a convergence check."""
    alpha, beta = _dvoretzky_steps(max(HORIZONS))
    variances = [sa.dvoretzky_moments(delta1, alpha[:h], beta[:h], sigma)[1] for h in HORIZONS]
    if not variances[0] > variances[1] > variances[2]:
        raise AssertionError(f"the variance of Delta_K must decrease to 0, got {variances}")


# --- gradient methods -------------------------------------------------------------------------------

def _grad(w, x):
    return w - x  # f(w, x) = |w - x|^2 / 2


@checks("stochastic_approximation.gradient_descent_variants", operation=f"{DOC}.sgd")
@given(n=st.integers(1, 60), d=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_sgd_is_the_running_mean(target, n, d, seed):
    x = torch.randn(n, d, generator=_gen(seed), dtype=F64)
    w = target(_grad, torch.full((d,), 7.0, dtype=F64), x, _harmonic(n))
    running = x.cumsum(0) / torch.arange(1, n + 1, dtype=F64)[:, None]
    # SGD: ~4 roundings per step of numbers <= max(|w_1|, |x|), never amplified (factors 1 - 1/k); the running mean:
    # a cumulative sum (k u of k max|x|) and a division
    close("SGD w_{k+1} = mean(x_1..x_k)", w[1:], running, atol=8 * n * EPS * max(7.0, float(x.abs().max())))


@checks("stochastic_approximation.gradient_descent_variants", operation=f"{DOC}.bgd")
@given(n=st.integers(1, 40), d=st.integers(1, 3), K=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_bgd_reaches_the_mean_in_one_step(target, n, d, K, seed):
    x = torch.randn(n, d, generator=_gen(seed), dtype=F64)
    w = target(_grad, torch.full((d,), -4.0, dtype=F64), x, _harmonic(K))
    mean = x.mean(0).expand(K, d)
    # one step from w_1 with the mean of n gradients (n roundings of numbers <= |w_1| + |x|) and the reference's mean
    close("BGD w_{k+1} = mean(x)", w[1:], mean, atol=8 * n * EPS * max(4.0, float(x.abs().max())))


@checks("stochastic_approximation.gradient_descent_variants", operation=f"{DOC}.mbgd")
@given(n=st.integers(2, 30), d=st.integers(1, 3), K=st.integers(1, 10), seed=st.integers(0, 2**31 - 1))
def test_mbgd_is_the_mean_of_batch_means_and_not_bgd(target, n, d, K, seed):
    g = _gen(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    m = int(torch.randint(1, n + 1, (1,), generator=g))
    indices = sa.sample_minibatches(n, m, K, g)
    w = target(_grad, torch.zeros(d, dtype=F64), x, _harmonic(K), indices)
    batch_means = x[indices].mean(1)
    expected = batch_means.cumsum(0) / torch.arange(1, K + 1, dtype=F64)[:, None]
    # the batch means (m <= n roundings each) and the K steps' running mean of them, on both sides
    tol = 8 * (K + n) * EPS * max(1.0, float(x.abs().max()))
    close("MBGD w_{k+1} = mean of the batch means", w[1:], expected, atol=tol)
    # m = n, drawn with replacement: a batch that is not a permutation of the data does not give the mean
    full = torch.arange(n)[None].clone()
    full[0, 0] = 1  # sample 1 twice, sample 0 never: a draw with replacement
    w_full = target(_grad, torch.zeros(d, dtype=F64), x, _harmonic(1), full).cpu()  # on the host, with x
    gap = float((w_full[1] - x.mean(0)).abs().max())
    if gap <= tol:
        raise AssertionError("MBGD with m = n and a batch drawn with replacement gave BGD's step exactly")
    close("MBGD with m = n", w_full[1], x[full[0]].mean(0), atol=tol)


# --- contracts --------------------------------------------------------------------------------------

def _steps(K):
    return _harmonic(K)


def _one(steps, value):
    """``steps`` with its second entry replaced by ``value``."""
    steps = steps.clone()
    steps[1] = value
    return steps


CONTRACT_CASES = {
    "incremental_mean": {
        "alpha of the wrong length": (lambda fn: fn(torch.ones(5, dtype=F64), alpha=_steps(4)), "alpha"),
        "negative alpha": (lambda fn: fn(torch.ones(3, dtype=F64), alpha=-_steps(3)), "alpha"),
        # one bad step among good ones: a check of any() where all() is meant passes the all-bad cases above
        "one infinite step": (lambda fn: fn(torch.ones(3, dtype=F64), alpha=_one(_steps(3), math.inf)), "alpha"),
        "one negative step": (lambda fn: fn(torch.ones(3, dtype=F64), alpha=_one(_steps(3), -0.5)), "alpha"),
    },
    "robbins_monro": {
        "g not callable": (lambda fn: fn(1.0, 0.0, _steps(3), torch.zeros(3, dtype=F64)), "g"),
        "a of the wrong length": (lambda fn: fn(torch.tanh, 0.0, _steps(2), torch.zeros(3, dtype=F64)), "a"),
        "one NaN step": (lambda fn: fn(torch.tanh, 0.0, _one(_steps(3), math.nan), torch.zeros(3, dtype=F64)), "a"),
    },
    "dvoretzky": {
        "beta of the wrong length": (lambda fn: fn(1.0, _steps(3), _steps(2), torch.zeros(3, dtype=F64)), "beta"),
    },
    "sgd": {
        "alpha of the wrong length": (lambda fn: fn(_grad, torch.zeros(1, dtype=F64), torch.ones(4, 1,
                                                                                                 dtype=F64),
                                                    _steps(3)), "alpha"),
    },
    "bgd": {
        "grad_f not callable": (lambda fn: fn(None, torch.zeros(1, dtype=F64), torch.ones(4, 1, dtype=F64),
                                              _steps(3)), "grad_f"),
    },
    "mbgd": {
        "indices out of range": (lambda fn: fn(_grad, torch.zeros(1, dtype=F64), torch.ones(4, 1, dtype=F64),
                                               _steps(1), torch.tensor([[0, 4]])), "indices"),
    },
}


def _contract(op: str):
    return rejection_test(f"{DOC}.stochastic_approximation_contract", f"{DOC}.{op}", CONTRACT_CASES[op])


test_incremental_mean_rejects_bad_input = _contract("incremental_mean")
test_robbins_monro_rejects_bad_input = _contract("robbins_monro")
test_dvoretzky_rejects_bad_input = _contract("dvoretzky")
test_sgd_rejects_bad_input = _contract("sgd")
test_bgd_rejects_bad_input = _contract("bgd")
test_mbgd_rejects_bad_input = _contract("mbgd")
