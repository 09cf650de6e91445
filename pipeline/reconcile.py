"""ReconciliationService: run the checks in order, MERGE only when they balanced.

The checks themselves are pure (recon.checks); this module reads their figures from the
database and owns the MERGE's transaction, the one place FINAL is written.

Reconciliation is a step of the job, not a hook that could swallow a failure (the lesson
of Spring Batch's ``afterStep``): every check produces a result, and any failed result
fails the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from pipeline import interrupts
from pipeline.column_proof import EVIDENCE_ROWS, ColumnFinding, InputRows, compare_staging, shown
from pipeline.db.backends import backend_for
from pipeline.db.dialects import profile_for
from pipeline.db.engine import database_errors
from pipeline.db.lock import FinalTransaction, HeldLock, own_transaction
from pipeline.db.repositories import FinalRepository, StagingRepository, Totals
from pipeline.db.tables import JobTables
from pipeline.errors import PipelineError
from pipeline.repeats import Repeated
from pipeline.stages import CHECKS, MERGE, StageClock, maybe
from pipeline.staging_totals import StagingTotals
from recon import checks
from recon.values import (
    ROW,
    AggregatedMetrics,
    Evidence,
    HashTotal,
    ReconciliationResult,
    RejectLimit,
    TrailerTotals,
)

# writes the audit of a run that passed on the MERGE's connection, given every check
Record = Callable[[Connection, list[ReconciliationResult]], None]


class StagingFigures(Protocol):
    """What the checks read of the run's staging rows (StagingRepository)."""

    def count_and_amount(self, run_id: str, digest: bool = False) -> Totals: ...
    def surviving_count_and_amount(self, run_id: str) -> Totals: ...
    def collapsed_at_lines(self, run_id: str, lines: Sequence[int]
                           ) -> tuple[Totals, list[int]] | None: ...


class FinalFigures(Protocol):
    """The MERGE and what the checks after it read of FINAL (FinalRepository);
    ``survivors`` is whatever the other methods take as the MERGE's source."""

    def merge_run(self, run_id: str, updated_ts: datetime, deduplicate: bool = True,
                  superseded: Sequence[int] = ()) -> int: ...
    def count_and_amount_for_run(self, run_id: str, digest: bool = False) -> Totals: ...
    def get_count_for_run(self, run_id: str) -> int: ...
    def survivors(self, run_id: str, deduplicate: bool, superseded: Sequence[int] = ()
                  ) -> tuple[Any, dict[str, Any]]: ...
    def staged_digest(self, source: Any, params: dict[str, Any]) -> int | None: ...
    def columns_equal_count(self, source: Any, params: dict[str, Any]) -> int: ...
    def columns_differing(self, source: Any, params: dict[str, Any],
                          limit: int) -> list[Any]: ...


class Store(Protocol):
    """Everything ReconciliationService needs of the database: connections (and one that
    reads beside the MERGE, which can be cancelled from another thread), the final
    transaction, and the two repositories on a connection. SqlStore is the database's;
    tests/unit/fake_store.py keeps the tables in lists, so the service's rules run
    without any database (as httpx's MockTransport stands in for the network)."""

    def connect(self) -> AbstractContextManager[Any]: ...
    def reading(self) -> AbstractContextManager[Any]: ...
    def cancel(self, conn: Any) -> None: ...
    def final_transaction(self, lock: HeldLock | None
                          ) -> AbstractContextManager[FinalTransaction]: ...
    def staging(self, conn: Any) -> StagingFigures: ...
    def final(self, conn: Any) -> FinalFigures: ...


