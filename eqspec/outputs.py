"""What an operation returns, declared as data: each output's kind, shape, dtype and device as rules over the arguments.

An operation lists its outputs (``Output``) beside its signature. One checker (``check``) holds any implementation's
result to them, and the README and ``python -m specs --capabilities`` print them; no operation has a result check of
its own. A rule reads as the paper's shapes do, a short Python expression over the operation's arguments (defaults
applied):

    Output("o", shape="q.shape[:3] + v.shape[3:]", dtype="q", device="q")
    Output("lse", shape="q.shape[:3]", dtype="float32|float64", device="q", requires="lse")

``shape``: an expression giving the shape, where ``None`` is any size and ``...`` any number of dimensions
(``"(None, P.shape[0])"``, ``"(None, ...)"``); ``ONE_ELEMENT`` for a loss that may come back as () or (1,); None for
any shape. ``broadcasts_to``: the shape must broadcast to this one unchanged. ``dtype``: alternatives separated by
``|``, each an argument (its dtype, or the torch.dtype it is) or a dtype name. ``device``: an argument (the same
device type) or ``"cpu"``. ``holds``: what the values must satisfy for the result to be usable at all (a grid world's
P has a single 1 per row), an expression over the arguments and the output by its name. ``requires``: a capability;
the output is held to its rules only for an implementation that declares it (an attention without ``lse`` still
returns the pair). An implementation may return an output in more
dtypes than the operation's rule when it says so (``Implementation.output_dtypes``: Liger's float32 loss for bfloat16
inputs); a ContractViolation names the output, the rule and what came back.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .contracts import ContractViolation

ONE_ELEMENT = "one element"
KINDS = ("tensor", "int", "float", "number", "list[str]")
_HELPERS = {"len": len, "tuple": tuple, "int": int, "bool": bool,
            "dense": lambda t: t.to_dense() if t.is_sparse else t, "isfinite": torch.isfinite}


@dataclass(frozen=True)
class Output:
    name: str
    kind: str = "tensor"  # tensor | int (a Python int) | float (a Python float) | number (int or float) | list[str]
    shape: str | None = None
    dtype: str | None = None
    device: str | None = None
    requires: str | None = None
    broadcasts_to: str | None = None
    # what its values must satisfy for the result to be usable at all, as an expression over the arguments and the
    # output by its name (``"flops >= 0"``); the claims judge everything else
    holds: str | Callable[[object], bool] | None = None  # or a predicate of the output (a spec's own check)
    holds_words: str | None = None  # the rule in words where the expression reads poorly ("one 1 per row")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"output {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "tensor" and (self.shape or self.dtype or self.device or self.broadcasts_to):
            raise ValueError(f"output {self.name}: only a tensor has a shape, dtype or device")
        if callable(self.holds) and not self.holds_words:
            raise ValueError(f"output {self.name}: a predicate as its rule needs the rule in words (holds_words)")

    def describe(self) -> str:
        """The rule in words, for the README and ``python -m specs --capabilities``: "lse (B, H, Sq) ..."."""
        if self.kind == "list[str]":
            return f"{self.name}: list of str"
        if self.kind != "tensor":
            kind = f"Python {'int or float' if self.kind == 'number' else self.kind}"
            return f"{self.name}: {kind}" + (f", {self.holds_words or self.holds}" if self.holds else "")
        parts = []
        if self.shape == ONE_ELEMENT:
            parts.append("one element")
        elif self.shape is not None:
            parts.append(self.shape)
        if self.broadcasts_to is not None:
            parts.append(f"broadcasting to {self.broadcasts_to}")
        if self.dtype is not None:
            parts.append(" or ".join(_dtype_words(a) for a in self.dtype.split("|")))
        if self.device == "cpu":
            parts.append("on the CPU")
        elif self.device is not None:
            parts.append(f"on {self.device}.device")
        if self.holds is not None:
            parts.append(self.holds_words or self.holds)
        if self.requires is not None:
            parts.append(f"only with {self.requires}")
        return f"{self.name}: {', '.join(parts) or 'tensor'}"


def _dtype_words(alternative: str) -> str:
    if isinstance(getattr(torch, alternative, None), torch.dtype):
        return alternative
    return alternative if alternative == "dtype" else f"{alternative}.dtype"


def describe(outputs: tuple[Output, ...]) -> str:
    return "; ".join(o.describe() for o in outputs)


def bind(reference: Callable, args: tuple, kwargs: Mapping) -> dict:
    """The arguments of a call by the reference's parameter names, defaults applied (the rules' namespace)."""
    sig = inspect.signature(reference)
    known = {k: v for k, v in kwargs.items() if k in sig.parameters}  # an algorithm's knobs (chunk_size) are not rules'
    try:
        bound = sig.bind_partial(*args, **known)
    except TypeError:  # more positional arguments than the reference takes: the rules see the ones it names
        names = [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        bound = sig.bind_partial(**dict(zip(names, args)), **{k: v for k, v in known.items() if k not in names})
    bound.apply_defaults()
    return dict(bound.arguments)


def check(operation: str, outputs: tuple[Output, ...], result: object, arguments: dict, *,
          provides: frozenset = frozenset(), extra_dtypes: Mapping[str, tuple[str, ...]] | None = None) -> None:
    """Raise ContractViolation unless ``result`` keeps every declared rule of ``outputs``."""
    if len(outputs) == 1:
        values = (result,)
    else:
        names = tuple(o.name for o in outputs)
        if not isinstance(result, (tuple, list)) or len(result) != len(names):
            got = type(result).__name__ + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
            raise ContractViolation(f"{operation} must return a tuple ({', '.join(names)}), got {got}")
        values = tuple(result)
    for out, value in zip(outputs, values):
        if out.requires is not None and out.requires not in provides:
            continue
        extra = tuple((extra_dtypes or {}).get(out.name, ()))
        _check_one(operation, out, value, arguments, extra)


def _check_one(operation: str, out: Output, x: object, ns: dict, extra: tuple[str, ...]) -> None:
    where = f"{operation}: {out.name}"
    if out.kind != "tensor":
        ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, float),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "list[str]": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v)}[out.kind](x)
        if not ok:
            raise ContractViolation(f"{where} must be a {out.describe().split(': ', 1)[1]}, got {type(x).__name__} "
                                    f"{x!r:.80}")
        _check_holds(out, x, ns, where)
        return
    if not isinstance(x, torch.Tensor):
        raise ContractViolation(f"{where} must be a torch.Tensor, got {type(x).__name__}")
    if out.shape == ONE_ELEMENT:
        if x.numel() != 1:
            raise ContractViolation(f"{where} must have one element, got shape {tuple(x.shape)}")
    elif out.shape is not None:
        expected = _evaluate(out.shape, ns, where)
        if not _shape_matches(tuple(x.shape), tuple(expected)):
            raise ContractViolation(f"{where} must have shape {out.shape} = {_show(expected)}, got {tuple(x.shape)}")
    if out.broadcasts_to is not None:
        target = tuple(_evaluate(out.broadcasts_to, ns, where))
        try:
            fits = tuple(torch.broadcast_shapes(x.shape, target)) == target
        except RuntimeError:
            fits = False
        if not fits:
            raise ContractViolation(f"{where} of shape {tuple(x.shape)} must broadcast to {out.broadcasts_to} = "
                                    f"{target} unchanged")
    if out.dtype is not None:
        allowed = _dtypes(out.dtype, ns, where) + tuple(getattr(torch, d) for d in extra)
        if allowed and x.dtype not in allowed:
            names = " or ".join(dict.fromkeys(str(d) for d in allowed))  # float64 | float64 said once
            raise ContractViolation(f"{where} must have dtype {names} ({out.dtype}), got {x.dtype}")
    if out.device is not None:
        device = torch.device("cpu") if out.device == "cpu" else getattr(ns.get(out.device), "device", None)
        if device is not None and x.device.type != device.type:
            raise ContractViolation(f"{where} must be on {device.type}, got {x.device.type}")
    _check_holds(out, x, ns, where)


def _check_holds(out: Output, x: object, ns: dict, where: str) -> None:
    if out.holds is None:
        return
    if not bool(out.holds(x) if callable(out.holds) else _evaluate(out.holds, {**ns, out.name: x}, where)):
        if callable(out.holds):
            raise ContractViolation(f"{where} must be {out.holds_words}")
        raise ContractViolation(f"{where} must satisfy {out.holds}" + (f" ({out.holds_words})" if out.holds_words
                                                                        else ""))


def _evaluate(expression: str, ns: dict, where: str):
    try:
        return eval(expression, {"__builtins__": _HELPERS}, dict(ns))  # the spec's own rule, never user text
    except Exception as exc:  # an argument the call left out or of another type: the input contract reports it
        raise ContractViolation(f"{where}: its rule {expression!r} could not be evaluated on these arguments "
                                f"({type(exc).__name__}: {exc})") from None


def _shape_matches(got: tuple, expected: tuple) -> bool:
    if Ellipsis in expected:
        i = expected.index(Ellipsis)
        head, tail = expected[:i], expected[i + 1:]
        return len(got) >= len(head) + len(tail) and _shape_matches(got[:len(head)], head) and \
            _shape_matches(got[len(got) - len(tail):], tail)
    return len(got) == len(expected) and all(e is None or int(g) == int(e) for g, e in zip(got, expected))


def _show(shape) -> str:
    return "(" + ", ".join("..." if s is Ellipsis else "*" if s is None else str(int(s)) for s in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def _dtypes(rule: str, ns: dict, where: str) -> tuple[torch.dtype, ...]:
    found = []
    for alternative in rule.split("|"):
        if alternative in ns:
            value = ns[alternative]
            dtype = value if isinstance(value, torch.dtype) else getattr(value, "dtype", None)
            if isinstance(value, torch.Tensor) and not value.is_floating_point():
                dtype = None  # a rule "like x" says nothing when x is an integer tensor (a loss of labels)
            if dtype is not None:
                found.append(dtype)
        elif isinstance(getattr(torch, alternative, None), torch.dtype):
            found.append(getattr(torch, alternative))
        else:
            raise ValueError(f"{where}: dtype rule {rule!r} names {alternative!r}, neither an argument nor a dtype")
    return tuple(found)
