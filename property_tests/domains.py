"""Hypothesis strategies derived from an operation's declared domain (eqspec/domain.py), and the inputs they make.

A drawn ``Case`` holds the sizes, the scalars and the option values, and a seed; ``Case.inputs()`` builds the
float64 inputs from the seed. ``for_target`` rounds them to the target's dtype and moves them to its device: the
spec then sees exactly the rounded inputs the implementation saw (design.md, "Tolerances").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import hypothesis.strategies as st
import torch
from hypothesis import assume

from eqspec.domain import GIVEN, OMIT, Built, Choice, Domain, Int, Optional, Real, needed, parameters, resolve

# The large sizes of a domain (thousands of tokens, long rows) are drawn in one example of this many on average:
# enough for the regimes where low precision breaks, few enough that the default run stays short.
LARGE_ONE_IN = 12


def _real(arg: Real) -> st.SearchStrategy[float]:
    if arg.log:
        body = st.floats(math.log(arg.low), math.log(arg.high)).map(math.exp)
    else:
        body = st.floats(arg.low, arg.high, allow_nan=False, allow_infinity=False)
    return st.one_of(st.sampled_from(arg.edges), body) if arg.edges else body


def _int(arg: Int, case: dict, limit: tuple[int, int] | None = None) -> st.SearchStrategy[int]:
    low, high = resolve(arg.low, case), resolve(arg.high, case)
    if limit is not None:  # the implementation is defined on part of the range only
        low, high = max(low, limit[0]), min(high, limit[1])
    assume(low <= high)
    body = st.integers(low, high)
    edges = [e for e in arg.edges if low <= e <= high]
    return st.one_of(st.sampled_from(edges), body) if edges else body


def _value(draw, arg, case: dict, allowed=None, limit=None, omit_one_in: int = 2):
    """A value of ``arg``; ``allowed(value)`` says whether the target supports an option value, ``limit`` bounds an
    integer where the target is defined; an optional argument is omitted once in ``omit_one_in`` draws."""
    if isinstance(arg, Optional):
        omitted = draw(st.booleans()) if omit_one_in == 2 else draw(st.integers(1, omit_one_in)) == 1
        return OMIT if omitted else _value(draw, arg.inner, case, allowed, limit)
    if isinstance(arg, Real):
        return draw(_real(arg))
    if isinstance(arg, Int):
        return draw(_int(arg, case, limit))
    if isinstance(arg, Choice):
        options = [v for v in arg.options if allowed is None or allowed(v)]
        assume(options)
        return draw(st.sampled_from(options))
    if isinstance(arg, Built):
        return arg  # made by Case.inputs from the seed
    raise TypeError(f"unknown domain entry {arg!r}")


@dataclass(frozen=True)
class Case:
    """One drawn point of a domain: sizes and scalars by name (Built inputs are made from the seed)."""

    domain: Domain
    drawn: tuple[tuple[str, object], ...]
    seed: int

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={'<built>' if isinstance(v, Built) else 'omitted' if v is OMIT else _short(v)}"
                          for k, v in self.drawn)
        return f"Case({shown}, seed={self.seed})"

    def inputs(self) -> dict:
        """name -> value (float64 tensors on the CPU), every argument of the operation; OMIT where left out."""
        case: dict = {}
        for i, (name, value) in enumerate(self.drawn):
            if isinstance(value, Built):
                gen = torch.Generator().manual_seed((self.seed + 7919 * i) % 2**63)
                value = value.build(gen, case)
            case[name] = value
        return {name: case[name] for name in self.domain.args}


def _short(v) -> str:
    return getattr(v, "__name__", None) or repr(v)


@st.composite
def cases(draw, domain: Domain, target, pin: tuple | None = None, allow_large: bool = True) -> Case:
    """A point of ``domain``; ``pin`` = (argument, value) holds one argument at one of its declared values;
    ``allow_large``: the domain's large sizes one time in LARGE_ONE_IN (else never)."""
    drawn: dict = {}
    large = (allow_large and bool(domain.large) and not target.interpreted
             and draw(st.integers(1, LARGE_ONE_IN)) == 1)
    capabilities = target.operation.capabilities
    defaults = {p.name: p.default for p in parameters(target.operation.reference)}

    def allowed_for(name):
        def allowed(value):
            c = needed(name, value, capabilities)
            return c is None or c in target.impl.provides
        return allowed

    for name, size in domain.sizes.items():  # a size named like a capability ("bias": True) needs it too
        drawn[name] = (domain.large[name] if large and name in domain.large
                       else _value(draw, size, drawn, allowed_for(name)))
    for name, arg in domain.args.items():
        allowed = allowed_for(name)
        if name in capabilities and name not in target.impl.provides and isinstance(arg, Optional):
            drawn[name] = OMIT  # an argument named like a capability (shared=) only for those that provide it
            continue
        limit = target.impl.limits.get(name)
        if pin is not None and pin[0] == name:
            drawn[name] = _value(draw, arg.inner, drawn, allowed, limit) if pin[1] is GIVEN else pin[1]
        else:
            # under a pin, the other options are given three times in four: an option value often matters only
            # beside another's non-default value (cDPO's sign with a label_smoothing above 0), and their omission
            # has pins of its own (measured: at two in four, 4 examples of loss_type=cdpo drew no label_smoothing
            # above 0 and a wrong cDPO sign went unseen)
            drawn[name] = _value(draw, arg, drawn, allowed, limit, omit_one_in=2 if pin is None else 4)
    for name, value in drawn.items():  # an omitted option is its default value, which may need a capability too
        if value is OMIT and name in defaults and (c := needed(name, defaults[name], capabilities)):
            assume(c in target.impl.provides)
    assume(domain.where is None or domain.where(drawn))
    assume(domain.needs is None or set(domain.needs(drawn)) <= target.impl.provides)
    return Case(domain, tuple(drawn.items()), draw(st.integers(0, 2**31 - 1)))


