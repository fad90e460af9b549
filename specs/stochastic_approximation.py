"""Stochastic approximation: incremental mean, Robbins-Monro, Dvoretzky's theorem, SGD / BGD / MBGD.

Book: S. Zhao, *Mathematical Foundations of Reinforcement Learning*, Ch. 6. Post: the seed's stochastic
approximation article. Equations and known answers: catalogue/rl_zhao.md C.5.

Every algorithm here takes its randomness as an argument (the noise eta_k, the samples x_k, the mini-batch
indices), so that an implementation is a deterministic function of its inputs and the statistical claims
draw the noise from seeded generators. Iterates may carry leading batch dimensions (independent runs side by
side). Indices follow the book: w_1 is the initial guess, step k uses a_k, x_k, eta_k; the returned tensor
holds w_1 .. w_{K+1} (index 0 is w_1).
"""

from __future__ import annotations

import math

import torch

from eqspec.contracts import ArgumentError
from eqspec.domain import Built, Choice, Domain, Int, Optional, Real
from eqspec.outputs import Output
from eqspec.registry import REGISTRY, claim, operation, spec

from .mdp import F64
from .validators import check_tensor

DOC = "stochastic_approximation"


def _check_steps(name: str, a, K: int | None = None) -> torch.Tensor:
    check_tensor(name, a, rank=1)
    if K is not None and a.shape[0] != K:
        raise ArgumentError(name, f"{name} must have one step size per iteration ({K}), got shape {tuple(a.shape)}")
    if not torch.isfinite(a).all() or (a < 0).any():
        raise ArgumentError(name, f"{name} must be finite and non-negative step sizes")
    return a.to(F64)


@operation(
    DOC,
    latex=r"w_{k+1}=w_k-\alpha_k(w_k-x_k),\quad \alpha_k=\tfrac1k\Rightarrow w_{k+1}=\tfrac1k\sum_{i\le k}x_i",
    source="Zhao Ch. 6, §6.1 (incremental mean; general step sizes alpha_k)",
    summary="Incremental estimate of a mean from samples x (K, ...): alpha (K,) defaults to 1/k. Returns "
            "w_1 .. w_{K+1} (K + 1, ...), float64; w_1 = w1 is arbitrary (the first 1/k step overwrites it).",
    returns="w",
    dtypes=("float64",),
    outputs=(Output("w", shape="(None, ...)", dtype="float64"),),
)
def incremental_mean(x: torch.Tensor, *, w1: float = 0.0, alpha: torch.Tensor | None = None) -> torch.Tensor:
    check_tensor("x", x)
    K = x.shape[0]
    if alpha is None:
        alpha = 1.0 / torch.arange(1, K + 1, dtype=F64, device=x.device)
    else:
        alpha = _check_steps("alpha", alpha, K)
    w = [torch.full(x.shape[1:], float(w1), dtype=F64, device=x.device)]
    for k in range(K):
        w.append(w[-1] - alpha[k] * (w[-1] - x[k].to(F64)))
    return torch.stack(w)


