"""Mutants of the RL-basics document: the catalogue's plausible bugs (catalogue/rl_zhao.md, C "plausible
implementation bugs"), each a small change to the spec's own code so that nothing but the bug separates it."""

from __future__ import annotations

from functools import partial

import torch

from specs import rl_basics as rb
from specs.mdp import F64, P_pi, check_mdp, r_pi

from . import mutant

DOC = "rl_basics"
_M = "property_tests.mutants.rl_basics"


# --- the grid world -----------------------------------------------------------------------------------

def grid_world(rows, cols, forbidden, target, *, r_boundary=-1.0, r_forbidden=-1.0, r_target=1.0, r_other=0.0,
               bug=""):
    P, R = rb.grid_world(rows, cols, forbidden, target, r_boundary=r_boundary, r_forbidden=r_forbidden,
                         r_target=r_target, r_other=r_other)
    S = rows * cols
    cell = {(r, c): (r - 1) * cols + (c - 1) for r in range(1, rows + 1) for c in range(1, cols + 1)}
    t = cell[tuple(target)]
    if bug == "absorbing_target":  # the target ends the episode: from there on nothing is earned
        P[t] = 0.0
        P[t, :, t] = 1.0
        R[t] = 0.0
    elif bug == "blocked_forbidden":  # the public Python env: entering a forbidden cell is refused
        for f in forbidden:
            fs = cell[tuple(f)]
            for s in range(S):
                for a in range(5):
                    if s != fs and P[s, a, fs] == 1.0:
                        P[s, a] = 0.0
                        P[s, a, s] = 1.0
    elif bug == "bump_costs_forbidden":  # MATLAB main_example.m: a bump costs r_forbidden
        R[R == r_boundary] = r_forbidden
    elif bug == "transposed":  # (x, y) = (col, row): the layout is mirrored on the diagonal
        return rb.grid_world(cols, rows, [(c, r) for r, c in forbidden], (target[1], target[0]),
                             r_boundary=r_boundary, r_forbidden=r_forbidden, r_target=r_target, r_other=r_other)
    elif bug == "python_action_order":  # down, right, up, left, stay
        order = [2, 1, 0, 3, 4]
        P, R = P[:, order], R[:, order]
    elif bug == "reward_of_current_state":  # the reward is keyed on the state left, not the state entered
        for s in range(S):
            here = (r_target if s == t else r_forbidden if s in {cell[tuple(f)] for f in forbidden} else r_other)
            for a in range(5):
                if R[s, a] != r_boundary or P[s, a, s] != 1.0 or a == 4:
                    R[s, a] = here
    return P, R


_GRID_BUGS = {
    "absorbing_target": "makes the target absorbing with no reward (v_target = 1 instead of 1 / (1 - gamma))",
    "blocked_forbidden": "refuses to enter forbidden cells (the public Python env)",
    "bump_costs_forbidden": "charges r_forbidden for a bump into the boundary",
    "transposed": "swaps rows and columns ((x, y) = (col, row))",
    "python_action_order": "orders the actions down, right, up, left, stay",
    "reward_of_current_state": "keys the reward on the current state instead of the entered one",
}
for _bug in _GRID_BUGS:
    globals()[f"grid_{_bug}"] = partial(grid_world, bug=_bug)


# --- evaluation -------------------------------------------------------------------------------------

def state_values_ignoring_policy(P, R, pi, gamma):
    """Evaluates with P averaged over actions instead of P_pi."""
    check_mdp(P, R, gamma)
    uniform = torch.full_like(pi, 1.0 / pi.shape[1])
    return torch.linalg.solve(torch.eye(P.shape[0], dtype=F64) - gamma * P_pi(P, uniform), r_pi(R, pi))


def state_values_transposed(P, R, pi, gamma):
    """Solves with P_pi^T (column- instead of row-stochastic)."""
    check_mdp(P, R, gamma)
    return torch.linalg.solve(torch.eye(P.shape[0], dtype=F64) - gamma * P_pi(P, pi).T, r_pi(R, pi))


