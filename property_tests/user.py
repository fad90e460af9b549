"""Users' own implementations: ``--impl OP=module:callable``, ``EQSPEC_IMPL`` and entry points.

A user callable is named by its ``module:callable`` string. It may declare what it supports with attributes
(all optional):

    my_attention.eqspec_devices = ("cuda",)              # default: ("cpu", "cuda")
    my_attention.eqspec_dtypes = ("float16", "bfloat16")  # default: every dtype of the operation
    my_attention.eqspec_provides = {"causal", "gqa"}      # default: none - only what is declared is tested
    my_loss.eqspec_output_dtypes = {"loss": ("float32",)}  # default: the operation's rule (python -m specs
                                                          # --capabilities OP); here a float32 loss for any inputs
    my_loss.eqspec_deviations = {                         # default: none - a documented difference from a claim
        "dpo.fused_matches_spec": "accumulates in float32 tiles",          # expected to fail, reported as a deviation
        "dpo.gradient_matches_derivation": {"reason": "...", "only": {"dtype": ("bfloat16",)}, "strict": False},
    }

Entry points: a package may declare, in the group ``eqspec.implementations``, entries named by the operation
(``"flash_attention.attention" = "mypkg.attn:flash_attn"``; several for one operation as
``"flash_attention.attention/fast"``).
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

from eqspec.registry import REGISTRY, Deviation, Implementation, check_capabilities, check_output_dtypes, load_target

ENV_VAR = "EQSPEC_IMPL"
ENTRY_POINT_GROUP = "eqspec.implementations"


class ImplArgumentError(ValueError):
    """An --impl / EQSPEC_IMPL value that cannot be understood."""


def parse(assignment: str, source: str = "--impl") -> Implementation:
    op_id, sep, target = assignment.partition("=")
    op_id, target = op_id.strip(), target.strip()
    if not sep or ":" not in target:
        raise ImplArgumentError(f"{source} expects OP=module:callable, got {assignment!r}")
    return make(op_id.split("/")[0], target, source)


def make(op_id: str, target: str, source: str) -> Implementation:
    if op_id not in REGISTRY.operations:
        known = ", ".join(sorted(REGISTRY.operations))
        raise ImplArgumentError(f"{source}: unknown operation {op_id!r}; known operations: {known}")
    impl = Implementation(operation=op_id, name=target, target=target, origin="user",
                          notes=f"user implementation ({source})")
    try:
        fn = load_target(target)
    except Exception as exc:  # reported by every test of this implementation; the run goes on
        impl.notes = f"could not be loaded: {type(exc).__name__}: {exc}"
        return impl
    impl.devices = tuple(getattr(fn, "eqspec_devices", impl.devices))
    dtypes = getattr(fn, "eqspec_dtypes", None)
    impl.dtypes = tuple(dtypes) if dtypes is not None else None
    op = REGISTRY.operations[op_id]
    try:
        impl.provides = check_capabilities(getattr(fn, "eqspec_provides", impl.provides), op.capabilities,
                                           f"{target}.eqspec_provides")
        impl.output_dtypes = check_output_dtypes(getattr(fn, "eqspec_output_dtypes", {}), op,
                                                 f"{target}.eqspec_output_dtypes")
        impl.deviations = deviations(getattr(fn, "eqspec_deviations", {}), op_id, f"{target}.eqspec_deviations")
    except ValueError as exc:
        raise ImplArgumentError(f"{source}: {exc}") from None
    return impl


def deviations(declared, op_id: str, what: str) -> dict[str, Deviation]:
    """A user's ``eqspec_deviations`` ({claim id: reason, or {"reason", "only", "strict"}}) as Deviations, or a
    ValueError naming the claim or the field at fault."""
    if not isinstance(declared, dict):
        raise ValueError(f"{what} must be a dict {{claim id: reason}}, got {type(declared).__name__}")
    result = {}
    for claim_id, value in declared.items():
        claim = REGISTRY.claims.get(claim_id)
        if claim is None or op_id not in claim.operations:
            mine = sorted(c.id for c in REGISTRY.claims.values() if op_id in c.operations)
            raise ValueError(f"{what}: {claim_id!r} is not a claim about {op_id}; its claims: {', '.join(mine)}")
        if isinstance(value, str):
            value = {"reason": value}
        if not isinstance(value, dict) or not isinstance(value.get("reason"), str) or not value["reason"].strip() \
                or set(value) - {"reason", "only", "strict"}:
            raise ValueError(f"{what}[{claim_id!r}] must be a reason (str) or a dict with 'reason' (str) and "
                             f"optionally 'only' {{test parameter: values}} and 'strict' (bool), got {value!r}")
        only = value.get("only", {})
        if not isinstance(only, dict):
            raise ValueError(f"{what}[{claim_id!r}]['only'] must be a dict {{test parameter: values}}, got {only!r}")
        result[claim_id] = Deviation(value["reason"], tuple((k, tuple(v) if isinstance(v, (list, tuple)) else (v,))
                                                            for k, v in only.items()),
                                     strict=bool(value.get("strict", True)))
    return result


def from_environment() -> list[Implementation]:
    value = os.environ.get(ENV_VAR, "")
    return [parse(part, ENV_VAR) for part in value.split(";") if part.strip()]


def from_entry_points() -> list[Implementation]:
    return [make(ep.name.split("/")[0], ep.value, f"entry point {ep.name}")
            for ep in entry_points(group=ENTRY_POINT_GROUP)]


def collect(cli_values: list[str]) -> list[Implementation]:
    """Every user implementation, from the command line, the environment and installed entry points."""
    impls = [parse(v) for v in cli_values] + from_environment() + from_entry_points()
    for impl in impls:
        REGISTRY.add_implementation(impl)
    return impls
