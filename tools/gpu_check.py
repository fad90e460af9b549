"""One call on a GPU machine: check every GPU implementation against the specs, measure the machine's ceilings,
run the asv GPU benchmarks, and leave everything to commit. Needs no network.

    python3 tools/gpu_check.py --out DIR [--wheels .wheels] [--property-timeout 240] [--skip-asv]

1. Environment: GPU, torch, triton, CUDA versions (DIR/environment.json).
2. Ceilings: device-to-device copy GB/s and dense bf16 matmul TFLOP/s, measured (benchmarks.common).
3. Checks at realistic sizes: every implementation registered for CUDA, in bf16 and fp16 (and fp32 where it
   runs), against the float64 spec within the error budget of eqspec/budget.py: attention forward and backward
   (causal and not, GQA, odd head dim), packed attention, row softmax. A NaN never passes a budget check.
4. The property tests on the GPU (--device cuda, hypothesis profile ci), under a time limit; their result rows go
   to DIR/results-cuda.json for `python -m reports --results`.
5. Variants the asv suite does not keep: the row softmax at 8192 x 32768 with its two paths (one tile per row,
   or two passes over tiles).
6. asv: the GPU benchmarks (every class named *GPU), saved under benchmarks/results/gpu-<model>/ and copied to
   DIR/asv/. asv is not on the GPU machine's image: --wheels names a folder of wheels (asv and its
   requirements for that machine's Python, from `pip download asv==0.6.6 --python-version 3.12
   --only-binary=:all: --platform manylinux2014_x86_64 -d .wheels`), installed into a virtual environment that
   sees the system's torch and triton.

The last lines printed are a summary table: each Triton kernel against the fastest SDPA backend, and the
fractions of the measured ceilings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import check_against_spec, cuda_ms, measured_ceilings, seeded_normal  # noqa: E402
from eqspec.budget import K_FORWARD, K_GRADIENT  # noqa: E402
from eqspec.registry import REGISTRY  # noqa: E402
from implementations import load_all  # noqa: E402
from implementations.torch.attention import autograd_backward  # noqa: E402
from specs.flash_attention import attention as attention_spec  # noqa: E402

# (label, B, H, Hkv, S, D): realistic but quick for the float64 spec on the host
DEVICE = "cuda"  # --dry-run-cpu: the checks' code paths on the CPU (Triton interpreted) at toy sizes
ATTENTION_CASES = (("dense", 2, 16, 16, 1024, 128), ("gqa", 1, 16, 4, 2048, 128), ("odd head dim", 1, 8, 8, 1000, 96))
VARLEN_LENGTHS = (1000, 17, 3000, 128, 1)
SOFTMAX_CASES = ((256, 32768), (1024, 1000))
# 16-bit everywhere; fp32 only for our kernels (the libraries' fp32 paths are not what this machine is for)
DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def log(message: str) -> None:
    print(message, flush=True)


def environment() -> dict:
    import triton

    return {"gpu": torch.cuda.get_device_name(), "capability": ".".join(map(str, torch.cuda.get_device_capability())),
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _inputs(purpose: str, shape, dtype, count=1):
    return seeded_normal(purpose, shape, dtype=dtype, device=DEVICE, count=count)


def _cuda_implementations(operation: str):
    op = REGISTRY.operations[operation]
    for impl in REGISTRY.implementations_of(operation):
        if impl.origin in ("spec", "mutant", "user") or impl.unavailable_reason(DEVICE) is not None:
            continue
        dtypes = [getattr(torch, d) for d in impl.dtypes_for(op) if getattr(torch, d) in DTYPES]
        yield impl, [d for d in dtypes if d != torch.float32 or impl.origin == "triton"]


def check_attention(rows: list) -> None:
    for impl, dtypes in _cuda_implementations("flash_attention.attention"):
        fn = impl.load()
        for dtype in dtypes:
            for label, B, H, Hkv, S, D in ATTENTION_CASES:
                if Hkv != H and "gqa" not in impl.provides:
                    continue
                for causal in (False, True):
                    name = f"attention {impl.name} {str(dtype)[6:]} {label} causal={causal}"
                    q, = _inputs("attention.qkv", (B, H, S, D), dtype)
                    k, v = _inputs("attention.do", (B, Hkv, S, D), dtype, count=2)
                    _record(rows, name, lambda: check_against_spec(
                        fn, "flash_attention.attention", (q, k, v), label=name, output_names=("o", "lse"),
                        provides=impl.provides, call_kwargs={"causal": causal}, k=K_FORWARD,
                        reference_device=DEVICE))
                    if "grad" not in impl.provides:
                        continue
                    o, lse = attention_spec(*(x.double() for x in (q, k, v)), causal=causal)
                    do, = _inputs("softmax.x", (B, H, S, D), dtype)
                    _record(rows, name + " backward", lambda: check_against_spec(
                        autograd_backward(fn), "flash_attention.attention_backward",
                        (q, k, v, o, lse, do), label=name + " backward",
                        output_names=("dq", "dk", "dv"), provides=impl.provides, call_kwargs={"causal": causal},
                        k=K_GRADIENT, reference_device=DEVICE))


def check_varlen(rows: list) -> None:
    cu = torch.tensor([0, *torch.tensor(VARLEN_LENGTHS).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    total = int(cu[-1])
    for impl, dtypes in _cuda_implementations("flash_attention.varlen_attention"):
        fn = impl.load()
        for dtype in dtypes:
            for causal in (False, True):
                name = f"varlen {impl.name} {str(dtype)[6:]} causal={causal}"
                q, = _inputs("attention.qkv", (total, 16, 128), dtype)
                k, v = _inputs("attention.do", (total, 4, 128), dtype, count=2)
                _record(rows, name, lambda: check_against_spec(
                    fn, "flash_attention.varlen_attention", (q, k, v, cu, cu), label=name,
                    output_names=("o", "lse"), provides=impl.provides, call_kwargs={"causal": causal}, k=K_FORWARD,
                    reference_device=DEVICE))


def check_softmax(rows: list) -> None:
    for impl, dtypes in _cuda_implementations("flash_attention.softmax"):
        fn = impl.load()
        for dtype in dtypes:
            for shape in SOFTMAX_CASES:
                name = f"softmax {impl.name} {str(dtype)[6:]} {shape[0]}x{shape[1]}"
                x, = _inputs("softmax.x", shape, dtype)
                _record(rows, name, lambda: check_against_spec(
                    fn, "flash_attention.softmax", (x,), label=name, output_names=("y", "lse"),
                    provides=impl.provides, k=K_FORWARD, reference_device=DEVICE))


def _record(rows: list, name: str, check) -> None:
    start = time.perf_counter()
    try:
        budgets = check()
        worst = max(b.err / b.allowed if b.allowed > 0 else 0.0 for b in budgets)
        rows.append({"check": name, "status": "passed", "worst_err_over_allowed": worst})
    except Exception as error:  # a failing kernel is a result; the script goes on
        rows.append({"check": name, "status": "FAILED", "error": f"{type(error).__name__}: {error}"[:2000]})
        traceback.print_exc()
    rows[-1]["seconds"] = round(time.perf_counter() - start, 2)
    log(f"  {rows[-1]['status']:<7} {name}  ({rows[-1]['seconds']} s)")


def softmax_variants() -> list[dict]:
    """The row softmax at 8192 x 32768 bf16 with each path forced; GB/s over 2 x numel x 2 bytes."""
    from implementations.triton.softmax import softmax

    x, = _inputs("softmax.x", (8192, 32768), torch.bfloat16)
    copy = measured_ceilings()["copy_gbps"]
    out = []
    for label, block_n in (("default", None), ("one tile per row", 32768), ("two passes, tiles of 4096", 4096),
                           ("two passes, tiles of 8192", 8192)):
        try:
            ms = cuda_ms(lambda: softmax(x, block_n=block_n))
            gbps = 2 * x.numel() * 2 / (ms * 1e-3) / 1e9
            out.append({"variant": label, "ms": ms, "gbps": gbps, "fraction_of_copy": gbps / copy})
        except Exception as error:
            out.append({"variant": label, "error": f"{type(error).__name__}: {error}"[:500]})
        log(f"  softmax 8192x32768 {label}: {out[-1]}")
    return out


def property_tests(out: Path, timeout: int, profile: str) -> dict:
    results = out / "results-cuda.json"
    workers = max(1, min(8, (os.cpu_count() or 2) // 2))  # one GPU shared by a few processes
    command = [sys.executable, "-m", "pytest", "property_tests", "--ignore=property_tests/meta", "--device", "cuda",
               f"--hypothesis-profile={profile}", "-q", "-p", "no:cacheprovider", "-n", str(workers),
               f"--results={results}"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        tail, rc = proc.stdout[-6000:], proc.returncode
    except subprocess.TimeoutExpired as error:
        tail, rc = (error.stdout or b"")[-6000:].decode(errors="replace"), "timeout"
    log(tail[-2500:])
    return {"returncode": rc, "seconds": round(time.perf_counter() - start, 1), "tail": tail}


# asv saves a run's results when it ends: the GPU classes go in groups, most wanted first, each under what is left
# of the budget, so a group cut short loses only itself.
ASV_GROUPS = ("CeilingsGPU|AttentionForwardGPU", "AttentionBackwardGPU", "SoftmaxGPU", "PreferenceLossGPU", "MoEGPU",
              "ClipLossGPU|SiglipLossGPU|SamplerGPU")


def run_asv(out: Path, wheels: str | None, deadline: float) -> dict:
    if shutil.which("asv") is None:
        if not wheels:
            return {"skipped": "asv is not installed and no --wheels folder was given"}
        # Installed beside this interpreter's packages (a venv made from a venv would not see its torch)
        target = Path(tempfile.mkdtemp(prefix="eqspec-asv-"))
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheels,
                        "--target", str(target), "asv"], check=True)
        os.environ["PATH"] = f"{target / 'bin'}:{os.environ['PATH']}"
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (os.environ.get("PYTHONPATH"), str(target))))
    groups = {}
    with open(out / "asv.log", "w") as log_file:
        for group in ASV_GROUPS:
            left = int(deadline - time.perf_counter())
            if left < 45:
                groups[group] = f"not run: {left} s left"
                continue
            start = time.perf_counter()
            try:
                proc = subprocess.run(["sh", "benchmarks/run_asv.sh", "--quick", "--launch-method", "forkserver",
                                       "--bench", rf"\.({group})\."], cwd=ROOT, stdout=log_file,
                                      stderr=subprocess.STDOUT, env=os.environ, timeout=left)
                groups[group] = {"returncode": proc.returncode, "seconds": round(time.perf_counter() - start, 1)}
            except subprocess.TimeoutExpired:
                groups[group] = f"timeout after {left} s"
            log(f"  asv {group}: {groups[group]}")
    for machine in (ROOT / "benchmarks/results").glob("gpu-*"):  # only this machine's results come back
        shutil.copytree(machine, out / "asv" / machine.name, dirs_exist_ok=True)
    return groups


def summary(ceilings: dict) -> str:
    """Triton against the fastest SDPA backend per (direction, seqlen, causal), and the softmax's fraction."""
    from reports.asv_results import load_asv_results

    results = load_asv_results(ROOT / "benchmarks/results")
    lines = [f"ceilings: copy {ceilings['copy_gbps']:.0f} GB/s, bf16 matmul {ceilings['matmul_tflops']:.0f} TFLOP/s",
             "direction seqlen causal | triton ms | best SDPA (backend) ms | ratio | triton TFLOP/s, of matmul"]
    if results is None:
        return "\n".join(lines + ["(no asv results)"])
    machine = next((m for m in results.machines if m.startswith("gpu-")), None)
    for bench in results.benchmarks:
        metric = {"attention.AttentionForwardGPU.track_forward_ms": "fwd",
                  "attention.AttentionBackwardGPU.track_backward_ms": "bwd"}.get(bench.name)
        if metric is None:
            continue
        cells = {}
        for params, per_machine in bench.values.items():
            value = per_machine.get(machine)
            if value is not None:
                cells[params] = value
        for seqlen, causal in sorted({(p[1], p[2]) for p in cells}, key=lambda sc: (int(sc[0]), sc[1])):
            triton = next((v for p, v in cells.items() if p[1:] == (seqlen, causal) and "triton" in p[0]), None)
            sdpa = [(v, p[0]) for p, v in cells.items() if p[1:] == (seqlen, causal) and "sdpa" in p[0]]
            best = min(sdpa) if sdpa else None
            ratio = f"{best[0] / triton:.2f}" if triton and best else "-"
            lines.append(f"{metric} {seqlen} {causal} | {triton if triton is None else round(triton, 3)} | "
                         f"{best and round(best[0], 3)} ({best and best[1]}) | {ratio}")
    return "\n".join(lines)


