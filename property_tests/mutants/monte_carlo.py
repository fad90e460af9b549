"""Mutants of the Monte Carlo document (catalogue/rl_zhao.md, C "plausible implementation bugs": epsilon-greedy
giving epsilon/(|A| - 1) to the others or 1 - epsilon to the greedy action, forward-accumulated returns,
every-visit averages that double-count, a wrong discount), each a small change to the spec's code."""

from __future__ import annotations

import torch

from specs import monte_carlo as mc
from specs import rl_basics as rb
from specs.mdp import F64

from . import mutant

DOC = "monte_carlo"
_M = "property_tests.mutants.monte_carlo"


# --- epsilon-greedy ---------------------------------------------------------------------------------

def eg_others_over_a_minus_1(q, epsilon):
    """The greedy action gets 1 - epsilon and each other one epsilon / (|A| - 1)."""
    A = q.shape[1]
    greedy = rb.greedy_policy(q.to(F64))
    return greedy * (1 - epsilon) + (1 - greedy) * (epsilon / max(A - 1, 1))


def eg_greedy_one_minus_eps(q, epsilon):
    """The greedy action gets 1 - epsilon, the others epsilon / |A| (the rows no longer sum to 1)."""
    greedy = rb.greedy_policy(q.to(F64))
    return greedy * (1 - epsilon) + (1 - greedy) * epsilon / q.shape[1]


def eg_unchecked(q, epsilon):
    return (1 - epsilon) * rb.greedy_policy(q.to(F64)) + epsilon / q.shape[1]


def eg_sample_uniform_excludes_greedy(q, epsilon, u, b):
    """The exploring branch draws among the non-greedy actions only."""
    a_star = int(rb.greedy_policy(q[None].to(F64)).argmax())
    other = (b * (q.shape[0] - 1)).long()
    other = other + (other >= a_star).long()
    return torch.where(u >= epsilon, torch.full_like(other, a_star), other)


def eg_sample_inverted(q, epsilon, u, b):
    """Takes the greedy action when x < epsilon (and explores when x >= epsilon)."""
    a_star = int(rb.greedy_policy(q[None].to(F64)).argmax())
    uniform = (b * q.shape[0]).long().clamp(max=q.shape[0] - 1)
    return torch.where(u < epsilon, torch.full_like(uniform, a_star), uniform)


# --- episodes and returns ---------------------------------------------------------------------------

def episodes_ignore_a0(P, r, pi, s0, length, *, a0=None, generator=None):
    """Exploring starts dropped: the first action is drawn from pi whatever a0 says."""
    return mc.generate_episodes(P, r, pi, s0, length, generator=generator)


def episodes_reward_shifted(P, r, pi, s0, length, *, a0=None, generator=None):
    """Stores r_{t+2} at step t (the reward of the next transition): the first reward is lost."""
    states, actions, rewards = mc.generate_episodes(P, r, pi, s0, length + 1, a0=a0, generator=generator)
    return states[:, :length], actions[:, :length], rewards[:, 1:]


def returns_forward(rewards, gamma):
    """Accumulates forward: g_t = gamma g_{t-1} + r_{t+1}, the discounted sum of the past."""
    g = torch.zeros(rewards.shape[0], dtype=F64)
    out = torch.empty_like(rewards, dtype=F64)
    for t in range(rewards.shape[1]):
        g = gamma * g + rewards[:, t]
        out[:, t] = g
    return out


def returns_gamma_squared(rewards, gamma):
    return mc.discounted_returns(rewards, gamma * gamma) if gamma <= 1 else mc.discounted_returns(rewards, gamma)


def returns_unchecked(rewards, gamma):
    r = rewards if rewards.dim() == 2 else rewards[None]
    g = torch.zeros(r.shape[0], dtype=F64)
    out = torch.empty_like(r, dtype=F64)
    for t in range(r.shape[1] - 1, -1, -1):
        g = gamma * g + r[:, t]
        out[:, t] = g
    return out


def estimate_double_counts(states, actions, rewards, gamma, S, A, *, visit="initial"):
    """Adds each return to Returns twice but counts it once."""
    q, counts = mc.mc_action_values(states, actions, rewards, gamma, S, A, visit=visit)
    return 2 * q, counts


def estimate_undiscounted(states, actions, rewards, gamma, S, A, *, visit="initial"):
    return mc.mc_action_values(states, actions, rewards, 1.0, S, A, visit=visit)


def estimate_first_is_last(states, actions, rewards, gamma, S, A, *, visit="initial"):
    """'First-visit' that keeps the last visit of a pair (the backward loop overwrites instead of skipping)."""
    if visit != "first":
        return mc.mc_action_values(states, actions, rewards, gamma, S, A, visit=visit)
    flipped = mc.first_visits(torch.flip(states, [1]), torch.flip(actions, [1]), A)
    last = torch.flip(flipped, [1])
    g = mc.discounted_returns(rewards.to(F64), gamma)
    pair = (states * A + actions)[last]
    returns = torch.zeros(S * A, dtype=F64).index_add_(0, pair, g[last])
    num = torch.zeros(S * A, dtype=F64).index_add_(0, pair, torch.ones_like(g[last]))
    return torch.where(num > 0, returns / num.clamp(min=1), 0.0).reshape(S, A), num.reshape(S, A)


