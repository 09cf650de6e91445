"""The job's tables, built from its configuration, and the shared audit tables.

``sql/{oracle,postgresql,sqlite}/`` holds the same DDL for DBAs; a test reflects both
and compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CHAR,
    TIMESTAMP,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from pipeline.config import JobConfig
from pipeline.db.dialects import profile_for
from pipeline.db.partitions import PARTITION_BY, with_default_partition
from pipeline.layouts.fields import Charset, Field, FieldType
from pipeline.money import format_minor, parse_decimal_to_minor

RUN_ID_LENGTH = 50
# TIMESTAMP, not DateTime: SQLAlchemy's DateTime is DATE on Oracle, which drops the
# fractional seconds
Timestamp = TIMESTAMP
AUDIT_SCALE = 6  # audit amounts hold any job's scale up to 6 decimals exactly
AUDIT_PRECISION = 38  # Oracle's NUMBER maximum


class Money(TypeDecorator[int]):
    """Exact money: Python side always integer minor units.

    NUMERIC(p, s) where the database has it; integer minor units on SQLite.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision, self.scale = precision, scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        from pipeline.db.backends import backend_for

        # each database's own (pipeline.db.backends), e.g. Oracle's NUMBER(p, s)
        return backend_for(dialect.name).money_type(dialect, self.precision, self.scale)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or profile_for(dialect).money_as_minor_units:
            return value
        return Decimal(int(value)).scaleb(-self.scale)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return to_minor(value, 0 if profile_for(dialect).money_as_minor_units else self.scale)


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


def to_minor(value: int | Decimal, scale: int) -> int:
    """Exact minor units of a database value; refuses anything that is not whole."""
    if isinstance(value, int):
        return value * 10**scale
    minor = Decimal(value).scaleb(scale)
    if minor != minor.to_integral_value():
        raise ValueError(f"{value} has more than {scale} decimals")
    return int(minor)


@dataclass(frozen=True)
class JobTables:
    metadata: MetaData
    staging: Table
    final: Table
    recon_audit: Table
    worker_audit: Table
    batch_run: Table
    job_lock: Table

    @property
    def key_columns(self) -> tuple[str, ...]:
        """FINAL's primary key, in key order: the job's ``tables.key``, one column or several."""
        return tuple(c.name for c in self.final.primary_key.columns)

    @property
    def business_columns(self) -> list[str]:
        """The stored fields of the layout, in layout order (key first in FINAL)."""
        fixed = {"run_id", "source_line", "worker_id"}
        return [c.name for c in self.staging.columns if c.name not in fixed]


def job_tables(config: JobConfig) -> JobTables:
    metadata = MetaData()
    fields = config.detail.stored_fields
    staging = Table(
        config.staging_table,
        metadata,
        Column("run_id", String(RUN_ID_LENGTH), nullable=False),
        Column("source_line", BigInteger, nullable=False),
        Column("worker_id", Integer, nullable=False),
        *(_column(f, config.key_columns) for f in fields),
        # No key and no index: on SQLite a (run_id, source_line) key made the load 1.6x
        # slower; the reconciliation, not a constraint, proves every line arrived once.
        # PostgreSQL: a partition per run, so every check reads tonight's rows only
        postgresql_partition_by=PARTITION_BY,
    )
    with_default_partition(staging)
    key = config.key_columns
    # the key's columns first, in key order (a stable sort keeps the layout order after them)
    key_first = sorted(fields, key=lambda f: key.index(f.name) if f.name in key else len(key))
    final = Table(
        config.final_table,
        metadata,
        *(_column(f, key) for f in key_first),
        Column("last_run_id", String(RUN_ID_LENGTH), nullable=False),
        Column("updated_ts", Timestamp, nullable=False),
        PrimaryKeyConstraint(*key, name=f"pk_{config.final_table}"[:30]),
    )
    # the staging_to_final checks count and sum the FINAL rows of one run among millions:
    # with the amount in the index that is a range scan of the index alone
    Index(f"ix_{config.final_table}_run"[:30], final.c.last_run_id, final.c[config.amount])
    return JobTables(metadata, staging, final, *audit_tables(metadata))


def key_of(table: Table, key_columns: Sequence[str]) -> list[Column[Any]]:
    """The key's columns of ``table``, in key order: one or several, never told apart."""
    return [table.c[name] for name in key_columns]


def _column(field: Field, key_columns: Sequence[str]) -> Column[Any]:
    # blank text is NULL (see fixed.columns_of); an upper-case code can never be blank
    nullable = (field.type is FieldType.TEXT and not field.required
                and field.name not in key_columns
                and field.charset is not Charset.UPPER)
    if field.type is FieldType.AMOUNT:
        return Column(field.name, Money(field.length, field.scale), nullable=False)
    if field.type is FieldType.DATE:
        return Column(field.name, Date, nullable=False)
    if field.type is FieldType.TEXT and field.charset is Charset.UPPER:
        return Column(field.name, CHAR(field.length), nullable=nullable)
    return Column(field.name, String(field.length), nullable=nullable)


def audit_tables(metadata: MetaData) -> tuple[Table, Table, Table, Table]:
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
        # 'Y' once a later run purged this run's staging rows (pipeline.db.repositories)
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
        Column("resumed_ts", Timestamp),  # the last `run --resume` of this run
        # where the run's process lives: a later run marks it ABENDED only once that
        # process is provably gone (recon.audit.AuditWriter.close_abandoned_runs)
        Column("host", String(255)),
        Column("pid", Integer),
        # how long each stage took, in milliseconds (pipeline.stages.STAGES, in order)
        *(Column(f"{stage}_ms", BigInteger) for stage in ("plan", "load", "checks", "merge",
                                                          "audit")),
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
    return recon_audit, worker_audit, batch_run, job_lock
