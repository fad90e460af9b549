"""Finite-MDP benchmarks: policy evaluation in closed form vs iteratively, value iteration and policy iteration,
on random MDPs of 10^2 to 10^4 states (CPU: time_ and peakmem_).

The MDPs: |A| = 5 actions, each pair reaching 4 random next states with random probabilities, rewards uniform in
[-1, 1], gamma = 0.9, seeded (benchmarks/common.py SEEDS "rl.mdp", "rl.policy"); P is a torch sparse COO tensor,
which every operation accepts. The dense implementations (the spec, numpy) hold P as S x A x S float64: 4 GB at
10^4 states, so they are skipped there; torch.sparse keeps P as a CSR matrix, but its closed form still builds the
dense S x S matrix I - gamma P_pi and solves it by LU (800 MB and O(S^3) at 10^4 states): the price of the closed
form that these numbers show. Iterative evaluation and value iteration run a fixed 100 sweeps (gamma^100 ~ 3e-5:
"converged" for most purposes); policy iteration runs until its policy is stable.

Setup checks each implementation against the spec on a 60-state MDP of the same kind (values within the float64
solve tolerance) before anything is timed.
"""

from __future__ import annotations

import torch

from specs import rl_basics as rb
from specs.mdp import solve_tolerance

from .common import SEEDS, implementation_or_skip

GAMMA = 0.9
ACTIONS = 5
SUCCESSORS = 4
SWEEPS = 100
STATES = (100, 1000, 10000)
IMPLEMENTATIONS = ("spec", "numpy.dense", "torch.sparse")
DENSE_LIMIT = 1000  # dense P of S x 5 x S float64: 40 MB at 10^3 states, 4 GB at 10^4
CHECK_STATES = 60


def random_mdp(S: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """P (S, A, S) sparse COO, R (S, A), pi (S, A) (a random stochastic policy)."""
    g = torch.Generator().manual_seed(SEEDS["rl.mdp"])
    rows = torch.arange(S * ACTIONS).repeat_interleave(SUCCESSORS)
    nxt = torch.randint(0, S, (S * ACTIONS * SUCCESSORS,), generator=g)
    w = torch.rand(S * ACTIONS, SUCCESSORS, generator=g, dtype=torch.float64) + 0.05
    w = (w / w.sum(1, keepdim=True)).reshape(-1)
    P = torch.sparse_coo_tensor(torch.stack([rows // ACTIONS, rows % ACTIONS, nxt]), w, (S, ACTIONS, S),
                                check_invariants=True).coalesce()
    R = 2 * torch.rand(S, ACTIONS, generator=g, dtype=torch.float64) - 1
    gp = torch.Generator().manual_seed(SEEDS["rl.policy"])
    pi = torch.rand(S, ACTIONS, generator=gp, dtype=torch.float64)
    return P, R, pi / pi.sum(1, keepdim=True)


def _checked(operation: str, name: str, S: int):
    if name != "torch.sparse" and S > DENSE_LIMIT:
        raise NotImplementedError(f"{name} holds P densely: {S} x {ACTIONS} x {S} float64 is "
                                  f"{S * ACTIONS * S * 8 / 2**30:.1f} GiB")
    impl = implementation_or_skip(f"rl_basics.{operation}", name, device="cpu", dtype=torch.float64)
    fn = impl.load()
    P, R, pi = random_mdp(CHECK_STATES)
    Pd = P.to_dense()
    if operation == "state_values":
        got, want = fn(P, R, pi, GAMMA), rb.state_values(Pd, R, pi, GAMMA)
    elif operation == "iterative_policy_evaluation":
        v0 = torch.zeros(CHECK_STATES, dtype=torch.float64)
        got, want = fn(P, R, pi, GAMMA, v0, SWEEPS), rb.iterative_policy_evaluation(Pd, R, pi, GAMMA, v0, SWEEPS)
    elif operation == "value_iteration":
        got, want = fn(P, R, GAMMA, iterations=SWEEPS)[0], rb.value_iteration(Pd, R, GAMMA, iterations=SWEEPS)[0]
    else:
        got, want = fn(P, R, GAMMA)[0][-1], rb.policy_iteration(Pd, R, GAMMA)[0][-1]
    tol = solve_tolerance(CHECK_STATES, GAMMA, float(want.abs().max())) * (SWEEPS + 1)
    err = float((got - want).abs().max())
    if err > tol:
        raise AssertionError(f"{name} {operation}: off the spec by {err:.3g} > {tol:.3g}")
    return fn


class _MDPBenchmark:
    version = 1
    params = (IMPLEMENTATIONS, STATES)
    param_names = ("implementation", "states")
    number = 1
    repeat = (1, 3, 30.0)
    timeout = 600
    operation = ""

    def setup(self, name, S):
        fn = _checked(self.operation, name, S)
        P, R, pi = random_mdp(S)
        if name != "torch.sparse":
            P = P.to_dense()
        self.call = self.bind(fn, P, R, pi, S)

    def bind(self, fn, P, R, pi, S):
        raise NotImplementedError


class ClosedFormEvaluation(_MDPBenchmark):
    """v_pi = (I - gamma P_pi)^{-1} r_pi."""

    operation = "state_values"

    def bind(self, fn, P, R, pi, S):
        return lambda: fn(P, R, pi, GAMMA)

    def time_closed_form(self, name, S):
        self.call()

    def peakmem_closed_form(self, name, S):
        self.call()


class IterativeEvaluation(_MDPBenchmark):
    """100 sweeps of v <- r_pi + gamma P_pi v from 0."""

    operation = "iterative_policy_evaluation"

    def bind(self, fn, P, R, pi, S):
        v0 = torch.zeros(S, dtype=torch.float64)
        return lambda: fn(P, R, pi, GAMMA, v0, SWEEPS)

    def time_iterative(self, name, S):
        self.call()

    def peakmem_iterative(self, name, S):
        self.call()


class ValueIteration(_MDPBenchmark):
    """100 steps of value iteration from 0."""

    operation = "value_iteration"

    def bind(self, fn, P, R, pi, S):
        return lambda: fn(P, R, GAMMA, iterations=SWEEPS)

    def time_value_iteration(self, name, S):
        self.call()

    def peakmem_value_iteration(self, name, S):
        self.call()


class PolicyIteration(_MDPBenchmark):
    """Policy iteration from a_1 everywhere until the policy is stable (exact evaluation each time)."""

    operation = "policy_iteration"

    def bind(self, fn, P, R, pi, S):
        return lambda: fn(P, R, GAMMA)

    def time_policy_iteration(self, name, S):
        self.call()

    def peakmem_policy_iteration(self, name, S):
        self.call()
