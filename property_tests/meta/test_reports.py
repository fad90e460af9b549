"""The report renderer on synthetic results: a failing implementation, skips, a deviation, an aborted run,
mutants and asv results. Each test renders into its own tmp_path; nothing here runs a property test."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reports.asv_results import load_asv_results
from reports.cli import main
from reports.kill_matrix import format_kill_matrix, kill_matrix
from reports.kill_matrix import main as kill_matrix_main

DOC = "flash_attention"
EXACT, CAUSAL, MASKED = f"{DOC}.exact_attention", f"{DOC}.causal_bottom_right", f"{DOC}.masked_keys_never_contribute"
UNTESTED = f"{DOC}.flop_count"  # registered, and deliberately given no rows below
FALSIFYING = ("Falsifying example: test_exact_attention(\n    impl='torch.tiled', dtype='float16',\n"
              "    q=tensor([[<big>]]),\n)")
REPRO = ("python -m pytest 'property_tests/test_flash_attention.py::test_exact_attention[torch.tiled-cpu-float16]' "
         "--hypothesis-profile=ci --hypothesis-seed=1234")
SKIP_REASON = "needs the Python package 'triton', which is not installed"
DEVIATION_REASON = "SDPA's is_causal=True aligns the causal mask top-left"


def row(test, impl, status, claims=(EXACT,), dtype="float32", **extra):
    params = "-".join(x for x in (impl, "cpu", dtype) if x)
    return {"nodeid": f"property_tests/test_flash_attention.py::{test}[{params}]", "test": test,
            "module": "property_tests/test_flash_attention.py", "document": DOC, "claims": list(claims),
            "operation": f"{DOC}.attention", "implementation": impl, "origin": impl.split(".")[0],
            "device": "cpu", "dtype": dtype, "params": {"causal": True}, "status": status, **extra}


def budget(ratio, dtype, k=2.0):
    return {"budget": [{"name": "o", "dtype": dtype, "err": ratio * 1e-3, "err_baseline": 1e-3, "floor": 1e-6,
                        "k": k, "allowed": k * 1e-3 + 1e-6, "ratio": ratio}], "worst_ratio": ratio}


SUITE_ROWS = [
    row("test_exact_attention", "spec", "passed", dtype="float64", metrics=budget(0.5, "float64")),
    row("test_exact_attention", "torch.tiled", "passed", dtype="bfloat16", metrics=budget(0.39, "bfloat16"),
        series=[{"name": "error_vs_block_size", "label": "bfloat16", "x_label": "block size",
                 "y_label": "max |o - spec|", "points": [[16, 1.1e-3], [32, 1.3e-3], [64, 0.0]]}]),
    row("test_exact_attention", "torch.tiled", "failed", dtype="float16", metrics=budget(7.5, "float16"),
        failure_kind="conformance", message="o: max |impl - spec| = 7.5e-3 exceeds the budget",
        falsifying_example=FALSIFYING, repro=REPRO),
    row("test_exact_attention", "triton.flash", "skipped", reason=SKIP_REASON),
    row("test_causal", "triton.flash", "skipped", claims=(CAUSAL,), reason=SKIP_REASON),
    row("test_causal", "thirdparty.sdpa_is_causal", "deviation", claims=(CAUSAL,), reason=DEVIATION_REASON),
    row("test_causal", "torch.tiled", "passed", claims=(CAUSAL, MASKED),
        statistics=[{"name": "masked share", "observed": 0.01, "bound": 0.02, "false_alarm": 1e-6}]),
    row("test_exact_attention", "user.mine", "error", failure_kind="implementation-error",
        message="RuntimeError: boom <in user code>"),  # no repro: the renderer rebuilds one from the node id
    {**row("test_new", "spec", "passed", claims=("clip.symmetric_loss",)), "document": "clip"},  # unregistered
]
MUTANT_ROWS = [
    {**row("test_exact_attention", "mutant.no_rescale", "failed", failure_kind="conformance"),
     "origin": "mutant", "targets": [EXACT]},
    {**row("test_causal", "mutant.top_left", "failed", claims=(CAUSAL,), failure_kind="implementation-error"),
     "origin": "mutant", "targets": [CAUSAL]},  # crashed: the property did not catch it, so no kill
    {**row("test_causal", "mutant.finite_sentinel", "passed", claims=(CAUSAL, MASKED)),
     "origin": "mutant", "targets": [MASKED]},
]
SUITE = {"name": "eqspec", "version": "0.1.0", "commit": "9cbabb7deadbeef", "dirty": True}
ENVIRONMENT = {"date": "2026-11-28T12:00:00Z", "python": "3.11.7", "torch": "2.13.0+cpu", "triton": None,
               "platform": "Linux-x86_64", "cpu": "x86_64", "cuda": None, "gpu": None, "triton_interpret": True}


def results_file(rows, mode="suite", **run):
    return {"schema": 1, "suite": SUITE, "environment": ENVIRONMENT,
            "run": {"profile": "ci", "seed": "derandomized", "mode": mode, "command": "python -m pytest property_tests",
                    "impl_args": [],
                    "started": "2026-11-28T12:00:00+00:00", "finished": "2026-11-28T12:02:00+00:00",
                    "complete": True, "duration_s": 120.0, **run},
            "rows": rows}


def write_asv(root):
    """Files in asv 0.6's own layout (as `asv run --set-commit-hash` writes them)."""
    machine = root / "h200-box"
    machine.mkdir(parents=True)
    (machine / "machine.json").write_text(json.dumps({"machine": "h200-box", "cpu": "Xeon", "version": 1}))
    (root / "benchmarks.json").write_text(json.dumps({
        "attention.Forward.track_tflops": {"name": "attention.Forward.track_tflops", "unit": "TFLOP/s",
                                           "param_names": ["impl", "seqlen"], "type": "track"},
        "version": 2}))
    columns = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
               "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]
    params = [["'torch.tiled'", "'triton.flash'"], ["1024", "2048", "4096"]]
    for commit, date, values in (("aaaaaaaa11", 1000, [1.0] * 6), ("bbbbbbbb22", 2000, [11.0, 12.0, 13.0,
                                                                                          21.0, float("nan"), 23.0])):
        run = {"commit_hash": commit, "env_name": "existing-py", "date": date,
               "params": {"machine": "h200-box", "python": "3.12"}, "python": "3.12", "requirements": {},
               "env_vars": {}, "result_columns": columns, "durations": {}, "version": 2,
               "results": {"attention.Forward.track_tflops": [values, params, "v1", date, 1.0],
                           "attention.time_softmax": [[2.5e-6], [], "v1", date, 0.5]}}
        (machine / f"{commit[:8]}-existing-py.json").write_text(json.dumps(run))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    (root / "results.json").write_text(json.dumps(results_file(SUITE_ROWS)))
    (root / "mutants.json").write_text(json.dumps(results_file(MUTANT_ROWS, mode="mutants")))
    write_asv(root / "asv")
    out = root / "out"
    rc = main(["--results", str(root / "results.json"), "--mutants", str(root / "mutants.json"),
               "--asv-results", str(root / "asv"), "--out", str(out)])
    return {"rc": rc, "root": root, "html": (out / "index.html").read_text(),
            "md": (out / "conformance.md").read_text(), "json": json.loads((out / "conformance.json").read_text())}


