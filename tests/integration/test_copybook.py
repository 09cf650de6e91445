"""The copybook parser: what real copybooks hold, and a one-line error for what it refuses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.layouts.copybook import CopybookError, Usage, parse_copybook
from tests.conftest import run_cli, write_job

pytestmark = pytest.mark.timeout(60)

# fixed format: sequence numbers in 1-6, indicator in 7, code in 8-72, ids in 73-80
REALISTIC = """\
000100* CUSTOMER MASTER EXTRACT                                         CUSTMAST
000200 01  CUSTOMER-RECORD.                                             CUSTMAST
000300     05  CUST-KEY.                                                CUSTMAST
000400         10  CUST-BRANCH         PIC X(4).                        CUSTMAST
000500         10  CUST-NUMBER         PIC 9(8).                        CUSTMAST
000600     05  CUST-NAME               PIC X(30).                       CUSTMAST
000700     05  CUST-TYPE               PIC X.                           CUSTMAST
000800         88  CUST-RETAIL         VALUE 'R'.                       CUSTMAST
000900         88  CUST-CORPORATE      VALUE 'C'.                       CUSTMAST
001000     05  FILLER                  PIC X(5).                        CUSTMAST
001100     05  CUST-BALANCE            PIC S9(13)V99 COMP-3.            CUSTMAST
001200     05  CUST-LIMIT PIC S9(7)V99 USAGE IS COMPUTATIONAL-3.          CUSTMAST
001300     05  CUST-SCORE              PIC S9(4) COMP.                  CUSTMAST
001400     05  CUST-COUNTER            PIC 9(9) BINARY.                 CUSTMAST
001500     05  CUST-HUGE               PIC S9(18) COMP-5.               CUSTMAST
001600     05  CUST-RATE               PIC SV9(5) COMP-3.               CUSTMAST
001700     05  CUST-ADJ                PIC S9(5)V99                     CUSTMAST
001800                                 SIGN IS LEADING SEPARATE.        CUSTMAST
001900     05  CUST-TRAIL              PIC S9(3) SIGN TRAILING.         CUSTMAST
002000     05  CUST-HISTORY OCCURS 3 TIMES.                             CUSTMAST
002100         10  HIST-AMT            PIC S9(5)V99 COMP-3.             CUSTMAST
002200         10  HIST-CODE           PIC XX.                          CUSTMAST
002300     05  CUST-ALT REDEFINES CUST-HISTORY.                         CUSTMAST
002400         10  FILLER              PIC X(18).                       CUSTMAST
002500     05  CUST-THOUSANDS          PIC 9(3)PPP.                     CUSTMAST
002600     05  CUST-OPEN-DATE          PIC 9(8) VALUE ZEROS.            CUSTMAST
"""


def test_realistic_copybook_offsets_and_sizes() -> None:
    rec = parse_copybook(REALISTIC)["customer_record"]
    got = {it.name: (it.offset, it.size) for it in rec.items}
    assert got == {
        "cust_branch": (0, 4), "cust_number": (4, 8), "cust_name": (12, 30),
        "cust_type": (42, 1),  # FILLER of 5 follows
        "cust_balance": (48, 8),  # 15 digits packed: 8 bytes
        "cust_limit": (56, 5), "cust_score": (61, 2), "cust_counter": (63, 4),
        "cust_huge": (67, 8), "cust_rate": (75, 3), "cust_adj": (78, 8),
        "cust_trail": (86, 3),
        "hist_amt_1": (89, 4), "hist_code_1": (93, 2),
        "hist_amt_2": (95, 4), "hist_code_2": (99, 2),
        "hist_amt_3": (101, 4), "hist_code_3": (105, 2),
        "cust_thousands": (107, 3), "cust_open_date": (110, 8),
    }
    assert rec.size == 118
    items = {it.name: it for it in rec.items}
    assert items["cust_balance"].usage is Usage.PACKED and items["cust_balance"].scale == 2
    assert items["cust_score"].usage is Usage.BINARY and items["cust_score"].signed
    assert items["cust_huge"].usage is Usage.NATIVE
    assert items["cust_rate"].scale == 5 and items["cust_rate"].digits == 5
    adj = items["cust_adj"]
    assert adj.sign_leading and adj.sign_separate and adj.digits == 7
    assert not items["cust_trail"].sign_leading and not items["cust_trail"].sign_separate
    assert items["cust_thousands"].scale == -3
    assert items["cust_balance"].line == 11


def test_free_format_and_several_records() -> None:
    text = """
      01 HDR.
         05 REC-TYPE PIC X.
         05 FILLER PIC X(9).
      01 DTL.
         05 REC-TYPE PIC X. *> the type
         05 AMT PIC S9(5) COMP-3.
         05 GRP USAGE COMP-3.
            10 A PIC S9(3).
            10 B PIC S9(3).
    """
    books = parse_copybook(text)
    assert list(books) == ["hdr", "dtl"]
    assert books["hdr"].size == 10
    assert [(i.name, i.offset, i.size) for i in books["dtl"].items] == [
        ("rec_type", 0, 1), ("amt", 1, 3), ("a", 4, 2), ("b", 6, 2)]


@pytest.mark.parametrize("clause, words", [
    # OCCURS m TO n DEPENDING ON is read (tests/integration/test_occurs_depending.py); a fixed one
    # with DEPENDING ON is not COBOL
    ("OCCURS 5 DEPENDING ON N PIC X", "DEPENDING ON belongs to an OCCURS m TO n"),
    ("COMP-1", "COMP-1"),
    ("PIC S9(5)V99 COMP-2", "COMP-2"),
    ("PIC ZZ,ZZ9.99", "not a supported picture"),
    ("PIC S9(5) COMP SYNC", "SYNCHRONIZED"),
    ("PIC S9(40) COMP-3", "31 digits"),
    ("USAGE POINTER", "POINTER"),
    # the copybook reader never crashes: what a new user typed, each refused on one line
    ("PIC X(0)", "repeat count of 0"),
    ("PIC X(99999999999)", "more than a record holds"),
    ("PIC X(40000)", "more than a record holds"),
    ("PIC X(20000)X(20000)", "40,000 characters"),
    ("PIC X OCCURS 999999999999 TIMES", "1 to 32760 occurrences"),
    ("PIC X OCCURS 0 TIMES", "1 to 32760 occurrences"),
    ("PIC X(9000) OCCURS 4 TIMES", "36,000 bytes"),
    ("PIC X(3) PIC X(4)", "two PIC clauses"),
    ("PIC S9(5) COMP-3 COMP", "two USAGE clauses"),
    ("PIC X OCCURS 2 TIMES OCCURS 3 TIMES", "two OCCURS clauses"),
    ("REDEFINES NOSUCH PIC X", "not an earlier item of the same group"),
    ("REDEFINES N PIC X(2)", "may not be longer"),
    ("REDEFINES PIC X", "REDEFINES without the name"),
    ("PIC X OCCURS \u00b2 TIMES", "fixed number of times"),
])
def test_refused_clauses_name_the_line(clause: str, words: str) -> None:
    text = f"       01  REC.\n           05  N PIC 9.\n           05  BAD {clause}.\n"
    with pytest.raises(CopybookError) as err:
        parse_copybook(text, "book.cpy")
    assert "book.cpy line 3" in str(err.value) and words in str(err.value)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_structural_errors() -> None:
    with pytest.raises(CopybookError, match="line 1: level 05 before any 01"):
        parse_copybook("       05  A PIC X.\n")
    with pytest.raises(CopybookError, match="does not end with a period"):
        parse_copybook("       01  A PIC X\n")
    with pytest.raises(CopybookError, match="no 01-level record"):
        parse_copybook("      * nothing\n")
    with pytest.raises(CopybookError, match="cannot have subordinate"):
        parse_copybook("       01  A.\n           05 B PIC X.\n              10 C PIC X.\n")


def test_a_refused_copybook_is_exit_2_at_the_command_line(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[2] / "pipeline" / "jobs"
    book = (shipped / "daily_transactions_ebcdic.cpy").read_text()
    (tmp_path / "daily_transactions_ebcdic.cpy").write_text(
        book.replace("PIC S9(11)V99 COMP-3.", "PIC S9(11)V99 COMP-2."))
    job = write_job(tmp_path / "job.toml", job="daily_transactions_ebcdic")
    run = run_cli(tmp_path, "run", str(job), "--input", str(tmp_path / "none.bin"),
                  "--db", f"sqlite:///{tmp_path / 'x.db'}", timeout=60)
    assert run.returncode == 2
    assert "line 16" in run.stderr and "COMP-2" in run.stderr
    assert not (tmp_path / "x.db").exists()


def test_copybook_error_is_a_config_error() -> None:
    assert issubclass(CopybookError, ConfigError)


def test_clauses_in_any_order_and_names_after_indexed_by() -> None:
    rec = parse_copybook("""
       01 R.
          05 A PIC S9(5) VALUE ZERO COMP-3.
          05 B PIC X(3) VALUE 'A B'.
          05 T OCCURS 2 TIMES INDEXED BY IX1 IX2.
             10 C PIC S9(3)V9 VALUE -12.5
                SIGN IS LEADING SEPARATE CHARACTER.
          05 D PIC 9(4) USAGE IS BINARY VALUE IS 7.
          05 E PIC X(2) VALUE ALL '*'.
