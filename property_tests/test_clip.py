"""Property tests of the CLIP document (specs/clip.py), one or more per claim.

Identities are checked in float64 at a tolerance derived from the float64 unit roundoff u and the operation
count; budgets compare an implementation's float32 (or float64) result with the float64 spec against the naive
same-precision baseline (eqspec/budget.py). The data-parallel loss runs on a kept world of gloo processes
(implementations/torch/contrastive/distributed.py): it is started once per test session, not per example.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from eqspec import budget
from implementations.torch.contrastive import eager
from specs import clip as C

from . import recording
from .harness import checks, close, expect_rejection, within_budget
from .strategies import randn
from .strategies_clip import (
    FeatureCase,
    as64,
    feature_cases,
    floor_magnitude,
    identity_atol,
    logit_gradient_magnitudes,
    logit_scales,
    random_orthogonal,
    softmax_exponent_size,
    value_and_grads,
)

LOSS, CE, LOCAL, SHARDED = "clip.clip_loss", "clip.contrastive_loss", "clip.local_loss", "clip.sharded_loss"
F64 = torch.float64


def loss_tolerance(s: float, N: int, D: int) -> float:
    """Two float64 evaluations of the loss: terms of the size of its softmax exponents (|L| <= s) through rows of N
    logits, each a dot product of length D."""
    return identity_atol(softmax_exponent_size(s, N), N, D)


def contrastive_gradient_weights(L: torch.Tensor) -> torch.Tensor:
    """The error weights of dl/dL = ((P_row - I) + (P_col - I)) / 2N, entrywise in roundings: each softmax entry is
    off by kappa of its own size, and on the diagonal p - 1 cancels terms of size 1 (where every row is sharply
    diagonal the gradient is ~e^-60, but a correct float32 p_ii rounds to 1 - eps / 2 as well as to 1)."""
    N = L.shape[0]
    kappa = softmax_exponent_size(float(L.abs().max()), N)
    P = torch.softmax(L, dim=1) + torch.softmax(L, dim=0)
    return (P * kappa + 2 * torch.eye(N, dtype=L.dtype)) / (2 * N)


def clip_magnitudes(I, T, t: float):
    """Sizes of the terms the loss and its feature gradients round, with their conditioning (before the roundings
    of the reductions, strategies_clip): the loss cancels each row's log-sum-exp against its diagonal logit (kappa);
    the gradients carry dl/dL's error weights through L = s I^ T^^T and the normalisation."""
    s = math.exp(t)
    I_hat, T_hat = C.normalize(I.double()), C.normalize(T.double())
    L = C.logits(I_hat, T_hat, torch.tensor(t, dtype=F64))
    mag_I, mag_T = logit_gradient_magnitudes(I, T, s, contrastive_gradient_weights(L))
    return softmax_exponent_size(s, I.shape[0]), mag_I, mag_T


def check_loss_and_grads(target, I, T, t, loss, grads, baseline):
    ref, ref_grads = value_and_grads(C.clip_loss, as64(I, T), t)
    base, base_grads = baseline
    N, D = I.shape
    # rows of N logits, each a dot product of length D
    mag_loss, mag_I, mag_T = (floor_magnitude(m, N, D) for m in clip_magnitudes(I, T, t))
    n = N + D + 8
    within_budget("loss", loss, ref, base, magnitude=mag_loss, terms=n, dtype=I.dtype)
    for name, g, r, b, mag in zip(("d image_features", "d text_features"), grads, ref_grads, base_grads,
                                  (mag_I, mag_T)):
        within_budget(name, g, r, b, k=budget.K_GRADIENT, magnitude=mag, terms=n, dtype=I.dtype)


# --- the loss within budget -------------------------------------------------------------------------------

