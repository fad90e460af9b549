"""Property tests of the RL-basics document (specs/rl_basics.py): the Bellman equation, its closed and iterative
solutions, the optimality equation and the algorithms of Ch. 4, and the book's tables.

Each test runs against every implementation of the operation it names (the spec, numpy, torch sparse, a user's
--impl). Float64 identities are checked at tolerances derived from eps and the operation count (specs.mdp
.solve_tolerance); known answers at half a unit of the book's last printed digit.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from eqspec.budget import distinct_digits
from specs import rl_basics as rb
from specs.mdp import EPS, F64, P_pi, solve_tolerance

from . import recording
from .harness import checks, close, equal, expect_rejection, host
from .strategies_rl import FIG_3_4, GRID_5x5, check_table, printed_tolerance, random_mdps

DOC = "rl_basics"


def _scale(*xs: torch.Tensor) -> float:
    return max(1.0, *(float(x.abs().max()) for x in xs))


def _q_scale(R: torch.Tensor, gamma: float, *vs: torch.Tensor) -> float:
    """|q| = |R + gamma P v| <= max|R| + gamma max|v|: the size of the terms a sweep adds."""
    return float(R.abs().max()) + gamma * _scale(*vs)


def _sweep_rounding(S: int, A: int, scale: float) -> float:
    """One Bellman sweep r + gamma P v (then a max over actions or a policy's mix) rounds each entry ~(S + A + 2)
    times, at most eps * scale each."""
    return (S + A + 2) * EPS * scale


def _accumulated(per_sweep: float, sweeps: int, gamma: float) -> float:
    """Errors made at each of K sweeps of a gamma-contraction add up to at most sum_k gamma^k <= min(K + 1,
    1 / (1 - gamma)) of one sweep's: old errors shrink by gamma at every sweep."""
    return per_sweep * min(sweeps + 1, 1 / (1 - gamma))


def _sweep_tolerance(S: int, A: int, sweeps: int, scale: float, gamma: float) -> float:
    """How far K sweeps rounded in float64 can drift from the exact iterates."""
    return _accumulated(_sweep_rounding(S, A, scale), sweeps, gamma)


def _tie_tolerance(q_scale: float) -> float:
    """The greedy policy counts as tied every action within this of the maximum (specs.rl_basics.greedy_policy)."""
    return rb.TIE_RTOL * max(1.0, q_scale)


def _greedy_slack(S: int, A: int, gamma: float, e_v: float, q_scale: float) -> float:
    """How much worse (in exact q of the exact values) a greedy action may be than the best one: the tie tolerance,
    plus q's rounding and gamma x the error e_v of the values q was computed from, on both sides of the comparison.
    A policy greedy in that sense is at most this / (1 - gamma) worse than the exact greedy one."""
    return _tie_tolerance(q_scale) + 2 * (_sweep_rounding(S, A, q_scale) + gamma * e_v)


def _reference_error(P, R, v: torch.Tensor, gamma: float, pi: torch.Tensor | None = None) -> float:
    """A posteriori bound on the error of a float64 reference value computed by the spec (v_pi, or v* when pi is
    None): T is a gamma-contraction, so |v - v_true| <= |T v - v| / (1 - gamma), with T v's own rounding added.
    Only for the spec's references: a target's output is never judged by its own residual."""
    S, A = R.shape
    Tv = rb.bellman_optimality_operator(P, R, v, gamma) if pi is None else rb.bellman_matrix(P, R, pi, v, gamma)
    return (float((Tv - v).abs().max()) + _sweep_rounding(S, A, _q_scale(R, gamma, v))) / (1 - gamma)


VI_TRUNCATION = 1e-12  # reference values by value iteration run until gamma^K <= this (relative to |v*|)


def _converged_vi(P, R, gamma: float) -> torch.Tensor:
    """v* by the spec's value iteration from 0, run until gamma^K <= VI_TRUNCATION."""
    K = max(1, math.ceil(math.log(VI_TRUNCATION) / math.log(gamma))) if gamma > 0 else 1
    return rb.value_iteration(P, R, gamma, iterations=K)[0][-1]


def _first_differing(a: torch.Tensor, b: torch.Tensor) -> str:
    """Where ``a > b`` fails first, with enough digits to see the difference."""
    i = int((a - b).argmax())
    x, y = distinct_digits(float(a.reshape(-1)[i]), float(b.reshape(-1)[i]))
    return f"at {i}: {x} > {y}"


# --- the Bellman equation ---------------------------------------------------------------------------

@checks("rl_basics.bellman_equation", operation=f"{DOC}.state_values")
@given(mdp=random_mdps())
def test_bellman_equation(target, mdp):
    P, _, R = mdp.tensors()
    pi = mdp.policy()
    v = host(target(P, R, pi, mdp.gamma))
    # v's forward error e (at most solve_tolerance) comes back as (I - gamma P_pi) e in the residual, at most
    # (1 + gamma) e, plus the rounding of the residual's own sums
    tol = (1 + mdp.gamma) * solve_tolerance(mdp.S, mdp.gamma, _scale(v)) + \
        _sweep_rounding(mdp.S, mdp.A, _q_scale(R, mdp.gamma, v))
    close("matrix form r_pi + gamma P_pi v", rb.bellman_matrix(P, R, pi, v, mdp.gamma), v, atol=tol)
    if mdp.S * mdp.A <= 60:  # the elementwise form loops in Python: small MDPs only
        close("elementwise form", rb.bellman_elementwise(P, R, pi, v, mdp.gamma), v, atol=tol)
    # Column j of (I - gamma P_pi)^{-1}: the values of the reward e_j (1 in state j whatever the action).
    for j in {0, mdp.S - 1}:
        e_j = torch.zeros(mdp.S, mdp.A, dtype=F64)
        e_j[j] = 1.0
        column = host(target(P, e_j, pi, mdp.gamma))
        identity = torch.zeros(mdp.S, dtype=F64)
        identity[j] = 1.0
        tol_j = solve_tolerance(mdp.S, mdp.gamma, 1 / (1 - mdp.gamma))
        if float((column - identity).min()) < -tol_j:
            raise AssertionError(f"(I - gamma P_pi)^-1 >= I fails in column {j}: {column.tolist()}")


@checks("rl_basics.closed_form_equals_iterative", operation=f"{DOC}.iterative_policy_evaluation")
@given(mdp=random_mdps(), sweeps=st.integers(0, 60))
def test_closed_form_equals_iterative(target, mdp, sweeps):
    P, _, R = mdp.tensors()
    pi = mdp.policy()
    v_pi = rb.state_values(P, R, pi, mdp.gamma)
    v0 = v_pi + torch.randn(mdp.S, generator=mdp.generator(2), dtype=F64) * 3 + 1.0  # a constant part decays at
    v_K = host(target(P, R, pi, mdp.gamma, v0, sweeps))                             # exactly gamma per sweep
    delta0 = v0 - v_pi
    decay = torch.linalg.matrix_power(mdp.gamma * P_pi(P, pi), sweeps)
    error = decay @ delta0
    e_pi = _reference_error(P, R, v_pi, mdp.gamma, pi)
    # v_pi's error enters v_K - v_pi once and gamma^K P_pi^K (v_0 - v_pi) once more, decayed; the target's K sweeps
    # drift by _sweep_tolerance; the reference power is <= 2 log2(K + 1) products of S-term non-negative sums
    reference_rounding = 2 * math.log2(sweeps + 1) * mdp.S * EPS * float((decay.abs() @ delta0.abs()).max())
    tol = (1 + mdp.gamma ** sweeps) * e_pi + \
        _sweep_tolerance(mdp.S, mdp.A, sweeps, _q_scale(R, mdp.gamma, v_pi, v0), mdp.gamma) + reference_rounding
    close("v_K - v_pi = gamma^K P_pi^K (v_0 - v_pi)", v_K - v_pi, error, atol=tol)
    bound = mdp.gamma ** sweeps * float(delta0.abs().max()) + tol
    worst = float((v_K - v_pi).abs().max())
    if worst > bound:
        got, allowed = distinct_digits(worst, bound)
        raise AssertionError(f"|v_K - v_pi| = {got} exceeds gamma^K |v_0 - v_pi| (+ rounding) = {allowed}")


@checks("rl_basics.action_values", operation=f"{DOC}.action_values")
@given(mdp=random_mdps())
def test_action_values(target, mdp):
    P, _, R = mdp.tensors()
    pi = mdp.policy()
    v_pi = rb.state_values(P, R, pi, mdp.gamma)
    q = host(target(P, R, v_pi, mdp.gamma))
    # sum_a pi q - v_pi = r_pi + gamma P_pi v_pi - v_pi, the residual of the reference v_pi: at most (1 + gamma) x
    # its error; plus the rounding of the target's q and of the check's own sums (one sweep each)
    e_pi = _reference_error(P, R, v_pi, mdp.gamma, pi)
    tol = (1 + mdp.gamma) * e_pi + 2 * _sweep_rounding(mdp.S, mdp.A, _q_scale(R, mdp.gamma, v_pi))
    close("v_pi = sum_a pi q_pi", (pi * q).sum(1), v_pi, atol=tol)
    # matrix form q = r~ + gamma P Pi q, with (Pi q)(s') = sum_a' pi(a'|s') q(s', a'): off by gamma P (the residual)
    close("q = r + gamma P Pi q", R + mdp.gamma * torch.einsum("sat,t->sa", P, (pi * q).sum(1)), q, atol=tol)


# --- optimality and the algorithms of Ch. 4 -----------------------------------------------------------

@checks("rl_basics.value_iteration_contraction", operation=f"{DOC}.value_iteration")
@given(mdp=random_mdps(), iterations=st.integers(1, 60))
def test_value_iteration_contraction(target, mdp, iterations):
    P, _, R = mdp.tensors()
    gamma = mdp.gamma
    v_star = rb.optimal_values(P, R, gamma)
    e_star = _reference_error(P, R, v_star, gamma)
    v0 = torch.randn(mdp.S, generator=mdp.generator(3), dtype=F64) * 5
    vs, pi = host(target(P, R, gamma, iterations=iterations, v0=v0))
    q_scale = _q_scale(R, gamma, vs, v_star)
    rho = _sweep_rounding(mdp.S, mdp.A, q_scale)  # one sweep of the target
    err = (vs - v_star).abs().amax(dim=1)
    step = (vs[1:] - vs[:-1]).abs().amax(dim=1)
    # |v_k+1 - v*| <= gamma |v_k - v*| + rho for the exact v*; measured against v*'s reference, whose error e_star
    # enters on both sides
    contraction_tol = (1 + gamma) * e_star + rho
    # |v_k+1 - v*| <= (gamma |v_k+1 - v_k| + rho) / (1 - gamma), the step itself rounded once in float64
    stopping_tol = e_star + (rho + gamma * EPS * _scale(vs)) / (1 - gamma)
    for k in range(iterations):
        if err[k + 1] > gamma * err[k] + contraction_tol:
            got, bound = distinct_digits(float(err[k + 1]), float(gamma * err[k] + contraction_tol))
            raise AssertionError(f"VI is not a gamma-contraction at k = {k}: |v_k+1 - v*| = {got} > gamma |v_k - v*| "
                                 f"(+ rounding) = {bound}")
        if err[k + 1] > gamma * step[k] / (1 - gamma) + stopping_tol:
            got, bound = distinct_digits(float(err[k + 1]), float(gamma * step[k] / (1 - gamma) + stopping_tol))
            raise AssertionError(f"stopping rule bound broken at k = {k}: |v_k+1 - v*| = {got} > gamma tau / "
                                 f"(1 - gamma) (+ rounding) = {bound} with tau = {float(step[k]):.17g}")
    # The greedy policy of v_K is 2 gamma |v_K - v*| / (1 - gamma)-optimal, less what a tie tolerance and q's rounding
    # let it give up at every step; its value is the spec's solve, checked a posteriori.
    v_greedy = rb.state_values(P, R, pi, gamma)
    e_greedy = _reference_error(P, R, v_greedy, gamma, pi)
    slack = (2 * gamma * (float(err[-1]) + e_star) + _tie_tolerance(q_scale) + 2 * rho) / (1 - gamma) + \
        e_star + e_greedy
    loss = float((v_star - v_greedy).max())
    if loss > slack:
        got, bound = distinct_digits(loss, slack)
        raise AssertionError(f"the greedy policy of v_K loses {got} > {bound}")


@checks("rl_basics.value_iteration_contraction", operation=f"{DOC}.value_iteration")
def test_value_iteration_error_on_the_grid(target):
    """One fixed problem for the report: VI's error on the 5 x 5 grid (Fig. 3.4(a)) against gamma^k |v_0 - v*|."""
    P, R = rb.grid_world(**GRID_5x5)
    v_star = rb.optimal_values(P, R, 0.9)
    vs, _ = host(target(P, R, 0.9, iterations=150))
    err = (vs - v_star).abs().amax(dim=1)
    S, A = R.shape
    # v*'s error enters the contraction check (1 + gamma) times, plus one sweep's rounding
    tol = (1 + 0.9) * _reference_error(P, R, v_star, 0.9) + _sweep_rounding(S, A, _q_scale(R, 0.9, vs, v_star))
    assert all(float(err[k + 1]) <= 0.9 * float(err[k]) + tol for k in range(150)), err
    recording.series("vi_error_grid", f"{target.name}", "iteration k", "|v_k - v*|_inf",
                     [(k, max(float(e), 1e-17)) for k, e in enumerate(err)])
    recording.series("vi_error_grid", "bound gamma^k |v_0 - v*|", "iteration k", "|v_k - v*|_inf",
                     [(k, 0.9 ** k * float(err[0])) for k in range(151)])


@checks("rl_basics.policy_iteration_monotone", operation=f"{DOC}.policy_iteration")
@given(mdp=random_mdps(), omit_pi0=st.booleans())
def test_policy_iteration_monotone(target, mdp, omit_pi0):
    P, _, R = mdp.tensors()
    gamma = mdp.gamma
    pi0 = mdp.policy(deterministic=True)
    vs, pi = host(target(P, R, gamma) if omit_pi0 else target(P, R, gamma, pi0=pi0))
    if omit_pi0:  # the default start: the first action everywhere (Alg. 4.1 leaves pi_0 free; the spec fixes it)
        pi0 = torch.nn.functional.one_hot(torch.zeros(mdp.S, dtype=torch.long), mdp.A).to(F64)
        v0 = rb.state_values(P, R, pi0, gamma)
        close("v_pi0 with pi0 omitted (the first action everywhere)", vs[0], v0,
              atol=2 * solve_tolerance(mdp.S, gamma, _scale(vs)))
    v_star = _converged_vi(P, R, gamma)  # an independent route to v*: value iteration, not PI
    e_star = _reference_error(P, R, v_star, gamma)
    q_scale = _q_scale(R, gamma, vs, v_star)
    e_pi = solve_tolerance(mdp.S, gamma, _scale(vs))  # each of the target's evaluations is a solve
    # each improvement is greedy up to eta (ties, q's rounding, the values' error): PI's values may then fall by at
    # most eta / (1 - gamma), and its last policy may be that much short of optimal
    eta = _greedy_slack(mdp.S, mdp.A, gamma, e_pi, q_scale)
    monotone_tol = 2 * e_pi + eta / (1 - gamma)
    for k in range(len(vs) - 1):
        if float((vs[k] - vs[k + 1]).max()) > monotone_tol:
            raise AssertionError(f"v_pi_{k + 1} < v_pi_{k} (Lemma 4.1) {_first_differing(vs[k], vs[k + 1])} "
                                 f"(tolerance {monotone_tol:.3g})")
    close("v of PI's last policy = v*", vs[-1], v_star, atol=e_pi + e_star + eta / (1 - gamma))
    v_last = rb.state_values(P, R, pi, gamma)
    close("PI's policy has the value v*", v_last, v_star,
          atol=_reference_error(P, R, v_last, gamma, pi) + e_star + eta / (1 - gamma))
    if len(vs) > mdp.A ** mdp.S:
        raise AssertionError(f"{len(vs)} policies evaluated: more than there are deterministic policies")
    # Box 4.2: VI started at v_{pi_0} stays below PI: v_k^VI <= v_{pi_k} <= v*. With eta-greedy improvements the
    # gap v_k^VI - v_pi_k obeys a_k <= eta + gamma eta / (1 - gamma) + gamma a_k-1: <= eta / (1 - gamma) x
    # min(k, 1 / (1 - gamma)); plus both sides' errors and VI's rounding
    k = len(vs) - 1
    vi, _ = rb.value_iteration(P, R, gamma, iterations=k, v0=vs[0])
    box_tol = eta / (1 - gamma) * min(k, 1 / (1 - gamma)) + 2 * e_pi + \
        _sweep_tolerance(mdp.S, mdp.A, k, q_scale, gamma)
    if float((vi - vs).max()) > box_tol:
        raise AssertionError(f"v_k^VI <= v_pi_k (Box 4.2) fails {_first_differing(vi, vs)}")
    if float((vs - v_star).max()) > e_pi + e_star:
        raise AssertionError(f"v_pi_k <= v* (Box 4.2) fails {_first_differing(vs, v_star.expand_as(vs))}")


@checks("rl_basics.truncated_pi_interpolates", operation=f"{DOC}.truncated_policy_iteration")
@given(mdp=random_mdps(), iterations=st.integers(1, 40))
def test_truncated_pi_with_one_sweep_is_value_iteration(target, mdp, iterations):
    P, _, R = mdp.tensors()
    v0 = torch.randn(mdp.S, generator=mdp.generator(4), dtype=F64)
    vs, _ = target(P, R, mdp.gamma, j=1, iterations=iterations, v0=v0)
    vi, _ = rb.value_iteration(P, R, mdp.gamma, iterations=iterations, v0=v0)
    # per iteration: truncated PI's sweep rounds (rho) after a greedy choice that may give up a tie's tau plus q's
    # rounding twice; VI's sweep rounds (rho): errors that the contraction keeps from growing
    q_scale = _q_scale(R, mdp.gamma, vs, vi)
    per_iteration = _tie_tolerance(q_scale) + 4 * _sweep_rounding(mdp.S, mdp.A, q_scale)
    close("truncated PI (j = 1) = VI", vs, vi, atol=_accumulated(per_iteration, iterations, mdp.gamma))


EVALUATION_TRUNCATION = 1e-13  # j sweeps with gamma^j below this: an evaluation as good as exact


@checks("rl_basics.truncated_pi_interpolates", operation=f"{DOC}.truncated_policy_iteration")
@settings(max_examples=5)  # up to 15 x 285 Python sweeps per example
@given(mdp=random_mdps(max_states=12, gamma=(0.5, 0.9)))
def test_truncated_pi_with_long_evaluation_reaches_v_star(target, mdp):
    P, _, R = mdp.tensors()
    gamma = mdp.gamma
    j = math.ceil(math.log(EVALUATION_TRUNCATION) / math.log(gamma))
    vs, pi = target(P, R, gamma, j=j, iterations=15)  # exact PI needs a few improvements on these sizes
    v_star = rb.optimal_values(P, R, gamma)
    q_scale = _q_scale(R, gamma, vs, v_star)
    # the last evaluation starts within 2 max|v| of v_pi: truncation gamma^j of that, plus its sweeps' rounding;
    # its policy is greedy for the previous values up to _greedy_slack, so v_pi is within that / (1 - gamma) of v*
    e_eval = 2 * gamma ** j * _scale(vs, v_star) + _sweep_tolerance(mdp.S, mdp.A, j, q_scale, gamma)
    tol = e_eval + _greedy_slack(mdp.S, mdp.A, gamma, e_eval, q_scale) / (1 - gamma) + \
        _reference_error(P, R, v_star, gamma)
    close("truncated PI (j large) -> v*", vs[-1], v_star, atol=tol)


@checks("rl_basics.affine_reward_invariance", operation=f"{DOC}.value_iteration")
@given(mdp=random_mdps(gamma=(0.5, 0.95)), alpha=st.floats(0.1, 10.0), beta=st.floats(-5.0, 5.0))
def test_affine_reward_invariance(target, mdp, alpha, beta):
    P, _, R = mdp.tensors()
    gamma, S, A = mdp.gamma, mdp.S, mdp.A
    K = math.ceil(math.log(EVALUATION_TRUNCATION) / math.log(gamma))
    R2 = alpha * R + beta
    v, _ = host(target(P, R, gamma, iterations=K))
    v2, _ = host(target(P, R2, gamma, iterations=K))
    # From v_0 = 0 the K-th iterates satisfy v'_K = alpha v_K + beta (1 - gamma^K) / (1 - gamma) exactly (max
    # commutes with alpha > 0 and a constant): each run is off by its sweeps' rounding, R2 by one rounding per entry
    # (amplified 1 / (1 - gamma)), the expected value by two roundings
    e_v = _sweep_tolerance(S, A, K, _q_scale(R, gamma, v), gamma)
    e_v2 = _sweep_tolerance(S, A, K, _q_scale(R2, gamma, v2), gamma) + EPS * float(R2.abs().max()) / (1 - gamma)
    expected = alpha * v[-1] + beta * (1 - gamma ** K) / (1 - gamma)
    tol = alpha * e_v + e_v2 + 2 * EPS * _scale(expected)
    close("v'_K = alpha v_K + beta (1 - gamma^K) / (1 - gamma)", v2[-1], expected, atol=tol)
    q = rb.action_values(P, R, v[-1], gamma)
    q2 = rb.action_values(P, R2, v2[-1], gamma)
    # q2 = alpha q + a constant exactly, so the greedy actions agree. Exact ties have probability 0 here; a near tie
    # within the rounding cannot be decided: keep draws whose runner-up gap (in q's units) exceeds twice what the two
    # computations may move a gap, 2 (e_q + e_q2 / alpha)
    e_q = gamma * e_v + _sweep_rounding(S, A, _q_scale(R, gamma, v))
    e_q2 = gamma * e_v2 + _sweep_rounding(S, A, _q_scale(R2, gamma, v2))
    if A > 1:
        gaps = (q.max(1, keepdim=True).values - q).sort(1).values[:, 1]  # runner-up gap per state
        assume(float(gaps.min()) > 4 * (e_q + e_q2 / alpha))
    if not torch.equal(q.argmax(1), q2.argmax(1)):
        raise AssertionError(f"greedy actions changed under alpha r + beta: {q.argmax(1).tolist()} vs "
                             f"{q2.argmax(1).tolist()}")


@checks("rl_basics.rl_basics_contract", operation=f"{DOC}.value_iteration")
@settings(max_examples=5)
@given(mdp=random_mdps(max_states=12))
def test_value_iteration_accepts_sparse_transitions(target, mdp):
    """Every operation takes P as a torch sparse tensor too (how large MDPs are stored)."""
    P, _, R = mdp.tensors()
    sweeps = 20
    dense_values, dense_pi = host(target(P, R, mdp.gamma, iterations=sweeps))
    # the same sweeps with the sums in another order: each side within _sweep_tolerance of the exact iterates
    q_scale = _q_scale(R, mdp.gamma, dense_values)
    drift = _sweep_tolerance(mdp.S, mdp.A, sweeps, q_scale, mdp.gamma)
    # The greedy policies agree unless the runner-up's gap to the best lies within the rounding of the tie tolerance:
    # each q may move by gamma x the values' drift plus its rounding, and so may the maximum (exact ties have
    # probability 0 here)
    if mdp.A > 1:
        q = rb.action_values(P, R, dense_values[-1], mdp.gamma)
        runner_up = float((q.max(1, keepdim=True).values - q).sort(1).values[:, 1].min())
        undecided = 2 * (2 * mdp.gamma * drift + 2 * _sweep_rounding(mdp.S, mdp.A, q_scale))
        assume(runner_up > _tie_tolerance(float(q.abs().max())) + undecided)
    # stored as to_sparse() stores it (its nonzero entries), and with every zero stored too (a zero value is a
    # probability like any other, not a negative one)
    everything = torch.ones_like(P).nonzero().T
    for stored in (P.to_sparse(), torch.sparse_coo_tensor(everything, P[tuple(everything)], P.shape)):
        sparse_values, sparse_pi = target(stored, R, mdp.gamma, iterations=sweeps)
        close("values from a sparse P", sparse_values, dense_values, atol=2 * drift)
        close("policy from a sparse P", sparse_pi, dense_pi, atol=0.0)


# --- the book's tables ------------------------------------------------------------------------------

def _optimal_by_vi(P, R, gamma, vi=rb.value_iteration):
    K = 1 if gamma == 0 else math.ceil(math.log(EVALUATION_TRUNCATION) / math.log(gamma))
    return vi(P, R, gamma, iterations=K)[0][-1]


@checks("rl_basics.grid_world_tables", operation=f"{DOC}.grid_world")
@pytest.mark.parametrize("panel", list(FIG_3_4))
def test_grid_world_fig_3_4(target, panel):
    gamma, r_forbidden, book = FIG_3_4[panel]
    P, R = host(target(**GRID_5x5, r_boundary=-1.0, r_forbidden=r_forbidden, r_target=1.0))
    check_table(f"Fig. 3.4({panel})", _optimal_by_vi(P, R, gamma), book, figure=f"fig_3_4{panel}")


@checks("rl_basics.grid_world_tables", operation=f"{DOC}.value_iteration")
@pytest.mark.parametrize("panel", list(FIG_3_4))
def test_value_iteration_fig_3_4(target, panel):
    gamma, r_forbidden, book = FIG_3_4[panel]
    P, R = rb.grid_world(**GRID_5x5, r_forbidden=r_forbidden)
    check_table(f"Fig. 3.4({panel})", _optimal_by_vi(P, R, gamma, target), book, figure=f"fig_3_4{panel}_vi")


GRID_2x2 = dict(rows=2, cols=2, forbidden=[(1, 2)], target=(2, 2))
GRID_3x3 = dict(rows=3, cols=3, forbidden=[(2, 3), (3, 1)], target=(3, 3))  # Ch. 1 / Ch. 5: s_6, s_7 forbidden
UP, RIGHT, DOWN, LEFT, STAY = range(5)


def _deterministic(actions: list[int], A: int = 5) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(actions), A).to(F64)


