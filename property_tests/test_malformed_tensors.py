"""Every check the spec makes of a tensor argument, checked on the implementation: one corrupted tensor at a time.

The spec's tensor checks (a probability row that must sum to 1, a state index below the number of states, times in
(0, 1), a schedule that decreases, two shapes that must agree, an integer dtype) are the operation's contract, and
they are not written down a second time here: the spec is the oracle of each verdict. At a point of the operation's
domain, each tensor argument in turn is corrupted in one way:

- one entry (the last) set to NaN, an infinity, -1, 0, 1/2, 1 or 2 - a floating tensor; -1, 0 and each size that
  appears in the inputs and one below it (the bounds an index is checked against: a number of states, a length) -
  an integer tensor. One bad entry among good ones is what a check of any() where all() is meant lets through;
  an entry on a bound is what a strict comparison where a loose one is meant lets through;
- its first two entries swapped, or its order reversed (a schedule's monotonicity); 1 moved from the second entry
  to the first along the last axis (a probability below 0 in rows that still sum to 1);
- its shape: one shorter along its first or last axis, an extra leading axis, flattened, emptied, 0-d (a check
  of a rank, a batch axis, is off by one at the rank 0);
- its kind: a list instead of a tensor, an integer tensor for a floating one and a floating one for an integer one;
- an integer table (N, 2) with a row appended that has a 0 in one column (an image of h x 0 patches, which adds
  nothing to a total that the other checks compare);
- a dict (a model's weights, one of its layers) without one of its keys; a list of strings with one entry not a
  string;
- an optional argument omitted (noise the spec needs when eta > 0);
- and each corruption again under the other options of each choice argument, where the spec's verdict changes with
  the option (t = 1 is rejected for flow matching alone).

Where the spec rejects the corrupted input with an ArgumentError, the implementation must too, naming one of the
arguments the spec named (a disagreement between two shapes may be blamed on either). Where the spec accepts it (an
entry on a closed bound, a NaN that propagates), the implementation must not raise. Any other error of the spec
gives no verdict. Held to this project's code, like the argument bounds (test_argument_bounds.py): a library's
errors are its own, and the document's contract tests say what it must reject.
"""

from __future__ import annotations

import re

import pytest
import torch

from eqspec.contracts import ArgumentError, ContractViolation
from eqspec.domain import OMIT, Choice, Optional, call_arguments
from implementations import load_all

from . import guard
from .domains import cases, convert, for_spec, for_target, paths, replace_at, tensor_paths
from .harness import contract_test, drawn_few, names
from .kept import KeptLast

REGISTRY = load_all()
EXAMPLES = 2  # points of the domain per implementation: the corruptions are the same at every point, the options differ
ACCEPTED_CHECKED = 6  # of the corrupted inputs the spec accepts, how many run through the implementation per point
NESTED_KEPT = 3  # of the tensors inside one argument (a dict of weights, a list of layers): the first two and the last
FLOAT_ENTRIES = (("NaN", float("nan")), ("inf", float("inf")), ("-inf", float("-inf")), ("-1", -1.0), ("0", 0.0),
                 ("1/2", 0.5), ("1", 1.0), ("2", 2.0))
SIZES_KEPT = 6  # the largest sizes of the inputs tried as an integer entry (and one below each)
CALL_DEADLINE_S = 30.0  # one call on a corrupted input (ours answer in milliseconds; a hang is the finding)
VERDICTS_KEPT = 16  # the spec's verdicts at the last points, for the next implementation (a mutant) at the same point


# --- where the tensors are, and one of them replaced ----------------------------------------------------------

def _shown(name: str, path: tuple) -> str:
    return name + "".join(f"[{p!r}]" for p in path)


# --- the corruptions ----------------------------------------------------------------------------------------

def _with_entry(x: torch.Tensor, value) -> torch.Tensor:
    y = x.clone()
    y.view(-1)[-1] = value
    return y


def _sizes(inputs: dict) -> list[int]:
    """The integers of the inputs (sizes of every tensor, integer arguments): the bounds an index may be checked
    against."""
    found = set()
    for value in inputs.values():
        if isinstance(value, int) and not isinstance(value, bool):
            found.add(value)
        for _, t in tensor_paths(value):
            found.update(t.shape)
    return sorted(v for v in found if v > 0)[-SIZES_KEPT:]


