"""The run's end on local disk, for when the database cannot take it.

A run that fails because its database went away (a restart, an outage) or cannot be
written (a full disk, an immutable file) still knows why it failed and with which exit
code; its BATCH_RUN row would otherwise stay RUNNING until the next run relabels it
ABENDED "killed?", and the real cause would be lost for good. So the run writes its end
here, and the next run of the job (``RunRepository.close_abandoned_runs``) settles BATCH_RUN
from it: the status, exit code and message the run ended with.

The journal is ``end.json`` in the run's folder; when that folder cannot be written (the
output disk is full too) a per-user folder of the system's temporary directory holds it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)
END_FILE = "end.json"


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, as BATCH_RUN would have recorded it."""

    run_id: str
    job_name: str
    status: str
    exit_code: int
    message: str
    end_ts: datetime  # naive UTC, as BATCH_RUN holds it


def fallback_dir() -> Path:
    """Where a journal goes when the run's folder cannot take it (one folder per user)."""
    return Path(tempfile.gettempdir()) / f"pipeline-journal-{os.getuid()}"


def journal_paths(run_dir: Path, run_id: str) -> list[Path]:
    return [run_dir / END_FILE, fallback_dir() / f"{run_id}.{END_FILE}"]


def write_end(run_dir: Path, end: RunEnd) -> Path | None:
    """Keep ``end`` on disk; the path written, or None when no place took it."""
    document = json.dumps({**asdict(end), "end_ts": end.end_ts.isoformat()})
    for path in journal_paths(run_dir, end.run_id):
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            spare = path.with_suffix(".tmp")
            spare.write_text(document, encoding="utf-8")
            spare.replace(path)  # whole or not at all: the next run reads it once
            return path
        except OSError as exc:
            log.debug("run end not journalled in %s: %s", path, exc)
            _remove(path.with_suffix(".tmp"))
    return None


def read_end(run_dir: Path, run_id: str) -> RunEnd | None:
    """The journalled end of ``run_id``, or None (none written, or unreadable)."""
    for path in journal_paths(run_dir, run_id):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            end = RunEnd(**{**data, "end_ts": datetime.fromisoformat(data["end_ts"])})
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if end.run_id == run_id:
            return end
    return None


def reader_for(output_dir: Path) -> Callable[[str], RunEnd | None]:
    """The journalled end of a run of the job writing under ``output_dir``."""
    return lambda run_id: read_end(output_dir / "runs" / run_id, run_id)


def forget_end(run_dir: Path, run_id: str) -> None:
    """The end is in BATCH_RUN now: the journal has done its work."""
    for path in journal_paths(run_dir, run_id):
        _remove(path)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("journal %s not removed: %s", path, exc)


def settled(output_dir: Path, ends: list[RunEnd]) -> None:
    """``ends`` are in BATCH_RUN now: said, and their journals removed."""
    for end in ends:
        forget_end(output_dir / "runs" / end.run_id, end.run_id)
        log.warning("run %s ended %s (exit %d) when the database could not record it: "
                    "recorded now from its journal", end.run_id, end.status, end.exit_code)
