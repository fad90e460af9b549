"""Monte Carlo reinforcement learning: episodes, returns, MC Basic, MC Exploring Starts, MC epsilon-greedy.

Book: S. Zhao, *Mathematical Foundations of Reinforcement Learning*, Ch. 5. Post: the seed's Monte Carlo
article. Equations, conventions and known answers: catalogue/rl_zhao.md C.4.

MDPs are the tensors of specs/mdp.py; rewards ``r`` are R (S, A) (a function of the pair, as in the grid world)
or r[s, a, s'] (a function of the transition). An episode of length L is the arrays s_0..s_{L-1},
a_0..a_{L-1}, r_1..r_L; every sampler takes a seeded torch.Generator, so a run is reproducible. Greedy
choices break ties as rl_basics.greedy_policy does (the lowest action index).
"""

from __future__ import annotations

import bisect
import math

import torch

from eqspec.contracts import ArgumentError, ConformanceError
from eqspec.domain import Built, Choice, Domain, Int, Optional, Real
from eqspec.outputs import Output
from eqspec.registry import REGISTRY, claim, operation, spec

from .mdp import EPS, F64, POLICY, check_gamma, check_policy, check_rewards, check_transitions, dense, is_stochastic
from .rl_basics import GAMMA, TIE_RTOL, WORLD_P, WORLDS, domain_policy, domain_world, greedy_policy, named, world_sizes
from .validators import check_count, check_tensor

DOC = "monte_carlo"
VISITS = ("initial", "first", "every")

# ---------------------------------------------------------------------------------------------------
# The epsilon-greedy policy (§5.4)
# ---------------------------------------------------------------------------------------------------


def _check_epsilon(epsilon) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0.0 <= epsilon <= 1.0:
        raise ArgumentError("epsilon", f"epsilon must be a real number in [0, 1], got {epsilon!r}")
    return float(epsilon)


@operation(
    DOC,
    latex=r"\pi(a|s)=\begin{cases}1-\frac{|\mathcal A(s)|-1}{|\mathcal A(s)|}\epsilon&a=a^*_s\\"
          r"\frac{\epsilon}{|\mathcal A(s)|}&\text{otherwise}\end{cases}",
    source="Zhao Ch. 5, §5.4, eq. (5.4) (epsilon-greedy policy)",
    summary="The epsilon-greedy policy of action values q (S, A): pi (S, A), float64; the greedy action a* is the "
            "lowest-index maximiser.",
    returns="pi",
    dtypes=("float64",),
    outputs=(Output("pi", shape="q.shape", dtype="float64", holds=is_stochastic, holds_words=POLICY),),
)
def epsilon_greedy(q: torch.Tensor, epsilon: float) -> torch.Tensor:
    check_tensor("q", q, rank=2)
    epsilon = _check_epsilon(epsilon)
    A = q.shape[1]
    return (1 - epsilon) * greedy_policy(q.to(F64)) + epsilon / A


