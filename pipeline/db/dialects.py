"""The values that differ between the databases: one ``DialectProfile`` per database.

Differences that are just values live in one small data object per database (dlt's
capabilities object), held by the database's own module in ``pipeline.db.backends``;
statements that differ are compiled per dialect in ``merge.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Dialect

from pipeline.db.backends import backend_for


@dataclass(frozen=True)
class DialectProfile:
    name: str
    parallel_writers: bool  # False: one connection writes at a time, more writers only wait
    batch_size: int  # records per queue batch and per staging commit
    max_identifier_length: int
    # SQLite has no exact decimal type: money is stored as integer minor units there.
    money_as_minor_units: bool
    # SQLite's SUM() raises on int64 overflow: sum in two halves (see repositories).
    split_money_sums: bool
    # staging LIST-partitioned by run, a partition per run (pipeline.db.partitions)
    staging_partitions: bool = False
    # the job lock is a row of JOB_LOCK (so the tables come first); False: SQLite's lock is
    # on the database file, taken before the run reads or writes anything there
    lock_needs_tables: bool = True
    # one bound parameter holds a list of source lines (its backend's ``lines_in``); False
    # (Oracle): the MERGE cannot leave out superseded lines, it ranks every row instead
    line_lists: bool = True

    @property
    def default_writers(self) -> int:
        return 2 if self.parallel_writers else 1


def profile_for(dialect: Dialect | str) -> DialectProfile:
    name = dialect if isinstance(dialect, str) else dialect.name
    return backend_for(name).profile
