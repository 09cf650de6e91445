"""Read a run's evidence back from the audit tables (never the job's own tables).

The audit keeps amounts at ``AUDIT_SCALE`` decimals whatever the job's scale; a report
shows them at the job's scale when that is exact, so ``12.50`` does not read ``12.500000``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, Table, func, inspect, select

from pipeline.audit.schema import AUDIT_SCALE, aware_utc, from_audit, naive_utc
from pipeline.db.audit_tables import audit_tables
from pipeline.db.engine import Timeouts, database_errors, make_engine, parse_url, safe_url
from pipeline.errors import ConfigError
from pipeline.metrics.aggregator import PROCESSOR
from pipeline.stages import STAGES
from recon import checks
from recon.values import SUCCEEDED, Evidence, ReconciliationResult, WorkerMetrics

OVERRIDE_COLUMNS = ("rerun", "allow_older")  # BATCH_RUN's flags, 'Y' when used


class AuditNotFound(ConfigError):
    """The database has no audit tables, or not the run asked for (exit 2)."""


@dataclass(frozen=True)
class RunRow:
    """One BATCH_RUN row, plus the records its processors read (from RECON_WORKER_AUDIT)."""

    run_id: str
    job_name: str
    status: str
    exit_code: int | None
    start_ts: datetime
    end_ts: datetime | None
    input_path: str = ""
    input_sha256: str | None = None
    message: str = ""
    records_read: int | None = None
    stages: dict[str, int] = field(default_factory=dict)  # stage -> ms (pipeline.stages)
    business_date: date | None = None  # the header's (pipeline.identity)
    code_page: str | None = None  # how the input was read
    copybook_sha256: str | None = None
    overrides: tuple[str, ...] = ()  # the identity refusals overridden: --rerun, --allow-older
    rejected: int | None = None  # BATCH_RUN.REJECTED_CNT: None before the load ended
    amount_read: int | None = None  # BATCH_RUN.READ_AMT, at the audit's scale
    keys_merged: int | None = None  # staging_to_final's FINAL rows, when it passed

    @property
    def duration_s(self) -> float | None:
        return None if self.end_ts is None else (self.end_ts - self.start_ts).total_seconds()


@dataclass(frozen=True)
class RunReport:
    """A run as the audit recorded it. Amounts are exact minor units at ``scale``."""

    run: RunRow
    scale: int
    results: list[ReconciliationResult]
    workers: list[WorkerMetrics]
    # the checks of the attempts a `run --resume` superseded, oldest first: still held in
    # RECON_AUDIT, so still shown, apart from the last attempt's
    earlier_results: list[ReconciliationResult] = field(default_factory=list)

    @property
    def checks_failed(self) -> int:
        return sum(not r.passed for r in self.results)


@dataclass(frozen=True)
class AuditTables:
    batch_run: Table
    recon_audit: Table
    worker_audit: Table
    recon_evidence: Table


def _tables() -> AuditTables:
    recon_audit, worker_audit, batch_run, _lock, evidence = audit_tables(MetaData())
    return AuditTables(batch_run, recon_audit, worker_audit, evidence)


@contextmanager
def open_audit(url: str, timeouts: Timeouts | None = None) -> Iterator[Engine]:
    """An engine on an existing audit database, disposed on leaving; refuses a database
    no job has run against. ``timeouts``: the job's bounds, for a command that writes (run
    --resume) as a run's own statements have them."""
    from pipeline.db.backends import backend_for

    parsed = parse_url(url)
    db_file = backend_for(parsed.get_backend_name()).database_file(parsed)
    # SQLite would quietly create an empty file and then report "no tables"
    if db_file is not None and not Path(db_file).exists():
        raise AuditNotFound(f"database file {db_file} does not exist "
                            "(check --db or the job config's database.url)")
    engine = make_engine(parsed, timeouts)
    try:
        _require_audit_tables(engine)
        yield engine
    finally:
        engine.dispose()


def _require_audit_tables(engine: Engine) -> None:
    t = _tables()
    with database_errors(engine, "reading the audit tables"):
        present = {name.lower() for name in inspect(engine).get_table_names()}
    missing = [x.name for x in (t.batch_run, t.recon_audit, t.worker_audit)
               if x.name not in present]
    if missing:
        raise AuditNotFound(f"{safe_url(engine.url)} has no audit tables ({', '.join(missing)} "
                            "missing): no run was recorded there (check --db or the job config)")


