"""Property tests of the DPO document (specs/dpo.py), one or more per claim.

Every test runs against every implementation of the operation it names (the spec, the naive eager torch code, the
fused chunked loss, trl's DPOTrainer, a user's --impl). Identities are checked at a tolerance derived from the size
of the terms that cancel (budget.rounding_atol), exactly only where every correct algorithm is exact; the fused
losses against the float64 spec within the error budget.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import assume, given, settings

from eqspec import budget
from specs import dpo

from . import harness, recording
from .harness import checks, close, equal, within_budget
from .strategies import randn
from .strategies_preference import sequence_cases

# These documents' errors name the argument in their first word (e.g. "sigma_next: must ...").
expect_rejection = harness.expect_rejection

SEQ, LOSS, FUSED = "dpo.sequence_logps", "dpo.dpo_loss", "dpo.fused_linear_dpo_loss"
F64 = torch.float64
EPS64 = torch.finfo(F64).eps
betas = st.sampled_from([0.01, 0.1, 0.5, 2.0])


def _t(values, target=None) -> torch.Tensor:
    x = torch.tensor(values, dtype=F64)
    return x if target is None else target.tensor(x)


def _pairs(seed: int, B: int, target, scale: float = 20.0):
    """Four (B,) sequence log-probs (negative, as sums of log-probabilities are)."""
    return tuple(target.tensor(-randn(seed + i, B, scale=scale).abs()) for i in range(4))


# --- sequence log-probabilities ----------------------------------------------------------------------------

def _logp_terms(row: torch.Tensor, y: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log softmax(row)[y], the size of the terms whose rounding moves it): dpo.scored_token_magnitudes for logits
    given as they are (nothing to round in them), plus the lse's sum of V exponentials (V - 1 roundings of its partial
    sums, relative) that a check without a baseline must also allow for."""
    lse, m = torch.logsumexp(row, 0), row.max()
    p = torch.exp(row - lse)
    lp = row[y] - lse
    terms = (row[y] - m).abs() + (p * (row - m).abs()).sum() + (lse - m).abs() + lse.abs() + 2 + lp.abs() + row.numel()
    return lp, terms


@checks("dpo.sequence_logps_masked", operation=SEQ, dtypes=("float64", "float32"))
@given(case=sequence_cases(), average=st.booleans())
def test_sequence_logps_masked(target, case, average):
    logits, ids, mask = target.tensor(case.logits()), case.ids(), case.mask()
    out = target(logits, ids, mask, average=average)
    # the definition, one token at a time: logits at t-1 score token t, summed over the completion tokens t >= 1
    z = logits.to(F64).cpu()  # the loop below runs on the host
    manual, size, summed = (torch.zeros(case.N, dtype=F64) for _ in range(3))
    for i in range(case.N):
        for t in range(1, case.T):
            if mask[i, t]:
                lp, terms = _logp_terms(z[i, t - 1], int(ids[i, t]))
                manual[i] += lp
                summed[i] += lp.abs()
                size[i] += terms
    count = mask[:, 1:].sum(-1).clamp(min=1).to(F64)
    # each token's log-prob rounds at the size of its terms; the sum over up to T - 1 tokens rounds each partial sum
    size = size + case.T * summed
    if average:  # the division rounds once more
        manual, size, summed = manual / count, size / count + (manual / count).abs(), summed / count
    dtype = target.torch_dtype
    # the target in its dtype and this float64 loop, each within its own rounding of the same terms
    close("log pi(completion)", out, manual,
          atol=budget.rounding_atol(dtype, float(size.max())) + budget.rounding_atol(F64, float(size.max())))
    # logits at positions that score no completion token (prompt, padding, the last position) never matter
    unused = torch.ones(case.N, case.T, dtype=torch.bool)
    unused[:, :-1] = mask[:, 1:] == 0
    noisy = logits.cpu().clone()  # masked by host masks; target() moves it back
    noisy[unused] = target.tensor(randn(case.seed + 9, int(unused.sum()), case.V, scale=50.0))
    equal("log pi with other logits at unused positions", target(noisy, ids, mask, average=average), out)
    # appending padding changes nothing but the length of the sum, whose order of summation may change with it:
    # each of the two sums rounds its T + pad partial sums, of size at most sum |log p|
    pad = 3
    padded = target(torch.cat([logits, target.tensor(randn(case.seed + 8, case.N, pad, case.V))], 1),
                    torch.cat([ids, torch.zeros(case.N, pad, dtype=ids.dtype)], 1),
                    torch.cat([mask, torch.zeros(case.N, pad, dtype=mask.dtype)], 1), average=average)
    close("log pi after appending padding", padded, out,
          atol=budget.rounding_atol(dtype, float(summed.max()), roundings=case.T + pad))


