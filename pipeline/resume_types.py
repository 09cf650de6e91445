"""`run --resume` of a [[details]] run.

BATCH_RUN keeps the load's figures of the whole file, not each detail type's: those are
derived again from the input file, which must be the one the run read (its SHA-256 in
BATCH_RUN). A processor's figures (records read, rejected, their amounts) are what the
file says; the writers' rows per type are not known again, so the resume checks the
writers' committed rows against every type's staging rows, as one whole-file
``written_to_staging``. Then, as any resume: the checks before the MERGE must balance
again (or the resume is refused), and every type's MERGE, its checks and the audit
commit in one transaction (pipeline.chains).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from pipeline.audit.runs import conclude
from pipeline.audit.schema import utc_now
from pipeline.audit.writer import AuditWriter
from pipeline.chains import WHOLE_FILE, TypeChain, load_checks, named, reconcile_types
from pipeline.column_proof import InputRows
from pipeline.config import JobConfig
from pipeline.db.bulk import loader_for
from pipeline.db.engine import database_errors
from pipeline.db.lock import HeldLock
from pipeline.db.tables import job_tables
from pipeline.errors import ConfigError, PipelineError
from pipeline.outcome import RunOutcome
from pipeline.reconcile import ReconciliationService
from pipeline.source import InputPlan
from pipeline.workers.processor import typed_batches_of
from recon import checks
from recon.values import (
    AggregatedMetrics,
    ReconciliationResult,
    TrailerTotals,
)

BATCH = 10_000


def resume_types(config: JobConfig, engine: Engine, row: Any, outcome: RunOutcome,
                 lock: HeldLock, whole: AggregatedMetrics, trailer: TrailerTotals,
                 volume: ReconciliationResult,
                 refused: Callable[[str], ConfigError]) -> list[ReconciliationResult] | None:
    """Finish a [[details]] run: the results to record as failed, or None when it passed
    (committed with its MERGEs). ``refused`` makes the refusal (exit 2) of a message."""
    run_id = outcome.run_id
    plan = _input_again(config, row, refused)
    chains = [TypeChain(t.label, ReconciliationService(
        engine, each, t.config.key_columns, t.config.amount, TrailerTotals(0, 0),
        input_rows=InputRows(t.config, plan.path, row.input_sha256, run_id,
                             loader_for(each, t.config.detail, t.config.amount,
                                        engine.dialect, 1)),
        proven_at=row.staging_proven_ts), m,
        None if t.trailer_count is None else int(plan.trailer[t.trailer_count]))
        for t, each, m in zip(config.details, [job_tables(t.config) for t in config.details],
                              type_figures(config, plan), strict=True)]
    own, staged = load_checks(chains, run_id, WHOLE_FILE | {checks.WRITTEN_TO_STAGING})
    first = checks.in_order([
        *checks.file_checks(trailer, whole, config.reject_limit),
        checks.count_check(checks.WRITTEN_TO_STAGING, whole.total_written, sum(staged),
                           "every detail type's staging rows"), volume])
    if _merged(engine, chains, run_id):
        # its MERGEs committed but the run died before its audit: finish the audit only
        return [*first, *own, *(r for chain in chains for r in
                                named(chain.label, chain.service.final_as_it_is(run_id)))]
    failed = [r.check_name for r in [*first, *own] if not r.passed]
    if failed:
        raise refused(f"run {run_id} cannot be resumed: its checks before the MERGE do not "
                      f"balance ({', '.join(failed)}); `pipeline explain {run_id}` names "
                      "the records")
    writer = AuditWriter(engine, job_tables(config), config.amount_field.scale)
    resumed = utc_now()

    def record(conn: Connection, results: list[ReconciliationResult]) -> None:
        merged = ", ".join(f"{r.expected_count:,} into {r.check_name.partition(':')[0]}"
                           for r in results
                           if checks.plain_name(r.check_name) == checks.STAGING_TO_FINAL)
        conclude(outcome, f"resumed from staging; all checks passed; keys merged: {merged}")
        writer.finish_on(conn, run_id, outcome.status, outcome.exit_code, outcome.message,
                         results, [], resumed=resumed)

    result = reconcile_types(chains, run_id, first, utc_now(), None, record, lock)
    outcome.results, outcome.evidence = result.results, result.evidence
    outcome.duplicates_collapsed = result.duplicates_collapsed
    return None if result.passed else result.results


def _input_again(config: JobConfig, row: Any,
                 refused: Callable[[str], ConfigError]) -> InputPlan:
    path = Path(row.input_path)
    why = f"the figures of each detail type are read again from the input file {path}"
    if not path.is_file():
        raise refused(f"run {row.run_id} cannot be resumed: {why}, which is not there")
    try:
        plan = config.input_format.plan(path, 1)
    except PipelineError as exc:
        raise refused(f"run {row.run_id} cannot be resumed: {why} ({exc})") from None
    if plan.sha256 != row.input_sha256:
        raise refused(f"run {row.run_id} cannot be resumed: {why}, which is not the file "
                      "the run read (SHA-256 differs)")
    return plan


def type_figures(config: JobConfig, plan: InputPlan) -> list[AggregatedMetrics]:
    """What the processors counted of each detail type, from the file again."""
    sums = [[0, 0, 0, 0, 0] for _ in config.details]
    for rng in plan.ranges:
        for _, parts in typed_batches_of(config, plan.path, rng, BATCH):
            for figures, part in zip(sums, parts, strict=True):
                if part is not None:
                    figures[0] += part.records_read
                    figures[1] += len(part.rejects)
                    figures[2] += part.accepted_amount
                    figures[3] += part.read_amount
                    figures[4] += part.unreadable_amounts
    return [AggregatedMetrics(
        total_read=read, total_written=0, total_errors=rejected, accepted_amount=accepted,
        read_amount=amount, written_amount=0, unreadable_amounts=unreadable,
        misplaced_control=0, writer_errors=0, workers=())
        for read, rejected, accepted, amount, unreadable in sums]


def _merged(engine: Engine, chains: list[TypeChain], run_id: str) -> bool:
    """Did the run's MERGEs commit (all types together, or none)?"""
    with database_errors(engine, "reading the final tables"), engine.connect() as conn:
        return any(chain.service.store.final(conn).get_count_for_run(run_id)
                   for chain in chains)
