"""Each input format on bytes alone: plan (control records, ranges on record
boundaries), read (detail batches), and the key text `explain` shows. No database, no
processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError, InputStructureError
from pipeline.generate_mainframe import generate_mainframe_file
from pipeline.inputs import FORMATS, InputFormat, KeysUnreadable, format_class
from pipeline.inputs.csv_text import CsvText
from pipeline.inputs.fixed_text import FixedWidthText
from pipeline.inputs.mainframe import DetailTypesInput, MainframeInput
from pipeline.inputs.pipe_text import PipeText
from pipeline.jobs import shipped_config
from pipeline.source import InputPlan
from tests.conftest import write_job
from tests.reference import detail, write_input

pytestmark = pytest.mark.timeout(30)


def job(name: str) -> JobConfig:
    return load_config(shipped_config(name))


def read_all(fmt: InputFormat, plan: InputPlan, amount: str, batch: int = 4) -> tuple[
        int, list[int], list[int]]:
    """Records read, accepted lines and rejected lines over every range of the plan."""
    read, accepted, rejected = 0, [], []
    for rng in plan.ranges:
        for b in fmt.read(plan.path, rng, batch, amount):
            read += b.records_read
            accepted += b.lines.tolist()
            rejected += [r.line for r in b.rejects]
    return read, accepted, rejected


def assert_ranges_cover(plan: InputPlan) -> None:
    """The ranges follow each other, and their lines are the details', once each."""
    assert all(a.end == b.start for a, b in zip(plan.ranges, plan.ranges[1:], strict=False))
    assert all(a.first_line + a.lines == b.first_line
               for a, b in zip(plan.ranges, plan.ranges[1:], strict=False))


def test_fixed_width_text(tmp_path: Path) -> None:
    fmt = job("daily_transactions").input_format
    assert isinstance(fmt, FixedWidthText)
    records = [detail(f"K{i}", 100 + i) for i in range(10)]
    records[4] = b"D" + b"x" * 99 + b"\n"  # line 6: rejected
    path = write_input(tmp_path / "in.dat", records)

    plan = fmt.plan(path, 3)

    assert plan.trailer["detail_count"] == 10 and plan.detail_lines == 10
    assert len(plan.ranges) == 3 and plan.ranges[0].first_line == 2
    assert_ranges_cover(plan)
    read, accepted, rejected = read_all(fmt, plan, "amount")
    assert (read, rejected) == (10, [6]) and sorted(accepted) == [2, 3, 4, 5, 7, 8, 9, 10, 11]
    assert fmt.read_keys(path, plan.sha256, np.array([11, 2]), ["txn_id"]) == {2: "K0",
                                                                              11: "K9"}
    with pytest.raises(KeysUnreadable, match="changed since the run"):
        fmt.read_keys(path, "0" * 64, np.array([2]), ["txn_id"])


def test_fixed_width_text_refuses_a_file_without_its_trailer(tmp_path: Path) -> None:
    fmt = job("daily_transactions").input_format
    path = tmp_path / "in.dat"
    path.write_bytes(write_input(tmp_path / "whole.dat", [detail("K1", 1)]).read_bytes()[:-101])
    with pytest.raises(InputStructureError, match="trailer"):
        fmt.plan(path, 1)


CSV_LINES = ['H,20261125,CRM', 'D,C1,"Smith, Jane",RET,1.50,20261124',
             'D,C2,"Jones, ""Bob""",RET,-2.25,20261124', 'D,C3,"open,RET,1.00,20261124',
             'D,C4,Acme,RET,3.00,20261124', 'T,4,3.25']


def test_csv_text(tmp_path: Path) -> None:
    fmt = job("customer_balances").input_format
    assert isinstance(fmt, CsvText)
    path = tmp_path / "in.csv"
    path.write_text("\n".join(CSV_LINES) + "\n", encoding="ascii")

    plan = fmt.plan(path, 2)

    assert plan.header["source_system"] == "CRM"
    assert plan.trailer == {"record_count": 4, "balance_total": 325}
    assert plan.detail_lines == 4
    assert_ranges_cover(plan)
    read, accepted, rejected = read_all(fmt, plan, "balance", batch=2)
    assert (read, sorted(accepted), rejected) == (4, [2, 3, 5], [4])
    keys = fmt.read_keys(path, plan.sha256, np.array([2, 3, 4]), ["customer_id", "name"])
    assert keys == {2: "C1|Smith, Jane", 3: 'C2|Jones, "Bob"', 4: "|"}  # 4: no record


