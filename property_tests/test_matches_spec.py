"""One differential test per operation: any implementation against the spec over the operation's whole domain.

Each declared operation (``domain=`` in specs/, eqspec/domain.py) gets ``test_<document>__<operation>``: hypothesis
draws a point of the domain (every argument varied, options and optional arguments included, a few examples at
the large sizes), the implementation runs on the inputs rounded to its dtype, and the spec on the same rounded
inputs in float64. Then, for every output the operation returns (each value of a tuple, each rank's, each
iterate):

- floating outputs within the budget err <= k max(err(baseline), err(rounded spec)) + floor (eqspec/budget.py):
  the baseline is the operation's naive same-precision code where it has one; the rounded error is how far the
  spec itself moves when every intermediate it computes is rounded at random in the dtype (Monte Carlo
  arithmetic, property_tests/rounding.py) - the conditioning of what is computed, measured;
- integer and boolean outputs (counts, indices, a greedy policy) exactly - or equal to the spec's answer for one
  of the randomly rounded runs, where the answer is a near tie that rounding may decide either way;
- for a differentiable implementation in float64, the gradient of a random linear functional of the outputs with
  respect to every floating input, within the gradient budget (k = 3);
- the inputs unchanged after the call, and no output sharing memory with an input.

Where the outputs depend on random numbers the implementation draws itself (a torch.Generator), only the contract,
the inputs' integrity and the aliasing are checked (``determined=False`` in the domain).
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import HealthCheck, event, given, reject, settings

from eqspec.budget import K_FORWARD, K_GRADIENT
from eqspec.contracts import ConformanceError, ContractViolation
from eqspec.domain import GIVEN, call_arguments, needed, pin_id, pins
from implementations import load_all
from specs import MATCHES_SPEC

from . import recording
from .domains import cases, convert, for_spec, for_target, tensors, unsupported
from .guard import ImplementationError
from .harness import checks, host, within_budget
from .rounding import farthest, rounded_runs

REGISTRY = load_all()
# A library that refused this many points drawn one after another, and none before them, supports (at 95%
# confidence) under 3% of the domain: the row is skipped with its reason, where hypothesis would go on drawing for
# hundreds (measured: gymnasium's episodes, which run only their own MDP, 459 points and 11 s a row)
UNSUPPORTED_PATIENCE = 100
MIN_PIN_EXAMPLES = 4  # the profile's examples are shared among an operation's pinned options, at least this many


def output_names(returns: str, count: int) -> list[str]:
    names = [n.strip() for n in returns.strip("()").split(",")]
    return names if len(names) == count else [f"{returns}[{i}]" for i in range(count)]


def _as_tensor(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, bool):
        return torch.tensor(x)
    if isinstance(x, int):
        return torch.tensor(x, dtype=torch.int64)
    if isinstance(x, float):
        return torch.tensor(x, dtype=torch.float64)
    return None


def compare(name: str, out, ref, others: list, dtype: torch.dtype, exact: bool, magnitude=None,
            terms: int = 0) -> None:
    """``out`` against the spec's ``ref``; ``others``: the same output of the baseline and of the rounded spec;
    ``magnitude``, ``terms``: the operation's error analysis of this output (Operation.magnitudes), if it has one."""
    if ref is None:
        if out is not None:
            raise ConformanceError(f"{name}: the spec returns None, the implementation {type(out).__name__}")
        return
    if isinstance(ref, (tuple, list)) and not isinstance(ref, torch.Tensor):
        if not isinstance(out, (tuple, list)) or len(out) != len(ref):
            raise ConformanceError(f"{name}: the spec returns {len(ref)} values, the implementation "
                                   f"{len(out) if isinstance(out, (tuple, list)) else type(out).__name__}")
        for i, (o, r) in enumerate(zip(out, ref)):
            compare(f"{name}[{i}]", o, r, [x[i] for x in others if isinstance(x, (tuple, list)) and len(x) > i],
                    dtype, exact)
        return
    if isinstance(ref, dict):
        if not isinstance(out, dict) or set(out) != set(ref):
            raise ConformanceError(f"{name}: the spec returns keys {sorted(ref)}, the implementation "
                                   f"{sorted(out) if isinstance(out, dict) else type(out).__name__}")
        for k in ref:
            compare(f"{name}[{k!r}]", out[k], ref[k], [x[k] for x in others if isinstance(x, dict) and k in x],
                    dtype, exact)
        return
    r, o = _as_tensor(ref), _as_tensor(out)
    if r is None:  # not a number: compared as a value
        if out != ref:
            raise ConformanceError(f"{name}: got {out!r}, the spec {ref!r}")
        return
    if o is None:
        raise ConformanceError(f"{name}: got {type(out).__name__}, the spec a number or a tensor")
    candidates = [t for x in others if (t := _as_tensor(x)) is not None]
    if _iterates_vary(o, r, candidates):
        # how many iterates an iterative algorithm takes before it stops is itself decided by rounding here (the
        # randomly rounded spec stopped after another number): the last iterate, where it stopped, is compared
        o, r = o[-1], r[-1]
        candidates = [a[-1] for a in candidates if a.dim() == r.dim() + 1 and a.shape[0]]
    if o.shape != r.shape:
        raise ConformanceError(f"{name}: shape {tuple(o.shape)} differs from the spec's {tuple(r.shape)}")
    alternatives = [t for t in candidates if t.shape == r.shape]
    if exact or not r.is_floating_point():
        if any(bool(((o.double() == a.double()) | (o.isnan() & a.isnan())).all()) for a in [r, *alternatives]):
            return
        diff = (o.double() != r.double()) & ~(o.isnan() & r.isnan())
        first = diff.nonzero()[:5].tolist()
        raise ConformanceError(f"{name}: {int(diff.sum())} of {r.numel()} entries differ from the spec (exact), "
                               f"first at {first}: got {[o[tuple(i)].item() for i in first]}, spec "
                               f"{[r[tuple(i)].item() for i in first]}")
    if o.is_floating_point() and o.dtype != torch.float64:
        # a value beyond the output dtype's range rounds to an infinity of its sign: that is the correct answer
        overflow = torch.isinf(o) & torch.isfinite(r) & (r.abs() > torch.finfo(o.dtype).max) & (o.sign() == r.sign())
        # and a value below its smallest normal number may flush to 0 (8e-179 in float32)
        underflow = (o == 0) & (r.abs() < torch.finfo(o.dtype).tiny)
        r = torch.where(overflow | underflow, o.double(), r.double())
    worst = farthest(alternatives, r, default=r)
    within_budget(name, o, r, worst, k=K_FORWARD, dtype=dtype, magnitude=magnitude, terms=terms)


