"""Live progress, read by the parent from the metrics bus while the workers run.

``run_job`` calls the display with the bus about every 0.25 s (``on_tick``) and, once the
input is planned, tells it the detail line count (``expect``). A tick costs one bus
snapshot (~1 us, facts.md) and a few sums over a handful of rows. Drawing is what costs:
a rich frame takes ~3 ms (its table layout), so a terminal gets at most 2 frames a
second, and a log gets one line every few seconds; the parent, which otherwise only
waits on its workers, stays all but idle.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import numpy as np
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
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


class RunProgress(Protocol):
    """What the CLI hands to ``run_job(on_tick=...)``."""

    def __call__(self, bus: MetricsBus) -> None: ...

    def expect(self, total: int) -> None: ...

    def close(self) -> None: ...


class _Display:
    """Shared plumbing: the expected total, a context manager, and a display that turns
    itself off rather than fail the run if drawing ever raises."""

    total: int | None = None
    _broken = False

    def expect(self, total: int) -> None:
        self.total = total

    def __call__(self, bus: MetricsBus) -> None:
        if self._broken:
            return
        try:
            self.tick(bus)
        except Exception as exc:  # noqa: BLE001 - a display must never fail the job
            self._broken = True
            log.warning("progress display turned off: %s", exc)

    def tick(self, bus: MetricsBus) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

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
        self._last: tuple[float, int] | None = None  # (time, records read) at the last line

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
        log.info(format_progress_line(counts, self.total, rate), extra={
            "records_read": counts.read, "records_written": counts.written,
            "records_rejected": counts.errors, "records_expected": self.total,
            "records_per_second": round(rate), "workers": dict(counts.workers)})


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rec/s", style="progress.data.speed")


class _CountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        total = f"/{task.total:,.0f}" if task.total else ""
        return Text(f"{task.completed:,.0f}{total}", style="progress.download")


class _BarsAndWorkers(Progress):
    """The bars, then one line of per-worker counts under them."""

    workers_line: Text = Text("")

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield self.workers_line


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
        self._bars.update(self._read, completed=counts.read, total=self.total)
        self._bars.update(self._written, completed=counts.written, total=self.total)
        line = Text("workers  ", style="bold")
        for label, n in counts.workers:
            line.append(f"{label} ", style="dim").append(f"{n:,}  ")
        self._bars.workers_line = line

    def close(self) -> None:
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
