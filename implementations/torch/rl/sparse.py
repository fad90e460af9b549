"""torch solvers for large finite MDPs: the transition tensor as a sparse (S*A) x S CSR matrix.

A random MDP with a few successors per pair has nnz ~ k S A, so one Bellman sweep costs O(k S A) instead of the
dense O(S^2 A): value iteration and iterative evaluation reach 10^4 states in milliseconds per sweep. The
closed form still forms the dense S x S matrix I - gamma P_pi and solves it with LU (O(S^3), 800 MB at 10^4
states): the price of "closed form" that the benchmarks measure.
"""

from __future__ import annotations

import warnings

import torch

from specs.mdp import F64, check_mdp, check_policy, check_values
from specs.rl_basics import TIE_RTOL
from specs.validators import check_count

# torch warns that sparse CSR is "beta" on first use; the operation used here (CSR @ dense) is
# checked against the spec by the property tests and in every benchmark's setup.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def _csr(P: torch.Tensor) -> torch.Tensor:
    """P (S, A, S), dense or sparse COO, as the (S*A) x S CSR matrix of its rows."""
    S, A = P.shape[0], P.shape[1]
    if not P.is_sparse:
        return P.to(F64).reshape(S * A, S).to_sparse_csr()
    P = P.coalesce()
    i = P.indices()
    flat = torch.sparse_coo_tensor(torch.stack([i[0] * A + i[1], i[2]]), P.values().to(F64), (S * A, S),
                                   check_invariants=False)  # indices of a coalesced tensor, reshaped
    return flat.coalesce().to_sparse_csr()


def _q(Pc: torch.Tensor, R: torch.Tensor, v: torch.Tensor, gamma: float) -> torch.Tensor:
    return R + gamma * (Pc @ v[:, None]).reshape(R.shape)


def _greedy(q: torch.Tensor) -> torch.Tensor:
    tau = TIE_RTOL * max(1.0, float(q.abs().max()))
    first = (q >= q.max(dim=1, keepdim=True).values - tau).to(torch.int8).argmax(dim=1)
    return torch.nn.functional.one_hot(first, q.shape[1]).to(F64)


def _dense_P_pi(Pc: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """sum_a pi(a|s) P[s, a, :] as a dense S x S matrix (for the closed form), built from the stored entries."""
    S, A = pi.shape
    rows = torch.repeat_interleave(torch.arange(S * A), Pc.crow_indices().diff())
    P_pi = torch.zeros(S, S, dtype=F64)
    P_pi.index_put_((rows // A, Pc.col_indices()), Pc.values() * pi.reshape(-1)[rows], accumulate=True)
    return P_pi


def _sweep(Pc, r_pi, pi, v, gamma):
    """r_pi + gamma P_pi v without forming P_pi: one CSR product with the (S*A) x S rows, then the policy's mix
    (a CSR x CSR product for P_pi measured ~20x slower per sweep at 10^4 states)."""
    return r_pi + gamma * ((Pc @ v[:, None]).reshape(pi.shape) * pi).sum(1)


def _evaluate(Pc, R, pi, gamma):
    S = pi.shape[0]
    M = torch.eye(S, dtype=F64) - gamma * _dense_P_pi(Pc, pi)
    return torch.linalg.solve(M, (pi * R).sum(1))


def state_values(P, R, pi, gamma):
    S, A, gamma = check_mdp(P, R, gamma)
    check_policy(pi, S, A)
    return _evaluate(_csr(P), R.to(F64), pi.to(F64), gamma)


def iterative_policy_evaluation(P, R, pi, gamma, v0, sweeps):
    S, A, gamma = check_mdp(P, R, gamma)
    check_policy(pi, S, A)
    check_values("v0", v0, S)
    check_count("sweeps", sweeps, minimum=0)
    Pc, pi = _csr(P), pi.to(F64)
    r_pi = (pi * R).sum(1)
    v = v0.to(F64, copy=True)
    for _ in range(sweeps):
        v = _sweep(Pc, r_pi, pi, v, gamma)
    return v


def value_iteration(P, R, gamma, *, iterations, v0=None):
    S, A, gamma = check_mdp(P, R, gamma)
    check_count("iterations", iterations, minimum=0)
    Pc, R = _csr(P), R.to(F64)
    vs = torch.zeros(iterations + 1, S, dtype=F64)
    if v0 is not None:
        check_values("v0", v0, S)
        vs[0] = v0
    for k in range(iterations):
        vs[k + 1] = _q(Pc, R, vs[k], gamma).max(dim=1).values
    return vs, _greedy(_q(Pc, R, vs[-1], gamma))


def policy_iteration(P, R, gamma, *, pi0=None, max_iterations=1000):
    S, A, gamma = check_mdp(P, R, gamma)
    check_count("max_iterations", max_iterations, minimum=1)
    Pc, R = _csr(P), R.to(F64)
    if pi0 is None:
        pi = torch.zeros(S, A, dtype=F64)
        pi[:, 0] = 1.0
    else:
        check_policy(pi0, S, A, "pi0")
        pi = pi0.to(F64, copy=True)
    vs = [_evaluate(Pc, R, pi, gamma)]
    for _ in range(max_iterations):
        new_pi = _greedy(_q(Pc, R, vs[-1], gamma))
        if torch.equal(new_pi, pi):
            break
        pi = new_pi
        vs.append(_evaluate(Pc, R, pi, gamma))
    return torch.stack(vs), pi


def truncated_policy_iteration(P, R, gamma, *, j, iterations, v0=None):
    S, A, gamma = check_mdp(P, R, gamma)
    check_count("j", j, minimum=1)
    check_count("iterations", iterations, minimum=0)
    Pc, R = _csr(P), R.to(F64)
    vs = torch.zeros(iterations + 1, S, dtype=F64)
    if v0 is not None:
        check_values("v0", v0, S)
        vs[0] = v0
    for k in range(iterations):
        pi = _greedy(_q(Pc, R, vs[k], gamma))
        r_pi = (pi * R).sum(1)
        v = vs[k]
        for _ in range(j):
            v = _sweep(Pc, r_pi, pi, v, gamma)
        vs[k + 1] = v
    return vs, _greedy(_q(Pc, R, vs[-1], gamma))
