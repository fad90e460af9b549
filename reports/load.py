"""Read a results file written by the property-test conftest (or the mutants run) into one RunResults.

results.json is written once, when the run finishes. results.jsonl is appended to as tests finish, so
when the run is aborted (a crash, a CI timeout, Ctrl-C) it is all there is: render from it and say that the
run is incomplete, rather than show nothing or, worse, show an older complete run as if it were this one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = 1


class ResultsNotFound(Exception):
    """Neither the results file nor its .jsonl twin exists."""


@dataclass
class RunResults:
    suite: dict
    environment: dict
    run: dict
    rows: list[dict]
    source: Path
    complete: bool
    notes: list[str] = field(default_factory=list)  # why the run counts as incomplete, what could not be read

    @property
    def mode(self) -> str:
        return str(self.run.get("mode") or "suite")


def load_results(path: str | Path) -> RunResults:
    """Load ``path`` (results.json), or its .jsonl twin when the .json is missing or older than the .jsonl run."""
    path = Path(path)
    if path.suffix == ".jsonl":
        if not path.exists():
            raise ResultsNotFound(f"no results file at {path}")
        return _load_jsonl(path)
    jsonl = path.with_suffix(".jsonl")
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        if jsonl.exists() and _jsonl_is_a_later_run(jsonl, path, data):
            results = _load_jsonl(jsonl)
            results.notes.insert(0, f"{jsonl.name} belongs to a run started after {path.name} was written; "
                                    f"that run did not finish, so the report shows it instead of the older "
                                    f"complete run")
            return results
        return _from_json(data, path)
    if jsonl.exists():
        return _load_jsonl(jsonl)
    raise ResultsNotFound(f"no results: neither {path} nor {jsonl} exists.")


def _from_json(data: dict, path: Path) -> RunResults:
    notes = _schema_notes(data, path)
    run = dict(data.get("run") or {})
    complete = bool(run.get("complete", True))
    if not complete:
        notes.append(f"{path.name} says the run did not complete (run.complete is false)")
    rows = [normalise_row(r) for r in data.get("rows") or [] if isinstance(r, dict)]
    return RunResults(dict(data.get("suite") or {}), dict(data.get("environment") or {}), run, rows, path,
                      complete, notes)


def _load_jsonl(path: Path) -> RunResults:
    header: dict = {}
    rows: list[dict] = []
    unreadable = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            unreadable += 1  # typically the last line, cut off when the run was killed
            continue
        if not isinstance(item, dict):
            unreadable += 1
        elif isinstance(item.get("header"), dict):
            header = item["header"]
        elif "nodeid" in item or "status" in item:
            rows.append(normalise_row(item))
    notes = [f"rendered from {path.name}: the run did not finish (no results.json was written), so tests that "
             f"had not run yet are missing from this report"]
    if unreadable:
        notes.append(f"{unreadable} unreadable line(s) in {path.name} were skipped")
    notes += _schema_notes(header, path)
    run = dict(header.get("run") or {})
    run["complete"] = False
    return RunResults(dict(header.get("suite") or {}), dict(header.get("environment") or {}), run, rows, path,
                      False, notes)


def _schema_notes(data: dict, path: Path) -> list[str]:
    schema = data.get("schema", SCHEMA)
    if isinstance(schema, int) and schema > SCHEMA:
        return [f"{path.name} has schema {schema}, newer than this renderer's {SCHEMA}: fields it does not know "
                f"are not shown"]
    return []


def _jsonl_is_a_later_run(jsonl_path: Path, json_path: Path, json_data: dict) -> bool:
    """True when the .jsonl holds a run started after the one in the .json (which then aborted)."""
    try:
        with jsonl_path.open(encoding="utf-8") as f:
            first = json.loads(f.readline() or "{}")
    except (OSError, ValueError):
        first = {}
    header = first.get("header") if isinstance(first, dict) else None
    jsonl_started = ((header or {}).get("run") or {}).get("started")
    json_started = (json_data.get("run") or {}).get("started")
    if jsonl_started and json_started:
        return str(jsonl_started) > str(json_started)  # ISO 8601 timestamps in UTC sort as strings
    # No start times to compare: a run writes its .jsonl before its .json, so a clearly newer .jsonl is a later
    # run that never reached the end.
    return jsonl_path.stat().st_mtime > json_path.stat().st_mtime + 2.0


def normalise_row(row: dict) -> dict:
    """A copy of ``row`` with the keys every renderer relies on; unknown keys are kept as they are."""
    r = dict(row)
    r["nodeid"] = str(r.get("nodeid") or r.get("test") or "?")
    r["test"] = str(r.get("test") or r["nodeid"].split("::")[-1].split("[")[0])
    r["status"] = str(r.get("status") or "error").lower()
    claims = r.get("claims") or []
    r["claims"] = [claims] if isinstance(claims, str) else [str(c) for c in claims]
    targets = r.get("targets") or []
    r["targets"] = [targets] if isinstance(targets, str) else [str(t) for t in targets]
    r["implementation"] = str(r.get("implementation") or "(unnamed)")
    r["document"] = str(r.get("document") or infer_document(r))
    return r


def infer_document(row: dict) -> str:
    """The document a row belongs to when the row does not say: from its claims, operation or test module."""
    for key in ("claims", "targets"):
        for claim in row.get(key) or []:
            if "." in claim:
                return claim.split(".", 1)[0]
    operation = row.get("operation")
    if operation and "." in operation:
        return operation.split(".", 1)[0]
    module = str(row.get("module") or row.get("nodeid") or "").split("::")[0]
    stem = Path(module).stem
    if stem.startswith("test_"):
        return stem.removeprefix("test_")
    return "unknown"
