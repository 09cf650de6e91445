"""A job's runs night after night, read from BATCH_RUN (and RECON_AUDIT, RECON_WORKER_AUDIT):
the figures an operator compares in the morning, each run held against the job's usual
band (``recon.trends``), as text and JSON; ``historypage`` draws the same as HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine

from pipeline.audit.reader import RunRow, list_runs, shown_scale
from pipeline.audit.schema import from_audit
from pipeline.money import format_grouped, format_minor
from pipeline.reporting.jsondoc import run_document
from pipeline.reporting.text import format_duration, format_exit, format_table
from recon.trends import DURATION, RECORDS, REJECTS, Judgement, NightFigures, judge_nights
from recon.values import SUCCEEDED, VolumeRule

MARK = "!"  # after a figure outside the job's usual band
# what the text, the JSON and the page call each judged figure
ANOMALY_NAMES = {RECORDS: "records", REJECTS: "rejects", DURATION: "duration"}


@dataclass(frozen=True)
class Night:
    """One run of the job and how it compares with the runs before it."""

    run: RunRow
    amount_total: int | None  # Σ amounts read, minor units at the history's scale
    judgement: Judgement

    @property
    def night(self) -> date:
        """The business date the run loaded, else the day it started (UTC)."""
        return self.run.business_date or self.run.start_ts.date()

    @property
    def reject_rate(self) -> float | None:
        return _figures(self.run).reject_rate

    @property
    def anomalies(self) -> list[str]:
        return [ANOMALY_NAMES[a] for a in self.judgement.anomalies]

    @property
    def longest_stage(self) -> tuple[str, int] | None:
        stages = self.run.stages
        return max(stages.items(), key=lambda s: s[1]) if stages else None


@dataclass(frozen=True)
class History:
    job_name: str
    scale: int
    rule: VolumeRule
    nights: list[Night]  # newest first


def _figures(run: RunRow) -> NightFigures:
    return NightFigures(run.status == SUCCEEDED, run.records_read, run.rejected,
                        run.duration_s)


def load_history(engine: Engine, job_name: str, nights: int, rule: VolumeRule,
                 scale: int | None = None) -> History:
    """The job's last ``nights`` runs, each judged against the SUCCEEDED runs before it
    (for the oldest shown, read from before the window). ``scale``: the job's amount
    scale, when its config is at hand."""
    shown = list_runs(engine, nights, job_name)
    earlier = list_runs(engine, rule.history_runs, job_name,
                        succeeded_before=shown[-1].start_ts) if shown else []
    ordered = [*reversed(earlier), *reversed(shown)]  # oldest first, as they ran
    judged = judge_nights([_figures(r) for r in ordered], rule)[len(earlier):]
    shown_at = shown_scale([r.amount_read for r in shown], scale)
    return History(job_name, shown_at, rule, [
        Night(run, from_audit(run.amount_read, shown_at), judgement)
        for run, judgement in zip(reversed(shown), judged, strict=True)][::-1])


def grouped_amount(minor: int | None, scale: int) -> str:
    """An exact amount with thousands separators (``-1,234,567.89``), or "-"."""
    return "-" if minor is None else format_grouped(minor, scale)


def format_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"


def format_history(history: History) -> str:
    """One line per run, newest first; ``!`` marks a figure outside the usual band."""
    if not history.nights:
        return f"no runs of job {history.job_name} recorded"
    rows = [_text_row(n, history.scale) for n in history.nights]
    lines = [f"job {history.job_name}: {len(rows)} run(s), newest first", "",
             *format_table(["date", "status", "exit", "read ", "rejected", "rate ", "merged",
                            "amount total", "took ", "longest"], rows, left={0, 1, 9})]
    rule = history.rule
    lines += ["", f"{MARK} outside the usual band: +/-{rule.band:.0%} of the median of the "
                  f"last {rule.history_runs} succeeded runs before it",
              f"  (judged once {rule.min_runs} exist; rejects and duration on the high side "
              "only)"]
    return "\n".join(lines)


def _text_row(n: Night, scale: int) -> list[str]:
    run, outside = n.run, set(n.judgement.anomalies)

    def marked(text: str, figure: str) -> str:
        return text + (MARK if figure in outside else " ")

    longest = n.longest_stage
    return [str(n.night), run.status, format_exit(run.exit_code),
            marked(format_count(run.records_read), RECORDS), format_count(run.rejected),
            marked(format_rate(n.reject_rate), REJECTS), format_count(run.keys_merged),
            grouped_amount(n.amount_total, scale),
            marked(format_duration(run.duration_s), DURATION),
            "-" if longest is None else f"{longest[0]} {format_duration(longest[1] / 1000)}"]


def format_count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def history_document(history: History,
                     run_page: Callable[[str], str] | None = None) -> dict[str, Any]:
    """For monitoring: the rule, and each run with its figures, bands and ``anomalies``
    (empty on a usual night). Amounts are exact decimal strings."""
    rule = history.rule
    return {
        "job_name": history.job_name, "amount_scale": history.scale,
        "band": {"history_runs": rule.history_runs, "band": rule.band,
                 "min_runs": rule.min_runs},
        "runs": [_night_document(n, history.scale, run_page) for n in history.nights],
    }


def _night_document(n: Night, scale: int,
                    run_page: Callable[[str], str] | None) -> dict[str, Any]:
    longest = n.longest_stage
    document = {
        **run_document(n.run), "night": n.night.isoformat(),
        "records_rejected": n.run.rejected,
        "reject_rate": None if n.reject_rate is None else round(n.reject_rate, 6),
        "keys_merged": n.run.keys_merged,
        "amount_total": None if n.amount_total is None else format_minor(n.amount_total, scale),
        "longest_stage": None if longest is None else {"stage": longest[0],
                                                       "seconds": longest[1] / 1000},
        "anomalies": n.anomalies,
        "bands": {ANOMALY_NAMES[name]: {"median": b.median, "low": b.low, "high": b.high,
                                        "runs": b.runs}
                  for name, b in n.judgement.bands.items()},
    }
    if run_page is not None:
        document["report"] = run_page(n.run.run_id)
    return document
