"""ReconciliationService's rules on an in-memory store (tests/unit/fake_store.py): the
checks in order, exactly one MERGE when they balanced and none when they did not, a
rollback with its evidence kept when FINAL disagrees after the MERGE."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine

from pipeline.config import load_config
from pipeline.db.repositories import Totals
from pipeline.db.tables import job_tables
from pipeline.errors import DatabaseFailure
from pipeline.jobs import shipped_config
from pipeline.reconcile import ReconciliationOutcome, ReconciliationService
from pipeline.repeats import Repeated, whole_keys
from recon import checks
from recon.values import ROW, AggregatedMetrics, HashTotal, ReconciliationResult, TrailerTotals
from tests.unit.fake_store import FakeStore, Row

CONFIG = load_config(shipped_config())
TABLES = job_tables(CONFIG)
RUN = "run-1"
MERGED_AT = dt.datetime(2026, 12, 5, 3, 0)
LOAD = [checks.SOURCE_TRAILER_COUNT, checks.SOURCE_TRAILER_AMOUNT, checks.REJECT_LIMIT,
        checks.PROCESSED_TO_STAGING, checks.PROCESSED_TO_STAGING_AMOUNT,
        checks.PROCESSED_TO_STAGING_COLUMNS, checks.WRITTEN_TO_STAGING]
AFTER = [checks.STAGING_TO_FINAL, checks.STAGING_TO_FINAL_AMOUNT, checks.STAGING_TO_FINAL_COLUMNS]


def row(line: int, txn: str, amount: int, description: str = "coffee") -> Row:
    return {"run_id": RUN, "source_line": line, "txn_id": txn, "account_id": "0000000042",
            "txn_date": dt.date(2026, 12, 4), "amount": amount, "currency": "EUR",
            "description": description}


ROWS = [row(2, "T1", 1050), row(3, "T2", -200), row(4, "T3", 99_999_999_999),
        row(5, "T4", 1), row(6, "T5", 0)]


def store(rows: list[Row], hash_of: str | None = None) -> FakeStore:
    return FakeStore(tuple(TABLES.business_columns), CONFIG.key_columns, CONFIG.amount,
                     hash_of, staged_rows=[dict(r) for r in rows])


def processed(rows: list[Row], fake: FakeStore, **hashes: int) -> AggregatedMetrics:
    """The metrics of processors and writers that accepted and wrote exactly ``rows``."""
    amount = sum(r["amount"] for r in rows)
    return AggregatedMetrics(
        total_read=len(rows), total_written=len(rows), total_errors=0, accepted_amount=amount,
        read_amount=amount, written_amount=amount, unreadable_amounts=0, misplaced_control=0,
        writer_errors=0, workers=(), row_digest=sum(map(fake.digest, rows)),
        value_digest=sum(map(fake.digest, rows)), **hashes)


def reconcile(fake: FakeStore, rows: list[Row] = ROWS, trailer: TrailerTotals | None = None,
              **options: Any) -> tuple[ReconciliationOutcome, list[list[ReconciliationResult]]]:
    """The service over ``fake``, for processors that saw ``rows``; and what it recorded."""
    trailer = trailer or TrailerTotals(len(rows), sum(r["amount"] for r in rows))
    # never connected: the store answers every question the service asks
    engine = options.pop("engine", None) or create_engine("sqlite://")
    service = ReconciliationService(engine, TABLES, CONFIG.key_columns, CONFIG.amount,
                                    trailer, store=fake)
    recorded: list[list[ReconciliationResult]] = []
    outcome = service.reconcile(RUN, options.pop("metrics", None) or processed(rows, fake),
                                MERGED_AT, record=lambda _, r: recorded.append(r), **options)
    return outcome, recorded


def by_name(outcome: ReconciliationOutcome) -> dict[str, ReconciliationResult]:
    return {r.check_name: r for r in outcome.results}


def failed(outcome: ReconciliationOutcome) -> list[str]:
    return [r.check_name for r in outcome.results if not r.passed and r.evaluated]


def test_balanced_figures_merge_once_and_every_check_passes() -> None:
    fake = store(ROWS)
    outcome, recorded = reconcile(fake)
    assert outcome.passed and [r.check_name for r in outcome.results] == LOAD + AFTER
    assert fake.merges == [True] and fake.commits == 1 and fake.rollbacks == 0
    assert fake.digest_passes == 1  # staging's digests summed once, beside the MERGE
    assert recorded == [outcome.results]  # the audit committed with the MERGE
    assert {k: r["amount"] for k, r in fake.final_rows.items()} == {
        (r["txn_id"],): r["amount"] for r in ROWS}
    final = by_name(outcome)[checks.STAGING_TO_FINAL_AMOUNT]
    assert (final.expected_amount, final.actual_amount) == (99_999_999_999 + 851,) * 2


def test_a_row_missing_from_staging_fails_its_checks_and_leaves_final_unchanged() -> None:
    fake = store(ROWS[:2] + ROWS[3:])  # the processors accepted T3, staging lacks it
    outcome, recorded = reconcile(fake)
    results = by_name(outcome)
    assert failed(outcome) == [checks.PROCESSED_TO_STAGING, checks.PROCESSED_TO_STAGING_AMOUNT,
                               checks.PROCESSED_TO_STAGING_COLUMNS,
                               checks.WRITTEN_TO_STAGING]
    assert results[checks.PROCESSED_TO_STAGING].discrepancy == -1
    assert results[checks.PROCESSED_TO_STAGING_AMOUNT].amount_discrepancy == -99_999_999_999
    assert results[checks.WRITTEN_TO_STAGING].discrepancy == -1
    # the MERGE ran beside staging's pass, on the processors' figures, and was rolled back
    # once staging's were known; the checks were then decided on staging's
    assert fake.merges == [True] and fake.rollbacks == 1 and fake.commits == 0
    assert fake.final_rows == {} and recorded == []
    assert [r.check_name for r in outcome.results if not r.evaluated] == AFTER


def test_one_minor_unit_off_in_staging_fails_the_amount_and_leaves_final_unchanged() -> None:
    fake = store(ROWS)
    fake.staged_rows[0]["amount"] += 1
    outcome, _ = reconcile(fake)
    results = by_name(outcome)
    assert failed(outcome) == [checks.PROCESSED_TO_STAGING_AMOUNT,
                               checks.PROCESSED_TO_STAGING_COLUMNS]
    assert results[checks.PROCESSED_TO_STAGING_AMOUNT].amount_discrepancy == 1
    assert results[checks.PROCESSED_TO_STAGING].passed
    assert fake.rollbacks == 1 and fake.commits == 0 and fake.final_rows == {}


def test_a_changed_column_in_staging_fails_the_column_check_and_merges_nothing() -> None:
    fake = store(ROWS)
    fake.final_rows[("T3",)] = {**row(0, "T3", 5), "last_run_id": "earlier"}
    before = {k: dict(v) for k, v in fake.final_rows.items()}
    fake.staged_rows[2]["description"] = "tea"
    outcome, recorded = reconcile(fake)
    columns = by_name(outcome)[checks.PROCESSED_TO_STAGING_COLUMNS]
    assert failed(outcome) == [checks.PROCESSED_TO_STAGING_COLUMNS]
    assert (columns.expected_count, columns.actual_count) == (5, 0)
    assert columns.detail.startswith("not provable: staging's row digests differ")
    # the MERGE ran beside staging's digest pass, and was rolled back once its sum was
    # known; the checks were then decided as if it had come first: nothing merged
    assert fake.merges == [True] and fake.rollbacks == 1 and fake.commits == 0
    assert fake.final_rows == before and recorded == [] and outcome.evidence == []
    assert [r.check_name for r in outcome.results if not r.evaluated] == AFTER
    assert all(r.detail.startswith("not evaluated: MERGE skipped") for r in outcome.results
               if r.check_name in AFTER)


def went_away(_final: object) -> None:
    raise DatabaseFailure("merging into the final table: the server went away")


def merge_failing(fake: FakeStore) -> tuple[ReconciliationService, list[bool]]:
    """A service over ``fake`` whose MERGE ends with an error; and its on_proven calls."""
    fake.trigger = went_away
    proven: list[bool] = []
    service = ReconciliationService(create_engine("sqlite://"), TABLES, CONFIG.key_columns,
                                    CONFIG.amount, TrailerTotals(5, 99_999_999_999 + 851),
                                    on_proven=lambda: proven.append(True), store=fake)
    with pytest.raises(DatabaseFailure):
        service.reconcile(RUN, processed(ROWS, fake), MERGED_AT)
    assert [r.check_name for r in service.checked] == LOAD
    assert fake.final_rows == {} and fake.commits == 0
    return service, proven


@pytest.mark.parametrize("staging", ["the processors'", "a column changed", "a row missing"])
def test_a_merge_that_fails_records_staging_s_checks_as_its_pass_found_them(
        staging: str) -> None:
    """Staging's totals are summed beside the MERGE: a run the MERGE's error ends records
    staging's checks on the figures the pass found, processed_to_staging_columns passed
    only if the digest sums were equal."""
    fake = store(ROWS)
    if staging == "a column changed":
        fake.staged_rows[2]["description"] = "tea"
    if staging == "a row missing":
        del fake.staged_rows[2]
    service, proven = merge_failing(fake)
    results = {r.check_name: r for r in service.checked}
    columns = results[checks.PROCESSED_TO_STAGING_COLUMNS]
    if staging == "the processors'":
        assert all(r.passed for r in service.checked) and proven == [True]
        return
    assert not columns.passed and proven == []
    assert columns.detail == ("not evaluated: staging's row digests differ from the "
                              "processors'; the run ended before the rows were compared")
    count = results[checks.PROCESSED_TO_STAGING]
    if staging == "a row missing":  # staging's own figures, as the pass found them
        assert (count.expected_count, count.actual_count, count.passed) == (5, 4, False)
        assert not results[checks.WRITTEN_TO_STAGING].passed
    else:
        assert count.passed and results[checks.PROCESSED_TO_STAGING_AMOUNT].passed


class SlowStore(FakeStore):
    """A store whose pass beside the MERGE is still running when the MERGE fails: it
    ends only once cancelled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cancelled = threading.Event()

    def count_and_amount(self, run_id: str, digest: bool = False) -> Totals:
        if threading.current_thread().name == "staging-totals":
            assert self.cancelled.wait(timeout=20)
            raise DatabaseFailure("reconciling staging: cancelled")
        return super().count_and_amount(run_id, digest)

    def cancel(self, conn: Any) -> None:
        self.cancelled.set()


