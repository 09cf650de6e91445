"""Hostile configuration: injected identifiers, leaked passwords, a guessable bus.

- Table and column names come from the job's TOML and end up in SQL: anything but a plain
  identifier is refused with exit 2 before a database is even opened.
- Database passwords appear nowhere: not on stdout, stderr, the log, the run's files, the
  error messages or the audit tables.
- The metrics bus segment has an unguessable name and is readable by its owner only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pipeline.config import JobConfig, load_config
from pipeline.db.tables import job_tables
from pipeline.generate import generate_file
from pipeline.identity import Overrides
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from pipeline.metrics.bus import MetricsBus
from pipeline.summary import format_summary
from tests.conftest import final_rows, run_cli, seed_final, write_job
from tests.integration.test_faults import no_leaked_segments  # noqa: F401 - its held-segment-aware check

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # every hostile value runs the CLI

AUDIT_TABLES = ("batch_run", "recon_audit", "recon_worker_audit")


@pytest.fixture(scope="module")
def small_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_file(tmp_path_factory.mktemp("hostile") / "in.dat", 2_000, seed=4,
                         reject_rate=0.01).path


# -- identifiers from configuration -------------------------------------------------------

SHIPPED_LINES = {  # the shipped TOML's line for each key, as a prefix to replace
    "tables.staging": 'staging = "stg_transactions"',
    "tables.final": 'final = "transactions"',
    "tables.key": 'key = "txn_id"',
    "tables.amount": 'amount = "amount"',
    "job.name": 'name = "daily_transactions"',
    "control.trailer_count": 'trailer_count = "detail_count"',
    "layout.detail[7].name": '{ name = "description",',
}

INJECTIONS = [
    ("tables.staging", "stg; DROP TABLE transactions"),
    ("tables.staging", 'stg"; DROP TABLE transactions; --'),
    ("tables.staging", "stg' OR '1'='1"),
    ("tables.staging", "stg_transactions --"),
    ("tables.staging", "stg/**/"),
    ("tables.staging", "public.stg_transactions"),
    ("tables.staging", "STG_TRANSACTIONS"),  # would be quoted: not the table a DBA types
    ("tables.staging", "stg_tr\u0430nsactions"),  # a Cyrillic a
    ("tables.staging", "stg\u0000x"),
    ("tables.staging", ""),
    ("tables.staging", "s" * 31),
    ("tables.staging", "stg_transactions\n"),  # '$' alone would match before the newline
    ("tables.final", "transactions; DELETE FROM transactions"),
    ("tables.key", "txn_id) DO NOTHING; --"),
    ("tables.amount", "amount + 1"),
    ("job.name", "../../../tmp/pwned"),
    ("control.trailer_count", "detail_count; --"),
    ("layout.detail[7].name", "description); DROP TABLE transactions; --"),
]


def hostile_job(tmp_path: Path, key: str, value: str) -> Path:
    line = SHIPPED_LINES[key]
    field, _, rest = line.partition(" = ")
    replacement = f"{field} = {json.dumps(value)}"  # a JSON string is a TOML basic string
    if rest.endswith(","):
        replacement += ","
    return write_job(tmp_path / "hostile.toml", (line, replacement))


def database_snapshot(engine: Engine) -> dict[str, int]:
    """Every table of the database and its row count."""
    names = sorted(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {n: conn.execute(text(f'SELECT COUNT(*) FROM "{n}"')).scalar_one()
                for n in names}


@pytest.mark.parametrize(("key", "value"), INJECTIONS)
def test_an_injected_identifier_is_refused_and_nothing_is_created(
        tmp_path: Path, small_input: Path, key: str, value: str) -> None:
    database = tmp_path / "db" / "victim.db"
    done = run_cli(tmp_path, "run", str(hostile_job(tmp_path, key, value)), "--input",
                   str(small_input), "--db", f"sqlite:///{database}", timeout=150)

    assert done.returncode == 2, done.stdout + done.stderr
    assert key.split("[")[0] in done.stderr and "Traceback" not in done.stderr
    assert not database.parent.exists()  # not even the database file, nor its lock file
    assert not (tmp_path / "pipeline_work").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.toml"]


@pytest.mark.postgresql
def test_an_injected_identifier_changes_nothing_in_a_live_database(
        tmp_path: Path, small_input: Path, pg_url: str) -> None:
    config = load_config(shipped_config())
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        seed_final(engine, config, small_input)
        before, rows = database_snapshot(engine), final_rows(engine, config)
        for key, value in [("tables.staging", "stg; DROP TABLE transactions"),
                           ("tables.final", 'transactions"; DROP TABLE recon_audit; --')]:
            done = run_cli(tmp_path, "run", str(hostile_job(tmp_path, key, value)), "--input",
                           str(small_input), "--db", pg_url, timeout=150)
            assert done.returncode == 2, done.stdout + done.stderr
        assert database_snapshot(engine) == before
        assert final_rows(engine, config) == rows
    finally:
        engine.dispose()


# -- passwords ----------------------------------------------------------------------------


@dataclass
class Secret:
    url: str
    password: str
    role: str
    admin: Engine  # superuser, on the test database

    def absent_from(self, *texts: str) -> None:
        for t in texts:
            assert self.password not in t, f"password leaked in: {t[:2000]}"


@pytest.fixture
def secret(pg_url: str) -> Iterator[Secret]:
    """A login role with a password, owning nothing yet, allowed into the test database.

    (The server may trust 127.0.0.1 and ignore the password: what matters is where the
    URL's password travels, not whether the server checks it.)
    """
    role = f"pipeline_pw_{secrets.token_hex(4)}"
    password = f"S3cr3t-{secrets.token_hex(8)}"
    url = make_url(pg_url)
    admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        conn.execute(text(f'GRANT ALL ON DATABASE "{url.database}" TO {role}'))
        conn.execute(text(f"GRANT ALL ON SCHEMA public TO {role}"))
    try:
        yield Secret(url.set(username=role, password=password)
                     .render_as_string(hide_password=False), password, role, admin)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))  # its tables, its grants
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def files_text(root: Path) -> str:
    """Every file a run left under ``root`` (summary, rejects, anything a logger wrote)."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def audit_text(engine: Engine) -> str:
    with engine.connect() as conn:
        rows = [conn.execute(text(f"SELECT * FROM {t}")).all() for t in AUDIT_TABLES]
    assert rows[0], "no run was audited"
    return repr(rows)


@pytest.mark.postgresql
def test_a_password_in_the_url_is_never_shown_by_a_good_run(
        tmp_path: Path, small_input: Path, secret: Secret) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    done = run_cli(work, "run", "--input", str(small_input), "--db", secret.url, timeout=150)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "***" in done.stdout  # the database is named, its password masked
    secret.absent_from(done.stdout, done.stderr, files_text(work), audit_text(secret.admin))


@pytest.mark.postgresql
def test_a_password_in_the_url_is_never_shown_when_a_writer_fails(
        tmp_path: Path, small_input: Path, secret: Secret, caplog: pytest.LogCaptureFixture
        ) -> None:
    """A database error inside a worker travels to the parent, the log and the audit."""
    config = load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=secret.url, input_path=small_input,
        batch_size=300, heartbeat_timeout=60.0)
    job_tables(config).metadata.create_all(secret.admin)
    with secret.admin.connect() as conn:
        conn.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {secret.role}"))
        conn.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {secret.role}"))
        conn.execute(text(f"REVOKE INSERT ON stg_transactions FROM {secret.role}"))
    caplog.set_level(logging.DEBUG)

    outcome = run_job(config)

    assert outcome.exit_code == 3, outcome.message
    assert "database error while loading staging" in outcome.message
    assert "permission denied" in outcome.message and "***" in outcome.message
    secret.absent_from(outcome.message, format_summary(outcome, 2), caplog.text,
                       files_text(tmp_path / "work"), audit_text(secret.admin))
    # and through the command line, stdout and stderr included
    done = run_cli(tmp_path, "run", "--input", str(small_input), "--db", secret.url,
                   timeout=150)
    assert done.returncode == 3 and "permission denied" in done.stdout, done.stderr
    secret.absent_from(done.stdout, done.stderr, audit_text(secret.admin))


