"""`pipeline explain`: each kind of loss is injected, and explain names exactly those
records (source lines, keys), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from pipeline.config import JobConfig, load_config
from pipeline.explain import (
    MISSING_FROM_FINAL,
    NOT_ACCEPTED,
    NOT_IN_STAGING,
    OTHER_AMOUNT,
    STAGED_TWICE,
    explain_run,
    format_explanation,
)
from pipeline.generate import generate_file
from pipeline.job import run_job
from tests.conftest import engine_for, run_cli, write_job
from tests.reference import detail, write_input

pytestmark = pytest.mark.timeout(120)


def staging_losses(eng: Engine, run_id: str) -> None:
    """Line 10 lost; a copy of line 20 staged again as rejected line 5; line 30 twice."""
    cols = "run_id, source_line, worker_id, txn_id, account_id, txn_date, amount, currency, " \
           "description"
    copy = cols.replace("source_line", ":line")
    with eng.begin() as conn:
        conn.execute(text("DELETE FROM stg_transactions WHERE run_id = :r AND source_line = 10"),
                     {"r": run_id})
        for source, line in ((20, 5), (30, 30)):
            conn.execute(text(f"INSERT INTO stg_transactions ({cols}) SELECT {copy} "
                              "FROM stg_transactions WHERE run_id = :r AND source_line = :s"),
                         {"r": run_id, "s": source, "line": line})


def test_explain_names_the_lines_lost_or_added_between_processors_and_staging(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    records = [detail(f"K{i}", 100 + i) for i in range(60)]
    records[3] = b"D" + b"x" * 99 + b"\n"  # line 5 (header is line 1): rejected
    path = write_input(tmp_path / "in.dat", records)
    outcome = run_job(job_config.with_overrides(input_path=path, processors=3),
                      after_load=staging_losses)
    assert outcome.exit_code == 1, outcome.message

    with engine.connect():
        found = explain_run(job_config, engine, outcome.run_id, everything=True)

    by_kind = {k: [f.source_line for f in found.full or [] if f.kind == k]
               for k in (NOT_IN_STAGING, NOT_ACCEPTED, STAGED_TWICE)}
    assert by_kind == {NOT_IN_STAGING: [10], NOT_ACCEPTED: [5], STAGED_TWICE: [30]}
    assert {f.key for f in found.full or [] if f.kind == NOT_ACCEPTED} == {"K18"}
    assert {f.key for f in found.full or [] if f.kind == NOT_IN_STAGING} == {"K8"}
    assert [r.first_line for r in found.ranges][0] == 2
    assert found.ranges[-1].last_line == 61
    text_out = format_explanation(found)
    assert "accepted, not in staging" in text_out and "K18" in text_out


def final_triggers(engine: Engine) -> None:
    """FINAL changes two keys behind the MERGE's back: K7's amount, K9 vanishes."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER alter_k7 AFTER INSERT ON transactions "
                              "WHEN NEW.txn_id = 'K7' BEGIN UPDATE transactions "
                              "SET amount = amount + 1 WHERE txn_id = 'K7'; END"))
            conn.execute(text("CREATE TRIGGER drop_k9 AFTER INSERT ON transactions "
                              "WHEN NEW.txn_id = 'K9' BEGIN DELETE FROM transactions "
                              "WHERE txn_id = 'K9'; END"))
        else:
            conn.execute(text("CREATE FUNCTION meddle() RETURNS trigger LANGUAGE plpgsql AS $$ "
                              "BEGIN IF NEW.txn_id = 'K9' THEN RETURN NULL; END IF; "
                              "IF NEW.txn_id = 'K7' THEN NEW.amount := NEW.amount + 0.01; "
                              "END IF; RETURN NEW; END $$"))
            conn.execute(text("CREATE TRIGGER meddle BEFORE INSERT ON transactions "
                              "FOR EACH ROW EXECUTE FUNCTION meddle()"))