def _assert_printed(name: str, values, printed: list[str]) -> None:
    for i, (x, p) in enumerate(zip(values.tolist(), printed, strict=True)):
        if abs(x - float(p)) > printed_tolerance(p):
            raise AssertionError(f"{name}[{i}] = {x:.6g}, the book prints {p}")


# Ch. 5's MC Basic example: a policy pi_0 on the 3 x 3 grid that bumps at s_1 (up) and otherwise walks
# s_2 -> s_5 -> s_8 -> s_9 or s_4 -> s_5 (the cells the book's q(s_1, .) depends on; the others stay).
CH5_PI0 = [UP, DOWN, STAY, RIGHT, DOWN, STAY, STAY, RIGHT, STAY]


REWARD_VALUES = (-10.0, -3.5, -1.0, 0.0, 0.25, 1.0, 7.0)  # exact in float64, and unlike each other


@st.composite
def grid_world_args(draw) -> dict:
    """Any grid: one row or column included, any forbidden cells (repeated, or the target itself), any target, and
    each reward either given or left at its default - so that every default and every cell index is compared."""
    rows, cols = draw(st.integers(1, 5), label="rows"), draw(st.integers(1, 5), label="cols")
    cells = st.tuples(st.integers(1, rows), st.integers(1, cols))
    args = dict(rows=rows, cols=cols, forbidden=draw(st.lists(cells, max_size=rows * cols), label="forbidden"),
                target=draw(cells, label="target"))
    for name in ("r_boundary", "r_forbidden", "r_target", "r_other"):
        value = draw(st.none() | st.sampled_from(REWARD_VALUES), label=name)
        if value is not None:
            args[name] = value
    return args


