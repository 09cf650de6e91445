"""The reject limit: a night that balances but rejected too much, or everything, fails.

``control.max_reject_rate`` (default 0.05) and/or ``control.max_rejects``: the check
``reject_limit`` (expected = the most this night may reject, actual = records rejected)
runs before the MERGE, so exceeding it ends FAILED_RECON, exit 1, FINAL unchanged, the
reject file written; ``validate`` applies the same rule to the file alone.
"""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from pipeline.audit.reader import load_report, open_audit
from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError
from pipeline.explain import explain_run, format_explanation
from pipeline.job import run_job
from pipeline.publish import publish_outputs, report_extras
from pipeline.reporting.jsondoc import report_document
from pipeline.resume import ResumeRefused, resume_run
from recon import checks
from recon.checks import reject_limit_check
from recon.values import RejectLimit
from tests.conftest import final_rows, run_cli, seed_final, write_job
from tests.reference import detail, write_input

pytestmark = pytest.mark.timeout(120)

CONTROL = '[control]\ntrailer_count = "detail_count"\ntrailer_amount = "amount_total"\n'


def night(path: Path, good: int, bad: int) -> Path:
    """``good`` valid records, then ``bad`` whose date is no calendar date; the trailer
    balances (rejects count as read)."""
    records = [detail(f"K{i}", 100 + i) for i in range(good)]
    records += [detail(f"R{i}", 7, date="20261399") for i in range(bad)]
    return write_input(path, records)


def with_control(tmp_path: Path, extra: str) -> Path:
    return write_job(tmp_path / "job.toml", (CONTROL, CONTROL + extra))


# -- the rule (recon.checks, pure) --------------------------------------------------------


@pytest.mark.parametrize(("limit", "read", "rejected", "allowed", "passed"), [
    (RejectLimit(), 1_000, 50, 50, True),  # 5% of 1,000: exactly at the limit passes
    (RejectLimit(), 1_000, 51, 50, False),
    (RejectLimit(), 999, 49, 49, True),  # 49.95 rounds down
    (RejectLimit(), 999, 50, 49, False),
    (RejectLimit(None, 10), 1_000, 10, 10, True),
    (RejectLimit(None, 10), 1_000, 11, 10, False),
    (RejectLimit(Decimal("0.05"), 10), 1_000, 11, 10, False),  # both: the smaller wins
    (RejectLimit(Decimal("0.005"), 10), 1_000, 6, 5, False),
    (RejectLimit(Decimal("1"), None), 40, 39, 40, True),
    (RejectLimit(Decimal("1"), None), 40, 40, 40, False),  # every record: always fails
    (RejectLimit(None, 1_000), 40, 40, 1_000, False),
    (RejectLimit(), 0, 0, 0, True),  # an empty night rejected nothing
])
def test_reject_limit_rule(limit: RejectLimit, read: int, rejected: int, allowed: int,
                           passed: bool) -> None:
    result = reject_limit_check(limit, read, rejected)

    assert result.check_name == checks.REJECT_LIMIT
    assert (result.expected_count, result.actual_count, result.passed) == (allowed, rejected,
                                                                           passed)
    assert "control.max_re" in result.detail and f"{rejected:,} of {read:,}" in result.detail
    # the rejects over the limit: a check that passed shows no discrepancy, as every other
    assert result.discrepancy == max(rejected - allowed, 0)


def test_the_detail_says_which_limit_and_the_rate() -> None:
    by_count = reject_limit_check(RejectLimit(Decimal("0.05"), 10), 1_000, 11)
    assert by_count.detail == ("11 of 1,000 records rejected (1.10%); limit 10: "
                               "control.max_rejects (control.max_reject_rate 0.05 would "
                               "allow 50)")
    everything = reject_limit_check(RejectLimit(Decimal("1")), 40, 40)
    assert everything.detail.startswith("every record rejected")


