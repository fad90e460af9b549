"""Property tests of the Kimi-VL document (specs/kimi_vl.py, specs/moe_routing.py), one or more per claim.

Routing is discrete: tests compare selections as sets (any order is allowed) after rejecting draws whose float64
selection has a near tie that the router's rounding could break (strategies_kimi_vl.decision_rounding). Continuous
outputs use the error budget against the float64 spec (k x the naive same-precision baseline's error + floor);
conservation laws and isolation are exact.
"""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import assume, given, settings

from eqspec.contracts import ConformanceError
from specs import kimi_vl as kv
from specs import moe_routing as mr

from . import recording
from .harness import checks, close, equal, expect_rejection, within_budget
from .strategies import randn
from .strategies_kimi_vl import (
    MoECase,
    capabilities,
    decision_rounding,
    encoder_params,
    grids,
    group_preserving_permutation,
    moe_cases,
    moe_decision_rounding,
    moe_margin,
    params_to,
    route_cases,
    selection_margin,
    well_separated,
)

D_ = "kimi_vl"
ROUTE, MOE, DISPATCH, COMBINE = (f"{D_}.{n}" for n in ("route", "moe", "dispatch", "combine"))
LOSS, UPDATE, ROPE, POS = (f"{D_}.{n}" for n in ("balance_loss", "bias_update", "rope_2d", "pos_emb"))
ENCODE, MERGE, PROJ = (f"{D_}.{n}" for n in ("moonvit_encode", "patch_merge", "projector"))
F64 = torch.float64


def _require(target, *caps: str) -> None:
    missing = [c for c in caps if c not in capabilities(target)]
    if missing:
        pytest.skip(f"{target.name} does not provide {', '.join(missing)} ({target.impl.notes})")


def canonical(indices: torch.Tensor, weights: torch.Tensor):
    """Each token's (expert, weight) pairs sorted by expert: selections compare as sets."""
    order = indices.argsort(-1)
    return indices.gather(1, order).cpu(), weights.gather(1, order).detach().cpu()


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def _route_inputs(target, case):
    logits = target.tensor(case.logits())
    bias = case.bias().to(device=target.device, dtype=torch.float32)  # a float32 buffer, as in the models
    return logits, bias


def _rounding(target, case, bias, shift: float = 0.0) -> float:
    """decision_rounding of this target's router on this case, its bias moved by up to ``shift``: a moved bias is
    rounded once more in its own dtype (float32), whatever the router's precision."""
    size = float(bias.abs().max()) + abs(shift)
    moved = torch.finfo(bias.dtype).eps / 2 * size if shift else 0.0
    return decision_rounding(target.torch_dtype, case.config, case.E, size, input_error=moved)


def _reordered_rtol(K: int, dtype: torch.dtype, softmax_E: int = 0) -> float:
    """Weights from the same scores, normalised by a K-term sum added perhaps in another order ((K - 1) roundings
    each side), then divided and scaled (one rounding each); softmax scores re-normalised over E experts in another
    order add E - 1 roundings of their sum and one of the division. Each side is within that many u of the exact
    weights: their difference within that many eps."""
    return (K + 1 + softmax_E) * _eps(dtype)


def _normalised_sum_rtol(K: int, dtype: torch.dtype) -> float:
    """sum_j w_j of K weights normalised by their own sum: (K - 1) roundings of the sum, one of each division and one
    of each scaling (or of the cast to the weights' dtype): K + 2 units of roundoff."""
    return (K + 2) * _eps(dtype) / 2


# --- the router ------------------------------------------------------------------------------------------

@checks(f"{D_}.route_conservation", operation=ROUTE)
@given(data=st.data())
def test_route_conservation(target, data):
    case = data.draw(route_cases(target), label="case")
    logits, bias = _route_inputs(target, case)
    cfg = case.config
    indices, weights = target(logits, bias, cfg)
    indices, weights = indices.cpu(), weights.detach().cpu()
    T, K, E = case.T, cfg.top_k, case.E
    if not bool(((indices >= 0) & (indices < E)).all()):
        raise ConformanceError(f"indices outside [0, {E}): {indices.tolist()}")
    distinct = torch.tensor([len(set(row)) for row in indices.tolist()])
    if not bool((distinct == K).all()):
        raise ConformanceError(f"a token was sent to the same expert twice: {indices.tolist()}")
    counts = torch.bincount(indices.reshape(-1), minlength=E)
    if int(counts.sum()) != T * K:
        raise ConformanceError(f"per-expert counts sum to {int(counts.sum())}, not T x K = {T * K}")
    if cfg.n_group > 1:  # the kept groups, from the float64 group scores (draws near a group tie are rejected)
        assume(well_separated(selection_margin(logits, bias, cfg), _rounding(target, case, bias)))
        c = mr.affinity(logits.to(F64).cpu(), cfg.scoring) + bias.to(F64).cpu()
        kept = mr.group_scores(c, cfg.n_group).topk(cfg.topk_group, -1).indices
        group = indices // (E // cfg.n_group)
        inside = (group[:, :, None] == kept[:, None, :]).any(-1)
        if not bool(inside.all()):
            raise ConformanceError(f"selected experts outside the kept groups {kept.tolist()}: {indices.tolist()}")
    if bool((weights < 0).any()):
        raise ConformanceError(f"negative gate weights: {weights.tolist()}")
    if cfg.norm_topk_prob:
        close("sum of weights", weights.sum(-1), torch.full((T,), cfg.routed_scaling_factor, dtype=F64),
              atol=0, rtol=_normalised_sum_rtol(K, weights.dtype))


