"""Property tests of the Monte Carlo document (specs/monte_carlo.py).

"MC converges to the Bellman values" is tested with an explicit bound: initial-visit returns of episodes from a
fixed pair are i.i.d. and bounded, so Hoeffding's inequality bounds each estimate's deviation from E[G_L]; the
union over pairs (or states), the sample sizes checked and a test's examples keeps the false-alarm probability
of each test <= 1e-6; and
|E[G_L] - q_pi| <= gamma^L max|v_pi| (the truncation) is added. Every sampler is seeded, so the ci run is
deterministic; the sample sizes are chosen so that a wrong discount, forward returns or double counting exceed
the bound (the mutants prove it).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eqspec.budget import distinct_digits
from eqspec.registry import REGISTRY
from specs import MATCHES_SPEC
from specs import monte_carlo as mc
from specs import rl_basics as rb
from specs.mdp import EPS, F64, solve_tolerance

from . import recording
from .harness import checks, close, equal, host, rejection_test
from .strategies_rl import FIG_3_4, GRID_5x5, check_table, printed_tolerance, random_mdps

DOC = "monte_carlo"
FALSE_ALARM = 1e-6
UP, RIGHT, DOWN, LEFT, STAY = range(5)
GRID_2x2 = dict(rows=2, cols=2, forbidden=[(1, 2)], target=(2, 2))
GRID_3x3 = dict(rows=3, cols=3, forbidden=[(2, 3), (3, 1)], target=(3, 3))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _deterministic(actions: list[int], A: int = 5) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(actions), A).to(F64)


# An epsilon-greedy probability, eps / |A| or 1 - eps + eps / |A|, is at most 3 roundings of numbers <= 1 (3 u), in
# the target as in the check's own reference: two of them differ by at most 6 u = 3 eps.
PROBABILITY_ATOL = 3 * EPS


def _probability_sum_atol(A: int) -> float:
    """sum_a pi(a|s) = 1: A probabilities of 3 u each, added with A - 1 roundings."""
    return (3 * A + A - 1) * EPS / 2


# --- the epsilon-greedy policy ------------------------------------------------------------------------

EPSILON_GREEDY_BOOK = {0.1: ("0.92", "0.02"), 0.2: ("0.84", "0.04"), 0.5: ("0.6", "0.1")}


@checks("monte_carlo.epsilon_greedy_policy", operation=f"{DOC}.epsilon_greedy")
def test_epsilon_greedy_known_answers(target):
    q = torch.tensor([[0.0, 3.0, 1.0, -2.0, 0.5]], dtype=F64)
    for epsilon, (greedy, other) in EPSILON_GREEDY_BOOK.items():
        pi = target(q, epsilon)[0]
        for a, p in enumerate(pi.tolist()):
            printed = greedy if a == 1 else other
            if abs(p - float(printed)) > printed_tolerance(printed) / 10:  # the book's numbers are exact
                raise AssertionError(f"epsilon = {epsilon}: pi(a_{a + 1}) = {p}, the book gives {printed}")


@checks("monte_carlo.epsilon_greedy_policy", operation=f"{DOC}.epsilon_greedy")
@given(S=st.integers(1, 10), A=st.integers(1, 6), epsilon=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_epsilon_greedy_probabilities(target, S, A, epsilon, seed):
    q = torch.randn(S, A, generator=_gen(seed), dtype=F64)
    pi = host(target(q, epsilon))
    close("sum_a pi(a|s) = 1", pi.sum(1), torch.ones(S, dtype=F64), atol=_probability_sum_atol(A))
    greedy = rb.greedy_policy(q).bool()
    close("pi(a*|s) = 1 - eps + eps/|A|", pi[greedy], torch.full((S,), 1 - epsilon + epsilon / A, dtype=F64),
          atol=PROBABILITY_ATOL)
    close("pi(a|s) = eps/|A| otherwise", pi[~greedy], torch.full(((A - 1) * S,), epsilon / A, dtype=F64),
          atol=PROBABILITY_ATOL)
    close("epsilon = 0 is greedy", target(q, 0.0), greedy.to(F64), atol=0.0)  # 1 - 0 + 0 / |A| and 0 / |A|: exact
    close("epsilon = 1 is uniform", target(q, 1.0), torch.full((S, A), 1.0 / A, dtype=F64), atol=PROBABILITY_ATOL)


def bernstein_half_width(p: float, n: int, false_alarm: float) -> float:
    """t with P(|mean - p| >= t) <= false_alarm for n i.i.d. Bernoulli(p): Bernstein's inequality
    2 exp(-n t^2 / (2 (p (1 - p) + t / 3))) solved for t."""
    L = math.log(2 / false_alarm)
    return (L / 3 + math.sqrt(L * L / 9 + 2 * n * p * (1 - p) * L)) / n


@checks("monte_carlo.epsilon_greedy_sampling", operation=f"{DOC}.epsilon_greedy_sample")
@pytest.mark.parametrize("epsilon", [0.1, 0.2, 0.5])
def test_epsilon_greedy_sampling(target, epsilon):
    n, A = 100_000, 5
    g = _gen(3002)
    q = torch.tensor([0.0, 3.0, 1.0, -2.0, 0.5], dtype=F64)
    u, b = torch.rand(n, generator=g, dtype=F64), torch.rand(n, generator=g, dtype=F64)
    actions = host(target(q, epsilon, u, b))
    freq = torch.bincount(actions, minlength=A).to(F64) / n
    pi = mc.epsilon_greedy(q[None], epsilon)[0]
    for a in range(A):
        t = bernstein_half_width(float(pi[a]), n, FALSE_ALARM / A)
        recording.statistic(f"|freq - pi| for a_{a + 1}, epsilon = {epsilon}", abs(float(freq[a] - pi[a])), t,
                            FALSE_ALARM / A)
        if abs(float(freq[a] - pi[a])) > t:
            off, bound = distinct_digits(abs(float(freq[a] - pi[a])), t)
            raise AssertionError(f"epsilon = {epsilon}: a_{a + 1} drawn with frequency {float(freq[a]):.5f}, "
                                 f"pi = {float(pi[a]):.5f}: off by {off} > Bernstein bound {bound}")


# --- returns ------------------------------------------------------------------------------------------

@checks("monte_carlo.returns_backward", operation=f"{DOC}.discounted_returns")
@given(n=st.integers(1, 20), L=st.integers(1, 80), gamma=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_returns_backward_equal_forward_sums(target, n, L, gamma, seed):
    rewards = torch.randn(n, L, generator=_gen(seed), dtype=F64)
    g = target(rewards, gamma)
    t = torch.arange(L)
    powers = torch.where(t[None, :] >= t[:, None], torch.tensor(gamma, dtype=F64) ** (t[None, :] - t[:, None]).clamp(
        min=0).to(F64), 0.0)  # powers[t, k] = gamma^(k - t) for k >= t
    forward = rewards @ powers.T
    # each g_t sums at most L terms gamma^k r of total size <= sum |r|: the backward recursion rounds twice per step,
    # the forward sum rounds each power, product and addition (3 per term): 5 L u, within 4 L eps = 8 L u
    close("backward g_t = sum_k gamma^k r_{t+k+1}", g, forward, atol=4 * L * EPS * float(rewards.abs().sum(1).max()))


# --- MC converges to the Bellman values ---------------------------------------------------------------

SAMPLE_SIZES = (100, 400, 1600)  # episodes per pair, nested prefixes of one run


def _hoeffding(width: float, n: int, false_alarm: float) -> float:
    """Hoeffding: the mean of n i.i.d. variables in an interval of this width deviates by more than this with
    probability <= false_alarm."""
    return width * math.sqrt(math.log(2 / false_alarm) / (2 * n))


def _mc_converges(mdp, generate, returns, estimate, label: str):
    P, r, R = mdp.tensors(reward_range=(0.0, 1.0))
    pi = mdp.policy()
    gamma, S, A = mdp.gamma, mdp.S, mdp.A
    L = max(1, math.ceil(math.log(1e-3) / math.log(gamma)))  # truncation bias <= 1e-3 max|v_pi|
    v_pi = rb.state_values(P, R, pi, gamma)
    q_pi = rb.action_values(P, R, v_pi, gamma)
    bias = gamma ** L * float(v_pi.abs().max())
    width = (1 - gamma ** L) / (1 - gamma)  # returns of rewards in [0, 1] lie in [0, width]
    n_max = max(SAMPLE_SIZES)
    # q_pi: n_max episodes from every pair, laid out episode-major so that a prefix holds n episodes per pair
    s0 = torch.arange(S).repeat_interleave(A).repeat(n_max)
    a0 = torch.arange(A).repeat(S).repeat(n_max)
    states, actions, rewards = host(generate(P, r, pi, s0, L, a0=a0, generator=mdp.generator(7)))
    # v_pi: n_max episodes from every state, first actions drawn from pi
    s0v = torch.arange(S).repeat(n_max)
    v_states, _, v_rewards = host(generate(P, r, pi, s0v, L, generator=mdp.generator(8)))
    v_returns = host(returns(v_rewards, gamma))[:, 0]
    # split over q and v, the sample sizes and the MC_EXAMPLES examples of each test: <= 1e-6 per test (union bound)
    alarm = FALSE_ALARM / (2 * len(SAMPLE_SIZES) * MC_EXAMPLES)
    points = []
    for n in SAMPLE_SIZES:
        rows = slice(0, n * S * A)
        q_hat, counts = host(estimate(states[rows], actions[rows], rewards[rows], gamma, S, A))
        if not torch.equal(counts, torch.full((S, A), float(n), dtype=counts.dtype)):
            raise AssertionError(f"initial-visit counts must be {n} per pair, got {counts.tolist()}")
        v_hat = v_returns[: n * S].reshape(n, S).mean(0)
        bound_q = _hoeffding(width, n, alarm / (S * A)) + bias
        bound_v = _hoeffding(width, n, alarm / S) + bias
        err_q, err_v = float((q_hat - q_pi).abs().max()), float((v_hat - v_pi).abs().max())
        recording.statistic(f"{label}: max |q_hat - q_pi|, n = {n}", err_q, bound_q, alarm)
        recording.statistic(f"{label}: max |v_hat - v_pi|, n = {n}", err_v, bound_v, alarm)
        points.append((n, err_q, bound_q))
        if err_q > bound_q or err_v > bound_v:
            (eq, bq), (ev, bv) = distinct_digits(err_q, bound_q), distinct_digits(err_v, bound_v)
            raise AssertionError(f"n = {n} episodes per pair: max |q_hat - q_pi| = {eq} (bound {bq}), "
                                 f"max |v_hat - v_pi| = {ev} (bound {bv})")
    if recording.current().examples <= 1:
        recording.series("mc_error", f"{label}: max |q_hat - q_pi|", "episodes per pair n", "error",
                         [(n, e) for n, e, _ in points], kind="loglog")
        recording.series("mc_error", "Hoeffding bound (false alarm 1e-6 per test) + truncation", "episodes per pair n",
                         "error", [(n, b) for n, _, b in points], kind="loglog")


_SMALL_MDPS = random_mdps(max_states=5, max_actions=3, gamma=(0.5, 0.8))
MC_EXAMPLES = 6
_MC_SETTINGS = settings(max_examples=MC_EXAMPLES)  # up to 24k episodes of 31 steps per example


def _estimate_initial(fn):
    return lambda *args: fn(*args, visit="initial")


@checks("monte_carlo.mc_converges_to_bellman", operation=f"{DOC}.generate_episodes")
@_MC_SETTINGS
@given(mdp=_SMALL_MDPS)
def test_mc_converges_episodes(target, mdp):
    if target.impl.origin == "thirdparty":
        pytest.skip(f"{target.name} steps one environment of its own; see test_mc_through_environment_step")
    _mc_converges(mdp, target, mc.discounted_returns, _estimate_initial(mc.mc_action_values), target.name)


@checks("monte_carlo.mc_converges_to_bellman", operation=f"{DOC}.discounted_returns")
@_MC_SETTINGS
@given(mdp=_SMALL_MDPS)
def test_mc_converges_returns(target, mdp):
    def estimate(states, actions, rewards, gamma, S, A):  # the estimator, fed the target's returns
        g = host(target(rewards, gamma))[:, 0]
        pair = states[:, 0] * A + actions[:, 0]
        num = torch.bincount(pair, minlength=S * A).to(F64)
        return (torch.zeros(S * A, dtype=F64).index_add_(0, pair, g) / num).reshape(S, A), num.reshape(S, A)

    _mc_converges(mdp, mc.generate_episodes, target, estimate, target.name)


@checks("monte_carlo.mc_converges_to_bellman", operation=f"{DOC}.mc_action_values")
@_MC_SETTINGS
@given(mdp=_SMALL_MDPS)
def test_mc_converges_estimates(target, mdp):
    _mc_converges(mdp, mc.generate_episodes, mc.discounted_returns, _estimate_initial(target), target.name)


# --- gymnasium: Monte Carlo through the environment's own step vs the Bellman values of its table ------------

GYM_GAMMA = 0.9
GYM_EPSILON = 0.2  # the epsilon-greedy policy of q*: stochastic, and it reaches the goal often
GYM_EPISODES = {"gymnasium.FrozenLake4x4": 2000, "gymnasium.FrozenLake8x8": 1000, "gymnasium.CliffWalking": 4000,
                "gymnasium.Taxi": 1000}
GYM_TRUNCATION = 1e-13  # value iteration run until gamma^K <= this
GYM_HORIZON_WITHOUT_LIMIT = 100  # CliffWalking has no TimeLimit: episodes of 100 steps, the table's H-step value


def empirical_bernstein(x: torch.Tensor, width: float, false_alarm: float) -> float:
    """Two-sided empirical Bernstein bound (Maurer & Pontil 2009, Thm 4, scaled to an interval of this width):
    |mean - E| <= sqrt(2 V_n ln(4/delta) / n) + 7 width ln(4/delta) / (3 (n - 1)), V_n the sample variance."""
    n = x.numel()
    L = math.log(4 / false_alarm)
    return math.sqrt(2 * float(x.var()) * L / n) + 7 * width * L / (3 * (n - 1))


def return_range(P, r, gamma: float, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest and largest H-step return from each state over every path of positive probability."""
    possible = P > 0
    lo = hi = torch.zeros(P.shape[0], dtype=F64)
    for _ in range(horizon):
        hi = torch.where(possible, r + gamma * hi, -math.inf).amax(dim=(1, 2))
        lo = torch.where(possible, r + gamma * lo, math.inf).amin(dim=(1, 2))
    return lo, hi