def _iterates_vary(o: torch.Tensor, r: torch.Tensor, candidates: list[torch.Tensor]) -> bool:
    """Whether ``r`` stacks iterates whose number the rounding decides: a rounded run of the spec returned another
    number of them (the same shape otherwise), and the implementation's answer is such a stack too."""
    def stack_like(t):
        return t.dim() == r.dim() >= 1 and t.shape[1:] == r.shape[1:] and t.shape[0] > 0
    return stack_like(o) and r.shape[0] > 0 and any(stack_like(a) and a.shape[0] != r.shape[0] for a in candidates)


def check_integrity(inputs: dict, before: dict, out) -> None:
    """The call left its inputs as they were and returned no tensor sharing memory with one of them."""
    for name, value in inputs.items():
        for (path, t), (_, t0) in zip(tensors(value, name), tensors(before[name], name)):
            if t.is_sparse:
                t, t0 = t.to_dense(), t0.to_dense()
            if t.shape != t0.shape or not bool(((t == t0) | (t.isnan() & t0.isnan())).all()):
                raise ContractViolation(f"the implementation modified its input {path} in place")
            if t.requires_grad != t0.requires_grad:  # requires_grad_() on the caller's tensor, not on a copy
                raise ContractViolation(f"the implementation set requires_grad={t.requires_grad} on its input {path}")
    storages = {}
    for name, value in inputs.items():
        for path, t in tensors(value, name):
            if t.numel() and t.layout == torch.strided:  # a sparse tensor's parts are tensors of their own
                storages[t.untyped_storage().data_ptr()] = path
    for path, t in tensors(out, "output"):
        if t.numel() and t.layout == torch.strided and t.untyped_storage().data_ptr() in storages:
            raise ContractViolation(f"{path} shares memory with the input {storages[t.untyped_storage().data_ptr()]} "
                                    "(a caller that changes one changes the other)")


