"""PostgreSQL: exact NUMERIC money, COPY for the load, a row lock for the job, session
timeouts, and a staging partition per run (pipeline.db.partitions)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import (
    Connection,
    Date,
    Engine,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    event,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine, UserDefinedType

from pipeline.db.bulk import BulkLoader, Encoded, LoadResult, StagingBatch
from pipeline.db.copy_text import copy_payload, copy_text
from pipeline.db.dialects import DialectProfile
from pipeline.db.digests import text_hashes
from pipeline.db.engine import milliseconds, timeout_named
from pipeline.db.lock import HeldLock, driver_error, row_lock
from pipeline.layouts.fields import FieldType
from pipeline.money import format_minor

if TYPE_CHECKING:
    from pipeline.db.engine import Timeouts
    from pipeline.db.tables import JobTables
    from pipeline.layouts.fields import Layout

# COPY from two processes measured 1.04M rows/s against 616k from one (facts.md)
profile = DialectProfile("postgresql", parallel_writers=True, batch_size=10_000,
                         max_identifier_length=63, money_as_minor_units=False,
                         split_money_sums=False, staging_partitions=True)

CREATE_TABLES_LOCK = 0x706970656C696E65  # "pipeline": the advisory lock key for DDL
PG_LOCK_NOT_AVAILABLE = "55P03"
PG_UNIQUE_VIOLATION, PG_CARDINALITY_VIOLATION = "23505", "21000"

# what PostgreSQL says when a lock or statement bound ran out (see engine.Timeouts), or
# when it refused or lost the connection
TIMEOUTS = (
    ("lock timeout", "a lock held by another session was not released in time "
                     "(database.lock_timeout)"),
    ("statement timeout", "the statement did not finish within database.statement_timeout "
                          "(running, or waiting for a lock another session holds)"),
    ("too many clients", "the server refused a connection: its connection slots are full "
                         "(max_connections, or the database's CONNECTION LIMIT)"),
    ("too many connections for", "the server refused a connection: the database's or the "
                                 "role's CONNECTION LIMIT is reached"),
    ("remaining connection slots", "the server refused a connection: its connection slots "
                                   "are full (max_connections)"),
    ("the database system is", "the server is not accepting connections (restarting or "
                               "shutting down)"),
    ("Connection refused", "the server is not answering (stopped, or restarting)"),
    ("terminating connection", "the server ended the run's session (restart, shutdown or "
                               "pg_terminate_backend)"),
    ("server closed the connection", "the connection to the server was lost"),
    ("abandoned by the run", "the server did not answer within database.statement_timeout "
                             "plus the watchdog's margin: the run cancelled the statement "
                             "and dropped its connection"),
)
# class 08: connection exceptions; 57P01-57P03: admin shutdown, crash shutdown, cannot
# connect now; 53300: too many connections
TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03", "53300")

# Every connection: a server that vanished (host down, network cut) is noticed within
# keepalives_idle + interval x count seconds, and data it never acknowledges fails the
# connection after tcp_user_timeout, where a socket would wait forever. A frozen server
# still acknowledges at the TCP level: the parent's watchdog (pipeline.db.watchdog) bounds
# that. An operator's own settings in the URL win.
CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 30_000}
# PostgreSQL >= 14 checks every this many ms that the client of a running statement is
# still there, and abandons the statement (and its locks) if not: a killed run's MERGE
# ends within seconds instead of running on to statement_timeout, holding the job lock
CLIENT_CHECK_MS = 5_000


def database_file(url: URL) -> str | None:
    return None


def engine_kwargs(url: URL, timeouts: Timeouts | None) -> dict[str, Any]:
    args: dict[str, Any] = {k: v for k, v in CONNECT_ARGS.items() if k not in url.query}
    if timeouts is not None:
        # after the URL's own ``options`` (connect_args would replace them): a setting
        # the operator put in the URL stays, ours are added
        own = url.query.get("options", "")
        own = " ".join(own) if isinstance(own, tuple) else own
        args["options"] = (f"{own} -c lock_timeout={milliseconds(timeouts.lock)} "
                           f"-c statement_timeout={milliseconds(timeouts.statement)}").strip()
    return {"connect_args": args}


def on_engine(engine: Engine, timeouts: Timeouts | None) -> None:
    """Each connection's session settings (the timeouts are connect options)."""
    event.listen(engine, "connect", _session_settings)