@checks("clip.loss_within_budget", operation=LOSS, requires=("grad",))
@given(case=feature_cases(), t=logit_scales())
def test_loss_within_budget(target, case, t):
    I, T = case.tensors(target)
    loss, grads = value_and_grads(target, (I, T), t)
    check_loss_and_grads(target, I, T, t, loss, grads, value_and_grads(target.baseline, (I, T), t))


@checks("clip.loss_within_budget", operation=LOSS, dtypes=("float32",))
def test_transformers_clip_model_loss(target):
    """transformers' CLIPModel with return_loss=True, tiny random towers: its loss is the spec's (and the
    target's) on the model's own normalised embeddings and its stored logit_scale."""
    from implementations.thirdparty.contrastive import transformers_models as hf

    if not hf.available():
        pytest.skip("needs the Python package 'transformers', which is not installed")
    out, t = hf.clip_model_outputs(seed=4011)
    I, T = out.image_embeds.detach(), out.text_embeds.detach()
    ref = C.clip_loss(*as64(I, T), t)
    base = eager.clip_loss(I, T, t)
    mag_loss = floor_magnitude(clip_magnitudes(I, T, t)[0], *I.shape)
    within_budget("CLIPModel loss", out.loss.detach(), ref, base, magnitude=mag_loss, terms=I.shape[0] + I.shape[1])
    within_budget("loss", target(I, T, t), ref, base, magnitude=mag_loss, terms=I.shape[0] + I.shape[1])


# --- identities -------------------------------------------------------------------------------------------

@checks("clip.invariances", operation=LOSS, dtypes=("float64",))
@given(case=feature_cases(), t=logit_scales())
def test_norm_and_rotation_invariance(target, case, t):
    I, T = case.tensors(target)
    Q = random_orthogonal(case.D, case.seed + 3)
    scales = torch.exp(randn(case.seed + 4, case.N, 2))
    I2, T2 = (I.cpu() * scales[:, :1]) @ Q, (T.cpu() * scales[:, 1:]) @ Q  # on the host; target() moves them
    close("loss of rescaled, rotated features", target(I2, T2, t), target(I, T, t),
          atol=loss_tolerance(math.exp(t), case.N, case.D))


@checks("clip.swap_symmetry", operation=LOSS, dtypes=("float64",))
@given(case=feature_cases(), t=logit_scales())
def test_swap_symmetry(target, case, t):
    I, T = case.tensors(target)
    close("loss(text, image)", target(T, I, t), target(I, T, t), atol=loss_tolerance(math.exp(t), case.N, case.D))


@checks("clip.joint_permutation", operation=LOSS, dtypes=("float64",))
@given(case=feature_cases(min_n=2), t=logit_scales(), data=st.data())
def test_joint_permutation(target, case, t, data):
    I, T = case.tensors(target)
    perm = torch.tensor(data.draw(st.permutations(range(case.N)), label="permutation"))
    close("loss of permuted pairs", target(I[perm], T[perm], t), target(I, T, t),
          atol=loss_tolerance(math.exp(t), case.N, case.D))


@checks("clip.closed_forms", operation=LOSS, dtypes=("float64",))
@given(N=st.integers(1, 16), D=st.integers(1, 16), t=logit_scales(), seed=st.integers(0, 2**31))
def test_closed_forms(target, N, D, t, seed):
    s = math.exp(t)
    v = randn(seed, 1, D)
    same = v.expand(N, D).clone()
    close("loss of identical features (ln N)", target(same, 2 * same, t), torch.tensor(math.log(N), dtype=F64),
          atol=loss_tolerance(s, N, D))
    N = min(N, D)
    Q = random_orthogonal(D, seed + 1)[:N] * torch.exp(randn(seed + 2, N, 1))
    close("loss of orthonormal pairs ln(1 + (N-1) e^-s)", target(Q, Q, t),
          torch.tensor(C.orthonormal_loss(N, s), dtype=F64), atol=loss_tolerance(s, N, D))


