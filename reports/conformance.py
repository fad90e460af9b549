"""Aggregate result rows into the view every output renders: per document, claims x implementations.

A cell gathers the rows of one claim and one implementation across dtypes, devices and parameters and shows
the worst thing that happened there (a single failing dtype fails the cell). A claim that is registered but
has no rows is "untested": never shown as passing, never silently absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .coverage import domain_coverage
from .kill_matrix import kill_matrix
from .load import RunResults
from .repro import repro_command as build_repro

# Row status -> what the cell shows. Statuses this renderer does not know count as errors, not as passes.
OUTCOMES = {"passed": "pass", "failed": "fail", "error": "fail", "skipped": "skip", "deviation": "deviation"}
COUNTS = ("passed", "failed", "skipped", "deviation", "error")
ORIGIN_ORDER = ("spec", "torch", "triton", "thirdparty", "user")


# How a failing row failed, in the reader's words: a wrong value is not an unsupported option or a crash
FAILURE_CLASSES = {"conformance": "wrong value", "contract": "contract", "implementation-error": "exception",
                   "timeout": "timeout", "harness": "suite error"}


def outcome(status: str) -> str:
    return OUTCOMES.get(status, "fail")


def count_key(status: str) -> str:
    return status if status in COUNTS else "error"


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def row_worst_ratio(row: dict) -> float | None:
    """err / err(naive baseline) of the row's worst output, when the row measured one."""
    metrics = row.get("metrics") or {}
    if is_number(metrics.get("worst_ratio")):
        return float(metrics["worst_ratio"])
    ratios = [b["ratio"] for b in metrics.get("budget") or [] if isinstance(b, dict) and is_number(b.get("ratio"))]
    return max(ratios) if ratios else None


def max_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return max(values) if values else None


@dataclass
class Cell:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    deviation: int = 0
    error: int = 0
    worst_ratio: float | None = None
    rows: list[dict] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)  # failure class -> failing rows (FAILURE_CLASSES)

    def add(self, row: dict) -> None:
        key = count_key(row["status"])
        setattr(self, key, getattr(self, key) + 1)
        if key in ("failed", "error"):
            kind = FAILURE_CLASSES.get(str(row.get("failure_kind")), "failure")
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.worst_ratio = max_or_none([self.worst_ratio, row_worst_ratio(row)])
        self.rows.append(row)

    @property
    def status(self) -> str:
        return combine_statuses(outcome(k) for k in COUNTS if getattr(self, k))

    def as_dict(self) -> dict:
        return {"status": self.status, **{k: getattr(self, k) for k in COUNTS}, "worst_ratio": self.worst_ratio}


def combine_statuses(statuses) -> str:
    """The worst of several outcomes: one failure fails the whole; no outcome at all is "untested"."""
    statuses = set(statuses)
    for status in ("fail", "deviation", "pass", "skip"):
        if status in statuses:
            return status
    return "untested"


@dataclass
class ClaimView:
    id: str
    document: str
    statement: str = ""
    source: str = ""
    kind: str = ""
    operations: tuple[str, ...] = ()
    registered: bool = True
    status: str = "untested"


@dataclass
class DocumentView:
    id: str
    title: str
    papers: tuple[str, ...] = ()
    post: str = ""
    catalogue: str = ""
    specs: list = field(default_factory=list)  # eqspec.registry.Spec
    operations: list = field(default_factory=list)  # eqspec.registry.Operation
    claims: list[ClaimView] = field(default_factory=list)
    implementations: list[str] = field(default_factory=list)  # the matrix columns
    origins: dict[str, str] = field(default_factory=dict)
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)  # (claim, implementation); applicable only
    untagged: Cell = field(default_factory=Cell)  # rows that name no claim
    rows: list[dict] = field(default_factory=list)
    documented_deviations: list[tuple[str, str, str]] = field(default_factory=list)  # (impl, claim, reason)
    kill_rate: float | None = None

    @property
    def encoded(self) -> bool:
        return bool(self.specs or self.claims or self.rows)

    def summary(self) -> dict:
        statuses = [c.status for c in self.claims]
        return {
            "claims": len(self.claims),
            "passing": statuses.count("pass"),
            "failing": statuses.count("fail"),
            "deviation": statuses.count("deviation"),
            "skipped": statuses.count("skip"),
            "untested": statuses.count("untested"),
            "rows": len(self.rows),
            "kill_rate": self.kill_rate,
        }


@dataclass
class Report:
    results: RunResults
    documents: list[DocumentView]
    totals: dict
    rows: list[dict]  # conformance rows (mutants excluded)
    mutants: RunResults | None = None
    kill: dict | None = None
    notes: list[str] = field(default_factory=list)
    libraries: list[dict] = field(default_factory=list)  # library_summaries: the third-party results per library
    coverage: dict = field(default_factory=dict)  # reports/coverage.py domain_coverage: per document
    mutation: dict | None = None  # the generated-mutant score (tox -e mutation), when one was written

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.rows if outcome(r["status"]) == "fail"]