def corruptions(x: torch.Tensor, inputs: dict) -> list[tuple[str, object]]:
    """(label, corrupted x) for one tensor."""
    out: list[tuple[str, object]] = []
    if x.numel() and x.is_floating_point():
        out += [(f"one entry {label}", _with_entry(x, v)) for label, v in FLOAT_ENTRIES]
    elif x.numel() and x.dtype != torch.bool:
        entries = {-1, 0}
        for n in _sizes(inputs):
            entries.update((n, n - 1))
        out += [(f"one entry {v}", _with_entry(x, v)) for v in sorted(entries)]
    if x.dim() == 2 and x.shape[0] and not x.is_floating_point() and x.dtype != torch.bool:
        for j, where in ((0, "first"), (-1, "last")):  # a part of no size that adds nothing to a total (h w = 0)
            row = x[-1:].clone()
            row[0, j] = 0
            out.append((f"a row appended: its last row with the {where} entry 0", torch.cat([x, row])))
    if x.dim() >= 1 and x.shape[-1] >= 2 and x.is_floating_point():
        moved = x.clone()  # every sum along the last axis kept: a sign check that sums hide (a probability below 0)
        moved[..., 0] += 1.0
        moved[..., 1] -= 1.0
        out.append(("1 moved from its second entry to its first along the last axis", moved))
    if x.dim() >= 1 and x.shape[-1] >= 2:
        swapped = x.clone()
        swapped[..., [0, 1]] = x[..., [1, 0]]
        out += [("its first two entries swapped", swapped), ("its order reversed", x.flip(-1))]
    if x.dim() >= 1:
        out += [("one shorter along its last axis", x[..., :-1].clone()),
                ("an extra leading axis", x.unsqueeze(0).clone()), ("emptied", x[:0].clone())]
        if x.numel():
            out.append(("its first entry alone, 0-d", x.reshape(-1)[0].clone()))
    if x.dim() >= 2:
        out += [("one shorter along its first axis", x[:-1].clone()), ("flattened", x.reshape(-1).clone())]
    out.append(("a list instead of a tensor", x.tolist()))
    if x.is_floating_point():
        out.append(("an integer tensor", x.nan_to_num().round().to(torch.int64)))
    elif x.dtype != torch.bool:
        out.append(("a floating tensor", x.to(torch.float64)))
    return out


def dict_paths(value):
    """(path, dict) for every dict inside ``value`` (a model's weights, each layer of them), outermost first."""
    return paths(value, lambda v: isinstance(v, dict))


def string_lists(value):
    """(path, list) for every non-empty list or tuple of strings inside ``value`` (captions, prompts)."""
    return paths(value, lambda v: isinstance(v, (tuple, list)) and bool(v) and all(isinstance(x, str) for x in v))


def not_strings(texts) -> list[tuple[str, list]]:
    """(label, texts with its last entry not a string): a check of the list that lets one bad entry through."""
    return [(f"its last entry {bad!r} instead of a string", [*texts[:-1], bad]) for bad in (None, 0)]


def missing_keys(d: dict) -> list[tuple[str, dict]]:
    """(label, d without one of its keys) for each key: a check of a dict's keys that lets one through."""
    return [(f"without its key {k!r}", {k2: v for k2, v in d.items() if k2 != k}) for k in d]


# --- verdicts ------------------------------------------------------------------------------------------------

def _top(argument: str) -> str:
    return re.split(r"[.\[]", argument, maxsplit=1)[0].strip()


def _spec_verdict(op, inputs: dict) -> tuple[str, ...] | None:
    """The top-level arguments the spec's ArgumentError names, () when the spec accepts, None for another error."""
    args, kwargs = call_arguments(op.reference, for_spec(inputs))
    try:
        op.reference(*args, **kwargs)
    except ArgumentError as exc:
        return tuple(dict.fromkeys(_top(a) for a in exc.arguments))
    except Exception:  # noqa: BLE001 - an overflow, a singular matrix: not a verdict on the contract
        return None
    return ()


_VERDICTS = KeptLast(VERDICTS_KEPT)


def variants(op, case, inputs: dict) -> list[tuple[str, dict, tuple[str, ...]]]:
    """(what was corrupted, the corrupted inputs, the arguments the spec names or () where it accepts)."""
    key = (op.id, case.drawn, case.seed)
    kept = _VERDICTS.get(key)
    if kept is not None:
        return kept
    found = []
    corrupted: list[tuple[str, dict, tuple[str, ...]]] = []
    for name, value in inputs.items():
        if value is OMIT:
            continue
        if isinstance(op.domain.args.get(name), Optional):  # omitted: where the spec needs it (noise when eta > 0)
            verdict = _spec_verdict(op, {**inputs, name: OMIT})
            if verdict is not None:
                found.append((f"{name}: omitted", {**inputs, name: OMIT}, verdict))
        inside = list(tensor_paths(value))
        if len(inside) > NESTED_KEPT:  # a model's weights: each corruption runs the model; its checks are the same
            inside = inside[:NESTED_KEPT - 1] + inside[-1:]
        nested = list(dict_paths(value))
        if len(nested) > NESTED_KEPT:  # the weights and the first and last of their layers
            nested = nested[:NESTED_KEPT - 1] + nested[-1:]
        candidates = [(path, label, bad) for path, x in inside for label, bad in corruptions(x, inputs)]
        candidates += [(path, label, bad) for path, d in nested for label, bad in missing_keys(d)]
        candidates += [(path, label, bad) for path, texts in string_lists(value) for label, bad in not_strings(texts)]
        for path, label, bad in candidates:
            changed = {**inputs, name: replace_at(value, path, bad)}
            verdict = _spec_verdict(op, changed)
            if verdict is not None:
                corrupted.append((f"{_shown(name, path)}: {label}", changed, verdict))
    found += corrupted + with_other_options(op, inputs, corrupted)
    _VERDICTS.put(key, found)
    return found


