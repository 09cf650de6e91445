"""BATCH_RUN's one writer, and the one place a run's status and exit code are decided.

Every INSERT and UPDATE of BATCH_RUN is here: the run's start (or its refusal), what its
plan found, its load totals, its stage times, the staging runs purged, the ends of earlier
runs settled, and its own end. A run's end is written in the caller's transaction
(``end_on``): the MERGE's when it passed, the audit's own when it did not
(pipeline.audit.writer), so BATCH_RUN never says more than RECON_AUDIT.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, literal_column, select

from pipeline.audit.journal import RunEnd
from pipeline.audit.schema import to_audit, utc_now
from pipeline.db.engine import database_errors
from pipeline.db.lock import JobAlreadyRunning
from pipeline.errors import Interrupted, PipelineError
from pipeline.outcome import RunOutcome
from recon.values import (
    ABENDED,
    FAILED_INPUT,
    FAILED_RECONCILIATION,
    FAILED_RUNTIME,
    INTERRUPTED,
    REFUSED,
    RUNNING,
    SUCCEEDED,
    AggregatedMetrics,
    TrailerTotals,
)

Journalled = Callable[[str], RunEnd | None]  # a run's journalled end (pipeline.audit.journal)


def run_status(error: PipelineError | None = None, passed: bool = True) -> tuple[str, int]:
    """The one decision of how a run ended, as (status, exit code): by ``error`` if it
    failed with one, else by its checks (passed: SUCCEEDED, 0; not: FAILED_RECON, 1)."""
    if error is None:
        return (SUCCEEDED, 0) if passed else (FAILED_RECONCILIATION, 1)
    code = error.exit_code
    if isinstance(error, Interrupted):
        return INTERRUPTED, code
    if isinstance(error, JobAlreadyRunning):
        return REFUSED, code
    return (FAILED_INPUT if code == 2 else FAILED_RUNTIME), code


def conclude(outcome: RunOutcome, message: str, *, error: PipelineError | None = None,
             passed: bool = True) -> None:
    """End ``outcome`` with ``message``, its status and exit code as ``run_status`` decides."""
    outcome.status, outcome.exit_code = run_status(error, passed)
    outcome.message = message


class RunRepository:
    """The job's runs in BATCH_RUN. ``amount_scale``: the job's, for the load's amounts."""

    def __init__(self, engine: Engine, batch_run: Table, amount_scale: int) -> None:
        self.engine, self.table, self.scale = engine, batch_run, amount_scale

    def find(self, run_id: str) -> Any | None:
        """The run's row, or None."""
        t = self.table
        with database_errors(self.engine, "reading the run"), self.engine.connect() as c:
            return c.execute(select(t).where(t.c.run_id == run_id)).first()

    def start_run(self, run_id: str, job_name: str, input_path: Path, started: datetime,
                  overrides: Sequence[str] = ()) -> None:
        """The run's row, RUNNING; ``overrides``: the BATCH_RUN flags the operator set
        (``rerun``, ``allow_older``), each recorded 'Y'."""
        with database_errors(self.engine, "recording the run start"), self.engine.begin() as c:
            c.execute(self.table.insert().values(
                **_started(run_id, job_name, input_path, started),
                status=RUNNING, **dict.fromkeys(overrides, "Y")))

    def record_input(self, run_id: str, sha256: str, business_date: date | None,
                     code_page: str | None = None, copybook_sha256: str | None = None) -> None:
        """What the plan found: the job instance (the file's SHA-256, its business date),
        and how it was read (the code page, the copybook's SHA-256)."""
        self._update(run_id, "recording the input", input_sha256=sha256,
                     business_date=business_date, code_page=code_page,
                     copybook_sha256=copybook_sha256)

    def record_refusal(self, run_id: str, job_name: str, input_path: Path, started: datetime,
                       refusal: PipelineError) -> None:
        """A run refused before it held the job's lock, in one complete row."""
        status, exit_code = run_status(refusal)
        with database_errors(self.engine, "recording the refusal"), self.engine.begin() as c:
            c.execute(self.table.insert().values(
                **_started(run_id, job_name, input_path, started), status=status,
                end_ts=utc_now(), exit_code=exit_code, message=str(refusal)[:1000]))

    def record_load(self, run_id: str, trailer: TrailerTotals,
                    metrics: AggregatedMetrics) -> None:
        """The load's control totals (the trailer's, the bus's), kept so that
        `run --resume` can redo the checks and the MERGE without the input file."""
        values: dict[str, Any] = dict(
            trailer_cnt=trailer.count, trailer_amt=self._amount(trailer.amount),
            read_cnt=metrics.total_read, rejected_cnt=metrics.total_errors,
            written_cnt=metrics.total_written, read_amt=self._amount(metrics.read_amount),
            accepted_amt=self._amount(metrics.accepted_amount),
            unreadable_cnt=metrics.unreadable_amounts)
        if trailer.hash is not None:  # every figure already within the trailer's digits
            rule = trailer.hash
            values |= dict(trailer_hash=rule.value, read_hash=rule.reduce(metrics.hash_read),
                           accepted_hash=rule.reduce(metrics.hash_accepted),
                           unhashed_cnt=metrics.unhashed)
        self._update(run_id, "recording the load totals", **values)

    def record_stage_ms(self, run_id: str, stages: Mapping[str, int]) -> None:
        """Stage durations (milliseconds) known only once the audit committed, e.g. the
        audit's own."""
        self._update(run_id, "recording the stage times",
                     **{f"{name}_ms": ms for name, ms in stages.items()})

    def purge_staging(self, c: Connection, job_name: str, keep: int,
                      purge: Callable[[list[str]], object]) -> int:
        """``purge(run_ids)`` the staging rows of the job's runs older than its ``keep``
        latest not purged yet, on ``c``, and mark them purged; returns how many runs.

        BATCH_RUN remembers which runs are purged: most nights there is nothing to
        delete, and staging is not touched at all. Only the job's own runs are touched,
        so jobs that share a staging table never purge each other.
        """
        t = self.table
        # the count is a validated int, written into the SQL: a bound LIMIT inside a
        # subquery is deferred to execution time ("post-compile") on Oracle
        latest = (select(t.c.run_id).where(t.c.job_name == job_name)
                  .order_by(t.c.start_ts.desc()).limit(literal_column(str(int(keep)))))
        due = (t.c.job_name == job_name, t.c.staging_purged.is_(None),
               t.c.run_id.not_in(latest))
        runs = [r for (r,) in c.execute(select(t.c.run_id).where(*due))]
        if not runs:
            return 0
        purge(runs)
        c.execute(t.update().where(*due).values(staging_purged="Y"))
        return len(runs)

    def close_abandoned_runs(self, job_name: str, run_id: str,
                             journalled: Journalled = lambda _: None,
                             ) -> tuple[int, list[RunEnd]]:
        """Settle the job's earlier runs still RUNNING, once provably dead: the end a run
        journalled when the database could not take it (pipeline.audit.journal), else
        ABENDED. Returns how many were marked ABENDED and the ends settled from journals.

        Only a run holding the job's lock may call this, and the lock alone does not prove
        the other run dead: a run whose lock session was killed lives on until it tries to
        commit. A RUNNING row is closed when its process is gone from this host; a run of
        another host is closed too (its lock is free, and with it the right to commit).
        ``journalled(run_id)`` reads a run's journal (this host's only).
        """
        t = self.table
        with database_errors(self.engine, "closing abandoned runs"), self.engine.begin() as c:
            dead = _dead_runs(c, t, job_name, run_id)
            settled = _settle(c, t, dead, journalled, f"run {run_id}")
            gone = [r.run_id for r in dead if r.run_id not in {e.run_id for e in settled}]
            if not gone:
                return 0, settled
            query = t.update().where(t.c.run_id.in_(gone), t.c.status == RUNNING).values(
                status=ABENDED, end_ts=utc_now(),
                message="the run's process ended without recording its end (killed?)")
            return int(c.execute(query).rowcount), settled

    def settle_journalled(self, journalled: Journalled, by: str) -> list[RunEnd]:
        """The runs of any job left RUNNING whose process is gone from this host and which
        journalled their end: recorded now (``by``: who records them, for the message).
        Nothing else is closed: a run with no journal waits for its job's next run."""
        t = self.table
        with database_errors(self.engine, "recording journalled run ends"), \
                self.engine.begin() as c:
            return _settle(c, t, _dead_runs(c, t, None, None), journalled, by)

    def status_for_end(self, c: Connection, run_id: str) -> str | None:
        """The run's status, its row locked until ``c`` commits the end: a MERGE whose
        reply was lost may have committed SUCCEEDED meanwhile."""
        t = self.table
        row = c.execute(select(t.c.status).where(t.c.run_id == run_id).with_for_update()).first()
        return row[0] if row else None

    def end_on(self, c: Connection, run_id: str, status: str, exit_code: int, message: str,
               now: datetime, stages: Mapping[str, int] | None = None, *,
               resumed: datetime | None = None,
               staging_proven: datetime | None = None) -> None:
        """The run's end, on ``c`` in the caller's transaction. ``resumed``: when the
        `run --resume` writing it started; ``staging_proven``: when staging proved to hold
        the processors' rows, for a later resume without the input file."""
        stamps = {name: moment for name, moment in (("resumed_ts", resumed),
                                                     ("staging_proven_ts", staging_proven))
                  if moment is not None}
        t = self.table
        c.execute(t.update().where(t.c.run_id == run_id).values(
            status=status, end_ts=now, exit_code=exit_code, message=message[:1000], **stamps,
            **{f"{name}_ms": ms for name, ms in (stages or {}).items()}))

    def _update(self, run_id: str, doing: str, **values: Any) -> None:
        t = self.table
        with database_errors(self.engine, doing), self.engine.begin() as c:
            c.execute(t.update().where(t.c.run_id == run_id).values(**values))

    def _amount(self, minor: int | None) -> int | None:
        return to_audit(minor, self.scale)