@operation(
    DOC,
    latex=r"w_{k+1}=w_k-a_k\tilde g(w_k,\eta_k),\quad \tilde g(w,\eta)=g(w)+\eta",
    source="Zhao Ch. 6, §6.2, eq. (6.5); Thm 6.1 (convergence: 0 < c_1 <= g' <= c_2, sum a_k = inf, "
           "sum a_k^2 < inf, E[eta|H] = 0, E[eta^2|H] < inf)",
    summary="Robbins-Monro iterates for the root of g: g a callable on tensors, w1 the initial guess (a float or a "
            "tensor of independent runs), a (K,) step sizes, eta (K, ...) the observation noise. Returns w_1 .. "
            "w_{K+1}.",
    returns="w",
    dtypes=("float64",),
    outputs=(Output("w", shape="(None, ...)", dtype="float64"),),
)
def robbins_monro(g, w1, a: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    if not callable(g):
        raise ArgumentError("g", f"g must be a callable (the function whose root is sought), got {type(g).__name__}")
    check_tensor("eta", eta)
    a = _check_steps("a", a, eta.shape[0])
    w = [torch.as_tensor(w1, dtype=F64, device=eta.device).expand(eta.shape[1:]).clone()]
    for k in range(a.shape[0]):
        w.append(w[-1] - a[k] * (g(w[-1]) + eta[k]))
    return torch.stack(w)


@operation(
    DOC,
    latex=r"\Delta_{k+1}=(1-\alpha_k)\Delta_k+\beta_k\eta_k",
    source="Zhao Ch. 6, §6.3, Thm 6.2 (Dvoretzky: sum alpha = inf, sum alpha^2 < inf, sum beta^2 < inf; "
           "sum beta = inf is not required)",
    summary="Dvoretzky's process from delta1 with step sequences alpha, beta (K,) and noise eta (K, ...). "
            "Returns Delta_1 .. Delta_{K+1}.",
    returns="delta",
    dtypes=("float64",),
    outputs=(Output("delta", shape="(None, ...)", dtype="float64"),),
)
def dvoretzky(delta1, alpha: torch.Tensor, beta: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    check_tensor("eta", eta)
    K = eta.shape[0]
    alpha, beta = _check_steps("alpha", alpha, K), _check_steps("beta", beta, K)
    d = [torch.as_tensor(delta1, dtype=F64, device=eta.device).expand(eta.shape[1:]).clone()]
    for k in range(K):
        d.append((1 - alpha[k]) * d[-1] + beta[k] * eta[k])
    return torch.stack(d)


@spec(DOC, latex=r"\mathbb E\big[(\Delta_{K+1}-\mu)^2\big]=\sum_k\beta_k^2\sigma^2\prod_{j>k}(1-\alpha_j)^2,\ "
                 r"\mu=\Delta_1\prod_k(1-\alpha_k)",
      source="Dvoretzky's recursion unrolled (Zhao Ch. 6, proof of Thm 6.2): Delta_{K+1} is linear in eta")
def dvoretzky_moments(delta1: float, alpha: torch.Tensor, beta: torch.Tensor, sigma: float) -> tuple[float, float]:
    """Mean and variance of Delta_{K+1} for independent zero-mean noise of standard deviation sigma."""
    mean, var = float(delta1), 0.0
    for a_k, b_k in zip(alpha.tolist(), beta.tolist()):
        mean, var = (1 - a_k) * mean, (1 - a_k) ** 2 * var + b_k ** 2 * sigma ** 2
    return mean, var


# ---------------------------------------------------------------------------------------------------
# Gradient methods for J(w) = E f(w, X)  (§6.4)
# ---------------------------------------------------------------------------------------------------

def _check_gd(grad_f, w1, X, alpha, K=None):
    if not callable(grad_f):
        raise ArgumentError("grad_f", f"grad_f must be a callable grad_f(w, x), got {type(grad_f).__name__}")
    check_tensor("X", X)
    check_tensor("w1", torch.as_tensor(w1, dtype=F64))
    return _check_steps("alpha", alpha, K)


@operation(
    DOC,
    latex=r"w_{k+1}=w_k-\alpha_k\nabla_wf(w_k,x_k)",
    source="Zhao Ch. 6, §6.4, eq. (6.12) (SGD); Thm 6.4",
    summary="SGD with one sample x_k = x[k] per step: grad_f(w, x) -> gradient, w1 (...), x (K, ...), alpha (K,). "
            "Returns w_1 .. w_{K+1}.",
    returns="w",
    dtypes=("float64",),
    outputs=(Output("w", shape="(None, ...)", dtype="float64"),),
)
def sgd(grad_f, w1, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    alpha = _check_gd(grad_f, w1, x, alpha, x.shape[0])
    w = [torch.as_tensor(w1, dtype=F64, device=x.device).clone()]
    for k in range(x.shape[0]):
        w.append(w[-1] - alpha[k] * grad_f(w[-1], x[k].to(F64)))
    return torch.stack(w)


@operation(
    DOC,
    latex=r"w_{k+1}=w_k-\alpha_k\frac1n\sum_{i=1}^n\nabla_wf(w_k,x_i)",
    source="Zhao Ch. 6, §6.4.3 (BGD)",
    summary="Batch gradient descent on all n samples X (n, ...) at every step, alpha (K,). Returns w_1 .. w_{K+1}.",
    returns="w",
    dtypes=("float64",),
    outputs=(Output("w", shape="(None, ...)", dtype="float64"),),
)
def bgd(grad_f, w1, X: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    alpha = _check_gd(grad_f, w1, X, alpha)
    w = [torch.as_tensor(w1, dtype=F64, device=X.device).clone()]
    for k in range(alpha.shape[0]):
        w.append(w[-1] - alpha[k] * sum(grad_f(w[-1], x.to(F64)) for x in X) / X.shape[0])
    return torch.stack(w)


@operation(
    DOC,
    latex=r"w_{k+1}=w_k-\alpha_k\frac1m\sum_{j\in I_k}\nabla_wf(w_k,x_j),\ |I_k|=m",
    source="Zhao Ch. 6, §6.4.3 (MBGD; I_k drawn i.i.d., with replacement: m = n is not BGD)",
    summary="Mini-batch gradient descent: indices (K, m) into X (n, ...) name each step's batch I_k, alpha (K,). "
            "Returns w_1 .. w_{K+1}.",
    returns="w",
    dtypes=("float64",),
    outputs=(Output("w", shape="(None, ...)", dtype="float64"),),
)
def mbgd(grad_f, w1, X: torch.Tensor, alpha: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    check_tensor("indices", indices, rank=2, floating=False)
    alpha = _check_gd(grad_f, w1, X, alpha, indices.shape[0])
    if (indices < 0).any() or (indices >= X.shape[0]).any():
        raise ArgumentError("indices",
                            f"indices must lie in [0, {X.shape[0]}) (rows of X), got {indices.min()}..{indices.max()}")
    w = [torch.as_tensor(w1, dtype=F64, device=X.device).clone()]
    for k in range(alpha.shape[0]):
        batch = indices[k]
        w.append(w[-1] - alpha[k] * sum(grad_f(w[-1], X[j].to(F64)) for j in batch.tolist()) / batch.numel())
    return torch.stack(w)


@spec(DOC, latex=r"I_k=\{j_1,\dots,j_m\},\ j_i\overset{iid}{\sim}U\{1..n\}",
      source="Zhao Ch. 6, §6.4.3 (mini-batches drawn with replacement)")
def sample_minibatches(n: int, m: int, K: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (K, m), generator=generator)


# ---------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------

def chi2_band(M: int, false_alarm: float) -> tuple[float, float]:
    """Two-sided band for chi2_M / M at total false-alarm probability ``false_alarm`` (Laurent & Massart 2000,
    Lemma 1: P(X - M >= 2 sqrt(M x) + 2 x) <= e^-x and P(M - X >= 2 sqrt(M x)) <= e^-x, X ~ chi2_M)."""
    x = math.log(2.0 / false_alarm)
    return 1 - 2 * math.sqrt(x / M), 1 + 2 * math.sqrt(x / M) + 2 * x / M


_RM = f"{DOC}.robbins_monro"
_GD = (f"{DOC}.sgd", f"{DOC}.bgd", f"{DOC}.mbgd")

claim(DOC, "incremental_mean", kind="identity", operations=(f"{DOC}.incremental_mean",),
      statement="With alpha_k = 1/k the incremental estimate equals the batch mean: w_{k+1} = (1/k) sum_{i<=k} x_i "
                "(1e-12 relative) whatever w_1; the general form with alpha_k reproduces the weighted recursion.",
      source="Zhao Ch. 6, §6.1; catalogue property 7")
claim(DOC, "robbins_monro_trajectory", kind="known-answer", operations=(_RM,),
      statement="g(w) = tanh(w - 1), w_1 = 3, a_k = 1/k, eta = 0 gives w_1..w_6 = 3, 2.035972, 1.647826, 1.457758, "
                "1.350694, 1.283296, w_50 = 1.029376, w_200 = 1.007234, decreasing monotonically towards 1; with "
                "eta ~ N(0, 1) it reaches |w - 1| < 0.05 after 1e4 steps for the fixed seeds 3001-3003.",
      source="Zhao Ch. 6, §6.2 (the tanh example); catalogue known-answer vectors")
claim(DOC, "robbins_monro_converges", kind="statistical", operations=(_RM,),
      statement="For g(w) = c (w - w*) (condition (a) with c_1 = c_2 = c) and Gaussian noise, w_{K+1} - w* is "
                "exactly Gaussian with the mean and variance of the unrolled recursion; over M independent runs "
                "the normalised squared errors lie in the Laurent-Massart chi-square band (false alarm <= 1e-6), "
                "and the error shrinks like 1/sqrt(K) when a_k = 1/k.",
      source="Zhao Ch. 6, Thm 6.1; catalogue property 7")
claim(DOC, "robbins_monro_stalls", kind="exact", operations=(_RM,),
      statement="With summable steps a_k = 2^-k RM stalls before the root: for tanh(w - 1) from w_1 = 3 every "
                "iterate stays above 1 + 2 prod_k (1 - 2^-k) > 1.57.",
      source="Zhao Ch. 6, Thm 6.1 condition (b); catalogue property 7")
claim(DOC, "dvoretzky", kind="statistical", operations=(f"{DOC}.dvoretzky",),
      statement="With alpha_k = 1/k and beta_k = k^-0.6 (sum beta = inf, sum beta^2 < inf) and Gaussian noise, "
                "Delta_{K+1} has the unrolled mean and variance (chi-square band over M runs, false alarm <= 1e-6), "
                "and that variance tends to 0.",
      source="Zhao Ch. 6, Thm 6.2; catalogue C.5")
claim(DOC, "gradient_descent_variants", kind="identity", operations=_GD,
      statement="For f = |w - x|^2 / 2 and alpha_k = 1/k: BGD reaches the sample mean after one step, SGD's w_{k+1} "
                "is the running mean of x_1..x_k, MBGD's is the mean of the batch means (1e-12 relative); MBGD with "
                "m = n and indices drawn with replacement is not BGD.",
      source="Zhao Ch. 6, §6.4; catalogue C.5 and property 8")
claim(DOC, "stochastic_approximation_contract", kind="contract",
      operations=(f"{DOC}.incremental_mean", _RM, f"{DOC}.dvoretzky", *_GD),
      statement="Bad input (a step sequence of the wrong length or negative, g not callable, mini-batch indices "
                "out of range) is rejected with an ArgumentError naming the argument.",
      source="eqspec/contracts.py (the suite's input contract)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------

# Leading shapes of the iterates: a scalar run, a batch of one, several independent runs, a 2-d batch
RUN_SHAPES = Choice(((), (1,), (3,), (2, 2)))
STEP_KINDS = ("harmonic", "constant", "zero", "one", "uniform", "geometric", "above_one")


def _steps(name: str, length: str = "K") -> Built:
    """Non-negative finite step sizes (K,): 1/k, a constant, all 0 (nothing moves), all 1 (the sample overwrites
    the iterate), uniform in [0, 1], summable 2^-k, and steps above 1 (overshooting)."""
    def build(gen, case):
        K = int(case[length])
        kind = STEP_KINDS[int(torch.randint(0, len(STEP_KINDS), (), generator=gen))]
        k = torch.arange(1, K + 1, dtype=F64)
        if kind == "harmonic":
            return 1.0 / k
        if kind == "constant":
            return torch.full((K,), float(torch.rand((), generator=gen, dtype=F64)) * 0.9 + 0.05, dtype=F64)
        if kind == "zero":
            return torch.zeros(K, dtype=F64)
        if kind == "one":
            return torch.ones(K, dtype=F64)
        if kind == "uniform":
            return torch.rand(K, generator=gen, dtype=F64)
        if kind == "geometric":
            return 2.0 ** -k
        return 1.0 + torch.rand(K, generator=gen, dtype=F64)  # in [1, 2): still a contraction for g' <= 1
    return Built(build, note=f"step sizes ({length},) of {', '.join(STEP_KINDS)}")


def _noise(length: str = "K") -> Built:
    """eta (K, *shape) ~ N(0, sigma^2); sigma 0 is the noiseless recursion."""
    return Built(lambda gen, case: torch.randn((int(case[length]), *case["shape"]), generator=gen, dtype=F64)
                 * case["sigma"], note=f"noise ({length}, *shape) x sigma")


def _start(gen, case):
    """The initial iterate: a Python float (broadcast over the runs) or a tensor of the runs' shape."""
    if case["start_tensor"]:
        return torch.randn(case["shape"], generator=gen, dtype=F64) * case["start"]
    return float(case["start"])


def g_tanh(w):
    """The book's example: root 1, 0 < g' <= 1."""
    return torch.tanh(w - 1)


def g_linear(w):
    """c (w - w*) with c = 1/2, w* = -2: condition (a) with c_1 = c_2."""
    return 0.5 * (w + 2)


def g_saturating(w):
    """w / (1 + |w|): root 0, g' -> 0 far away (condition (a) fails at infinity)."""
    return w / (1 + w.abs())


def grad_square(w, x):
    """f = |w - x|^2 / 2."""
    return w - x


def grad_tanh(w, x):
    """A smoothed absolute loss: f = log cosh(w - x)."""
    return torch.tanh(w - x)


def grad_scaled(w, x):
    """f = (x w - 1)^2 / 2 elementwise: the gradient depends on x through a product."""
    return x * (x * w - 1)


def grad_least_squares(w, x):
    """f = (a . w - y)^2 / 2 with x = (a, y): w (d,), x (d + 1,)."""
    a, y = x[:-1], x[-1]
    return (a @ w - y) * a


GRADIENTS = Choice((grad_square, grad_tanh, grad_scaled, grad_least_squares))


def _samples(rows: str) -> Built:
    """Samples (rows, *shape), or (rows, d + 1) = (features, target) for the least-squares gradient."""
    def build(gen, case):
        shape = (case["d"] + 1,) if case["grad_f"] is grad_least_squares else tuple(case["shape"])
        return torch.randn((int(case[rows]), *shape), generator=gen, dtype=F64) * case["spread"] + case["center"]
    return Built(build, note=f"samples ({rows}, *shape) x spread + center")


def _gd_start(gen, case):
    """w_1 of the samples' shape (a float only for scalar samples: the iterates keep w_1's shape)."""
    if case["grad_f"] is grad_least_squares:
        return torch.randn(case["d"], generator=gen, dtype=F64) * case["start"]
    if case["shape"] == () and not case["start_tensor"]:
        return float(case["start"])
    return torch.randn(case["shape"], generator=gen, dtype=F64) * case["start"]


START = dict(shape=RUN_SHAPES, start=Real(-5.0, 5.0, edges=(0.0, 1.0, -3.0)), start_tensor=Choice((False, True)))
GD_SIZES = dict(K=Int(1, 10, edges=(1,)), shape=RUN_SHAPES, d=Int(1, 3, edges=(1,)),
                spread=Real(0.0, 4.0, edges=(0.0, 1.0)), center=Real(-3.0, 3.0, edges=(0.0,)),
                start=Real(-5.0, 5.0, edges=(0.0, 2.0)), start_tensor=Choice((False, True)))

REGISTRY.attach_domain(f"{DOC}.incremental_mean", Domain(
    sizes=dict(K=Int(1, 12, edges=(1, 2)), shape=RUN_SHAPES, spread=Real(0.0, 100.0, edges=(0.0, 1.0)),
               center=Real(-10.0, 10.0, edges=(0.0,))),
    args=dict(x=Built(lambda gen, case: torch.randn((case["K"], *case["shape"]), generator=gen, dtype=F64)
                      * case["spread"] + case["center"], note="samples (K, *shape)"),
              w1=Optional(Real(-10.0, 10.0, edges=(0.0, 1.0, -2.5))),
              alpha=Optional(_steps("alpha"))),
    large=dict(K=2000),
))
REGISTRY.attach_domain(_RM, Domain(
    sizes=dict(K=Int(1, 12, edges=(1,)), sigma=Real(0.0, 3.0, edges=(0.0, 1.0)), **START),
    args=dict(g=Choice((g_tanh, g_linear, g_saturating)), w1=Built(_start, note="a float or a tensor of runs"),
              a=_steps("a"), eta=_noise()),
    large=dict(K=2000),
))
REGISTRY.attach_domain(f"{DOC}.dvoretzky", Domain(
    sizes=dict(K=Int(1, 12, edges=(1,)), sigma=Real(0.0, 3.0, edges=(0.0, 1.0)), **START),
    args=dict(delta1=Built(_start, note="a float or a tensor of runs"), alpha=_steps("alpha"), beta=_steps("beta"),
              eta=_noise()),
    large=dict(K=2000),
))
REGISTRY.attach_domain(f"{DOC}.sgd", Domain(
    sizes=GD_SIZES,
    args=dict(grad_f=GRADIENTS, w1=Built(_gd_start, note="a float or a tensor (d,) for least squares"),
              x=_samples("K"), alpha=_steps("alpha")),
    large=dict(K=1000),
))
REGISTRY.attach_domain(f"{DOC}.bgd", Domain(
    sizes=dict(n=Int(1, 6, edges=(1,)), **GD_SIZES),
    args=dict(grad_f=GRADIENTS, w1=Built(_gd_start, note="a float or a tensor (d,) for least squares"),
              X=_samples("n"), alpha=_steps("alpha")),
    large=dict(n=200, K=50),
))


def _minibatches(gen, case):
    """(K, m) indices into the n rows, drawn with replacement: repeats inside a batch, one row every step, every
    row in order, or the last row only."""
    K, m, n = case["K"], case["m"], case["n"]
    kind = int(torch.randint(0, 4, (), generator=gen))
    if kind == 1:
        return torch.full((K, m), int(torch.randint(0, n, (), generator=gen)), dtype=torch.int64)
    if kind == 2:
        return (torch.arange(K * m, dtype=torch.int64) % n).view(K, m)
    if kind == 3:
        return torch.full((K, m), n - 1, dtype=torch.int64)
    return torch.randint(0, n, (K, m), generator=gen)


REGISTRY.attach_domain(f"{DOC}.mbgd", Domain(
    sizes=dict(n=Int(1, 6, edges=(1,)), m=Int(1, 5, edges=(1,)), **GD_SIZES),
    args=dict(grad_f=GRADIENTS, w1=Built(_gd_start, note="a float or a tensor (d,) for least squares"),
              X=_samples("n"), alpha=_steps("alpha"), indices=Built(_minibatches, note="(K, m) with replacement")),
    large=dict(n=200, m=32, K=50),
))