def _session_settings(dbapi_connection: Any, _record: Any) -> None:
    """ISO dates, whatever the server, database or role sets: a date's text is then
    COPY's, which the digests hash (``_copy_text``); the client check, where the server
    has it."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET DateStyle = 'ISO, YMD'")
        if dbapi_connection.info.server_version >= 140000:
            cursor.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_MS}")
    finally:
        cursor.close()
    dbapi_connection.commit()  # session settings, outside the run's transactions


def before_create_tables(connection: Connection) -> None:
    # two first runs at once would both try to create the tables; PostgreSQL's
    # DDL is transactional, so a transaction-scoped lock serialises them
    connection.execute(select(func.pg_advisory_xact_lock(CREATE_TABLES_LOCK)))


def classify(cause: str) -> str:
    return timeout_named(cause, TIMEOUTS)


def transient(exc: BaseException | None) -> bool:
    import psycopg

    error = driver_error(exc)
    state = getattr(error, "sqlstate", None)
    if state is None:  # said by the client: refused, lost, timed out
        return isinstance(error, psycopg.OperationalError)
    return state.startswith(TRANSIENT_STATES)


def cancel(dbapi_connection: Any) -> None:
    # a bounded wait for the postmaster's reply: the server may be as silent as the backend
    dbapi_connection.cancel_safe(timeout=5.0)


def abandon(dbapi_connection: Any) -> None:
    """Shut the socket down: psycopg's wait for the reply ends with an OperationalError
    ("server closed the connection"), and the server, when it runs again, finds its client
    gone and rolls the transaction back."""
    sock = socket.socket(fileno=os.dup(dbapi_connection.fileno()))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()


def loader(tables: JobTables, layout: Layout, amount: str, dialect: Dialect,
           batch_size: int) -> BulkLoader:
    return PostgresLoader(tables, layout, dialect)


def job_lock(engine: Engine, table: Table, job_name: str,
             run_id: str | None) -> AbstractContextManager[HeldLock]:
    return row_lock(engine, table, job_name, run_id, lock_busy)


def lock_busy(exc: BaseException | None) -> bool:
    return getattr(driver_error(exc), "sqlstate", None) == PG_LOCK_NOT_AVAILABLE


def repeated_key(exc: BaseException) -> bool:
    # a key inserted twice, or a row the MERGE would update twice
    return getattr(driver_error(exc), "sqlstate", None) in (PG_UNIQUE_VIOLATION,
                                                             PG_CARDINALITY_VIOLATION)


def money_type(dialect: Dialect, precision: int, scale: int) -> TypeEngine[Any]:
    return dialect.type_descriptor(Numeric(precision, scale, asdecimal=True))


class _Lines(UserDefinedType[str]):
    """BIGINT[] bound as its text literal ``{1,2,...}``, cast in the statement: PostgreSQL
    reads it as one constant array (hashed when filtering: the plan shows the constant),
    and psycopg does not check every item as its list dumper does. 209,344 lines among
    1M staging rows: the repeated lines' lookup took 0.76 s against 0.86 s (medians of
    8, alternating; the literal is written in 0.03 s, the list was dumped in 0.2 s)."""

    cache_ok = True
    render_bind_cast = True

    def get_col_spec(self, **kw: Any) -> str:
        return "BIGINT[]"


def lines_in(column: ColumnElement[Any],
             lines: list[int]) -> tuple[ColumnElement[bool], Any] | None:
    return (column == any_(bindparam("lines", type_=_Lines())),
            "{" + ",".join(map(str, lines)) + "}")


# The MERGE's source is in key order (pipeline.db.merge): probing FINAL's primary key row
# by row then walks it in order, O(tonight x log FINAL). Left to itself, the planner
# hashes tonight's rows and scans all of FINAL (the plain MERGE, 1M rows into 4M: 15.1 s
# against 8.3 s) or merge-joins over its whole primary key: both grow with FINAL.
_MERGE_PLAN = {"enable_hashjoin": "off", "enable_mergejoin": "off"}


# Collations (libc's) that order text by its bytes: glibc's C.UTF-8 compares code points,
# which is UTF-8's byte order. PostgreSQL sorts text with strcoll() in any collation but
# "C" and "POSIX"; the MERGE's source sorted COLLATE "C" is in the same order (its
# probes still walk FINAL's primary key in order) for less: 1M keys in 1.3 s against
# 2.0 s under C.UTF-8 (pipeline.db.merge.sort_key).
_BYTE_ORDER = {"c", "posix", "c.utf8"}


def key_sorts_as_bytes(connection: Connection, table: Table, key: tuple[str, ...]) -> bool:
    """Every text column of ``table``'s key is in a collation that orders by bytes."""
    found = connection.execute(text(
        "SELECT CASE c.collprovider WHEN 'd' THEN d.datlocprovider ELSE c.collprovider END, "
        "CASE c.collprovider WHEN 'd' THEN d.datcollate ELSE c.collcollate END "
        "FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation "
        "JOIN pg_database d ON d.datname = current_database() "
        "WHERE a.attrelid = to_regclass(:table) AND a.attname = ANY(:columns)"),
        {"table": connection.dialect.identifier_preparer.format_table(table),
         "columns": [table.c[k].name for k in key]}).all()
    return all(provider == "c" and (collation or "").lower().replace("-", "") in _BYTE_ORDER
               for provider, collation in found)