@dataclass(frozen=True)
class SqlStore:
    """The job's staging and FINAL tables on ``engine``."""

    engine: Engine
    tables: JobTables
    key: tuple[str, ...]
    amount: str
    hash_of: str | None

    def connect(self) -> AbstractContextManager[Connection]:
        return self.engine.connect()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection that reads what is committed whatever is written meanwhile (the
        MERGE, on another connection): pipeline.staging_totals."""
        with self.engine.connect() as conn:
            backend_for(conn.dialect.name).read_beside(conn)
            yield conn

    def cancel(self, conn: Connection) -> None:
        """Stop ``conn``'s statement in flight (from another thread)."""
        backend_for(conn.dialect.name).cancel(conn.connection.dbapi_connection)

    def final_transaction(self, lock: HeldLock | None
                          ) -> AbstractContextManager[FinalTransaction]:
        return lock.final_transaction() if lock is not None else own_transaction(self.engine)

    def staging(self, conn: Connection) -> StagingRepository:
        return StagingRepository(conn, self.tables, self.key, self.amount, self.hash_of)

    def final(self, conn: Connection) -> FinalRepository:
        return FinalRepository(conn, self.tables, self.key, self.amount, self.hash_of)


class StagingChanged(Exception):
    """Staging's totals, summed beside the MERGE, are not the processors'."""


@dataclass(frozen=True)
class ReconciliationOutcome:
    results: list[ReconciliationResult]
    staged_rows: int
    duplicates_collapsed: int
    evidence: list[Evidence]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


