"""Live progress from the metrics bus: log lines without a terminal, a rich bar with one."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.config import JobConfig
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.logs import RunIdFilter, TextFormatter
from pipeline.metrics.bus import MetricsBus
from pipeline.progress import (
    LogProgress,
    RichProgress,
    progress_display,
)

LINE = re.compile(r"progress read=(?P<read>[\d,]+)(?:/(?P<total>[\d,]+) [\d.]+%)? "
                  r"written=(?P<written>[\d,]+) errors=(?P<errors>[\d,]+) "
                  r"rate=(?P<rate>[\d,]+) rec/s workers (?P<workers>.*)$")


def parse_line(text: str) -> dict[str, object]:
    match = LINE.search(text)
    assert match, text
    num = {k: int(v.replace(",", "")) for k, v in match.groupdict().items()
           if k != "workers" and v is not None}
    workers = {label: int(n.replace(",", "")) for label, n in
               (item.split("=") for item in match["workers"].split())}
    return {**num, "workers": workers}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bus() -> Iterator[MetricsBus]:
    with MetricsBus.create(3, worker_types=["processor", "processor", "writer"]) as b:
        for wid, kind in enumerate(["processor", "processor", "writer"]):
            b.register(wid, kind)
        yield b


class Lines(logging.Handler):
    """The job log as an operator reads it: our formatter and run-id filter."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.addFilter(RunIdFilter())
        self.setFormatter(TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def job_log() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("pipeline")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_log_progress_writes_one_parseable_line_per_interval(
        bus: MetricsBus, job_log: Lines) -> None:
    clock = Clock()
    progress = LogProgress(interval=5.0, clock=clock)
    progress.total(50_000)
    progress(bus)  # the first tick only starts the clock
    bus.add_batch(0, 10_000, 3, 0)
    bus.add_batch(1, 5_000, 0, 0)
    bus.add_batch(2, 9_000, 0, 0)
    clock.now += 4.9
    progress(bus)
    assert [line for line in job_log.lines if "progress" in line] == []
    clock.now += 0.1
    progress(bus)
    bus.add_batch(1, 5_000, 0, 0)
    clock.now += 5.0
    progress(bus)

    lines = [line for line in job_log.lines if "progress" in line]
    assert len(lines) == 2
    first, second = parse_line(lines[0]), parse_line(lines[1])
    assert first == {"read": 15_000, "total": 50_000, "written": 9_000, "errors": 3,
                     "rate": 3_000, "workers": {"p0": 10_000, "p1": 5_000, "w2": 9_000}}
    assert second["read"] == 20_000 and second["rate"] == 1_000
    assert second["workers"] == {"p0": 10_000, "p1": 10_000, "w2": 9_000}


def test_rich_progress_shows_totals_rate_and_each_worker(bus: MetricsBus) -> None:
    out = io.StringIO()
    clock = Clock()
    progress = RichProgress(Console(file=out, force_terminal=True, width=140), clock=clock)
    progress.total(40_000)
    bus.add_batch(0, 12_345, 0, 0)
    bus.add_batch(1, 6_789, 0, 0)
    bus.add_batch(2, 10_000, 0, 0)
    with progress:
        progress(bus)
        clock.now += 1.0
        bus.add_batch(1, 1_000, 0, 0)
        progress(bus)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "20,134/40,000" in screen  # records read, of the plan's detail lines
    assert "10,000/40,000" in screen  # rows written
    assert "p0 12,345" in screen and "p1 7,789" in screen and "w2 10,000" in screen
    assert "rec/s" in screen


def test_rich_progress_draws_at_most_two_frames_a_second(bus: MetricsBus) -> None:
    out = io.StringIO()
    clock = Clock()
    progress = RichProgress(Console(file=out, force_terminal=True, width=140), clock=clock)
    with progress:
        for _ in range(100):  # ten seconds of ticks, ten a second
            bus.add_batch(0, 1, 0, 0)
            clock.now += 0.1
            progress(bus)
    frames = out.getvalue().count("workers")
    assert 15 <= frames <= 21


def test_a_failing_display_turns_itself_off_and_never_fails_the_run(
        bus: MetricsBus, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(LogProgress):
        def tick(self, bus: MetricsBus) -> None:
            raise RuntimeError("terminal went away")

    progress = Broken()
    progress(bus)
    progress(bus)
    warnings = [r for r in caplog.records if "progress display turned off" in r.message]
    assert len(warnings) == 1


def test_the_display_follows_the_terminal_and_the_flag() -> None:
    assert progress_display(enabled=False) is None
    piped = progress_display(console=Console(file=io.StringIO()))
    assert isinstance(piped, LogProgress)
    tty = progress_display(console=Console(file=io.StringIO(), force_terminal=True))
    assert isinstance(tty, RichProgress)


def test_progress_during_a_real_run_reads_the_bus_and_knows_the_total(
        tmp_path: Path, job_config: JobConfig, job_log: Lines) -> None:
    made = generate_file(tmp_path / "in.dat", 30_000, seed=8, reject_rate=0.01)
    config = job_config.with_overrides(input_path=made.path, processors=2, batch_size=1_000)
    progress = LogProgress(interval=0.0)  # a line on every tick
    outcome = run_job(config, progress=progress)

    assert outcome.exit_code == 0, outcome.message
    lines = [parse_line(line) for line in job_log.lines if "progress read=" in line]
    assert lines, job_log.lines
    assert {line["total"] for line in lines} == {30_000}
    reads = [line["read"] for line in lines]
    assert reads == sorted(reads) and reads[-1] <= 30_000
    for line in lines:
        workers = line["workers"]
        assert isinstance(workers, dict)
        assert sum(n for label, n in workers.items() if label.startswith("p")) == line["read"]
    assert all(f"run={outcome.run_id}" in line for line in job_log.lines)


def test_after_the_load_the_bar_names_the_stage_and_its_time_and_keeps_moving() -> None:
    out = io.StringIO()
    clock = Clock()
    progress = RichProgress(Console(file=out, force_terminal=True, width=140), clock=clock)
    progress.stage_interval = 0.01
    with progress:
        progress.total(1_000)
        progress.stage("merge", "1,000 keys")
        clock.now += 2.0  # the display's own thread redraws with no tick from the run
        deadline = time.monotonic() + 10
        while "merge (1,000 keys) 2.0 s" not in out.getvalue():
            assert time.monotonic() < deadline, out.getvalue()[-500:]
            time.sleep(0.01)  # polling the screen, not synchronising the display
        progress.stage(None)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "stage    merge (1,000 keys) 0.0 s" in screen


def test_a_real_run_logs_each_stage_after_the_load(
        tmp_path: Path, job_config: JobConfig, job_log: Lines) -> None:
    made = generate_file(tmp_path / "in.dat", 5_000, seed=9, duplicate_rate=0.01)
    config = job_config.with_overrides(input_path=made.path, processors=2, batch_size=1_000)
    outcome = run_job(config, progress=LogProgress(interval=0.0))

    assert outcome.exit_code == 0, outcome.message
    started = [line.split("stage ")[1] for line in job_log.lines if "started" in line
               and " stage " in line]
    keys = 5_000 - outcome.duplicates_collapsed
    assert started == ["plan started", "checks started: key repeats", "checks started",
                       f"merge started: {keys:,} keys", "audit started"]
    assert list(outcome.stages) == ["plan", "load", "checks", "merge", "audit"]
    assert all(ms >= 0 for ms in outcome.stages.values())