@checks("clip.closed_forms", operation=LOSS, dtypes=("float64",))
def test_orthonormal_loss_vs_scale(target):
    """N = 8 orthonormal pairs across CLIP's clamped range of s: the implementation on the closed form (plotted)."""
    N, D = 8, 16
    Q = random_orthogonal(D, 4023)[:N]
    points = []
    for t in torch.linspace(0, math.log(100.0), 12).tolist():
        s = math.exp(t)
        close(f"orthonormal pairs at s = {s:.3g}", target(Q, Q, t), torch.tensor(C.orthonormal_loss(N, s), dtype=F64),
              atol=loss_tolerance(s, N, D))
        points.append((s, float(target(Q, Q, t))))
    recording.series("clip_orthonormal_loss_vs_scale", f"{target.name} {target.dtype}", "logit scale s = exp(t)",
                     "loss (closed form ln(1 + (N - 1) e^-s), N = 8)", points, kind="loglog")


PRINTED_7_DIGITS = 5e-7  # a value printed to 7 significant digits is within half a unit of the 7th
KA_IMAGES = [[1, 0], [0.6, 0.8], [0, 1]]
KA_TEXTS = [[0.8, 0.6], [0, 1], [1, 0]]


@checks("clip.known_answers", operation=LOSS, dtypes=("float64", "float32"))
def test_known_answers(target):
    f = lambda rows: target.tensor(torch.tensor(rows, dtype=F64))  # noqa: E731
    eye = f(torch.eye(4).tolist())

    def atol(value: float, s: float, N: int, D: int) -> float:
        # the catalogue prints 7 significant digits (half a unit of the 7th: 5e-7 relative); in the target's dtype
        # the loss cancels the diagonal logit s against its row's log-sum-exp (kappa, through rows of N logits that
        # are dot products of length D; float32 at s = 14.3: 5.7e-8 measured)
        kappa = floor_magnitude(softmax_exponent_size(s, N), N, D)
        return PRINTED_7_DIGITS * abs(value) + budget.rounding_atol(target.torch_dtype, kappa)

    s0 = 1 / 0.07
    close("N = 4 orthonormal, s = 1/0.07", target(eye, eye, math.log(s0)), torch.tensor(1.874623e-6, dtype=F64),
          atol=atol(1.874623e-6, s0, 4, 4))
    ones = f([[1.0, 2.0]] * 4)
    close("all-equal features, ln 4", target(ones, ones, math.log(s0)), torch.tensor(1.386294, dtype=F64),
          atol=atol(1.386294, s0, 4, 2))
    close("3-pair example, s = 10", target(f(KA_IMAGES), f(KA_TEXTS), math.log(10.0)),
          torch.tensor(4.650514, dtype=F64), atol=atol(4.650514, 10.0, 3, 2))


@checks("clip.logits_gradient", operation=CE, requires=("grad",), dtypes=("float64",))
@given(N=st.integers(1, 24), scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]), seed=st.integers(0, 2**31))
def test_logits_gradient(target, N, scale, seed):
    L = randn(seed, N, N, scale=scale)
    _, (G,) = value_and_grads(target, (L,))
    weights = contrastive_gradient_weights(L)  # a softmax over a row or a column of N logits per entry
    close("dl/dL", G, C.logits_gradient(L), atol=identity_atol(weights, N))
    close("sum of dl/dL (each direction sums to 0)", G.sum(), torch.zeros((), dtype=F64),
          atol=identity_atol(weights.sum(), N, N * N))


# --- data parallel ----------------------------------------------------------------------------------------