@operation(
    DOC,
    latex=r"a=\begin{cases}a^*&x\ge\epsilon\\ \lfloor |\mathcal A|\,b\rfloor&x<\epsilon\end{cases},\quad "
          r"x,b\sim U[0,1)",
    source="Zhao Ch. 5, §5.4 (how an epsilon-greedy action is drawn: the uniform branch may again pick a*)",
    summary="Draw epsilon-greedy actions for one state with action values q (A,): u (n,) and b (n,) are "
            "uniform [0, 1) draws; returns int64 actions (n,).",
    returns="actions",
    dtypes=("float64",),
    outputs=(Output("actions", shape="u.shape", dtype="int64"),),
)
def epsilon_greedy_sample(q: torch.Tensor, epsilon: float, u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    check_tensor("q", q, rank=1)
    epsilon = _check_epsilon(epsilon)
    _check_uniforms("u", u)
    _check_uniforms("b", b)
    if u.shape != b.shape:
        raise ArgumentError("b", f"b must have the shape of u {tuple(u.shape)}, got {tuple(b.shape)}")
    a_star = int(greedy_policy(q[None].to(F64)).argmax())
    uniform = (b * q.shape[0]).long()  # b < 1: b |A| rounds below |A| (to nearest, |A| (1 - 2^-53) stays below |A|)
    return torch.where(u >= epsilon, torch.full_like(uniform, a_star), uniform)


def _check_uniforms(name: str, x) -> None:
    check_tensor(name, x, rank=1)
    if not bool(((x >= 0) & (x < 1)).all()):
        raise ArgumentError(name, f"{name} must hold uniform draws in [0, 1), got values outside it")


# ---------------------------------------------------------------------------------------------------
# Episodes and returns
# ---------------------------------------------------------------------------------------------------

def _categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of probs by the inverse CDF; an outcome of probability 0 is never drawn."""
    cdf = probs.cumsum(-1)
    cdf = cdf / cdf[..., -1:]  # the last entry exactly 1 (x / x): u < 1 always lands inside
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, dtype=F64).to(probs.device)
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def _check_states(name: str, x, n_states: int) -> None:
    check_tensor(name, x, rank=1, floating=False)
    if x.dtype != torch.int64 or (x < 0).any() or (x >= n_states).any():
        raise ArgumentError(name, f"{name} must be int64 indices in [0, {n_states}), got {x.dtype} {x.tolist()[:5]}...")


@operation(
    DOC,
    latex=r"a_t\sim\pi(\cdot|s_t),\ s_{t+1}\sim p(\cdot|s_t,a_t),\ r_{t+1}=r(s_t,a_t,s_{t+1}),\ t=0..L-1",
    source="Zhao Ch. 5, §5.2 (episodes following a policy; exploring starts fix (s_0, a_0))",
    summary="n episodes of length L side by side from start states s0 (n,) int64, with first actions a0 (n,) "
            "(exploring starts) or drawn from pi. Returns states, actions (n, L) int64 and rewards (n, L) float64 "
            "(rewards[:, t] = r_{t+1}).",
    returns="(states, actions, rewards)",
    dtypes=("float64",),
    outputs=(
        Output("states", shape="(s0.shape[0], length)", dtype="int64"),
        Output("actions", shape="(s0.shape[0], length)", dtype="int64"),
        Output("rewards", shape="(s0.shape[0], length)", dtype="float64"),
    ),
)
def generate_episodes(P, r, pi, s0, length: int, *, a0=None, generator: torch.Generator | None = None):
    S, A = check_transitions(P)
    check_rewards("r", r, S, A, transitions_allowed=True)
    check_policy(pi, S, A)
    _check_states("s0", s0, S)
    check_count("length", length, minimum=1)
    if a0 is not None:
        _check_states("a0", a0, A)
    P = dense(P).to(F64)
    n = s0.shape[0]
    states = torch.empty(n, length, dtype=torch.int64, device=P.device)
    actions = torch.empty(n, length, dtype=torch.int64, device=P.device)
    rewards = torch.empty(n, length, dtype=F64, device=P.device)
    s = s0.clone()
    a = a0.clone() if a0 is not None else _categorical(pi[s], generator)
    for t in range(length):
        states[:, t], actions[:, t] = s, a
        s_next = _categorical(P[s, a], generator)
        rewards[:, t] = r[s, a] if r.dim() == 2 else r[s, a, s_next]
        s = s_next
        a = _categorical(pi[s], generator)
    return states, actions, rewards


@operation(
    DOC,
    latex=r"g\leftarrow\gamma g+r_{t+1},\ t=T-1,\dots,0;\quad g_t=\sum_{k\ge0}\gamma^k r_{t+k+1}",
    source="Zhao Ch. 5, Alg. 5.2 (returns computed backward)",
    summary="Discounted returns of each step of each episode, computed backward: rewards (n, L) -> g (n, L) "
            "with g[:, t] the return from step t to the end of the episode.",
    returns="g",
    dtypes=("float64",),
    outputs=(Output("g", shape="rewards.shape", dtype="float64"),),
)
def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    check_tensor("rewards", rewards, rank=2)
    gamma = check_gamma(gamma, allow_one=True)
    g = torch.zeros(rewards.shape[0], dtype=F64, device=rewards.device)
    out = torch.empty_like(rewards, dtype=F64)
    for t in range(rewards.shape[1] - 1, -1, -1):
        g = gamma * g + rewards[:, t]
        out[:, t] = g
    return out


@spec(DOC, latex=r"\mathrm{first}_t=\big[(s_t,a_t)\notin\{(s_i,a_i)\}_{i<t}\big]",
      source="Zhao Ch. 5, §5.3 (first-visit: only the first occurrence of a pair in an episode counts)")
def first_visits(states: torch.Tensor, actions: torch.Tensor, A: int) -> torch.Tensor:
    n, L = states.shape
    pair = states * A + actions
    seen = torch.zeros(n, int(pair.max()) + 1, dtype=torch.bool, device=states.device)
    first = torch.empty(n, L, dtype=torch.bool, device=states.device)
    rows = torch.arange(n, device=states.device)
    for t in range(L):
        first[:, t] = ~seen[rows, pair[:, t]]
        seen[rows, pair[:, t]] = True
    return first


@operation(
    DOC,
    latex=r"q(s,a)\approx\frac{\mathrm{Returns}(s,a)}{\mathrm{Num}(s,a)}",
    source="Zhao Ch. 5, Alg. 5.1 (initial-visit), Alg. 5.2 and §5.3 (first-visit, every-visit)",
    summary="Monte Carlo action values from episodes (states, actions, rewards as generate_episodes returns them): "
            "visit = 'initial' (only (s_0, a_0)), 'first' or 'every'. Returns (q (S, A) float64, 0 where never "
            "visited; counts (S, A)).",
    returns="(q, counts)",
    dtypes=("float64",),
    outputs=(Output("q", shape="(S, A)", dtype="float64"), Output("counts", shape="(S, A)")),
)
def mc_action_values(states, actions, rewards, gamma: float, S: int, A: int, *, visit: str = "initial"):
    if visit not in VISITS:
        raise ArgumentError("visit", f"visit must be one of {VISITS}, got {visit!r}")
    check_count("S", S, minimum=1)
    check_count("A", A, minimum=1)
    check_tensor("rewards", rewards, rank=2)
    for name, x, bound in (("states", states, S), ("actions", actions, A)):
        check_tensor(name, x, rank=2, floating=False)
        if tuple(x.shape) != tuple(rewards.shape) or (x < 0).any() or (x >= bound).any():
            raise ArgumentError(name, f"{name} must be indices in [0, {bound}) of the shape of rewards "
                                f"{tuple(rewards.shape)}, got {tuple(x.shape)}")
    g = discounted_returns(rewards.to(F64), gamma)
    if visit == "initial":
        counted = torch.zeros_like(g, dtype=torch.bool)
        counted[:, 0] = True
    elif visit == "first":
        counted = first_visits(states, actions, A)
    else:
        counted = torch.ones_like(g, dtype=torch.bool)
    pair = (states * A + actions)[counted]
    returns = torch.zeros(S * A, dtype=F64, device=g.device).index_add_(0, pair, g[counted])
    num = torch.zeros(S * A, dtype=F64, device=g.device).index_add_(0, pair, torch.ones_like(g[counted]))
    q = torch.where(num > 0, returns / num.clamp(min=1), 0.0)
    return q.reshape(S, A), num.reshape(S, A)


# ---------------------------------------------------------------------------------------------------
# Control: MC Basic, MC Exploring Starts, MC epsilon-greedy
# ---------------------------------------------------------------------------------------------------

CONTROL_POLICY = Output("pi", shape="P.shape[:2]", dtype="float64", holds=is_stochastic, holds_words=POLICY)

def _check_control_args(P, r, gamma, episode_length, episodes):
    S, A = check_transitions(P)
    check_rewards("r", r, S, A, transitions_allowed=True)
    gamma = check_gamma(gamma)
    check_count("episode_length", episode_length, minimum=1)
    check_count("episodes", episodes, minimum=1)
    return S, A, gamma


def _first_action_policy(S: int, A: int, device: torch.device) -> torch.Tensor:
    pi = torch.zeros(S, A, dtype=F64, device=device)
    pi[:, 0] = 1.0
    return pi


@operation(
    DOC,
    latex=r"q_{\pi_k}(s,a)\approx\frac1n\sum_{i=1}^n g^{(i)}(s,a),\quad \pi_{k+1}=\mathrm{greedy}(q_{\pi_k})",
    source="Zhao Ch. 5, Alg. 5.1 (MC Basic: policy iteration with q estimated from episodes starting at (s, a))",
    summary="MC Basic: each iteration runs `episodes` episodes of length episode_length from every pair (s, a) "
            "following pi_k, averages their returns (initial visit) and takes the greedy policy; stops when the "
            "policy is stable or after `iterations`. Returns (q (S, A) of the last policy, pi).",
    returns="(q, pi)",
    dtypes=("float64",),
    outputs=(Output("q", shape="P.shape[:2]", dtype="float64"), CONTROL_POLICY),
)
def mc_basic(P, r, gamma: float, *, episode_length: int, iterations: int, episodes: int = 1, pi0=None,
             generator: torch.Generator | None = None):
    S, A, gamma = _check_control_args(P, r, gamma, episode_length, episodes)
    check_count("iterations", iterations, minimum=1)
    if pi0 is not None:
        check_policy(pi0, S, A, "pi0")
    pi = _first_action_policy(S, A, P.device) if pi0 is None else pi0.to(F64, copy=True)
    s0 = torch.arange(S, device=P.device).repeat_interleave(A).repeat(episodes)
    a0 = torch.arange(A, device=P.device).repeat(S).repeat(episodes)
    for _ in range(iterations):
        states, actions, rewards = generate_episodes(P, r, pi, s0, episode_length, a0=a0, generator=generator)
        q, _ = mc_action_values(states, actions, rewards, gamma, S, A, visit="initial")
        new_pi = greedy_policy(q)
        if torch.equal(new_pi, pi):
            break
        pi = new_pi
    return q, pi


class _Sampler:
    """Python-level sampling for the control loops, which draw one episode at a time under a changing policy.
    Draws exactly as _categorical does (inverse CDF, u ~ U[0, 1) from the same generator)."""

    def __init__(self, P, r, generator):
        cdf = dense(P).to(F64).cumsum(-1)
        self.cdf = (cdf / cdf[..., -1:]).tolist()
        self.r = r.tolist()
        self.transition_rewards = r.dim() == 3
        self.generator = generator

    @staticmethod
    def draw(cdf_row: list[float], u: float) -> int:
        return bisect.bisect_right(cdf_row, u)  # the row's last entry is exactly 1 and u < 1

    def episode(self, pi: torch.Tensor, s: int, a: int, length: int):
        """(states, actions, rewards) of one episode from (s, a) under pi (a tensor read once)."""
        pi_cdf = pi.cumsum(-1)
        pi_cdf = (pi_cdf / pi_cdf[:, -1:]).tolist()
        u = torch.rand(2 * length, generator=self.generator, dtype=F64).tolist()
        states, actions, rewards = [], [], []
        for t in range(length):
            states.append(s)
            actions.append(a)
            s_next = self.draw(self.cdf[s][a], u[2 * t])
            rewards.append(self.r[s][a][s_next] if self.transition_rewards else self.r[s][a])
            s = s_next
            a = self.draw(pi_cdf[s], u[2 * t + 1])
        return states, actions, rewards


def _mc_control(P, r, gamma, pi, episodes, episode_length, start, visit, improve, generator):
    """The loop of Algs. 5.2 / 5.3: backward returns, Returns/Num averages, and the policy update of every state
    the episode visited. (The book updates pi(.|s_t) inside the backward loop; nothing later in that loop reads
    pi, so updating once the episode's pairs are averaged gives the same policy.)"""
    S, A = pi.shape
    sampler = _Sampler(P, r, generator)
    returns = [[0.0] * A for _ in range(S)]
    num = [[0] * A for _ in range(S)]
    q = torch.zeros(S, A, dtype=F64, device=pi.device)
    for _ in range(episodes):
        s_0, a_0 = start(pi)
        states, actions, rewards = sampler.episode(pi, s_0, a_0, episode_length)
        first = {}
        for t, pair in enumerate(zip(states, actions)):
            first.setdefault(pair, t)
        g = 0.0
        for t in range(episode_length - 1, -1, -1):
            g = gamma * g + rewards[t]
            s, a = states[t], actions[t]
            if visit == "first" and first[(s, a)] != t:
                continue
            returns[s][a] += g
            num[s][a] += 1
            q[s, a] = returns[s][a] / num[s][a]
        visited = sorted(set(states))
        pi[visited] = improve(q[visited])
    return q, pi


@operation(
    DOC,
    latex=r"g\leftarrow\gamma g+r_{t+1},\ q(s_t,a_t)=\frac{\mathrm{Returns}}{\mathrm{Num}},\ "
          r"\pi(\cdot|s_t)=\mathrm{greedy}(q(s_t,\cdot))",
    source="Zhao Ch. 5, Alg. 5.2 (MC Exploring Starts; every-visit, or first-visit as §5.3 describes)",
    summary="MC Exploring Starts: `episodes` episodes, each from a uniformly drawn pair (s_0, a_0), returns "
            "computed backward, Returns/Num averages and a greedy update of pi(.|s_t) inside the loop. Returns "
            "(q, pi).",
    returns="(q, pi)",
    dtypes=("float64",),
    outputs=(Output("q", shape="P.shape[:2]", dtype="float64"), CONTROL_POLICY),
)
def mc_exploring_starts(P, r, gamma: float, *, episode_length: int, episodes: int, visit: str = "every",
                        generator: torch.Generator | None = None):
    S, A, gamma = _check_control_args(P, r, gamma, episode_length, episodes)
    if visit not in ("first", "every"):
        raise ArgumentError("visit", f"visit must be 'first' or 'every', got {visit!r}")

    def exploring_start(pi):
        pair = int(torch.randint(0, S * A, (1,), generator=generator))
        return pair // A, pair % A

    return _mc_control(P, r, gamma, _first_action_policy(S, A, P.device), episodes, episode_length, exploring_start,
                       visit, greedy_policy, generator)


@operation(
    DOC,
    latex=r"\pi(\cdot|s_t)=\epsilon\text{-greedy}(q(s_t,\cdot))",
    source="Zhao Ch. 5, Alg. 5.3 (MC epsilon-greedy: no exploring starts; converges to the best policy in "
           "Pi_epsilon)",
    summary="MC epsilon-greedy: `episodes` episodes from uniformly drawn start states, actions from the current "
            "epsilon-greedy policy, every-visit averages and an epsilon-greedy update inside the loop. "
            "Returns (q, pi) with pi epsilon-greedy.",
    returns="(q, pi)",
    dtypes=("float64",),
    outputs=(Output("q", shape="P.shape[:2]", dtype="float64"), CONTROL_POLICY),
)
def mc_epsilon_greedy(P, r, gamma: float, epsilon: float, *, episode_length: int, episodes: int,
                      generator: torch.Generator | None = None):
    S, A, gamma = _check_control_args(P, r, gamma, episode_length, episodes)
    epsilon = _check_epsilon(epsilon)

    def start(pi):  # no exploring starts: a uniformly drawn state, its first action from the current policy
        s = int(torch.randint(0, S, (1,), generator=generator))
        return s, int(_categorical(pi[s:s + 1], generator)[0])

    pi0 = torch.full((S, A), 1.0 / A, dtype=F64, device=P.device)
    return _mc_control(P, r, gamma, pi0, episodes, episode_length, start, "every",
                       lambda q_s: epsilon_greedy(q_s, epsilon), generator)


@spec(DOC, latex=r"v=(1-\epsilon)\max_a q+\frac{\epsilon}{|\mathcal A|}\sum_a q,\quad q=r+\gamma Pv",
      source="Zhao Ch. 5, §5.4 (the best policy within Pi_epsilon); catalogue C.4 caveat on Figs. 5.6/5.7")
def epsilon_greedy_optimal_values(P, R, gamma: float, epsilon: float, *, tol: float = 1e-13) -> torch.Tensor:
    """The optimal values within Pi_epsilon: the fixed point of a gamma-contraction, iterated to tol."""
    v = torch.zeros(R.shape[0], dtype=F64, device=R.device)
    while True:
        q = R + gamma * torch.einsum("sat,t->sa", dense(P), v)
        v_new = (1 - epsilon) * q.max(dim=1).values + epsilon * q.mean(dim=1)
        if float((v_new - v).abs().max()) <= tol * (1 - gamma):
            return v_new
        v = v_new


# ---------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------

_EST = (f"{DOC}.generate_episodes", f"{DOC}.discounted_returns", f"{DOC}.mc_action_values")
_CONTROL = (f"{DOC}.mc_basic", f"{DOC}.mc_exploring_starts", f"{DOC}.mc_epsilon_greedy")

claim(DOC, "epsilon_greedy_policy", kind="known-answer", operations=(f"{DOC}.epsilon_greedy",),
      statement="epsilon-greedy probabilities sum to 1 (1e-12), the greedy action gets 1 - epsilon + epsilon/|A| >= "
                "epsilon/|A|, epsilon = 0 is greedy and epsilon = 1 uniform; |A| = 5 gives 0.92/0.02 (epsilon = "
                "0.1), 0.84/0.04 (0.2), 0.6/0.1 (0.5).",
      source="Zhao Ch. 5, eq. (5.4); catalogue property 5 and known answers")
claim(DOC, "epsilon_greedy_sampling", kind="statistical", operations=(f"{DOC}.epsilon_greedy_sample",),
      statement="Over 1e5 draws the action frequencies of the sampler match the epsilon-greedy probabilities "
                "within Bernstein's bound (i.i.d. Bernoulli indicators, union over the actions; false alarm "
                "<= 1e-6).",
      source="Zhao Ch. 5, §5.4; catalogue property 5")
claim(DOC, "returns_backward", kind="identity", operations=(f"{DOC}.discounted_returns",),
      statement="Returns computed backward (g <- gamma g + r_{t+1}) equal the forward discounted sums "
                "sum_k gamma^k r_{t+k+1} (1e-12 relative).",
      source="Zhao Ch. 5, Alg. 5.2; catalogue property 6")
claim(DOC, "mc_converges_to_bellman", kind="statistical", operations=_EST,
      statement="On random MDPs, initial-visit Monte Carlo estimates of q_pi (episodes from every pair) and v_pi "
                "(from every state) lie within the Hoeffding half-width (returns bounded, episodes i.i.d.; union "
                "over pairs and sample sizes, false alarm <= 1e-6) plus the truncation bias gamma^L max|v_pi| of "
                "the closed form, a width that shrinks as 1/sqrt(n).",
      source="Zhao Ch. 5, §5.2 (MC estimation of action values); catalogue 'MC converges to Bellman values'")
claim(DOC, "first_vs_every_visit", kind="identity", operations=(f"{DOC}.mc_action_values",),
      statement="First-visit and every-visit estimates agree exactly on episodes in which no pair repeats, and "
                "differ (every-visit counts more returns) when pairs repeat.",
      source="Zhao Ch. 5, §5.3; catalogue property 6")
claim(DOC, "mc_basic_grid_tables", kind="known-answer", operations=(f"{DOC}.mc_basic",),
      statement="MC Basic on the 5 x 5 grid world (r_forbidden = -10, gamma = 0.9) with episodes of length L "
                "reproduces every panel of the book's Fig. 5.4 (L = 1, 2, 3, 15 and L = 100 = Fig. 3.4(d)), and "
                "the 3 x 3 example's q(s_1, .) = (-10, 7.29, 7.29, -10, -9).",
      source="Zhao Ch. 5, Fig. 5.4 and §5.2.2 example; catalogue known-answer vectors")
claim(DOC, "mc_epsilon_greedy_uniform_evaluation", kind="statistical", operations=(f"{DOC}.mc_epsilon_greedy",),
      statement="With epsilon = 1 every improvement is the uniform policy, so MC epsilon-greedy is every-visit "
                "evaluation of it: on a two-state world with uniform transitions and episodes of two steps, "
                "q(s, a) tends to R(s, a) + gamma mean(R) / 2 (a ratio of two means; Hoeffding on each, union over "
                "the pairs: false alarm <= 1e-6). Which state and action each draw gives is seen here: a sampler "
                "that always moves to the first state or takes the first action misses the bound.",
      source="Zhao Ch. 5, Alg. 5.3 and §5.3 (every-visit estimation)")
claim(DOC, "mc_control_optimal", kind="known-answer", operations=_CONTROL,
      statement="On the book's 2 x 2 grid (gamma = 0.9) MC Exploring Starts (first- and every-visit) and MC Basic "
                "reach a policy whose exact value is the book's v* = (9, 10, 10, 10); MC epsilon-greedy reaches the "
                "best epsilon-greedy policy (its exact value is the fixed point of (1 - eps) max q + eps mean q, "
                "1e-9). Checked for fixed seeds (the algorithms' convergence has no finite-sample bound).",
      source="Zhao Ch. 5, Algs. 5.1-5.3, §5.4; catalogue C.4")
claim(DOC, "monte_carlo_contract", kind="contract",
      operations=(f"{DOC}.epsilon_greedy", f"{DOC}.epsilon_greedy_sample", *_EST, *_CONTROL),
      statement="Bad input (epsilon outside [0, 1], start states out of range, an unknown visit rule, a "
                "non-stochastic P) is rejected with an ArgumentError naming the argument.",
      source="eqspec/contracts.py (the suite's input contract)")


# ---------------------------------------------------------------------------------------------------
# Domains: every argument over its whole range (eqspec/domain.py); the differential tests draw from them
# ---------------------------------------------------------------------------------------------------
# Worlds as rl_basics draws them (grid, random stochastic, deterministic; rewards with ties or spread), with
# rewards r given either per pair (S, A) or per transition (S, A, S). The samplers draw from the torch.Generator
# (or torch's global one when it is omitted); their output is a function of the inputs alone where every draw
# has one possible outcome: a deterministic world (grid or deterministic) and a deterministic policy. That is
# the domain of generate_episodes and of MC Basic (its policies are greedy, its starts exploring: every pair in
# turn). MC Exploring Starts and MC epsilon-greedy draw their start pairs (and epsilon-greedy actions) whatever
# the world: their outputs depend on the generator (determined=False), checked for the contract and the inputs.

DETERMINISTIC_WORLDS = ("grid", "deterministic")
SCALE = Real(1e-8, 1e8, edges=(1.0,), log=True)
EPSILON = Real(0.0, 1.0, edges=(0.0, 1.0, 0.1, 0.5))


def mc_world_sizes(worlds: tuple[str, ...] = WORLDS) -> dict:
    return dict(world_sizes(worlds), rform=Choice(("pair", "transition")))


def _rewards(gen, case):
    """r of the drawn world: R (S, A) itself, or a reward per transition (S, A, S) (ties: integers)."""
    P, R = domain_world(case)
    if case["rform"] == "pair":
        return R
    S, A = R.shape
    g = torch.Generator().manual_seed(case["wseed"] + 1)
    if case["rewards"] == "ties":
        return torch.randint(-1, 2, (S, A, S), generator=g).to(F64) * case["scale"]
    return torch.randn(S, A, S, generator=g, dtype=F64) * case["scale"]


WORLD_r = Built(_rewards, note="r of the drawn world: (S, A) or per transition (S, A, S)")
def _seeded_generator(gen, case):
    return torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=gen)))