""")["r"]
    assert [(i.name, i.offset, i.size) for i in rec.items] == [
        ("a", 0, 3), ("b", 3, 3), ("c_1", 6, 5), ("c_2", 11, 5), ("d", 16, 2), ("e", 18, 2)]
    assert rec.item("a").usage is Usage.PACKED and rec.item("d").usage is Usage.BINARY


def test_an_unknown_clause_is_refused_not_guessed() -> None:
    with pytest.raises(CopybookError, match="line 2: unknown clause 'COMP3'"):
        parse_copybook("       01 R.\n          05 A PIC S9(5) COMP3.\n")


def test_alphanumeric_sequence_area_and_free_format_at_column_1() -> None:
    fixed = "CB0010 01  R.\nCB0020     05  A PIC X(2).\nCB0030*    05  B PIC X(9).\nCB0040\n"
    assert [(i.name, i.size) for i in parse_copybook(fixed)["r"].items] == [("a", 2)]
    free = "01 R.\n05 A   PIC X(3).\n05 B PIC 9(2).\n"
    assert [(i.name, i.size) for i in parse_copybook(free)["r"].items] == [("a", 3), ("b", 2)]


def test_huge_numbers_are_refused_fast() -> None:
    """Bounded before anything is expanded: these took minutes or a MemoryError."""
    for clause in ("FILLER PIC X OCCURS 999999999999 TIMES", "A PIC X(99999999999)",
                   "A PIC X(" + "9" * 5000 + ")", "G OCCURS 30000.\n 10 H OCCURS 30000 PIC X"):
        start = time.monotonic()
        with pytest.raises(CopybookError):
            parse_copybook(f"01 REC.\n 05 {clause}.\n")
        assert time.monotonic() - start < 0.5, clause


def test_a_level_number_that_is_not_one() -> None:
    with pytest.raises(CopybookError, match="line 2: expected a level number"):
        parse_copybook("01 R.\n" + "9" * 5000 + " A PIC X.\n")
    with pytest.raises(CopybookError, match="line 2: expected a level number"):
        parse_copybook("01 R.\n\u00b2 A PIC X.\n")


def test_a_redefines_of_nothing_and_a_redefined_record() -> None:
    with pytest.raises(CopybookError, match="line 3: a REDEFINES b, which is not an earlier"):
        parse_copybook("01 R.\n 05 G.\n  10 A REDEFINES B PIC X.\n 05 C PIC X.\n")
    with pytest.raises(CopybookError, match="line 3: s REDEFINES nosuch, which is not an ear"):
        parse_copybook("01 R.\n 05 A PIC X.\n01 S REDEFINES NOSUCH.\n 05 B PIC X.\n")
    books = parse_copybook("01 R.\n 05 A PIC X(4).\n01 S REDEFINES R.\n 05 B PIC X(2).\n")
    assert books["s"].size == 2


def test_a_record_cannot_occur() -> None:
    with pytest.raises(CopybookError, match="line 1: a 01 record cannot OCCUR"):
        parse_copybook("01 R OCCURS 3 TIMES.\n 05 A PIC X.\n")


def test_a_redefines_as_long_as_its_target_and_nested_in_a_table() -> None:
    rec = parse_copybook("""
       01 R.
          05 T OCCURS 2 TIMES.
             10 A PIC X(4).
             10 B REDEFINES A PIC 9(4).
          05 C REDEFINES T PIC X(8).
