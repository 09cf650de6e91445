"""The CSV layout: the same rules as fixed width, and a second job defined by config alone."""

from __future__ import annotations

import csv
import datetime as dt
import io
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from pipeline.config import JobConfig, load_config, parse_config
from pipeline.errors import ConfigError, InputStructureError
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from pipeline.layouts.csv import CsvLayout, amount_digits, parse_csv_details
from pipeline.layouts.fixed import DetailBatch, parse_details
from pipeline.money import format_minor
from recon import checks
from tests.conftest import engine_for, final_rows, shipped_job, write_job
from tests.reference import detail

pytestmark = pytest.mark.timeout(120)

SAMPLE = Path(shipped_config("customer_balances")).with_suffix(".csv")
BALANCES = load_config(shipped_config("customer_balances"))
FIXED = load_config(shipped_config())


def _csv_twin_of_daily_transactions() -> JobConfig:
    """The shipped fixed-width job as CSV: same fields, no starts, no sign, no filler."""
    data = tomllib.loads(shipped_config().read_text())
    data["input"] = {"format": "csv"}
    for name, fields in data["layout"].items():
        data["layout"][name] = [
            {k: v for k, v in f.items() if k not in ("start", "sign")}
            for f in fields if f["type"] not in ("sign", "filler")]
    return parse_config(data, source=shipped_config())


TWIN = _csv_twin_of_daily_transactions()
FAST = settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])