def load_evidence(engine: Engine, run_id: str) -> list[Evidence]:
    """The values behind the run's failed column checks, as kept when they failed (none
    in a database whose audit predates RECON_EVIDENCE)."""
    t = _tables().recon_evidence
    with database_errors(engine, "reading the evidence"):
        if not inspect(engine).has_table(t.name):
            return []
        with engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.run_id == run_id).order_by(t.c.seq))
            return [Evidence(r.check_name, r.key_value or "", r.column_name, r.expected_value,
                             r.actual_value, r.source_line) for r in rows]


def list_runs(engine: Engine, limit: int = 20, job_name: str | None = None,
              succeeded_before: datetime | None = None) -> list[RunRow]:
    """The most recent runs first (of ``job_name`` only, if given; only the SUCCEEDED runs
    started before ``succeeded_before``, if given)."""
    t = _tables()
    read = (select(t.worker_audit.c.run_id,
                   func.sum(t.worker_audit.c.records_processed).label("records_read"))
            .where(t.worker_audit.c.worker_type == PROCESSOR)
            .group_by(t.worker_audit.c.run_id).subquery())
    audit = t.recon_audit.c
    # correlated: read for the rows returned only, through RECON_AUDIT's run_id index
    merged_one = (select(func.max(audit.actual_cnt))
              .where(audit.run_id == t.batch_run.c.run_id,
                     audit.check_name == checks.STAGING_TO_FINAL, audit.passed == "Y")
              .scalar_subquery())
    # a [[details]] job's: every type's keys (pipeline.chains names them <type>:...)
    merged_types = (select(func.sum(audit.actual_cnt))
                    .where(audit.run_id == t.batch_run.c.run_id,
                           audit.check_name.like(f"%:{checks.STAGING_TO_FINAL}"),
                           audit.passed == "Y")
                    .scalar_subquery())
    merged = func.coalesce(merged_one, merged_types).label("keys_merged")
    query = (select(t.batch_run, read.c.records_read, merged)
             .outerjoin(read, read.c.run_id == t.batch_run.c.run_id)
             .order_by(t.batch_run.c.start_ts.desc(), t.batch_run.c.run_id.desc())
             .limit(limit))
    if job_name is not None:
        query = query.where(t.batch_run.c.job_name == job_name)
    if succeeded_before is not None:
        query = query.where(t.batch_run.c.status == SUCCEEDED,
                            t.batch_run.c.start_ts < naive_utc(succeeded_before))
    with database_errors(engine, "listing the runs"), engine.connect() as conn:
        return [_run_row(row._mapping) for row in conn.execute(query)]


def load_report(engine: Engine, run_id: str | None = None,
                job_scales: Mapping[str, int] | None = None,
                job_name: str | None = None) -> RunReport:
    """The run ``run_id`` (default: the latest, of ``job_name`` if given). Amounts are shown
    at the scale ``job_scales`` gives for the run's job when that is exact."""
    t = _tables()
    latest = select(t.batch_run.c.run_id).order_by(t.batch_run.c.start_ts.desc(),
                                                   t.batch_run.c.run_id.desc()).limit(1)
    if job_name is not None:
        latest = latest.where(t.batch_run.c.job_name == job_name)
    with database_errors(engine, "reading the audit"), engine.connect() as conn:
        run_id = run_id or conn.execute(latest).scalar()
        if run_id is None:
            of_job = f" of job {job_name}" if job_name else ""
            raise AuditNotFound(f"no run{of_job} recorded in {safe_url(engine.url)}")
        run = conn.execute(select(t.batch_run).where(t.batch_run.c.run_id == run_id)).first()
        if run is None:
            raise AuditNotFound(f"no run {run_id} in {safe_url(engine.url)} "
                                "(`pipeline runs` lists them)")
        checks_of_run = select(t.recon_audit).where(t.recon_audit.c.run_id == run_id)
        held = conn.execute(checks_of_run.order_by(t.recon_audit.c.recon_id)).all()
        workers = conn.execute(select(t.worker_audit)
                               .where(t.worker_audit.c.run_id == run_id)
                               .order_by(t.worker_audit.c.worker_id)).all()
    decided, earlier = last_attempt(held)
    read = sum(w.records_processed for w in workers if w.worker_type == PROCESSOR)
    amounts = [a for c in held for a in (c.expected_amt, c.actual_amt)] + \
        [w.amount for w in workers]
    shown = shown_scale(amounts, (job_scales or {}).get(run.job_name))
    return RunReport(
        run=_run_row({**run._mapping, "records_read": read if workers else None}),
        scale=shown,
        results=[_result(c, shown) for c in decided],
        workers=[_worker(w, shown) for w in workers],
        earlier_results=[_result(c, shown) for c in earlier],
    )


