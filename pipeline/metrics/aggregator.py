"""Turn a bus snapshot plus the workers' exit codes into the designers' metrics values
(``recon.values.WorkerMetrics`` and ``AggregatedMetrics``).

How a worker ended (``WorkerMetrics.state``) combines its row's STATE with the exit code
of its process (``process.exitcode``: 0 ok, >0 error exit, <0 killed by signal -N, None
never started / still running). Rules, first match wins:

=====================  ===================  =============================================
exit code              row STATE            state
=====================  ===================  =============================================
< 0                    any                  'killed' (a signal; the row may say RUNNING)
> 0                    any                  'failed' (even if the row said DONE)
any                    FAILED               'failed' (it caught an exception)
0                      DONE                 'done'   (the only way to be 'done')
0                      NOT_STARTED/RUNNING  'lost'   (exited cleanly without finishing)
None                   NOT_STARTED          'not_started'
None                   RUNNING/DONE         'running' (no exit code yet)
=====================  ===================  =============================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from pipeline.metrics.bus import Col, State, WorkerType
from pipeline.money import checked_sum, join_amount, split_amount, sum_split
from recon.values import AggregatedMetrics, WorkerMetrics

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROCESSOR = WorkerType.PROCESSOR.label
WRITER = WorkerType.WRITER.label


def _utc(ns: int) -> datetime | None:
    # Integer arithmetic: fromtimestamp(ns / 1e9) would round through a float.
    return None if ns == 0 else _EPOCH + timedelta(microseconds=ns // 1000)


def _state(row_state: int, exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        return "killed"
    if (exit_code is not None and exit_code > 0) or row_state == State.FAILED:
        return "failed"
    if exit_code == 0:
        return "done" if row_state == State.DONE else "lost"
    return "not_started" if row_state == State.NOT_STARTED else "running"


def _worker(worker_id: int, row: Sequence[int], exit_code: int | None) -> WorkerMetrics:
    return WorkerMetrics(
        worker_id=worker_id,
        worker_type=WorkerType(row[Col.WORKER_TYPE]).label,
        records_processed=row[Col.RECORDS],
        errors_count=row[Col.ERRORS],
        start_time=_utc(row[Col.START_NS]),
        end_time=_utc(row[Col.END_NS]),
        amount=join_amount(row[Col.AMOUNT_HI], row[Col.AMOUNT_LO]),
        read_amount=join_amount(row[Col.READ_AMOUNT_HI], row[Col.READ_AMOUNT_LO]),
        unreadable_amounts=row[Col.UNREADABLE],
        misplaced_control=row[Col.MISPLACED],
        batches=row[Col.BATCHES],
        row_digest=row[Col.ROW_DIGEST],
        value_digest=row[Col.VALUE_DIGEST],
        hash_read=row[Col.HASH_READ],
        hash_accepted=row[Col.HASH_ACCEPTED],
        unhashed=row[Col.UNHASHED],
        state=_state(row[Col.STATE], exit_code),
        exit_code=exit_code,
        pid=row[Col.PID],
    )


def _count_total(workers: Sequence[WorkerMetrics], field: str) -> int:
    return checked_sum(np.array([getattr(w, field) for w in workers], dtype=np.int64))


def _amount_total(workers: Sequence[WorkerMetrics], field: str) -> int:
    # Re-split each exact amount into its bus cells and sum the columns vectorized;
    # sum_split guards both int64 sums against silent wrap-around (facts.md, money).
    cells = np.array([split_amount(getattr(w, field)) for w in workers], dtype=np.int64)
    cells = cells.reshape(len(workers), 2)
    return sum_split(cells[:, 0], cells[:, 1])


class MetricsAggregator:
    """The parent's view of the bus, once every worker has joined."""

    @staticmethod
    def from_snapshot(
        snapshot: np.ndarray, exit_codes: Mapping[int, int | None]
    ) -> list[WorkerMetrics]:
        """One WorkerMetrics per bus row; a worker id missing from exit_codes counts as None."""
        if snapshot.ndim != 2 or snapshot.shape[1] != len(Col) or snapshot.dtype != np.int64:
            raise ValueError(f"not a metrics bus snapshot: {snapshot.dtype} {snapshot.shape}")
        rows: list[list[int]] = snapshot.tolist()  # Python ints: no int64 arithmetic below
        return [_worker(wid, row, exit_codes.get(wid)) for wid, row in enumerate(rows)]

    @staticmethod
    def aggregate(worker_metrics: Sequence[WorkerMetrics]) -> AggregatedMetrics:
        """Exact totals per worker type (every worker counts, whatever its state)."""
        unknown = {w.worker_type for w in worker_metrics} - {PROCESSOR, WRITER}
        if unknown:
            raise ValueError(f"unknown worker_type(s): {sorted(unknown)}")
        procs = [w for w in worker_metrics if w.worker_type == PROCESSOR]
        writers = [w for w in worker_metrics if w.worker_type == WRITER]
        return AggregatedMetrics(
            total_read=_count_total(procs, "records_processed"),
            total_written=_count_total(writers, "records_processed"),
            total_errors=_count_total(procs, "errors_count"),
            accepted_amount=_amount_total(procs, "amount"),
            read_amount=_amount_total(procs, "read_amount"),
            written_amount=_amount_total(writers, "amount"),
            unreadable_amounts=_count_total(procs, "unreadable_amounts"),
            misplaced_control=_count_total(procs, "misplaced_control"),
            writer_errors=_count_total(writers, "errors_count"),
            workers=tuple(worker_metrics),
            row_digest=sum(w.row_digest for w in procs),  # Python ints: exact
            value_digest=sum(w.value_digest for w in procs),
            hash_read=sum(w.hash_read for w in procs),
            hash_accepted=sum(w.hash_accepted for w in procs),
            unhashed=_count_total(procs, "unhashed"),
        )
