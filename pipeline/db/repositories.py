"""Repositories: the reconciliation's questions to the staging and FINAL tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Select,
    Table,
    and_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.sql.elements import ColumnElement

from pipeline.db.backends import backend_for
from pipeline.db.dialects import profile_for
from pipeline.db.digests import total
from pipeline.db.merge import merge_params, merge_statement, staged_rows, surviving_rows
from pipeline.db.partitions import drop_run_partitions
from pipeline.db.tables import JobTables, key_of
from pipeline.db.types import Money

_HALF = 2**32


class _AmountSums:
    """Exact SUM(amount) on every database.

    SQLite's SUM() raises "integer overflow" past int64, so there the sum is taken in
    two halves (amount / 2**32 and amount % 2**32, both truncating toward zero) that
    cannot overflow, and put back together in Python.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.split = profile_for(connection.dialect).split_money_sums

    def columns(self, amount: ColumnElement[Any]) -> list[ColumnElement[Any]]:
        if not self.split:
            return [func.coalesce(func.sum(amount), 0)]
        whole = amount.op("/", return_type=BigInteger)(literal(_HALF))
        rest = amount.op("%", return_type=BigInteger)(literal(_HALF))
        return [func.coalesce(func.sum(whole), 0), func.coalesce(func.sum(rest), 0)]

    def total(self, values: list[Any]) -> int:
        if not self.split:
            return int(values[0])
        return int(values[0]) * _HALF + int(values[1])


class Totals(NamedTuple):
    """Some rows' count and amount total, and the sum of the field a trailer hash total
    covers (recon.values.HashTotal; None for a job without one)."""

    rows: int
    amount: int
    hash: int | None = None
    # the sum of the rows' digests (pipeline.db.digests), where asked for and the
    # database computes them
    digest: int | None = None

    def less(self, other: Totals) -> Totals:
        hashed = None if self.hash is None or other.hash is None else self.hash - other.hash
        return Totals(self.rows - other.rows, self.amount - other.amount, hashed)


def _totals(connection: Connection, columns: Any, amount: str, hash_of: str | None,
            source: Any = None, where: Any = None, params: Any = None,
            digest: ColumnElement[Any] | None = None) -> Totals:
    """Count, exact amount sum, hashed-field sum and (``digest``: each row's, a
    backend's) digest sum of ``columns`` (a table's or a subquery's), in one pass."""
    sums = _AmountSums(connection)
    summed = [sums.columns(columns[amount])]
    if hash_of is not None:  # an integer field, stored as digits text or a number
        summed.append(sums.columns(cast(columns[hash_of], BigInteger)))
    query: Select[Any] = select(func.count(), *(c for part in summed for c in part),
                                *([] if digest is None else [_sum(digest)]))
    if source is not None:
        query = query.select_from(source)
    if where is not None:
        query = query.where(where)
    row = list(connection.execute(query, params).one())
    found, at = [], 1
    for part in summed:
        found.append(sums.total(row[at:at + len(part)]))
        at += len(part)
    return Totals(int(row[0]), found[0], found[1] if hash_of is not None else None,
                  int(row[at]) if digest is not None else None)


def _sum(digest: ColumnElement[Any]) -> ColumnElement[Any]:
    """The exact sum of 32-bit digests: 2**31 rows stay within SQLite's integer SUM."""
    return func.coalesce(func.sum(digest), 0)