@checks("monte_carlo.mc_converges_to_bellman", operation=f"{DOC}.generate_episodes")
def test_mc_through_environment_step(target):
    """gymnasium's two views of its dynamics agree: Monte Carlo returns of episodes run through env.step converge
    to the values computed from env.unwrapped.P (H-step values: gymnasium's TimeLimit truncates at H). Our
    solvers (every implementation of value and policy iteration) agree on the table first."""
    pytest.importorskip("gymnasium", reason="the gymnasium tables need gymnasium (tox -e thirdparty)")
    from implementations.thirdparty.rl import ENVIRONMENTS
    from implementations.thirdparty.rl.tables import table

    name = target.name if target.name in ENVIRONMENTS else "gymnasium.FrozenLake4x4"  # ours: on a real table
    env = table(name)
    P, r = env.P, env.r
    R = (P * r).sum(-1)
    v_star = rb.optimal_values(P, R, GYM_GAMMA)
    scale = max(1.0, float(v_star.abs().max()))
    S, A = R.shape
    K = math.ceil(math.log(GYM_TRUNCATION) / math.log(GYM_GAMMA))
    sweep = (S + A + 2) * EPS * (float(R.abs().max()) + GYM_GAMMA * scale)  # one Bellman sweep's rounding
    # the spec's v*, a posteriori: T is a gamma-contraction, |v - v*| <= |T v - v| / (1 - gamma)
    e_star = (float((rb.bellman_optimality_operator(P, R, v_star, GYM_GAMMA) - v_star).abs().max()) + sweep) / \
        (1 - GYM_GAMMA)
    # VI from 0: gamma^K of |v*| plus its sweeps' rounding, which the contraction keeps below sweep / (1 - gamma);
    # PI: its solves, and greedy choices that may give up a tie, q's rounding and the solves' error (both sides)
    e_solve = solve_tolerance(S, GYM_GAMMA, scale)
    greedy_slack = rb.TIE_RTOL * scale + 2 * (sweep + GYM_GAMMA * e_solve)
    tolerance = {"value_iteration": GYM_TRUNCATION * scale + sweep / (1 - GYM_GAMMA) + e_star,
                 "policy_iteration": e_solve + greedy_slack / (1 - GYM_GAMMA) + e_star}
    for op, call in (("value_iteration", lambda fn: fn(P, R, GYM_GAMMA, iterations=K)[0][-1]),
                     ("policy_iteration", lambda fn: fn(P, R, GYM_GAMMA)[0][-1])):
        for impl in REGISTRY.implementations_of(f"rl_basics.{op}", origins=("spec", "torch")):
            close(f"{name}: v* of {op} ({impl.name}) = v* of PI (spec)", call(impl.load()), v_star,
                  atol=tolerance[op])
    pi = mc.epsilon_greedy(rb.action_values(P, R, v_star, GYM_GAMMA), GYM_EPSILON)
    H = env.horizon or GYM_HORIZON_WITHOUT_LIMIT
    zero = torch.zeros(P.shape[0], dtype=F64)
    v_H = rb.iterative_policy_evaluation(P, R, pi, GYM_GAMMA, zero, H)
    n = GYM_EPISODES[name]
    s0 = torch.full((n,), env.start, dtype=torch.int64)
    _, _, rewards = target(P, r, pi, s0, H, generator=_gen(3008))
    G = mc.discounted_returns(rewards, GYM_GAMMA)[:, 0]
    estimate = float(G.mean())
    lo, hi = return_range(P, r, GYM_GAMMA, H)
    width = float(hi[env.start] - lo[env.start])
    # The worst paths make the range wide (CliffWalking: a fall costs -100), so the tighter of Hoeffding and the
    # empirical Bernstein bound is used, each at half the false-alarm probability.
    bound = min(_hoeffding(width, n, FALSE_ALARM / 2), empirical_bernstein(G, width, FALSE_ALARM / 2))
    error = abs(estimate - float(v_H[env.start]))
    recording.statistic(f"{name}: |MC through step - v_H(start)|, {n} episodes of <= {H} steps", error, bound,
                        FALSE_ALARM)
    if error > bound:
        off, allowed = distinct_digits(error, bound)
        raise AssertionError(f"{name}: MC estimate {estimate:.5f} of v_H(start) = {float(v_H[env.start]):.5f} is "
                             f"off by {off} > the bound {allowed}")


