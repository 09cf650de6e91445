"""Fixtures shared by the suite: real databases, real input files, no mocks.

Every database test takes the ``db_url`` fixture, parametrized over the backends:
a fresh SQLite file, and a fresh database on the PostgreSQL server named by
PIPELINE_TEST_PG_URL (dropped afterwards). Without that variable the PostgreSQL cases
skip with the reason; with PIPELINE_REQUIRE_PG=1 (as .ci/run sets) they fail instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pipeline.config import JobConfig, load_config
from pipeline.job import bus_prefix
from pipeline.jobs import shipped_config
from pipeline.metrics.bus import leaked_segments

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


@pytest.fixture
def job_config(tmp_path: Path, db_url: str) -> JobConfig:
    """The shipped example job, writing into this test's folder and database."""
    return load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=db_url, heartbeat_timeout=10.0)


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
