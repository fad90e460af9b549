"""Make asv result files portable before they are committed: name the interpreter by its version, not its path.

asv's "existing" environment is named after the interpreter's absolute path (existing-py_<path>), which would
put one machine's file system into the shared results and split one interpreter's history across machines
that keep it elsewhere. This renames each such file and environment to existing-py<major>.<minor> and records
the Python version instead of the path. Run by benchmarks/run_asv.sh after `asv run`.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def portable_env_name() -> str:
    return f"existing-py{sys.version_info.major}.{sys.version_info.minor}"


def rewrite(path: Path) -> Path:
    data = json.loads(path.read_text())
    old = data.get("env_name", "")
    if not old.startswith("existing-py_"):
        return path
    new = portable_env_name()
    data["env_name"] = new
    data["python"] = platform.python_version()
    data.get("params", {})["python"] = platform.python_version()
    target = path.with_name(path.name.replace(old, new))
    if target.exists():  # an earlier run of this commit (asv run --bench ...): keep its other benchmarks
        merged = json.loads(target.read_text())
        merged["results"].update(data["results"])
        merged["durations"] = {**merged.get("durations", {}), **data.get("durations", {})}
        data = {**data, "results": merged["results"], "durations": merged["durations"]}
    target.write_text(json.dumps(data, indent=None, separators=(",", ":")))
    if target != path:
        path.unlink()
    return target


if __name__ == "__main__":
    for machine in RESULTS.iterdir():
        if machine.is_dir():
            for result in machine.glob("*-existing-py_*.json"):
                print(f"{result.relative_to(RESULTS)} -> {rewrite(result).name}")