def totals(rows: list[dict]) -> dict:
    counts = {k: 0 for k in COUNTS}
    for row in rows:
        counts[count_key(row["status"])] += 1
    return {"rows": len(rows), **counts}


def build_report(results: RunResults, registry, mutants: RunResults | None = None,
                 notes: list[str] | None = None, mutation: dict | None = None) -> Report:
    """Everything the renderers need, from the results, the optional mutants run and the registry."""
    mutant_rows = mutants.rows if mutants is not None else [r for r in results.rows if r.get("origin") == "mutant"]
    rows = [r for r in results.rows if r.get("origin") != "mutant"]
    claims = _claim_views(registry, rows + mutant_rows)
    docs = _document_views(registry, rows, claims)
    narrowed = narrowing(results)
    if narrowed:  # a partial run: only what ran, and a note of what did not
        idle = [d.id for d in docs if not d.rows]
        docs = [_only_what_ran(d) for d in docs if d.rows]
        notes = [*(notes or []), f"a partial run ({narrowed}): only what ran is shown"
                 + (f"; not run: {', '.join(idle)}" if idle else "")]
    kill = None
    if mutants is not None or mutant_rows:
        kill = kill_matrix(mutant_rows, list(claims))
        for doc in docs:
            ids = [c.id for c in doc.claims]
            killed = [kill["claims"][c]["killed"] for c in ids if c in kill["claims"]]
            doc.kill_rate = sum(killed) / len(killed) if killed else None
    coverage = domain_coverage(registry, rows)
    if narrowed:
        coverage = {d: c for d, c in coverage.items() if d in {doc.id for doc in docs}}
    return Report(results, docs, totals(rows), rows, mutants, kill, list(results.notes) + list(notes or []),
                  library_summaries(rows, registry, results.environment), coverage, mutation)


# The Python package each library is recorded under in the results' environment (its version).
LIBRARY_VERSION_KEYS = {"torch": "torch", "scipy": "scipy", "open_clip": "open_clip"}


def library_of(implementation: str, registry) -> str:
    """The library a third-party implementation adapts: the first package it requires; torch when it requires
    none (SDPA, torch.softmax)."""
    for impl in registry.implementations.values():
        if impl.name == implementation:
            return impl.modules[0] if impl.modules else "torch"
    return implementation.split(".", 1)[-1].split("_", 1)[0]  # not registered here: the adapter's own name


def library_summaries(rows: list[dict], registry, environment: dict) -> list[dict]:
    """Per library nobody here wrote: its version, adapters, counts, and its findings (the documented deviations
    the tests measured, and any failures), for the summary of every output."""
    libraries: dict[str, dict] = {}
    for row in rows:
        if row.get("origin") != "thirdparty":
            continue
        name = library_of(row["implementation"], registry)
        lib = libraries.setdefault(name, {"library": name, "version": environment.get(
            LIBRARY_VERSION_KEYS.get(name, name)), "implementations": [], "totals": None, "rows": []})
        if row["implementation"] not in lib["implementations"]:
            lib["implementations"].append(row["implementation"])
        lib["rows"].append(row)
    out = []
    for lib in sorted(libraries.values(), key=lambda lib: lib["library"]):
        lib_rows = lib.pop("rows")
        lib["totals"] = totals(lib_rows)
        lib["deviations"] = deviation_groups(lib_rows)
        lib["failures"] = [{"nodeid": r["nodeid"], "implementation": r["implementation"], "claims": r["claims"],
                            "message": r.get("message")} for r in lib_rows if outcome(r["status"]) == "fail"]
        out.append(lib)
    return out


def narrowing(results: RunResults) -> str:
    """What narrowed the run to part of the suite (--only-impl, -k, --document, a file), or "" for a whole run."""
    run = results.run or {}
    parts = list(run.get("partial") or [])
    if run.get("only_impl") and not any(p.startswith("--only-impl") for p in parts):
        parts.append(f"--only-impl {' '.join(run['only_impl'])}")
    return "; ".join(parts)


def _only_what_ran(doc: DocumentView) -> DocumentView:
    """The claims and the implementation columns with at least one row."""
    ran = {r["implementation"] for r in doc.rows}
    doc.implementations = [i for i in doc.implementations if i in ran]
    doc.claims = [c for c in doc.claims if any(cl == c.id and i in ran and cell.rows
                                                for (cl, i), cell in doc.cells.items())]
    doc.cells = {k: v for k, v in doc.cells.items() if k[1] in ran}
    return doc


