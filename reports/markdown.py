"""The Markdown report, for a pull request or a README: totals, one table per document, failures, skips."""

from __future__ import annotations

import re

from .conformance import DocumentView, Report, deviation_groups, failure_record, outcome, skip_groups
from .coverage import COVERAGE_COLUMNS, coverage_rows, survivors
from .formatting import (
    cell_text,
    commit_text,
    device_text,
    kill_rate_text,
    profile_text,
    seed_text,
    shorten,
    source_text,
    totals_text,
)
from .kill_matrix import format_rate
from .load import DIFFERS

STATEMENT_LIMIT = 90


def md(text) -> str:
    """Text safe inside a Markdown paragraph or table cell: one line, no live markup."""
    text = " ".join(str("" if text is None else text).split())
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text)


def code(text) -> str:
    text = " ".join(str(text).split())
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def fenced(text: str, info: str = "") -> str:
    runs = [len(m) for m in re.findall(r"`+", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)  # longer than any backtick run inside
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def render_markdown(report: Report) -> str:
    res = report.results
    suite, env, run = res.suite, res.environment, res.run
    name = f"{suite.get('name') or 'eqspec'} {suite.get('version') or ''}".strip()
    lines = [f"# {md(name)} conformance: {totals_text(report.totals)}; {kill_rate_text(report.kill)}", ""]
    if not res.complete:
        lines += ["> **INCOMPLETE RUN**: only the tests that finished are counted.", ">"]
        lines += [f"> - {md(n)}" for n in report.notes] + [""]
    facts = [f"commit {code(commit_text(suite))}", md(env.get("date") or run.get("started") or "")]
    facts += [f"{k} {md(env[k])}" for k in ("python", "torch", "triton") if env.get(k)]
    device = device_text(env)
    facts += [md(device if device != DIFFERS else f"device {device}"), f"hypothesis profile {md(profile_text(run))}",
              f"seed {md(seed_text(run))}"]
    if run.get("impl_args"):
        facts.append("--impl " + code("; ".join(map(str, run["impl_args"]))))
    lines += [" · ".join(f for f in facts if f), ""]
    if res.sources:
        lines += [f"Merged from {len(res.sources)} results files:", ""]
        lines += [f"- {md(source_text(source))}" for source in res.sources]
        lines.append("")
        if res.complete and report.notes:
            lines += [f"> {md(n)}" for n in report.notes] + [""]
    elif res.complete and report.notes:
        lines += [f"> {md(n)}" for n in report.notes] + [""]

    lines += _libraries(report)
    lines += _coverage(report)
    for doc in report.documents:
        if doc.encoded:
            lines += _document(doc, report)
    pending = [d.id for d in report.documents if not d.encoded]
    if pending:
        lines += ["Not yet encoded: " + ", ".join(code(p) for p in pending) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def _coverage(report: Report) -> list[str]:
    """Each document's domains (what the differential tests vary and compare) and its generated-mutant score."""
    if not report.coverage:
        return []
    lines = ["## Domains and generated mutants", "",
             "| " + " | ".join(title for _, title in COVERAGE_COLUMNS) + " |",
             "|" + "---|" * len(COVERAGE_COLUMNS)]
    for row in coverage_rows(report.coverage, report.mutation):
        lines.append("| " + " | ".join(md(row[key]) for key, _ in COVERAGE_COLUMNS) + " |")
    if report.mutation is None:
        lines += ["", "No generated-mutant score: `tox -e mutation` writes it."]
    left = survivors(report.mutation)
    if left:
        lines += ["", f"Generated mutants not killed ({len(left)}):", ""]
        lines += [f"- {code(name)} {code(shorten(edit, 140))}: {md(verdict)}" for name, edit, verdict in left]
    return lines + [""]


def _libraries(report: Report) -> list[str]:
    """The libraries nobody here wrote, each with its findings (the documented deviations the tests measured)."""
    if not report.libraries:
        return []
    lines = ["## Libraries nobody here wrote", "", "| library | version | passed | deviation | skipped | failed | "
             "findings |", "|---|---|---|---|---|---|---|"]
    for lib in report.libraries:
        t = lib["totals"]
        findings = [f"{code(g['implementation'])} on {md(', '.join(g['claims']))} ({g['count']}): "
                    f"{md(shorten(g['reason'], 160))}" for g in lib["deviations"]]
        findings += [f"**FAIL** {code(f['implementation'])} on {md(', '.join(f['claims']))}" for f in lib["failures"]]
        lines.append(f"| {md(lib['library'])} | {md(lib['version'] or '—')} | {t['passed']} | {t['deviation']} | "
                     f"{t['skipped']} | {t['failed'] + t['error']} | {'<br>'.join(findings) or '—'} |")
    return lines + [""]


def _document(doc: DocumentView, report: Report) -> list[str]:
    s = doc.summary()
    kill = f" · kill rate {format_rate(s['kill_rate'])}" if report.kill else ""
    lines = [f"## {md(doc.title)} ({code(doc.id)})", "",
             f"{s['claims']} claim{'s' * (s['claims'] != 1)}: {s['passing']} pass, {s['failing']} fail, "
             f"{s['deviation']} deviation, "
             f"{s['skipped']} skipped only, {s['untested']} untested{kill}", ""]
    if doc.claims and doc.implementations:
        lines.append("| claim | statement | " + " | ".join(md(i) for i in doc.implementations) + " |")
        lines.append("|---|---|" + "---|" * len(doc.implementations))
        for c in doc.claims:
            cells = []
            for impl in doc.implementations:
                cell = doc.cells.get((c.id, impl))
                text = "·" if cell is None else cell_text(cell)
                cells.append(f"**{md(text)}**" if cell is not None and cell.status == "fail" else md(text))
            statement = shorten(c.statement, STATEMENT_LIMIT) if c.registered else "(not in the registry)"
            claim = code(c.id.removeprefix(f"{doc.id}."))
            if c.status == "untested":
                claim += " (untested)"
            lines.append(f"| {claim} | {md(statement)} | " + " | ".join(cells) + " |")
        lines += ["", "Cell: worst outcome across dtypes and parameters (failing/total), (worst err / err(naive "
                      "baseline)); — untested; · not applicable.", ""]

    failures = [failure_record(r, report.results.run_for(r)) for r in doc.rows if outcome(r["status"]) == "fail"]
    if failures:
        lines += [f"### Failures ({len(failures)})", ""]
        for f in failures:
            where = ", ".join(md(x) for x in (f["implementation"], f["device"], f["dtype"], f["failure_kind"]) if x)
            lines += [f"#### {code(f['nodeid'])}", "", f"{where}: {md(shorten(f['message'] or f['status'], 300))}", ""]
            if f["falsifying_example"]:
                lines += [fenced(f["falsifying_example"]), ""]
            lines += [fenced(f["repro"], "sh"), ""]
    skips = skip_groups(doc.rows)
    if skips:
        lines += [f"### Skips ({sum(g['count'] for g in skips)})", ""]
        lines += [f"- {g['count']} skipped because: {md(g['reason'])} ({md(', '.join(g['implementations']))})"
                  for g in skips]
        lines.append("")
    deviations = deviation_groups(doc.rows)
    if deviations:
        lines += ["### Documented deviations", ""]
        lines += [f"- {md(g['implementation'])} on {md(', '.join(g['claims']))} ({g['count']}): {md(g['reason'])}"
                  for g in deviations]
        lines.append("")
    return lines
