"""OCCURS DEPENDING ON in a VB detail record, end to end on a real SQLite file and a
real PostgreSQL database: the entries a record holds are stored as name_1 ... name_n,
NULL past its count; a count above the table's maximum, or a record whose length
disagrees with its count, is a reject with that reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pipeline.config import JobConfig, load_config
from pipeline.db.tables import job_tables
from pipeline.job import RunOutcome, run_job
from pipeline.layouts.copybook import CopybookError, parse_copybook
from tests.conftest import engine_for
from tests.mainframe_reference import encode_packed, packed

pytestmark = pytest.mark.timeout(120)

BOOK = """
       01  HDR.
           05  REC-TYPE        PIC X.
           05  BUSINESS-DATE   PIC 9(8).
       01  ACCT.
           05  REC-TYPE        PIC X.
           05  ACCT-ID         PIC X(8).
           05  AMT             PIC S9(7)V99 COMP-3.
           05  N               PIC 9(2).
           05  ENTRY OCCURS 1 TO 4 TIMES DEPENDING ON N.
               10  E-DATE      PIC 9(8).
               10  E-AMT       PIC S9(5)V99 COMP-3.
               10  E-NOTE      PIC X(3).
       01  TRL.
           05  REC-TYPE        PIC X.
           05  CNT             PIC 9(6).
           05  TOTAL           PIC S9(13)V99 COMP-3.
"""


def e(text: str) -> bytes:
    return text.encode("cp037")


def account(acct: str, cents: int, entries: list[tuple[str, int, str]],
            count: int | None = None) -> bytes:
    n = len(entries) if count is None else count
    return (e("D") + e(acct.ljust(8)) + encode_packed(cents, 9) + e(f"{n:02d}")
            + b"".join(e(d) + encode_packed(a, 7) + e(note.ljust(3)) for d, a, note in entries))


def vb(records: list[bytes]) -> bytes:
    return b"".join((len(r) + 4).to_bytes(2, "big") + b"\0\0" + r for r in records)


def job(tmp_path: Path, db_url: str) -> JobConfig:
    (tmp_path / "acct.cpy").write_text(BOOK)
    (tmp_path / "job.toml").write_text(f"""
[job]
name = "accounts_odo"
[input]
format = "vb"
[copybook]
path = "acct.cpy"
header = "HDR"
detail = "ACCT"
trailer = "TRL"
record_type = "rec_type"
header_type = "H"
detail_type = "D"
trailer_type = "T"
dates = ["business_date", "e_date_1", "e_date_2", "e_date_3", "e_date_4"]
[output]
dir = "{tmp_path / 'work'}"
[database]
url = "{db_url}"
[tables]
staging = "stg_accounts"
final = "accounts"
key = "acct_id"
amount = "amt"
[control]
trailer_count = "cnt"
trailer_amount = "total"
max_reject_rate = 1
""")
    return load_config(tmp_path / "job.toml")


def test_entries_are_stored_up_to_the_count_and_null_past_it(tmp_path: Path,
                                                             db_url: str) -> None:
    config = job(tmp_path, db_url)
    good = {
        "A1": (100, [("20261101", 150, "ONE")]),
        "A2": (-200, [("20261102", -250, "TWO"), ("20261103", 350, "")]),
        "A4": (400, [(f"2026110{k}", 1000 * k + 1, f"N{k}") for k in range(1, 5)]),
    }
    details = [account(k, c, ents) for k, (c, ents) in good.items()]
    too_many = account("B5", 5, [("20261101", 1, "X")] * 5)  # 5 entries, at most 4
    outcome = run(config, tmp_path / "in.bin", [*details, too_many])
    assert outcome.exit_code == 0, outcome.message
    reasons = [line.split("\t")[:2] for line in outcome.reject_file.read_text().splitlines()]
    assert reasons == [["5", "N (bytes 15-16) X'F0F5' is more than the 4 entries of entry "
                        "OCCURS 1 TO 4 DEPENDING ON n (record at byte offset 178)"]]
    final = job_tables(config).final
    names = [f"{c}_{k}" for k in range(1, 5) for c in ("e_date", "e_amt", "e_note")]
    with engine_for(config.database_url) as engine, engine.connect() as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            select(final.c.acct_id, final.c.n, *(final.c[n] for n in names)))}
    assert set(rows) == set(good)
    for key, (_, entries) in good.items():
        n, *cells = rows[key]
        assert n == f"{len(entries):02d}"
        want: list[Any] = []
        for k in range(4):
            if k < len(entries):
                d, a, note = entries[k]
                want += [f"{d[:4]}-{d[4:6]}-{d[6:]}", a, note or None]
            else:
                want += [None, None, None]
        got = [str(c) if c is not None and i % 3 == 0 else c for i, c in enumerate(cells)]
        assert got == want, key
    assert all(r.passed for r in outcome.results)


def run(config: JobConfig, path: Path, details: list[bytes]) -> RunOutcome:
    total = sum(int(packed(d[9:14], 9) or 0) for d in details)
    path.write_bytes(vb([e("H20261125"), *details,
                         e("T") + e(f"{len(details):06d}") + encode_packed(total, 15)]))
    return run_job(config.with_overrides(input_path=path))


def test_a_record_longer_than_its_count_says_is_a_reject(tmp_path: Path) -> None:
    config = job(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    short = account("B2", 7, [("20261101", 1, "X")] * 3, count=2)  # says 2, holds 3
    outcome = run(config, tmp_path / "in.bin", [account("A1", 5, [("20261101", 1, "X")]),
                                                short])
    line = outcome.reject_file.read_text().splitlines()[0].split("\t")
    assert line[0] == "3" and line[1].startswith(
        "record is 61 bytes long, the acct record with n = 2 is 46")
    # a record of the wrong length has no amount the job can trust: the trailer's total
    # is not provable, and the night fails
    assert outcome.exit_code == 1 and "source_trailer_amount" in outcome.message


@pytest.mark.parametrize(("book", "message"), [
    ("""       01  R.
           05  N PIC 9.
           05  E OCCURS 1 TO 3 DEPENDING ON N PIC X.
           05  AFTER PIC X.""", "must be the record's last item"),
    ("""       01  R.
           05  E OCCURS 1 TO 3 DEPENDING ON M PIC X.""", "expected a numeric item"),
    ("""       01  R.
           05  N PIC 9.
           05  E OCCURS 1 TO 3 TIMES PIC X.""", "without DEPENDING ON"),
    ("""       01  R.
           05  N PIC 9.
           05  E OCCURS 4 TO 3 DEPENDING ON N PIC X.""", "expected 0 <= m <= n"),
])
def test_a_table_the_job_cannot_place_is_refused_naming_the_line(book: str,
                                                                 message: str) -> None:
    with pytest.raises(CopybookError, match=message):
        parse_copybook(book)


def test_the_count_and_the_entries_are_read_as_the_copybook_lays_them_out() -> None:
    record = parse_copybook(BOOK)["acct"]
    assert record.odo is not None
    assert (record.size, record.odo.start, record.odo.entry) == (76, 16, 15)
    assert [(i.name, i.occurrence) for i in record.items][-3:] == [
        ("e_date_4", 4), ("e_amt_4", 4), ("e_note_4", 4)]
