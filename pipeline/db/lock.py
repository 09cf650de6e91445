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
- SQLite: an open-file-description byte-range lock on the database file itself
  (pipeline.db.backends.sqlite).

Each database's module in ``pipeline.db.backends`` provides its ``job_lock``; the row
lock here is shared by those that lock a row, each telling its own "lock busy" error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from pipeline import interrupts
from pipeline.db.backends import backend_for
from pipeline.db.engine import database_errors
from pipeline.errors import DatabaseFailure, PipelineError

# whether a driver error says "locked by someone else", not any other failure
LockBusy = Callable[[BaseException | None], bool]


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


def job_lock(engine: Engine, lock_table: Table, job_name: str,
             run_id: str | None = None) -> AbstractContextManager[HeldLock]:
    return backend_for(engine.dialect.name).job_lock(engine, lock_table, job_name, run_id)


@contextmanager
def row_lock(engine: Engine, table: Table, job_name: str, run_id: str | None,
             lock_busy: LockBusy) -> Iterator[HeldLock]:
    """The job lock as a row lock (PostgreSQL, Oracle); ``lock_busy`` tells the database's
    "locked by someone else" error from any other failure."""
    with _row_lock(engine, table, job_name, run_id, lock_busy) as connection:
        yield HeldLock(engine, table, job_name, run_id, connection)


@contextmanager
def _row_lock(engine: Engine, table: Table, job_name: str, run_id: str | None,
              lock_busy: LockBusy) -> Iterator[Connection]:
    with database_errors(engine, "taking the job lock"):
        connection = engine.connect()
    try:
        # lock first, insert only if the row is missing: an INSERT of a row another run
        # holds (and updated) would wait for that run to end instead of being refused
        if not _lock_row(engine, connection, table, job_name, run_id, lock_busy):
            with database_errors(engine, "taking the job lock"):
                try:
                    with engine.begin() as conn:
                        conn.execute(table.insert().values(job_name=job_name))
                except IntegrityError:
                    pass  # another first run inserted it meanwhile
            if not _lock_row(engine, connection, table, job_name, run_id, lock_busy):
                raise DatabaseFailure(f"the JOB_LOCK row of {job_name} vanished")
        yield connection
    finally:
        # the server may already have dropped the connection (and with it the lock):
        # releasing must not turn the run's own outcome into a driver traceback
        with suppress(DBAPIError):
            connection.close()


def _lock_row(engine: Engine, connection: Connection, table: Table, job_name: str,
              run_id: str | None, lock_busy: LockBusy) -> bool:
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
        if not lock_busy(exc.__cause__):
            raise
        raise JobAlreadyRunning(f"job {job_name} is already running on this database "
                                "(its JOB_LOCK row is locked); refusing a second run"
                                ) from None
    return True


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]


def driver_error(exc: BaseException | None) -> Any:
    """The driver's own exception under SQLAlchemy's (None if there is none)."""
    return getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else None