def csv_lines(*rows: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("ascii")


def parse_balances(*lines: str, first_line: int = 2) -> DetailBatch:
    assert isinstance(BALANCES.detail, CsvLayout)
    data = "".join(line + "\n" for line in lines).encode("latin-1")
    return parse_csv_details(BALANCES.detail, BALANCES.amount, data, first_line)


def assert_invariants(batch: DetailBatch, lines: int, first_line: int = 2) -> None:
    assert batch.records_read == batch.accepted + len(batch.rejects)
    assert batch.records_read + len(batch.misplaced) == lines
    seen = [*batch.lines.tolist(), *(r.line for r in batch.rejects), *batch.misplaced]
    assert sorted(seen) == list(range(first_line, first_line + lines))
    assert all(r.reason for r in batch.rejects)


# --- one set of rules: CSV agrees with fixed width ---------------------------------------

TXN = st.fixed_dictionaries({
    "txn_id": st.sampled_from(["TXN1", "a9Z", "", "X Y", "ABCDEFGHIJKLMNOP", "T-1"]),
    "account": st.sampled_from(["0123456789", "12345678x9", "0000000000"]),
    "date": st.sampled_from(["20261125", "20240229", "20230229", "20261301", "2026112 "]),
    "amount": st.integers(-(10**13) + 1, 10**13 - 1),
    "currency": st.sampled_from(["EUR", "usd", "GB1", "JPY"]),
    "description": st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
})


def both_forms(txns: list[dict[str, Any]]) -> tuple[DetailBatch, DetailBatch]:
    fixed = b"".join(detail(t["txn_id"], t["amount"], account=t["account"], date=t["date"],
                            currency=t["currency"], description=t["description"])
                     for t in txns)
    rows = [["D", t["txn_id"], t["account"], t["date"], format_minor(t["amount"], 2),
             t["currency"], t["description"]] for t in txns]
    assert isinstance(TWIN.detail, CsvLayout)
    return (parse_details(FIXED.detail, FIXED.amount, fixed, 7),
            parse_csv_details(TWIN.detail, TWIN.amount, csv_lines(*rows), 7))


@FAST
@given(st.lists(TXN, min_size=1, max_size=30))
def test_csv_and_fixed_width_agree_on_the_same_records(txns: list[dict[str, Any]]) -> None:
    fixed, from_csv = both_forms(txns)
    assert_invariants(from_csv, len(txns), first_line=7)
    assert from_csv.lines.tolist() == fixed.lines.tolist()
    assert [r.line for r in from_csv.rejects] == [r.line for r in fixed.rejects]
    assert from_csv.columns.keys() == fixed.columns.keys()
    for name, column in fixed.columns.items():
        assert from_csv.columns[name].tolist() == column.tolist(), name
    assert (from_csv.records_read, from_csv.accepted_amount, from_csv.read_amount,
            from_csv.unreadable_amounts) == (fixed.records_read, fixed.accepted_amount,
                                             fixed.read_amount, fixed.unreadable_amounts)


def test_reasons_name_the_same_rule_in_both_formats() -> None:
    bad = {"txn_id": "T1", "account": "0123456789", "date": "20261131", "amount": -5,
           "currency": "eur", "description": "x"}
    fixed, from_csv = both_forms([bad])
    assert from_csv.rejects[0].reason == fixed.rejects[0].reason
    assert "TXN_DATE '20261131' is not a calendar date" in from_csv.rejects[0].reason
    assert "CURRENCY 'eur' is not 3 upper-case letters" in from_csv.rejects[0].reason


# --- rejects, with reasons --------------------------------------------------------------

GOOD = "D,C1,Jane,RET,-1234.56,20261124"


def test_a_valid_line_becomes_typed_columns() -> None:
    batch = parse_balances(GOOD, 'D,C2,"Smith, Jane",SME,+7,20240229')
    assert batch.rejects == [] and batch.lines.tolist() == [2, 3]
    assert batch.columns["balance"].tolist() == [-123456, 700]
    assert batch.columns["name"].tolist() == ["Jane", "Smith, Jane"]
    assert batch.columns["as_of"].tolist() == ["2026-11-24", "2024-02-29"]
    assert batch.accepted_amount == batch.read_amount == -123456 + 700


@pytest.mark.parametrize(("line", "reason"), [
    ("D,C1,Jane,RET,12.345,20261124", "BALANCE '12.345' has more than 2 decimals"),
    ('D,C1,Jane,RET,"1,00",20261124', "BALANCE '1,00' is not a decimal amount"),
    ("D,C1,Jane,RET,12e3,20261124", "BALANCE '12e3' is not a decimal amount"),
    ("D,C1,Jane,RET,,20261124", "BALANCE is empty, expected a decimal amount"),
    ("D,C1,Jane,RET,1.,20261124", "BALANCE '1.' is not a decimal amount"),
    ("D,C1,Jane,RET, 5,20261124", "BALANCE ' 5' is not a decimal amount"),
    ("D,C1,Jane,RET,12345678901234.00,20261124",
     "BALANCE '12345678901234.00' has more than 13 digits before the decimal point"),
])
def test_bad_amount_text_is_rejected_and_its_amount_unreadable(line: str, reason: str) -> None:
    batch = parse_balances(GOOD, line)
    assert_invariants(batch, 2)
    assert [(r.line, r.raw) for r in batch.rejects] == [(3, line.encode())]
    assert batch.rejects[0].reason.startswith(reason)
    assert batch.unreadable_amounts == 1
    assert batch.read_amount == batch.accepted_amount == -123456


@pytest.mark.parametrize(("line", "reason"), [
    ("D,C1," + "N" * 41 + ",RET,1.00,20261124", "NAME 'NNNN"),
    ("D,C1,Jane,RETAIL,1.00,20261124", "SEGMENT 'RETAIL' is 6 characters, at most 3"),
    ("D,C1,Jane,RET,1.00,20261131", "AS_OF '20261131' is not a calendar date YYYYMMDD"),
    ("D,C1,Jane,RET,1.00,2026-11-24", "AS_OF '2026-11-24' is 10 characters, at most 8"),
    ("D,,Jane,RET,1.00,20261124", "CUSTOMER_ID is blank"),
    ("D,C1,Jane,ret,1.00,20261124", "SEGMENT 'ret' is not 3 upper-case letters"),
])
def test_bad_cells_are_rejected_but_their_amount_still_counts(line: str, reason: str) -> None:
    batch = parse_balances(line)
    assert_invariants(batch, 1)
    assert reason in batch.rejects[0].reason
    assert batch.unreadable_amounts == 0 and batch.read_amount == 100


def test_every_broken_cell_is_explained_once() -> None:
    batch = parse_balances("D,C 1,Jane,RETAIL,9.999,20261131")
    assert batch.rejects[0].reason == (
        "CUSTOMER_ID 'C 1         ' is not letters and digits, left-justified; "
        "SEGMENT 'RETAIL' is 6 characters, at most 3; BALANCE '9.999' has more than 2 "
        "decimals; AS_OF '20261131' is not a calendar date YYYYMMDD")


@pytest.mark.parametrize(("line", "reason"), [
    ("D,C1,Jane,RET,1.00", "record has 5 columns, expected 6"),
    (GOOD + ",extra", "record has 7 columns, expected 6"),
    ("", "record is empty"),
    ('D,C1,"Jane,RET,1.00,20261124', "bad quoting: a quote is not closed on its line"),
    ('D,C1,"Ja"ne,RET,1.00,20261124', "bad quoting: ',' expected after '\"'"),
    (GOOD + "\r", "record ends with CR LF"),
])
def test_lines_that_are_no_record_are_rejected_not_dropped(line: str, reason: str) -> None:
    batch = parse_balances(GOOD, line, GOOD)
    assert_invariants(batch, 3)
    assert [r.line for r in batch.rejects] == [3]
    assert batch.rejects[0].reason.startswith(reason)
    assert batch.unreadable_amounts == 1 and batch.accepted == 2


def test_a_quoted_newline_rejects_both_halves_and_nothing_else() -> None:
    batch = parse_balances(GOOD, 'D,C1,"Ja', 'ne",RET,1.00,20261124', GOOD)
    assert_invariants(batch, 4)
    assert [r.line for r in batch.rejects] == [3, 4]
    assert batch.lines.tolist() == [2, 5]


def test_header_and_trailer_inside_the_details_are_misplaced() -> None:
    batch = parse_balances(GOOD, "H,20261125,CRM", "T,1,1.00", GOOD)
    assert_invariants(batch, 4)
    assert batch.misplaced == [3, 4] and batch.records_read == 2


def test_non_ascii_text_is_rejected_and_the_reason_stays_ascii() -> None:
    batch = parse_balances("D,C1,Café,RET,1.00,20261124")
    assert batch.rejects[0].reason.startswith("NAME 'Caf")
    assert batch.rejects[0].reason.endswith("' is not printable ASCII")
    batch.rejects[0].reason.encode("ascii")


def test_amount_text_is_read_exactly() -> None:
    assert amount_digits("-0.01", 15, 2) == ("-", "000000000000001")
    assert amount_digits("+00012.3", 5, 2) == ("+", "01230")
    assert amount_digits("99999999999999999.99", 18, 2) == "'99999999999999999.99' has more " \
                                                          "than 16 digits before the decimal point"


# --- configuration ------------------------------------------------------------------------


def _balances_data() -> dict[str, Any]:
    return tomllib.loads(shipped_config("customer_balances").read_text())


def test_a_csv_amount_carries_its_own_sign() -> None:
    data = _balances_data()
    data["layout"]["detail"][4]["sign"] = "balance_sign"
    with pytest.raises(ConfigError, match="carries its own sign"):
        parse_config(data, source=Path("x.toml"))


@pytest.mark.parametrize("delimiter", ['"', "\n", ";;", ""])
def test_a_bad_delimiter_is_refused(delimiter: str) -> None:
    data = _balances_data()
    data["input"]["delimiter"] = delimiter
    with pytest.raises(ConfigError, match="input.delimiter"):
        parse_config(data, source=Path("x.toml"))


def test_another_delimiter_is_used_everywhere(tmp_path: Path) -> None:
    data = _balances_data()
    data["input"]["delimiter"] = ";"
    config = parse_config(data, source=Path("x.toml"))
    assert isinstance(config.detail, CsvLayout) and config.detail.delimiter == ";"
    path = tmp_path / "semi.csv"
    path.write_text("H;20261125;CRM\nD;C1;Smith, Jane;RET;-1.50;20261124\nT;1;-1.50\n")
    plan = config.input_format.plan(path, 1)
    assert plan.trailer == {"record_count": 1, "balance_total": -150}
    batch = parse_csv_details(config.detail, config.amount,
                              b"D;C1;Smith, Jane;RET;-1.50;20261124\n", 2)
    assert batch.columns["name"].tolist() == ["Smith, Jane"]


# --- control records ---------------------------------------------------------------------


def test_plan_reads_the_csv_header_and_trailer() -> None:
    plan = BALANCES.input_format.plan(SAMPLE, 2)
    assert plan.header == {"business_date": "2026-11-25", "source_system": "CRM"}
    assert plan.trailer == {"record_count": 6, "balance_total": 1_588_374}
    assert plan.detail_lines == 6 and plan.ranges[0].first_line == 2


@pytest.mark.parametrize(("text", "message"), [
    ("D,C1,Jane,RET,1.00,20261124\nT,1,1.00\n", "not a valid header: its first column is 'D'"),
    ("H,20261125\nT,0,0\n", "header: record has 2 columns, expected 3"),
    ("H,20261131,CRM\nT,0,0\n", "BUSINESS_DATE '20261131' is not a calendar date"),
    ("H,20261125,CRM\n", "header only"),
    ("H,20261125,CRM\nT,0,0", "truncated"),
    ("H,20261125,CRM\nT,0,0.001\n", "BALANCE_TOTAL '0.001' has more than 2 decimals"),
    ("H,20261125,CRM\n" + GOOD + "\n", "not a valid trailer: its first column is 'D'"),
    ("H,20261125,CRM\r\nT,0,0\r\n", "CR LF"),
])
def test_bad_control_records_refuse_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(text, newline="")
    with pytest.raises(InputStructureError, match=message):
        BALANCES.input_format.plan(path, 2)


# --- the customer_balances job end to end ------------------------------------------------


@pytest.fixture
def balances_config(tmp_path: Path, db_url: str) -> JobConfig:
    return shipped_job(tmp_path, db_url, "customer_balances").with_overrides(input_path=SAMPLE)


@pytest.fixture
def engine(balances_config: JobConfig) -> Iterator[Engine]:
    with engine_for(balances_config.database_url) as eng:
        yield eng


BALANCE = ("name", "segment", "balance", "as_of")  # FINAL's columns besides the key


NOV24, NOV25 = dt.date(2026, 11, 24), dt.date(2026, 11, 25)
EXPECTED = {
    "C000001": ("Acme Trading Ltd", "CRP", 1_500_000, NOV24),
    "C000002": ("Smith, Jane", "RET", -20_000, NOV25),  # the later of two lines wins
    "C000003": ("Oak & Ash Bakery", "SME", 123_450, NOV24),
    "C000005": ("Zero Balance", "RET", 0, NOV24),
}


def test_customer_balances_job_balances_and_merges(
        balances_config: JobConfig, engine: Engine) -> None:
    outcome = run_job(balances_config)

    assert outcome.exit_code == 0, outcome.message
    assert all(r.passed for r in outcome.results)
    assert final_rows(engine, balances_config, *BALANCE) == EXPECTED
    assert outcome.duplicates_collapsed == 1
    assert outcome.metrics is not None and outcome.metrics.total_read == 6
    assert outcome.reject_file is not None
    filed = outcome.reject_file.read_text().splitlines()
    assert [line.split("\t")[:2] for line in filed] == [
        ["6", "AS_OF '20261131' is not a calendar date YYYYMMDD"]]


def test_many_workers_and_small_batches_agree(
        tmp_path: Path, balances_config: JobConfig, engine: Engine) -> None:
    rows = [["D", f"K{i}", f"Name {i}", "RET", format_minor(i * 37 - 900, 2), "20261124"]
            for i in range(500)]
    rows[100] = ["D", "K7", "later", "SME", "12.00", "20261125"]
    total = sum(int(r[4].replace(".", "")) for r in rows)
    path = tmp_path / "many.csv"
    path.write_bytes(csv_lines(["H", "20261125", "CRM"], *rows,
                               ["T", "500", format_minor(total, 2)]))
    outcome = run_job(balances_config.with_overrides(input_path=path, processors=4,
                                                     batch_size=33))
    assert outcome.exit_code == 0, outcome.message
    final = final_rows(engine, balances_config, *BALANCE)
    assert len(final) == 499 and final["K7"] == ("later", "SME", 1200, NOV25)


def test_trailer_mismatch_fails_and_final_is_unchanged(
        tmp_path: Path, balances_config: JobConfig, engine: Engine) -> None:
    assert run_job(balances_config).exit_code == 0
    before = final_rows(engine, balances_config, *BALANCE)
    path = tmp_path / "off.csv"
    path.write_text("H,20261126,CRM\nD,C000001,Acme Trading Ltd,CRP,1.00,20261125\n"
                    "D,C000009,New Customer,RET,2.00,20261125\nT,2,3.01\n")
    outcome = run_job(balances_config.with_overrides(input_path=path))

    assert outcome.exit_code == 1
    result = {r.check_name: r.passed for r in outcome.results}
    assert result[checks.SOURCE_TRAILER_AMOUNT] is False
    assert final_rows(engine, balances_config, *BALANCE) == before


def test_totals_match_the_sample_file() -> None:
    lines = SAMPLE.read_text().splitlines()
    amounts = [line.split(",")[-2] for line in lines[1:-1]]
    total = sum(int(a.replace(".", "")) * 10 ** (2 - len(a.partition(".")[2])) for a in amounts)
    assert lines[-1] == f"T,{len(amounts)},{format_minor(total, 2)}"
    assert np.unique([line.split(",")[1] for line in lines[1:-1]]).size == len(amounts) - 1


def test_a_pipe_delimited_apostrophe_quoted_feed_runs_end_to_end(
        tmp_path: Path, db_url: str) -> None:
    """input.format = "psv" (pipeline/inputs/pipe_text.py): the same job, another dialect."""
    path = write_job(tmp_path / "psv.toml", ('format = "csv"', 'format = "psv"'),
                     ('delimiter = ","\n', ''), job="customer_balances")
    data = tmp_path / "in.psv"
    data.write_text("H|20261125|CRM\nD|C1|'O''Brien | Sons'|RET|1.50|20261124\n"
                    "D|C2|Say \"hi\"|SME|-2.25|20261124\nT|2|-0.75\n", encoding="ascii")
    config = load_config(path).with_overrides(input_path=data, output_dir=tmp_path / "work",
                                              database_url=db_url)
    outcome = run_job(config)
    assert outcome.exit_code == 0, outcome.message
    with engine_for(db_url) as engine:
        assert final_rows(engine, config, *BALANCE) == {
            "C1": ("O'Brien | Sons", "RET", 150, NOV24),
            "C2": ('Say "hi"', "SME", -225, NOV24)}
