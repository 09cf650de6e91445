"""The supervisor's rules, with forked fake workers instead of the job's.

Each fake worker is a module-level function run by ``WorkerPool`` in a real forked process,
writing its own row of a real shared-memory bus. They die, hang, stop, skip DONE, never
start, or flood the queue; the pool must end every run (normally or with WorkerFailure),
leave no process behind and say which worker ended it. Synchronisation is by queues,
events and process exits; the only waits are the pool's own heartbeat limits under test.
"""

from __future__ import annotations

import faulthandler
import os
import queue
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import multiprocess
import pytest

from pipeline.errors import WorkerFailure
from pipeline.metrics.bus import Col, MetricsBus, State, WorkerType
from pipeline.workers.pool import WorkerPool, WorkerSpec

pytestmark = pytest.mark.timeout(30)

CTX = multiprocess.get_context("fork")
HEARTBEAT_S = 0.5
FOREVER = CTX.Event()  # never set: a fake worker waiting on it waits until it is stopped


@pytest.fixture
def bus() -> Iterator[MetricsBus]:
    with MetricsBus.create(4, prefix=f"supervisor_{os.getpid()}") as created:
        yield created


def make_pool(bus: MetricsBus, *specs: WorkerSpec, maxsize: int = 4,
              on_tick: Callable[[], None] | None = None) -> WorkerPool:
    return WorkerPool(list(specs), bus, CTX.Queue(maxsize=maxsize), CTX.Queue(),
                      HEARTBEAT_S, on_tick=on_tick)


def run_failing(pool: WorkerPool) -> str:
    with pytest.raises(WorkerFailure) as failure:
        pool.run()
    assert_all_reaped(pool)
    return str(failure.value)


def assert_all_reaped(pool: WorkerPool) -> None:
    assert all(w.process.exitcode is not None for w in pool.workers)
    assert not CTX.active_children()


# -- fake workers --------------------------------------------------------------------------


def done(bus: MetricsBus, wid: int, kind: str = "processor") -> None:
    bus.register(wid, kind)
    bus.add_batch(wid, 10, 1, 100)
    bus.finish(wid, State.DONE)


def exits_with(bus: MetricsBus, wid: int, code: int, failures: Any = None) -> None:
    bus.register(wid, "processor")
    bus.finish(wid, State.FAILED)
    if failures is not None:  # what worker_main does: the cause travels before the exit
        failures.put((wid, "ValueError: bad record layout"))
        failures.close()
        failures.join_thread()
    sys.exit(code)


def killed_by(bus: MetricsBus, wid: int, signum: int) -> None:
    bus.register(wid, "processor")
    faulthandler.disable()  # pytest's crash dump of a deliberate SIGSEGV is only noise
    os.kill(os.getpid(), signum)


def exits_without_done(bus: MetricsBus, wid: int) -> None:
    bus.register(wid, "processor")
    bus.add_batch(wid, 5, 0, 50)


def hangs(bus: MetricsBus, wid: int) -> None:
    bus.register(wid, "processor")
    FOREVER.wait()


def stops_itself(bus: MetricsBus, wid: int) -> None:
    bus.register(wid, "processor")
    os.kill(os.getpid(), signal.SIGSTOP)


def never_registers(_bus: MetricsBus, _wid: int) -> None:
    FOREVER.wait()


def failed_but_lingers(bus: MetricsBus, wid: int) -> None:
    bus.register(wid, "processor")
    bus.finish(wid, State.FAILED)
    FOREVER.wait()


def floods(bus: MetricsBus, wid: int, batches: Any, items: int) -> None:
    """A processor faster than the writers: blocks on the full queue, beating meanwhile."""
    bus.register(wid, "processor")
    for n in range(items):
        while True:
            try:
                batches.put(n, timeout=0.05)
                break
            except queue.Full:
                bus.beat(wid)
    bus.add_batch(wid, items, 0, 0)
    bus.finish(wid, State.DONE)


def drains(bus: MetricsBus, wid: int, batches: Any) -> None:
    """A writer: reads until its end marker, counts what it read."""
    bus.register(wid, "writer")
    seen = 0
    while True:
        try:
            item = batches.get(timeout=0.05)
        except queue.Empty:
            bus.beat(wid)
            continue
        if item is None:
            break
        seen += 1
    bus.add_batch(wid, seen, 0, 0)
    bus.finish(wid, State.DONE)


def spec(wid: int, target: Callable[..., None], *args: Any, kind: str = "processor",
         bus: MetricsBus) -> WorkerSpec:
    return WorkerSpec(wid, kind, target, (bus, wid, *args))


