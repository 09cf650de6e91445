"""What a run ends with: the value ``run_job`` returns and every output is written from.

It lives apart from ``pipeline.job`` so that the modules that only read an outcome (the
summary, the Prometheus file, the published outputs) need not import the run itself, its
workers and ``multiprocess``. It imports nothing of the project at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.metrics.aggregator import AggregatedMetrics, WorkerMetrics
    from recon.checks import ReconciliationResult


@dataclass
class RunOutcome:
    run_id: str
    job_name: str
    status: str
    exit_code: int
    message: str
    input_path: Path
    database: str
    run_dir: Path
    results: list[ReconciliationResult] = field(default_factory=list)
    workers: list[WorkerMetrics] = field(default_factory=list)
    metrics: AggregatedMetrics | None = None
    duplicates_collapsed: int = 0
    reject_file: Path | None = None
    rejects: int = 0
    recorded: bool = False  # BATCH_RUN holds the run: there is an audit to finish
    audited: bool = False  # its audit committed with the MERGE: nothing left to write
    stages: dict[str, int] = field(default_factory=dict)  # stage -> milliseconds, run order
