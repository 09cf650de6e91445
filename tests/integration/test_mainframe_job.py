"""The EBCDIC example job end to end, on a real SQLite file and a real PostgreSQL database:
FB, VB and blocked VB files load, reconcile and audit; structural breaks are exit 2,
record-level defects are rejects with a byte offset and a hex dump."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from pipeline.config import JobConfig, load_config
from pipeline.db.tables import job_tables
from pipeline.errors import ConfigError
from pipeline.generate import generate_file
from pipeline.generate_mainframe import generate_mainframe_file
from pipeline.inputs.mainframe import MainframeInput
from pipeline.job import RunOutcome, run_job
from pipeline.jobs import shipped_config
from pipeline.layouts.codepages import code_page
from pipeline.layouts.recfm import RecordFormat
from tests.conftest import engine_for, final_rows, run_cli, shipped_job
from tests.mainframe_reference import encode_packed

pytestmark = pytest.mark.timeout(120)
CP = code_page("cp037")
JOB = "daily_transactions_ebcdic"


@pytest.fixture
def ebcdic_config(tmp_path: Path, db_url: str) -> JobConfig:
    return shipped_job(tmp_path, db_url, JOB)


def as_format(config: JobConfig, kind: str, blocked: bool = False) -> JobConfig:
    assert isinstance(config.input_format, MainframeInput)
    fmt = RecordFormat(kind, 100 if kind == "fb" else 32756, blocked)
    return config.with_overrides(input_format=dataclasses.replace(config.input_format, fmt=fmt))


def final_txns(config: JobConfig) -> dict[str, tuple[Any, ...]]:
    with engine_for(config.database_url) as engine:
        return final_rows(engine, config, "account_id", "txn_date", "amount", "currency",
                          "description")


def detail(txn_id: str, amount: int, *, rtype: str = "D", account: str = "0000000001",
           date: str = "20261124", currency: str = "EUR", desc: str = "CARD",
           packed: bytes | None = None) -> bytes:
    rec = (CP.encode(rtype) + CP.encode(txn_id.ljust(16)) + CP.encode(account)
           + CP.encode(date) + (packed or encode_packed(amount, 13))
           + CP.encode(currency) + CP.encode(desc.ljust(40)) + CP.encode(" " * 15))
    assert len(rec) == 100
    return rec


def header() -> bytes:
    return (CP.encode("H20261125") + CP.encode("TESTS".ljust(20)) + CP.encode(" " * 71))


def trailer(count: int, total: int) -> bytes:
    return (CP.encode("T") + CP.encode(f"{count:010d}") + encode_packed(total, 18)
            + CP.encode(" " * 79))


def fb(records: list[bytes]) -> bytes:
    return b"".join(records)


def rdw(rec: bytes) -> bytes:
    return (len(rec) + 4).to_bytes(2, "big") + b"\0\0" + rec


def vb(records: list[bytes]) -> bytes:
    return b"".join(rdw(r) for r in records)


def blocked(records: list[bytes], per_block: int) -> bytes:
    out = b""
    for i in range(0, len(records), per_block):
        body = vb(records[i:i + per_block])
        out += (len(body) + 4).to_bytes(2, "big") + b"\0\0" + body
    return out


def sample(n: int = 7) -> tuple[list[bytes], int]:
    amounts = [(-1) ** i * (1000 * i + 7) for i in range(n)]
    return [header()] + [detail(f"T{i:03d}", a) for i, a in enumerate(amounts)] + \
        [trailer(n, sum(amounts))], sum(amounts)


def copybook_job(tmp_path: Path, book: str, name: str, input_keys: str,
                 tables: tuple[str, str, str]) -> JobConfig:
    """A job of one copybook (records HDR, DTL, TRL told apart by REC-TYPE H, D, T; the
    amount AMT, the trailer's CNT and TOTAL) on a SQLite file in tmp_path."""
    staging, final, key = tables
    (tmp_path / "b.cpy").write_text(book)
    (tmp_path / "job.toml").write_text(f"""
[job]
name = "{name}"
[input]
{input_keys}
[copybook]
path = "b.cpy"
header = "HDR"
detail = "DTL"
trailer = "TRL"
record_type = "rec_type"
header_type = "H"
detail_type = "D"
trailer_type = "T"
[output]
dir = "{tmp_path / 'work'}"
[database]
url = "sqlite:///{tmp_path / 'db.sqlite'}"
[tables]
staging = "{staging}"
final = "{final}"
key = "{key}"
amount = "amt"
[control]
trailer_count = "cnt"
trailer_amount = "total"
""")
    return load_config(tmp_path / "job.toml")


def run(config: JobConfig, path: Path, data: bytes, processors: int = 2) -> RunOutcome:
    path.write_bytes(data)
    return run_job(config.with_overrides(input_path=path, processors=processors))


# --- end to end ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fb", "vb"])
def test_ebcdic_job_equals_the_text_job_on_the_same_data(
        tmp_path: Path, db_url: str, ebcdic_config: JobConfig, kind: str) -> None:
    options = {"seed": 11, "reject_rate": 0.01, "duplicate_rate": 0.01}
    text = generate_file(tmp_path / "in.txt", 3_000, **options)  # type: ignore[arg-type]
    binary = generate_mainframe_file(tmp_path / "in.bin", 3_000, f"ebcdic-{kind}", **options)
    text_config = load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=db_url, input_path=text.path)
    config = as_format(ebcdic_config, kind).with_overrides(input_path=binary.path,
                                                           processors=3, batch_size=500)

    text_run, ebcdic_run = run_job(text_config), run_job(config)

    assert ebcdic_run.exit_code == 0, ebcdic_run.message
    assert text_run.exit_code == 0, text_run.message
    assert ebcdic_run.rejects == text_run.rejects == 30
    assert ebcdic_run.metrics and ebcdic_run.metrics.total_read == 3_000
    assert ebcdic_run.duplicates_collapsed == text_run.duplicates_collapsed
    assert final_txns(config) == final_txns(text_config)


