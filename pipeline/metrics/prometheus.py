"""The run's counters for monitoring, as a node_exporter textfile-collector file.

Written with ``prometheus_client``, the ecosystem's own: its registry formats the text
exposition (escaping, HELP/TYPE lines) and ``write_to_textfile`` writes a temporary file
beside the target (named ``<target>.<pid>.<thread>``, which the collector ignores since
it does not end in ``.prom``) and renames it over the target, so a scrape sees the old
file or the new one, never half of one. Every value is about the last run only, hence
gauges; the file is replaced, never appended to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest, write_to_textfile

from pipeline.outcome import RunOutcome

PREFIX = "pipeline"


@dataclass
class Family:
    """One metric: its help text and its samples (labels, value)."""

    name: str
    help: str
    samples: list[tuple[dict[str, str], float | int]] = field(default_factory=list)


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


def registry_of(families: Iterable[Family]) -> CollectorRegistry:
    """A registry of its own (not the process-wide default one) holding ``families``."""
    registry = CollectorRegistry(auto_describe=True)
    for family in families:
        names = list(family.samples[0][0]) if family.samples else []
        gauge = Gauge(family.name, family.help, names, registry=registry)
        for labels, value in family.samples:
            (gauge.labels(**labels) if names else gauge).set(value)
    return registry


def exposition(families: Iterable[Family]) -> str:
    """The text exposition format: HELP, TYPE and samples per family, ending in a newline."""
    return generate_latest(registry_of(families)).decode("utf-8")


def write_textfile(path: Path, families: Iterable[Family]) -> None:
    """Replace ``path`` atomically: a scrape sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry_of(families))
    # the library's file gets the process umask's mode; node_exporter often runs as
    # another user, so it must be readable by others
    os.chmod(path, 0o644)


def write_run_metrics(path: Path, outcome: RunOutcome, duration_s: float) -> None:
    write_textfile(path, run_families(outcome, duration_s))