def save(out: Path, report: dict) -> None:
    """gpu-check.json after every stage: a run cut short still leaves what it measured."""
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1))


def dry_run_cpu() -> int:
    global DEVICE, ATTENTION_CASES, VARLEN_LENGTHS, SOFTMAX_CASES
    DEVICE = "cpu"
    ATTENTION_CASES = (("dense", 1, 2, 2, 40, 16), ("gqa", 1, 4, 2, 33, 24))
    VARLEN_LENGTHS = (20, 1, 7)
    SOFTMAX_CASES = ((4, 100),)
    load_all()
    rows: list[dict] = []
    for step in (check_attention, check_varlen, check_softmax):
        step(rows)
    failed = [r for r in rows if r["status"] != "passed"]
    log(f"checks: {len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the results (created)")
    parser.add_argument("--wheels", default=None, help="folder of wheels to install asv from (no network)")
    parser.add_argument("--property-timeout", type=int, default=150,
                        help="seconds for the property tests at most (they get what the budget leaves)")
    parser.add_argument("--property-profile", default="smoke",
                        help="hypothesis profile of the property tests (smoke: every test in the time a lease has)")
    parser.add_argument("--budget", type=int, default=540, help="seconds the whole script may take")
    parser.add_argument("--skip-asv", action="store_true")
    parser.add_argument("--stages", default="checks,softmax,property,asv",
                        help="which stages run, comma-separated (the checks alone took 394 s on an H200, most of it "
                             "the Triton autotuner's compilations: a lease may run the others first)")
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="run only the checks, at toy sizes on the CPU (tests this script without a GPU)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.dry_run_cpu:
        return dry_run_cpu()
    if not torch.cuda.is_available():
        log("no CUDA device: nothing to check here (the CPU suite is `tox -e report`)")
        return 2
    load_all()
    env = environment()
    log(f"environment: {env}")
    ceilings = measured_ceilings()
    log(f"ceilings: {ceilings}")
    stages = set(args.stages.split(","))
    rows: list[dict] = []
    report = {"environment": env, "ceilings": ceilings, "checks": rows, "stages": sorted(stages)}
    for step in (check_attention, check_varlen, check_softmax) if "checks" in stages else ():
        log(f"{step.__name__}:")
        step(rows)
        save(out, report)
    if "softmax" in stages:
        report["softmax_variants"] = softmax_variants()
        save(out, report)
    # Correctness before speed: the property tests first, under their limit; asv gets what is left of the budget.
    left = int(args.budget - (time.perf_counter() - started) - 60)
    report["property_tests"] = (
        {"skipped": "not among --stages"} if "property" not in stages
        else property_tests(out, min(args.property_timeout, left), args.property_profile) if left > 30
        else {"skipped": f"{left + 60} s left of the {args.budget} s budget"})
    save(out, report)
    report["asv"] = ({"skipped": "--skip-asv or not among --stages"} if args.skip_asv or "asv" not in stages
                     else run_asv(out, args.wheels, deadline=started + args.budget - 20))
    save(out, report)
    failed = [r for r in rows if r["status"] != "passed"]
    tests, asv = report["property_tests"], report["asv"]
    tests = {k: v for k, v in tests.items() if k != "tail"}
    table = summary(ceilings)
    (out / "summary.txt").write_text(table + "\n")
    log(f"\nproperty tests: {tests}; asv: {asv}")
    log(f"checks: {len(rows) - len(failed)} passed, {len(failed)} failed: {[r['check'] for r in failed]}")
    log(table)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