def test_blocked_vb_with_records_split_across_processors(
        tmp_path: Path, ebcdic_config: JobConfig) -> None:
    records, total = sample(10)
    config = as_format(ebcdic_config, "vb", blocked=True)
    outcome = run(config, tmp_path / "in.vbb", blocked(records, 3), processors=3)
    assert outcome.exit_code == 0, outcome.message
    rows = final_txns(config)
    assert len(rows) == 10 and sum(r[2] for r in rows.values()) == total
    staging = job_tables(config).staging
    with engine_for(config.database_url) as engine, engine.connect() as conn:
        lines = conn.execute(select(staging.c.source_line, staging.c.txn_id)).all()
    # SOURCE_LINE is the record number: the header is record 1
    assert sorted(lines) == [(i + 2, f"T{i:03d}") for i in range(10)]


@pytest.mark.parametrize("kind", ["fb", "vb"])
def test_a_file_of_header_and_trailer_only(tmp_path: Path, ebcdic_config: JobConfig,
                                           kind: str) -> None:
    config = as_format(ebcdic_config, kind)
    data = (fb if kind == "fb" else vb)([header(), trailer(0, 0)])
    outcome = run(config, tmp_path / "in.bin", data)
    assert outcome.exit_code == 0, outcome.message


# --- structure: exit 2 ---------------------------------------------------------------


def _structure_cases() -> list[tuple[str, str, bytes, str]]:
    records, _ = sample(4)
    misplaced = records[:2] + [trailer(4, 0)] + records[2:]
    return [
        ("fb", "short last record", fb(records)[:-7], "not a multiple of the record length"),
        ("fb", "trailer missing", fb(records[:-1]), "not a valid trailer"),
        ("fb", "header missing", fb(records[1:]), "not a valid header"),
        ("fb", "control record inside", fb(misplaced), "header or trailer"),
        ("vb", "RDW past the end", vb(records)[:-3], "not a whole record"),
        ("vb", "RDW not a length", vb(records[:2]) + b"\x00\x68\x01\x00" + records[2]
         + vb(records[3:]), "record descriptor word at byte offset 208"),
        ("vb", "short header", rdw(header()[:50]) + vb(records[1:]), "a header"),
        ("vbb", "block not filled", b"\x00\xc8\x00\x00" + vb(records[:2])[:196]
         + blocked(records[2:], 2), "do not fill it"),
        # the operator's hints: the file's descriptor words say which format it is
        ("fb", "a VB file to an FB job", vb(records),
         "it looks like RECFM=VB: its first 4 bytes X'00680000' read as a record descriptor "
         'word (a 104-byte record, the next one where it ends): input.format = "vb"'),
        ("fb", "a blocked file to an FB job", blocked(records, 2),
         'it looks like blocked VB: its first 8 bytes X\'00D4000000680000\' read as a block '
         'descriptor (a 212-byte block) and a record descriptor (a 104-byte record): '
         'input.format = "vb" and input.blocked = true'),
        ("vb", "a blocked file to a VB job", blocked(records, 2),
         "not a valid header: REC_TYPE"),
        ("vb", "a blocked file to a VB job, hinted", blocked(records, 2), "it looks like blocked"),
        ("fb", "trailer only", fb([trailer(0, 0)]),
         "the file holds one record, a trailer only: no header"),
        ("vb", "header only", vb([header()]),
         "the file holds one record, a header only: no trailer"),
        ("fb", "one record, neither", fb([records[1]]),
         "the file holds one record, neither a header nor a trailer"),
    ]


