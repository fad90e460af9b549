"""gymnasium toy-text environments as the tensors of specs/mdp.py, read from ``env.unwrapped.P``.

``env.unwrapped.P[s][a]`` lists (probability, next state, reward, terminated) tuples. Entries that reach the same
next state are merged (their rewards must then agree: the reward is a function of the transition). A
terminated transition into state x is routed to an added absorbing copy of x (reward 0 for ever after), one copy
per state that episodes terminate in, so that the value of a state is the expected discounted return of
gymnasium's episode from it. (One shared absorbing state would not do: in FrozenLake 8x8 the same move can end
in a hole with reward 0 or in the goal with reward 1.)
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from eqspec.contracts import ArgumentError

from . import ENVIRONMENTS

F64 = torch.float64


@dataclass(frozen=True)
class TabularEnvironment:
    name: str
    P: torch.Tensor  # (S + T, A, S + T), T the number of terminal states
    r: torch.Tensor  # (S + T, A, S + T): the reward of each transition
    start: int  # a state reset() can return
    horizon: int | None  # gymnasium's TimeLimit (max_episode_steps), None when there is none
    absorbing: dict[int, int]  # terminal state -> the index of its absorbing copy


def make(name: str):
    if name not in ENVIRONMENTS:
        raise ArgumentError("environment", f"environment must be one of {sorted(ENVIRONMENTS)}, got {name!r}")
    env_id, kwargs = ENVIRONMENTS[name]
    return gym.make(env_id, **kwargs)


def absorbing_states(env) -> dict[int, int]:
    """Terminal state x -> S + (its rank among the terminal states): where tables.py puts its absorbing copy."""
    raw, S = env.unwrapped.P, env.observation_space.n
    terminal = sorted({int(s_next) for s in raw for a in raw[s] for _, s_next, _, done in raw[s][a] if done})
    return {x: S + i for i, x in enumerate(terminal)}


def table(name: str) -> TabularEnvironment:
    env = make(name)
    raw = env.unwrapped.P
    S, A = env.observation_space.n, env.action_space.n
    absorbing = absorbing_states(env)
    N = S + len(absorbing)
    P = torch.zeros(N, A, N, dtype=F64)
    r = torch.zeros(N, A, N, dtype=F64)
    seen = torch.zeros(N, A, N, dtype=torch.bool)
    for s in range(S):
        for a in range(A):
            for prob, s_next, reward, terminated in raw[s][a]:
                t = absorbing[int(s_next)] if terminated else int(s_next)
                if seen[s, a, t] and r[s, a, t] != reward and prob > 0:
                    raise ValueError(f"{name}: two rewards ({float(r[s, a, t])}, {reward}) for the transition "
                                     f"{s} -{a}-> {t}: the reward is not a function of the transition")
                P[s, a, t] += prob
                if prob > 0:
                    r[s, a, t], seen[s, a, t] = reward, True
    for x in absorbing.values():
        P[x, :, x] = 1.0  # absorbing, reward 0
    start, _ = env.reset(seed=0)
    return TabularEnvironment(name, P, r, int(start), env.spec.max_episode_steps, absorbing)
