"""The job log: the run id on every line, as text or as one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.generate import generate_file
from pipeline.logs import StderrHandler, configure_logging, run_context
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def installed() -> Iterator[StderrHandler]:
    """configure_logging as the CLI does it, undone afterwards."""
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("INFO", "json")
    assert isinstance(handler, StderrHandler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_lines_carry_the_run_id_and_the_extra_fields(
        installed: StderrHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)  # the handler writes to stderr as it is *now*
    log = logging.getLogger("pipeline.test")
    log.info("outside any run")
    with run_context("20261125T000000-abcdef01"):
        log.info("load done: %d read", 42, extra={"records_read": 42, "path": Path("/x")})
        log.debug("not shown at INFO")
    logging.getLogger("sqlalchemy.engine").info("libraries stay at WARNING")

    entries = [json.loads(line) for line in err.getvalue().splitlines()]
    assert [e["run_id"] for e in entries] == ["-", "20261125T000000-abcdef01"]
    outside, done = entries
    assert done["message"] == "load done: 42 read" and done["level"] == "INFO"
    assert done["records_read"] == 42 and done["path"] == "/x"
    assert done["ts"].endswith("Z") and outside["message"] == "outside any run"


def test_a_second_configure_replaces_the_first(installed: StderrHandler) -> None:
    again = configure_logging("WARNING", "text")
    try:
        ours = [h for h in logging.getLogger().handlers if isinstance(h, StderrHandler)]
        assert ours == [again]
    finally:
        logging.getLogger().removeHandler(again)


@pytest.mark.slow
def test_a_run_logs_its_steps_as_json_with_its_run_id_on_every_line(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 3_000, seed=2, reject_rate=0.01)
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--db",
                   f"sqlite:///{tmp_path / 'p.db'}", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert entries and {e["run_id"] for e in entries} == {run_id}
    for e in entries:
        assert {"ts", "level", "run_id", "message"} <= set(e)
    messages = " | ".join(e["message"] for e in entries)
    for step in ("run started", "planned input", "starting workers", "load done",
                 "reconciliation passed", "audit committed", "run ended SUCCEEDED",
                 "report written"):
        assert step in messages
    load = next(e for e in entries if e["message"].startswith("load done"))
    assert load["records_read"] == 3_000 and load["records_per_second"] > 0


def test_text_log_lines_carry_the_run_id_and_a_failed_run_says_why(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "run", "--input", str(tmp_path / "missing.dat"), "--db",
                   f"sqlite:///{tmp_path / 'p.db'}")
    assert done.returncode == 2
    run_id = done.stdout.split()[1]
    lines = done.stderr.splitlines()
    assert lines and all(f"run={run_id}" in line for line in lines)
    assert "ERROR" in lines[-1] and "does not exist" in lines[-1]


def test_log_level_warning_keeps_stderr_quiet_on_success(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 500, seed=2)
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--db",
                   f"sqlite:///{tmp_path / 'p.db'}", "--log-level", "warning")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
