"""Issue 23: when the infrastructure fails, the failure is recorded with its real cause and
nothing waits forever on a silent server.

A bounded sample of ``benchmarks.infra``'s trials, one per fault that leaves the shared
PostgreSQL server alone (the server restart and outage trials need a cluster of their
own: ``python -m benchmarks.infra --restart-cluster 15/sweep``). Each trial runs the job
in a process of its own, then a clean run that settles a journalled end, and checks from
the database alone that BATCH_RUN states the exit code and the cause, that FINAL holds
nothing of the failed run, that the run ended within its bound + 15 s, and that no
traceback, segment or worker outlived it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from benchmarks.infra import Tally, Target, clean_seconds, trial
from pipeline.audit.journal import RunEnd, fallback_dir, forget_end, read_end, write_end
from pipeline.audit.schema import utc_now
from pipeline.db.engine import create_missing_tables, make_engine
from pipeline.db.lock import job_lock
from pipeline.db.tables import job_tables
from pipeline.db.watchdog import StatementWatchdog
from pipeline.errors import os_failure
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from pipeline.logs import QuietLibraries
from recon.values import REFUSED, RUNNING
from tests.conftest import shipped_job

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts, chattr and SIGSTOP need root")
RECORDS = 20_000


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    source = generate_file(tmp_path / "source.dat", RECORDS, seed=23, reject_rate=0.02).path
    return source, generate_file(tmp_path / "empty.dat", 0, seed=23).path


def one_trial(kind: str, target: Target, tmp_path: Path, inputs: tuple[Path, Path]) -> Tally:
    source, empty = inputs
    tally = Tally()
    clean = clean_seconds(target, tmp_path, source)
    trial(0, kind, target, tmp_path / target.name, source, empty, clean, tally)
    return tally


def assert_told(tally: Tally) -> None:
    assert tally.failures == [], tally.failures
    assert (tally.trials, tally.told, tally.hangs, tally.tracebacks) == (1, 1, 0, 0)


@needs_root
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["out_full", "db_full", "db_immutable", "lock_held"])
def test_sqlite_faults_are_recorded_with_their_cause(kind: str, tmp_path: Path,
                                                     inputs: tuple[Path, Path]) -> None:
    (tmp_path / "sqlite").mkdir()
    target = Target("sqlite", f"sqlite:///{tmp_path / 'sqlite' / 'infra.db'}", [kind])
    tally = one_trial(kind, target, tmp_path, inputs)
    assert_told(tally)
    if kind == "db_immutable":  # the database could not take the end: journalled, settled
        assert tally.at_once == 0


@needs_root
@pytest.mark.slow
@pytest.mark.postgresql
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["terminate_load", "terminate_merge", "conn_limit",
                                  "frozen_merge", "out_full", "parent_killed"])
def test_postgresql_faults_are_recorded_with_their_cause(kind: str, tmp_path: Path,
                                                         pg_url: str,
                                                         inputs: tuple[Path, Path]) -> None:
    target = Target("postgresql", pg_url, [kind])
    tally = one_trial(kind, target, tmp_path, inputs)
    assert_told(tally)
    if kind != "parent_killed":
        assert tally.at_once == 1  # the server was there to take the end at once


def test_the_journal_keeps_an_end_and_falls_back_when_the_folder_cannot(
        tmp_path: Path) -> None:
    end = RunEnd("20261204T000000-abcd0123", "job", "FAILED_RUNTIME", 3, "disk full",
                 utc_now().replace(microsecond=0))
    assert write_end(tmp_path / "run", end) == tmp_path / "run" / "end.json"
    assert read_end(tmp_path / "run", end.run_id) == end
    forget_end(tmp_path / "run", end.run_id)
    assert read_end(tmp_path / "run", end.run_id) is None
    blocked = tmp_path / "file"
    blocked.write_text("")  # a run folder that cannot be made: a file in its place
    try:
        assert write_end(blocked / "run", end) == fallback_dir() / f"{end.run_id}.end.json"
        assert read_end(blocked / "run", end.run_id) == end
    finally:
        forget_end(blocked / "run", end.run_id)
    assert read_end(blocked / "run", end.run_id) is None


def test_an_os_error_is_a_sentence_with_what_to_do() -> None:
    full = os_failure(OSError(errno.ENOSPC, "No space left on device"), "writing",
                      folder="/out/runs/x")
    assert str(full) == ("writing in /out/runs/x: no space is left on its device (ENOSPC); "
                         "free space there, or point the job at another disk (output.dir, "
                         "database.url)")
    assert full.exit_code == 3
    immutable = os_failure(PermissionError(errno.EPERM, "Operation not permitted", "/db"),
                           "opening")
    assert "opening /db: the operation is not permitted" in str(immutable)
    assert "chattr -i" in str(immutable)


def test_no_library_traceback_below_debug() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        exc_info = sys.exc_info()
    reset = logging.LogRecord("sqlalchemy.pool.impl.NullPool", logging.ERROR, "", 0,
                              "Exception during reset or similar", None, exc_info)
    other = logging.LogRecord("sqlalchemy.engine", logging.ERROR, "", 0, "failed", None,
                              exc_info)
    assert not QuietLibraries(tracebacks=False).filter(reset)
    assert QuietLibraries(tracebacks=False).filter(other) and other.exc_info is None
    assert QuietLibraries(tracebacks=True).filter(reset) and reset.exc_info is not None


@pytest.mark.postgresql
@pytest.mark.timeout(120)
def test_a_refusal_names_a_holder_whose_process_is_gone(tmp_path: Path, pg_url: str) -> None:
    """A parent killed mid-MERGE: its server session holds the job lock until the server
    abandons the statement; a rerun meanwhile names that run and says its process is gone,
    rather than "already running" as if something ran it."""
    config = shipped_job(tmp_path, pg_url).with_overrides(
        input_path=generate_file(tmp_path / "in.dat", 100, seed=5).path)
    tables = job_tables(config)
    engine = make_engine(pg_url)
    try:
        create_missing_tables(engine, tables)
        gone = subprocess.Popen(["true"])
        gone.wait()  # a pid no process has any more
        holder = "20261204T000000-dead0000"
        with engine.begin() as conn:
            conn.execute(tables.batch_run.insert().values(
                run_id=holder, job_name=config.name, input_path="in.dat", status=RUNNING,
                start_ts=utc_now(), host=socket.gethostname(), pid=gone.pid))
        with job_lock(engine, tables.job_lock, config.name, holder):
            outcome = run_job(config)
    finally:
        engine.dispose()
    assert (outcome.exit_code, outcome.status) == (3, REFUSED), outcome.message
    assert f"The lock is held by run {holder}" in outcome.message
    assert "its process gone" in outcome.message


@pytest.mark.timeout(60)
def test_the_watchdog_stops_a_statement_past_its_bound(tmp_path: Path) -> None:
    """SQLite has no statement timeout of its own: the watchdog's cancel (an interrupt)
    ends a statement that runs past the bound, and says why."""
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    watchdog = StatementWatchdog(0.5, margin_s=0.5)
    watchdog.attach(engine)
    endless = text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                   "SELECT COUNT(*) FROM n")
    started = time.monotonic()
    try:
        with watchdog.running(), engine.connect() as conn:
            with pytest.raises(OperationalError, match="interrupted"):
                conn.execute(endless)
            assert conn.execute(text("SELECT 1")).scalar() == 1  # the connection lives on
    finally:
        engine.dispose()
    assert time.monotonic() - started < 10
    assert watchdog.fired.startswith("the database did not answer WITH RECURSIVE for ")
    assert watchdog.fired.endswith("(database.statement_timeout 0.5 s + 0.5 s): the run "
                                   "cancelled it")


def test_pipeline_runs_records_a_journalled_end(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A run that could not write its end to the database kept it on disk; `pipeline runs`
    (as `report` and the job's next run) records it: the real status and cause."""
    from pipeline.__main__ import main

    url = f"sqlite:///{tmp_path / 'p.db'}"
    config_file = tmp_path / "job.toml"
    config_file.write_text(shipped_config().read_text(encoding="utf-8").replace(
        'dir = "pipeline_work"', f'dir = "{tmp_path / "work"}"'), encoding="utf-8")
    config = shipped_job(tmp_path, url)
    tables = job_tables(config)
    engine = make_engine(url)
    gone = subprocess.Popen(["true"])
    gone.wait()
    run_id = "20261204T000000-0123abcd"
    try:
        create_missing_tables(engine, tables)
        with engine.begin() as conn:
            conn.execute(tables.batch_run.insert().values(
                run_id=run_id, job_name=config.name, input_path="in.dat", status=RUNNING,
                start_ts=utc_now(), host=socket.gethostname(), pid=gone.pid))
        end = RunEnd(run_id, config.name, "FAILED_RUNTIME", 3, "the disk was full",
                     utc_now().replace(microsecond=0))
        assert write_end(config.output_dir / "runs" / run_id, end) is not None
        assert main(["runs", str(config_file), "--db", url]) == 0
        with engine.connect() as conn:
            row = conn.execute(text("SELECT status, exit_code, message FROM batch_run "
                                    "WHERE run_id = :r"), {"r": run_id}).one()
    finally:
        engine.dispose()
    assert (row.status, row.exit_code) == ("FAILED_RUNTIME", 3)
    assert row.message.startswith("the disk was full [recorded by `pipeline runs` from")
    assert "FAILED_RUNTIME" in capsys.readouterr().out
    assert read_end(config.output_dir / "runs" / run_id, run_id) is None  # its work done