class StagingRepository:
    def __init__(self, connection: Connection, tables: JobTables, key: tuple[str, ...],
                 amount: str, hash_of: str | None = None) -> None:
        """``hash_of``: the field a trailer hash total covers, summed beside the amount."""
        self.connection, self.table = connection, tables.staging
        self.key, self.amount, self.hash_of = key, amount, hash_of
        self.columns = tables.business_columns

    def get_record_count(self, run_id: str) -> int:
        return self.count_and_amount(run_id).rows

    def get_amount_total(self, run_id: str) -> int:
        return self.count_and_amount(run_id).amount

    def count_and_amount(self, run_id: str, digest: bool = False) -> Totals:
        """The run's staging totals; with ``digest``, the sum of the rows' digests too
        (pipeline.db.digests): in the same pass where the database computes them, else
        from the rows' digests fetched (Oracle)."""
        backend = backend_for(self.connection.dialect.name)
        digested = backend.row_digest(self.connection, self.table) if digest else None
        found = _totals(self.connection, self.table.c, self.amount, self.hash_of, self.table,
                        self.table.c.run_id == run_id, digest=digested)
        if digest and digested is None:
            digests = backend.staging_digests(self.connection, self.table, run_id)[2]
            found = found._replace(digest=total(digests))
        return found

    def surviving_count_and_amount(self, run_id: str) -> Totals:
        """Distinct keys of the run and the totals of each key's last row."""
        survivors = surviving_rows(self.table, self.key, self.columns).subquery("survivors")
        return _totals(self.connection, survivors.c, self.amount, self.hash_of,
                       params={"run_id": run_id})

    def collapsed_at_lines(self, run_id: str, lines: Sequence[int]
                           ) -> tuple[Totals, list[int]] | None:
        """(the totals of the records that keeping each key's last record drops, and their
        source lines), read from the run's rows at ``lines`` only: every record of a repeated
        key must be among them (pipeline.repeats.repeated_lines). The real keys are
        compared here, so a line there by a mere hash collision changes nothing. None
        where this database has no one-parameter list of lines (Oracle): the caller then
        ranks every row instead.

        The database ranks the rows at those lines only (a filter of the scan of the
        run's rows: PostgreSQL hashes the array, SQLite indexes the JSON list once) and
        returns the superseded ones: the cost grows with the repeated records, with no
        threshold. The night benchmark's 1M records with 10% repeats (221,000 lines,
        111,000 superseded): 0.66-0.68 s on SQLite, 0.79 s on PostgreSQL, against 2.2-2.3 s
        and 1.0 s to rank every row (medians of 5, two runs). A temporary table of the
        lines joined to the rows took 3.2-3.9 s on PostgreSQL (a busier machine; the
        array 0.9-1.4 s then): without statistics on the fresh staging partition, the
        planner sorted all 1M rows for the window before the join. Their value digests
        are not summed here: the processors spilled them with the lines (pipeline.repeats),
        and digesting the rows ranked cost as much again as the ranking (1M records, 10%
        repeats: 0.85 s against 0.55 s on SQLite, 0.97 s against 0.62 s on PostgreSQL).
        """
        lines_in = backend_for(self.connection.dialect.name).lines_in(
            self.table.c.source_line, list(lines))
        if lines_in is None:
            return None
        at, bound = lines_in
        s, money = self.table, self.table.c[self.amount].type
        assert isinstance(money, Money)
        # the driver's own value (Decimal on PostgreSQL): summed exactly, converted once
        raw = type_coerce(s.c[self.amount], money.load_dialect_impl(self.connection.dialect))
        hashed = [] if self.hash_of is None else [cast(s.c[self.hash_of], BigInteger)
                                                  .label("hashed")]
        ranked = select(
            s.c.source_line, raw.label("amount"), *hashed,
            func.row_number().over(partition_by=key_of(s, self.key),
                                   order_by=s.c.source_line.desc()).label("rn"),
        ).where(s.c.run_id == run_id, at).subquery("ranked")
        # every record of a key but its last: those keeping the last record drops
        rows = self.connection.execute(
            select(*(c for c in ranked.c if c.key != "rn"))
            .where(ranked.c.rn > literal_column("1")), {"lines": bound}).all()
        # by position: a million rows at 10M records with 10% repeats
        columns = list(zip(*rows, strict=True)) or [()] * (2 + len(hashed))
        amount = money.process_result_value(sum(columns[1]), self.connection.dialect)
        assert amount is not None
        hash_sum = sum(map(int, columns[2])) if hashed else None
        return Totals(len(rows), amount, hash_sum), sorted(map(int, columns[0]))

    def purge_runs(self, run_ids: list[str]) -> None:
        """Delete the staging rows of ``run_ids`` (older runs of the job: the run repository
        names them, pipeline.audit.runs.RunRepository.purge_staging).

        SQLite's and Oracle's staging has no index (it would slow every load), so each
        check scans it whole: without a purge that scan would grow with every night's
        run. PostgreSQL's has a partition per run (pipeline.db.partitions), dropped here
        instead of deleted row by row.
        """
        # PostgreSQL: each run's partition is dropped whole; the DELETE then finds only
        # rows that went to the DEFAULT partition (it prunes every other partition)
        drop_run_partitions(self.connection, self.table, run_ids)
        for run in run_ids:
            self.connection.execute(self.table.delete().where(self.table.c.run_id == run))


