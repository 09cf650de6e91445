"""Audit tables of an earlier version: the job names the upgrade script, which keeps every row.

A bank's BATCH_RUN and RECON_AUDIT hold years of evidence: a version that adds audit
columns must never ask for them to be dropped. The earlier version's tables are made here
by dropping from today's tables exactly the columns sql/<db>/upgrade_audit.sql adds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot
from sqlalchemy import Engine, text
from sqlglot import exp

from pipeline.config import JobConfig
from pipeline.generate import generate_file
from pipeline.identity import Overrides
from pipeline.job import run_job
from recon.checks import CHECK_ORDER
from tests.conftest import engine_for, final_rows

SQL = Path(__file__).resolve().parents[2] / "sql"
DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "oracle": "oracle"}
RERUN = Overrides(rerun=True)


def added_columns(dialect: str) -> set[tuple[str, str]]:
    """(table, column) of every column the dialect's upgrade script adds."""
    script = (SQL / dialect / "upgrade_audit.sql").read_text()
    added = set()
    for statement in sqlglot.parse(script, read=DIALECTS[dialect]):
        assert isinstance(statement, exp.Alter), statement.sql()
        for action in statement.args["actions"]:
            for column in action.find_all(exp.ColumnDef):
                added.add((statement.this.name.lower(), column.name.lower()))
    return added


def test_every_upgrade_script_adds_the_same_columns() -> None:
    scripts = {dialect: added_columns(dialect) for dialect in DIALECTS}
    assert scripts["sqlite"] == scripts["postgresql"] == scripts["oracle"]
    assert ("job_lock", "run_id") in scripts["sqlite"]
    assert ("batch_run", "audit_ms") in scripts["sqlite"]
    assert {("batch_run", "business_date"), ("batch_run", "rerun"),
            ("batch_run", "allow_older")} <= scripts["sqlite"]


def _statements(dialect: str) -> list[str]:
    script = (SQL / dialect / "upgrade_audit.sql").read_text()
    return [s for s in (part.strip() for part in script.split(";")) if s and
            not all(line.startswith("--") for line in s.splitlines())]


def _downgrade(engine: Engine, dialect: str) -> None:
    with engine.begin() as conn:
        for table, column in sorted(added_columns(dialect)):
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))


def test_an_earlier_versions_audit_is_upgraded_not_dropped(
        tmp_path: Path, job_config: JobConfig) -> None:
    dialect = "sqlite" if job_config.database_url.startswith("sqlite") else "postgresql"
    config = job_config.with_overrides(
        input_path=generate_file(tmp_path / "in.dat", 2_000, seed=4).path)
    first = run_job(config)
    assert first.exit_code == 0, first.message
    with engine_for(config.database_url) as engine:
        _downgrade(engine, dialect)
        before = final_rows(engine, config)

        refused = run_job(config, overrides=RERUN)
        assert refused.exit_code == 2
        assert f"sql/{dialect}/upgrade_audit.sql" in refused.message
        assert "drop" not in refused.message
        assert final_rows(engine, config) == before

        with engine.begin() as conn:
            for statement in _statements(dialect):
                conn.execute(text(statement))
        again = run_job(config, overrides=RERUN)  # the same file again, on purpose
        assert again.exit_code == 0, again.message
        with engine.connect() as conn:
            runs = conn.execute(text("SELECT run_id, status FROM batch_run")).all()
            checks = conn.execute(text("SELECT COUNT(*) FROM recon_audit WHERE run_id = :r"),
                                  {"r": first.run_id}).scalar_one()
    assert {(r.run_id, r.status) for r in runs} == {(first.run_id, "SUCCEEDED"),
                                                   (again.run_id, "SUCCEEDED")}
    assert checks == len(CHECK_ORDER)  # the earlier run's evidence is still there


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "oracle"])
def test_the_upgrade_adds_what_audit_sql_has(dialect: str) -> None:
    """Every column the script adds is one audit.sql (the current DDL) creates."""
    created = set()
    for statement in sqlglot.parse((SQL / dialect / "audit.sql").read_text(),
                                   read=DIALECTS[dialect]):
        if isinstance(statement, exp.Create):
            table = statement.this.this.name.lower()
            created |= {(table, c.name.lower()) for c in statement.find_all(exp.ColumnDef)}
    assert added_columns(dialect) <= created
