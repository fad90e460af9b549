"""monte_carlo.generate_episodes through gymnasium's own ``step``: episodes of the environment itself.

The start state is set through the toy-text environments' state attribute ``env.unwrapped.s`` right after
``reset`` (exploring starts need it; gymnasium's reset alone draws its own start); everything after that is
``env.step``, TimeLimit included. After termination the episode continues in the absorbing copy of the terminal
state with reward 0, as tables.py models it. Actions are drawn from pi with the caller's generator; the
environment's own randomness (the slippery ice) is seeded from the same generator.
"""

from __future__ import annotations

import bisect
import functools

import torch

from eqspec.contracts import ArgumentError
from specs.mdp import check_policy

from .tables import absorbing_states, make, table

F64 = torch.float64


@functools.cache
def _own_P(name: str) -> torch.Tensor:
    return table(name).P


def _episodes(name: str, P, r, pi, s0, length: int, *, a0=None, generator=None):
    env = make(name)
    S = env.observation_space.n
    A = env.action_space.n
    absorbing = absorbing_states(env)
    N = S + len(absorbing)
    if tuple(P.shape) != (N, A, N) or not bool(torch.equal(P.to(F64), _own_P(name))):
        # the environment's dynamics are its own: another MDP is not one it can run (NotImplementedError: skipped)
        raise NotImplementedError(f"{name} runs only its own MDP (tables.py, shape {(N, A, N)}); got P of shape "
                                  f"{tuple(P.shape)}")
    check_policy(pi, N, A)
    limit = env.spec.max_episode_steps
    if limit is not None and length > limit:
        raise ArgumentError("length",
                            f"length must not exceed {name}'s TimeLimit of {limit} steps (a truncated episode is "
                            f"not an episode of the MDP), got {length}")
    if ((s0 < 0) | (s0 >= S)).any():
        raise ArgumentError("s0", f"s0 must be states of {name} in [0, {S}), got {s0.tolist()[:5]}...")
    cdf = pi.cumsum(-1)
    cdf = (cdf / cdf[:, -1:]).tolist()
    n = s0.shape[0]
    states = torch.empty(n, length, dtype=torch.int64)
    actions = torch.zeros(n, length, dtype=torch.int64)
    rewards = torch.zeros(n, length, dtype=F64)
    seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator).tolist()
    for i in range(n):
        env.reset(seed=seeds[i])
        s = int(s0[i])
        env.unwrapped.s = s
        u = torch.rand(length, generator=generator, dtype=F64).tolist()
        a = int(a0[i]) if a0 is not None else min(bisect.bisect_right(cdf[s], u[0]), A - 1)
        for t in range(length):
            states[i, t], actions[i, t] = s, a
            s, reward, terminated, truncated, _ = env.step(a)
            rewards[i, t] = float(reward)
            if terminated:  # the rest of the row: the absorbing copy of the terminal state, reward 0
                states[i, t + 1:] = absorbing[int(s)]
                break
            if truncated and t < length - 1:
                raise RuntimeError(f"{name} truncated the episode after {t + 1} steps")
            if t + 1 < length:
                a = min(bisect.bisect_right(cdf[s], u[t + 1]), A - 1)
    return states, actions, rewards


def frozenlake4x4(P, r, pi, s0, length, *, a0=None, generator=None):
    return _episodes("gymnasium.FrozenLake4x4", P, r, pi, s0, length, a0=a0, generator=generator)


def frozenlake8x8(P, r, pi, s0, length, *, a0=None, generator=None):
    return _episodes("gymnasium.FrozenLake8x8", P, r, pi, s0, length, a0=a0, generator=generator)


def cliffwalking(P, r, pi, s0, length, *, a0=None, generator=None):
    return _episodes("gymnasium.CliffWalking", P, r, pi, s0, length, a0=a0, generator=generator)


def taxi(P, r, pi, s0, length, *, a0=None, generator=None):
    return _episodes("gymnasium.Taxi", P, r, pi, s0, length, a0=a0, generator=generator)
