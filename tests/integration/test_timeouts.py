"""A lock held by someone else ends the run with exit 3 and a clear sentence, never a hang.

Another connection of the test takes a lock on the database right after the load (the
job's ``after_load`` hook), so the parent's MERGE must wait for it; the lock is released
when the job's driver reports its error (a SQLAlchemy ``handle_error`` event), so the
run's audit can still be written and the test never waits on a clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, func, select, text

from pipeline.config import JobConfig
from pipeline.db.engine import Timeouts, make_engine
from pipeline.db.tables import job_tables
from pipeline.errors import ConfigError
from pipeline.generate import generate_file
from pipeline.job import run_job
from recon.values import FAILED_RUNTIME

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.fixture
def release_on_error() -> Iterator[list[Callable[[], None]]]:
    """Callbacks run when any engine of this process reports a driver error."""
    releases: list[Callable[[], None]] = []

    def on_error(_context: Any) -> None:
        while releases:
            releases.pop()()

    event.listen(Engine, "handle_error", on_error)
    yield releases
    event.remove(Engine, "handle_error", on_error)
    on_error(None)


def hold_lock(config: JobConfig, releases: list[Callable[[], None]]) -> Callable[..., None]:
    """An after_load hook: another session takes a lock the MERGE into FINAL needs."""
    final = config.final_table

    def hold(_engine: Engine, _run_id: str) -> None:
        if config.database_url.startswith("sqlite"):
            holder = sqlite3.connect(config.database_url.removeprefix("sqlite:///"),
                                     isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # the write lock: a reader may still read
        else:
            url = config.database_url.replace("postgresql+psycopg://", "postgresql://")
            holder = psycopg.connect(url)  # type: ignore[assignment]
            holder.execute(f"LOCK TABLE {final} IN EXCLUSIVE MODE")
        releases.append(holder.close)
        releases.append(holder.rollback)  # popped first

    return hold


def test_a_lock_held_elsewhere_ends_the_run_with_exit_3(
        tmp_path: Path, job_config: JobConfig,
        release_on_error: list[Callable[[], None]]) -> None:
    made = generate_file(tmp_path / "in.dat", 5_000, seed=2)
    config = job_config.with_overrides(input_path=made.path, processors=1, batch_size=1_000,
                                       lock_timeout=0.5)
    outcome = run_job(config, after_load=hold_lock(config, release_on_error))

    assert outcome.exit_code == 3, outcome.message
    assert outcome.status == FAILED_RUNTIME
    assert "not released in time (database.lock_timeout)" in outcome.message
    assert "merging into the final table" in outcome.message
    tables = job_tables(config)
    engine = create_engine(config.database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(tables.final)).scalar() == 0
            row = conn.execute(select(tables.batch_run).where(
                tables.batch_run.c.run_id == outcome.run_id)).one()
        assert row.status == FAILED_RUNTIME and row.exit_code == 3
        with engine.connect() as conn:
            checks = conn.execute(select(tables.recon_audit.c.check_name,
                                         tables.recon_audit.c.passed).where(
                tables.recon_audit.c.run_id == outcome.run_id)).all()
        # the checks that passed before the MERGE failed are kept, and the way to finish
        assert len(checks) >= 7 and all(c.passed == "Y" for c in checks), checks
        assert f"`pipeline run --resume {outcome.run_id}` finishes it" in outcome.message
    finally:
        engine.dispose()


def test_postgresql_sessions_carry_both_bounds(pg_url: str) -> None:
    engine = make_engine(pg_url, Timeouts(lock=1.5, statement=30))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "1500ms"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "30s"
    finally:
        engine.dispose()


def test_timeouts_are_checked(job_config: JobConfig) -> None:
    assert (job_config.lock_timeout, job_config.statement_timeout) == (60.0, 21600.0)
    with pytest.raises(ConfigError, match="database.lock_timeout"):
        job_config.with_overrides(lock_timeout=-1.0)
    with pytest.raises(ConfigError, match="database.statement_timeout"):
        job_config.with_overrides(statement_timeout=float("inf"))
