"""Start the workers, supervise them, and stop them all if one dies or hangs.

The parent waits on the workers' process sentinels with a short timeout; each wake-up
it looks at exit codes and at the heartbeat column of the bus. Any worker that exits
non-zero, dies by a signal or stops beating ends the run within seconds (exit 3), and
every other worker is terminated: nothing is left running, nothing hangs.

SIGTERM and SIGINT are held pending (not lost) while a worker is forked and registered and
while the workers are stopped, so an interrupt can never leave a forked worker untracked or
a half-stopped pool behind; the run's handler sees the signal right after.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import multiprocess as mp
from multiprocess.connection import wait

from pipeline.errors import WorkerFailure
from pipeline.metrics.bus import Col, MetricsBus, State

SUPERVISE_S = 0.25
STOP_GRACE_S = 5.0
_DEFERRED_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass(frozen=True)
class WorkerSpec:
    """One worker to start: ``target(*args)`` runs in a forked process."""

    worker_id: int  # its row of the bus
    kind: str  # "processor" or "writer": writers get an end marker once processors are done
    target: Callable[..., None]
    args: tuple[Any, ...] = ()


@dataclass
class Worker:
    spec: WorkerSpec
    process: Any
    spawned_ns: int = 0  # time.monotonic_ns() at start: a worker that never registers hangs too

    @property
    def worker_id(self) -> int:
        return self.spec.worker_id

    @property
    def kind(self) -> str:
        return self.spec.kind


@dataclass
class WorkerPool:
    """Supervises any worker functions: the job's, or the tests' fake workers.

    ``batches`` is the queue the writers read (an end marker ``None`` per writer once every
    processor has exited 0); ``failures`` carries each failed worker's one-line cause.
    """

    specs: list[WorkerSpec]
    bus: MetricsBus
    batches: Any  # multiprocess.Queue
    failures: Any  # multiprocess.Queue of (worker id, message)
    heartbeat_timeout: float
    on_tick: Callable[[], None] | None = None  # progress display, called each wake-up
    workers: list[Worker] = field(default_factory=list)

    @property
    def exit_codes(self) -> dict[int, int | None]:
        return {w.worker_id: w.process.exitcode for w in self.workers}

    def run(self) -> None:
        """Run every worker to completion or raise WorkerFailure; never leaves one behind."""
        try:
            self._start()
            self._supervise()
        finally:
            self.stop()

    def _start(self) -> None:
        for spec in self.specs:
            self._spawn(spec)

    def _spawn(self, spec: WorkerSpec) -> None:
        process = mp.get_context("fork").Process(
            target=_child_main, args=(spec.target, spec.args),
            name=f"{spec.kind}-{spec.worker_id}", daemon=True)
        with _signals_deferred():  # a started worker is always in self.workers
            process.start()
            self.workers.append(Worker(spec, process, time.monotonic_ns()))

    def _supervise(self) -> None:
        processors = [w for w in self.workers if w.kind == "processor"]
        writers = [w for w in self.workers if w.kind == "writer"]
        end_markers = 0
        while True:
            # only the live ones: an exited worker's sentinel stays ready, and waiting on it
            # would turn this loop into a busy spin that starves the others of CPU
            live = [w.process.sentinel for w in self.workers if w.process.exitcode is None]
            if live:
                wait(live, timeout=SUPERVISE_S)
            # decide on the exit codes _check verified: a worker exiting after the check
            # (0 without DONE, say) is judged on the next turn, never taken as finished
            codes = self._check()
            if self.on_tick:
                self.on_tick()
            if all(codes[w.worker_id] == 0 for w in processors):
                # every batch is on the queue: tell each writer to finish
                while end_markers < len(writers) and self._offer_end_marker():
                    end_markers += 1
                if all(codes[w.worker_id] == 0 for w in writers):
                    return

    def _offer_end_marker(self) -> bool:
        try:
            self.batches.put(None, timeout=SUPERVISE_S)
            return True
        except queue.Full:
            return False

    def _check(self) -> dict[int, int | None]:
        """Raise WorkerFailure for a dead, lost or silent worker; else the exit codes seen."""
        # exit codes before the snapshot: a worker marks its row DONE before it exits, so
        # the other order could see the exit but not yet the DONE
        codes = [w.process.exitcode for w in self.workers]
        snapshot = self.bus.snapshot()
        now = time.monotonic_ns()
        limit = int(self.heartbeat_timeout * 1e9)
        # a death by signal is usually the cause and the other failures its consequence
        # (a worker killed mid-write leaves a torn message on the queue): report it first
        dead = sorted(((code > 0, w.worker_id, code) for w, code
                       in zip(self.workers, codes, strict=True) if code is not None and code),
                      key=lambda d: d[:2])
        if dead:
            _, worker_id, code = dead[0]
            raise WorkerFailure(self._death(self._by_id(worker_id), code))
        silent: list[tuple[int, Worker, str]] = []  # (ns without a sign of life, worker, how)
        for w, code in zip(self.workers, codes, strict=True):
            row = snapshot[w.worker_id]
            if code == 0 and row[Col.STATE] != State.DONE:
                raise WorkerFailure(f"{w.kind} {w.worker_id} exited without finishing its work")
            if code is not None:
                continue
            if row[Col.STATE] == State.RUNNING:
                silent.append((now - int(row[Col.HEARTBEAT_NS]), w, "no heartbeat for"))
            elif row[Col.STATE] == State.NOT_STARTED:
                silent.append((now - w.spawned_ns, w, "never started within"))
            elif row[Col.STATE] == State.FAILED:  # it only has its message left to send
                silent.append((now - int(row[Col.HEARTBEAT_NS]), w, "did not exit within"))
            # DONE and alive: a processor's last batches may still be on their way into the
            # queue, at the writers' pace; a writer that stalls is caught by its own beat
        # the one silent longest is the cause: others may be stuck waiting on it
        if silent:
            age, w, how = max(silent, key=lambda s: s[0])
            if age > limit:
                raise WorkerFailure(f"{w.kind} {w.worker_id} (pid {w.process.pid}) hung: "
                                    f"{how} {self.heartbeat_timeout:g} s")
        return {w.worker_id: code for w, code in zip(self.workers, codes, strict=True)}

    def _by_id(self, worker_id: int) -> Worker:
        return next(w for w in self.workers if w.worker_id == worker_id)

    def _death(self, w: Worker, code: int) -> str:
        how = f"was killed by signal {-code} ({_signal_name(-code)})" if code < 0 \
            else f"failed with exit code {code}"
        message = f"{w.kind} {w.worker_id} (pid {w.process.pid}) {how}"
        cause = self._failure_messages().get(w.worker_id)
        return f"{message}: {cause}" if cause else message

    def _failure_messages(self) -> dict[int, str]:
        messages: dict[int, str] = {}
        while True:
            try:
                wid, text = self.failures.get(timeout=0.1)
            except queue.Empty:
                return messages
            messages[wid] = text

    def stop(self) -> None:
        """Terminate whatever still runs, then kill what ignores SIGTERM; reap them all."""
        with _signals_deferred():
            self._stop()

    def _stop(self) -> None:
        alive = [w.process for w in self.workers if w.process.is_alive()]
        for p in alive:
            p.terminate()
            # a stopped (SIGSTOP, hung) worker keeps SIGTERM pending until it is continued:
            # continue it, or it would cost the whole grace period and a SIGKILL
            with suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        for w in self.workers:
            w.process.join()
        for q in (self.batches, self.failures):
            # data nobody will read must not keep the parent's feeder thread waiting
            q.cancel_join_thread()
            q.close()


def _child_main(target: Callable[..., None], args: tuple[Any, ...]) -> None:
    """A worker's first steps, before its own code: the signals the pool relies on."""
    # Forked children inherit the parent's handlers: SIGTERM (how the pool stops a worker)
    # must kill it, and Ctrl-C (sent to the whole process group) is the parent's to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # forked with both signals blocked (so a fork is never half-tracked): a SIGTERM that
    # arrived since is delivered now, with the default action
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED_SIGNALS)
    target(*args)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT pending in the main thread until the block ends (then delivered).

    Forked children inherit the blocked mask; ``_child_main`` unblocks it at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
