"""Each check: an expected and an actual figure in, a ReconciliationResult out.

Pure: the figures come from the caller (pipeline.reconcile reads them from the database).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_FLOOR, Decimal
from statistics import median_low
from typing import NamedTuple

from recon.values import (
    AMOUNT,
    COLUMNS,
    COUNT,
    HASH_TOTAL,
    LIMIT,
    NOT_EVALUATED,
    AggregatedMetrics,
    HashTotal,
    ReconciliationResult,
    RejectLimit,
    TrailerTotals,
    VolumeRule,
)

SOURCE_TRAILER_COUNT = "source_trailer_count"
SOURCE_TRAILER_AMOUNT = "source_trailer_amount"
SOURCE_TRAILER_HASH = "source_trailer_hash_total"
REJECT_LIMIT = "reject_limit"
PROCESSED_TO_STAGING = "processed_to_staging"
PROCESSED_TO_STAGING_AMOUNT = "processed_to_staging_amount"
PROCESSED_TO_STAGING_HASH = "processed_to_staging_hash_total"
PROCESSED_TO_STAGING_COLUMNS = "processed_to_staging_columns"
WRITTEN_TO_STAGING = "written_to_staging"
VOLUME_VS_HISTORY = "volume_vs_history"
STAGING_TO_FINAL = "staging_to_final"
STAGING_TO_FINAL_AMOUNT = "staging_to_final_amount"
STAGING_TO_FINAL_HASH = "staging_to_final_hash_total"
STAGING_TO_FINAL_COLUMNS = "staging_to_final_columns"

# where a check stands in a run: the trailer against the records read, the rejects within
# the job's limit, the records processed against staging, tonight against the job's
# history, staging against FINAL after the MERGE (pipeline.explain traces each stage's
# records its own way; a [[details]] job checks the trailer and the limit on the whole file)
TRAILER, REJECTS, STAGING, HISTORY, FINAL = "trailer", "rejects", "staging", "history", "final"


class Check(NamedTuple):
    name: str
    stage: str
    kind: str  # what its figures are (recon.values)


# every check, in the order a run records them
CHECKS = (
    Check(SOURCE_TRAILER_COUNT, TRAILER, COUNT),
    Check(SOURCE_TRAILER_AMOUNT, TRAILER, AMOUNT),
    # only a job whose trailer carries a hash total (control.trailer_hash_total) has these
    Check(SOURCE_TRAILER_HASH, TRAILER, HASH_TOTAL),
    Check(REJECT_LIMIT, REJECTS, LIMIT),  # expected = the most rejects allowed
    Check(PROCESSED_TO_STAGING, STAGING, COUNT),
    Check(PROCESSED_TO_STAGING_AMOUNT, STAGING, AMOUNT),
    Check(PROCESSED_TO_STAGING_HASH, STAGING, HASH_TOTAL),
    # expected = rows compared, actual = rows equal in every column (pipeline.db.digests
    # and the MERGE's join prove them)
    Check(PROCESSED_TO_STAGING_COLUMNS, STAGING, COLUMNS),
    Check(WRITTEN_TO_STAGING, STAGING, COUNT),
    Check(VOLUME_VS_HISTORY, HISTORY, COUNT),
    Check(STAGING_TO_FINAL, FINAL, COUNT),
    Check(STAGING_TO_FINAL_AMOUNT, FINAL, AMOUNT),
    Check(STAGING_TO_FINAL_HASH, FINAL, HASH_TOTAL),
    Check(STAGING_TO_FINAL_COLUMNS, FINAL, COLUMNS),
)
RUN_ORDER = tuple(c.name for c in CHECKS)
KINDS = {c.name: c.kind for c in CHECKS}
STAGES = {c.name: c.stage for c in CHECKS}
HASH_CHECKS = tuple(name for name in RUN_ORDER if KINDS.get(name) == HASH_TOTAL)
COLUMN_CHECKS = tuple(name for name in RUN_ORDER if KINDS.get(name) == COLUMNS)
CHECK_ORDER = tuple(name for name in RUN_ORDER if name not in HASH_CHECKS)  # every run's
WARNING = "warning:"  # how a check that passed but wants a look begins its detail


def kind_of(name: str) -> str:
    return KINDS.get(plain_name(name), COUNT)


def of_stage(stage: str, without: Sequence[str] = ()) -> tuple[str, ...]:
    """The checks of ``stage`` in RUN_ORDER, but those of a kind in ``without``."""
    return tuple(c.name for c in CHECKS if c.stage == stage and c.kind not in without)


def plain_name(name: str) -> str:
    """The check a name stands for: a detail type's ``payments:staging_to_final`` is a
    ``staging_to_final`` (pipeline.chains)."""
    return name.rpartition(":")[2]


def count_check(name: str, expected: int, actual: int, detail: str = "") -> ReconciliationResult:
    return ReconciliationResult(name, expected, actual, expected == actual, detail=detail)


def amount_check(name: str, counts: tuple[int, int], expected: int | None, actual: int | None,
                 detail: str = "") -> ReconciliationResult:
    """Passes only on exactly equal amounts; an amount that is not known fails, never passes.

    ``counts`` are the record counts behind the two sums, shown for context.
    """
    if expected is None or actual is None:
        reason = detail or "amount could not be determined"
        return ReconciliationResult(name, counts[0], counts[1], False, expected, actual,
                                    f"not provable: {reason}", AMOUNT)
    return ReconciliationResult(name, counts[0], counts[1], expected == actual, expected, actual,
                                detail, AMOUNT)


def hash_check(name: str, rule: HashTotal, records: int, expected: int | None,
               actual: int | None, why_unknown: str = "") -> ReconciliationResult:
    """A hash total against another: expected and actual count hold both sums, each
    modulo 10**digits (HashTotal); one that is not known fails, never passes."""
    sums = f"sum of {rule.of} over {records:,} records, modulo 10^{rule.digits}"
    if expected is None or actual is None:
        return ReconciliationResult(name, 0 if expected is None else rule.reduce(expected),
                                    0 if actual is None else rule.reduce(actual), False,
                                    detail=f"not provable: {why_unknown or 'not known'}",
                                    kind=HASH_TOTAL)
    want, got = rule.reduce(expected), rule.reduce(actual)
    return ReconciliationResult(name, want, got, want == got, detail=sums, kind=HASH_TOTAL)


def columns_check(name: str, compared: int, equal: int,
                  differing: Mapping[str, int] | None = None,
                  note: str = "") -> ReconciliationResult:
    """Passes only when every compared row is equal in every column.

    ``differing`` counts, per column, the differing rows it was told of (the first ones
    found: ``note`` says how many were looked at); the DETAIL names them.
    """
    parts = []
    if differing:
        parts.append("differing columns: " + ", ".join(
            f"{column} ({n:,} row{'s' if n != 1 else ''})" for column, n in differing.items()))
    if note:
        parts.append(note)
    if equal == compared and not differing:
        parts.insert(0, "every stored column equal")
    return ReconciliationResult(name, compared, equal, equal == compared and not differing,
                                detail="; ".join(parts), kind=COLUMNS)


def not_provable_columns(name: str, compared: int, reason: str) -> ReconciliationResult:
    """A column check whose rows could not be compared: failed, never passed."""
    return ReconciliationResult(name, compared, 0, False, detail=f"not provable: {reason}",
                                kind=COLUMNS)


def in_order(results: Sequence[ReconciliationResult]) -> list[ReconciliationResult]:
    """The results in RUN_ORDER (a check it does not name goes last, as it came)."""
    rank = {name: i for i, name in enumerate(RUN_ORDER)}
    return sorted(results, key=lambda r: rank.get(r.check_name, len(rank)))


def not_evaluated(name: str, expected_count: int, reason: str) -> ReconciliationResult:
    """A check that could not run is recorded as failed, with the reason."""
    return ReconciliationResult(name, expected_count, 0, False,
                                detail=f"{NOT_EVALUATED}: {reason}", kind=kind_of(name))


def reject_limit_check(limit: RejectLimit, read: int, rejected: int) -> ReconciliationResult:
    """Rejects within the job's limit: expected = the most this night may reject, actual =
    records rejected. A night that read records and accepted none always fails, whatever
    the limit: a feed whose every record fails (an upstream layout change) balances its
    trailer, since rejects count as read, and would load nothing while "succeeding"."""
    allowed, rule = allowed_rejects(limit, read)
    share = f" ({_percent(rejected, read)})" if read else ""
    detail = f"{rejected:,} of {read:,} records rejected{share}; limit {allowed:,}: {rule}"
    if read and rejected >= read:
        return ReconciliationResult(REJECT_LIMIT, allowed, rejected, False, kind=LIMIT,
                                    detail=f"every record rejected, a night that loads "
                                           f"nothing always fails: {detail}")
    return ReconciliationResult(REJECT_LIMIT, allowed, rejected, rejected <= allowed,
                                detail=detail, kind=LIMIT)


def allowed_rejects(limit: RejectLimit, read: int) -> tuple[int, str]:
    """The most records a night of ``read`` records may reject, and the setting that says
    so: a rate is taken of the records read, rounded down; with both set, the smaller."""
    by_count = limit.max_rejects
    if limit.max_rate is None:
        return (read, "no limit set") if by_count is None else (by_count, "control.max_rejects")
    by_rate = int((limit.max_rate * read).to_integral_value(rounding=ROUND_FLOOR))
    setting = f"control.max_reject_rate {limit.max_rate}"
    if by_count is not None and by_count < by_rate:
        return by_count, f"control.max_rejects ({setting} would allow {by_rate:,})"
    also = "" if by_count is None else f"; control.max_rejects {by_count:,}"
    return by_rate, f"{_rate_percent(limit.max_rate)} of the records read ({setting}{also})"


def _percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` in per cent, exact to 2 decimals (rounded down)."""
    share = (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.01"), ROUND_FLOOR)
    return f"{share}%"


def _rate_percent(rate: Decimal) -> str:
    return f"{(rate * 100).normalize():f}%"


def failure_summary(results: list[ReconciliationResult]) -> str:
    """"a, b" or "a, b (c, d not evaluated)": the checks that failed, then those that could
    not run because of them, so a skipped check never reads like a second cause."""
    failed = [r.check_name for r in results if not r.passed and r.evaluated]
    skipped = [r.check_name for r in results if not r.evaluated]
    text = ", ".join(failed)
    return f"{text} ({', '.join(skipped)} not evaluated)" if skipped else text


def trailer_checks(trailer: TrailerTotals, a: AggregatedMetrics) -> list[ReconciliationResult]:
    """The trailer against the records read: count, amount and, where the trailer has
    one, the hash total (a run's first checks, and all that `validate` can check)."""
    unreadable = (f"{a.unreadable_amounts} rejected record(s) have an unreadable amount"
                  if a.unreadable_amounts else "")
    results = [
        count_check(SOURCE_TRAILER_COUNT, trailer.count, a.total_read),
        amount_check(SOURCE_TRAILER_AMOUNT, (trailer.count, a.total_read),
                     trailer.amount, None if unreadable else a.read_amount, unreadable),
    ]
    if (rule := trailer.hash) is not None:
        unhashed = (f"{a.unhashed} rejected record(s) have an unreadable {rule.of}"
                    if a.unhashed else "")
        results.append(hash_check(SOURCE_TRAILER_HASH, rule, a.total_read, rule.value,
                                  None if unhashed else a.hash_read, unhashed))
    return results


def file_checks(trailer: TrailerTotals, a: AggregatedMetrics,
                limit: RejectLimit | None = None) -> list[ReconciliationResult]:
    """The whole file's checks: its trailer against the records read, and the rejects
    within ``limit`` (default: the contract's, 5% of the records read); all that
    `validate` can check, and a run's first checks."""
    return [*trailer_checks(trailer, a),
            reject_limit_check(limit or RejectLimit(), a.total_read, a.total_errors)]


def load_checks(trailer: TrailerTotals, a: AggregatedMetrics, staged: int,
                staged_amount: int,
                limit: RejectLimit | None = None,
                staged_hash: int | None = None) -> list[ReconciliationResult]:
    """The checks before the MERGE: trailer -> read -> staging, counts and amounts (and
    the hash total where the trailer has one), and the rejects within ``limit`` (default:
    the contract's, 5% of the records read).

    ``staged``, ``staged_amount`` and ``staged_hash``: the run's rows in staging, their
    amount total and the sum of their hashed field.
    """
    accepted = a.total_read - a.total_errors
    hashed = [] if trailer.hash is None else [hash_check(
        PROCESSED_TO_STAGING_HASH, trailer.hash, staged, a.hash_accepted, staged_hash,
        "staging's sum is not known")]
    return [
        *file_checks(trailer, a, limit),
        count_check(PROCESSED_TO_STAGING, accepted, staged,
                    f"{a.total_read} read, {a.total_errors} rejected"),
        amount_check(PROCESSED_TO_STAGING_AMOUNT, (accepted, staged),
                     a.accepted_amount, staged_amount),
        *hashed,
        count_check(WRITTEN_TO_STAGING, a.total_written, staged,
                    f"{a.writer_errors} row(s) refused by the database"
                    if a.writer_errors else ""),
    ]


@dataclass(frozen=True)
class Band:
    """A job's usual figure: the median of its last succeeded runs, +/- the rule's band."""

    median: float
    low: float
    high: float
    runs: int  # how many runs the median is of

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


def usual_band(rule: VolumeRule, history: Sequence[float]) -> Band | None:
    """The band of ``history`` (the job's last SUCCEEDED runs' figures, newest first), or
    None until ``rule.min_runs`` runs exist: too little history to judge a night by.

    One rule for every figure a night is held against (records read by
    ``volume_vs_history``; reject rate and duration by ``pipeline history``).
    """
    runs = list(history)[:rule.history_runs]
    if len(runs) < rule.min_runs:
        return None
    # the lower middle value: a figure some run had, not a half-way one
    middle = median_low(runs)
    return Band(middle, middle * (1 - rule.band), middle * (1 + rule.band), len(runs))


def volume_vs_history(rule: VolumeRule, history: Sequence[int],
                      records_read: int) -> ReconciliationResult:
    """Tonight's records read against the median of the job's last SUCCEEDED runs
    (``history``, newest first, at most ``rule.history_runs``).

    A truncated extract with a matching trailer balances every other check: this is how
    the night gets noticed. Outside the band it fails with ``rule.action == "fail"``;
    with "warn" it passes and its detail begins with WARNING.
    """
    runs = list(history)[:rule.history_runs]
    band = usual_band(rule, runs)
    if band is None:
        # a count some run read, not a half-way figure; with no history at all, tonight's
        # own (a difference there would read like records lost)
        expected = int(median_low(runs)) if runs else records_read
        return ReconciliationResult(VOLUME_VS_HISTORY, expected, records_read, True, detail=(
            f"not enough history ({len(runs)} of {rule.min_runs} runs): not judged"))
    expected, low, high = int(band.median), band.low, band.high
    shown = f"median of the last {band.runs} succeeded runs"
    if band.holds(records_read):
        return ReconciliationResult(VOLUME_VS_HISTORY, expected, records_read, True,
                                    detail=f"within +/-{rule.band:.0%} of the {shown}")
    outside = (f"{records_read:,} records read, outside +/-{rule.band:.0%} of the {shown} "
               f"({expected:,}: {max(0, math.ceil(low)):,} to {math.floor(high):,})")
    if rule.action == "fail":
        return ReconciliationResult(VOLUME_VS_HISTORY, expected, records_read, False,
                                    detail=f'{outside}; control.volume_action = "fail"')
    return ReconciliationResult(VOLUME_VS_HISTORY, expected, records_read, True,
                                detail=f"{WARNING} {outside}")


def warning_of(result: ReconciliationResult) -> str:
    """What a check that passed wants looked at (its detail after WARNING), or ""."""
    if result.passed and result.detail.startswith(WARNING):
        return result.detail.removeprefix(WARNING).strip()
    return ""


def merge_skipped(keys: int, hashed: bool = False) -> list[ReconciliationResult]:
    """The checks after the MERGE, when an earlier check failed and no MERGE ran
    (``hashed``: the job's trailer has a hash total)."""
    reason = "MERGE skipped because an earlier check failed; FINAL unchanged"
    names = (STAGING_TO_FINAL, STAGING_TO_FINAL_AMOUNT,
             *((STAGING_TO_FINAL_HASH,) if hashed else ()), STAGING_TO_FINAL_COLUMNS)
    return [not_evaluated(name, keys, reason) for name in names]


def final_checks(key: Sequence[str], keys: int, survivors_amount: int, collapsed: int,
                 final_count: int, final_amount: int | None,
                 hashes: tuple[HashTotal, int, int | None] | None = None
                 ) -> list[ReconciliationResult]:
    """The checks after the MERGE: the run's ``keys`` distinct keys (``collapsed`` records
    dropped as earlier duplicates) against the FINAL rows the MERGE left for the run;
    ``hashes``: the hash total's rule, the survivors' sum and FINAL's."""
    names = ", ".join(key)  # with a composite key, a duplicate repeats all of them
    detail = (f"{collapsed} duplicate-key record(s) collapsed, the later record won "
              f"(key: {names})" if collapsed else f"no duplicate keys (key: {names})")
    return [
        count_check(STAGING_TO_FINAL, keys, final_count, detail),
        amount_check(STAGING_TO_FINAL_AMOUNT, (keys, final_count), survivors_amount,
                     final_amount),
        *([] if hashes is None else [hash_check(STAGING_TO_FINAL_HASH, hashes[0], keys,
                                                hashes[1], hashes[2],
                                                "FINAL's sum is not known")]),
    ]


def rolled_back(result: ReconciliationResult) -> ReconciliationResult:
    """A check after a MERGE that failed it, and so was rolled back."""
    note = "MERGE rolled back; FINAL unchanged"
    detail = f"{result.detail}; {note}" if result.detail else note
    return replace(result, detail=detail)