def test_failures_are_content_not_errors(rendered):
    assert rendered["rc"] == 0


def test_failing_row_shows_its_example_and_repro(rendered):
    page, md = rendered["html"], rendered["md"]
    assert html.escape(FALSIFYING) in page and html.escape(REPRO) in page
    assert FALSIFYING in md and REPRO in md
    rebuilt = "python -m pytest 'property_tests/test_flash_attention.py::test_exact_attention[user.mine-cpu-float32]'"
    assert html.escape(rebuilt) in page and rebuilt in md
    assert "&lt;in user code&gt;" in page and "<in user code>" not in page  # escaped, never live markup


def test_json_counts_match_the_rows(rendered):
    data = rendered["json"]
    statuses = [r["status"] for r in SUITE_ROWS]
    assert data["totals"] == {"rows": len(SUITE_ROWS), "passed": statuses.count("passed"),
                              "failed": statuses.count("failed"), "skipped": statuses.count("skipped"),
                              "deviation": statuses.count("deviation"), "error": statuses.count("error")}
    claims = data["documents"][DOC]["claims"]
    exact = claims[EXACT]
    assert exact["status"] == "fail"
    assert exact["implementations"]["torch.tiled"] == {"status": "fail", "passed": 1, "failed": 1, "skipped": 0,
                                                       "deviation": 0, "error": 0, "worst_ratio": 7.5}
    assert exact["implementations"]["triton.flash"]["status"] == "skip"
    assert claims[CAUSAL]["status"] == "deviation"
    assert claims[MASKED]["status"] == "pass"
    assert claims[UNTESTED]["status"] == "untested"  # registered but no rows: visible, never passing
    assert data["documents"]["clip"]["claims"]["clip.symmetric_loss"]["registered"] is False
    assert len(data["failures"]) == 2 and data["run"]["complete"] is True


