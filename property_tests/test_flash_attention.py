"""Property tests of the FlashAttention document (specs/flash_attention.py), one or more per claim.

Every test runs against every implementation of the operation it names (the spec itself, torch, Triton, torch
SDPA, scipy, a user's --impl); each asserts either an error budget against the float64 spec (k x the naive
same-precision baseline's error + floor), or an exact property (bit-identical, exact zeros, -inf).
"""

from __future__ import annotations

import dataclasses
import math

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import assume, given
from torch.utils.flop_counter import FlopCounterMode

from eqspec import budget
from eqspec.contracts import ConformanceError
from implementations.torch.attention import autograd_backward, naive_attention
from specs import flash_attention as fa

from . import recording
from .harness import checks, close, equal, expect_rejection, finite_pattern, ours, rejection_test, within_budget
from .rounding import ROUNDING_RUNS, farthest, rounded
from .strategies import AttentionShape, attention_shapes, partitions, randn, softmax_cases, varlen_cases

ATT = "flash_attention.attention"
BWD = "flash_attention.attention_backward"
SMX = "flash_attention.softmax"
ONLINE = "flash_attention.online_softmax"
MERGE = "flash_attention.merge"
VARLEN = "flash_attention.varlen_attention"
FLOPS = "flash_attention.attention_flops"

causal_modes = pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])


def _require_causal(target, causal: bool) -> None:
    if causal and not target.provides("causal"):
        pytest.skip(f"{target.name} does not provide the bottom-right causal mask ({target.impl.notes})")


