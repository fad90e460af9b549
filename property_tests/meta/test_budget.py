"""The error budget itself (eqspec/budget.py): what passes, what fails, and what the failure says."""

from __future__ import annotations

import math

import pytest
import torch

from eqspec.budget import check_close, check_equal, check_within_budget, gamma, underflow
from eqspec.contracts import ConformanceError

REF = torch.tensor([0.1, -0.25, 1.0 / 3.0, 2.0], dtype=torch.float64)


def test_an_implementation_as_good_as_the_baseline_passes_and_reports_its_ratio():
    out = REF.float()
    base = (REF + 1e-6).float()
    result = check_within_budget("o", out, REF, base)
    assert result.passed and result.err <= result.floor and result.ratio < 1


def test_an_implementation_over_k_times_the_baseline_fails_and_names_the_elements():
    base = REF + 1e-6
    out = REF.clone()
    out[2] += 1e-3
    with pytest.raises(ConformanceError, match=r"o: max \|impl - spec\| = 0.001 exceeds .* first: \(2,\)"):
        check_within_budget("o", out, REF, base)


def test_nan_never_passes_even_when_the_baseline_is_nan_too():
    out = REF.clone()
    out[1] = math.nan
    with pytest.raises(ConformanceError, match="NaN at 1 of 4"):
        check_within_budget("o", out, REF, out)


def test_infinities_must_match_exactly():
    ref = torch.tensor([-math.inf, 1.0], dtype=torch.float64)
    check_within_budget("lse", ref.clone(), ref, ref.clone())
    with pytest.raises(ConformanceError, match="infinities"):
        check_within_budget("lse", torch.tensor([-1e30, 1.0], dtype=torch.float64), ref, ref.clone())


def test_the_floor_is_one_rounding_of_each_term_plus_the_references_own_bound():
    assert gamma(10) == pytest.approx(10 * 2**-53)
    exact = torch.tensor([0.5], dtype=torch.float64)  # the baseline is exact by luck: 2 x 0 + the floor remains
    assert check_within_budget("o", exact + 2**-9, exact, exact.clone(), dtype=torch.bfloat16).passed  # eps/2
    with pytest.raises(ConformanceError):
        check_within_budget("o", exact + 2**-7, exact, exact.clone(), dtype=torch.bfloat16)
    # an output that cancels to 0 is judged by the size of its terms, not by its own size
    zero = torch.zeros(1, dtype=torch.float64)
    with pytest.raises(ConformanceError):
        check_within_budget("dq", zero + 1e-9, zero, zero.clone(), dtype=torch.float32)
    check = check_within_budget("dq", zero + 1e-9, zero, zero.clone(), dtype=torch.float32, magnitude=0.1)
    assert check.floor == pytest.approx(torch.finfo(torch.float32).eps * 0.1)
    assert check_within_budget("x", zero, zero, zero, magnitude=1.0, terms=100).floor == pytest.approx(
        (torch.finfo(torch.float64).eps + gamma(100)) * 1.0 + underflow(torch.float64, 100))


def test_a_result_of_subnormal_size_is_allowed_the_underflow_of_its_terms():
    # a softmax scale of 5e-324 makes dQ subnormal: a correct kernel that scales another product is 1 or 2 spacings
    # of the subnormals off (measured, torch SDPA and the tiled attention in float64), no relative accuracy is left
    spacing = torch.finfo(torch.float64).tiny * torch.finfo(torch.float64).eps
    ref = torch.tensor([spacing, 0.0], dtype=torch.float64)
    assert check_within_budget("dq", torch.tensor([0.0, -spacing], dtype=torch.float64), ref, ref.clone(),
                               terms=1).passed
    with pytest.raises(ConformanceError):  # but not a hundred times more
        check_within_budget("dq", ref + 100 * spacing, ref, ref.clone(), terms=1)
    assert underflow(torch.float32, 0) == pytest.approx(4 * 2.0**-149)


def test_exact_checks():
    check_equal("x", REF, REF.clone())
    with pytest.raises(ConformanceError, match="bit-identical"):
        check_equal("x", REF, REF + 1e-16 * torch.tensor([0, 0, 0, 1.0], dtype=torch.float64) * 100)
    check_close("x", REF + 1e-13, REF, atol=1e-12)
    with pytest.raises(ConformanceError, match="atol=1e-12"):
        check_close("x", REF + 1e-11, REF, atol=1e-12)


def test_a_message_about_one_unit_in_the_last_place_shows_the_difference():
    from eqspec.budget import distinct_digits

    assert distinct_digits(-130023423.99999999, -130023424.0) == ("-130023423.99999999", "-130023424")
    spec = torch.tensor([-130023424.0], dtype=torch.float64)
    with pytest.raises(ConformanceError, match=r"got -130023423\.99999999, spec -130023424"):
        check_close("lse", spec + 1.5e-8, spec, atol=0.0)


def test_a_rounding_tolerance_scales_with_the_terms_that_cancel_not_the_result():
    from eqspec.budget import rounding_atol

    assert rounding_atol(torch.float32, 25.8, roundings=2) == pytest.approx(2 * 2**-23 * 25.8)
    assert rounding_atol(torch.bfloat16, 0.0) == 0.0
