"""Exact oracles, statistical bounds and tolerance helpers shared by the diffusion property tests (edm, score_sde).

Gaussian and Gaussian-mixture data have closed-form denoisers, scores and CDFs (specs/edm/gaussian.py
gaussian_denoiser and ideal_denoiser, specs/score_sde.py gaussian_score); the bounds below turn a sample into a
pass/fail decision with a stated false-alarm probability, each under assumptions that hold here (i.i.d. samples;
exactly Gaussian where a chi-square bound is used).
within_tolerance checks element by element against a tolerance the caller derived from the terms that cancel;
sensitivities measure how far a sampler carries an error made at one step to its output, so that a sampler's floor is
the rounding of every step's terms carried to the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from eqspec.budget import distinct_digits
from specs import edm

from .harness import equal

F64 = torch.float64
FALSE_ALARM = 1e-6


@dataclass(frozen=True)
class Mixture1D:
    """Isotropic Gaussian mixture in one dimension: the data distribution of the sampler tests."""

    means: tuple[float, ...] = (-1.0, 0.4, 1.5)
    stds: tuple[float, ...] = (0.15, 0.3, 0.2)
    weights: tuple[float, ...] = (0.3, 0.45, 0.25)

    def tensors(self, dtype=F64, device="cpu"):
        return (torch.tensor(self.means, dtype=dtype, device=device)[:, None],
                torch.tensor(self.stds, dtype=dtype, device=device) ** 2,
                torch.tensor(self.weights, dtype=dtype, device=device))

    def denoiser(self, dtype=F64, device="cpu"):
        means, variances, weights = self.tensors(dtype, device)

        def D(y: torch.Tensor, sigma: float) -> torch.Tensor:  # y (B,) or (B, 1)
            flat = y.reshape(-1, 1)
            return edm.ideal_denoiser(flat, sigma, means, variances, weights).reshape(y.shape)

        return D

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(F64)
        out = torch.zeros_like(x)
        for m, s, w in zip(self.means, self.stds, self.weights):
            out += w * 0.5 * (1 + torch.erf((x - m) / (s * math.sqrt(2))))
        return out

    def pdf(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x, dtype=F64)
        for m, s, w in zip(self.means, self.stds, self.weights):
            out += w * torch.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
        return out


def same(name: str, out: torch.Tensor, ref: torch.Tensor) -> None:
    """Bit-identical, compared on the CPU (a CUDA result against a CPU expectation)."""
    equal(name, out.detach().cpu(), ref.detach().cpu())


def eps_of(target) -> float:
    """The machine epsilon of a target's dtype."""
    return torch.finfo(target.torch_dtype).eps


def within_tolerance(name: str, got, want, tol) -> float:
    """|got - want| <= tol element by element (tol: a number or a tensor broadcastable to want, derived by the caller
    from the terms that cancel); NaN never passes. The message shows the worst element with the digits that tell its
    two values apart, and its difference against its tolerance. Returns max |got - want|."""
    g, w = (torch.as_tensor(v).detach().to(device="cpu", dtype=F64) for v in (got, want))
    g, w = torch.broadcast_tensors(g, w)
    t = torch.as_tensor(tol).detach().to(device="cpu", dtype=F64).expand_as(w)
    diff = (g - w).abs()
    bad = ~(diff <= t)
    if bool(bad.any()):
        excess = torch.where(bad, diff / t, torch.zeros_like(diff)).nan_to_num(math.inf)  # the worst relative excess
        i = tuple(int(k) for k in torch.unravel_index(excess.reshape(-1).argmax(), w.shape))
        got_i, want_i = distinct_digits(float(g[i]), float(w[i]))
        diff_i, tol_i = distinct_digits(float(diff[i]), float(t[i]))
        raise AssertionError(f"{name}: {int(bad.sum())} of {w.numel()} elements off by more than their tolerance; "
                             f"worst at {i}: got {got_i}, want {want_i} (|diff| {diff_i} > tolerance {tol_i})")
    return float(diff.max()) if diff.numel() else 0.0


def within_relative(name: str, got, want, rtol) -> float:
    """|got - want| <= rtol |want| element by element (rtol: a number or a tensor like want)."""
    w = torch.as_tensor(want).detach().to(device="cpu", dtype=F64)
    return within_tolerance(name, got, w, torch.as_tensor(rtol).detach().to(device="cpu", dtype=F64) * w.abs())


