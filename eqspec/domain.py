"""An operation's inputs as data: every argument with its whole domain (design.md, "Judged on two sides").

A spec module declares, beside each operation, what every argument may be: the sizes it is made of, the range of
each number with its edge values, every value of each option, which optional arguments may be omitted, and how
structured inputs (a world, an episode, packed sequences) are built. The property tests derive their hypothesis
strategies from this declaration (property_tests/domains.py) and run one differential test per operation over it:
any implementation against the spec at random points of the whole domain, every output compared. A meta test
checks that every argument of every operation is declared and takes at least two values.

Nothing here draws: a drawn case is a dict of sizes and scalars plus a seed, and the builders make the tensors from
the seed (torch.Generator), so a falsifying example prints as one line that rebuilds the same inputs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

OMIT = object()  # an optional argument left out of the call: the implementation's default is compared
GIVEN = object()  # a pin that passes an optional argument (drawn from its domain) rather than omitting it


@dataclass(frozen=True)
class Real:
    """A float in [low, high]; ``edges`` are drawn often (0, 1, the clamp, a value near a pole)."""

    low: float
    high: float
    edges: tuple[float, ...] = ()
    log: bool = False  # draw log-uniformly (scales spanning decades)

    def values(self) -> int:
        return 2 if self.high > self.low or len(set(self.edges)) > 1 else 1


@dataclass(frozen=True)
class Int:
    """An integer in [low, high] (``high`` may name a size, e.g. "T", or be an expression of sizes)."""

    low: int | str
    high: int | str
    edges: tuple[int, ...] = ()

    def values(self) -> int:
        return 2 if not (isinstance(self.low, int) and isinstance(self.high, int)) or self.high > self.low else 1


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values: an option (loss_type, kind, mode), a flag, a callable."""

    options: tuple[Any, ...]

    def values(self) -> int:
        return len(self.options)


FLAG = Choice((False, True))


@dataclass(frozen=True)
class Built:
    """A structured input: ``build(gen, case)`` makes it from a seeded torch.Generator and the drawn case (sizes,
    scalars and the arguments built before it, by name). Built inputs vary with the seed."""

    build: Callable[[torch.Generator, dict], Any]
    note: str = ""

    def values(self) -> int:
        return 2


@dataclass(frozen=True)
class Optional:
    """An argument the caller may omit (then the implementation's own default is what is compared)."""

    inner: Any

    def values(self) -> int:
        return 1 + self.inner.values()


@dataclass(frozen=True)
class Domain:
    """Where an operation is defined, as data.

    ``sizes``: name -> Int | Real | Choice: what the inputs are made of but is not itself an argument (sizes,
    a scale, a sharpness), drawn first and in order (a later bound may name an earlier size).
    ``args``: name -> Real | Int | Choice | Built | Optional, one per parameter of the reference, drawn in order
    after the sizes (a Built sees everything drawn before it); a float tensor is a Built.
    ``where``: a predicate on the drawn case; cases outside it are not drawn (hypothesis.assume).
    ``exact``: outputs compared bit for bit on float64 (counts, indices, integer results).
    ``determined``: False where the outputs depend on random numbers the implementation draws itself (a
    torch.Generator): then only the contract, the shapes and the inputs' integrity are compared, and ``holds``.
    ``holds``: (inputs, outputs) -> None, raising ConformanceError where the outputs break what every draw of the
    random numbers keeps (a greedy policy of the returned values, returns within their range over every path).
    ``large``: sizes to use in a few examples that reach the regimes where low precision breaks (thousands of
    tokens, long rows); drawn with a small probability.
    ``needs``: the capabilities a drawn case needs beyond its option values (grouped heads need "gqa"); a case a
    target does not support is not drawn for it. Option values need their capability by name (see ``needed``).
    ``fixed``: arguments exact by construction (a stochastic policy, a probability vector) that no gradient is
    compared for (nor for 0/1 tensors: masks).
    """

    sizes: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    where: Callable[[dict], bool] | None = None
    exact: tuple[str, ...] = ()
    determined: bool = True
    holds: Callable[[dict, Any], None] | None = None
    large: dict[str, int] = field(default_factory=dict)
    fixed: tuple[str, ...] = ()  # exact by construction (a policy whose rows sum to 1): no gradient compared
    needs: Callable[[dict], Any] | None = None  # drawn case -> the capabilities it needs (e.g. {"gqa"})
    # outputs -> their canonical form, where several answers are equally right (a token's experts in any order): the
    # implementation's, the spec's and every reference answer are compared in it
    canonical: Callable[[Any], Any] | None = None
    note: str = ""


def pins(domain: Domain) -> list[tuple[str, Any]]:
    """(argument, value) for every option value and every omission the domain declares: the differential test runs
    once with each pinned (the other arguments drawn), so that no option is left to chance."""
    found: list[tuple[str, Any]] = []
    for name, arg in domain.args.items():
        if isinstance(arg, Optional):
            found.append((name, OMIT))
            arg = arg.inner
            if not isinstance(arg, Choice):
                found.append((name, GIVEN))  # a Choice's values are each pinned below
        if isinstance(arg, Choice):
            found.extend((name, v) for v in arg.options)
    return found


