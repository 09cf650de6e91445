"""A [[details]] job's reconciliation: one chain of checks per detail type, one MERGE
per type, all MERGEs and the audit in one transaction.

Each type's chain is a single-detail job's (processed_to_staging ... staging_to_final_
columns, on its own staging and FINAL tables, from its own metrics bus), its
CHECK_NAMEs prefixed with the type's FINAL table: ``payments:staging_to_final``. The
trailer's overall count and amount, the reject limit and the volume check cover every
type and keep their plain names; ``control.trailer_counts`` adds
``<type>:source_trailer_count``. Any failed check, of any type, and no MERGE runs at
all; a check after a MERGE failing rolls every type's MERGE back: every FINAL table is
as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from pipeline import interrupts
from pipeline.db.engine import database_errors
from pipeline.db.lock import HeldLock
from pipeline.db.repositories import Totals
from pipeline.reconcile import ReconciliationOutcome, ReconciliationService, Record
from pipeline.stages import CHECKS, MERGE, StageClock, maybe
from recon import checks
from recon.values import AggregatedMetrics, Evidence, ReconciliationResult

# checks of the whole file, never of one type (a type's own trailer has no hash total)
WHOLE_FILE = frozenset({*checks.of_stage(checks.TRAILER), *checks.of_stage(checks.REJECTS)})


@dataclass(frozen=True)
class TypeChain:
    label: str  # the type's FINAL table: its checks' prefix
    service: ReconciliationService
    metrics: AggregatedMetrics  # from the type's own bus
    trailer_count: int | None = None  # the trailer's count of this type, if it has one


def named(label: str, results: Sequence[ReconciliationResult]) -> list[ReconciliationResult]:
    return [replace(r, check_name=f"{label}:{r.check_name}") for r in results]


def load_checks(chains: Sequence[TypeChain], run_id: str,
                whole_file: frozenset[str] = WHOLE_FILE
                ) -> tuple[list[ReconciliationResult], list[int]]:
    """Each type's checks before the MERGE (those named ``whole_file`` are the whole
    file's, not a type's), and each type's staging rows."""
    results: list[ReconciliationResult] = []
    staged: list[int] = []
    for chain in chains:
        own, totals = chain.service.load_checks(run_id, chain.metrics)
        own = [r for r in own if r.check_name not in whole_file]
        if chain.trailer_count is not None:
            own.append(checks.count_check(checks.SOURCE_TRAILER_COUNT, chain.trailer_count,
                                          chain.metrics.total_read))
        chain.service.checked = named(chain.label, checks.in_order(own))
        results += chain.service.checked
        staged.append(totals.rows)
    return results, staged


def reconcile_types(chains: Sequence[TypeChain], run_id: str,
                    whole_file: Sequence[ReconciliationResult], merged_at: datetime,
                    stages: StageClock | None, record: Record,
                    lock: HeldLock | None) -> ReconciliationOutcome:
    """The whole file's checks (given), each type's load checks, then every type's MERGE
    and its checks in one transaction, committed with the audit (``record``) only when
    every check of every type passed."""
    with maybe(stages, CHECKS):
        own, staged = load_checks(chains, run_id, frozenset(r.check_name for r in whole_file)
                                  | WHOLE_FILE)
        results = [*whole_file, *own]
        # every row is ranked (no key spill with several types): exact whatever repeats
        survivors = [chain.service.survivors(run_id) for chain in chains]
    keys = sum(s.rows for s in survivors)
    collapsed = sum(staged) - keys
    if not all(r.passed for r in results):
        for chain, found in zip(chains, survivors, strict=True):
            results += named(chain.label, checks.merge_skipped(found.rows))
        return ReconciliationOutcome(results, sum(staged), collapsed, _evidence(chains))
    with maybe(stages, MERGE, f"{keys:,} keys"):
        after = _merge_all(chains, run_id, merged_at, survivors, staged,
                           lambda conn, final: record(conn, [*results, *final]), lock)
    return ReconciliationOutcome([*results, *after], sum(staged), collapsed, _evidence(chains))


def _evidence(chains: Sequence[TypeChain]) -> list[Evidence]:
    """The rows behind failed column checks, under their type's check names."""
    return [replace(e, check_name=f"{chain.label}:{e.check_name}") for chain in chains
            for e in chain.service.evidence]


def _merge_all(chains: Sequence[TypeChain], run_id: str, merged_at: datetime,
               survivors: Sequence[Totals], staged: Sequence[int], record: Record,
               lock: HeldLock | None) -> list[ReconciliationResult]:
    interrupts.check()  # a safe point: nothing of any MERGE has started
    first = chains[0].service
    with database_errors(first.engine, "merging into the final tables"), \
            first.final_transaction(lock) as transaction:
        conn = transaction.connection
        after: list[ReconciliationResult] = []
        for chain, found, rows in zip(chains, survivors, staged, strict=True):
            own = chain.service.merge_checked(conn, run_id, merged_at, found,
                                              rows - found.rows)
            assert own is not None  # the de-duplicating MERGE never gives up
            after += named(chain.label, own)
        if all(r.passed for r in after):
            record(conn, after)
            transaction.commit()
            return after
        transaction.rollback()
        return [checks.rolled_back(r) for r in after]
