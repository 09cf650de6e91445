"""One run of a job at a time: the job's lock, held for the whole run.

A mainframe job never runs twice at once (JCL's dataset ENQ); two runs of one job would
race their MERGEs on the same keys. A second run is refused (exit 3, BATCH_RUN status
REFUSED); runs of *different* jobs proceed in parallel. The lock dies with the process
holding it, so a killed run never leaves a stale lock behind:

- PostgreSQL and Oracle: ``SELECT ... FOR UPDATE NOWAIT`` on the job's row of JOB_LOCK,
  in a transaction kept open on a connection of its own until the run ends;
- SQLite: ``flock`` on a file beside the database (SQLite has no row locks).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import Engine, Table, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from pipeline.db.engine import database_errors
from pipeline.errors import DatabaseFailure, PipelineError

PG_LOCK_NOT_AVAILABLE = "55P03"
ORA_RESOURCE_BUSY = 54  # ORA-00054: resource busy and acquire with NOWAIT specified


class JobAlreadyRunning(PipelineError):
    """Another run of the same job holds the job's lock."""

    exit_code = 3


@contextmanager
def job_lock(engine: Engine, lock_table: Table, job_name: str) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        with _file_lock(engine, job_name):
            yield
    else:
        with _row_lock(engine, lock_table, job_name):
            yield


@contextmanager
def _file_lock(engine: Engine, job_name: str) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    path = Path(f"{database}.{job_name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobAlreadyRunning(f"job {job_name} is already running on this database "
                                    f"({path} is locked); refusing a second run") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def _row_lock(engine: Engine, table: Table, job_name: str) -> Iterator[None]:
    with database_errors(engine, "taking the job lock"):
        try:
            with engine.begin() as conn:
                conn.execute(table.insert().values(job_name=job_name))
        except IntegrityError:
            pass  # the row exists: the usual case after the first run
        connection = engine.connect()
    try:
        connection.begin()  # held open: the row lock lasts as long as this transaction
        query = select(table.c.job_name).where(table.c.job_name == job_name)
        try:
            with database_errors(engine, "taking the job lock"):
                connection.execute(query.with_for_update(nowait=True)).one()
        except DatabaseFailure as exc:
            if not _lock_busy(exc.__cause__):
                raise
            raise JobAlreadyRunning(f"job {job_name} is already running on this database "
                                    "(its JOB_LOCK row is locked); refusing a second run"
                                    ) from None
        yield
    finally:
        # the server may already have dropped the connection (and with it the lock):
        # releasing must not turn the run's own outcome into a driver traceback
        with suppress(DBAPIError):
            connection.close()


def _lock_busy(exc: BaseException | None) -> bool:
    """Whether a driver error says "locked by someone else", not any other failure."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else None
    if getattr(orig, "sqlstate", None) == PG_LOCK_NOT_AVAILABLE:
        return True
    error = orig.args[0] if orig is not None and orig.args else None
    return getattr(error, "code", None) == ORA_RESOURCE_BUSY
