"""How the input was read is on record: the code page (a wrong EBCDIC one still balances)
and the copybook's SHA-256, in BATCH_RUN, the summary and the reports; and `validate`
lists the text the other EBCDIC code pages would read differently, so the operator can
confirm the code page once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.jobs import shipped_config
from tests.conftest import engine_for, run_cli, write_job
from tests.integration.test_mainframe_job import CP, detail, fb, header, trailer

pytestmark = pytest.mark.timeout(120)
BOOK = shipped_config("daily_transactions_ebcdic").parent / "daily_transactions_ebcdic.cpy"


def refund_file(path: Path) -> Path:
    """The issue's file: cp037, one description holding the bytes cp500 reads otherwise."""
    records = [header(), detail("R1", 100, desc="Refund! [ref|42]"), detail("R2", 5),
               trailer(2, 105)]
    path.write_bytes(fb(records))
    return path


def job_in(tmp_path: Path, encoding: str) -> Path:
    (tmp_path / BOOK.name).write_text(BOOK.read_text())
    return write_job(tmp_path / "job.toml", ('encoding = "cp037"', f'encoding = "{encoding}"'),
                     job="daily_transactions_ebcdic")


def test_validate_lists_what_the_other_code_pages_would_read(tmp_path: Path) -> None:
    assert CP.encode("!") == b"\x5a"
    data = refund_file(tmp_path / "in.bin")
    declared_cp500 = run_cli(tmp_path, "validate", str(job_in(tmp_path, "cp500")),
                             "--input", str(data), timeout=60)
    # it balances: no check can tell, hence the listing
    assert declared_cp500.returncode == 0, declared_cp500.stderr
    out = declared_cp500.stdout
    assert "codepage cp500" in out
    assert ("codepage 1 text value(s) would read differently in cp037: record 2 DESCRIPTION "
            "'Refund] ¬ref!42|' -> 'Refund! [ref|42]'") in out
    assert "confirm the job's code page once" in out
    sha = hashlib.sha256(BOOK.read_bytes()).hexdigest()
    assert f"copybook sha256 {sha}" in out


def test_validate_is_quiet_where_every_code_page_agrees(tmp_path: Path) -> None:
    records = [header(), detail("R1", 100, desc="PLAIN TEXT 42"), trailer(1, 100)]
    (tmp_path / "in.bin").write_bytes(fb(records))
    check = run_cli(tmp_path, "validate", "daily_transactions_ebcdic", "--input",
                    str(tmp_path / "in.bin"), timeout=60)
    assert check.returncode == 0, check.stderr
    assert "codepage cp037" in check.stdout and "would read differently" not in check.stdout


def test_the_code_page_and_copybook_are_in_batch_run_summary_and_reports(
        tmp_path: Path, db_url: str) -> None:
    data = refund_file(tmp_path / "in.bin")
    job = job_in(tmp_path, "cp500")
    ran = run_cli(tmp_path, "run", str(job), "--input", str(data), "--db", db_url, timeout=120)
    assert ran.returncode == 0, ran.stderr
    sha = hashlib.sha256(BOOK.read_bytes()).hexdigest()
    assert "codepage cp500" in ran.stdout and f"copybook sha256 {sha}" in ran.stdout
    with engine_for(db_url) as engine, engine.connect() as conn:
        row = conn.execute(text("SELECT run_id, code_page, copybook_sha256 FROM batch_run")).one()
    assert row[1:] == ("cp500", sha)
    report = run_cli(tmp_path, "report", row[0], str(job), "--db", db_url, timeout=60)
    assert "codepage cp500" in report.stdout and sha in report.stdout
    doc = json.loads(run_cli(tmp_path, "report", row[0], str(job), "--db", db_url, "--json",
                             timeout=60).stdout)
    found = doc["run"] if "run" in doc else doc
    assert (found["code_page"], found["copybook_sha256"]) == ("cp500", sha)
    run_cli(tmp_path, "report", row[0], str(job), "--db", db_url, "--html",
            str(tmp_path / "r.html"), timeout=60)
    assert "cp500" in (tmp_path / "r.html").read_text() and sha in (tmp_path / "r.html").read_text()


def test_a_text_job_records_ascii_and_no_copybook(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    ran = run_cli(tmp_path, "run", "--db", db, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "codepage ascii" in ran.stdout and "copybook" not in ran.stdout
    with engine_for(db) as engine, engine.connect() as conn:
        assert conn.execute(text("SELECT code_page, copybook_sha256 FROM batch_run")).one() \
            == ("ascii", None)