def _check_route_against_spec(target, logits, bias, cfg, indices, weights, name="weights"):
    i_ref, w_ref = canonical(*kv.route(logits.to(F64), bias, cfg))
    i_out, w_out = canonical(indices, weights)
    equal("selected experts", i_out, i_ref)
    i_base, w_base = canonical(*target.baseline(logits, bias, cfg))
    equal("baseline's selected experts", i_base, i_ref)
    within_budget(name, w_out, w_ref, w_base, dtype=weights.dtype)


@checks(f"{D_}.route_spec", operation=ROUTE)
@given(data=st.data())
def test_route_spec(target, data):
    case = data.draw(route_cases(target), label="case")
    logits, bias = _route_inputs(target, case)
    assume(well_separated(selection_margin(logits, bias, case.config), _rounding(target, case, bias)))
    indices, weights = target(logits, bias, case.config)
    _check_route_against_spec(target, logits, bias, case.config, indices, weights)


@checks(f"{D_}.route_bias_selects_only", operation=ROUTE)
@given(data=st.data())
def test_route_bias_selects_only(target, data):
    _require(target, "bias")
    case = data.draw(route_cases(target, bias_scales=(0.1, 1.0)), label="case")
    logits, bias = _route_inputs(target, case)
    margin = selection_margin(logits, bias, case.config)
    # A perturbation of the bias too small to change any selection (|delta| <= margin / 8 per expert: a group's
    # top-2 sum moves by at most margin / 4, a gap between two by at most margin / 2) must change no weight at all:
    # the weights are the unbiased scores. The other half of the margin must cover the rounding.
    reach = margin / 8
    assume(well_separated(margin / 2, _rounding(target, case, bias, shift=reach)))
    delta = randn(case.seed + 7, case.E) * (reach / 2)
    nudged = bias + delta.clamp(-reach, reach).to(device=bias.device, dtype=bias.dtype)
    i1, w1 = canonical(*target(logits, bias, case.config))
    i2, w2 = canonical(*target(logits, nudged, case.config))
    equal("selection under a nudged bias", i2, i1)
    # the same unbiased scores, summed for normalisation perhaps in another order
    close("weights under a nudged bias", w2, w1, atol=0, rtol=_reordered_rtol(case.config.top_k, w1.dtype))
    _check_route_against_spec(target, logits, bias, case.config, *target(logits, bias, case.config))


@checks(f"{D_}.route_bias_shift", operation=ROUTE)
@given(data=st.data())
def test_route_bias_shift(target, data):
    _require(target, "bias")
    case = data.draw(route_cases(target, groups=True, bias_scales=(0.1, 1.0)), label="case")
    shift = data.draw(st.sampled_from([-2.0, -1.25, -0.5, 0.75, 3.0]), label="shift")
    logits, bias = _route_inputs(target, case)
    assume(well_separated(selection_margin(logits, bias, case.config), _rounding(target, case, bias, shift)))
    i1, w1 = canonical(*target(logits, bias, case.config))
    i2, w2 = canonical(*target(logits, bias + shift, case.config))
    equal("selection after shifting every bias", i2, i1)
    # the same unbiased scores; the shift may reorder selected experts whose scores are within its rounding, and
    # with them the normalising sum
    close("weights after shifting every bias", w2, w1, atol=0, rtol=_reordered_rtol(case.config.top_k, w1.dtype))


@checks(f"{D_}.route_relabel", operation=ROUTE)
@given(data=st.data())
def test_route_relabel(target, data):
    case = data.draw(route_cases(target, bias_scales=(1.0,)), label="case")
    logits, bias = _route_inputs(target, case)
    assume(well_separated(selection_margin(logits, bias, case.config), _rounding(target, case, bias)))
    perm = group_preserving_permutation(case.E, case.config.n_group, case.seed + 3)
    i1, w1 = canonical(*target(logits, bias, case.config))
    i2, w2 = target(logits[:, perm.to(logits.device)], bias[perm.to(bias.device)], case.config)
    i2, w2 = canonical(perm[i2.cpu()], w2.cpu())  # back to the original labels (perm is on the host)
    equal("selection after relabelling", i2, i1)
    # the normalising sum adds the same K terms in another order, and a softmax sums its E exponentials in another
    # order (seen: float32 weights 2.02 eps apart at K = 1 without normalisation, where 2 K eps allowed 2)
    softmax_E = case.E if case.config.scoring == "softmax" else 0
    close("weights after relabelling", w2, w1, atol=0, rtol=_reordered_rtol(case.config.top_k, w1.dtype, softmax_E))


