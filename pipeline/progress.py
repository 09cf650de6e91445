"""Live progress, read by the parent from the metrics bus while the workers run.

``run_job(progress=...)`` calls the display with the bus about every 0.25 s, tells it the
detail line count once the input is planned (``total``) and, after the load, which stage
runs (``stage``: checks, merge, audit), which a thread of the display then shows with its
elapsed time until the next one, so the bar never freezes while the parent's SQL runs.
A tick costs one bus snapshot (~1 us, facts.md) and a few sums over a handful of rows.
Drawing is what costs: a rich frame takes ~3 ms (its table layout), so a terminal gets at
most 2 frames a second, and a log gets one line every few seconds; the parent, which
otherwise only waits on its workers, stays all but idle.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import numpy as np
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as Bars
from rich.text import Text

from pipeline.metrics.bus import Col, MetricsBus, WorkerType

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 5.0
FRAME_INTERVAL_S = 0.5  # at most 2 redraws a second: a rich frame costs ~3 ms


@dataclass(frozen=True)
class Counts:
    """What the bus says right now: run totals and each worker's records."""

    read: int
    written: int
    errors: int
    workers: tuple[tuple[str, int], ...]  # ("p0", records), ("w2", rows committed), ...


def read_counts(snapshot: np.ndarray) -> Counts:
    writer = snapshot[:, Col.WORKER_TYPE] == WorkerType.WRITER
    records = snapshot[:, Col.RECORDS]
    # counts, not money: int64 sums of a few rows cannot come near overflow
    return Counts(
        read=int(records[~writer].sum()),
        written=int(records[writer].sum()),
        errors=int(snapshot[~writer, Col.ERRORS].sum()),
        workers=tuple((f"{'w' if w else 'p'}{wid}", n)
                      for wid, (w, n) in enumerate(zip(writer.tolist(), records.tolist(),
                                                       strict=True))),
    )


@runtime_checkable
class Progress(Protocol):
    """What ``run_job(progress=...)`` drives: the bus each tick, the total, the stages."""

    def __call__(self, bus: MetricsBus) -> None: ...

    def total(self, n: int) -> None: ...

    def stage(self, name: str | None, detail: str = "") -> None: ...


class _Display:
    """Shared plumbing: the expected total, the stage after the load and its own clock, a
    context manager, and a display that turns itself off rather than fail the run if
    drawing ever raises."""

    expected: int | None = None
    clock: Callable[[], float] = time.monotonic
    stage_interval: float = FRAME_INTERVAL_S
    _broken = False
    _stage: tuple[str, str, float] | None = None  # (name, detail, started)
    _stage_thread: threading.Thread | None = None
    _stop: threading.Event | None = None

    def total(self, n: int) -> None:
        self.expected = n

    def __call__(self, bus: MetricsBus) -> None:
        self._safely(lambda: self.tick(bus))

    def stage(self, name: str | None, detail: str = "") -> None:
        """A stage after the load started: shown (redrawn by a thread) until the next one;
        None: the run's stages are over, nothing more to show."""
        if name is None:
            self._stage = None
            self._stop_thread()
            return
        if name in ("plan", "load"):
            return  # the bus ticks show the load
        self._stage = (name, detail, self.clock())
        self._safely(self.show_stage)
        if self._stage_thread is None:
            self._stop = threading.Event()
            # the thread's log lines carry the run's id, as the parent's do (logs.RUN_ID)
            context = contextvars.copy_context()
            self._stage_thread = threading.Thread(
                target=context.run, args=(self._redraw, self._stop), name="progress-stage",
                daemon=True)
            self._stage_thread.start()

    def _redraw(self, stop: threading.Event) -> None:
        while not stop.wait(self.stage_interval):
            self._safely(self.show_stage)

    def stage_text(self) -> str:
        """``merge (1,000 keys) 12.3 s``: the stage that runs and for how long."""
        if self._stage is None:
            return ""
        name, detail, started = self._stage
        return f"{name}{f' ({detail})' if detail else ''} {self.clock() - started:.1f} s"

    def _safely(self, draw: Callable[[], None]) -> None:
        if self._broken:
            return
        try:
            draw()
        except Exception as exc:  # noqa: BLE001 - a display must never fail the job
            self._broken = True
            log.warning("progress display turned off: %s", exc)

    def tick(self, bus: MetricsBus) -> None:
        raise NotImplementedError

    def show_stage(self) -> None:
        raise NotImplementedError

    def _stop_thread(self) -> None:
        if self._stop is not None and self._stage_thread is not None:
            self._stop.set()
            self._stage_thread.join()
            self._stage_thread = self._stop = None

    def close(self) -> None:
        self._stop_thread()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def format_progress_line(counts: Counts, total: int | None, rate: float) -> str:
    """``progress read=1,234/5,000 24.7% written=1,000 errors=3 rate=45,000 rec/s workers
    p0=600 p1=634 w2=1,000`` (the run id is added by the log formatter)."""
    of = f"/{total:,} {100 * counts.read / total:.1f}%" if total else ""
    workers = " ".join(f"{label}={n:,}" for label, n in counts.workers)
    return (f"progress read={counts.read:,}{of} written={counts.written:,} "
            f"errors={counts.errors:,} rate={rate:,.0f} rec/s workers {workers}")