def needed(name: str, value: Any, capabilities: tuple[str, ...]) -> str | None:
    """The capability an argument's value needs, if the operation's vocabulary has one for it: ``kind="vp"`` needs
    "kind:vp", ``causal=True`` needs "causal", ``form="switch"`` needs "switch"."""
    for c in (f"{name}:{value}", name if value is True else None, value if isinstance(value, str) else None):
        if c is not None and c in capabilities:
            return c
    return None


def pin_id(pin: tuple[str, Any] | None) -> str:
    if pin is None:
        return "any"
    name, value = pin
    if value is OMIT or value is GIVEN:
        return f"{name}={'omitted' if value is OMIT else 'given'}"
    shown = getattr(value, "__name__", None) or repr(value)
    return f"{name}={shown}"


def parameters(fn: Callable) -> list[inspect.Parameter]:
    """The parameters of an operation's reference that a domain must declare (``**sde_params`` included by name
    through the domain's own keys)."""
    return [p for p in inspect.signature(fn).parameters.values()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def undeclared(fn: Callable, domain: Domain) -> list[str]:
    """The reference's parameters the domain does not declare."""
    return [p.name for p in parameters(fn) if p.name not in domain.args]


def single_valued(domain: Domain) -> list[str]:
    """The declared arguments that take only one value."""
    return [name for name, arg in domain.args.items() if arg.values() < 2]


def evaluate(expression: float | str, case: dict) -> float:
    """A number, a drawn size's name, or an expression of drawn sizes ("T - 1", "sharp / math.sqrt(H)")."""
    if not isinstance(expression, str):
        return expression
    return eval(expression, {"math": math, "min": min, "max": max}, dict(case))  # noqa: S307 - our own declarations


def resolve(bound: int | str, case: dict) -> int:
    """An integer bound or size: a number, a size's name, or an expression of sizes."""
    return int(evaluate(bound, case))


def call_arguments(fn: Callable, values: dict) -> tuple[list, dict]:
    """Positional and keyword arguments for ``fn`` from ``values`` (name -> value, OMIT to leave out): positional
    parameters are passed by position (an implementation may name them differently), keyword-only ones by name,
    extra names (``**kwargs`` of the reference) by name; an omitted positional one before a passed one gets the
    reference's default."""
    args, kwargs = [], {}
    params = parameters(fn)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    last = max((i for i, p in enumerate(positional) if values.get(p.name, OMIT) is not OMIT), default=-1)
    for p in positional[:last + 1]:
        v = values.get(p.name, OMIT)
        args.append(p.default if v is OMIT else v)
    named = {p.name for p in positional}
    for name, v in values.items():
        if name not in named and v is not OMIT:
            kwargs[name] = v
    return args, kwargs


# --- builders of the common inputs (a shape is a tuple of sizes: numbers, size names or expressions) -------------

def shape_of(shape: tuple, case: dict) -> tuple[int, ...]:
    return tuple(resolve(d, case) for d in shape)


def _scale(scale: float | str, case: dict) -> float:
    return float(evaluate(scale, case))


def normal(*shape, scale: float | str = 1.0) -> Built:
    """Gaussian entries times ``scale`` (a number or the name of a drawn size)."""
    return Built(lambda gen, case: torch.randn(shape_of(shape, case), generator=gen, dtype=torch.float64)
                 * _scale(scale, case), note=f"normal{shape} x {scale}")


def uniform(*shape, low: float | str = 0.0, high: float | str = 1.0) -> Built:
    def build(gen, case):
        lo, hi = _scale(low, case), _scale(high, case)
        return lo + (hi - lo) * torch.rand(shape_of(shape, case), generator=gen, dtype=torch.float64)
    return Built(build, note=f"uniform{shape} in [{low}, {high}]")


def log_probs(*shape, scale: float | str = 1.0) -> Built:
    """Log-probabilities (<= 0) of spread ``scale``; some exactly 0 (a certain token)."""
    def build(gen, case):
        x = -torch.randn(shape_of(shape, case), generator=gen, dtype=torch.float64).abs() * _scale(scale, case)
        return torch.where(torch.rand(x.shape, generator=gen) < 0.1, torch.zeros_like(x), x)
    return Built(build, note=f"log-probs{shape} x {scale}")


def integers(*shape, low: int | str = 0, high: int | str) -> Built:
    """Integers in [low, high) (int64)."""
    return Built(lambda gen, case: torch.randint(resolve(low, case), resolve(high, case), shape_of(shape, case),
                                                 generator=gen), note=f"integers{shape} in [{low}, {high})")


def completion_mask(rows: int | str, T: int | str, *, dtype=torch.int64) -> Built:
    """0/1 masks over (rows, T): a prompt of 0s, the completion 1s, then right padding 0s - some rows all 0, some
    all 1, some with the completion cut (left padding shifted in)."""
    def build(gen, case):
        n, t = resolve(rows, case), resolve(T, case)
        m = torch.zeros(n, t, dtype=dtype)
        for i in range(n):
            start, stop = sorted(torch.randint(0, t + 1, (2,), generator=gen).tolist())
            kind = int(torch.randint(0, 6, (), generator=gen))
            if kind == 0:
                continue  # nothing to score
            if kind == 1:
                start, stop = 0, t  # all completion
            m[i, start:stop] = 1
        return m
    return Built(build, note=f"completion mask ({rows}, {T})")