# omitted (torch's global generator) or a seeded one, each pinned in turn
GENERATOR = Optional(Choice((named(Built(_seeded_generator, note="a seeded torch.Generator"), "seeded"),)))


def _q_table(shape):
    """Action values of the drawn shape: Gaussian, integers (ties), rows constant (all actions tie), or one
    action far above the rest; times the drawn scale."""
    def build(gen, case):
        size = tuple(case[n] for n in shape)
        kind = int(torch.randint(0, 4, (), generator=gen))
        if kind == 0:
            q = torch.randn(size, generator=gen, dtype=F64)
        elif kind == 1:
            q = torch.randint(-2, 3, size, generator=gen).to(F64)
        elif kind == 2:
            q = torch.randn(size[:-1] + (1,), generator=gen, dtype=F64).expand(size).clone()
        else:
            q = torch.randn(size, generator=gen, dtype=F64)
            q[..., int(torch.randint(0, size[-1], (), generator=gen))] += 1e3
        return q * case["scale"]
    return Built(build, note=f"q {shape}: Gaussian, integer ties, constant rows, one dominant action")


def _uniforms(edges_of):
    """n uniform draws in [0, 1), a third of them replaced by edge values (0, the largest double below 1, and
    those edges_of(case) names: epsilon itself, the boundaries k/A of the uniform branch)."""
    def build(gen, case):
        x = torch.rand(case["n"], generator=gen, dtype=F64)
        edges = torch.tensor([0.0, 1.0 - 2.0**-53, *edges_of(case)], dtype=F64)
        edges = edges[edges < 1.0]
        replace = torch.rand(case["n"], generator=gen) < 1 / 3
        x[replace] = edges[torch.randint(0, len(edges), (int(replace.sum()),), generator=gen)]
        return x
    return Built(build, note="uniforms in [0, 1) with edge values")