@pytest.mark.parametrize("kind, case, data, words", _structure_cases(),
                         ids=[c[1] for c in _structure_cases()])
def test_structural_breaks_are_exit_2(tmp_path: Path, ebcdic_config: JobConfig, kind: str,
                                      case: str, data: bytes, words: str) -> None:
    config = as_format(ebcdic_config, kind[:2], blocked=kind == "vbb")
    outcome = run(config, tmp_path / "in.bin", data)
    assert outcome.exit_code == 2, (case, outcome.message)
    assert words in outcome.message, outcome.message
    assert final_txns(config) == {}


# --- record-level defects: rejects ----------------------------------------------------


def test_bad_packed_amount_is_rejected_with_offset_and_hex(
        tmp_path: Path, ebcdic_config: JobConfig) -> None:
    records, total = sample(5)
    bad = detail("BAD01", 0, packed=b"\x00\x00\x00\x01\x23\x4a\x57")
    records.insert(3, bad)
    records[-1] = trailer(6, total)
    outcome = run(ebcdic_config, tmp_path / "in.bin", fb(records))

    # the bad record's amount is unknowable: the trailer total cannot be proven
    assert outcome.exit_code == 1, outcome.message
    checks = {r.check_name: r for r in outcome.results}
    assert checks["source_trailer_count"].passed
    assert not checks["source_trailer_amount"].passed
    assert outcome.metrics and outcome.metrics.total_read == 6
    assert outcome.metrics.total_read == outcome.rejects + 5
    assert outcome.reject_file is not None
    line, reason, dump = outcome.reject_file.read_text().splitlines()[0].split("\t")
    assert line == "4"
    assert "AMOUNT" in reason and "nibble" in reason and "byte offset 300" in reason
    assert dump.replace(" ", "") == bad.hex().upper()
    assert final_txns(ebcdic_config) == {}


def test_rejects_keep_amounts_readable_and_the_job_balances(
        tmp_path: Path, ebcdic_config: JobConfig) -> None:
    records, total = sample(4)
    extra = [detail("BADACCT", 500, account="00000A0001"),
             detail("BADDATE", -20, date="20261131"),
             detail("", 30),
             detail("CTRL", 1, desc="A\x05B")]
    records = records[:-1] + extra + [trailer(8, total + 511)]
    # 4 of 8 records rejected on purpose: the reject limit is not what this tests
    config = ebcdic_config.with_overrides(max_reject_rate=Decimal(1))
    outcome = run(config, tmp_path / "in.bin", fb(records))
    assert outcome.exit_code == 0, outcome.message
    assert outcome.rejects == 4
    assert outcome.metrics and outcome.metrics.total_read == 8
    assert len(final_txns(ebcdic_config)) == 4


def test_vb_detail_of_the_wrong_length_is_rejected(tmp_path: Path,
                                                   ebcdic_config: JobConfig) -> None:
    records, total = sample(3)
    records.insert(2, detail("SHORT", 0)[:60])
    records[-1] = trailer(4, total)
    config = as_format(ebcdic_config, "vb")
    outcome = run(config, tmp_path / "in.bin", vb(records))
    # a cut record's amount cannot be read: the count balances, the amount is unprovable
    assert outcome.exit_code == 1
    assert outcome.rejects == 1
    assert outcome.reject_file is not None
    assert "60 bytes long" in outcome.reject_file.read_text()


