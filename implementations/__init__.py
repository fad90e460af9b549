"""Other implementations of the specs' operations: torch/, triton/, thirdparty/ (adapters), and users' own.

Each family's ``__init__`` declares its implementations in the registry without importing the code behind
them; ``property_tests/user.py`` adds the ones a user points the suite at (--impl).
"""

import importlib
import pkgutil

_LOADED = False


def load_all():
    """The composition root: every document's specs, then every implementation family's declarations (idempotent).

    A family (torch/, triton/, thirdparty/) declares in its __init__; a document's implementations in a family may
    live in a subpackage (implementations/torch/diffusion/) whose __init__ declares them: walk every package.
    """
    global _LOADED
    from specs import REGISTRY, load_specs

    if not _LOADED:
        load_specs()
        for info in pkgutil.walk_packages(__path__, f"{__name__}."):
            if info.ispkg:
                importlib.import_module(info.name)
        _LOADED = True
    return REGISTRY
