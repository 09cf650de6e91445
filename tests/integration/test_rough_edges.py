"""The rough edges a new user hit (issue 12), each pinned by a test that fails if it
comes back. Numbers in the test names are the issue's."""

from __future__ import annotations

import json
import os
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.audit.reader import RunReport, RunRow
from pipeline.config import JobConfig, load_config, parse_config
from pipeline.errors import ConfigError, InputStructureError
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from pipeline.metrics.prometheus import exposition, run_families
from pipeline.reporting.htmlpage import render_html
from pipeline.summary import format_summary
from recon.values import WorkerMetrics
from tests.conftest import run_cli, write_job
from tests.reference import detail, write_input

pytestmark = pytest.mark.timeout(120)
T0 = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def ticks(html: str) -> list[str]:
    return re.findall(r'text-anchor="middle">([^<]+)</text>', html)


def report(workers: list[WorkerMetrics], seconds: float, results: list | None = None
           ) -> RunReport:
    run = RunRow("r1", "daily_transactions", "INTERRUPTED", 3, T0, T0 + timedelta(seconds=seconds))
    return RunReport(run, 2, results or [], workers)


def worker(wid: int, start: float, end: float | None) -> WorkerMetrics:
    return WorkerMetrics(wid, "processor", 10, 0, T0 + timedelta(seconds=start),
                         None if end is None else T0 + timedelta(seconds=end), state="killed")


def test_1_html_of_an_interrupted_run_has_a_time_axis_and_says_no_check_ran() -> None:
    html = render_html(report([worker(0, 0.1, None), worker(1, 0.1, None)], seconds=4.0))
    assert "0 of 0" not in html
    assert "No check was recorded" in html
    # the axis runs to the run's end, not to the last START_TS (which read 0.0 s everywhere)
    assert ticks(html)[0] == "0.0 s" and ticks(html)[-1] == "3.9 s"
    assert len(set(ticks(html))) == 5


def test_1_short_runs_get_distinct_ticks() -> None:
    html = render_html(report([worker(0, 0.0, 0.12)], seconds=0.12))
    assert len(set(ticks(html))) == 5, ticks(html)


def test_2_a_check_not_evaluated_does_not_read_like_lost_data(
        tmp_path: Path, job_config: JobConfig) -> None:
    path = write_input(tmp_path / "in.dat", [detail(f"K{i}", i) for i in range(1_000)],
                       count=999)
    outcome = run_job(job_config.with_overrides(input_path=path))
    assert outcome.exit_code == 1
    assert outcome.message == ("reconciliation failed: source_trailer_count (staging_to_final, "
                               "staging_to_final_amount, staging_to_final_columns not "
                               "evaluated); FINAL unchanged")
    summary = format_summary(outcome, 2)
    line = next(x for x in summary.splitlines() if x.startswith("staging_to_final "))
    assert line.split()[1:] == ["1,000", "-", "-", "N"]
    assert "-1,000" not in summary


@pytest.mark.slow
def test_3_unwritable_outputs_are_plain_errors(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "generate", "--records", "5", "--out", "/nonexistent/dir/x.dat")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "/nonexistent/dir/x.dat" in done.stderr and ".part" not in done.stderr

    made = generate_file(tmp_path / "in.dat", 50, seed=1)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    assert run_cli(tmp_path, "run", "--input", str(made.path), "--db", db,
                   "--no-progress").returncode == 0
    done = run_cli(tmp_path, "report", "--db", db, "--html", "/nonexistent/dir/r.html")
    assert done.returncode == 2, done.stderr
    assert "internal error" not in done.stderr and "/nonexistent/dir/r.html" in done.stderr


def test_4_a_fixed_width_file_given_to_the_csv_job_is_told_so(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 10, seed=1)
    config = load_config(shipped_config("customer_balances"))
    with pytest.raises(InputStructureError, match="fixed-width file"):
        config.input_format.plan(made.path, 1)


def test_4_a_crlf_file_is_told_its_line_ends(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 10, seed=1)
    crlf = tmp_path / "crlf.dat"
    crlf.write_bytes(made.path.read_bytes().replace(b"\n", b"\r\n"))
    config = load_config(shipped_config())
    with pytest.raises(InputStructureError, match="CR LF"):
        config.input_format.plan(crlf, 1)