@checks("rl_basics.grid_world_tables", operation=f"{DOC}.grid_world")
@given(args=grid_world_args())
def test_grid_world_matches_the_spec_everywhere(target, args):
    """Every transition and every reward of any grid world, as the spec builds it (both are exact: 0, 1 and the
    given rewards); the book's tables see only two grids with the default rewards."""
    P, R = target(**args)
    P_ref, R_ref = rb.grid_world(**args)
    equal("P", P.to_dense() if P.is_sparse else P, P_ref)
    equal("R", R, R_ref)


@checks("rl_basics.grid_world_tables", operation=f"{DOC}.grid_world")
def test_grid_world_worked_examples(target):
    """Tables of action values depend on the order of the actions and on what a bump costs (r_forbidden = -10
    in Ch. 5), which the Fig. 3.4 value tables cannot see."""
    P, R = host(target(**GRID_2x2))
    v = rb.state_values(P, R, _deterministic([RIGHT, DOWN, RIGHT, STAY]), 0.9)
    _assert_printed("Ch. 3 q(s_1, .)", rb.action_values(P, R, v, 0.9)[0], ["6.2", "8", "9", "6.2", "7.2"])
    P, R = host(target(**GRID_3x3, r_forbidden=-10.0))
    v = rb.state_values(P, R, _deterministic(CH5_PI0), 0.9)
    _assert_printed("Ch. 5 q_pi0(s_1, .)", rb.action_values(P, R, v, 0.9)[0], ["-10", "7.29", "7.29", "-10", "-9"])


