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

from specs import rl_basics as rb
from specs.mdp import EPS, F64, P_pi, solve_tolerance

from . import recording
from .harness import checks, close, expect_rejection
from .strategies_rl import FIG_3_4, GRID_5x5, check_table, printed_tolerance, random_mdps

DOC = "rl_basics"


def _scale(*xs: torch.Tensor) -> float:
    return max(1.0, *(float(x.abs().max()) for x in xs))


def _sweep_tolerance(S: int, A: int, sweeps: int, scale: float) -> float:
    """Each sweep r_pi + gamma P_pi v rounds ~(S + A + 2) times per entry, at most eps * scale each; the
    contraction keeps old errors from growing, so K sweeps add at most K such errors."""
    return (sweeps + 1) * (S + A + 2) * EPS * scale


def _converged_vi(P, R, gamma: float, tol: float = 1e-12) -> torch.Tensor:
    """v* by the spec's value iteration from 0, run until gamma^K <= tol (so |v_K - v*| <= tol |v*|)."""
    K = max(1, math.ceil(math.log(tol) / math.log(gamma))) if gamma > 0 else 1
    return rb.value_iteration(P, R, gamma, iterations=K)[0][-1]


# --- the Bellman equation ---------------------------------------------------------------------------

@checks("rl_basics.bellman_equation", operation=f"{DOC}.state_values")
@given(mdp=random_mdps())
def test_bellman_equation(target, mdp):
    P, _, R = mdp.tensors()
    pi = mdp.policy()
    v = target(P, R, pi, mdp.gamma)
    tol = solve_tolerance(mdp.S, mdp.gamma, _scale(v))
    close("matrix form r_pi + gamma P_pi v", rb.bellman_matrix(P, R, pi, v, mdp.gamma), v, atol=tol)
    if mdp.S * mdp.A <= 60:  # the elementwise form loops in Python: small MDPs only
        close("elementwise form", rb.bellman_elementwise(P, R, pi, v, mdp.gamma), v, atol=tol)
    # Column j of (I - gamma P_pi)^{-1}: the values of the reward e_j (1 in state j whatever the action).
    for j in {0, mdp.S - 1}:
        e_j = torch.zeros(mdp.S, mdp.A, dtype=F64)
        e_j[j] = 1.0
        column = target(P, e_j, pi, mdp.gamma)
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
    v_K = target(P, R, pi, mdp.gamma, v0, sweeps)                                  # exactly gamma per sweep
    delta0 = v0 - v_pi
    error = torch.linalg.matrix_power(mdp.gamma * P_pi(P, pi), sweeps) @ delta0
    scale = _scale(v_pi, v0)
    tol = solve_tolerance(mdp.S, mdp.gamma, scale) + _sweep_tolerance(mdp.S, mdp.A, sweeps, scale)
    close("v_K - v_pi = gamma^K P_pi^K (v_0 - v_pi)", v_K - v_pi, error, atol=tol)
    bound = mdp.gamma ** sweeps * float(delta0.abs().max()) + tol
    if float((v_K - v_pi).abs().max()) > bound:
        raise AssertionError(f"|v_K - v_pi| exceeds gamma^K |v_0 - v_pi| = {bound:.3g}")


@checks("rl_basics.action_values", operation=f"{DOC}.action_values")
@given(mdp=random_mdps())
def test_action_values(target, mdp):
    P, _, R = mdp.tensors()
    pi = mdp.policy()
    v_pi = rb.state_values(P, R, pi, mdp.gamma)
    q = target(P, R, v_pi, mdp.gamma)
    # both checks measure the residual of the spec's solve for v_pi plus the target's S-term sums: bounded by
    # solve_tolerance, at most 5.3e-12 relative over these MDPs (S = 30, gamma = 0.99); 1e-10 is 19x that
    tol = 1e-10 * _scale(v_pi)
    close("v_pi = sum_a pi q_pi", (pi * q).sum(1), v_pi, atol=tol)
    # matrix form q = r~ + gamma P Pi q, with (Pi q)(s') = sum_a' pi(a'|s') q(s', a')
    close("q = r + gamma P Pi q", R + mdp.gamma * torch.einsum("sat,t->sa", P, (pi * q).sum(1)), q, atol=tol)