# --- first-visit and every-visit ----------------------------------------------------------------------

@checks("monte_carlo.first_vs_every_visit", operation=f"{DOC}.mc_action_values")
@given(S=st.integers(1, 5), A=st.integers(1, 4), n=st.integers(1, 6), L=st.integers(1, 12),
       gamma=st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0), visit=st.sampled_from([None, *mc.VISITS]),
       seed=st.integers(0, 2**31 - 1))
def test_action_values_match_the_spec(target, S, A, n, L, gamma, visit, seed):
    """The episodes are passed in, so the estimates are determined: every entry of q and of the counts, in every
    visit mode (and with visit left at its default), gamma from 0 to 1, pairs repeated or never visited (q = 0)."""
    g = _gen(seed)
    states, actions = torch.randint(0, S, (n, L), generator=g), torch.randint(0, A, (n, L), generator=g)
    rewards = torch.randn(n, L, generator=g, dtype=F64)
    kw = {} if visit is None else {"visit": visit}
    q, counts = host(target(states, actions, rewards, gamma, S, A, **kw))
    q_ref, counts_ref = mc.mc_action_values(states, actions, rewards, gamma, S, A, **kw)
    equal("counts", counts, counts_ref)
    equal("q of the pairs never visited", q[counts_ref == 0], q_ref[counts_ref == 0])
    # returns: sums of <= L discounted rewards (each within 5 L u of exact), averaged over <= n L of them
    close("q", q, q_ref, atol=4 * (L + n * L) * EPS * float(rewards.abs().sum(1).max()))


