"""Staging's totals and digest sum, summed beside the MERGE (pipeline.staging_totals), on
the real databases: the same figures as the pass in the checks, and on SQLite, whose readers and
writer share the file by locks, a read lock held from the start that no writer waits on
for longer than the pass, nor fails on."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from pipeline.config import JobConfig
from pipeline.db.engine import make_engine
from pipeline.db.repositories import StagingRepository
from pipeline.db.tables import job_tables
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.reconcile import SqlStore
from pipeline.staging_totals import StagingTotals
from recon import checks
from tests.conftest import final_rows, seed_final, shipped_job


@dataclass(frozen=True)
class GatedStore(SqlStore):
    """The job's store, whose pass beside waits for ``go`` once it holds its view."""

    go: threading.Event = field(default_factory=threading.Event)

    def staging(self, conn: Connection) -> StagingRepository:
        if threading.current_thread().name == "staging-totals":
            assert self.go.wait(timeout=30)
        return super().staging(conn)


def _loaded(config: JobConfig, tmp_path: Path) -> tuple[GatedStore, str]:
    path = tmp_path / "night.dat"
    generate_file(path, 3_000, seed=11)
    outcome = run_job(config.with_overrides(input_path=path))
    assert outcome.exit_code == 0, outcome.message
    engine = make_engine(config.database_url)
    store = GatedStore(engine, job_tables(config), config.key_columns, config.amount, None)
    return store, outcome.run_id


def test_the_sum_beside_is_the_sum_in_the_checks(job_config: JobConfig,
                                                 tmp_path: Path) -> None:
    store, run_id = _loaded(job_config, tmp_path)
    try:
        with store.connect() as conn:
            expected = store.staging(conn).count_and_amount(run_id, digest=True)
        store.go.set()
        with StagingTotals(store, run_id) as beside:
            assert beside.result() == expected
        assert expected.rows == 3_000 and expected.digest is not None
    finally:
        store.engine.dispose()


def test_on_sqlite_a_writer_beside_the_pass_neither_fails_nor_shuts_it_out(
        tmp_path: Path, job_config: JobConfig) -> None:
    if not job_config.database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's readers hold no lock (MVCC)")
    store, run_id = _loaded(job_config, tmp_path)
    database = str(store.engine.url.database)
    writer = sqlite3.connect(database, timeout=0)  # a lock timeout shorter than the pass
    writer.execute("CREATE TABLE bulk (n INTEGER, filler TEXT)")
    writer.commit()
    other: Any = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        with StagingTotals(store, run_id) as beside:
            # the pass holds SQLite's read lock before the block starts: no writer can
            # take the file from it
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN EXCLUSIVE")
            # a writer whose changes overflow its cache must write pages to the file,
            # which the read lock forbids: past its lock timeout (none here: at once) it
            # keeps them in its cache, and goes on without an error
            writer.execute("PRAGMA cache_size=10")
            writer.executemany("INSERT INTO bulk VALUES (?, ?)",
                               ((n, "x" * 200) for n in range(20_000)))
            store.go.set()
            assert beside.result().rows == 3_000
        writer.commit()  # the pass is over: the commit takes the file
        assert writer.execute("SELECT count(*) FROM bulk").fetchone() == (20_000,)
    finally:
        writer.close()
        other.close()
        store.engine.dispose()


def test_on_postgresql_the_pass_keeps_to_one_process_for_its_transaction_only(
        pg_url: str, tmp_path: Path) -> None:
    """Planned with parallel workers, the pass would take the cores the MERGE runs on;
    the setting ends with the pass's transaction."""
    config = shipped_job(tmp_path, pg_url)
    engine = make_engine(pg_url)
    store = SqlStore(engine, job_tables(config), config.key_columns, config.amount, None)
    show = "SELECT current_setting('max_parallel_workers_per_gather')"
    try:
        with store.reading() as conn:
            assert conn.exec_driver_sql(show).scalar() == "0"
            conn.rollback()
            assert conn.exec_driver_sql(show).scalar() == "2"  # the server's default
    finally:
        engine.dispose()


def test_staging_that_lost_a_row_and_a_cent_fails_the_night_on_staging_s_own_figures(
        job_config: JobConfig, tmp_path: Path) -> None:
    """The checks before the MERGE are decided on the processors' figures while staging's
    are summed beside it: staging's differ here, so the MERGE rolls back and the checks are
    decided again on staging's. The audit holds staging's figures; FINAL is untouched."""
    path = tmp_path / "night.dat"
    generate_file(path, 3_000, seed=11)
    config = job_config.with_overrides(input_path=path)
    engine = make_engine(config.database_url)
    try:
        before = seed_final(engine, config, path, 500)

        def lose(eng: Engine, run_id: str) -> None:
            with eng.begin() as conn:
                conn.execute(text("DELETE FROM stg_transactions WHERE run_id = :r "
                                  "AND source_line = 10"), {"r": run_id})
                conn.execute(text("UPDATE stg_transactions SET amount = amount + 1 "
                                  "WHERE run_id = :r AND source_line = 20"), {"r": run_id})

        outcome = run_job(config, after_load=lose)
        assert outcome.exit_code == 1, outcome.message
        assert final_rows(engine, config) == before
        with engine.connect() as conn:
            audit = {name: (expected, actual, passed) for name, expected, actual, passed in
                     conn.execute(text("SELECT check_name, expected_cnt, actual_cnt, passed "
                                       "FROM recon_audit WHERE run_id = :r"),
                                  {"r": outcome.run_id})}
        assert audit[checks.PROCESSED_TO_STAGING] == (3_000, 2_999, "N")
        assert audit[checks.WRITTEN_TO_STAGING] == (3_000, 2_999, "N")
        assert audit[checks.PROCESSED_TO_STAGING_AMOUNT][2] == "N"
        assert audit[checks.PROCESSED_TO_STAGING_COLUMNS][2] == "N"
        assert audit[checks.STAGING_TO_FINAL][2] == "N"  # not evaluated: MERGE skipped
    finally:
        engine.dispose()
