"""Fixtures shared by the suite: real databases, real input files, no mocks.

tests/unit/ runs in seconds with no database server and no worker process (the check
rules on figures, the input formats on bytes, the reconciler against an in-memory store,
tests/unit/fake_store.py); tests/integration/ runs the job as it runs: real SQLite files,
a real PostgreSQL server, real worker processes, the command line.

Every database test takes the ``db_url`` fixture, parametrized over the backends:
a fresh SQLite file, and a fresh database on the PostgreSQL server named by
PIPELINE_TEST_PG_URL (dropped afterwards). Without that variable the PostgreSQL cases
skip with the reason; with PIPELINE_REQUIRE_PG=1 (as .ci/run sets) they fail instead.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pipeline.config import JobConfig, load_config
from pipeline.db.tables import job_tables
from pipeline.job import bus_prefix
from pipeline.jobs import DEFAULT_JOB, shipped_config
from pipeline.metrics.bus import leaked_segments
from tests.reference import Expected

PG_ENV = "PIPELINE_TEST_PG_URL"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV)


def _require_pg() -> None:
    if not pg_admin_url():
        reason = f"{PG_ENV} is not set: no PostgreSQL server to test against"
        if os.environ.get("PIPELINE_REQUIRE_PG") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    _require_pg()
    admin_url = make_url(pg_admin_url())
    name = f"pipeline_test_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - an unreachable server is a skip, not an error
        admin.dispose()
        if os.environ.get("PIPELINE_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL at {admin_url.render_as_string()} unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {admin_url.render_as_string()} unreachable: {exc}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pipeline.db'}"
    return str(request.getfixturevalue("pg_url"))


def shipped_job(tmp_path: Path, db_url: str, name: str = DEFAULT_JOB) -> JobConfig:
    """A shipped job, writing into this test's folder and database."""
    return load_config(shipped_config(name)).with_overrides(
        output_dir=tmp_path / "work", database_url=db_url, heartbeat_timeout=10.0)


@pytest.fixture
def job_config(tmp_path: Path, db_url: str) -> JobConfig:
    """The shipped example job, writing into this test's folder and database."""
    return shipped_job(tmp_path, db_url)


@contextmanager
def engine_for(url: str, **options: Any) -> Iterator[Engine]:
    """An engine on a test's database, disposed afterwards (no connection outlives it)."""
    engine = create_engine(url, **options)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(job_config: JobConfig) -> Iterator[Engine]:
    """An engine on the shipped job's database (a module may override it for its own job)."""
    with engine_for(job_config.database_url) as eng:
        yield eng


def final_rows(engine: Engine, config: JobConfig, *columns: str,
               run_id: str | None = None) -> dict[Any, tuple[Any, ...]]:
    """FINAL as {key: the named columns}; no columns named: every column, run id and
    timestamp included, so any MERGE shows. A composite key is a tuple of its columns."""
    final = job_tables(config).final
    keys = [final.c[k] for k in config.key_columns]
    values = [final.c[c] for c in columns] if columns else list(final.columns)
    query = select(*keys, *values)
    if run_id is not None:
        query = query.where(final.c.last_run_id == run_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    n = len(keys)
    return {(r[0] if n == 1 else tuple(r[:n])): tuple(r[n:]) for r in rows}


def assert_final_matches(engine: Engine, config: JobConfig, expected: Expected) -> None:
    """FINAL holds exactly the keys the input should leave, each with its values."""
    final = job_tables(config).final
    with engine.connect() as conn:
        rows = {r.txn_id: r for r in conn.execute(select(final))}
    assert set(rows) == set(expected.final)
    for key, txn in expected.final.items():
        row = rows[key]
        assert (row.account_id, row.txn_date, row.amount, row.currency, row.description) == (
            txn.account_id, txn.txn_date, txn.amount, txn.currency, txn.description), key


def seed_final(engine: Engine, config: JobConfig, path: Path, n: int = 200) -> dict:
    """FINAL as a previous day left it: the input's first n keys, with other values."""
    tables = job_tables(config)
    tables.metadata.create_all(engine)
    with open(path, "rb") as f:
        lines = [f.readline() for _ in range(n + 1)][1:]
    rows = [{"txn_id": line[1:17].decode().rstrip(), "account_id": "0000000001",
             "txn_date": dt.date(2026, 1, 2), "amount": -(i + 1), "currency": "XXX",
             "description": "before the run", "last_run_id": "previous-day",
             "updated_ts": dt.datetime(2026, 1, 2, 3, 4, 5)} for i, line in enumerate(lines)]
    with engine.begin() as conn:
        conn.execute(tables.final.insert(), rows)
    return final_rows(engine, config)


def write_job(path: Path, *edits: tuple[str, str], job: str = DEFAULT_JOB) -> Path:
    """A shipped job's TOML, each (old, new) edit made where ``old`` stands (exactly once),
    written to ``path``."""
    source = shipped_config(job).read_text(encoding="utf-8")
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    path.write_text(source, encoding="utf-8")
    return path


def run_cli(cwd: Path, *args: str, timeout: float = 100, python: tuple[str, ...] = (),
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` in a real process, its output captured as text."""
    return subprocess.run([sys.executable, *python, "-m", "pipeline", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """No run started by this test process may leave a metrics-bus segment in /dev/shm.

    Only this process's segments count: other test sessions may run jobs at the same time.
    """
    prefix = bus_prefix()
    before = set(leaked_segments(prefix))
    yield
    leaked = set(leaked_segments(prefix)) - before
    assert not leaked, f"shared-memory segments leaked: {sorted(leaked)}"