def _started(run_id: str, job_name: str, input_path: Path, started: datetime) -> dict:
    """A new row's columns, and where its process lives (see close_abandoned_runs)."""
    return dict(run_id=run_id, job_name=job_name, input_path=str(input_path)[:1000],
                start_ts=started, host=socket.gethostname()[:255], pid=os.getpid())


def _dead_runs(c: Connection, t: Table, job_name: str | None,
               run_id: str | None) -> list[Any]:
    """RUNNING rows (of ``job_name``, but ``run_id``) whose process is gone from this host,
    or which ran on another host."""
    query = select(t.c.run_id, t.c.host, t.c.pid).where(t.c.status == RUNNING)
    if job_name is not None:
        query = query.where(t.c.job_name == job_name)
    if run_id is not None:
        query = query.where(t.c.run_id != run_id)
    here = socket.gethostname()[:255]
    return [r for r in c.execute(query) if not (r.host == here and process_alive(r.pid))]


def _settle(c: Connection, t: Table, dead: Sequence[Any], journalled: Journalled,
            by: str) -> list[RunEnd]:
    """The journalled ends of ``dead`` runs of this host, written to BATCH_RUN."""
    here = socket.gethostname()[:255]
    settled = [end for end in (journalled(r.run_id) for r in dead if r.host == here)
               if end is not None]
    note = (f" [recorded by {by} from the run's journal: the database could not be "
            "written when it ended]")
    for end in settled:
        c.execute(t.update().where(t.c.run_id == end.run_id, t.c.status == RUNNING).values(
            status=end.status, end_ts=end.end_ts, exit_code=end.exit_code,
            message=end.message[:1000 - len(note)] + note))
    return settled


def process_alive(pid: int | None) -> bool:
    """Whether process ``pid`` of this host still exists (unknown pid: assume gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True
