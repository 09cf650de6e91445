"""Staging partitions: each run's rows in a table of their own, on PostgreSQL.

PostgreSQL's staging table is ``PARTITION BY LIST (run_id)``: a run creates its partition
before its load, so every check and the MERGE read tonight's rows only (partition
pruning on ``run_id = :run_id``), whatever the staging history, and a purge drops old
partitions instead of scanning and deleting rows. A DEFAULT partition catches the rows
of a run whose partition is missing (a staging table created by hand without one per
run), so a load never fails for want of a partition.

SQLite has no partitions: there the purge keeps staging to the job's latest
``keep_staging_runs`` runs, which bounds every scan. Oracle's list partitioning is a
licensed option (Partitioning, Enterprise Edition), so Oracle keeps the same plain
table as SQLite; a DBA who holds the licence can partition ``sql/oracle``'s staging
table by list the same way, the job's SQL is unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, event, text
from sqlalchemy.exc import DBAPIError

from pipeline.db.dialects import profile_for

log = logging.getLogger(__name__)
# creating a partition locks the staging table: behind another session's lock (a long
# report, a DBA's LOCK TABLE) the run goes on without one rather than wait
PARTITION_LOCK_WAIT_MS = 2000

DEFAULT_SUFFIX = "_default"


PARTITION_BY = "LIST (run_id)"  # the staging Table's postgresql_partition_by


def with_default_partition(staging: Table) -> Table:
    """``staging``'s DEFAULT partition is created with it (``create_all``, PostgreSQL)."""
    event.listen(staging, "after_create", _create_default_partition)
    return staging


def _create_default_partition(table: Table, connection: Connection, **_kw: Any) -> None:
    if not profile_for(connection.dialect).staging_partitions:
        return
    connection.exec_driver_sql(
        f"CREATE TABLE {_qualified(connection, table, table.name + DEFAULT_SUFFIX)} "
        f"PARTITION OF {_qualified(connection, table, table.name)} DEFAULT")


def run_partition_name(staging: Table, run_id: str) -> str:
    """``stg_transactions_r20261125t013000_1a2b3c4d``: a plain identifier per run."""
    return f"{staging.name}_r{re.sub(r'[^0-9a-z]', '_', run_id.lower())}"


def is_partitioned(connection: Connection, staging: Table) -> bool:
    """True on PostgreSQL when the staging table is list-partitioned (a table created by
    an earlier version of the job is not: its runs share it, as on SQLite)."""
    if not profile_for(connection.dialect).staging_partitions:
        return False
    query = text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:name)")
    return connection.execute(
        query, {"name": _qualified(connection, staging, staging.name)}).first() is not None


def create_run_partition(connection: Connection, staging: Table, run_id: str) -> bool:
    """The run's own partition, before its load; False where staging is not partitioned,
    or when the partition could not be made: another session's lock on staging held past
    a short wait, or a job user with DML rights only (CREATE ... PARTITION OF needs the
    table's owner).

    A partition only speeds the checks up: the run never waits long or fails for one.
    Without it the run's rows go to the DEFAULT partition, and every figure stays the same.
    """
    if not is_partitioned(connection, staging):
        return False
    literal = run_id.replace("'", "''")  # a run id is [0-9T-a-f]; quoted all the same
    try:
        with _short_lock_wait(connection):
            connection.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS "
                f"{_qualified(connection, staging, run_partition_name(staging, run_id))} "
                f"PARTITION OF {_qualified(connection, staging, staging.name)} "
                f"FOR VALUES IN ('{literal}')")
    except DBAPIError as exc:
        log.warning("staging partition for run %s not created (%s): its rows go to the "
                    "DEFAULT partition", run_id, str(exc.orig).strip().splitlines()[0])
        return False
    return True


def drop_run_partitions(connection: Connection, staging: Table, run_ids: list[str]) -> None:
    """Drop the runs' partitions: a purge that costs the same for a row or a million.

    Where that cannot be done (a lock held past a short wait, a job user who does not own
    staging) the partitions stay, and the caller's DELETE empties them instead.
    """
    if not run_ids or not is_partitioned(connection, staging):
        return
    try:
        with _short_lock_wait(connection):
            for run_id in run_ids:
                connection.exec_driver_sql(
                    "DROP TABLE IF EXISTS "
                    f"{_qualified(connection, staging, run_partition_name(staging, run_id))}")
    except DBAPIError as exc:
        log.warning("old staging partitions not dropped (%s): their rows are deleted "
                    "instead", str(exc.orig).strip().splitlines()[0])


@contextmanager
def _short_lock_wait(connection: Connection) -> Iterator[None]:
    """A savepoint whose statements wait at most PARTITION_LOCK_WAIT_MS for a lock; the
    transaction's later statements get the session's own lock_timeout back."""
    with connection.begin_nested():
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {PARTITION_LOCK_WAIT_MS}")
        yield
        connection.exec_driver_sql("SET LOCAL lock_timeout TO DEFAULT")


def _qualified(connection: Connection, table: Table, name: str) -> str:
    quote = connection.dialect.identifier_preparer.quote
    schema = connection.schema_for_object(table)
    return f"{quote(schema)}.{quote(name)}" if schema else quote(name)
