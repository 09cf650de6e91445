"""What the job's earlier runs tell a new one, read from BATCH_RUN: the input files and
business dates already loaded (job-instance identity, pipeline.identity), the run holding
the job's lock, and the records read of the last succeeded nights (volume_vs_history).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, Select, Table, select

from pipeline.audit.runs import process_alive
from pipeline.db.engine import database_errors
from recon import checks
from recon.values import RUNNING, SUCCEEDED, ReconciliationResult, VolumeRule


@dataclass(frozen=True)
class EarlierRun:
    """One BATCH_RUN row, as far as a new run of the job needs it."""

    run_id: str
    start_ts: datetime
    business_date: date | None
    host: str | None = None
    pid: int | None = None


def _earlier(row: Any) -> EarlierRun:
    return EarlierRun(row.run_id, row.start_ts, row.business_date, row.host, row.pid)


def _runs(t: Table, job_name: str, status: str) -> Select[Any]:
    """The job's runs of ``status``, newest first (ties broken by run id, which sorts by
    start time too)."""
    return (select(t.c.run_id, t.c.start_ts, t.c.business_date, t.c.host, t.c.pid)
            .where(t.c.job_name == job_name, t.c.status == status)
            .order_by(t.c.start_ts.desc(), t.c.run_id.desc()))


def loaded_input(engine: Engine, t: Table, job_name: str, sha256: str) -> EarlierRun | None:
    """The latest SUCCEEDED run of the job that loaded a file with this SHA-256."""
    query = _runs(t, job_name, SUCCEEDED).where(t.c.input_sha256 == sha256).limit(1)
    with database_errors(engine, "reading the inputs already loaded"), engine.connect() as c:
        row = c.execute(query).first()
    return None if row is None else _earlier(row)


def latest_business_date(engine: Engine, t: Table, job_name: str) -> EarlierRun | None:
    """The SUCCEEDED run of the job with the latest business date (the latest such run
    when several share it): the newest data FINAL holds, whatever order they ran in."""
    query = (_runs(t, job_name, SUCCEEDED).where(t.c.business_date.is_not(None))
             .order_by(None)
             .order_by(t.c.business_date.desc(), t.c.start_ts.desc(), t.c.run_id.desc())
             .limit(1))
    with database_errors(engine, "reading the business dates loaded"), engine.connect() as c:
        row = c.execute(query).first()
    return None if row is None else _earlier(row)


def running_run(engine: Engine, t: Table, job_name: str,
                dead_too: bool = False) -> EarlierRun | None:
    """The run of the job that is RUNNING and alive (its process exists, or it runs on
    another host): the one holding the job's lock, once it has recorded itself. With
    ``dead_too`` (a lock held by a database session, which outlives a process killed
    mid-statement), else the newest RUNNING one whose process is gone."""
    query = _runs(t, job_name, RUNNING)
    here = socket.gethostname()[:255]
    with database_errors(engine, "naming the running run"), engine.connect() as c:
        rows = c.execute(query).all()
    alive = [r for r in rows if r.host != here or process_alive(r.pid)]
    found = alive or (rows if dead_too else [])
    return _earlier(found[0]) if found else None


def records_read_before(engine: Engine, t: Table, job_name: str, started: datetime,
                        limit: int) -> list[int]:
    """Records read by the job's last ``limit`` SUCCEEDED runs started before ``started``,
    newest first (a resumed run is judged against the runs before it, as it first was)."""
    query = (select(t.c.read_cnt)
             .where(t.c.job_name == job_name, t.c.status == SUCCEEDED,
                    t.c.read_cnt.is_not(None), t.c.start_ts < started)
             .order_by(t.c.start_ts.desc(), t.c.run_id.desc()).limit(limit))
    with database_errors(engine, "reading the job's history"), engine.connect() as c:
        return [int(n) for n in c.execute(query).scalars()]


def volume_check(engine: Engine, t: Table, job_name: str, started: datetime,
                 rule: VolumeRule, records_read: int) -> ReconciliationResult:
    """volume_vs_history for a run started at ``started`` that read ``records_read``."""
    history = records_read_before(engine, t, job_name, started, rule.history_runs)
    return checks.volume_vs_history(rule, history, records_read)