class FinalRepository:
    def __init__(self, connection: Connection, tables: JobTables, key: tuple[str, ...],
                 amount: str, hash_of: str | None = None) -> None:
        self.connection, self.tables = connection, tables
        self.table: Table = tables.final
        self.key, self.amount, self.hash_of = key, amount, hash_of

    def get_count_for_run(self, run_id: str) -> int:
        return self.count_and_amount_for_run(run_id).rows

    def get_amount_total_for_run(self, run_id: str) -> int:
        return self.count_and_amount_for_run(run_id).amount

    def count_and_amount_for_run(self, run_id: str, digest: bool = False) -> Totals:
        """The run's FINAL rows' totals; with ``digest``, their digest over every stored
        column too, in the same pass (``staged_digest`` is its staging twin)."""
        backend = backend_for(self.connection.dialect.name)
        digested = (backend.value_digest(
            self.connection, [self.table.c[c] for c in self.tables.business_columns])
            if digest else None)
        return _totals(self.connection, self.table.c, self.amount, self.hash_of, self.table,
                       backend.rare(self.table.c.last_run_id == run_id), digest=digested)

    def merge_run(self, run_id: str, updated_ts: datetime, deduplicate: bool = True,
                  superseded: Sequence[int] = ()) -> int:
        """Apply the run's surviving staging rows; the caller owns the transaction.

        ``deduplicate=False`` is only correct when no key repeats in the run once the
        staging rows at the ``superseded`` source lines (``collapsed_at_lines``) are left
        out: then the plain MERGE applies each key's last record without ranking them.
        """
        skip, params = self._skipping(run_id, superseded)
        params |= merge_params(run_id, updated_ts)
        backend = backend_for(self.connection.dialect.name)
        statement = merge_statement(
            self.tables.staging, self.table, self.key, self.tables.business_columns,
            deduplicate, skip, backend.key_sorts_as_bytes(self.connection, self.table, self.key))
        with backend.merging(self.connection):
            return int(self.connection.execute(statement, params).rowcount)

    def _skipping(self, run_id: str, superseded: Sequence[int]
                  ) -> tuple[ColumnElement[bool] | None, dict[str, Any]]:
        """The staging rows at the ``superseded`` lines, and the statement's parameters."""
        params: dict[str, Any] = {"run_id": run_id}
        if not superseded:
            return None, params
        lines_in = backend_for(self.connection.dialect.name).lines_in(
            self.tables.staging.c.source_line, list(superseded))
        if lines_in is None:
            raise ValueError("this database takes no list of lines: deduplicate instead")
        skip, params["lines"] = lines_in
        return skip, params

    def survivors(self, run_id: str, deduplicate: bool, superseded: Sequence[int] = ()
                  ) -> tuple[Any, dict[str, Any]]:
        """The run's surviving staging rows as the MERGE's source took them (source line
        included), and the parameters to bind."""
        staging, columns = self.tables.staging, [*self.tables.business_columns, "source_line"]
        skip, params = self._skipping(run_id, superseded)
        rows = (surviving_rows(staging, self.key, columns) if deduplicate
                else staged_rows(staging, columns, skip))
        return rows.subquery("s"), params

    def staged_digest(self, source: Any, params: dict[str, Any]) -> int | None:
        """The surviving staging rows' value digests summed, as the database computes
        them (its backend's ``value_digest``); None where it has none."""
        digest = backend_for(self.connection.dialect.name).value_digest(
            self.connection, [source.c[c] for c in self.tables.business_columns])
        if digest is None:
            return None
        return int(self.connection.execute(select(_sum(digest)), params).scalar_one())

    def columns_equal_count(self, source: Any, params: dict[str, Any]) -> int:
        """FINAL rows of the run (bound as ``:run_id``) equal, in every stored column
        (NULL-safe), to their key's surviving staging row in ``source``."""
        final = self.table
        query = (select(func.count()).select_from(final.join(source, self._on(source)))
                 .where(final.c.last_run_id == bindparam("run_id"), self._same(source)))
        return int(self.connection.execute(query, params).scalar_one())

    def columns_differing(self, source: Any, params: dict[str, Any], limit: int) -> list[Any]:
        """Up to ``limit`` surviving staging rows whose FINAL row of the run differs in a
        column or is missing: (key..., source line, staging values..., FINAL values...,
        whether FINAL has the row), in source-line order."""
        final, names = self.table, self._compared
        on = and_(self._on(source), final.c.last_run_id == bindparam("run_id"))
        present = final.c[self.key[0]].is_not(None)
        query = (select(*(source.c[k] for k in self.key), source.c.source_line,
                        *(source.c[c] for c in names), *(final.c[c] for c in names),
                        present.label("present"))
                 .select_from(source.outerjoin(final, on))
                 .where(or_(~present, not_(self._same(source))))
                 .order_by(source.c.source_line).limit(literal_column(str(int(limit)))))
        return list(self.connection.execute(query, params))

    @property
    def _compared(self) -> list[str]:
        return [c for c in self.tables.business_columns if c not in self.key]

    def _on(self, source: Any) -> ColumnElement[bool]:
        return and_(*(self.table.c[k] == source.c[k] for k in self.key))

    def _same(self, source: Any) -> ColumnElement[bool]:
        return and_(*(self.table.c[c].is_not_distinct_from(source.c[c])
                      for c in self._compared))