def last_attempt(rows: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """The RECON_AUDIT rows (in RECON_ID order) of the run's last attempt, and the rest.

    A run, and each `run --resume` of it that got as far as its checks, commits all its
    checks at once with one CHECK_TS (AuditWriter.finish_on): the latest rows are the
    attempt that decided the run's status. Told apart by what RECON_AUDIT holds, never by
    BATCH_RUN.RESUMED_TS: a refused resume of an earlier version set that without adding
    a check, and filtering on it then showed a run with 7 checks as one with none.
    """
    if not rows:
        return [], []
    last = rows[-1].check_ts
    return ([r for r in rows if r.check_ts == last], [r for r in rows if r.check_ts != last])


def shown_scale(amounts: list[int | None], wanted: int | None) -> int:
    """The scale to show audit ``amounts`` at: the job's (``wanted``) when that is exact;
    for another job's run, whose config is not at hand, the fewest decimals (at least
    the 2 of most currencies) that show every amount exactly, not the audit's 6."""
    if wanted is not None:
        return _exact_scale(amounts, wanted)
    return next(s for s in range(2, AUDIT_SCALE + 1) if _exact_scale(amounts, s) == s)


def _exact_scale(amounts: list[int | None], wanted: int) -> int:
    """``wanted`` if every audit amount is whole at that scale, else the audit's own."""
    step = 10 ** (AUDIT_SCALE - wanted) if 0 <= wanted <= AUDIT_SCALE else 0
    if step and all(a is None or a % step == 0 for a in amounts):
        return wanted
    return AUDIT_SCALE


def _run_row(row: Any) -> RunRow:
    return RunRow(run_id=row["run_id"], job_name=row["job_name"], status=row["status"],
                  exit_code=row["exit_code"], start_ts=aware_utc(row["start_ts"]),
                  end_ts=aware_utc(row["end_ts"]) if row["end_ts"] else None,
                  input_path=row["input_path"], input_sha256=row["input_sha256"],
                  message=row["message"] or "",
                  records_read=_int_or_none(row["records_read"]),
                  stages={s: int(row[f"{s}_ms"]) for s in STAGES
                          if row.get(f"{s}_ms") is not None},
                  business_date=row.get("business_date"),
                  code_page=row.get("code_page"), copybook_sha256=row.get("copybook_sha256"),
                  overrides=tuple(f"--{name.replace('_', '-')}" for name in OVERRIDE_COLUMNS
                                  if row.get(name) == "Y"),
                  rejected=_int_or_none(row.get("rejected_cnt")),
                  amount_read=_int_or_none(row.get("read_amt")),
                  keys_merged=_int_or_none(row.get("keys_merged")))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _result(row: Any, scale: int) -> ReconciliationResult:
    return ReconciliationResult(
        check_name=row.check_name, expected_count=row.expected_cnt,
        actual_count=row.actual_cnt, passed=row.passed == "Y",
        expected_amount=from_audit(row.expected_amt, scale),
        actual_amount=from_audit(row.actual_amt, scale), detail=row.detail or "",
        kind=checks.kind_of(row.check_name))


def _worker(row: Any, scale: int) -> WorkerMetrics:
    return WorkerMetrics(
        worker_id=row.worker_id, worker_type=row.worker_type,
        records_processed=row.records_processed, errors_count=row.errors_count,
        start_time=aware_utc(row.start_ts) if row.start_ts else None,
        end_time=aware_utc(row.end_ts) if row.end_ts else None,
        amount=from_audit(row.amount, scale) or 0, state=row.state, exit_code=row.exit_code,
        pid=row.pid or 0)

