"""Per-record cost of counting, from a forked worker, as the job counts.

The job's processors keep a local Python int per record and publish it with one
``MetricsBus.add_batch`` per 10k-record batch. That is timed against the floor (a plain
local ``int += 1`` with no publishing at all), ``multiprocessing.Value`` with its lock
taken per record, one ``multiprocessing.Queue`` message per batch (drained by the parent)
and, for reference, a shared-memory ``+=`` on the bus row per record.

Each timing is the worker's CPU time (``process_time``: all its threads, the Queue's
feeder thread included), not wall time: other processes on a shared machine then add
no noise. The parent drains the Queue in a thread, as the job's writers would.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import multiprocess as mp

from pipeline.metrics.bus import Col, MetricsBus

BATCH = 10_000


def local_int(ctx: Any, batches: int) -> int:
    total = 0
    for _ in range(batches):
        count = 0
        for _ in range(BATCH):
            count += 1
        total += count
    return total


def bus_per_batch(ctx: Any, batches: int) -> int:
    bus, wid = ctx["bus"], ctx["wid"]
    total = 0
    for _ in range(batches):
        count = 0
        for _ in range(BATCH):
            count += 1
        total += count
        bus.add_batch(wid, count, 0, total, total)  # running totals, as the processors do
    return total


def value_with_lock(ctx: Any, batches: int) -> int:
    value = ctx["value"]
    for _ in range(batches):
        for _ in range(BATCH):
            with value.get_lock():
                value.value += 1
    return int(value.value)


def queue_per_batch(ctx: Any, batches: int) -> int:
    q = ctx["queue"]
    total = 0
    for _ in range(batches):
        count = 0
        for _ in range(BATCH):
            count += 1
        total += count
        q.put(count)
    return total


def shared_cell_per_record(ctx: Any, batches: int) -> int:
    row = ctx["bus"].row(ctx["wid"])
    for _ in range(batches):
        for _ in range(BATCH):
            row[Col.RECORDS] += 1
    return int(row[Col.RECORDS])


@dataclass(frozen=True)
class Method:
    label: str
    run: Callable[[Any, int], int]
    batches_scale: float  # slow methods count fewer records; the cost is per record


METHODS = [
    Method("local int += 1 (floor)", local_int, 1.0),
    Method("local int + bus.add_batch per 10k (the job)", bus_per_batch, 1.0),
    Method("multiprocessing.Value, lock per record", value_with_lock, 0.1),
    Method("multiprocessing.Queue message per 10k batch", queue_per_batch, 1.0),
    Method("shared-memory bus += 1 per record", shared_cell_per_record, 0.2),
]


def _child(ctx: Any, batches: int, reps: int, results: Any) -> None:
    timings: dict[str, list[float]] = {m.label: [] for m in METHODS}
    for rep in range(reps):
        for i in range(len(METHODS)):
            m = METHODS[(rep + i) % len(METHODS)]
            n = max(1, int(batches * m.batches_scale))
            start = time.process_time_ns()
            m.run(ctx, n)
            timings[m.label].append((time.process_time_ns() - start) / (n * BATCH))
    results.put((timings, _add_batch_ns(ctx)))


def _add_batch_ns(ctx: Any, calls: int = 20_000) -> float:
    """CPU ns of one ``add_batch`` call alone: the bus's whole cost per batch."""
    bus, wid = ctx["bus"], ctx["wid"]
    start = time.process_time_ns()
    for i in range(calls):
        bus.add_batch(wid, BATCH, 0, i * 1000, i * 1000)
    return (time.process_time_ns() - start) / calls


def _drain(q: Any) -> None:
    while q.get() is not None:
        pass


def measure(records: int, reps: int) -> dict[str, Any]:
    """ns/record per method (median of ``reps`` alternating repetitions) and the ratios."""
    fork = mp.get_context("fork")
    with MetricsBus.create(1, prefix="benchbus", worker_types=["processor"]) as bus:
        ctx = {"bus": bus, "wid": 0, "value": fork.Value("q", 0, lock=True),
               "queue": fork.Queue()}
        drainer = threading.Thread(target=_drain, args=(ctx["queue"],), daemon=True)
        drainer.start()
        results = fork.Queue()
        child = fork.Process(target=_child, args=(ctx, records // BATCH, reps, results))
        child.start()
        timings, call_ns = results.get()
        child.join()
        ctx["queue"].put(None)
        drainer.join()
    floor_reps = timings[METHODS[0].label]
    floor = statistics.median(floor_reps)
    rows = []
    for m in METHODS:
        # each repetition against the floor of the same repetition: drift cancels
        paired = [t / f for t, f in zip(timings[m.label], floor_reps, strict=True)]
        rows.append({"method": m.label, "ns_per_record": statistics.median(timings[m.label]),
                     "ratio": statistics.median(paired), "spread": (min(paired), max(paired))})
    return {"records": records, "reps": reps, "rows": rows, "floor_ns": floor,
            "add_batch_ns": call_ns, "job_ratio": rows[1]["ratio"],
            "derived_ratio": 1 + call_ns / BATCH / floor}
