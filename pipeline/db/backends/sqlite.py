"""SQLite: a database file, one writer at a time, no exact decimal type.

- Money is integer minor units (no exact decimal type); its SUM() raises on int64
  overflow, so sums are taken in two halves (pipeline.db.repositories).
- The bulk load is the stdlib ``executemany`` of statements that insert many rows each
  (``SqliteLoader``): SQLite steps and resets a statement per row, so one-row statements
  (the generic loader of pipeline.db.bulk, itself 2.6x SQLAlchemy's insert) cost 1.5x.
- The job lock is an open-file-description byte-range lock (``F_OFD_SETLK``) on the
  database file itself, one byte per job far beyond anything SQLite locks (its lock bytes
  sit at 1 GiB); the kernel keys it on the file's inode, so no other spelling of the
  database (a symlink, a hard link) bypasses it. Not Linux: ``flock`` on the resolved path.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import sqlite3
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Select,
    Table,
    bindparam,
    event,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from pipeline.db.bulk import BulkLoader, LoadResult, unmemoized
from pipeline.db.dialects import DialectProfile
from pipeline.db.digests import FOLD, HASH_FUNCTION, row_hash
from pipeline.db.engine import timeout_named
from pipeline.db.lock import HeldLock, JobAlreadyRunning
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.db.engine import Timeouts
    from pipeline.db.tables import JobTables
    from pipeline.layouts.fields import Layout

profile = DialectProfile("sqlite", parallel_writers=False, batch_size=10_000,
                         max_identifier_length=128, money_as_minor_units=True,
                         split_money_sums=True, lock_needs_tables=False)

SQLITE_BUSY_TIMEOUT_S = 60
SQLITE_CACHE_KIB = 64 * 1024
# SQLite's own locks are bytes 0x40000000..0x400001FF; the job's byte is at 2**40 + crc32
JOB_LOCK_BASE = 1 << 40

# what SQLite says when a lock bound ran out (see pipeline.db.engine.Timeouts), or when
# its file or folder cannot be written -- and what to do about it
TIMEOUTS = (
    ("database is locked", "a lock held by another connection was not released in time "
                           "(database.lock_timeout)"),
    ("database or disk is full", "the disk holding the database is full: free space there "
                                 "or move the database (database.url)"),
    ("attempt to write a readonly database", "the database cannot be written: a read-only "
                                             "or immutable file (ls -l, lsattr; chattr -i) "
                                             "or file system"),
    ("unable to open database file", "the database file or its folder cannot be opened or "
                                     "written (SQLite writes its journal beside the file): "
                                     "check the folder's permissions, free space and mount"),
    ("disk I/O error", "the database file could not be written: an immutable file (lsattr; "
                       "chattr -i), a read-only or full file system, or a failing disk"),
)


def database_file(url: URL) -> str | None:
    return url.database if url.database and url.database != ":memory:" else None


def engine_kwargs(url: URL, timeouts: Timeouts | None) -> dict[str, Any]:
    folder = Path(url.database or ".").parent
    if database_file(url) and not folder.is_dir():
        # a typo'd path must not quietly start an empty FINAL somewhere new (the CLI
        # creates the job's output folder, where the default database lives, first)
        raise ConfigError(f"database file {url.database}: folder {folder} does not "
                          "exist (check --db or database.url)")
    busy = SQLITE_BUSY_TIMEOUT_S if timeouts is None or not timeouts.lock else timeouts.lock
    return {"connect_args": {"timeout": busy}}


def on_engine(engine: Engine, timeouts: Timeouts | None) -> None:
    event.listen(engine, "connect", _sqlite_pragmas)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # A rollback journal, not WAL: the MERGE is one transaction over every row of the run,
    # and WAL wrote it twice (log, then checkpoint): 1M rows merged 25% slower. Only one
    # process writes at a time anyway (the job lock, a single writer).
    cursor.execute("PRAGMA journal_mode=DELETE")
    # 64 MiB of page cache (the default is 2 MiB): the MERGE updates FINAL's key and
    # LAST_RUN_ID indexes in key order, not insert order; measured 1M rows 3.3 s -> 2.3 s
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # the staging rows' digests, computed by the database (pipeline.db.digests)
    dbapi_connection.create_function(HASH_FUNCTION, -1, row_hash, deterministic=True)


def before_create_tables(connection: Connection) -> None:
    """Nothing: SQLite's writers are serialised by its own database lock."""


