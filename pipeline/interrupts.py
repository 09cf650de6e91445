"""SIGTERM and Ctrl-C: a flag, cancelled statements, and a stop at the next safe point.

A signal never raises inside the run's code: an exception thrown from a handler lands
wherever the main thread happens to be, and at a COMMIT that decides the transaction's
outcome by luck (issue 10: FINAL merged, audit saying INTERRUPTED). Instead:

- the Python-level handler does nothing; the C-level handler writes the signal number to
  a wakeup socket, which a watcher thread reads even while the main thread sits in a long
  database statement (sqlite3 and psycopg release the GIL there);
- the watcher sets the flag and cancels the in-flight statements of the parent's
  connections (sqlite3 ``interrupt()``, psycopg ``cancel_safe()``, oracledb ``cancel()``)
  unless the main thread is committing: a COMMIT is never cancelled;
- the run calls ``check()`` at its safe points (after planning, each supervision tick of
  the load, before the MERGE) and ``committing()`` around its final COMMIT, which refuses
  to start a commit once the flag is set. A statement cancelled by the watcher fails with
  the driver's error; the run reports it as INTERRUPTED because ``requested()`` is true.

Before any of that exists, ``python -m pipeline`` calls ``record_early()`` first of all:
importing numpy, SQLAlchemy and the drivers takes ~0.6 s, and a SIGTERM then would kill
the process with signal 15. Recorded instead, it ends the command with exit 3 before a run
starts, or the run as INTERRUPTED at its first safe point (``handling`` keeps it). This
module imports only the standard library, so that handler is in place within
milliseconds of the interpreter's start.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from pipeline.errors import Interrupted

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)
BURST_S = 0.05  # signals this close together are one burst (see _on_signal)


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.signum = 0  # the first signal received; 0: none
        self.since = 0.0  # when it was received (time.monotonic)
        self.committing = False
        self.installed = False
        self.early: dict[int, Any] | None = None  # the handlers record_early replaced
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()


_state = _State()


def requested() -> bool:
    return _state.signum != 0


def message() -> str:
    try:
        name = signal.Signals(_state.signum).name
    except ValueError:
        name = f"signal {_state.signum}"
    return f"interrupted by signal {name}"


def check() -> None:
    """A safe point: stop the run here if a signal arrived."""
    if _state.signum:
        raise Interrupted(message())


@contextmanager
def committing() -> Iterator[None]:
    """Around a COMMIT: refused once interrupted, never cancelled while it runs."""
    with _state.lock:
        if _state.signum:
            raise Interrupted(message())
        _state.committing = True
    try:
        yield
    finally:
        with _state.lock:
            _state.committing = False


def register_engine(engine: Engine) -> None:
    """Every DBAPI connection the engine opens in this process can be cancelled."""
    from sqlalchemy import event  # not at the top: record_early must not wait for it

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        with suppress(TypeError):  # a driver connection without weak references
            _state.connections.add(dbapi_connection)

    event.listen(engine, "connect", on_connect)


def _cancel(connection: Any) -> None:
    for name in ("interrupt", "cancel_safe", "cancel"):  # sqlite3, psycopg 3.2+, oracledb
        method = getattr(connection, name, None)
        if method is not None:
            with suppress(Exception):  # a closed or broken connection has nothing to cancel
                method()
            return


def _on_signal(signum: int) -> None:
    now = time.monotonic()
    with _state.lock:
        if _state.signum:
            # A second Ctrl-C: the cleanup the first started is bounded. Only the name
            # may change: signals pending together are delivered lowest number first but
            # their handlers nest, so their bytes come in reverse order, microseconds
            # apart, and this thread can wake between them: within a burst, the lowest
            # number is the signal that came first
            if signum < _state.signum and now - _state.since < BURST_S:
                _state.signum = signum
            return
        _state.signum, _state.since = signum, now
        if _state.committing:
            return
        connections = list(_state.connections)
    for connection in connections:
        _cancel(connection)


def _watch(reader: socket.socket, stop: threading.Event) -> None:
    # the kernel must deliver the signals to the main thread (the pool blocks them there
    # while it forks); this thread only reads what the C handler wrote
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    while not stop.is_set():
        ready, _, _ = select.select([reader], [], [], 0.5)
        if not ready:
            continue
        for signum in sorted(s for s in _drain(reader) if s in SIGNALS):
            _on_signal(signum)


def _drain(reader: socket.socket) -> bytes:
    data = b""
    with suppress(BlockingIOError):
        while chunk := reader.recv(64):
            data += chunk
    return data


@contextmanager
def handling() -> Iterator[None]:
    """Install the flag-only handlers and the watcher for the duration of a run."""
    if threading.current_thread() is not threading.main_thread() or _state.installed:
        yield
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, _ignore) for sig in SIGNALS}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(reader, stop), name="interrupts",
                               daemon=True)
    if _state.early is None:  # else a signal recorded at start-up stops this run too
        _state.signum = 0
    _state.committing, _state.installed = False, True
    watcher.start()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        stop.set()
        with suppress(OSError):
            writer.send(b"\0")  # wake the watcher now rather than at its next poll
        watcher.join()
        reader.close()
        writer.close()
        _state.installed = False
        _state.connections = weakref.WeakSet()


def record_early() -> None:
    """SIGTERM/SIGINT recorded from now on, not fatal, until ``end_early`` (or a run's
    ``handling``, which takes over and keeps what was recorded). Called before anything
    else is imported; a no-op when already recording or outside the main thread."""
    if _state.early is not None or threading.current_thread() is not threading.main_thread():
        return
    _state.signum = 0  # a command starts uninterrupted (main() may be called again in-process)
    _state.early = {sig: signal.signal(sig, _record) for sig in SIGNALS}


def end_early() -> None:
    """Put back the handlers ``record_early`` replaced: a command that has no safe points
    (report, validate...) ends on a signal as it always did."""
    if _state.early is None:
        return
    for sig, handler in _state.early.items():
        signal.signal(sig, handler)
    _state.early = None


def _record(signum: int, _frame: Any) -> None:
    """The start-up handler: the first signal is the one the run will name."""
    if not _state.signum:
        _state.signum, _state.since = signum, time.monotonic()


def _ignore(_signum: int, _frame: Any) -> None:
    """The Python-level handler: nothing (the watcher does the work; see the docstring)."""


def reset() -> None:
    """Forget a signal (a new run in the same process starts uninterrupted)."""
    _state.signum = 0