# --- the losses: known answers, the reference point, symmetries ---------------------------------------------

# catalogue/dpo.md, known answers (beta = 0.1), given to six decimals: off by at most half a unit of the sixth
KA_SIGMOID = {0.0: (0.693147, 0.5), 1.0: (0.644397, 0.475021), -1.0: (0.744397, None), 5.0: (0.474077, 0.377541)}
KA_HALF_UNIT = 0.5e-6


def _ka_atol(target, terms: torch.Tensor) -> float:
    """Six decimals, plus one rounding in the target's dtype of each term of the computed value."""
    return KA_HALF_UNIT + budget.rounding_atol(target.torch_dtype, float(terms.abs().max()))


def _loss_terms(h, *, beta=0.1, loss_type="sigmoid", eps=0.0) -> torch.Tensor:
    return dpo.pair_loss_sensitivity(torch.as_tensor(h, dtype=F64).reshape(-1), beta, loss_type, eps)[0]


def _loss_at(target, h, *, beta=0.1, loss_type="sigmoid", eps=0.0, requires_grad=False):
    """Losses at margins h: chosen log-prob h, everything else 0."""
    chosen = target.tensor(torch.as_tensor(h, dtype=F64).reshape(-1)).requires_grad_(requires_grad)
    zero = torch.zeros_like(chosen)
    losses, rc, rr = target(chosen, zero, zero, zero, beta=beta, loss_type=loss_type, label_smoothing=eps)
    return chosen, losses


@checks("dpo.known_answers", operation=LOSS, dtypes=("float64", "float32"))
def test_known_answers(target):
    for h, (loss, weight) in KA_SIGMOID.items():
        chosen, losses = _loss_at(target, [h], requires_grad=True)
        close(f"sigmoid loss at h = {h}", losses, _t([loss]), atol=_ka_atol(target, _loss_terms([h])))
        if weight is not None:  # d l / d log pi(y_w) = -beta sigma(-beta h): the weight is -grad / beta
            (g,) = torch.autograd.grad(losses.sum(), chosen)
            _, _, terms_dl, _ = dpo.pair_loss_sensitivity(_t([h]), 0.1, "sigmoid", 0.0)
            close(f"gradient weight at h = {h}", -g / 0.1, _t([weight]),
                  atol=_ka_atol(target, terms_dl / 0.1 + weight))  # and the division by beta
    close("hinge at h = 1", _loss_at(target, [1.0], loss_type="hinge")[1], _t([0.9]),
          atol=_ka_atol(target, _loss_terms([1.0], loss_type="hinge")))
    close("ipo at h-bar = 0, 5", _loss_at(target, [0.0, 5.0], loss_type="ipo")[1], _t([25.0, 0.0]),
          atol=_ka_atol(target, _loss_terms([0.0, 5.0], loss_type="ipo")))
    close("cDPO at eps = 0.1, h = 2", _loss_at(target, [2.0], loss_type="cdpo", eps=0.1)[1], _t([0.618139]),
          atol=_ka_atol(target, _loss_terms([2.0], loss_type="cdpo", eps=0.1)))
    close("robust at eps = 0.1, h = 2", _loss_at(target, [2.0], loss_type="robust", eps=0.1)[1], _t([0.573139]),
          atol=_ka_atol(target, _loss_terms([2.0], loss_type="robust", eps=0.1)))