@checks("clip.local_loss_sharding", operation=LOCAL, requires=("grad",), dtypes=("float64",))
@given(W=st.integers(1, 4), case=feature_cases(max_n=6), t=logit_scales())
def test_local_loss_sharding(target, W, case, t):
    I, T = FeatureCase(W * case.N, case.D, case.noise, case.seed).tensors(target)
    ref, ref_grads = value_and_grads(C.clip_loss, (I, T), t)
    pieces = [value_and_grads(target, (I, T), t, rank=r, world_size=W) for r in range(W)]
    N = W * case.N
    mags = clip_magnitudes(I, T, t)
    # rows of N logits, dot products of length D, and the sum over W ranks
    close("mean of the local losses", torch.stack([p[0] for p in pieces]).mean(), ref,
          atol=identity_atol(mags[0], N, case.D, W))
    for k, name in enumerate(("image", "text")):
        summed = sum(p[1][k] for p in pieces) / W
        close(f"summed local gradients of the {name} features / W", summed, ref_grads[k],
              atol=identity_atol(mags[1 + k], N, case.D, W))


def check_sharded(target, I, T, reference, args, losses, grads, magnitudes, lengths):
    """mean of the ranks' losses and their DDP-averaged gradients against the single-process spec; magnitudes:
    the sizes of the terms the loss and the two gradients round, with their conditioning; lengths: the reductions
    each goes through (for the loss, then for the gradients)."""
    ref, ref_grads = value_and_grads(reference, as64(I, T), *args)
    mag_loss, *mag_grads = magnitudes
    loss_lengths, grad_lengths = lengths
    if target.dtype == "float64":  # an identity: the ranks only split and reorder the float64 sums
        close("mean of the ranks' losses", losses.mean(), ref, atol=identity_atol(mag_loss, *loss_lengths))
        for name, g, r, mag in zip(("d image", "d text"), grads, ref_grads, mag_grads):
            close(name, g, r, atol=identity_atol(mag, *grad_lengths))
        return
    naive = {"clip": eager.clip_loss, "siglip": eager.sigmoid_loss}[target.operation.document]
    base, base_grads = value_and_grads(naive, (I, T), *args)
    n = I.shape[0] + I.shape[1] + 8
    within_budget("mean of the ranks' losses", losses.mean(), ref, base,
                  magnitude=floor_magnitude(mag_loss, *loss_lengths), terms=n, dtype=I.dtype)
    for name, g, r, b, mag in zip(("d image", "d text"), grads, ref_grads, base_grads, mag_grads):
        within_budget(name, g, r, b, k=budget.K_GRADIENT, magnitude=floor_magnitude(mag, *grad_lengths), terms=n,
                      dtype=I.dtype)


def most_ranks(target) -> int:
    """Ranks a sharded target can run here: the gloo world's 4 on the CPU; under NCCL one GPU per rank."""
    most = 4 if target.device == "cpu" else min(4, torch.cuda.device_count())
    if most < 2:
        pytest.skip(f"{target.name}: NCCL needs one GPU per rank, this machine has {torch.cuda.device_count()}")
    return most


def world_sizes(target) -> st.SearchStrategy[int]:
    """2 to 4 ranks (subgroups of the kept world); a library that gathers over the default group: the whole world."""
    most = most_ranks(target)
    return st.just(most) if target.provides("full_world_only") else st.integers(2, most)


@checks("clip.distributed_equals_single", operation=SHARDED)
@settings(max_examples=10)  # each example is one round trip through the gloo world (~30 ms)
@given(case=feature_cases(max_n=5), t=logit_scales(), data=st.data())
def test_sharded_equals_single_process(target, case, t, data):
    W = data.draw(world_sizes(target), label="world size")
    I, T = FeatureCase(W * case.N, case.D, case.noise, case.seed).tensors(target)
    losses, d_image, d_text = target(I, T, t, world_size=W)
    lengths = (I.shape[0], case.D, W)  # rows of N logits, dot products of length D, the sum over the ranks
    check_sharded(target, I, T, C.clip_loss, (t,), losses, (d_image, d_text), clip_magnitudes(I, T, t),
                  (lengths, lengths))


# --- zero-shot classifier and the clamp -------------------------------------------------------------------