# --- optimality and the algorithms of Ch. 4 -----------------------------------------------------------

@checks("rl_basics.value_iteration_contraction", operation=f"{DOC}.value_iteration")
@given(mdp=random_mdps(), iterations=st.integers(1, 60))
def test_value_iteration_contraction(target, mdp, iterations):
    P, _, R = mdp.tensors()
    v_star = rb.optimal_values(P, R, mdp.gamma)
    v0 = torch.randn(mdp.S, generator=mdp.generator(3), dtype=F64) * 5
    vs, pi = target(P, R, mdp.gamma, iterations=iterations, v0=v0)
    tol = 1e-12 * _scale(v_star, v0) + solve_tolerance(mdp.S, mdp.gamma, _scale(v_star))
    err = (vs - v_star).abs().amax(dim=1)
    step = (vs[1:] - vs[:-1]).abs().amax(dim=1)
    for k in range(iterations):
        if err[k + 1] > mdp.gamma * err[k] + tol:
            raise AssertionError(f"VI is not a gamma-contraction at k = {k}: |v_k+1 - v*| = {float(err[k + 1]):.6g} "
                                 f"> gamma |v_k - v*| = {float(mdp.gamma * err[k]):.6g}")
        if err[k + 1] > mdp.gamma * step[k] / (1 - mdp.gamma) + tol:
            raise AssertionError(f"stopping rule bound broken at k = {k}: |v_k+1 - v*| = {float(err[k + 1]):.6g} "
                                 f"> gamma tau / (1 - gamma) with tau = {float(step[k]):.6g}")
    # The greedy policy of v_K is 2 gamma |v_K - v*| / (1 - gamma)-optimal (and optimal once v_K is close enough).
    v_greedy = rb.state_values(P, R, pi, mdp.gamma)
    slack = 2 * mdp.gamma * float(err[-1]) / (1 - mdp.gamma) + tol
    if float((v_star - v_greedy).max()) > slack:
        raise AssertionError(f"the greedy policy of v_K loses {float((v_star - v_greedy).max()):.3g} > {slack:.3g}")


@checks("rl_basics.value_iteration_contraction", operation=f"{DOC}.value_iteration")
def test_value_iteration_error_on_the_grid(target):
    """One fixed problem for the report: VI's error on the 5 x 5 grid (Fig. 3.4(a)) against gamma^k |v_0 - v*|."""
    P, R = rb.grid_world(**GRID_5x5)
    v_star = rb.optimal_values(P, R, 0.9)
    vs, _ = target(P, R, 0.9, iterations=150)
    err = (vs - v_star).abs().amax(dim=1)
    # v*'s own error (solve_tolerance(25, 0.9) = 4.2e-13 relative) enters the contraction check (1 + gamma) times,
    # plus one sweep's rounding (S + A + 2) eps = 7e-15: 8.1e-13 relative in all, under 1e-12
    tol = 1e-12 * _scale(v_star)
    assert all(float(err[k + 1]) <= 0.9 * float(err[k]) + tol for k in range(150)), err
    recording.series("vi_error_grid", f"{target.name}", "iteration k", "|v_k - v*|_inf",
                     [(k, max(float(e), 1e-17)) for k, e in enumerate(err)])
    recording.series("vi_error_grid", "bound gamma^k |v_0 - v*|", "iteration k", "|v_k - v*|_inf",
                     [(k, 0.9 ** k * float(err[0])) for k in range(151)])


