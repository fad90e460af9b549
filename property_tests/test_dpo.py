"""Property tests of the DPO document (specs/dpo.py), one or more per claim.

Every test runs against every implementation of the operation it names (the spec, the naive eager torch code, the
fused chunked loss, trl's DPOTrainer, a user's --impl). Exact identities are checked in float64 at a tolerance
derived from the float64 epsilon; the fused losses against the float64 spec within the error budget.
"""

from __future__ import annotations

import functools
import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from specs import budget, dpo

from . import harness, recording
from .harness import checks, close, equal, within_budget
from .strategies import randn
from .strategies_preference import sequence_cases

# These documents' errors name the argument in their first word (e.g. "sigma_next: must ...").
expect_rejection = functools.partial(harness.expect_rejection, named_in_first_word=True)

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

@checks("dpo.sequence_logps_masked", operation=SEQ, dtypes=("float64", "float32"))
@given(case=sequence_cases(), average=st.booleans())
def test_sequence_logps_masked(target, case, average):
    logits, ids, mask = target.tensor(case.logits()), case.ids(), case.mask()
    out = target(logits, ids, mask, average=average)
    # the definition, one token at a time: logits at t-1 score token t, summed over the completion tokens t >= 1
    z = logits.to(F64)
    manual, magnitude = torch.zeros(case.N, dtype=F64), torch.zeros(case.N, dtype=F64)
    for i in range(case.N):
        for t in range(1, case.T):
            if mask[i, t]:
                lp = z[i, t - 1, ids[i, t]] - torch.logsumexp(z[i, t - 1], 0)
                manual[i] += lp
                magnitude[i] += lp.abs() + z[i, t - 1].abs().max()
    count = mask[:, 1:].sum(-1).clamp(min=1).to(F64)
    if average:
        manual, magnitude = manual / count, magnitude / count
    # float64: the reassociation of V + T terms; float32: the rounding of every term (4 eps x their magnitude)
    u = torch.finfo(target.torch_dtype).eps
    close("log pi(completion)", out, manual, atol=float(8 * (u + case.V * EPS64) * magnitude.max()) + 1e-300)
    # logits at positions that score no completion token (prompt, padding, the last position) never matter
    unused = torch.ones(case.N, case.T, dtype=torch.bool)
    unused[:, :-1] = mask[:, 1:] == 0
    noisy = logits.clone()
    noisy[unused] = target.tensor(randn(case.seed + 9, int(unused.sum()), case.V, scale=50.0))
    equal("log pi with other logits at unused positions", target(noisy, ids, mask, average=average), out)
    # appending padding changes nothing
    pad = 3
    padded = target(torch.cat([logits, target.tensor(randn(case.seed + 8, case.N, pad, case.V))], 1),
                    torch.cat([ids, torch.zeros(case.N, pad, dtype=ids.dtype)], 1),
                    torch.cat([mask, torch.zeros(case.N, pad, dtype=mask.dtype)], 1), average=average)
    close("log pi after appending padding", padded, out, atol=float(4 * u * magnitude.max()))


# --- the losses: known answers, the reference point, symmetries ---------------------------------------------

# catalogue/dpo.md, known answers (beta = 0.1), six decimals: rounding <= 5e-7
KA_SIGMOID = {0.0: (0.693147, 0.5), 1.0: (0.644397, 0.475021), -1.0: (0.744397, None), 5.0: (0.474077, 0.377541)}
KA_ATOL = 1e-6


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
        close(f"sigmoid loss at h = {h}", losses, _t([loss]), atol=KA_ATOL)
        if weight is not None:  # d l / d log pi(y_w) = -beta sigma(-beta h): the weight is -grad / beta
            (g,) = torch.autograd.grad(losses.sum(), chosen)
            close(f"gradient weight at h = {h}", -g / 0.1, _t([weight]), atol=KA_ATOL)
    close("hinge at h = 1", _loss_at(target, [1.0], loss_type="hinge")[1], _t([0.9]), atol=KA_ATOL)
    close("ipo at h-bar = 0, 5", _loss_at(target, [0.0, 5.0], loss_type="ipo")[1], _t([25.0, 0.0]), atol=KA_ATOL)
    close("cDPO at eps = 0.1, h = 2", _loss_at(target, [2.0], loss_type="cdpo", eps=0.1)[1], _t([0.618139]),
          atol=KA_ATOL)
    close("robust at eps = 0.1, h = 2", _loss_at(target, [2.0], loss_type="robust", eps=0.1)[1], _t([0.573139]),
          atol=KA_ATOL)


