"""Finite Markov decision processes as tensors, shared by rl_basics, monte_carlo and stochastic_approximation.

Notation of Zhao, *Mathematical Foundations of Reinforcement Learning* (Ch. 1-2): states s_1..s_n, actions
a_1..a_m, a transition tensor P[s, a, s'] = p(s'|s, a) (each P[s, a] a probability vector), the expected reward
R[s, a] = sum_r p(r|s, a) r, and a policy pi[s, a] = pi(a|s) (each row a probability vector). Monte Carlo needs
the rewards themselves, not only their mean: ``r`` is then either R (the reward is a function of (s, a), as in
the grid world) or a table r[s, a, s'] of the reward received on the transition s -> s' (the reward is a
function of the transition, as in gymnasium's toy-text environments), and R = sum_{s'} P r.

Everything is float64. This module holds the argument checks every operation shares and the two products
every equation uses (r_pi and P_pi), so that no document writes them twice.
"""

from __future__ import annotations

import math

import torch

from eqspec.contracts import ArgumentError

from .validators import check_tensor

F64 = torch.float64
EPS = torch.finfo(F64).eps
# How far from a probability vector a row may be: a row normalised in float64 sums to 1 within n eps.
STOCHASTIC_ATOL = 1e-9


def check_gamma(gamma, *, allow_one: bool = False) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma):
        raise ArgumentError("gamma", f"gamma must be a real number in [0, 1), got {gamma!r}")
    if not (0.0 <= gamma < 1.0 or (allow_one and gamma == 1.0)):
        raise ArgumentError("gamma", f"gamma must be in [0, 1) (a discounted continuing task), got {gamma!r}")
    return float(gamma)


def _check_stochastic(name: str, x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        raise ArgumentError(name, f"{name} must be finite, got non-finite entries")
    if (x < 0).any():
        raise ArgumentError(name, f"{name} must be non-negative ({what}), got min {float(x.min()):.3g}")
    worst = float((x.sum(-1) - 1).abs().max())
    if worst > STOCHASTIC_ATOL:
        raise ArgumentError(name, f"{name} rows must sum to 1 ({what}), got a row off by {worst:.3g}")


def is_stochastic(x) -> bool:
    """Whether x holds probability vectors in its last axis (as _check_stochastic accepts them): the rule of a
    policy an operation returns, which a caller may pass on to the next."""
    return (isinstance(x, torch.Tensor) and x.is_floating_point() and bool(torch.isfinite(x).all())
            and not bool((x < 0).any()) and bool(((x.sum(-1) - 1).abs() <= STOCHASTIC_ATOL).all()))


POLICY = "a policy: finite, non-negative, each row summing to 1 (within 1e-9)"


def dense(P: torch.Tensor) -> torch.Tensor:
    """A transition tensor given as a torch sparse tensor is accepted by every operation (large MDPs)."""
    return P.to_dense() if P.is_sparse else P


def check_transitions(P) -> tuple[int, int]:
    """P (S, A, S): each P[s, a] a probability vector over next states. Returns (S, A)."""
    check_tensor("P", P, rank=3)
    S, A, S2 = P.shape
    if S2 != S:
        raise ArgumentError("P", f"P must have shape (S, A, S), got {tuple(P.shape)}")
    if P.is_sparse:  # a large MDP: check the stored entries and the row sums without densifying
        P = P.coalesce()
        values, sums = P.values(), torch.sparse.sum(P, dim=2).to_dense()
        if not torch.isfinite(values).all() or (values < 0).any():
            raise ArgumentError("P", "P must be finite and non-negative (P[s, a] is p(.|s, a))")
        worst = float((sums - 1).abs().max())
        if worst > STOCHASTIC_ATOL:
            raise ArgumentError("P", f"P rows must sum to 1 (P[s, a] is p(.|s, a)), got a row off by {worst:.3g}")
        return S, A
    _check_stochastic("P", P, "P[s, a] is p(.|s, a)")
    return S, A


def check_rewards(name: str, R, S: int, A: int, *, transitions_allowed: bool = False) -> None:
    check_tensor(name, R)
    shapes = [(S, A)] + ([(S, A, S)] if transitions_allowed else [])
    if tuple(R.shape) not in shapes:
        raise ArgumentError(name, f"{name} must have shape {' or '.join(str(s) for s in shapes)}, got {tuple(R.shape)}")
    if not torch.isfinite(R).all():
        raise ArgumentError(name, f"{name} must be finite")


def check_policy(pi, S: int, A: int, name: str = "pi") -> None:
    check_tensor(name, pi, rank=2)
    if tuple(pi.shape) != (S, A):
        raise ArgumentError(name, f"{name} must have shape (S, A) = {(S, A)}, got {tuple(pi.shape)}")
    _check_stochastic(name, pi, f"{name}[s] is {name}(.|s)")


def check_values(name: str, v, S: int) -> None:
    check_tensor(name, v, rank=1)
    if v.shape[0] != S:
        raise ArgumentError(name, f"{name} must have shape (S,) = ({S},), got {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ArgumentError(name, f"{name} must be finite")


def check_mdp(P, R, gamma) -> tuple[int, int, float]:
    S, A = check_transitions(P)
    check_rewards("R", R, S, A)
    return S, A, check_gamma(gamma)


def expected_reward(P: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """R[s, a] = sum_{s'} p(s'|s, a) r(s, a, s') (r of shape (S, A) is already R)."""
    return r if r.dim() == 2 else (dense(P) * r).sum(-1)


def r_pi(R: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """r_pi(s) = sum_a pi(a|s) sum_r p(r|s, a) r  (Zhao Ch. 2, eq. 2.8)."""
    return (pi * R).sum(-1)


def P_pi(P: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """[P_pi]_{s s'} = sum_a pi(a|s) p(s'|s, a)  (Zhao Ch. 2, eq. 2.8): row-stochastic."""
    return torch.einsum("sa,sat->st", pi, dense(P))


def solve_tolerance(S: int, gamma: float, scale: float) -> float:
    """What float64 can promise for v = (I - gamma P_pi)^{-1} r_pi (Higham, Thm 9.4 for LU with pivoting).

    The backward error of the solve is ~ S eps |A| and the infinity-norm condition number of I - gamma P_pi is
    at most (1 + gamma) / (1 - gamma) (its inverse sums the series sum_k gamma^k P_pi^k, of norm 1 / (1 - gamma)):
    forward error <= 4 S eps (1 + gamma) / (1 - gamma) * max |v|, with a factor 4 for the formation of the
    matrix and of r_pi. For S = 30 and gamma = 0.99 that is ~5e-12 relative.
    """
    return 4 * S * EPS * (1 + gamma) / (1 - gamma) * max(scale, 1.0)
