"""Property tests of the BLIP document (specs/blip.py), one or more per claim.

Losses are checked against the float64 spec within the error budget; the identities in float64 at tolerances
derived from the unit roundoff; the queue, the sampler's masks and CapFilt exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given

from eqspec import budget
from specs import blip as BL

from .harness import checks, close, equal, expect_rejection, within_budget
from .strategies import randn
from .strategies_clip import (
    as64,
    floor_magnitude,
    identity_atol,
    leaf,
    softmax_exponent_size,
    value_and_grads,
)

ITC, TGT, ITM, LM = "blip.itc_loss", "blip.soft_targets", "blip.itm_loss", "blip.lm_loss"
F64 = torch.float64


@dataclass(frozen=True)
class ItcCase:
    B: int
    K: int  # queue length
    D: int
    temp: float
    alpha: float
    seed: int

    def tensors(self, target):
        """Online, momentum (online + small drift) and queued features, L2-normalised as BLIP's projections are."""
        v, w = randn(self.seed, self.B, self.D), randn(self.seed + 1, self.B, self.D) + randn(self.seed, self.B, self.D)
        drift = lambda x, s: x + 0.1 * randn(s, *x.shape)  # noqa: E731
        feats = (v, w, drift(v, self.seed + 2), drift(w, self.seed + 3), randn(self.seed + 4, self.K, self.D),
                 randn(self.seed + 5, self.K, self.D))
        return tuple(target.tensor(F.normalize(x, dim=-1)) for x in feats)


@st.composite
def itc_cases(draw) -> ItcCase:
    return ItcCase(B=draw(st.integers(1, 8)), K=draw(st.integers(1, 16)), D=draw(st.sampled_from([2, 8, 32])),
                   temp=draw(st.sampled_from([BL.TEMP_INIT, BL.TEMP_MIN, BL.TEMP_MAX, 0.2])),
                   alpha=draw(st.sampled_from([0.0, BL.ALPHA, 1.0]) | st.floats(0, 1)),
                   seed=draw(st.integers(0, 2**31)))


def itc_magnitudes(case: ItcCase, feats):
    """Sizes of the terms the ITC loss and d/dv, d/dw round, with their conditioning (before the roundings of the
    reductions, strategies_clip). The similarities of unit features are at most 1 / temp, so every softmax entry, of
    the online rows (P) and of the momentum rows that make the soft targets (y), is off by kappa of its own size:
    d/dv = (P - y) [w_m; Q_t] / (2 B temp) cancels both, and each row's loss sum_j y_j (-log p_j) takes y's error
    times -log p as well as the exponents' kappa."""
    v, w, v_m, w_m, Q_v, Q_t = as64(*feats)
    kappa = softmax_exponent_size(1 / case.temp, case.B + case.K)
    loss, grads = 0.0, []
    for rows, cols_m, queue, rows_m in ((v, w_m, Q_t, v_m), (w, v_m, Q_v, w_m)):
        C = torch.cat([cols_m, queue])
        s = rows @ C.T / case.temp
        y = BL.soft_targets(rows_m @ C.T / case.temp, case.alpha)
        nll = -torch.log_softmax(s, dim=1)
        loss = loss + (y * kappa * (1 + nll)).sum(1).mean() / 2
        grads.append((torch.softmax(s, dim=1) + y) * kappa @ C.abs() / (2 * case.B * case.temp))
    return float(loss), *grads


# --- losses within budget ---------------------------------------------------------------------------------

@checks("blip.losses_within_budget", operation=ITC, requires=("grad",))
@given(case=itc_cases())
def test_itc_within_budget(target, case):
    feats = case.tensors(target)
    loss, grads = value_and_grads(target, feats[:2], *feats[2:], case.temp, case.alpha)
    ref, ref_grads = value_and_grads(BL.itc_loss, as64(*feats[:2]), *as64(*feats[2:]), case.temp, case.alpha)
    base, base_grads = value_and_grads(target.baseline, feats[:2], *feats[2:], case.temp, case.alpha)
    # rows of B + K similarities, each a dot product of length D
    mag_loss, mag_v, mag_w = (floor_magnitude(m, case.B + case.K, case.D) for m in itc_magnitudes(case, feats))
    n = case.B + case.K + case.D + 8
    within_budget("ITC loss", loss, ref, base, magnitude=mag_loss, terms=n, dtype=feats[0].dtype)
    for name, g, r, b, mag in zip(("d image_feat", "d text_feat"), grads, ref_grads, base_grads, (mag_v, mag_w)):
        within_budget(name, g, r, b, k=budget.K_GRADIENT, magnitude=mag, terms=n, dtype=feats[0].dtype)


