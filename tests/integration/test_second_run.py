"""Two runs of one job: the second is refused at once, even while the first is inside its
MERGE transaction (issue 19).

SQLite write-locks the whole database for the first run's MERGE: a second run that wrote
its BATCH_RUN row before asking for the job's lock waited on that lock (then ran after the
first, or ended FAILED_RUNTIME "database is locked" with lock_timeout). It now asks for the
job's lock before it touches the database: REFUSED, exit 3, promptly, naming the run
holding the lock; its BATCH_RUN row is written only if the database takes it without
waiting (PostgreSQL does; SQLite, write-locked, does not, and the message says so).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from pipeline.config import JobConfig
from pipeline.generate import generate_file
from pipeline.job import run_job
from tests.conftest import final_rows, run_cli
from tests.reference import expected_from_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# the shipped job's default database.lock_timeout: a second run that waited on the first
# one's database lock would take at least this long
LOCK_TIMEOUT_S = 60


def is_the_merge(statement: str) -> bool:
    """The MERGE statement as each database gets it (pipeline.db.merge)."""
    head = statement.lstrip().upper()
    return head.startswith("MERGE INTO TRANSACTIONS") or head.startswith(
        "INSERT INTO TRANSACTIONS")


def test_a_second_run_is_refused_at_once_while_the_first_is_inside_its_merge(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    first_input = generate_file(tmp_path / "first.dat", 2_000, seed=31).path
    second_input = generate_file(tmp_path / "second.dat", 1_000, seed=32).path
    config = job_config.with_overrides(input_path=first_input, heartbeat_timeout=120.0)
    second: dict[str, Any] = {}

    def inside_the_merge(_engine: Engine, run_id: str) -> None:
        def after(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if second or not is_the_merge(statement):
                return
            # the first run's MERGE has run, its transaction is open (SQLite: the database
            # is write-locked) until this returns: the second run starts now
            started = time.monotonic()
            second["done"] = run_cli(tmp_path, "run", "--input", str(second_input), "--db",
                                     config.database_url, "--no-progress",
                                     timeout=LOCK_TIMEOUT_S * 3)
            second["seconds"] = time.monotonic() - started
            second["first"] = run_id

        event.listen(_engine, "after_cursor_execute", after)

    first = run_job(config, after_load=inside_the_merge)

    refused = second["done"]
    said = refused.stdout + refused.stderr
    assert refused.returncode == 3, said
    assert "REFUSED (exit 3)" in refused.stdout, said
    assert "already running" in said
    assert f"held by run {second['first']}" in said  # names the run holding the lock
    assert second["seconds"] < LOCK_TIMEOUT_S / 2, said  # never waited on the database
    assert first.exit_code == 0, first.message
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT run_id, status, exit_code, message FROM batch_run "
                                 "ORDER BY start_ts")).all()
    assert runs[0][:3] == (first.run_id, "SUCCEEDED", 0)
    if config.database_url.startswith("sqlite"):
        # write-locked by the first run's MERGE: the refusal is not waited for
        assert len(runs) == 1, runs
        assert "not recorded in BATCH_RUN" in said
    else:
        assert [r.status for r in runs[1:]] == ["REFUSED"], runs
        assert runs[1].exit_code == 3 and second["first"] in runs[1].message
    assert set(final_rows(engine, config)) == set(expected_from_file(first_input).final)


def test_a_refused_run_names_the_holder_and_is_recorded_when_the_database_is_free(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    """Between the first run's transactions (here: right after its load) the database
    takes the second run's REFUSED row without waiting, on SQLite too."""
    first_input = generate_file(tmp_path / "first.dat", 2_000, seed=33).path
    config = job_config.with_overrides(input_path=first_input, heartbeat_timeout=120.0)
    second: dict[str, Any] = {}

    def after_load(_engine: Engine, run_id: str) -> None:
        second["done"] = run_cli(tmp_path, "run", "--input", str(first_input), "--db",
                                 config.database_url, "--no-progress", timeout=180)
        second["first"] = run_id

    first = run_job(config, after_load=after_load)
    refused = second["done"]
    said = refused.stdout + refused.stderr
    assert refused.returncode == 3, said
    assert f"held by run {second['first']}" in said
    assert "not recorded" not in said
    assert first.exit_code == 0, first.message
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, exit_code, message FROM batch_run WHERE "
                                 "run_id <> :r"), {"r": first.run_id}).all()
    assert [(r.status, r.exit_code) for r in rows] == [("REFUSED", 3)]
    assert second["first"] in rows[0].message