@checks(f"{D_}.route_known_answers", operation=ROUTE, dtypes=("float64", "float32"))
def test_route_known_answers(target):
    _require(target, "sigmoid", "bias", "groups", "scaling")
    logits = target.tensor(torch.tensor([[2, -1, .5, 0, 1, -2, .3, -.5]], dtype=F64))
    b = torch.tensor([0, .3, 0, .1, -.2, .5, 0, 0])
    cases = [  # (bias, config, experts, weights): catalogue/kimi_vl.md, known answers (6 decimals)
        (b, mr.RouterConfig(top_k=2, routed_scaling_factor=2.446), [0, 2], [1.433175, 1.012825]),
        (torch.where(torch.arange(8) == 5, 0.6, b), mr.RouterConfig(top_k=2), [0, 5], [.880797, .119203]),
        (torch.zeros(8), mr.RouterConfig(top_k=3, n_group=4, topk_group=2), [0, 2, 3], [.439683, .310724, .249594]),
        (torch.where(torch.arange(8) == 6, -0.2, -1.0), mr.RouterConfig(top_k=3, n_group=4, topk_group=2),
         [6, 0, 7], [.313427, .480580, .205993]),
    ]
    for bias, cfg, experts, weights in cases:
        indices, w = target(logits, bias.to(device=target.device, dtype=torch.float32), cfg)
        got = dict(zip(indices[0].tolist(), w[0].tolist()))
        if sorted(got) != sorted(experts):
            raise ConformanceError(f"{cfg}: experts {sorted(got)}, the catalogue says {sorted(experts)}")
        # the catalogue prints 6 decimals (half a unit: 5e-7); the weights' own rounding: the scores' 3 and the
        # normalisation's K + 2, of weights <= routed_scaling_factor
        atol = 0.5e-6 + (3 + cfg.top_k + 2) * _eps(w.dtype) / 2 * cfg.routed_scaling_factor
        close(f"weights ({cfg})", torch.tensor([got[e] for e in experts], dtype=F64),
              torch.tensor(weights, dtype=F64), atol=atol)
    # Moonlight's preset: 64 experts, 6 per token, sigmoid, weights summing to 2.446
    assert (mr.MOONLIGHT.top_k, mr.MOONLIGHT.scoring, mr.MOONLIGHT.routed_scaling_factor) == (6, "sigmoid", 2.446)
    assert mr.MOONLIGHT_SHAPE["n_routed_experts"] == 64 and mr.MOONLIGHT_SHAPE["n_shared_experts"] == 2
    big = target.tensor(randn(6001, 5, 64))
    indices, w = target(big, torch.zeros(64, device=target.device), mr.MOONLIGHT)
    close("Moonlight weights' sum", w.detach().sum(-1), torch.full((5,), 2.446, dtype=F64), atol=0,
          rtol=_normalised_sum_rtol(mr.MOONLIGHT.top_k, w.dtype))


# --- the MoE layer -----------------------------------------------------------------------------------

def _moe_inputs(target, case: MoECase, *, requires_grad=False):
    x, w_router, bias, w_gate, w_up, w_down, shared = case.tensors(target.torch_dtype, target.device)
    assume(well_separated(moe_margin(case, x, w_router, bias), moe_decision_rounding(case, x, w_router, bias)))
    if requires_grad:
        bias.requires_grad_(True)
    return x, w_router, bias, w_gate, w_up, w_down, shared


def _moe_check(target, name, y, inputs, config, reference_inputs=None):
    ref_in = reference_inputs or inputs
    ref = kv.moe(*(t.to(F64) if isinstance(t, torch.Tensor) else t for t in ref_in[:6]), config,
                 None if ref_in[6] is None else tuple(t.to(F64) for t in ref_in[6]))
    base = target.baseline(*inputs[:6], config, inputs[6])
    mag, n = mr.moe_magnitudes(*ref_in[:6], config, ref_in[6])
    return within_budget(name, y, ref, base, magnitude=mag, terms=n)


@checks(f"{D_}.moe_layer", operation=MOE)
@settings(max_examples=12)
@given(data=st.data())
def test_moe_layer(target, data):
    case = data.draw(moe_cases(target), label="case")
    inputs = _moe_inputs(target, case)
    y = target(*inputs[:6], case.config, inputs[6])
    _moe_check(target, "y", y, inputs, case.config)


@checks(f"{D_}.moe_identical_experts", operation=MOE)
@settings(max_examples=10)
@given(data=st.data())
def test_moe_identical_experts(target, data):
    case = data.draw(moe_cases(target), label="case")
    assume(case.config.norm_topk_prob)
    x, w_router, bias, w_gate, w_up, w_down, shared = _moe_inputs(target, case)
    w_gate, w_up, w_down = (w[:1].expand_as(w).contiguous() for w in (w_gate, w_up, w_down))
    y = target(x, w_router, bias, w_gate, w_up, w_down, case.config, shared)
    X = x.to(F64)
    f = mr.swiglu(X, w_gate[0].to(F64), w_up[0].to(F64), w_down[0].to(F64))
    expected = case.config.routed_scaling_factor * f
    if shared is not None:
        expected = expected + mr.swiglu(X, *(t.to(F64) for t in shared))
    base = target.baseline(x, w_router, bias, w_gate, w_up, w_down, case.config, shared)
    mag, n = mr.moe_magnitudes(x, w_router, bias, w_gate, w_up, w_down, case.config, shared)
    within_budget("y with identical experts", y, expected, base, magnitude=mag, terms=n)


