"""The registry is complete: every claim has property tests and mutants, every operation a reference, and the
README's table of operations is the registry's (docs cannot drift from code)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import property_tests
from implementations import load_all
from property_tests.mutants import load_mutants
from specs.__main__ import operations_table

ROOT = Path(__file__).resolve().parents[2]
DIFFERENTIAL_CLAIMS = ("flash_attention.operations_match_spec",)


def _tested_claims() -> dict[str, list[str]]:
    tested: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(property_tests.__path__):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"property_tests.{info.name}")
        for name, fn in vars(module).items():
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "eqspec":
                    for claim in mark.kwargs["claims"]:
                        tested.setdefault(claim, []).append(name)
    return tested


def test_every_claim_has_a_property_test_and_a_mutant():
    reg = load_all()
    tested = _tested_claims()
    targeted = {t for m in load_mutants() for t in m.targets}
    assert not set(tested) - set(reg.claims), f"tests name unknown claims: {set(tested) - set(reg.claims)}"
    assert not set(reg.claims) - set(tested), f"claims without a property test: {set(reg.claims) - set(tested)}"
    assert not set(reg.claims) - targeted, f"claims without a mutant: {set(reg.claims) - targeted}"
    assert targeted <= set(reg.claims), f"mutants target unknown claims: {targeted - set(reg.claims)}"


def test_every_operation_has_its_spec_as_reference_and_a_named_baseline():
    reg = load_all()
    for op in reg.operations.values():
        assert reg.implementation(op.id, "spec").load() is op.reference
        if op.baseline is not None:
            assert reg.implementation(op.id, op.baseline).origin == "torch", op.id
    for claim in reg.claims.values():
        assert claim.document in reg.documents and claim.statement and claim.source, claim.id


def test_the_readme_table_of_operations_is_generated_from_the_registry():
    readme = (ROOT / "README.md").read_text()
    assert operations_table(load_all()) in readme, (
        "README.md's operations table is stale: regenerate it with `python -m specs --write-readme README.md`")


def _deviating_at_points(operation: str, name: str, params: dict):
    """The implementation, whose deviation from the differential test is declared at points of the domain: the whole
    test is not expected to fail."""
    impl = load_all().implementation(operation, name)
    assert impl.deviation(DIFFERENTIAL_CLAIMS, params) is None
    return impl


def test_a_deviation_at_points_of_the_domain_leaves_the_test_expected_to_pass_and_matches_only_those_points():
    import torch
    import torch.nn.functional as F

    params = {"dtype": "float64", "device": "cpu"}
    sdpa = _deviating_at_points("flash_attention.attention", "thirdparty.sdpa", params)
    q = torch.randn(1, 1, 4, 8, dtype=torch.float64)
    at = {"q": q, "k": q, "v": q, "causal": True}
    assert sdpa.deviation_at(DIFFERENTIAL_CLAIMS, params, {**at, "scale": 0.0}) is not None
    assert sdpa.deviation_at(DIFFERENTIAL_CLAIMS, params, {**at, "scale": -0.5}) is not None
    assert sdpa.deviation_at(DIFFERENTIAL_CLAIMS, params, {**at, "scale": 0.5}) is None
    assert sdpa.deviation_at(DIFFERENTIAL_CLAIMS, params, {**at, "scale": 0.0, "causal": False}) is None
    assert sdpa.deviation_at(DIFFERENTIAL_CLAIMS, {**params, "device": "cuda"}, {**at, "scale": 0.0}) is None
    # and it is still there: the finding it documents, reproduced in four lines
    o = F.scaled_dot_product_attention(q, q, q, is_causal=True, scale=0.0)
    assert bool(o[0, 0, :3].isnan().all()) and not bool(o[0, 0, 3].isnan().any())


def test_the_naive_float16_backward_deviates_only_where_its_float16_intermediates_overflow():
    import torch

    from specs.flash_attention import attention

    params = {"dtype": "float16", "device": "cpu"}
    naive = _deviating_at_points("flash_attention.attention_backward", "torch.naive", params)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 64, 32, generator=gen, dtype=torch.float64) for _ in range(3))
    big = 60.0  # |dO| |V| entries of 60: dO V^T sums 32 products of up to 3600
    o, lse = attention(q, k, big * v, scale=0.0)
    point = {"q": q.half(), "k": k.half(), "v": (big * v).half(), "o": o.half(), "lse": lse.float(),
             "do": (big * q).half(), "scale": 0.0}
    assert naive.deviation_at(DIFFERENTIAL_CLAIMS, params, point) is not None
    assert naive.deviation_at(DIFFERENTIAL_CLAIMS, {**params, "dtype": "float32"}, point) is None
    small = {**point, "v": v.half(), "do": q.half()}
    assert naive.deviation_at(DIFFERENTIAL_CLAIMS, params, small) is None
    # and it is still there: the naive code's float16 dQ is not finite where the spec's is 0 (scale 0)
    dq, _, _ = naive.load()(*(point[n] for n in ("q", "k", "v", "o", "lse", "do")), scale=0.0)
    assert not bool(torch.isfinite(dq).all())
