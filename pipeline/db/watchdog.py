"""A client-side bound on every statement of the parent: cancel, then abandon.

``statement_timeout`` is the server's own bound: a server that stops answering (a frozen
backend, a host that still acknowledges TCP but runs nothing) never fires it, and the run
would wait forever on its socket. The watchdog is a thread that looks at the parent's
statements in flight once a second: one silent past ``statement_timeout`` plus
``MARGIN_S`` is cancelled (the server's cancel request); one still silent ``CANCEL_GRACE_S``
later is abandoned (its backend's ``abandon``: the connection's socket is shut down), so
the statement fails in the main thread with the driver's error and the run ends exit 3.
Abandoning never decides a commit: the server rolls back a transaction whose client left.

Writers are bounded by their heartbeat instead (pipeline.workers.pool): a writer stuck on
a silent server stops beating and is stopped after ``workers.heartbeat_timeout``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine, event

from pipeline.db.backends import backend_for
from pipeline.errors import DatabaseFailure

log = logging.getLogger(__name__)
MARGIN_S = 10.0  # past statement_timeout: the server's own bound had its chance to fire
CANCEL_GRACE_S = 3.0  # after the cancel request: a live server ends the statement by then
POLL_S = 1.0


class StatementWatchdog:
    """Watches the statements of the engines it is attached to (one thread per run)."""

    def __init__(self, bound_s: float, margin_s: float = MARGIN_S) -> None:
        """``bound_s``: the statement bound in seconds (the statement_timeout); 0: none."""
        self.bound_s, self.margin_s = bound_s, margin_s
        self.fired = ""  # what the watchdog did, for the run's message; "" while it did not
        self._lock = threading.Lock()
        # id(key) -> (driver connection, since, what, its dialect)
        self._running: dict[int, tuple[Any, float, str, str]] = {}
        self._stop = threading.Event()

    def attach(self, engine: Engine) -> None:
        """Every statement the engine's connections run is watched."""
        name = engine.dialect.name

        # keyed on SQLAlchemy's connection: a failing one (being invalidated) may no
        # longer give its driver connection, and a statement must never stay watched
        def before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            self.begin(conn, conn.connection.dbapi_connection, statement, name)

        def after(conn: Any, *_args: Any) -> None:
            self.end(conn)

        def failed(context: Any) -> None:
            self.end(context.connection)

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        event.listen(engine, "handle_error", failed)

    def begin(self, key: Any, dbapi_connection: Any, statement: str, dialect: str) -> None:
        """``key`` (its connection) runs ``statement`` on ``dbapi_connection`` from now."""
        what = " ".join(statement.split()[:2])[:40]
        with self._lock:
            self._running[id(key)] = (dbapi_connection, time.monotonic(), what, dialect)

    def end(self, key: Any) -> None:
        with self._lock:
            self._running.pop(id(key), None)

    @contextmanager
    def running(self) -> Iterator[StatementWatchdog]:
        """The watching thread, for the length of the block (none without a bound)."""
        if not self.bound_s:
            yield self
            return
        global _current
        # the run's context (its run id for the log lines) goes with the thread
        thread = threading.Thread(target=contextvars.copy_context().run, args=(self._watch,),
                                  name="statement-watchdog", daemon=True)
        thread.start()
        _current = self
        try:
            yield self
        finally:
            _current = None
            self._stop.set()
            thread.join()

    def _watch(self) -> None:
        cancelled: dict[tuple[int, float], float] = {}  # (key, since) -> when cancelled
        limit = self.bound_s + self.margin_s
        while not self._stop.wait(POLL_S):
            now = time.monotonic()
            with self._lock:
                running = dict(self._running)
            statements = {(key, entry[1]) for key, entry in running.items()}
            for ended in [s for s in cancelled if s not in statements]:
                del cancelled[ended]
            for key, (connection, since, what, dialect) in running.items():
                if now - since < limit:
                    continue
                backend = backend_for(dialect)
                silent = (f"the database did not answer {what} for {now - since:.0f} s "
                          f"(database.statement_timeout {self.bound_s:g} s + {self.margin_s:g} s)")
                if (key, since) not in cancelled:
                    self.fired = f"{silent}: the run cancelled it"
                    log.warning("%s", self.fired)
                    cancelled[key, since] = now
                    with suppress(Exception):  # a broken connection has nothing to cancel
                        backend.cancel(connection)
                elif now - cancelled[key, since] >= CANCEL_GRACE_S:
                    self.fired = f"{silent}, not even its cancel: the run dropped the connection"
                    log.warning("%s", self.fired)
                    with suppress(Exception):
                        backend.abandon(connection)
                    with self._lock:
                        if self._running.get(key, (None, None))[1] == since:
                            del self._running[key]


_current: StatementWatchdog | None = None  # the run's, while it watches


@contextmanager
def watching(engine: Engine, bound_s: float) -> Iterator[StatementWatchdog]:
    """``engine``'s statements watched for the length of the block (`run --resume`); a
    database failure the watchdog caused says so (the driver only saw its statement
    interrupted or its connection dropped)."""
    watchdog = StatementWatchdog(bound_s)
    watchdog.attach(engine)
    with watchdog.running():
        try:
            yield watchdog
        except DatabaseFailure as exc:
            if watchdog.fired:
                raise DatabaseFailure(f"{watchdog.fired}; {exc}") from exc
            raise


@contextmanager
def watched(dbapi_connection: Any, what: str, dialect: str) -> Iterator[None]:
    """Around a call on a raw driver connection (a COPY), which no engine event reports:
    the run's watchdog bounds it too."""
    watchdog = _current
    if watchdog is None:
        yield
        return
    watchdog.begin(dbapi_connection, dbapi_connection, what, dialect)
    try:
        yield
    finally:
        watchdog.end(dbapi_connection)
