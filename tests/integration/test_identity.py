"""Job-instance identity (issue 19): a file already loaded, or older than the latest
loaded, is refused before loading (exit 2, FINAL untouched, no worker started, the
earlier run named) unless the operator overrides it; BATCH_RUN records the business date
and the overrides, and `report` shows them."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError
from pipeline.generate import generate_file
from pipeline.generate_mainframe import generate_mainframe_file
from pipeline.identity import Overrides, business_date
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from pipeline.resume import resume_run
from tests.conftest import final_rows, run_cli, write_job
from tests.integration.test_resume import break_merge, mend_merge

pytestmark = pytest.mark.timeout(180)

NIGHT = dt.date(2026, 11, 25)
RECORDS = 500


def night_file(tmp_path: Path, name: str, seed: int, day: dt.date = NIGHT) -> Path:
    return generate_file(tmp_path / name, RECORDS, seed=seed, business_date=day).path


def batch_run(engine: Engine, run_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT status, exit_code, message, input_sha256, business_date, rerun, "
            "allow_older, read_cnt FROM batch_run WHERE run_id = :r"), {"r": run_id}).one()


def worker_rows(engine: Engine, run_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM recon_worker_audit WHERE "
                                     "run_id = :r"), {"r": run_id}).scalar_one())


def the_day(value: Any) -> dt.date:
    """BATCH_RUN.BUSINESS_DATE as a date (SQLite text reads back as text)."""
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def assert_refused_before_loading(engine: Engine, config: JobConfig, outcome: Any,
                                  before: dict) -> None:
    """Exit 2, FAILED_INPUT recorded, no worker started, nothing loaded, FINAL as before."""
    assert (outcome.exit_code, outcome.status) == (2, "FAILED_INPUT"), outcome.message
    assert outcome.workers == [] and outcome.results == []
    row = batch_run(engine, outcome.run_id)
    assert (row.status, row.exit_code, row.read_cnt) == ("FAILED_INPUT", 2, None)
    assert worker_rows(engine, outcome.run_id) == 0
    assert final_rows(engine, config) == before


# --- the configuration --------------------------------------------------------------------


def test_every_shipped_job_names_its_business_date() -> None:
    for job in ("daily_transactions", "daily_transactions_ebcdic", "customer_balances",
                "account_postings"):
        assert load_config(shipped_config(job)).business_date == "business_date", job


@pytest.mark.parametrize(("value", "said"), [
    ("source_system", "must be of type date"),  # a text field of the header
    ("detail_count", "no field 'detail_count'"),  # a trailer field
    ("Business Date", "not a plain identifier"),
])
def test_the_business_date_must_name_a_date_field_of_the_header(value: str, said: str,
                                                                 tmp_path: Path) -> None:
    path = write_job(tmp_path / "job.toml", ('business_date = "business_date"',
                                             f'business_date = "{value}"'))
    with pytest.raises(ConfigError, match="control.business_date") as info:
        load_config(path)
    assert said in str(info.value)


def test_a_job_without_a_business_date_has_no_date_rule(tmp_path: Path) -> None:
    path = write_job(tmp_path / "job.toml", ('business_date = "business_date"\n', ""))
    assert load_config(path).business_date is None


def test_the_business_date_is_read_from_text_and_copybook_headers(tmp_path: Path) -> None:
    text_job = load_config(shipped_config())
    plan = text_job.input_format.plan(night_file(tmp_path, "t.dat", 1, dt.date(2027, 2, 28)), 1)
    assert business_date(plan, "business_date") == dt.date(2027, 2, 28)
    assert business_date(plan, None) is None
    ebcdic = load_config(shipped_config("daily_transactions_ebcdic"))
    made = generate_mainframe_file(tmp_path / "e.bin", 50, "ebcdic-fb", seed=1)
    assert business_date(ebcdic.input_format.plan(made.path, 1), "business_date") == NIGHT


# --- the same file twice ------------------------------------------------------------------


def test_the_same_file_twice_is_refused_and_rerun_loads_it(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    path = night_file(tmp_path, "night.dat", seed=1)
    config = job_config.with_overrides(input_path=path)
    first = run_job(config)
    assert first.exit_code == 0, first.message
    assert (first.business_date, first.overrides) == (NIGHT, ())
    row = batch_run(engine, first.run_id)
    assert the_day(row.business_date) == NIGHT and (row.rerun, row.allow_older) == (None, None)
    before = final_rows(engine, config)

    again = run_job(config)
    assert_refused_before_loading(engine, config, again, before)
    assert f"already loaded by run {first.run_id}" in again.message
    assert f"business date {NIGHT}" in again.message and "--rerun" in again.message
    assert batch_run(engine, again.run_id).input_sha256 == row.input_sha256

    rerun = run_job(config, overrides=Overrides(rerun=True))
    assert rerun.exit_code == 0, rerun.message
    assert rerun.overrides == ("--rerun",)
    recorded = batch_run(engine, rerun.run_id)
    assert (recorded.status, recorded.rerun, recorded.allow_older) == ("SUCCEEDED", "Y", None)
    # the rerun is the latest load of that file now: a third try names it
    third = run_job(config)
    assert third.exit_code == 2 and f"already loaded by run {rerun.run_id}" in third.message


def test_a_failed_run_does_not_make_its_file_loaded(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    """Only a SUCCEEDED run loaded its file: the night after a failed one is let through."""
    path = night_file(tmp_path, "night.dat", seed=2)
    config = job_config.with_overrides(input_path=path)

    def lose_a_row(conn_engine: Engine, run_id: str) -> None:
        with conn_engine.begin() as conn:
            conn.execute(text("DELETE FROM stg_transactions WHERE run_id = :r AND "
                              "source_line = 2"), {"r": run_id})

    failed = run_job(config, after_load=lose_a_row)
    assert failed.exit_code == 1, failed.message
    assert run_job(config).exit_code == 0


@pytest.mark.slow
def test_a_renamed_copy_is_refused_by_the_command_line_and_report_shows_the_rerun(
        tmp_path: Path, db_url: str, engine: Engine) -> None:
    path = night_file(tmp_path, "TXN.D20261125.dat", seed=3)
    first = run_cli(tmp_path, "run", "--input", str(path), "--db", db_url, "--no-progress")
    assert first.returncode == 0, first.stderr
    first_run = first.stdout.split()[1]  # "run      <run id>"
    copy = shutil.copy(path, tmp_path / "TXN.PICKED.UP.AGAIN.dat")

    refused = run_cli(tmp_path, "run", "--input", str(copy), "--db", db_url, "--no-progress")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "FAILED_INPUT (exit 2)" in refused.stdout
    assert f"already loaded by run {first_run}" in refused.stderr
    assert "run with --rerun" in refused.stderr

    rerun = run_cli(tmp_path, "run", "--input", str(copy), "--db", db_url, "--no-progress",
                    "--rerun")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "override --rerun" in rerun.stdout
    shown = run_cli(tmp_path, "report", "--db", db_url)
    assert "override --rerun" in shown.stdout and f"date     {NIGHT}" in shown.stdout
    document = json.loads(run_cli(tmp_path, "report", "--db", db_url, "--json").stdout)
    assert document["run"]["rerun"] is True and document["run"]["allow_older"] is False
    assert document["run"]["business_date"] == NIGHT.isoformat()
    html = tmp_path / "report.html"
    assert run_cli(tmp_path, "report", "--db", db_url, "--html", str(html)).returncode == 0
    assert "<dt>overrides</dt><dd>--rerun</dd>" in html.read_text()


def test_resume_takes_no_override(tmp_path: Path) -> None:
    said = run_cli(tmp_path, "run", "--resume", "20261125T000000-00000000", "--rerun")
    assert said.returncode == 2 and "takes no --rerun" in said.stderr


# --- an older file after a newer one ------------------------------------------------------


def test_an_earlier_business_date_is_refused_the_same_date_allowed_allow_older_loads_it(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    newest = run_job(job_config.with_overrides(input_path=night_file(tmp_path, "a.dat", 1)))
    assert newest.exit_code == 0, newest.message
    before = final_rows(engine, job_config)

    older = job_config.with_overrides(
        input_path=night_file(tmp_path, "b.dat", 2, NIGHT - dt.timedelta(days=4)))
    refused = run_job(older)
    assert_refused_before_loading(engine, job_config, refused, before)
    assert f"business date {NIGHT - dt.timedelta(days=4)}, earlier than {NIGHT}" in \
        refused.message
    assert f"loaded by run {newest.run_id}" in refused.message
    assert "--allow-older" in refused.message
    assert the_day(batch_run(engine, refused.run_id).business_date) == NIGHT - dt.timedelta(4)

    same_day = run_job(job_config.with_overrides(input_path=night_file(tmp_path, "c.dat", 3)))
    assert same_day.exit_code == 0, same_day.message  # several cycles a day

    allowed = run_job(older, overrides=Overrides(allow_older=True))
    assert allowed.exit_code == 0, allowed.message
    row = batch_run(engine, allowed.run_id)
    assert (row.status, row.rerun, row.allow_older) == ("SUCCEEDED", None, "Y")
    # the newest date loaded is still NIGHT: the next older file is refused again
    even_older = run_job(job_config.with_overrides(
        input_path=night_file(tmp_path, "d.dat", 4, NIGHT - dt.timedelta(days=1))))
    assert even_older.exit_code == 2 and f"earlier than {NIGHT}" in even_older.message


def test_a_job_without_a_business_date_refuses_no_older_file(
        tmp_path: Path, db_url: str, engine: Engine) -> None:
    path = write_job(tmp_path / "job.toml", ('business_date = "business_date"\n', ""))
    config = load_config(path).with_overrides(output_dir=tmp_path / "work",
                                              database_url=db_url, heartbeat_timeout=10.0)
    for name, seed, day in (("a.dat", 1, NIGHT), ("b.dat", 2, NIGHT - dt.timedelta(days=4))):
        outcome = run_job(config.with_overrides(input_path=night_file(tmp_path, name, seed, day)))
        assert outcome.exit_code == 0, outcome.message
        assert batch_run(engine, outcome.run_id).business_date is None


@pytest.mark.slow
def test_resume_is_the_same_instance_never_refused_for_identity(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    """A run let through with --allow-older whose MERGE failed resumes: resuming finishes
    that instance, it does not load the file again."""
    newest = run_job(job_config.with_overrides(input_path=night_file(tmp_path, "a.dat", 1)))
    assert newest.exit_code == 0, newest.message
    break_merge(engine)
    older = run_job(job_config.with_overrides(
        input_path=night_file(tmp_path, "b.dat", 2, NIGHT - dt.timedelta(days=2))),
        overrides=Overrides(allow_older=True))
    assert older.exit_code == 3 and "injected MERGE failure" in older.message
    mend_merge(engine)
    resumed = resume_run(job_config, older.run_id)
    assert resumed.exit_code == 0, resumed.message
