"""The machine-readable report: exact amounts as decimal strings, never floats.

A JSON number is a double in most readers; an amount beyond 2**53 minor units would lose
cents there, so every amount travels as text (``"-123.45"``) with the scale beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pipeline.audit.reader import RunReport, RunRow
from pipeline.money import format_minor
from recon.values import ReconciliationResult, WorkerMetrics


def report_document(report: RunReport, rejects: list[tuple[str, int]] | None = None,
                    explanation: dict[str, Any] | None = None) -> dict[str, Any]:
    """``rejects``: counts per reason; ``explanation``: the records behind failed checks."""
    document = {
        "run": run_document(report.run),
        "amount_scale": report.scale,
        "checks_failed": report.checks_failed,
        "checks": [_check(r, report.scale) for r in report.results],
        # the checks of attempts a `run --resume` superseded (RECON_AUDIT keeps them)
        "earlier_checks": [_check(r, report.scale) for r in report.earlier_results],
        "workers": [_worker(w, report.scale) for w in report.workers],
        "rejects_by_reason": [{"reason": reason, "records": count}
                              for reason, count in rejects or []],
    }
    if explanation is not None:
        document["explain"] = explanation
    return document


def runs_document(runs: Sequence[RunRow]) -> list[dict[str, Any]]:
    return [run_document(r) for r in runs]


def run_document(run: RunRow) -> dict[str, Any]:
    duration = run.duration_s
    return {
        "run_id": run.run_id, "job_name": run.job_name, "status": run.status,
        "exit_code": run.exit_code, "start_ts": _iso(run.start_ts), "end_ts": _iso(run.end_ts),
        "duration_seconds": None if duration is None else round(duration, 3),
        "records_read": run.records_read, "input_path": run.input_path,
        "input_sha256": run.input_sha256, "message": run.message,
        "code_page": run.code_page, "copybook_sha256": run.copybook_sha256,
        # the job instance: the header's business date, the identity refusals overridden
        "business_date": None if run.business_date is None else run.business_date.isoformat(),
        "rerun": "--rerun" in run.overrides, "allow_older": "--allow-older" in run.overrides,
        # where the run's time went: plan, load, checks, merge, audit (absent: not reached)
        "stage_seconds": {name: ms / 1000 for name, ms in run.stages.items()},
    }


def _check(r: ReconciliationResult, scale: int) -> dict[str, Any]:
    return {
        "check_name": r.check_name, "expected": r.expected_count,
        "actual": r.actual_count if r.evaluated else None,
        "discrepancy": r.discrepancy if r.evaluated else None, "passed": r.passed,
        "evaluated": r.evaluated, "detail": r.detail,
        "expected_amount": _amount(r.expected_amount, scale),
        "actual_amount": _amount(r.actual_amount, scale),
        "amount_discrepancy": _amount(r.amount_discrepancy, scale),
    }


def _worker(w: WorkerMetrics, scale: int) -> dict[str, Any]:
    return {
        "worker_id": w.worker_id, "worker_type": w.worker_type,
        "records_processed": w.records_processed, "errors_count": w.errors_count,
        "amount": _amount(w.amount, scale), "start_ts": _iso(w.start_time),
        "end_ts": _iso(w.end_time), "state": w.state, "exit_code": w.exit_code, "pid": w.pid,
    }


def _amount(minor: int | None, scale: int) -> str | None:
    return None if minor is None else format_minor(minor, scale)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
