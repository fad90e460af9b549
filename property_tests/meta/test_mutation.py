"""The generated mutants (property_tests/mutation/): every operation has some, a built mutant differs from the spec
and leaves the registry and the spec modules as they were, and the operators edit what they say."""

from __future__ import annotations

import ast
import sys

import torch

from property_tests import mutation
from property_tests.mutation import operators
from specs import REGISTRY


def test_every_operation_is_reached_by_generated_mutants():
    reached = {op for m in mutation.all_mutants() for op in m.operations}
    assert not set(REGISTRY.operations) - reached, sorted(set(REGISTRY.operations) - reached)


def test_building_a_mutant_leaves_the_registry_and_the_specs_alone():
    before = {attr: dict(getattr(REGISTRY, attr)) for attr in ("specs", "operations", "claims", "implementations")}
    modules = {name: module for name, module in sys.modules.items() if name.startswith("specs.")}
    mutant = next(m for m in mutation.mutants_of("dpo") if m.key == "dpo.F64: torch.float64 -> torch.float32")
    copies = mutation.build(mutant)
    assert {"dpo", "grpo"} <= set(copies)  # grpo imports from dpo: it is rebuilt on the mutated copy
    assert {attr: dict(getattr(REGISTRY, attr)) for attr in before} == before
    assert all(sys.modules[name] is module for name, module in modules.items())
    from specs import dpo

    args = [torch.tensor([-3.0 - 1e-9], dtype=torch.float64), torch.tensor([-4.0], dtype=torch.float64),
            torch.tensor([-3.5], dtype=torch.float64), torch.tensor([-3.9], dtype=torch.float64)]
    spec, wrong = dpo.dpo_loss(*args)[0], copies["dpo"].dpo_loss(*args)[0]  # (losses, rewards...)
    assert not torch.equal(spec, wrong)  # computed in float32 inside


def test_operators_make_the_edits_they_name():
    tree = ast.parse("def f(a, b, beta=0.1):\n    return (a - b).sum() * beta if a.max() > 0 else -a.detach()\n")
    found = {(e.operator, e.before, e.after) for e in operators.edits(tree.body[0])}
    assert ("binop", "a - b", "a + b") in found
    assert ("drop-term", "(a - b).sum() * beta", "(a - b).sum()") in found
    assert ("swap", "(a - b).sum", "(a - b).mean") in found
    assert ("compare", "a.max() > 0", "a.max() >= 0") in found
    assert ("negation", "-a.detach()", "a.detach()") in found
    assert ("drop-call", "a.detach()", "a") in found
    assert ("constant", "0.1", "0.2") in found  # a default
    edit = next(e for e in operators.edits(tree.body[0]) if e.before == "a - b" and e.operator == "binop")
    assert "a + b" in ast.unparse(operators.apply(tree.body[0], edit)) and "a - b" in ast.unparse(tree)


def test_a_sample_is_stable_and_draws_from_every_module():
    everything = mutation.all_mutants()
    first, again = mutation.sample(everything, 2, seed=7), mutation.sample(everything, 2, seed=7)
    assert [m.name for m in first] == [m.name for m in again]
    assert {m.module for m in first} == {m.module for m in everything}