def state_values_unchecked(P, R, pi, gamma):
    """No input validation: solves whatever it is given."""
    return torch.linalg.solve(torch.eye(P.shape[0], dtype=F64) - gamma * P_pi(P, pi), r_pi(R, pi))


def iterative_one_sweep_short(P, R, pi, gamma, v0, sweeps):
    return rb.iterative_policy_evaluation(P, R, pi, gamma, v0, max(sweeps - 1, 0))


def iterative_undiscounted_reward(P, R, pi, gamma, v0, sweeps):
    """Discounts the reward too: v <- gamma (r_pi + P_pi v)."""
    v = v0
    for _ in range(sweeps):
        v = gamma * (r_pi(R, pi) + P_pi(P, pi) @ v)
    return v


def action_values_current_state(P, R, v, gamma):
    """q(s, a) = r(s, a) + gamma v(s): the value of the current state instead of the next."""
    return R + gamma * v[:, None]


def action_values_unchecked(P, R, v, gamma):
    return R + gamma * torch.einsum("sat,t->sa", P, v)


# --- control ----------------------------------------------------------------------------------------

def value_iteration(P, R, gamma, *, iterations, v0=None, bug=""):
    S, A, gamma = check_mdp(P, R, gamma)
    if bug == "normalised_rewards":  # reward normalisation slipped into the solver
        R = (R - R.mean()) / R.std(correction=0).clamp(min=1e-12)
    vs = [torch.zeros(S, dtype=F64) if v0 is None else v0.to(F64)]
    for _ in range(iterations):
        q = R + (1.0 if bug == "undiscounted" else gamma) * torch.einsum("sat,t->sa", P, vs[-1])
        vs.append(q.mean(1) if bug == "mean_not_max" else q.max(1).values)
    q = rb.action_values(P, R, vs[-1], gamma)
    return torch.stack(vs), rb.greedy_policy(-q if bug == "greedy_argmin" else q)


for _bug in ("normalised_rewards", "undiscounted", "mean_not_max", "greedy_argmin"):
    globals()[f"vi_{_bug}"] = partial(value_iteration, bug=_bug)


def pi_stops_after_one_improvement(P, R, gamma, *, pi0=None, max_iterations=1000):
    return rb.policy_iteration(P, R, gamma, pi0=pi0, max_iterations=1)


def pi_evaluates_uniform(P, R, gamma, *, pi0=None, max_iterations=1000):
    """Improves greedily but evaluates every policy with the uniform P (ignores P_pi)."""
    S, A = R.shape
    pi = pi0 if pi0 is not None else rb.greedy_policy(torch.zeros(S, A, dtype=F64))
    vs = [state_values_ignoring_policy(P, R, pi, gamma)]
    for _ in range(max_iterations):
        new = rb.greedy_policy(rb.action_values(P, R, vs[-1], gamma))
        if torch.equal(new, pi):
            break
        pi = new
        vs.append(state_values_ignoring_policy(P, R, pi, gamma))
    return torch.stack(vs), pi


def tpi_restarts_from_zero(P, R, gamma, *, j, iterations, v0=None):
    """Each evaluation starts from 0 instead of the previous value."""
    S = R.shape[0]
    vs = [torch.zeros(S, dtype=F64) if v0 is None else v0]
    for _ in range(iterations):
        pi = rb.greedy_policy(rb.action_values(P, R, vs[-1], gamma))
        vs.append(rb.iterative_policy_evaluation(P, R, pi, gamma, torch.zeros(S, dtype=F64), j))
    return torch.stack(vs), rb.greedy_policy(rb.action_values(P, R, vs[-1], gamma))


def tpi_one_sweep_short(P, R, gamma, *, j, iterations, v0=None):
    """Runs j - 1 sweeps (j = 1: no evaluation at all, the values never move)."""
    S = R.shape[0]
    vs = [torch.zeros(S, dtype=F64) if v0 is None else v0]
    for _ in range(iterations):
        pi = rb.greedy_policy(rb.action_values(P, R, vs[-1], gamma))
        vs.append(rb.iterative_policy_evaluation(P, R, pi, gamma, vs[-1], j - 1))
    return torch.stack(vs), rb.greedy_policy(rb.action_values(P, R, vs[-1], gamma))