@pytest.mark.slow
def test_explain_names_the_keys_final_lost_or_changed_and_leaves_final_alone(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    first = generate_file(tmp_path / "first.dat", 50, seed=2)
    assert run_job(job_config.with_overrides(input_path=first.path)).exit_code == 0
    final_triggers(engine)
    path = write_input(tmp_path / "in.dat", [detail(f"K{i}", 100 + i) for i in range(40)])
    outcome = run_job(job_config.with_overrides(input_path=path))
    assert outcome.exit_code == 1, outcome.message
    with engine.connect() as conn:
        before = conn.execute(text("SELECT * FROM transactions ORDER BY txn_id")).all()

    found = explain_run(job_config, engine, outcome.run_id, everything=True)

    assert [(f.kind, f.key) for f in found.full or []] == [(OTHER_AMOUNT, "K7"),
                                                           (MISSING_FROM_FINAL, "K9")]
    altered = (found.full or [])[0]
    assert (altered.staged_amount, altered.final_amount) == (107, 108)
    assert any("replayed" in n for n in found.notes)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT * FROM transactions ORDER BY txn_id")).all() == before


@pytest.mark.slow
def test_explain_cli_bounds_its_output_and_writes_every_record_to_csv(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 500, seed=6)

    def lose_ten(eng: Engine, run_id: str) -> None:
        with eng.begin() as conn:
            conn.execute(text("DELETE FROM stg_transactions WHERE run_id = :r "
                              "AND source_line BETWEEN 100 AND 109"), {"r": run_id})

    outcome = run_job(job_config.with_overrides(input_path=made.path), after_load=lose_ten)
    assert outcome.exit_code == 1
    out = tmp_path / "lost.csv"
    done = run_cli(tmp_path, "explain", outcome.run_id, "--db", job_config.database_url,
                   "--limit", "3", "--csv", str(out))
    assert done.returncode == 0, done.stderr
    assert "10  accepted, not in staging" in done.stdout
    assert "first 3 shown" in done.stdout
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["source_line"]) for r in rows] == list(range(100, 110))


def test_explain_of_a_trailer_mismatch_shows_each_range(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    records = [detail(f"K{i}", 10 + i) for i in range(90)]
    path = write_input(tmp_path / "in.dat", records, count=91)
    outcome = run_job(job_config.with_overrides(input_path=path, processors=3))
    assert outcome.exit_code == 1

    found = explain_run(job_config, engine, outcome.run_id)

    assert [(r.first_line, r.last_line) for r in found.ranges] == [(2, 31), (32, 61), (62, 91)]
    assert sum(r.accepted_amount for r in found.ranges) == sum(10 + i for i in range(90))
    shown = format_explanation(found)
    assert "trailer count 91, read 90 (-1)" in shown
    assert "failed   source_trailer_count (staging_to_final, staging_to_final_amount, " \
           "staging_to_final_columns not evaluated)" in shown
    assert not found.counts  # nothing lost between the processors and staging


def test_explain_reads_a_quoted_csv_key_holding_the_delimiter(
        tmp_path: Path, db_url: str) -> None:
    """The key of a lost CSV line is read back by the CSV parser: "Smith, Jane" is one
    cell, not the two a bare split on the delimiter makes of it."""
    path = write_job(tmp_path / "job.toml", ('key = "customer_id"', 'key = "name"'),
                     job="customer_balances")
    config = load_config(path).with_overrides(output_dir=tmp_path / "work",
                                              database_url=db_url)
    data = tmp_path / "in.csv"
    data.write_text('H,20261125,CRM\nD,C1,"Smith, Jane",RET,1.50,20261124\n'
                    'D,C2,"Jones, Bob",RET,2.50,20261124\nT,2,4.00\n', encoding="ascii")

    def lose_line_2(eng: Engine, run_id: str) -> None:
        with eng.begin() as conn:
            conn.execute(text("DELETE FROM stg_customer_balances WHERE run_id = :r "
                              "AND source_line = 2"), {"r": run_id})

    outcome = run_job(config.with_overrides(input_path=data), after_load=lose_line_2)
    assert outcome.exit_code == 1, outcome.message
    with engine_for(db_url) as engine:
        found = explain_run(config, engine, outcome.run_id, everything=True)
    assert [(f.source_line, f.key) for f in found.full or []
            if f.kind == NOT_IN_STAGING] == [(2, "Smith, Jane")]
