"""The whole job end to end, on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from pipeline.audit.schema import AUDIT_SCALE
from pipeline.config import JobConfig
from pipeline.db.tables import job_tables
from pipeline.generate import generate_file
from pipeline.identity import Overrides
from pipeline.job import RunOutcome, run_job
from recon import checks
from tests.conftest import assert_final_matches, final_rows, run_cli
from tests.reference import detail, expected_from_file, write_input

pytestmark = pytest.mark.timeout(120)


def check_map(outcome: RunOutcome) -> dict[str, bool]:
    return {r.check_name: r.passed for r in outcome.results}


def test_clean_input_balances_and_final_matches_the_input(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 5_000, seed=3)
    config = job_config.with_overrides(input_path=made.path, processors=3, batch_size=700)
    outcome = run_job(config)

    assert outcome.exit_code == 0, outcome.message
    assert list(check_map(outcome)) == list(checks.CHECK_ORDER)
    assert all(check_map(outcome).values())
    assert_final_matches(engine, config, expected_from_file(made.path))
    assert outcome.metrics is not None
    assert outcome.metrics.total_read == outcome.metrics.total_written == 5_000
    with engine.connect() as conn:
        audit = conn.execute(text("SELECT check_name, passed, expected_cnt, actual_cnt "
                                  "FROM recon_audit WHERE run_id = :r"),
                             {"r": outcome.run_id}).all()
        workers = conn.execute(text("SELECT worker_type, records_processed, state "
                                    "FROM recon_worker_audit WHERE run_id = :r "
                                    "ORDER BY worker_id"), {"r": outcome.run_id}).all()
        run = conn.execute(text("SELECT status, exit_code, input_sha256 FROM batch_run "
                                "WHERE run_id = :r"), {"r": outcome.run_id}).one()
    assert len(audit) == len(checks.CHECK_ORDER) and {a.passed for a in audit} == {"Y"}
    writers = len(workers) - 3
    assert writers >= 1
    assert [w.worker_type for w in workers] == ["processor"] * 3 + ["writer"] * writers
    assert sum(w.records_processed for w in workers if w.worker_type == "processor") == 5_000
    assert {w.state for w in workers} == {"done"}
    assert (run.status, run.exit_code) == ("SUCCEEDED", 0) and len(run.input_sha256) == 64


def test_rejects_are_filed_and_the_later_duplicate_wins(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 4_000, seed=5, reject_rate=0.05,
                         duplicate_rate=0.05)
    expected = expected_from_file(made.path)
    config = job_config.with_overrides(input_path=made.path, processors=2, batch_size=500)
    outcome = run_job(config)

    assert outcome.exit_code == 0, outcome.message
    assert outcome.metrics is not None and outcome.metrics.total_errors == made.rejects == 200
    assert outcome.reject_file is not None
    filed = [int(line.split("\t")[0]) for line in outcome.reject_file.read_text().splitlines()]
    assert filed == expected.rejected_lines
    assert outcome.duplicates_collapsed == made.duplicates > 0
    assert_final_matches(engine, config, expected)
    detail_text = next(r.detail for r in outcome.results
                       if r.check_name == checks.STAGING_TO_FINAL)
    assert f"{made.duplicates} duplicate-key" in detail_text


def test_duplicate_across_workers_later_line_wins(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    records = [detail(f"K{i}", 100 + i) for i in range(60)]
    records.append(detail("K3", 999_999, description="the later one"))
    path = write_input(tmp_path / "dup.dat", records)
    config = job_config.with_overrides(input_path=path, processors=4, batch_size=7)
    outcome = run_job(config)
    assert outcome.exit_code == 0, outcome.message
    rows = final_rows(engine, config)
    assert len(rows) == 60
    assert rows["K3"][3] == 999_999 and rows["K3"][5] == "the later one"
    assert outcome.duplicates_collapsed == 1


@pytest.mark.parametrize("override", [{"count": 4_001}, {"amount": 1}],
                         ids=["count_off", "amount_off"])
@pytest.mark.slow
def test_trailer_off_fails_and_final_is_unchanged(
        tmp_path: Path, job_config: JobConfig, engine: Engine, override: dict[str, int]) -> None:
    first = generate_file(tmp_path / "first.dat", 300, seed=1)
    assert run_job(job_config.with_overrides(input_path=first.path)).exit_code == 0
    before = final_rows(engine, job_config)

    records = [detail(f"T{i}", i * 7 - 500) for i in range(4_000)]
    records[10] = detail("ZZ1", 5)  # a key not in FINAL yet: must not appear
    path = write_input(tmp_path / "bad.dat", records, **override)
    outcome = run_job(job_config.with_overrides(input_path=path))

    assert outcome.exit_code == 1
    failing = "source_trailer_count" if "count" in override else "source_trailer_amount"
    assert check_map(outcome)[failing] is False
    assert check_map(outcome)[checks.STAGING_TO_FINAL] is False  # not evaluated: no MERGE
    assert final_rows(engine, job_config) == before
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status, exit_code FROM batch_run WHERE run_id = :r"),
                              {"r": outcome.run_id}).one()
        failed = conn.execute(text("SELECT check_name FROM recon_audit WHERE run_id = :r "
                                   "AND passed = 'N'"), {"r": outcome.run_id}).scalars().all()
    assert tuple(status) == ("FAILED_RECON", 1)
    assert failing in failed


def test_staging_row_deleted_between_load_and_reconciliation(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 2_000, seed=9)
    job_tables(job_config).metadata.create_all(engine)
    before = final_rows(engine, job_config)

    def delete_one_staging_row(eng: Engine, run_id: str) -> None:
        with eng.begin() as conn:
            conn.execute(text("DELETE FROM stg_transactions WHERE run_id = :r AND source_line = "
                              "(SELECT MIN(source_line) FROM stg_transactions "
                              "WHERE run_id = :r)"), {"r": run_id})

    outcome = run_job(job_config.with_overrides(input_path=made.path),
                      after_load=delete_one_staging_row)
    assert outcome.exit_code == 1
    result = {r.check_name: r for r in outcome.results}
    assert not result[checks.PROCESSED_TO_STAGING].passed
    assert result[checks.PROCESSED_TO_STAGING].discrepancy == -1
    assert not result[checks.PROCESSED_TO_STAGING_AMOUNT].passed
    assert not result[checks.WRITTEN_TO_STAGING].passed
    assert final_rows(engine, job_config) == before == {}


def test_truncated_file_is_refused_with_exit_2(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 1_000, seed=2)
    data = made.path.read_bytes()
    made.path.write_bytes(data[: len(data) // 2 + 17])
    outcome = run_job(job_config.with_overrides(input_path=made.path))
    assert outcome.exit_code == 2
    assert "truncated" in outcome.message or "trailer" in outcome.message
    assert final_rows(engine, job_config) == {}
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM batch_run WHERE run_id = :r"),
                              {"r": outcome.run_id}).scalar_one()
    assert status == "FAILED_INPUT"


def test_amount_totals_beyond_2_to_the_53_stay_exact(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    biggest = 10**13 - 1  # 13 digits of minor units: the largest amount the layout holds
    records = [detail(f"B{i}", biggest - i) for i in range(2_000)]
    records += [detail("NEG1", -biggest), detail("SMALL", 1)]
    total = sum(biggest - i for i in range(2_000)) + 1 - biggest
    assert total > 2**53
    path = write_input(tmp_path / "big.dat", records)
    outcome = run_job(job_config.with_overrides(input_path=path, processors=2, batch_size=300))

    assert outcome.exit_code == 0, outcome.message
    amounts = {r.check_name: r.actual_amount for r in outcome.results if r.is_amount_check}
    assert set(amounts.values()) == {total}
    assert outcome.metrics is not None and outcome.metrics.read_amount == total
    with engine.connect() as conn:
        final_sum = conn.execute(text("SELECT SUM(amount) FROM transactions")).scalar_one()
        audit = conn.execute(text("SELECT actual_amt FROM recon_audit WHERE run_id = :r AND "
                                  "check_name = 'staging_to_final_amount'"),
                             {"r": outcome.run_id}).scalar_one()
    scale = job_config.amount_field.scale
    on_sqlite = engine.dialect.name == "sqlite"  # integer minor units there
    assert (final_sum if on_sqlite else int(final_sum.scaleb(scale))) == total
    audit_minor = int(Decimal(audit).scaleb(AUDIT_SCALE))  # exact decimal text on SQLite
    assert audit_minor == total * 10 ** (AUDIT_SCALE - scale)


def test_rerun_of_the_same_input_leaves_the_same_final_and_audits_both(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 1_500, seed=4, duplicate_rate=0.02)
    config = job_config.with_overrides(input_path=made.path)
    # the same file again on purpose: without --rerun it is refused (test_identity.py)
    first, second = run_job(config), run_job(config, overrides=Overrides(rerun=True))
    assert (first.exit_code, second.exit_code) == (0, 0)
    strip = {k: v[:-2] for k, v in final_rows(engine, config).items()}  # not run id / time
    assert_final_matches(engine, config, expected_from_file(made.path))
    assert len(strip) == len(expected_from_file(made.path).final)
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT COUNT(*) FROM batch_run WHERE status = 'SUCCEEDED'"))
        assert runs.scalar_one() == 2
        last = conn.execute(text("SELECT COUNT(*) FROM transactions WHERE last_run_id = :r"),
                            {"r": second.run_id}).scalar_one()
    assert last == len(strip)


@pytest.mark.slow
def test_cli_prints_the_summary_and_exits_with_the_outcome(
        tmp_path: Path, job_config: JobConfig) -> None:
    made = generate_file(tmp_path / "in.dat", 500, seed=6)
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--db", job_config.database_url,
                   "--processors", "2")
    assert done.returncode == 0, done.stderr
    for name in checks.CHECK_ORDER:
        assert name in done.stdout
    assert "SUCCEEDED" in done.stdout and "processor" in done.stdout


@pytest.mark.slow
def test_staging_keeps_the_latest_runs_of_the_job_only(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 300, seed=8)
    config = job_config.with_overrides(input_path=made.path, keep_staging_runs=2)
    other = job_config.with_overrides(input_path=made.path, name="other_job")
    other_run = run_job(other).run_id  # shares the staging table: never purged by this job
    runs = [run_job(config, overrides=Overrides(rerun=i > 0)).run_id for i in range(3)]

    with engine.connect() as conn:
        staged = dict(conn.execute(text("SELECT run_id, COUNT(*) FROM stg_transactions "
                                        "GROUP BY run_id")).all())
    assert staged == {other_run: 300, runs[1]: 300, runs[2]: 300}
