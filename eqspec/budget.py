"""The error budget: how close an implementation must be to the float64 spec (design.md, "Tolerances").

FlashAttention's rule (anchors.md §4): compute the reference in float64 from the same, already rounded
inputs, and a naive same-precision baseline (the obvious torch code in the implementation's dtype). Then

    err(impl) <= k * err(baseline) + floor,      k = 2 for forward outputs, 3 for gradients,

where err(x) = max |x - reference|. The floor is what a correct implementation cannot promise to beat, from
the standard error analysis of a sum (Higham, "Accuracy and Stability of Numerical Algorithms", §3.1): an
output that sums terms t_j is off by about u |t_j| per rounded term, so

    floor = eps(dtype) * max(magnitude) + gamma_n * max(magnitude) + underflow(dtype, n),

with ``magnitude`` the size of the terms each output sums (sum_j |t_j|; the caller's spec knows them: P|V| for
attention's output, tau (P o (|dP| + |D|)) |K| for dQ, ...; by default |reference|). The first term is one
rounding of each term in the implementation's dtype: where the terms cancel (dQ with a single key is exactly
0, sums of dS rows are 0), the naive baseline can be exact by luck and 2 x its error is 0, but no algorithm is
obliged to be. The second is the float64 reference's own a-priori bound (gamma_n = n u / (1 - n u), n the
reduction length). The conformance score the report shows is err / (err(baseline) + floor / k): how many times
the naive code's error the implementation makes (at most k when it passes). NaN never passes; an infinity must
be matched exactly.

Exact properties (rows sum to one, conservation laws, bit-identical isolation) do not use this budget: they use
`check_close` at a stated float64 tolerance or `check_equal`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .contracts import ConformanceError

U64 = torch.finfo(torch.float64).eps / 2  # unit roundoff of the float64 reference
K_FORWARD = 2.0
K_GRADIENT = 3.0


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of ``dtype`` (twice its unit roundoff): one rounding of x moves it by at most eps |x| / 2."""
    return torch.finfo(dtype).eps


def rounding_atol(dtype: torch.dtype, magnitude: float, roundings: float = 1.0) -> float:
    """An absolute tolerance derived from the conditioning of what is computed: ``roundings`` roundings in ``dtype``
    of quantities of size ``magnitude``.

    ``magnitude`` is the size of the terms that cancel, not of the result: a group's advantages sum to 0 but each
    was computed from rewards of size |r| / std; l(h) - l(-h) = -beta h subtracts two softplus values of size
    |beta h|. ``roundings`` counts the rounded operations on the path from the inputs to the compared value (a
    sum of n terms: n), with a factor for error amplification where the code computes it (a division by a small
    std, an exp). A test that would pass only when the code rounds exactly as the spec does is a false alarm
    waiting for a seed.
    """
    return roundings * torch.finfo(dtype).eps * float(magnitude)


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of an n-term float64 reduction."""
    return n * U64 / (1 - n * U64)


# The products a term of a sum passes through before it is added (attention's dQ: a score, its scale, the exponential,
# the weight dS), each of which may underflow on its own (the underflow floor below)
PRODUCTS_PER_TERM = 4


def underflow(dtype: torch.dtype, terms: int = 0) -> float:
    """The absolute error gradual underflow allows: with it, a rounded product is (x y)(1 + delta) + eta with |eta| at
    most half the spacing of the subnormal numbers, tiny * eps (Higham, §2.1; 4.9e-324 in float64), however small
    x y is - so a result of subnormal size (a softmax scale of 5e-324) has no relative accuracy at all. Each of the
    ``terms`` terms of a sum, and the result itself, is allowed PRODUCTS_PER_TERM such errors."""
    info = torch.finfo(dtype)
    return PRODUCTS_PER_TERM * (terms + 1) * info.tiny * info.eps


@dataclass
class BudgetCheck:
    name: str
    dtype: str
    err: float
    err_baseline: float
    floor: float
    k: float

    @property
    def allowed(self) -> float:
        return self.k * self.err_baseline + self.floor

    @property
    def ratio(self) -> float:
        """The conformance score err / (err(baseline) + floor / k): the multiple of the naive code's error, with
        the floor standing in for a baseline that is exact by luck. Below 1: more accurate than the naive code;
        passing means at most k."""
        denominator = self.err_baseline + self.floor / self.k
        if denominator > 0:
            return self.err / denominator
        return 0.0 if self.err == 0 else float("inf")

    @property
    def passed(self) -> bool:
        return self.err <= self.allowed

    def as_dict(self) -> dict:
        return {**asdict(self), "allowed": self.allowed, "ratio": self.ratio}


def _as64(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    return x if x.dtype == torch.float64 and x.device.type == "cpu" else x.to(device="cpu", dtype=torch.float64)


def distinct_digits(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` printed with the fewest significant digits (6 to 17) that tell them apart: a message about a
    difference of one unit in the last place must show it (-130023423.99999999 vs -130023424, not -1.30023e+08
    twice)."""
    for digits in range(6, 18):
        sa, sb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if sa != sb:
            return sa, sb
    return sa, sb


def _describe_positions(mask: torch.Tensor, out: torch.Tensor, ref: torch.Tensor, limit: int = 5) -> str:
    idx = mask.nonzero()[:limit]
    parts = []
    for i in idx:
        got, spec = distinct_digits(out[tuple(i)].item(), ref[tuple(i)].item())
        parts.append(f"{tuple(i.tolist())}: got {got}, spec {spec}")
    return "; ".join(parts)


