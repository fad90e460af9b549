"""eqspec's specs: one module per document, the equations as float64 reference code, and the registry."""

from . import documents  # noqa: F401  (the twelve documents, before any spec module registers against them)
from .registry import REGISTRY, load_specs

__all__ = ["REGISTRY", "load_specs"]
