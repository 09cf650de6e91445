"""Oracle: python-oracledb in thin mode, NUMBER money, array ``executemany`` with
``batcherrors``, a row lock for the job, and the driver's ``call_timeout``.

Its list partitioning is a licensed option (Partitioning, Enterprise Edition), so Oracle
keeps a plain staging table, purged as SQLite's (pipeline.db.partitions).
"""

from __future__ import annotations

import datetime as dt
import pickle
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, Date, Engine, Table, event, select
from sqlalchemy.dialects.oracle import NUMBER
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from pipeline.db.bulk import BulkLoader, LoadResult, unmemoized
from pipeline.db.dialects import DialectProfile
from pipeline.db.digests import row_digests
from pipeline.db.engine import milliseconds, timeout_named
from pipeline.db.lock import HeldLock, driver_error, row_lock
from pipeline.db.types import Money
from pipeline.layouts.fields import FieldType

if TYPE_CHECKING:
    from pipeline.db.engine import Timeouts
    from pipeline.db.tables import JobTables
    from pipeline.layouts.fields import Layout

# python-oracledb's batcherrors returns at most 65,535 errors per call: stay below it;
# 30-byte identifiers still apply before Oracle 12.2.
profile = DialectProfile("oracle", parallel_writers=True, batch_size=50_000,
                         max_identifier_length=30, money_as_minor_units=False,
                         split_money_sums=False, line_lists=False)

ORACLE_CHUNK = 50_000
ORA_RESOURCE_BUSY = 54  # ORA-00054: resource busy and acquire with NOWAIT specified
ORA_UNIQUE_CONSTRAINT = 1  # ORA-00001: unique constraint violated (a key inserted twice)
ORA_UNSTABLE_ROWS = 30926  # ORA-30926: unable to get a stable set of rows (updated twice)

# what python-oracledb says when its call_timeout ran out (see engine.Timeouts)
TIMEOUTS = (
    ("DPI-1067", "the call ran longer than database.lock_timeout/statement_timeout"),
)


def database_file(url: URL) -> str | None:
    return None


def engine_kwargs(url: URL, timeouts: Timeouts | None) -> dict[str, Any]:
    return {"thick_mode": None}  # python-oracledb thin mode: no Instant Client needed


def on_engine(engine: Engine, timeouts: Timeouts | None) -> None:
    if timeouts is None:
        return
    bound = max(timeouts.lock, timeouts.statement) if timeouts.statement else 0
    event.listen(engine, "connect", lambda dbapi, _record: setattr(
        dbapi, "call_timeout", milliseconds(bound)))


def before_create_tables(connection: Connection) -> None:
    """Nothing: only PostgreSQL serialises two first runs' DDL (its DDL is transactional)."""


def classify(cause: str) -> str:
    return timeout_named(cause, TIMEOUTS)


def transient(exc: BaseException | None) -> bool:
    # SQLAlchemy's oracle dialect recognises a lost connection (is_disconnect)
    return bool(getattr(exc, "connection_invalidated", False))


def cancel(dbapi_connection: Any) -> None:
    dbapi_connection.cancel()


def abandon(dbapi_connection: Any) -> None:
    """The driver's call_timeout (on_engine) already bounds every call on the client."""
    dbapi_connection.cancel()


def loader(tables: JobTables, layout: Layout, amount: str, dialect: Dialect,
           batch_size: int) -> BulkLoader:
    return OracleLoader(tables, layout, dialect, amount, batch_size)


def job_lock(engine: Engine, table: Table, job_name: str,
             run_id: str | None) -> AbstractContextManager[HeldLock]:
    return row_lock(engine, table, job_name, run_id, lock_busy)


def lock_busy(exc: BaseException | None) -> bool:
    orig = driver_error(exc)
    error = orig.args[0] if orig is not None and orig.args else None
    return getattr(error, "code", None) == ORA_RESOURCE_BUSY


def repeated_key(exc: BaseException) -> bool:
    orig = driver_error(exc)
    error = orig.args[0] if orig is not None and orig.args else None
    return getattr(error, "code", None) in (ORA_UNIQUE_CONSTRAINT, ORA_UNSTABLE_ROWS)