def test_summary_lists_every_library_with_its_findings(rendered):
    (torch,) = [lib for lib in rendered["json"]["libraries"] if lib["library"] == "torch"]
    assert torch["version"] == "2.13.0+cpu" and torch["implementations"] == ["thirdparty.sdpa_is_causal"]
    assert torch["totals"]["deviation"] == 1 and torch["failures"] == []
    assert torch["deviations"] == [{"implementation": "thirdparty.sdpa_is_causal", "claims": [CAUSAL],
                                    "reason": DEVIATION_REASON, "count": 1}]
    summary = rendered["html"].split('<section id="summary">')[1].split("</section>")[0]
    assert "Libraries nobody here wrote" in summary and html.escape(DEVIATION_REASON) in summary
    libraries = rendered["md"].split("## Libraries nobody here wrote")[1].split("\n## ")[0]
    assert "| torch | 2.13.0+cpu | 0 | 1 | 0 | 0 |" in libraries and "top-left" in libraries


def test_kill_matrix_counts_only_caught_mutants(rendered):
    kill = rendered["json"]["kill_matrix"]
    assert kill["claims"][EXACT] == {"mutants": ["mutant.no_rescale"], "killed": True}
    assert kill["claims"][CAUSAL]["killed"] is False  # the crash of mutant.top_left is no kill
    assert kill["mutants"]["mutant.finite_sentinel"]["killed"] is False
    assert kill["mutant_kill_rate"] == pytest.approx(1 / 3)
    assert "mutant.no_rescale" in rendered["html"] and "NOT KILLED" in rendered["html"]
    text = format_kill_matrix(kill)
    assert "NOT KILLED" in text and "Claims no mutant kills" in text


def test_html_is_self_contained_and_complete(rendered):
    page = rendered["html"]
    assert "<script" not in page.lower()
    assert all(ref.startswith(("data:", "#")) for ref in re.findall(r'(?:src|href)="([^"]*)"', page))
    assert "<math" in page  # the registry's LaTeX as MathML
    assert f"returns <code>{html.escape('o: q.shape[:3] + v.shape[3:], q.dtype, on q.device')}</code>" in page
    assert page.count("data:image/png;base64,") >= 3  # error vs block size, ratio bars, asv throughput
    assert "INCOMPLETE" not in page and "9cbabb7deadb" in page and "dirty" in page
    assert f"skipped because: <b>{html.escape(SKIP_REASON)}</b> (2 tests)" in page
    assert html.escape(DEVIATION_REASON) in page
    assert "siglip" in page  # every document is listed, with or without results
    assert "masked share" in page  # statistical bound table
    assert "h200-box" in page and "23 TFLOP/s" in page and "2.5 µs" in page  # the latest asv run wins


def test_markdown_summarises_per_document(rendered):
    md = rendered["md"]
    assert md.startswith("# eqspec 0.1.0 conformance: 4 passed, 1 failed, 2 skipped, 1 deviation, 1 error;")
    assert "kill rate" in md and "| claim | statement |" in md
    # a failing cell names how it failed, not the score of its passing rows
    assert "**FAIL 1/2: wrong value**" in md and "untested" in md
    assert f"2 skipped because: {SKIP_REASON}" in md.replace("\\", "")