class LogProgress(_Display):
    """A compact log line every ``interval`` seconds, for logs and pipes (no terminal)."""

    def __init__(self, interval: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self.stage_interval = max(interval, FRAME_INTERVAL_S)
        self._last: tuple[float, int] | None = None  # (time, records read) at the last line

    def stage(self, name: str | None, detail: str = "") -> None:
        # the stage clock logs each start itself: this line follows every interval
        super().stage(name, detail)

    def show_stage(self) -> None:
        stage = self._stage  # the run's thread may end the stage meanwhile
        if stage is None or self.clock() - stage[2] < self.interval:
            return
        log.info("progress stage %s", self.stage_text(), extra={
            "stage": stage[0], "stage_seconds": round(self.clock() - stage[2], 1)})

    def tick(self, bus: MetricsBus) -> None:
        now = self.clock()
        if self._last is None:
            self._last = (now, 0)
            return
        since, read_then = self._last
        if now - since < self.interval:
            return  # no snapshot at all between lines
        counts = read_counts(bus.snapshot())
        rate = (counts.read - read_then) / (now - since) if now > since else 0.0
        self._last = (now, counts.read)
        log.info(format_progress_line(counts, self.expected, rate), extra={
            "records_read": counts.read, "records_written": counts.written,
            "records_rejected": counts.errors, "records_expected": self.expected,
            "records_per_second": round(rate), "workers": dict(counts.workers)})


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rec/s", style="progress.data.speed")


class _CountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        total = f"/{task.total:,.0f}" if task.total else ""
        return Text(f"{task.completed:,.0f}{total}", style="progress.download")


class _BarsAndWorkers(Bars):
    """The bars, then one line of per-worker counts under them."""

    workers_line: Text = Text("")
    stage_line: Text = Text("")

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield self.workers_line
        yield self.stage_line


class RichProgress(_Display):
    """A rich progress bar on a terminal: read and written bars, rec/s, per-worker counts."""

    def __init__(self, console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console()
        self.clock = clock
        self._bars = _BarsAndWorkers(
            TextColumn("{task.description:<8}"), BarColumn(), TaskProgressColumn(),
            _CountColumn(), _RateColumn(), TimeElapsedColumn(),
            console=self.console, auto_refresh=False, transient=True,
            # log lines on a terminal stderr go above the bar instead of through it
            redirect_stderr=sys.stderr.isatty(), redirect_stdout=False)
        # started at the first tick: the clock should not count the input's planning
        self._read = self._bars.add_task("read", total=None, start=False)
        self._written = self._bars.add_task("written", total=None, start=False)
        self._drawn_at: float | None = None

    def tick(self, bus: MetricsBus) -> None:
        now, drawn_at = self.clock(), self._drawn_at
        if drawn_at is not None and now - drawn_at < FRAME_INTERVAL_S:
            return
        if drawn_at is None:
            for task in (self._read, self._written):
                self._bars.start_task(task)
        self._update(read_counts(bus.snapshot()))
        if drawn_at is None:
            self._bars.start()  # after the first update, so no empty frame is shown
        self._bars.refresh()
        self._drawn_at = now

    def _update(self, counts: Counts) -> None:
        self._bars.update(self._read, completed=counts.read, total=self.expected)
        self._bars.update(self._written, completed=counts.written, total=self.expected)
        line = Text("workers  ", style="bold")
        for label, n in counts.workers:
            line.append(f"{label} ", style="dim").append(f"{n:,}  ")
        self._bars.workers_line = line

    def show_stage(self) -> None:
        """After the load: the stage and its elapsed time under the bars (the bars' own
        elapsed column goes on too), redrawn by the display's thread."""
        if self._drawn_at is None:
            self._bars.start()
            self._drawn_at = self.clock()
        self._bars.stage_line = Text("stage    ", style="bold").append(self.stage_text())
        self._bars.refresh()

    def close(self) -> None:
        super().close()
        if self._drawn_at is not None:
            self._bars.stop()
            self._drawn_at = None


def progress_display(enabled: bool = True,
                     console: Console | None = None) -> RichProgress | LogProgress | None:
    """A bar on a terminal, log lines otherwise, nothing with ``--no-progress``."""
    if not enabled:
        return None
    console = console or Console()
    if console.is_terminal and not console.is_dumb_terminal:
        return RichProgress(console)
    return LogProgress()