@checks("blip.losses_within_budget", operation=ITM, requires=("grad",))
@given(B=st.integers(1, 16), scale=st.sampled_from([0.1, 3.0, 30.0]), seed=st.integers(0, 2**31))
def test_itm_within_budget(target, B, scale, seed):
    x = target.tensor(randn(seed, 3 * B, 2, scale=scale))
    # each row cancels its log-sum-exp (<= max |x| + ln 2) against its label's logit; the mean over 3B rows
    size = softmax_exponent_size(float(x.double().abs().max()), 2)
    within_budget("ITM loss", target(x), BL.itm_loss(x.double()), target.baseline(x),
                  magnitude=floor_magnitude(size, 3 * B), terms=3 * B + 8, dtype=x.dtype)


@checks("blip.losses_within_budget", operation=LM, requires=("grad",))
@given(B=st.integers(1, 3), T=st.integers(3, 9), V=st.integers(2, 50), eps=st.sampled_from([0.0, 0.1, 0.5]),
       scale=st.sampled_from([1.0, 10.0]), seed=st.integers(0, 2**31))
def test_lm_within_budget(target, B, T, V, eps, scale, seed):
    z = target.tensor(randn(seed, B, T, V, scale=scale))
    ids = torch.randint(1, V, (B, T), generator=torch.Generator().manual_seed(seed))
    ids[:, -1] = 0  # a padded tail, as the tokenizer's padding='longest' leaves
    # each position sums V terms q_v (-log p_v) of size <= kappa (-log p_v = lse - z_v), the mean over B T positions
    size = softmax_exponent_size(float(z.double().abs().max()), V)
    within_budget("LM loss", target(z, ids, 0, smoothing=eps), BL.lm_loss(z.double().cpu(), ids, 0, smoothing=eps),
                  target.baseline(z, ids, 0, smoothing=eps), magnitude=floor_magnitude(size, V, B * T),
                  terms=V + B * T + 8, dtype=z.dtype)


# --- ITC --------------------------------------------------------------------------------------------------