def estimate_unchecked(states, actions, rewards, gamma, S, A, *, visit="initial"):
    """Treats any unknown visit rule as every-visit, and indexes without checking."""
    return mc.mc_action_values(states.clamp(0, S - 1), actions, rewards, gamma, S, A,
                               visit=visit if visit in mc.VISITS else "every")


# --- control ----------------------------------------------------------------------------------------

def mc_basic_short_episodes(P, r, gamma, *, episode_length, iterations, episodes=1, pi0=None, generator=None):
    """Episodes one step shorter than asked (and length 1 kept)."""
    return mc.mc_basic(P, r, gamma, episode_length=max(episode_length - 1, 1), iterations=iterations,
                       episodes=episodes, pi0=pi0, generator=generator)


def mc_basic_forward_returns(P, r, gamma, *, episode_length, iterations, episodes=1, pi0=None, generator=None):
    """Averages the first reward only plus gamma times the rest undiscounted (a forward-accumulated slip)."""
    S, A = r.shape[0], r.shape[1]
    pi = pi0.to(F64) if pi0 is not None else rb.greedy_policy(torch.zeros(S, A, dtype=F64))
    s0 = torch.arange(S).repeat_interleave(A).repeat(episodes)
    a0 = torch.arange(A).repeat(S).repeat(episodes)
    for _ in range(iterations):
        states, actions, rewards = mc.generate_episodes(P, r, pi, s0, episode_length, a0=a0, generator=generator)
        g = returns_forward(rewards, gamma)[:, -1]
        q = torch.zeros(S * A, dtype=F64).index_add_(0, states[:, 0] * A + actions[:, 0], g) / episodes
        q = q.reshape(S, A)
        new = rb.greedy_policy(q)
        if torch.equal(new, pi):
            break
        pi = new
    return q, pi


def mc_unchecked(P, r, gamma, *, episode_length, iterations, episodes=1, pi0=None, generator=None):
    return mc_basic_short_episodes(P, r, min(gamma, 0.99), episode_length=episode_length + 1, iterations=iterations,
                                   episodes=episodes, pi0=pi0, generator=generator)


def es_never_improves(P, r, gamma, *, episode_length, episodes, visit="every", generator=None):
    """Estimates q but never updates the policy (pi stays 'up' everywhere)."""
    S, A = r.shape[0], r.shape[1]
    pi = rb.greedy_policy(torch.zeros(S, A, dtype=F64))
    return mc._mc_control(P, r, gamma, pi, episodes, episode_length,
                          lambda p: divmod(int(torch.randint(0, S * A, (1,), generator=generator)), A),
                          visit, lambda q_s: pi[:q_s.shape[0]] * 0 + pi[0], generator)


def es_argmin(P, r, gamma, *, episode_length, episodes, visit="every", generator=None):
    """Improves with the worst action instead of the best."""
    S, A = r.shape[0], r.shape[1]
    pi = rb.greedy_policy(torch.zeros(S, A, dtype=F64))
    return mc._mc_control(P, r, gamma, pi, episodes, episode_length,
                          lambda p: divmod(int(torch.randint(0, S * A, (1,), generator=generator)), A),
                          visit, lambda q_s: rb.greedy_policy(-q_s), generator)


def eps_control_wrong_probabilities(P, r, gamma, epsilon, *, episode_length, episodes, generator=None):
    """MC epsilon-greedy whose policy gives epsilon / (|A| - 1) to the non-greedy actions."""
    S, A = r.shape[0], r.shape[1]

    def start(pi):
        s = int(torch.randint(0, S, (1,), generator=generator))
        return s, int(mc._categorical(pi[s:s + 1], generator)[0])

    return mc._mc_control(P, r, gamma, torch.full((S, A), 1.0 / A, dtype=F64), episodes, episode_length, start,
                          "every", lambda q_s: eg_others_over_a_minus_1(q_s, epsilon), generator)


def eps_control_greedy_updates(P, r, gamma, epsilon, *, episode_length, episodes, generator=None):
    """Explores with epsilon but stores the greedy policy (epsilon = 0 in the update)."""
    S, A = r.shape[0], r.shape[1]

    def start(pi):
        s = int(torch.randint(0, S, (1,), generator=generator))
        return s, int(mc._categorical(pi[s:s + 1], generator)[0])

    return mc._mc_control(P, r, gamma, torch.full((S, A), 1.0 / A, dtype=F64), episodes, episode_length, start,
                          "every", rb.greedy_policy, generator)


def eps_control_first_state(P, r, gamma, epsilon, *, episode_length, episodes, generator=None):
    """MC epsilon-greedy whose episodes all start in the first state (the start state is never drawn)."""
    S, A = r.shape[0], r.shape[1]

    def start(pi):
        return 0, int(mc._categorical(pi[0:1], generator)[0])

    return mc._mc_control(P, r, gamma, torch.full((S, A), 1.0 / A, dtype=F64), episodes, episode_length, start,
                          "every", lambda q_s: mc.epsilon_greedy(q_s, epsilon), generator)


