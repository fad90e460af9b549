"""The HTML report: one self-contained page (inline CSS and plots, no script), readable offline.

Every text that comes from results, the registry or asv goes through ``e`` (html.escape); the only markup
not built here is the MathML that latex2mathml produces from the registry's LaTeX.
"""

from __future__ import annotations

import html
import json

from . import plots
from .asv_results import AsvResults, format_value, plot_lines
from .conformance import (
    DocumentView,
    Report,
    budget_factors,
    deviation_groups,
    failure_record,
    outcome,
    over_budget,
    ratio_table,
    series_groups,
    skip_groups,
    statistics_records,
)
from .coverage import COVERAGE_COLUMNS, coverage_rows, survivors
from .formatting import cell_counts, cell_text, fmt_number, header_fields, kill_rate_text
from .kill_matrix import format_rate

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0 auto;
 max-width:1200px;padding:0 20px 40px}
h1{font-size:22px;margin:18px 0 6px}h2{font-size:19px;margin:34px 0 8px;border-bottom:2px solid #ddd;
 padding-bottom:4px}h3{font-size:15px;margin:22px 0 6px}h4{font-size:13px;margin:12px 0 4px;
 font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d8d8d8;padding:3px 7px;vertical-align:top;text-align:left}
th{background:#f4f5f7;font-weight:600}
table.meta td:first-child{color:#555;white-space:nowrap}table.meta td{border:none;padding:1px 10px 1px 0}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:6px 8px;white-space:pre-wrap;word-break:break-word;
 margin:4px 0 8px}
.pass{background:#e3f4e1;color:#1b5e20}.fail{background:#fbe0e0;color:#a00018;font-weight:600}
.skip{background:#eeeeee;color:#555}.deviation{background:#fff1d6;color:#7a4a00}
.untested{background:#f3e5f5;color:#6a1b9a}.na{color:#c4c4c4;text-align:center}
.matrix td.cell{white-space:nowrap;text-align:center}.matrix td.cell small{display:block;font-weight:400;
 color:#555;font-size:11px}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;margin-right:6px;font-size:13px}
.banner{background:#a00018;color:#fff;padding:8px 12px;border-radius:4px;margin:8px 0;font-weight:600}
.banner ul{margin:4px 0 0;font-weight:400}
.note{color:#555;font-size:12px}.muted{color:#777}
.failure{border-left:4px solid #a00018;padding:2px 0 2px 10px;margin:10px 0}
.failure dl{display:grid;grid-template-columns:max-content auto;gap:1px 12px;margin:2px 0}
.failure dt{color:#555}.failure dd{margin:0}
img.plot{max-width:100%;border:1px solid #eee;margin:4px 8px 8px 0}
.wide{overflow-x:auto}nav{font-size:13px;margin:8px 0}nav a{margin-right:10px}
math{font-size:15px}
"""


def e(text) -> str:
    return html.escape("" if text is None else str(text))


def render_html(report: Report, asv: AsvResults | None) -> str:
    encoded = [d for d in report.documents if d.encoded]
    pending = [d for d in report.documents if not d.encoded]
    suite = report.results.suite
    title = f"{suite.get('name') or 'eqspec'} conformance report"
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        _header(report, title),
        _nav(encoded),
        _summary(report, encoded),
    ]
    parts += [_document(d, report) for d in encoded]
    if pending:
        parts.append('<section id="not-encoded"><h2>Documents not yet encoded</h2><ul>')
        parts += [f"<li><b>{e(d.title)}</b> <span class=muted>({e(d.id)})</span></li>" for d in pending]
        parts.append("</ul></section>")
    parts.append(_mutation(report))
    parts.append(_performance(asv))
    sources = " + ".join(f"<code>{e(name)}</code>" for name in report.results.source_names)
    parts.append(f'<p class="note">Rendered by <code>python -m reports</code> from {sources}.</p></body></html>')
    return "\n".join(parts)


def _latex_to_mathml(latex: str) -> str:
    try:
        from latex2mathml.converter import convert
    except ImportError:
        return f"<code>{e(latex)}</code>"
    try:
        return convert(latex)
    except Exception:  # an unsupported macro must not stop the report: show the LaTeX itself
        return f"<code>{e(latex)}</code>"


# --- header, navigation, summary -------------------------------------------------------------------------

def _header(report: Report, title: str) -> str:
    out = [f"<header><h1>{e(title)}</h1>"]
    if not report.results.complete:
        out.append('<div class="banner">INCOMPLETE RUN: this report shows only the tests that finished.<ul>')
        out += [f"<li>{e(n)}</li>" for n in report.notes]
        out.append("</ul></div>")
    out.append('<table class="meta">')
    out += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in header_fields(report.results)]
    out.append("</table><p>")
    t = report.totals
    for key, css in (("passed", "pass"), ("failed", "fail"), ("error", "fail"), ("skipped", "skip"),
                     ("deviation", "deviation")):
        if t[key] or key != "error":
            out.append(f'<span class="badge {css}">{t[key]} {e(key)}</span>')
    out.append(f'<span class="muted">of {t["rows"]} results; {e(kill_rate_text(report.kill))}</span></p>')
    if report.results.complete and report.notes:
        out.append("<ul class=note>" + "".join(f"<li>{e(n)}</li>" for n in report.notes) + "</ul>")
    out.append("</header>")
    return "\n".join(out)


def _nav(docs: list[DocumentView]) -> str:
    links = ['<a href="#summary">Summary</a>', '<a href="#libraries">Libraries</a>']
    links += [f'<a href="#doc-{e(d.id)}">{e(d.id)}</a>' for d in docs]
    links += ['<a href="#mutation">Mutation testing</a>', '<a href="#performance">Performance</a>']
    return "<nav>" + " ".join(links) + "</nav>"


def _summary(report: Report, docs: list[DocumentView]) -> str:
    out = ['<section id="summary"><h2>Summary</h2><table><tr><th>document</th><th>claims</th>'
           "<th>passing on every implementation</th><th>failing</th><th>deviation</th><th>skipped only</th>"
           "<th>untested</th><th>results</th><th>kill rate</th></tr>"]
    for d in docs:
        s = d.summary()
        out.append(
            f'<tr><td><a href="#doc-{e(d.id)}">{e(d.title)}</a></td><td>{s["claims"]}</td>'
            f'<td{_cls(s["passing"], "pass")}>{s["passing"]}</td><td{_cls(s["failing"], "fail")}>{s["failing"]}</td>'
            f'<td{_cls(s["deviation"], "deviation")}>{s["deviation"]}</td><td{_cls(s["skipped"], "skip")}>'
            f'{s["skipped"]}</td><td{_cls(s["untested"], "untested")}>{s["untested"]}</td><td>{s["rows"]}</td>'
            f'<td>{e(format_rate(s["kill_rate"]) if report.kill else "—")}</td></tr>')
    out.append("</table>")
    out.append(_libraries(report))
    out.append("</section>")
    return "\n".join(out)


def _libraries(report: Report) -> str:
    """The libraries nobody here wrote, each with its findings: the documented deviations the tests measured."""
    if not report.libraries:
        return ""
    out = ['<h3 id="libraries">Libraries nobody here wrote</h3>',
           '<p class="note">Their findings are documented deviations: the claim fails for the library, as measured '
           "by the property test, for the reason given. A failure here is a difference nobody has documented.</p>",
           "<table><tr><th>library</th><th>version</th><th>adapters</th><th>passed</th><th>deviation</th>"
           "<th>skipped</th><th>failed</th><th>findings</th></tr>"]
    for lib in report.libraries:
        t = lib["totals"]
        failed = t["failed"] + t["error"]
        findings = [f"<li><code>{e(g['implementation'])}</code> on {e(', '.join(g['claims']))} ({g['count']}): "
                    f"{e(g['reason'])}</li>" for g in lib["deviations"]]
        findings += [f"<li class=fail><code>{e(f['implementation'])}</code> FAIL on {e(', '.join(f['claims']))}: "
                     f"{e(f['message'] or '')}</li>" for f in lib["failures"]]
        out.append(
            f"<tr><td><b>{e(lib['library'])}</b></td><td>{e(lib['version'] or '—')}</td>"
            f"<td>{e(', '.join(lib['implementations']))}</td><td{_cls(t['passed'], 'pass')}>{t['passed']}</td>"
            f"<td{_cls(t['deviation'], 'deviation')}>{t['deviation']}</td><td{_cls(t['skipped'], 'skip')}>"
            f"{t['skipped']}</td><td{_cls(failed, 'fail')}>{failed}</td>"
            f"<td>{'<ul>' + ''.join(findings) + '</ul>' if findings else '—'}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _cls(count: int, css: str) -> str:
    return f' class="{css}"' if count else ""


# --- one document ----------------------------------------------------------------------------------------

def _document(d: DocumentView, report: Report) -> str:
    out = [f'<section id="doc-{e(d.id)}"><h2>{e(d.title)} <span class="muted">({e(d.id)})</span></h2>']
    if d.papers:
        out.append("<p>Papers: " + "; ".join(e(p) for p in d.papers) + "</p>")
    if d.post or d.catalogue:
        out.append(f'<p class="muted">Post: {e(d.post)}{" · catalogue: " + e(d.catalogue) if d.catalogue else ""}</p>')
    out += [_equations(d), _claims(d), _matrix(d), _untagged(d), _failures(d, report), _skips(d),
            _deviations(d), _ratios(d), _series(d), _statistics(d)]
    out.append("</section>")
    return "\n".join(x for x in out if x)


def _equations(d: DocumentView) -> str:
    if not d.specs:
        return ""
    operations = {o.id: o for o in d.operations}
    out = ["<h3>Equations</h3><table><tr><th>spec</th><th>equation</th><th>source</th><th>convention</th></tr>"]
    for s in d.specs:
        op = operations.get(s.id)
        name = f"<code>{e(s.name)}</code>"
        if op is not None:
            name += f'<br><span class="note">operation <code>{e(op.signature)}</code></span>'
            name += "".join(f'<br><span class="note">returns <code>{e(o.describe())}</code></span>' for o in op.outputs)
        out.append(f'<tr><td>{name}</td><td title="{e(s.latex)}">{_latex_to_mathml(s.latex)}</td><td>{e(s.source)}</td>'
                   f"<td>{e(s.convention)}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _claims(d: DocumentView) -> str:
    if not d.claims:
        return ""
    out = ["<h3>Claims</h3><table><tr><th>claim</th><th>kind</th><th>statement</th><th>source</th>"
           "<th>status</th></tr>"]
    for c in d.claims:
        statement = e(c.statement) if c.registered else '<span class="muted">not in the registry</span>'
        out.append(f"<tr><td><code>{e(_short_claim(c.id, d.id))}</code></td><td>{e(c.kind)}</td><td>{statement}</td>"
                   f'<td>{e(c.source)}</td><td class="{c.status}">{e(c.status)}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def _short_claim(claim: str, doc: str) -> str:
    return claim.removeprefix(f"{doc}.")


def _matrix(d: DocumentView) -> str:
    if not d.claims or not d.implementations:
        return ""
    out = ["<h3>Conformance matrix</h3>",
           '<p class="note">One cell per claim and implementation, across dtypes, devices and parameters: the worst '
           "outcome, the failing count, and in brackets the worst error ratio err / err(naive baseline). "
           "— = applicable but no results (untested); · = the implementation does not provide the claim's "
           "operations.</p>",
           '<div class="wide"><table class="matrix"><tr><th>claim</th>']
    out += [f'<th>{e(i)}<br><span class="note">{e(d.origins.get(i, ""))}</span></th>' for i in d.implementations]
    out.append("</tr>")
    for c in d.claims:
        out.append(f'<tr><td class="{c.status}" title="{e(c.statement)}">'
                   f"<code>{e(_short_claim(c.id, d.id))}</code></td>")
        for impl in d.implementations:
            cell = d.cells.get((c.id, impl))
            if cell is None:
                out.append('<td class="na">·</td>')
            elif cell.status == "untested":
                out.append('<td class="cell untested">—</td>')
            else:
                out.append(f'<td class="cell {cell.status}">{e(cell_text(cell))}<small>{e(cell_counts(cell))}</small>'
                           "</td>")
        out.append("</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _untagged(d: DocumentView) -> str:
    if not d.untagged.rows:
        return ""
    return (f'<p>Results that name no claim: <span class="badge {d.untagged.status}">'
            f"{e(cell_counts(d.untagged))}</span></p>")


def _failures(d: DocumentView, report: Report) -> str:
    failures = [failure_record(r, report.results.run_for(r)) for r in d.rows if outcome(r["status"]) == "fail"]
    if not failures:
        return ""
    out = [f"<h3>Failures ({len(failures)})</h3>"]
    for f in failures:
        params = json.dumps(f["params"], sort_keys=True) if f["params"] else ""
        facts = [("implementation", f["implementation"]), ("claims", ", ".join(f["claims"])),
                 ("operation", f["operation"]), ("device", f["device"]), ("dtype", f["dtype"]), ("params", params),
                 ("status", f["status"]), ("failure kind", f["failure_kind"]), ("examples tried", f["examples"])]
        out.append(f'<div class="failure"><h4>{e(f["nodeid"])}</h4><dl>')
        out += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts if v]
        out.append("</dl>")
        if f["message"]:
            out.append(f"<pre>{e(f['message'])}</pre>")
        if f["falsifying_example"]:
            out.append(f"<div class=note>falsifying example</div><pre>{e(f['falsifying_example'])}</pre>")
        note = " (rebuilt from the node id: the row carried none)" if f["repro_rebuilt"] else ""
        out.append(f"<div class=note>reproduce{e(note)}</div><pre>{e(f['repro'])}</pre></div>")
    return "\n".join(out)


def _skips(d: DocumentView) -> str:
    groups = skip_groups(d.rows)
    if not groups:
        return ""
    out = [f"<h3>Skips ({sum(g['count'] for g in groups)})</h3><ul>"]
    for g in groups:
        out.append(f"<li>skipped because: <b>{e(g['reason'])}</b> ({g['count']} test{'s' * (g['count'] != 1)}) "
                   f'<span class="muted">— {e(", ".join(g["implementations"]))}</span></li>')
    out.append("</ul>")
    return "\n".join(out)


def _deviations(d: DocumentView) -> str:
    groups = deviation_groups(d.rows)
    if not groups and not d.documented_deviations:
        return ""
    out = ["<h3>Documented deviations</h3>"]
    if groups:
        out.append("<table><tr><th>implementation</th><th>claims</th><th>reason</th><th>results</th></tr>")
        out += [f'<tr class="deviation"><td>{e(g["implementation"])}</td><td>{e(", ".join(g["claims"]))}</td>'
                f'<td>{e(g["reason"])}</td><td>{g["count"]}</td></tr>' for g in groups]
        out.append("</table>")
    if d.documented_deviations:
        out.append('<p class="note">Declared by the implementations in the registry:</p><ul>')
        out += [f"<li><b>{e(i)}</b> on <code>{e(c)}</code>: {e(r)}</li>" for i, c, r in d.documented_deviations]
        out.append("</ul>")
    return "\n".join(out)


def _ratios(d: DocumentView) -> str:
    table = ratio_table(d.rows)
    if not table:
        return ""
    table = {impl: table[impl] for impl in d.implementations if impl in table}  # the matrix's column order
    dtypes = sorted({dt for per in table.values() for dt in per})
    out = ["<h3>Error ratios</h3>",
           '<p class="note">Worst err / err(naive same-precision baseline) over every budget check of each '
           "implementation and dtype: below 1 is more accurate than the naive code; the budget allows k x "
           "baseline + floor (red: some check measured more than its budget).</p>",
           "<table><tr><th>implementation</th>" + "".join(f"<th>{e(dt)}</th>" for dt in dtypes) + "</tr>"]
    over = over_budget(d.rows)
    for impl, per in table.items():
        cells = []
        for dt in dtypes:
            v = per.get(dt)
            css = "" if v is None else ' class="fail"' if (impl, dt) in over else ' class="pass"'
            cells.append(f"<td{css}>{e(fmt_number(v))}</td>")
        out.append(f"<tr><td>{e(impl)}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    out.append(plots.ratio_bars(table, budget_factors(d.rows)))
    return "\n".join(out)


def _series(d: DocumentView) -> str:
    groups = series_groups(d.rows)
    if not groups:
        return ""
    figures = [plots.heatmaps(name, series) if series[0].get("kind") == "heatmap" else plots.series_plot(name, series)
               for name, series in groups.items()]
    return "\n".join(["<h3>Plots</h3>"] + figures)


def _statistics(d: DocumentView) -> str:
    records = statistics_records(d.rows)
    if not records:
        return ""
    out = ["<h3>Statistical bounds</h3><table><tr><th>test</th><th>implementation</th><th>statistic</th>"
           "<th>observed</th><th>bound</th><th>false-alarm probability</th><th>status</th></tr>"]
    for r in records:
        out.append(f"<tr><td>{e(r['test'])}</td><td>{e(r['implementation'])}</td><td>{e(r.get('name'))}</td>"
                   f"<td>{e(fmt_number(r.get('observed')))}</td><td>{e(fmt_number(r.get('bound')))}</td>"
                   f"<td>{e(fmt_number(r.get('false_alarm')))}</td><td>{e(r['status'])}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


# --- mutation testing and performance ---------------------------------------------------------------------

def _coverage(report: Report) -> str:
    """Each document's domains and its generated-mutant score, and every generated mutant not killed."""
    if not report.coverage:
        return ""
    out = ["<h3>Domains and generated mutants</h3><table><tr>"
           + "".join(f"<th>{e(title)}</th>" for _, title in COVERAGE_COLUMNS) + "</tr>"]
    for row in coverage_rows(report.coverage, report.mutation):
        out.append("<tr>" + "".join(f"<td>{e(row[key])}</td>" for key, _ in COVERAGE_COLUMNS) + "</tr>")
    out.append("</table>")
    if report.mutation is None:
        out.append("<p>No generated-mutant score: <code>tox -e mutation</code> writes it.</p>")
    left = survivors(report.mutation)
    if left:
        out.append(f"<details><summary>Generated mutants not killed ({len(left)})</summary><ul>"
                   + "".join(f"<li><code>{e(n)}</code> <code>{e(k)}</code>: {e(v)}</li>" for n, k, v in left)
                   + "</ul></details>")
    return "\n".join(out)


def _mutation(report: Report) -> str:
    out = ['<section id="mutation"><h2>Mutation testing</h2>', _coverage(report)]
    kill = report.kill
    if kill is None:
        out.append("<p>No mutants results: run <code>tox -e mutants</code>.</p></section>")
        return "\n".join(out)
    if report.mutants is not None and not report.mutants.complete:
        out.append('<div class="banner">INCOMPLETE mutants run<ul>'
                   + "".join(f"<li>{e(n)}</li>" for n in report.mutants.notes) + "</ul></div>")
    mutants = list(kill["mutants"])
    killed_m = sum(m["killed"] for m in kill["mutants"].values())
    out.append(f"<p>{e(kill_rate_text(kill))}; mutant kill rate {e(format_rate(kill['mutant_kill_rate']))} "
               f"({killed_m}/{len(mutants)} mutants caught by a property). A kill counts only a conformance or "
               "contract failure: a mutant that crashed or hung was not caught by the property.</p>")
    labels = {m: f"M{i + 1}" for i, m in enumerate(mutants)}
    out.append('<table class="matrix"><tr><th>claim</th>'
               + "".join(f'<th title="{e(m)}">{labels[m]}</th>' for m in mutants) + "<th>killed</th></tr>")
    for claim, entry in kill["claims"].items():
        cells = []
        for m in mutants:
            if m in entry["mutants"]:
                cells.append('<td class="cell pass">killed</td>')
            elif claim in kill["mutants"][m]["targets"]:
                cells.append('<td class="cell fail" title="targets this claim but was not caught">missed</td>')
            else:
                cells.append('<td class="na">·</td>')
        verdict = "yes" if entry["killed"] else "NO"
        out.append(f'<tr><td><code>{e(claim)}</code></td>{"".join(cells)}'
                   f'<td class="{"pass" if entry["killed"] else "fail"}">{verdict}</td></tr>')
    out.append("</table><table><tr><th></th><th>mutant</th><th>targets</th><th>killed by</th></tr>")
    for m in mutants:
        info = kill["mutants"][m]
        killed_by = ", ".join(info["killed_by"]) if info["killed"] else "NOT KILLED"
        out.append(f'<tr><td>{labels[m]}</td><td><code>{e(m)}</code></td><td>{e(", ".join(info["targets"]))}</td>'
                   f'<td class="{"pass" if info["killed"] else "fail"}">{e(killed_by)}</td></tr>')
    out.append("</table></section>")
    return "\n".join(out)


def _performance(asv: AsvResults | None) -> str:
    out = ['<section id="performance"><h2>Performance (asv)</h2>']
    if asv is None:
        out.append("<p>no asv results found; run <code>tox -e bench</code></p></section>")
        return "\n".join(out)
    machines = list(asv.machines)
    run_keys = ["commit", "date", "runs"]  # what this report adds to asv's machine.json, shown last
    keys = sorted({k for info in asv.machines.values() for k in info} - {"machine", *run_keys}) + run_keys
    out.append("<table><tr><th>machine</th>" + "".join(f"<th>{e(k)}</th>" for k in keys) + "</tr>")
    for m in machines:
        out.append(f"<tr><td>{e(m)}</td>" + "".join(f"<td>{e(asv.machines[m].get(k, ''))}</td>" for k in keys)
                   + "</tr>")
    out.append('</table><p class="note">The latest result of each benchmark on each machine.</p>')
    for bench in asv.benchmarks:
        unit = f" ({bench.unit})" if bench.unit else ""
        out.append(f"<h4>{e(bench.name)}{e(unit)}</h4><table><tr>"
                   + "".join(f"<th>{e(p)}</th>" for p in bench.param_names)
                   + "".join(f"<th>{e(m)}{_older_commit(bench, asv, m)}</th>" for m in machines) + "</tr>")
        for combo, per_machine in bench.values.items():
            out.append("<tr>" + "".join(f"<td>{e(v)}</td>" for v in combo)
                       + "".join(f"<td>{e(format_value(per_machine.get(m), bench.unit))}</td>" for m in machines)
                       + "</tr>")
        out.append("</table>")
        lines = plot_lines(bench)
        if lines:
            out.append(plots.benchmark_plot(bench.name, lines[0], lines[1], bench.unit))
    out += [f'<p class="note">{e(n)}</p>' for n in asv.notes]
    out.append("</section>")
    return "\n".join(out)


def _older_commit(bench, asv: AsvResults, machine: str) -> str:
    """Say so when a machine's value comes from an older run than its latest (the benchmark was not rerun)."""
    commit = bench.commits.get(machine)
    if commit and commit != asv.machines[machine].get("commit"):
        return f'<br><span class="note">at {e(commit)}</span>'
    return ""