# --- the inputs a target sees, and the spec's copy of them ----------------------------------------------------

def convert(value, fn):
    """``value`` with every tensor replaced by fn(tensor), through tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(convert(v, fn) for v in value)
    if isinstance(value, list):
        return [convert(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: convert(v, fn) for k, v in value.items()}
    return value


def for_target(inputs: dict, target) -> dict:
    """Floating tensors rounded to the target's dtype, every tensor on its device."""
    def move(x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return target.tensor(x)
        return x.to(target.device)

    return {k: convert(v, move) for k, v in inputs.items()}


def for_spec(inputs: dict) -> dict:
    """The target's (rounded) inputs as float64 CPU tensors: what the spec computes from."""
    def back(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu()
        return x.to(torch.float64) if x.is_floating_point() else x.clone()

    return {k: convert(v, back) for k, v in inputs.items()}


def paths(value, match, path: tuple = ()):
    """(path, item) for every item inside ``value`` that ``match`` accepts, outermost first, through tuples, lists
    (not named tuples) and dicts; a path is their keys. Matched items are searched further too."""
    if match(value):
        yield path, value
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        for i, v in enumerate(value):
            yield from paths(v, match, (*path, i))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, match, (*path, k))


def tensor_paths(value):
    """(path, tensor) for every tensor inside ``value``."""
    return paths(value, lambda v: isinstance(v, torch.Tensor))


def replace_at(value, path: tuple, new):
    """``value`` with the item at ``path`` (a path of ``tensor_paths``) replaced by ``new``; the rest shared."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: replace_at(v, rest, new) if k == head else v for k, v in value.items()}
    items = [replace_at(v, rest, new) if i == head else v for i, v in enumerate(value)]
    return type(value)(items) if isinstance(value, tuple) else items


def tensors(value, prefix: str = ""):
    """(name, tensor) for every tensor inside ``value``: the prefix and the path, "[0]['w']" (a dict's key bare
    where it comes first without a prefix)."""
    for path, t in tensor_paths(value):
        parts = [f"[{p!r}]" for p in path]
        if parts and not prefix and isinstance(value, dict):
            parts[0] = str(path[0])
        yield prefix + "".join(parts), t


def unsupported(domain: Domain, target) -> list[str]:
    """The options for which the target supports no value (nor, when it may be omitted, the default): no point of the
    domain is left for it."""
    capabilities = target.operation.capabilities
    defaults = {p.name: p.default for p in parameters(target.operation.reference)}

    def ok(name, value):
        c = needed(name, value, capabilities)
        return c is None or c in target.impl.provides

    found = []
    for name, arg in domain.args.items():
        inner = arg.inner if isinstance(arg, Optional) else arg
        if not isinstance(inner, Choice) or any(ok(name, v) for v in inner.options):
            continue
        if isinstance(arg, Optional) and name in defaults and ok(name, defaults[name]):
            continue
        found.append(name)
    return found