def test_trailer_count_mismatch_is_exit_1(tmp_path: Path, ebcdic_config: JobConfig) -> None:
    records, total = sample(3)
    records[-1] = trailer(4, total)
    outcome = run(ebcdic_config, tmp_path / "in.bin", fb(records))
    assert outcome.exit_code == 1
    assert not {r.check_name: r for r in outcome.results}["source_trailer_count"].passed
    with engine_for(ebcdic_config.database_url) as engine, engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(
            job_tables(ebcdic_config).final)).scalar() == 0


# --- framing: every detail record read exactly once, whatever the cuts ----------------


@pytest.mark.parametrize("kind", ["fb", "vb", "vbb"])
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
@pytest.mark.parametrize("chunk", [97, 1000, 1 << 20])
def test_every_detail_is_read_once_whatever_the_ranges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, parts: int,
        chunk: int) -> None:
    from pipeline.layouts import recfm

    monkeypatch.setattr(recfm, "CHUNK", chunk)
    config = as_format(load_config(shipped_config(JOB)), kind[:2], blocked=kind == "vbb")
    assert isinstance(config.input_format, MainframeInput)
    records, total = sample(23)
    if kind != "fb":  # records of other lengths among them: rejected, still read once
        records[5] = records[5][:40]
        records[9] = records[9] + b"\x40" * 30
    data = {"fb": fb, "vb": vb, "vbb": lambda r: blocked(r, 4)}[kind](records)
    path = tmp_path / "in.bin"
    path.write_bytes(data)

    plan = config.input_format.plan(path, parts)

    assert plan.trailer == {"detail_count": 23, "amount_total": total}
    assert plan.detail_lines == 23
    seen: list[int] = []
    for rng in plan.ranges:
        for batch in config.input_format.read(path, rng, 3, "amount"):
            seen += batch.lines.tolist() + [r.line for r in batch.rejects]
    assert sorted(seen) == list(range(2, 25))


def test_a_packed_numeric_key_is_kept_as_digits(tmp_path: Path) -> None:
    book = """
       01  HDR.
           05  REC-TYPE PIC X.
           05  FILLER   PIC X(9).
       01  DTL.
           05  REC-TYPE PIC X.
           05  ACCT     PIC 9(7) COMP-3.
           05  AMT      PIC S9(5)V99 COMP-3.
           05  FILLER   PIC X(4).
       01  TRL.
           05  REC-TYPE PIC X.
           05  CNT      PIC 9(4) COMP.
           05  TOTAL    PIC S9(15)V99 COMP-3.
           05  FILLER   PIC X.
"""
    config = copybook_job(tmp_path, book, "packed_key", 'format = "fb"\nrecord_length = 13',
                          ("stg_acct", "acct", "acct"))
    assert config.detail.field("acct").type.value == "digits"
    h = CP.encode("H") + CP.encode(" " * 12)
    d1 = CP.encode("D") + encode_packed(42, 7, 0xF) + encode_packed(-150, 7) + b"\x40" * 4
    d2 = CP.encode("D") + encode_packed(1234567, 7, 0xF) + encode_packed(99, 7) + b"\x40" * 4
    t = CP.encode("T") + (2).to_bytes(2, "big") + encode_packed(-51, 17) + b"\x40" * 1
    outcome = run(config, tmp_path / "in.bin", h + d1 + d2 + t)
    assert outcome.exit_code == 0, outcome.message
    with engine_for(config.database_url) as engine:
        rows = {key: amt for key, (amt,) in final_rows(engine, config, "amt").items()}
    assert rows == {"0000042": -150, "1234567": 99}


# --- the generator -------------------------------------------------------------------


def test_generate_is_deterministic_and_framed(tmp_path: Path) -> None:
    a = generate_mainframe_file(tmp_path / "a.fb", 500, "ebcdic-fb", seed=4, reject_rate=0.02)
    b = generate_mainframe_file(tmp_path / "b.fb", 500, "ebcdic-fb", seed=4, reject_rate=0.02)
    v = generate_mainframe_file(tmp_path / "c.vb", 500, "ebcdic-vb", seed=4, reject_rate=0.02)
    fb_bytes, vb_bytes = a.path.read_bytes(), v.path.read_bytes()
    assert fb_bytes == b.path.read_bytes()
    assert len(fb_bytes) == 502 * 100 and a.rejects == 10
    # VB: the same records, each behind its RDW
    assert vb_bytes == b"".join(rdw(fb_bytes[i:i + 100]) for i in range(0, len(fb_bytes), 100))
    # some descriptions are padded with LOW-VALUES, as real extracts are
    assert any(fb_bytes[i + 84] == 0 for i in range(100, 50100, 100))
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.txt"))


