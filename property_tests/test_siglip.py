"""Property tests of the SigLIP document (specs/siglip.py), one or more per claim.

Identities are checked in float64 at a tolerance derived from the unit roundoff u and the operation count;
budgets compare float32 (or float64) results with the float64 spec against the naive full-matrix baseline. The
multi-device scheme runs on the kept gloo world (implementations/torch/contrastive/distributed.py), started once
per test session and shared with the CLIP tests.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import assume, given, settings

from eqspec import budget
from implementations.torch.contrastive import eager
from specs import siglip as S

from . import recording
from .harness import checks, close, equal, expect_rejection, within_budget
from .strategies import randn
from .strategies_clip import (
    FeatureCase,
    as64,
    feature_cases,
    floor_magnitude,
    identity_atol,
    leaf,
    logit_gradient_magnitudes,
    random_orthogonal,
    value_and_grads,
)
from .test_clip import check_sharded, most_ranks, world_sizes

LOSS, PAIR, CHUNK, SHARDED = ("siglip.sigmoid_loss", "siglip.pairwise_loss", "siglip.chunked_sigmoid_loss",
                              "siglip.sharded_loss")
F64 = torch.float64
LN10 = math.log(10.0)


def t_primes() -> st.SearchStrategy[float]:
    """The stored log-temperature: the paper's init ln 10, open_clip's clamp ln 100, and anything in [-2, ln 100]."""
    return st.one_of(st.sampled_from([LN10, math.log(100.0), 0.0]), st.floats(-2.0, math.log(100.0)))


def biases() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([-10.0, 0.0, -2.71]), st.floats(-15.0, 5.0))


def logit_sizes(L: torch.Tensor, t: float, b: float) -> torch.Tensor:
    """kappa_ij, the size of what each logit L_ij = t x^_i . y^_j + b rounds (the product of size t, the bias, the
    sum) and what its term softplus(-z L) adds (<= |L| + 1)."""
    return L.abs() + t + abs(b) + 1


def sigmoid_gradient_weights(L: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """The error weights of dl/dL = (sigma(L) - I) / n, entrywise in roundings: sigma moves by sigma (1 - sigma)
    per unit of its logit's rounding (kappa), rounds itself at its own size, and on the diagonal sigma(L) - 1
    cancels terms of size 1 (computing -sigma(-L) avoids that, but a correct implementation need not)."""
    sig = torch.sigmoid(L)
    return (sig * (1 - sig) * kappa + sig + torch.eye(L.shape[0], dtype=L.dtype, device=L.device)) / L.shape[0]


def siglip_magnitudes(x, y, t_prime: float, b: float):
    """Sizes of the terms the loss and its feature gradients round, with their conditioning (before the roundings
    of the reductions, strategies_clip): the loss sums n^2 terms of size kappa over n; the gradients carry dl/dL's
    error weights through L = t x^ y^^T + b and the normalisation."""
    t = math.exp(t_prime)
    x_hat, y_hat = S.normalize(x.double()), S.normalize(y.double())
    L = S.logits(x_hat, y_hat, torch.tensor(t_prime, dtype=F64), torch.tensor(b, dtype=F64))
    kappa = logit_sizes(L, t, b)
    mag_x, mag_y = logit_gradient_magnitudes(x, y, t, sigmoid_gradient_weights(L, kappa))
    return kappa.sum() / L.shape[0], mag_x, mag_y


def reductions(n: int, D: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The reductions the loss goes through (n^2 pair terms, dot products of length D) and each gradient entry
    (n logits of its row or column, dot products of length D)."""
    return (n * n, D), (n, D)


def loss_tolerance(x, y, t_prime: float, b: float) -> float:
    """Two float64 evaluations of the loss of these features."""
    return identity_atol(siglip_magnitudes(x, y, t_prime, b)[0], *reductions(*x.shape)[0])


def check_loss_and_grads(x, y, args, loss, grads, baseline, *, label=""):
    ref, ref_grads = value_and_grads(S.sigmoid_loss, as64(x, y), *args)
    base, base_grads = baseline
    mag_loss, mag_x, mag_y = siglip_magnitudes(x, y, *args)
    loss_lengths, grad_lengths = reductions(*x.shape)
    n = x.shape[0] + x.shape[1] + 8
    within_budget(f"loss{label}", loss, ref, base, magnitude=floor_magnitude(mag_loss, *loss_lengths), terms=n,
                  dtype=x.dtype)
    for name, g, r, bg, mag in zip(("d image_features", "d text_features"), grads, ref_grads, base_grads,
                                   (mag_x, mag_y)):
        within_budget(f"{name}{label}", g, r, bg, k=budget.K_GRADIENT, magnitude=floor_magnitude(mag, *grad_lengths),
                      terms=n, dtype=x.dtype)


