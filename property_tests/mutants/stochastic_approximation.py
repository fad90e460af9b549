"""Mutants of the stochastic-approximation document (catalogue/rl_zhao.md, C "plausible implementation bugs":
the incremental mean's 1/(k+1) misalignment, the RM step's sign, constant steps in Dvoretzky's setting), plus
other slips of the same kind."""

from __future__ import annotations

import torch

from specs import stochastic_approximation as sa
from specs.mdp import F64

from . import mutant

DOC = "stochastic_approximation"
_M = "property_tests.mutants.stochastic_approximation"


def incremental_mean_k_plus_one(x, *, w1=0.0, alpha=None):
    """alpha_k = 1/(k + 1): w_1 is then averaged in as if it were a sample."""
    K = x.shape[0]
    return sa.incremental_mean(x, w1=w1, alpha=1.0 / torch.arange(2, K + 2, dtype=F64) if alpha is None else alpha)


def incremental_mean_next_sample(x, *, w1=0.0, alpha=None):
    """Step k uses x_{k+1} (misaligned; the last step reuses x_K)."""
    shifted = torch.cat([x[1:], x[-1:]]) if x.shape[0] > 1 else x
    return sa.incremental_mean(shifted, w1=w1, alpha=alpha)


def incremental_mean_unchecked(x, *, w1=0.0, alpha=None):
    K = x.shape[0]
    alpha = 1.0 / torch.arange(1, K + 1, dtype=F64) if alpha is None else alpha
    w = [torch.full(x.shape[1:], float(w1), dtype=F64)]
    for k in range(min(K, alpha.shape[0])):
        w.append(w[-1] - alpha[k] * (w[-1] - x[k]))
    return torch.stack(w)


def rm_plus_sign(g, w1, a, eta):
    return sa.robbins_monro(lambda w: -g(w), w1, a, -eta)


def rm_step_index_shift(g, w1, a, eta):
    """Uses a_{k+1} at step k."""
    return sa.robbins_monro(g, w1, torch.cat([a[1:], a[-1:] / 2]), eta)


def rm_ignores_steps(g, w1, a, eta):
    """Always a_k = 1/k, whatever steps it is given (no input validation either)."""
    K = eta.shape[0]
    w = [torch.as_tensor(w1, dtype=F64).expand(eta.shape[1:]).clone()]
    for k in range(K):
        w.append(w[-1] - (g(w[-1]) + eta[k]) / (k + 1))
    return torch.stack(w)


def dvoretzky_beta_is_alpha(delta1, alpha, beta, eta):
    return sa.dvoretzky(delta1, alpha, alpha, eta)


def dvoretzky_constant_step(delta1, alpha, beta, eta):
    """Keeps the first steps alpha_1, beta_1 for ever (a constant step: no convergence), and no validation."""
    K = eta.shape[0]
    return sa.dvoretzky(delta1, alpha[:1].expand(K) * 0.1, beta[:1].expand(K) * 0.1, eta)


def sgd_next_sample(grad_f, w1, x, alpha):
    shifted = torch.cat([x[1:], x[-1:]]) if x.shape[0] > 1 else x
    return sa.sgd(grad_f, w1, shifted, alpha)


def sgd_unchecked(grad_f, w1, x, alpha):
    w = [torch.as_tensor(w1, dtype=F64).clone()]
    for k in range(min(x.shape[0], alpha.shape[0])):
        w.append(w[-1] - alpha[k] * grad_f(w[-1], x[k]))
    return torch.stack(w)


def bgd_sum_not_mean(grad_f, w1, X, alpha):
    return sa.bgd(grad_f, w1, X, alpha * X.shape[0])


def mbgd_is_bgd(grad_f, w1, X, alpha, indices):
    """Ignores the indices: every batch is the whole data set once (sampling without replacement, m = n)."""
    return sa.bgd(grad_f, w1, X, alpha)


def mbgd_unchecked(grad_f, w1, X, alpha, indices):
    w = [torch.as_tensor(w1, dtype=F64).clone()]
    for k in range(alpha.shape[0]):
        batch = indices[k].clamp(max=X.shape[0] - 1)
        w.append(w[-1] - alpha[k] * torch.stack([grad_f(w[-1], X[j]) for j in batch]).mean(0))
    return torch.stack(w)


def _c(name):
    return f"{DOC}.{name}"


MUTANTS = [
    mutant(_c("incremental_mean"), "incremental_mean.k_plus_one", f"{_M}:incremental_mean_k_plus_one",
           targets=(_c("incremental_mean"),), notes="steps 1/(k + 1) instead of 1/k"),
    mutant(_c("incremental_mean"), "incremental_mean.next_sample", f"{_M}:incremental_mean_next_sample",
           targets=(_c("incremental_mean"),), notes="step k uses x_{k+1}"),
    mutant(_c("incremental_mean"), "incremental_mean.unchecked", f"{_M}:incremental_mean_unchecked",
           targets=(_c("stochastic_approximation_contract"),), notes="no input validation"),
    mutant(_c("robbins_monro"), "rm.plus_sign", f"{_M}:rm_plus_sign",
           targets=(_c("robbins_monro_trajectory"), _c("robbins_monro_converges")), notes="w + a g instead of w - a g"),
    mutant(_c("robbins_monro"), "rm.step_index_shift", f"{_M}:rm_step_index_shift",
           targets=(_c("robbins_monro_trajectory"), _c("robbins_monro_converges")), notes="uses a_{k+1} at step k"),
    mutant(_c("robbins_monro"), "rm.ignores_steps", f"{_M}:rm_ignores_steps",
           targets=(_c("robbins_monro_stalls"), _c("stochastic_approximation_contract")),
           notes="always a_k = 1/k; no input validation"),
    mutant(_c("dvoretzky"), "dvoretzky.beta_is_alpha", f"{_M}:dvoretzky_beta_is_alpha",
           targets=(_c("dvoretzky"),), notes="scales the noise by alpha_k instead of beta_k"),
    mutant(_c("dvoretzky"), "dvoretzky.constant_step", f"{_M}:dvoretzky_constant_step",
           targets=(_c("dvoretzky"), _c("stochastic_approximation_contract")),
           notes="a constant step 0.1 alpha_1, 0.1 beta_1 (does not converge a.s.); no input validation"),
    mutant(_c("sgd"), "sgd.next_sample", f"{_M}:sgd_next_sample", targets=(_c("gradient_descent_variants"),),
           notes="step k uses x_{k+1}"),
    mutant(_c("sgd"), "sgd.unchecked", f"{_M}:sgd_unchecked", targets=(_c("stochastic_approximation_contract"),),
           notes="no input validation"),
    mutant(_c("bgd"), "bgd.sum_not_mean", f"{_M}:bgd_sum_not_mean", targets=(_c("gradient_descent_variants"),),
           notes="sums the n gradients instead of averaging"),
    mutant(_c("mbgd"), "mbgd.is_bgd", f"{_M}:mbgd_is_bgd", targets=(_c("gradient_descent_variants"),),
           notes="ignores the drawn indices: every batch is the whole data set"),
    mutant(_c("mbgd"), "mbgd.unchecked", f"{_M}:mbgd_unchecked", targets=(_c("stochastic_approximation_contract"),),
           notes="clamps out-of-range indices instead of rejecting them"),
]
