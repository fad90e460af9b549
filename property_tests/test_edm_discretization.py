"""Property tests of EDM's time steps (specs/edm/discretization.py): eq. 5 and Table 1's other kinds, iDDPM's levels.

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

from eqspec.budget import rounding_atol
from specs import edm

from .edm_helpers import covers
from .harness import checks, close, expect_rejection
from .oracles_diffusion import F64, eps_of

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
    # N = 2: the two ends of the same index ramp (j_0 = 8, then M - 1 = 999) and 0
    close("iDDPM N = 2", target(2, kind="iddpm", dtype=dtype), torch.tensor([80.20370, 0.00642541, 0.0], dtype=F64),
          atol=0, rtol=1e-6 + 4 * eps_of(target))
    u = edm.iddpm_u()
    close("iDDPM u_0", u[:1], torch.tensor([20291.17], dtype=F64), atol=0.006)
    n_in = int(((u >= 0.002) & (u <= 81)).sum())
    if n_in != 992:
        raise AssertionError(f"992 iDDPM levels lie in [0.002, 81], got {n_in}")


@checks("edm.time_steps", operation="edm.time_steps")
@pytest.mark.parametrize("lo, hi", [(0.02, 100.0), (1e-300, 1e-300), (1e-300, 1.0)])
def test_time_steps_ve_two_steps(target, lo, hi):
    """VE at N = 2 is the two ends and 0: [sigma_max^2, sigma_min^2, 0] (Table 1), the floor sigma_min = 1e-300 of
    the contract included - whose squares underflow (a generated mutant dividing by 2 for N - 1 = 1, and one
    refusing sigma_min = 1e-300, went unseen by the drawn examples)."""
    if not covers(target, "kind:ve"):
        pytest.skip(f"{target.name} has no 've' time steps")
    dtype = target.torch_dtype
    t = target(2, kind="ve", sigma_min=lo, sigma_max=hi, dtype=dtype)
    want = torch.tensor([hi**2, lo**2, 0.0], dtype=F64)
    close(f"VE N = 2, sigma in [{lo:g}, {hi:g}]", t, want, atol=float(torch.finfo(dtype).tiny), rtol=4 * eps_of(target))


# --- the operation's contract ------------------------------------------------------------------------------

@checks("edm.contract", operation="edm.time_steps")
@pytest.mark.parametrize("case", ["N = 0", "unknown kind", "rho 0", "rho infinite", "sigma_max below sigma_min",
                                  "VP epsilon_s above 1", "VP epsilon_s negative"])
def test_time_steps_rejects_bad_input(target, case):
    # each bound of each argument on its own: a generated mutant that let epsilon_s reach 2 went unseen
    if case.startswith("VP") and not covers(target, "kind:vp"):
        pytest.skip(f"{target.name} has no 'vp' time steps")
    calls = {
        "N = 0": (lambda fn: fn(0), "N"),
        "unknown kind": (lambda fn: fn(8, kind="cosine"), "kind"),
        "rho 0": (lambda fn: fn(8, rho=0.0), "rho"),
        "rho infinite": (lambda fn: fn(8, rho=math.inf), "rho"),
        "sigma_max below sigma_min": (lambda fn: fn(8, sigma_min=1.0, sigma_max=0.5), "sigma_max"),
        "VP epsilon_s above 1": (lambda fn: fn(8, kind="vp", epsilon_s=1.5), "epsilon_s"),
        "VP epsilon_s negative": (lambda fn: fn(8, kind="vp", epsilon_s=-1e-3), "epsilon_s"),
    }
    call, argument = calls[case]
    expect_rejection(target, call, argument, case)
