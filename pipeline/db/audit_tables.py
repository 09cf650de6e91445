"""The audit's tables: BATCH_RUN, RECON_AUDIT, RECON_WORKER_AUDIT, JOB_LOCK and
RECON_EVIDENCE, shared by every job; amounts at ``AUDIT_SCALE``.

Defined here, with the job's own tables (pipeline.db.tables), because the database layer
creates and checks them all together; what is written to them, and when, is the audit's
(pipeline.audit). ``sql/{oracle,postgresql,sqlite}/audit.sql`` holds the same DDL for
DBAs; a test reflects both and compares them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CHAR,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from pipeline.db.dialects import profile_for
from pipeline.db.types import RUN_ID_LENGTH, Money, Timestamp
from pipeline.money import format_minor, parse_decimal_to_minor

AUDIT_SCALE = 6  # audit amounts hold any job's scale up to 6 decimals exactly
AUDIT_PRECISION = 38  # Oracle's NUMBER maximum


class AuditMoney(Money):
    """Audit amounts: sums over a whole run, which can pass int64 in minor units.

    SQLite stores them as exact decimal text instead of an integer that could overflow.
    """

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if profile_for(dialect).money_as_minor_units:
            return dialect.type_descriptor(String(AUDIT_PRECISION + 2))
        return super().load_dialect_impl(dialect)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is not None and profile_for(dialect).money_as_minor_units:
            return format_minor(int(value), self.scale)
        return super().process_bind_param(value, dialect)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is not None and profile_for(dialect).money_as_minor_units:
            return parse_decimal_to_minor(str(value), self.scale)
        return super().process_result_value(value, dialect)


def audit_tables(metadata: MetaData) -> tuple[Table, Table, Table, Table, Table]:
    money = AuditMoney(AUDIT_PRECISION, AUDIT_SCALE)
    recon_audit = Table(
        "recon_audit",
        metadata,
        Column("recon_id", Integer, Identity(always=True)),
        Column("run_id", String(RUN_ID_LENGTH), nullable=False),
        Column("check_name", String(50), nullable=False),
        # the designers' INTEGER would overflow at 2**31 records
        Column("expected_cnt", BigInteger, nullable=False),
        Column("actual_cnt", BigInteger, nullable=False),
        Column("passed", CHAR(1), CheckConstraint("passed IN ('Y', 'N')", name="ck_recon_passed")),
        Column("discrepancy", BigInteger, nullable=False),
        Column("check_ts", Timestamp, nullable=False),
        Column("expected_amt", money),
        Column("actual_amt", money),
        Column("discrepancy_amt", money),
        Column("detail", String(1000)),
        PrimaryKeyConstraint("recon_id", name="pk_recon_audit"),
    )
    Index("ix_recon_audit_run", recon_audit.c.run_id)
    worker_audit = Table(
        "recon_worker_audit",
        metadata,
        Column("run_id", String(RUN_ID_LENGTH), nullable=False),
        Column("worker_id", Integer, nullable=False),
        Column("worker_type", String(10), nullable=False),
        Column("records_processed", BigInteger, nullable=False),
        Column("errors_count", BigInteger, nullable=False),
        Column("amount", money, nullable=False),
        Column("start_ts", Timestamp),
        Column("end_ts", Timestamp),
        Column("state", String(20), nullable=False),
        Column("exit_code", Integer),
        Column("pid", Integer),
        CheckConstraint("worker_type IN ('processor', 'writer')", name="ck_worker_type"),
        PrimaryKeyConstraint("run_id", "worker_id", name="pk_recon_worker_audit"),
    )
    batch_run = Table(
        "batch_run",
        metadata,
        Column("run_id", String(RUN_ID_LENGTH), nullable=False),
        Column("job_name", String(50), nullable=False),
        Column("input_path", String(1000), nullable=False),
        Column("input_sha256", CHAR(64)),
        Column("status", String(20), nullable=False),
        Column("start_ts", Timestamp, nullable=False),
        Column("end_ts", Timestamp),
        Column("exit_code", Integer),
        Column("message", String(1000)),
        # 'Y' once a later run purged this run's staging rows (RunRepository.purge_staging)
        Column("staging_purged", CHAR(1)),
        # the load's control totals, stored once the staging load completed, so that
        # `run --resume` can finish the run from staging without its file (pipeline.resume)
        Column("trailer_cnt", BigInteger),
        Column("trailer_amt", money),
        Column("read_cnt", BigInteger),
        Column("rejected_cnt", BigInteger),
        Column("written_cnt", BigInteger),
        Column("read_amt", money),
        Column("accepted_amt", money),
        Column("unreadable_cnt", BigInteger),
        # with a trailer hash total (control.trailer_hash_total): the trailer's, the sums
        # over the records read and accepted (within the trailer field's digits), and the
        # records whose hashed field could not be read
        Column("trailer_hash", BigInteger),
        Column("read_hash", BigInteger),
        Column("accepted_hash", BigInteger),
        Column("unhashed_cnt", BigInteger),
        Column("resumed_ts", Timestamp),  # the last `run --resume` of this run
        # when processed_to_staging_columns proved staging held the processors' rows (kept
        # by a run that failed after it): a resume without the input file can say so,
        # not prove it again
        Column("staging_proven_ts", Timestamp),
        # where the run's process lives: a later run marks it ABENDED only once that
        # process is provably gone (pipeline.audit.runs.RunRepository.close_abandoned_runs)
        Column("host", String(255)),
        Column("pid", Integer),
        # how long each stage took, in milliseconds (pipeline.stages.STAGES, in order)
        *(Column(f"{stage}_ms", BigInteger) for stage in ("plan", "load", "checks", "merge",
                                                          "audit")),
        # the job instance (pipeline.identity): the header's business date, and 'Y' where
        # the operator overrode a refusal (run --rerun, run --allow-older)
        Column("business_date", Date),
        Column("rerun", CHAR(1)),
        Column("allow_older", CHAR(1)),
        # how the input was read: its code page (a file declared cp500 but written cp037
        # reads '!' as ']' and still balances) and the SHA-256 of the copybook describing it
        Column("code_page", String(10)),
        Column("copybook_sha256", CHAR(64)),
        PrimaryKeyConstraint("run_id", name="pk_batch_run"),
    )
    job_lock = Table(
        "job_lock",
        metadata,
        # one row per job, locked FOR UPDATE by the run in progress (pipeline.db.lock)
        Column("job_name", String(50), nullable=False),
        # the run holding the lock: the fencing token its final transaction re-reads
        Column("run_id", String(RUN_ID_LENGTH)),
        PrimaryKeyConstraint("job_name", name="pk_job_lock"),
    )
    recon_evidence = Table(
        "recon_evidence",
        metadata,
        # the rows behind a failed column check, kept as found when it failed: a trigger
        # since dropped, a concurrent writer or a lock is gone by the time anyone looks
        Column("run_id", String(RUN_ID_LENGTH), nullable=False),
        Column("seq", Integer, nullable=False),  # the order they were found in
        Column("check_name", String(50), nullable=False),
        Column("source_line", BigInteger),
        Column("key_value", String(200)),
        Column("column_name", String(128), nullable=False),
        Column("expected_value", String(1000)),  # NULL: the value is NULL
        Column("actual_value", String(1000)),
        PrimaryKeyConstraint("run_id", "seq", name="pk_recon_evidence"),
    )
    return recon_audit, worker_audit, batch_run, job_lock, recon_evidence


# the audit tables an earlier version created: sql/<db>/upgrade_audit.sql adds columns to
# them, never drops them (RECON_EVIDENCE, newer, is created whole when it is missing)
UPGRADABLE = frozenset({"recon_audit", "recon_worker_audit", "batch_run", "job_lock"})
NAMES = frozenset(t.name for t in audit_tables(MetaData()))  # never a job's staging or FINAL