def differentiable(inputs: dict, fixed: tuple[str, ...]) -> list[str]:
    """The inputs a gradient is compared for: floating tensors, except 0/1 ones (masks) and ``fixed`` ones."""
    return [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and k not in fixed
            and v.numel() and not bool(((v == 0) | (v == 1)).all())]


def output_weights(ref, seed: int, skipped: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """A random linear functional of the floating outputs, by output path: the same weights for the implementation
    and the spec; none on the outputs in ``skipped`` (indices of a tuple the implementation declares it does not
    return: SDPA's lse is None, and the spec's lse must not enter the spec's side alone)."""
    gen = torch.Generator().manual_seed(seed)
    weights = {path: torch.randn(t.shape, generator=gen, dtype=torch.float64) for path, t in tensors(ref)
               if t.is_floating_point()}
    return {path: w for path, w in weights.items() if not any(path.startswith(f"[{i}]") for i in skipped)}


def gradients(fn, reference, inputs: dict, names: list[str], weights: dict[str, torch.Tensor], canonical=None):
    """d(sum_o w_o . out_o)/d input for ``names`` (zeros where the output does not depend on it), or None when no
    output carries a gradient; the outputs in the domain's canonical form, if it has one."""
    leaves = {n: inputs[n].detach().clone().requires_grad_(True) for n in names}
    args, kwargs = call_arguments(reference, {**inputs, **leaves})
    out = fn(*args, **kwargs)
    if canonical is not None:
        out = canonical(out)
    terms = [(weights[path].to(t.device) * t.double()).sum() for path, t in tensors(out)
             if path in weights and t.is_floating_point() and t.requires_grad]
    if not terms:
        return None
    try:
        grads = torch.autograd.grad(sum(terms), [leaves[n] for n in names], allow_unused=True)
    except RuntimeError as exc:  # an output whose graph was already freed: a caller's backward() fails the same way
        if fn is reference:
            raise
        raise ImplementationError(f"its outputs cannot be differentiated: {exc}") from exc
    return [g if g is not None else torch.zeros_like(leaves[n]) for n, g in zip(names, grads)]


def compare_gradients(target, op, domain, inputs, spec_inputs, ref, seed: int, dtype, key=None) -> None:
    """``key``: the drawn point (with the operation), by which the spec's rounded runs are kept for other targets."""
    names = differentiable(inputs, domain.fixed)
    if not names:
        return
    outputs = output_names(op.returns, len(ref) if isinstance(ref, tuple) else 1)
    skipped = tuple(i for i, name in enumerate(outputs) if name in op.capabilities and name not in target.impl.provides)
    weights = output_weights(ref, seed, skipped if isinstance(ref, tuple) else ())
    got = gradients(target, op.reference, inputs, names, weights, domain.canonical)
    want = gradients(op.reference, op.reference, spec_inputs, names, weights, domain.canonical)
    if want is None:
        return
    if got is None:
        raise ConformanceError(f"no output carries a gradient to {', '.join(names)}; the spec's do")
    others = []
    if op.baseline is not None and target.dtype != "float64":
        try:
            others.append(gradients(target.baseline, op.reference, inputs, names, weights, domain.canonical))
        except Exception:  # noqa: BLE001 - a baseline that cannot take this point measures nothing
            pass
    analysis = ({}, 0)
    if op.gradient_magnitudes is not None:
        args, kwargs = call_arguments(op.reference, spec_inputs)
        # the functional's weights in the order of the spec's floating outputs, 0 on an output left out
        aligned = [weights.get(path, torch.zeros(t.shape, dtype=torch.float64)) for path, t in tensors(ref)
                   if t.is_floating_point()]
        analysis = op.gradient_magnitudes(aligned, *args, **kwargs)
    try:  # the random roundings only where the floor and the baseline do not cover the difference
        _compare_gradients(names, got, want, others, spec_inputs, dtype, analysis)
    except ConformanceError:
        others += rounded_runs(None if key is None else (key, "gradients", tuple(names), skipped), dtype, seed,
                               gradients, op.reference, op.reference, spec_inputs, names, weights, domain.canonical)
        _compare_gradients(names, got, want, others, spec_inputs, dtype, analysis)


def _compare_gradients(names, got, want, others, spec_inputs, dtype, analysis) -> None:
    # A gradient sums terms its value does not show (p - onehot times W cancels to 1e-3 out of terms of 0.5; the
    # random roundings of the forward pass miss the backward's): its floor is the operation's error analysis of its
    # gradients where it has one (Operation.gradient_magnitudes), else one rounding of the largest gradient or input
    # in the computation (measured: the chunked float64 loss 1.1e-16 off a gradient of 2e-3, inputs ~1).
    mags, terms = analysis
    largest = max(float(t.detach().abs().max()) for t in [*want, *(spec_inputs[n] for n in names)] if t.numel())
    for i, name in enumerate(names):
        alternatives = [o[i] for o in others if o is not None]
        worst = farthest(alternatives, want[i].detach(), default=want[i])
        within_budget(f"d/d{name}", got[i].detach().cpu(), want[i].detach(), worst.detach().cpu(), k=K_GRADIENT,
                      magnitude=mags.get(name, largest), terms=terms if name in mags else 0, dtype=dtype)


def differential_test(op_id: str):
    op = REGISTRY.operations[op_id]
    domain = op.domain
    # float64 runs each pin (the generated and the hand-written mutants are float64: every option and omission
    # must meet them); other dtypes run once, unpinned, over the whole domain - the rounding, not the options, is
    # what differs there, and the per-claim tests carry their error analyses
    pinned = [None, *pins(domain)]

    claims = (f"{op.document}.{MATCHES_SPEC}",)

    @checks(*claims, operation=op_id)
    @pytest.mark.parametrize("pin", pinned, ids=pin_id)
    # filter_too_much: a library that supports part of the domain rejects the rest (below); where it supports none of
    # it, the run is skipped with its reason (plugins/parametrize.py)
    @settings(max_examples=max(MIN_PIN_EXAMPLES, settings.default.max_examples // max(len(pinned) - 1, 1)),
              suppress_health_check=[*settings.default.suppress_health_check, HealthCheck.filter_too_much])
    @given(data=st.data())
    def test(target, pin, data):
        if pin is not None and (c := needed(*pin, op.capabilities)) and c not in target.impl.provides:
            pytest.skip(f"{target.name} does not provide {c}")
        if pin is not None and pin[1] is GIVEN and pin[0] in op.capabilities and pin[0] not in target.impl.provides:
            pytest.skip(f"{target.name} does not provide {pin[0]}")
        if missing := unsupported(domain, target):
            pytest.skip(f"{target.name} supports no value of {', '.join(missing)} (eqspec_provides)")
        case = data.draw(cases(domain, target, pin), label="case")
        inputs = for_target(case.inputs(), target)
        before = {k: convert(v, torch.Tensor.clone) for k, v in inputs.items()}
        args, kwargs = call_arguments(op.reference, inputs)
        try:
            out = target(*args, **kwargs)
        except pytest.skip.Exception as refused:  # its NotImplementedError: not a point it supports, others may be
            if recording.unsupported() >= UNSUPPORTED_PATIENCE:
                pytest.skip(f"{refused.msg} (and at each of the first {UNSUPPORTED_PATIENCE} points drawn)")
            reject()
        check_integrity(inputs, before, out)
        if not domain.determined:
            if domain.holds is not None:  # what every draw of the random numbers keeps
                domain.holds(for_spec(inputs), host(out))
            return
        deviation = target.impl.deviation_at(claims, {"dtype": target.dtype, "device": target.device}, inputs)
        try:
            compare_with_spec(target, op, case, inputs, args, kwargs, out)
        except ConformanceError:
            if deviation is None:
                raise
            # a point where the implementation differs as it documents: observed, and left out
            event(f"documented deviation observed: {deviation.reason}")
            reject()

    test.__name__ = f"test_{op_id.replace('.', '__')}"
    test.__doc__ = f"{op_id} matches its spec over its whole declared domain."
    return test


def compare_with_spec(target, op, case, inputs: dict, args, kwargs, out) -> None:
    """Every output of ``target`` (its answer ``out`` at ``inputs``) against the spec's; in float64, the gradients."""
    domain = op.domain
    canonical = domain.canonical or (lambda result: result)
    out = canonical(out)
    spec_inputs = for_spec(inputs)
    ref_args, ref_kwargs = call_arguments(op.reference, spec_inputs)
    ref = canonical(op.reference(*ref_args, **ref_kwargs))
    others = []
    if op.baseline is not None and target.dtype != "float64":
        try:
            others.append(canonical(target.baseline(*args, **kwargs)))
        except Exception:  # noqa: BLE001 - a baseline that cannot take this point measures nothing
            pass
    dtype = target.torch_dtype if target.dtype else torch.float64
    names = output_names(op.returns, len(ref) if isinstance(ref, tuple) else 1)
    *magnitudes, terms = (op.magnitudes(*ref_args, **ref_kwargs) if op.magnitudes is not None
                          else (*(None for _ in names), 0))

    def compare_outputs(others: list) -> None:
        if not isinstance(ref, tuple):
            compare(names[0], out, ref, others, dtype, exact=names[0] in domain.exact and target.dtype == "float64",
                    magnitude=magnitudes[0], terms=terms)
            return
        if not isinstance(out, tuple) or len(out) != len(ref):
            raise ConformanceError(f"the spec returns {op.returns}; the implementation "
                                   f"{type(out).__name__} of {len(out) if isinstance(out, tuple) else 1}")
        for i, name in enumerate(names):
            if name in op.capabilities and name not in target.impl.provides:
                continue  # an output the implementation declares it does not return (no "lse")
            compare(name, out[i], ref[i], [o[i] for o in others if isinstance(o, tuple) and len(o) > i], dtype,
                    exact=name in domain.exact and target.dtype == "float64", magnitude=magnitudes[i],
                    terms=terms)

    try:  # most answers are within the floor of the baseline's error: the random roundings only when needed
        compare_outputs(others)
    except ConformanceError:
        runs = rounded_runs((op.id, case.drawn, target.dtype), dtype, case.seed, op.reference, *ref_args,
                            **ref_kwargs)
        compare_outputs(others + [canonical(r) for r in runs if r is not None])
    # gradients in float64 only: in low precision their budgets need the error analysis of the terms each
    # gradient sums, which the per-claim tests carry (the random roundings fell short of the Triton kernels')
    if "grad" in op.capabilities and "grad" in target.impl.provides and target.dtype == "float64":
        compare_gradients(target, op, domain, inputs, spec_inputs, ref, case.seed, dtype,
                          key=(op.id, case.drawn, target.dtype))


for _op in REGISTRY.operations.values():
    if _op.domain is not None:
        globals()[f"test_{_op.id.replace('.', '__')}"] = differential_test(_op.id)

