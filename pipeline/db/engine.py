"""Engines: one place that knows how to connect to each database and how to say so safely."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from pipeline.config import AUDIT_TABLES, JobConfig
from pipeline.db.dialects import profile_for
from pipeline.db.tables import JobTables
from pipeline.errors import ConfigError, DatabaseFailure

SQLITE_BUSY_TIMEOUT_S = 60
SQLITE_CACHE_KIB = 64 * 1024
CREATE_TABLES_LOCK = 0x706970656C696E65  # "pipeline": the advisory lock key for DDL


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("database URL is not a SQLAlchemy URL (e.g. sqlite:///file.db, "
                          "postgresql+psycopg://user@host/db, oracle+oracledb://...)") from None
    try:
        profile_for(parsed.get_backend_name())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as logs and messages may show it: never the password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


@dataclass(frozen=True)
class Timeouts:
    """Bounds on the parent's own SQL, in seconds (0 = no limit): how long it waits for a
    lock another session holds, and how long one statement may run. A run that hits one
    ends with exit 3 and says which (``database_errors``), instead of hanging."""

    lock: float
    statement: float

    @classmethod
    def of(cls, config: JobConfig) -> Timeouts:
        return cls(config.lock_timeout, config.statement_timeout)


def make_engine(url: str | URL, timeouts: Timeouts | None = None) -> Engine:
    """An engine for one process; never carried across a fork (NullPool, made per process).

    ``timeouts`` bound every statement of the engine's sessions, each database its own way:
    PostgreSQL ``lock_timeout``/``statement_timeout`` (session settings at connect), SQLite
    its busy timeout (a lock only: a statement runs unbounded), Oracle the driver's
    ``call_timeout`` (one bound for both: Oracle has no session lock timeout for DML).
    """
    parsed = parse_url(str(url)) if isinstance(url, str) else url
    kwargs: dict[str, Any] = {"poolclass": NullPool}
    backend = parsed.get_backend_name()
    if backend == "postgresql" and timeouts is not None:
        # after the URL's own ``options`` (connect_args would replace them): a setting
        # the operator put in the URL stays, ours are added
        own = parsed.query.get("options", "")
        own = " ".join(own) if isinstance(own, tuple) else own
        kwargs["connect_args"] = {"options": f"{own} -c lock_timeout={_ms(timeouts.lock)} "
                                             f"-c statement_timeout={_ms(timeouts.statement)}"
                                  .strip()}
    if backend == "sqlite":
        folder = Path(parsed.database or ".").parent
        if parsed.database and parsed.database != ":memory:" and not folder.is_dir():
            # a typo'd path must not quietly start an empty FINAL somewhere new (the CLI
            # creates the job's output folder, where the default database lives, first)
            raise ConfigError(f"database file {parsed.database}: folder {folder} does not "
                              "exist (check --db or database.url)")
        busy = SQLITE_BUSY_TIMEOUT_S if timeouts is None or not timeouts.lock else timeouts.lock
        kwargs["connect_args"] = {"timeout": busy}
    elif backend == "oracle":
        kwargs["thick_mode"] = None  # python-oracledb thin mode: no Instant Client needed
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        raise ConfigError(f"no driver for {safe_url(parsed)}: {exc}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if backend == "oracle" and timeouts is not None:
        bound = max(timeouts.lock, timeouts.statement) if timeouts.statement else 0
        event.listen(engine, "connect", lambda dbapi, _record: setattr(
            dbapi, "call_timeout", _ms(bound)))
    return engine


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


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


def create_missing_tables(engine: Engine, tables: JobTables) -> None:
    limit = profile_for(engine.dialect).max_identifier_length
    for table in tables.metadata.sorted_tables:
        for name in [table.name, *table.columns.keys(), *(i.name for i in table.indexes)]:
            if name and len(name) > limit:
                raise ConfigError(f"{name!r} is longer than {engine.dialect.name}'s "
                                  f"{limit}-character identifier limit")
    with database_errors(engine, "creating the job's tables"):
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # two first runs at once would both try to create the tables; PostgreSQL's
                # DDL is transactional, so a transaction-scoped lock serialises them
                conn.execute(select(func.pg_advisory_xact_lock(CREATE_TABLES_LOCK)))
            tables.metadata.create_all(conn, checkfirst=True)
        inspector = inspect(engine)
        for table in tables.metadata.sorted_tables:
            _check_columns(table.name, {c.name for c in table.columns},
                           {c["name"].lower() for c in inspector.get_columns(table.name)},
                           engine.dialect.name)


def _check_columns(name: str, wanted: set[str], present: set[str], dialect: str) -> None:
    missing = wanted - present
    if not missing:
        return
    if name in AUDIT_TABLES:
        # years of audit rows: never "drop it"; the upgrade script only adds columns
        raise ConfigError(f"table {name} was created by an earlier version and lacks the "
                          f"columns {sorted(missing)}: run sql/{dialect}/upgrade_audit.sql "
                          "once (it adds them and keeps every row)")
    raise ConfigError(f"table {name} exists but lacks the columns {sorted(missing)}: "
                      f"drop it or run the DDL in sql/")


# what each database says when a lock or statement bound ran out (see Timeouts)
_TIMEOUTS = (
    ("lock timeout", "a lock held by another session was not released in time "
                     "(database.lock_timeout)"),
    ("database is locked", "a lock held by another connection was not released in time "
                           "(database.lock_timeout)"),
    ("statement timeout", "the statement ran longer than database.statement_timeout"),
    ("DPI-1067", "the call ran longer than database.lock_timeout/statement_timeout"),
)


def _timeout_named(cause: str) -> str:
    for said, meaning in _TIMEOUTS:
        if said in cause:
            return f"{meaning}: {cause}"
    return cause


@contextmanager
def database_errors(engine: Engine | URL | str, doing: str) -> Iterator[None]:
    """Turn a driver error into one sentence naming the step and the database."""
    try:
        yield
    except SQLAlchemyError as exc:
        target = engine.url if isinstance(engine, Engine) else engine
        cause = _timeout_named(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0])
        password = make_url(target).password if not isinstance(target, URL) else target.password
        if password:
            cause = cause.replace(str(password), "***")
        raise DatabaseFailure(f"database error while {doing} on {safe_url(target)}: "
                              f"{cause}") from exc
