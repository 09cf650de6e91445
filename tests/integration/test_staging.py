"""The checks touch tonight's rows only, and a purge is cheap.

PostgreSQL: staging is list-partitioned by run (a partition per run, a DEFAULT one); the
queries of a run read its partition only, and a purge drops old partitions. SQLite: the
FINAL checks read a range of the LAST_RUN_ID index. Plans are read with EXPLAIN from
the real databases.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, select, text

from pipeline.config import JobConfig, load_config
from pipeline.db.engine import make_engine
from pipeline.db.partitions import run_partition_name
from pipeline.db.repositories import FinalRepository, StagingRepository
from pipeline.db.tables import job_tables
from pipeline.generate import generate_file
from pipeline.identity import Overrides
from pipeline.job import run_job
from pipeline.jobs import shipped_config

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.fixture
def pg_config(tmp_path: Path, pg_url: str) -> JobConfig:
    return load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=pg_url, heartbeat_timeout=10.0)


@pytest.fixture
def engine(job_config: JobConfig) -> Iterator[Engine]:
    eng = create_engine(job_config.database_url)
    yield eng
    eng.dispose()


def partitions(engine: Engine) -> dict[str, int]:
    """{partition: rows} of stg_transactions."""
    with engine.connect() as conn:
        names = conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'stg_transactions'::regclass")).scalars().all()
        return {n: conn.execute(text(f"SELECT count(*) FROM {n}")).scalar_one() for n in names}


@pytest.mark.postgresql
def test_each_run_loads_into_its_own_partition_and_a_purge_drops_it(
        tmp_path: Path, pg_url: str, pg_config: JobConfig) -> None:
    made = generate_file(tmp_path / "in.dat", 2_000, seed=5, reject_rate=0.01)
    config = pg_config.with_overrides(input_path=made.path, keep_staging_runs=1)
    tables = job_tables(config)
    first = run_job(config)
    assert first.exit_code == 0, first.message
    engine = create_engine(pg_url)
    try:
        accepted = first.metrics.total_read - first.metrics.total_errors  # type: ignore[union-attr]
        assert partitions(engine) == {"stg_transactions_default": 0,
                                      run_partition_name(tables.staging, first.run_id): accepted}
        second = run_job(config, overrides=Overrides(rerun=True))
        assert second.exit_code == 0, second.message
        # the first run's partition is gone: dropped, not emptied row by row
        assert partitions(engine) == {"stg_transactions_default": 0,
                                      run_partition_name(tables.staging, second.run_id): accepted}
        with engine.connect() as conn:
            purged = conn.execute(select(tables.batch_run.c.staging_purged).where(
                tables.batch_run.c.run_id == first.run_id)).scalar_one()
        assert purged == "Y"
    finally:
        engine.dispose()


def plan_of(engine: Engine, sql: str, run_id: str) -> str:
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        rows = conn.execute(text(prefix + sql), {"run_id": run_id}).all()
    return "\n".join(str(r[-1]) for r in rows)


def test_the_checks_read_tonights_rows_only(tmp_path: Path, job_config: JobConfig,
                                            engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 1_000, seed=6)
    config = job_config.with_overrides(input_path=made.path, keep_staging_runs=3)
    tables = job_tables(config)
    runs = [run_job(config, overrides=Overrides(rerun=i > 0)) for i in range(2)]
    assert [r.exit_code for r in runs] == [0, 0]
    tonight = runs[-1].run_id

    with engine.connect() as conn:
        staged = StagingRepository(conn, tables, config.key_columns, config.amount)
        final = FinalRepository(conn, tables, config.key_columns, config.amount)
        assert staged.count_and_amount(tonight)[0] == 1_000
        assert final.count_and_amount_for_run(tonight)[0] == 1_000
    final_plan = plan_of(engine, "SELECT count(*), sum(amount) FROM transactions "
                                 "WHERE last_run_id = :run_id", tonight)
    if engine.dialect.name == "sqlite":
        assert "USING INDEX ix_transactions_run (last_run_id=?)" in final_plan, final_plan
        return
    staging_plan = plan_of(engine, "SELECT count(*), sum(amount) FROM stg_transactions "
                                   "WHERE run_id = :run_id", tonight)
    assert run_partition_name(tables.staging, tonight) in staging_plan, staging_plan
    earlier = run_partition_name(tables.staging, runs[0].run_id)
    assert earlier not in staging_plan and "stg_transactions_default" not in staging_plan
    with engine.begin() as conn:  # with no statistics yet a planner may still scan FINAL
        conn.execute(text("ANALYZE transactions"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(text(
            "EXPLAIN SELECT count(*), sum(amount) FROM transactions WHERE last_run_id = "
            ":run_id"), {"run_id": tonight}))
    assert "ix_transactions_run" in plan, plan


@pytest.mark.postgresql
def test_on_sqlite_the_final_check_reads_the_runs_rows_by_their_index_after_analyze(
        tmp_path: Path) -> None:
    """A FINAL filled by one load and ANALYZEd says a run id matches all of its rows: the
    planner would scan the whole table for each night's rows (FINAL 4M + 1M: 0.42 s
    against 0.32 s by the index, and the gap grows with FINAL)."""
    config = load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=f"sqlite:///{tmp_path / 'p.db'}",
        input_path=generate_file(tmp_path / "in.dat", 1_000, seed=6).path)
    outcome = run_job(config)
    assert outcome.exit_code == 0, outcome.message
    engine = make_engine(config.database_url)
    statements: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _k, sql, params, *_: statements.append((sql, params)))
    try:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        with engine.connect() as conn:
            final = FinalRepository(conn, job_tables(config), config.key_columns,
                                    config.amount)
            assert final.count_and_amount_for_run(outcome.run_id, digest=True).rows == 1_000
            sql, params = statements[-1]
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
    finally:
        engine.dispose()
    assert "USING INDEX ix_transactions_run" in str(plan), (plan, sql)


def test_a_staging_table_made_without_partitions_still_works(
        tmp_path: Path, pg_url: str, pg_config: JobConfig) -> None:
    """A staging table an earlier version created (not partitioned): runs share it."""
    tables = job_tables(pg_config)
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            columns = ", ".join(
                f"{c.name} {c.type.compile(dialect=engine.dialect)}" for c in tables.staging.c)
            conn.execute(text(f"CREATE TABLE stg_transactions ({columns})"))
        made = generate_file(tmp_path / "in.dat", 500, seed=7)
        config = pg_config.with_overrides(input_path=made.path, keep_staging_runs=1)
        outcomes = [run_job(config, overrides=Overrides(rerun=i > 0)) for i in range(2)]
        assert [o.exit_code for o in outcomes] == [0, 0], outcomes[-1].message
        with engine.connect() as conn:
            staged = conn.execute(text("SELECT run_id, count(*) FROM stg_transactions "
                                       "GROUP BY run_id")).all()
        assert staged == [(outcomes[1].run_id, 500)]
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_a_lock_on_staging_costs_the_partition_not_the_run(
        tmp_path: Path, pg_url: str, pg_config: JobConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Another session's lock on staging while the run starts: no partition, the rows go
    to the DEFAULT partition once the lock is gone, every figure the same."""
    from sqlalchemy import event

    made = generate_file(tmp_path / "in.dat", 1_000, seed=3)
    config = pg_config.with_overrides(input_path=made.path)
    engine = create_engine(pg_url)
    job_tables(config).metadata.create_all(engine)
    blocker = engine.connect()
    blocker.execute(text("LOCK TABLE stg_transactions IN SHARE MODE"))

    def release(*_args: object) -> None:  # the partition gave up: let the load go on
        if blocker.in_transaction():
            blocker.rollback()

    event.listen(Engine, "handle_error", release)
    try:
        outcome = run_job(config)
    finally:
        event.remove(Engine, "handle_error", release)
        release()
        blocker.close()
    try:
        assert outcome.exit_code == 0, outcome.message
        assert "not created" in caplog.text and "DEFAULT partition" in caplog.text
        assert partitions(engine) == {"stg_transactions_default": 1_000}
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_the_short_partition_wait_gives_the_session_its_own_lock_timeout_back(
        pg_url: str) -> None:
    from pipeline.db.engine import Timeouts, make_engine
    from pipeline.db.partitions import _short_lock_wait

    engine = make_engine(pg_url, Timeouts(lock=7, statement=30))
    try:
        with engine.begin() as conn:
            with _short_lock_wait(conn):
                assert conn.execute(text("SHOW lock_timeout")).scalar() == "2s"
            # the purge's DELETE after the partitions waits as the config says
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "7s"
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_the_merge_probes_finals_primary_key_in_key_order(tmp_path: Path,
                                                          pg_config: JobConfig) -> None:
    """Not a hash join or a merge join over all of FINAL: an index probe per row, in key
    order, whatever FINAL holds; the planner's settings are back once the MERGE is done."""
    from pipeline.db.backends.postgresql import merging
    from pipeline.db.merge import merge_params, merge_statement

    made = generate_file(tmp_path / "in.dat", 3_000, seed=8)
    outcome = run_job(pg_config.with_overrides(input_path=made.path))
    assert outcome.exit_code == 0, outcome.message
    tables = job_tables(pg_config)
    engine = create_engine(pg_config.database_url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("ANALYZE"))
            for deduplicate, byte_order in product((False, True), (False, True)):
                statement = merge_statement(tables.staging, tables.final,
                                            pg_config.key_columns, tables.business_columns,
                                            deduplicate, byte_order=byte_order)
                compiled = statement.compile(dialect=conn.dialect)
                with merging(conn):
                    plan = "\n".join(conn.exec_driver_sql(
                        f"EXPLAIN {compiled}", merge_params(outcome.run_id, datetime.now(UTC)))
                        .scalars())
                assert "Hash" not in plan and "Merge Join" not in plan \
                    and "Merge Left Join" not in plan, plan
                assert "Index Scan using pk_transactions on transactions" in plan, plan
                sort_key = next(line for line in plan.splitlines() if "Sort Key:" in line)
                assert "stg_transactions.txn_id" in sort_key, plan  # key order
                assert ('COLLATE "C"' in sort_key) is byte_order, plan
            assert conn.execute(text("SELECT current_setting('enable_hashjoin'), "
                                     "current_setting('enable_mergejoin')")).one() == \
                ("on", "on")
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_the_merge_sorts_keys_byte_by_byte_only_where_finals_key_is_in_byte_order(
        pg_url: str) -> None:
    """COLLATE "C" gives the MERGE's source FINAL's key order only where FINAL's key
    collation orders by bytes (C, POSIX, glibc's C.UTF-8); elsewhere (a linguistic
    collation, ICU) the source keeps the key's own collation."""
    from sqlalchemy import Column, Integer, MetaData, String, Table

    from pipeline.db.backends.postgresql import key_sorts_as_bytes

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn, conn.begin():
            available = set(conn.execute(text("SELECT collname FROM pg_collation")).scalars())
            # the database's own collation, asked how it sorts rather than by its name:
            # by bytes, "B" (0x42) comes before "a" (0x61); a linguistic order puts "a" first
            default_in_byte_order = conn.execute(text("SELECT 'B' < 'a'")).scalar_one()
            expected = {"C": True, "POSIX": True, "C.utf8": True, "und-x-icu": False,
                        "en_US.utf8": False, "de_DE.utf8": False}
            meta = MetaData()
            for i, (collation, sorts_as_bytes) in enumerate(expected.items()):
                if collation not in available:
                    continue
                table = Table(f"keyed_{i}", meta, Column("k", String(10, collation=collation),
                                                         primary_key=True))
                table.create(conn)
                assert key_sorts_as_bytes(conn, table, ("k",)) is sorts_as_bytes, collation
            plain = Table("keyed_default", meta, Column("k", String(10), primary_key=True),
                          Column("n", Integer, primary_key=True))
            plain.create(conn)
            assert key_sorts_as_bytes(conn, plain, ("k", "n")) is default_in_byte_order
            numbered = Table("keyed_number", meta, Column("n", Integer, primary_key=True))
            numbered.create(conn)  # no text to compare: byte order changes nothing
            assert key_sorts_as_bytes(conn, numbered, ("n",)) is True
            conn.rollback()
    finally:
        engine.dispose()
