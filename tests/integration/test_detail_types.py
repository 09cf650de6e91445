"""Several detail record types in one VB file ([[details]]), end to end on a real SQLite
file and a real PostgreSQL database: a file written here by an independent encoder (the
stdlib's cp037 codec and tests.mainframe_reference), each FINAL table against our own
decode of it, and one type failing leaves every FINAL table as it was."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from pipeline.config import JobConfig
from pipeline.db.tables import job_tables
from pipeline.errors import ConfigError
from pipeline.job import RunOutcome, run_job
from recon.values import SUCCEEDED
from tests.conftest import engine_for, shipped_job
from tests.mainframe_reference import encode_packed, encode_zoned_ebcdic

pytestmark = pytest.mark.timeout(120)
JOB = "payments_and_fees"


def e(text: str, width: int) -> bytes:
    return text.ljust(width).encode("cp037")


def payment(pay_id: str, cents: int, account: int = 1, date: str = "20261124") -> bytes:
    return (e("P", 1) + e(pay_id, 12) + e(f"{account:010d}", 10) + e(date, 8)
            + encode_packed(cents, 13) + e("EUR", 3))


def fee(fee_id: str, cents: int, code: str = "ATM") -> bytes:
    return e("F", 1) + e(fee_id, 10) + e(code, 4) + encode_zoned_ebcdic(cents, 9)


def trailer(count: int, total: int, payments: int, fees: int) -> bytes:
    return (e("T", 1) + e(f"{count:010d}", 10) + encode_packed(total, 18)
            + e(f"{payments:010d}", 10) + e(f"{fees:010d}", 10))


def vb(records: list[bytes]) -> bytes:
    return b"".join((len(r) + 4).to_bytes(2, "big") + b"\0\0" + r for r in records)


def night(n: int = 300, *, fee_count_off: int = 0) -> tuple[bytes, dict[str, Any]]:
    """A header, ``n`` details (two payments to a fee, a repeated key in each type, one
    payment rejected for its date), the trailer; and what each FINAL must then hold."""
    body: list[bytes] = []
    want: dict[str, dict[str, Any]] = {"payments": {}, "fees": {}}
    counts = {"P": 0, "F": 0}
    total = 0
    for i in range(n):
        cents = (-1) ** i * (1000 * i + 7)
        if i % 3 == 2:
            key = f"F{i % 97:04d}"  # keys repeat: the later record wins
            body.append(fee(key, cents))
            want["fees"][key] = (Decimal(cents) / 100, "ATM")
            counts["F"] += 1
        else:
            key = f"P{i:06d}"
            bad = i == 10
            body.append(payment(key, cents, account=i, date="20261332" if bad else "20261124"))
            if not bad:
                want["payments"][key] = (Decimal(cents) / 100, f"{i:010d}")
            counts["P"] += 1
        total += cents
    header = e("H20261125", 9) + e("TESTS", 20)
    records = [header, *body, trailer(n, total, counts["P"], counts["F"] + fee_count_off)]
    return vb(records), want


def run(config: JobConfig, path: Path, data: bytes, **overrides: Any) -> RunOutcome:
    path.write_bytes(data)
    return run_job(config.with_overrides(input_path=path, **overrides))


def finals(config: JobConfig) -> dict[str, dict[str, tuple[Any, ...]]]:
    found = {}
    with engine_for(config.database_url) as engine, engine.connect() as conn:
        unit = Decimal(100)  # Money reads back as integer minor units (pipeline.db.types)
        for t in config.details:
            final = job_tables(t.config).final
            amount = final.c[t.config.amount]
            other = final.c["fee_code" if t.label == "fees" else "account_id"]
            key = final.c[t.config.key_columns[0]]
            found[t.label] = {k: (Decimal(a) / unit, o) for k, a, o in
                              conn.execute(select(key, amount, other)).all()}
    return found


def with_tables_and(config: JobConfig, *statements: str) -> None:
    """Create every type's tables, then run ``statements`` (a trigger, say) on them."""
    with engine_for(config.database_url) as engine:
        for t in config.details:
            job_tables(t.config).metadata.create_all(engine)
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)