def _check_pattern(name: str, out64: torch.Tensor, ref64: torch.Tensor, finite: torch.Tensor) -> None:
    if out64.shape != ref64.shape:
        raise ConformanceError(f"{name}: shape {tuple(out64.shape)} differs from the spec's {tuple(ref64.shape)}")
    out_finite = torch.isfinite(out64)
    if bool(out_finite[finite].all()) and bool((out64[~finite] == ref64[~finite]).all()):
        return  # the common case, in two passes
    bad_nan = torch.isnan(out64) & ~torch.isnan(ref64)
    if bad_nan.any():
        raise ConformanceError(
            f"{name} contains NaN at {int(bad_nan.sum())} of {out64.numel()} positions where the spec is a number "
            f"(first: {_describe_positions(bad_nan, out64, ref64)})"
        )
    wrong_inf = (~finite & ~torch.isnan(ref64) & (out64 != ref64)) | (finite & ~out_finite)
    if wrong_inf.any():
        raise ConformanceError(
            f"{name}: infinities do not match the spec at {int(wrong_inf.sum())} positions "
            f"(first: {_describe_positions(wrong_inf, out64, ref64)})"
        )


def check_finite_pattern(name: str, out: torch.Tensor, ref: torch.Tensor) -> None:
    """NaN never passes; where the spec is +-inf the result must be the same infinity, elsewhere finite."""
    ref64 = _as64(ref)
    _check_pattern(name, _as64(out), ref64, torch.isfinite(ref64))


def _max_error(x64: torch.Tensor, ref64: torch.Tensor, finite: torch.Tensor) -> float:
    if not bool(finite.any()):
        return 0.0
    diff = (x64 - ref64).abs()[finite]
    return float("inf") if bool(torch.isnan(diff).any()) else float(diff.max())


def max_abs_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| over the positions where the reference is finite (infinities are checked apart)."""
    ref64 = _as64(ref)
    return _max_error(_as64(out), ref64, torch.isfinite(ref64))


def check_within_budget(
    name: str,
    out: torch.Tensor,
    ref: torch.Tensor,
    baseline: torch.Tensor,
    *,
    k: float = K_FORWARD,
    magnitude: torch.Tensor | float | None = None,
    terms: int = 0,
    dtype: torch.dtype | None = None,
) -> BudgetCheck:
    """Raise ConformanceError unless ``out`` is within k x the baseline's error of ``ref`` (plus the floor).

    ``magnitude``: the size of the terms each output sums (a tensor like ``ref`` or a number; default |ref|);
    ``terms``: the float64 reference's reduction length n for its gamma_n bound; ``dtype``: the precision the
    implementation works in (default: out's dtype).
    """
    out64, ref64 = _as64(out), _as64(ref)
    finite = torch.isfinite(ref64)
    _check_pattern(name, out64, ref64, finite)
    dtype = dtype or out.dtype
    err = _max_error(out64, ref64, finite)
    err_baseline = _max_error(_as64(baseline), ref64, finite)
    if err_baseline == float("inf"):  # the naive code produced NaN here: it measures nothing
        err_baseline = 0.0
    if magnitude is None:
        size = float(ref64[finite].abs().max()) if bool(finite.any()) else 0.0
    elif isinstance(magnitude, torch.Tensor):
        mag64 = _as64(magnitude)
        size = float(mag64[torch.isfinite(mag64)].max()) if mag64.numel() else 0.0
    else:
        size = float(magnitude)
    floor = (torch.finfo(dtype).eps + gamma(terms)) * size + underflow(dtype, terms)
    result = BudgetCheck(name, str(dtype).removeprefix("torch."), err, err_baseline, floor, k)
    if not result.passed:
        over = finite & ((out64 - ref64).abs() > result.allowed)
        raise ConformanceError(
            f"{name}: max |impl - spec| = {err:.3g} exceeds the budget {k:g} x {err_baseline:.3g} "
            f"(naive {result.dtype} baseline) + {floor:.3g} (floor) = {result.allowed:.3g}; "
            f"{int(over.sum())} of {out64.numel()} elements over, first: {_describe_positions(over, out64, ref64)}"
        )
    return result


def check_close(name: str, out: torch.Tensor, ref: torch.Tensor, *, atol: float, rtol: float = 0.0) -> float:
    """An exact identity checked at a stated tolerance (e.g. float64 rounding); NaN never passes."""
    out64, ref64 = _as64(out), _as64(ref)
    finite = torch.isfinite(ref64)
    _check_pattern(name, out64, ref64, finite)
    tol = atol + rtol * ref64.abs()
    over = finite & ((out64 - ref64).abs() > tol)
    if over.any():
        raise ConformanceError(
            f"{name}: {int(over.sum())} of {out64.numel()} elements differ by more than atol={atol:g}, rtol={rtol:g} "
            f"(max diff {_max_error(out64, ref64, finite):.3g}); first: {_describe_positions(over, out64, ref64)}"
        )
    return _max_error(out64, ref64, finite)


def check_equal(name: str, out: torch.Tensor, ref: torch.Tensor) -> None:
    """Bit-identical (NaN matches NaN); compared on the host, wherever each was computed."""
    out, ref = out.detach().cpu(), ref.detach().cpu()
    if out.shape != ref.shape or out.dtype != ref.dtype:
        raise ConformanceError(
            f"{name}: expected shape {tuple(ref.shape)} {ref.dtype}, got {tuple(out.shape)} {out.dtype}"
        )
    same = (out == ref) | (torch.isnan(out) & torch.isnan(ref))
    if not bool(same.all()):
        diff = ~same
        raise ConformanceError(
            f"{name}: {int(diff.sum())} of {out.numel()} elements are not bit-identical; first: "
            f"{_describe_positions(diff.cpu(), _as64(out), _as64(ref))}"
        )
