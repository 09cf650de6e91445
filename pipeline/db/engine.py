"""Engines: one place that connects to a database (each one's options in its module in
pipeline.db.backends) and says so safely."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from pipeline.db.audit_tables import UPGRADABLE
from pipeline.db.backends import Backend, backend_for
from pipeline.db.tables import JobTables
from pipeline.errors import ConfigError, DatabaseFailure

T = TypeVar("T")
log = logging.getLogger(__name__)


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


MASK = "***"
_SENTINEL = "PIPELINEMASKEDSECRET"  # letters only: URL quoting leaves it as it is
# A query key names a secret when it contains one of these (psycopg/libpq: password,
# sslpassword; python-oracledb: password, newpassword, wallet_password, access_token;
# other drivers' passwd, pwd, client_secret, api_key...), or is one of the short forms.
_SECRET_WORDS = ("password", "passwd", "pwd", "passphrase", "secret", "token", "credential",
                 "apikey", "api_key", "private_key")
_SECRET_KEYS = frozenset({"pass", "pw", "psw", "auth"})
# a secret inside a value: a nested URL's user:password@ (libpq takes a whole connection
# URI as dbname; oracledb an https_proxy), or a key=value conninfo ("password=x host=h")
_NESTED_USERINFO = re.compile(r"(://[^/?#@\s:]*:)([^/?#@\s]+)(@)")
_NESTED_PAIR = re.compile(r"([A-Za-z_][\w-]*)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;]+)")


def secret_key(key: str) -> bool:
    """Whether a URL query key names a secret (a password, a key's passphrase, a token)."""
    name = key.lower().replace("-", "_")
    return name in _SECRET_KEYS or any(word in name for word in _SECRET_WORDS)


def _mask_nested(value: str, mask: str = MASK) -> str:
    value = _NESTED_USERINFO.sub(rf"\1{mask}\3", value)
    return _NESTED_PAIR.sub(lambda m: m[1] + m[2] + mask if secret_key(m[1]) else m[0], value)


def safe_url(url: str | URL) -> str:
    """The URL as logs, summaries, reports and messages may show it: every secret it
    carries masked, the password of ``user:password@`` and of any query parameter alike
    (``?password=``, ``?sslpassword=``, ``?wallet_password=``...). The one place a
    database URL is turned into text for people."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<unparseable database URL>"
    # rendering quotes the values: a placeholder that quoting leaves alone becomes the mask
    masked = parsed.set(query={key: tuple(_SENTINEL if secret_key(key) else
                                          _mask_nested(v, _SENTINEL) for v in _values(raw))
                               for key, raw in parsed.query.items()})
    if parsed.database and not _is_file(parsed):  # libpq reads a dbname with "=" as conninfo
        masked = masked.set(database=_mask_nested(parsed.database, _SENTINEL))
    return masked.render_as_string(hide_password=True).replace(_SENTINEL, MASK)


def url_secrets(url: str | URL) -> list[str]:
    """Every secret the URL carries, longest first: what a driver's message must not
    repeat (``database_errors`` masks them there)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return []
    found = {str(parsed.password)} if parsed.password else set()
    nested = [(key, v) for key, raw in parsed.query.items() for v in _values(raw)]
    if parsed.database and not _is_file(parsed):
        nested.append(("database", parsed.database))
    for key, value in nested:
        if secret_key(key):
            found.add(value)
        found.update(m[2] for m in _NESTED_USERINFO.finditer(value))
        found.update(m[3].strip("'") for m in _NESTED_PAIR.finditer(value) if secret_key(m[1]))
    return sorted((s for s in found if s), key=len, reverse=True)


def mask_secrets(text: str, url: str | URL) -> str:
    """``text`` with every secret of ``url`` masked (a driver may quote a parameter)."""
    for secret in url_secrets(url):
        text = text.replace(secret, MASK)
    return text


def _is_file(url: URL) -> bool:
    """A database that is a file (SQLite): its path is a path, never a conninfo."""
    try:
        return backend_for(url.get_backend_name()).database_file(url) is not None
    except ValueError:
        return False


def _values(raw: str | tuple[str, ...]) -> tuple[str, ...]:
    return raw if isinstance(raw, tuple) else (raw,)


@dataclass(frozen=True)
class Timeouts:
    """Bounds on the parent's own SQL, in seconds (0 = no limit): how long it waits for a
    lock another session holds, and how long one statement may run. A run that hits one
    ends with exit 3 and says which (``database_errors``), instead of hanging."""

    lock: float
    statement: float


RETRY_FIRST_S, RETRY_MOST_S = 0.5, 5.0  # the backoff between two tries of ``retrying``


def retrying(engine: Engine, call: Callable[[], T], window: float, doing: str) -> T:
    """``call()``, tried again with backoff for up to ``window`` seconds while the database
    is away for a while (a restart, an outage, its connection slots full: its backend's
    ``transient``); any other failure, or the window spent, raises at once."""
    from pipeline import interrupts  # the standard library only

    deadline = time.monotonic() + window
    pause = RETRY_FIRST_S
    while True:
        try:
            return call()
        except DatabaseFailure as exc:
            if (interrupts.requested() or time.monotonic() + pause > deadline
                    or not backend_for(engine.dialect.name).transient(exc.__cause__)):
                raise
            log.warning("%s failed, trying again in %.1f s: %s", doing, pause, exc)
        time.sleep(pause)  # a backoff, the database's time to come back
        pause = min(2 * pause, RETRY_MOST_S)


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
                           engine.dialect.name, table.name in UPGRADABLE)


def _check_columns(name: str, wanted: set[str], present: set[str], dialect: str,
                   upgradable: bool) -> None:
    missing = wanted - present
    if not missing:
        return
    if upgradable:
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
        cause = mask_secrets(cause, target)
        raise DatabaseFailure(f"database error while {doing} on {safe_url(target)}: "
                              f"{cause}") from exc
