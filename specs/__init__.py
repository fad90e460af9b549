"""eqspec's specs: one module per document, the equations as float64 reference code, registered into the
registry (eqspec/registry.py) when imported."""

import importlib
import pkgutil

from eqspec.registry import REGISTRY, Registry

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
        _LOADED = True
    return REGISTRY
