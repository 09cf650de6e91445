"""Writes RECON_AUDIT, RECON_WORKER_AUDIT and BATCH_RUN: the run's evidence.

A run that passed commits them in the MERGE's own transaction (``finish_on``): FINAL and
the audit that describes it commit together or not at all. A failed run commits them in a
transaction of their own (``finish_run``), so a rolled-back MERGE never takes its audit
with it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, select

from pipeline.audit.journal import RunEnd
from pipeline.audit.schema import naive_utc, to_audit, utc_now
from pipeline.db.engine import database_errors
from pipeline.db.tables import JobTables
from recon.values import (
    ABENDED,
    RUNNING,
    SUCCEEDED,
    AggregatedMetrics,
    Evidence,
    ReconciliationResult,
    TrailerTotals,
    WorkerMetrics,
)

Journalled = Callable[[str], RunEnd | None]  # a run's journalled end (pipeline.audit.journal)


class AuditWriter:
    def __init__(self, engine: Engine, tables: JobTables, amount_scale: int) -> None:
        self.engine, self.tables, self.scale = engine, tables, amount_scale

    def start_run(self, run_id: str, job_name: str, input_path: Path, started: datetime,
                  overrides: Sequence[str] = ()) -> None:
        """The run's row, RUNNING; ``overrides``: the BATCH_RUN flags the operator set
        (``rerun``, ``allow_older``), each recorded 'Y'."""
        with database_errors(self.engine, "recording the run start"), self.engine.begin() as c:
            c.execute(self.tables.batch_run.insert().values(
                run_id=run_id, job_name=job_name, input_path=str(input_path)[:1000],
                status=RUNNING, start_ts=started, host=socket.gethostname()[:255],
                pid=os.getpid(), **dict.fromkeys(overrides, "Y")))

    def record_input(self, run_id: str, sha256: str, business_date: date | None,
                     code_page: str | None = None, copybook_sha256: str | None = None) -> None:
        """What the plan found: the job instance (the file's SHA-256, its business date),
        and how it was read (the code page, the copybook's SHA-256)."""
        t = self.tables.batch_run
        with database_errors(self.engine, "recording the input"), self.engine.begin() as c:
            c.execute(t.update().where(t.c.run_id == run_id).values(
                input_sha256=sha256, business_date=business_date, code_page=code_page,
                copybook_sha256=copybook_sha256))

    def record_refusal(self, run_id: str, job_name: str, input_path: Path, started: datetime,
                       status: str, exit_code: int, message: str) -> None:
        """A run refused before it held the job's lock, in one complete row."""
        with database_errors(self.engine, "recording the refusal"), self.engine.begin() as c:
            c.execute(self.tables.batch_run.insert().values(
                run_id=run_id, job_name=job_name, input_path=str(input_path)[:1000],
                status=status, start_ts=started, end_ts=utc_now(), exit_code=exit_code,
                message=message[:1000], host=socket.gethostname()[:255], pid=os.getpid()))

    def record_load(self, run_id: str, trailer: TrailerTotals,
                    metrics: AggregatedMetrics) -> None:
        """The load's control totals (the trailer's, the bus's), kept so that
        `run --resume` can redo the checks and the MERGE without the input file."""
        t = self.tables.batch_run
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
        with database_errors(self.engine, "recording the load totals"), self.engine.begin() as c:
            c.execute(t.update().where(t.c.run_id == run_id).values(**values))

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
        t = self.tables.batch_run
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
        t = self.tables.batch_run
        with database_errors(self.engine, "recording journalled run ends"), \
                self.engine.begin() as c:
            return _settle(c, t, _dead_runs(c, t, None, None), journalled, by)

    def finish_run(self, run_id: str, status: str, exit_code: int, message: str,
                   results: Sequence[ReconciliationResult],
                   workers: Sequence[WorkerMetrics],
                   stages: Mapping[str, int] | None = None, *,
                   resumed: datetime | None = None,
                   evidence: Sequence[Evidence] = (),
                   staging_proven: datetime | None = None) -> str:
        """Commit the end of a run that did not pass in a transaction of its own; returns
        the status BATCH_RUN holds now (SUCCEEDED if the MERGE's transaction committed).
        ``stages``: milliseconds per stage name (pipeline.stages), kept in BATCH_RUN;
        ``resumed``: when the `run --resume` writing this end started (RESUMED_TS)."""
        with database_errors(self.engine, "committing the audit"), self.engine.begin() as c:
            t = self.tables.batch_run
            row = c.execute(select(t.c.status).where(t.c.run_id == run_id)
                            .with_for_update()).first()
            committed = row[0] if row else None
            if committed == SUCCEEDED:
                # the MERGE's transaction, audit included, did commit (its reply was lost):
                # that is the truth, and what FINAL holds
                return committed
            self.finish_on(c, run_id, status, exit_code, message, results, workers, stages,
                           resumed=resumed, staging_proven=staging_proven)
            if evidence:
                c.execute(self.tables.recon_evidence.insert(),
                          [_evidence_row(run_id, i, e) for i, e in enumerate(evidence)])
            return status

    def finish_on(self, c: Connection, run_id: str, status: str, exit_code: int, message: str,
                  results: Sequence[ReconciliationResult],
                  workers: Sequence[WorkerMetrics],
                  stages: Mapping[str, int] | None = None, *,
                  resumed: datetime | None = None,
                  staging_proven: datetime | None = None) -> None:
        """The run's end, written on ``c`` in the caller's transaction (the MERGE's).

        Every check row gets the same CHECK_TS: the audit reader tells one attempt's checks
        from a later `run --resume`'s by it. A resume's RESUMED_TS commits with its checks.
        ``staging_proven``: when processed_to_staging_columns proved staging held the
        processors' rows, for a later resume without the input file.
        """
        t = self.tables
        now = utc_now()
        stamps = {name: moment for name, moment in (("resumed_ts", resumed),
                                                     ("staging_proven_ts", staging_proven))
                  if moment is not None}
        if results:
            c.execute(t.recon_audit.insert(), [self._check_row(run_id, r, now)
                                               for r in results])
        if workers:
            c.execute(t.worker_audit.insert(), [self._worker_row(run_id, w)
                                                for w in workers])
        c.execute(t.batch_run.update().where(t.batch_run.c.run_id == run_id).values(
            status=status, end_ts=now, exit_code=exit_code, message=message[:1000], **stamps,
            **{f"{name}_ms": ms for name, ms in (stages or {}).items()}))

    def _amount(self, minor: int | None) -> int | None:
        return to_audit(minor, self.scale)

    def _check_row(self, run_id: str, r: ReconciliationResult, now: datetime) -> dict:
        return {
            "run_id": run_id, "check_name": r.check_name, "expected_cnt": r.expected_count,
            "actual_cnt": r.actual_count, "passed": "Y" if r.passed else "N",
            "discrepancy": r.discrepancy, "check_ts": now,
            "expected_amt": self._amount(r.expected_amount),
            "actual_amt": self._amount(r.actual_amount),
            "discrepancy_amt": self._amount(r.amount_discrepancy),
            "detail": r.detail[:1000] or None,
        }

    def _worker_row(self, run_id: str, w: WorkerMetrics) -> dict:
        return {
            "run_id": run_id, "worker_id": w.worker_id, "worker_type": w.worker_type,
            "records_processed": w.records_processed, "errors_count": w.errors_count,
            "amount": self._amount(w.amount), "start_ts": naive_utc(w.start_time),
            "end_ts": naive_utc(w.end_time), "state": w.state, "exit_code": w.exit_code,
            "pid": w.pid,
        }


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


def _evidence_row(run_id: str, seq: int, e: Evidence) -> dict:
    return {"run_id": run_id, "seq": seq, "check_name": e.check_name,
            "source_line": e.source_line, "key_value": e.key[:200],
            "column_name": e.column[:128],
            "expected_value": None if e.expected is None else e.expected[:1000],
            "actual_value": None if e.actual is None else e.actual[:1000]}


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
