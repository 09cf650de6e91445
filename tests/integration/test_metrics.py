"""The metrics bus with real forked workers, and the aggregator over its snapshot.

Synchronisation is by events and joins only, never sleeps.
"""

from __future__ import annotations

import os
import pickle
import re
import secrets
import signal
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import multiprocess
import numpy as np
import pytest

from pipeline.metrics import (
    BusClosedError,
    Col,
    MetricsAggregator,
    MetricsBus,
    State,
    WorkerType,
    leaked_segments,
)
from recon.values import AggregatedMetrics, WorkerMetrics

pytestmark = pytest.mark.timeout(30)

CTX = multiprocess.get_context("fork")
P, W = WorkerType.PROCESSOR, WorkerType.WRITER


@pytest.fixture
def prefix() -> Iterator[str]:
    """A prefix of this test's own, so parallel runs of other suites are not disturbed."""
    mine = f"mtest_{secrets.token_hex(4)}"
    yield mine
    leaked = leaked_segments(mine)
    for name in leaked:  # clean up, then fail the test
        os.unlink(Path("/dev/shm") / name)
    assert leaked == []


# -- fake workers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    records: int
    errors: int
    accepted: int  # amount accepted (processor) / committed (writer) in this batch
    read: int = 0  # processor: amount of every readable record of the batch
    unreadable: int = 0
    misplaced: int = 0


@dataclass(frozen=True)
class Plan:
    worker_id: int
    worker_type: WorkerType
    batches: tuple[Batch, ...]
    final_state: State | None = State.DONE  # None: exit without calling finish()
    exit_code: int = 0


def publish(bus: MetricsBus, worker_id: int, batches: Sequence[Batch]) -> None:
    """What a real worker does: exact local running totals, one bus update per batch."""
    accepted = read = 0
    for b in batches:
        accepted += b.accepted
        read += b.read
        bus.add_batch(worker_id, b.records, b.errors, accepted, read, b.unreadable, b.misplaced)


def fake_worker(bus: MetricsBus, plan: Plan) -> None:
    bus.register(plan.worker_id, plan.worker_type)
    publish(bus, plan.worker_id, plan.batches)
    if plan.final_state is not None:
        bus.finish(plan.worker_id, plan.final_state)
    sys.exit(plan.exit_code)


def blocking_worker(
    bus: MetricsBus, plan: Plan, ready: multiprocess.Event, release: multiprocess.Event
) -> None:
    """Registers, writes a partial batch, tells the parent, then waits to be killed."""
    bus.register(plan.worker_id, plan.worker_type)
    publish(bus, plan.worker_id, plan.batches)
    ready.set()
    release.wait()  # never set: the parent SIGKILLs us here


def run_plans(bus: MetricsBus, plans: Sequence[Plan]) -> dict[int, int | None]:
    procs = {p.worker_id: CTX.Process(target=fake_worker, args=(bus, p)) for p in plans}
    for proc in procs.values():
        proc.start()
    for proc in procs.values():
        proc.join(20)
    return {wid: proc.exitcode for wid, proc in procs.items()}


def expected(plan: Plan, field: str) -> int:
    return sum(getattr(b, field) for b in plan.batches)


# -- the scenario: processors and writers that end in every possible way ----------------

BIG = 2**62 + 12_345  # three of these already exceed 2**63

PLANS = [
    Plan(
        0, P, (Batch(10_000, 3, BIG, BIG + 99), Batch(10_000, 0, BIG, BIG), Batch(7, 1, BIG, BIG))
    ),
    Plan(1, P, (Batch(5, 5, -(2**60), -(2**60) - 1, unreadable=2, misplaced=1),) * 4),
    Plan(2, P, (Batch(100, 1, 2**53 + 1, 2**53 + 1),), final_state=State.FAILED, exit_code=2),
    Plan(4, W, (Batch(20_000, 0, 2 * BIG), Batch(7, 2, BIG))),
    Plan(5, W, (Batch(5, 0, -(2**62)), Batch(3, 1, 17))),
    Plan(6, W, (Batch(1, 0, 1),), final_state=State.DONE, exit_code=1),
    Plan(8, P, (Batch(2, 0, 42, 42),), final_state=None, exit_code=0),
]
KILLED = Plan(3, P, (Batch(9_999, 4, 2**63 + 1, 2**63 + 8, unreadable=1),))
N_WORKERS = 9  # worker 7 (a writer) is never started
TYPES = [P, P, P, P, W, W, W, W, P]


