"""Read asv benchmark results: the latest value of every benchmark on every machine, with its unit.

asv 0.6's layout (asv/results.py, api_version 2): <dir>/<machine>/machine.json describes the machine,
<dir>/<machine>/<commit[:8]>-<env>.json holds one run, and <dir>/benchmarks.json the benchmarks' units
and parameter names. A run file stores per benchmark a row aligned with "result_columns" ("result",
"params", ...); "result" is a flat list over the product of the parameter values (NaN or null where a
combination was skipped). The JSON is parsed directly, so the report renders where asv is not installed
(the GPU machine).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

NOT_RESULT_FILES = {"machine.json", "benchmarks.json"}
UNIT_BY_PREFIX = {"time_": "seconds", "timeraw_": "seconds", "peakmem_": "bytes", "mem_": "bytes"}


@dataclass
class Benchmark:
    name: str
    unit: str
    param_names: list[str]
    # parameter values (as shown) -> machine -> value; None where the combination did not run
    values: dict[tuple[str, ...], dict[str, float | None]] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)  # machine -> commit of the run the values come from


@dataclass
class AsvResults:
    machines: dict[str, dict]  # name -> machine.json plus the commit and date of its latest run
    benchmarks: list[Benchmark]
    notes: list[str] = field(default_factory=list)


def load_asv_results(directory: str | Path) -> AsvResults | None:
    """None when ``directory`` holds no asv results."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    descriptions = _load_json(directory / "benchmarks.json") or {}
    machines: dict[str, dict] = {}
    benchmarks: dict[str, Benchmark] = {}
    notes: list[str] = []
    for machine_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        info = _load_json(machine_dir / "machine.json")
        if not isinstance(info, dict):
            continue  # asv itself skips a results folder without a valid machine.json
        name = str(info.get("machine") or machine_dir.name)
        runs = []
        for path in sorted(machine_dir.glob("*.json")):
            if path.name in NOT_RESULT_FILES:
                continue
            data = _load_json(path)
            if isinstance(data, dict) and isinstance(data.get("results"), dict):
                runs.append(data)
            else:
                notes.append(f"{machine_dir.name}/{path.name}: not an asv results file, skipped")
        if not runs:
            continue
        runs.sort(key=_run_order, reverse=True)  # newest first: the first run holding a value wins
        latest = runs[0]
        machines[name] = {**{k: v for k, v in info.items() if k != "version"},
                          "commit": str(latest.get("commit_hash") or "")[:8],
                          "date": _format_timestamp(latest.get("date")), "runs": len(runs)}
        for run in runs:
            _merge_run(run, name, benchmarks, descriptions)
    if not benchmarks:
        return None
    return AsvResults(machines, sorted(benchmarks.values(), key=lambda b: b.name), notes)


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # asv writes NaN and Infinity: json reads them
    except (OSError, ValueError):
        return None


def _run_order(run: dict) -> tuple:
    # The commit date orders runs of different commits; the start time orders reruns of the same commit.
    started = [_column(run, row, "started_at") for row in run["results"].values()]
    return (run.get("date") or 0, max((s for s in started if isinstance(s, (int, float))), default=0))


def _column(run: dict, row: list, name: str, default=None):
    columns = run.get("result_columns") or []
    if name in columns and columns.index(name) < len(row):
        return row[columns.index(name)]
    return default


def _merge_run(run: dict, machine: str, benchmarks: dict[str, Benchmark], descriptions: dict) -> None:
    for name, row in run["results"].items():
        result = _column(run, row, "result")
        params = _column(run, row, "params") or []
        if result is None:
            continue
        desc = descriptions.get(name) if isinstance(descriptions.get(name), dict) else {}
        param_names = list(desc.get("param_names") or [f"param{i + 1}" for i in range(len(params))])
        bench = benchmarks.setdefault(name, Benchmark(name, str(desc.get("unit") or _guess_unit(name)), param_names))
        combos = list(itertools.product(*[[_format_param(p) for p in axis] for axis in params])) if params else [()]
        values = result if isinstance(result, list) else [result]
        if machine in bench.commits:
            continue  # runs come newest first; a value skipped in the newest run is not filled from an older one
        bench.commits[machine] = str(run.get("commit_hash") or "")[:8]
        for combo, value in zip(combos, values):
            bench.values.setdefault(combo, {})[machine] = value if _is_value(value) else None


def _is_value(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _guess_unit(name: str) -> str:
    method = name.rsplit(".", 1)[-1]
    for prefix, unit in UNIT_BY_PREFIX.items():
        if method.startswith(prefix):
            return unit
    return ""


def _format_param(value) -> str:
    text = str(value)
    match = re.fullmatch(r"'(.*)'|\"(.*)\"|<class '(.+)'>", text)  # asv stores parameters as repr()
    return next(g for g in match.groups() if g is not None) if match else text


def _format_timestamp(ms) -> str:
    if not isinstance(ms, (int, float)):
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_value(value: float | None, unit: str) -> str:
    """A value with a unit a reader can compare at a glance (2.1 ms, 230 MiB, 310 TFLOP/s)."""
    if value is None:
        return "n/a"
    if unit == "seconds":
        for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value / 1e-9:.3g} ns"
    if unit == "bytes":
        for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value:.0f} B"
    return f"{value:.4g} {unit}".strip()


def plot_lines(bench: Benchmark, max_lines: int = 10) -> tuple[str, dict[str, list[tuple[float, float]]]] | None:
    """Values against the benchmark's last numeric parameter, when it has one with 3+ values."""
    for axis in reversed(range(len(bench.param_names))):
        xs = {combo[axis] for combo in bench.values}
        if len(xs) < 3 or not all(_is_number_text(x) for x in xs):
            continue
        lines: dict[str, list[tuple[float, float]]] = {}
        for combo, per_machine in bench.values.items():
            others = ", ".join(v for i, v in enumerate(combo) if i != axis)
            for machine, value in per_machine.items():
                if value is not None:
                    label = f"{machine}: {others}" if others else machine
                    lines.setdefault(label, []).append((float(combo[axis]), value))
        if 0 < len(lines) <= max_lines:
            return bench.param_names[axis], lines
        return None
    return None


def _is_number_text(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
