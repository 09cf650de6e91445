"""Each check: an expected and an actual figure in, a ReconciliationResult out."""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_TRAILER_COUNT = "source_trailer_count"
SOURCE_TRAILER_AMOUNT = "source_trailer_amount"
PROCESSED_TO_STAGING = "processed_to_staging"
PROCESSED_TO_STAGING_AMOUNT = "processed_to_staging_amount"
WRITTEN_TO_STAGING = "written_to_staging"
STAGING_TO_FINAL = "staging_to_final"
STAGING_TO_FINAL_AMOUNT = "staging_to_final_amount"

NOT_EVALUATED = "not evaluated"

CHECK_ORDER = (SOURCE_TRAILER_COUNT, SOURCE_TRAILER_AMOUNT, PROCESSED_TO_STAGING,
               PROCESSED_TO_STAGING_AMOUNT, WRITTEN_TO_STAGING, STAGING_TO_FINAL,
               STAGING_TO_FINAL_AMOUNT)


@dataclass(frozen=True)
class ReconciliationResult:
    """One line of RECON_AUDIT. Amounts are exact integer minor units; None = not known."""

    check_name: str
    expected_count: int
    actual_count: int
    passed: bool
    expected_amount: int | None = None
    actual_amount: int | None = None
    detail: str = ""

    @property
    def discrepancy(self) -> int:
        return self.actual_count - self.expected_count

    @property
    def amount_discrepancy(self) -> int | None:
        if self.expected_amount is None or self.actual_amount is None:
            return None
        return self.actual_amount - self.expected_amount

    @property
    def evaluated(self) -> bool:
        """False for a check that could not run (recorded as failed, see not_evaluated)."""
        return not self.detail.startswith(NOT_EVALUATED)

    @property
    def is_amount_check(self) -> bool:
        return self.check_name.endswith("_amount")


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
                                    f"not provable: {reason}")
    return ReconciliationResult(name, counts[0], counts[1], expected == actual, expected, actual,
                                detail)


def not_evaluated(name: str, expected_count: int, reason: str) -> ReconciliationResult:
    """A check that could not run is recorded as failed, with the reason."""
    return ReconciliationResult(name, expected_count, 0, False,
                                detail=f"{NOT_EVALUATED}: {reason}")


def failure_summary(results: list[ReconciliationResult]) -> str:
    """"a, b" or "a, b (c, d not evaluated)": the checks that failed, then those that could
    not run because of them, so a skipped check never reads like a second cause."""
    failed = [r.check_name for r in results if not r.passed and r.evaluated]
    skipped = [r.check_name for r in results if not r.evaluated]
    text = ", ".join(failed)
    return f"{text} ({', '.join(skipped)} not evaluated)" if skipped else text