def run_scenario(bus: MetricsBus) -> dict[int, int | None]:
    ready, release = CTX.Event(), CTX.Event()
    doomed = CTX.Process(target=blocking_worker, args=(bus, KILLED, ready, release))
    doomed.start()
    assert ready.wait(20), "the worker to be killed never reached its blocking point"
    exit_codes = run_plans(bus, PLANS)
    doomed.kill()
    doomed.join(20)
    exit_codes[KILLED.worker_id] = doomed.exitcode
    return exit_codes


@pytest.fixture
def scenario(prefix: str) -> tuple[list[WorkerMetrics], dict[int, int | None], int, int]:
    before_ns = time.time_ns()
    with MetricsBus.create(N_WORKERS, prefix=prefix, worker_types=TYPES) as bus:
        exit_codes = run_scenario(bus)
        snapshot = bus.snapshot()
    after_ns = time.time_ns()
    return MetricsAggregator.from_snapshot(snapshot, exit_codes), exit_codes, before_ns, after_ns


def test_scenario_states_and_exit_codes(scenario: tuple) -> None:
    metrics, exit_codes, _, _ = scenario
    states = {m.worker_id: (m.state, m.exit_code) for m in metrics}
    assert states == {
        0: ("done", 0),
        1: ("done", 0),
        2: ("failed", 2),
        3: ("killed", -signal.SIGKILL),
        4: ("done", 0),
        5: ("done", 0),
        6: ("failed", 1),
        7: ("not_started", None),
        8: ("lost", 0),
    }
    agg = MetricsAggregator.aggregate(metrics)
    assert [w.worker_id for w in agg.failed_workers] == [2, 3, 6, 7, 8]


def test_scenario_per_worker_values_exact(scenario: tuple) -> None:
    metrics, _, _, _ = scenario
    by_id = {m.worker_id: m for m in metrics}
    for plan in [*PLANS, KILLED]:
        m = by_id[plan.worker_id]
        assert m.worker_type == plan.worker_type.label
        assert m.records_processed == expected(plan, "records")
        assert m.errors_count == expected(plan, "errors")
        assert m.amount == expected(plan, "accepted")
        assert m.read_amount == expected(plan, "read")
        assert m.unreadable_amounts == expected(plan, "unreadable")
        assert m.misplaced_control == expected(plan, "misplaced")
        assert m.batches == len(plan.batches)
        assert m.pid > 0 and m.pid != os.getpid()
    never = by_id[7]
    assert (never.worker_type, never.pid, never.start_time, never.batches) == ("writer", 0, None, 0)


def test_scenario_killed_worker_keeps_its_last_counts(scenario: tuple) -> None:
    metrics, _, _, _ = scenario
    killed = metrics[KILLED.worker_id]
    assert killed.state == "killed" and killed.exit_code == -9
    assert (killed.records_processed, killed.errors_count) == (9_999, 4)
    assert killed.amount == 2**63 + 1 and killed.read_amount == 2**63 + 8
    assert killed.start_time is not None and killed.end_time is None


