"""The rough edges of issue 22 (a new user's tour of the per-run outputs), each pinned by
a test that fails if it comes back."""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.audit.reader import RunReport, RunRow
from pipeline.config import JobConfig
from pipeline.explain import Explanation, Finding, spreadsheet_safe, write_csv
from pipeline.job import run_job
from pipeline.outcome import RunOutcome
from pipeline.publish import history_page, publish_outputs
from pipeline.reporting.htmlpage import render_html
from pipeline.reporting.text import format_runs
from pipeline.resume import resume_run
from pipeline.stages import StageClock
from pipeline.summary import check_lines, format_summary
from recon import checks
from recon.values import AMOUNT, ReconciliationResult, WorkerMetrics
from tests.reference import detail, write_input

pytestmark = pytest.mark.timeout(120)
T0 = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)


def run_row(job: str = "daily_transactions", status: str = "SUCCEEDED", exit_code: int = 0,
            **more: object) -> RunRow:
    return RunRow(f"20261203T020000-{job[:8]}", job, status, exit_code, T0,
                  T0 + timedelta(seconds=3), records_read=1_000, **more)  # type: ignore[arg-type]


def test_runs_columns_line_up_whatever_the_job_names_length() -> None:
    listing = format_runs([run_row("daily_transactions_ebcdic"), run_row("short"),
                           run_row("customer_balances", "FAILED_RECON", 1)])
    lines = listing.splitlines()
    for heading in ("status", "started (UTC)"):  # left-aligned: they start together
        at = lines[0].index(heading)
        assert all(line[at - 1] == " " and line[at] != " " for line in lines[1:]), listing
    end = lines[0].index("exit") + len("exit")  # figures: they end together
    assert all(line[end - 1] != " " and line[end] == " " for line in lines[1:]), listing
    assert {len(line) for line in lines} == {len(lines[0])}, listing


def test_html_of_a_failed_run_leaves_an_unevaluated_amount_blank_as_the_cli_does() -> None:
    results = checks.merge_skipped(1_000)
    html = render_html(RunReport(run_row(status="FAILED_RECON", exit_code=1), 2, results, []))
    row = re.search(r"<tr class=\"fail\"><td>staging_to_final_amount</td>(.*?)</tr>", html)
    assert row is not None
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))
    cli = next(x for x in check_lines(results, 2) if x.startswith("staging_to_final_amount"))
    assert cells[:3] == ["", "-", "-"] and cli.split()[1:3] == ["-", "-"]
    assert "?" not in cells


def test_html_amounts_are_grouped_in_thousands_as_counts_are() -> None:
    amount = ReconciliationResult(checks.SOURCE_TRAILER_AMOUNT, 5, 5, True,
                                  expected_amount=-123_456_789_012, actual_amount=-123_456_789_012,
                                  kind=AMOUNT)
    worker = WorkerMetrics(0, "processor", 12_345, 0, T0, T0 + timedelta(seconds=1),
                           amount=987_654_321, state="done", exit_code=0)
    html = render_html(RunReport(run_row(), 2, [amount], [worker]))
    assert html.count(">-1,234,567,890.12<") == 2 and ">9,876,543.21<" in html
    assert "-1234567890.12" not in html and "9876543.21" not in html


def test_html_of_a_run_no_worker_started_has_no_axis_and_no_empty_table() -> None:
    run = run_row(status="FAILED_INPUT", exit_code=2, stages={"plan": 80})
    html = render_html(RunReport(run, 2, [], []))
    assert "<svg" not in html and 'id="workers"' not in html
    assert "No worker started: the run ended before its load (plan 0.08 s)" in html


def outcome(exit_code: int, tmp_path: Path) -> RunOutcome:
    return RunOutcome("r1", "daily_transactions", "SUCCEEDED" if exit_code == 0
                      else "FAILED_RECON", exit_code, "m", tmp_path / "in.dat", "sqlite://",
                      tmp_path, duplicates_collapsed=100)


def test_duplicates_are_collapsed_only_by_a_merge_that_committed(tmp_path: Path) -> None:
    failed = format_summary(outcome(1, tmp_path), 2)
    assert "collapsed: 100" not in failed
    assert "duplicate keys: 100 repeated in the input; nothing collapsed" in failed
    assert "duplicate keys collapsed: 100 (the later record won)" in \
        format_summary(outcome(0, tmp_path), 2)


def test_a_no_op_resume_keeps_the_runs_summary(tmp_path: Path, job_config: JobConfig) -> None:
    config = job_config.with_overrides(input_path=write_input(
        tmp_path / "in.dat", [detail(f"K{i}", i) for i in range(200)]))
    done = run_job(config)
    assert done.exit_code == 0
    first = publish_outputs(done, config, 1.0)
    summary = done.run_dir / "summary.txt"
    assert summary.read_text(encoding="utf-8") == first.summary + "\n"
    again = resume_run(config, done.run_id)
    assert again.exit_code == 0 and again.changed_nothing
    shown = publish_outputs(again, config, 0.1)
    assert "nothing to resume" in shown.summary  # still told on stdout
    assert summary.read_text(encoding="utf-8") == first.summary + "\n"
    # and the job's history page was refreshed beside the run folders, linking the run
    page = history_page(config).read_text(encoding="utf-8")
    assert f'href="{done.run_id}/report.html"' in page
    back = (done.run_dir / "report.html").read_text(encoding="utf-8")
    assert f'href="../{history_page(config).name}"' in back


def test_stage_log_lines_close_the_merge_before_the_audit_starts(
        caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter(range(100))
    clock = StageClock(clock=lambda: float(next(ticks)))
    with caplog.at_level(logging.INFO, logger="pipeline.stages"):
        with clock.stage("merge"), clock.stage("audit"):
            pass
    said = [re.sub(r" in .*", "", r.getMessage()) for r in caplog.records]
    assert said == ["stage merge started", "stage merge done", "stage audit started",
                    "stage audit done"]
    assert clock.milliseconds() == {"merge": 2000, "audit": 1000}  # audit's time is its own


@pytest.mark.parametrize("cell", ["=cmd|calc!A1", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_explain_csv_neutralises_formulas(tmp_path: Path, cell: str) -> None:
    report = RunReport(run_row(status="FAILED_RECON", exit_code=1), 2, [], [])
    found = Explanation(report, 2, Counter({"k": 1}),
                        [Finding("final", "k", 7, cell, -12345, None)])
    write_csv(tmp_path / "x.csv", found)
    with open(tmp_path / "x.csv", newline="", encoding="utf-8") as f:
        row = list(csv.reader(f))[1]
    assert row[4] == "'" + cell
    assert row[5] == "-123.45"  # a negative amount is a number, not a formula


def test_plain_text_and_numbers_are_left_alone() -> None:
    assert [spreadsheet_safe(c) for c in ("K1", "-5", "12.50", "", "a=b")] == \
        ["K1", "-5", "12.50", "", "a=b"]
