"""Plain-text report of one run and the list of recent runs, for a terminal or a mail."""

from __future__ import annotations

from collections.abc import Collection, Sequence
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
    rows = [[r.run_id, r.job_name, r.status, format_exit(r.exit_code), format_ts(r.start_ts),
             format_duration(r.duration_s),
             "-" if r.records_read is None else f"{r.records_read:,}"] for r in runs]
    return "\n".join(format_table(["run id", "job", "status", "exit", "started (UTC)",
                                   "duration", "records"], rows, left={0, 1, 2, 4}))


def format_table(headings: Sequence[str], rows: Sequence[Sequence[str]],
                 left: Collection[int] = ()) -> list[str]:
    """A heading line and one line per row, each column as wide as its widest cell (a job
    name of 25 characters widens its column rather than shifting the ones after it);
    columns in ``left`` are left-aligned, the others (figures) right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headings, *rows,
                                                                      strict=True)]

    def line(cells: Sequence[str]) -> str:
        return " ".join(c.ljust(w) if i in left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headings), *(line(r) for r in rows)]


def format_ts(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:04.1f}s" if minutes else f"{secs:.1f}s"


def format_exit(code: int | None) -> str:
    return "-" if code is None else str(code)