@checks("dpo.reference_point", operation=LOSS, dtypes=("float64", "float32"))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas, eps=st.sampled_from([0.0, 0.1, 0.3]))
def test_reference_point(target, seed, B, beta, eps):
    pw, pl, _, _ = _pairs(seed, B, target)
    dtype = target.torch_dtype
    expected = {"sigmoid": math.log(2), "cdpo": math.log(2), "robust": math.log(2), "hinge": 1.0,
                "ipo": 1 / (4 * beta**2)}
    zero = torch.zeros(1, dtype=F64)
    for loss_type, value in expected.items():
        chosen = pw.clone().requires_grad_(True)
        losses, rc, rr = target(chosen, pl, pw, pl, beta=beta, loss_type=loss_type, label_smoothing=eps)
        # h = 0 exactly (each log-ratio subtracts a number from itself): the loss rounds at the size of its terms
        # (robust: (1 - eps) ln 2 - eps ln 2 cancels, then divides by 1 - 2 eps)
        terms_l, _, terms_dl, _ = dpo.pair_loss_sensitivity(zero, beta, loss_type, eps)
        close(f"{loss_type} at pi = pi_ref", losses, torch.full((B,), value, dtype=F64),
              atol=budget.rounding_atol(dtype, float(terms_l)))
        equal("implicit chosen reward at pi = pi_ref", rc, torch.zeros_like(rc))
        equal("implicit rejected reward at pi = pi_ref", rr, torch.zeros_like(rr))
        if loss_type == "sigmoid":
            (g,) = torch.autograd.grad(losses.sum(), chosen)
            close("gradient weight sigma(0)", -g / beta, torch.full((B,), 0.5, dtype=F64),
                  atol=budget.rounding_atol(dtype, float(terms_dl) / beta + 0.5))  # and the division by beta


def _margin_terms(pw, pl, rw, rl) -> torch.Tensor:
    """The size of the terms whose rounding moves h = (pw - rw) - (pl - rl), in any order of the subtractions."""
    pw, pl, rw, rl = (x.detach().to(F64).abs() for x in (pw, pl, rw, rl))
    return 2 * (pw + pl + rw + rl) + dpo.log_ratio_margin(pw, pl, rw, rl).abs()


@checks("dpo.gradient_matches_derivation", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas)
def test_gradient_matches_derivation(target, seed, B, beta):
    pw, pl, rw, rl = (x.clone().requires_grad_(True) for x in _pairs(seed, B, target, scale=5.0))
    losses, _, _ = target(pw, pl, rw, rl, beta=beta)
    grads = torch.autograd.grad(losses.sum(), (pw, pl, rw, rl), allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, (pw, pl, rw, rl))]  # unused: 0
    h = dpo.log_ratio_margin(pw, pl, rw, rl).detach()
    d_w, d_l = dpo.dpo_gradient(h, beta)
    # both sides compute -beta sigma(-beta h): its own roundings, and h's rounding times l'' = beta^2 sigma sigma
    _, _, terms_dl, d2l = dpo.pair_loss_sensitivity(h, beta, "sigmoid", 0.0)
    tol = budget.rounding_atol(F64, float((terms_dl + d2l * _margin_terms(pw, pl, rw, rl)).max()), roundings=2)
    close("d loss / d log pi(y_w)", grads[0], d_w, atol=tol)
    close("d loss / d log pi(y_l)", grads[1], d_l, atol=tol)
    for name, g in (("ref_chosen_logps", grads[2]), ("ref_rejected_logps", grads[3])):
        if bool((g != 0).any()):
            raise AssertionError(f"{name} received a gradient ({g.tolist()}): the reference must be under no_grad")