@checks("monte_carlo.first_vs_every_visit", operation=f"{DOC}.mc_action_values")
@given(S=st.integers(1, 6), A=st.integers(1, 4), n=st.integers(1, 10), gamma=st.floats(0.0, 0.99),
       seed=st.integers(0, 2**31 - 1))
def test_first_and_every_visit_agree_without_repeats(target, S, A, n, gamma, seed):
    g = _gen(seed)
    L = int(torch.randint(1, S * A + 1, (1,), generator=g))
    pairs = torch.stack([torch.randperm(S * A, generator=g)[:L] for _ in range(n)])  # no pair twice in an episode
    states, actions = pairs // A, pairs % A
    rewards = torch.randn(n, L, generator=g, dtype=F64)
    q_first, c_first = target(states, actions, rewards, gamma, S, A, visit="first")
    q_every, c_every = target(states, actions, rewards, gamma, S, A, visit="every")
    close("counts", c_first, c_every, atol=0.0)
    # the same returns (sums of <= L discounted rewards, each side within 5 L u of exact: see the returns test),
    # averaged over the same episodes perhaps in another order (n more roundings of numbers <= sum |r|)
    close("first-visit = every-visit", q_first, q_every,
          atol=4 * (L + n) * EPS * float(rewards.abs().sum(1).max()))