@checks("rl_basics.worked_examples", operation=f"{DOC}.state_values")
def test_worked_examples_state_values(target):
    P, R = rb.grid_world(**GRID_2x2)
    good = _deterministic([DOWN, DOWN, RIGHT, STAY])  # Ch. 2: s_1 down, s_2 down, s_3 right, s_4 stay
    _assert_printed("Ch. 2 v_pi", target(P, R, good, 0.9), ["9", "10", "10", "10"])
    half = good.clone()
    half[0] = torch.tensor([0, 0.5, 0.5, 0, 0], dtype=F64)  # s_1: right or down with probability 1/2
    _assert_printed("Ch. 2 v_pi (50/50 at s_1)", target(P, R, half, 0.9), ["8.5", "10", "10", "10"])
    right = _deterministic([RIGHT, DOWN, RIGHT, STAY])
    _assert_printed("Ch. 3 v_pi(s_1) under 'right'", target(P, R, right, 0.9)[:1], ["8"])
    # Fig. 4.4(b): PI's evaluation of the all-'stay' policy (r_forbidden = -10)
    P5, R5 = rb.grid_world(**GRID_5x5, r_forbidden=-10.0)
    v = target(P5, R5, _deterministic([STAY] * 25), 0.9)
    check_table("Fig. 4.4(b) v_pi0", v, "0 0 0 0 0 | 0 -100 -100 0 0 | 0 0 -100 0 0 | 0 -100 10 -100 0 | "
                "0 -100 0 0 0", figure="fig_4_4b_v_pi0")