def rare(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return condition  # its statistics count the run ids of FINAL (autovacuum's ANALYZE)


def read_beside(connection: Connection) -> None:
    """Readers and writers see their own snapshots (MVCC): no one waits. One process:
    the digest pass over a night's staging rows is planned with two parallel workers,
    which took the cores the MERGE runs on (the night benchmark's MERGE stage 0.6-0.9 s
    longer); for this transaction only."""
    connection.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")


@contextmanager
def merging(connection: Connection) -> Iterator[None]:
    names = list(_MERGE_PLAN)
    before = connection.execute(select(*(func.current_setting(n) for n in names))).one()
    connection.execute(select(*(func.set_config(n, v, True) for n, v in _MERGE_PLAN.items())))
    yield
    # transaction-local settings, put back for the rest of the transaction (the checks,
    # the audit); after an error the rollback undoes them
    connection.execute(select(*(func.set_config(n, v, True)
                                for n, v in zip(names, before, strict=True))))


def staging_digests(connection: Connection, staging: Table,
                    run_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of the run's rows: its source line, worker id and digest, computed in the
    server (``row_digest``)."""
    query = select(staging.c.source_line, staging.c.worker_id,
                   row_digest(connection, staging)).where(staging.c.run_id == run_id)
    found = np.array(connection.execute(query).all(), dtype=np.int64).reshape(-1, 3)
    return found[:, 0], found[:, 1], found[:, 2]


def row_digest(connection: Connection, staging: Table) -> ColumnElement[Any]:
    """digests.text_hashes of each COPY line, in SQL: ``hashtext()`` of the row's COPY
    text as the loader wrote it (``_copy_text``). All of it in the server: reading the
    rows back with COPY TO STDOUT to digest them in Python took 3.4-3.7 s for 1M rows."""
    return _hashed(connection, _copy_text(list(staging.columns)))


def _hashed(connection: Connection, text: ColumnElement[Any]) -> ColumnElement[Any]:
    """``hashtext()`` of the text's UTF-8 bytes, as the processors hash the COPY text
    they send (pipeline.db.digests.text_hashes). It hashes the server's bytes: on a
    database that is not UTF-8, they are made UTF-8 first (convert_from ... SQL_ASCII
    keeps the bytes as they are). 1M rows, one process: 0.64 s, against 1.90 s for the
    md5 of the same text, its first 32 bits as an integer (2026-12-05). The server's
    encoding is what it reported when the session started: no query for it."""
    driver: Any = connection.connection.driver_connection  # psycopg's
    encoding = driver.info.parameter_status("server_encoding")
    if encoding != "UTF8":
        text = func.convert_from(func.convert_to(text, literal_column("'UTF8'")),
                                 literal_column("'SQL_ASCII'"))
    return func.hashtext(text, type_=Integer)


def _copy_text(columns: list[Any]) -> ColumnElement[Any]:
    """The row as COPY's text format writes it, and so as the loader's lines read:
    tab-separated, NULL as \\N, dates in ISO (the session's DateStyle), a text's
    backslash (and tab, which no loaded text holds) escaped.

    A NOT NULL column of letters and digits only (``plain``, pipeline.db.tables) is not
    escaped: its values hold nothing to escape, and a changed value holding a tab or a
    backslash differs from the processors' text all the same. Both shortcuts halve the
    cost of a pass that digests 1M rows: 0.50 s against 0.96 s for to_char and replace().
    """
    parts: list[ColumnElement[Any]] = []
    for c in columns:
        if isinstance(c.type, Date):
            text: ColumnElement[Any] = cast(c, Text)
        elif isinstance(c.type, String) and c.info.get("plain") and not c.nullable:
            text = c
        elif isinstance(c.type, String):
            text = func.replace(func.replace(c, literal_column("E'\\\\'"),
                                             literal_column("E'\\\\\\\\'")),
                                literal_column("E'\\t'"), literal_column("E'\\\\t'"))
        else:
            text = cast(c, Text)
        parts.append(func.coalesce(text, literal_column("E'\\\\N'")) if c.nullable else text)
    return func.concat_ws(literal_column("E'\\t'"), *parts)


def value_digest(connection: Connection,
                 columns: list[ColumnElement[Any]]) -> ColumnElement[Any]:
    """``hashtext()`` of the stored columns' part of the COPY line (``_copy_text``; NULL
    and '' apart), as the processors digest it (``PostgresLoader.encode_digested``)."""
    return _hashed(connection, _copy_text(columns))


class PostgresLoader(BulkLoader):
    """``COPY ... FROM STDIN`` with text the processors build (~10x executemany): in
    numpy (pipeline.db.copy_text, 0.8 us a row with its digests), else joined here."""

    def __init__(self, tables: JobTables, layout: Layout, dialect: Dialect) -> None:
        super().__init__(tables, layout, dialect)
        names = ", ".join(dialect.identifier_preparer.quote(c.name) for c in self.table.columns)
        self.copy_sql = f"COPY {dialect.identifier_preparer.format_table(self.table)} " \
                        f"({names}) FROM STDIN"

    def encode(self, batch: StagingBatch) -> bytes:
        """COPY text format: one line per row, tab-separated, \\N for NULL."""
        built = copy_payload(batch.run_id, batch.lines, batch.worker_id, self.fields,
                             batch.columns)
        if built is not None:
            return built
        return self._encoded([line.encode("utf-8") for line in self._lines(batch)[0]])

    def encode_digested(self, batch: StagingBatch) -> Encoded:
        """The COPY text and each line's digests, as the server computes them over the
        stored row (``row_digest``) and over its stored columns (``value_digest``):
        the hash of each line and of its stored columns' part. Built in numpy
        (pipeline.db.copy_text) unless the batch holds what only Python writes."""
        built = copy_text(batch.run_id, batch.lines, batch.worker_id, self.fields,
                          batch.columns)
        if built is not None:
            return Encoded(built.payload, built.line_hashes, built.value_hashes)
        lines, values = self._lines(batch)
        encoded = [line.encode("utf-8") for line in lines]
        return Encoded(self._encoded(encoded), text_hashes(encoded),
                       text_hashes([value.encode("utf-8") for value in values]))

    def _lines(self, batch: StagingBatch) -> tuple[list[str], list[str]]:
        """Each row's COPY line, and its stored columns' part (the line less run id,
        source line and worker id).

        Joined by str.join over column lists (C loops): twice as fast as chaining numpy
        string additions, which copy ever-wider arrays once per column.
        """
        n = len(batch.lines)
        values = list(map("\t".join, zip(*(self._text(f, batch.columns[f.name])
                                            for f in self.fields), strict=True)))
        lines = list(map("\t".join, zip([batch.run_id] * n, map(str, batch.lines.tolist()),
                                         [str(batch.worker_id)] * n, values, strict=True)))
        return lines, values

    @staticmethod
    def _encoded(lines: list[bytes]) -> bytes:
        return b"\n".join(lines) + b"\n" if lines else b""

    @staticmethod
    def _text(field: Any, column: np.ndarray) -> list[str]:
        if field.optional:  # an OCCURS DEPENDING ON entry: None past the record's count
            present = PostgresLoader._text(replace(field, optional=False),
                                           np.array([v for v in column.tolist() if v is not None]))
            shown = iter(present)
            return ["\\N" if v is None else next(shown) for v in column.tolist()]
        if field.type is FieldType.AMOUNT:
            return [format_minor(v, field.scale) for v in column.tolist()]
        if field.type is FieldType.TEXT:
            # printable text (ASCII, or a code page's letters) holds no tab or newline, but a
            # backslash must be doubled
            return [v.replace("\\", "\\\\") if v else "\\N" for v in column.tolist()]
        return column.tolist()

    def load(self, connection: Any, payload: bytes) -> LoadResult:
        cursor = connection.cursor()
        try:
            if cursor.connection.info.encoding != "utf-8":  # the payload is UTF-8 (encode)
                cursor.execute("SET client_encoding TO 'UTF8'")
            with cursor.copy(self.copy_sql) as copy:
                copy.write(payload)
        finally:
            cursor.close()
        return LoadResult(payload.count(b"\n"))