def _claim_views(registry, rows: list[dict]) -> dict[str, ClaimView]:
    views = {c.id: ClaimView(c.id, c.document, c.statement, c.source, c.kind, tuple(c.operations))
             for c in registry.claims.values()}
    for row in rows:  # claims the registry does not know (renamed, or a newer document): show, do not drop
        for claim in row["claims"] + row["targets"]:
            if claim not in views:
                doc = claim.split(".", 1)[0] if "." in claim else row["document"]
                views[claim] = ClaimView(claim, doc, registered=False)
    return views


def _document_views(registry, rows: list[dict], claims: dict[str, ClaimView]) -> list[DocumentView]:
    docs: dict[str, DocumentView] = {}
    for d in registry.documents.values():
        docs[d.id] = DocumentView(d.id, d.title, tuple(d.papers), d.post, d.catalogue,
                                  specs=registry.specs_of(d.id), operations=registry.operations_of(d.id))
    for claim in claims.values():
        docs.setdefault(claim.document, DocumentView(claim.document, claim.document)).claims.append(claim)
    for row in rows:
        # A row belongs to the documents of its claims (usually one); a row that names none, to its own.
        for doc_id in dict.fromkeys(claims[c].document for c in row["claims"]) or [row["document"]]:
            docs.setdefault(doc_id, DocumentView(doc_id, doc_id)).rows.append(row)
    for doc in docs.values():
        _fill_matrix(doc, registry)
    return list(docs.values())


def _fill_matrix(doc: DocumentView, registry) -> None:
    claim_ids = {c.id for c in doc.claims}
    registered = [i for i in registry.implementations.values()
                  if i.origin != "mutant" and i.operation.split(".", 1)[0] == doc.id]
    for impl in registered:
        doc.origins.setdefault(impl.name, impl.origin)
        for claim, deviation in impl.deviations.items():
            doc.documented_deviations.append((impl.name, claim, getattr(deviation, "reason", str(deviation))))
    for row in doc.rows:
        doc.origins.setdefault(row["implementation"], str(row.get("origin") or "user"))
    rank = {o: i for i, o in enumerate(ORIGIN_ORDER)}
    doc.implementations = sorted(doc.origins, key=lambda n: rank.get(doc.origins[n], len(rank)))

    for claim in doc.claims:  # applicable: the implementation provides one of the claim's operations
        for impl in registered:
            if impl.operation in claim.operations:
                doc.cells.setdefault((claim.id, impl.name), Cell())
    for row in doc.rows:
        tagged = [c for c in row["claims"] if c in claim_ids]
        if not row["claims"]:
            doc.untagged.add(row)
        for claim in tagged:
            doc.cells.setdefault((claim, row["implementation"]), Cell()).add(row)
    for claim in doc.claims:
        claim.status = combine_statuses(cell.status for (c, _), cell in doc.cells.items() if c == claim.id)


# --- details the outputs list under each matrix -----------------------------------------------------------

def repro_command(row: dict, run: dict) -> tuple[str, bool]:
    """The row's repro command, or one rebuilt from its node id when the row has none (flagged True)."""
    if row.get("repro"):
        return str(row["repro"]), False
    return build_repro(row["nodeid"], profile=run.get("profile"), impl_args=run.get("impl_args") or (),
                         pythonpath=run.get("pythonpath")), True


def failure_record(row: dict, run: dict) -> dict:
    repro, rebuilt = repro_command(row, run)
    return {
        "nodeid": row["nodeid"], "test": row["test"], "document": row["document"], "claims": row["claims"],
        "operation": row.get("operation"), "implementation": row["implementation"], "origin": row.get("origin"),
        "device": row.get("device"), "dtype": row.get("dtype"), "params": row.get("params"),
        "status": row["status"], "failure_kind": row.get("failure_kind"), "message": row.get("message"),
        "falsifying_example": row.get("falsifying_example"), "examples": row.get("examples"),
        "repro": repro, "repro_rebuilt": rebuilt,
    }


def skip_groups(rows: list[dict]) -> list[dict]:
    """Skipped rows grouped by reason, most frequent first."""
    groups: dict[str, dict] = {}
    for row in rows:
        if outcome(row["status"]) != "skip":
            continue
        reason = str(row.get("reason") or row.get("message") or "no reason given")
        # "torch.tiled: no CUDA device" and "spec: no CUDA device" are one reason; the group lists the names
        reason = reason.removeprefix(f"{row['implementation']}: ")
        g = groups.setdefault(reason, {"reason": reason, "count": 0, "implementations": [], "tests": []})
        g["count"] += 1
        for key, value in (("implementations", row["implementation"]), ("tests", row["test"])):
            if value not in g[key]:
                g[key].append(value)
    return sorted(groups.values(), key=lambda g: -g["count"])


