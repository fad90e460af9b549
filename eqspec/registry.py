"""The registry: documents, specs, operations, claims and implementations (design.md, "The words").

Every spec module registers what it encodes here at import time; every implementation family declares its
implementations here without importing the code behind them, so that a missing library or device becomes a
visible reason instead of an import error. Tests, benchmarks, the README table and the report all read this
registry: nothing is listed twice.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .domain import Domain
from .outputs import Output

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")

# The capabilities: what an implementation may declare it does (``provides``) and what a property test may need
# (``requires``). One vocabulary, each name with its meaning; every operation lists the ones that apply to it, and an
# unknown name - in a declaration, a test or a user's ``eqspec_provides`` - is an error.
CAPABILITIES: dict[str, str] = {
    "grad": "differentiable: autograd through it gives the gradients the claims check",
    "lse": "returns the log-sum-exp beside the output: (o, lse)",
    "causal": "takes causal=True (bottom-right aligned when the query and key lengths differ)",
    "gqa": "grouped-query attention: k and v with fewer heads than q (a divisor of them)",
    "block_sizes": "takes block_sizes=(block_q, block_k): the tiles of a tiled algorithm",
    "chunk_size": "takes chunk_size=: the rows per chunk of a chunked loss",
    "full_world_only": "runs only with world_size equal to the number of ranks it was built for",
    "sigmoid": "routes with scoring='sigmoid' (DeepSeek-V3, Moonlight)",
    "softmax": "routes with scoring='softmax' (Mixtral, Switch)",
    "bias": "takes the aux-loss-free routing bias (added for the choice only)",
    "groups": "takes group-limited routing (n_group, topk_group)",
    "scaling": "takes routed_scaling_factor",
    "shared": "takes shared experts beside the routed ones",
    "deepseek_v3": "the sequence-wise balance loss of DeepSeek-V3 (form='deepseek_v3')",
    "switch": "the Switch Transformer balance loss (form='switch')",
    "mixtral": "Mixtral's balance loss as transformers computes it (form='mixtral')",
}
# Knobs of an algorithm, not of the equation: the float64 spec takes none of them
ALGORITHM_KNOBS = frozenset({"block_sizes", "chunk_size", "full_world_only"})
# Families: "kind:<value>" / "prediction:<value>": covers that value of the operation's kind= / prediction= option
# (the values an operation lists are its own: EDM's schedules, its prediction targets)
CAPABILITY_FAMILIES: dict[str, str] = {
    "kind": "covers kind={}",
    "prediction": "covers prediction={}",
}


def capability_meaning(name: str) -> str | None:
    """The meaning of a capability name, or None when the vocabulary has no such name."""
    family, sep, value = name.partition(":")
    if not sep:
        return CAPABILITIES.get(name)
    return CAPABILITY_FAMILIES[family].format(value) if family in CAPABILITY_FAMILIES and value else None


def check_capabilities(names, allowed, what: str) -> frozenset[str]:
    """``names`` as a frozenset, or a ValueError naming each one ``allowed`` does not list."""
    names = frozenset(names)
    unknown = sorted(n for n in names if n not in allowed)
    if unknown:
        raise ValueError(f"{what}: unknown capabilit{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                         f"it knows {', '.join(sorted(allowed)) or 'none'} (python -m specs --capabilities)")
    return names


def check_output_dtypes(declared, op: Operation, what: str) -> dict[str, tuple[str, ...]]:
    """``declared`` ({output: dtype names}) as a dict of tuples, or a ValueError naming the output or dtype at fault."""
    if not isinstance(declared, dict):
        raise ValueError(f"{what}: output dtypes must be a dict {{output name: dtype names}}, got {declared!r}")
    names = [o.name for o in op.outputs]
    result = {}
    for name, dtypes in declared.items():
        if name not in names:
            raise ValueError(f"{what}: output dtypes name {name!r}, which {op.id} does not return; its outputs: "
                             f"{', '.join(names)}")
        dtypes = (dtypes,) if isinstance(dtypes, str) else tuple(dtypes)
        bad = [d for d in dtypes if d not in FLOAT_DTYPES + ("int64", "int32")]
        if bad:
            raise ValueError(f"{what}: output dtypes for {name!r} must be dtype names like 'float32', got {bad}")
        result[name] = dtypes
    return result


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    papers: tuple[str, ...]
    post: str
    catalogue: str

    @property
    def module(self) -> str:
        return f"specs.{self.id}"


@dataclass(frozen=True)
class Spec:
    """One equation as float64 code, with its LaTeX, its source and any convention chosen."""

    id: str
    document: str
    function: Callable
    latex: str
    source: str
    convention: str = ""

    @property
    def name(self) -> str:
        return self.id.split(".", 1)[1]


@dataclass(frozen=True)
class Operation:
    """A spec with a call signature that other code can implement; the spec is its reference."""

    id: str
    document: str
    reference: Callable
    summary: str
    returns: str
    dtypes: tuple[str, ...] = FLOAT_DTYPES
    baseline: str | None = None  # implementation name of the naive same-precision baseline
    outputs: tuple[Output, ...] = ()  # what it returns: each output's kind, shape, dtype, device (eqspec/outputs.py)
    # (inputs) -> (size of the terms each output sums, one per output, ..., float64 reduction length): the error
    # budget's floor (eqspec/budget.py); None: the outputs' own size
    magnitudes: Callable[..., tuple] | None = None
    # (weights, inputs) -> ({input name: size of the terms its gradient sums}, float64 reduction length) for the
    # gradient of sum_o weights[o] . output_o: the floor of a gradient's budget; None: the gradients' own size
    gradient_magnitudes: Callable[..., tuple] | None = None
    capabilities: tuple[str, ...] = ()  # the vocabulary's names that apply to it (CAPABILITIES above)
    domain: Domain | None = None  # every argument with its whole domain (eqspec/domain.py)

    def __post_init__(self) -> None:
        unknown = [c for c in self.capabilities if capability_meaning(c) is None]
        if unknown:
            raise ValueError(f"operation {self.id}: capabilities {unknown} are not in the vocabulary (CAPABILITIES)")
        named = tuple(n.strip() for n in self.returns.strip("()").split(","))
        if self.outputs and named != tuple(o.name for o in self.outputs):
            raise ValueError(f"operation {self.id}: outputs {[o.name for o in self.outputs]} are not its returns "
                             f"{self.returns}")
        stray = [o.requires for o in self.outputs if o.requires is not None and o.requires not in self.capabilities]
        if stray:
            raise ValueError(f"operation {self.id}: outputs require {stray}, which are not its capabilities")

    @property
    def signature(self) -> str:
        """``doc.name(args, *, kwargs=default) -> returns``, without type annotations."""
        sig = inspect.signature(self.reference)
        bare = sig.replace(parameters=[p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()],
                           return_annotation=inspect.Signature.empty)
        return f"{self.id}{bare} -> {self.returns}"


@dataclass(frozen=True)
class Claim:
    """A statement the document makes (or a contract the operation promises) that must hold."""

    id: str
    document: str
    statement: str
    source: str
    kind: str  # identity | exact | budget | statistical | known-answer | contract
    operations: tuple[str, ...]


@dataclass(frozen=True)
class Deviation:
    """A documented difference between an implementation and a claim, expected to fail (and reported).

    ``only`` narrows it to some test parameters, e.g. (("dtype", ("bfloat16",)),) or (("case", ("empty q",)),);
    a test that then passes is reported as a failure ("deviation no longer observed").

    ``at`` narrows it to points of the operation's domain instead (a predicate over the call's arguments by name):
    the whole test is not expected to fail, only those points, which the differential test compares and, where they
    differ as declared, counts as the deviation observed and leaves out (every other point is still compared).
    """

    reason: str
    only: tuple[tuple[str, tuple], ...] = ()
    strict: bool = True  # False where the behaviour depends on the machine (e.g. which BLAS kernel runs)
    at: Callable[[dict], bool] | None = None

    def applies(self, params: dict) -> bool:
        return self.at is None and self._admits(params)

    def applies_at(self, params: dict, arguments: dict) -> bool:
        return self.at is not None and self._admits(params) and bool(self.at(arguments))

    def _admits(self, params: dict) -> bool:
        return all(params.get(name) in values for name, values in self.only)


@dataclass
class Implementation:
    """Another callable for an operation, loaded lazily from ``target`` ("module:attribute")."""

    operation: str
    name: str
    target: str
    origin: str  # spec | torch | triton | thirdparty | user | mutant
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[str, ...] | None = None  # None: every dtype of the operation
    modules: tuple[str, ...] = ()  # the Python packages it needs (importable modules)
    provides: frozenset[str] = frozenset()  # capabilities, e.g. {"lse", "grad", "gqa", "causal"}
    deviations: dict[str, Deviation] = field(default_factory=dict)  # claim id -> documented difference
    notes: str = ""
    # output name -> dtypes it may come back in beyond the operation's rule (Liger's float32 loss for bfloat16 inputs)
    output_dtypes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    interpreted_on_cpu: bool = False  # Triton under TRITON_INTERPRET: keep sizes small
    targets: tuple[str, ...] = ()  # mutants only: the claims this wrong implementation must break
    # where it is defined within the operation's domain: argument -> (low, high) for an integer argument (a world of
    # worker processes has 2 to 4 ranks); the differential test draws only inside
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    _loaded: Callable | None = field(default=None, repr=False, compare=False)

    def load(self) -> Callable:
        if self._loaded is None:
            self._loaded = load_target(self.target)
        return self._loaded

    def unavailable_reason(self, device: str = "cpu") -> str | None:
        """Why this implementation cannot run on ``device`` here, or None when it can."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return f"needs the Python package '{module}', which is not installed"
        if device not in self.devices:
            return f"does not run on {device} (runs on: {', '.join(self.devices)})"
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "no CUDA device on this machine"
        if device == "cpu" and self.interpreted_on_cpu:
            import os

            if os.environ.get("TRITON_INTERPRET") != "1":
                return "Triton runs on the CPU only under TRITON_INTERPRET=1 (set before triton is imported)"
        return None

    def deviation(self, claims, params: dict) -> Deviation | None:
        """The documented deviation, if any, that covers one of ``claims`` at these test parameters."""
        return next((d for c in claims if (d := self.deviations.get(c)) is not None and d.applies(params)), None)

    def deviation_at(self, claims, params: dict, arguments: dict) -> Deviation | None:
        """The documented deviation, if any, that covers one of ``claims`` at this point of the domain."""
        return next((d for c in claims if (d := self.deviations.get(c)) is not None
                     and d.applies_at(params, arguments)), None)

    def dtypes_for(self, operation: Operation) -> tuple[str, ...]:
        return tuple(d for d in operation.dtypes if self.dtypes is None or d in self.dtypes)