def test_aborted_run_renders_from_jsonl_and_is_flagged(tmp_path):
    header = {k: v for k, v in results_file([]).items() if k != "rows"}
    header["run"].update(finished=None, complete=False)
    lines = [json.dumps({"header": header})] + [json.dumps(r) for r in SUITE_ROWS[:3]] + ['{"nodeid": "cut of']
    (tmp_path / "results.jsonl").write_text("\n".join(lines))
    out = tmp_path / "out"
    assert main(["--results", str(tmp_path / "results.json"), "--mutants", str(tmp_path / "none.json"),
                 "--asv-results", str(tmp_path / "no-asv"), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    data = json.loads((out / "conformance.json").read_text())
    assert "INCOMPLETE" in page and "INCOMPLETE" in (out / "conformance.md").read_text()
    assert "1 unreadable line" in page
    assert data["run"]["complete"] is False and data["totals"]["rows"] == 3
    assert "no asv results found; run <code>tox -e bench</code>" in page
    assert data["kill_matrix"] is None


def test_a_later_aborted_run_is_not_hidden_by_an_older_complete_one(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(results_file(SUITE_ROWS)))
    header = {k: v for k, v in results_file([], started="2026-11-29T08:00:00+00:00").items() if k != "rows"}
    (tmp_path / "results.jsonl").write_text(json.dumps({"header": header}) + "\n" + json.dumps(SUITE_ROWS[0]))
    out = tmp_path / "out"
    main(["--results", str(tmp_path / "results.json"), "--asv-results", str(tmp_path), "--out", str(out)])
    data = json.loads((out / "conformance.json").read_text())
    assert data["run"]["complete"] is False and data["totals"]["rows"] == 1


def test_exit_codes(tmp_path, capsys):
    assert main(["--results", str(tmp_path / "results.json"), "--out", str(tmp_path / "out")]) == 2
    assert "no results" in capsys.readouterr().err
    without_plots = [{k: v for k, v in r.items() if k not in ("metrics", "series")} for r in SUITE_ROWS]
    (tmp_path / "results.json").write_text(json.dumps(results_file(without_plots[3:6])))  # skips, a deviation
    args = ["--results", str(tmp_path / "results.json"), "--asv-results", str(tmp_path), "--out", str(tmp_path)]
    assert main(args + ["--fail-on-failure"]) == 0
    (tmp_path / "results.json").write_text(json.dumps(results_file(without_plots[:3])))
    assert main(args) == 0 and main(args + ["--fail-on-failure"]) == 1


def test_kill_matrix_cli(tmp_path, capsys):
    (tmp_path / "mutants.json").write_text(json.dumps(results_file(MUTANT_ROWS, mode="mutants")))
    assert kill_matrix_main(["--mutants", str(tmp_path / "mutants.json")]) == 1
    assert "mutant.finite_sentinel: NOT KILLED" in capsys.readouterr().out
    assert kill_matrix_main(["--mutants", str(tmp_path / "missing.json")]) == 2


def test_kill_matrix_ignores_controls_and_counts_rates():
    rows = MUTANT_ROWS[:1] + [{**MUTANT_ROWS[0], "implementation": "spec", "origin": "spec"}]
    matrix = kill_matrix(rows, [EXACT, CAUSAL])
    assert list(matrix["mutants"]) == ["mutant.no_rescale"]
    assert matrix["kill_rate"] == 0.5 and matrix["mutant_kill_rate"] == 1.0
    assert kill_matrix([], [])["kill_rate"] is None


def test_asv_reader_agrees_with_asv(tmp_path):
    write_asv(tmp_path)
    ours = load_asv_results(tmp_path)
    (bench,) = [b for b in ours.benchmarks if b.name == "attention.Forward.track_tflops"]
    assert bench.unit == "TFLOP/s" and bench.param_names == ["impl", "seqlen"]
    assert bench.values[("triton.flash", "2048")] == {"h200-box": None}  # NaN: the combination was skipped
    asv_results = pytest.importorskip("asv.results")
    theirs = asv_results.Results.load(str(tmp_path / "h200-box" / "bbbbbbbb-existing-py.json"))
    params = theirs.get_result_params("attention.Forward.track_tflops")
    values = theirs.get_result_value("attention.Forward.track_tflops", params)
    assert [bench.values[("torch.tiled", n)]["h200-box"] for n in ("1024", "2048", "4096")] == values[:3]


def test_header_names_the_hypothesis_profile_and_seed(rendered):
    page, md, data = rendered["html"], rendered["md"], rendered["json"]
    assert "<tr><td>hypothesis profile</td><td>ci</td></tr>" in page
    assert "<tr><td>hypothesis seed</td><td>derandomized</td></tr>" in page
    assert "hypothesis profile ci · seed derandomized" in md
    assert data["run"]["profile"] == "ci" and data["run"]["seed"] == "derandomized"


@pytest.mark.parametrize("args, profile, seed", [
    (["--hypothesis-profile=dev", "--hypothesis-seed=5"], "dev", "5"),
    (["--hypothesis-profile=ci", "--hypothesis-seed=5"], "ci", "derandomized (--hypothesis-seed=5 has no effect)"),
])
def test_results_record_the_profile_in_force(tmp_path, args, profile, seed):
    """The header is written before hypothesis' own plugin may have loaded --hypothesis-profile: it must still
    name that profile (a ci run once recorded "default")."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "EQSPEC_PROFILE"}
    out = tmp_path / "results.json"
    subprocess.run([sys.executable, "-m", "pytest", "property_tests/meta/test_budget.py", "--collect-only", "-q",
                    "-p", "no:cacheprovider", "--results", str(out), *args], cwd=root, env=env, check=True,
                   capture_output=True, timeout=300)
    run = json.loads(out.read_text())["run"]
    assert (run["profile"], run["seed"]) == (profile, seed)


def merge_inputs(tmp_path):
    """Two runs of one test node: b.json reruns torch.tiled's float16 row (now passing) and adds a GPU row."""
    a = results_file(SUITE_ROWS, command="python -m pytest property_tests", started="2026-11-28T12:00:00+00:00")
    rerun = {**SUITE_ROWS[2], "status": "passed", "metrics": budget(1.5, "float16")}
    for key in ("failure_kind", "message", "falsifying_example", "repro"):
        rerun.pop(key)
    gpu = {**SUITE_ROWS[1], "nodeid": SUITE_ROWS[1]["nodeid"].replace("-cpu-", "-cuda-"), "device": "cuda"}
    b = results_file([rerun, gpu], command="python -m pytest property_tests --device cuda",
                     started="2026-11-29T08:00:00+00:00", profile="dev", seed="random")
    b["environment"] = {**ENVIRONMENT, "gpu": "NVIDIA H200", "cuda": "12.8", "torch": "2.11.0"}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    return [str(tmp_path / "a.json"), str(tmp_path / "b.json")]


def test_results_files_merge_into_one_report(tmp_path, capsys):
    a, b = merge_inputs(tmp_path)
    out = tmp_path / "out"
    assert main(["--results", a, "--results", b, "--asv-results", str(tmp_path), "--out", str(out)]) == 0
    assert "merged: a.json (8 of its 9 rows shown); b.json (2 of its 2 rows shown)" in capsys.readouterr().out
    data = json.loads((out / "conformance.json").read_text())
    page, md = (out / "index.html").read_text(), (out / "conformance.md").read_text()
    assert data["totals"]["rows"] == len(SUITE_ROWS) + 1  # the rerun replaced a row, the GPU row is new
    assert data["totals"]["failed"] == 0  # b.json's rerun of the failing row wins
    assert [f["implementation"] for f in data["failures"]] == ["user.mine"]
    tiled = data["documents"][DOC]["claims"][EXACT]["implementations"]["torch.tiled"]
    assert (tiled["passed"], tiled["failed"]) == (3, 0)
    assert [s["label"] for s in data["sources"]] == ["a.json", "b.json"]
    assert data["sources"][1]["replaced"] == {"a.json": 1} and data["source"] == "a.json + b.json"
    assert data["run"]["merged"] == ["a.json", "b.json"]
    assert data["run"]["profile"] == "differs between the merged files"  # ci in a.json, dev in b.json
    assert data["environment"]["python"] == "3.11.7"  # where the files agree, the value itself
    assert data["environment"]["gpu"] == "differs between the merged files"
    note = "b.json replaced 1 row of a.json (the same test node, implementation, device and dtype"
    assert any(n.startswith(note) for n in data["notes"])
    for text in (page, md):
        assert "a.json: 8 of its 9 rows shown; profile ci, seed derandomized" in text
        assert "b.json: 2 of its 2 rows shown; profile dev, seed random; torch 2.11.0, NVIDIA H200, CUDA 12.8" in text
        assert note in text
    assert "from <code>a.json</code> + <code>b.json</code>" in page


def test_merge_keeps_the_order_of_the_files(tmp_path):
    """The later file wins: the same two files the other way round keep a.json's failing row."""
    a, b = merge_inputs(tmp_path)
    out = tmp_path / "out"
    main(["--results", b, "--results", a, "--asv-results", str(tmp_path), "--out", str(out)])
    data = json.loads((out / "conformance.json").read_text())
    assert data["totals"]["failed"] == 1 and data["sources"][1]["replaced"] == {"b.json": 1}
    (failure,) = [f for f in data["failures"] if f["implementation"] == "torch.tiled"]
    assert failure["repro"] == REPRO


def test_a_missing_merge_input_is_an_error(tmp_path, capsys):
    a, _ = merge_inputs(tmp_path)
    assert main(["--results", a, "--results", str(tmp_path / "gone.json"), "--out", str(tmp_path / "out")]) == 2
    assert "gone.json" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_repro_command_runs_as_printed():
    """With a user's --impl, the PYTHONPATH that made its module importable is part of the command."""
    from reports.repro import repro_command

    command = repro_command("property_tests/test_dpo.py::test_x[a b]", profile="ci", impl_args=["dpo.dpo_loss=m:f"],
                            flags=["--mutants"], seed=3, pythonpath="/my dir")
    assert command == ("PYTHONPATH='/my dir' python -m pytest 'property_tests/test_dpo.py::test_x[a b]' "
                       "--hypothesis-profile=ci --impl dpo.dpo_loss=m:f --mutants --hypothesis-seed=3")
