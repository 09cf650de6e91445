"""The loaders' two halves: what a processor encodes is what the writer binds."""

from __future__ import annotations

import datetime as dt
import pickle
import sqlite3
from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy.dialects import oracle, sqlite

from pipeline.config import JobConfig, load_config
from pipeline.db.bulk import StagingBatch, loader_for, unmemoized
from pipeline.db.digests import row_digests
from pipeline.db.tables import JobTables, job_tables
from pipeline.jobs import shipped_config


@pytest.fixture(scope="module")
def job() -> tuple[JobConfig, JobTables]:
    config = load_config(shipped_config())
    return config, job_tables(config)


def batch() -> StagingBatch:
    """Three rows: a blank description, a code page's letters, an amount past 2**53."""
    return StagingBatch("run-1", 4, np.array([2, 3, 9], dtype=np.int64), {
        "txn_id": np.array(["T1", "T2", "T3"]),
        "account_id": np.array(["A", "B", "C"]),
        "txn_date": np.array(["2026-11-24", "2026-11-25", "2026-11-26"]),
        "amount": np.array([-5, 9_007_199_254_740_993, 0], dtype=np.int64),
        "currency": np.array(["EUR", "EUR", "USD"]),
        "description": np.array(["", "CAFÉ crème", "x"]),
    })


def test_the_writer_binds_exactly_the_rows_the_processor_encoded(
        job: tuple[JobConfig, JobTables]) -> None:
    config, tables = job
    loader = loader_for(tables, config.detail, config.amount, sqlite.dialect(), 10_000)
    rows = loader.decode(loader.encode(batch()))
    assert rows == [
        ("run-1", 2, 4, "T1", "A", "2026-11-24", -5, "EUR", None),  # blank text is NULL
        ("run-1", 3, 4, "T2", "B", "2026-11-25", 9_007_199_254_740_993, "EUR", "CAFÉ crème"),
        ("run-1", 9, 4, "T3", "C", "2026-11-26", 0, "USD", "x"),
    ]
    assert all(type(v) in (str, int, type(None)) for row in rows for v in row)

    connection = sqlite3.connect(":memory:")
    connection.execute(f"CREATE TABLE stg_transactions ({', '.join(tables.staging.c.keys())})")
    assert loader.load(connection, loader.encode(batch())).loaded == 3
    assert connection.execute("SELECT sum(amount), count(description) "
                              "FROM stg_transactions").fetchone() == (9_007_199_254_740_988, 2)


def test_sqlite_writes_a_batchs_run_and_worker_ids_into_its_statement_once(
        job: tuple[JobConfig, JobTables]) -> None:
    """They are the same in every row of a batch: sent once, never bound to each row;
    a quote in a run id stays a value, and each batch keeps its own."""
    config, tables = job
    loader = loader_for(tables, config.detail, config.amount, sqlite.dialect(), 10_000)
    run_id = "r'1); DROP TABLE stg_transactions; --"
    batches = [StagingBatch(run_id, worker, b.lines, b.columns)
               for worker, b in ((4, batch()), (7, batch()))]
    payload = loader.encode(batches[0])
    assert payload.count(run_id.encode()) == 1
    connection = sqlite3.connect(":memory:")
    connection.execute(f"CREATE TABLE stg_transactions ({', '.join(tables.staging.c.keys())})")
    for each in batches:
        assert loader.load(connection, loader.encode(each)).loaded == 3
    assert connection.execute("SELECT run_id, worker_id, count(*) FROM stg_transactions "
                              "GROUP BY 1, 2 ORDER BY 2").fetchall() == [(run_id, 4, 3),
                                                                         (run_id, 7, 3)]
    assert loader.decode(payload) == loader.rows(batches[0])


@pytest.mark.parametrize("limit", [9, 20, 250_000])
def test_sqlite_inserts_many_rows_a_statement_within_its_parameter_limit(
        job: tuple[JobConfig, JobTables], limit: int) -> None:
    """Every row lands once, in order, whatever SQLite's limit on a statement's parameters
    (9: one row a statement; 20: two, and a last statement of one row; the default)."""
    config, tables = job
    loader = loader_for(tables, config.detail, config.amount, sqlite.dialect(), 10_000)
    n = 1_001
    many = StagingBatch("run-1", 4, np.arange(2, n + 2, dtype=np.int64), {
        "txn_id": np.array([f"T{i}" for i in range(n)]),
        "account_id": np.array(["A"] * n),
        "txn_date": np.array(["2026-11-24"] * n),
        "amount": np.arange(n, dtype=np.int64) - 500,
        "currency": np.array(["EUR"] * n),
        "description": np.array(["", "x"] * (n // 2) + ["y"]),
    })
    connection = sqlite3.connect(":memory:")
    connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    connection.execute(f"CREATE TABLE stg_transactions ({', '.join(tables.staging.c.keys())})")
    assert loader.load(connection, loader.encode(many)).loaded == n
    stored = connection.execute("SELECT * FROM stg_transactions ORDER BY rowid").fetchall()
    assert stored == loader.rows(many)

def test_the_digests_are_those_of_the_rows_the_writer_binds(
        job: tuple[JobConfig, JobTables]) -> None:
    """encode_digested digests the values it sends: each row's, and its stored values'."""
    config, tables = job
    loader = loader_for(tables, config.detail, config.amount, sqlite.dialect(), 10_000)
    sent = loader.encode_digested(batch())
    rows = loader.decode(sent.payload)
    assert sent.row_digests.tolist() == row_digests(rows).tolist()
    assert sent.value_digests.tolist() == row_digests([row[3:] for row in rows]).tolist()
    assert loader.decode(loader.encode(batch())) == rows


def test_unmemoized_pickles_shared_values_in_full() -> None:
    """No memo: a value held twice (its column, its row) is written twice, and read back
    equal; a list of rows, a flat list, Decimals and dates alike."""
    shared = "EUR"
    values = [shared, shared, None, -(2**70), ("x", shared), Decimal("1.10"),
              dt.date(2026, 12, 6)]
    assert pickle.loads(unmemoized(values)) == values
    assert len(unmemoized([shared] * 2)) > len(pickle.dumps([shared] * 2, 5))


def test_the_oracle_loader_carries_decimals_and_dates(job: tuple[JobConfig, JobTables]) -> None:
    config, tables = job
    loader = loader_for(tables, config.detail, config.amount, oracle.dialect(), 10_000)
    rows = loader.decode(loader.encode(batch()))
    assert rows[1][5:8] == (dt.date(2026, 11, 25), Decimal("90071992547409.93"), "EUR")
    assert rows[0][-1] is None and rows[1][-1] == "CAFÉ crème"
