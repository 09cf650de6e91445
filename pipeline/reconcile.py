"""ReconciliationService: run the checks in order, MERGE only when they balanced.

The checks themselves are pure (recon.checks); this module reads their figures from the
database and owns the MERGE's transaction, the one place FINAL is written.

Reconciliation is a step of the job, not a hook that could swallow a failure (the lesson
of Spring Batch's ``afterStep``): every check produces a result, and any failed result
fails the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from pipeline import interrupts
from pipeline.db.engine import database_errors
from pipeline.db.lock import FinalTransaction, HeldLock
from pipeline.db.repositories import FinalRepository, StagingRepository
from pipeline.db.tables import JobTables
from recon import checks
from recon.values import AggregatedMetrics, ReconciliationResult, TrailerTotals

# writes the audit of a run that passed on the MERGE's connection, given every check
Record = Callable[[Connection, list[ReconciliationResult]], None]


@dataclass(frozen=True)
class ReconciliationOutcome:
    results: list[ReconciliationResult]
    merged: bool
    staged_rows: int
    duplicates_collapsed: int

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


class ReconciliationService:
    def __init__(self, engine: Engine, tables: JobTables, key: tuple[str, ...], amount: str,
                 trailer: TrailerTotals) -> None:
        self.engine, self.tables = engine, tables
        self.key, self.amount, self.trailer = key, amount, trailer

    def reconcile(self, run_id: str, aggregated: AggregatedMetrics, merged_at: datetime, *,
                  record: Record | None = None,
                  lock: HeldLock | None = None) -> ReconciliationOutcome:
        results = self.reconcile_counts(run_id, aggregated)
        staged = next(r for r in results if r.check_name == checks.PROCESSED_TO_STAGING_AMOUNT)
        staged_rows, staged_amount = staged.actual_count, staged.actual_amount or 0
        if not all(r.passed for r in results):
            keys, _ = self._survivors(run_id)
            return ReconciliationOutcome([*results, *checks.merge_skipped(keys)], False,
                                         staged_rows, staged_rows - keys)
        # Most runs have no duplicate keys: MERGE the staging rows as they are, and only if
        # that shows a key twice, roll it back and MERGE each key's last row instead. The
        # plain MERGE proves "no duplicates" itself: it touches exactly one FINAL row per
        # staging row, or a database refuses it (PostgreSQL, Oracle) or skips the repeat
        # (SQLite), so no separate GROUP BY over staging is needed.
        earlier = results
        final_results = self.merge_and_verify(
            run_id, merged_at, staged_rows, staged_amount, 0, deduplicate=False,
            record=(lambda c, r: record(c, [*earlier, *r])) if record else None, lock=lock)
        collapsed = 0
        if final_results is None:
            keys, survivors_amount = self._survivors(run_id)
            collapsed = staged_rows - keys
            final_results = self.merge_and_verify(
                run_id, merged_at, keys, survivors_amount, collapsed, deduplicate=True,
                record=(lambda c, r: record(c, [*earlier, *r])) if record else None,
                lock=lock)
            assert final_results is not None
        merged = all(r.passed for r in [*results, *final_results])
        return ReconciliationOutcome([*results, *final_results], merged, staged_rows, collapsed)

    def _survivors(self, run_id: str) -> tuple[int, int]:
        """Distinct keys of the run and the amount total of each key's last staging row."""
        with database_errors(self.engine, "reconciling staging"), self.engine.connect() as conn:
            return StagingRepository(conn, self.tables, self.key,
                                     self.amount).surviving_count_and_amount(run_id)

    def reconcile_counts(self, run_id: str,
                         aggregated: AggregatedMetrics) -> list[ReconciliationResult]:
        """The checks before the MERGE: trailer -> read -> staging, counts and amounts."""
        with database_errors(self.engine, "reconciling staging"), self.engine.connect() as conn:
            staged, staged_amount = StagingRepository(
                conn, self.tables, self.key, self.amount).count_and_amount(run_id)
        return checks.load_checks(self.trailer, aggregated, staged, staged_amount)

    def merge_and_verify(self, run_id: str, merged_at: datetime, keys: int,
                         survivors_amount: int, collapsed: int, deduplicate: bool = True, *,
                         record: Record | None = None,
                         lock: HeldLock | None = None) -> list[ReconciliationResult] | None:
        """MERGE, the two checks after it and (``record``) the audit, in one transaction.

        It commits only when both checks passed, together with what ``record`` writes on
        its connection (RECON_AUDIT, RECON_WORKER_AUDIT, BATCH_RUN's final status): FINAL
        and the audit that describes it are never committed one without the other. With
        ``lock``, the transaction is the lock's final one, which first verifies the run
        still holds the job lock (pipeline.db.lock). Rolled back on any failure.

        Without ``deduplicate``, returns None (everything rolled back) when the staging
        rows turn out to repeat a key: the caller then MERGEs with de-duplication.
        """
        interrupts.check()  # a safe point: nothing of the MERGE has started
        with database_errors(self.engine, "merging into the final table"), \
                self._final_transaction(lock) as transaction:
            conn = transaction.connection
            final = FinalRepository(conn, self.tables, self.key, self.amount)
            try:
                touched = final.merge_run(run_id, merged_at, deduplicate)
            except DBAPIError:
                if deduplicate or interrupts.requested():
                    raise
                touched = -1  # refused, most likely for a key twice: retry deduplicated
            if not deduplicate and touched != keys:
                transaction.rollback()
                return None
            count, amount = final.count_and_amount_for_run(run_id)
            results = checks.final_checks(self.key, keys, survivors_amount, collapsed, count,
                                          amount)
            if all(r.passed for r in results):
                if record is not None:
                    record(conn, results)
                transaction.commit()
            else:
                transaction.rollback()
                results = [checks.rolled_back(r) for r in results]
        return results

    @contextmanager
    def _final_transaction(self, lock: HeldLock | None) -> Iterator[FinalTransaction]:
        if lock is not None:
            with lock.final_transaction() as transaction:
                yield transaction
            return
        with self.engine.connect() as conn:
            tx = conn.begin()
            try:
                yield FinalTransaction(conn, tx.commit, tx.rollback)
            finally:
                if tx.is_active:
                    tx.rollback()