def classify(cause: str) -> str:
    return timeout_named(cause, TIMEOUTS)


def transient(exc: BaseException | None) -> bool:
    # a file, not a server: its busy timeout has waited already, and a full disk or a
    # read-only file stays so
    return False


def cancel(dbapi_connection: Any) -> None:
    dbapi_connection.interrupt()


def abandon(dbapi_connection: Any) -> None:
    """A file has no server to drop: interrupt again (each VDBE step checks the flag)."""
    dbapi_connection.interrupt()


def loader(tables: JobTables, layout: Layout, amount: str, dialect: Dialect,
           batch_size: int) -> BulkLoader:
    # integer minor units and ISO date strings bind to SQLite as they are
    return SqliteLoader(tables, layout, dialect)


ROWS_PER_INSERT = 250  # 1M rows: 1.22-1.26 s from 100 to 3,640 rows a statement


BATCH_CONSTANTS = ("run_id", "worker_id")  # the same in every row of a batch


class SqliteLoader(BulkLoader):
    """Rows travel as one flat list of their values (``unmemoized``) and are inserted
    ``ROWS_PER_INSERT`` to a statement (``insert_rows``). 1M staging rows: 1.2 s against
    1.8 s for ``executemany`` of one-row statements, in the writer, SQLite's bottleneck.

    A batch's run id and worker id, the same in all its rows, travel once and are written
    into the statement as literals instead of being bound to every row: 1M rows inserted
    in 0.90 s against 1.12 s, unpickled in 0.39 s against 0.58 s (a third smaller)."""

    def __init__(self, tables: JobTables, layout: Layout, dialect: Dialect) -> None:
        super().__init__(tables, layout, dialect)
        names = [c.name for c in self.table.columns]
        self._constant = [names.index(name) for name in BATCH_CONSTANTS]
        self._varying = [at for at in range(len(names)) if at not in self._constant]
        self._statements: dict[tuple[str, int], str] = {}

    def _payload(self, staged: list[list[Any]]) -> bytes:
        # each column's values dealt into their places: a C loop per column
        width, rows = len(self._varying), len(staged[0])
        flat: list[Any] = [None] * (width * rows)
        for at, column in enumerate(self._varying):
            flat[at::width] = staged[column]
        constants = [staged[at][0] if rows else None for at in self._constant]
        return unmemoized((constants, flat))

    def unpack(self, payload: bytes) -> tuple[str, list[Any]]:
        """A payload's statement (one row's INSERT, its batch's run id and worker id
        written in) and the values it binds, row after row."""
        (run_id, worker_id), values = pickle.loads(payload)
        return self.statement(run_id, worker_id), values

    def statement(self, run_id: str, worker_id: int) -> str:
        key = (run_id, worker_id)
        if key not in self._statements:
            written = {"run_id": "'" + str(run_id).replace("'", "''") + "'",
                       "worker_id": str(int(worker_id))}
            head, _, _ = self.insert_sql.rpartition(" VALUES ")
            one = ", ".join(written.get(c.name, "?") for c in self.table.columns)
            self._statements[key] = f"{head} VALUES ({one})"
        return self._statements[key]

    def decode(self, payload: bytes) -> list[tuple[Any, ...]]:
        constants, values = pickle.loads(payload)
        row: list[Any] = [None] * len(self.table.columns)
        for at, value in zip(self._constant, constants, strict=True):
            row[at] = value
        rows = []
        for varying in zip(*[iter(values)] * len(self._varying), strict=True):
            for at, value in zip(self._varying, varying, strict=True):
                row[at] = value
            rows.append(tuple(row))
        return rows

    def load(self, connection: Any, payload: bytes) -> LoadResult:
        statement, values = self.unpack(payload)
        cursor = connection.cursor()
        try:
            insert_rows(cursor, statement, values, len(self._varying))
        finally:
            cursor.close()
        return LoadResult(len(values) // len(self._varying))


def insert_rows(cursor: Any, insert_sql: str, values: Sequence[Any], width: int) -> None:
    """Insert the rows whose ``width`` values each follow one another in ``values``, with
    ``insert_sql`` (one row's INSERT ... VALUES (?, ...)) widened to many rows a statement,
    as many as SQLite's limit on a statement's parameters allows."""
    head, _, one = insert_sql.rpartition(" VALUES ")
    limit = cursor.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = max(1, min(ROWS_PER_INSERT, limit // width))
    step = per * width
    whole = len(values) // step * step
    if whole:
        cursor.executemany(f"{head} VALUES {', '.join([one] * per)}",
                           (values[i:i + step] for i in range(0, whole, step)))
    if whole < len(values):
        rest = (len(values) - whole) // width
        cursor.execute(f"{head} VALUES {', '.join([one] * rest)}", values[whole:])


def money_type(dialect: Dialect, precision: int, scale: int) -> TypeEngine[Any]:
    return dialect.type_descriptor(BigInteger())


def key_sorts_as_bytes(connection: Connection, table: Table, key: tuple[str, ...]) -> bool:
    return False  # its BINARY collation compares bytes already


def merging(connection: Connection) -> AbstractContextManager[None]:
    return nullcontext()  # its plan walks FINAL's primary key in the source's key order


def rare(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    # A FINAL first filled by one load (a migration, the night benchmark's base) and
    # ANALYZEd has one LAST_RUN_ID for most rows: the statistics say a run id matches
    # millions of rows, and the planner scans the whole table for one night's rows rather
    # than use their index (FINAL 4M + 1M merged: 0.42 s against 0.32 s, and the gap grows
    # with FINAL). unlikely() changes nothing but the planner's estimate. Untyped: a
    # Boolean function would be rendered "unlikely(...) = 1", which the planner ignores
    hinted: ColumnElement[bool] = func.unlikely(condition)
    return hinted


def read_beside(connection: Connection) -> None:
    # a read transaction holds the file's SHARED lock from its first read to its end; a
    # writer wanting to write its pages to the file meanwhile waits (its busy handler) or,
    # past the busy timeout, keeps them in its cache: it cannot shut this reader out. Taken
    # later, the lock could wait for the MERGE's transaction, which waits for this reader
    connection.exec_driver_sql("BEGIN")
    connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()


def repeated_key(exc: BaseException) -> bool:
    return False  # never refused: the MERGE's guard skips the repeat (pipeline.db.merge)


def staging_digests(connection: Connection, staging: Table,
                    run_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    query = select(staging.c.source_line, staging.c.worker_id,
                   _digest(list(staging.columns))).where(
        staging.c.run_id == run_id)
    found = np.array(connection.execute(query).all(), dtype=np.int64).reshape(-1, 3)
    return found[:, 0], found[:, 1], found[:, 2]


def row_digest(connection: Connection, staging: Table) -> ColumnElement[Any]:
    return _digest(list(staging.columns))


def value_digest(connection: Connection,
                 columns: list[ColumnElement[Any]]) -> ColumnElement[Any]:
    """The processors' ``row_digests`` of the stored values (BulkLoader); 2**31 rows of
    these 32-bit digests fit SQLite's integer SUM."""
    return _digest(columns)


def _digest(columns: list[ColumnElement[Any]]) -> ColumnElement[Any]:
    """digests.row_digests in SQL: the registered row hash over the values as stored, in
    the loader's column order, folded as np.fmod folds it (SQLite's % truncates too)."""
    hashed = getattr(func, HASH_FUNCTION)(*columns, type_=BigInteger)
    return hashed % literal(FOLD, BigInteger)


def lines_in(column: ColumnElement[Any],
             lines: list[int]) -> tuple[ColumnElement[bool], Any] | None:
    values: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam("lines")))
    return column.in_(values), json.dumps(list(lines))


@contextmanager
def job_lock(engine: Engine, table: Table, job_name: str,
             run_id: str | None) -> Iterator[HeldLock]:
    with _file_lock(engine, job_name):
        yield HeldLock(engine, table, job_name, run_id)


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
    # a run locks before it touches the database, so a first run creates the file here,
    # empty, as SQLite would (an empty file is an empty database); its folder was checked
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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
