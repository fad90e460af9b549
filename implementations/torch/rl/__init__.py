"""Vectorised implementations of the RL documents' solvers: numpy (dense einsum, numpy.linalg.solve) and torch
(sparse CSR transitions, for MDPs up to 10^4 states and beyond). Declared here, imported only when used."""

from eqspec.registry import REGISTRY, Implementation

_M = "implementations.torch.rl"
_SOLVERS = ("state_values", "iterative_policy_evaluation", "value_iteration", "policy_iteration")

for _op in _SOLVERS:
    REGISTRY.add_implementation(Implementation(
        f"rl_basics.{_op}", "numpy.dense", f"{_M}.numpy_solvers:{_op}", "torch", devices=("cpu",),
        dtypes=("float64",), notes="numpy float64: einsum over P[s, a, s'], numpy.linalg.solve"))
for _op in (*_SOLVERS, "truncated_policy_iteration"):
    REGISTRY.add_implementation(Implementation(
        f"rl_basics.{_op}", "torch.sparse", f"{_M}.sparse:{_op}", "torch", devices=("cpu",),
        dtypes=("float64",), notes="torch float64, P as a sparse (S*A) x S CSR matrix; closed form by dense LU"))
