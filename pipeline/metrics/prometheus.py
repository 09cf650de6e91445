"""The run's counters for monitoring, as a node_exporter textfile-collector file.

The collector reads every ``*.prom`` file of its directory on each scrape, so a half
written file would be scraped as garbage: the text goes to a temporary file in the same
directory (same filesystem, so the rename is atomic) whose name does not end in
``.prom``, and is renamed over the target only when complete. Every value is about the
last run only, hence gauges; the file is replaced, never appended to.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from recon.values import RunOutcome

PREFIX = "pipeline"


@dataclass
class Family:
    """One metric: its HELP and TYPE lines and its samples (labels, value)."""

    name: str
    help: str
    samples: list[tuple[dict[str, str], float | int]] = field(default_factory=list)
    type: str = "gauge"

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.type}"
        for labels, value in self.samples:
            yield f"{self.name}{_labels(labels)} {_value(value)}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


def _value(value: float | int) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def run_families(outcome: RunOutcome, duration_s: float,
                 ended_at: float | None = None) -> list[Family]:
    """The last run of a job as metric families, labelled with the job and run status."""
    base = {"job": outcome.job_name, "status": outcome.status}
    metrics = outcome.metrics
    failed = sum(not r.passed for r in outcome.results)

    def one(name: str, help_text: str, value: float | int) -> Family:
        return Family(f"{PREFIX}_{name}", help_text, [(base, value)])

    families = [
        one("last_run_timestamp_seconds", "Unix time the last run ended.",
            time.time() if ended_at is None else ended_at),
        one("last_run_duration_seconds", "Wall-clock duration of the last run.",
            round(duration_s, 3)),
        one("last_run_exit_code", "Exit code of the last run (0 ok, 1 reconciliation "
            "failed, 2 bad input or configuration, 3 runtime failure).", outcome.exit_code),
        one("last_run_success", "1 if the last run passed every check and merged, else 0.",
            int(outcome.exit_code == 0)),
        Family(f"{PREFIX}_last_run_info", "The last run's id (value always 1).",
               [({**base, "run_id": outcome.run_id}, 1)]),
        one("records_read", "Detail records read by the last run.",
            metrics.total_read if metrics else 0),
        one("records_rejected", "Detail records rejected by the last run.",
            metrics.total_errors if metrics else 0),
        one("records_written", "Rows the last run committed to staging.",
            metrics.total_written if metrics else 0),
        one("duplicate_keys_collapsed", "Duplicate keys collapsed by the last run's MERGE.",
            outcome.duplicates_collapsed),
        one("checks", "Reconciliation checks recorded by the last run.",
            len(outcome.results)),
        one("checks_failed", "Reconciliation checks the last run failed.", failed),
    ]
    return families + _worker_families(outcome, base)


def _worker_families(outcome: RunOutcome, base: dict[str, str]) -> list[Family]:
    records = Family(f"{PREFIX}_worker_records", "Records each worker of the last run "
                     "processed (processor: read; writer: committed to staging).")
    errors = Family(f"{PREFIX}_worker_errors", "Errors of each worker of the last run.")
    done = Family(f"{PREFIX}_worker_done", "1 if the worker ended 'done', else 0.")
    for w in outcome.workers:
        labels = {**base, "worker_id": str(w.worker_id), "worker_type": w.worker_type}
        records.samples.append((labels, w.records_processed))
        errors.samples.append((labels, w.errors_count))
        done.samples.append((labels, int(w.state == "done")))
    return [f for f in (records, errors, done) if f.samples]


def exposition(families: Iterable[Family]) -> str:
    """The text exposition format: HELP, TYPE and samples per family, ending in a newline."""
    return "".join(line + "\n" for family in families for line in family.lines())


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a scrape sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes it 0600; node_exporter often runs as another user
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run_metrics(path: Path, outcome: RunOutcome, duration_s: float) -> None:
    write_textfile(path, exposition(run_families(outcome, duration_s)))
