"""Composite keys end to end: the shipped account_postings job, keyed by
(account_id, txn_date, seq_no), on a real SQLite file and a real PostgreSQL database.

A record repeating all three key values replaces the earlier one (last record wins); a
record differing in any one of them is a row of its own. The expected FINAL table comes
from a deliberately naive per-record reading of the input below.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select

from pipeline.config import JobConfig
from pipeline.db.tables import job_tables
from pipeline.identity import Overrides
from pipeline.job import RunOutcome, run_job
from pipeline.jobs import shipped_config
from recon import checks
from tests.conftest import engine_for, final_rows, run_cli, shipped_job

pytestmark = pytest.mark.timeout(120)

SHIPPED = shipped_config("account_postings")
SAMPLE = SHIPPED.with_suffix(".dat")
KEY = ("account_id", "txn_date", "seq_no")

Key = tuple[str, dt.date, str]
Row = tuple[int, str, str | None]  # amount (minor units), currency, description
ROW = ("amount", "currency", "description")


def posting(account: str, date: str, seq: str, amount: int, currency: str = "EUR",
            description: str = "posting") -> bytes:
    """One 100-byte detail record of the account_postings layout (plus newline)."""
    sign = "-" if amount < 0 else "+"
    text = f"D{account}{date}{seq}{sign}{abs(amount):013d}{currency}{description:<40}{'':18}"
    assert len(text) == 100, len(text)
    return text.encode("ascii") + b"\n"


def write_postings(path: Path, details: list[bytes]) -> Path:
    """Header, the details, and a trailer with their true count and amount total."""
    total = sum(_amount(d) for d in details)
    sign = "-" if total < 0 else "+"
    path.write_bytes(f"H20261125{'TESTS':<20}{'':71}\n".encode("ascii") + b"".join(details)
                     + f"T{len(details):010d}{sign}{abs(total):018d}{'':70}\n".encode("ascii"))
    return path


def _amount(record: bytes) -> int:
    s = record.decode("ascii")
    return -int(s[26:39]) if s[25] == "-" else int(s[26:39])


def expected_final(path: Path) -> dict[Key, Row]:
    """Each accepted record in file order, the later one replacing an earlier same key."""
    final: dict[Key, Row] = {}
    for raw in path.read_bytes().split(b"\n")[1:-2]:
        s = raw.decode("ascii")
        try:
            date = dt.date(int(s[11:15]), int(s[15:17]), int(s[17:19]))
        except ValueError:
            continue  # the job rejects it
        final[(s[1:11], date, s[19:25])] = (_amount(raw), s[39:42], s[42:82].rstrip() or None)
    return final


def audit(engine: Engine, config: JobConfig, run_id: str) -> dict[str, Any]:
    recon = job_tables(config).recon_audit
    with engine.connect() as conn:
        rows = conn.execute(select(recon).where(recon.c.run_id == run_id)).all()
    return {r.check_name: r for r in rows}


def assert_balanced(outcome: RunOutcome) -> None:
    assert outcome.exit_code == 0, outcome.message
    assert [r.check_name for r in outcome.results] == list(checks.CHECK_ORDER)
    assert all(r.passed for r in outcome.results), outcome.results


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> JobConfig:
    return shipped_job(tmp_path, db_url, "account_postings")


@pytest.fixture
def engine(config: JobConfig) -> Iterator[Engine]:
    with engine_for(config.database_url) as eng:
        yield eng


def test_the_shipped_job_is_keyed_by_three_columns(config: JobConfig, engine: Engine) -> None:
    assert config.key_columns == KEY
    outcome = run_job(config)
    assert_balanced(outcome)
    pk = inspect(engine).get_pk_constraint("account_postings")
    assert pk["constrained_columns"] == list(KEY)
    columns = [c["name"] for c in inspect(engine).get_columns("account_postings")]
    assert columns[:3] == list(KEY)


def test_the_sample_collapses_the_full_key_repeat_only(config: JobConfig,
                                                      engine: Engine) -> None:
    outcome = run_job(config)

    assert_balanced(outcome)
    nov24, nov25, nov30 = dt.date(2026, 11, 24), dt.date(2026, 11, 25), dt.date(2026, 11, 30)
    assert final_rows(engine, config, *ROW) == {
        # the later of two records with the same three key values wins
        ("0000000042", nov24, "000001"): (12000, "EUR", "Card payment, corrected"),
        ("0000000042", nov24, "000002"): (-5000, "EUR", "ATM withdrawal"),
        # each of these differs from another posting in one key column only
        ("0000000042", nov25, "000001"): (700, "EUR", "Interest"),
        ("0000000043", nov24, "000001"): (99999, "EUR", "Salary"),
        ("0000000044", nov30, "000001"): (0, "USD", "Zero posting"),
        ("0000000044", nov30, "000010"): (-123456789, "USD", "Large debit"),
        ("0000000045", nov24, "000001"): (250, "GBP", "Fee"),
    }
    assert final_rows(engine, config, *ROW) == expected_final(SAMPLE)
    assert outcome.duplicates_collapsed == 1
    assert outcome.metrics is not None and outcome.metrics.total_read == 9
    assert outcome.reject_file is not None
    assert [line.split("\t")[0] for line in outcome.reject_file.read_text().splitlines()] == ["7"]

    rows = audit(engine, config, outcome.run_id)
    survivors = sum(a for a, _, _ in expected_final(SAMPLE).values())
    final = rows[checks.STAGING_TO_FINAL]
    assert (final.expected_cnt, final.actual_cnt, final.passed) == (7, 7, "Y")
    assert "1 duplicate-key record(s) collapsed" in final.detail
    assert "key: account_id, txn_date, seq_no" in final.detail
    amount = rows[checks.STAGING_TO_FINAL_AMOUNT]
    scale = 10**4  # audit amounts hold 6 decimals; the job's amounts have 2
    assert amount.expected_amt == amount.actual_amt == survivors * scale
    staged = rows[checks.PROCESSED_TO_STAGING_AMOUNT]
    assert staged.expected_amt == staged.actual_amt == (-123336395 - 100) * scale


def many_postings(rng: random.Random, n: int) -> list[bytes]:
    """Keys drawn from a small space, so full repeats and one-column near misses abound."""
    records = []
    for i in range(n):
        account = f"{rng.randrange(1, 8):010d}"
        date = f"202611{rng.randrange(20, 27):02d}"
        if i % 97 == 0:
            date = "20261131"  # rejected
        seq = f"{rng.randrange(1, 6):06d}"
        amount = rng.randrange(-10**12, 10**12)
        records.append(posting(account, date, seq, amount, description=f"line {i}"))
    return records


def test_repeats_across_workers_collapse_on_the_whole_key(
        tmp_path: Path, config: JobConfig, engine: Engine) -> None:
    path = write_postings(tmp_path / "many.dat", many_postings(random.Random(5), 3_000))
    expected = expected_final(path)
    rejected = len(range(0, 3_000, 97))
    assert len(expected) < 3_000 - rejected  # the input does repeat keys

    outcome = run_job(config.with_overrides(input_path=path, processors=3, batch_size=97))

    assert_balanced(outcome)
    assert final_rows(engine, config, *ROW) == expected
    assert outcome.duplicates_collapsed == 3_000 - rejected - len(expected)
    final = audit(engine, config, outcome.run_id)[checks.STAGING_TO_FINAL_AMOUNT]
    survivors = sum(a for a, _, _ in expected.values())
    assert final.expected_amt == final.actual_amt == survivors * 10**4
    assert (final.expected_cnt, final.actual_cnt) == (len(expected), len(expected))


def test_records_differing_in_one_key_column_are_not_duplicates(
        tmp_path: Path, config: JobConfig, engine: Engine) -> None:
    base = ("0000000001", "20261124", "000001")
    details = [posting(*base, 100)]
    for column, other in enumerate(("0000000002", "20261125", "000002")):
        key = list(base)
        key[column] = other
        details.append(posting(*key, 10 + column))
    path = write_postings(tmp_path / "near.dat", details)

    outcome = run_job(config.with_overrides(input_path=path))

    assert_balanced(outcome)
    assert outcome.duplicates_collapsed == 0
    assert len(final_rows(engine, config, *ROW)) == 4
    assert final_rows(engine, config, *ROW) == expected_final(path)
    detail = audit(engine, config, outcome.run_id)[checks.STAGING_TO_FINAL].detail
    assert detail == "no duplicate keys (key: account_id, txn_date, seq_no)"


@pytest.mark.slow
def test_a_rerun_leaves_final_the_same_and_a_later_run_updates_by_key(
        tmp_path: Path, config: JobConfig, engine: Engine) -> None:
    first = run_job(config)
    assert_balanced(first)
    before = final_rows(engine, config, *ROW)

    rerun = run_job(config, overrides=Overrides(rerun=True))
    assert_balanced(rerun)
    assert final_rows(engine, config, *ROW) == before
    # every key was applied again, by the rerun
    assert final_rows(engine, config, *ROW, run_id=rerun.run_id) == before

    later = write_postings(tmp_path / "later.dat", [
        posting("0000000042", "20261124", "000002", 777, description="re-sent"),  # updates
        posting("0000000042", "20261124", "000003", 5),  # new: seq differs
        posting("0000000042", "20261124", "000003", 6),  # repeats it: this one wins
    ])
    third = run_job(config.with_overrides(input_path=later))
    assert_balanced(third)
    assert third.duplicates_collapsed == 1
    nov24 = dt.date(2026, 11, 24)
    assert final_rows(engine, config, *ROW, run_id=third.run_id) == {
        ("0000000042", nov24, "000002"): (777, "EUR", "re-sent"),
        ("0000000042", nov24, "000003"): (6, "EUR", "posting"),
    }
    after = final_rows(engine, config, *ROW)
    assert len(after) == len(before) + 1
    assert {k: v for k, v in after.items() if k[2] not in ("000002", "000003")} == {
        k: v for k, v in before.items() if k[2] not in ("000002", "000003")}


def test_the_cli_runs_the_shipped_composite_key_job(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    done = run_cli(tmp_path, "run", "account_postings", "--db", f"sqlite:///{db}", timeout=90)
    assert done.returncode == 0, done.stderr
    assert "7 keys merged into account_postings" in done.stdout
    assert "key: account_id, txn_date, seq_no" in done.stdout