# --- the loss within budget -------------------------------------------------------------------------------

@checks("siglip.loss_within_budget", operation=LOSS, requires=("grad",))
@given(case=feature_cases(), t=t_primes(), b=biases())
def test_loss_within_budget(target, case, t, b):
    x, y = case.tensors(target)
    loss, grads = value_and_grads(target, (x, y), t, b)
    check_loss_and_grads(x, y, (t, b), loss, grads, value_and_grads(target.baseline, (x, y), t, b))


@checks("siglip.loss_within_budget", operation=LOSS, dtypes=("float32",))
@pytest.mark.parametrize("init", ["paper", "transformers"])
def test_transformers_siglip_model_loss(target, init):
    """transformers' SiglipModel with return_loss=True, tiny random towers, at the paper's init and at its own:
    its loss is the spec's (and the target's) on the model's own embeddings, t' and b."""
    from implementations.thirdparty.contrastive import transformers_models as hf

    if not hf.available():
        pytest.skip("needs the Python package 'transformers', which is not installed")
    out, t, b = hf.siglip_model_outputs(4013, *((LN10, -10.0) if init == "paper" else (0.0, 0.0)))
    x, y = out.image_embeds.detach(), out.text_embeds.detach()
    ref = S.sigmoid_loss(*as64(x, y), t, b)
    base = eager.sigmoid_loss(x, y, t, b)
    mag = floor_magnitude(siglip_magnitudes(x, y, t, b)[0], *reductions(*x.shape)[0])
    within_budget("SiglipModel loss", out.loss.detach(), ref, base, magnitude=mag, terms=x.shape[0] + x.shape[1])
    within_budget("loss", target(x, y, t, b), ref, base, magnitude=mag, terms=x.shape[0] + x.shape[1])


# --- identities -------------------------------------------------------------------------------------------

@checks("siglip.softplus_form", operation=LOSS, dtypes=("float64",))
@given(case=feature_cases(), t=t_primes(), b=biases())
def test_softplus_form(target, case, t, b):
    x, y = case.tensors(target)
    L = S.logits(S.normalize(x), S.normalize(y), torch.tensor(t, dtype=F64), torch.tensor(b, dtype=F64))
    close("loss vs (sum softplus(L) - tr L) / n", target(x, y, t, b), S.softplus_form(L),
          atol=loss_tolerance(x, y, t, b))


@checks("siglip.chunked_equals_full", operation=CHUNK, requires=("grad",))
@given(case=feature_cases(max_n=40), t=t_primes(), b=biases(), data=st.data())
def test_chunked_equals_full(target, case, t, b, data):
    chunk = data.draw(st.one_of(st.integers(1, case.N + 2), st.sampled_from([1, case.N])), label="chunk_size")
    x, y = case.tensors(target)
    loss, grads = value_and_grads(target, (x, y), t, b, chunk_size=chunk)
    if target.dtype == "float64":  # an identity: only the order of the float64 sums differs
        ref, ref_grads = value_and_grads(S.sigmoid_loss, (x, y), t, b)
        mag_loss, *mag_grads = siglip_magnitudes(x, y, t, b)
        loss_lengths, grad_lengths = reductions(case.N, case.D)
        close("chunked loss", loss, ref, atol=identity_atol(mag_loss, *loss_lengths))
        for name, g, r, mag in zip(("d image", "d text"), grads, ref_grads, mag_grads):
            close(f"chunked {name}", g, r, atol=identity_atol(mag, *grad_lengths))
    else:
        check_loss_and_grads(x, y, (t, b), loss, grads, value_and_grads(target.baseline, (x, y), t, b,
                                                                        chunk_size=chunk), label=f" (chunk {chunk})")


CHUNK_SWEEP = (1, 4, 16, 64, 256)


@checks("siglip.chunked_equals_full", operation=CHUNK, requires=("grad",), dtypes=("float32",))
def test_error_vs_chunk_size(target):
    """One fixed problem (n = 256, D = 64) at every chunk size: within budget, and the report plots the error."""
    case = FeatureCase(256, 64, 0.5, 4021)
    x, y = case.tensors(target)
    args = (LN10, -10.0)
    baseline = value_and_grads(target.baseline, (x, y), *args, chunk_size=1)
    points = []
    for chunk in CHUNK_SWEEP:
        loss, grads = value_and_grads(target, (x, y), *args, chunk_size=chunk)
        check_loss_and_grads(x, y, args, loss, grads, baseline, label=f" (chunk {chunk})")
        ref, ref_grads = value_and_grads(S.sigmoid_loss, as64(x, y), *args)
        points.append((chunk, float((grads[1].double() - ref_grads[1]).abs().max())))
    recording.series("siglip_error_vs_chunk_size", f"{target.name} {target.dtype}", "chunk size (image rows)",
                     "max |d text - spec|", points)