def _c(name):
    return f"{DOC}.{name}"


MUTANTS = [
    *(mutant(_c("grid_world"), f"grid_world.{bug}", f"{_M}:grid_{bug}", targets=(_c("grid_world_tables"),),
             notes=why) for bug, why in _GRID_BUGS.items()),
    mutant(_c("state_values"), "state_values.ignores_policy", f"{_M}:state_values_ignoring_policy",
           targets=(_c("bellman_equation"), _c("worked_examples")), notes="evaluates with P averaged over actions"),
    mutant(_c("state_values"), "state_values.transposed", f"{_M}:state_values_transposed",
           targets=(_c("bellman_equation"),), notes="uses P_pi^T"),
    mutant(_c("state_values"), "state_values.unchecked", f"{_M}:state_values_unchecked",
           targets=(_c("rl_basics_contract"),), notes="accepts any P, R, pi and gamma"),
    mutant(_c("iterative_policy_evaluation"), "iterative.one_sweep_short", f"{_M}:iterative_one_sweep_short",
           targets=(_c("closed_form_equals_iterative"), _c("worked_examples")), notes="K - 1 sweeps"),
    mutant(_c("iterative_policy_evaluation"), "iterative.discounted_reward", f"{_M}:iterative_undiscounted_reward",
           targets=(_c("closed_form_equals_iterative"), _c("rl_basics_contract")),
           notes="v <- gamma (r_pi + P_pi v), and no input validation"),
    mutant(_c("action_values"), "action_values.current_state", f"{_M}:action_values_current_state",
           targets=(_c("action_values"), _c("worked_examples")), notes="q = r + gamma v(s)"),
    mutant(_c("action_values"), "action_values.unchecked", f"{_M}:action_values_unchecked",
           targets=(_c("rl_basics_contract"),), notes="no input validation"),
    mutant(_c("value_iteration"), "vi.normalised_rewards", f"{_M}:vi_normalised_rewards",
           targets=(_c("affine_reward_invariance"), _c("grid_world_tables")), notes="normalises R inside VI"),
    mutant(_c("value_iteration"), "vi.undiscounted", f"{_M}:vi_undiscounted",
           targets=(_c("value_iteration_contraction"), _c("worked_examples")), notes="gamma = 1 inside the max"),
    mutant(_c("value_iteration"), "vi.mean_not_max", f"{_M}:vi_mean_not_max",
           targets=(_c("value_iteration_contraction"), _c("grid_world_tables")),
           notes="averages q over actions (evaluates the uniform policy)"),
    mutant(_c("value_iteration"), "vi.greedy_argmin", f"{_M}:vi_greedy_argmin",
           targets=(_c("value_iteration_contraction"),), notes="extracts the policy with argmin"),
    mutant(_c("policy_iteration"), "pi.one_improvement", f"{_M}:pi_stops_after_one_improvement",
           targets=(_c("policy_iteration_monotone"),), notes="stops after one improvement"),
    mutant(_c("policy_iteration"), "pi.evaluates_uniform", f"{_M}:pi_evaluates_uniform",
           targets=(_c("policy_iteration_monotone"), _c("worked_examples")),
           notes="evaluates with P averaged over actions, not P_pi; no input validation"),
    mutant(_c("truncated_policy_iteration"), "tpi.restarts_from_zero", f"{_M}:tpi_restarts_from_zero",
           targets=(_c("truncated_pi_interpolates"),), notes="evaluation sweeps start from 0, not v_{k-1}"),
    mutant(_c("truncated_policy_iteration"), "tpi.one_sweep_short", f"{_M}:tpi_one_sweep_short",
           targets=(_c("truncated_pi_interpolates"),), notes="j - 1 sweeps"),
]