def deviation_groups(rows: list[dict]) -> list[dict]:
    """Rows with a documented deviation, grouped by implementation, claims and reason."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        if outcome(row["status"]) != "deviation":
            continue
        reason = str(row.get("reason") or row.get("message") or "no reason given")
        reason = reason.removeprefix("documented deviation: ")  # the xfail reason's prefix: the heading says it
        key = (row["implementation"], tuple(row["claims"]), reason)
        g = groups.setdefault(key, {"implementation": key[0], "claims": list(key[1]), "reason": reason, "count": 0})
        g["count"] += 1
    return list(groups.values())


def ratio_table(rows: list[dict]) -> dict[str, dict[str, float]]:
    """implementation -> dtype -> worst err / err(naive baseline) over the rows' budget checks."""
    table: dict[str, dict[str, float]] = {}
    for row in rows:
        budget = [b for b in (row.get("metrics") or {}).get("budget") or [] if isinstance(b, dict)]
        pairs = [(str(b.get("dtype") or row.get("dtype") or "?"), b.get("ratio")) for b in budget]
        if not pairs:
            pairs = [(str(row.get("dtype") or "?"), row_worst_ratio(row))]
        for dtype, ratio in pairs:
            if is_number(ratio):
                per_dtype = table.setdefault(row["implementation"], {})
                per_dtype[dtype] = max_or_none([per_dtype.get(dtype), float(ratio)])
    return table


def over_budget(rows: list[dict]) -> set[tuple[str, str]]:
    """(implementation, dtype) pairs where some budget check measured err above its allowance."""
    over = set()
    for row in rows:
        for b in (row.get("metrics") or {}).get("budget") or []:
            if isinstance(b, dict) and is_number(b.get("err")) and is_number(b.get("allowed")) \
                    and b["err"] > b["allowed"]:
                over.add((row["implementation"], str(b.get("dtype") or row.get("dtype") or "?")))
    return over


def budget_factors(rows: list[dict]) -> list[float]:
    """The distinct k of the budgets (err <= k x baseline + floor), for the reference lines of the plot."""
    ks = {float(b["k"]) for r in rows for b in (r.get("metrics") or {}).get("budget") or []
          if isinstance(b, dict) and is_number(b.get("k"))}
    return sorted(ks)


def statistics_records(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        for stat in row.get("statistics") or []:
            if isinstance(stat, dict):
                out.append({"test": row["test"], "implementation": row["implementation"], "status": row["status"],
                            "dtype": row.get("dtype"), **stat})
    return out


def series_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Series by name; each series keeps the implementation of its row for the legend."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        for s in row.get("series") or []:
            if isinstance(s, dict) and (s.get("points") or s.get("values")):
                groups.setdefault(str(s.get("name") or "series"), []).append(
                    {**s, "implementation": row["implementation"]})
    return groups


# --- conformance.json ---------------------------------------------------------------------------------

def to_json(report: Report) -> dict:
    run = dict(report.results.run)
    run["complete"] = report.results.complete
    run.setdefault("profile", None)  # the hypothesis profile and seed, also for results that did not record them
    run.setdefault("seed", None)
    documents = {}
    for doc in report.documents:
        claims = {}
        for claim in doc.claims:
            impls = {impl: doc.cells[(claim.id, impl)].as_dict() for impl in doc.implementations
                     if (claim.id, impl) in doc.cells}
            claims[claim.id] = {"status": claim.status, "kind": claim.kind, "statement": claim.statement,
                                "source": claim.source, "registered": claim.registered, "implementations": impls}
        documents[doc.id] = {
            "title": doc.title, "encoded": doc.encoded, "summary": doc.summary(), "claims": claims,
            "untagged": doc.untagged.as_dict() if doc.untagged.rows else None,
            "skips": skip_groups(doc.rows), "deviations": deviation_groups(doc.rows),
            "documented_deviations": [{"implementation": i, "claim": c, "reason": r}
                                      for i, c, r in doc.documented_deviations],
            "worst_ratio": ratio_table(doc.rows),
        }
    return _finite({
        "schema": 1,
        "suite": report.results.suite,
        "environment": report.results.environment,
        "run": run,
        "source": " + ".join(report.results.source_names),
        "sources": [{k: v for k, v in source.items() if k != "suite"} for source in report.results.sources],
        "notes": report.notes,
        "totals": report.totals,
        "documents": documents,
        "libraries": report.libraries,
        "kill_matrix": report.kill,
        "domain_coverage": report.coverage,
        "mutation_score": report.mutation,
        "failures": [failure_record(r, report.results.run_for(r)) for r in report.failures],
    })


def _finite(obj):
    """Strict JSON has no NaN or infinity: write them as strings so every JSON reader can load the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
