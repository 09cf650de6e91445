"""The one-screen summary an operator reads at 3 a.m.: what ran, every check, every worker.

``check_lines`` and ``worker_lines`` also print the report of a past run
(``pipeline report``), so a run and its report read the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path

from pipeline.db.engine import safe_url
from pipeline.money import format_minor
from pipeline.outcome import RunOutcome
from pipeline.rejects import reason_counts, reason_lines
from recon.checks import warning_of
from recon.values import ReconciliationResult, WorkerMetrics


def format_summary(outcome: RunOutcome, scale: int, report: Path | None = None) -> str:
    lines = [
        f"run      {outcome.run_id}",
        f"job      {outcome.job_name}",
        f"input    {outcome.input_path}",
        *reading_lines(outcome.code_page, outcome.copybook_sha256),
        *instance_lines(outcome.business_date, outcome.overrides),
        f"database {safe_url(outcome.database)}",
        f"status   {outcome.status} (exit {outcome.exit_code})",
        *stage_lines(outcome.stages),
    ]
    lines += check_lines(outcome.results, scale)
    lines += worker_lines(outcome.workers, scale)
    lines.append("")
    if outcome.reject_file is not None and outcome.rejects:
        lines.append(f"rejects  {outcome.rejects:,} -> {outcome.reject_file}")
        lines += reason_lines(reason_counts(outcome.reject_file))
    lines += duplicate_lines(outcome)
    lines += warning_lines(outcome.results)
    if report is not None:
        lines.append(f"report   {report}")
    lines.append(("OK: " if outcome.exit_code == 0 else "FAILED: ") + outcome.message)
    return "\n".join(lines)


def reading_lines(code_page: str | None, copybook_sha256: str | None) -> list[str]:
    """How the input was read: a wrong EBCDIC code page balances, so it is always shown."""
    lines = [] if code_page is None else [f"codepage {code_page}"]
    if copybook_sha256:
        lines.append(f"copybook sha256 {copybook_sha256}")
    return lines


def duplicate_lines(outcome: RunOutcome) -> list[str]:
    """Keys repeated in the input: collapsed only if the MERGE committed (exit 0); a run
    that failed merged nothing, so nothing was collapsed, whatever staging holds."""
    n = outcome.duplicates_collapsed
    if not n:
        return []
    if outcome.exit_code == 0:
        return [f"duplicate keys collapsed: {n:,} (the later record won)"]
    return [f"duplicate keys: {n:,} repeated in the input; nothing collapsed, no MERGE "
            "committed (the later record will win)"]


def instance_lines(business_date: date | None, overrides: Sequence[str]) -> list[str]:
    """The job instance: the header's business date and the refusals overridden."""
    lines = [] if business_date is None else [f"date     {business_date} (business date)"]
    if overrides:
        lines.append(f"override {', '.join(overrides)} (recorded in BATCH_RUN)")
    return lines


def warning_lines(results: Sequence[ReconciliationResult]) -> list[str]:
    """``warning  volume_vs_history: ...``: checks that passed but want a look."""
    return [f"warning  {r.check_name}: {warning}" for r in results
            if (warning := warning_of(r))]


def stage_lines(stages: Mapping[str, int]) -> list[str]:
    """``stages   plan 0.1 s, load 12.0 s, checks 0.4 s, merge 3.1 s, audit 0.1 s``."""
    if not stages:
        return []
    return ["stages   " + ", ".join(f"{name} {ms / 1000:.1f} s" for name, ms in stages.items())]


def check_lines(results: Sequence[ReconciliationResult], scale: int) -> list[str]:
    """A blank line, a heading and one line per check (plus its detail), or nothing."""
    if not results:
        return []
    # as wide as the longest name: a detail type's checks are "<type>:<check>"
    width = max(29, *(len(r.check_name) for r in results))
    lines = ["", f"{'check':<{width}} {'expected':>20} {'actual':>20} {'diff':>14}  ok"]
    for r in results:
        lines.append(_check_line(r, scale, width))
        if r.detail:
            lines.append(f"    {r.detail}")
    return lines


def worker_lines(workers: Sequence[WorkerMetrics], scale: int) -> list[str]:
    """A blank line, a heading and one line per worker, or nothing."""
    if not workers:
        return []
    lines = ["", f"{'worker':>6} {'type':<9} {'records':>12} {'errors':>8} "
                 f"{'amount':>20} {'state':<8} exit"]
    for w in workers:
        lines.append(f"{w.worker_id:>6} {w.worker_type:<9} {w.records_processed:>12,} "
                     f"{w.errors_count:>8,} {format_minor(w.amount, scale):>20} "
                     f"{w.state:<8} {'' if w.exit_code is None else w.exit_code}")
    return lines


def _check_line(r: ReconciliationResult, scale: int, width: int) -> str:
    exp, act, diff = check_figures(r, scale, format_minor)
    return f"{r.check_name:<{width}} {exp:>20} {act:>20} {diff:>14}  {'Y' if r.passed else 'N'}"


def check_figures(r: ReconciliationResult, scale: int,
                  money: Callable[[int, int], str]) -> tuple[str, str, str]:
    """A check's expected, actual and difference as every report shows them (``money``
    formats an amount): a check that never ran has no actual figure and no difference
    ("-": a difference there would read like lost data), an amount nobody could give
    is "?" (not provable) where the check ran and blank where it did not."""
    def amount(value: int | None, unknown: str = "?") -> str:
        return unknown if value is None else money(value, scale)

    if not r.evaluated:
        exp = (amount(r.expected_amount, "") if r.is_amount_check or r.expected_amount
               is not None else f"{r.expected_count:,}")
        return exp, "-", "-"
    if r.is_amount_check:
        return (amount(r.expected_amount), amount(r.actual_amount),
                amount(r.amount_discrepancy))
    return f"{r.expected_count:,}", f"{r.actual_count:,}", f"{r.discrepancy:,}"