@checks("rl_basics.worked_examples", operation=f"{DOC}.action_values")
def test_worked_examples_action_values(target):
    P, R = rb.grid_world(**GRID_2x2)
    right = _deterministic([RIGHT, DOWN, RIGHT, STAY])
    v = rb.state_values(P, R, right, 0.9)
    _assert_printed("Ch. 3 q(s_1, .)", target(P, R, v, 0.9)[0], ["6.2", "8", "9", "6.2", "7.2"])
    Pt, Rt, left = _two_state_example()
    q = target(Pt, Rt, rb.state_values(Pt, Rt, left, 0.9), 0.9)
    _assert_printed("Ch. 4 q_pi0(s_1, .)", q[0], ["-10", "-9", "-7.1"])
    _assert_printed("Ch. 4 q_pi0(s_2, .)", q[1], ["-9", "-7.1", "-9.1"])


def _two_state_example():
    """Ch. 4's two-state example: s_1 | s_2 (the target), actions a_l, a_0, a_r; pi_0 goes left everywhere."""
    P, R = rb.grid_world(1, 2, [], (1, 2))
    keep = [LEFT, STAY, RIGHT]
    return P[:, keep], R[:, keep], _deterministic([0, 0], A=3)


@checks("rl_basics.worked_examples", operation=f"{DOC}.iterative_policy_evaluation")
def test_worked_examples_iterative(target):
    P, R, left = _two_state_example()
    zero = torch.zeros(2, dtype=F64)
    for k, printed in ((1, ["-1", "0"]), (2, ["-1.9", "-0.9"]), (3, ["-2.71", "-1.71"])):
        _assert_printed(f"Ch. 4 evaluation of pi_0, sweep {k}", target(P, R, left, 0.9, zero, k), printed)
    _assert_printed("Ch. 4 v_pi0", target(P, R, left, 0.9, zero, 400), ["-10", "-9"])