@checks("monte_carlo.first_vs_every_visit", operation=f"{DOC}.mc_action_values")
def test_first_and_every_visit_differ_with_repeats(target):
    # one episode (s_0, a_0), (s_0, a_0), (s_1, a_0) with rewards 1, 1, 0 and gamma = 1/2: returns 1.5, 1, 0
    states, actions = torch.tensor([[0, 0, 1]]), torch.tensor([[0, 0, 0]])
    rewards = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    q_first, c_first = target(states, actions, rewards, 0.5, 2, 1, visit="first")
    q_every, c_every = target(states, actions, rewards, 0.5, 2, 1, visit="every")
    close("first-visit q", q_first, torch.tensor([[1.5], [0.0]], dtype=F64), atol=1e-15)
    close("every-visit q", q_every, torch.tensor([[1.25], [0.0]], dtype=F64), atol=1e-15)
    close("first-visit counts", c_first.to(F64), torch.tensor([[1.0], [1.0]], dtype=F64), atol=0.0)
    close("every-visit counts", c_every.to(F64), torch.tensor([[2.0], [1.0]], dtype=F64), atol=0.0)


# --- MC Basic and the book's Fig. 5.4 -------------------------------------------------------------------

FIG_5_4 = {  # episode length -> the catalogue's table ('..': not given there)
    1: ".. .. .. .. .. | .. .. .. .. .. | .. .. 1 .. .. | .. 1 1 1 .. | .. .. 1 .. ..",
    2: "0 0 0 0 0 | 0 0 0 0 0 | 0 0 1.9 0 0 | 0 1.9 1.9 1.9 0 | 0 0.9 1.9 0.9 0",
    3: ".. .. .. .. .. | .. .. .. .. .. | .. .. 2.71 .. .. | .. 2.71 2.71 2.71 .. | .. 1.71 2.71 1.71 0.81",
    15: "1.43 1.82 2.25 2.72 3.26 | 1.08 1.43 2.72 3.26 3.85 | .77 .48 7.94 3.85 4.50 | .48 7.94 7.94 7.94 5.23 | "
        ".23 6.94 7.94 6.94 6.04",
    100: FIG_3_4["d"][2],
}


