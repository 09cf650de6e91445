"""What every worker of a run needs, handed over by fork (nothing here is pickled)."""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import JobConfig
from pipeline.db.bulk import BulkLoader
from pipeline.errors import os_failure
from pipeline.metrics.bus import MetricsBus, State
from pipeline.source import InputPlan

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
QUEUE_POLL_S = 1.0  # how often a blocked worker beats and looks for its parent


@dataclass(frozen=True)
class TypeLoad:
    """One detail type of a [[details]] job as the workers load it: its staging loader,
    and its own metrics bus (each worker still writes only its own row of it)."""

    loader: BulkLoader
    bus: MetricsBus


@dataclass
class WorkerContext:
    run_id: str
    config: JobConfig
    plan: InputPlan
    bus: MetricsBus
    loader: BulkLoader
    database_url: str
    batch_size: int
    run_dir: Path
    parent_pid: int
    # multiprocess.Queue of (processor id, rows, amount, payload, detail type) or None
    batches: Any
    failures: Any  # multiprocess.Queue of (worker id, one-line message)
    types: tuple[TypeLoad, ...] = ()  # [[details]]: per detail type, in the config's order

    def loader_of(self, detail_type: int) -> BulkLoader:
        return self.types[detail_type].loader if self.types else self.loader

    def reject_path(self, worker_id: int) -> Path:
        return self.run_dir / f"rejects.{worker_id:03d}.part"

    def put(self, worker_id: int, item: Any) -> None:
        """Put on the bounded queue, beating while the writers catch up."""
        while True:
            try:
                self.batches.put(item, timeout=QUEUE_POLL_S)
                return
            except queue.Full:
                self.alive_or_exit(worker_id)

    def get(self, worker_id: int) -> Any:
        while True:
            try:
                return self.batches.get(timeout=QUEUE_POLL_S)
            except queue.Empty:
                self.alive_or_exit(worker_id)

    def alive_or_exit(self, worker_id: int) -> None:
        if os.getppid() != self.parent_pid:
            os._exit(4)  # orphaned: the run is over, whatever it was doing
        self.bus.beat(worker_id)


def worker_main(ctx: WorkerContext, worker_id: int, body: Callable[[], None]) -> None:
    """Common life of a worker: detach from the parent's signals, run, report how it ended."""
    _die_with_parent(ctx.parent_pid)
    try:
        body()
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent
        ctx.bus.finish(worker_id, State.FAILED)
        if isinstance(exc, OSError):  # a full or read-only disk: a sentence, not an errno
            exc = os_failure(exc, "reading or writing", folder=ctx.run_dir)
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        try:
            ctx.failures.put((worker_id, message), timeout=QUEUE_POLL_S)
            # put() only hands the message to a feeder thread, which os._exit() would kill
            # before it wrote a byte: flush it into the pipe first, or the cause is lost
            ctx.failures.close()
            ctx.failures.join_thread()
        except queue.Full:
            pass
        # the operator reads the one-line cause from the parent; the traceback is for
        # --log-level DEBUG (logging is configured before the fork, so it reaches stderr)
        log.debug("worker %d failed", worker_id, exc_info=True)
        logging.shutdown()
        os._exit(1)
    ctx.bus.finish(worker_id, State.DONE)


def _die_with_parent(parent_pid: int) -> None:
    # (the pool has already set SIGTERM to kill and SIGINT to be ignored: workers.pool)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the getppid() polls still catch it
        pass
    if os.getppid() != parent_pid:
        os._exit(4)