def test_a_merge_that_fails_before_staging_s_pass_is_over_records_its_checks_not_evaluated(
        ) -> None:
    fake = SlowStore(tuple(TABLES.business_columns), CONFIG.key_columns, CONFIG.amount,
                     staged_rows=[dict(r) for r in ROWS])
    service, proven = merge_failing(fake)
    assert fake.cancelled.is_set() and proven == []
    for result in service.checked:
        if checks.STAGES[result.check_name] == checks.STAGING:
            assert result.detail == ("not evaluated: staging's totals were not known yet; "
                                     "the run ended first"), result
        else:
            assert result.passed, result


def test_a_failed_check_of_the_caller_stops_the_merge_too() -> None:
    fake = store(ROWS)
    volume = ReconciliationResult(checks.VOLUME_VS_HISTORY, 500, 5, False)
    outcome, _ = reconcile(fake, before_merge=[volume])
    assert failed(outcome) == [checks.VOLUME_VS_HISTORY] and fake.merges == []
    assert [r.check_name for r in outcome.results][len(LOAD)] == checks.VOLUME_VS_HISTORY


def change_description(final: dict[tuple[Any, ...], Row]) -> None:
    final[("T2",)]["description"] = "changed by a trigger"


def test_final_differing_after_the_merge_rolls_back_and_keeps_the_evidence() -> None:
    fake = store(ROWS)
    fake.final_rows[("T9",)] = {**row(0, "T9", 5), "last_run_id": "earlier"}
    before = {k: dict(v) for k, v in fake.final_rows.items()}
    fake.trigger = change_description
    outcome, recorded = reconcile(fake)
    columns = by_name(outcome)[checks.STAGING_TO_FINAL_COLUMNS]
    assert failed(outcome) == [checks.STAGING_TO_FINAL_COLUMNS]
    assert (columns.expected_count, columns.actual_count, columns.discrepancy) == (5, 4, -1)
    assert "description (1 row)" in columns.detail
    assert columns.detail.endswith("MERGE rolled back; FINAL unchanged")
    assert fake.rollbacks == 1 and fake.commits == 0 and recorded == []
    assert fake.final_rows == before
    [evidence] = outcome.evidence
    assert (evidence.check_name, evidence.key, evidence.column, evidence.expected,
            evidence.actual, evidence.source_line) == (
        checks.STAGING_TO_FINAL_COLUMNS, "T2", "description", "coffee",
        "changed by a trigger", 3)