@checks("monte_carlo.mc_basic_grid_tables", operation=f"{DOC}.mc_basic")
@pytest.mark.parametrize("length", list(FIG_5_4))
def test_mc_basic_fig_5_4(target, length):
    P, R = rb.grid_world(**GRID_5x5, r_forbidden=-10.0)
    q, pi = target(P, R, 0.9, episode_length=length, iterations=100, generator=_gen(3003))
    v = (pi * q).sum(1)  # the estimated value of the final (greedy) policy
    check_table(f"Fig. 5.4, L = {length}", v, FIG_5_4[length], figure=f"fig_5_4_L{length}",
                atol=3e-4 if length == 100 else None)  # the catalogue: L = 100 equals Fig. 3.4(d) to 3e-4


@checks("monte_carlo.mc_basic_grid_tables", operation=f"{DOC}.mc_basic")
def test_mc_basic_example_3x3(target):
    """Ch. 5's MC Basic example: q_pi0(s_1, .) on the 3 x 3 grid (r_forbidden = -10), estimated by one
    iteration (episodes of 200 steps: the truncation leaves 0.9^200 * 10 < 1e-8)."""
    P, R = rb.grid_world(**GRID_3x3, r_forbidden=-10.0)
    pi0 = _deterministic([UP, DOWN, STAY, RIGHT, DOWN, STAY, STAY, RIGHT, STAY])
    q, _ = target(P, R, 0.9, episode_length=200, iterations=1, pi0=pi0, generator=_gen(3004))
    for a, printed in enumerate(["-10", "7.29", "7.29", "-10", "-9"]):
        if abs(float(q[0, a]) - float(printed)) > printed_tolerance(printed):
            raise AssertionError(f"q_pi0(s_1, a_{a + 1}) = {float(q[0, a]):.6g}, the book prints {printed}")


# --- control reaches an optimal (or best epsilon-greedy) policy --------------------------------------

BEST_EPSILON_GREEDY_TOL = 1e-13  # the fixed-point iteration of mc.epsilon_greedy_optimal_values stops at this
V_STAR_2x2 = torch.tensor([9.0, 10.0, 10.0, 10.0], dtype=F64)  # Ch. 2's 2 x 2 grid, gamma = 0.9


def _assert_optimal(name: str, P, R, pi) -> None:
    # v* is exact; the final policy's value is a 4-state solve at gamma = 0.9 (an optimal policy's is v*)
    close(f"{name}: exact value of the final policy = v*", rb.state_values(P, R, pi, 0.9), V_STAR_2x2,
          atol=solve_tolerance(4, 0.9, float(V_STAR_2x2.max())))


@checks("monte_carlo.mc_control_optimal", operation=f"{DOC}.mc_basic")
def test_mc_basic_reaches_optimal(target):
    P, R = rb.grid_world(**GRID_2x2)
    _, pi = host(target(P, R, 0.9, episode_length=100, iterations=20, generator=_gen(3005)))
    _assert_optimal("MC Basic", P, R, pi)


@checks("monte_carlo.mc_control_optimal", operation=f"{DOC}.mc_exploring_starts")
@pytest.mark.parametrize("visit", ["first", "every"])
def test_mc_exploring_starts_reaches_optimal(target, visit):
    P, R = rb.grid_world(**GRID_2x2)
    _, pi = host(target(P, R, 0.9, episode_length=40, episodes=2000, visit=visit, generator=_gen(3006)))
    _assert_optimal(f"MC Exploring Starts ({visit}-visit)", P, R, pi)


@checks("monte_carlo.mc_control_optimal", operation=f"{DOC}.mc_epsilon_greedy")
def test_mc_epsilon_greedy_reaches_best_epsilon_greedy_policy(target):
    P, R = rb.grid_world(**GRID_2x2)
    epsilon = 0.1
    _, pi = host(target(P, R, 0.9, epsilon, episode_length=60, episodes=300, generator=_gen(3007)))
    close("the final policy is epsilon-greedy", pi, mc.epsilon_greedy(pi, epsilon), atol=PROBABILITY_ATOL)
    best = mc.epsilon_greedy_optimal_values(P, R, 0.9, epsilon, tol=BEST_EPSILON_GREEDY_TOL)
    S, A = R.shape
    scale = float(best.abs().max())
    # the best value iterates a 0.9-contraction until a step is <= tol (1 - gamma): within gamma tol of its fixed
    # point, plus its sweeps' rounding ((S + A + 2) eps per sweep, kept below that / (1 - gamma)); the final
    # policy's exact value is a 4-state solve
    e_best = 0.9 * BEST_EPSILON_GREEDY_TOL + (S + A + 2) * EPS * (float(R.abs().max()) + 0.9 * scale) / (1 - 0.9)
    close("exact value of the final policy = best in Pi_epsilon", rb.state_values(P, R, pi, 0.9), best,
          atol=e_best + solve_tolerance(S, 0.9, scale))


