"""`run --resume`: a run that failed after its staging load finishes from staging, without
its file, and is never merged twice; every other run is refused with a reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from pipeline.audit.reader import load_report, open_audit
from pipeline.config import JobConfig
from pipeline.errors import DatabaseFailure, Interrupted
from pipeline.explain import explain_run, format_explanation
from pipeline.generate import generate_file
from pipeline.identity import Overrides
from pipeline.job import run_job
from pipeline.reporting.htmlpage import render_html
from pipeline.reporting.jsondoc import report_document
from pipeline.reporting.text import format_report
from pipeline.resume import ResumeRefused, resume_run
from recon import checks
from tests.conftest import assert_final_matches, run_cli
from tests.integration.test_explain import final_triggers
from tests.reference import detail, expected_from_file, write_input

pytestmark = pytest.mark.timeout(120)

SQLITE_BREAK = ("CREATE TRIGGER break_merge BEFORE INSERT ON transactions "
                "BEGIN SELECT RAISE(ABORT, 'injected MERGE failure'); END")
PG_BREAK = ["CREATE FUNCTION break_merge() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected MERGE failure'; END $$",
            "CREATE TRIGGER break_merge BEFORE INSERT ON transactions "
            "FOR EACH ROW EXECUTE FUNCTION break_merge()"]


def break_merge(engine: Engine) -> None:
    with engine.begin() as conn:
        for statement in ([SQLITE_BREAK] if engine.dialect.name == "sqlite" else PG_BREAK):
            conn.execute(text(statement))


def mend_merge(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER break_merge"))
        else:
            conn.execute(text("DROP TRIGGER break_merge ON transactions"))


def batch_run(engine: Engine, run_id: str) -> tuple:
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT status, exit_code, resumed_ts, message FROM batch_run WHERE run_id = :r"),
            {"r": run_id}).one())


def final_stamps(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT txn_id, last_run_id, updated_ts FROM transactions ORDER BY txn_id"))]


def failed_merge_run(tmp_path: Path, config: JobConfig, engine: Engine) -> tuple[str, Path]:
    """A run whose MERGE the database refused: loaded, checked, exit 3, FINAL empty."""
    made = generate_file(tmp_path / "in.dat", 3_000, seed=5, reject_rate=0.01,
                         duplicate_rate=0.01)
    config = config.with_overrides(input_path=made.path, processors=2)
    run_job(config)  # creates the tables (the trigger needs FINAL)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM transactions"))
    break_merge(engine)
    outcome = run_job(config, overrides=Overrides(rerun=True))  # the same file, on purpose
    assert outcome.exit_code == 3, outcome.message
    assert "injected MERGE failure" in outcome.message
    mend_merge(engine)
    assert final_stamps(engine) == []
    return outcome.run_id, made.path


@pytest.mark.slow
def test_resume_after_a_failed_merge_finishes_without_the_file(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    run_id, path = failed_merge_run(tmp_path, job_config, engine)
    expected = expected_from_file(path)
    path.unlink()  # resuming must not need it

    outcome = resume_run(job_config, run_id)

    assert outcome.exit_code == 0, outcome.message
    assert [r.check_name for r in outcome.results] == list(checks.CHECK_ORDER)
    assert all(r.passed for r in outcome.results)
    assert_final_matches(engine, job_config, expected)
    status, exit_code, resumed_ts, message = batch_run(engine, run_id)
    assert (status, exit_code) == ("SUCCEEDED", 0) and resumed_ts is not None
    assert "resumed from staging" in message
    with engine.connect() as conn:
        passed = conn.execute(text("SELECT passed FROM recon_audit WHERE run_id = :r "
                                   "AND check_ts >= :t"), {"r": run_id, "t": resumed_ts}).all()
    assert [p for (p,) in passed] == ["Y"] * len(checks.CHECK_ORDER)
    with open_audit(job_config.database_url) as audit_engine:  # the report shows the resume's
        shown = load_report(audit_engine, run_id)
    assert [r.check_name for r in shown.results] == list(checks.CHECK_ORDER)
    assert all(r.passed for r in shown.results) and shown.run.status == "SUCCEEDED"


@pytest.mark.slow
def test_a_second_resume_says_committed_and_leaves_final_alone(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    run_id, _ = failed_merge_run(tmp_path, job_config, engine)
    assert resume_run(job_config, run_id).exit_code == 0
    before, run_before = final_stamps(engine), batch_run(engine, run_id)

    again = resume_run(job_config, run_id)

    assert again.exit_code == 0 and "already committed" in again.message
    assert final_stamps(engine) == before
    assert batch_run(engine, run_id) == run_before


def test_a_merge_that_committed_without_its_audit_is_not_merged_twice(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 1_000, seed=8)
    outcome = run_job(job_config.with_overrides(input_path=made.path))
    assert outcome.exit_code == 0
    # as if killed between the MERGE's commit and the audit's: RUNNING, then ABENDED
    with engine.begin() as conn:
        conn.execute(text("UPDATE batch_run SET status = 'ABENDED', exit_code = NULL "
                          "WHERE run_id = :r"), {"r": outcome.run_id})
        conn.execute(text("DELETE FROM recon_audit WHERE run_id = :r"), {"r": outcome.run_id})
    before = final_stamps(engine)

    resumed = resume_run(job_config, outcome.run_id)

    assert resumed.exit_code == 0, resumed.message
    assert "without merging again" in resumed.message
    assert [r.check_name for r in resumed.results] == list(checks.CHECK_ORDER)
    assert all(r.passed for r in resumed.results)
    assert final_stamps(engine) == before
    assert batch_run(engine, outcome.run_id)[:2] == ("SUCCEEDED", 0)


@pytest.mark.slow
def test_resume_refuses_a_run_whose_staging_changed(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    run_id, _ = failed_merge_run(tmp_path, job_config, engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM stg_transactions WHERE run_id = :r AND source_line = "
                          "(SELECT MIN(source_line) FROM stg_transactions WHERE run_id = :r)"),
                     {"r": run_id})
    before = batch_run(engine, run_id)

    with pytest.raises(ResumeRefused, match="processed_to_staging") as refused:
        resume_run(job_config, run_id)

    assert refused.value.exit_code == 2
    assert final_stamps(engine) == []
    assert batch_run(engine, run_id)[:2] == before[:2]


def test_resume_refuses_runs_it_cannot_finish(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_text("not a header\n")
    refused_input = run_job(job_config.with_overrides(input_path=bad))
    assert refused_input.exit_code == 2

    with pytest.raises(ResumeRefused, match="before its staging load completed"):
        resume_run(job_config, refused_input.run_id)
    with pytest.raises(ResumeRefused, match="no run nope"):
        resume_run(job_config, "nope")
    other = job_config.with_overrides(name="another_job")
    with pytest.raises(ResumeRefused, match="not of another_job"):
        resume_run(other, refused_input.run_id)


@pytest.mark.slow
def test_cli_resume_prints_the_summary(tmp_path: Path, job_config: JobConfig,
                                       engine: Engine) -> None:
    run_id, _ = failed_merge_run(tmp_path, job_config, engine)
    done = run_cli(tmp_path, "run", "--resume", run_id, "--db", job_config.database_url)
    assert done.returncode == 0, done.stderr
    assert f"run      {run_id}" in done.stdout and "resumed from staging" in done.stdout
    refused = run_cli(tmp_path, "run", "--resume", "nope", "--db", job_config.database_url)
    assert refused.returncode == 2 and "no run nope" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_an_interrupted_run_resumes(tmp_path: Path, job_config: JobConfig,
                                    engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 2_000, seed=12, duplicate_rate=0.02)

    def interrupt(_eng: Engine, _run_id: str) -> None:
        raise Interrupted("interrupted by signal SIGTERM")

    config = job_config.with_overrides(input_path=made.path)
    stopped = run_job(config, after_load=interrupt)
    assert (stopped.status, stopped.exit_code) == ("INTERRUPTED", 3)

    resumed = resume_run(config, stopped.run_id)

    assert resumed.exit_code == 0, resumed.message
    assert resumed.duplicates_collapsed == made.duplicates
    assert_final_matches(engine, config, expected_from_file(made.path))


# -- a refused resume writes nothing; the audit never reads as less than it holds ----------


def trailer_failed_run(tmp_path: Path, config: JobConfig) -> str:
    """A run that failed its trailer check: every check in RECON_AUDIT, FINAL untouched."""
    path = write_input(tmp_path / "off.dat", [detail(f"K{i}", 100 + i) for i in range(50)],
                       count=49)
    outcome = run_job(config.with_overrides(input_path=path))
    assert (outcome.status, outcome.exit_code) == ("FAILED_RECON", 1), outcome.message
    return outcome.run_id


def audit_rows(engine: Engine, run_id: str) -> tuple[tuple, list[tuple]]:
    """The run's BATCH_RUN row and RECON_AUDIT rows, every column."""
    with engine.connect() as conn:
        run = tuple(conn.execute(text("SELECT * FROM batch_run WHERE run_id = :r"),
                                 {"r": run_id}).one())
        recon = [tuple(r) for r in conn.execute(text(
            "SELECT * FROM recon_audit WHERE run_id = :r ORDER BY recon_id"), {"r": run_id})]
    return run, recon


