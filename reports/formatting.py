"""Words and numbers shared by the HTML and Markdown outputs, so both say the same thing the same way."""

from __future__ import annotations

import math

from .conformance import COUNTS, Cell
from .kill_matrix import format_rate
from .load import DIFFERS, RunResults

STATUS_LABEL = {"pass": "pass", "fail": "FAIL", "skip": "skip", "deviation": "deviation", "untested": "untested"}


def fmt_number(x) -> str:
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
        return "—" if x is None else str(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if isinstance(x, int):
        return str(x)
    if x == 0 or 0.01 <= abs(x) < 1000:
        return f"{x:.3g}"
    return f"{x:.2e}"


def cell_counts(cell: Cell) -> str:
    """'12 passed, 2 failed': only the counts that are not zero."""
    return ", ".join(f"{getattr(cell, k)} {k}" for k in COUNTS if getattr(cell, k))


def cell_text(cell: Cell) -> str:
    """The one-line content of a matrix cell: status, failing count, worst ratio."""
    status = cell.status
    if status == "untested":
        return "—"
    text = STATUS_LABEL[status]
    n = cell.passed + cell.failed + cell.error + cell.deviation + cell.skipped
    if status == "fail":
        text += f" {cell.failed + cell.error}/{n}"
        if cell.kinds:
            text += ": " + ", ".join(f"{kind}" + (f" {k}" if len(cell.kinds) > 1 else "")
                                     for kind, k in sorted(cell.kinds.items(), key=lambda kv: -kv[1]))
        return text  # a failing cell's worst ratio would be its passing tests' score
    if cell.worst_ratio is not None and status == "pass":
        text += f" ({fmt_number(cell.worst_ratio)})"
    return text


def totals_text(totals: dict) -> str:
    return ", ".join(f"{totals[k]} {k}" for k in COUNTS if totals[k] or k != "error")


def kill_rate_text(kill: dict | None) -> str:
    if kill is None:
        return "no mutants run"
    killed = sum(c["killed"] for c in kill["claims"].values())
    return f"kill rate {format_rate(kill['kill_rate'])} ({killed}/{len(kill['claims'])} claims)"


def shorten(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def device_text(env: dict) -> str:
    if DIFFERS in (env.get("gpu"), env.get("cpu"), env.get("cuda")):
        return DIFFERS
    if env.get("gpu"):
        cuda = f", CUDA {env['cuda']}" if env.get("cuda") else ""
        return f"{env['gpu']}{cuda}"
    return "CPU only" + (f" ({env['cpu']})" if env.get("cpu") else "")


def commit_text(suite: dict) -> str:
    commit = str(suite.get("commit") or "unknown")[:12]
    return commit + (" (dirty: uncommitted changes)" if suite.get("dirty") else "")


ENVIRONMENT_KEYS = ("python", "torch", "triton", "numpy", "scipy", "hypothesis", "platform")


def header_fields(results: RunResults) -> list[tuple[str, str]]:
    """(label, value) pairs describing the run, in reading order; unknown environment keys come last."""
    suite, env, run = results.suite, results.environment, results.run
    fields = [
        ("suite", f"{suite.get('name') or 'eqspec'} {suite.get('version') or ''}".strip()),
        ("commit", commit_text(suite)),
        ("date", str(env.get("date") or run.get("started") or "unknown")),
    ]
    fields += [(k, "not installed" if env.get(k) is None and k == "triton" else str(env[k]))
               for k in ENVIRONMENT_KEYS if k in env]
    fields.append(("device", device_text(env)))
    if "triton_interpret" in env:
        fields.append(("triton interpreter", "on (TRITON_INTERPRET=1)" if env["triton_interpret"] else "off"))
    shown = set(ENVIRONMENT_KEYS) | {"date", "gpu", "cuda", "cpu", "triton_interpret"}
    fields += [(k, str(v)) for k, v in env.items() if k not in shown and v is not None]
    fields += [
        ("hypothesis profile", profile_text(run)),
        ("hypothesis seed", seed_text(run)),
        ("run mode", str(run.get("mode") or "suite")),
    ]
    fields += [("merged from", source_text(source)) for source in results.sources]
    if run.get("command"):
        fields.append(("command", str(run["command"])))
    if run.get("impl_args"):
        fields.append(("--impl", "; ".join(map(str, run["impl_args"]))))
    if run.get("only_impl"):
        fields.append(("--only-impl", str(run["only_impl"])))
    if run.get("duration_s") is not None:
        fields.append(("duration", f"{fmt_number(run['duration_s'])} s"))
    fields.append(("run", "complete" if results.complete else "INCOMPLETE (aborted run)"))
    return fields


def profile_text(run: dict) -> str:
    return str(run.get("profile") or "not recorded")


def seed_text(run: dict) -> str:
    """'derandomized', 'random' or the --hypothesis-seed value, as the run recorded it."""
    return str(run.get("seed") or "not recorded")


def source_text(source: dict) -> str:
    """One merged results file: its rows, the run that wrote it and where."""
    run, env = source.get("run") or {}, source.get("environment") or {}
    shown = source["shown"] if "shown" in source else source["rows"]
    parts = [f"{source['label']}: {shown} of its {source['rows']} rows shown"]
    parts.append(f"profile {profile_text(run)}, seed {seed_text(run)}")
    parts.append(", ".join(x for x in (f"torch {env['torch']}" if env.get("torch") else "", device_text(env)) if x))
    if run.get("started"):
        parts.append(f"started {run['started']}")
    if not source.get("complete", True):
        parts.append("INCOMPLETE")
    if run.get("command"):
        parts.append(str(run["command"]))
    return "; ".join(parts)