""")["r"]
    assert [(i.name, i.offset) for i in rec.items] == [("a_1", 0), ("a_2", 4)]


def test_continuation_lines_join_a_word_and_a_literal() -> None:
    text = (
        "       01  REC.\n"
        "           05  A    PIC X(2)                                 VALUE 'AB\n"
        "      -    'C'.\n"
        "           05  SYS  PIC X(10) VALUE 'X'. 05  ITEM-NUMBER-OF-THE-SYS\n"
        "      -    TEM PIC X(3).\n"
    )
    rec = parse_copybook(text, "book.cpy")["rec"]
    assert [(i.name, i.offset, i.size) for i in rec.items] == [
        ("a", 0, 2), ("sys", 2, 10), ("item_number_of_the_system", 12, 3)]


def test_a_continuation_with_nothing_before_it_is_named() -> None:
    with pytest.raises(CopybookError, match="line 1: a continuation line"):
        parse_copybook("      -    TEM PIC X(3).\n       01 R.\n           05 A PIC X.\n")


def test_a_word_cut_at_column_72_is_named() -> None:
    line = "           05  DESCRIPTION                                 PIC X(40).  "
    cut = line[:69].ljust(69) + "PIC" + " X(40)."  # 'PIC' at columns 70-72 ...
    assert cut[69:72] == "PIC"
    cut = "           05  DESCRIPTION" + " " * 44 + "PI" + "C X(40)."  # ... 'PIC' split at 72
    text = "       01  REC.\n" + cut + "\n"
    with pytest.raises(CopybookError) as err:
        parse_copybook(text, "book.cpy")
    assert "book.cpy line 2: 'PIC' runs past column 72" in str(err.value)
    assert "columns 73-80" in str(err.value)


def test_an_identification_in_columns_73_to_80_is_ignored() -> None:
    text = ("       01  REC.".ljust(72) + "CUSTMAST\n"
            + "           05  A PIC X(3)".ljust(71) + ".CUSTMAST\n")
    assert [(i.name, i.size) for i in parse_copybook(text)["rec"].items] == [("a", 3)]


def test_a_binary_or_huge_copybook_file_is_refused(tmp_path: Path) -> None:
    from pipeline.layouts.copybook import parse_copybook_file

    (tmp_path / "bin.cpy").write_bytes(b"\xff\xfe\x00 01 R.")
    with pytest.raises(CopybookError, match="cannot be read"):
        parse_copybook_file(tmp_path / "bin.cpy")
    (tmp_path / "big.cpy").write_bytes(b"*" * (5 << 20))
    with pytest.raises(CopybookError, match="not a copybook"):
        parse_copybook_file(tmp_path / "big.cpy")
    with pytest.raises(CopybookError, match="is a directory"):
        parse_copybook_file(tmp_path)


# --- COPY members ------------------------------------------------------------------------


def _library(tmp_path: Path) -> Path:
    lib = tmp_path / "copylib"
    lib.mkdir()
    (lib / "TXNKEY.cpy").write_text("           05  TXN-ID      PIC X(16).\n"
                                    "           05  ACCOUNT-ID  PIC 9(10).\n")
    (lib / "amounts").write_text("      * THE AMOUNTS, ONE LEVEL DOWN\n"
                                 "           05  AMOUNTS.\n"
                                 "               COPY 'money'.\n")
    (lib / "money.CPY").write_text("10 AMT PIC S9(5) COMP-3.\n10 FEE PIC S9(3) COMP-3.\n")
    return lib


def test_copy_members_are_read_from_the_library(tmp_path: Path) -> None:
    lib = _library(tmp_path)
    text = ("       01  REC.\n"
            "           05  REC-TYPE    PIC X.\n"
            "           COPY TXNKEY.\n"
            "           COPY AMOUNTS.\n"
            "           05  TAIL        PIC X.\n")
    rec = parse_copybook(text, "book.cpy", [tmp_path / "nowhere", lib])["rec"]
    assert [(i.name, i.offset, i.size) for i in rec.items] == [
        ("rec_type", 0, 1), ("txn_id", 1, 16), ("account_id", 17, 10), ("amt", 27, 3),
        ("fee", 30, 2), ("tail", 32, 1)]
    assert rec.at(rec.item("tail").line) == "copybook line 5"
    assert rec.at(rec.item("fee").line) == (
        f"{lib / 'money.CPY'} line 2 (COPY money at {lib / 'amounts'} line 3 "
        "(COPY AMOUNTS at book.cpy line 4))")


@pytest.mark.parametrize("line, words", [
    ("COPY NOSUCH.", "book.cpy line 2: COPY NOSUCH: no such member in the copybook library"),
    ("COPY TXNKEY REPLACING ==A== BY ==B==.", "book.cpy line 2: only a plain 'COPY member.'"),
    ("COPY LOOP.", "copies itself or nests more than 8 deep (LOOP -> LOOP)"),
])
def test_copy_mistakes_name_the_line(tmp_path: Path, line: str, words: str) -> None:
    lib = _library(tmp_path)
    (lib / "LOOP.cpy").write_text("           COPY LOOP.\n")
    with pytest.raises(CopybookError) as err:
        parse_copybook(f"       01  REC.\n           {line}\n", "book.cpy", [lib])
    assert words in str(err.value)


def test_a_member_error_names_the_member_and_where_it_was_copied(tmp_path: Path) -> None:
    lib = _library(tmp_path)
    (lib / "BAD.cpy").write_text("           05  A PIC X.\n           05  B PIC X(0).\n")
    with pytest.raises(CopybookError) as err:
        parse_copybook("       01  REC.\n           COPY BAD.\n", "book.cpy", [lib])
    assert str(err.value).startswith(
        f"{lib / 'BAD.cpy'} line 2 (COPY BAD at book.cpy line 2): PIC X(0): a repeat count of 0")


def test_the_copybook_library_in_a_job(tmp_path: Path) -> None:
    from pipeline.config import load_config

    lib = _library(tmp_path)
    shipped = Path(__file__).parents[2] / "pipeline" / "jobs"
    book = (shipped / "daily_transactions_ebcdic.cpy").read_text().replace(
        "           05  TXN-ID                  PIC X(16).\n"
        "           05  ACCOUNT-ID              PIC 9(10).\n", "           COPY TXNKEY.\n")
    (tmp_path / "daily_transactions_ebcdic.cpy").write_text(book)
    job = write_job(tmp_path / "job.toml", ('dates = ["business_date", "txn_date"]',
                                            'dates = ["business_date", "txn_date"]\n'
                                            'library = ["copylib"]'),
                    job="daily_transactions_ebcdic")
    config = load_config(job)
    assert config.detail.field("account_id").start == 18
    (lib / "TXNKEY.cpy").unlink()
    run = run_cli(tmp_path, "validate", str(job), "--input", str(tmp_path / "x.bin"), timeout=60)
    assert run.returncode == 2
    assert "ebcdic.cpy line 13: COPY TXNKEY: no such member in the copybook library" in run.stderr
    assert f"copybook.library: {lib}" in run.stderr and "Traceback" not in run.stderr