def test_reject_limit_runs_right_after_the_trailer_checks() -> None:
    assert checks.CHECK_ORDER[:3] == (checks.SOURCE_TRAILER_COUNT,
                                      checks.SOURCE_TRAILER_AMOUNT, checks.REJECT_LIMIT)


# -- the configuration --------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "rate", "count"), [
    ("", Decimal("0.05"), None),
    ("max_reject_rate = 0.1\n", Decimal("0.1"), None),
    ("max_reject_rate = 1\n", Decimal("1"), None),
    ("max_rejects = 25\n", None, 25),  # a count alone: no default rate lowering it
    ("max_reject_rate = 0.001\nmax_rejects = 25\n", Decimal("0.001"), 25),
])
def test_config_reads_the_limit_exactly(tmp_path: Path, extra: str, rate: Decimal | None,
                                        count: int | None) -> None:
    config = load_config(with_control(tmp_path, extra))
    assert config.reject_limit == RejectLimit(rate, count)


@pytest.mark.parametrize(("extra", "message"), [
    ("max_reject_rate = 1.5\n", "control.max_reject_rate: expected a share"),
    ("max_reject_rate = -0.1\n", "control.max_reject_rate: expected a share"),
    ("max_reject_rate = nan\n", "control.max_reject_rate: expected a share"),
    ('max_reject_rate = "5%"\n', "control.max_reject_rate: expected int or float"),
    ("max_rejects = -1\n", "control.max_rejects: expected 0 or more"),
    ("max_rejects = 2.5\n", "control.max_rejects: expected an integer"),
    ("max_rejects = true\n", "control.max_rejects: expected an integer"),
])
def test_config_refuses_a_bad_limit_naming_the_key(tmp_path: Path, extra: str,
                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(with_control(tmp_path, extra))


# -- a run --------------------------------------------------------------------------------


def recon_row(engine: Engine, run_id: str) -> tuple:
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT expected_cnt, actual_cnt, passed, discrepancy FROM recon_audit "
            "WHERE run_id = :r AND check_name = 'reject_limit'"), {"r": run_id}).one())