def test_generate_cli_writes_ebcdic(tmp_path: Path) -> None:

    out = tmp_path / "x.vb"
    done = run_cli(tmp_path, "generate", "--records", "50", "--out", str(out),
                   "--format", "ebcdic-vb", "--reject-rate", "0.1", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "5 rejectable" in done.stdout
    assert out.read_bytes()[:5] == b"\x00\x68\x00\x00" + CP.encode("H")


def test_zoned_binary_and_separate_signs_end_to_end(tmp_path: Path) -> None:
    book = """
       01  HDR.
           05  REC-TYPE PIC X.
           05  FILLER   PIC X(19).
       01  DTL.
           05  REC-TYPE PIC X.
           05  REF      PIC X(4).
           05  AMT      PIC S9(5)V99.
           05  ADJ      PIC S9(3) SIGN LEADING SEPARATE.
           05  QTY      PIC S9(4) COMP.
           05  BIG      PIC S9(9) COMP-5.
           05  FILLER   PIC X(2).
       01  TRL.
           05  REC-TYPE PIC X.
           05  CNT      PIC 9(5).
           05  TOTAL    PIC S9(9)V99 SIGN TRAILING SEPARATE.
           05  FILLER   PIC X(2).
"""
    config = copybook_job(tmp_path, book, "zoned_job", 'format = "vb"\nencoding = "cp500"',
                          ("stg_zoned", "zoned", "ref"))
    cp = code_page("cp500")

    def dtl(ref: str, amt: str, adj: str, qty: int, big: int) -> bytes:
        return (cp.encode("D" + ref) + cp.encode(amt) + cp.encode(adj)
                + qty.to_bytes(2, "big", signed=True) + big.to_bytes(4, "big", signed=True)
                + cp.encode("  "))

    details = [dtl("A001", "0012345", "-012", -7, -2_000_000_000),  # +123.45
               dtl("A002", "000123J", "+005", 9999, 5),  # -12.31: J is -1 overpunched
               dtl("A003", "000100{", "+000", 0, 0),  # +10.00
               dtl("A004", "00001X5", "+000", 0, 0)]  # not zoned: rejected, amount unknown
    data = [cp.encode("H" + " " * 19)] + details + [cp.encode("T00004" + "00000012114+  ")]
    outcome = run(config, tmp_path / "in.vb", vb(data))

    # the reject's amount cannot be read: the trailer total is unprovable -> exit 1
    assert outcome.exit_code == 1 and outcome.rejects == 1
    assert outcome.reject_file is not None
    assert "byte 6 X'E7' is not a digit" in outcome.reject_file.read_text()
    staging = job_tables(config).staging
    with engine_for(config.database_url) as engine, engine.connect() as conn:
        rows = {r.ref: (r.amt, r.adj, r.qty, r.big) for r in conn.execute(select(staging))}
    assert rows == {"A001": (12345, -12, -7, -2_000_000_000), "A002": (-1231, 5, 9999, 5),
                    "A003": (1000, 0, 0, 0)}


def test_national_characters_reach_the_database(tmp_path: Path, ebcdic_config: JobConfig) -> None:
    assert isinstance(ebcdic_config.input_format, MainframeInput)
    cp273 = code_page("cp273")
    mf = ebcdic_config.input_format
    decoders = {role: dataclasses.replace(getattr(mf, role), code_page=cp273,
                                          type_value=cp273.encode(getattr(mf, role)
                                                                  .type_value.decode("cp037")))
                for role in ("header", "detail", "trailer")}
    decoders["detail"] = dataclasses.replace(
        decoders["detail"], control_values=(cp273.encode("H"), cp273.encode("T")))
    config = ebcdic_config.with_overrides(input_format=dataclasses.replace(mf, **decoders))

    def enc(text: str) -> bytes:
        return text.encode("cp273")

    rec = (enc("D") + enc("UML1".ljust(16)) + enc("0000000001") + enc("20261124")
           + encode_packed(995, 13) + enc("EUR") + enc("Größe Übermaß äöü ß".ljust(40))
           + enc(" " * 15))
    data = (enc("H20261125") + enc("TESTS".ljust(20)) + enc(" " * 71) + rec
            + enc("T") + enc(f"{1:010d}") + encode_packed(995, 18) + enc(" " * 79))
    outcome = run(config, tmp_path / "in.bin", data)
    assert outcome.exit_code == 0, outcome.message
    assert final_txns(config)["UML1"][4] == "Größe Übermaß äöü ß"


@pytest.mark.slow
@pytest.mark.postgresql
def test_national_characters_on_a_latin1_postgresql_database(tmp_path: Path, pg_url: str) -> None:
    """The COPY payload is UTF-8 whatever the database's encoding."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    admin_url = make_url(pg_url)
    name = f"{admin_url.database}_latin1"
    admin = create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE \"{name}\" ENCODING 'LATIN1' LC_COLLATE 'C' "
                          "LC_CTYPE 'C' TEMPLATE template0"))
    try:
        url = admin_url.set(database=name).render_as_string(hide_password=False)
        config = load_config(shipped_config(JOB)).with_overrides(
            output_dir=tmp_path / "work", database_url=url, heartbeat_timeout=10.0)
        words = "Gr\u00f6\u00dfe \u00e4\u00f6\u00fc"
        records, total = sample(2)
        umlauts = detail("UML1", 5)
        umlauts = umlauts[:45] + words.encode("cp037").ljust(40, b"\x40") + umlauts[85:]
        records.insert(1, umlauts)
        records[-1] = trailer(3, total + 5)
        outcome = run(config, tmp_path / "in.bin", fb(records))
        assert outcome.exit_code == 0, outcome.message
        assert final_txns(config)["UML1"][4] == words
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_directory_as_input_or_output_is_named(tmp_path: Path) -> None:
    """It said '4096 bytes, not a multiple...' and printed a raw [Errno 21]."""
    for job in ("daily_transactions_ebcdic", "daily_transactions"):
        check = run_cli(tmp_path, "validate", job, "--input", str(tmp_path), timeout=60)
        assert check.returncode == 2 and "Traceback" not in check.stderr
        assert f"input file {tmp_path} is a directory" in check.stderr, check.stderr
    for fmt in ("fixed", "ebcdic-fb"):
        made = run_cli(tmp_path, "generate", "--records", "5", "--out", str(tmp_path),
                       "--format", fmt, timeout=60)
        assert made.returncode == 2 and "Errno" not in made.stderr
        assert f"--out {tmp_path} is a directory: name the file to write" in made.stderr


def test_the_shipped_vb_job_reads_its_sample_and_what_generate_writes(tmp_path: Path) -> None:
    """`generate --format ebcdic-vb` had no shipped job that reads it."""
    db = f"sqlite:///{tmp_path / 'vb.db'}"
    first = run_cli(tmp_path, "run", "daily_transactions_ebcdic_vb", "--db", db, timeout=120)
    assert first.returncode == 0, first.stderr
    made = run_cli(tmp_path, "generate", "--format", "ebcdic-vb", "--records", "300",
                   "--seed", "9", "--out", str(tmp_path / "night.vb"), timeout=60)
    assert made.returncode == 0, made.stderr
    check = run_cli(tmp_path, "validate", "daily_transactions_ebcdic_vb",
                    "--input", str(tmp_path / "night.vb"), timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "300 read" in check.stdout
    config = load_config(shipped_config("daily_transactions_ebcdic_vb"))
    assert isinstance(config.input_format, MainframeInput) and config.input_format.fmt.kind == "vb"
    with engine_for(db) as engine, engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(
            job_tables(config).final)).scalar_one() == 20


# --- framing options: bytes around the records, RDWs of other tools -------------------


def framed(config: JobConfig, kind: str, **options: Any) -> JobConfig:
    config = as_format(config, kind[:2], blocked=kind == "vbb")
    assert isinstance(config.input_format, MainframeInput)
    fmt = dataclasses.replace(config.input_format.fmt, **options)
    return config.with_overrides(input_format=dataclasses.replace(config.input_format, fmt=fmt))


@pytest.mark.parametrize("kind", ["fb", "vb", "vbb"])
def test_a_file_header_and_footer_that_are_not_records(
        tmp_path: Path, ebcdic_config: JobConfig, kind: str) -> None:
    records, total = sample(9)
    body = {"fb": fb, "vb": vb, "vbb": lambda r: blocked(r, 4)}[kind](records)
    data = b"TRANSFER HEADER OF 37 BYTES,NO RECORD" + body + b"FOOTER 11 B"
    plain = run(as_format(ebcdic_config, kind[:2], blocked=kind == "vbb"),
                tmp_path / "plain.bin", data)
    assert plain.exit_code == 2  # read as records, the prefix is no header
    config = framed(ebcdic_config, kind, file_start=37, file_end=11)
    outcome = run(config, tmp_path / "in.bin", data, processors=3)
    assert outcome.exit_code == 0, outcome.message
    rows = final_txns(config)
    assert len(rows) == 9 and sum(r[2] for r in rows.values()) == total


@pytest.mark.parametrize("big_endian, adjustment, rdw_of", [
    (False, 0, lambda n: b"\0\0" + n.to_bytes(2, "little")),  # little-endian
    (True, 4, lambda n: (n - 4).to_bytes(2, "big") + b"\0\0"),  # counts the data only
    (False, -2, lambda n: b"\0\0" + (n + 2).to_bytes(2, "little")),
])
def test_rdws_of_other_byte_orders_and_counts(tmp_path: Path, ebcdic_config: JobConfig,
                                              big_endian: bool, adjustment: int,
                                              rdw_of: Any) -> None:
    records, total = sample(8)
    data = b"".join(rdw_of(len(r) + 4) + r for r in records)
    standard = run(as_format(ebcdic_config, "vb"), tmp_path / "std.bin", data)
    assert standard.exit_code == 2 and "record descriptor word" in standard.message
    config = framed(ebcdic_config, "vb", rdw_big_endian=big_endian, rdw_adjustment=adjustment)
    assert isinstance(config.input_format, MainframeInput)
    assert config.input_format.fmt.rdw(104) == rdw_of(104)
    outcome = run(config, tmp_path / "in.bin", data)
    assert outcome.exit_code == 0, outcome.message
    assert sum(r[2] for r in final_txns(config).values()) == total


def test_framing_options_in_the_config(tmp_path: Path) -> None:
    from tests.conftest import write_job

    book = shipped_config(JOB).parent / "daily_transactions_ebcdic.cpy"
    (tmp_path / book.name).write_text(book.read_text())
    vb_job = write_job(tmp_path / "vb.toml", (
        'encoding = "cp037"', 'encoding = "cp037"\nfile_start_offset = 4\nfile_end_offset = 8\n'
        'rdw_big_endian = false\nrdw_adjustment = 4'), job="daily_transactions_ebcdic_vb")
    (tmp_path / "daily_transactions_ebcdic_vb.bin").write_bytes(b"")
    fmt = load_config(vb_job).input_format.fmt  # type: ignore[attr-defined]
    assert (fmt.file_start, fmt.file_end, fmt.rdw_big_endian, fmt.rdw_adjustment) == (
        4, 8, False, 4)
    for edit, words in [("rdw_adjustment = 2", "only for input.format vb"),
                        ("file_start_offset = -1", "a number of bytes")]:
        job = write_job(tmp_path / "fb.toml", ('encoding = "cp037"', f'encoding = "cp037"\n{edit}'),
                        job=JOB)
        with pytest.raises(ConfigError, match=words):
            load_config(job)
    text_job = write_job(tmp_path / "t.toml", ('format = "fixed"',
                                               'format = "fixed"\nfile_end_offset = 3'))
    with pytest.raises(ConfigError, match="only for input.format fb or vb"):
        load_config(text_job)


def test_a_file_shorter_than_its_offsets(tmp_path: Path, ebcdic_config: JobConfig) -> None:
    outcome = run(framed(ebcdic_config, "fb", file_start=60, file_end=60), tmp_path / "in.bin",
                  fb([header()]))
    assert outcome.exit_code == 2
    assert "nothing between input.file_start_offset 60 and input.file_end_offset 60" \
        in outcome.message