@checks("dpo.reference_point", operation=LOSS, dtypes=("float64", "float32"))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas, eps=st.sampled_from([0.0, 0.1, 0.3]))
def test_reference_point(target, seed, B, beta, eps):
    pw, pl, _, _ = _pairs(seed, B, target)
    u = torch.finfo(target.torch_dtype).eps
    expected = {"sigmoid": math.log(2), "cdpo": math.log(2), "robust": math.log(2), "hinge": 1.0,
                "ipo": 1 / (4 * beta**2)}
    for loss_type, value in expected.items():
        chosen = pw.clone().requires_grad_(True)
        losses, rc, rr = target(chosen, pl, pw, pl, beta=beta, loss_type=loss_type, label_smoothing=eps)
        close(f"{loss_type} at pi = pi_ref", losses, torch.full((B,), value, dtype=F64), atol=4 * u * value)
        equal("implicit chosen reward at pi = pi_ref", rc, torch.zeros_like(rc))
        equal("implicit rejected reward at pi = pi_ref", rr, torch.zeros_like(rr))
        if loss_type == "sigmoid":
            (g,) = torch.autograd.grad(losses.sum(), chosen)
            close("gradient weight sigma(0)", -g / beta, torch.full((B,), 0.5, dtype=F64), atol=4 * u)


@checks("dpo.gradient_matches_derivation", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas)
def test_gradient_matches_derivation(target, seed, B, beta):
    pw, pl, rw, rl = (x.clone().requires_grad_(True) for x in _pairs(seed, B, target, scale=5.0))
    losses, _, _ = target(pw, pl, rw, rl, beta=beta)
    grads = torch.autograd.grad(losses.sum(), (pw, pl, rw, rl), allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, (pw, pl, rw, rl))]  # unused: 0
    h = dpo.log_ratio_margin(pw, pl, rw, rl).detach()
    d_w, d_l = dpo.dpo_gradient(h, beta)
    # |gradient| <= beta; a few roundings of sigma(-beta h) cost ~eps beta, and torch's softplus (its default
    # threshold 20) is the identity for beta |h| > 20, where its slope is exactly 1 instead of sigma(beta |h|):
    # off by sigma(-20) < e^-20 = 2.1e-9 of beta (measured: 2.06e-9 of beta over 8000 draws of these pairs)
    tol = (1e-12 + math.exp(-20)) * beta
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
    leaves = [hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)]
    loss = target(*leaves, ids, mask, *ref, **kw)
    grads = torch.autograd.grad(loss, leaves)
    f = lambda h_, w_: float(dpo.fused_linear_dpo_loss(h_, w_, ids, mask, *ref, **kw))  # noqa: E731
    step = 1e-6
    for idx, (name, g) in enumerate(zip(("d/d hidden", "d/d weight"), grads)):
        for flat in data.draw(st.lists(st.integers(0, g.numel() - 1), min_size=2, max_size=4), label=f"{name} at"):
            plus, minus = [hidden.clone(), weight.clone()], [hidden.clone(), weight.clone()]
            plus[idx].view(-1)[flat] += step
            minus[idx].view(-1)[flat] -= step
            # O(step^2) + O(u / step): ~1e-10 here; 1e-6 leaves 1e4 x that for the third derivative's size
            fd = (f(*plus) - f(*minus)) / (2 * step)
            close(f"{name}[{flat}] vs central difference", g.reshape(-1)[flat:flat + 1], _t([fd]),
                  atol=1e-6 * (1 + abs(fd)))


@checks("dpo.shift_invariance", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas, loss_type=st.sampled_from(dpo.LOSS_TYPES),
       c=st.sampled_from([-100.0, -3.0, 0.5, 40.0]), which=st.sampled_from(["policy", "reference"]))
def test_shift_invariance(target, seed, B, beta, loss_type, c, which):
    pw, pl, rw, rl = _pairs(seed, B, target)
    base, _, _ = target(pw, pl, rw, rl, beta=beta, loss_type=loss_type, label_smoothing=0.1)
    shifted = (pw + c, pl + c, rw, rl) if which == "policy" else (pw, pl, rw + c, rl + c)
    moved, _, _ = target(*shifted, beta=beta, loss_type=loss_type, label_smoothing=0.1)
    # h is exact up to 4 roundings of numbers <= |c| + max|x|; the loss moves by |l'(h)| <= beta + 2|h| + 1/beta
    scale = abs(c) + max(float(x.abs().max()) for x in (pw, pl, rw, rl))
    slope = beta + 2 * 4 * scale + 1 / beta
    close(f"losses with {c} added to the {which}'s chosen and rejected log-probs", moved, base,
          atol=8 * EPS64 * scale * slope)


