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
    # One entry per results file when several were merged (merge_results): what each one was and how many of its
    # rows the report shows. Empty for a single file.
    sources: list[dict] = field(default_factory=list)
    runs: dict[str, dict] = field(default_factory=dict)  # a merged file's label -> its own run record

    @property
    def mode(self) -> str:
        return str(self.run.get("mode") or "suite")

    @property
    def source_names(self) -> list[str]:
        return [s["label"] for s in self.sources] or [self.source.name]

    def run_for(self, row: dict) -> dict:
        """The run record of the file a row came from (its profile and --impl arguments rebuild its repro)."""
        return self.runs.get(str(row.get("source")), self.run)


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


# --- several results files in one report ------------------------------------------------------------------

def row_key(row: dict) -> tuple:
    """What makes two rows the same result: the test node (its parameters included), implementation, device and
    dtype. Two files holding the same key ran the same check twice (another run of the same env, or a rerun)."""
    return (row["nodeid"], row["implementation"], row.get("device"), row.get("dtype"))


def source_labels(paths: list[Path]) -> list[str]:
    """Short, distinct names for the merged files: the file name, or the path where two names clash."""
    names = [p.name for p in paths]
    return [p.name if names.count(p.name) == 1 else str(p) for p in paths]


def merge_results(runs: list[RunResults]) -> RunResults:
    """Several results files as one run, on purpose (``python -m reports --results a.json --results b.json``).

    Rows are keyed by row_key (test node, implementation, device, dtype). Where two files hold the same key, the
    later file on the command line wins and the report says how many rows each file replaced; no row is dropped
    otherwise. Each row keeps the label of its file in ``row["source"]``. The header's run and environment show a
    value where every file agrees, and "differs between the merged files" where they do not; ``sources`` lists
    each file with its own command, profile, seed, environment and counts.
    """
    if len(runs) == 1:
        return runs[0]
    labels = source_labels([r.source for r in runs])
    merged: dict[tuple, dict] = {}
    sources, notes = [], []
    for label, run in zip(labels, runs):
        replaced: dict[str, int] = {}
        for row in run.rows:
            row = {**row, "source": label}
            key = row_key(row)
            old = merged.pop(key, None)  # re-inserted below: the row takes the later file's place in the order
            if old is not None:
                replaced[old["source"]] = replaced.get(old["source"], 0) + 1
            merged[key] = row
        sources.append({"label": label, "path": str(run.source), "rows": len(run.rows), "replaced": replaced,
                        "complete": run.complete, "suite": run.suite, "environment": run.environment,
                        "run": run.run})
        for old_label, n in replaced.items():
            notes.append(f"{label} replaced {n} row{'s' * (n != 1)} of {old_label} (the same test node, "
                         f"implementation, device and dtype: the later --results file wins)")
        notes += [f"{label}: {n}" for n in run.notes]
    for source in sources:
        source["shown"] = sum(1 for r in merged.values() if r["source"] == source["label"])
    commits = {str(r.suite.get("commit")) for r in runs}
    if len(commits) > 1:
        notes.append("the merged files come from different suite commits: " + ", ".join(
            f"{label} at {str(r.suite.get('commit'))[:12]}" for label, r in zip(labels, runs)))
    run = _agreed([r.run for r in runs])
    run.update(complete=all(r.complete for r in runs), merged=labels,
               started=min((str(r.run["started"]) for r in runs if r.run.get("started")), default=None),
               finished=max((str(r.run["finished"]) for r in runs if r.run.get("finished")), default=None))
    run.pop("duration_s", None)
    run["impl_args"] = list(dict.fromkeys(a for r in runs for a in r.run.get("impl_args") or []))
    return RunResults(_agreed([r.suite for r in runs]), _agreed([r.environment for r in runs]), run,
                      list(merged.values()), runs[0].source, all(r.complete for r in runs), notes, sources,
                      {label: r.run for label, r in zip(labels, runs)})


DIFFERS = "differs between the merged files"


def _agreed(records: list[dict]) -> dict:
    """One record: each key's value where all the records agree, DIFFERS where they do not."""
    out = {}
    for key in dict.fromkeys(k for r in records for k in r):
        values = [r.get(key) for r in records]
        out[key] = values[0] if all(v == values[0] for v in values) else DIFFERS
    return out
