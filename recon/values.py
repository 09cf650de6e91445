"""The values the packages exchange: a worker's and a run's metrics, a check's result, a
run's status.

Plain frozen data, importing nothing else of the project: ``recon`` computes with them,
``pipeline`` produces, stores and prints them, and neither needs the other to name them.
(A run's outcome, which the run fills in as it goes, is ``pipeline.outcome.RunOutcome``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

# a run's status, as BATCH_RUN holds it
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED_RECONCILIATION = "FAILED_RECON"
FAILED_INPUT = "FAILED_INPUT"
FAILED_RUNTIME = "FAILED_RUNTIME"
INTERRUPTED = "INTERRUPTED"
REFUSED = "REFUSED"  # another run of the same job held the job lock
ABENDED = "ABENDED"  # its process was killed before it could record its end

NOT_EVALUATED = "not evaluated"  # how a check that could not run begins its detail

# what a check's figures are (ReconciliationResult.kind; recon.checks.KINDS names each
# check's): records, money, a hash total, rows compared column by column, or a most
COUNT, AMOUNT, HASH_TOTAL, COLUMNS, LIMIT = "count", "amount", "hash_total", "columns", "limit"


@dataclass(frozen=True)
class WorkerMetrics:
    """One worker's counters. Amounts are exact integer minor units.

    ``state`` says how the worker ended (pipeline.metrics.aggregator tells the rules).
    """

    worker_id: int
    worker_type: str  # 'processor' | 'writer'
    records_processed: int
    errors_count: int
    start_time: datetime | None
    end_time: datetime | None
    amount: int = 0
    read_amount: int = 0
    unreadable_amounts: int = 0
    misplaced_control: int = 0
    batches: int = 0
    row_digest: int = 0  # processor: exact sum of its accepted rows' digests
    value_digest: int = 0  # processor: the same of their value digests (stored columns)
    # processor, with a trailer hash total (HashTotal): the hashed field's sums over the
    # records read and accepted, kept to the trailer field's digits, and the records
    # whose field could not be read
    hash_read: int = 0
    hash_accepted: int = 0
    unhashed: int = 0
    state: str = "not_started"
    exit_code: int | None = None
    pid: int = 0


@dataclass(frozen=True)
class AggregatedMetrics:
    """Run totals: reads, errors and amounts over processors; writes over writers."""

    total_read: int
    total_written: int
    total_errors: int
    accepted_amount: int
    read_amount: int
    written_amount: int
    unreadable_amounts: int
    misplaced_control: int
    writer_errors: int
    workers: tuple[WorkerMetrics, ...]
    # Σ of the accepted rows' digests (pipeline.db.digests); None: not known (a resume)
    row_digest: int | None = None
    # Σ of the same rows' value digests, over the stored columns as FINAL holds them
    value_digest: int | None = None
    # the processors' hash sums (WorkerMetrics), exact: HashTotal.reduce keeps the digits
    hash_read: int = 0
    hash_accepted: int = 0
    unhashed: int = 0

    @property
    def failed_workers(self) -> tuple[WorkerMetrics, ...]:
        """Every worker that did not end 'done' (killed, failed, lost, never started...)."""
        return tuple(w for w in self.workers if w.state != "done")


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
    kind: str = COUNT  # what its figures are: how they are shown and compared

    @property
    def is_limit(self) -> bool:
        """The expected count is a most, not a figure to equal (reject_limit): the
        discrepancy is what exceeds it, so a check that passed always shows 0."""
        return self.kind == LIMIT

    @property
    def discrepancy(self) -> int:
        over = self.actual_count - self.expected_count
        return max(over, 0) if self.is_limit else over

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
        return self.kind == AMOUNT


@dataclass(frozen=True)
class Evidence:
    """One differing value behind a failed column check, as found when it failed: the
    record (its key, its source line where known), the column, and both values as text
    (None for NULL). Column ``(row)``: the whole row is missing on one side."""

    check_name: str
    key: str
    column: str
    expected: str | None
    actual: str | None
    source_line: int | None = None


ROW = "(row)"  # Evidence.column when a row is missing on one side


@dataclass(frozen=True)
class RejectLimit:
    """How many rejects a night may have: a share of the records read (exact, e.g.
    ``Decimal("0.05")``), a number of records, or both (the smaller wins); None: no such
    bound. The job's ``control.max_reject_rate`` / ``control.max_rejects``."""

    max_rate: Decimal | None = Decimal("0.05")
    max_rejects: int | None = None


@dataclass(frozen=True)
class VolumeRule:
    """How tonight's records read are held against the job's history (the job's
    ``[control] volume_*`` settings; recon.checks.volume_vs_history applies them)."""

    history_runs: int = 10  # the last N SUCCEEDED runs whose median is expected
    band: float = 0.5  # tonight may differ from the median by this share either way
    min_runs: int = 5  # fewer SUCCEEDED runs than this: not enough history to judge
    action: str = "warn"  # outside the band: "warn" (passes, says so) or "fail"


@dataclass(frozen=True)
class HashTotal:
    """A trailer's hash total (``control.trailer_hash_total``): the sum of one numeric
    detail field over every detail record, e.g. the account numbers, a figure with no
    meaning but that changes when any of them does.

    A sender's field holds ``digits`` digits: a sum too wide for it keeps its low-order
    digits, as mainframe hash totals do, so every figure is compared modulo 10**digits.
    """

    field: str  # the trailer field holding it
    of: str  # the detail field summed
    digits: int  # the trailer field's width (at most 18: every figure fits int64)
    value: int = 0  # the trailer's figure, once read

    def reduce(self, total: int) -> int:
        return total % 10**self.digits


@dataclass(frozen=True)
class TrailerTotals:
    """What the input's trailer declares: the records and their amount (minor units), and
    its hash total where the job names one."""

    count: int
    amount: int
    hash: HashTotal | None = None