@checks("rl_basics.policy_iteration_monotone", operation=f"{DOC}.policy_iteration")
@given(mdp=random_mdps())
def test_policy_iteration_monotone(target, mdp):
    P, _, R = mdp.tensors()
    pi0 = mdp.policy(deterministic=True)
    vs, pi = target(P, R, mdp.gamma, pi0=pi0)
    v_star = _converged_vi(P, R, mdp.gamma)  # an independent route to v*: value iteration, not PI
    # PI's values are solves (solve_tolerance <= 5.3e-12 relative here); v* by VI is within 1e-12 of v* plus the
    # rounding of its K <= 2750 sweeps (_sweep_tolerance: <= 2.3e-11 relative at S = 30, A = 5, gamma = 0.99):
    # ~3.5e-11 in all; 1e-9 is ~30x that
    tol = 1e-9 * _scale(v_star)
    for k in range(len(vs) - 1):
        if float((vs[k] - vs[k + 1]).max()) > tol:
            raise AssertionError(f"v_pi_{k + 1} < v_pi_{k} (Lemma 4.1) by {float((vs[k] - vs[k + 1]).max()):.3g}")
    close("v of PI's last policy = v*", vs[-1], v_star, atol=tol)
    close("PI's policy has the value v*", rb.state_values(P, R, pi, mdp.gamma), v_star, atol=tol)
    if len(vs) > mdp.A ** mdp.S:
        raise AssertionError(f"{len(vs)} policies evaluated: more than there are deterministic policies")
    # Box 4.2: VI started at v_{pi_0} stays below PI: v_k^VI <= v_{pi_k} <= v*
    vi, _ = rb.value_iteration(P, R, mdp.gamma, iterations=len(vs) - 1, v0=vs[0])
    if float((vi - vs).max()) > tol or float((vs - v_star).max()) > tol:
        raise AssertionError("v_k^VI <= v_pi_k <= v* (Box 4.2) fails")


@checks("rl_basics.truncated_pi_interpolates", operation=f"{DOC}.truncated_policy_iteration")
@given(mdp=random_mdps(), iterations=st.integers(1, 40))
def test_truncated_pi_with_one_sweep_is_value_iteration(target, mdp, iterations):
    P, _, R = mdp.tensors()
    v0 = torch.randn(mdp.S, generator=mdp.generator(4), dtype=F64)
    vs, _ = target(P, R, mdp.gamma, j=1, iterations=iterations, v0=v0)
    vi, _ = rb.value_iteration(P, R, mdp.gamma, iterations=iterations, v0=v0)
    # the same sweeps rounded in two ways: each side within _sweep_tolerance of the exact iterates
    close("truncated PI (j = 1) = VI", vs, vi, atol=2 * _sweep_tolerance(mdp.S, mdp.A, iterations, _scale(vi)))


@checks("rl_basics.truncated_pi_interpolates", operation=f"{DOC}.truncated_policy_iteration")
@settings(max_examples=5)  # up to 15 x 285 Python sweeps per example
@given(mdp=random_mdps(max_states=12, gamma=(0.5, 0.9)))
def test_truncated_pi_with_long_evaluation_reaches_v_star(target, mdp):
    P, _, R = mdp.tensors()
    j = math.ceil(math.log(1e-13) / math.log(mdp.gamma))  # gamma^j < 1e-13: evaluation as good as exact
    vs, pi = target(P, R, mdp.gamma, j=j, iterations=15)  # exact PI needs a few improvements on these sizes
    v_star = rb.optimal_values(P, R, mdp.gamma)
    # each evaluation: truncation gamma^j < 1e-13 plus j sweeps' rounding (_sweep_tolerance(12, 5, 285) = 1.2e-12
    # relative); v* (policy iteration's solves): solve_tolerance(12, 0.9) = 2e-13: 1e-9 is ~500x the sum
    close("truncated PI (j large) -> v*", vs[-1], v_star, atol=1e-9 * _scale(v_star))


@checks("rl_basics.affine_reward_invariance", operation=f"{DOC}.value_iteration")
@given(mdp=random_mdps(gamma=(0.5, 0.95)), alpha=st.floats(0.1, 10.0), beta=st.floats(-5.0, 5.0))
def test_affine_reward_invariance(target, mdp, alpha, beta):
    P, _, R = mdp.tensors()
    K = math.ceil(math.log(1e-13) / math.log(mdp.gamma))
    v, _ = target(P, R, mdp.gamma, iterations=K)
    v2, _ = target(P, alpha * R + beta, mdp.gamma, iterations=K)
    expected = alpha * v[-1] + beta / (1 - mdp.gamma)
    # each run: gamma^K < 1e-13 of |v*| plus K <= 584 sweeps' rounding (_sweep_tolerance(30, 5, 584) = 4.8e-12
    # relative); 1e-9 is ~100x the two together
    close("v'* = alpha v* + beta / (1 - gamma)", v2[-1], expected, atol=1e-9 * _scale(expected))
    q = rb.action_values(P, R, v[-1], mdp.gamma)
    q2 = rb.action_values(P, alpha * R + beta, v2[-1], mdp.gamma)
    # greedy action sets, each within a tolerance relative to its own values: 1e-8 is ~1000x the values' error
    # above. q2's threshold, 1e-8 scale(q2), is 1e-8 scale(q2) / alpha in q's units (up to 1e-5 for alpha = 0.1,
    # |beta| = 5, gamma = 0.95): the assume rejects near-ties within 100x the larger of the two thresholds
    best = q >= q.max(1, keepdim=True).values - 1e-8 * _scale(q)
    best2 = q2 >= q2.max(1, keepdim=True).values - 1e-8 * _scale(q2)
    margin = 1e-6 * max(_scale(q), _scale(q2) / alpha)
    assume(torch.equal(best, q >= q.max(1, keepdim=True).values - margin))  # no near-ties
    if not torch.equal(best, best2):
        raise AssertionError(f"greedy action sets changed under alpha r + beta: {best.tolist()} vs {best2.tolist()}")