def test_csv_key_text_splits_as_the_parser() -> None:
    fmt = job("customer_balances").input_format
    assert isinstance(fmt, CsvText)
    record = b'D,C1,"Smith, Jane",RET,1.50,20261124'
    assert fmt.key_text(record, ["name"]) == "Smith, Jane"
    assert fmt.key_text(record, ["customer_id", "as_of"]) == "C1|20261124"


@pytest.mark.parametrize("kind", ["fb", "vb"])
def test_mainframe_fb_and_vb(tmp_path: Path, kind: str) -> None:
    name = {"fb": "daily_transactions_ebcdic", "vb": "daily_transactions_ebcdic_vb"}[kind]
    fmt = job(name).input_format
    assert isinstance(fmt, MainframeInput) and fmt.fmt.kind == kind
    made = generate_mainframe_file(tmp_path / "in.bin", 40, f"ebcdic-{kind}", seed=7,
                                   reject_rate=0.1)

    plan = fmt.plan(made.path, 3)

    assert plan.trailer == {"detail_count": 40, "amount_total": made.amount_total}
    assert plan.detail_lines == 40
    assert_ranges_cover(plan)
    read, accepted, rejected = read_all(fmt, plan, "amount", batch=7)
    assert read == 40 and len(rejected) == made.rejects
    assert sorted(accepted + rejected) == list(range(2, 42))
    assert fmt.code_page == "cp037" and fmt.copybook_sha256
    with pytest.raises(KeysUnreadable, match="copybook job"):
        fmt.read_keys(made.path, plan.sha256, np.array([2]), ["txn_id"])


def test_several_detail_types_read_through_the_same_contract() -> None:
    config = job("payments_and_fees")
    fmt = config.input_format
    assert isinstance(fmt, DetailTypesInput) and len(fmt.types) == 2
    assert config.input_path is not None

    plan = fmt.plan(config.input_path, 2)

    whole = per_type = 0
    for rng in plan.ranges:
        for batch, parts in fmt.read_typed(plan.path, rng, 5, config.amount):
            whole += batch.records_read
            per_type += sum(p.records_read for p in parts if p is not None)
    assert whole == per_type == plan.detail_lines == plan.trailer["trl_count"]


def test_a_text_format_takes_no_detail_types() -> None:
    with pytest.raises(ConfigError, match="only for input.format fb or vb"):
        job("daily_transactions").input_format.with_types([])


def test_the_registry_names_its_formats() -> None:
    assert {"fixed", "csv", "fb", "vb"} <= set(FORMATS)
    with pytest.raises(ConfigError, match='input.format: expected "fixed", "csv"'):
        format_class("xml")


PSV_LINES = ["H|20261125|CRM", "D|C1|'O''Brien | Sons'|RET|1.50|20261124",
             'D|C2|Say "hi"|RET|-2.25|20261124', "D|C3|'open|RET|1.00|20261124",
             "T|3|0.25"]


def psv_job(tmp_path: Path) -> JobConfig:
    """The customer-balances job reading pipe-delimited, apostrophe-quoted lines."""
    path = write_job(tmp_path / "psv.toml", ('format = "csv"', 'format = "psv"'),
                     ('delimiter = ","\n', ''), job="customer_balances")
    return load_config(path)


def test_pipe_delimited_text_quoted_with_apostrophes(tmp_path: Path) -> None:
    fmt = psv_job(tmp_path).input_format
    assert isinstance(fmt, PipeText) and fmt.detail.delimiter == "|"
    path = tmp_path / "in.psv"
    path.write_text("\n".join(PSV_LINES) + "\n", encoding="ascii")

    plan = fmt.plan(path, 2)

    assert plan.trailer == {"record_count": 3, "balance_total": 25}
    assert plan.detail_lines == 3
    assert_ranges_cover(plan)
    read, accepted, rejected = read_all(fmt, plan, "balance", batch=2)
    assert (read, sorted(accepted), rejected) == (3, [2, 3], [4])  # 4: quote not closed
    keys = fmt.read_keys(path, plan.sha256, np.array([2, 3]), ["customer_id", "name"])
    assert keys == {2: "C1|O'Brien | Sons", 3: 'C2|Say "hi"'}