@checks(f"{D_}.moe_relabel", operation=MOE)
@settings(max_examples=10)
@given(data=st.data())
def test_moe_relabel(target, data):
    case = data.draw(moe_cases(target, bias_scales=(0.5,)), label="case")
    x, w_router, bias, w_gate, w_up, w_down, shared = inputs = _moe_inputs(target, case)
    perm = group_preserving_permutation(case.E, case.config.n_group, case.seed + 3).to(target.device)
    relabelled = (x, w_router[perm], bias[perm], w_gate[perm], w_up[perm], w_down[perm], shared)
    y = target(*relabelled[:6], case.config, shared)
    _moe_check(target, "y after relabelling", y, relabelled, case.config, reference_inputs=inputs)


@checks(f"{D_}.moe_bias_no_gradient", operation=MOE, dtypes=("float64", "float32"))
@settings(max_examples=8)
@given(data=st.data())
def test_moe_bias_no_gradient(target, data):
    _require(target, "grad", "bias")
    case = data.draw(moe_cases(target, bias_scales=(0.5,)), label="case")
    x, w_router, bias, w_gate, w_up, w_down, shared = _moe_inputs(target, case, requires_grad=True)
    w_router = w_router.clone().requires_grad_(True)
    y = target(x, w_router, bias, w_gate, w_up, w_down, case.config, shared)
    g_bias, g_router = torch.autograd.grad(y.sum(), (bias, w_router), allow_unused=True)
    if g_bias is not None and bool((g_bias != 0).any()):
        raise ConformanceError(f"the correction bias received a gradient {g_bias.tolist()}: it must only select")
    if g_router is None or not bool(torch.isfinite(g_router).all()):
        raise ConformanceError("the router weights received no (finite) gradient: the check would be empty")


# --- dispatch and combine ------------------------------------------------------------------------------

def _random_routing(seed: int, T: int, E: int, K: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(E, generator=gen)[:K] for _ in range(T)]) if T else torch.zeros(0, K).long()


@checks(f"{D_}.dispatch_bijection", operation=DISPATCH)
@given(T=st.integers(1, 20), E=st.integers(1, 9), K=st.integers(1, 4), D=st.sampled_from([1, 3, 8]),
       seed=st.integers(0, 2**20))
def test_dispatch_bijection(target, T, E, K, D, seed):
    K = min(K, E)
    indices = _random_routing(seed, T, E, K).to(target.device)
    x = target.tensor(randn(seed, T, D))
    x_sorted, counts, positions = target(x, indices, E)
    positions, counts, idx = positions.cpu(), counts.cpu(), indices.cpu()
    equal("positions, sorted", positions.reshape(-1).sort().values, torch.arange(T * K))
    equal("counts", counts, torch.bincount(idx.reshape(-1), minlength=E))
    start = torch.cumsum(counts, 0) - counts
    inside = (positions >= start[idx]) & (positions < (start + counts)[idx])
    if not bool(inside.all()):
        raise ConformanceError(f"slots outside their expert's buffer: positions {positions.tolist()}, experts "
                               f"{idx.tolist()}, buffers start at {start.tolist()}")
    equal("x_sorted[positions]", x_sorted.cpu()[positions], x.cpu()[:, None, :].expand(T, K, D))
    equal("positions (stable order)", positions, mr.dispatch_positions(idx, E)[0])


@checks(f"{D_}.combine_inverts_dispatch", operation=COMBINE)
@given(T=st.integers(1, 20), E=st.integers(1, 9), K=st.integers(1, 4), D=st.sampled_from([1, 3, 8]),
       seed=st.integers(0, 2**20))
def test_combine_inverts_dispatch(target, T, E, K, D, seed):
    K = min(K, E)
    indices = _random_routing(seed, T, E, K)
    x = target.tensor(randn(seed, T, D))
    weights = randn(seed + 1, T, K).abs().to(device=target.device, dtype=torch.float32)
    x_sorted, _, positions = mr.dispatch(x.cpu(), indices, E)
    x_sorted, positions = x_sorted.to(target.device), positions.to(target.device)
    y = target(x_sorted, positions, weights)  # identity experts: (sum_j w_tj) x_t
    expected = weights.to(F64).sum(-1, keepdim=True).cpu() * x.to(F64).cpu()
    mag = weights.abs().to(F64).sum(-1, keepdim=True).cpu() * x.abs().to(F64).cpu()
    within_budget("combine(dispatch(x))", y, expected, target.baseline(x_sorted, positions, weights),
                  magnitude=mag, terms=K)
    y_sorted = target.tensor(randn(seed + 2, T * K, D))  # and any expert outputs: the float64 weighted sum
    ref = mr.combine(y_sorted.cpu().to(F64), positions.cpu(), weights.cpu())
    mag = mr.combine(y_sorted.cpu().to(F64).abs(), positions.cpu(), weights.cpu().abs())
    within_budget("combine", target(y_sorted, positions, weights), ref,
                  target.baseline(y_sorted, positions, weights), magnitude=mag, terms=K)