def money_type(dialect: Dialect, precision: int, scale: int) -> TypeEngine[Any]:
    # NUMBER(p, s): what a DBA reads in Oracle's own dictionary
    return NUMBER(precision, scale, asdecimal=True)


def rare(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return condition  # not measured here: the optimizer's own estimate


def read_beside(connection: Connection) -> None:
    """Nothing: readers and writers see their own snapshots (multiversion reads)."""


def key_sorts_as_bytes(connection: Connection, table: Table, key: tuple[str, ...]) -> bool:
    return False  # not measured here: its own NLS_SORT


def merging(connection: Connection) -> AbstractContextManager[None]:
    return nullcontext()  # not measured here: the optimizer's own plan


def lines_in(column: ColumnElement[Any],
             lines: list[int]) -> tuple[ColumnElement[bool], Any] | None:
    return None  # no one-parameter list of lines: the caller ranks every row instead


def staging_digests(connection: Connection, staging: Table,
                    run_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run's rows fetched and digested as the loader's rows (Decimal amounts, dates):
    no function of the server's computes Python's hash. Slow, and only on Oracle."""
    query = select(*staging.columns).where(staging.c.run_id == run_id)
    convert = [_as_loaded(c) for c in staging.columns]
    ids, rows = [], []
    for row in connection.execute(query.execution_options(yield_per=50_000)):
        rows.append(tuple(f(v) for f, v in zip(convert, row, strict=True)))
        ids.append((int(row[1]), int(row[2])))
    found = np.array(ids, dtype=np.int64).reshape(-1, 2)
    return found[:, 0], found[:, 1], row_digests(rows)


def row_digest(connection: Connection, staging: Table) -> None:
    return None  # Python's hash, not the server's: staging_digests fetches the rows


def value_digest(connection: Connection, columns: list[ColumnElement[Any]]) -> None:
    return None  # no server here to prove a hash on: the exact join decides


def _as_loaded(column: Any) -> Any:
    """A fetched value as OracleLoader's rows hold it (its ``_values``)."""
    if isinstance(column.type, Money):
        scale = column.type.scale
        return lambda v: None if v is None else Decimal(int(v)).scaleb(-scale)
    if isinstance(column.type, Date):
        return lambda v: v.date() if isinstance(v, dt.datetime) else v
    return lambda v: v


class OracleLoader(BulkLoader):
    """python-oracledb array ``executemany`` with ``batcherrors=True``: a refused row is
    counted, not fatal, and the reconciliation shows it."""

    def __init__(self, tables: JobTables, layout: Layout, dialect: Dialect, amount: str,
                 batch_size: int) -> None:
        super().__init__(tables, layout, dialect)
        # getbatcherrors() reports at most 65,535 errors per call: stay below it
        self.chunk = min(batch_size, ORACLE_CHUNK)
        self.amount_scale = layout.field(amount).scale
        self.amount_index = 3 + tables.business_columns.index(amount)

    def _values(self, field: Any, column: np.ndarray) -> list[Any]:
        if field.type is FieldType.AMOUNT:
            # None: an OCCURS DEPENDING ON entry past the record's count (NULL)
            return [None if v is None else Decimal(v).scaleb(-field.scale)
                    for v in column.tolist()]
        if field.type is FieldType.DATE:
            return [None if v is None else dt.date.fromisoformat(v) for v in column.tolist()]
        return super()._values(field, column)

    def _payload(self, staged: list[list[Any]]) -> bytes:
        # Decimal and date values, which marshal cannot carry
        return unmemoized(list(zip(*staged, strict=True)))

    def decode(self, payload: bytes) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = pickle.loads(payload)
        return rows

    def load(self, connection: Any, payload: bytes) -> LoadResult:
        rows = self.decode(payload)
        refused: list[int] = []
        cursor = connection.cursor()
        try:
            for start in range(0, len(rows), self.chunk):
                cursor.executemany(self.insert_sql, rows[start : start + self.chunk],
                                   batcherrors=True)
                refused += [start + e.offset for e in cursor.getbatcherrors()]
        finally:
            cursor.close()
        refused_amount = sum(int(rows[i][self.amount_index].scaleb(self.amount_scale))
                             for i in refused)
        return LoadResult(len(rows) - len(refused), len(refused), refused_amount)