class ReconciliationService:
    def __init__(self, engine: Engine, tables: JobTables, key: tuple[str, ...], amount: str,
                 trailer: TrailerTotals, reject_limit: RejectLimit | None = None, *,
                 input_rows: InputRows | None = None,
                 on_proven: Callable[[], None] | None = None,
                 proven_at: datetime | None = None, store: Store | None = None) -> None:
        """``reject_limit``: the job's (config.reject_limit); None: the contract's 5%.
        ``input_rows``: the input file again, to name the rows a column check finds
        changed, and to derive the processors' digests on `run --resume`. ``on_proven``
        is called once staging is proven to hold the processors' rows (the job notes it
        in BATCH_RUN); ``proven_at``, on a resume, is when the run proved it. ``store``: where
        the figures come from (default: ``engine``'s tables, SqlStore)."""
        self.engine, self.tables = engine, tables
        self.key, self.amount, self.trailer = key, amount, trailer
        self.hash_of = trailer.hash.of if trailer.hash is not None else None
        self.reject_limit = reject_limit
        self.input_rows, self.on_proven, self.proven_at = input_rows, on_proven, proven_at
        self.store = store or SqlStore(engine, tables, key, amount, self.hash_of)
        self.evidence: list[Evidence] = []  # behind the failed column checks, so far
        # the checks decided so far: what a run that fails at the MERGE still records
        self.checked: list[ReconciliationResult] = []
        # the processors' sum of value digests, once staging is proven to hold their rows,
        # and that of the staging rows the plain MERGE leaves out (superseded records)
        self.proven_values: int | None = None
        self.superseded_values: int | None = None
        # the processors' metrics whose figures staging's, summed beside, must equal
        # (``_processed``); None once they did (pipeline.staging_totals)
        self.awaited: AggregatedMetrics | None = None

    def reconcile(self, run_id: str, aggregated: AggregatedMetrics, merged_at: datetime,
                  repeats: bool | None = None,
                  stages: StageClock | None = None,
                  repeated: Repeated | None = None, *,
                  record: Record | None = None,
                  lock: HeldLock | None = None,
                  before_merge: Sequence[ReconciliationResult] = ()) -> ReconciliationOutcome:
        """The checks, then exactly one MERGE if they balanced.

        ``repeats`` says whether a key repeats in the run (pipeline.repeats): False MERGEs
        the staging rows as they are; True or None (not known, e.g. `run --resume`) MERGEs
        each key's last row, which is exact in every case. ``repeated``, the records whose
        key hash repeats (their source lines and value digests), lets the keys that survive
        be counted from those few rows instead of ranking every row of the run, and names
        the records a later one supersedes: the plain MERGE then leaves those out instead of
        ranking every row (SQLite, 1M rows into 4M: the MERGE 4.7-5.6 s against 6.5-6.8 s).
        ``record`` and ``lock``: see ``merge_and_verify``. ``before_merge``: checks the
        caller decided from figures of its own (volume_vs_history, from BATCH_RUN), after
        the load checks; the MERGE runs only if they passed too.

        Staging's totals and digest sum are summed beside the MERGE, and known before
        anything is decided (pipeline.staging_totals); should they differ from the
        processors', the checks are decided again with staging's read first.
        """
        steps = (run_id, aggregated, merged_at, repeats, stages, repeated, record, lock,
                 before_merge)
        if aggregated.row_digest is None:  # a resume: there is no processors' sum to wait for
            return self._reconcile(*steps, None)
        beside = StagingTotals(self.store, run_id)
        try:
            with beside:
                return self._reconcile(*steps, beside)
        except StagingChanged:
            pass  # the MERGE, if it ran, rolled back
        except PipelineError:
            self.checked = self._decided(beside)  # what the job records of a failed run
            raise
        self.evidence, self.checked = [], []
        self.proven_values = self.superseded_values = self.awaited = None
        return self._reconcile(*steps, None)

    def _reconcile(self, run_id: str, aggregated: AggregatedMetrics, merged_at: datetime,
                   repeats: bool | None, stages: StageClock | None, repeated: Repeated | None,
                   record: Record | None, lock: HeldLock | None,
                   before_merge: Sequence[ReconciliationResult],
                   beside: StagingTotals | None) -> ReconciliationOutcome:
        """``reconcile``, staging's totals summed ``beside`` (None: in the checks)."""
        superseded: list[int] | None = []  # None: not known, every row is ranked
        with maybe(stages, CHECKS):
            results, staged = self.load_checks(run_id, aggregated, beside)
            results = checks.in_order([*results, *before_merge])
            staged_rows = staged.rows
            passed = all(r.passed for r in results)
            if passed and repeats and repeated is not None:
                survivors, superseded = self._survivors_from(run_id, repeated, staged)
            elif not passed or repeats is not False:
                survivors = self.survivors(run_id)
                superseded = None
            else:
                survivors, self.superseded_values = staged, 0
        keys = survivors.rows
        self.checked = results
        if not passed:
            self._confirm(beside)
            skipped = checks.merge_skipped(keys, hashed=self.hash_of is not None)
            return ReconciliationOutcome([*results, *skipped], staged_rows,
                                         staged_rows - keys, self.evidence)
        collapsed = staged_rows - keys
        earlier = results
        audit = (lambda c, r: record(c, [*earlier, *r])) if record else None
        with maybe(stages, MERGE, f"{keys:,} keys"):
            final_results = self.merge_and_verify(run_id, merged_at, survivors,
                                                  collapsed, deduplicate=superseded is None,
                                                  superseded=superseded or (),
                                                  record=audit, lock=lock, beside=beside)
        if final_results is None:
            # The plain MERGE touched another number of FINAL rows than the run has keys
            # (or the database refused it for a key met twice), and rolled back. The key
            # hashes rule out any other repeated key, so something else changed FINAL's
            # rows (a trigger, another writer): the de-duplicating MERGE, with its own
            # checks, then tells exactly what FINAL got. Never the normal path.
            survivors = self.survivors(run_id)
            collapsed = staged_rows - survivors.rows
            with maybe(stages, MERGE, f"{survivors.rows:,} keys, again"):
                final_results = self.merge_and_verify(run_id, merged_at, survivors, collapsed,
                                                      record=audit, lock=lock, beside=beside)
            assert final_results is not None
        return ReconciliationOutcome([*results, *final_results], staged_rows, collapsed,
                                     self.evidence)

    def _survivors_from(self, run_id: str, repeated: Repeated, staged: Totals
                        ) -> tuple[Totals, list[int] | None]:
        """As ``_survivors``, from the staged totals less the records a repeat drops, and
        the source lines of those records (None when every row had to be ranked). Their
        value digests are the processors' (``repeated``): staging is proven to hold the
        processors' rows before this is asked.

        Where every key was spilled whole (pipeline.repeats: one column of up to 16
        characters, or an integer), the real keys of those records are compared here, in
        numpy: no query (the night benchmark's 1M records with 10% repeats: ~0.05 s
        against 0.6-0.8 s for the database). Otherwise, whatever the share of repeats,
        the database ranks the rows at those lines only (``collapsed_at_lines``), so the
        cost grows with the repeated records. Until
        2026-12-04, past 100,000 of them (or 1% of the run) every row was ranked here and
        again in the MERGE: the night benchmark, 4M + 1M with 10% repeats, job/floor
        1.60-1.68x on SQLite, 1.21-1.23x since (benchmarks/results/night-repeats-cliff.md).
        """
        if not profile_for(self.engine.dialect).line_lists:  # Oracle: rank every row
            return self.survivors(run_id), None
        whole = repeated.superseded()
        if whole is not None:  # the processors spilled every key whole: compared here
            self.superseded_values = whole.digest
            hashed = whole.hashed if self.hash_of is not None else None
            return staged.less(Totals(whole.rows, whole.amount, hashed)), whole.lines
        with database_errors(self.engine, "reconciling staging"), self.store.connect() as conn:
            dropped = self.store.staging(conn).collapsed_at_lines(
                run_id, repeated.lines.tolist())
        assert dropped is not None  # line_lists: the database takes the list of lines
        records, superseded = dropped
        self.superseded_values = repeated.digest_at(superseded)
        return staged.less(records), superseded

    def _confirm(self, beside: StagingTotals | None) -> None:
        """Wait for staging's totals summed ``beside``: StagingChanged (the caller's
        transaction rolls back) unless they are the processors'. Before anything is
        decided."""
        if beside is None or self.awaited is None:
            return
        with database_errors(self.engine, "reconciling staging"):
            found = beside.result()
        if not self._same(found, self._processed(self.awaited)):
            raise StagingChanged
        self.awaited = None
        if self.on_proven is not None:
            self.on_proven()

    def _same(self, found: Totals, processed: Totals) -> bool:
        """Staging's totals ``found`` are the ``processed`` ones as each staging check
        compares them (a hash total modulo the trailer field's digits): then every check
        decided on the processors' figures is decided as on staging's."""
        hashed = (self.trailer.hash is None or found.hash is not None
                  and self.trailer.hash.reduce(found.hash)
                  == self.trailer.hash.reduce(processed.hash or 0))
        return (hashed and found.rows == processed.rows and found.amount == processed.amount
                and found.digest == processed.digest)

    def _decided(self, beside: StagingTotals) -> list[ReconciliationResult]:
        """The checks decided when an error ends the run before ``_confirm``: staging's
        checks on its own figures, if its pass was over by then (the column check passes
        only if the digest sums were equal), else not evaluated."""
        if self.awaited is None:
            return self.checked
        aggregated, processed = self.awaited, self._processed(self.awaited)
        found = beside.known()
        if found is not None and self._same(found, processed):
            self._confirm(beside)
            return self.checked
        staging = checks.of_stage(checks.STAGING)
        if found is None:
            why = "staging's totals were not known yet; the run ended first"
            return [checks.not_evaluated(r.check_name, r.expected_count, why)
                    if r.check_name in staging else r for r in self.checked]
        real = {r.check_name: r for r in self._staging_checks(aggregated, found)}
        if found.rows != processed.rows or found.digest != processed.digest:
            real[checks.PROCESSED_TO_STAGING_COLUMNS] = checks.not_evaluated(
                checks.PROCESSED_TO_STAGING_COLUMNS, processed.rows,
                "staging's row digests differ from the processors'; the run ended before "
                "the rows were compared")
        return [real.get(r.check_name, r) if r.check_name in staging else r
                for r in self.checked]

    def survivors(self, run_id: str) -> Totals:
        """Distinct keys of the run and the totals of each key's last staging row."""
        with database_errors(self.engine, "reconciling staging"), self.store.connect() as conn:
            return self.store.staging(conn).surviving_count_and_amount(run_id)

    def reconcile_counts(self, run_id: str,
                         aggregated: AggregatedMetrics) -> list[ReconciliationResult]:
        """The checks before the MERGE: trailer -> read -> staging, counts, amounts, the
        hash total and every stored column."""
        return checks.in_order(self.load_checks(run_id, aggregated)[0])

    def load_checks(self, run_id: str, aggregated: AggregatedMetrics,
                    beside: StagingTotals | None = None
                    ) -> tuple[list[ReconciliationResult], Totals]:
        """reconcile_counts' checks, unordered, and the run's staging totals. With staging's
        summed ``beside``, decided on the processors' figures as staging's: ``_confirm``
        waits for staging's and finds them the same, or has everything decided again."""
        if beside is not None and aggregated.row_digest is not None:
            staged = self._processed(aggregated)
            self.awaited = aggregated
            self.proven_values = aggregated.value_digest
            columns = checks.columns_check(checks.PROCESSED_TO_STAGING_COLUMNS, staged.rows,
                                           staged.rows)
        else:
            with database_errors(self.engine, "reconciling staging"), \
                    self.store.connect() as conn:
                # the rows' digest sum in the same pass, when the processors' is there
                staged = self.store.staging(conn).count_and_amount(
                    run_id, digest=aggregated.row_digest is not None)
                columns = self._staging_columns(conn, run_id, aggregated, staged)
        return [*self._staging_checks(aggregated, staged), columns], staged

    def _staging_checks(self, aggregated: AggregatedMetrics, staged: Totals
                        ) -> list[ReconciliationResult]:
        """The checks before the MERGE but the column check, on staging's totals."""
        return checks.load_checks(self.trailer, aggregated, staged.rows, staged.amount,
                                  self.reject_limit, staged.hash)

    def _processed(self, aggregated: AggregatedMetrics) -> Totals:
        """What staging must hold for every staging check to pass: the processors'
        accepted rows, amount, hashed field and row digests."""
        return Totals(aggregated.total_read - aggregated.total_errors,
                      aggregated.accepted_amount,
                      aggregated.hash_accepted if self.hash_of is not None else None,
                      aggregated.row_digest)

    def _staging_columns(self, conn: Connection, run_id: str, aggregated: AggregatedMetrics,
                         staged: Totals) -> ReconciliationResult:
        """processed_to_staging_columns: the processors' digest sum against staging's
        (pipeline.db.digests); on a mismatch, or without the processors' sum (a resume),
        the rows compared one by one against the input file."""
        accepted = aggregated.total_read - aggregated.total_errors
        if aggregated.row_digest is not None:
            if staged.rows == accepted and staged.digest == aggregated.row_digest:
                if self.on_proven is not None:
                    self.on_proven()
                self.proven_values = aggregated.value_digest
                return checks.columns_check(checks.PROCESSED_TO_STAGING_COLUMNS, accepted,
                                            accepted)
        why = ("the input file is not known" if self.input_rows is None
               else self.input_rows.unavailable())
        if why and self.proven_at is not None and aggregated.row_digest is None:
            when = f"{self.proven_at:%Y-%m-%d %H:%M:%S}"
            return checks.columns_check(
                checks.PROCESSED_TO_STAGING_COLUMNS, accepted, accepted,
                note=f"proven against the processors' rows by the run at {when} UTC; "
                     f"not again now: {why}")
        if why:
            reason = ("staging's row digests differ from the processors'" if
                      aggregated.row_digest is not None else
                      "the processors' row digests live only as long as their run")
            return checks.not_provable_columns(checks.PROCESSED_TO_STAGING_COLUMNS, accepted,
                                               f"{reason}, and {why}")
        assert self.input_rows is not None
        finding = compare_staging(conn, self.tables.staging, self.key, run_id,
                                  self.input_rows, accepted)
        self.evidence += finding.evidence
        return finding.result(checks.PROCESSED_TO_STAGING_COLUMNS)

    def merge_and_verify(self, run_id: str, merged_at: datetime, survivors: Totals,
                         collapsed: int, deduplicate: bool = True, *,
                         superseded: Sequence[int] = (),
                         record: Record | None = None,
                         lock: HeldLock | None = None,
                         beside: StagingTotals | None = None
                         ) -> list[ReconciliationResult] | None:
        """MERGE, the three checks after it and (``record``) the audit, in one transaction.

        It commits only when all three passed, together with what ``record`` writes on
        its connection (RECON_AUDIT, RECON_WORKER_AUDIT, BATCH_RUN's final status): FINAL
        and the audit that describes it are never committed one without the other. With
        ``lock``, the transaction is the lock's final one, which first verifies the run
        still holds the job lock (pipeline.db.lock). Rolled back on any failure.

        Without ``deduplicate``, the staging rows at the ``superseded`` source lines are
        left out, and None is returned (everything rolled back) when the rest turn out to
        repeat a key after all: the key hashes said they would not. With staging's sum
        summed ``beside``, nothing is decided before it is confirmed (``_confirm``).
        """
        interrupts.check()  # a safe point: nothing of the MERGE has started
        with database_errors(self.engine, "merging into the final table"), \
                self.final_transaction(lock) as transaction:
            conn = transaction.connection
            results = self.merge_checked(conn, run_id, merged_at, survivors, collapsed,
                                         deduplicate, superseded)
            if results is None:
                transaction.rollback()
                return None
            self._confirm(beside)
            if all(r.passed for r in results):
                if record is not None:
                    record(conn, results)
                transaction.commit()
            else:
                transaction.rollback()
                results = [checks.rolled_back(r) for r in results]
        return results

    def merge_checked(self, conn: Connection, run_id: str, merged_at: datetime,
                      survivors: Totals, collapsed: int, deduplicate: bool = True,
                      superseded: Sequence[int] = ()) -> list[ReconciliationResult] | None:
        """The MERGE and the three checks after it on ``conn``, in the caller's
        transaction, which commits or rolls back (None: the plain MERGE met a key twice)."""
        final = self.store.final(conn)
        keys = survivors.rows
        # a driver error (a lock timeout...) ends the run: no retry decides anything,
        # but for a repeated key in the plain MERGE's source, which PostgreSQL and
        # Oracle refuse outright where SQLite touches one row fewer
        try:
            touched = final.merge_run(run_id, merged_at, deduplicate, superseded)
        except DBAPIError as exc:
            if deduplicate or not backend_for(conn.dialect.name).repeated_key(exc):
                raise
            touched = -1
        if not deduplicate and touched != keys:
            return None
        found = final.count_and_amount_for_run(run_id, digest=True)
        results = checks.final_checks(self.key, keys, survivors.amount, collapsed,
                                      found.rows, found.amount, self._hashes(survivors, found))
        results.append(self._final_columns(final, run_id, keys, deduplicate, superseded,
                                           found.digest))
        return results

    def final_as_it_is(self, run_id: str) -> list[ReconciliationResult]:
        """The checks after the MERGE against FINAL as it stands, merging nothing: a
        resumed run whose MERGE had committed before its audit."""
        with database_errors(self.engine, "reconciling the final table"), \
                self.store.connect() as conn:
            staging = self.store.staging(conn)
            staged = staging.count_and_amount(run_id).rows
            survivors = staging.surviving_count_and_amount(run_id)
            final = self.store.final(conn)
            found = final.count_and_amount_for_run(run_id)
            equal = final.columns_equal_count(*final.survivors(run_id, deduplicate=True))
        keys = survivors.rows
        return [*checks.final_checks(self.key, keys, survivors.amount, staged - keys,
                                     found.rows, found.amount, self._hashes(survivors, found)),
                checks.columns_check(checks.STAGING_TO_FINAL_COLUMNS, keys, equal)]

    def _hashes(self, survivors: Totals, final: Totals
                ) -> tuple[HashTotal, int, int | None] | None:
        """final_checks' hash figures: the rule, the survivors' sum and FINAL's."""
        rule = self.trailer.hash
        if rule is None or survivors.hash is None:
            return None
        return rule, survivors.hash, final.hash

    def _final_columns(self, final: FinalFigures, run_id: str, keys: int,
                       deduplicate: bool, superseded: Sequence[int],
                       final_digest: int | None) -> ReconciliationResult:
        """staging_to_final_columns, in the MERGE's transaction: every surviving staging
        row against the FINAL row the MERGE left. Both sides are sums of value digests
        (pipeline.db.digests; ``final_digest``, FINAL's, summed by the database in the
        pass that counted its rows): equal sums pass. The surviving rows' sum is the
        processors' less the superseded rows' (``_surviving_values``), or else the
        database's over them. A row by row join on the key costs more than the MERGE
        itself on SQLite (1M rows into 4M: 5.9 s against 2.6 s for both digests), so it
        runs only when the sums differ, or where the database has no digest (Oracle): it
        counts the equal rows exactly (NULL-safe) and keeps the differing rows' values as
        evidence before any rollback can take them."""
        source, params = final.survivors(run_id, deduplicate, superseded)
        staged = None
        if final_digest is not None:
            staged = self._surviving_values(deduplicate)
            if staged is None:
                staged = final.staged_digest(source, params)
        if staged is not None and staged == final_digest:
            return checks.columns_check(checks.STAGING_TO_FINAL_COLUMNS, keys, keys)
        equal = final.columns_equal_count(source, params)
        finding = ColumnFinding(keys, equal)
        if equal != keys:
            rows = final.columns_differing(source, params, EVIDENCE_ROWS)
            finding.evidence = self._final_evidence(rows)
            if keys - equal > len(rows):
                finding.note = (f"{keys - equal:,} row(s) differ; the first {len(rows):,} "
                                "are in the evidence")
        self.evidence += finding.evidence
        return finding.result(checks.STAGING_TO_FINAL_COLUMNS)

    def _surviving_values(self, deduplicate: bool) -> int | None:
        """The surviving staging rows' sum of value digests: the processors' sum (staging
        proven to hold their rows) less that of the superseded records, which the plain
        MERGE left out (the processors' digests of them, ``_survivors_from``). No pass over
        the run's rows (1M rows: 1.2 s on SQLite, 1.8 s on PostgreSQL). None when not known (a
        resume, the de-duplicating MERGE) or where the database has no digest."""
        if self.proven_values is None or self.superseded_values is None or deduplicate:
            return None
        return self.proven_values - self.superseded_values

    def _final_evidence(self, rows: list[Any]) -> list[Evidence]:
        """(key..., line, staging values..., FINAL values..., present) -> evidence."""
        name, nkey = checks.STAGING_TO_FINAL_COLUMNS, len(self.key)
        compared = [self.tables.final.c[c] for c in self.tables.business_columns
                    if c not in self.key]
        found = []
        for row in rows:
            key = "|".join(str(v) for v in row[:nkey])
            line = int(row[nkey])
            staged = row[nkey + 1: nkey + 1 + len(compared)]
            final = row[nkey + 1 + len(compared): nkey + 1 + 2 * len(compared)]
            if not row[-1]:
                found.append(Evidence(name, key, ROW, "1 row", "no FINAL row of the run",
                                      line))
                continue
            for column, want, got in zip(compared, staged, final, strict=True):
                if shown(column, want) != shown(column, got):
                    found.append(Evidence(name, key, column.name, shown(column, want),
                                          shown(column, got), line))
        return found

    def final_transaction(self, lock: HeldLock | None
                          ) -> AbstractContextManager[FinalTransaction]:
        return self.store.final_transaction(lock)