# --- balance losses and the bias update ---------------------------------------------------------------------

FORMS = {"deepseek_v3": 1, "switch": 1, "mixtral": None}  # value at balance / alpha (None: top_k)


def _has_form(target, form: str) -> bool:
    """The spec and its mutants have every form; a library adapter only the forms it declares it provides."""
    return target.impl.origin in ("spec", "mutant") or form in target.impl.provides


@checks(f"{D_}.balance_loss_uniform", operation=LOSS)
@pytest.mark.parametrize("form", list(FORMS))
@given(E=st.sampled_from([2, 4, 8, 64]), K=st.integers(1, 6), m=st.integers(1, 3),
       alpha=st.sampled_from([1.0, 1e-4, 1e-2, 0.001]), scoring=st.sampled_from(["sigmoid", "softmax"]),
       seed=st.integers(0, 2**20))
def test_balance_loss_uniform(target, form, E, K, m, alpha, scoring, seed):
    if not _has_form(target, form):
        pytest.skip(f"{target.name} does not provide the '{form}' balance loss")
    K = min(K, E)
    T = E * m  # token t picks experts t K + j mod E: every expert gets exactly T K / E slots
    indices = ((torch.arange(T)[:, None] * K + torch.arange(K)) % E).to(target.device)
    logits = randn(seed, T, E)
    # Switch and Mixtral/HF average probabilities (softmax); DeepSeek-V3 normalises any affinities itself
    sigmoid = scoring == "sigmoid" and form == "deepseek_v3"
    scores = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, -1)
    random_indices = scores.topk(K, -1).indices.to(target.device)
    # uniform affinities: sigmoid scores of 0.5 (DeepSeek-V3 normalises s' = s / sum s), probabilities 1 / E
    level = 0.5 if sigmoid else 1.0 / E
    value = target(target.tensor(torch.full((T, E), level, dtype=F64)), indices, form=form, alpha=alpha)
    expected = alpha * (FORMS[form] or K)
    # P averages T scores ((T - 1) roundings, one division), each normalised by an E-term sum (deepseek_v3: E - 1
    # and one division); f is a division and a product; the E products f_i P_i are summed (E - 1) and scaled by
    # alpha (and E): at most T + 2 E + 4 roundings of positive terms, whatever the order
    close(f"{form} loss at balance", value.reshape(1), torch.tensor([expected], dtype=F64), atol=0,
          rtol=(T + 2 * E + 4) * _eps(target.torch_dtype) / 2)
    s = target.tensor(scores)
    ref = mr.balance_loss(s.to(F64).cpu(), random_indices.cpu(), form=form, alpha=alpha)
    got = target(s, random_indices, form=form, alpha=alpha)
    within_budget(f"{form} loss", got.reshape(1), ref.reshape(1),
                  target.baseline(s, random_indices, form=form, alpha=alpha).reshape(1), terms=T * E)


@checks(f"{D_}.bias_update_direction", operation=UPDATE)
@given(E=st.integers(2, 16), seed=st.integers(0, 2**20), gamma=st.sampled_from([0.001, 0.01, 0.5]))
def test_bias_update_direction(target, E, seed, gamma):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 5, (E,), generator=gen)
    counts[0] = int(counts.float().mean().round())  # often exactly at the mean
    bias = target.tensor(randn(seed, E, scale=0.1))
    new = target(bias, counts.to(target.device), gamma).to(F64).cpu()
    load, b = counts.to(F64), bias.to(F64).cpu()
    step = new - b
    mean = load.mean()
    tol = 2 * _eps(target.torch_dtype) * float(b.abs().max() + gamma)  # one rounding of b -+ gamma
    for name, where, value in (("overloaded", load > mean, -gamma), ("underloaded", load < mean, gamma),
                               ("at the mean load", load == mean, 0.0)):
        if bool(where.any()):
            close(f"bias step of {name} experts", step[where], torch.full_like(step[where], value), atol=tol)


# --- MoonViT: rotary embedding, position table, packed encoder ----------------------------------------------

@checks(f"{D_}.rope_norm", operation=ROPE)
@given(T=st.integers(1, 12), H=st.integers(1, 3), d=st.sampled_from([4, 8, 16, 72]), seed=st.integers(0, 2**20))
def test_rope_norm(target, T, H, d, seed):
    x = target.tensor(randn(seed, T, H, d))
    gen = torch.Generator().manual_seed(seed)
    positions = torch.randint(0, 48, (T, 2), generator=gen).to(target.device)
    out = target(x, positions)
    norm = lambda t: t.to(F64).cpu().norm(dim=-1)  # noqa: E731
    # each pair's norm moves by the rotation's roundings (cos, sin, two products and a sum: 5, in x's dtype at worst)
    # and the output's one rounding, each <= u |pair|: the head vector's norm by at most 6 u relative
    close("head-vector norms", norm(out), norm(x), atol=0, rtol=6 * _eps(x.dtype) / 2)
    equal("rotation at (0, 0)", target(x, torch.zeros_like(positions)), x)