# --- what the control algorithms return, where their draws cannot change it -------------------------

@checks(f"{DOC}.{MATCHES_SPEC}", operation=f"{DOC}.mc_exploring_starts")
@given(c=st.floats(-10, 10), gamma=st.sampled_from([0.0, 0.5]) | st.floats(0.0, 0.999), L=st.integers(1, 15),
       episodes=st.integers(1, 20), visit=st.sampled_from(["first", "every"]), per_transition=st.booleans())
def test_mc_exploring_starts_one_pair(target, c, gamma, L, episodes, visit, per_transition):
    """One state, one action: every episode is the same, whatever is drawn, so every return and every average is
    determined - each compared with the spec's (first-visit: the return of the whole episode; every-visit: the mean
    of its L returns)."""
    P, r = _one_pair(c, per_transition)
    q, pi = host(target(P, r, gamma, episode_length=L, episodes=episodes, visit=visit, generator=_gen(3009)))
    q_ref, pi_ref = mc.mc_exploring_starts(P, r, gamma, episode_length=L, episodes=episodes, visit=visit,
                                           generator=_gen(3009))
    _compare_one_pair(q, pi, q_ref, pi_ref, L, episodes, c)


@checks(f"{DOC}.{MATCHES_SPEC}", operation=f"{DOC}.mc_epsilon_greedy")
@given(c=st.floats(-10, 10), gamma=st.sampled_from([0.0, 0.5]) | st.floats(0.0, 0.999), L=st.integers(1, 15),
       episodes=st.integers(1, 20), epsilon=st.sampled_from([0.0, 1.0]) | st.floats(0, 1),
       per_transition=st.booleans())
def test_mc_epsilon_greedy_one_pair(target, c, gamma, L, episodes, epsilon, per_transition):
    """One state, one action: the every-visit average of an episode's L returns, whatever is drawn."""
    P, r = _one_pair(c, per_transition)
    q, pi = host(target(P, r, gamma, epsilon, episode_length=L, episodes=episodes, generator=_gen(3010)))
    q_ref, pi_ref = mc.mc_epsilon_greedy(P, r, gamma, epsilon, episode_length=L, episodes=episodes,
                                         generator=_gen(3010))
    _compare_one_pair(q, pi, q_ref, pi_ref, L, episodes, c)


def _one_pair(c: float, per_transition: bool):
    P = torch.ones(1, 1, 1, dtype=F64)
    return P, torch.full((1, 1, 1) if per_transition else (1, 1), c, dtype=F64)


def _compare_one_pair(q, pi, q_ref, pi_ref, L: int, episodes: int, c: float) -> None:
    equal("pi", pi, pi_ref)
    # returns of <= L rewards |c| (5 L u each, as in the returns test), averaged over <= episodes L of them
    close("q", q, q_ref, atol=4 * (L + episodes * L) * EPS * L * abs(c))


@checks(f"{DOC}.{MATCHES_SPEC}", operation=f"{DOC}.mc_basic")
@given(S=st.integers(1, 4), A=st.integers(1, 3), iterations=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_mc_basic_one_episode_per_pair(target, S, A, iterations, seed):
    """MC Basic with `episodes` left at its default: one episode per pair, so in episodes of one step each q(s, a)
    is the one reward r(s, a, s') drawn - one of the rewards of that pair, exactly, in any world (an average of two
    draws is not)."""
    g = _gen(seed)
    P = torch.rand(S, A, S, generator=g, dtype=F64) + 0.1  # every next state possible
    P = P / P.sum(-1, keepdim=True)
    r = torch.randn(S, A, S, generator=g, dtype=F64)
    q, _ = host(target(P, r, 0.9, episode_length=1, iterations=iterations, generator=_gen(seed + 1)))
    hit = (q[..., None] == r).any(-1)
    if not hit.all():
        s, a = (int(i) for i in (~hit).nonzero()[0])
        raise AssertionError(f"q(s_{s}, a_{a}) = {float(q[s, a])!r} is none of that pair's rewards "
                             f"{r[s, a].tolist()}: one episode of one step per pair returns one of them")


UNIFORM_WORLD_R = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=F64)  # neither the first state's nor action's mean
UNIFORM_EVALUATION_EPISODES = 20_000