def as64(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The inputs, already rounded to the implementation's dtype, in float64: the spec's output then carries
    no rounding of its own, so the budget's floor (storing the exact answer in the dtype) is measured, not 0."""
    return tuple(x.to(torch.float64) for x in xs)


def _tau(q: torch.Tensor) -> float:
    return 1.0 / math.sqrt(q.shape[-1])


def rounding_bound(dtype: torch.dtype, magnitude: torch.Tensor, roundings: float) -> torch.Tensor:
    """budget.rounding_atol element by element: ``roundings`` roundings in ``dtype`` of terms of size ``magnitude``."""
    return roundings * budget.eps(dtype) * magnitude.detach().to(torch.float64)


def close_within(name: str, out: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor) -> float:
    """|out - ref| <= bound element by element (a rounding bound per element, where one scalar atol would be set
    by the largest element); NaN never passes, infinities must match exactly."""
    out64, ref64 = (x.detach().to("cpu", torch.float64) for x in (out, ref))
    finite_pattern(name, out64, ref64)
    finite = torch.isfinite(ref64)
    diff = torch.where(finite, (out64 - ref64).abs(), 0.0)
    bound = bound.detach().to("cpu", torch.float64)
    over = diff > bound.expand_as(diff)
    if bool(over.any()):
        i = tuple(over.nonzero()[0].tolist())
        got, spec = budget.distinct_digits(out64[i].item(), ref64[i].item())
        gap, allowed = budget.distinct_digits(float(diff[i]), float(bound.expand_as(diff)[i]))
        raise ConformanceError(f"{name}: {int(over.sum())} of {out64.numel()} elements differ by more than their "
                               f"rounding bound (max diff {float(diff.max()):.3g}); first: {i}: got {got}, spec "
                               f"{spec}, |diff| {gap} > bound {allowed}")
    return float(diff.max()) if diff.numel() else 0.0


def _check_attention(target, q, k, v, o, lse, *, causal: bool, scale=None, baseline=None):
    """o (and lse, when the implementation returns one) within budget of the spec."""
    o_ref, lse_ref = fa.attention(*as64(q, k, v), causal=causal, scale=scale)
    o_base, lse_base = baseline if baseline is not None else target.baseline(q, k, v, causal=causal, scale=scale)
    mag_o, mag_lse, n = fa.attention_magnitudes(q, k, v, causal=causal, scale=scale)
    within_budget("o", o, o_ref, o_base, magnitude=mag_o, terms=n)
    if target.provides("lse"):
        within_budget("lse", lse, lse_ref, lse_base, magnitude=mag_lse, terms=n, dtype=lse_floor_dtype(q))


def lse_floor_dtype(q: torch.Tensor) -> torch.dtype:
    """The dtype of lse's floor: q's. lse is float32 or wider, but it sums scores that the naive baseline (and any
    plain code: the scale applied after the product, a log-sum-exp in base 2) rounds in the inputs' dtype, so its
    floor counts those roundings in q's dtype. Measured with lse's float32 epsilon instead: (q @ k^T) * scale at
    Sq = Sk = 1, D = 59 in fp16 was off by 9.4e-5 against 2 x 2.8e-5 + 2.9e-7 (the baseline rounded luckily);
    bf16 causal by 1.45e-3 against 2 x 4.98e-4 + 3.4e-7."""
    return q.dtype


# --- exact attention, tiling, merging --------------------------------------------------------------------

@checks("flash_attention.exact_attention", operation=ATT)
@causal_modes
@given(data=st.data())
def test_exact_attention(target, causal, data):
    _require_causal(target, causal)
    shape = data.draw(attention_shapes(target), label="shape")
    q, k, v = shape.tensors(target)
    o, lse = target(q, k, v, causal=causal)
    _check_attention(target, q, k, v, o, lse, causal=causal)


TILE_ROUNDINGS = 3  # per key tile, of the online softmax's rescaled accumulators: an exp (alpha), a product, a sum


def _tiled_magnitudes(q, k, v, *, causal: bool, block_k: int):
    """attention_magnitudes plus the online rescale: each key tile rounds the accumulators o~ (terms of size P|V|) and
    ell TILE_ROUNDINGS times, in an accumulator at least as precise as float32 (FlashAttention's; lse's dtype),
    expressed in units of q's epsilon, the dtype of the budget's floor."""
    mag_o, mag_lse, n = fa.attention_magnitudes(q, k, v, causal=causal)
    tiles = math.ceil(k.shape[2] / block_k)
    per_tile = TILE_ROUNDINGS * tiles * budget.eps(torch.promote_types(q.dtype, torch.float32)) / budget.eps(q.dtype)
    p_abs_v = fa.attention(*as64(q, k, v.abs()), causal=causal)[0]
    return mag_o + per_tile * p_abs_v, mag_lse + per_tile, n


@checks("flash_attention.tiled_any_block_size", operation=ATT, requires=("block_sizes",),
        dtypes=("float64", "float32", "bfloat16"))
@causal_modes
@given(data=st.data())
def test_tiled_any_block_size(target, causal, data):
    shape = data.draw(attention_shapes(target, max_len=70), label="shape")
    block_q = data.draw(st.integers(1, 40), label="block_q")
    block_k = data.draw(st.integers(1, 40), label="block_k")
    assume(math.ceil(shape.Sq / block_q) * math.ceil(shape.Sk / block_k) <= 256)  # keep Python tile loops short
    q, k, v = shape.tensors(target)
    o, lse = target(q, k, v, causal=causal, block_q=block_q, block_k=block_k)
    if target.dtype == "float64":  # an identity: only float64 reassociation separates it from one-shot attention
        o_ref, lse_ref = fa.attention(q, k, v, causal=causal)
        mag_o, mag_lse, n = fa.attention_magnitudes(q, k, v, causal=causal)
        # Each side is within n roundings of its terms' sizes (n: the reductions' lengths); the tiled one adds
        # TILE_ROUNDINGS of its rescaled accumulator per key tile.
        roundings = 2 * n + TILE_ROUNDINGS * math.ceil(shape.Sk / block_k)
        close_within("o", o, o_ref, rounding_bound(torch.float64, mag_o, roundings))
        close_within("lse", lse, lse_ref, rounding_bound(torch.float64, mag_lse, roundings))
    else:  # one-key tiles round the accumulator three times per key where the naive P V rounds once
        o_ref, lse_ref = fa.attention(*as64(q, k, v), causal=causal)
        o_base, lse_base = target.baseline(q, k, v, causal=causal)
        mag_o, mag_lse, n = _tiled_magnitudes(q, k, v, causal=causal, block_k=block_k)
        within_budget("o", o, o_ref, o_base, magnitude=mag_o, terms=n)
        within_budget("lse", lse, lse_ref, lse_base, magnitude=mag_lse, terms=n, dtype=lse_floor_dtype(q))


@checks("flash_attention.attention_contract", operation=ATT, requires=("block_sizes",))
@pytest.mark.parametrize("argument", ["block_q", "block_k"])
@pytest.mark.parametrize("block", [0, -1, 2.5], ids=["zero", "negative", "float"])
def test_tiled_rejects_bad_block_size(target, argument, block):
    """A tile size is a positive integer; anything else is rejected naming the argument, not run (a step of 0 or
    of 2.5 fails inside range(), a negative one silently yields no tiles)."""
    q, k, v = (target.tensor(randn(s, 1, 2, 5, 8)) for s in (1, 2, 3))
    expect_rejection(target, lambda fn: fn(q, k, v, **{argument: block}), argument, f"{argument} = {block!r}")


BLOCK_SWEEP = (8, 16, 32, 64, 128)


@checks("flash_attention.tiled_any_block_size", operation=ATT, requires=("block_sizes",),
        dtypes=("float32", "bfloat16"))
def test_error_vs_block_size(target):
    """One fixed problem at every block size: the error stays within budget and the report plots it."""
    n = 64 if target.interpreted else 128
    shape = AttentionShape(B=1, H=2, Hkv=2, Sq=n, Sk=n, D=64, Dv=64, sharpness=2.0, seed=20260)
    q, k, v = shape.tensors(target)
    o_ref, _ = fa.attention(*as64(q, k, v))
    o_base, _ = target.baseline(q, k, v)
    points = []
    for block in (b for b in BLOCK_SWEEP if b <= n):
        o, _ = target(q, k, v, block_q=block, block_k=block)
        mag_o, _, terms = _tiled_magnitudes(q, k, v, causal=False, block_k=block)
        points.append((block, within_budget("o", o, o_ref, o_base, magnitude=mag_o, terms=terms).err))
    recording.series("error_vs_block_size", f"{target.name} {target.dtype}", "block size (block_q = block_k)",
                     "max |o - spec|", points)


def _splits(data, Sk: int, parts: int) -> list[slice]:
    cuts = sorted(data.draw(st.lists(st.integers(0, Sk), min_size=parts - 1, max_size=parts - 1), label="cuts"))
    edges = [0, *cuts, Sk]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


def _partial(q, k, v, keys: slice, dtype):
    """(o, lse) of attention over the keys in ``keys``; an empty split is (0, -inf)."""
    if keys.start == keys.stop:
        B, H, Sq = q.shape[:3]
        return torch.zeros(B, H, Sq, v.shape[-1], dtype=dtype), torch.full((B, H, Sq), -math.inf, dtype=torch.float64)
    o, lse = fa.attention(q, k[:, :, keys], v[:, :, keys])
    return o.to(dtype), lse


def _split_magnitudes(q, k, v, splits: list[slice]):
    """attention_magnitudes over all keys and over each non-empty split: the largest (mag_o, mag_lse, n)."""
    mags = [fa.attention_magnitudes(q, k, v)] + [fa.attention_magnitudes(q, k[:, :, s], v[:, :, s])
                                                 for s in splits if s.start != s.stop]
    return (torch.stack([m[0] for m in mags]).amax(0), torch.stack([m[1] for m in mags]).amax(0),
            max(m[2] for m in mags))


MERGES = 2  # (a+b)+c, a+(b+c) and (c+a)+b each merge twice
# The roundings of one merge in its dtype, L = logaddexp(L_x, L_y) (a difference, log1p(exp), a sum),
# w_x = exp(L_x - L), o = w_x o_x + w_y o_y:
MERGE_LSE_ROUNDINGS = 5  # at the lse's size: the two inputs rounded to the dtype, logaddexp's 3
MERGE_EXPONENT_ROUNDINGS = 7 + MERGE_LSE_ROUNDINGS  # at the lse's size: L_x (1), L (5), L_x - L (1), and the
#                                                    error of an input merged before (5)
MERGE_O_ROUNDINGS = 4  # at |o_x|: the exp of the weight (relative), two products, a sum


@checks("flash_attention.merge_associative", operation=MERGE)
@given(data=st.data())
def test_merge_associative(target, data):
    shape = data.draw(attention_shapes(target, gqa=False, max_len=40), label="shape")
    q, k, v = (x.to(torch.float64) for x in shape.tensors(target))
    splits = _splits(data, shape.Sk, 3)
    a, b, c = (_partial(q, k, v, s, target.torch_dtype) for s in splits)
    m = lambda x, y: target(*x, *y)  # noqa: E731
    left, right, shuffled = m(m(a, b), c), m(a, m(b, c)), m(m(c, a), b)
    o_ref, lse_ref = fa.attention(q, k, v)
    # The bound per element: MERGES merges in the target's dtype (the weights' relative error grows with the size
    # of the lse), the partial o rounded once to that dtype, and the float64 reductions of the partials and of the
    # reference (n roundings each of the terms' sizes).
    dt = target.torch_dtype
    lses = torch.stack([x.to(torch.float64) for x in (a[1], b[1], c[1], lse_ref)])
    lse_size = 1 + torch.where(torch.isfinite(lses), lses.abs(), 0.0).amax(0)
    o_size = torch.stack([x.to(torch.float64).abs() for x in (a[0], b[0], c[0], o_ref)]).amax(0)
    mag_o, mag_lse, n = _split_magnitudes(q, k, v, splits)
    o_roundings = MERGES * (MERGE_EXPONENT_ROUNDINGS * lse_size + MERGE_O_ROUNDINGS) + 1
    o_bound = rounding_bound(dt, o_size * o_roundings[..., None], 1) + rounding_bound(torch.float64, mag_o, 2 * n)
    lse_bound = (rounding_bound(dt, lse_size, MERGES * MERGE_LSE_ROUNDINGS)
                 + rounding_bound(torch.float64, mag_lse, 2 * n))
    for name, (o, lse) in (("a+(b+c)", right), ("(a+b)+c", left), ("(c+a)+b", shuffled)):
        close_within(f"o of {name}", o, o_ref, o_bound)
        close_within(f"lse of {name}", lse, lse_ref, lse_bound)
    garbage = randn(shape.seed + 7, *a[0].shape).to(target.torch_dtype)  # an empty split's o must not matter
    empty = (garbage, torch.full_like(a[1], -math.inf))
    for name, (o, lse) in (("a + empty", m(a, empty)), ("empty + a", m(empty, a))):
        # exact: logaddexp(L, -inf) = L and the weights are exp(0) = 1 and exp(-inf) = 0 (lse in its own dtype)
        equal(f"o of {name}", o, a[0])
        equal(f"lse of {name}", lse, a[1].to(lse.dtype))


@checks("flash_attention.split_kv", operation=ATT, requires=("lse",), dtypes=("float64", "float32", "bfloat16"))
@given(data=st.data())
def test_split_kv(target, data):
    shape = data.draw(attention_shapes(target), label="shape")
    assume(shape.Sk >= 2)
    split = data.draw(st.integers(1, shape.Sk - 1), label="split")
    q, k, v = shape.tensors(target)
    first, rest = slice(0, split), slice(split, None)

    def merged(fn):
        o_a, lse_a = fn(q, k[:, :, first], v[:, :, first])
        o_b, lse_b = fn(q, k[:, :, rest], v[:, :, rest])
        return fa.merge(*as64(o_a, lse_a, o_b, lse_b))  # merged in float64: only the partials are under test

    o, lse = merged(target)
    o_ref, lse_ref = fa.attention(*as64(q, k, v))
    o_base, lse_base = merged(target.baseline)
    mag_o, mag_lse, n = fa.attention_magnitudes(q, k, v)
    within_budget("merged o", o, o_ref, o_base, magnitude=mag_o, terms=n, dtype=q.dtype)
    within_budget("merged lse", lse, lse_ref, lse_base, magnitude=mag_lse, terms=n, dtype=lse_floor_dtype(q))


def _shift_magnitude(dtype: str) -> float:
    return {"float64": 1e5, "float32": 1e4, "bfloat16": 1e3, "float16": 20.0}[dtype]  # exp() overflows beyond


@checks("flash_attention.shift_invariance", operation=ATT)
@given(data=st.data())
def test_shift_invariance(target, data):
    shape = data.draw(attention_shapes(target), label="shape")
    c_max = data.draw(st.sampled_from([1.0, _shift_magnitude(target.dtype)]), label="c_max")
    q, k, v = shape.tensors(target)
    tau = _tau(q)
    c = randn(shape.seed + 3, shape.B, shape.H, shape.Sq, 1, scale=c_max / 3).clamp(-c_max, c_max)
    # S' = S + c_i: one more head dimension holding c_i / tau in q and 1 in k
    q_shift = torch.cat([q, target.tensor(c / tau)], dim=-1)
    k_shift = torch.cat([k, torch.ones_like(k[..., :1])], dim=-1)
    c_exact = tau * q_shift[..., -1].to(torch.float64)  # the shift the rounded inputs really carry
    o, lse = target(q_shift, k_shift, v, scale=tau)
    o_ref, lse_ref = fa.attention(*as64(q, k, v), scale=tau)
    o_base, lse_base = target.baseline(q_shift, k_shift, v, scale=tau)
    mag_o, mag_lse, n = fa.attention_magnitudes(q_shift, k_shift, v, scale=tau)
    within_budget("o with shifted scores", o, o_ref, o_base, magnitude=mag_o, terms=n)
    if target.provides("lse"):
        within_budget("lse - c", lse, lse_ref + c_exact, lse_base, magnitude=mag_lse, terms=n, dtype=lse_floor_dtype(q))


@checks("flash_attention.gqa", operation=ATT, requires=("gqa",), dtypes=("float32", "bfloat16"))
@given(data=st.data())
def test_gqa_equals_repeated_kv(target, data):
    shape = data.draw(attention_shapes(target), label="shape")
    group = data.draw(st.sampled_from([2, 3]), label="group")
    shape = dataclasses.replace(shape, H=shape.Hkv * group)
    q, k, v = shape.tensors(target)
    base = target.baseline(q, k, v)
    o, lse = target(q, k, v)
    _check_attention(target, q, k, v, o, lse, causal=False, baseline=base)
    k_rep, v_rep = fa.repeat_kv(k, shape.H), fa.repeat_kv(v, shape.H)
    o_mha, lse_mha = target(q, k_rep, v_rep)  # Hkv = H: plain multi-head attention
    _check_attention(target, q, k_rep, v_rep, o_mha, lse_mha, causal=False, baseline=base)


# --- masking ---------------------------------------------------------------------------------------------

@checks("flash_attention.causal_bottom_right", operation=ATT, requires=("causal",), dtypes=("float32", "bfloat16"))
@given(data=st.data())
def test_causal_bottom_right(target, data):
    shape = dataclasses.replace(data.draw(attention_shapes(target), label="shape"), sharpness=0.25)
    j = data.draw(st.integers(0, shape.Sk - 1), label="perturbed key")
    q, k, v = shape.tensors(target)
    v_moved = v.clone()
    v_moved[:, :, j] += 64  # flat attention (sharpness 0.25): a visible key moves its rows by >= 64 / (e Sk)
    o, _ = target(q, k, v, causal=True)
    o_moved, _ = target(q, k, v_moved, causal=True)
    sees = fa.causal_mask(shape.Sq, shape.Sk, q.device)[:, j]
    equal(f"rows that must not see key {j}", o_moved[:, :, ~sees], o[:, :, ~sees])
    unchanged = (o_moved[:, :, sees] == o[:, :, sees]).all(dim=-1)
    if unchanged.any():
        rows = sees.nonzero().flatten()[unchanged.any(dim=(0, 1))].tolist()
        raise AssertionError(f"rows {rows} must see key {j} (j <= i + Sk - Sq, Sq={shape.Sq}, Sk={shape.Sk}) "
                             f"but ignore a change of its value")


def _fully_masked_case(target, data):
    """A causal case with Sq > Sk: its first Sq - Sk query rows see no key at all."""
    shape = data.draw(attention_shapes(target), label="shape")
    extra = data.draw(st.integers(1, 24), label="Sq - Sk")
    shape = dataclasses.replace(shape, Sq=shape.Sk + extra)
    return shape, extra, *shape.tensors(target)


def _check_masked_row_gradients(extra: int, dq, dk, dv) -> None:
    for name, g in (("dq", dq), ("dk", dk), ("dv", dv)):
        finite_pattern(name, g, torch.zeros_like(g, dtype=torch.float64))
    equal(f"dq of the {extra} rows with no visible key", dq[:, :, :extra], torch.zeros_like(dq[:, :, :extra]))


@checks("flash_attention.fully_masked_rows", operation=ATT, requires=("causal",),
        dtypes=("float32", "float16", "bfloat16"))
@given(data=st.data())
def test_fully_masked_rows(target, data):
    shape, extra, q, k, v = _fully_masked_case(target, data)
    o, lse = target(q, k, v, causal=True)
    finite_pattern("o", o, torch.zeros_like(o, dtype=torch.float64))
    equal(f"o of the {extra} rows with no visible key", o[:, :, :extra], torch.zeros_like(o[:, :, :extra]))
    if target.provides("lse"):
        close(f"lse of the {extra} rows with no visible key", lse[:, :, :extra],
              torch.full(lse[:, :, :extra].shape, -math.inf, dtype=torch.float64), atol=0.0)
    if target.provides("grad"):
        do = target.tensor(randn(shape.seed + 5, *o.shape))
        if lse is None:  # the autograd backward recomputes the forward and reads no lse; its argument check does
            lse = fa.attention(q, k, v, causal=True)[1].to(torch.float32)
        _check_masked_row_gradients(extra, *autograd_backward(target)(q, k, v, o, lse, do, causal=True))


@checks("flash_attention.fully_masked_rows", operation=BWD, dtypes=("float32", "bfloat16"))
@given(data=st.data())
def test_fully_masked_rows_backward(target, data):
    shape, extra, q, k, v = _fully_masked_case(target, data)
    o, lse = fa.attention(q, k, v, causal=True)
    do = target.tensor(randn(shape.seed + 5, *o.shape))
    _check_masked_row_gradients(extra, *target(q, k, v, o, lse, do, causal=True))


@checks("flash_attention.gradients", operation=BWD)
@given(Sq=st.integers(1, 40), Sk=st.integers(1, 40), D=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_backward_of_rows_far_below_zero(target, Sq, Sk, D, seed):
    """Every score of a row near -1024, so lse ~ -1024 and exp(-lse) overflows even float64: a kernel that reads the
    keys past a sequence's end as zeros gives them the score 0 and P = exp(0 - lse) = inf, unless it masks them
    (measured: the Triton backward's dQ was NaN with Sk = 1, float16 and float32). Scores -1024 + 8 j are exact in
    every dtype, so the gradients are compared with the rounding bound of a correct algorithm."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.zeros(1, 1, Sq, D, dtype=torch.float64)
    k = torch.zeros(1, 1, Sk, D, dtype=torch.float64)
    q[..., 0] = 1.0
    k[..., 0] = -1024.0 + 8.0 * torch.randint(0, 4, (Sk,), generator=gen)
    v = torch.randn(1, 1, Sk, D, generator=gen, dtype=torch.float64)
    do = torch.randn(1, 1, Sq, D, generator=gen, dtype=torch.float64)
    q, k, v, do = (target.tensor(x) for x in (q, k, v, do))
    o, lse = fa.attention(q, k, v, scale=1.0)
    o = o.to(q.dtype)
    lse = lse.to(torch.promote_types(q.dtype, torch.float32))  # a forward saves lse in float32 at least
    got = target(q, k, v, o, lse, do, scale=1.0)
    want = fa.attention_backward(*(x.double() for x in (q, k, v, o, lse, do)), scale=1.0)
    magnitudes = fa.attention_backward_magnitudes(*(x.double() for x in (q, k, v, o, lse, do)), scale=1.0)
    for name, g, w, mag in zip(("dq", "dk", "dv"), got, want, magnitudes[:3]):
        finite_pattern(name, g.double(), w)
        if target.dtype in ("float64", "float32"):  # in 16 bits P and dS are rounded to the dtype: not this bound
            close_within(name, g, w, rounding_bound(target.torch_dtype, mag, magnitudes[3]))


MASKED_SCORE_SCALE = {"float64": (27, 22), "float32": (27, 22), "bfloat16": (27, 22), "float16": (15, 10)}


@checks("flash_attention.masked_keys_never_contribute", operation=ATT, requires=("causal",))
@given(data=st.data())
def test_masked_keys_never_contribute(target, data):
    """Scores -2^a + 2^b j (exact in the dtype): every masked key outscores every visible one by >= 2^b."""
    a, b = MASKED_SCORE_SCALE[target.dtype]
    Sq = data.draw(st.integers(1, 2 ** (a - b)), label="Sq")
    Sk = data.draw(st.integers(1, 2 ** (a - b)), label="Sk")
    shape = dataclasses.replace(data.draw(attention_shapes(target), label="shape"), Sq=Sq, Sk=Sk)
    _, _, v = shape.tensors(target)
    q = torch.zeros(shape.B, shape.H, Sq, shape.D, dtype=torch.float64)
    k = torch.zeros(shape.B, shape.Hkv, Sk, shape.D, dtype=torch.float64)
    q[..., 0] = 1.0
    k[..., 0] = -(2.0**a) + 2.0**b * torch.arange(Sk, dtype=torch.float64)
    o, lse = target(target.tensor(q), target.tensor(k), v, causal=True, scale=1.0)
    last = torch.arange(Sq) + Sk - Sq  # the last visible key of each row wins with probability exactly 1
    visible = last >= 0
    expected = torch.zeros_like(o)
    expected[:, :, visible] = fa.repeat_kv(v, shape.H)[:, :, last[visible]]
    equal("o (the last visible key's value)", o, expected)
    if target.provides("lse"):
        lse_expected = torch.where(visible, -(2.0**a) + 2.0**b * last.to(torch.float64), -math.inf)
        # The lse is the winning score only up to the rounding of an algorithm that computes it in another way: a
        # log-sum-exp in base 2 (FlexAttention) rounds s log2(e) and lse_2 ln 2, and the two constants, at the size
        # of the score (measured: -130023423.99999999 for -130023424, one unit in the last place). A masked key
        # would move it by 2^b. Rows with no visible key stay exactly -inf.
        base2_roundings = 4
        close("lse (the last visible key's score)", lse, lse_expected.expand(lse.shape),
              atol=budget.rounding_atol(lse.dtype, 2.0**a, base2_roundings))


@checks("flash_attention.nan_propagation", operation=ATT)
@given(data=st.data())
def test_nan_propagation(target, data):
    shape = data.draw(attention_shapes(target), label="shape")
    q, k, v = shape.tensors(target)
    b, h, i = (data.draw(st.integers(0, n - 1), label=name) for n, name in
               ((shape.B, "batch"), (shape.H, "head"), (shape.Sq, "row")))
    q[b, h, i, 0] = float("nan")
    o, lse = target(q, k, v)
    if not torch.isnan(o[b, h, i]).all():
        raise AssertionError(f"o[{b}, {h}, {i}] must be NaN (q row {i} holds a NaN), got {o[b, h, i].tolist()}")
    others = torch.ones(o.shape[:3], dtype=torch.bool)
    others[b, h, i] = False
    finite_pattern("o of the rows without NaN", o[others], torch.zeros_like(o[others], dtype=torch.float64))
    if target.provides("lse"):
        if not torch.isnan(lse[b, h, i]):
            raise AssertionError(f"lse[{b}, {h}, {i}] must be NaN, got {lse[b, h, i].item()}")
        finite_pattern("lse of the rows without NaN", lse[others], torch.zeros_like(lse[others],
                                                                                    dtype=torch.float64))


# --- the backward --------------------------------------------------------------------------------------

def _backward_case(target, data, causal: bool):
    shape = data.draw(attention_shapes(target), label="shape")
    q, k, v = shape.tensors(target)
    o, lse = fa.attention(q, k, v, causal=causal)
    do = target.tensor(randn(shape.seed + 5, *o.shape))
    return shape, q, k, v, o, lse, do


@checks("flash_attention.backward_identity", operation=BWD, dtypes=("float64", "float32"))
@causal_modes
@given(data=st.data())
def test_backward_identity(target, causal, data):
    """sum_j dS_ij = 0 makes sum_j dK_j = 0; and sum_j <dV_j, v_j> = sum_i D_i = sum_i rowsum(dO_i o O_i)."""
    shape, q, k, v, o, lse, do = _backward_case(target, data, causal)
    dq, dk, dv = target(q, k, v, o, lse, do, causal=causal)
    _, dk_base, dv_base = target.baseline(q, k, v, o, lse, do, causal=causal)
    g = shape.H // shape.Hkv
    D_total = fa.backward_D(do.double(), o.double()).reshape(shape.B, shape.Hkv, g, -1).sum((2, 3))
    D_mag = fa.backward_D(do.double().abs(), o.double().abs()).reshape(shape.B, shape.Hkv, g, -1).sum((2, 3))
    _, mag_dk, mag_dv, n = fa.attention_backward_magnitudes(q, k, v, o, lse, do, causal=causal)
    v_abs = v.double().abs()
    for name, x, base, ref, magnitude in (
        ("sum_j dK_j", dk.sum(2), dk_base.sum(2), torch.zeros(shape.B, shape.Hkv, shape.D, dtype=torch.float64),
         mag_dk.sum(2)),
        ("sum_j <dV_j, v_j>", (dv.double() * v.double()).sum((2, 3)), (dv_base.double() * v.double()).sum((2, 3)),
         D_total, (mag_dv * v_abs).sum((2, 3)) + D_mag),
    ):
        within_budget(name, x, ref, base, k=budget.K_GRADIENT, dtype=target.torch_dtype, magnitude=magnitude,
                      terms=n + shape.Sk * shape.Dv)


FD_STEP = 1e-6  # central differences in float64: truncation ~ h^2 |d^3 f|, rounding ~ u |f| / h


def _central_difference(f, xs: tuple[torch.Tensor, ...], idx: int, flat: int, h: float) -> float:
    plus, minus = [x.clone() for x in xs], [x.clone() for x in xs]
    plus[idx].view(-1)[flat] += h
    minus[idx].view(-1)[flat] -= h
    return (f(*plus) - f(*minus)) / (2 * h)


@checks("flash_attention.gradients", operation=BWD, dtypes=("float64",))
@causal_modes
@given(data=st.data())
def test_gradients_match_autograd_and_finite_differences(target, causal, data):
    shape, q, k, v, o, lse, do = _backward_case(target, data, causal)
    grads = target(q, k, v, o, lse, do, causal=causal)
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    out, _ = fa.attention(*leaves, causal=causal)
    autograd = torch.autograd.grad(out, leaves, grad_outputs=do) if out.requires_grad else None
    f = lambda q_, k_, v_: float((fa.attention(q_, k_, v_, causal=causal)[0] * do).sum())  # noqa: E731
    *mags, n = fa.attention_backward_magnitudes(q, k, v, o, lse, do, causal=causal)
    mag_o, _, n_o = fa.attention_magnitudes(q, k, v, causal=causal)
    # f = <O, dO> in float64: each O within n_o roundings of its terms' sizes, then a sum of O.numel() products.
    f_err = float(rounding_bound(torch.float64, (mag_o * do.abs()).sum(), n_o)
                  + rounding_bound(torch.float64, (o.abs() * do.abs()).sum(), o.numel()))
    h = FD_STEP
    for idx, (name, g, mag) in enumerate(zip(("dq", "dk", "dv"), grads, mags)):
        if autograd is not None:  # both float64, each within n roundings of its terms' sizes
            close_within(f"{name} vs autograd", g, autograd[idx], rounding_bound(torch.float64, mag, 2 * n))
        for flat in data.draw(st.lists(st.integers(0, g.numel() - 1), min_size=1, max_size=3), label=f"{name} at"):
            fd = _central_difference(f, (q, k, v), idx, flat, h)
            x = float((q, k, v)[idx].reshape(-1)[flat])
            # The central difference is off by the rounding of f over the step (f_err / h), by the rounding of the
            # step itself (x +- h is exact to eps |x|, relative to h), and by its truncation c h^2, which
            # D(2h) - D(h) = 3 c h^2 measures (Richardson); the target's gradient by its n roundings.
            tol = (f_err / h + budget.eps(torch.float64) * abs(x) / h * abs(fd)
                   + abs(_central_difference(f, (q, k, v), idx, flat, 2 * h) - fd)
                   + float(rounding_bound(torch.float64, mag.reshape(-1)[flat], n)))
            close(f"{name}[{flat}] vs central difference", g.reshape(-1)[flat:flat + 1],
                  torch.tensor([fd], dtype=torch.float64), atol=tol)


def _check_gradients(target, q, k, v, o, lse, do, grads, causal: bool, rounded_seed: int | None = None):
    """dQ, dK, dV within the gradient budget of the naive code's; with ``rounded_seed``, where that fails, of the
    spec's backward under Monte Carlo arithmetic in the inputs' dtype too (property_tests/rounding.py)."""
    refs = fa.attention_backward(*as64(q, k, v, o, lse, do), causal=causal)
    bases = autograd_backward(naive_attention)(q, k, v, o, lse, do, causal=causal)
    *mags, n = fa.attention_backward_magnitudes(q, k, v, o, lse, do, causal=causal)
    runs = None  # the spec's randomly rounded backward: run once, for the first gradient that needs it
    for i, (name, g, ref, base, mag) in enumerate(zip(("dq", "dk", "dv"), grads, refs, bases, mags)):
        try:
            within_budget(name, g, ref, base, k=budget.K_GRADIENT, magnitude=mag, terms=n)
        except ConformanceError:
            if rounded_seed is None or q.dtype == torch.float64:
                raise
            if runs is None:
                runs = [rounded(q.dtype, rounded_seed, run, fa.attention_backward, *as64(q, k, v, o, lse, do),
                                causal=causal) for run in range(ROUNDING_RUNS)]
            worst = farthest([base, *(r[i] for r in runs if r is not None)], ref, default=base)
            within_budget(name, g, ref, worst, k=budget.K_GRADIENT, magnitude=mag, terms=n)


@checks("flash_attention.gradients", operation=BWD, dtypes=("float64", "float32", "bfloat16"))
@causal_modes
@given(data=st.data())
def test_gradients_within_budget(target, causal, data):
    shape, q, k, v, o, lse, do = _backward_case(target, data, causal)
    o, lse = o.to(q.dtype), lse.float() if q.dtype != torch.float64 else lse
    _check_gradients(target, q, k, v, o, lse, do, target(q, k, v, o, lse, do, causal=causal), causal)


@checks("flash_attention.gradients", operation=ATT, requires=("grad",), dtypes=("float64", "float32", "bfloat16"))
@causal_modes
@given(data=st.data())
def test_autograd_gradients_within_budget(target, causal, data):
    _require_causal(target, causal)
    shape, q, k, v, o, lse, do = _backward_case(target, data, causal)
    leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
    out, _ = target(*leaves, causal=causal)
    if not out.requires_grad:
        pytest.skip(f"{target.name}'s output carries no autograd graph (forward only)")
    grads = torch.autograd.grad(out, leaves, grad_outputs=do)
    # autograd differentiates the implementation's own forward (a tiled one: through each tile's rescaling, a few
    # roundings more per term than the naive softmax; measured, torch.tiled's float32 dV 3.26e-8 off where the naive
    # code was 5.4e-9 off by luck, budget 2.82e-8): where the naive code's error falls short, the spread of the
    # spec's own backward under random rounding is the measure of what a correct order of operations may cost
    _check_gradients(target, q, k, v, o, lse, do, grads, causal, rounded_seed=shape.seed)


# --- varlen ----------------------------------------------------------------------------------------------

def _varlen_magnitudes(q, k, v, cu_q, cu_k, causal: bool):
    """attention_magnitudes per packed sequence, laid out as o (T, H, Dv) and lse (H, T)."""
    mag_o = torch.zeros(q.shape[0], q.shape[1], v.shape[2], dtype=torch.float64)
    mag_lse = torch.zeros(q.shape[1], q.shape[0], dtype=torch.float64)
    n = 0
    for b in range(len(cu_q) - 1):
        qs, ks = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))
        if qs.start < qs.stop and ks.start < ks.stop:
            m_o, m_lse, n_b = fa.attention_magnitudes(*(x.transpose(0, 1)[None] for x in (q[qs], k[ks], v[ks])),
                                                      causal=causal)
            mag_o[qs], mag_lse[:, qs], n = m_o[0].transpose(0, 1), m_lse[0], max(n, n_b)
    return mag_o, mag_lse, n


@checks("flash_attention.varlen_block_diagonal", operation=VARLEN, dtypes=("float32", "bfloat16"))
@causal_modes
@given(data=st.data())
def test_varlen_block_diagonal(target, causal, data):
    case = data.draw(varlen_cases(target), label="case")
    q, k, v, cu_q, cu_k = case.tensors(target)
    o, lse = target(q, k, v, cu_q, cu_k, causal=causal)
    o_ref, lse_ref = fa.varlen_attention(*as64(q, k, v), cu_q, cu_k, causal=causal)
    o_base, lse_base = target.baseline(q, k, v, cu_q, cu_k, causal=causal)
    mag_o, mag_lse, n = _varlen_magnitudes(q, k, v, cu_q, cu_k, causal)
    within_budget("o", o, o_ref, o_base, magnitude=mag_o, terms=n)
    if target.provides("lse"):
        within_budget("lse", lse, lse_ref, lse_base, magnitude=mag_lse, terms=n, dtype=lse_floor_dtype(q))
    b = data.draw(st.integers(0, len(case.lengths_q) - 1), label="perturbed sequence")
    qs, ks = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[qs] += 1
    k2[ks] -= 1
    v2[ks] *= 3
    o2, lse2 = target(q2, k2, v2, cu_q, cu_k, causal=causal)
    others = torch.ones(q.shape[0], dtype=torch.bool)
    others[qs] = False
    equal(f"o of the sequences other than {b}", o2[others], o[others])
    if target.provides("lse"):
        equal(f"lse of the sequences other than {b}", lse2[:, others], lse[:, others])


# --- known answers ---------------------------------------------------------------------------------------

# catalogue/flash_attention.md, "Known-answer vectors" (N = d = 4, dv = 2, tau = 1/2), recomputed there in float64
KA_Q = [[1, 0, 2, 0], [0, 1, 1, 0], [1, 1, 0, 1], [0, 2, 1, 1]]
KA_K = [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 2, 1]]
KA_V = [[1, 0], [0, 1], [1, 1], [2, 1]]
KA_DO = [[1, -1], [0.5, 2], [-1, 0], [0, 1]]
KA_O = [[1.269873, 0.842940], [1, 0.811230], [1, 0.573067], [1, 0.811230]]
KA_L = [2.851129, 2.167224, 2.351129, 2.667224]
KA_O_CAUSAL = [[1, 0], [0.377541, 0.622459], [0.813676, 0.493520], [1, 0.811230]]
KA_L_CAUSAL = [1, 1.474077, 2.180270, 2.667224]
KA_D = [0.426933, 2.122459, -1, 0.811230]
KA_DV = [[-0.175488, 0.409251], [0.155615, 0.776629], [0.094385, 0.307363], [0.425488, 0.506756]]
KA_DQ0 = [0.034729, -0.067054, 0.077328, 0.067054]
KA_PRINTED = 5e-7  # the catalogue prints 6 decimals: within half a unit of the sixth


def _ka(rows, target):
    return torch.tensor(rows, dtype=torch.float64, device=target.device)[None, None].to(target.torch_dtype)


def _ka_bound(target, magnitude: torch.Tensor, roundings: float) -> torch.Tensor:
    """The catalogue's printing, plus the a-priori error of a correct algorithm in the target's dtype: ``roundings``
    roundings of the terms' sizes (n for a reduction of length n, Higham's gamma_n)."""
    return KA_PRINTED + rounding_bound(target.torch_dtype, magnitude, roundings)


@checks("flash_attention.known_answers", operation=ATT, dtypes=("float64", "float32"))
@causal_modes
def test_known_answers_forward(target, causal):
    _require_causal(target, causal)
    q, k, v = _ka(KA_Q, target), _ka(KA_K, target), _ka(KA_V, target)
    o, lse = target(q, k, v, causal=causal, scale=0.5)
    mag_o, mag_lse, n = fa.attention_magnitudes(q, k, v, causal=causal, scale=0.5)
    close_within("o", o[0, 0], torch.tensor(KA_O_CAUSAL if causal else KA_O), _ka_bound(target, mag_o[0, 0], n))
    if target.provides("lse"):
        close_within("lse", lse[0, 0], torch.tensor(KA_L_CAUSAL if causal else KA_L),
                     _ka_bound(target, mag_lse[0, 0], n))


@checks("flash_attention.known_answers", operation=BWD, dtypes=("float64", "float32"))
def test_known_answers_backward(target):
    q, k, v, do = _ka(KA_Q, target), _ka(KA_K, target), _ka(KA_V, target), _ka(KA_DO, target)
    o, lse = fa.attention(q, k, v, scale=0.5)  # the forward's known answers are checked above
    lse = lse.to(torch.promote_types(q.dtype, torch.float32))
    dq, dk, dv = target(q, k, v, o, lse, do, scale=0.5)
    mag_dq, _, mag_dv, n = fa.attention_backward_magnitudes(q, k, v, o, lse, do, scale=0.5)
    D_mag = fa.backward_D(do.double().abs(), o.double().abs())  # D sums the products with o rounded once
    close_within("D = rowsum(dO o O)", fa.backward_D(do.double(), o.double())[0, 0], torch.tensor(KA_D),
                 _ka_bound(target, D_mag[0, 0], 1))
    close_within("dV", dv[0, 0], torch.tensor(KA_DV), _ka_bound(target, mag_dv[0, 0], n))
    close_within("dQ row 0", dq[0, 0, 0], torch.tensor(KA_DQ0), _ka_bound(target, mag_dq[0, 0, 0], n))


# --- the FLOP count --------------------------------------------------------------------------------------

def _counted_flops(fn, *args, **kwargs) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


@checks("flash_attention.flop_count", operation=FLOPS)
@given(B=st.integers(1, 2), H=st.integers(1, 3), Sq=st.integers(1, 40), Sk=st.integers(1, 40),
       D=st.integers(1, 24), Dv=st.integers(1, 24), causal=st.booleans())
def test_flop_count(target, B, H, Sq, Sk, D, Dv, causal):
    q, k, v = (torch.ones(B, H, n, d, dtype=torch.float64) for n, d in ((Sq, D), (Sk, D), (Sk, Dv)))
    if not causal:
        assert target(B, H, Sq, Sk, D, Dv, mode="fwd") == _counted_flops(naive_attention, q, k, v), "forward"
        o, lse = fa.attention(q, k, v)
        assert target(B, H, Sq, Sk, D, Dv, mode="bwd") == _counted_flops(fa.attention_backward, q, k, v, o, lse,
                                                                         torch.ones_like(o)), "backward"
        if D == Dv:
            assert target(B, H, Sq, Sk, D, D, mode="bwd") * 2 == 5 * target(B, H, Sq, Sk, D, D, mode="fwd")
    pairs = int(fa.causal_mask(Sq, Sk).sum()) if causal else Sq * Sk
    assert target(B, H, Sq, Sk, D, Dv, causal=causal, mode="fwd") == 2 * B * H * pairs * (D + Dv), "unmasked pairs"
    total = target(B, H, Sq, Sk, D, Dv, causal=causal, mode="fwd_bwd")
    assert total == target(B, H, Sq, Sk, D, Dv, causal=causal, mode="fwd") + target(
        B, H, Sq, Sk, D, Dv, causal=causal, mode="bwd"), "fwd_bwd = fwd + bwd"


# --- softmax ---------------------------------------------------------------------------------------------

@checks("flash_attention.softmax_lse", operation=SMX)
@given(data=st.data())
def test_softmax_within_budget(target, data):
    case = data.draw(softmax_cases(target), label="case")
    x = case.tensor(target)
    y, lse = target(x)
    y_ref, lse_ref = fa.softmax(x.double())
    y_base, lse_base = target.baseline(x)
    mag_y, mag_lse, n = fa.softmax_magnitudes(x)
    within_budget("y", y, y_ref, y_base, magnitude=mag_y, terms=n)
    within_budget("row sums of y", y.double().sum(-1), torch.ones(x.shape[:-1], dtype=torch.float64),
                  y_base.double().sum(-1), magnitude=1 + mag_y.sum(-1), terms=2 * n, dtype=x.dtype)
    within_budget("lse", lse, lse_ref, lse_base, magnitude=mag_lse, terms=n, dtype=lse_floor_dtype(x))


@checks("flash_attention.softmax_masked_row", operation=SMX)
@given(data=st.data())
def test_softmax_masked_row(target, data):
    case = data.draw(softmax_cases(target, masked=True), label="case")
    x = case.tensor(target)
    y, lse = target(x)
    rows = list(case.masked_rows)
    equal("y of the rows of -inf", y[rows], torch.zeros_like(y[rows]))
    close("lse of the rows of -inf", lse[rows], torch.full((len(rows),), -math.inf, dtype=torch.float64), atol=0.0)
    y_ref, lse_ref = fa.softmax(x.double())
    y_base, lse_base = target.baseline(x)
    mag_y, mag_lse, n = fa.softmax_magnitudes(x)
    within_budget("y", y, y_ref, y_base, magnitude=mag_y, terms=n)
    within_budget("lse", lse, lse_ref, lse_base, magnitude=mag_lse, terms=n, dtype=lse_floor_dtype(x))


@checks("flash_attention.online_softmax_any_partition", operation=ONLINE)
@given(data=st.data())
def test_online_softmax_any_partition(target, data):
    case = data.draw(softmax_cases(target, masked=data.draw(st.booleans(), label="masked rows")), label="case")
    x = case.tensor(target)
    blocks = data.draw(partitions(case.N), label="block sizes")
    y, lse = target(x, blocks)
    y_ref, lse_ref = fa.softmax(x)
    mag_y, mag_lse, n = fa.softmax_magnitudes(x)
    # An identity: each side is within n roundings of its terms' sizes (y = exp(x - L) moves with the rounding of
    # x - L, at the size of x and L); the recurrence adds three roundings (an exp, a product, a sum) per block.
    roundings = 2 * n + 3 * len(blocks)
    close_within("y", y, y_ref, rounding_bound(x.dtype, mag_y, roundings))
    close_within("lse", lse, lse_ref, rounding_bound(x.dtype, mag_lse, roundings))


# --- the operations' contracts ---------------------------------------------------------------------------

_ROW = randn(4, 2, 6)
test_online_softmax_rejects_bad_input = rejection_test(  # block_sizes must be a partition of the row into blocks
    "flash_attention.attention_contract", ONLINE, {
        "a block of size 0": (lambda fn: fn(_ROW, [0, 6]), "block_sizes"),
        "a block of negative size": (lambda fn: fn(_ROW, [7, -1]), "block_sizes"),
        "blocks summing to less than the row": (lambda fn: fn(_ROW, [2, 3]), "block_sizes"),
        "blocks summing to more than the row": (lambda fn: fn(_ROW, [4, 3]), "block_sizes"),
        "no blocks": (lambda fn: fn(_ROW, []), "block_sizes"),
    })


def _attention_inputs(dtype, H=4, Hkv=2, Sq=5, Sk=7, D=8, Dv=8):
    return tuple(randn(seed, 2, heads, n, d).to(dtype)
                 for seed, heads, n, d in ((1, H, Sq, D), (2, Hkv, Sk, D), (3, Hkv, Sk, Dv)))


def _q_of_rank_3(dtype):
    q, k, v = _attention_inputs(dtype)
    return q[0], k, v


def _head_dim_mismatch(dtype):
    q, k, v = _attention_inputs(dtype)
    return q, k[..., :-1], v


def _v_length_mismatch(dtype):
    q, k, v = _attention_inputs(dtype)
    return q, k, v[:, :, :-1]


def _dtype_mismatch(dtype):
    q, k, v = _attention_inputs(dtype)
    return q, k, v.to(torch.float32 if dtype == torch.float16 else torch.float16)


# case -> (make (q, k, v) in a dtype, how our own error message must begin: it names the argument)
ATTENTION_BAD_INPUT = {
    "q of rank 3": (_q_of_rank_3, "q"),
    "Hkv does not divide H": (lambda dtype: _attention_inputs(dtype, H=3, Hkv=2), "k.shape[1]"),
    "head-dim mismatch": (_head_dim_mismatch, "k.shape[3]"),
    "v length mismatch": (_v_length_mismatch, "v.shape[2]"),
    "dtype mismatch": (_dtype_mismatch, "q, k, v"),
    "empty q": (lambda dtype: _attention_inputs(dtype, Sq=0), "q"),
}




@checks("flash_attention.attention_contract", operation=ATT)
@pytest.mark.parametrize("case", list(ATTENTION_BAD_INPUT))
def test_attention_rejects_bad_input(target, case):
    make, argument = ATTENTION_BAD_INPUT[case]
    q, k, v = (x.to(target.device) for x in make(target.torch_dtype))
    expect_rejection(target, lambda fn: fn(q, k, v), argument, case, libraries_may_return_empty=True)


@checks("flash_attention.attention_contract", operation=ATT)
def test_attention_result_contract(target):
    q, k, v = (x.to(target.device) for x in _attention_inputs(target.torch_dtype, Sq=3, Sk=6, Dv=5))
    target(q, k, v)  # the guard checks shapes and dtypes (o in q's dtype, lse float32 or wider)


@checks("flash_attention.attention_contract", operation=SMX)
@pytest.mark.parametrize("case", ["empty", "integer dtype"])
def test_softmax_rejects_bad_input(target, case):
    if not ours(target):
        pytest.skip(f"{target.name}: a library's input validation is its own")
    x = target.tensor(torch.empty(3, 0)) if case == "empty" else torch.arange(6, device=target.device).reshape(2, 3)
    expect_rejection(target, lambda fn: fn(x), "x", case, libraries_may_return_empty=True)


VARLEN_BAD_CU = {  # case -> (cu_seqlens_q, cu_seqlens_k, the argument named) for 5 query and 6 key tokens
    "cu_seqlens_q not starting at 0": ([1, 5], [0, 6], "cu_seqlens_q"),
    # decreasing between neighbours only (4 -> 3), of the same length as cu_seqlens_q: no other check rejects it
    "cu_seqlens_k decreasing": ([0, 1, 2, 5], [0, 4, 3, 6], "cu_seqlens_k"),
    "cu_seqlens_q not ending at the token count": ([0, 4], [0, 6], "cu_seqlens_q"),
    "cu_seqlens of different lengths": ([0, 2, 5], [0, 6], "cu_seqlens_k"),
    "cu_seqlens_q of a float dtype": ([0.0, 5.0], [0, 6], "cu_seqlens_q"),
}


@checks("flash_attention.attention_contract", operation=VARLEN)
@pytest.mark.parametrize("case", list(VARLEN_BAD_CU))
def test_varlen_rejects_bad_cu_seqlens(target, case):
    cu_q, cu_k, argument = VARLEN_BAD_CU[case]
    cq = torch.tensor(cu_q, dtype=torch.float32 if "float" in case else torch.int32, device=target.device)
    ck = torch.tensor(cu_k, dtype=torch.int32, device=target.device)
    q, k, v = (target.tensor(x) for x in (randn(1, 5, 2, 8), randn(2, 6, 2, 8), randn(3, 6, 2, 8)))
    expect_rejection(target, lambda fn: fn(q, k, v, cq, ck), argument, case, libraries_may_return_empty=True)
