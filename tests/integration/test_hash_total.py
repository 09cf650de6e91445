"""A trailer's hash total (control.trailer_hash_total), proven read -> staging -> FINAL.

The classic mainframe control beside the count and the amount: the trailer carries the
sum of a field no one adds up for its meaning (here the account numbers), so a record
whose account changed in transit fails the night though its count and money balance. A
sum wider than the trailer field keeps its low-order digits, as the sender's does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from pipeline.config import JobConfig, load_config
from pipeline.db.tables import job_tables
from pipeline.errors import ConfigError
from pipeline.explain import explain_run, format_explanation
from pipeline.job import run_job
from pipeline.resume import resume_run
from pipeline.validate import validate_input
from recon import checks
from recon.values import AggregatedMetrics, HashTotal, TrailerTotals
from tests.conftest import engine_for, final_rows, write_job
from tests.integration.test_column_proof import tamper, untamper
from tests.reference import detail, header

DIGITS = 12  # narrower than 200 ten-digit accounts add up to: the sum wraps, as it should
HASHED = [checks.SOURCE_TRAILER_HASH, checks.PROCESSED_TO_STAGING_HASH,
          checks.STAGING_TO_FINAL_HASH]


def hashed_job(tmp_path: Path, db_url: str, **edits: str) -> JobConfig:
    """The shipped job, its trailer carrying the account numbers' hash total."""
    path = write_job(
        tmp_path / "hashed.toml",
        ('{ name = "filler",       start = 31, length = 70, type = "filler" },',
         f'{{ name = "account_hash", start = 31, length = {DIGITS}, type = "number" }},\n'
         f'  {{ name = "filler",       start = {31 + DIGITS}, length = {70 - DIGITS}, '
         'type = "filler" },'),
        ('[control]\n', '[control]\n' + edits.get(
            "control", 'trailer_hash_total = { field = "account_hash", of = "account_id" }\n')))
    return load_config(path).with_overrides(output_dir=tmp_path / "work", database_url=db_url,
                                            heartbeat_timeout=10.0)


def records(n: int = 200) -> list[bytes]:
    """n records on large accounts, every 20th a later update of an earlier key."""
    out = []
    for i in range(n):
        key = f"K{i - 1:08d}" if i % 20 == 19 else f"K{i:08d}"
        out.append(detail(key, 1_000 + i, account=f"{7_000_000_000 + i * 7_919:010d}",
                          description=f"rec {i}"))
    return out


def hash_of(details: list[bytes]) -> int:
    return sum(int(d[17:27]) for d in details)


def write_hashed(path: Path, details: list[bytes], *, hash_total: int | None = None) -> Path:
    total = sum(int(d[36:49]) * (-1 if d[35:36] == b"-" else 1) for d in details)
    figure = (hash_of(details) if hash_total is None else hash_total) % 10**DIGITS
    tail = f"T{len(details):010d}{'-' if total < 0 else '+'}{abs(total):018d}{figure:0{DIGITS}d}"
    path.write_bytes(header() + b"".join(details)
                     + f"{tail:<100}".encode("ascii") + b"\n")
    return path


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> JobConfig:
    return hashed_job(tmp_path, db_url)


@pytest.fixture
def engine(config: JobConfig) -> Iterator[Engine]:
    with engine_for(config.database_url) as eng:
        yield eng


def results(outcome) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {r.check_name: r for r in outcome.results}