def _c(name):
    return f"{DOC}.{name}"


_CONVERGE = _c("mc_converges_to_bellman")
MUTANTS = [
    mutant(_c("epsilon_greedy"), "epsilon_greedy.others_over_a_minus_1", f"{_M}:eg_others_over_a_minus_1",
           targets=(_c("epsilon_greedy_policy"),), notes="epsilon / (|A| - 1) to the others, 1 - epsilon greedy"),
    mutant(_c("epsilon_greedy"), "epsilon_greedy.greedy_one_minus_eps", f"{_M}:eg_greedy_one_minus_eps",
           targets=(_c("epsilon_greedy_policy"),), notes="1 - epsilon to the greedy action"),
    mutant(_c("epsilon_greedy"), "epsilon_greedy.unchecked", f"{_M}:eg_unchecked",
           targets=(_c("monte_carlo_contract"),), notes="accepts any epsilon"),
    mutant(_c("epsilon_greedy_sample"), "sample.excludes_greedy", f"{_M}:eg_sample_uniform_excludes_greedy",
           targets=(_c("epsilon_greedy_sampling"), _c("monte_carlo_contract")),
           notes="the exploring branch never picks a*; no input validation"),
    mutant(_c("epsilon_greedy_sample"), "sample.inverted", f"{_M}:eg_sample_inverted",
           targets=(_c("epsilon_greedy_sampling"),), notes="greedy when x < epsilon"),
    mutant(_c("generate_episodes"), "episodes.ignore_a0", f"{_M}:episodes_ignore_a0", targets=(_CONVERGE,),
           notes="no exploring start: a0 is ignored"),
    mutant(_c("generate_episodes"), "episodes.reward_shifted", f"{_M}:episodes_reward_shifted",
           targets=(_CONVERGE,), notes="stores r_{t+2} at step t"),
    mutant(_c("discounted_returns"), "returns.forward", f"{_M}:returns_forward",
           targets=(_c("returns_backward"), _CONVERGE), notes="accumulates forward"),
    mutant(_c("discounted_returns"), "returns.gamma_squared", f"{_M}:returns_gamma_squared",
           targets=(_c("returns_backward"), _CONVERGE), notes="discounts with gamma^2"),
    mutant(_c("discounted_returns"), "returns.unchecked", f"{_M}:returns_unchecked",
           targets=(_c("monte_carlo_contract"),), notes="accepts rank-1 rewards and any gamma"),
    mutant(_c("mc_action_values"), "estimate.double_counts", f"{_M}:estimate_double_counts",
           targets=(_CONVERGE,), notes="adds each return twice, counts it once"),
    mutant(_c("mc_action_values"), "estimate.undiscounted", f"{_M}:estimate_undiscounted",
           targets=(_CONVERGE,), notes="gamma = 1 in the returns"),
    mutant(_c("mc_action_values"), "estimate.first_is_last", f"{_M}:estimate_first_is_last",
           targets=(_c("first_vs_every_visit"),), notes="first-visit keeps the last visit"),
    mutant(_c("mc_action_values"), "estimate.unchecked", f"{_M}:estimate_unchecked",
           targets=(_c("monte_carlo_contract"),), notes="unknown visit rules act as every-visit; no index check"),
    mutant(_c("mc_basic"), "mc_basic.short_episodes", f"{_M}:mc_basic_short_episodes",
           targets=(_c("mc_basic_grid_tables"),), notes="episodes one step short"),
    mutant(_c("mc_basic"), "mc_basic.forward_returns", f"{_M}:mc_basic_forward_returns",
           targets=(_c("mc_basic_grid_tables"),), notes="forward-accumulated returns"),
    mutant(_c("mc_basic"), "mc_basic.unchecked", f"{_M}:mc_unchecked", targets=(_c("monte_carlo_contract"),),
           notes="clips gamma to 0.99 instead of rejecting it"),
    mutant(_c("mc_exploring_starts"), "es.never_improves", f"{_M}:es_never_improves",
           targets=(_c("mc_control_optimal"),), notes="the policy is never updated"),
    mutant(_c("mc_exploring_starts"), "es.argmin", f"{_M}:es_argmin", targets=(_c("mc_control_optimal"),),
           notes="improves with argmin"),
    mutant(_c("mc_epsilon_greedy"), "eps.wrong_probabilities", f"{_M}:eps_control_wrong_probabilities",
           targets=(_c("mc_control_optimal"),), notes="epsilon / (|A| - 1) to the non-greedy actions"),
    mutant(_c("mc_epsilon_greedy"), "eps.greedy_updates", f"{_M}:eps_control_greedy_updates",
           targets=(_c("mc_control_optimal"),), notes="stores the greedy policy instead of the epsilon-greedy one"),
    mutant(_c("mc_epsilon_greedy"), "eps.first_state", f"{_M}:eps_control_first_state",
           targets=(_c("mc_epsilon_greedy_uniform_evaluation"),), notes="every episode starts in the first state"),
]