def load_target(target: str) -> Callable:
    """Import ``module:attribute`` (the attribute may be dotted)."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"implementation target must look like 'module:callable', got {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"implementation target {target!r} is not callable (got {type(obj).__name__})")
    return obj


class Registry:
    def __init__(self) -> None:
        self.documents: dict[str, Document] = {}
        self.specs: dict[str, Spec] = {}
        self.operations: dict[str, Operation] = {}
        self.claims: dict[str, Claim] = {}
        self.implementations: dict[tuple[str, str], Implementation] = {}

    def add_document(self, doc: Document) -> Document:
        self.documents[doc.id] = doc
        return doc

    def add_spec(self, s: Spec) -> Spec:
        _require_document(self, s.document, s.id)
        self.specs[s.id] = s
        return s

    def add_operation(self, op: Operation) -> Operation:
        _require_document(self, op.document, op.id)
        self.operations[op.id] = op
        return op

    def attach_magnitudes(self, op_id: str, fn: Callable[..., tuple]) -> None:
        """Give an operation its error analysis (defined after the operation, since it uses its specs)."""
        self.operations[op_id] = dataclasses.replace(self.operations[op_id], magnitudes=fn)

    def attach_gradient_magnitudes(self, op_id: str, fn: Callable[..., tuple]) -> None:
        """Give an operation the error analysis of its gradients (``Operation.gradient_magnitudes``)."""
        self.operations[op_id] = dataclasses.replace(self.operations[op_id], gradient_magnitudes=fn)

    def attach_domain(self, op_id: str, domain: Domain) -> None:
        """Give an operation its domain where the builders it uses are defined after the operation."""
        self.operations[op_id] = dataclasses.replace(self.operations[op_id], domain=domain)

    def add_claim(self, c: Claim) -> Claim:
        _require_document(self, c.document, c.id)
        unknown = [o for o in c.operations if o not in self.operations]
        if unknown:
            raise KeyError(f"claim {c.id} names unknown operations {unknown}")
        self.claims[c.id] = c
        return c

    def add_implementation(self, impl: Implementation) -> Implementation:
        op = self.operations.get(impl.operation)
        if op is not None:
            impl.provides = check_capabilities(impl.provides, op.capabilities, f"{impl.name} ({impl.operation})")
            impl.output_dtypes = check_output_dtypes(impl.output_dtypes, op, f"{impl.name} ({impl.operation})")
        key = (impl.operation, impl.name)
        self.implementations[key] = impl
        return impl

    def implementations_of(self, operation: str, origins: tuple[str, ...] | None = None) -> list[Implementation]:
        return [
            i for (op, _), i in self.implementations.items()
            if op == operation and (origins is None or i.origin in origins)
        ]

    def implementation(self, operation: str, name: str) -> Implementation:
        return self.implementations[(operation, name)]

    def claims_of(self, document: str) -> list[Claim]:
        return [c for c in self.claims.values() if c.document == document]

    def specs_of(self, document: str) -> list[Spec]:
        return [s for s in self.specs.values() if s.document == document]

    def operations_of(self, document: str) -> list[Operation]:
        return [o for o in self.operations.values() if o.document == document]


def _require_document(reg: Registry, doc: str, what: str) -> None:
    if doc not in reg.documents:
        raise KeyError(f"{what} names unknown document {doc!r}")


REGISTRY = Registry()


# --- decorators used by the spec modules --------------------------------------------------------------

def spec(document: str, *, latex: str, source: str, convention: str = "") -> Callable[[Callable], Callable]:
    """Register a function as the transcription of one equation."""

    def register(fn: Callable) -> Callable:
        REGISTRY.add_spec(Spec(f"{document}.{fn.__name__}", document, fn, latex, source, convention))
        return fn

    return register


def operation(
    document: str,
    *,
    latex: str,
    source: str,
    summary: str,
    returns: str,
    convention: str = "",
    dtypes: tuple[str, ...] = FLOAT_DTYPES,
    baseline: str | None = None,
    outputs: tuple[Output, ...] = (),
    capabilities: tuple[str, ...] = (),
    domain: Domain | None = None,
) -> Callable[[Callable], Callable]:
    """Register a spec that other code can implement; the function is the operation's reference."""

    def register(fn: Callable) -> Callable:
        op_id = f"{document}.{fn.__name__}"
        REGISTRY.add_spec(Spec(op_id, document, fn, latex, source, convention))
        REGISTRY.add_operation(Operation(op_id, document, fn, summary, returns, dtypes, baseline, tuple(outputs),
                                         capabilities=tuple(capabilities), domain=domain))
        # The reference is itself an implementation: the property tests check the spec against the claims.
        REGISTRY.add_implementation(Implementation(
            operation=op_id, name="spec", target=f"{fn.__module__}:{fn.__qualname__}", origin="spec",
            dtypes=("float64",),  # in another dtype it would only round its float64 answer
            provides=frozenset(capabilities) - ALGORITHM_KNOBS, notes="float64 reference (the spec itself)",
        ))
        return fn

    return register


def claim(document: str, name: str, *, statement: str, source: str, kind: str, operations: tuple[str, ...]) -> Claim:
    return REGISTRY.add_claim(Claim(f"{document}.{name}", document, statement, source, kind, operations))