def _indices(rows: str, length: str, bound: str):
    """Indices in [0, bound) of shape (rows, length): uniform (repeated pairs when bound is small, never-visited
    ones when it is large), one constant index, or two alternating ones."""
    def build(gen, case):
        n, L, m = case[rows], case[length], case[bound]
        kind = int(torch.randint(0, 3, (), generator=gen))
        if kind == 0:
            return torch.randint(0, m, (n, L), generator=gen)
        if kind == 1:
            return torch.full((n, L), int(torch.randint(0, m, (), generator=gen)), dtype=torch.int64)
        pair = torch.randint(0, m, (2,), generator=gen)
        return pair[torch.arange(L) % 2].expand(n, L).clone()
    return Built(build, note=f"indices ({rows}, {length}) in [0, {bound})")


def _returns_rewards(gen, case):
    """Rewards (n, L): Gaussian, sparse (mostly 0, as in the grid world), or integers (ties), times the scale."""
    n, L = case["n"], case["L"]
    kind = int(torch.randint(0, 3, (), generator=gen))
    if kind == 0:
        r = torch.randn(n, L, generator=gen, dtype=F64)
    elif kind == 1:
        r = torch.randn(n, L, generator=gen, dtype=F64) * (torch.rand(n, L, generator=gen) < 0.2)
    else:
        r = torch.randint(-1, 2, (n, L), generator=gen).to(F64)
    return r * case["scale"]