def test_too_many_rejects_fail_the_run_and_leave_final_alone(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    path = night(tmp_path / "in.dat", good=90, bad=10)  # 10% rejected
    before = seed_final(engine, job_config, path, n=20)
    config = job_config.with_overrides(input_path=path)

    outcome = run_job(config)
    published = publish_outputs(outcome, config, 1.0)

    assert (outcome.status, outcome.exit_code) == ("FAILED_RECON", 1), outcome.message
    assert "reject_limit" in outcome.message
    assert final_rows(engine, config) == before
    assert recon_row(engine, outcome.run_id) == (5, 10, "N", 5)
    assert outcome.reject_file is not None
    assert len(outcome.reject_file.read_text().splitlines()) == 10
    assert any(line.startswith("reject_limit ") and line.endswith("N")
               for line in published.summary.splitlines())
    # the report and explain show it like any check, and name the rejects
    with open_audit(config.database_url) as audit_engine:
        report = load_report(audit_engine, outcome.run_id)
        found = explain_run(config, audit_engine, outcome.run_id)
    assert [r.check_name for r in report.results] == list(checks.CHECK_ORDER)
    assert found.reject_reasons == [("TXN_DATE is not a calendar date YYYYMMDD", 10)]
    assert [line for line, _ in found.rejected] == list(range(92, 102))  # after 90 good
    explained = format_explanation(found)
    assert str(outcome.reject_file) in explained and "failed   reject_limit" in explained
    assert published.report is not None
    page = published.report.read_text()
    assert 'id="rejected"' in page and "reject_limit" in page


def test_a_raised_limit_lets_the_same_night_through(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    path = night(tmp_path / "in.dat", good=90, bad=10)

    outcome = run_job(job_config.with_overrides(input_path=path,
                                                max_reject_rate=Decimal("0.1")))

    assert outcome.exit_code == 0, outcome.message
    assert recon_row(engine, outcome.run_id) == (10, 10, "Y", 0)
    assert len(final_rows(engine, job_config)) == 90


def test_max_rejects_alone_is_the_limit(tmp_path: Path, job_config: JobConfig,
                                        engine: Engine) -> None:
    path = night(tmp_path / "in.dat", good=90, bad=10)

    # (with_overrides keeps the config's value for a None: replace sets it)
    outcome = run_job(replace(job_config, input_path=path, max_reject_rate=None,
                              max_rejects=9))

    assert outcome.exit_code == 1, outcome.message
    assert recon_row(engine, outcome.run_id) == (9, 10, "N", 1)


def test_a_night_where_every_record_is_rejected_always_fails(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    path = night(tmp_path / "in.dat", good=0, bad=30)

    outcome = run_job(job_config.with_overrides(input_path=path,
                                                max_reject_rate=Decimal("1")))

    assert (outcome.status, outcome.exit_code) == ("FAILED_RECON", 1), outcome.message
    assert recon_row(engine, outcome.run_id) == (30, 30, "N", 0)
    assert final_rows(engine, job_config) == {}


def test_report_json_shows_the_check_and_the_rejects(tmp_path: Path, job_config: JobConfig,
                                                     engine: Engine) -> None:
    path = night(tmp_path / "in.dat", good=40, bad=10)
    config = job_config.with_overrides(input_path=path)
    outcome = run_job(config)
    assert outcome.exit_code == 1

    with open_audit(config.database_url) as audit_engine:  # as `report --json` builds it
        report = load_report(audit_engine, outcome.run_id)
        doc = json.loads(json.dumps(report_document(
            report, *report_extras(config, audit_engine, report))))

    check = next(c for c in doc["checks"] if c["check_name"] == "reject_limit")
    assert (check["expected"], check["actual"], check["passed"]) == (2, 10, False)
    assert doc["checks_failed"] == 4  # it, and the three checks the MERGE's skip left
    assert doc["explain"]["rejects"]["by_reason"][0]["records"] == 10


# -- validate -----------------------------------------------------------------------------


def test_validate_applies_the_limit(tmp_path: Path) -> None:
    path = night(tmp_path / "in.dat", good=90, bad=10)

    over = run_cli(tmp_path, "validate", "--input", str(path))
    within = run_cli(tmp_path, "validate", str(with_control(tmp_path, "max_rejects = 10\n")),
                     "--input", str(path))

    assert over.returncode == 1, over.stdout + over.stderr
    assert "FAILED: reject_limit; no database was touched" in over.stdout
    assert within.returncode == 0, within.stdout + within.stderr
    assert "its rejects within the limit" in within.stdout


def test_validate_fails_a_file_whose_every_record_is_rejected(tmp_path: Path) -> None:
    path = night(tmp_path / "in.dat", good=0, bad=5)
    done = run_cli(tmp_path, "validate", str(with_control(tmp_path, "max_reject_rate = 1\n")),
                   "--input", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "every record rejected" in done.stdout


def test_a_night_over_the_limit_resumes_once_the_limit_allows_it(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    path = night(tmp_path / "in.dat", good=90, bad=10)
    config = job_config.with_overrides(input_path=path)
    failed = run_job(config)
    assert failed.exit_code == 1

    with pytest.raises(ResumeRefused, match="reject_limit"):
        resume_run(config, failed.run_id)
    resumed = resume_run(config.with_overrides(max_reject_rate=Decimal("0.1")), failed.run_id)

    assert resumed.exit_code == 0, resumed.message
    assert len(final_rows(engine, config)) == 90
    with open_audit(config.database_url) as audit_engine:
        report = load_report(audit_engine, failed.run_id)
    shown = {r.check_name: r for r in report.results}[checks.REJECT_LIMIT]
    before = {r.check_name: r for r in report.earlier_results}[checks.REJECT_LIMIT]
    assert (shown.expected_count, shown.passed, before.expected_count, before.passed) == (
        10, True, 5, False)
