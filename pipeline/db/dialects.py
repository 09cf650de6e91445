"""What differs between the databases, in one place.

Differences that are just values live in one small ``DialectProfile`` per database
(dlt's capabilities object); statements that differ are compiled per dialect in
``merge.py``, and the bulk paths per database are in ``bulk.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Dialect


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

    @property
    def default_writers(self) -> int:
        return 2 if self.parallel_writers else 1


PROFILES = {
    "sqlite": DialectProfile("sqlite", False, 10_000, 128, True, True),
    # COPY from two processes measured 1.04M rows/s against 616k from one (facts.md)
    "postgresql": DialectProfile("postgresql", True, 10_000, 63, False, False),
    # python-oracledb's batcherrors returns at most 65,535 errors per call: stay below it;
    # 30-byte identifiers still apply before Oracle 12.2.
    "oracle": DialectProfile("oracle", True, 50_000, 30, False, False),
}


def profile_for(dialect: Dialect | str) -> DialectProfile:
    name = dialect if isinstance(dialect, str) else dialect.name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unsupported database {name!r}: expected {sorted(PROFILES)}") from None
