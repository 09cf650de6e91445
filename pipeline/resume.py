"""`run --resume RUN_ID`: finish a run from its staging rows, without its input file.

A run whose staging load completed stored its control totals in BATCH_RUN (the trailer's
count and amount, the metrics bus's totals: ``RunRepository.record_load``). Resuming redoes
what came after the load from those totals: the checks before the MERGE (which prove the
staged rows still match the load, count and amount), the MERGE, the checks after it and
the audit. The file is never read again (but for a [[details]] run, whose figures per
detail type BATCH_RUN does not hold: pipeline.resume_types), and a run is never merged
twice: a run whose audit says SUCCEEDED is left alone, and one whose MERGE committed
without its audit (FINAL rows carry its run id) gets its audit finished without a second
MERGE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from pipeline import interrupts
from pipeline.audit import history
from pipeline.audit.runs import RunRepository, conclude
from pipeline.audit.schema import from_audit, utc_now
from pipeline.audit.writer import AuditWriter
from pipeline.column_proof import InputRows
from pipeline.config import JobConfig
from pipeline.db.bulk import loader_for
from pipeline.db.engine import Timeouts, database_errors
from pipeline.db.lock import HeldLock, job_lock
from pipeline.db.tables import JobTables, job_tables
from pipeline.db.watchdog import watching
from pipeline.errors import ConfigError
from pipeline.logs import run_context
from pipeline.outcome import RunOutcome
from pipeline.reconcile import ReconciliationService
from recon import checks
from recon.checks import failure_summary
from recon.values import (
    SUCCEEDED,
    AggregatedMetrics,
    ReconciliationResult,
    TrailerTotals,
)

log = logging.getLogger(__name__)


class ResumeRefused(ConfigError):
    """The run cannot be resumed (never loaded, another job's, purged...): exit 2."""


@dataclass(frozen=True)
class LoadTotals:
    """What the run stored once its staging load completed."""

    trailer: TrailerTotals
    metrics: AggregatedMetrics


def resume_run(config: JobConfig, run_id: str) -> RunOutcome:
    """Finish ``run_id`` from staging. Raises ResumeRefused when it cannot be resumed."""
    from pipeline.audit.reader import open_audit  # refuses a database no job ran on

    tables = job_tables(config)
    # the server's own bounds first, as a run's (a lock held elsewhere, a statement
    # that runs on), and the watchdog past them: a silent server cannot hold it either
    bounds = Timeouts(config.lock_timeout, config.statement_timeout)
    with run_context(run_id), open_audit(config.database_url, bounds) as engine, \
            watching(engine, config.statement_timeout):
        interrupts.register_engine(engine)  # SIGTERM cancels the statement, never a commit
        runs = RunRepository(engine, tables.batch_run, config.amount_field.scale)
        row = _batch_run(runs, run_id)
        if row.job_name != config.name:
            raise ResumeRefused(f"run {run_id} is a run of job {row.job_name}, not of "
                                f"{config.name}: resume it with that job's config")
        outcome = RunOutcome(run_id, config.name, row.status, 0, "", Path(row.input_path),
                             config.database_url, config.output_dir / "runs" / run_id)
        with job_lock(engine, tables.job_lock, config.name, run_id) as lock:
            row = _batch_run(runs, run_id)  # as it is now that no run is alive
            _resume(config, engine, tables, row, outcome, lock)
    log.log(logging.INFO if outcome.exit_code == 0 else logging.ERROR,
            "resume of run %s ended %s (exit %d): %s", run_id, outcome.status,
            outcome.exit_code, outcome.message)
    return outcome


def _resume(config: JobConfig, engine: Engine, tables: JobTables, row: Any,
            outcome: RunOutcome, lock: HeldLock) -> None:
    run_id = outcome.run_id
    if row.status == SUCCEEDED:
        outcome.changed_nothing = True
        conclude(outcome, f"run {run_id} had already committed its MERGE (its audit says "
                          f"{SUCCEEDED}); nothing to resume, "
                          f"{', '.join(t.label for t in config.details) or config.final_table}"
                          " untouched")
        return
    totals = load_totals(row, config)
    if totals is None:
        raise ResumeRefused(f"run {run_id} ended {row.status} before its staging load "
                            "completed: nothing to resume from; run it again from its file")
    if row.staging_purged == "Y":
        raise ResumeRefused(f"the staging rows of run {run_id} were purged by a later run "
                            "(tables.keep_staging_runs): run it again from its file")
    outcome.rejects = totals.metrics.total_errors
    if (outcome.run_dir / "rejects.txt").exists():
        outcome.reject_file = outcome.run_dir / "rejects.txt"
    # the processors' row digests died with their run: the input file gives them again
    rows = InputRows(config, Path(row.input_path), row.input_sha256, run_id,
                     loader_for(tables, config.detail, config.amount, engine.dialect, 1))
    service = ReconciliationService(engine, tables, config.key_columns, config.amount,
                                    totals.trailer, config.reject_limit, input_rows=rows,
                                    proven_at=row.staging_proven_ts)
    writer = AuditWriter(engine, tables, config.amount_field.scale)
    # RESUMED_TS is written with the resume's checks, never before them: a refused resume
    # leaves the run exactly as it was
    resumed = utc_now()
    # judged against the runs before it, as when it first ran: a resume never overrides it
    volume = history.volume_check(engine, tables.batch_run, config.name, row.start_ts,
                                  config.volume, totals.metrics.total_read)
    if config.details:  # each detail type's chain (pipeline.resume_types)
        from pipeline.resume_types import resume_types

        left = resume_types(config, engine, row, outcome, lock, totals.metrics,
                            totals.trailer, volume, ResumeRefused)
        if left is None:
            return  # committed with its audit
        outcome.results = left
        merged = "its MERGEs had committed; audit finished without merging again"
    elif _final_count(engine, service, run_id):
        # its MERGE committed but the run died before its audit: finish the audit only
        outcome.results = [*service.reconcile_counts(run_id, totals.metrics), volume,
                           *service.final_as_it_is(run_id)]
        merged = "its MERGE had committed; audit finished without merging again"
    else:
        _refuse_unless_staging_matches(service, run_id, totals)

        def record(conn: Connection, results: list[ReconciliationResult]) -> None:
            """A passing resume's audit commits in the MERGE's transaction."""
            keys = next(r.expected_count for r in results
                        if r.check_name == checks.STAGING_TO_FINAL)
            conclude(outcome, f"resumed from staging; all checks passed; {keys:,} keys "
                              f"merged into {config.final_table}")
            writer.finish_on(conn, run_id, outcome.status, outcome.exit_code,
                             outcome.message, results, [], resumed=resumed)

        result = service.reconcile(run_id, totals.metrics, utc_now(), repeats=None,  # unknown
                                   record=record, lock=lock, before_merge=[volume])
        outcome.results, outcome.evidence = result.results, result.evidence
        outcome.duplicates_collapsed = result.duplicates_collapsed
        if result.passed:
            return  # committed with its audit
        merged = ""
    passed = all(r.passed for r in outcome.results)
    conclude(outcome, f"resumed from staging; all checks passed; {merged}" if passed else
             "resumed from staging; reconciliation failed: "
             f"{failure_summary(outcome.results)}; FINAL unchanged", passed=passed)
    writer.finish_run(run_id, outcome.status, outcome.exit_code, outcome.message,
                      outcome.results, [], resumed=resumed, evidence=outcome.evidence)


def _refuse_unless_staging_matches(service: ReconciliationService, run_id: str,
                                   totals: LoadTotals) -> None:
    """The checks before the MERGE, against the stored totals: all must pass again."""
    failed = [r for r in service.reconcile_counts(run_id, totals.metrics) if not r.passed]
    if failed:
        names = ", ".join(r.check_name for r in failed)
        raise ResumeRefused(f"run {run_id} cannot be resumed: its checks before the MERGE "
                            f"do not balance ({names}); `pipeline explain {run_id}` names "
                            "the records")


def load_totals(row: Any, config: JobConfig) -> LoadTotals | None:
    """The stored load totals of a BATCH_RUN row at the job's scale, or None (not loaded)."""
    if row.read_cnt is None:
        return None
    scale, rule = config.amount_field.scale, config.hash_total
    if rule is not None and row.trailer_hash is None:
        raise ResumeRefused(f"run {row.run_id} was loaded without the trailer hash total "
                            "the job now names (control.trailer_hash_total): run it again "
                            "from its file")

    def minor(audit_amount: int | None) -> int:
        return from_audit(int(audit_amount or 0), scale) or 0

    metrics = AggregatedMetrics(
        total_read=int(row.read_cnt), total_written=int(row.written_cnt),
        total_errors=int(row.rejected_cnt), accepted_amount=minor(row.accepted_amt),
        read_amount=minor(row.read_amt), written_amount=minor(row.accepted_amt),
        unreadable_amounts=int(row.unreadable_cnt or 0), misplaced_control=0,
        writer_errors=0, workers=(),
        **({} if rule is None else dict(hash_read=int(row.read_hash),
                                        hash_accepted=int(row.accepted_hash),
                                        unhashed=int(row.unhashed_cnt))))
    hashed = None if rule is None else replace(rule, value=int(row.trailer_hash))
    return LoadTotals(TrailerTotals(int(row.trailer_cnt), minor(row.trailer_amt), hashed),
                      metrics)


def _batch_run(runs: RunRepository, run_id: str) -> Any:
    row = runs.find(run_id)
    if row is None:
        raise ResumeRefused(f"no run {run_id} in this database (`pipeline runs` lists them)")
    return row


def _final_count(engine: Engine, service: ReconciliationService, run_id: str) -> int:
    with database_errors(engine, "reading the final table"), engine.connect() as conn:
        return service.store.final(conn).get_count_for_run(run_id)

