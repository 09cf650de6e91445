"""A run's outputs for people and monitors, written in one place after ``run_job``.

``run_job`` itself commits the audit (BATCH_RUN, RECON_AUDIT, RECON_WORKER_AUDIT) and
files the rejects (``rejects.txt``); ``publish_outputs`` adds the rest, in the run's
folder: ``report.html`` (read back from the audit just committed, so it shows what the
database holds), the job's history page beside the run folders
(``runs/history-<job>.html``), the Prometheus textfile when the job names one, and
``summary.txt``.
The CLI calls it after every run, refused and failed ones too; a program calling
``run_job`` calls it the same way to get the same files.

Each output is best effort: one that cannot be written is a warning in the log, never a
change of the run's result or exit code.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import JobConfig
from pipeline.errors import PipelineError
from pipeline.logs import run_context
from pipeline.outcome import RunOutcome

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from pipeline.audit.reader import RunReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    summary: str  # the text of summary.txt, which the CLI also prints
    report: Path | None  # report.html, or None when there is no audit or it was not written
    prometheus: Path | None  # the textfile written, or None
    history: Path | None = None  # the job's history page, refreshed, or None


def publish_outputs(outcome: RunOutcome, config: JobConfig, duration_s: float) -> Published:
    """Write report.html, the Prometheus textfile and summary.txt for a finished run.

    ``duration_s``: the run's wall-clock seconds as the caller measured them around
    ``run_job`` (the Prometheus file reports it).
    """
    from pipeline.summary import format_summary

    with suppress(OSError):  # every run gets its folder, refused and failed ones too
        outcome.run_dir.mkdir(parents=True, exist_ok=True)
    prometheus = None
    with run_context(outcome.run_id):
        report = write_html_report(config, outcome)
        history = write_history(config, outcome)
        # a resume that changed nothing is not the job's last run: its metrics stand
        textfile = None if outcome.changed_nothing else config.prometheus_textfile
        if textfile is not None and write_prometheus(textfile, outcome, duration_s):
            prometheus = textfile
    text = format_summary(outcome, config.amount_field.scale, report=report)
    write_summary(outcome, text)
    return Published(text, report, prometheus, history)


def write_summary(outcome: RunOutcome, text: str) -> None:
    """summary.txt in the run's folder; a resume that found nothing to do keeps the
    summary of the run that did the work (the text still goes to stdout)."""
    target = outcome.run_dir / "summary.txt"
    if outcome.changed_nothing and target.exists():
        log.info("%s kept: the resume changed nothing", target)
        return
    try:
        target.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("summary.txt not written: %s", exc)


def write_html_report(config: JobConfig, outcome: RunOutcome) -> Path | None:
    """report.html beside the run's other output, read back from the audit just committed."""
    from pipeline.audit.reader import load_report, open_audit
    from pipeline.reporting.htmlpage import render_html

    if not outcome.recorded:
        return None  # the run never reached the database: no audit to show
    target = outcome.run_dir / "report.html"
    try:
        with open_audit(config.database_url) as engine:
            report = load_report(engine, outcome.run_id, job_scales(config))
            extras = report_extras(config, engine, report)
        history = f"../{history_page(config).name}"  # refreshed right after this page
        target.write_text(render_html(report, *extras, history=history), encoding="utf-8")
    except (PipelineError, OSError) as exc:
        log.warning("report.html not written: %s", exc)
        return None
    # a failed run's last log line must stay the one that says why; stdout names the report
    log.log(logging.INFO if outcome.exit_code == 0 else logging.DEBUG,
            "report written: %s", target)
    return target


def history_page(config: JobConfig) -> Path:
    """The job's history page, beside the run folders it links to."""
    return config.output_dir / "runs" / f"history-{config.name}.html"


def write_history(config: JobConfig, outcome: RunOutcome,
                  nights: int = 90) -> Path | None:
    """Refresh the job's history page with the run just recorded (the last ``nights``
    runs: about a quarter of nightly runs, well under a megabyte)."""
    from pipeline.audit.reader import open_audit
    from pipeline.reporting.history import load_history
    from pipeline.reporting.historypage import write_history_page

    if not outcome.recorded:
        return None  # nothing new in the audit: the page already shows what it holds
    target = history_page(config)
    try:
        with open_audit(config.database_url) as engine:
            found = load_history(engine, config.name, nights, config.volume,
                                 config.amount_field.scale)
        write_history_page(target, found, config.output_dir)
    except (PipelineError, OSError) as exc:
        log.warning("history page not written: %s", exc)
        return None
    log.debug("history page written: %s", target)
    return target


def write_prometheus(path: Path, outcome: RunOutcome, duration_s: float) -> bool:
    """The node_exporter textfile of the run; False (and a warning) if it cannot be written."""
    from pipeline.metrics.prometheus import write_run_metrics

    try:
        write_run_metrics(path, outcome, duration_s)
    except OSError as exc:
        # monitoring must hear about it, but the run's own result stands
        log.warning("prometheus textfile %s not written: %s", path, exc)
        return False
    log.info("prometheus metrics written: %s", path)
    return True


def report_extras(config: JobConfig, engine: Engine,
                  report: RunReport) -> tuple[list[tuple[str, int]], dict[str, Any] | None]:
    """Rejects per reason and, for a failed check, the records behind it (read-only: a
    rolled-back MERGE is not replayed here; `pipeline explain` does that)."""
    from pipeline.explain import explain_run, explanation_document
    from pipeline.rejects import reason_counts

    if report.run.job_name != config.name:
        return [], None  # another job's run: its folders and tables are not this config's
    rejects = reason_counts(config.output_dir / "runs" / report.run.run_id / "rejects.txt")
    if not report.checks_failed:
        return rejects, None
    try:
        found = explain_run(config, engine, report.run.run_id, replay=False)
    except PipelineError as exc:
        log.warning("records behind the failed checks not listed: %s", exc)
        return rejects, None
    return rejects, explanation_document(found)


def job_scales(config: JobConfig) -> dict[str, int]:
    # Only a job's own config knows its amount scale; a run of another job is shown at the
    # audit's exact scale rather than a guessed one.
    return {config.name: config.amount_field.scale}