def test_a_balanced_hash_total_is_proven_at_every_stage(tmp_path: Path, config: JobConfig,
                                                        engine: Engine) -> None:
    details = records()
    assert hash_of(details) >= 10**DIGITS  # the trailer holds the low-order digits only
    outcome = run_job(config.with_overrides(input_path=write_hashed(tmp_path / "in.dat",
                                                                    details)))
    assert outcome.exit_code == 0, outcome.message
    assert [r.check_name for r in outcome.results] == list(checks.RUN_ORDER)
    found = results(outcome)
    survivors = {d[1:17]: d for d in details}  # the later record of a key wins
    for name, figure in ((checks.SOURCE_TRAILER_HASH, hash_of(details)),
                         (checks.PROCESSED_TO_STAGING_HASH, hash_of(details)),
                         (checks.STAGING_TO_FINAL_HASH, hash_of(list(survivors.values())))):
        r = found[name]
        assert r.passed and r.expected_count == r.actual_count == figure % 10**DIGITS, r
        assert "sum of account_id over" in r.detail and f"modulo 10^{DIGITS}" in r.detail
    # a check's kind is data: the audit read back gives every check the run's own
    from pipeline.audit.reader import load_report
    report = load_report(engine, outcome.run_id, {config.name: 2})
    assert [(r.check_name, r.kind) for r in report.results] == [
        (r.check_name, r.kind) for r in outcome.results]
    assert {r.kind for r in report.results} == {"count", "amount", "hash_total", "columns",
                                                 "limit"}
    batch_run = job_tables(config).batch_run
    with engine.connect() as conn:
        row = conn.execute(select(batch_run).where(
            batch_run.c.run_id == outcome.run_id)).one()
    assert (row.trailer_hash, row.read_hash, row.accepted_hash, row.unhashed_cnt) == (
        hash_of(details) % 10**DIGITS, hash_of(details) % 10**DIGITS,
        hash_of(details) % 10**DIGITS, 0)


def test_an_account_changed_in_transit_fails_though_count_and_amount_balance(
        tmp_path: Path, config: JobConfig, engine: Engine) -> None:
    details = records()
    sent = hash_of(details)
    details[57] = details[57][:17] + b"7000000001" + details[57][27:]  # one account changed
    path = write_hashed(tmp_path / "in.dat", details, hash_total=sent)
    outcome = run_job(config.with_overrides(input_path=path))
    assert outcome.exit_code == 1, outcome.message
    failed = {r.check_name for r in outcome.results if not r.passed and r.evaluated}
    assert failed == {checks.SOURCE_TRAILER_HASH}, outcome.results
    assert "source_trailer_hash_total" in outcome.message
    assert final_rows(engine, config) == {}
    text_out = format_explanation(explain_run(config, engine, outcome.run_id))
    assert f"trailer hash total {sent % 10**DIGITS:,}, read" in text_out

    found = validate_input(config, path, tmp_path / "validate")
    assert found.exit_code == 1
    assert [r.check_name for r in found.results if not r.passed] == [checks.SOURCE_TRAILER_HASH]


@pytest.mark.parametrize("table", ["staging", "final"])
def test_a_changed_account_in_staging_or_final_fails_its_hash_total(
        tmp_path: Path, config: JobConfig, engine: Engine, table: str) -> None:
    """A trigger rewrites every 10th row's account as it lands (same length): the hash
    total of that stage fails beside the column proof, and FINAL keeps nothing."""
    details = records()
    config = config.with_overrides(input_path=write_hashed(tmp_path / "in.dat", details))
    tables = job_tables(config)
    tables.metadata.create_all(engine)
    tamper(engine, (tables.staging if table == "staging" else tables.final).name, "null")
    outcome = run_job(config)
    assert outcome.exit_code == 1, outcome.message
    failed = {r.check_name for r in outcome.results if not r.passed and r.evaluated}
    stage = (checks.PROCESSED_TO_STAGING_HASH if table == "staging"
             else checks.STAGING_TO_FINAL_HASH)
    columns = (checks.PROCESSED_TO_STAGING_COLUMNS if table == "staging"
               else checks.STAGING_TO_FINAL_COLUMNS)
    assert failed == {stage, columns}, outcome.results
    r = results(outcome)[stage]
    assert r.expected_count != r.actual_count
    assert final_rows(engine, config) == {}
    if table == "final":  # the audit kept what the MERGE's transaction found
        untamper(engine, tables.final.name)
        resumed = resume_run(config, outcome.run_id)  # from BATCH_RUN's figures
        assert resumed.exit_code == 0, resumed.message
        assert all(results(resumed)[name].passed for name in HASHED)
        assert len(final_rows(engine, config)) == len({d[1:17] for d in details})