def test_scenario_times_are_utc_and_in_range(scenario: tuple) -> None:
    metrics, _, before_ns, after_ns = scenario
    low = datetime.fromtimestamp(before_ns // 10**9, tz=UTC)
    high = datetime.fromtimestamp(after_ns // 10**9 + 1, tz=UTC)
    for m in metrics:
        if m.worker_id == 7:
            continue
        assert m.start_time is not None and m.start_time.tzinfo is UTC
        assert low <= m.start_time <= high
        if m.worker_id in (3, 8):  # killed, and exited without finish()
            assert m.end_time is None
        else:
            assert m.end_time is not None and m.start_time <= m.end_time <= high


def test_scenario_aggregate_totals_exact(scenario: tuple) -> None:
    metrics, _, _, _ = scenario
    agg = MetricsAggregator.aggregate(metrics)
    procs = [p for p in [*PLANS, KILLED] if p.worker_type == P]
    writers = [p for p in PLANS if p.worker_type == W]

    def total(plans: list[Plan], field: str) -> int:
        return sum(expected(p, field) for p in plans)

    assert agg == AggregatedMetrics(
        total_read=total(procs, "records"),
        total_written=total(writers, "records"),
        total_errors=total(procs, "errors"),
        accepted_amount=total(procs, "accepted"),
        read_amount=total(procs, "read"),
        written_amount=total(writers, "accepted"),
        unreadable_amounts=total(procs, "unreadable"),
        misplaced_control=total(procs, "misplaced"),
        writer_errors=total(writers, "errors"),
        workers=tuple(metrics),
        row_digest=0,  # the fake workers publish no row digest
        value_digest=0,
    )
    # The scenario really is beyond int64 and far beyond float precision.
    assert agg.accepted_amount > 2**63 and agg.written_amount > 2**63
    assert agg.total_read == 20_007 + 20 + 100 + 9_999 + 2


@pytest.mark.parametrize("target", [2**53 + 1, 2**63 + 1, -(2**63) - 3, 2**70 + 1])
def test_amount_totals_beyond_float_and_int64(prefix: str, target: int) -> None:
    third = target // 3
    parts = [third, third, target - 2 * third]
    plans = [Plan(i, P, (Batch(1, 0, part, part),)) for i, part in enumerate(parts)]
    plans.append(Plan(3, W, tuple(Batch(1, 0, part) for part in parts)))
    with MetricsBus.create(4, prefix=prefix) as bus:
        exit_codes = run_plans(bus, plans)
        agg = MetricsAggregator.aggregate(
            MetricsAggregator.from_snapshot(bus.snapshot(), exit_codes)
        )
    assert agg.accepted_amount == agg.read_amount == agg.written_amount == target
    assert agg.failed_workers == ()


# -- concurrency: each worker owns its row, no lock, no lost update ----------------------


def hammer(bus: MetricsBus, worker_id: int, n: int, start: multiprocess.Event) -> None:
    bus.register(worker_id, P)
    start.wait()
    total = 0
    for i in range(n):
        total += i
        bus.add_batch(worker_id, 1 + i % 7, i % 3, total, 2 * total, i % 2, int(i % 5 == 0))
    bus.finish(worker_id, State.DONE)


@pytest.mark.timeout(60)
def test_concurrent_writers_of_adjacent_rows_lose_nothing(prefix: str) -> None:
    n = 20_000
    start = CTX.Event()
    with MetricsBus.create(2, prefix=prefix) as bus:
        procs = [CTX.Process(target=hammer, args=(bus, wid, n, start)) for wid in (0, 1)]
        for proc in procs:
            proc.start()
        start.set()  # both are registered or about to be; they race from here
        for proc in procs:
            proc.join(50)
        snap = bus.snapshot()
    assert [proc.exitcode for proc in procs] == [0, 0]
    for m in MetricsAggregator.from_snapshot(snap, {0: 0, 1: 0}):
        assert m.records_processed == sum(1 + i % 7 for i in range(n))
        assert m.errors_count == sum(i % 3 for i in range(n))
        assert m.unreadable_amounts == n // 2 and m.misplaced_control == len(range(0, n, 5))
        assert (m.amount, m.read_amount) == (n * (n - 1) // 2, n * (n - 1))
        assert m.batches == n and m.state == "done"


# -- lifecycle: names, modes, cleanup, closed buses --------------------------------------


def test_name_is_unguessable_and_segment_is_0600() -> None:
    with MetricsBus.create(2) as a, MetricsBus.create(2) as b:
        for bus in (a, b):
            assert re.fullmatch(r"pipeline_[0-9a-f]{16}", bus.name)
            mode = os.stat(Path("/dev/shm") / bus.name).st_mode
            assert stat.S_IMODE(mode) == 0o600
            assert bus.name in leaked_segments()
        assert a.name != b.name
    assert a.name not in leaked_segments() and b.name not in leaked_segments()


def test_create_is_zero_filled_with_one_row_per_worker(prefix: str) -> None:
    with MetricsBus.create(5, prefix=prefix) as bus:
        snap = bus.snapshot()
        assert snap.shape == (5, len(Col)) and snap.dtype == np.int64
        assert not snap.any()
        assert bus.n_workers == 5 and bus.row(4).shape == (len(Col),)


def test_segment_removed_after_with_block(prefix: str) -> None:
    with MetricsBus.create(1, prefix=prefix) as bus:
        assert leaked_segments(prefix) == [bus.name]
    assert leaked_segments(prefix) == []


def test_segment_removed_when_body_raises(prefix: str) -> None:
    with pytest.raises(ZeroDivisionError), MetricsBus.create(3, prefix=prefix) as bus:
        assert leaked_segments(prefix) == [bus.name]
        _ = 1 / 0
    assert leaked_segments(prefix) == []


def test_use_after_close_raises_and_close_is_idempotent(prefix: str) -> None:
    bus = MetricsBus.create(2, prefix=prefix)
    bus.close()
    bus.close()
    assert bus.closed
    for call in (
        lambda: bus.row(0),
        bus.snapshot,
        lambda: bus.register(0, P),
        lambda: bus.add_batch(0, 1, 0, 1),
        lambda: bus.beat(0),
        lambda: bus.finish(0, State.DONE),
    ):
        with pytest.raises(BusClosedError):
            call()


def _hold_a_view_across_close(prefix: str) -> None:
    bus = MetricsBus.create(2, prefix=prefix)
    held = bus.row(1)
    held[Col.RECORDS] = 41
    with pytest.warns(ResourceWarning):
        bus.close()
    held[Col.RECORDS] += 1  # must not segfault: the mapping lives as long as the view
    sys.exit(0 if held[Col.RECORDS] == 42 and leaked_segments(prefix) == [] else 1)


def test_view_outliving_close_neither_crashes_nor_leaks(prefix: str) -> None:
    # In a forked child, so that a segfault fails this test instead of killing pytest.
    proc = CTX.Process(target=_hold_a_view_across_close, args=(prefix,))
    proc.start()
    proc.join(20)
    assert proc.exitcode == 0


def _child_closes(bus: MetricsBus) -> None:
    bus.register(0, W)
    bus.close()


def test_close_in_forked_child_does_not_unlink(prefix: str) -> None:
    with MetricsBus.create(1, prefix=prefix) as bus:
        proc = CTX.Process(target=_child_closes, args=(bus,))
        proc.start()
        proc.join(20)
        assert proc.exitcode == 0
        assert leaked_segments(prefix) == [bus.name]
        assert bus.row(0)[Col.PID] == proc.pid and bus.row(0)[Col.WORKER_TYPE] == W


def test_row_bounds_and_pickling_refused(prefix: str) -> None:
    with MetricsBus.create(2, prefix=prefix) as bus:
        for bad in (-1, 2):
            with pytest.raises(IndexError):
                bus.row(bad)
        with pytest.raises(TypeError):
            pickle.dumps(bus)


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "x" * 80, "_lead"])
def test_bad_prefix_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        MetricsBus.create(1, prefix=bad)


# -- the bus API in-process --------------------------------------------------------------


def test_register_beat_batch_finish_write_the_expected_cells(prefix: str) -> None:
    with MetricsBus.create(2, prefix=prefix) as bus:
        t0, m0 = time.time_ns(), time.monotonic_ns()
        bus.register(1, "writer")
        bus.add_batch(1, 10, 2, 2**63 + 5, 7, unreadable=1, misplaced=3)
        bus.add_batch(1, 1, 0, -3, batches=4)  # a writer's four batches, committed together
        bus.beat(1)
        bus.finish(1, State.DONE)
        t1, m1 = time.time_ns(), time.monotonic_ns()
        row = bus.row(1).tolist()
        assert not bus.row(0).any()
    assert row[Col.PID] == os.getpid() and row[Col.WORKER_TYPE] == W
    assert row[Col.STATE] == State.DONE and row[Col.BATCHES] == 5
    assert t0 <= row[Col.START_NS] <= row[Col.END_NS] <= t1
    assert m0 <= row[Col.HEARTBEAT_NS] <= m1
    assert (row[Col.RECORDS], row[Col.ERRORS], row[Col.UNREADABLE], row[Col.MISPLACED]) == (
        11, 2, 1, 3,
    )  # fmt: skip
    assert (row[Col.AMOUNT_HI], row[Col.AMOUNT_LO]) == divmod(-3, 2**31)
    assert (row[Col.READ_AMOUNT_HI], row[Col.READ_AMOUNT_LO]) == (0, 0)


def test_add_batch_overflow_leaves_row_untouched(prefix: str) -> None:
    with MetricsBus.create(1, prefix=prefix) as bus:
        bus.register(0, P)
        bus.add_batch(0, 5, 1, 100, 100)
        before = bus.snapshot()
        with pytest.raises(OverflowError):
            bus.add_batch(0, 5, 1, 2**95, 100)
        assert np.array_equal(bus.snapshot(), before)


def test_snapshot_is_a_copy(prefix: str) -> None:
    with MetricsBus.create(1, prefix=prefix) as bus:
        snap = bus.snapshot()
        bus.row(0)[Col.RECORDS] = 5
        assert snap[0, Col.RECORDS] == 0 and bus.snapshot()[0, Col.RECORDS] == 5


# -- the aggregator's state rules, on synthetic snapshots --------------------------------


@pytest.mark.parametrize(
    ("row_state", "exit_code", "state"),
    [
        (State.DONE, 0, "done"),
        (State.RUNNING, -9, "killed"),
        (State.DONE, -15, "killed"),
        (State.NOT_STARTED, -9, "killed"),
        (State.DONE, 1, "failed"),
        (State.FAILED, 2, "failed"),
        (State.FAILED, 0, "failed"),
        (State.FAILED, None, "failed"),
        (State.RUNNING, 0, "lost"),
        (State.NOT_STARTED, 0, "lost"),
        (State.NOT_STARTED, None, "not_started"),
        (State.RUNNING, None, "running"),
        (State.DONE, None, "running"),
    ],
)
def test_state_rules(row_state: State, exit_code: int | None, state: str) -> None:
    snap = np.zeros((2, len(Col)), dtype=np.int64)
    snap[1, Col.STATE] = row_state
    [_, worker] = MetricsAggregator.from_snapshot(snap, {1: exit_code})
    assert (worker.state, worker.exit_code) == (state, exit_code)


def test_from_snapshot_refuses_wrong_shape_or_dtype() -> None:
    with pytest.raises(ValueError):
        MetricsAggregator.from_snapshot(np.zeros((2, len(Col) - 1), dtype=np.int64), {})
    with pytest.raises(ValueError):
        MetricsAggregator.from_snapshot(np.zeros((2, len(Col))), {})


def test_aggregate_designers_constructor_and_empty() -> None:
    workers = [
        WorkerMetrics(0, "processor", 10, 1, None, None, amount=2**63, state="done"),
        WorkerMetrics(1, "writer", 9, 0, None, None, amount=2**63),
    ]
    agg = MetricsAggregator.aggregate(workers)
    assert (agg.total_read, agg.total_errors, agg.total_written) == (10, 1, 9)
    assert agg.accepted_amount == agg.written_amount == 2**63
    assert agg.failed_workers == (workers[1],)
    empty = MetricsAggregator.aggregate([])
    assert (empty.total_read, empty.accepted_amount, empty.workers) == (0, 0, ())
    with pytest.raises(ValueError):
        MetricsAggregator.aggregate([WorkerMetrics(0, "reader", 1, 0, None, None)])
