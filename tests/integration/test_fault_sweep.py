"""Issue 10: the audit never disagrees with FINAL, with the exit code or with the file.

SIGTERM swept over the statements and the commit of the post-load phase; the input changed
in place and replaced; the SQLite lock through a symlink and a hard link; the PostgreSQL
lock session terminated and idle-timed-out; audit table names refused; a resource tracker
that cannot start. Each run is checked from the database alone
(``benchmarks.faults.disagreements``). The long randomized sweep: ``python -m
benchmarks.faults --trials 200``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from benchmarks.faults import _launch, disagreements
from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError, InputChanged
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from pipeline.source import read_lines, reading_range

pytestmark = pytest.mark.slow
RECORDS = 2_000
RECORD = 101


@pytest.fixture
def small_input(tmp_path: Path) -> Path:
    return generate_file(tmp_path / "in.dat", RECORDS, seed=10).path


@pytest.fixture
def engine(job_config: JobConfig) -> Any:
    eng = create_engine(job_config.database_url, poolclass=NullPool)
    yield eng
    eng.dispose()


def child_trial(tmp_path: Path, config: JobConfig, source: Path, name: str,
                **spec: Any) -> tuple[int, int, str]:
    """One run in a process of its own, SIGTERM-ing itself where ``spec`` says."""
    work = tmp_path / name
    full = {"work": str(work), "url": config.database_url, "input": str(source), **spec}
    proc = _launch(full, f"sweep-{os.getpid()}-{name}")
    code = proc.wait(timeout=120)
    return code, proc.pid, (work / "err").read_text()


def final_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM transactions")).scalar_one())


def test_sigterm_swept_over_the_post_load_phase(tmp_path: Path, job_config: JobConfig,
                                                 small_input: Path, engine: Engine) -> None:
    """Before each statement after the load (checks, MERGE, checks, audit, status), a few
    milliseconds into it, and at the commit: exit code, audit and FINAL agree."""
    calibration = child_trial(tmp_path, job_config, small_input, "calibrate", kind="calibrate")
    assert calibration[0] == 0, calibration[2]
    counts = json.loads((tmp_path / "calibrate" / "counts.json").read_text())
    points = [{"kind": "sigterm_stmt", "at": k, "delay": 0.0}
              for k in range(1, counts["stmt"] + 2)]
    points += [{"kind": "sigterm_stmt", "at": 2, "delay": 0.005},  # during the MERGE
               {"kind": "sigterm_commit", "at": 1}]
    seen = set()
    for i, point in enumerate(points):
        code, pid, err = child_trial(tmp_path, job_config, small_input, f"t{i}", **point)
        assert "Traceback" not in err, err
        assert disagreements(engine, None, code, pid=pid) == [], (point, code, err)
        seen.add(code)
    # the sweep reached both sides of the commit: interrupted runs and committed ones
    assert seen == {0, 3}, seen


def test_input_rewritten_in_place_after_planning_fails_the_run(
        tmp_path: Path, job_config: JobConfig, small_input: Path, engine: Engine) -> None:
    class Mutator(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("planned input"):
                with open(small_input, "r+b") as f:  # one key rewritten, same length
                    os.pwrite(f.fileno(), b"ZZMUTATED0000001", RECORD * 5 + 1)

    handler = Mutator()
    logging.getLogger("pipeline.job").addHandler(handler)
    level = logging.getLogger("pipeline.job").level
    logging.getLogger("pipeline.job").setLevel(logging.INFO)
    try:
        outcome = run_job(job_config.with_overrides(input_path=small_input))
    finally:
        logging.getLogger("pipeline.job").removeHandler(handler)
        logging.getLogger("pipeline.job").setLevel(level)
    assert outcome.exit_code == 3, outcome.message
    assert "input changed while being read" in outcome.message
    assert final_rows(engine) == 0  # the run was the database's first: FINAL is empty
    assert disagreements(engine, outcome.run_id, outcome.exit_code) == []


@pytest.mark.parametrize("how", ["pwrite", "rename"])
def test_a_range_read_after_a_change_is_refused(tmp_path: Path, small_input: Path,
                                                how: str) -> None:
    config = load_config(shipped_config())
    plan = config.input_format.plan(small_input, 2)
    if how == "pwrite":
        with open(small_input, "r+b") as f:
            os.pwrite(f.fileno(), b"ZZMUTATED0000001", RECORD * (RECORDS - 3) + 1)
    else:
        replacement = tmp_path / "other.dat"
        data = bytearray(small_input.read_bytes())
        data[RECORD * 5 + 1:RECORD * 5 + 17] = b"ZZMUTATED0000001"
        replacement.write_bytes(bytes(data))
        os.rename(replacement, small_input)
    last = plan.ranges[-1]
    with pytest.raises(InputChanged, match="input changed while being read"):
        with reading_range(plan, last) as reading:
            assert reading is not None
            for _ in read_lines(reading.path, last, 500, 100, reading.digest):
                pass


def test_an_unchanged_range_reads_and_verifies(small_input: Path) -> None:
    config = load_config(shipped_config())
    plan = config.input_format.plan(small_input, 3)
    lines = 0
    for rng in plan.ranges:
        with reading_range(plan, rng) as reading:
            assert reading is not None
            for chunk in read_lines(reading.path, rng, 300, 100, reading.digest):
                lines += chunk.data.count(b"\n")  # type: ignore[union-attr]
    assert lines == RECORDS


@pytest.mark.parametrize("spelling", ["symlink", "hardlink"])
def test_another_spelling_of_the_sqlite_database_cannot_bypass_the_lock(
        spelling: str, tmp_path: Path, small_input: Path) -> None:
    database = tmp_path / "db" / "pipeline.db"
    database.parent.mkdir()
    config = load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=f"sqlite:///{database}",
        input_path=small_input, heartbeat_timeout=10.0)
    other = tmp_path / "other" / "alias.db"
    other.parent.mkdir()
    second: dict[str, Any] = {}

    def run_the_second(_engine: Engine, _run_id: str) -> None:
        if spelling == "symlink":
            other.symlink_to(database)
        else:
            os.link(database, other)
        second["done"] = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", "--input", str(small_input), "--db",
             f"sqlite:///{other}"], capture_output=True, text=True, cwd=tmp_path, timeout=120)

    first = run_job(config, after_load=run_the_second)
    refused = second["done"]
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "already running" in refused.stdout + refused.stderr
    assert first.exit_code == 0, first.message
    assert not list(database.parent.glob("*.lock"))  # no lock file beside the database
    eng = create_engine(f"sqlite:///{database}", poolclass=NullPool)
    try:
        with eng.connect() as conn:
            runs = sorted(tuple(r) for r in conn.execute(text(
                "SELECT status, exit_code FROM batch_run")))
        assert runs == [("REFUSED", 3), ("SUCCEEDED", 0)]
        assert disagreements(eng, first.run_id, 0) == []
    finally:
        eng.dispose()


def _lock_sessions(conn: Any) -> list[int]:
    return [r.pid for r in conn.execute(text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
        "pid <> pg_backend_pid() AND query ILIKE '%job_lock%' AND "
        "state LIKE 'idle in transaction%'"))]


@pytest.mark.postgresql
def test_a_run_whose_lock_session_was_terminated_never_merges(
        tmp_path: Path, pg_url: str, small_input: Path) -> None:
    config = load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=pg_url, input_path=small_input,
        heartbeat_timeout=10.0)
    second: dict[str, Any] = {}
    eng = create_engine(pg_url, poolclass=NullPool)

    def lose_the_lock(_engine: Engine, _run_id: str) -> None:
        with eng.connect() as conn:
            sessions = _lock_sessions(conn)
            assert len(sessions) == 1, sessions
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": sessions[0]})
        # a second run now takes the free lock and completes: it must not mark this live
        # run ABENDED, and this run must not touch FINAL nor its audit afterwards
        second["done"] = subprocess.run(
            [sys.executable, "-m", "pipeline", "run", "--input", str(small_input), "--db",
             pg_url], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        with eng.connect() as conn:
            second["first_status"] = conn.execute(text(
                "SELECT status FROM batch_run WHERE run_id = :r"), {"r": _run_id}).scalar_one()

    try:
        first = run_job(config, after_load=lose_the_lock)
        done = second["done"]
        assert done.returncode == 0, done.stdout + done.stderr
        assert second["first_status"] == "RUNNING"  # alive: never marked ABENDED
        assert first.exit_code == 3, first.message
        assert "lock" in first.message and "FINAL untouched" in first.message
        with eng.connect() as conn:
            runs = conn.execute(text("SELECT run_id, status, exit_code FROM batch_run "
                                     "ORDER BY start_ts")).all()
            holder = conn.execute(text("SELECT run_id FROM job_lock")).scalar_one()
        assert [(r.status, r.exit_code) for r in runs] == [("FAILED_RUNTIME", 3),
                                                            ("SUCCEEDED", 0)]
        assert holder == runs[1].run_id  # the fencing token names the run that merged
        assert disagreements(eng, first.run_id, 3) == []
        assert disagreements(eng, runs[1].run_id, 0) == []
    finally:
        eng.dispose()


@pytest.mark.postgresql
def test_a_run_whose_lock_session_idled_out_never_merges(
        tmp_path: Path, pg_url: str, small_input: Path) -> None:
    url = f"{pg_url}?options=-c%20idle_in_transaction_session_timeout%3D500"
    config = load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=url, input_path=small_input,
        heartbeat_timeout=10.0)
    eng = create_engine(pg_url, poolclass=NullPool)

    def wait_for_the_timeout(_engine: Engine, _run_id: str) -> None:
        deadline = time.monotonic() + 20
        with eng.connect() as conn:
            while _lock_sessions(conn):
                assert time.monotonic() < deadline, "the idle timeout never fired"
                conn.rollback()
                time.sleep(0.05)  # polling the server's state, with a deadline

    try:
        outcome = run_job(config, after_load=wait_for_the_timeout)
        assert outcome.exit_code == 3, outcome.message
        assert final_rows(eng) == 0
        assert disagreements(eng, outcome.run_id, 3) == []
    finally:
        eng.dispose()


@pytest.mark.parametrize("table", ["batch_run", "RECON_AUDIT", "Recon_Worker_Audit",
                                   "job_lock"])
@pytest.mark.parametrize("role", ["final", "staging"])
def test_an_audit_table_as_final_or_staging_is_a_config_error(
        tmp_path: Path, table: str, role: str) -> None:
    text_ = shipped_config().read_text().replace(
        f'{role} = "{"transactions" if role == "final" else "stg_transactions"}"',
        f'{role} = "{table}"', 1)
    config = tmp_path / "job.toml"
    config.write_text(text_)
    # lower case: named as an audit table; any other case is no plain identifier at all
    reason = "audit tables" if table.islower() else "not a plain identifier"
    with pytest.raises(ConfigError, match=f"tables.{role}: .*{reason}") as refused:
        load_config(config)
    assert refused.value.exit_code == 2


def test_a_resource_tracker_that_cannot_start_fails_the_run_cleanly(
        tmp_path: Path, small_input: Path) -> None:
    database = tmp_path / "pipeline.db"
    script = (
        "import sys, multiprocess\n"
        "from multiprocess import resource_tracker\n"
        "multiprocess.set_executable('/nonexistent/python')  # the tracker cannot start\n"
        # multiprocess never reads the exec's error pipe: the failure shows only when the
        # dead tracker's pipe refuses a write, which under load can come after the run's
        # registration; a closed pipe at every write is that failure without the race
        "def closed(*_args): raise BrokenPipeError(32, 'Broken pipe')\n"
        "resource_tracker.ResourceTracker._send = closed\n"
        "from pipeline.__main__ import main\n"
        f"sys.exit(main(['run', '--input', {str(small_input)!r}, '--db', "
        f"'sqlite:///{database}']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    pid_segments = list(Path("/dev/shm").glob("pipeline_*"))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    eng = create_engine(f"sqlite:///{database}", poolclass=NullPool)
    try:
        with eng.connect() as conn:
            row = conn.execute(text("SELECT run_id, status, exit_code, pid FROM batch_run")
                               ).one()
        assert (row.status, row.exit_code) == ("FAILED_RUNTIME", 3)
        assert not [p for p in pid_segments if p.name.startswith(f"pipeline_{row.pid}_")]
        assert disagreements(eng, row.run_id, 3) == []
    finally:
        eng.dispose()