def test_a_final_row_lost_after_the_merge_fails_count_and_amount_and_names_it() -> None:
    fake = store(ROWS)
    fake.trigger = lambda final: final.pop(("T1",))
    outcome, _ = reconcile(fake)
    results = by_name(outcome)
    assert failed(outcome) == AFTER and fake.rollbacks == 1
    assert results[checks.STAGING_TO_FINAL].discrepancy == -1
    assert results[checks.STAGING_TO_FINAL_AMOUNT].amount_discrepancy == -1050
    assert [(e.key, e.column, e.actual) for e in outcome.evidence] == [
        ("T1", ROW, "no FINAL row of the run")]


def test_a_repeated_key_keeps_its_later_record() -> None:
    rows = [*ROWS, row(7, "T3", 7)]
    fake = store(rows)
    outcome, _ = reconcile(fake, rows)  # repeats not known: every row is ranked
    assert outcome.passed and outcome.duplicates_collapsed == 1 and fake.merges == [True]
    assert fake.final_rows[("T3",)]["amount"] == 7
    assert by_name(outcome)[checks.STAGING_TO_FINAL].expected_count == 5


def test_repeated_lines_let_the_plain_merge_leave_out_the_superseded_record() -> None:
    rows = [*ROWS, row(7, "T3", 7)]
    fake = store(rows)
    outcome, _ = reconcile(fake, rows, repeats=True, repeated=spilled(fake, rows, [4, 7]))
    assert outcome.passed and outcome.duplicates_collapsed == 1
    assert fake.merges == [False] and fake.final_rows[("T3",)]["amount"] == 7
    # what FINAL must hold: the processors' value digests less the superseded record's
    assert fake.staged_passes == 0 and fake.joins == 0