@checks("clip.zero_shot_classifier", operation="clip.zero_shot_classifier", dtypes=("float64",))
@given(C_=st.integers(1, 6), K=st.integers(1, 8), D=st.integers(2, 16), seed=st.integers(0, 2**31))
def test_zero_shot_classifier(target, C_, K, D, seed):
    e = randn(seed, C_, K, D) * torch.exp(2 * randn(seed + 1, C_, K, 1))
    W = target(e)
    tol = identity_atol(1.0, K, D, D)  # entries <= 1: a norm over D, the mean over K templates, the norm again
    close("column norms", W.norm(dim=0), torch.ones(C_, dtype=F64), atol=tol)
    perm = torch.randperm(K, generator=torch.Generator().manual_seed(seed))
    close("templates permuted", target(e[:, perm]), W, atol=tol)
    close("template embeddings rescaled", target(e * torch.exp(randn(seed + 2, C_, K, 1))), W, atol=tol)
    close("normalise(mean(normalise))", W, C.normalize(C.normalize(e).mean(1)).T, atol=tol)


@checks("clip.logit_scale_clamp", operation="clip.clamp_logit_scale", dtypes=("float64", "float32"))
@given(values=st.lists(st.one_of(st.floats(-50, 50), st.floats(0, math.log(100.0))), min_size=1, max_size=8))
def test_logit_scale_clamp(target, values):
    t = target.tensor(torch.tensor(values, dtype=F64))
    out = target(t).double()
    s = torch.exp(out)
    # the clamp's bound ln 100 is itself rounded to the dtype (by at most eps ln 100 / 2), which exp makes relative
    upper = 100 * math.exp(budget.rounding_atol(target.torch_dtype, math.log(100.0)))
    if bool((s < 1).any()) or bool((s > upper).any()):
        raise AssertionError(f"exp(clamped logit_scale) leaves [1, 100]: {s.tolist()}")
    inside = (t.double() >= 0) & (t.double() <= float(torch.tensor(math.log(100.0)).to(t.dtype)))
    close("values already in [0, ln 100]", out[inside], t.double()[inside], atol=0)


# --- contracts --------------------------------------------------------------------------------------------

def _pair(N=4, D=3, M=None):
    return randn(1, N, D), randn(2, M or N, D)


BAD_LOSS_INPUT = {  # case -> (arguments in float64, the argument the error must name)
    "text batch of a different size": (lambda: (*_pair(M=5), 1.0), "text_features"),
    "image features of rank 3": (lambda: (randn(1, 2, 4, 3), randn(2, 2, 4, 3), 1.0), "image_features"),
    "integer features": (lambda: (torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long), 1.0),
                         "image_features"),
    "NaN logit_scale": (lambda: (*_pair(), float("nan")), "logit_scale"),
    "logit_scale of two elements": (lambda: (*_pair(), torch.ones(2, dtype=F64)), "logit_scale"),
}


@checks("clip.contract", operation=LOSS, dtypes=("float64",))
@pytest.mark.parametrize("case", list(BAD_LOSS_INPUT))
def test_loss_rejects_bad_input(target, case):
    make, argument = BAD_LOSS_INPUT[case]
    args = make()
    expect_rejection(target, lambda fn: fn(*args), argument, case)


@checks("clip.contract", operation=LOCAL, dtypes=("float64",))
@pytest.mark.parametrize("case", ["world size not dividing N", "rank out of range"])
def test_local_loss_rejects_bad_input(target, case):
    I, T = _pair(N=6)
    kwargs = {"rank": 0, "world_size": 4} if case.startswith("world") else {"rank": 3, "world_size": 3}
    expect_rejection(target, lambda fn: fn(I, T, 1.0, **kwargs), "world_size" if "world" in case else "rank", case)


@checks("clip.contract", operation=SHARDED, dtypes=("float64",))
def test_sharded_rejects_bad_world_size(target):
    I, T = _pair(N=6)
    expect_rejection(target, lambda fn: fn(I, T, 1.0, world_size=4), "world_size", "world size not dividing N")

