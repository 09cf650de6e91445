"""A program that calls run_job gets the same outputs as the command line, from one call."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from pipeline.config import JobConfig
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.publish import publish_outputs
from tests.conftest import run_cli, shipped_job

UNREACHABLE_PG = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"  # port 1: refused at once

pytestmark = pytest.mark.timeout(120)


@pytest.mark.slow
def test_a_program_calling_run_job_publishes_what_the_cli_writes(
        tmp_path: Path, job_config: JobConfig) -> None:
    made = generate_file(tmp_path / "in.dat", 300, seed=3, reject_rate=0.02)
    textfile = tmp_path / "textfile" / "pipeline.prom"
    textfile.parent.mkdir()
    config = job_config.with_overrides(input_path=made.path, prometheus_textfile=textfile)

    started = time.monotonic()
    outcome = run_job(config)
    published = publish_outputs(outcome, config, time.monotonic() - started)

    assert outcome.exit_code == 0, outcome.message
    run_dir = outcome.run_dir
    assert (run_dir / "summary.txt").read_text(encoding="utf-8") == published.summary + "\n"
    assert published.summary.startswith(f"run      {outcome.run_id}\n")
    assert published.report == run_dir / "report.html"
    assert outcome.run_id in published.report.read_text(encoding="utf-8")
    assert published.prometheus == textfile
    assert 'status="SUCCEEDED"' in textfile.read_text(encoding="utf-8")

    cli_textfile = tmp_path / "textfile" / "cli.prom"
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--db", config.database_url,
                   "--prometheus-textfile", str(cli_textfile), "--rerun")
    assert done.returncode == 0, done.stderr
    cli_run = re.match(r"run\s+(\S+)", done.stdout)
    assert cli_run is not None, done.stdout
    cli_dir = tmp_path / "pipeline_work" / "runs" / cli_run[1]
    assert sorted(p.name for p in cli_dir.iterdir()) == sorted(p.name for p in run_dir.iterdir())
    assert "report.html" in {p.name for p in run_dir.iterdir()}
    assert done.stdout == (cli_dir / "summary.txt").read_text(encoding="utf-8")

    def status(text: str) -> list[str]:  # the lines that do not name a run or a path
        return [line.split(" -> ")[0] for line in text.splitlines()
                if line.startswith(("status", "rejects"))]
    assert status(done.stdout) == status(published.summary) == [
        "status   SUCCEEDED (exit 0)", f"rejects  {made.rejects}"]


def test_a_run_that_never_reached_its_database_still_gets_its_summary(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 100, seed=3)
    config = shipped_job(tmp_path, UNREACHABLE_PG).with_overrides(input_path=made.path)
    outcome = run_job(config)
    published = publish_outputs(outcome, config, 0.1)

    assert outcome.exit_code == 3 and not outcome.recorded
    assert published.report is None and published.prometheus is None
    assert "FAILED_RUNTIME" in published.summary
    summary = outcome.run_dir / "summary.txt"
    assert summary.read_text(encoding="utf-8") == published.summary + "\n"
    assert sorted(p.name for p in outcome.run_dir.iterdir()) == ["summary.txt"]
