"""Engines: one place that connects to a database (each one's options in its module in
pipeline.db.backends) and says so safely."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from pipeline.config import AUDIT_TABLES, JobConfig
from pipeline.db.backends import Backend, backend_for
from pipeline.db.tables import JobTables
from pipeline.errors import ConfigError, DatabaseFailure


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("database URL is not a SQLAlchemy URL (e.g. sqlite:///file.db, "
                          "postgresql+psycopg://user@host/db, oracle+oracledb://...)") from None
    try:
        backend_for(parsed.get_backend_name())
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

    ``timeouts`` bound every statement of the engine's sessions, each database its own way
    (its module in pipeline.db.backends): PostgreSQL ``lock_timeout``/``statement_timeout``
    (session settings at connect), SQLite its busy timeout (a lock only: a statement runs
    unbounded), Oracle the driver's ``call_timeout`` (one bound for both: Oracle has no
    session lock timeout for DML).
    """
    parsed = parse_url(str(url)) if isinstance(url, str) else url
    backend = backend_for(parsed.get_backend_name())
    kwargs: dict[str, Any] = {"poolclass": NullPool, **backend.engine_kwargs(parsed, timeouts)}
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        raise ConfigError(f"no driver for {safe_url(parsed)}: {exc}") from None
    backend.on_engine(engine, timeouts)
    return engine


def milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


def create_missing_tables(engine: Engine, tables: JobTables) -> None:
    backend = backend_for(engine.dialect.name)
    limit = backend.profile.max_identifier_length
    for table in tables.metadata.sorted_tables:
        for name in [table.name, *table.columns.keys(), *(i.name for i in table.indexes)]:
            if name and len(name) > limit:
                raise ConfigError(f"{name!r} is longer than {engine.dialect.name}'s "
                                  f"{limit}-character identifier limit")
    with database_errors(engine, "creating the job's tables"):
        with engine.begin() as conn:
            backend.before_create_tables(conn)
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


def timeout_named(cause: str, said_meaning: tuple[tuple[str, str], ...]) -> str:
    """``cause``, prefixed with what it means when it says a bound ran out (see Timeouts):
    ``said_meaning`` pairs what a database says with its meaning (its backend's)."""
    for said, meaning in said_meaning:
        if said in cause:
            return f"{meaning}: {cause}"
    return cause


def _backend_of(target: URL | str) -> Backend | None:
    try:
        return backend_for(make_url(target).get_backend_name())
    except (ArgumentError, ValueError):
        return None


@contextmanager
def database_errors(engine: Engine | URL | str, doing: str) -> Iterator[None]:
    """Turn a driver error into one sentence naming the step and the database."""
    try:
        yield
    except SQLAlchemyError as exc:
        target = engine.url if isinstance(engine, Engine) else engine
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        backend = _backend_of(target)
        cause = backend.classify(cause) if backend is not None else cause
        password = make_url(target).password if not isinstance(target, URL) else target.password
        if password:
            cause = cause.replace(str(password), "***")
        raise DatabaseFailure(f"database error while {doing} on {safe_url(target)}: "
                              f"{cause}") from exc
