"""Plain-text report of one run and the list of recent runs, for a terminal or a mail."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pipeline.audit.reader import RunReport, RunRow
from pipeline.summary import (
    check_lines,
    instance_lines,
    reading_lines,
    stage_lines,
    warning_lines,
    worker_lines,
)


def format_report(report: RunReport) -> str:
    run = report.run
    lines = [
        f"run      {run.run_id}",
        f"job      {run.job_name}",
        f"input    {run.input_path}",
        f"sha256   {run.input_sha256 or '-'}",
        *reading_lines(run.code_page, run.copybook_sha256),
        *instance_lines(run.business_date, run.overrides),
        f"started  {format_ts(run.start_ts)}",
        f"ended    {format_ts(run.end_ts)}  ({format_duration(run.duration_s)})",
        f"status   {run.status} (exit {format_exit(run.exit_code)})",
        *stage_lines(run.stages),
    ]
    lines += check_lines(report.results, report.scale)
    if report.earlier_results:  # superseded by `run --resume`, still held: still shown
        lines += ["", "earlier  checks of the attempt(s) before `run --resume`, superseded"]
        lines += check_lines(report.earlier_results, report.scale)[1:]
    lines += worker_lines(report.workers, report.scale)
    warnings = warning_lines(report.results)
    lines += ["", *warnings] if warnings else []
    lines += ["", f"message  {run.message}" if run.message else "message  -"]
    return "\n".join(lines)


def format_runs(runs: Sequence[RunRow]) -> str:
    if not runs:
        return "no runs recorded"
    lines = [f"{'run id':<25} {'job':<20} {'status':<15} {'exit':>4} {'started (UTC)':<19} "
             f"{'duration':>9} {'records':>12}"]
    for r in runs:
        records = "-" if r.records_read is None else f"{r.records_read:,}"
        started, took = format_ts(r.start_ts), format_duration(r.duration_s)
        lines.append(f"{r.run_id:<25} {r.job_name:<20} {r.status:<15} "
                     f"{format_exit(r.exit_code):>4} {started:<19} {took:>9} {records:>12}")
    return "\n".join(lines)


def format_ts(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:04.1f}s" if minutes else f"{secs:.1f}s"


def format_exit(code: int | None) -> str:
    return "-" if code is None else str(code)