@checks("dpo.gradient_matches_derivation", operation=FUSED, requires=("grad",), dtypes=("float64",))
@settings(max_examples=6)
@given(case=sequence_cases(pairs=True, max_T=6, max_V=17), loss_type=st.sampled_from(dpo.LOSS_TYPES), data=st.data())
def test_gradient_finite_differences(target, case, loss_type, data):
    """A tiny model: its parameters are the last hidden states and the LM head; autograd vs central differences."""
    hidden, weight = case.hidden_weight()
    ids, mask = case.ids(), case.mask()
    ref = tuple(-randn(case.seed + 5 + i, case.N // 2).abs() * case.T for i in range(2))
    kw = dict(beta=0.5, loss_type=loss_type, label_smoothing=0.1)
    # truncation grows as step^2 and the losses' rounding as 1 / step: 1e-4 balances them for third derivatives
    # of order 1 and losses' floors of order 1e-13
    step = 1e-4
    if loss_type == "hinge":  # the gradient jumps at beta h = 1: no difference quotient may straddle it
        h, _, _ = dpo.fused_pair_margins(hidden, weight, ids, mask, *ref)
        # a step moves one log pi(y) by at most 2 max|W| (d hidden) or 2 sum_t max|h_t| (d weight); h by twice that
        reach = 2 * 2 * step * max(float(weight.abs().max()), float(hidden.abs().amax(-1).sum(-1).max()))
        assume(bool(((kw["beta"] * h - 1).abs() > 2 * kw["beta"] * reach).all()))
    leaves = [hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)]
    loss = target(*leaves, ids, mask, *ref, **kw)
    grads = torch.autograd.grad(loss, leaves)
    f = lambda h_, w_: float(dpo.fused_linear_dpo_loss(h_, w_, ids, mask, *ref, **kw))  # noqa: E731
    mag_loss, mag_dh, mag_dw, n = dpo.fused_magnitudes(hidden, weight, ids, mask, *ref, **kw)
    loss_error = (EPS64 + budget.gamma(n)) * mag_loss  # what one evaluation of the spec's loss may be off by
    for idx, (name, g, mag) in enumerate(zip(("d/d hidden", "d/d weight"), grads, (mag_dh, mag_dw))):
        for flat in data.draw(st.lists(st.integers(0, g.numel() - 1), min_size=2, max_size=4), label=f"{name} at"):
            def central(s: float) -> float:
                plus, minus = [hidden.clone(), weight.clone()], [hidden.clone(), weight.clone()]
                plus[idx].view(-1)[flat] += s
                minus[idx].view(-1)[flat] -= s
                return (f(*plus) - f(*minus)) / (2 * s)

            fd, fd_wide = central(step), central(2 * step)
            # the central difference is off by s^2 f3 / 6 (f3 the third derivative), which Richardson's difference
            # of two steps measures (fd(2 s) - fd(s) = s^2 f3 / 2), and by the rounding of the two losses it
            # subtracts, divided by the step; autograd rounds at the gradient's own floor
            truncation = abs(fd_wide - fd) / 3
            tol = 2 * truncation + 2 * loss_error / step + budget.rounding_atol(F64, mag, roundings=budget.K_GRADIENT)
            close(f"{name}[{flat}] vs central difference", g.reshape(-1)[flat:flat + 1], _t([fd]), atol=tol)


def _slope(h, beta, loss_type, eps) -> torch.Tensor:
    """|l'(h)|, and the hinge's beta on either side of its kink (a margin that moves may cross it)."""
    _, dl, _, _ = dpo.pair_loss_sensitivity(h, beta, loss_type, eps)
    return torch.full_like(h, beta) if loss_type == "hinge" else dl.abs()


@checks("dpo.shift_invariance", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas, loss_type=st.sampled_from(dpo.LOSS_TYPES),
       c=st.sampled_from([-100.0, -3.0, 0.5, 40.0]), which=st.sampled_from(["policy", "reference"]))
def test_shift_invariance(target, seed, B, beta, loss_type, c, which):
    pw, pl, rw, rl = _pairs(seed, B, target)
    base, _, _ = target(pw, pl, rw, rl, beta=beta, loss_type=loss_type, label_smoothing=0.1)
    shifted = (pw + c, pl + c, rw, rl) if which == "policy" else (pw, pl, rw + c, rl + c)
    moved, _, _ = target(*shifted, beta=beta, loss_type=loss_type, label_smoothing=0.1)
    # h of each call rounds at the size of its terms (the shifted log-probs rounded once more when c was added):
    # the loss moves by |l'(h)| times that, and each loss rounds at the size of its own terms
    h = dpo.log_ratio_margin(pw, pl, rw, rl)
    terms_l, _, _, _ = dpo.pair_loss_sensitivity(h, beta, loss_type, 0.1)
    h_terms = _margin_terms(pw, pl, rw, rl) + 2 * _margin_terms(*shifted)
    close(f"losses with {c} added to the {which}'s chosen and rejected log-probs", moved, base,
          atol=budget.rounding_atol(F64, float((_slope(h, beta, loss_type, 0.1) * h_terms + 2 * terms_l).max())))


@checks("dpo.swap_symmetry", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas)
def test_swap_symmetry(target, seed, B, beta):
    pw, pl, rw, rl = _pairs(seed, B, target)
    forward, _, _ = target(pw, pl, rw, rl, beta=beta)
    swapped, _, _ = target(pl, pw, rl, rw, beta=beta)
    h = dpo.log_ratio_margin(pw, pl, rw, rl)
    # the terms that cancel: l(h) and l(-h) each round at the size of their terms (|beta h| + 1 and more), the
    # difference and beta h round at |beta h|, and h itself at the size of its terms, times the slopes (<= beta)
    terms_f, dl_f, _, _ = dpo.pair_loss_sensitivity(h, beta, "sigmoid", 0.0)
    terms_s, dl_s, _, _ = dpo.pair_loss_sensitivity(-h, beta, "sigmoid", 0.0)
    size = terms_f + terms_s + 2 * beta * h.abs() + (dl_f.abs() + dl_s.abs() + beta) * _margin_terms(pw, pl, rw, rl)
    close("l(h) - l(-h) = -beta h", forward - swapped, -beta * h, atol=budget.rounding_atol(F64, float(size.max())))


@checks("dpo.monotone_convex", operation=LOSS, dtypes=("float64", "float32"))
@given(beta=betas, eps=st.sampled_from([0.0, 0.1, 0.4]))
def test_monotone_convex(target, beta, eps):
    grid = torch.linspace(-8 / beta, 8 / beta, 161, dtype=F64)
    u = budget.eps(target.torch_dtype)
    for loss_type in dpo.LOSS_TYPES:
        _, losses = _loss_at(target, grid, beta=beta, loss_type=loss_type, eps=eps)
        losses = losses.to(F64).cpu()
        if beta == 0.1 and eps == 0.1 and target.dtype == "float64":  # the report's picture of the variants
            recording.series("dpo_losses", f"{loss_type} (beta 0.1, eps 0.1)", "h (log-ratio margin)", "loss",
                             [(float(x), min(float(y), 5.0)) for x, y in zip(grid[::4], losses[::4])], kind="linear")
        # each value rounds at the size of its terms, which include |l'(h)| |h| for the rounding of the grid point
        # itself (a grid rounded to the dtype is no longer evenly spaced): the differences carry the sum of theirs
        terms = dpo.pair_loss_sensitivity(grid, beta, loss_type, eps)[0]
        tol = u * (terms[:-1] + terms[1:])
        tol2 = u * (terms[:-2] + 2 * terms[1:-1] + terms[2:])
        first, second = losses.diff(), losses.diff(n=2)
        # cDPO stops pushing at beta h* = log((1 - eps) / eps) (its minimum); ipo at h* = 1 / (2 beta)
        h_star = {"ipo": 1 / (2 * beta), "cdpo": math.log((1 - eps) / eps) / beta if eps > 0 else math.inf}.get(
            loss_type, math.inf)
        left = grid[1:] <= h_star
        rising = (first > tol) & left
        falling = (first < -tol) & ~(grid[:-1] <= h_star)
        if bool(falling.any()):
            i = int(falling.nonzero()[0])
            raise AssertionError(f"{loss_type}: the loss decreases beyond its minimum h* = {h_star:.4g} at "
                                 f"h = {grid[i]:.4g}")
        if bool(rising.any()):
            i = int(rising.nonzero()[0])
            before, after = budget.distinct_digits(float(losses[i]), float(losses[i + 1]))
            raise AssertionError(f"{loss_type}: the loss increases in h between h = {grid[i]:.4g} and "
                                 f"{grid[i + 1]:.4g} ({before} -> {after})")
        if bool((second < -tol2).any()):
            i = int((second < -tol2).nonzero()[0])
            raise AssertionError(f"{loss_type}: the loss is not convex near h = {grid[i + 1]:.4g} (second difference "
                                 f"{float(second[i]):.3g} below -{float(tol2[i]):.3g})")


@checks("dpo.robust_unbiased", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas, eps=st.sampled_from([0.05, 0.2, 0.45]))
def test_robust_unbiased(target, seed, B, beta, eps):
    pw, pl, rw, rl = _pairs(seed, B, target, scale=3.0)
    clean, _, _ = target(pw, pl, rw, rl, beta=beta, loss_type="robust", label_smoothing=eps)
    flipped, _, _ = target(pl, pw, rl, rw, beta=beta, loss_type="robust", label_smoothing=eps)
    h = dpo.log_ratio_margin(pw, pl, rw, rl)
    expected = dpo.sigmoid_loss(h, beta)
    # each loss rounds at the size of its terms (the robust loss's cancel, then divide by 1 - 2 eps), the
    # combination rounds its two products and their sum, and h's rounding moves each side by its slope
    terms_c, dl_c, _, _ = dpo.pair_loss_sensitivity(h, beta, "robust", eps)
    terms_f, dl_f, _, _ = dpo.pair_loss_sensitivity(-h, beta, "robust", eps)
    terms_e, dl_e, _, _ = dpo.pair_loss_sensitivity(h, beta, "sigmoid", 0.0)
    size = ((1 - eps) * (terms_c + clean.abs()) + eps * (terms_f + flipped.abs()) + terms_e
            + ((1 - eps) * dl_c.abs() + eps * dl_f.abs() + dl_e.abs()) * _margin_terms(pw, pl, rw, rl))
    close("(1 - eps) l(h) + eps l(-h)", (1 - eps) * clean + eps * flipped, expected,
          atol=budget.rounding_atol(F64, float(size.max())))


def _log_softmax_terms(theta: torch.Tensor) -> torch.Tensor:
    """The size of the terms whose rounding moves each log softmax(theta)_y (as _logp_terms, for every y)."""
    return torch.stack([_logp_terms(theta, y)[1] for y in range(theta.numel())])


@checks("dpo.optimum_reward_identity", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), K=st.integers(2, 6), beta=st.sampled_from([0.1, 0.5, 2.0]))
def test_optimum_reward_identity(target, seed, K, beta):
    gen = torch.Generator().manual_seed(seed)
    pi_ref = torch.softmax(torch.randn(K, generator=gen, dtype=F64), 0)
    r = torch.randn(K, generator=gen, dtype=F64)
    pi_star = dpo.optimal_policy(pi_ref, r, beta)
    offset = beta * torch.log(pi_star / pi_ref) - r  # = -beta log Z for every y
    # pi* = softmax(x), x = log pi_ref + r / beta: log pi* rounds at the size of its terms in x, then the log of the
    # quotient, the product by beta and the difference with r round once each; the mean rounds its K terms
    x = torch.log(pi_ref) + r / beta
    size = (beta * (_log_softmax_terms(x) + x.abs() + 2 * torch.log(pi_star / pi_ref).abs()) + r.abs()
            + offset.abs())
    close("beta log(pi*/pi_ref) - r is constant over y", offset, offset.mean().expand(K),
          atol=budget.rounding_atol(F64, float(size.max()), roundings=K + 1))
    # every ordered pair (i, j), i != j, drawn with mu_i mu_j and labelled by Bradley-Terry with the true reward r
    I, J = (x.reshape(-1) for x in torch.meshgrid(torch.arange(K), torch.arange(K), indexing="ij"))
    I, J = I[I != J], J[I != J]
    mu = torch.softmax(torch.randn(K, generator=gen, dtype=F64), 0)
    weight = mu[I] * mu[J] * dpo.bradley_terry(r[I], r[J])
    theta = torch.log(pi_star).clone().requires_grad_(True)
    logp = torch.log_softmax(theta, 0)
    ref = torch.log(pi_ref)
    losses, rw, rl = target(logp[I], logp[J], ref[I], ref[J], beta=beta)
    # the loss rounds at the size of its terms and moves with h's rounding; the rewards' difference rounds at
    # beta times h's terms, and -log sigma of it at its own
    h = dpo.log_ratio_margin(logp[I], logp[J], ref[I], ref[J]).detach()
    h_terms = _margin_terms(logp[I], logp[J], ref[I], ref[J])
    terms_l, dl, terms_dl, d2l = dpo.pair_loss_sensitivity(h, beta, "sigmoid", 0.0)
    size = 2 * terms_l + (dl.abs() + beta) * h_terms
    close("sigmoid loss = -log Bradley-Terry(implicit rewards)", losses.detach(),
          -torch.log(dpo.bradley_terry(rw, rl)), atol=budget.rounding_atol(F64, float(size.max())))
    (grad,) = torch.autograd.grad((weight * losses).sum(), theta)
    # a sum over the K (K - 1) pairs of weighted terms that cancel exactly at pi*: each pair's l'(h) times
    # d h / d theta (|onehot - pi| summed over two log-probs: <= 4), and its rounding: l'' times h's terms, where
    # h's include theta's own rounding (log pi*) through the log-softmax; then the backward's sum over K
    theta_terms = _log_softmax_terms(theta.detach())
    h_terms = h_terms + 2 * (theta_terms[I] + theta_terms[J])
    size = (weight * 4 * (terms_dl + dl.abs() + d2l * h_terms)).sum()
    close("gradient of the population DPO loss at pi*", grad, torch.zeros(K, dtype=F64),
          atol=budget.rounding_atol(F64, float(size), roundings=I.numel() + K))


