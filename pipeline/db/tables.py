"""The job's tables, built from what its configuration names (``TableSpec``), with the
shared audit tables (pipeline.db.audit_tables).

``sql/{oracle,postgresql,sqlite}/`` holds the same DDL for DBAs; a test reflects both
and compares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    CHAR,
    BigInteger,
    Column,
    Date,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)

from pipeline.db.audit_tables import audit_tables
from pipeline.db.partitions import PARTITION_BY, with_default_partition
from pipeline.db.types import RUN_ID_LENGTH, Money, Timestamp
from pipeline.layouts.fields import Charset, Field, FieldType, Layout


class TableSpec(Protocol):
    """What the tables are built from: a job's configuration (pipeline.config.JobConfig)
    is one. Named here so that the database layer never depends on the configuration."""

    @property
    def staging_table(self) -> str: ...

    @property
    def final_table(self) -> str: ...

    @property
    def key_columns(self) -> tuple[str, ...]: ...

    @property
    def detail(self) -> Layout: ...


@dataclass(frozen=True)
class JobTables:
    metadata: MetaData
    staging: Table
    final: Table
    recon_audit: Table
    worker_audit: Table
    batch_run: Table
    job_lock: Table
    recon_evidence: Table

    @property
    def key_columns(self) -> tuple[str, ...]:
        """FINAL's primary key, in key order: the job's ``tables.key``, one column or several."""
        return tuple(c.name for c in self.final.primary_key.columns)

    @property
    def business_columns(self) -> list[str]:
        """The stored fields of the layout, in layout order (key first in FINAL)."""
        fixed = {"run_id", "source_line", "worker_id"}
        return [c.name for c in self.staging.columns if c.name not in fixed]


def job_tables(config: TableSpec) -> JobTables:
    metadata = MetaData()
    fields = config.detail.stored_fields
    staging = Table(
        config.staging_table,
        metadata,
        # the job's own run ids (pipeline.job.new_run_id): digits, letters and a dash
        Column("run_id", String(RUN_ID_LENGTH), nullable=False, info={"plain": True}),
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
    # a range of this index. Not (LAST_RUN_ID, AMOUNT), which let SQLite read the amounts
    # from the index alone: ordered by amount, every row the MERGE writes went to a random
    # place in it. Ordered by row, the run's entries are appended; the check reads the
    # rows instead. 10M rows into a 40M-row FINAL: the MERGE 208 -> 99 s (SQLite),
    # 216 -> 83 s (PostgreSQL); the check after it 1.2 -> 6.3-6.8 s (SQLite)
    Index(f"ix_{config.final_table}_run"[:30], final.c.last_run_id)
    return JobTables(metadata, staging, final, *audit_tables(metadata))


def key_of(table: Table, key_columns: Sequence[str]) -> list[Column[Any]]:
    """The key's columns of ``table``, in key order: one or several, never told apart."""
    return [table.c[name] for name in key_columns]


def _column(field: Field, key_columns: Sequence[str]) -> Column[Any]:
    # blank text is NULL (see fixed.columns_of); an upper-case code can never be blank
    nullable = field.optional or (field.type is FieldType.TEXT and not field.required
                                  and field.name not in key_columns
                                  and field.charset is not Charset.UPPER)
    if field.type is FieldType.AMOUNT:
        return Column(field.name, Money(field.length, field.scale), nullable=field.optional)
    if field.type is FieldType.DATE:
        return Column(field.name, Date, nullable=field.optional)
    # letters and digits only: nothing a database's text format escapes (the PostgreSQL
    # digests, pipeline.db.backends.postgresql._copy_text)
    plain = {"plain": field.type is FieldType.DIGITS
             or field.charset in (Charset.ALNUM, Charset.UPPER)}
    if field.type is FieldType.TEXT and field.charset is Charset.UPPER:
        return Column(field.name, CHAR(field.length), nullable=nullable, info=plain)
    return Column(field.name, String(field.length), nullable=nullable, info=plain)