@checks("dpo.swap_symmetry", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas)
def test_swap_symmetry(target, seed, B, beta):
    pw, pl, rw, rl = _pairs(seed, B, target)
    forward, _, _ = target(pw, pl, rw, rl, beta=beta)
    swapped, _, _ = target(pl, pw, rl, rw, beta=beta)
    h = dpo.log_ratio_margin(pw, pl, rw, rl)
    close("l(h) - l(-h) = -beta h", forward - swapped, -beta * h,
          atol=16 * EPS64 * (float(h.abs().max()) * beta + 1))


@checks("dpo.monotone_convex", operation=LOSS, dtypes=("float64", "float32"))
@given(beta=betas, eps=st.sampled_from([0.0, 0.1, 0.4]))
def test_monotone_convex(target, beta, eps):
    grid = torch.linspace(-8 / beta, 8 / beta, 161, dtype=F64)
    u = torch.finfo(target.torch_dtype).eps
    for loss_type in dpo.LOSS_TYPES:
        _, losses = _loss_at(target, grid, beta=beta, loss_type=loss_type, eps=eps)
        losses = losses.to(F64)
        if beta == 0.1 and eps == 0.1 and target.dtype == "float64":  # the report's picture of the variants
            recording.series("dpo_losses", f"{loss_type} (beta 0.1, eps 0.1)", "h (log-ratio margin)", "loss",
                             [(float(x), min(float(y), 5.0)) for x, y in zip(grid[::4], losses[::4])], kind="linear")
        tol = 8 * u * (1 + float(losses.abs().max()))  # rounding of the values differenced
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
            raise AssertionError(f"{loss_type}: the loss increases in h between h = {grid[i]:.4g} and "
                                 f"{grid[i + 1]:.4g} ({losses[i]:.6g} -> {losses[i + 1]:.6g})")
        if bool((second < -2 * tol).any()):
            i = int((second < -2 * tol).nonzero()[0])
            raise AssertionError(f"{loss_type}: the loss is not convex near h = {grid[i + 1]:.4g}")


@checks("dpo.robust_unbiased", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), B=st.integers(1, 6), beta=betas, eps=st.sampled_from([0.05, 0.2, 0.45]))
def test_robust_unbiased(target, seed, B, beta, eps):
    pw, pl, rw, rl = _pairs(seed, B, target, scale=3.0)
    clean, _, _ = target(pw, pl, rw, rl, beta=beta, loss_type="robust", label_smoothing=eps)
    flipped, _, _ = target(pl, pw, rl, rw, beta=beta, loss_type="robust", label_smoothing=eps)
    h = dpo.log_ratio_margin(pw, pl, rw, rl)
    expected = dpo.sigmoid_loss(h, beta)
    # the robust loss divides by 1 - 2 eps: its rounding grows by that factor
    close("(1 - eps) l(h) + eps l(-h)", (1 - eps) * clean + eps * flipped, expected,
          atol=32 * EPS64 * (1 + beta * float(h.abs().max())) / (1 - 2 * eps))