def fee_meddler(url: str) -> tuple[str, ...]:
    """A trigger that rewrites every fee's code as it lands in FINAL."""
    if url.startswith("sqlite"):
        return ("CREATE TRIGGER fee_meddler AFTER INSERT ON fees BEGIN "
                "UPDATE fees SET fee_code = 'XXX' WHERE fee_id = NEW.fee_id; END",)
    return ("CREATE FUNCTION meddle() RETURNS trigger AS $$ BEGIN "
            "NEW.fee_code := 'XXX'; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER fee_meddler BEFORE INSERT ON fees "
            "FOR EACH ROW EXECUTE FUNCTION meddle()")


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> JobConfig:
    return shipped_job(tmp_path, db_url, JOB)


def test_each_final_table_equals_the_independent_decode(config: JobConfig,
                                                        tmp_path: Path) -> None:
    data, want = night()
    outcome = run(config, tmp_path / "in.bin", data)
    assert (outcome.status, outcome.exit_code) == (SUCCEEDED, 0), outcome.message
    assert finals(config) == want
    names = [r.check_name for r in outcome.results]
    assert names[:3] == ["source_trailer_count", "source_trailer_amount", "reject_limit"]
    for label in ("payments", "fees"):
        for check in ("source_trailer_count", "processed_to_staging",
                      "processed_to_staging_amount", "processed_to_staging_columns",
                      "written_to_staging", "staging_to_final", "staging_to_final_amount",
                      "staging_to_final_columns"):
            assert f"{label}:{check}" in names
    assert all(r.passed for r in outcome.results)
    by = {r.check_name: r for r in outcome.results}
    assert by["payments:source_trailer_count"].actual_count == 200
    assert by["fees:staging_to_final"].expected_count == len(want["fees"])
    assert "keys merged into payments" in outcome.message and "into fees" in outcome.message
    rejects = outcome.reject_file.read_text().splitlines()
    assert len(rejects) == 1 and rejects[0].startswith("12\t")  # record 12: i == 10


def test_a_fee_count_off_by_one_fails_and_leaves_both_finals_unchanged(
        config: JobConfig, tmp_path: Path) -> None:
    data, want = night()
    assert run(config, tmp_path / "first.bin", data).exit_code == 0
    before = finals(config)
    other, _ = night(240, fee_count_off=1)
    outcome = run(config, tmp_path / "second.bin", other)
    assert outcome.exit_code == 1 and "fees:source_trailer_count" in outcome.message
    assert finals(config) == before == want
    by = {r.check_name: r for r in outcome.results}
    assert not by["fees:source_trailer_count"].passed
    assert by["payments:source_trailer_count"].passed
    assert not by["payments:staging_to_final"].evaluated
    with engine_for(config.database_url) as engine, engine.connect() as conn:
        audit = job_tables(config).recon_audit
        failed = conn.execute(select(audit.c.check_name).where(
            audit.c.run_id == outcome.run_id, audit.c.passed == "N")).scalars().all()
        assert "fees:source_trailer_count" in failed
        batch_run = job_tables(config).batch_run
        status = conn.execute(select(batch_run.c.status, batch_run.c.exit_code).where(
            batch_run.c.run_id == outcome.run_id)).one()
        assert tuple(status) == ("FAILED_RECON", 1)