def with_other_options(op, inputs: dict, corrupted: list) -> list[tuple[str, dict, tuple[str, ...]]]:
    """The corruptions the spec accepts, again under each other option of each choice argument, where the spec
    then rejects them: a check that only one option makes (t < 1 for flow matching alone) is seen whichever option
    was drawn."""
    accepted = [c for c in corrupted if c[2] == ()]
    found = []
    for name, declared in op.domain.args.items():
        declared = declared.inner if isinstance(declared, Optional) else declared
        if not isinstance(declared, Choice) or inputs.get(name, OMIT) is OMIT:
            continue
        for option in declared.options:
            if callable(option):  # a fixture the tests bring (a denoiser network), not an option of the operation
                continue
            if option == inputs[name] or _spec_verdict(op, {**inputs, name: option}) != ():
                continue  # the point itself is outside the contract under this option
            for label, changed, _ in accepted:
                other = _spec_verdict(op, {**changed, name: option})
                if other:
                    found.append((f"{label}, with {name} = {option!r}", {**changed, name: option}, other))
    return found


def _fresh(inputs: dict, target) -> dict:
    """The target's copy: rounded to its dtype, on its device, no tensor shared with another call."""
    moved = for_target(inputs, target)
    return {k: convert(v, lambda t: t.clone()) for k, v in moved.items() if v is not OMIT}


def _call(target, op, inputs: dict):
    """The implementation itself on the corrupted input (not through guard.call, which would wrap its
    ArgumentError and check the outputs of an input outside the contract)."""
    fn = guard.load(target.impl)
    args, kwargs = call_arguments(op.reference, _fresh(inputs, target))
    with guard.deadline(CALL_DEADLINE_S):
        return fn(*target.on_device(args), **target.on_device(kwargs))


def _verdict(named: tuple[str, ...]) -> str:
    return f"rejects it naming {', '.join(named)}" if named else "accepts it"


def check_malformed(op, target, data) -> None:
    if "world_size" in target.impl.limits:
        pytest.skip("worker processes started per call (seconds each), for every corrupted input: the argument "
                    "checks before the workers start are the contract tests' (measured: a NaN feature held the "
                    "gloo workers 140 s)")
    case = data.draw(cases(op.domain, target, allow_large=False), label="case")
    found = variants(op, case, case.inputs())
    # each accepted corruption runs the whole operation: a drawn few per point
    accepted = drawn_few(data, [v for v in found if not v[2]], ACCEPTED_CHECKED, "accepted")
    for what, changed, named in [v for v in found if v[2]] + accepted:
        try:
            _call(target, op, changed)
        except pytest.skip.Exception as exc:  # the implementation's NotImplementedError, as guard reports it
            raise ContractViolation(f"{what}: the spec {_verdict(named)}, the implementation said it does not "
                                    f"support the input: {exc}") from exc
        except ArgumentError as exc:
            if not named:
                raise ContractViolation(f"{what}: the spec accepts this input, the implementation rejected it: "
                                        f"{exc}") from exc
            if not any(names(exc.arguments, n) for n in named):
                raise ContractViolation(f"{what}: the spec rejects it naming {', '.join(named)}; the "
                                        f"implementation's error names {', '.join(exc.arguments)}: {exc}") from exc
            continue
        except Exception as exc:  # noqa: BLE001 - ours answers bad input with an ArgumentError, or accepts it
            raise ContractViolation(f"{what}: the spec {_verdict(named)}, the implementation raised "
                                    f"{type(exc).__name__}: {exc}") from exc
        if named:
            raise ContractViolation(f"{what}: the spec rejects it naming {', '.join(named)}, the implementation "
                                    f"accepted it")


for _op in REGISTRY.operations.values():
    if _op.domain is not None:
        _test = contract_test(_op.id, EXAMPLES, "malformed", f"{_op.id} rejects what its spec rejects of each tensor "
                              "argument corrupted, and accepts the rest.", spec_too=False)(check_malformed)
        globals()[_test.__name__] = _test