def test_a_rejected_record_with_an_unreadable_account_makes_the_total_unprovable(
        tmp_path: Path, config: JobConfig) -> None:
    details = records()
    sent = hash_of(details)
    details[3] = details[3][:17] + b"70000X0001" + details[3][27:]
    path = write_hashed(tmp_path / "in.dat", details, hash_total=sent)
    found = validate_input(config.with_overrides(max_rejects=10), path, tmp_path / "v")
    r = next(r for r in found.results if r.check_name == checks.SOURCE_TRAILER_HASH)
    assert not r.passed
    assert r.detail == "not provable: 1 rejected record(s) have an unreadable account_id"


def test_a_job_without_a_hash_total_records_none_of_its_checks(
        tmp_path: Path, job_config: JobConfig) -> None:
    from pipeline.generate import generate_file

    made = generate_file(tmp_path / "in.dat", 300, seed=2)
    outcome = run_job(job_config.with_overrides(input_path=made.path))
    assert outcome.exit_code == 0, outcome.message
    assert [r.check_name for r in outcome.results] == list(checks.CHECK_ORDER)
    assert not set(HASHED) & set(checks.CHECK_ORDER)


@pytest.mark.parametrize(("control", "message"), [
    ('trailer_hash_total = "account_hash"\n', "expected { field ="),
    ('trailer_hash_total = { field = "account_hash", of = "account_id", x = 1 }\n',
     "unknown key control.trailer_hash_total.x"),
    ('trailer_hash_total = { field = "detail_count", of = "txn_id" }\n',
     "control.trailer_hash_total.of: field 'txn_id' must be of type"),
    ('trailer_hash_total = { field = "amount_total", of = "account_id" }\n',
     "control.trailer_hash_total.field: field 'amount_total' must be of type number"),
    ('trailer_hash_total = { field = "account_hash", of = "amount" }\n',
     "field 'amount' has decimals"),
    ('trailer_hash_total = { field = "nosuch", of = "account_id" }\n',
     "control.trailer_hash_total.field: no field 'nosuch'"),
])
def test_a_wrong_hash_total_setting_is_refused_by_name(tmp_path: Path, control: str,
                                                       message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        hashed_job(tmp_path, "sqlite://", control=control)
    assert message in str(caught.value)


def test_hash_checks_compare_within_the_trailer_fields_digits() -> None:
    rule = HashTotal("account_hash", "account_id", 4, value=1_234)
    assert checks.hash_check("x", rule, 3, 1_234, 91_234).passed  # the sender's wrap
    wrong = checks.hash_check("x", rule, 3, 1_234, 1_235)
    assert not wrong.passed and (wrong.expected_count, wrong.actual_count) == (1_234, 1_235)
    unknown = checks.hash_check("x", rule, 3, 1_234, None, "no sum")
    assert not unknown.passed and unknown.detail == "not provable: no sum"
    read = AggregatedMetrics(3, 3, 0, 0, 0, 0, 0, 0, 0, (), hash_read=21_234,
                             hash_accepted=21_234)
    names = [r.check_name for r in checks.load_checks(TrailerTotals(3, 0, rule), read, 3, 0,
                                                      staged_hash=1_234)]
    assert checks.SOURCE_TRAILER_HASH in names and checks.PROCESSED_TO_STAGING_HASH in names
    assert all(r.passed for r in checks.load_checks(TrailerTotals(3, 0, rule), read, 3, 0,
                                                    staged_hash=1_234))
    assert [r.check_name for r in checks.merge_skipped(3, hashed=True)] == [
        checks.STAGING_TO_FINAL, checks.STAGING_TO_FINAL_AMOUNT, checks.STAGING_TO_FINAL_HASH,
        checks.STAGING_TO_FINAL_COLUMNS]


def test_an_ebcdic_detail_field_is_hashed_as_its_digits(tmp_path: Path) -> None:
    """The mainframe decoder's hash figures against the ACCOUNT-ID bytes themselves
    (zoned cp037 digits X'F0'-X'F9', bytes 18-27 of each 100-byte FB detail record)."""
    from pipeline.generate_mainframe import generate_mainframe_file
    from pipeline.jobs import shipped_config
    from pipeline.workers.processor import detail_batches_of

    made = generate_mainframe_file(tmp_path / "in.bin", 500, "ebcdic-fb", reject_rate=0.05)
    config = load_config(shipped_config("daily_transactions_ebcdic"))
    config = config.with_overrides(input_path=made.path)
    config = replace(config, hash_total=HashTotal("detail_count", "account_id", 15))
    plan = config.input_format.plan(made.path, 2)
    batches = [b for rng in plan.ranges
               for b in detail_batches_of(config, made.path, rng, 64)]
    data = made.path.read_bytes()
    details = [data[i:i + 100] for i in range(100, len(data) - 100, 100)]
    accounts = [d[17:27] for d in details]
    readable = [a for a in accounts if all(0xF0 <= b <= 0xF9 for b in a)]
    accepted = {line for b in batches for line in b.lines.tolist()}
    assert 0 < len(accepted) < len(details)  # some records rejected
    assert sum(b.hash_read for b in batches) == sum(int(bytes(x - 0xC0 for x in a))
                                                    for a in readable)
    assert sum(b.hash_accepted for b in batches) == sum(
        int(bytes(x - 0xC0 for x in accounts[line - 2])) for line in accepted)
    assert sum(b.unhashed for b in batches) == len(accounts) - len(readable)


def test_a_csv_detail_field_is_hashed_as_the_fixed_width_one(tmp_path: Path) -> None:
    """The CSV parser's hash figures (its cells go through the same checked numbers)."""
    path = write_job(
        tmp_path / "csv.toml",
        ('  { name = "as_of",       length = 8,  type = "date" },',
         '  { name = "as_of",       length = 8,  type = "date" },\n'
         '  { name = "branch",      length = 4,  type = "digits" },'),
        ('  { name = "balance_total", length = 18, type = "amount", scale = 2 },',
         '  { name = "balance_total", length = 18, type = "amount", scale = 2 },\n'
         '  { name = "branch_hash",   length = 6,  type = "number" },'),
        ('[control]\n', '[control]\ntrailer_hash_total = { field = "branch_hash", '
                        'of = "branch" }\n'),
        ('path = "customer_balances.csv"', 'path = "in.csv"'),
        job="customer_balances")
    config = load_config(path)
    branches = ["0042", "9001", "0007", "12X4", "0100"]  # the 4th: rejected, unreadable
    lines = [f'D,C{i:06d},"Name, {i}",RET,{i}.50,20261124,{b}'
             for i, b in enumerate(branches, start=1)]
    hashed = sum(int(b) for b in branches if b.isdigit())

    def validate(figure: int) -> list[object]:
        (tmp_path / "in.csv").write_text(
            "H,20261125,CRM\n" + "\n".join(lines)
            + f"\nT,{len(lines)},17.50,{figure}\n", encoding="ascii")  # 1.50 + .. + 5.50
        found = validate_input(config, tmp_path / "in.csv", tmp_path / "out")
        return [r for r in found.results if r.check_name == checks.SOURCE_TRAILER_HASH]

    [unprovable] = validate(hashed)
    assert unprovable.detail == "not provable: 1 rejected record(s) have an unreadable branch"
    lines[3] = lines[3].replace("12X4", "1204")
    [proven] = validate(hashed + 1204)
    assert proven.passed and proven.actual_count == hashed + 1204
    [wrong] = validate(hashed + 1205)
    assert not wrong.passed