@checks("siglip.separability", operation=PAIR, dtypes=("float64",))
@given(n=st.integers(2, 16), scale=st.sampled_from([1.0, 5.0, 20.0]), seed=st.integers(0, 2**31), data=st.data())
def test_separability(target, n, scale, seed, data):
    L = randn(seed, n, n, scale=scale)
    loss = target(L)

    def terms(M: torch.Tensor) -> torch.Tensor:
        return (M.abs() + 1).sum() / n  # n^2 terms softplus(-z M) of size <= |M| + 1, over n

    perm = torch.tensor(data.draw(st.permutations(range(n)), label="permutation"))
    close("jointly permuted rows and columns", target(L[perm][:, perm]), loss, atol=identity_atol(terms(L), n * n))
    i, j = data.draw(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] != p[1]),
                     label="negative pair")
    new = data.draw(st.floats(-3 * scale, 3 * scale), label="new logit")
    L2 = L.clone()
    L2[i, j] = new
    expected = loss + (S.softplus(torch.tensor(new, dtype=F64)) - S.softplus(L[i, j])) / n
    close(f"loss after moving the negative logit ({i}, {j})", target(L2), expected,
          atol=identity_atol(max(terms(L), terms(L2)), n * n))


@checks("siglip.logits_gradient", operation=PAIR, requires=("grad",), dtypes=("float64",))
@given(n=st.integers(1, 24), scale=st.sampled_from([0.1, 1.0, 10.0, 50.0]), seed=st.integers(0, 2**31))
def test_logits_gradient(target, n, scale, seed):
    L = randn(seed, n, n, scale=scale)
    _, (G,) = value_and_grads(target, (L,))
    # the logits are given (kappa = 1: exp(-L) rounds once): sigma(L), or sigma(-L) where the code negates, and the
    # division by n, with sigma(L) - 1 cancelling terms of size 1 on the diagonal
    close("dl/dL", G, S.logits_gradient(L), atol=identity_atol(sigmoid_gradient_weights(L, torch.ones_like(L))))


@checks("siglip.logits_gradient", operation=LOSS, requires=("grad",), dtypes=("float64",))
@given(case=feature_cases(), t=t_primes(), b=biases())
def test_bias_and_temperature_gradients(target, case, t, b):
    x, y = case.tensors(target)
    tp, bias = leaf(torch.tensor(t, dtype=F64)), leaf(torch.tensor(b, dtype=F64))
    with torch.enable_grad():
        grads = torch.autograd.grad(target(x, y, tp, bias), (tp, bias), allow_unused=True)
    d_t, d_b = (torch.zeros((), dtype=F64) if g is None else g for g in grads)  # unused: no gradient at all
    x_hat, y_hat = S.normalize(x), S.normalize(y)
    L = S.logits(x_hat, y_hat, tp.detach(), bias.detach())
    G = S.logits_gradient(L)
    # sums of the n^2 entries of dl/dL, each off by its error weight; dl/dt' weighs them by cosines (|x^ . y^| <= 1,
    # each a dot product of length D) and the scale t
    weights = sigmoid_gradient_weights(L, logit_sizes(L, math.exp(t), b)).sum()
    close("dl/db = sum (sigma(L) - I) / n", d_b, G.sum(), atol=identity_atol(weights, case.N * case.N, case.D))
    close("dl/dt' = t sum (sigma(L) - I) o x^ y^^T", d_t, math.exp(t) * (G * (x_hat @ y_hat.T)).sum(),
          atol=identity_atol(math.exp(t) * weights, case.N * case.N, case.D))


@checks("siglip.monotone", operation=PAIR, dtypes=("float64",))
@given(n=st.integers(1, 12), seed=st.integers(0, 2**31), data=st.data())
def test_monotone(target, n, seed, data):
    L = randn(seed, n, n, scale=4.0).clamp(-10, 10)  # |L| <= 10: a step of 1 moves a term by >= 1e-5
    loss = float(target(L))
    if loss < 0:
        raise AssertionError(f"the loss is negative: {loss}")
    i, j = data.draw(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), label="pair")
    L2 = L.clone()
    L2[i, j] += 1.0
    moved = float(target(L2))
    if i == j and not moved < loss:
        raise AssertionError(f"raising the positive logit ({i}, {i}) did not lower the loss: {loss} -> {moved}")
    if i != j and not moved > loss:
        raise AssertionError(f"raising the negative logit ({i}, {j}) did not raise the loss: {loss} -> {moved}")