@checks("blip.soft_targets_are_distributions", operation=TGT, dtypes=("float64",))
@given(B=st.integers(1, 8), extra=st.integers(0, 16), scale=st.sampled_from([1.0, 14.3, 1000.0]),
       alpha=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_soft_targets_are_distributions(target, B, extra, scale, alpha, seed):
    sim = randn(seed, B, B + extra, scale=scale)
    y = target(sim, alpha)
    if bool((y < 0).any()):
        raise AssertionError(f"negative soft targets: min {float(y.min())}")
    # the softmax's entries are normalised by their rounded sum (their exponents' rounding cancels in the row sum):
    # entries <= 1 through a reduction of length B + extra
    close("row sums", y.sum(1), torch.ones(B, dtype=F64), atol=identity_atol(1.0, B + extra))
    onehot = torch.zeros(B, B + extra, dtype=F64)
    onehot[range(B), range(B)] = 1
    equal("alpha = 0: one-hot targets", target(sim, 0.0), onehot)
    # a softmax computed another way (exp(s - lse) or exp(s - max) / sum) moves each entry by kappa of its size
    p = torch.softmax(sim, dim=1)
    close("alpha = 1: the momentum softmax", target(sim, 1.0), p,
          atol=identity_atol(p * softmax_exponent_size(float(sim.abs().max()), B + extra), B + extra))


@checks("blip.itc_gradient", operation=ITC, requires=("grad",), dtypes=("float64",))
@given(case=itc_cases())
def test_itc_gradient(target, case):
    feats = case.tensors(target)
    leaves = tuple(leaf(x) for x in feats)
    with torch.enable_grad():
        grads = torch.autograd.grad(target(*leaves, case.temp, case.alpha), leaves, allow_unused=True)
    v, w, v_m, w_m, Q_v, Q_t = feats
    expected = BL.itc_image_gradient(v, w_m, Q_t, v_m, case.temp, case.alpha)
    mag = itc_magnitudes(case, feats)[1]
    close("d L / d image_feat", grads[0], expected, atol=identity_atol(mag, case.B + case.K, case.D))
    names = ("image_feat_m", "text_feat_m", "image_queue", "text_queue")
    for name, g in zip(names, grads[2:]):
        if g is not None and bool((g != 0).any()):
            raise AssertionError(f"a gradient reached {name} (max |g| = {float(g.abs().max()):.3g}): the momentum "
                                 f"side and the queues must be constants")


# --- momentum encoder and queue ---------------------------------------------------------------------------

@checks("blip.ema_closed_form", operation="blip.momentum_update", dtypes=("float64",))
@given(k=st.integers(1, 60), m=st.sampled_from([BL.MOMENTUM, 0.9, 0.5, 0.0, 1.0]) | st.floats(0, 1),
       seed=st.integers(0, 2**31))
def test_ema_closed_form(target, k, m, seed):
    theta, theta_m = randn(seed, 5, 3), randn(seed + 1, 5, 3)
    current = theta_m
    for _ in range(k):
        current = target(current, theta, m)
    # each step rounds m theta_m, (1 - m) theta and their sum: 3 roundings (1.5 eps) of at most max |theta|,
    # |theta_m|, which later steps only damp (by m <= 1); the closed form rounds theta_m - theta, m^k, the product
    # and the sum. k steps of 1.5 eps fit in the k roundings of eps each side gets
    size = float(torch.maximum(theta.abs(), theta_m.abs()).max())
    close(f"theta_m after {k} steps", current, BL.ema_closed_form(theta_m, theta, m, k), atol=identity_atol(size, k))


@checks("blip.queue_fifo", operation="blip.enqueue")
@given(B=st.integers(1, 4), rounds=st.integers(1, 5), D=st.integers(1, 4), seed=st.integers(0, 2**31),
       graph=st.booleans())
def test_queue_fifo(target, B, rounds, D, seed, graph):
    K = B * rounds
    queue = target.tensor(randn(seed, K, D))
    ptr = 0
    # the features of the online encoder, with their graph (graph=True) as a training step has them
    batches = [target.tensor(randn(seed + 1 + i, B, D)).requires_grad_(graph) for i in range(rounds)]
    for i, feats in enumerate(batches):
        before = queue
        queue, ptr = target(queue, ptr, feats)
        if queue.requires_grad:
            raise AssertionError(f"the queue after enqueue {i} holds the features' graph (requires_grad): every "
                                 "batch's activations stay alive, and a backward runs into the queue")
        queue = queue.cpu()  # indexed by host masks below (a no-op on the CPU)
        slots = slice(B * i, B * (i + 1))
        equal(f"slots {slots.start}..{slots.stop - 1} after enqueue {i}", queue[slots], feats)
        untouched = torch.ones(K, dtype=torch.bool)
        untouched[slots] = False
        equal(f"the other slots after enqueue {i}", queue[untouched], before[untouched])
    if ptr != 0:
        raise AssertionError(f"after K / B = {rounds} enqueues the pointer is {ptr}, not 0")
    equal("the queue after one full turn", queue, torch.cat(batches))


# --- ITM --------------------------------------------------------------------------------------------------

@checks("blip.sampler_never_positive", operation="blip.hard_negative_weights")
@given(B=st.integers(2, 8), scale=st.sampled_from([1.0, 14.3, 1000.0]), use_ids=st.booleans(),
       seed=st.integers(0, 2**31))
def test_sampler_never_positive(target, B, scale, use_ids, seed):
    sim = target.tensor(randn(seed, B, B, scale=scale))
    g = torch.Generator().manual_seed(seed)
    ids = None
    if use_ids:  # repeated images (retrieval): every row keeps at least one other id
        ids = torch.randint(0, max(2, B // 2), (B,), generator=g)
        ids[0], ids[1] = 0, 1
        ids[ids == ids[0]] = 0
    weights = (target(sim, ids) if use_ids else target(sim)).cpu()  # drawn from and checked on the host
    masked = (ids[:, None] == ids[None, :]) if use_ids else torch.eye(B, dtype=torch.bool)
    equal("weights of the positive / same-id entries", weights[masked].double(),
          torch.zeros(int(masked.sum()), dtype=F64))
    if not use_ids and not bool((weights[~masked] > 0).all()):
        raise AssertionError("a negative has weight 0 in pretraining (softmax + 1e-4 keeps every one possible)")
    rows = (weights.double().sum(1) > 0)
    draws = BL.sample_negatives(weights[rows], 10_000, g)
    hit = masked[rows].gather(1, draws)
    if bool(hit.any()):
        raise AssertionError(f"{int(hit.sum())} of {draws.numel()} draws returned a masked (positive) index")


@checks("blip.itm_labels", operation=ITM, requires=("grad",), dtypes=("float64",))
@given(B=st.integers(1, 12), level=st.floats(-50, 50), seed=st.integers(0, 2**31))
def test_itm_labels(target, B, level, seed):
    uniform = torch.full((3 * B, 2), level, dtype=F64)
    # lse = level + ln 2 rounds at the level's size, then cancels against the level; the mean over 3B rows
    close("ITM loss at uniform logits", target(uniform), torch.tensor(math.log(2), dtype=F64),
          atol=identity_atol(abs(level) + 1, 3 * B))
    x = randn(seed, 3 * B, 2)
    _, (grad,) = value_and_grads(target, (x,))
    onehot = torch.softmax(x, dim=1) - 3 * B * grad  # (softmax - onehot) / 3B is the gradient of the mean CE
    # entries of size <= 1: the softmax and the gradient (whose 1 / 3B the product undoes) each round a few times
    # (kappa of logits of size ~3), far below the 1 a wrong label moves an entry by
    close("the gradient's one-hot labels are 0/1", onehot, onehot.round(),
          atol=identity_atol(softmax_exponent_size(float(x.abs().max()), 2), 3 * B))
    equal("labels: B ones, then 2B zeros", onehot.argmax(1), BL.itm_labels(B))


# --- LM ---------------------------------------------------------------------------------------------------

@checks("blip.label_smoothing", operation=LM, requires=("grad",), dtypes=("float64",))
@given(B=st.integers(1, 3), T=st.integers(2, 8), V=st.integers(2, 40), eps=st.floats(0, 1),
       seed=st.integers(0, 2**31))
def test_label_smoothing(target, B, T, V, eps, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    pads = torch.rand(B, T, generator=g) < 0.3
    pads[:, 1] = False  # at least one predicted token per row
    ids[pads] = 0
    level = torch.rand(B, T, 1, generator=g, dtype=F64) * 10
    # -log p_v = lse - level cancels terms of the level's size (+ ln V): V of them per position, B T positions
    close("loss at uniform logits (ln V)", target(level.expand(B, T, V).clone(), ids, 0, smoothing=eps),
          torch.tensor(math.log(V), dtype=F64),
          atol=identity_atol(softmax_exponent_size(float(level.max()), V), V, B * T))
    z = randn(seed, B, T, V, scale=3.0)
    loss = target(z, ids, 0, smoothing=eps)
    # positions whose next token is a pad predict nothing: their logits may be anything
    ignored = torch.zeros(B, T, dtype=torch.bool)
    ignored[:, :-1] = ids[:, 1:] == 0
    ignored[:, -1] = True  # the last position has no next token
    z2 = z.clone()
    z2[ignored] = randn(seed + 1, int(ignored.sum()), V, scale=30.0)
    equal("loss with the ignored positions' logits replaced", target(z2, ids, 0, smoothing=eps), loss)
    keep = ~ignored[:, :-1]
    log_p = torch.log_softmax(z[:, :-1][keep], dim=-1)
    ce = -log_p.gather(1, ids[:, 1:][keep][:, None]).mean()
    uniform_ce = -log_p.mean()
    # both sides sum V terms -log p_v = lse - z_v (kappa) per position and average over the B T positions
    close("(1 - eps) CE + eps mean_v(-log p)", loss, (1 - eps) * ce + eps * uniform_ce,
          atol=identity_atol(softmax_exponent_size(float(z.abs().max()), V), V, B * T))


# --- CapFilt ----------------------------------------------------------------------------------------------

@checks("blip.capfilt_rule", operation="blip.capfilt", dtypes=("float64",))
@given(items=st.lists(st.tuples(st.sampled_from([0.0, 0.3, 0.5, 0.5000001, 0.9, 1.0]) | st.floats(0, 1),
                                st.booleans()), min_size=1, max_size=12))
def test_capfilt_rule(target, items):
    captions = [f"caption {i}" for i in range(len(items))]
    p = torch.tensor([q for q, _ in items], dtype=F64)
    human = torch.tensor([h for _, h in items], dtype=torch.bool)
    kept = target(captions, p, human)
    expected = [c for c, (q, h) in zip(captions, items) if h or q > 0.5]
    if kept != expected:
        raise AssertionError(f"CapFilt kept {kept}, expected {expected} (human-annotated, or match "
                             f"probability > 1/2), from {items}")


# --- known answers ----------------------------------------------------------------------------------------

PRINTED_6_DECIMALS = 5e-7  # a value printed to 6 decimals is within half a unit of the 6th


@checks("blip.known_answers", operation=TGT, dtypes=("float64", "float32"))
def test_known_answers_soft_targets(target):
    y = target(target.tensor(torch.tensor([[2.0, 0.0]], dtype=F64)), 0.4)
    # 6 decimals printed; the dtype rounds the softmax of logits of size 2 over 2 entries (kappa)
    close("targets for momentum sims [2, 0], alpha 0.4", y, torch.tensor([[0.952319, 0.047681]], dtype=F64),
          atol=PRINTED_6_DECIMALS + budget.rounding_atol(target.torch_dtype, softmax_exponent_size(2.0, 2)))


@checks("blip.known_answers", operation=ITM, dtypes=("float64", "float32"))
def test_known_answers_itm(target):
    # 6 decimals printed; the dtype rounds ln 2 and the mean of 6 rows
    close("ITM at uniform logits", target(target.tensor(torch.zeros(6, 2, dtype=F64))),
          torch.tensor(0.693147, dtype=F64),
          atol=PRINTED_6_DECIMALS + budget.rounding_atol(target.torch_dtype, floor_magnitude(math.log(2), 6)))


@checks("blip.known_answers", operation=LM, dtypes=("float64", "float32"))
def test_known_answers_lm(target):
    V = 30524  # BERT's vocabulary with BLIP's [DEC] and [ENC] tokens
    ids = torch.tensor([[1, 5, 9, 0, 0]])
    # the sum of V ones is exact in float32 (V < 2^24) and the log rounds once; the smoothing's share of the loss
    # sums V terms -log p_v = ln V; the mean over the 2 predicted positions
    eps = BL.LABEL_SMOOTHING
    size = (1 - eps) * floor_magnitude(math.log(V), 2) + eps * floor_magnitude(math.log(V), V, 2)
    close("LM at uniform logits, ln V", target(target.tensor(torch.zeros(1, 5, V, dtype=F64)), ids, 0),
          torch.tensor(math.log(V), dtype=F64), atol=budget.rounding_atol(target.torch_dtype, size))


# --- contracts --------------------------------------------------------------------------------------------

def _itc_args(B=3, K=6, D=4, text_B=None):
    v, w = randn(1, B, D), randn(2, text_B or B, D)
    return (v, w, randn(3, B, D), randn(4, B, D), randn(5, K, D), randn(6, K, D), 0.07, 0.4)


BAD_INPUT = {  # case -> (operation, arguments, the argument the error must name)
    "ITC text batch of a different size": (ITC, lambda: _itc_args(text_B=4), "text_feat"),
    "enqueue a batch that does not divide the queue": ("blip.enqueue", lambda: (randn(1, 6, 2), 0, randn(2, 4, 2)),
                                                       "feats"),
    "enqueue at a pointer off the batch grid": ("blip.enqueue", lambda: (randn(1, 6, 2), 1, randn(2, 2, 2)), "ptr"),
    "ITM logits not (3B, 2)": (ITM, lambda: (randn(1, 4, 2),), "itm_logits"),
    "LM input_ids not matching the logits": (LM, lambda: (randn(1, 2, 5, 7), torch.ones(2, 4, dtype=torch.long), 0),
                                             "input_ids"),
}


def _contract_test(operation: str):
    cases = [c for c, (op, _, _) in BAD_INPUT.items() if op == operation]

    @checks("blip.contract", operation=operation, dtypes=("float64",))
    @pytest.mark.parametrize("case", cases)
    def test(target, case):
        _, make, argument = BAD_INPUT[case]
        args = make()
        expect_rejection(target, lambda fn: fn(*args), argument, case)

    return test


test_itc_rejects_bad_input = _contract_test(ITC)
test_enqueue_rejects_bad_input = _contract_test("blip.enqueue")
test_itm_rejects_bad_input = _contract_test(ITM)
test_lm_rejects_bad_input = _contract_test(LM)
