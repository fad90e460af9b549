"""The soak: the property tests under many fresh hypothesis seeds, then once with the ``thorough`` profile.

    python -m property_tests.soak                      20 fresh seeds (profile dev), then thorough
    python -m property_tests.soak --seeds 5 property_tests/test_dpo.py
    python -m property_tests.soak --seed 1234 --no-thorough    one given seed
    python -m property_tests.soak --seed-from-commit --no-thorough   what CI runs at every landing

The ``ci`` profile is derandomized: every run sees the same examples, so a budget that is too tight for other
inputs never shows there. A correct implementation that fails under any seed is a false alarm, a bug of the suite
(design.md, "Random examples"). Each seed runs in its own pytest process (the seed is a process-wide option) and
writes its own result file; the soak prints every failure with its seed and the command that reproduces it, and
exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAILED = ("failed", "error")


def _pytest(paths: list[str], profile: str, seed: int, results: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", *paths, "--ignore=property_tests/meta", f"--hypothesis-profile={profile}",
            f"--hypothesis-seed={seed}", f"--results={results}", "-q", "-p", "no:cacheprovider", "--no-header",
            "-rN", *extra]


def run_one(paths: list[str], profile: str, seed: int, out_dir: Path, extra: list[str]) -> tuple[list[dict], float,
                                                                                                   dict]:
    """One pytest process under ``seed``: its failed rows, its wall time and its status counts."""
    results = out_dir / f"{profile}-{seed}.json"
    started = time.time()
    proc = subprocess.run(_pytest(paths, profile, seed, results, extra), cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - started
    if not results.exists():
        jsonl = results.with_suffix(".jsonl")
        rows = [json.loads(line) for line in jsonl.read_text().splitlines()[1:]] if jsonl.exists() else []
        if not rows:  # pytest never got to run a test (a collection error): that is a failure of the run itself
            return [{"nodeid": "(collection)", "status": "error",
                     "message": (proc.stdout[-3000:] + proc.stderr[-3000:]).strip()}], wall, {"error": 1}
    else:
        rows = json.loads(results.read_text())["rows"]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("status", "?")] = counts.get(row.get("status", "?"), 0) + 1
    return [r for r in rows if r.get("status") in FAILED], wall, counts


def commit_seed() -> int:
    """The first 32 bits of HEAD's commit hash."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(head.stdout.strip()[:8], 16)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:300] if (text or "").strip() else ""


def report(failures: list[tuple[str, int, dict]]) -> str:
    lines = []
    for profile, seed, row in failures:
        where = f"[{row.get('implementation', '?')}-{row.get('device', '?')}-{row.get('dtype', '?')}]"
        lines.append(f"FAILED {row['nodeid']} ({profile}, seed {seed}) {where if 'implementation' in row else ''}")
        lines.append(f"    {row.get('failure_kind', row.get('status'))}: {_first_line(row.get('message'))}")
        repro = row.get("repro") or f"python -m pytest '{row['nodeid']}' --hypothesis-profile={profile} " \
                                    f"--hypothesis-seed={seed}"
        lines.extend(f"    {line}" for line in repro.splitlines())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m property_tests.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=int(os.environ.get("EQSPEC_SOAK_SEEDS", 20)),
                        help="how many fresh seeds to run with the dev profile (default 20)")
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="run these seeds instead of fresh ones (repeatable)")
    parser.add_argument("--seed-from-commit", action="store_true",
                        help="one seed derived from the checked-out commit: reproducible for that commit, different "
                             "for the next (CI)")
    parser.add_argument("--no-thorough", action="store_true", help="skip the final run with the thorough profile")
    parser.add_argument("--out", default=None, help="folder for the per-seed result files (default: a temporary one)")
    parser.add_argument("-n", "--workers", default="auto",
                        help="pytest-xdist workers per run (default auto; 0 runs in one process)")
    args, paths = parser.parse_known_args(argv)
    extra = [p for p in paths if p.startswith("-")]
    paths = [p for p in paths if not p.startswith("-")] or ["property_tests"]
    if args.workers != "0":
        extra = ["-n", args.workers, *extra]
    if args.seed_from_commit:
        seeds = [commit_seed()]
    else:
        seeds = args.seed or [secrets.randbelow(2**32) for _ in range(args.seeds)]
    print(f"soak: seeds {' '.join(map(str, seeds))} (profile dev)", flush=True)
    runs = [("dev", s) for s in seeds] + ([] if args.no_thorough else [("thorough", secrets.randbelow(2**32))])
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="eqspec-soak-"))
    out_dir.mkdir(parents=True, exist_ok=True)

    started = time.time()
    failures: list[tuple[str, int, dict]] = []
    for i, (profile, seed) in enumerate(runs, 1):
        failed, wall, counts = run_one(paths, profile, seed, out_dir, extra)
        failures += [(profile, seed, row) for row in failed]
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        print(f"[{i}/{len(runs)}] {profile} seed {seed}: {summary} ({wall:.0f} s)", flush=True)
        if failed:
            print(report([(profile, seed, row) for row in failed]), flush=True)
    total = time.time() - started
    print(f"\nsoak: {len(runs)} runs ({', '.join(sorted({p for p, _ in runs}))}) of {' '.join(paths)} in "
          f"{total / 60:.1f} min; results in {out_dir}")
    if failures:
        print(f"soak: {len(failures)} failures\n{report(failures)}")
        return 1
    print("soak: 0 failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