@checks(f"{D_}.rope_relative", operation=ROPE, dtypes=("float64", "float32"))
@given(T=st.integers(2, 8), d=st.sampled_from([4, 8, 72]), dr=st.integers(-20, 20), dc=st.integers(-20, 20),
       seed=st.integers(0, 2**20))
def test_rope_relative(target, T, d, dr, dc, seed):
    q, k = target.tensor(randn(seed, T, 1, d)), target.tensor(randn(seed + 1, T, 1, d))
    gen = torch.Generator().manual_seed(seed)
    p = torch.randint(20, 40, (T, 2), generator=gen).to(target.device)
    shifted = p + torch.tensor([dr, dc], device=target.device)

    def scores(pos):
        return (target(q, pos)[:, 0].to(F64) @ target(k, pos)[:, 0].to(F64).T).cpu()

    size = float(q.to(F64).norm(dim=-1).max() * k.to(F64).norm(dim=-1).max())
    # Each pair turns by an angle phi = position x omega (omega_0 = 1) off by its two roundings (omega's and the
    # product's, <= 2 u phi) and comes out with three more (cos, sin, the output's): each rotated pair is within
    # (2 phi_max + 3) u of exact, relative; a score sums |q_p| |k_p| over pairs (<= |q| |k|) with both sides off,
    # and two scores are compared
    phi_max = float(torch.cat([p, shifted]).abs().max())
    tol = 4 * (2 * phi_max + 3) * _eps(target.torch_dtype) / 2
    close("scores after shifting every position", scores(shifted), scores(p), atol=tol * size)