def test_the_superseded_records_digests_are_the_processors() -> None:
    """The digest the processors spilled for the superseded record is what comes out of
    their sum: a wrong one makes FINAL's expected sum wrong, and the exact join decides
    (and passes: FINAL is right)."""
    rows = [*ROWS, row(7, "T3", 7)]
    fake = store(rows)
    repeated = spilled(fake, rows, [4, 7])
    repeated.digests[0] += 1  # line 4's, the superseded record's
    outcome, _ = reconcile(fake, rows, repeats=True, repeated=repeated)
    assert outcome.passed and fake.merges == [False] and fake.joins == 1


def spilled(fake: FakeStore, rows: list[Row], lines: list[int]) -> Repeated:
    """What the processors spill of the records at ``lines`` (pipeline.repeats)."""
    at = {r["source_line"]: fake.digest(r) for r in rows}
    return Repeated(np.array(lines, dtype=np.int64), np.array([at[n] for n in lines]))


def spilled_whole(fake: FakeStore, rows: list[Row], lines: list[int]) -> Repeated:
    """As ``spilled``, with each record's key whole, its amount and its hashed field, as
    the processors spill a key of one column of up to 16 characters."""
    repeated = spilled(fake, rows, lines)
    by_line = {r["source_line"]: r for r in rows}
    chosen = [by_line[n] for n in lines]
    keys = whole_keys({"txn_id": np.array([r["txn_id"] for r in chosen])}, ["txn_id"])
    return repeated._replace(keys=keys,
                             amounts=np.array([r["amount"] for r in chosen], np.int64),
                             hashed=np.zeros(len(chosen), np.int64))