# -- the rules -------------------------------------------------------------------------------


def test_every_worker_done_ends_the_run_normally(bus: MetricsBus) -> None:
    ticks: list[int] = []
    pool = make_pool(bus, spec(0, done, bus=bus), spec(1, done, bus=bus),
                     spec(2, done, "writer", kind="writer", bus=bus),
                     on_tick=lambda: ticks.append(1))
    pool.run()
    assert_all_reaped(pool)
    assert pool.exit_codes == {0: 0, 1: 0, 2: 0}
    assert ticks, "the progress display is called on every wake-up"
    assert list(bus.snapshot()[:3, Col.STATE]) == [State.DONE] * 3


def test_writers_get_one_end_marker_each_after_a_flood(bus: MetricsBus) -> None:
    batches = CTX.Queue(maxsize=2)
    pool = WorkerPool([WorkerSpec(0, "processor", floods, (bus, 0, batches, 300)),
                       WorkerSpec(1, "processor", floods, (bus, 1, batches, 200)),
                       WorkerSpec(2, "writer", drains, (bus, 2, batches)),
                       WorkerSpec(3, "writer", drains, (bus, 3, batches))],
                      bus, batches, CTX.Queue(), HEARTBEAT_S)
    pool.run()
    assert_all_reaped(pool)
    snapshot = bus.snapshot()
    assert snapshot[2, Col.RECORDS] + snapshot[3, Col.RECORDS] == 500  # nothing lost
    assert all(snapshot[i, Col.STATE] == State.DONE for i in range(4))


def test_exit_code_is_reported_with_the_workers_own_cause(bus: MetricsBus) -> None:
    pool = make_pool(bus, spec(0, done, bus=bus))
    pool.specs.append(WorkerSpec(1, "processor", exits_with, (bus, 1, 2, pool.failures)))
    message = run_failing(pool)
    assert "processor 1" in message and "failed with exit code 2" in message
    assert "ValueError: bad record layout" in message


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_death_by_any_signal_is_named(bus: MetricsBus, signum: int) -> None:
    message = run_failing(make_pool(bus, spec(0, killed_by, signum, bus=bus)))
    name = signal.Signals(signum).name
    assert "processor 0 (pid" in message and f"killed by signal {signum} ({name})" in message


def test_a_death_by_signal_is_reported_before_an_exit_code(bus: MetricsBus) -> None:
    # both are dead before the supervisor looks: the signal is the likelier cause
    pool = make_pool(bus, spec(0, exits_with, 1, bus=bus),
                     spec(1, killed_by, signal.SIGKILL, bus=bus))
    pool._start()
    for w in pool.workers:
        w.process.join()
    with pytest.raises(WorkerFailure, match="processor 1 .* killed by signal 9"):
        pool._check()
    pool.stop()
    assert_all_reaped(pool)


def test_exit_zero_without_done_is_a_failure(bus: MetricsBus) -> None:
    message = run_failing(make_pool(bus, spec(0, exits_without_done, bus=bus)))
    assert message == "processor 0 exited without finishing its work"


@pytest.mark.parametrize(("target", "how"), [
    (hangs, "no heartbeat for"),
    (stops_itself, "no heartbeat for"),  # SIGSTOP: the stop must SIGCONT it to end it
    (never_registers, "never started within"),
    (failed_but_lingers, "did not exit within"),
])
def test_a_silent_worker_ends_the_run_as_hung(bus: MetricsBus, target: Callable[..., None],
                                              how: str) -> None:
    message = run_failing(make_pool(bus, spec(0, target, bus=bus), spec(1, done, bus=bus)))
    assert message.startswith("processor 0 (pid ") and f"hung: {how} {HEARTBEAT_S:g} s" in message


def test_the_longest_silent_worker_is_blamed(bus: MetricsBus) -> None:
    # worker 0 is silent since its spawn; worker 1 since its register, which came later
    pool = make_pool(bus, spec(0, never_registers, bus=bus), spec(1, hangs, bus=bus))
    message = run_failing(pool)
    assert message.startswith("processor 0 "), message


def test_worker_types_reach_the_bus(bus: MetricsBus) -> None:
    pool = make_pool(bus, spec(0, done, bus=bus), spec(1, done, "writer", kind="writer", bus=bus))
    pool.run()
    types = bus.snapshot()[:2, Col.WORKER_TYPE]
    assert list(types) == [WorkerType.PROCESSOR, WorkerType.WRITER]
