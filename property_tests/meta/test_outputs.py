"""The declared output rules (eqspec/outputs.py): every operation has them, they name only its arguments, and the
one checker holds a result to them - the wrong structure, shape, dtype or device is a ContractViolation naming the
output and its rule, and an implementation's declared extra dtypes (a user's eqspec_output_dtypes) are honoured."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

from eqspec import outputs
from eqspec.contracts import ContractViolation
from eqspec.outputs import ONE_ELEMENT, Output
from implementations import load_all
from property_tests import user

REG = load_all()
ATTENTION = REG.operations["flash_attention.attention"]


def _names(expression: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(expression, mode="eval")) if isinstance(n, ast.Name)}


@pytest.mark.parametrize("op", sorted(REG.operations), ids=str)
def test_every_operation_declares_its_outputs_over_its_own_arguments(op):
    operation = REG.operations[op]
    assert operation.outputs, f"{op} declares no outputs"
    parameters = set(inspect.signature(operation.reference).parameters)
    for out in operation.outputs:
        for rule in (out.shape, out.broadcasts_to, out.holds):
            if rule not in (None, ONE_ELEMENT) and not callable(rule):  # a predicate: the spec's own check
                assert _names(rule) <= parameters | set(outputs._HELPERS) | {out.name}, (op, out.name, rule)
        for alternative in (out.dtype or "").split("|")[: None if out.dtype else 0]:
            assert alternative in parameters or isinstance(getattr(torch, alternative, None), torch.dtype), \
                (op, out.name, alternative)
        assert out.device in (None, "cpu") or out.device in parameters, (op, out.name, out.device)


def _attention_args(dtype=torch.float32):
    q, k, v = torch.zeros(2, 4, 3, 8, dtype=dtype), torch.zeros(2, 2, 5, 8, dtype=dtype), torch.zeros(2, 2, 5, 6,
                                                                                                        dtype=dtype)
    return outputs.bind(ATTENTION.reference, (q, k, v), {"causal": True})


def _check(result, provides=frozenset({"lse"}), extra=None):
    outputs.check(ATTENTION.id, ATTENTION.outputs, result, _attention_args(), provides=provides, extra_dtypes=extra)


def test_a_result_that_keeps_the_rules_passes():
    _check((torch.zeros(2, 4, 3, 6), torch.zeros(2, 4, 3)))
    _check((torch.zeros(2, 4, 3, 6), torch.zeros(2, 4, 3, dtype=torch.float64)))


@pytest.mark.parametrize("result, words", [
    (torch.zeros(2, 4, 3, 6), "must return a tuple (o, lse), got Tensor"),
    ((torch.zeros(2, 4, 3, 6),), "tuple of length 1"),
    ((torch.zeros(2, 4, 3, 8), torch.zeros(2, 4, 3)), "o must have shape q.shape[:3] + v.shape[3:] = (2, 4, 3, 6)"),
    ((torch.zeros(2, 4, 3, 6, dtype=torch.float64), torch.zeros(2, 4, 3)), "o must have dtype torch.float32 (q)"),
    ((torch.zeros(2, 4, 3, 6), torch.zeros(2, 4, 3, dtype=torch.float16)), "lse must have dtype torch.float32 or "
                                                                           "torch.float64"),
    ((torch.zeros(2, 4, 3, 6), torch.zeros(2, 4)), "lse must have shape q.shape[:3]"),
    (([[0.0]], torch.zeros(2, 4, 3)), "o must be a torch.Tensor, got list"),
], ids=["not a tuple", "arity", "shape", "dtype", "lse dtype", "lse shape", "kind"])
def test_a_broken_rule_is_a_contract_violation_naming_the_output_and_its_rule(result, words):
    with pytest.raises(ContractViolation) as info:
        _check(result)
    assert words in str(info.value) and "flash_attention.attention" in str(info.value)


def test_an_output_behind_a_capability_is_held_only_where_it_is_declared():
    _check((torch.zeros(2, 4, 3, 6), None), provides=frozenset())
    with pytest.raises(ContractViolation, match="lse must be a torch.Tensor"):
        _check((torch.zeros(2, 4, 3, 6), None))


def test_declared_extra_dtypes_are_accepted_and_only_for_that_output():
    o64 = torch.zeros(2, 4, 3, 6, dtype=torch.float64)
    _check((o64, torch.zeros(2, 4, 3)), extra={"o": ("float64",)})
    with pytest.raises(ContractViolation, match="o must have dtype"):
        _check((o64, torch.zeros(2, 4, 3)), extra={"lse": ("float64",)})


def test_the_other_kinds_of_rules():
    x = torch.zeros(3, 2)
    ns = {"x": x, "P": torch.zeros(4, 2, 4), "dtype": torch.float16}
    trajectory = (Output("w", shape="(None, ...)", dtype="float64"),)
    outputs.check("op", trajectory, torch.zeros(5, 2, 2, dtype=torch.float64), ns)
    with pytest.raises(ContractViolation, match=r"w must have shape \(None, ...\) = \(\*, ...\), got \(\)"):
        outputs.check("op", trajectory, torch.zeros((), dtype=torch.float64), ns)
    values = (Output("values", shape="(None, P.shape[0])"),)
    outputs.check("op", values, torch.zeros(7, 4), ns)
    with pytest.raises(ContractViolation, match=r"\(\*, 4\)"):
        outputs.check("op", values, torch.zeros(7, 3), ns)
    std = (Output("std", broadcasts_to="x.shape"),)
    outputs.check("op", std, torch.zeros(3, 1), ns)
    with pytest.raises(ContractViolation, match="must broadcast to x.shape"):
        outputs.check("op", std, torch.zeros(3, 2, 1), ns)
    outputs.check("op", (Output("t", dtype="dtype", device="cpu"),), torch.zeros(1, dtype=torch.float16), ns)
    loss = (Output("loss", shape=ONE_ELEMENT, dtype="x"),)
    outputs.check("op", loss, torch.zeros(1), ns)
    with pytest.raises(ContractViolation, match="one element"):
        outputs.check("op", loss, torch.zeros(2), ns)
    number = (Output("flops", kind="number", holds="flops >= 0"), Output("ptr", kind="int"),
              Output("kept", kind="list[str]"))
    outputs.check("op", number, (2.5, 3, ["a"]), ns)
    for bad in ((True, 3, ["a"]), (2.5, 3.0, ["a"]), (2.5, 3, [1]), (-1.0, 3, ["a"])):
        with pytest.raises(ContractViolation):
            outputs.check("op", number, bad, ns)


def test_a_user_declares_output_dtypes_and_deviations(monkeypatch, tmp_path):
    (tmp_path / "declaring_impls.py").write_text(
        "from specs import grpo\n"
        "def loss(*args, **kwargs):\n"
        "    return grpo.grpo_loss(*args, **kwargs).float()\n"
        "loss.eqspec_output_dtypes = {'loss': 'float32'}\n"
        "loss.eqspec_deviations = {'grpo.operations_match_spec': 'computes in float32',\n"
        "    'grpo.clipping': {'reason': 'rounds', 'only': {'dtype': ['bfloat16']}, 'strict': False}}\n"
        "def wrong_output(*a, **k): pass\n"
        "wrong_output.eqspec_output_dtypes = {'losses': 'float32'}\n"
        "def wrong_claim(*a, **k): pass\n"
        "wrong_claim.eqspec_deviations = {'dpo.fused_matches_spec': 'not mine'}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    impl = user.make("grpo.grpo_loss", "declaring_impls:loss", "--impl")
    assert impl.output_dtypes == {"loss": ("float32",)}
    assert impl.deviations["grpo.operations_match_spec"].reason == "computes in float32"
    assert impl.deviation(["grpo.clipping"], {"dtype": "bfloat16"}).strict is False
    assert impl.deviation(["grpo.clipping"], {"dtype": "float32"}) is None
    with pytest.raises(user.ImplArgumentError, match="'losses', which grpo.grpo_loss does not return"):
        user.make("grpo.grpo_loss", "declaring_impls:wrong_output", "--impl")
    with pytest.raises(user.ImplArgumentError, match="'dpo.fused_matches_spec' is not a claim about grpo.grpo_loss"):
        user.make("grpo.grpo_loss", "declaring_impls:wrong_claim", "--impl")


def test_a_benchmark_checks_the_same_rules_before_it_times_anything():
    from benchmarks.common import check_against_spec

    naive = REG.implementation(ATTENTION.id, "torch.naive")
    q = k = v = torch.randn(1, 2, 8, 4, generator=torch.Generator().manual_seed(0))
    checks = check_against_spec(naive.load(), ATTENTION.id, (q, k, v), label="naive", output_names=("o", "lse"),
                                provides=naive.provides)
    assert all(c.err <= c.k * max(c.err_baseline, c.floor) for c in checks)
    truncated = lambda q, k, v, **kw: (naive.load()(q, k, v, **kw)[0][..., :2], None)  # noqa: E731
    with pytest.raises(ContractViolation, match=r"o must have shape q.shape\[:3\] \+ v.shape\[3:\]"):
        check_against_spec(truncated, ATTENTION.id, (q, k, v), label="truncated", output_names=("o", "lse"))


def test_a_malformed_grid_world_is_a_contract_violation_in_words():
    op = REG.operations["rl_basics.grid_world"]
    args = outputs.bind(op.reference, (1, 2, [], (1, 2)), {})
    P, R = op.reference(1, 2, [], (1, 2))
    outputs.check(op.id, op.outputs, (P, R), args)
    P2 = P.clone()
    P2[0, 0, :] = 1.0  # two next states for one (s, a)
    with pytest.raises(ContractViolation, match="P must satisfy .* \\(deterministic: a single 1 per \\(s, a\\) row\\)"):
        outputs.check(op.id, op.outputs, (P2, R), args)
    with pytest.raises(ContractViolation, match="R must satisfy .* \\(finite\\)"):
        outputs.check(op.id, op.outputs, (P, R * float("nan")), args)