@checks("rl_basics.worked_examples", operation=f"{DOC}.value_iteration")
def test_worked_examples_value_iteration(target):
    P, R = rb.grid_world(**GRID_2x2)
    vs, _ = target(P, R, 0.9, iterations=2)
    _assert_printed("Ch. 4 VI v_1", vs[1], ["0", "1", "1", "1"])
    _assert_printed("Ch. 4 VI v_2", vs[2], ["0.9", "1.9", "1.9", "1.9"])


@checks("rl_basics.worked_examples", operation=f"{DOC}.policy_iteration")
def test_worked_examples_policy_iteration(target):
    P, R = rb.grid_world(**GRID_5x5, r_forbidden=-10.0)
    vs, _ = target(P, R, 0.9, pi0=_deterministic([STAY] * 25), max_iterations=1)
    check_table("Fig. 4.4(b) v_pi1", vs[1], "0 0 0 0 0 | 0 0 0 0 0 | 0 0 10 0 0 | 0 10 10 10 0 | 0 9 10 0 0",
                figure="fig_4_4b_v_pi1")
    vs, pi = target(P, R, 0.9, pi0=_deterministic([STAY] * 25))
    check_table("PI's limit = Fig. 3.4(d)", vs[-1], FIG_3_4["d"][2], figure="fig_4_4b_v_star")