@checks("dpo.optimum_reward_identity", operation=LOSS, dtypes=("float64",))
@given(seed=st.integers(0, 2**31), K=st.integers(2, 6), beta=st.sampled_from([0.1, 0.5, 2.0]))
def test_optimum_reward_identity(target, seed, K, beta):
    gen = torch.Generator().manual_seed(seed)
    pi_ref = torch.softmax(torch.randn(K, generator=gen, dtype=F64), 0)
    r = torch.randn(K, generator=gen, dtype=F64)
    pi_star = dpo.optimal_policy(pi_ref, r, beta)
    offset = beta * torch.log(pi_star / pi_ref) - r  # = -beta log Z for every y
    # a few roundings of terms of size |r| + beta |log(pi*/pi_ref)| (< 20 here): ~1e-14; measured: spread <= 2.0e-15
    # over 30000 draws of these cases
    close("beta log(pi*/pi_ref) - r is constant over y", offset, offset.mean().expand(K), atol=1e-9)
    # every ordered pair (i, j), i != j, drawn with mu_i mu_j and labelled by Bradley-Terry with the true reward r
    I, J = (x.reshape(-1) for x in torch.meshgrid(torch.arange(K), torch.arange(K), indexing="ij"))
    I, J = I[I != J], J[I != J]
    mu = torch.softmax(torch.randn(K, generator=gen, dtype=F64), 0)
    weight = mu[I] * mu[J] * dpo.bradley_terry(r[I], r[J])
    theta = torch.log(pi_star).clone().requires_grad_(True)
    logp = torch.log_softmax(theta, 0)
    ref = torch.log(pi_ref)
    losses, rw, rl = target(logp[I], logp[J], ref[I], ref[J], beta=beta)
    # each side rounds a few times at the size of the loss; r_w - r_l = r_i - r_j of N(0, 1) draws stays far below
    # softplus's threshold 20, so no switch to the identity: 1e-12 relative is ~4500 eps
    close("sigmoid loss = -log Bradley-Terry(implicit rewards)", losses.detach(),
          -torch.log(dpo.bradley_terry(rw, rl)), atol=1e-12 * (1 + float(losses.detach().abs().max())))
    (grad,) = torch.autograd.grad((weight * losses).sum(), theta)
    # a sum of K (K - 1) <= 30 weighted terms of size <= 2 beta that cancel exactly: ~3e-14; measured: <= 2.7e-16
    # over 30000 draws of these cases
    close("gradient of the population DPO loss at pi*", grad, torch.zeros(K, dtype=F64), atol=1e-9)


# --- the fused loss from hidden states ----------------------------------------------------------------------

def _chunk_kwargs(target, data, case) -> dict:
    if not target.provides("chunk_size"):
        return {}
    tokens = case.N * (case.T - 1)
    return {"chunk_size": data.draw(st.integers(1, max(1, tokens // 2)), label="chunk_size")}


def _fused_case(target, case, data):
    hidden, weight = (target.tensor(x) for x in case.hidden_weight())
    ids, mask = case.ids(), case.mask()
    ref = tuple(target.tensor(-randn(case.seed + 5 + i, case.N // 2).abs() * case.T) for i in range(2))
    return hidden, weight, ids, mask, ref


def _loss_and_grads(fn, hidden, weight, *args, **kwargs):
    leaves = [hidden.detach().clone().requires_grad_(True), weight.detach().clone().requires_grad_(True)]
    loss = fn(*leaves, *args, **kwargs)
    return (loss, *torch.autograd.grad(loss, leaves))


def check_fused(target, spec_fn, magnitudes, hidden, weight, *args, extra: dict | None = None, **kwargs):
    """Loss and gradients of the target within budget of the float64 spec, with the naive code as baseline."""
    extra = extra or {}
    out = _loss_and_grads(target, hidden, weight, *args, **kwargs, **extra)
    ref = _loss_and_grads(spec_fn, hidden.to(F64), weight.to(F64), *args, **kwargs)
    base = _loss_and_grads(target.baseline, hidden, weight, *args, **kwargs)
    mag_loss, n = magnitudes(hidden, weight, *args, **kwargs)
    within_budget("loss", out[0], ref[0], base[0], magnitude=mag_loss, terms=n)
    # a logit z rounded by u |z| moves p = softmax(z) by p u |z|: the gradients (sums of g (onehot - p) W and
    # g (onehot - p) h) move relatively by u max|z|, on top of their own rounding
    z_max = float((hidden.detach().to(F64).abs() @ weight.detach().to(F64).abs().T).max())
    for name, o, r, b in zip(("d loss / d hidden", "d loss / d weight"), out[1:], ref[1:], base[1:]):
        within_budget(name, o, r, b, k=budget.K_GRADIENT, magnitude=float(r.abs().max()) * (1 + 2 * z_max), terms=n)
    return out


@checks("dpo.fused_matches_spec", operation=FUSED, requires=("grad",), dtypes=("float64", "float32", "bfloat16"))
@pytest.mark.parametrize("loss_type", dpo.LOSS_TYPES)
@settings(max_examples=8)  # x 5 loss types
@given(case=sequence_cases(pairs=True), beta=betas, data=st.data())
def test_fused_matches_spec(target, loss_type, case, beta, data):
    hidden, weight, ids, mask, ref = _fused_case(target, case, data)
    check_fused(target, dpo.fused_linear_dpo_loss, dpo.fused_loss_magnitudes, hidden, weight, ids, mask, *ref,
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
        loss, dh, dw = check_fused(target, dpo.fused_linear_dpo_loss, dpo.fused_loss_magnitudes, hidden, weight, ids,
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
    expect_rejection(target, lambda fn: fn(*xs), argument, case)


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
