"""The run: its steps in order, its status, its run id.

take the job's lock -> record the run -> plan the input, refuse one already loaded or
older (pipeline.identity) -> parse and load with the workers -> aggregate the metrics
bus -> reconcile (MERGE only if balanced) -> commit the audit -> exit code.

The lock comes first: a second run of the job is refused (exit 3) at once, before it
reads or writes anything of the database. Its BATCH_RUN row (REFUSED) is written only if
that can be done without waiting: on SQLite, while the first run is writing (its load
commits, its MERGE) the database is write-locked, and the refusal is then told by the
log and the summary alone, never by a run left waiting on the first one.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import multiprocess as mp
from sqlalchemy import Connection, Engine

from pipeline import interrupts
from pipeline.audit import history, journal
from pipeline.audit.journal import RunEnd
from pipeline.audit.runs import RunRepository, conclude, process_alive
from pipeline.audit.schema import utc_now
from pipeline.audit.writer import AuditWriter
from pipeline.chains import TypeChain, reconcile_types
from pipeline.column_proof import InputRows
from pipeline.config import JobConfig, trailer_totals
from pipeline.db.bulk import loader_for
from pipeline.db.dialects import profile_for
from pipeline.db.engine import (
    Timeouts,
    create_missing_tables,
    database_errors,
    make_engine,
    parse_url,
    retrying,
)
from pipeline.db.lock import HeldLock, JobAlreadyRunning, job_lock
from pipeline.db.partitions import create_run_partition
from pipeline.db.repositories import StagingRepository
from pipeline.db.tables import JobTables, job_tables
from pipeline.db.watchdog import StatementWatchdog
from pipeline.errors import (
    ConfigError,
    DatabaseFailure,
    FileSystemFailure,
    InputChanged,
    InputStructureError,
    Interrupted,
    PipelineError,
    WorkerFailure,
    os_failure,
)
from pipeline.identity import NO_OVERRIDES, Overrides, business_date, check_identity
from pipeline.logs import run_context
from pipeline.metrics.aggregator import MetricsAggregator
from pipeline.metrics.bus import MetricsBus
from pipeline.outcome import RunOutcome
from pipeline.reconcile import ReconciliationOutcome, ReconciliationService, Record
from pipeline.repeats import discard_spill, repeated_lines
from pipeline.source import InputPlan
from pipeline.stages import AUDIT, CHECKS, LOAD, MERGE, PLAN, StageClock
from pipeline.workers.context import TypeLoad, WorkerContext
from pipeline.workers.pool import WorkerPool, WorkerSpec
from pipeline.workers.processor import run_processor
from pipeline.workers.writer import run_writer
from recon import checks
from recon.checks import STAGING_TO_FINAL, failure_summary, warning_of
from recon.values import (
    FAILED_RUNTIME,
    INTERRUPTED,
    RUNNING,
    SUCCEEDED,
    AggregatedMetrics,
    ReconciliationResult,
    TrailerTotals,
)

if TYPE_CHECKING:
    from pipeline.progress import Progress

SAMPLE_RECORDS = 100_000
AfterLoad = Callable[[Engine, str], None]
# a refused run reads and writes only what the database gives without waiting: SQLite's
# busy wait (or PostgreSQL's lock wait) would hold it until the run it refuses let go
NO_WAIT = Timeouts(lock=0.05, statement=30.0)
log = logging.getLogger(__name__)


def new_run_id() -> str:
    """Sortable by start time, unique without a database sequence; short, because every
    staging row carries it (the job's name is in BATCH_RUN)."""
    return f"{utc_now():%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def bus_prefix(pid: int | None = None) -> str:
    """Metrics-bus segments of the run started by process ``pid`` are named so."""
    return f"pipeline_{os.getpid() if pid is None else pid}"


def run_job(config: JobConfig, *, after_load: AfterLoad | None = None,
            on_tick: Callable[[MetricsBus], None] | None = None,
            progress: Progress | None = None,
            overrides: Overrides = NO_OVERRIDES) -> RunOutcome:
    """Run the job once. Never raises for a failed run: the outcome carries the exit code.

    ``on_tick`` gets the metrics bus on every wake-up of the supervisor during the load;
    ``progress`` (a display) gets it too, and the plan's total and the stages after it.
    ``overrides``: the job-instance refusals the operator overrides (pipeline.identity).
    """
    run_id = new_run_id()
    started = utc_now()
    input_path = resolve_input(config)
    run_dir = config.output_dir / "runs" / run_id
    outcome = RunOutcome(run_id, config.name, RUNNING, 0, "", input_path,
                         config.database_url, run_dir, overrides=tuple(overrides.flags()))
    with run_context(run_id), interrupts.handling():
        log.info("run started: job %s, input %s", config.name, input_path)
        try:
            parse_url(config.database_url)
            _run(config, outcome, started, after_load, on_tick, progress, overrides)
        except PipelineError as exc:
            _fail(outcome, exc)
        finally:
            if progress is not None:
                progress.stage(None)  # the run's stages are over
        # one plain sentence on stderr for a failed run; the summary on stdout says more
        log.log(logging.INFO if outcome.exit_code == 0 else logging.ERROR,
                "run ended %s (exit %d): %s", outcome.status, outcome.exit_code,
                outcome.message, extra={"status": outcome.status,
                                        "exit_code": outcome.exit_code})
    return outcome


def resolve_input(config: JobConfig) -> Path:
    """The configured input, or a sample generated once for the shipped example job."""
    if config.input_path is not None:
        return config.input_path
    kind = config.input_format.sample_format
    if kind is None or config.name not in ("daily_transactions", "daily_transactions_ebcdic"):
        raise ConfigError("input.path: missing (only the example job can generate a sample)")
    sample = (config.output_dir / "sample" / config.name).with_suffix(
        config.input_format.sample_suffix)
    if not sample.exists():
        from pipeline.generate_mainframe import generate_input

        sample.parent.mkdir(parents=True, exist_ok=True)
        generate_input(sample, SAMPLE_RECORDS, kind, seed=1, reject_rate=0.001,
                       duplicate_rate=0.001)
    return sample


def _ticks(on_tick: Callable[[MetricsBus], None] | None,
           progress: Progress | None) -> Callable[[MetricsBus], None] | None:
    """One callback for the supervisor's wake-ups: the caller's, then the display's."""
    calls = [c for c in (on_tick, progress) if c is not None]
    if len(calls) < 2:
        return calls[0] if calls else None

    def both(bus: MetricsBus) -> None:
        for call in calls:
            call(bus)

    return both


def _run(config: JobConfig, outcome: RunOutcome, started: datetime,
         after_load: AfterLoad | None, on_tick: Callable[[MetricsBus], None] | None,
         progress: Progress | None, overrides: Overrides) -> None:
    stages = StageClock(progress)
    profile = profile_for(parse_url(config.database_url).get_backend_name())
    processors = config.processors
    writers = config.writers or profile.default_writers
    batch_size = config.batch_size or profile.batch_size
    tables = job_tables(config)
    # [[details]]: each detail type's staging and FINAL (the first type's are ``tables``)
    typed = [job_tables(t.config) for t in config.details]
    engine = make_engine(config.database_url,
                         Timeouts(config.lock_timeout, config.statement_timeout))
    interrupts.register_engine(engine)  # a signal cancels the parent's statements
    watchdog = StatementWatchdog(config.statement_timeout)
    watchdog.attach(engine)  # a silent server cannot hold the run past its bound
    audit_writer = AuditWriter(engine, tables, config.amount_field.scale)
    loaded = False  # the load's totals are in BATCH_RUN: `run --resume` can finish the run
    try:
        with watchdog.running(), _locked(config, outcome, engine, [tables, *typed],
                                         started) as lock:
            with stages.stage(PLAN):
                plan = _record_and_plan(config, outcome, engine, tables, audit_writer,
                                        started, processors, overrides)
            interrupts.check()
            if progress is not None:
                progress.total(plan.detail_lines)
            _settle_earlier_runs(config, outcome.run_id, audit_writer)
            for each, each_tables in _per_detail(config, tables, typed):
                _purge_staging(each, engine, each_tables, outcome.run_id, audit_writer.runs)
            _make_run_dir(outcome.run_dir)
            with stages.stage(LOAD):
                per_type = _load(config, outcome, engine, tables, typed, plan, writers,
                                 batch_size, _ticks(on_tick, progress))
            interrupts.check()
            if outcome.metrics and outcome.metrics.misplaced_control:
                raise InputStructureError(
                    f"{outcome.metrics.misplaced_control} header or trailer record(s) inside "
                    f"the details (see {outcome.reject_file}): not a valid input")
            if outcome.metrics is not None:
                audit_writer.runs.record_load(outcome.run_id,
                                              trailer_totals(config, plan.trailer),
                                              outcome.metrics)
                loaded = True
            if after_load:
                after_load(engine, outcome.run_id)
            interrupts.check()
            if config.details:
                _reconcile_types(config, outcome, engine, typed, per_type, plan, stages, lock,
                                 audit_writer, started)
            else:
                _reconcile(config, outcome, engine, tables, plan, stages, lock, audit_writer,
                           started)
    except PipelineError as exc:
        _fail(outcome, exc, watchdog)
    except OSError as exc:  # the project's files are told as such; this is the net under them
        _fail(outcome, os_failure(exc, "reading or writing"))
    finally:
        discard_spill(outcome.run_dir)
    if loaded and outcome.status in (FAILED_RUNTIME, INTERRUPTED):
        outcome.message += (f"; its staging load had completed: `pipeline run --resume "
                            f"{outcome.run_id}` finishes it")
    _record_end(outcome, audit_writer, stages, config.retry_window)
    engine.dispose()


def _per_detail(config: JobConfig, tables: JobTables,
                typed: list[JobTables]) -> list[tuple[JobConfig, JobTables]]:
    """Each detail type's config and tables; the job's own when it has one detail."""
    return ([(t.config, each) for t, each in zip(config.details, typed, strict=True)]
            or [(config, tables)])


def _settle_earlier_runs(config: JobConfig, run_id: str, audit_writer: AuditWriter) -> None:
    """Earlier runs of the job left RUNNING: their journalled end, else ABENDED."""
    abandoned, settled = audit_writer.runs.close_abandoned_runs(
        config.name, run_id, journal.reader_for(config.output_dir))
    journal.settled(config.output_dir, settled)
    if abandoned:
        log.warning("%d earlier run(s) of %s never ended: marked ABENDED", abandoned,
                    config.name)


def _make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_failure(exc, "creating the run's folder") from None


def _purge_staging(config: JobConfig, engine: Engine, tables: JobTables, run_id: str,
                   runs: RunRepository) -> None:
    """Keep the staging rows of the job's latest runs only (this one included), and give
    this run its own staging partition where the database has them."""
    with database_errors(engine, "purging old staging rows"), engine.begin() as conn:
        staging = StagingRepository(conn, tables, config.key_columns, config.amount)
        purged = runs.purge_staging(conn, config.name, config.keep_staging_runs,
                                    staging.purge_runs)
        create_run_partition(conn, tables.staging, run_id)
    if purged:
        log.info("purged the staging rows of %d run(s) before the latest %d", purged,
                 config.keep_staging_runs)


@contextmanager
def _locked(config: JobConfig, outcome: RunOutcome, engine: Engine,
            every: list[JobTables], started: datetime) -> Iterator[HeldLock]:
    """The job's lock, asked for before the run writes anything (SQLite: before it reads
    anything); a run refused it says which run holds it (see the module). ``every``: the
    job's tables, the first with the audit tables, then each detail type's."""
    tables = every[0]
    lock_needs_tables = profile_for(engine.dialect).lock_needs_tables
    if lock_needs_tables:  # the lock is a row of JOB_LOCK
        for each in every:
            create_missing_tables(engine, each)
    with ExitStack() as held:
        try:
            lock = held.enter_context(job_lock(engine, tables.job_lock, config.name,
                                               outcome.run_id))
        except JobAlreadyRunning as exc:
            raise _refusal(config, outcome, tables, started, str(exc)) from None
        if not lock_needs_tables:
            for each in every:
                create_missing_tables(engine, each)
        yield lock


def _refusal(config: JobConfig, outcome: RunOutcome, tables: JobTables, started: datetime,
             refused: str) -> JobAlreadyRunning:
    """The refusal naming the run that holds the lock, recorded in BATCH_RUN (REFUSED)
    when the database takes it without waiting."""
    quick = make_engine(config.database_url, NO_WAIT)
    try:
        message = f"{refused}. {_holder(quick, tables, config.name)}"
        try:
            RunRepository(quick, tables.batch_run, config.amount_field.scale).record_refusal(
                outcome.run_id, config.name, outcome.input_path.resolve(), started,
                JobAlreadyRunning(message))
        except PipelineError as exc:
            log.warning("the refusal is not in BATCH_RUN (the database did not take it "
                        "without waiting: %s); this log and the summary tell it", exc)
            message += (" (not recorded in BATCH_RUN: the database did not take it without "
                        "waiting)")
    finally:
        quick.dispose()
    return JobAlreadyRunning(message)


def _holder(engine: Engine, tables: JobTables, job_name: str) -> str:
    """Which run holds the job's lock, as far as BATCH_RUN tells without waiting."""
    try:
        # a row lock is held by a database session, which outlives a process killed
        # mid-statement until the server abandons the statement
        run = history.running_run(engine, tables.batch_run, job_name,
                                  dead_too=profile_for(engine.dialect).lock_needs_tables)
    except PipelineError:
        return ("The run holding it could not be named: the database did not answer without "
                "waiting (`pipeline runs` names it)")
    if run is None:
        return "The run holding it has not recorded itself yet"
    started = f"{run.start_ts:%Y-%m-%d %H:%M:%S}"
    holder = f"The lock is held by run {run.run_id} (started {started} UTC, pid {run.pid} " \
             f"on {run.host}"
    if run.host != socket.gethostname()[:255]:
        return holder + ")"
    if process_alive(run.pid):
        return holder + ", running)"
    # killed mid-statement: its server session runs on until the statement ends
    return (holder + ", its process gone: its database session is still finishing a "
            "statement, which the server abandons once it sees the client gone; try "
            "again in a minute)")


def _record_and_plan(config: JobConfig, outcome: RunOutcome, engine: Engine,
                     tables: JobTables, audit_writer: AuditWriter, started: datetime,
                     processors: int, overrides: Overrides) -> InputPlan:
    """Record the run (which holds the job's lock), plan its input, and refuse an input the
    job already loaded or one older than it loaded (pipeline.identity); a refused input is
    recorded like any other."""
    audit_writer.runs.start_run(outcome.run_id, config.name, outcome.input_path.resolve(),
                                started, overrides.columns())
    outcome.recorded = True
    outcome.code_page, outcome.copybook_sha256 = config.code_page, config.copybook_sha256
    plan = config.input_format.plan(outcome.input_path, processors)
    outcome.business_date = business_date(plan, config.business_date)
    audit_writer.runs.record_input(outcome.run_id, plan.sha256, outcome.business_date,
                                   config.code_page, config.copybook_sha256)
    log.info("planned input: %d detail lines in %d ranges, sha256 %s, business date %s",
             plan.detail_lines, len(plan.ranges), plan.sha256, outcome.business_date or "-",
             extra={"detail_lines": plan.detail_lines})
    check_identity(engine, tables.batch_run, config.name, plan, outcome.business_date,
                   overrides)
    return plan


def _load(config: JobConfig, outcome: RunOutcome, engine: Engine, tables: JobTables,
          typed: list[JobTables], plan: InputPlan, writers: int, batch_size: int,
          on_tick: Callable[[MetricsBus], None] | None) -> list[AggregatedMetrics]:
    """Run the workers; the metrics of each detail type of a [[details]] job (its own
    bus: each worker writes its own row there too), none for a single-detail job."""
    ctx_mp = mp.get_context("fork")
    n_workers = len(plan.ranges) + writers
    types = ["processor"] * len(plan.ranges) + ["writer"] * writers
    # the pid in the name tells whose segment it is; the random part keeps it unguessable
    try:
        bus = MetricsBus.create(n_workers, prefix=bus_prefix(), worker_types=types)
    except (OSError, RuntimeError) as exc:  # the resource tracker or /dev/shm refused
        raise WorkerFailure(f"the workers' metrics bus could not be created "
                            f"({type(exc).__name__}: {exc}); no worker started") from None
    with bus, ExitStack() as type_buses:
        loads = tuple(TypeLoad(
            loader_for(each, t.config.detail, t.config.amount, engine.dialect, batch_size),
            type_buses.enter_context(MetricsBus.create(n_workers, prefix=bus_prefix(),
                                                       worker_types=types)))
            for t, each in zip(config.details, typed, strict=True))
        ctx = WorkerContext(
            run_id=outcome.run_id, config=config, plan=plan, bus=bus,
            loader=loader_for(tables, config.detail, config.amount, engine.dialect, batch_size),
            database_url=config.database_url, batch_size=batch_size, run_dir=outcome.run_dir,
            parent_pid=os.getpid(), batches=ctx_mp.Queue(maxsize=2 * writers + 2),
            failures=ctx_mp.Queue(), types=loads)
        pool = WorkerPool(_worker_specs(ctx, writers), bus, ctx.batches, ctx.failures,
                          config.heartbeat_timeout, on_tick=lambda: _tick(bus, on_tick))
        log.info("starting workers: %s, %s, batch size %d", _count(len(plan.ranges),
                 "processor"), _count(writers, "writer"), batch_size)
        load_started = time.monotonic()
        failure: PipelineError | None = None
        try:
            pool.run()
        except WorkerFailure as exc:
            failure = _worker_failure(exc)
        except PipelineError as exc:  # interrupted at a tick
            failure = exc
        outcome.workers = MetricsAggregator.from_snapshot(bus.snapshot(), pool.exit_codes)
        outcome.metrics = MetricsAggregator.aggregate(outcome.workers)
        per_type = [MetricsAggregator.aggregate(MetricsAggregator.from_snapshot(
            load.bus.snapshot(), pool.exit_codes)) for load in loads]
        try:
            _collect_rejects(outcome, len(plan.ranges), ctx)
        except FileSystemFailure as exc:
            if failure is None:
                raise
            log.warning("%s", exc)  # the load's own failure is the run's cause
        if failure is not None:
            raise failure
    _log_load_done(outcome, time.monotonic() - load_started)
    return per_type


def _worker_failure(exc: WorkerFailure) -> PipelineError:
    """A processor that found the file changed says so in its one-line cause: the
    operator reads that, not "processor 1 failed"."""
    _, changed, cause = str(exc).partition(f"{InputChanged.__name__}: ")
    return InputChanged(cause) if changed else exc


def _tick(bus: MetricsBus, on_tick: Callable[[MetricsBus], None] | None) -> None:
    """Each wake-up of the supervisor is a safe point: an interrupt stops the workers."""
    interrupts.check()
    if on_tick is not None:
        on_tick(bus)


def _worker_specs(ctx: WorkerContext, writers: int) -> list[WorkerSpec]:
    """Writers first (ids after the processors'), so the first batch finds a reader."""
    ranges = ctx.plan.ranges
    return [
        *(WorkerSpec(len(ranges) + i, "writer", run_writer, (ctx, len(ranges) + i))
          for i in range(writers)),
        *(WorkerSpec(i, "processor", run_processor, (ctx, i, rng))
          for i, rng in enumerate(ranges)),
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _log_load_done(outcome: RunOutcome, seconds: float) -> None:
    metrics = outcome.metrics
    assert metrics is not None
    rate = metrics.total_read / seconds if seconds > 0 else 0.0
    log.info("load done: %d read, %d rejected, %d written to staging in %.1f s (%.0f rec/s)",
             metrics.total_read, metrics.total_errors, metrics.total_written, seconds, rate,
             extra={"records_read": metrics.total_read, "records_written": metrics.total_written,
                    "seconds": round(seconds, 3), "records_per_second": round(rate)})


def _collect_rejects(outcome: RunOutcome, processors: int, ctx: WorkerContext) -> None:
    """One reject file in line order: the ranges are in file order, so are their parts."""
    target = outcome.run_dir / "rejects.txt"
    try:
        with open(target, "wb") as out:
            for wid in range(processors):
                part = ctx.reject_path(wid)
                if part.exists():
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out)
                    part.unlink()
    except OSError as exc:
        exc.filename = exc.filename or str(target)
        raise os_failure(exc, "writing the reject file") from None
    outcome.reject_file = target
    outcome.rejects = outcome.metrics.total_errors if outcome.metrics else 0


def _reconcile(config: JobConfig, outcome: RunOutcome, engine: Engine, tables: JobTables,
               plan: InputPlan, stages: StageClock, lock: HeldLock,
               audit_writer: AuditWriter, started: datetime) -> None:
    assert outcome.metrics is not None
    with stages.stage(CHECKS, "key repeats"):
        repeated = repeated_lines(outcome.run_dir)
        volume = history.volume_check(engine, tables.batch_run, config.name, started,
                                      config.volume, outcome.metrics.total_read)
    repeats = None if repeated is None else bool(len(repeated.lines))
    log.info("key hashes: %s", "a key repeats, the MERGE keeps each key's last record"
             if repeats else "no key repeats, one plain MERGE" if repeats is False
             else "not known, the MERGE keeps each key's last record")
    service = ReconciliationService(
        engine, tables, config.key_columns, config.amount,
        trailer_totals(config, plan.trailer), config.reject_limit,
        input_rows=_input_rows(config, outcome, plan, engine, tables),
        on_proven=lambda: _proven(outcome))

    try:
        result = service.reconcile(outcome.run_id, outcome.metrics, utc_now(), repeats,
                                   stages, repeated=repeated,
                                   record=_recorder(config, outcome, stages, audit_writer),
                                   lock=lock, before_merge=[volume])
    except PipelineError:
        outcome.results = service.checked  # the checks that passed before the MERGE failed
        raise
    _reconciled(config, outcome, result)


def _reconcile_types(config: JobConfig, outcome: RunOutcome, engine: Engine,
                     typed: list[JobTables], per_type: list[AggregatedMetrics],
                     plan: InputPlan, stages: StageClock, lock: HeldLock,
                     audit_writer: AuditWriter, started: datetime) -> None:
    """[[details]]: the whole file's checks, then each type's chain (pipeline.chains)."""
    metrics = outcome.metrics
    assert metrics is not None
    with stages.stage(CHECKS, "volume"):
        volume = history.volume_check(engine, typed[0].batch_run, config.name, started,
                                      config.volume, metrics.total_read)
    whole = [*checks.file_checks(trailer_totals(config, plan.trailer), metrics,
                                 config.reject_limit), volume]
    chains = [TypeChain(t.label, ReconciliationService(
        engine, each, t.config.key_columns, t.config.amount, TrailerTotals(0, 0),
        input_rows=_input_rows(t.config, outcome, plan, engine, each),
        on_proven=lambda: _proven(outcome)), m,
        None if t.trailer_count is None else int(plan.trailer[t.trailer_count]))
        for t, each, m in zip(config.details, typed, per_type, strict=True)]
    whole = checks.in_order(whole)
    try:
        result = reconcile_types(chains, outcome.run_id, whole, utc_now(), stages,
                                 _recorder(config, outcome, stages, audit_writer), lock)
    except PipelineError:
        # the checks that passed before a MERGE failed
        outcome.results = [*whole, *(r for c in chains for r in c.service.checked)]
        raise
    _reconciled(config, outcome, result)


def _input_rows(config: JobConfig, outcome: RunOutcome, plan: InputPlan, engine: Engine,
                tables: JobTables) -> InputRows:
    """The input file again, to name the rows a column check finds changed. A detail
    type's config reads its own records only: the other types' are rejects to it."""
    loader = loader_for(tables, config.detail, config.amount, engine.dialect, 1)
    return InputRows(config, outcome.input_path, plan.sha256, outcome.run_id, loader)


def _recorder(config: JobConfig, outcome: RunOutcome, stages: StageClock,
              audit_writer: AuditWriter) -> Record:
    def record(conn: Connection, results: list[ReconciliationResult]) -> None:
        """The audit of a run that passed, in the MERGE's transaction (one commit)."""
        conclude(outcome, f"all checks passed; {_merged(config, results)}")
        with stages.stage(AUDIT):
            audit_writer.finish_on(conn, outcome.run_id, outcome.status, outcome.exit_code,
                                   outcome.message, results, outcome.workers,
                                   stages.milliseconds())
    return record


def _merged(config: JobConfig, results: list[ReconciliationResult]) -> str:
    """"12 keys merged into t" (or, per detail type, "12 keys merged into a, 3 into b")."""
    keys = {r.check_name: r.expected_count for r in results}
    if not config.details:
        return f"{keys[STAGING_TO_FINAL]:,} keys merged into {config.final_table}"
    each = [f"{keys[f'{t.label}:{STAGING_TO_FINAL}']:,}" + (" keys merged" if i == 0 else "")
            + f" into {t.label}" for i, t in enumerate(config.details)]
    return ", ".join(each)


def _reconciled(config: JobConfig, outcome: RunOutcome, result: ReconciliationOutcome) -> None:
    outcome.results, outcome.evidence = result.results, result.evidence
    log_warnings(result.results)
    outcome.duplicates_collapsed = result.duplicates_collapsed
    if result.passed:  # ``record`` set the outcome and committed it with the MERGE
        outcome.audited = True
        keys = result.staged_rows - result.duplicates_collapsed
        log.info("reconciliation passed (%d checks); merge committed: %d keys into %s",
                 len(result.results), keys,
                 ", ".join(t.label for t in config.details) or config.final_table)
    else:
        failed = failure_summary(result.results)
        conclude(outcome, f"reconciliation failed: {failed}; FINAL unchanged", passed=False)
        log.warning("reconciliation failed: %s; no merge", failed)


def _proven(outcome: RunOutcome) -> None:
    """Staging holds the processors' rows: a failed run's audit says when, for a resume
    without the input file."""
    outcome.staging_proven = utc_now()


def log_warnings(results: list[ReconciliationResult]) -> None:
    """A check that passed with a warning (volume_vs_history) is a WARNING log line."""
    for r in results:
        if warning := warning_of(r):
            log.warning("%s: %s", r.check_name, warning, extra={"check_name": r.check_name})


def _fail(outcome: RunOutcome, exc: PipelineError,
          watchdog: StatementWatchdog | None = None) -> None:
    if interrupts.requested() and not isinstance(exc, Interrupted):
        # a statement the signal cancelled fails with the driver's error: the cause is
        # the signal, whatever the driver said
        log.debug("after the interrupt: %s", exc)
        exc = Interrupted(interrupts.message())
    elif watchdog is not None and watchdog.fired:
        # the driver only saw its connection dropped: the cause is the silent server
        exc = DatabaseFailure(f"{watchdog.fired}; {exc}")
    conclude(outcome, str(exc), error=exc)


def _record_end(outcome: RunOutcome, audit_writer: AuditWriter, stages: StageClock,
                retry_window: float) -> None:
    """Commit the audit; if the database itself failed, the run's exit code says so.

    A database away for a while (a restart) is given ``retry_window`` seconds to come back;
    an end it still cannot take is journalled for the next run (pipeline.audit.journal).
    """
    outcome.stages = stages.milliseconds()
    if not outcome.recorded:
        return  # it never reached the database: no audit to finish, no second error to tell
    if outcome.audited:
        log.info("audit committed with the MERGE: %d checks, %d workers, status %s",
                 len(outcome.results), len(outcome.workers), outcome.status)
        _record_stage_times(outcome, audit_writer, MERGE, AUDIT)
        return
    try:
        try:
            with stages.stage(AUDIT):
                status = retrying(audit_writer.engine, lambda: _finish(outcome, audit_writer),
                                  retry_window, "recording the run's end")
        except PipelineError as exc:
            if not interrupts.requested():
                raise
            # the signal cancelled the audit's own statement (a cancel is one-shot): the
            # run is INTERRUPTED, and that is written once more
            _fail(outcome, exc)
            status = _finish(outcome, audit_writer)
        if status == SUCCEEDED and outcome.status != SUCCEEDED:
            conclude(outcome, "the MERGE and its audit had committed before the run failed "
                              f"({outcome.message}); BATCH_RUN says {status}")
        outcome.stages = stages.milliseconds()
        _record_stage_times(outcome, audit_writer, AUDIT)
        log.info("audit committed: %d checks, %d workers, status %s", len(outcome.results),
                 len(outcome.workers), outcome.status)
    except PipelineError as exc:
        if outcome.exit_code in (0, 1):
            _fail(outcome, exc)
        else:
            outcome.message += f" (and the audit could not be written: {exc})"
        _journal(outcome)


def _finish(outcome: RunOutcome, audit_writer: AuditWriter) -> str:
    return audit_writer.finish_run(outcome.run_id, outcome.status, outcome.exit_code,
                                   outcome.message, outcome.results, outcome.workers,
                                   stages=outcome.stages, evidence=outcome.evidence,
                                   staging_proven=outcome.staging_proven)


def _journal(outcome: RunOutcome) -> None:
    """The end the database did not take, kept for the next run to record."""
    end = RunEnd(outcome.run_id, outcome.job_name, outcome.status, outcome.exit_code,
                 outcome.message, utc_now())
    kept = journal.write_end(outcome.run_dir, end)
    if kept is None:
        log.error("the run's end could not be kept on disk either: BATCH_RUN still says "
                  "RUNNING, and the next run will mark it ABENDED")
        return
    log.warning("the run's end is kept in %s: the next run of %s records it in BATCH_RUN",
                kept, outcome.job_name)
    outcome.message += f"; kept in {kept} for the next run to record"


def _record_stage_times(outcome: RunOutcome, audit_writer: AuditWriter, *names: str) -> None:
    """Stage times known only once the audit committed (the MERGE's, which wrote the
    audit; the audit's own): best effort, a timing never changes what the audit says."""
    known = {name: outcome.stages[name] for name in names if name in outcome.stages}
    if not known:
        return
    try:
        audit_writer.runs.record_stage_ms(outcome.run_id, known)
    except PipelineError as exc:
        log.warning("stage times %s not in BATCH_RUN: %s", ", ".join(known), exc)
