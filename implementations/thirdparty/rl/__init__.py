"""Adapters to gymnasium's toy-text environments as finite MDPs (FrozenLake 4x4 and 8x8, slippery; CliffWalking;
Taxi): an episode sampler that runs the environment's own ``step`` (an implementation of
monte_carlo.generate_episodes), and the environment's transition table ``env.unwrapped.P`` as tensors
(tables.py). The property tests check that Monte Carlo through ``step`` converges to the Bellman values computed
from the table: the library's two views of its own dynamics must agree.

Modelling, stated once: a transition flagged ``terminated`` leads to an absorbing copy of the state it ends in
(reward 0 for ever after), so the tables describe a continuing task with the same returns; gymnasium's TimeLimit
truncates an episode after ``max_episode_steps`` without terminating it, so what Monte Carlo through ``step``
estimates is the value of that horizon, i.e. H sweeps of iterative evaluation from 0, not v_pi itself.
"""

from eqspec.registry import REGISTRY, Implementation

_M = "implementations.thirdparty.rl"

# implementation name -> (gymnasium id, make() keyword arguments)
ENVIRONMENTS = {
    "gymnasium.FrozenLake4x4": ("FrozenLake-v1", {"map_name": "4x4", "is_slippery": True}),
    "gymnasium.FrozenLake8x8": ("FrozenLake8x8-v1", {"is_slippery": True}),
    "gymnasium.CliffWalking": ("CliffWalking-v1", {}),
    "gymnasium.Taxi": ("Taxi-v4", {}),
}

for _name, (_id, _kwargs) in ENVIRONMENTS.items():
    REGISTRY.add_implementation(Implementation(
        "monte_carlo.generate_episodes", _name, f"{_M}.episodes:{_name.split('.')[1].lower()}", "thirdparty",
        devices=("cpu",), dtypes=("float64",), modules=("gymnasium",),
        notes=f"gymnasium.make({_id!r}{''.join(f', {k}={v!r}' for k, v in _kwargs.items())}).step, one episode at "
              "a time; only the MDP of its own table (tables.py) is accepted"))