@checks("siglip.closed_forms", operation=LOSS, dtypes=("float64",))
@given(n=st.integers(1, 8), D=st.integers(1, 20), seed=st.integers(0, 2**31), t=t_primes(), b=biases(),
       paper_init=st.booleans())
def test_closed_forms(target, n, D, seed, t, b, paper_init):
    t, b = (LN10, -10.0) if paper_init else (t, b)
    assume(n <= D)
    Q = random_orthogonal(D, seed) * torch.exp(randn(seed + 1, D, 1))  # orthogonal rows of any norm
    close("orthonormal pairs", target(Q[:n], Q[:n], t, b),
          torch.tensor(S.orthogonal_loss(n, math.exp(t), b, 1.0), dtype=F64), atol=loss_tolerance(Q[:n], Q[:n], t, b))
    if 2 * n <= D:
        close("every cosine 0", target(Q[:n], Q[n:2 * n], t, b),
              torch.tensor(S.orthogonal_loss(n, math.exp(t), b, 0.0), dtype=F64),
              atol=loss_tolerance(Q[:n], Q[n:2 * n], t, b))


KA_IMAGES = [[1, 0], [0.6, 0.8], [0, 1]]
KA_TEXTS = [[0.8, 0.6], [0, 1], [1, 0]]
KNOWN = (("n = 4 orthonormal", lambda: (torch.eye(4), torch.eye(4)), 0.6932834),
         ("n = 4, every cosine 0", lambda: (torch.eye(8)[:4], torch.eye(8)[4:]), 10.0001816),
         ("3-pair example", lambda: (torch.tensor(KA_IMAGES), torch.tensor(KA_TEXTS)), 5.3965188))


PRINTED_8_DIGITS = 5e-8  # a value printed to 8 significant digits is within half a unit of the 8th


def _check_known(target, call):
    for name, make, value in KNOWN:
        x, y = (target.tensor(v.to(F64)) for v in make())
        # the printed digits, and the target's dtype rounding the loss of these features (|L| <= 20)
        size = floor_magnitude(siglip_magnitudes(x, y, LN10, -10.0)[0], *reductions(*x.shape)[0])
        close(name, call(x, y), torch.tensor(value, dtype=F64),
              atol=PRINTED_8_DIGITS * value + budget.rounding_atol(target.torch_dtype, size))


@checks("siglip.known_answers", operation=LOSS, dtypes=("float64", "float32"))
def test_known_answers(target):
    _check_known(target, lambda x, y: target(x, y, LN10, -10.0))


@checks("siglip.known_answers", operation=CHUNK, dtypes=("float64", "float32"))
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_known_answers_chunked(target, chunk):
    _check_known(target, lambda x, y: target(x, y, LN10, -10.0, chunk_size=chunk))


# --- multi-device -----------------------------------------------------------------------------------------

schedules = pytest.mark.parametrize("schedule", ["bidir", "shift"])


@checks("siglip.sharded_equals_single", operation=SHARDED)
@schedules
@settings(max_examples=10)  # one round trip through the gloo world per example
@given(case=feature_cases(max_n=5), t=t_primes(), b=biases(), data=st.data())
def test_sharded_equals_single_device(target, schedule, case, t, b, data):
    W = data.draw(world_sizes(target), label="world size")
    x, y = FeatureCase(W * case.N, case.D, case.noise, case.seed).tensors(target)
    losses, d_x, d_y, _ = target(x, y, t, b, world_size=W, schedule=schedule)
    loss_lengths, grad_lengths = reductions(*x.shape)
    # and the sum over the W ranks
    check_sharded(target, x, y, S.sigmoid_loss, (t, b), losses, (d_x, d_y), siglip_magnitudes(x, y, t, b),
                  ((*loss_lengths, W), (*grad_lengths, W)))