def test_an_unreachable_database_is_one_plain_sentence_without_the_password(
        tmp_path: Path, small_input: Path) -> None:
    password = f"S3cr3t-{secrets.token_hex(8)}"
    url = f"postgresql+psycopg://someone:{password}@127.0.0.1:1/nowhere"
    done = run_cli(tmp_path, "run", "--input", str(small_input), "--db", url, timeout=150)

    assert done.returncode == 3, done.stdout + done.stderr
    assert password not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED: ")]
    assert len(failed) == 1 and failed[0].count("database error") == 1, done.stdout
    assert "someone:***@127.0.0.1:1" in failed[0]


# -- the shared-memory segment ------------------------------------------------------------

RANDOM_PART = re.compile(r"[0-9a-f]{16,}")  # at least 64 random bits, hex


def test_the_bus_segment_is_unguessable_and_private(
        tmp_path: Path, small_input: Path, job_config: JobConfig) -> None:
    seen: dict[str, os.stat_result] = {}

    def look(bus: MetricsBus) -> None:
        if bus.name not in seen:
            seen[bus.name] = os.stat(f"/dev/shm/{bus.name}")

    config = job_config.with_overrides(input_path=small_input, batch_size=200)
    outcomes = [run_job(config, on_tick=look, overrides=Overrides(rerun=i > 0))
                for i in range(2)]

    assert [o.exit_code for o in outcomes] == [0, 0], [o.message for o in outcomes]
    assert len(seen) == 2  # a new name for every run
    for name, st in seen.items():
        prefix, _, random_part = name.rpartition("_")
        assert prefix.startswith("pipeline") and RANDOM_PART.fullmatch(random_part), name
        assert all(o.run_id not in name for o in outcomes)
        assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert st.st_uid == os.getuid()
    names = set()
    for _ in range(50):
        with MetricsBus.create(1) as bus:
            names.add(bus.name.rpartition("_")[2])
    assert len(names) == 50