def sensitivities(states, states_perturbed, out, out_perturbed):
    """d x_N / d x_i per element at each step's state x_i, for samplers whose elements evolve independently (the
    mixture denoiser and the Gaussian score act element by element): each element is a scalar trajectory and
    d x_N / d x_i = (d x_N / d x_0) / (d x_i / d x_0), both measured by a second float64 run from a perturbed start
    (additive noise does not change the derivatives; Langevin's batch-wide step couples elements only through batch
    means). Where an element's x_i did not move, the largest ratio stands in."""
    d_out = (out_perturbed - out).reshape(-1)
    sens = []
    for x, xp in zip(states, states_perturbed):
        dx = (xp - x).reshape(-1)
        moved = dx != 0
        ratio = d_out / torch.where(moved, dx, 1.0)
        sens.append(torch.where(moved, ratio, ratio[moved].abs().max() if bool(moved.any()) else 1.0))
    return sens


def perturbed_start(x_T: torch.Tensor) -> torch.Tensor:
    """x_T moved by 1e-7 of its size: the finite differences are then off by ~1e-7 relative (the trajectory's
    curvature) and ~1e-9 (float64 rounding of the states, divided by the step), far below the factors they weigh."""
    return x_T + 1e-7 * x_T.abs().max()


def gaussian_denoiser(sigma_data: float = edm.SIGMA_DATA):
    """The exact denoiser of N(0, sigma_d^2) data (specs.edm.gaussian_denoiser) as a sampler's denoiser(y, sigma)."""
    return lambda y, sigma: edm.gaussian_denoiser(y, sigma, sigma_data)


def ks_distance(samples: torch.Tensor, cdf) -> float:
    """sup_x |F_n(x) - F(x)| of the samples against a continuous CDF."""
    x, _ = torch.sort(samples.detach().reshape(-1).to(device="cpu", dtype=F64))
    n = x.numel()
    F = cdf(x)
    i = torch.arange(1, n + 1, dtype=F64)
    return float(torch.maximum((i / n - F).abs(), (F - (i - 1) / n).abs()).max())


def dkw_bound(n: int, false_alarm: float = FALSE_ALARM) -> float:
    """Dvoretzky-Kiefer-Wolfowitz (Massart's constant): P(sup|F_n - F| > e) <= 2 exp(-2 n e^2) for i.i.d. samples."""
    return math.sqrt(math.log(2 / false_alarm) / (2 * n))


def chi2_relative_bounds(dof: int, false_alarm: float = FALSE_ALARM) -> tuple[float, float]:
    """(lower, upper) relative deviations of S / dof for S ~ chi^2_dof, each tail with half the false alarm
    (Laurent & Massart 2000, Lemma 1: P(S - k >= 2 sqrt(k x) + 2x) <= e^-x, P(k - S >= 2 sqrt(k x)) <= e^-x)."""
    x = math.log(2 / false_alarm)
    return 2 * math.sqrt(x / dof), 2 * math.sqrt(x / dof) + 2 * x / dof


def normal_z(false_alarm: float = FALSE_ALARM) -> float:
    """The two-sided z with P(|Z| > z) = false_alarm for a standard normal Z (bisection on erfc)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if math.erfc(mid / math.sqrt(2)) > false_alarm else (lo, mid)
    return hi


def histogram(samples: torch.Tensor, lo: float, hi: float, bins: int = 60) -> list[tuple[float, float]]:
    """(bin centre, density) pairs for recording.series(kind='histogram')."""
    x = samples.detach().reshape(-1).to(device="cpu", dtype=F64)
    counts = torch.histc(x, bins=bins, min=lo, max=hi)
    width = (hi - lo) / bins
    centres = lo + width * (torch.arange(bins, dtype=F64) + 0.5)
    return [(float(c), float(k) / (x.numel() * width)) for c, k in zip(centres, counts)]


def fitted_slope(ns: list[int], errors: list[float]) -> float:
    """Least-squares slope of log(error) against log(N)."""
    lx = [math.log(n) for n in ns]
    ly = [math.log(e) for e in errors]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