def test_keys_spilled_whole_name_the_superseded_records_without_asking_the_database(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines 4, 7 and 8 share a key hash, but line 2's key (T1) is another: only line 4
    is superseded (by line 7); the figures are those of ranking every row."""
    rows = [*ROWS, row(7, "T3", 7), row(8, "T3", 8)]
    fake = store(rows)
    monkeypatch.setattr(FakeStore, "collapsed_at_lines", _not_asked)
    outcome, _ = reconcile(fake, rows, repeats=True,
                           repeated=spilled_whole(fake, rows, [2, 8, 4, 7]))
    assert outcome.passed and outcome.duplicates_collapsed == 2
    assert fake.merges == [False] and fake.final_rows[("T3",)]["amount"] == 8
    assert fake.final_rows[("T1",)]["amount"] == 1050
    assert by_name(outcome)[checks.STAGING_TO_FINAL_AMOUNT].expected_amount == \
        1050 - 200 + 8 + 1 + 0
    assert fake.staged_passes == 0 and fake.joins == 0


def test_on_oracle_whole_keys_still_rank_every_row() -> None:
    """Oracle takes no list of lines: the MERGE cannot leave the superseded ones out, so
    the keys spilled whole change nothing there and every row is ranked."""
    rows = [*ROWS, row(7, "T3", 7)]
    fake = store(rows)
    outcome, _ = reconcile(fake, rows, repeats=True, engine=create_engine("oracle+oracledb://"),
                           repeated=spilled_whole(fake, rows, [4, 7]))
    assert outcome.passed and outcome.duplicates_collapsed == 1
    assert fake.merges == [True] and fake.final_rows[("T3",)]["amount"] == 7


def _not_asked(*_args: Any) -> None:
    raise AssertionError("the database was asked which records are superseded")


def test_final_is_proven_against_the_processors_values_without_a_pass_over_staging(
) -> None:
    fake = store(ROWS)
    outcome, _ = reconcile(fake, repeats=False)
    assert outcome.passed and fake.merges == [False] and fake.staged_passes == 0
    fake = store(ROWS)
    fake.trigger = change_description
    outcome, _ = reconcile(fake, repeats=False)
    assert failed(outcome) == [checks.STAGING_TO_FINAL_COLUMNS] and fake.rollbacks == 1
    assert [(e.key, e.column) for e in outcome.evidence] == [("T2", "description")]


def test_processors_values_that_disagree_with_final_leave_the_verdict_to_the_join(
) -> None:
    """The processors' sum is a shortcut, never the verdict: when it differs from
    FINAL's, the rows are compared one by one (here all equal: the run passes)."""
    fake = store(ROWS)
    metrics = processed(ROWS, fake)
    metrics = AggregatedMetrics(**{**metrics.__dict__, "value_digest": 12345})
    outcome, _ = reconcile(fake, repeats=False, metrics=metrics)
    assert outcome.passed and fake.commits == 1
    assert by_name(outcome)[checks.STAGING_TO_FINAL_COLUMNS].actual_count == 5


def test_a_plain_merge_that_meets_a_key_twice_is_rolled_back_and_redone_ranked() -> None:
    rows = [*ROWS, row(7, "T3", 7)]
    fake = store(rows)
    outcome, _ = reconcile(fake, rows, repeats=False)  # wrongly told no key repeats
    assert outcome.passed and fake.merges == [False, True]
    assert fake.rollbacks == 1 and fake.commits == 1
    assert fake.final_rows[("T3",)]["amount"] == 7 and outcome.duplicates_collapsed == 1


def test_a_hash_total_is_compared_modulo_its_digits() -> None:
    fake = store(ROWS, hash_of="account_id")
    hashed = 42 * len(ROWS)
    trailer = TrailerTotals(5, sum(r["amount"] for r in ROWS),
                            HashTotal("hash", "account_id", 2, hashed + 300))
    metrics = processed(ROWS, fake, hash_read=hashed, hash_accepted=hashed)
    outcome, _ = reconcile(fake, trailer=trailer, metrics=metrics)
    assert outcome.passed and fake.merges == [True]
    assert {checks.SOURCE_TRAILER_HASH, checks.PROCESSED_TO_STAGING_HASH,
            checks.STAGING_TO_FINAL_HASH} <= set(by_name(outcome))
    assert by_name(outcome)[checks.STAGING_TO_FINAL_HASH].actual_count == hashed % 100


@pytest.mark.parametrize("tamper, failing", [
    (None, []),
    (change_description, [checks.STAGING_TO_FINAL_COLUMNS]),
])
def test_final_as_it_is_checks_a_committed_merge_without_merging(tamper: Any,
                                                                 failing: list[str]) -> None:
    fake = store(ROWS)
    assert reconcile(fake)[0].passed
    if tamper is not None:
        tamper(fake.final_rows)
    service = ReconciliationService(create_engine("sqlite://"), TABLES, CONFIG.key_columns,
                                    CONFIG.amount, TrailerTotals(0, 0), store=fake)
    results = service.final_as_it_is(RUN)
    assert [r.check_name for r in results] == AFTER
    assert [r.check_name for r in results if not r.passed] == failing
    assert fake.merges == [True]  # nothing merged again