@checks("monte_carlo.mc_epsilon_greedy_uniform_evaluation", operation=f"{DOC}.mc_epsilon_greedy")
def test_mc_epsilon_greedy_evaluates_the_uniform_policy(target):
    """Episodes (s_0, a_0, s_1, a_1), each pair uniform and independent (uniform start, policy and transitions).
    Every-visit: q_hat(s, a) = R(s, a) + gamma sum_i X_i / sum_i N_i, with X_i = [(s_0, a_0) = (s, a)] R(s_1, a_1)
    (mean mean(R) / 4) and N_i the visits of the pair in episode i (in {0, 1, 2}, mean 1/2). With
    Z_i = X_i - c N_i, c = mean(R) / 2, in [-2c, max R] and zero mean, Hoeffding bounds |mean Z| by h and the
    mean of N below by 1/2 - t: |q_hat - R - gamma c| <= gamma h / (1/2 - t)."""
    R, gamma, n = UNIFORM_WORLD_R, 0.9, UNIFORM_EVALUATION_EPISODES
    P = torch.full((2, 2, 2), 0.5, dtype=F64)
    q, _ = host(target(P, R, gamma, 1.0, episode_length=2, episodes=n, generator=_gen(3011)))
    c = float(R.mean()) / 2
    alarm = FALSE_ALARM / (2 * R.numel())  # two events per pair
    h = _hoeffding(float(R.max()) + 2 * c, n, alarm)
    t = 2 * math.sqrt(math.log(1 / alarm) / (2 * n))  # one-sided, N_i in [0, 2]
    bound = gamma * h / (0.5 - t)
    error = float((q - R - gamma * c).abs().max())
    recording.statistic("max |q_hat - (R + gamma mean(R) / 2)|, epsilon = 1", error, bound, FALSE_ALARM)
    if error > bound:
        off, allowed = distinct_digits(error, bound)
        raise AssertionError(f"epsilon = 1 (the uniform policy throughout): q_hat = {q.tolist()} is off the "
                             f"every-visit limit R + gamma mean(R) / 2 by {off} > the bound {allowed}")


# --- contracts ----------------------------------------------------------------------------------------

def _grid():
    P, R = rb.grid_world(**GRID_2x2)
    return P, R, torch.full((4, 5), 0.2, dtype=F64)


CONTRACT_CASES = {
    "epsilon_greedy": {"epsilon = 1.5": (lambda fn: fn(torch.zeros(2, 3, dtype=F64), 1.5), "epsilon")},
    "epsilon_greedy_sample": {
        "epsilon = -0.1": (lambda fn: fn(torch.zeros(3, dtype=F64), -0.1, torch.rand(4, dtype=F64),
                                         torch.rand(4, dtype=F64)), "epsilon")},
    "generate_episodes": {
        "s0 out of range": (lambda fn: fn(*_grid(), torch.tensor([4]), 3, generator=_gen(0)), "s0"),
        "P rows not summing to 1": (lambda fn: fn(_grid()[0] * 0.5, *_grid()[1:], torch.tensor([0]), 3,
                                                  generator=_gen(0)), "P"),
    },
    "discounted_returns": {
        "rewards of rank 1": (lambda fn: fn(torch.ones(3, dtype=F64), 0.9), "rewards"),
        "gamma = 2": (lambda fn: fn(torch.ones(1, 3, dtype=F64), 2.0), "gamma"),
    },
    "mc_action_values": {
        "visit = 'last'": (lambda fn: fn(torch.zeros(1, 2, dtype=torch.int64), torch.zeros(1, 2, dtype=torch.int64),
                                         torch.ones(1, 2, dtype=F64), 0.9, 1, 1, visit="last"), "visit"),
        "states out of range": (lambda fn: fn(torch.full((1, 2), 3), torch.zeros(1, 2, dtype=torch.int64),
                                              torch.ones(1, 2, dtype=F64), 0.9, 2, 1), "states"),
    },
    "mc_basic": {"gamma = 1": (lambda fn: fn(*_grid()[:2], 1.0, episode_length=2, iterations=1), "gamma")},
    "mc_exploring_starts": {
        "visit = 'initial'": (lambda fn: fn(*_grid()[:2], 0.9, episode_length=2, episodes=1, visit="initial"),
                              "visit")},
    "mc_epsilon_greedy": {
        "epsilon = 2": (lambda fn: fn(*_grid()[:2], 0.9, 2.0, episode_length=2, episodes=1), "epsilon")},
}




def _contract(op: str):
    return rejection_test("monte_carlo.monte_carlo_contract", f"{DOC}.{op}", CONTRACT_CASES[op])


test_epsilon_greedy_rejects_bad_input = _contract("epsilon_greedy")
test_epsilon_greedy_sample_rejects_bad_input = _contract("epsilon_greedy_sample")
test_generate_episodes_rejects_bad_input = _contract("generate_episodes")
test_discounted_returns_rejects_bad_input = _contract("discounted_returns")
test_mc_action_values_rejects_bad_input = _contract("mc_action_values")
test_mc_basic_rejects_bad_input = _contract("mc_basic")
test_mc_exploring_starts_rejects_bad_input = _contract("mc_exploring_starts")
test_mc_epsilon_greedy_rejects_bad_input = _contract("mc_epsilon_greedy")