# --- contracts ----------------------------------------------------------------------------------------

def _bad_mdp(case: str):
    P, R = rb.grid_world(**GRID_2x2)
    pi = torch.full((4, 5), 0.2, dtype=F64)
    if case == "P rows not summing to 1":
        P = P * 0.9
    elif case == "gamma = 1":
        return P, R, pi, 1.0, "gamma"
    elif case == "R of the wrong shape":
        R = R[:, :3]
    elif case == "pi of the wrong shape":
        pi = pi[:3]
    elif case == "R per transition (S, A, S)":  # the Monte Carlo operations take it; these do not
        R = R[..., None].expand(*R.shape, P.shape[0]).clone()
    elif case == "P rows off by 1.5e-9":  # beyond the 1e-9 that a stochastic row may be off (mdp.STOCHASTIC_ATOL)
        P = P * (1 + 1.5e-9)
    elif case.startswith("sparse P"):  # the sparse form has checks of its own (its values, its row sums)
        P = P.clone()
        if case == "sparse P with a NaN entry":
            P[1, 2, P[1, 2].argmax()] = math.nan
        elif case == "sparse P with one row summing to 0.9":
            P[3, 4] *= 0.9  # one row of twenty: the worst row, not a typical one, decides
        else:  # a row (1.5, -0.5): it sums to 1
            P[0, 0] = 0.0
            P[0, 0, :2] = torch.tensor([1.5, -0.5], dtype=F64)
        P = P.to_sparse()
    return P, R, pi, 0.9, "pi" if case == "pi of the wrong shape" else "R" if case.startswith("R ") else "P"