@checks(f"{D_}.rope_layout", operation=ROPE)
@given(T=st.integers(1, 12), H=st.integers(1, 3), d=st.sampled_from([4, 8, 16, 72]), seed=st.integers(0, 2**20))
def test_rope_layout(target, T, H, d, seed):
    probe = torch.tensor([1.0, 0.0] * 4, dtype=F64).reshape(1, 1, 8)  # every adjacent pair = 1 + 0i
    for (r, c), angles in (((1, 2), [2.0, 1.0, 0.02, 0.01]), ((2, 1), [1.0, 2.0, 0.01, 0.02])):
        out = target(target.tensor(probe), torch.tensor([[r, c]], device=target.device)).to(F64).cpu().reshape(4, 2)
        got = torch.atan2(out[:, 1], out[:, 0])
        # angles <= 2 off by two roundings (4 u), cos and sin and the output rounded once each (3 u at most
        # on a unit vector): 8 eps leaves a factor 2
        close(f"pair angles at (row {r}, column {c})", got, torch.tensor(angles, dtype=F64),
              atol=8 * _eps(target.torch_dtype))
    x = target.tensor(randn(seed, T, H, d))
    positions = torch.randint(0, 48, (T, 2), generator=torch.Generator().manual_seed(seed)).to(target.device)
    # each output sums two products x cos, x sin of one pair (rounded in x's dtype); the angles, up to 48 rad, are
    # rounded in float32 or wider (48 u32 each), which in units of x's eps is a factor 48 eps32 / eps (bfloat16:
    # 48 x 2^-16, not 48)
    mag = x.to(F64).abs().reshape(T, H, d // 2, 2).sum(-1, keepdim=True).expand(T, H, d // 2, 2).reshape(T, H, d)
    angle_eps = _eps(F64 if x.dtype == F64 else torch.float32)
    max_angle = float(positions.abs().max())
    within_budget("x rotated", target(x, positions), kv.rope_2d(x.to(F64), positions),
                  target.baseline(x, positions), magnitude=mag * (1 + max_angle * angle_eps / _eps(x.dtype)), terms=4)


@checks(f"{D_}.pos_emb_interpolation", operation=POS)
@given(H0=st.integers(2, 6), W0=st.integers(2, 6), h=st.integers(1, 9), w=st.integers(1, 9),
       D=st.sampled_from([1, 4]), seed=st.integers(0, 2**20))
def test_pos_emb_interpolation(target, H0, W0, h, w, D, seed):
    table = target.tensor(randn(seed, H0, W0, D))
    equal("the table at its own size", target(table, H0, W0), table.reshape(H0 * W0, D))
    out = target(table, h, w)
    ref = kv.pos_emb(table.to(F64), h, w)
    # bicubic weights sum to 1 with |weights| summing to at most 1.32 per axis (Keys a = -0.75): 1.75 x max|table|
    within_budget("interpolated table", out, ref, target.baseline(table, h, w),
                  magnitude=1.75 * float(table.abs().max()), terms=16)


def _pack(seed: int, grid, C: int = 3, patch: int = 2):
    """Images of native resolution (h x w patches of 2 x 2 pixels, 3 channels: P = 12), patchified in raster order."""
    return [kv.patchify(randn(seed + 100 * i, C, h * patch, w * patch), patch)[0] for i, (h, w) in enumerate(grid)]


@checks(f"{D_}.packing_equals_separate", operation=ENCODE)
@settings(max_examples=8)
@given(grid=grids(images=(2, 3)), seed=st.integers(0, 2**20))
def test_packing_equals_separate(target, grid, seed):
    params = params_to(encoder_params(seed), target.torch_dtype, target.device)
    images = [target.tensor(x) for x in _pack(seed, grid)]
    packed = target(torch.cat(images), grid, params, heads=2)
    start = 0
    for (h, w), img in zip(grid, images):
        alone_ref = kv.moonvit_encode(img.to(F64), [(h, w)], params_to(params, F64, target.device), heads=2)
        # outputs are LayerNorm'd: the rounding of the residual stream's terms, divided by its standard deviation
        # (a fixed magnitude 2.0 left a floor of 2.4e-7 under float32 errors of 2e-6, 1.1 x a lucky baseline's)
        mag, n = kv.moonvit_magnitudes(img, [(h, w)], params, heads=2)
        within_budget(f"image {h}x{w} packed vs alone", packed[start:start + h * w], alone_ref,
                      target.baseline(img, [(h, w)], params, heads=2), magnitude=mag, terms=n)
        start += h * w


@checks(f"{D_}.packing_isolation", operation=ENCODE)
@settings(max_examples=8)
@given(grid=grids(images=(2, 3)), seed=st.integers(0, 2**20), which=st.integers(0, 2))
def test_packing_isolation(target, grid, seed, which):
    which = which % len(grid)
    params = params_to(encoder_params(seed), target.torch_dtype, target.device)
    images = [target.tensor(x) for x in _pack(seed, grid)]
    before = target(torch.cat(images), grid, params, heads=2)
    images[which] = target.tensor(randn(seed + 999, *images[which].shape, scale=3.0))
    after = target(torch.cat(images), grid, params, heads=2)
    bounds = [0, *torch.cumsum(torch.tensor([h * w for h, w in grid]), 0).tolist()]
    for i in range(len(grid)):
        if i != which:
            equal(f"image {i}'s tokens after changing image {which}", after[bounds[i]:bounds[i + 1]],
                  before[bounds[i]:bounds[i + 1]])


# --- the merger and the projector ------------------------------------------------------------------------------

@checks(f"{D_}.merger_bijection", operation=MERGE)
@given(grid=grids(even=True), D=st.sampled_from([1, 3]), seed=st.integers(0, 2**20))
def test_merger_bijection(target, grid, D, seed):
    grid = [(2, 4), *grid]  # the catalogue's known answer first
    T = sum(h * w for h, w in grid)
    x = torch.cat([torch.arange(T, dtype=F64)[:, None], randn(seed, T, D)], 1)  # column 0 names the token
    x = target.tensor(x)
    merged = target(x, grid)
    if tuple(merged.shape) != (T // 4, 4, D + 1):
        raise ConformanceError(f"{T // 4} merged tokens of 4 expected, got shape {tuple(merged.shape)}")
    gathered = merged[..., 0].to(F64).cpu().round().long()
    equal("the known answer (h = 2, w = 4)", gathered[:2], torch.tensor([[0, 1, 4, 5], [2, 3, 6, 7]]))
    start, out = 0, 0
    for h, w in grid:
        got = gathered[out:out + h * w // 4]
        equal(f"image {h}x{w}: every token once", got.reshape(-1).sort().values, torch.arange(start, start + h * w))
        equal(f"image {h}x{w}: windows", got, start + kv.merge_index(h, w))
        start, out = start + h * w, out + h * w // 4
    equal("merged rows", merged.cpu(), x.cpu()[gathered])


@checks(f"{D_}.projector_spec", operation=PROJ)
@settings(max_examples=10)
@given(grid=grids(even=True, images=(1, 2)), D=st.sampled_from([2, 4, 8]), D_text=st.sampled_from([3, 8]),
       seed=st.integers(0, 2**20))
def test_projector(target, grid, D, D_text, seed):
    T = sum(h * w for h, w in grid)
    x = target.tensor(randn(seed, T, D, scale=3.0) + 1.0)
    ln_w, ln_b = target.tensor(1 + randn(seed + 1, D, scale=0.2)), target.tensor(randn(seed + 2, D, scale=0.2))
    w1 = target.tensor(randn(seed + 3, 4 * D, 4 * D, scale=2 / math.sqrt(4 * D)))
    b1, b2 = target.tensor(randn(seed + 4, 4 * D)), target.tensor(randn(seed + 5, D_text))
    w2 = target.tensor(randn(seed + 6, D_text, 4 * D, scale=1 / math.sqrt(4 * D)))
    args = (x, grid, ln_w, ln_b, w1, b1, w2, b2)
    out = target(*args)
    if out.shape[0] != T // 4:
        raise ConformanceError(f"{T // 4} image tokens expected (sum h w / 4), got {out.shape[0]}")
    ref = kv.projector(*(a.to(F64) if isinstance(a, torch.Tensor) else a for a in args))
    # terms: |w2| (|w1| |LN| + |b1|) + |b2|, LN outputs bounded by |ln_w| sqrt(D) + |ln_b|
    ln_size = float(ln_w.abs().max()) * math.sqrt(D) + float(ln_b.abs().max())
    hidden = ln_size * w1.to(F64).abs().sum(1).max() + b1.to(F64).abs().max()
    mag = float(hidden * w2.to(F64).abs().sum(1).max() + b2.to(F64).abs().max())
    within_budget("tokens", out, ref, target.baseline(*args), magnitude=mag, terms=8 * D)


# --- contracts ------------------------------------------------------------------------------------------------



ROUTE_BAD = {  # case -> (logits shape, bias length, config, argument named)
    "top_k beyond the kept groups": ((3, 8), 8, mr.RouterConfig(top_k=5, n_group=4, topk_group=2), "config.top_k"),
    "n_group not dividing E": ((3, 8), 8, mr.RouterConfig(top_k=2, n_group=3, topk_group=1), "config.n_group"),
    "bias of the wrong length": ((3, 8), 7, mr.RouterConfig(top_k=2), "bias"),
    "unknown scoring": ((3, 8), 8, mr.RouterConfig(top_k=2, scoring="relu"), "config.scoring"),
}



def _reject(target, call, argument: str, case: str) -> None:
    # the router's and layer's messages name the argument after a short prefix (e.g. "config: n_group ...")
    expect_rejection(target, call, argument, case)

@checks(f"{D_}.kimi_vl_contract", operation=ROUTE)
@pytest.mark.parametrize("case", list(ROUTE_BAD))
def test_route_rejects_bad_input(target, case):
    shape, n_bias, cfg, argument = ROUTE_BAD[case]
    logits, bias = target.tensor(randn(1, *shape)), torch.zeros(n_bias, device=target.device)
    _reject(target, lambda fn: fn(logits, bias, cfg), argument, case)


@checks(f"{D_}.kimi_vl_contract", operation=MOE)
@pytest.mark.parametrize("case", ["w_down of the wrong shape", "w_router of the wrong width"])
def test_moe_rejects_bad_input(target, case):
    c = MoECase(T=3, D=4, F=4, E=4, config=mr.RouterConfig(top_k=2), n_shared=0, bias_scale=0.0, seed=1)
    x, w_router, bias, w_gate, w_up, w_down, _ = c.tensors(target.torch_dtype, target.device)
    if case.startswith("w_down"):
        w_down, argument = w_down[:, :, :3], "w_down"
    else:
        w_router, argument = w_router[:, :3], "w_router"
    _reject(target, lambda fn: fn(x, w_router, bias, w_gate, w_up, w_down, c.config), argument, case)


@checks(f"{D_}.kimi_vl_contract", operation=DISPATCH)
def test_dispatch_rejects_indices_out_of_range(target):
    x, indices = target.tensor(randn(1, 3, 2)), torch.tensor([[0, 4], [1, 2], [3, 0]], device=target.device)
    _reject(target, lambda fn: fn(x, indices, 4), "indices", "indices out of range")


@checks(f"{D_}.kimi_vl_contract", operation=ROPE)
def test_rope_rejects_head_dim_not_divisible_by_4(target):
    x, pos = target.tensor(randn(1, 3, 1, 6)), torch.zeros(3, 2, dtype=torch.long, device=target.device)
    _reject(target, lambda fn: fn(x, pos), "x.shape[-1]", "head dim 6")


@checks(f"{D_}.kimi_vl_contract", operation=MERGE)
@pytest.mark.parametrize("grid", [[(3, 2)], [(2, 2), (2, 5)]], ids=["odd h", "odd w in the second image"])
def test_merge_rejects_odd_grids(target, grid):
    x = target.tensor(randn(1, sum(h * w for h, w in grid), 2))
    _reject(target, lambda fn: fn(x, grid), "grid_hw", f"grid {grid}")


# --- a picture for the report: the router's load before and after aux-loss-free balancing steps -----------------

@checks(f"{D_}.bias_update_direction", operation=UPDATE)
def test_bias_update_balances_load(target):
    """Repeated steps on a skewed router even out the load (the report plots the max/mean load per step)."""
    T, E, cfg = 256, 8, mr.RouterConfig(top_k=2)
    logits = randn(6002, T, E) + torch.linspace(-1.5, 1.5, E)  # expert 7 is favoured by every token
    bias, points = torch.zeros(E, dtype=F64), []
    for step in range(60):
        indices, _ = kv.route(logits, bias, cfg)
        counts = torch.bincount(indices.reshape(-1), minlength=E)
        points.append((step, float(counts.max()) / (T * cfg.top_k / E)))
        bias = target(bias, counts, 0.02).cpu()  # the next route runs on the host
    recording.series("bias_update_load", target.name, "balancing step", "max load / mean load", points)
    if not points[-1][1] < points[0][1]:
        raise ConformanceError(f"60 balancing steps did not reduce the imbalance: {points[0][1]:.3f} -> "
                               f"{points[-1][1]:.3f}")