# --- the fused loss from hidden states ----------------------------------------------------------------------

def _chunk_kwargs(target, data, case) -> dict:
    if not target.provides("chunk_size"):
        return {}
    tokens = case.N * (case.T - 1)
    return {"chunk_size": data.draw(st.integers(1, max(1, tokens // 2)), label="chunk_size")}


def _fused_case(target, case, data):
    hidden, weight = (target.tensor(x) for x in case.hidden_weight())
    ids, mask = case.ids().to(target.device), case.mask().to(target.device)  # the spec runs beside the target
    ref = tuple(target.tensor(-randn(case.seed + 5 + i, case.N // 2).abs() * case.T) for i in range(2))
    return hidden, weight, ids, mask, ref


def _loss_and_grads(fn, hidden, weight, *args, **kwargs):
    leaves = [hidden.detach().clone().requires_grad_(True), weight.detach().clone().requires_grad_(True)]
    loss = fn(*leaves, *args, **kwargs)
    return (loss, *torch.autograd.grad(loss, leaves))


def check_fused(target, spec_fn, magnitudes, hidden, weight, *args, extra: dict | None = None, **kwargs):
    """Loss and gradients of the target within budget of the float64 spec, with the naive code as baseline; the
    floors from the document's error analysis (fused_magnitudes: the size of the terms that cancel on the way from
    the logits to each output, not the size of the output)."""
    extra = extra or {}
    out = _loss_and_grads(target, hidden, weight, *args, **kwargs, **extra)
    ref = _loss_and_grads(spec_fn, hidden.to(F64), weight.to(F64), *args, **kwargs)
    base = _loss_and_grads(target.baseline, hidden, weight, *args, **kwargs)
    mag_loss, mag_dh, mag_dw, n = magnitudes(hidden, weight, *args, **kwargs)
    # the floor in the inputs' precision: the logits h W are computed from them in it, whatever dtype the loss is
    # returned in (Liger returns a float32 loss for bfloat16 inputs: one bfloat16 rounding of a logit moved a
    # one-token loss by 3.4e-4 where the naive code was 8.2e-6 off by luck)
    dtype = hidden.dtype
    within_budget("loss", out[0], ref[0], base[0], magnitude=mag_loss, terms=n, dtype=dtype)
    for name, o, r, b, mag in zip(("d loss / d hidden", "d loss / d weight"), out[1:], ref[1:], base[1:],
                                  (mag_dh, mag_dw)):
        within_budget(name, o, r, b, k=budget.K_GRADIENT, magnitude=mag, terms=n, dtype=dtype)
    return out


def assume_away_from_hinge_kink(target, hidden, weight, ids, mask, ref, *, beta, loss_type):
    """The hinge's gradient jumps from -beta to 0 at beta h = 1: a pair whose margin lies within the rounding of h
    in the target's dtype of it has no gradient every correct algorithm agrees on, so the claim cannot cover it."""
    if loss_type == "hinge":
        h, size, _ = dpo.fused_pair_margins(hidden, weight, ids, mask, *ref)
        assume(bool(((beta * h - 1).abs() > beta * budget.rounding_atol(target.torch_dtype, 1.0) * size).all()))


@checks("dpo.fused_matches_spec", operation=FUSED, requires=("grad",), dtypes=("float64", "float32", "bfloat16"))
@pytest.mark.parametrize("loss_type", dpo.LOSS_TYPES)
@settings(max_examples=8)  # x 5 loss types
@given(case=sequence_cases(pairs=True), beta=betas, data=st.data())
def test_fused_matches_spec(target, loss_type, case, beta, data):
    hidden, weight, ids, mask, ref = _fused_case(target, case, data)
    assume_away_from_hinge_kink(target, hidden, weight, ids, mask, ref, beta=beta, loss_type=loss_type)
    check_fused(target, dpo.fused_linear_dpo_loss, dpo.fused_magnitudes, hidden, weight, ids, mask, *ref,
                extra=_chunk_kwargs(target, data, case), beta=beta, loss_type=loss_type, label_smoothing=0.1)


@checks("dpo.fused_matches_spec", operation=FUSED, requires=("grad", "chunk_size"), dtypes=("float32",))
def test_error_vs_chunk_size(target):
    if not target.provides("chunk_size"):
        pytest.skip(f"{target.name} has no chunk size to sweep")
    """One fixed problem at every chunk size: within budget each time, and the report plots the error."""
    from .strategies_preference import SequenceCase

    case = SequenceCase(N=4, T=32, V=512, H=32, prompts=(4, 8, 1, 16), completions=(28, 20, 31, 10), sharpness=2.0,
                        seed=5001)
    hidden, weight, ids, mask, ref = _fused_case(target, case, None)
    points = []
    for chunk in (1, 3, 16, 64, 124, 4096):
        loss, dh, dw = check_fused(target, dpo.fused_linear_dpo_loss, dpo.fused_magnitudes, hidden, weight, ids,
                                   mask, *ref, extra={"chunk_size": chunk})
        ref_loss = dpo.fused_linear_dpo_loss(hidden.double(), weight.double(), ids, mask, *ref)
        points.append((chunk, abs(float(loss.detach()) - float(ref_loss))))
    recording.series("dpo_error_vs_chunk", f"{target.name} {target.dtype}", "chunk size (tokens)",
                     "|loss - spec|", points)


# --- contracts ----------------------------------------------------------------------------------------------



def _pair_inputs(B=3):
    return [-randn(i, B).abs() for i in range(4)]


LOSS_BAD_INPUT = {  # case -> (the four log-prob tensors and kwargs, the argument the error names)
    "beta 0": (lambda: (_pair_inputs(), {"beta": 0.0}), "beta"),
    "unknown loss type": (lambda: (_pair_inputs(), {"loss_type": "sigmod"}), "loss_type"),
    "label_smoothing 0.5": (lambda: (_pair_inputs(), {"loss_type": "robust", "label_smoothing": 0.5}),
                            "label_smoothing"),
    "rejected of another length": (lambda: (_pair_inputs()[:1] + [-randn(9, 4).abs()] + _pair_inputs()[2:], {}),
                                   "chosen_logps"),
    "chosen of rank 2": (lambda: ([-randn(1, 3, 2).abs()] + _pair_inputs()[1:], {}), "chosen_logps"),
}


@checks("dpo.dpo_contract", operation=LOSS)
@pytest.mark.parametrize("case", list(LOSS_BAD_INPUT))
def test_dpo_loss_rejects_bad_input(target, case):
    make, argument = LOSS_BAD_INPUT[case]
    xs, kwargs = make()
    xs = [target.tensor(x) for x in xs]
    expect_rejection(target, lambda fn: fn(*xs, **kwargs), argument, case)


def _fused_inputs(N=4, T=5, V=11, H=3):
    ids = torch.randint(0, V, (N, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(N, T, dtype=torch.int64)
    mask[:, 0] = 0
    return [randn(2, N, T, H), randn(3, V, H), ids, mask, -randn(4, N // 2).abs(), -randn(5, N // 2).abs()]


def _replace(i, value):
    def make():
        xs = _fused_inputs()
        xs[i] = value(xs)
        return xs
    return make


FUSED_BAD_INPUT = {
    "odd batch": (lambda: _fused_inputs(N=3)[:4] + [-randn(4, 1).abs(), -randn(5, 1).abs()], "hidden"),
    # after the shift, nothing to predict: trl and liger answer it (an empty completion, log-probs 0), ours reject it
    "empty completions: sequences of one token": (lambda: _fused_inputs(T=1), "hidden"),
    "hidden size mismatch": (_replace(1, lambda xs: randn(3, 11, 4)), "weight"),
    "token id outside the vocabulary": (_replace(2, lambda xs: xs[2] + 11), "input_ids"),
    "mask of 2s": (_replace(3, lambda xs: xs[3] * 2), "completion_mask"),
    "ref log-probs per sequence": (_replace(4, lambda xs: -randn(4, 4).abs()), "ref_chosen_logps"),
}


@checks("dpo.dpo_contract", operation=FUSED)
@pytest.mark.parametrize("case", list(FUSED_BAD_INPUT))
def test_fused_rejects_bad_input(target, case):
    make, argument = FUSED_BAD_INPUT[case]
    xs = make()
    xs = [target.tensor(x) if x.is_floating_point() and i < 2 else x for i, x in enumerate(xs)]
    expect_rejection(target, lambda fn: fn(*xs), argument, case, libraries_may_return_empty=True)


@checks("dpo.dpo_contract", operation=SEQ)
@pytest.mark.parametrize("case", ["ids of a float dtype", "sequence of one token", "mask of another shape"])
def test_sequence_logps_rejects_bad_input(target, case):
    logits, ids, mask = target.tensor(randn(1, 2, 4, 7)), torch.zeros(2, 4, dtype=torch.int64), torch.ones(2, 4)
    argument = {"ids of a float dtype": "input_ids", "sequence of one token": "logits",
                "mask of another shape": "completion_mask"}[case]
    if case == "ids of a float dtype":
        ids = ids.double()
    elif case == "sequence of one token":
        logits, ids, mask = logits[:, :1], ids[:, :1], mask[:, :1]
    else:
        mask = mask[:, :3]
    expect_rejection(target, lambda fn: fn(logits, ids, mask), argument, case)