def test_a_failure_after_the_merge_rolls_back_every_type(config: JobConfig,
                                                         tmp_path: Path) -> None:
    """A trigger changes a fee as it lands: fees' staging_to_final_columns fails after
    the MERGE, and the payments MERGEd in the same transaction are rolled back too."""
    data, _ = night()
    with_tables_and(config, *fee_meddler(config.database_url))
    outcome = run(config, tmp_path / "in.bin", data)
    assert outcome.exit_code == 1, outcome.message
    by = {r.check_name: r for r in outcome.results}
    assert not by["fees:staging_to_final_columns"].passed
    assert by["payments:staging_to_final"].passed  # it ran, and was rolled back
    assert finals(config) == {"payments": {}, "fees": {}}
    from pipeline.explain import explain_run

    with engine_for(config.database_url) as engine:
        found = explain_run(config, engine, outcome.run_id)
    assert {e.check_name for e in found.evidence} == {"fees:staging_to_final_columns"}
    assert {e.column for e in found.evidence} == {"fee_code"}


def test_a_changed_staging_row_of_one_type_is_named(tmp_path: Path) -> None:
    """A trigger rewrites a fee as it lands in staging: fees' processed_to_staging_columns
    fails naming the rows and the column (the file read again with the fee record's
    layout), payments' passes, and no FINAL table is touched."""
    config = shipped_job(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", JOB)
    data, _ = night(30)
    with_tables_and(config, "CREATE TRIGGER fee_meddler AFTER INSERT ON stg_fees BEGIN "
                    "UPDATE stg_fees SET fee_code = 'XXX' WHERE rowid = NEW.rowid; END")
    outcome = run(config, tmp_path / "in.bin", data)
    by = {r.check_name: r for r in outcome.results}
    assert outcome.exit_code == 1
    assert by["payments:processed_to_staging_columns"].passed
    bad = by["fees:processed_to_staging_columns"]
    assert (bad.expected_count, bad.actual_count) == (10, 0) and "fee_code" in bad.detail
    assert {(e.check_name, e.column, e.expected, e.actual) for e in outcome.evidence} == {
        ("fees:processed_to_staging_columns", "fee_code", "ATM", "XXX")}
    assert {e.source_line for e in outcome.evidence} == {2 + i for i in range(2, 30, 3)}
    assert finals(config) == {"payments": {}, "fees": {}}


def test_an_unknown_record_type_is_a_reject_with_its_reason(config: JobConfig,
                                                            tmp_path: Path) -> None:
    data, _ = night(30)
    stray = e("X", 1) + e("SOMETHING", 20)
    records = vb([stray])
    # the stray record goes right after the header: its RDW is 4 + 21 bytes
    header_len = int.from_bytes(data[:2], "big")
    data = data[:header_len] + records + data[header_len:]
    outcome = run(config, tmp_path / "in.bin", data, max_reject_rate=Decimal(1))
    assert outcome.exit_code == 1  # its amount is unknowable, the trailer's too
    line = outcome.reject_file.read_text().splitlines()[0]
    assert line.startswith("2\trecord type 'X' is not a detail type of the job ('P', 'F')")
    by = {r.check_name: r for r in outcome.results}
    assert by["source_trailer_count"].actual_count == 31
    assert "not provable" in by["source_trailer_amount"].detail


def test_the_shipped_example_runs(tmp_path: Path) -> None:
    config = shipped_job(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", JOB)
    outcome = run_job(config)
    assert outcome.exit_code == 0, outcome.message
    with engine_for(config.database_url) as engine, engine.connect() as conn:
        for t in config.details:
            final = job_tables(t.config).final
            assert conn.execute(select(func.count()).select_from(final)).scalar_one() > 0


@pytest.mark.parametrize(("change", "message"), [
    ({"type": "P"}, "each type value once"),
    ({"final": "payments"}, "its own"),
    ({"final": "a_rather_long_fee_table_name"}, "at most 21 characters"),
    ({"amount": "fee_code"}, "details[2] (FEE-REC): tables.amount"),
    ({"colour": "red"}, "unknown key details[2].colour"),
])
def test_details_config_errors_name_the_entry(tmp_path: Path, change: dict[str, str],
                                               message: str) -> None:
    import tomllib

    from pipeline.config import parse_config
    from pipeline.jobs import shipped_config

    path = shipped_config(JOB)
    data = tomllib.loads(path.read_text())
    data["details"][1].update(change)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data, path)


def test_validate_checks_each_types_trailer_count(tmp_path: Path) -> None:
    from pipeline.validate import validate_input

    config = shipped_job(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", JOB)
    data, _ = night(90, fee_count_off=1)
    (tmp_path / "in.bin").write_bytes(data)
    found = validate_input(config, tmp_path / "in.bin", tmp_path / "v")
    by = {r.check_name: r for r in found.results}
    assert found.exit_code == 1 and found.type_read == [60, 30]
    assert by["source_trailer_count"].passed and by["payments:source_trailer_count"].passed
    assert (by["fees:source_trailer_count"].expected_count,
            by["fees:source_trailer_count"].actual_count) == (31, 30)


def test_resume_refuses_a_run_whose_checks_before_the_merge_fail_and_explain_names_them(
        config: JobConfig, tmp_path: Path) -> None:
    from pipeline.explain import explain_run
    from pipeline.resume import ResumeRefused, resume_run

    data, _ = night(60, fee_count_off=1)
    outcome = run(config, tmp_path / "in.bin", data)
    assert outcome.exit_code == 1
    with pytest.raises(ResumeRefused, match=r"checks before the MERGE do not balance "
                                            r"\(fees:source_trailer_count\)"):
        resume_run(config, outcome.run_id)
    with engine_for(config.database_url) as engine:
        found = explain_run(config, engine, outcome.run_id)
    assert found.failed_checks[0] == "fees:source_trailer_count"


def test_resume_finishes_a_run_whose_merge_was_rolled_back(config: JobConfig,
                                                           tmp_path: Path) -> None:
    """The trigger that failed fees' MERGE is dropped; the resume derives each type's
    figures from the file again, and merges both types with their audit."""
    from pipeline.resume import ResumeRefused, resume_run

    data, want = night()
    with_tables_and(config, *fee_meddler(config.database_url))
    outcome = run(config, tmp_path / "in.bin", data)
    assert outcome.exit_code == 1 and finals(config) == {"payments": {}, "fees": {}}
    with engine_for(config.database_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER fee_meddler" + ("" if engine.dialect.name ==
                                                           "sqlite" else " ON fees"))
    # not the file the run read
    (tmp_path / "in.bin").write_bytes(data.replace(e("EUR", 3), e("USD", 3), 1))
    with pytest.raises(ResumeRefused, match="SHA-256 differs"):
        resume_run(config, outcome.run_id)
    (tmp_path / "in.bin").write_bytes(data)
    resumed = resume_run(config, outcome.run_id)
    assert resumed.exit_code == 0, resumed.message
    assert finals(config) == want
    by = {r.check_name: r for r in resumed.results}
    assert by["written_to_staging"].passed and by["fees:processed_to_staging"].passed
    assert "fees:written_to_staging" not in by  # the writers' rows per type are not known
    assert "into payments" in resumed.message and "into fees" in resumed.message
    again = resume_run(config, outcome.run_id)
    assert again.changed_nothing and "payments, fees untouched" in again.message



def test_the_command_line_tells_the_same_story(config: JobConfig, tmp_path: Path) -> None:
    """Exit code, BATCH_RUN and both FINAL tables agree, through `python -m pipeline run`."""
    from tests.conftest import run_cli

    good, _ = night(60)
    bad, _ = night(45, fee_count_off=1)
    (tmp_path / "good.bin").write_bytes(good)
    (tmp_path / "bad.bin").write_bytes(bad)
    args = ("run", str(shipped_config_path()), "--db", config.database_url, "--no-progress")
    first = run_cli(tmp_path, *args, "--input", str(tmp_path / "good.bin"))
    assert first.returncode == 0, first.stderr
    assert "keys merged into payments" in first.stdout
    before = finals(config)
    second = run_cli(tmp_path, *args, "--input", str(tmp_path / "bad.bin"))
    assert second.returncode == 1
    assert "fees:source_trailer_count" in second.stdout
    assert finals(config) == before


def shipped_config_path() -> Path:
    from pipeline.jobs import shipped_config

    return shipped_config(JOB)


def test_two_types_in_an_fb_file(tmp_path: Path) -> None:
    """FB: every type's record padded to the LRECL (FILLER), told apart by the type."""
    from pipeline.config import load_config
    from pipeline.jobs import shipped_config

    book = shipped_config(JOB).with_suffix(".cpy").read_text()
    book = book.replace("           05  FEE-AMOUNT              PIC S9(7)V99.\n",
                        "           05  FEE-AMOUNT              PIC S9(7)V99.\n"
                        "           05  FILLER                  PIC X(17).\n")
    book = book.replace("           05  SOURCE-SYSTEM           PIC X(20).\n",
                        "           05  SOURCE-SYSTEM           PIC X(20).\n"
                        "           05  FILLER                  PIC X(12).\n")
    (tmp_path / "fb.cpy").write_text(book)
    toml = shipped_config(JOB).read_text().replace('format = "vb"', 'format = "fb"\n'
                                                   'record_length = 41')
    toml = toml.replace('path = "payments_and_fees.cpy"', 'path = "fb.cpy"')
    (tmp_path / "fb.toml").write_text(toml.replace('path = "payments_and_fees.bin"\n', ""))
    config = load_config(tmp_path / "fb.toml").with_overrides(
        output_dir=tmp_path / "work", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    data, want = night(60)
    records = []
    pos = 0
    while pos < len(data):  # the VB file's records, each padded to 41 bytes with spaces
        length = int.from_bytes(data[pos:pos + 2], "big")
        records.append(data[pos + 4:pos + length].ljust(41, e(" ", 1)))
        pos += length
    outcome = run(config, tmp_path / "in.bin", b"".join(records))
    assert outcome.exit_code == 0, outcome.message
    assert finals(config) == want


def test_validate_reads_each_types_text_in_its_own_records(tmp_path: Path) -> None:
    """The other code pages' readings look at each type's text fields in that type's
    records: a fee code's '!' (cp037 X'5A', cp500 ']') is named at its record."""
    from pipeline.validate import validate_input

    config = shipped_job(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", JOB)
    header = e("H20261125", 9) + e("TESTS", 20)
    body = [payment("P1", 100), fee("F1", 5, code="AT!"), payment("P2", 200)]
    (tmp_path / "in.bin").write_bytes(vb([header, *body, trailer(3, 305, 2, 1)]))
    found = validate_input(config, tmp_path / "in.bin", tmp_path / "v")
    assert found.exit_code == 0
    cp500 = next(r for r in found.other_readings if r.code_page == "cp500")
    assert (cp500.values, cp500.examples) == (1, [(3, "fee_code", "AT!", "AT]")])


def test_merges_that_committed_without_their_audit_are_not_merged_twice(
        config: JobConfig, tmp_path: Path) -> None:
    from sqlalchemy import text

    from pipeline.resume import resume_run

    data, want = night(90)
    outcome = run(config, tmp_path / "in.bin", data)
    assert outcome.exit_code == 0
    # as if killed between the MERGEs' commit and the audit's: RUNNING, then ABENDED
    with engine_for(config.database_url) as engine, engine.begin() as conn:
        conn.execute(text("UPDATE batch_run SET status = 'ABENDED', exit_code = NULL "
                          "WHERE run_id = :r"), {"r": outcome.run_id})
        conn.execute(text("DELETE FROM recon_audit WHERE run_id = :r"), {"r": outcome.run_id})
    resumed = resume_run(config, outcome.run_id)
    assert resumed.exit_code == 0, resumed.message
    assert "without merging again" in resumed.message
    assert all(r.passed for r in resumed.results)
    names = {r.check_name for r in resumed.results}
    assert {"payments:staging_to_final", "fees:staging_to_final_columns"} <= names
    assert finals(config) == want
