"""One run of a job at a time: the job's lock, held for the whole run, and its fence.

A mainframe job never runs twice at once (JCL's dataset ENQ); two runs of one job would
race their MERGEs on the same keys. A second run is refused (exit 3, BATCH_RUN status
REFUSED); runs of *different* jobs proceed in parallel. The lock dies with the process
holding it, so a killed run never leaves a stale lock behind, and it is keyed on the
database's identity, so no other spelling of the database (a symlink, a hard link, another
URL) can bypass it:

- PostgreSQL and Oracle: ``SELECT ... FOR UPDATE NOWAIT`` on the job's row of JOB_LOCK, in
  a transaction kept open on a connection of its own until the run ends. That row names
  the run holding it (RUN_ID, the fencing token), and the run's final transaction -- MERGE,
  checks, audit, status -- runs on the *same* connection as a savepoint and re-reads the
  row ``FOR UPDATE`` before it commits: a run whose lock session died (terminated, idle
  timeout) cannot commit anything, it ends exit 3 with FINAL untouched.
- SQLite: an open-file-description byte-range lock (``F_OFD_SETLK``) on the database file
  itself, one byte per job far beyond anything SQLite locks (its lock bytes sit at 1 GiB);
  the kernel keys it on the file's inode. Not Linux: ``flock`` on the resolved path.
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from pipeline import interrupts
from pipeline.db.engine import database_errors
from pipeline.errors import DatabaseFailure, PipelineError

PG_LOCK_NOT_AVAILABLE = "55P03"
ORA_RESOURCE_BUSY = 54  # ORA-00054: resource busy and acquire with NOWAIT specified
# SQLite's own locks are bytes 0x40000000..0x400001FF; the job's byte is at 2**40 + crc32
JOB_LOCK_BASE = 1 << 40


class JobAlreadyRunning(PipelineError):
    """Another run of the same job holds the job's lock."""

    exit_code = 3


class LockLost(PipelineError):
    """The run's job lock was lost (its session ended): it must not commit anything."""

    exit_code = 3


@dataclass
class FinalTransaction:
    """The run's last transaction: ``connection`` in an open (sub)transaction."""

    connection: Connection
    _commit: Any
    _rollback: Any

    def commit(self) -> None:
        # a COMMIT is never started after a signal, never cancelled once started
        with interrupts.committing():
            self._commit()

    def rollback(self) -> None:
        self._rollback()


@contextmanager
def own_transaction(engine: Engine) -> Iterator[FinalTransaction]:
    """A final transaction on a connection of its own, rolled back unless committed."""
    with engine.connect() as conn:
        tx = conn.begin()
        try:
            yield FinalTransaction(conn, tx.commit, tx.rollback)
        finally:
            if tx.is_active:
                tx.rollback()


@dataclass
class HeldLock:
    """The job lock a run holds; ``final_transaction`` is where it may change FINAL."""

    engine: Engine
    table: Table
    job_name: str
    run_id: str | None
    connection: Connection | None = None  # PostgreSQL, Oracle: the session holding the row

    @contextmanager
    def final_transaction(self) -> Iterator[FinalTransaction]:
        if self.connection is None:  # SQLite: the file lock cannot be lost by the process
            with own_transaction(self.engine) as transaction:
                yield transaction
            return
        conn = self.connection
        root = conn.get_transaction()
        if root is None or not root.is_active:
            raise LockLost(f"the job lock of {self.job_name} was released: not merging")
        try:
            savepoint = conn.begin_nested()
        except DBAPIError as exc:
            raise LockLost(f"the job lock of {self.job_name} was lost (its database session "
                           f"ended: {_first_line(exc)}); FINAL untouched") from None
        try:
            self.verify(conn)

            def commit() -> None:
                savepoint.commit()
                root.commit()  # ends the lock's transaction too: the run is over

            yield FinalTransaction(conn, commit, savepoint.rollback)
        finally:
            if savepoint.is_active:
                with suppress(DBAPIError):
                    savepoint.rollback()

    def verify(self, conn: Connection) -> None:
        """The fencing check: the lock row still names this run (and this session holds it)."""
        t = self.table
        try:
            holder = conn.execute(select(t.c.run_id).where(t.c.job_name == self.job_name)
                                  .with_for_update()).scalar_one_or_none()
        except DBAPIError as exc:
            raise LockLost(f"the job lock of {self.job_name} was lost (its database session "
                           f"ended: {_first_line(exc)}); FINAL untouched") from None
        if self.run_id is not None and holder != self.run_id:
            raise LockLost(f"the job lock of {self.job_name} is held by run {holder}, not "
                           f"{self.run_id}; FINAL untouched")