def assert_every_check_shown(config: JobConfig, run_id: str, failed: str) -> None:
    """report (text, JSON, HTML) and explain show the run's checks, the failed one named."""
    with open_audit(config.database_url) as audit_engine:
        shown = load_report(audit_engine, run_id)
        found = explain_run(config, audit_engine, run_id, replay=False)
    assert [r.check_name for r in shown.results] == list(checks.CHECK_ORDER)
    assert shown.checks_failed >= 1 and shown.earlier_results == []
    doc = report_document(shown)
    assert len(doc["checks"]) == len(checks.CHECK_ORDER) and doc["checks_failed"] >= 1
    assert f"{failed} " in format_report(shown)
    assert "No check was recorded" not in render_html(shown)
    explained = format_explanation(found)
    assert f"failed   {failed}" in explained and "no check was recorded" not in explained


def test_a_refused_resume_writes_nothing(tmp_path: Path, job_config: JobConfig,
                                         engine: Engine) -> None:
    run_id = trailer_failed_run(tmp_path, job_config)
    before = audit_rows(engine, run_id)

    with pytest.raises(ResumeRefused, match="source_trailer_count"):
        resume_run(job_config, run_id)

    assert audit_rows(engine, run_id) == before  # RESUMED_TS included
    assert_every_check_shown(job_config, run_id, checks.SOURCE_TRAILER_COUNT)