@checks("rl_basics.rl_basics_contract", operation=f"{DOC}.value_iteration")
@settings(max_examples=5)
@given(mdp=random_mdps(max_states=12))
def test_value_iteration_accepts_sparse_transitions(target, mdp):
    """Every operation takes P as a torch sparse tensor too (how large MDPs are stored)."""
    P, _, R = mdp.tensors()
    dense_values, dense_pi = target(P, R, mdp.gamma, iterations=20)
    sparse_values, sparse_pi = target(P.to_sparse(), R, mdp.gamma, iterations=20)
    # the same sweeps with the sums in another order: each side within _sweep_tolerance of the exact iterates
    close("values from a sparse P", sparse_values, dense_values,
          atol=2 * _sweep_tolerance(mdp.S, mdp.A, 20, _scale(dense_values)))
    close("policy from a sparse P", sparse_pi, dense_pi, atol=0.0)


# --- the book's tables ------------------------------------------------------------------------------

def _optimal_by_vi(P, R, gamma, vi=rb.value_iteration):
    K = 1 if gamma == 0 else math.ceil(math.log(1e-13) / math.log(gamma))
    return vi(P, R, gamma, iterations=K)[0][-1]


@checks("rl_basics.grid_world_tables", operation=f"{DOC}.grid_world")
@pytest.mark.parametrize("panel", list(FIG_3_4))
def test_grid_world_fig_3_4(target, panel):
    gamma, r_forbidden, book = FIG_3_4[panel]
    P, R = target(**GRID_5x5, r_boundary=-1.0, r_forbidden=r_forbidden, r_target=1.0)
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


@checks("rl_basics.grid_world_tables", operation=f"{DOC}.grid_world")
def test_grid_world_worked_examples(target):
    """Tables of action values depend on the order of the actions and on what a bump costs (r_forbidden = -10
    in Ch. 5), which the Fig. 3.4 value tables cannot see."""
    P, R = target(**GRID_2x2)
    v = rb.state_values(P, R, _deterministic([RIGHT, DOWN, RIGHT, STAY]), 0.9)
    _assert_printed("Ch. 3 q(s_1, .)", rb.action_values(P, R, v, 0.9)[0], ["6.2", "8", "9", "6.2", "7.2"])
    P, R = target(**GRID_3x3, r_forbidden=-10.0)
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
    return P, R, pi, 0.9, {"P rows not summing to 1": "P", "R of the wrong shape": "R",
                           "pi of the wrong shape": "pi"}[case]


MDP_CASES = ["P rows not summing to 1", "gamma = 1", "R of the wrong shape", "pi of the wrong shape"]


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
    @pytest.mark.parametrize("case", MDP_CASES if uses_pi else MDP_CASES[:3])
    def test(target, case):
        P, R, pi, gamma, argument = _bad_mdp(case)
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
@pytest.mark.parametrize("case", ["target off the grid", "forbidden cell of three numbers", "zero rows"])
def test_grid_world_rejects_bad_input(target, case):
    args = dict(GRID_2x2)
    if case == "target off the grid":
        args["target"], argument = (3, 1), "target"
    elif case == "forbidden cell of three numbers":
        args["forbidden"], argument = [(1, 2, 3)], "forbidden"
    else:
        args["rows"], argument = 0, "rows"
    expect_rejection(target, lambda fn: fn(**args), argument, case)
