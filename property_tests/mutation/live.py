"""The generated mutants as importable targets: ``property_tests.mutation.live:dpo_17.grpo.grpo_loss`` is
``grpo_loss`` in the copy of specs/grpo.py built on mutant 17 of specs/dpo.py (built on first use, then kept).
A dotted module is written with "__": ``edm__samplers_3.edm__samplers.heun_sampler``."""

from __future__ import annotations

import types

_BUILT: dict[str, types.SimpleNamespace] = {}


def __getattr__(name: str) -> types.SimpleNamespace:
    module, sep, index = name.rpartition("_")
    if not sep or not index.isdigit():
        raise AttributeError(name)
    if name not in _BUILT:
        from . import build, mutants_of

        _BUILT[name] = types.SimpleNamespace(**build(mutants_of(module.replace("__", "."))[int(index)]))
    return _BUILT[name]