def test_a_resumed_ts_without_checks_after_it_hides_no_check(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    run_id = trailer_failed_run(tmp_path, job_config)
    # as an earlier version's refused resume left the run: RESUMED_TS after every check
    with engine.begin() as conn:
        conn.execute(text("UPDATE batch_run SET resumed_ts = :t WHERE run_id = :r"),
                     {"t": dt.datetime(2999, 1, 1), "r": run_id})

    assert_every_check_shown(job_config, run_id, checks.SOURCE_TRAILER_COUNT)


@pytest.mark.slow
def test_a_resumed_run_shows_its_checks_and_the_attempt_before(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    first = generate_file(tmp_path / "first.dat", 50, seed=2)
    assert run_job(job_config.with_overrides(input_path=first.path)).exit_code == 0
    final_triggers(engine)  # FINAL alters K7 and drops K9: the checks after the MERGE fail
    path = write_input(tmp_path / "in.dat", [detail(f"K{i}", 100 + i) for i in range(40)])
    failed = run_job(job_config.with_overrides(input_path=path))
    assert failed.exit_code == 1, failed.message
    drop_final_triggers(engine)

    assert resume_run(job_config, failed.run_id).exit_code == 0

    with open_audit(job_config.database_url) as audit_engine:
        shown = load_report(audit_engine, failed.run_id)
    assert [r.passed for r in shown.results] == [True] * len(checks.CHECK_ORDER)
    assert [r.check_name for r in shown.earlier_results] == list(checks.CHECK_ORDER)
    assert not all(r.passed for r in shown.earlier_results)
    doc = report_document(shown)
    assert doc["checks_failed"] == 0 and len(doc["earlier_checks"]) == len(checks.CHECK_ORDER)
    assert "before `run --resume`" in format_report(shown)
    assert 'id="earlier-checks"' in render_html(shown)


def drop_final_triggers(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER alter_k7"))
            conn.execute(text("DROP TRIGGER drop_k9"))
        else:
            conn.execute(text("DROP TRIGGER meddle ON transactions"))


def test_resume_of_a_purged_run_names_the_setting(tmp_path: Path, job_config: JobConfig,
                                                  engine: Engine) -> None:
    def interrupt(_eng: Engine, _run_id: str) -> None:
        raise Interrupted("interrupted by signal SIGTERM")

    config = job_config.with_overrides(keep_staging_runs=1)
    made = generate_file(tmp_path / "a.dat", 200, seed=3)
    stopped = run_job(config.with_overrides(input_path=made.path), after_load=interrupt)
    assert stopped.exit_code == 3
    later = generate_file(tmp_path / "b.dat", 200, seed=4)
    assert run_job(config.with_overrides(input_path=later.path)).exit_code == 0  # purges

    with pytest.raises(ResumeRefused, match="were purged") as refused:
        resume_run(config, stopped.run_id)

    assert "(tables.keep_staging_runs)" in str(refused.value)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_resume_whose_statement_runs_past_its_bound_is_stopped_and_says_why(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    """A resume's statements are bounded as a run's: a MERGE held up past
    statement_timeout (a trigger that never ends) is cancelled — by PostgreSQL's own
    statement_timeout, which the resume's sessions carry, and on SQLite, whose statements
    run unbounded, by the watchdog — the resume fails exit 3 saying so, FINAL is as it
    was, and the run can be resumed again once the cause is gone."""
    run_id, _ = failed_merge_run(tmp_path, job_config, engine)
    with engine.begin() as conn:
        for statement in ENDLESS[engine.dialect.name]:
            conn.execute(text(statement))
    bounded = job_config.with_overrides(statement_timeout=1.0)
    with pytest.raises(DatabaseFailure) as caught:
        resume_run(bounded, run_id)
    if engine.dialect.name == "postgresql":  # the server's bound, not the watchdog's
        assert "the statement did not finish within database.statement_timeout" in str(
            caught.value), caught.value
    else:
        assert str(caught.value).startswith("the database did not answer "), caught.value
        assert "(database.statement_timeout 1 s + 10 s): the run cancelled it" in str(
            caught.value)
    assert final_stamps(engine) == []
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER endless" + (
            "" if engine.dialect.name == "sqlite" else " ON transactions")))
    assert resume_run(job_config, run_id).exit_code == 0


ENDLESS = {  # a trigger on FINAL that never ends, as a server that stopped answering
    "sqlite": ["CREATE TRIGGER endless AFTER INSERT ON transactions BEGIN SELECT COUNT(*) "
               "FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
               "SELECT i FROM n); END"],
    "postgresql": ["CREATE FUNCTION endless() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN PERFORM pg_sleep(600); RETURN NULL; END $$",
                   "CREATE TRIGGER endless AFTER INSERT ON transactions "
                   "FOR EACH STATEMENT EXECUTE FUNCTION endless()"],
}