MDP_CASES = ["P rows not summing to 1", "P rows off by 1.5e-9", "gamma = 1", "R of the wrong shape",
             "pi of the wrong shape", "R per transition (S, A, S)", "sparse P with a NaN entry",
             "sparse P with one row summing to 0.9", "sparse P with a negative entry"]


def _call(op: str, P, R, pi, gamma):
    if op == "state_values":
        return lambda fn: fn(P, R, pi, gamma)
    if op == "iterative_policy_evaluation":
        return lambda fn: fn(P, R, pi, gamma, torch.zeros(P.shape[0], dtype=F64), 3)
    if op == "action_values":
        return lambda fn: fn(P, R, torch.zeros(P.shape[0], dtype=F64), gamma)
    if op == "policy_iteration":
        return lambda fn: fn(P, R, gamma, pi0=pi)
    if op == "truncated_policy_iteration":
        return lambda fn: fn(P, R, gamma, j=2, iterations=2)
    return lambda fn: fn(P, R, gamma, iterations=2)


def _contract_test(op: str, uses_pi: bool):
    @checks("rl_basics.rl_basics_contract", operation=f"{DOC}.{op}")
    @pytest.mark.parametrize("case", [c for c in MDP_CASES if uses_pi or not c.startswith("pi ")])
    def test(target, case):
        P, R, pi, gamma, argument = _bad_mdp(case)
        if argument == "pi" and op == "policy_iteration":
            argument = "pi0"  # its initial policy
        expect_rejection(target, _call(op, P, R, pi, gamma), argument, case)

    test.__name__ = f"test_{op}_rejects_bad_input"
    return test


test_state_values_rejects_bad_input = _contract_test("state_values", True)
test_iterative_policy_evaluation_rejects_bad_input = _contract_test("iterative_policy_evaluation", True)
test_action_values_rejects_bad_input = _contract_test("action_values", False)
test_value_iteration_rejects_bad_input = _contract_test("value_iteration", False)
test_policy_iteration_rejects_bad_input = _contract_test("policy_iteration", True)
test_truncated_policy_iteration_rejects_bad_input = _contract_test("truncated_policy_iteration", False)


@checks("rl_basics.rl_basics_contract", operation=f"{DOC}.grid_world")
@pytest.mark.parametrize("case", ["target off the grid", "target in row 0", "forbidden cell in column 0",
                                  "forbidden cell of three numbers", "forbidden cell of booleans", "zero rows",
                                  "zero columns"])
def test_grid_world_rejects_bad_input(target, case):
    """Cells count from 1 (the book's s_1 is (1, 1)): row or column 0 is off the grid, as is one past the end."""
    args = dict(GRID_2x2)
    if case == "target off the grid":
        args["target"], argument = (3, 1), "target"
    elif case == "target in row 0":
        args["target"], argument = (0, 1), "target"
    elif case == "forbidden cell in column 0":
        args["forbidden"], argument = [(1, 0)], "forbidden"
    elif case == "forbidden cell of three numbers":
        args["forbidden"], argument = [(1, 2, 3)], "forbidden"
    elif case == "forbidden cell of booleans":
        args["forbidden"], argument = [(True, True)], "forbidden"
    elif case == "zero rows":
        args["rows"], argument = 0, "rows"
    else:
        args["cols"], argument = 0, "cols"
    expect_rejection(target, lambda fn: fn(**args), argument, case)


@checks("rl_basics.rl_basics_contract", operation=f"{DOC}.value_iteration")
def test_value_iteration_with_no_iteration_is_its_start(target):
    """iterations = 0 is valid (the values are v0 alone, the policy greedy in them); a negative count is not."""
    P, R = rb.grid_world(**GRID_2x2)
    v0 = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=F64)
    values, pi = target(P, R, 0.9, iterations=0, v0=v0)
    equal("values with iterations = 0", values, v0[None])
    equal("the policy greedy in v0", pi, rb.greedy_policy(rb.action_values(P, R, v0, 0.9)))
    expect_rejection(target, lambda fn: fn(P, R, 0.9, iterations=-1), "iterations", "iterations = -1")


@checks("rl_basics.rl_basics_contract", operation=f"{DOC}.truncated_policy_iteration")
def test_truncated_policy_iteration_counts(target):
    """iterations = 0 returns v0 alone; j counts evaluation sweeps from 1 (j = 0 would evaluate nothing)."""
    P, R = rb.grid_world(**GRID_2x2)
    v0 = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=F64)
    values, pi = target(P, R, 0.9, j=3, iterations=0, v0=v0)
    equal("values with iterations = 0", values, v0[None])
    equal("the policy greedy in v0", pi, rb.greedy_policy(rb.action_values(P, R, v0, 0.9)))
    expect_rejection(target, lambda fn: fn(P, R, 0.9, j=0, iterations=2), "j", "j = 0")


@checks("rl_basics.rl_basics_contract", operation=f"{DOC}.policy_iteration")
def test_policy_iteration_needs_one_improvement(target):
    P, R = rb.grid_world(**GRID_2x2)
    expect_rejection(target, lambda fn: fn(P, R, 0.9, max_iterations=0), "max_iterations", "max_iterations = 0")
