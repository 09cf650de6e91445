"""A copybook job's configuration: what it is turned into, and each mistake named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.inputs.mainframe import MainframeInput
from pipeline.jobs import shipped_config
from pipeline.layouts.fields import FieldType
from tests.conftest import write_job

pytestmark = pytest.mark.timeout(60)

BOOK = (Path(__file__).parents[2] / "pipeline" / "jobs" / "daily_transactions_ebcdic.cpy")
CONFIG = shipped_config("daily_transactions_ebcdic").read_text()


def write(tmp_path: Path, config: str = CONFIG, book: str | None = None) -> Path:
    (tmp_path / "daily_transactions_ebcdic.cpy").write_text(book or BOOK.read_text())
    path = tmp_path / "job.toml"
    path.write_text(config)
    return path


def test_the_shipped_job_becomes_layouts_the_tables_understand() -> None:
    config = load_config(shipped_config("daily_transactions_ebcdic"))
    types = {f.name: f.type for f in config.detail.fields}
    assert types == {"record_type": FieldType.LITERAL, "txn_id": FieldType.TEXT,
                     "account_id": FieldType.DIGITS, "txn_date": FieldType.DATE,
                     "amount": FieldType.AMOUNT, "currency": FieldType.TEXT,
                     "description": FieldType.TEXT}
    amount = config.amount_field
    assert (amount.length, amount.scale) == (13, 2)
    assert config.detail.field("txn_id").required
    assert config.trailer.field("detail_count").type is FieldType.NUMBER
    assert config.trailer.field("amount_total").type is FieldType.AMOUNT
    assert isinstance(config.input_format, MainframeInput) and config.input_format.fmt.kind == "fb"


@pytest.mark.parametrize("change, words", [
    (("[copybook]", "[copybook]\nextra = 1"), "unknown key copybook.extra"),
    (('detail = "TXN-DETAIL"', 'detail = "TXN-NOPE"'), "copybook.detail: expected the name"),
    (('encoding = "cp037"', 'encoding = "cp1252"'), "input.encoding"),
    (("record_length = 100", "record_length = 90"), "longer than input.record_length"),
    (("record_length = 100", ""), "input.record_length"),
    # bounded before anything is read: a batch of such records would be terabytes
    (("record_length = 100", "record_length = 99999999999"), "more than a record holds"),
    (('dates = ["business_date", "txn_date"]', 'dates = ["description"]'), "PIC 9(8)"),
    (('detail_type = "D"', 'detail_type = "DD"'), "longer than rec_type"),
    (('detail_type = "D"', 'detail_type = "\u00e9"'), "printable ASCII"),
    (('path = "daily_transactions_ebcdic.cpy"', 'path = "missing.cpy"'), "cannot be read"),
    (("[copybook]", '[layout]\nheader = []\n[copybook]'), "[layout]"),
    (('key = "txn_id"', 'key = "amount"'), "tables.key"),
])
def test_config_mistakes_are_named(tmp_path: Path, change: tuple[str, str], words: str) -> None:
    old, new = change
    assert old in CONFIG
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, CONFIG.replace(old, new, 1)))
    assert words in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("change, words", [
    (("05  DESCRIPTION             PIC X(40).", "05  ACCOUNT-ID              PIC X(40)."),
     "twice"),
    (("05  AMOUNT                  PIC S9(11)V99 COMP-3.",
      "05  AMOUNT                  PIC S9(13)P(6) COMP-3."), "at most 18"),
    (("05  CURRENCY                PIC X(3).",
      "05  CURRENCY-CODE-OF-THE-TRANSACTION-X PIC X(3)."), "cannot be a column name"),
])
def test_copybook_mistakes_name_the_line(tmp_path: Path, change: tuple[str, str],
                                         words: str) -> None:
    book = BOOK.read_text()
    assert change[0] in book
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, CONFIG, book=book.replace(*change)))
    assert words in str(err.value) and "copybook line" in str(err.value)


def test_a_text_job_refuses_mainframe_keys(tmp_path: Path) -> None:
    write_job(tmp_path / "job.toml", ('format = "fixed"', 'format = "fixed"\nencoding = "cp037"'))
    with pytest.raises(ConfigError, match="only for input.format fb or vb"):
        load_config(tmp_path / "job.toml")


def test_a_detail_shorter_than_the_record_length_is_refused_never_read_shifted(
        tmp_path: Path) -> None:
    """The issue's run: a copybook 3 bytes short read DESCRIPTION 3 bytes off and SUCCEEDED."""
    from pipeline.generate_mainframe import generate_mainframe_file
    from tests.conftest import run_cli

    book = BOOK.read_text().replace("05  CURRENCY                PIC X(3).\n", "")
    config = write(tmp_path, CONFIG, book=book)
    generate_mainframe_file(tmp_path / "in.bin", 20, seed=1)
    run = run_cli(tmp_path, "run", str(config), "--input", str(tmp_path / "in.bin"),
                  "--db", f"sqlite:///{tmp_path / 'x.db'}", timeout=60)
    assert run.returncode == 2, run.stderr
    assert ("copybook.detail: record txn_detail is 97 bytes, shorter than "
            "input.record_length 100") in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "x.db").exists()
