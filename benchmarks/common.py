"""What every benchmark module shares: seeded inputs, implementations looked up in the registry, the check of
an implementation against its float64 spec before it is timed, and the GPU timers.

Nothing here touches CUDA at import time: with asv's forkserver launch method the modules are imported in one
server process that forks a child per benchmark, and a CUDA context created before a fork is unusable in the
child. (The default, spawn, starts a fresh interpreter per benchmark and parameter combination.)
No function here may be named like an asv benchmark (time_*, peakmem_*, track_*, mem_*): asv would collect it.
"""

from __future__ import annotations

import functools
import itertools
import statistics
from collections.abc import Callable, Sequence

import torch

try:
    from asv_runner.benchmarks.mark import skip_benchmark_if
except ImportError:  # used outside asv (tools/gpu_check.py on a machine without asv): the mark does nothing there
    def skip_benchmark_if(condition):
        return lambda benchmark: benchmark

from eqspec import outputs
from eqspec.budget import K_FORWARD, BudgetCheck, check_within_budget
from eqspec.contracts import ConformanceError
from eqspec.registry import REGISTRY, Implementation
from implementations import load_all

load_all()

# ---------------------------------------------------------------------------------------------------
# Seeded inputs
# ---------------------------------------------------------------------------------------------------

# Append-only: a seed is part of the inputs of every result recorded with it, so changing one would silently
# change what the benchmark history compares. Add a new purpose instead of editing an existing one.
SEEDS = {
    "attention.qkv": 1001,
    "attention.do": 1002,
    "softmax.x": 1003,
    "ceilings": 1004,
    "moe.inputs": 6003,
    "moe.dy": 6004,
    "preference.hidden": 5001,
    "preference.weight": 5002,
    "preference.ids": 5003,
    "preference.ref": 5004,
    "preference.advantages": 5005,
    "rl.mdp": 3001,
    "rl.policy": 3002,
    "contrastive.image": 4001,
    "contrastive.text": 4002,
    "diffusion.x_T": 2001,
    "diffusion.noise": 2002,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def seeded_normal(purpose: str, shape: Sequence[int], *, dtype: torch.dtype, device: str,
                  count: int = 1) -> list[torch.Tensor]:
    """`count` standard-normal tensors from the generator seeded for `purpose` on `device`.

    Drawn in float32 and rounded to `dtype`, so that every dtype sees the same values up to rounding. Writing
    them also touches their memory, so page faults stay out of the timed region.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(SEEDS[purpose])
    return [torch.randn(tuple(shape), generator=generator, device=device).to(dtype) for _ in range(count)]


def attention_inputs(batch: int, heads: int, seqlen: int, head_dim: int, *, dtype: torch.dtype, device: str,
                     requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of shape (batch, heads, seqlen, head_dim) (self-attention: Sq = Sk, no GQA)."""
    q, k, v = seeded_normal("attention.qkv", (batch, heads, seqlen, head_dim), dtype=dtype, device=device,
                            count=3)
    return tuple(x.requires_grad_(requires_grad) for x in (q, k, v))


def attention_output_gradient(batch: int, heads: int, seqlen: int, head_dim: int, *, dtype: torch.dtype,
                              device: str) -> torch.Tensor:
    """The fixed dO that every backward benchmark propagates."""
    (do,) = seeded_normal("attention.do", (batch, heads, seqlen, head_dim), dtype=dtype, device=device)
    return do


def softmax_input(rows: int, cols: int, *, dtype: torch.dtype, device: str) -> torch.Tensor:
    (x,) = seeded_normal("softmax.x", (rows, cols), dtype=dtype, device=device)
    return x


# ---------------------------------------------------------------------------------------------------
# Implementations, through the registry
# ---------------------------------------------------------------------------------------------------

def implementation_or_skip(operation: str, name: str, *, device: str, dtype: torch.dtype,
                           needs: Sequence[str] = ()) -> Implementation:
    """The registered implementation, or NotImplementedError (asv: skipped) saying why it cannot run here."""
    impl = REGISTRY.implementations.get((operation, name))
    if impl is None:
        raise NotImplementedError(f"{name} is not registered for {operation}")
    if device == "cpu" and impl.interpreted_on_cpu:
        raise NotImplementedError(f"{name}: Triton interpreted on the CPU is too slow to time")
    reason = impl.unavailable_reason(device)
    if reason is not None:
        raise NotImplementedError(f"{name}: {reason}")
    if dtype_name(dtype) not in impl.dtypes_for(REGISTRY.operations[operation]):
        raise NotImplementedError(f"{name} does not support {dtype_name(dtype)}")
    missing = sorted(set(needs) - impl.provides)
    if missing:
        raise NotImplementedError(f"{name} does not provide {', '.join(missing)}")
    return impl


# ---------------------------------------------------------------------------------------------------
# The check against the spec (run once, at a small size, in setup)
# ---------------------------------------------------------------------------------------------------

def _float64_on(x, device: str):
    """A floating tensor as float64 on ``device``; index tensors (cu_seqlens) keep their dtype."""
    if not isinstance(x, torch.Tensor):
        return x
    return x.detach().to(device=device, dtype=torch.float64 if x.is_floating_point() else x.dtype)


def check_against_spec(impl_fn: Callable, operation: str, inputs: Sequence, *, label: str,
                       output_names: Sequence[str], provides: frozenset = frozenset(),
                       call_kwargs: dict | None = None, k: float = K_FORWARD,
                       reference_device: str = "cpu") -> list[BudgetCheck]:
    """Run ``impl_fn(*inputs, **call_kwargs)`` once and raise unless it is right.

    Right means: it keeps the operation's output contract (shape, dtype, device), and every output it returns is
    within the error budget of eqspec.budget: max |out - spec| <= k x the error of the operation's naive baseline
    (same dtype, same device, same inputs) + the floor. The spec is evaluated in float64 on ``reference_device``
    (the CPU unless told otherwise: a GPU's float64 is fast at realistic sizes) from the same, already rounded
    inputs. The floor comes from the operation's error analysis (``Operation.magnitudes``: the
    size of the terms each output sums) where it has one, else from the outputs' own size. An
    output the implementation does not return (None, e.g. SDPA's lse) is not checked; the contract check decides
    whether it may be missing. A benchmark calls this in setup, so a wrong kernel fails loudly instead of being
    timed.

    The implementation is called once before the checked call, as it is before any timed call: what is checked
    is what is timed, not the first call of a fresh process, which also pays for lazy initialisation (Triton
    compilation; and on one AVX-512 CPU the first torch.exp calls of a fresh process were occasionally ~1e-4 off,
    putting the tiled attention over budget in about one process in 40, while the same call repeated in that
    process was exact).
    """
    call_kwargs = call_kwargs or {}
    op = REGISTRY.operations[operation]
    baseline_fn = REGISTRY.implementation(operation, op.baseline).load()
    impl_fn(*inputs, **call_kwargs)
    result = impl_fn(*inputs, **call_kwargs)
    if op.outputs:
        outputs.check(op.id, op.outputs, result, outputs.bind(op.reference, inputs, call_kwargs), provides=provides)
    reference = op.reference(*(_float64_on(x, reference_device) for x in inputs), **call_kwargs)
    baseline = baseline_fn(*inputs, **call_kwargs)
    *magnitudes, terms = (op.magnitudes(*inputs, **call_kwargs) if op.magnitudes is not None
                          else (*(None for _ in output_names), 0))
    checks = [
        check_within_budget(f"{label}: {name}", out, ref, base, k=k, magnitude=magnitude, terms=terms)
        for name, out, ref, base, magnitude in zip(output_names, result, reference, baseline, magnitudes,
                                                   strict=True)
        if out is not None
    ]
    if not checks:
        raise ConformanceError(f"{label}: returned none of {', '.join(output_names)}, nothing to check")
    return checks


# ---------------------------------------------------------------------------------------------------
# GPU measurements (called only after require_cuda)
# ---------------------------------------------------------------------------------------------------

# More than any current GPU's L2 cache: overwriting it before each timed call evicts the inputs, so a small
# problem is not timed from cache (the same size triton.testing.do_bench flushes).
L2_FLUSH_BYTES = 256 * 2**20


# A torch built without CUDA can never run the GPU benchmarks: asv then does not collect them at all, instead of
# starting one process per parameter combination only to skip it (minutes of skips per run). The build flag is
# read without initialising CUDA. A CUDA build on a machine without a GPU still skips each one in setup.
gpu_benchmark = skip_benchmark_if(not torch.backends.cuda.is_built())


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device on this machine")


def warm_up_or_skip(fn: Callable):
    """Call fn once, untimed (Triton compilation and autotuning, cuBLAS heuristics, allocator growth); return
    its result. A combination that does not fit in this GPU's memory is skipped rather than failed.
    """
    try:
        result = fn()
        torch.cuda.synchronize()
        return result
    except torch.cuda.OutOfMemoryError as error:
        torch.cuda.empty_cache()
        raise NotImplementedError(f"does not fit in this GPU's memory ({error})") from None


def cuda_ms(fn: Callable, *, warmup: int = 1, min_samples: int = 3, max_samples: int = 100,
            budget_ms: float = 300.0) -> float:
    """Median milliseconds of one fn() call on the current stream, timed with CUDA events.

    The first `warmup` calls are not timed. Before each timed call the L2 cache is flushed outside the event
    pair. Samples are taken until `budget_ms` of measured time once there are `min_samples` (a slow
    launch-bound call is not repeated a hundred times).
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples: list[float] = []
    while len(samples) < max_samples and (len(samples) < min_samples or sum(samples) < budget_ms):
        flush.zero_()
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def peak_cuda_mb(fn: Callable) -> float:
    """Peak MiB allocated by torch on the GPU while fn() runs, tensors already alive (the inputs) included."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


# ---------------------------------------------------------------------------------------------------
# The machine's ceilings, and GPU classes measured once per class (asv setup_cache)
# ---------------------------------------------------------------------------------------------------

COPY_CEILING_BYTES = 2**30  # 1 GiB each way: far past any L2, long past launch overhead
MATMUL_CEILING_N = 8192  # an 8192^3 bf16 product: about 1.1 TFLOP, milliseconds on a current GPU


@functools.cache
def measured_ceilings() -> dict[str, float]:
    """The two ceilings every GPU number is read against, measured here (design: datasheet rates are leads).

    copy_gbps: a device-to-device copy of 1 GiB, counting bytes read plus bytes written. matmul_tflops: a dense
    bf16 matrix product of 8192 x 8192 matrices through torch (cuBLAS) on random, seeded data (never zeros: they
    can run faster than real data). Both are medians of CUDA-event timings with the L2 flushed before each call.
    """
    require_cuda()
    generator = torch.Generator(device="cuda")
    generator.manual_seed(SEEDS["ceilings"])
    src = torch.randn(COPY_CEILING_BYTES // 2, generator=generator, device="cuda").to(torch.bfloat16)
    dst = torch.empty_like(src)
    copy_ms = cuda_ms(functools.partial(dst.copy_, src))
    del src, dst  # 2 GiB back before the matmul
    n = MATMUL_CEILING_N
    a, b = (torch.randn(n, n, generator=generator, device="cuda").to(torch.bfloat16) for _ in range(2))
    matmul_ms = cuda_ms(lambda: a @ b)
    return {"copy_gbps": 2 * COPY_CEILING_BYTES / (copy_ms * 1e-3) / 1e9,
            "matmul_tflops": 2 * n**3 / (matmul_ms * 1e-3) / 1e12}


def measure_grid(params: Sequence[Sequence], measure_one: Callable[..., dict[str, float]], *,
                 cuda: bool | None = None) -> dict:
    """``measure_one(*combination)`` for every combination of ``params``, in this one process (asv setup_cache).

    asv starts a process, imports torch and runs setup for every benchmark function and parameter combination;
    on a GPU that costs more than the measurements themselves, and each process would check the kernel against
    the spec and compile it again. A GPU class therefore measures all its combinations once in setup_cache and
    its track_ functions return the stored values. Each combination keeps its metrics, or why it was skipped
    (NotImplementedError: asv shows a skip) or failed (any other error, e.g. a kernel over its error budget: asv
    shows a failure). Nothing is lost when one combination fails.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return {"skip": "no CUDA device on this machine"}
    results: dict = {}
    for combination in itertools.product(*params):
        try:
            results[combination] = {"metrics": measure_one(*combination)}
        except NotImplementedError as error:
            results[combination] = {"skip": str(error)}
        except Exception as error:  # recorded per combination; the others are still measured
            results[combination] = {"error": f"{type(error).__name__}: {error}"}
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.empty_cache()  # the next combination starts from an empty allocator
    return results


def cached_entry(cache: dict, combination: tuple) -> dict:
    """The stored entry of one combination, for setup: raises NotImplementedError (asv: skipped) if it was."""
    if "skip" in cache and len(cache) == 1:
        raise NotImplementedError(cache["skip"])
    entry = cache[tuple(combination)]
    if "skip" in entry:
        raise NotImplementedError(entry["skip"])
    return entry


def cached_metric(entry: dict, metric: str) -> float:
    """One stored metric; a combination that failed raises its error again, so asv records the failure."""
    if "error" in entry:
        raise RuntimeError(entry["error"])
    return entry["metrics"][metric]


def cached_tracks(table: dict[str, tuple[str, str]]):
    """Class decorator: one GPU ``track_`` method per row of ``table`` (method name -> (metric of the cached entry,
    unit)), each reading what setup_cache measured for its combination (``self.entry``, set by setup)."""

    def decorate(cls):
        for name, (metric, unit) in table.items():
            def track(self, cache, *params, _metric=metric):
                return cached_metric(self.entry, _metric)

            track.__name__, track.__qualname__ = name, f"{cls.__name__}.{name}"
            track = gpu_benchmark(track)
            track.unit = unit
            setattr(cls, name, track)
        return cls

    return decorate
