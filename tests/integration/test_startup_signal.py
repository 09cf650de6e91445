"""A signal during start-up: ``python -m pipeline`` records SIGTERM/SIGINT before it
imports anything heavy, so a signal in the first ~0.6 s ends the command with exit 3 and
one line, never the process with signal 15; a run it reaches stops INTERRUPTED at its
first safe point. A signal as the process ends, after the run, leaves the run's exit code."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from pipeline import interrupts
from pipeline.__main__ import START_GATE_ENV
from pipeline.config import JobConfig
from pipeline.generate import generate_file
from pipeline.job import run_job
from tests.conftest import final_rows

pytestmark = pytest.mark.timeout(120)


def start_and_signal(cwd: Path, signum: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS``, sent ``signum`` while it is starting up: it waits at
    the start gate (its handler in place, nothing heavy imported) until the signal is sent."""
    gate = cwd / "start.gate"
    os.mkfifo(gate)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, START_GATE_ENV: str(gate)})
    try:
        with open(gate, "wb") as fifo:  # opens once the process has opened it: at the gate
            proc.send_signal(signum)
            fifo.write(b"go")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_start_up_exits_3_with_one_line(tmp_path: Path, signum: int) -> None:
    made = generate_file(tmp_path / "in.dat", 100, seed=1)
    database = tmp_path / "p.db"

    done = start_and_signal(tmp_path, signum, "run", "--input", str(made.path),
                            "--db", f"sqlite:///{database}")

    assert done.returncode == 3, (done.returncode, done.stderr)
    name = signal.Signals(signum).name
    assert done.stderr == f"error: interrupted by signal {name} before the run started; " \
                          "nothing was done\n"
    assert done.stdout == "" and not database.exists()


def test_a_signal_during_start_up_ends_other_commands_too(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 100, seed=1)

    done = start_and_signal(tmp_path, signal.SIGTERM, "validate", "--input", str(made.path))

    assert done.returncode == 3, (done.returncode, done.stderr)
    assert "interrupted by signal SIGTERM before the validate started" in done.stderr


def test_a_signal_recorded_at_start_up_stops_the_run_at_its_first_safe_point(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    """As between the command line's look at the flag and the run's own handling: the
    run's handling keeps the signal, and the run ends INTERRUPTED, recorded, FINAL empty."""
    made = generate_file(tmp_path / "in.dat", 300, seed=2)
    interrupts.record_early()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # recorded by the start-up handler, not fatal
        assert interrupts.requested()
        outcome = run_job(job_config.with_overrides(input_path=made.path))
    finally:
        interrupts.end_early()
        interrupts.reset()

    assert (outcome.status, outcome.exit_code) == ("INTERRUPTED", 3), outcome.message
    assert outcome.message == "interrupted by signal SIGTERM"
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM batch_run WHERE run_id = :r"),
                              {"r": outcome.run_id}).scalar()
    assert status == "INTERRUPTED"
    assert final_rows(engine, job_config) == {}


def test_a_signal_as_the_process_ends_leaves_the_runs_exit_code(tmp_path: Path) -> None:
    """The run over, its audit committed and its summary printed: a SIGTERM while the
    interpreter ends (here from its last atexit handler) is recorded, not fatal, and the
    process exits 0, as BATCH_RUN says, not -15 as it did."""
    made = generate_file(tmp_path / "in.dat", 100, seed=1)
    database = tmp_path / "p.db"
    # python -m pipeline, with a SIGTERM to itself after everything else at exit
    entry = ("import atexit, os, runpy, signal, sys; "
             "atexit.register(os.kill, os.getpid(), signal.SIGTERM); "
             "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)")

    done = subprocess.run([sys.executable, "-c", entry, "run", "--input", str(made.path),
                           "--db", f"sqlite:///{database}"], cwd=tmp_path, text=True,
                          capture_output=True, timeout=60, check=False)

    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "OK: all checks passed" in done.stdout
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT status, exit_code FROM batch_run").fetchall() == \
            [("SUCCEEDED", 0)]
