"""Staging's digest sum, summed beside the MERGE (pipeline.staging_digest), on the real
databases: the same sum as the pass in the checks, and on SQLite, whose readers and
writer share the file by locks, a read lock held from the start that no writer waits on
for longer than the pass, nor fails on."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from pipeline.config import JobConfig
from pipeline.db.engine import make_engine
from pipeline.db.repositories import StagingRepository
from pipeline.db.tables import job_tables
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.reconcile import SqlStore
from pipeline.staging_digest import StagingDigest
from tests.conftest import shipped_job


@dataclass(frozen=True)
class GatedStore(SqlStore):
    """The job's store, whose pass beside waits for ``go`` once it holds its view."""

    go: threading.Event = field(default_factory=threading.Event)

    def staging(self, conn: Connection) -> StagingRepository:
        if threading.current_thread().name == "staging-digest":
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
            expected = store.staging(conn).digest_total(run_id)
        store.go.set()
        with StagingDigest(store, run_id) as beside:
            assert beside.result() == expected
        assert expected[0] == 3_000
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
        with StagingDigest(store, run_id) as beside:
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
            assert beside.result()[0] == 3_000
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
