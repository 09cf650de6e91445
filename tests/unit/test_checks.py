"""Every check rule of recon.checks, figures in and results out: passing, failing at the
boundary, money exact to the minor unit, hash totals modulo their digits."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from recon import checks
from recon.values import (
    AMOUNT,
    COLUMNS,
    COUNT,
    HASH_TOTAL,
    LIMIT,
    AggregatedMetrics,
    HashTotal,
    ReconciliationResult,
    RejectLimit,
    TrailerTotals,
    VolumeRule,
    WorkerMetrics,
)


def metrics(read: int = 3, errors: int = 0, amount: int = 300, **more: int) -> AggregatedMetrics:
    figures = dict(total_read=read, total_written=read - errors, total_errors=errors,
                   accepted_amount=amount, read_amount=amount, written_amount=amount,
                   unreadable_amounts=0, misplaced_control=0, writer_errors=0)
    return AggregatedMetrics(**{**figures, **more}, workers=())  # type: ignore[arg-type]


def test_every_check_has_a_stage_and_a_kind_and_the_run_order_follows_the_stages() -> None:
    assert checks.RUN_ORDER == tuple(c.name for c in checks.CHECKS)
    assert [checks.STAGES[n] for n in checks.RUN_ORDER] == sorted(
        (checks.STAGES[n] for n in checks.RUN_ORDER), key=[
            checks.TRAILER, checks.REJECTS, checks.STAGING, checks.HISTORY, checks.FINAL].index)
    assert not set(checks.HASH_CHECKS) & set(checks.CHECK_ORDER)
    assert set(checks.CHECK_ORDER) | set(checks.HASH_CHECKS) == set(checks.RUN_ORDER)
    assert checks.of_stage(checks.FINAL, without=(COLUMNS,)) == (
        checks.STAGING_TO_FINAL, checks.STAGING_TO_FINAL_AMOUNT, checks.STAGING_TO_FINAL_HASH)
    assert checks.of_stage(checks.REJECTS) == (checks.REJECT_LIMIT,)


@pytest.mark.parametrize("name, kind", [
    (checks.SOURCE_TRAILER_COUNT, COUNT), (checks.PROCESSED_TO_STAGING_AMOUNT, AMOUNT),
    (checks.STAGING_TO_FINAL_HASH, HASH_TOTAL), (checks.STAGING_TO_FINAL_COLUMNS, COLUMNS),
    (checks.REJECT_LIMIT, LIMIT), ("payments:staging_to_final_amount", AMOUNT),
    ("payments:written_to_staging", COUNT),
])
def test_a_checks_kind_is_looked_up_not_read_from_its_name(name: str, kind: str) -> None:
    assert checks.kind_of(name) == kind


def test_a_count_passes_only_when_equal_and_its_discrepancy_is_actual_less_expected() -> None:
    assert checks.count_check("c", 10, 10).passed
    short, over = checks.count_check("c", 10, 9), checks.count_check("c", 10, 11)
    assert (short.passed, short.discrepancy) == (False, -1)
    assert (over.passed, over.discrepancy) == (False, 1)


def test_an_amount_is_exact_to_the_minor_unit_however_large() -> None:
    big = 10**20  # past any float's exact integers
    assert checks.amount_check("a", (3, 3), big, big).passed
    off = checks.amount_check("a", (3, 3), big, big + 1)
    assert not off.passed and off.amount_discrepancy == 1 and off.kind == AMOUNT
    assert (off.expected_count, off.actual_count) == (3, 3)  # the counts behind, for context


@pytest.mark.parametrize("expected, actual", [(None, 5), (5, None), (None, None)])
def test_an_amount_not_known_fails_never_passes(expected: int | None,
                                                actual: int | None) -> None:
    result = checks.amount_check("a", (1, 1), expected, actual)
    assert not result.passed and result.detail == "not provable: amount could not be determined"
    assert result.amount_discrepancy is None
    why = checks.amount_check("a", (1, 1), None, None, "2 unreadable")
    assert why.detail == "not provable: 2 unreadable"


def test_a_hash_total_is_compared_modulo_ten_to_its_digits() -> None:
    rule = HashTotal("trailer_hash", "account_id", 3)
    wrapped = checks.hash_check("h", rule, 4, 12_345, 345)
    assert wrapped.passed and (wrapped.expected_count, wrapped.actual_count) == (345, 345)
    assert wrapped.detail == "sum of account_id over 4 records, modulo 10^3"
    off = checks.hash_check("h", rule, 4, 1_345, 2_346)
    assert not off.passed and off.discrepancy == 1 and off.kind == HASH_TOTAL
    unknown = checks.hash_check("h", rule, 4, 1_345, None, "staging's sum is not known")
    assert not unknown.passed and (unknown.expected_count, unknown.actual_count) == (345, 0)
    assert unknown.detail == "not provable: staging's sum is not known"


def test_columns_pass_only_when_every_compared_row_is_equal() -> None:
    equal = checks.columns_check("c", 10, 10)
    assert equal.passed and equal.detail == "every stored column equal" and equal.kind == COLUMNS
    two = checks.columns_check("c", 10, 8, {"amount": 2, "description": 1}, note="3 looked at")
    assert (two.passed, two.expected_count, two.actual_count, two.discrepancy) == (
        False, 10, 8, -2)
    assert two.detail == "differing columns: amount (2 rows), description (1 row); 3 looked at"
    # a differing row it was told of fails it even when the counts agree
    assert not checks.columns_check("c", 10, 10, {"amount": 1}).passed
    unproven = checks.not_provable_columns("c", 10, "no input file")
    assert (unproven.passed, unproven.actual_count, unproven.detail) == (
        False, 0, "not provable: no input file")


@pytest.mark.parametrize("limit, read, allowed, rule", [
    (RejectLimit(), 100, 5, "5% of the records read (control.max_reject_rate 0.05)"),
    (RejectLimit(), 99, 4, "5% of the records read (control.max_reject_rate 0.05)"),
    (RejectLimit(None, 3), 100, 3, "control.max_rejects"),
    (RejectLimit(Decimal("0.05"), 3), 100, 3,
     "control.max_rejects (control.max_reject_rate 0.05 would allow 5)"),
    (RejectLimit(Decimal("0.05"), 10), 100, 5,
     "5% of the records read (control.max_reject_rate 0.05; control.max_rejects 10)"),
    (RejectLimit(None, None), 100, 100, "no limit set"),
])
def test_allowed_rejects_a_rate_rounded_down_or_a_count_the_smaller_wins(
        limit: RejectLimit, read: int, allowed: int, rule: str) -> None:
    assert checks.allowed_rejects(limit, read) == (allowed, rule)


def test_the_reject_limit_passes_at_the_limit_and_fails_one_past_it() -> None:
    at = checks.reject_limit_check(RejectLimit(), 100, 5)
    assert at.passed and at.discrepancy == 0 and at.kind == LIMIT
    assert at.detail.startswith("5 of 100 records rejected (5.00%); limit 5: ")
    past = checks.reject_limit_check(RejectLimit(), 100, 6)
    assert not past.passed and past.discrepancy == 1
    under = checks.reject_limit_check(RejectLimit(), 100, 1)
    assert under.discrepancy == 0  # a most, not a figure to equal


def test_a_night_that_rejects_every_record_fails_whatever_the_limit() -> None:
    every = checks.reject_limit_check(RejectLimit(None, None), 10, 10)
    assert not every.passed and every.detail.startswith("every record rejected")
    assert checks.reject_limit_check(RejectLimit(None, None), 0, 0).passed  # an empty night


def test_trailer_checks_count_amount_and_hash() -> None:
    trailer = TrailerTotals(3, 300, HashTotal("h", "account_id", 2, 142))
    results = checks.trailer_checks(trailer, metrics(hash_read=42))
    assert [r.check_name for r in results] == list(checks.of_stage(checks.TRAILER))
    assert all(r.passed for r in results)
    assert [r.check_name for r in checks.trailer_checks(TrailerTotals(3, 300), metrics())] == [
        checks.SOURCE_TRAILER_COUNT, checks.SOURCE_TRAILER_AMOUNT]


def test_file_checks_are_the_trailer_then_the_reject_limit_the_contract_s_by_default() -> None:
    # validate, a run and a [[details]] resume all begin with these; 1 of 10 rejected
    found = checks.file_checks(TrailerTotals(10, 300), metrics(10, 1))
    assert [r.check_name for r in found] == [
        checks.SOURCE_TRAILER_COUNT, checks.SOURCE_TRAILER_AMOUNT, checks.REJECT_LIMIT]
    assert not found[-1].passed  # 10% > the contract's 5%
    looser = checks.file_checks(TrailerTotals(10, 300), metrics(10, 1),
                                RejectLimit(Decimal("0.2")))
    assert looser[-1].passed


def test_an_unreadable_amount_or_hashed_field_makes_the_trailer_not_provable() -> None:
    trailer = TrailerTotals(3, 300, HashTotal("h", "account_id", 2, 42))
    results = checks.trailer_checks(trailer, metrics(unreadable_amounts=1, unhashed=2,
                                                     hash_read=42))
    amount, hashed = results[1], results[2]
    assert not amount.passed and amount.actual_amount is None
    assert amount.detail == "not provable: 1 rejected record(s) have an unreadable amount"
    assert not hashed.passed
    assert hashed.detail == "not provable: 2 rejected record(s) have an unreadable account_id"


def test_load_checks_hold_staging_against_the_accepted_records() -> None:
    found = checks.load_checks(TrailerTotals(4, 300), metrics(4, 1), 3, 300)
    assert [r.check_name for r in found] == [
        checks.SOURCE_TRAILER_COUNT, checks.SOURCE_TRAILER_AMOUNT, checks.REJECT_LIMIT,
        checks.PROCESSED_TO_STAGING, checks.PROCESSED_TO_STAGING_AMOUNT,
        checks.WRITTEN_TO_STAGING]
    staged = found[3]
    assert (staged.expected_count, staged.actual_count, staged.detail) == (
        3, 3, "4 read, 1 rejected")
    assert not found[2].passed  # 1 of 4 rejected is past the contract's 5%
    short = checks.load_checks(TrailerTotals(4, 300), metrics(4, 1), 2, 299,
                               RejectLimit(None, 1))
    assert [r.check_name for r in short if not r.passed] == [
        checks.PROCESSED_TO_STAGING, checks.PROCESSED_TO_STAGING_AMOUNT,
        checks.WRITTEN_TO_STAGING]


@pytest.mark.parametrize("read, passed, warned", [
    (150, True, False), (50, True, False), (151, True, True), (49, True, True)])
def test_volume_within_the_band_passes_and_outside_it_warns(read: int, passed: bool,
                                                            warned: bool) -> None:
    result = checks.volume_vs_history(VolumeRule(), [100] * 5, read)
    assert (result.passed, bool(checks.warning_of(result))) == (passed, warned)
    assert result.expected_count == 100


def test_volume_outside_the_band_fails_when_the_job_says_fail() -> None:
    result = checks.volume_vs_history(VolumeRule(action="fail"), [100] * 5, 151)
    assert not result.passed and result.discrepancy == 51
    assert result.detail == ("151 records read, outside +/-50% of the median of the last 5 "
                             'succeeded runs (100: 50 to 150); control.volume_action = "fail"')


def test_volume_with_too_little_history_is_not_judged() -> None:
    result = checks.volume_vs_history(VolumeRule(action="fail"), [100, 300, 200, 400], 1)
    assert result.passed and result.expected_count == 200  # the lower middle, a real run's
    assert result.detail == "not enough history (4 of 5 runs): not judged"
    assert checks.volume_vs_history(VolumeRule(), [], 7).expected_count == 7


def test_the_usual_band_uses_only_the_newest_runs() -> None:
    band = checks.usual_band(VolumeRule(history_runs=3, min_runs=3), [10, 20, 30, 1000, 1000])
    assert band is not None and (band.median, band.runs) == (20, 3)
    assert (band.low, band.high) == (10, 30) and band.holds(30) and not band.holds(31)
    assert checks.usual_band(VolumeRule(min_runs=3), [10, 20]) is None


def test_final_checks_name_the_key_and_the_collapsed_duplicates() -> None:
    clean = checks.final_checks(("txn_id",), 5, 500, 0, 5, 500)
    assert [r.check_name for r in clean] == [checks.STAGING_TO_FINAL,
                                             checks.STAGING_TO_FINAL_AMOUNT]
    assert all(r.passed for r in clean) and clean[0].detail == "no duplicate keys (key: txn_id)"
    rule = HashTotal("h", "account_id", 2)
    collapsed = checks.final_checks(("a", "b"), 5, 500, 2, 4, 499, (rule, 1_042, 42))
    assert collapsed[0].detail == ("2 duplicate-key record(s) collapsed, the later record won "
                                   "(key: a, b)")
    assert [r.passed for r in collapsed] == [False, False, True]
    assert collapsed[1].amount_discrepancy == -1


def test_a_skipped_merge_leaves_its_checks_not_evaluated() -> None:
    skipped = checks.merge_skipped(7)
    assert [r.check_name for r in skipped] == list(checks.of_stage(checks.FINAL,
                                                                   without=(HASH_TOTAL,)))
    assert all(not r.passed and not r.evaluated and r.expected_count == 7 for r in skipped)
    assert checks.STAGING_TO_FINAL_HASH in {r.check_name for r in checks.merge_skipped(7, True)}
    assert skipped[1].kind == AMOUNT


def test_a_failure_summary_puts_the_checks_that_could_not_run_apart() -> None:
    results = [checks.count_check("a", 1, 2), checks.count_check("b", 1, 1),
               checks.not_evaluated("c", 1, "skipped")]
    assert checks.failure_summary(results) == "a (c not evaluated)"
    assert checks.failure_summary(results[:2]) == "a"


def test_in_order_sorts_by_the_run_order_and_puts_unknown_names_last() -> None:
    names = [checks.STAGING_TO_FINAL, "other", checks.SOURCE_TRAILER_COUNT,
             checks.REJECT_LIMIT]
    ordered = checks.in_order([checks.count_check(n, 0, 0) for n in names])
    assert [r.check_name for r in ordered] == [checks.SOURCE_TRAILER_COUNT,
                                               checks.REJECT_LIMIT, checks.STAGING_TO_FINAL,
                                               "other"]


def test_rolled_back_keeps_the_detail_and_says_so() -> None:
    note = "MERGE rolled back; FINAL unchanged"
    assert checks.rolled_back(checks.count_check("c", 1, 2)).detail == note
    assert checks.rolled_back(checks.count_check("c", 1, 2, "why")).detail == f"why; {note}"


def test_a_warning_is_only_read_from_a_check_that_passed() -> None:
    warned = ReconciliationResult("v", 1, 1, True, detail=f"{checks.WARNING} look")
    assert checks.warning_of(warned) == "look"
    assert checks.warning_of(dataclasses.replace(warned, passed=False)) == ""


def test_values_a_limits_discrepancy_is_what_exceeds_it() -> None:
    assert ReconciliationResult("r", 5, 3, True, kind=LIMIT).discrepancy == 0
    assert ReconciliationResult("r", 5, 8, False, kind=LIMIT).discrepancy == 3
    assert ReconciliationResult("r", 5, 3, False).discrepancy == -2
    assert ReconciliationResult("a", 1, 1, True, 10, None).amount_discrepancy is None
    assert ReconciliationResult("a", 1, 1, True, 10, 7, kind=AMOUNT).amount_discrepancy == -3
    assert ReconciliationResult("a", 1, 1, True, kind=AMOUNT).is_amount_check
    assert not ReconciliationResult("c", 1, 1, True).is_amount_check
    assert not checks.not_evaluated("c", 1, "why").evaluated
    assert checks.count_check("c", 1, 1, "evaluated: not evaluated later").evaluated


def test_values_hash_total_reduce_and_failed_workers() -> None:
    assert HashTotal("h", "f", 4).reduce(123_456_789) == 6_789
    assert HashTotal("h", "f", 4).reduce(-1) == 9_999  # never a negative figure
    done = WorkerMetrics(1, "processor", 0, 0, None, None, state="done")
    killed = dataclasses.replace(done, worker_id=2, state="killed")
    assert metrics().failed_workers == ()
    assert dataclasses.replace(metrics(), workers=(done, killed)).failed_workers == (killed,)