@pytest.mark.slow
def test_5_report_and_runs_take_a_shipped_job_by_name(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    made = generate_file(tmp_path / "in.dat", 50, seed=1)
    assert run_cli(tmp_path, "run", "customer_balances", "--db", db,
                   "--no-progress").returncode == 0
    assert run_cli(tmp_path, "run", "--input", str(made.path), "--db", db,
                   "--no-progress").returncode == 0

    runs = run_cli(tmp_path, "runs", "customer_balances", "--db", db, "--json")
    assert runs.returncode == 0, runs.stderr
    assert {r["job_name"] for r in json.loads(runs.stdout)} == {"customer_balances"}
    runs = run_cli(tmp_path, "runs", "--job", "daily_transactions", "--db", db, "--json")
    assert {r["job_name"] for r in json.loads(runs.stdout)} == {"daily_transactions"}
    assert len(json.loads(run_cli(tmp_path, "runs", "--db", db, "--json").stdout)) == 2

    shown = run_cli(tmp_path, "report", "customer_balances", "--db", db, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run"]["job_name"] == "customer_balances"


def test_6_a_typo_in_the_database_folder_is_refused(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 20, seed=1)
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--db",
                   f"sqlite:///{tmp_path}/nonexistent/dir/p.db", "--no-progress")
    assert done.returncode == 2
    assert "nonexistent/dir does not exist" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.slow
def test_6_the_default_database_is_still_created_on_the_first_run(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 20, seed=1)
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pipeline_work" / "pipeline.db").is_file()


@pytest.mark.slow
def test_7_plural_writer_and_named_layouts(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 20, seed=1)
    # a subprocess: the job's own logging setup, whatever an earlier test configured
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--processors", "1",
                   "--writers", "1", "--no-progress", "--db", f"sqlite:///{tmp_path / 'p.db'}")
    assert done.returncode == 0, done.stderr
    assert "1 processor, 1 writer," in done.stderr
    data = tomllib.loads(shipped_config().read_text())
    data["tables"]["key"] = "nokey"
    with pytest.raises(ConfigError, match="layout of the 'D' records"):
        parse_config(data, source=Path("job.toml"))


def test_7_generate_help_describes_every_option(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "generate", "--help")
    assert done.returncode == 0
    # argparse wraps help text: compare on whitespace-normalised output
    shown = " ".join(done.stdout.split())
    for option, words in (("--records", "detail records to write"),
                          ("--out", "the file to write"), ("--seed", "random seed"),
                          ("--reject-rate", "must reject"),
                          ("--duplicate-rate", "repeating an earlier key")):
        assert option in shown and words in shown, option


def test_7_prometheus_gauges_carry_no_counter_suffix(tmp_path: Path,
                                                     job_config: JobConfig) -> None:
    made = generate_file(tmp_path / "in.dat", 20, seed=1)
    outcome = run_job(job_config.with_overrides(input_path=made.path))
    text = exposition(run_families(outcome, 1.0))
    gauges = re.findall(r"# TYPE (\S+) gauge", text)
    assert gauges and not [g for g in gauges if g.endswith("_total")]


def test_8_without_the_packages_the_cli_says_what_to_do(tmp_path: Path) -> None:
    # -S: no site-packages, as a python3 outside the virtual environment run from a
    # checkout, where the project's own code is found but not the packages it needs
    checkout = str(Path(__file__).resolve().parents[2])
    done = run_cli(tmp_path, "runs", python=("-S",), env={**os.environ, "PYTHONPATH": checkout})
    assert done.returncode != 0
    assert "not installed" in done.stderr and "virtual environment" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_9_refused_and_failed_runs_get_a_folder_with_summary_and_report(
        tmp_path: Path) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_text("garbage\n")
    done = run_cli(tmp_path, "run", "--input", str(bad), "--no-progress")
    assert done.returncode == 2
    run_id = re.search(r"run\s+(\S+)", done.stdout).group(1)  # type: ignore[union-attr]
    folder = tmp_path / "pipeline_work" / "runs" / run_id
    assert (folder / "summary.txt").read_text().startswith(f"run      {run_id}")
    assert (folder / "report.html").is_file()
    unreachable = run_cli(tmp_path, "run", "--input", str(bad), "--no-progress", "--db",
                          "postgresql+psycopg://nobody@127.0.0.1:1/nothing")
    assert unreachable.returncode in (2, 3)
    run_id = re.search(r"run\s+(\S+)", unreachable.stdout).group(1)  # type: ignore[union-attr]
    assert (tmp_path / "pipeline_work" / "runs" / run_id / "summary.txt").is_file()


def test_version(tmp_path: Path) -> None:
    import pipeline

    done = run_cli(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"pipeline {pipeline.__version__}"


@pytest.mark.slow
def test_rejects_by_reason_and_explain_in_report_json_and_html(
        tmp_path: Path, job_config: JobConfig) -> None:
    from sqlalchemy import Engine, text

    made = generate_file(tmp_path / "in.dat", 2_000, seed=3, reject_rate=0.02)

    def lose(eng: Engine, run_id: str) -> None:
        with eng.begin() as conn:
            conn.execute(text("DELETE FROM stg_transactions WHERE run_id = :r AND "
                              "source_line = (SELECT MAX(source_line) FROM stg_transactions "
                              "WHERE run_id = :r)"), {"r": run_id})

    config = job_config.with_overrides(input_path=made.path)
    outcome = run_job(config, after_load=lose)
    assert outcome.exit_code == 1
    summary = format_summary(outcome, 2)
    assert "is not" in summary.split("rejects  ")[1]  # reasons listed under the count

    toml = write_job(tmp_path / "job.toml",
                     ('dir = "pipeline_work"', f'dir = "{config.output_dir}"'))
    done = run_cli(tmp_path, "report", outcome.run_id, str(toml), "--db", config.database_url,
                   "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert sum(r["records"] for r in doc["rejects_by_reason"]) == made.rejects
    assert doc["explain"]["counts"]["accepted, not in staging"] == 1
    html = tmp_path / "r.html"
    assert run_cli(tmp_path, "report", outcome.run_id, str(toml), "--db", config.database_url,
                   "--html", str(html)).returncode == 0
    page = html.read_text()
    assert "Rejects by reason" in page and "Records behind the failed checks" in page
