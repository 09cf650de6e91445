"""What a run ends with: the value ``run_job`` (and ``resume_run``) returns and every
output is written from.

Not one of recon's frozen values: the run fills it in step by step (its workers, its
results, its stage times), and it carries what only the pipeline knows (paths, the
database URL). Its status and exit code are decided in one place: pipeline.audit.runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from recon.values import AggregatedMetrics, Evidence, ReconciliationResult, WorkerMetrics


@dataclass
class RunOutcome:
    """What a run ends with: the value ``run_job`` returns and every output is written from."""

    run_id: str
    job_name: str
    status: str
    exit_code: int
    message: str
    input_path: Path
    database: str
    run_dir: Path
    results: list[ReconciliationResult] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)  # behind failed column checks
    staging_proven: datetime | None = None  # when staging proved to hold the processors' rows
    workers: list[WorkerMetrics] = field(default_factory=list)
    metrics: AggregatedMetrics | None = None
    duplicates_collapsed: int = 0
    reject_file: Path | None = None
    rejects: int = 0
    recorded: bool = False  # BATCH_RUN holds the run: there is an audit to finish
    audited: bool = False  # its audit committed with the MERGE: nothing left to write
    stages: dict[str, int] = field(default_factory=dict)  # stage -> milliseconds, run order
    business_date: date | None = None  # the header's (control.business_date), once planned
    code_page: str | None = None  # how the input was read (BATCH_RUN.CODE_PAGE)
    copybook_sha256: str | None = None  # mainframe jobs: the copybook that described it
    overrides: tuple[str, ...] = ()  # the identity refusals overridden: --rerun, --allow-older
    # a `run --resume` of a run already SUCCEEDED: nothing done, so nothing of the run's
    # own outputs (summary.txt, the metrics of its night) is replaced
    changed_nothing: bool = False
