"""eqspec's specs: one module per document, the equations as float64 reference code, registered into the
registry (eqspec/registry.py) when imported."""

import importlib
import pkgutil

from eqspec.registry import REGISTRY, Registry, claim

from . import documents  # noqa: F401  (the twelve documents, before any spec module registers against them)

__all__ = ["REGISTRY", "load_specs"]

_LOADED = False


def load_specs() -> Registry:
    """Import every spec module, so that each document's operations and claims are registered (idempotent).

    The implementations are declared by the composition root above the documents (``implementations.load_all``):
    the documents never import the code that implements them.
    """
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.name in REGISTRY.documents:
                importlib.import_module(f"{__name__}.{info.name}")
        for doc in REGISTRY.documents:
            declared = tuple(op.id for op in REGISTRY.operations_of(doc) if op.domain is not None)
            if declared:
                register_matches_spec(doc, declared)
        _LOADED = True
    return REGISTRY


MATCHES_SPEC = "operations_match_spec"


def register_matches_spec(doc: str, operations: tuple[str, ...]) -> None:
    """The claim every declared operation makes: it computes its spec on the whole of its domain."""
    claim(doc, MATCHES_SPEC, kind="budget", operations=operations,
          statement="Every operation computes what its spec computes at random points of its whole declared domain "
                    "(every argument varied, options and optional arguments included): every output within its "
                    "error budget (counts and indices exactly), the inputs unchanged and no output sharing memory "
                    "with an input; and the bounds the spec checks of each scalar argument held: a value just "
                    "beyond one rejected as the spec rejects it (this project's code: an ArgumentError naming the "
                    "argument), the bound itself accepted where the spec accepts it.",
          source="the operations' specs, their domains (eqspec/domain.py) and their argument checks "
                 "(specs/validators.py)")
