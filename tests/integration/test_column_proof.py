"""Every stored column proven, read -> staging -> FINAL.

A night can balance on counts and amounts and still be wrong: a trigger (standing in for
a mapping error, a coercion, a truncation, a DBA's trigger) rewrites columns as rows
land. Each case here balances on every count and amount, and must fail its column check
(exit 1, FINAL unchanged), with the rows, the columns and both values kept as evidence
that `explain` shows after the trigger is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url

from pipeline.audit.reader import load_evidence
from pipeline.config import JobConfig
from pipeline.db.backends import backend_for
from pipeline.db.bulk import StagingBatch, loader_for
from pipeline.db.digests import total
from pipeline.db.engine import make_engine
from pipeline.db.repositories import FinalRepository, StagingRepository
from pipeline.db.tables import job_tables
from pipeline.explain import explain_run, format_explanation
from pipeline.generate import generate_file
from pipeline.job import run_job
from recon import checks
from tests.conftest import engine_for, final_rows, seed_final, shipped_job

RECORDS = 2_000
FLIP = "CASE substr({c}, 1, 1) WHEN '9' THEN '8' ELSE '9' END || substr({c}, 2)"
# what each variant does to the chosen rows' DESCRIPTION (ACCOUNT_ID: same length, always)
DESCRIPTION = {
    "same_length": "replace(description, substr(description, 1, 1), '#')",
    "truncated": "substr(description, 1, 3)",
    "null": "NULL",
}


def _sqlite_tamper(table: str, description: str) -> list[str]:
    """AFTER triggers rewriting every 10th row as it lands (inserted or updated)."""
    change = (f"UPDATE {table} SET account_id = {FLIP.format(c='account_id')}, "
              f"description = {description} WHERE rowid = new.rowid;")
    return [f"CREATE TRIGGER tamper_{event} AFTER {event} ON {table} "
            f"WHEN new.rowid % 10 = 0 BEGIN {change} END" for event in ("INSERT", "UPDATE")]


def _postgresql_tamper(table: str, description: str) -> list[str]:
    """A BEFORE ROW trigger (cloned to every staging partition) rewriting every 10th key."""
    new = description.replace("description", "NEW.description")
    return [
        f"""CREATE FUNCTION tamper_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF abs(hashtext(NEW.txn_id)) % 10 = 0 THEN
            NEW.account_id := {FLIP.format(c='NEW.account_id')};
            NEW.description := {new};
          END IF;
          RETURN NEW;
        END $$""",
        f"CREATE TRIGGER tamper BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW "
        f"EXECUTE FUNCTION tamper_{table}()",
    ]


def tamper(engine: Engine, table: str, variant: str) -> None:
    build = _sqlite_tamper if engine.dialect.name == "sqlite" else _postgresql_tamper
    with engine.begin() as conn:
        for statement in build(table, DESCRIPTION[variant]):
            conn.execute(text(statement))


def untamper(engine: Engine, table: str) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for event in ("INSERT", "UPDATE"):
                conn.execute(text(f"DROP TRIGGER tamper_{event}"))
        else:
            conn.execute(text(f"DROP TRIGGER tamper ON {table}"))


@pytest.fixture
def night(job_config: JobConfig, engine: Engine, tmp_path: Path) -> tuple[JobConfig, dict]:
    """Tonight's file, and FINAL as last night left it (its first 300 keys, other values):
    the MERGE both inserts and updates."""
    path = tmp_path / "night.dat"
    generate_file(path, RECORDS, seed=5)
    config = job_config.with_overrides(input_path=path)
    job_tables(config).metadata.create_all(engine)
    return config, seed_final(engine, config, path, 300)


def _failed(outcome) -> set[str]:  # type: ignore[no-untyped-def]
    return {r.check_name for r in outcome.results if not r.passed and r.evaluated}


@pytest.mark.parametrize("variant", sorted(DESCRIPTION))
def test_final_columns_changed_by_a_trigger_fail_the_night(
        night: tuple[JobConfig, dict], engine: Engine, variant: str) -> None:
    config, before = night
    tamper(engine, config.final_table, variant)
    outcome = run_job(config)
    assert outcome.exit_code == 1, outcome.message
    assert _failed(outcome) == {checks.STAGING_TO_FINAL_COLUMNS}  # counts, amounts balance
    assert final_rows(engine, config) == before  # rolled back with the MERGE
    result = next(r for r in outcome.results if r.check_name == checks.STAGING_TO_FINAL_COLUMNS)
    assert result.expected_count == RECORDS and 0 < RECORDS - result.actual_count < RECORDS
    evidence = load_evidence(engine, outcome.run_id)
    changed = {e.key for e in evidence}
    assert len(changed) == RECORDS - result.actual_count  # every differing row is named
    assert "account_id" in result.detail
    by_column = {(e.key, e.column): e for e in evidence}
    some = next(e for e in evidence if e.column == "account_id")
    assert some.expected and some.actual and len(some.expected) == len(some.actual) == 10
    assert some.expected[1:] == some.actual[1:] and some.expected != some.actual
    described = [e for (_, column), e in by_column.items() if column == "description"]
    assert described  # the second column changed too
    if variant == "null":
        assert all(e.actual is None and e.expected is not None for e in described)
    if variant == "truncated":
        assert all(e.actual == (e.expected or "")[:3] for e in described)

    untamper(engine, config.final_table)  # the cause is gone; the evidence stays
    shown = format_explanation(explain_run(config, engine, outcome.run_id))
    assert checks.STAGING_TO_FINAL_COLUMNS in shown
    assert repr(some.expected) in shown and repr(some.actual) in shown


def test_a_staging_column_changed_to_a_same_length_value_fails_the_night(
        night: tuple[JobConfig, dict], engine: Engine) -> None:
    config, before = night
    tamper(engine, config.staging_table, "same_length")
    outcome = run_job(config)
    assert outcome.exit_code == 1, outcome.message
    assert _failed(outcome) == {checks.PROCESSED_TO_STAGING_COLUMNS}
    assert final_rows(engine, config) == before  # no MERGE
    result = next(r for r in outcome.results
                  if r.check_name == checks.PROCESSED_TO_STAGING_COLUMNS)
    evidence = load_evidence(engine, outcome.run_id)
    # the MERGE that ran beside staging's digest pass was rolled back with its findings
    assert {e.check_name for e in evidence} == {checks.PROCESSED_TO_STAGING_COLUMNS}
    assert {e.column for e in evidence} <= {"account_id", "description"}
    assert len({e.source_line for e in evidence}) == RECORDS - result.actual_count > 0
    flipped = next(e for e in evidence if e.column == "account_id")
    assert flipped.source_line is not None and flipped.expected != flipped.actual
    untamper(engine, config.staging_table)
    shown = format_explanation(explain_run(config, engine, outcome.run_id))
    assert checks.PROCESSED_TO_STAGING_COLUMNS in shown and repr(flipped.actual) in shown


def test_a_clean_night_proves_every_column(night: tuple[JobConfig, dict],
                                           engine: Engine) -> None:
    config, _ = night
    outcome = run_job(config)
    assert outcome.exit_code == 0, outcome.message
    for name in checks.COLUMN_CHECKS:
        result = next(r for r in outcome.results if r.check_name == name)
        assert result.passed and result.expected_count == result.actual_count > 0
    assert load_evidence(engine, outcome.run_id) == []


TRICKY = ["plain", 'a "quoted" value', "back\\slash", "", "caf\u00e9 \u20ac", "trail  "]


def test_the_database_digests_staging_as_the_processors_did(job_config: JobConfig) -> None:
    """Quotes, backslashes, NULL text, non-ASCII: the loader's digests and the database's
    agree, and one changed value is seen."""
    engine = make_engine(job_config.database_url)  # the job's engine: SQLite's hook
    try:
        _digests_agree(job_config, engine)
    finally:
        engine.dispose()


def test_digests_agree_on_a_database_that_is_not_utf8(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL hashes its own bytes: a LATIN1 database's text is made UTF-8 first,
    as the processors hash it, so an accented letter digests the same."""
    with scratch_database(pg_url, "latin1", "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                                            "TEMPLATE template0") as url:
        engine = make_engine(url)
        try:
            _digests_agree(shipped_job(tmp_path, url), engine,
                           [t for t in TRICKY if "\u20ac" not in t] + ["na\u00efve"],
                           changed="caf\u00e9!")
        finally:
            engine.dispose()


def test_digests_agree_whatever_date_style_the_database_sets(tmp_path: Path,
                                                             pg_url: str) -> None:
    """The server writes a date's text for the digests as its session's DateStyle says:
    the job's connections set ISO, so a database that defaults to 'SQL, DMY' (dates as
    04/12/2026) digests them as the processors did."""
    with scratch_database(pg_url, "dmy", datestyle="SQL, DMY") as url:
        with engine_for(url) as plain, plain.connect() as conn:  # not the job's engine
            assert conn.execute(text("SELECT CAST(DATE '2026-12-04' AS text)")
                                ).scalar_one() == "04/12/2026"
        engine = make_engine(url)
        try:
            _digests_agree(shipped_job(tmp_path, url), engine)
        finally:
            engine.dispose()


@contextmanager
def scratch_database(pg_url: str, suffix: str, options: str = "",
                     datestyle: str | None = None) -> Iterator[str]:
    """A database of its own beside the tests' (created with ``options``, defaulting to
    ``datestyle``), dropped afterwards; its URL."""
    scratch = make_url(pg_url).set(database=f"{make_url(pg_url).database}_{suffix}")
    with engine_for(pg_url, isolation_level="AUTOCOMMIT") as admin, admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{scratch.database}" {options}'))
        if datestyle:
            conn.execute(text(f'ALTER DATABASE "{scratch.database}" '
                              f"SET DateStyle = '{datestyle}'"))
    try:
        yield scratch.render_as_string(hide_password=False)
    finally:
        with engine_for(pg_url, isolation_level="AUTOCOMMIT") as admin, \
                admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{scratch.database}" WITH (FORCE)'))


def test_text_hashes_are_the_servers_hashtext(pg_url: str) -> None:
    """Random texts of 0-120 characters, tabs, backslashes and multibyte letters among
    them: the processors' hash of each equals PostgreSQL's."""
    import random

    from pipeline.db.digests import text_hashes

    pick = random.Random(3)
    alphabet = "abcXYZ0123456789 \t\\\u00e9\u20ac\u00df"
    texts = ["".join(pick.choice(alphabet) for _ in range(pick.randint(0, 120)))
             for _ in range(2_000)]
    with engine_for(pg_url) as engine, engine.connect() as conn:
        theirs = conn.execute(text("SELECT hashtext(t) FROM unnest(CAST(:texts AS text[])) "
                                   "WITH ORDINALITY u(t, i) ORDER BY i"),
                              {"texts": texts}).scalars().all()
    assert text_hashes([t.encode("utf-8") for t in texts]).tolist() == theirs


def _digests_agree(job_config: JobConfig, engine: Engine, tricky: list[str] = TRICKY,
                   changed: str = "caf\u00e9 \u20ac!") -> None:
    tables = job_tables(job_config)
    tables.metadata.create_all(engine)
    n = len(tricky)
    columns = {"txn_id": np.array([f"K{i}" for i in range(n)]),
               "account_id": np.array(["0012345678"] * n),
               "txn_date": np.array(["2026-12-04"] * n),
               "amount": np.arange(n, dtype=np.int64) * -1001,
               "currency": np.array(["EUR"] * n),
               "description": np.array(tricky)}
    batch = StagingBatch("run-1", 3, np.arange(2, n + 2, dtype=np.int64), columns)
    loader = loader_for(tables, job_config.detail, job_config.amount, engine.dialect, 100)
    payload, digests, values = loader.encode_digested(batch)
    raw = engine.raw_connection()
    try:
        loader.load(raw, payload)
        raw.commit()
    finally:
        raw.close()
    backend = backend_for(engine.dialect.name)
    with engine.begin() as conn:
        staging = StagingRepository(conn, tables, job_config.key_columns, job_config.amount)
        assert staging.count_and_amount("run-1", digest=True)[::3] == (n, total(digests))
        lines, workers, found = backend.staging_digests(conn, tables.staging, "run-1")
        assert sorted(zip(lines.tolist(), found.tolist(), strict=True)) == sorted(
            zip(batch.lines.tolist(), digests.tolist(), strict=True))
        assert set(workers.tolist()) == {3}
        # the value digests, as the database computes them over FINAL's rows (the same
        # columns)
        stored = [tables.staging.c[c] for c in tables.business_columns]
        digest = backend.value_digest(conn, stored)
        found = dict(conn.execute(select(tables.staging.c.source_line, digest)).all())
        assert [found[n] for n in batch.lines.tolist()] == values.tolist()
        conn.execute(text("UPDATE stg_transactions SET description = :changed "
                          "WHERE source_line = 6"), {"changed": changed})
        assert staging.count_and_amount("run-1", digest=True).digest != total(digests)
        assert conn.execute(select(digest).where(tables.staging.c.source_line == 6)
                            ).scalar_one() != values[4]
        # a column of digits only, which PostgreSQL digests unescaped: a tab or a
        # backslash put in it is seen all the same
        for bad in ("00123\t5678", "00123\\5678"):
            conn.execute(text("UPDATE stg_transactions SET account_id = :bad "
                              "WHERE source_line = 3"), {"bad": bad})
            assert conn.execute(select(digest).where(tables.staging.c.source_line == 3)
                                ).scalar_one() != values[1]


def test_oracle_digests_fetched_rows_as_its_loader_sent_them() -> None:
    """No Oracle server here: the values python-oracledb returns through the staging
    table's types (Money as minor units, DATE as a datetime) are put back as the loader's
    rows hold them (Decimal, date) before hashing, so both sides digest the same tuples."""
    import datetime as dt

    from sqlalchemy.dialects import oracle

    from pipeline.config import load_config
    from pipeline.db.backends.oracle import _as_loaded
    from pipeline.db.digests import row_digests
    from pipeline.jobs import shipped_config

    job_config = load_config(shipped_config())
    tables = job_tables(job_config)
    loader = loader_for(tables, job_config.detail, job_config.amount, oracle.dialect(), 100)
    columns = {"txn_id": np.array(["K1", "K2"]), "account_id": np.array(["0012345678"] * 2),
               "txn_date": np.array(["2026-12-04", "2026-02-28"]),
               "amount": np.array([-1001, 250], dtype=np.int64),
               "currency": np.array(["EUR", "USD"]), "description": np.array(["caf\u00e9", ""])}
    batch = StagingBatch("run-1", 0, np.array([2, 3], dtype=np.int64), columns)
    sent = loader.encode_digested(batch).row_digests
    fetched = [("run-1", 2, 0, "K1", "0012345678", dt.datetime(2026, 12, 4), -1001, "EUR",
                "caf\u00e9"),
               ("run-1", 3, 0, "K2", "0012345678", dt.datetime(2026, 2, 28), 250, "USD", None)]
    convert = [_as_loaded(c) for c in tables.staging.columns]
    rows = [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in fetched]
    assert row_digests(rows).tolist() == sent.tolist()


def test_final_is_proven_against_the_processors_values_on_each_database(
        job_config: JobConfig, engine: Engine, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With repeated keys and rejects, over a FINAL holding some keys: the processors'
    value digests less the superseded records' equal FINAL's sum as the database computes
    it, so neither the pass over staging's surviving rows nor the join runs."""
    path, last_night = tmp_path / "night.dat", tmp_path / "last_night.dat"
    generate_file(path, RECORDS, seed=7, duplicate_rate=0.05, reject_rate=0.01)
    generate_file(last_night, RECORDS, seed=7)
    config = job_config.with_overrides(input_path=path)
    job_tables(config).metadata.create_all(engine)
    before = seed_final(engine, config, last_night, 300)

    def not_needed(*args: object) -> None:
        raise AssertionError("the surviving staging rows were read again")

    monkeypatch.setattr(FinalRepository, "staged_digest", not_needed)
    monkeypatch.setattr(FinalRepository, "columns_equal_count", not_needed)
    outcome = run_job(config)
    assert outcome.exit_code == 0, outcome.message
    assert outcome.duplicates_collapsed > 0 and outcome.rejects > 0
    result = next(r for r in outcome.results if r.check_name == checks.STAGING_TO_FINAL_COLUMNS)
    assert result.passed and result.expected_count == result.actual_count
    after = final_rows(engine, config)
    assert any(after[k] != v for k, v in before.items())  # some of last night's keys updated