REWARDS = Built(_returns_rewards, note="rewards (n, L): Gaussian, sparse, integer")


def _start_states(gen, case):
    return torch.randint(0, case["P"].shape[0], (case["n"],), generator=gen)


def _first_actions(gen, case):
    return torch.randint(0, case["P"].shape[1], (case["n"],), generator=gen)


def return_envelope(P, r, gamma: float, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest and largest return G from a pair (s, a) over every path of positive probability and every
    horizon 1..length (a visit at step t of an episode of this length sees length - t steps): (lo, hi), (S, A)."""
    P = dense(P).to(F64)
    r = r.to(F64) if r.dim() == 3 else r.to(F64)[..., None].expand(P.shape)
    possible = P > 0
    hi_k = lo_k = torch.zeros(P.shape[:2], dtype=F64)
    lo, hi = torch.full_like(hi_k, math.inf), torch.full_like(hi_k, -math.inf)
    for _ in range(length):
        up = r + gamma * hi_k.amax(1)[None, None, :]
        down = r + gamma * lo_k.amin(1)[None, None, :]
        hi_k = torch.where(possible, up, -math.inf).amax(-1)
        lo_k = torch.where(possible, down, math.inf).amin(-1)
        hi, lo = torch.maximum(hi, hi_k), torch.minimum(lo, lo_k)
    return lo, hi


def control_outputs_hold(inputs: dict, out) -> None:
    """What MC Exploring Starts and MC epsilon-greedy return whatever their random draws: each q(s, a) is 0 (never
    visited) or an average of returns, within return_envelope; each state's policy is the improvement of its own
    q(s, .) (greedy, or epsilon-greedy: a state never visited keeps the first policy, uniform for epsilon-greedy and
    greedy of q = 0 for exploring starts). The greedy action may be any within the tie band, widened by the
    rounding of another correct order of the averages."""
    q, pi = out
    P, r, gamma, L = inputs["P"], inputs["r"], inputs["gamma"], inputs["episode_length"]
    episodes, epsilon = inputs["episodes"], inputs.get("epsilon", 0.0)
    lo, hi = return_envelope(P, r, gamma, L)
    G = max(1.0, float(torch.cat([lo.abs(), hi.abs()]).max()))
    # an average of at most episodes * L returns, each of L terms: 4 (L + episodes L) eps of the largest, as the
    # differential test of mc_action_values allows
    slack = 4 * (L + episodes * L) * EPS * G
    outside = (q != 0) & ((q < lo - slack) | (q > hi + slack))
    if outside.any():
        s, a = (int(i) for i in outside.nonzero()[0])
        raise ConformanceError(f"q(s_{s}, a_{a}) = {float(q[s, a])!r} is no average of returns: every path of at "
                               f"most {L} steps from that pair returns between {float(lo[s, a])!r} and "
                               f"{float(hi[s, a])!r}")
    S, A = q.shape
    band = TIE_RTOL * G + 2 * slack
    uniform = torch.full((A,), 1.0 / A, dtype=F64)
    for s in range(S):
        if "epsilon" in inputs and torch.allclose(pi[s], uniform, rtol=0.0, atol=3 * EPS):
            continue  # never visited: the first policy of MC epsilon-greedy
        a = int(pi[s].argmax())
        improved = (1 - epsilon) * torch.nn.functional.one_hot(torch.tensor(a), A).to(F64) + epsilon / A
        if not torch.allclose(pi[s], improved, rtol=0.0, atol=3 * EPS) or float(q[s, a]) < float(q[s].max()) - band:
            raise ConformanceError(f"pi(.|s_{s}) = {pi[s].tolist()} is not the {'epsilon-' if epsilon else ''}greedy "
                                   f"policy of q(s_{s}, .) = {q[s].tolist()} (a tie band of {band:.3g})")


REGISTRY.attach_domain(f"{DOC}.epsilon_greedy", Domain(
    sizes=dict(S=Int(1, 6), A=Int(1, 5), scale=SCALE),
    args=dict(q=_q_table(("S", "A")), epsilon=EPSILON),
))
REGISTRY.attach_domain(f"{DOC}.epsilon_greedy_sample", Domain(
    sizes=dict(A=Int(1, 5), n=Int(1, 16), scale=SCALE),
    args=dict(q=_q_table(("A",)), epsilon=EPSILON,
              u=_uniforms(lambda case: (case["epsilon"],)),
              b=_uniforms(lambda case: tuple(k / case["A"] for k in range(1, case["A"])))),
    exact=("actions",),
))
REGISTRY.attach_domain(f"{DOC}.generate_episodes", Domain(
    sizes=dict(mc_world_sizes(DETERMINISTIC_WORLDS), n=Int(1, 6)),
    args=dict(P=WORLD_P, r=WORLD_r, pi=domain_policy(("deterministic", "first")),
              s0=Built(_start_states, note="start states (n,)"), length=Int(1, 12, edges=(1, 2)),
              a0=Optional(Built(_first_actions, note="first actions (n,)")), generator=GENERATOR),
    exact=("states", "actions", "rewards"), fixed=("P", "pi"),
    note="deterministic worlds and policies: every draw has one outcome, the episodes are determined",
))
REGISTRY.attach_domain(f"{DOC}.discounted_returns", Domain(
    sizes=dict(n=Int(1, 4, edges=(1,)), L=Int(1, 20, edges=(1, 2)), scale=SCALE),
    args=dict(rewards=REWARDS, gamma=Real(0.0, 1.0, edges=(0.0, 1.0, 0.5, 0.999))),
    large=dict(L=2000),
))
REGISTRY.attach_domain(f"{DOC}.mc_action_values", Domain(
    sizes=dict(n=Int(1, 4, edges=(1,)), L=Int(1, 15, edges=(1, 2)), scale=SCALE),
    args=dict(S=Int(1, 6, edges=(1,)), A=Int(1, 4, edges=(1,)), states=_indices("n", "L", "S"),
              actions=_indices("n", "L", "A"), rewards=REWARDS, gamma=Real(0.0, 1.0, edges=(0.0, 1.0, 0.9)),
              visit=Optional(Choice(VISITS))),
    exact=("counts",), large=dict(L=500),
))
REGISTRY.attach_domain(f"{DOC}.mc_basic", Domain(
    sizes=mc_world_sizes(DETERMINISTIC_WORLDS),
    args=dict(P=WORLD_P, r=WORLD_r, gamma=GAMMA, episode_length=Int(1, 15, edges=(1, 2)),
              iterations=Int(1, 8, edges=(1, 2)), episodes=Optional(Int(1, 3, edges=(1, 2))),
              pi0=Optional(domain_policy(("deterministic", "first"))), generator=GENERATOR),
    exact=("pi",), fixed=("P", "pi0"),
    note="deterministic worlds and policies (MC Basic's own are greedy): its episodes are determined",
))
REGISTRY.attach_domain(f"{DOC}.mc_exploring_starts", Domain(
    sizes=mc_world_sizes(),
    args=dict(P=WORLD_P, r=WORLD_r, gamma=GAMMA, episode_length=Int(1, 15, edges=(1, 2)),
              episodes=Int(1, 40, edges=(1, 2)), visit=Optional(Choice(("first", "every"))), generator=GENERATOR),
    determined=False, holds=control_outputs_hold, fixed=("P",),
))
REGISTRY.attach_domain(f"{DOC}.mc_epsilon_greedy", Domain(
    sizes=mc_world_sizes(),
    args=dict(P=WORLD_P, r=WORLD_r, gamma=GAMMA, epsilon=EPSILON, episode_length=Int(1, 15, edges=(1, 2)),
              episodes=Int(1, 40, edges=(1, 2)), generator=GENERATOR),
    determined=False, holds=control_outputs_hold, fixed=("P",),
))
