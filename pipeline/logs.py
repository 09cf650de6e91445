"""The job log on stderr: every line carries the run id, as text or as one JSON object.

``run_job`` sets the run id in a context variable for the length of the run; a filter on
the handler copies it onto every record, so no log call has to pass it. Forked workers
inherit the value with the rest of the parent's memory.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

RUN_ID: ContextVar[str | None] = ContextVar("pipeline_run_id", default=None)
NO_RUN = "-"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
OUR_LOGGERS = ("pipeline", "recon")

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "run_id"}


@contextmanager
def run_context(run_id: str) -> Iterator[None]:
    """Tag every log line written inside the block with ``run_id``."""
    token = RUN_ID.set(run_id)
    try:
        yield
    finally:
        RUN_ID.reset(token)


class RunIdFilter(logging.Filter):
    """Copies the current run id onto the record (``-`` outside a run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "run_id"):
            record.run_id = RUN_ID.get() or NO_RUN
        return True


def _utc_iso(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class QuietLibraries(logging.Filter):
    """Below DEBUG, no traceback reaches the operator: a library's error becomes its one
    line, and SQLAlchemy's "Exception during reset" -- a dead connection that could not
    be rolled back on its way back to the pool, after the run has told why it died -- is
    left out. At DEBUG everything passes, tracebacks included."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        if self.tracebacks or not record.exc_info:
            return True
        if record.name.startswith("sqlalchemy.pool"):
            return False
        record.exc_info, record.exc_text = None, None  # the one line stays
        return True


class TextFormatter(logging.Formatter):
    """``2026-11-25T19:49:00.123Z INFO  run=20261125T194900-1a2b3c4d load done: ...``"""

    def format(self, record: logging.LogRecord) -> str:
        line = (f"{_utc_iso(record)} {record.levelname:<5} run={getattr(record, 'run_id', NO_RUN)} "
                f"{record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line for log shippers: ts, level, run_id, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc_iso(record),
            "level": record.levelname,
            "run_id": getattr(record, "run_id", NO_RUN),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # default=str: an extra that JSON cannot hold (a Path, a Decimal) becomes its text,
        # so a log call can never break the line
        return json.dumps(entry, default=str, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now*, so a live progress display that
    redirects stderr while it draws can print the log lines above its bar."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(level: str = "INFO", fmt: str = "text") -> logging.Handler:
    """Send every log line (ours, libraries', warnings) to stderr in one format.

    Idempotent: a second call replaces the handler of the first.
    """
    handler = StderrHandler()
    handler.addFilter(RunIdFilter())
    handler.addFilter(QuietLibraries(tracebacks=level == "DEBUG"))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Levels are checked at the logger a record starts from, so our packages can say more
    # than the libraries, which stay at WARNING and keep DEBUG readable.
    root.setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(True)  # a ResourceWarning gets a run id like everything else
    return handler