@checks("siglip.every_block_once", operation=SHARDED)
@schedules
@settings(max_examples=6)
@given(b_local=st.integers(1, 3), seed=st.integers(0, 2**31), data=st.data())
def test_every_block_once(target, schedule, b_local, seed, data):
    W = data.draw(world_sizes(target), label="world size")
    x, y = FeatureCase(W * b_local, 4, 1.0, seed).tensors(target)
    visits = target(x, y, LN10, -10.0, world_size=W, schedule=schedule)[3]
    for d in range(W):
        others = sorted(r for r in range(W) if r != d)
        if sorted(visits[d].tolist()) != others:
            raise AssertionError(f"rank {d} of {W} ({schedule}) received the text blocks of ranks "
                                 f"{visits[d].tolist()}, not each of {others} once")


@checks("siglip.every_block_once", operation=SHARDED)
@schedules
def test_visit_order_on_four_devices(target, schedule):
    """The order in which each of 4 devices receives the other text blocks (drawn in the report)."""
    if most_ranks(target) < 4:
        pytest.skip(f"{target.name}: needs 4 ranks, this machine runs {most_ranks(target)}")
    x, y = FeatureCase(8, 4, 1.0, 4022).tensors(target)
    visits = target(x, y, LN10, -10.0, world_size=4, schedule=schedule)[3]
    equal("visits", visits, torch.tensor(S.exchange_schedule(4, schedule), dtype=torch.int64))
    recording.heatmap(f"siglip_visits_{schedule}", f"{target.name} {target.dtype}", visits.tolist(),
                      row_labels=[f"device {d}" for d in range(4)], col_labels=[f"step {k + 1}" for k in range(3)])


@checks("siglip.initialisation", operation="siglip.initial_parameters")
def test_initialisation(target):
    t_prime, bias = target()
    # one rounding to float32 admits parameters a library stores in float32 (ln 10 within 2.3 x 6e-8 = 1.4e-7);
    # a wrong initialisation (t' = 10 instead of ln 10, or b = 0) is off by >= 7
    close("t'", torch.tensor(t_prime, dtype=F64), torch.tensor(LN10, dtype=F64),
          atol=budget.rounding_atol(torch.float32, LN10))
    close("b", torch.tensor(bias, dtype=F64), torch.tensor(-10.0, dtype=F64),
          atol=budget.rounding_atol(torch.float32, 10.0))


# --- contracts --------------------------------------------------------------------------------------------

def _pair(N=4, D=3, M=None):
    return randn(1, N, D), randn(2, M or N, D)


BAD_LOSS_INPUT = {
    "text batch of a different size": (lambda: (*_pair(M=5), LN10, -10.0), "text_features"),
    "image features of rank 1": (lambda: (randn(1, 4), randn(2, 4), LN10, -10.0), "image_features"),
    "infinite t_prime": (lambda: (*_pair(), float("inf"), -10.0), "t_prime"),
    "bias given as a string": (lambda: (*_pair(), LN10, "-10"), "bias"),
}


@checks("siglip.contract", operation=LOSS, dtypes=("float64",))
@pytest.mark.parametrize("case", list(BAD_LOSS_INPUT))
def test_loss_rejects_bad_input(target, case):
    make, argument = BAD_LOSS_INPUT[case]
    args = make()
    expect_rejection(target, lambda fn: fn(*args), argument, case)


@checks("siglip.contract", operation=CHUNK, dtypes=("float64",))
@pytest.mark.parametrize("chunk", [0, 2.5, True, None])
def test_chunked_rejects_bad_chunk_size(target, chunk):
    x, y = _pair()
    expect_rejection(target, lambda fn: fn(x, y, LN10, -10.0, chunk_size=chunk), "chunk_size", f"chunk {chunk!r}")


@checks("siglip.contract", operation=SHARDED, dtypes=("float64",))
@pytest.mark.parametrize("case", ["unknown schedule", "world size not dividing n"])
def test_sharded_rejects_bad_input(target, case):
    x, y = _pair(N=6)
    kwargs = {"world_size": 3, "schedule": "ring"} if case == "unknown schedule" else {"world_size": 4}
    expect_rejection(target, lambda fn: fn(x, y, LN10, -10.0, **kwargs),
                     "schedule" if case == "unknown schedule" else "world_size", case)


@checks("siglip.every_block_once", operation=SHARDED)
def test_exchange_schedules_visit_every_other_rank_once():
    """The spec's schedules for any world size (the distributed runs cover 2 to 4 ranks)."""
    for W in range(1, 12):
        for schedule in ("bidir", "shift"):
            for d, seen in enumerate(S.exchange_schedule(W, schedule)):
                equal(f"{schedule} W={W} rank {d}", torch.tensor(sorted(seen), dtype=torch.int64),
                      torch.tensor([r for r in range(W) if r != d], dtype=torch.int64))