@contextmanager
def job_lock(engine: Engine, lock_table: Table, job_name: str,
             run_id: str | None = None) -> Iterator[HeldLock]:
    if engine.dialect.name == "sqlite":
        with _file_lock(engine, job_name):
            yield HeldLock(engine, lock_table, job_name, run_id)
    else:
        with _row_lock(engine, lock_table, job_name, run_id) as connection:
            yield HeldLock(engine, lock_table, job_name, run_id, connection)


def database_identity(path: Path) -> Path:
    """The file every spelling of the database resolves to (symlinks followed)."""
    return path.resolve()


@contextmanager
def _file_lock(engine: Engine, job_name: str) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    path = database_identity(Path(database))
    # the database exists by now (the run created its tables); never create it here
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            _lock_byte(fd, JOB_LOCK_BASE + zlib.crc32(job_name.encode()))
        except (BlockingIOError, PermissionError):
            raise JobAlreadyRunning(f"job {job_name} is already running on this database "
                                    f"({path} is locked for it); refusing a second run"
                                    ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock_byte(fd: int, offset: int) -> None:
    ofd = getattr(fcntl, "F_OFD_SETLK", None)
    if ofd is None:  # not Linux: one lock per database file, whatever the job
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for an OFD lock)
    request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        fcntl.fcntl(fd, ofd, request)
    except OSError as exc:
        if exc.errno in (11, 13):  # EAGAIN, EACCES: held by another open file
            raise BlockingIOError from None
        raise


@contextmanager
def _row_lock(engine: Engine, table: Table, job_name: str,
              run_id: str | None) -> Iterator[Connection]:
    with database_errors(engine, "taking the job lock"):
        connection = engine.connect()
    try:
        # lock first, insert only if the row is missing: an INSERT of a row another run
        # holds (and updated) would wait for that run to end instead of being refused
        if not _lock_row(engine, connection, table, job_name, run_id):
            with database_errors(engine, "taking the job lock"):
                try:
                    with engine.begin() as conn:
                        conn.execute(table.insert().values(job_name=job_name))
                except IntegrityError:
                    pass  # another first run inserted it meanwhile
            if not _lock_row(engine, connection, table, job_name, run_id):
                raise DatabaseFailure(f"the JOB_LOCK row of {job_name} vanished")
        yield connection
    finally:
        # the server may already have dropped the connection (and with it the lock):
        # releasing must not turn the run's own outcome into a driver traceback
        with suppress(DBAPIError):
            connection.close()


def _lock_row(engine: Engine, connection: Connection, table: Table, job_name: str,
              run_id: str | None) -> bool:
    """Lock the job's row in a transaction left open; False (and none open) if it is missing."""
    query = select(table.c.job_name).where(table.c.job_name == job_name)
    try:
        with database_errors(engine, "taking the job lock"):
            connection.begin()  # held open: the row lock lasts as long as this transaction
            if connection.execute(query.with_for_update(nowait=True)).first() is None:
                connection.rollback()
                return False
            if run_id is not None:  # the fencing token, committed with the MERGE
                connection.execute(table.update().where(table.c.job_name == job_name)
                                   .values(run_id=run_id))
    except DatabaseFailure as exc:
        if not _lock_busy(exc.__cause__):
            raise
        raise JobAlreadyRunning(f"job {job_name} is already running on this database "
                                "(its JOB_LOCK row is locked); refusing a second run"
                                ) from None
    return True


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]


def _lock_busy(exc: BaseException | None) -> bool:
    """Whether a driver error says "locked by someone else", not any other failure."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else None
    if getattr(orig, "sqlstate", None) == PG_LOCK_NOT_AVAILABLE:
        return True
    error = orig.args[0] if orig is not None and orig.args else None
    return getattr(error, "code", None) == ORA_RESOURCE_BUSY
