"""The command line's errors: one plain sentence on stderr, the contract's exit code, and
never a traceback. Each case runs the real entry point in a subprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.generate import generate_file
from tests.conftest import run_cli, write_job

pytestmark = pytest.mark.timeout(120)

UNREACHABLE_PG = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"  # port 1: refused at once


def assert_plain_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    for word in words:
        assert word in done.stderr, done.stderr


def test_missing_input_file_exits_2_with_one_sentence(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "run", "--input", "no_such.dat", "--db", f"sqlite:///{tmp_path}/p.db",
                   "--no-progress")
    assert_plain_error(done, 2, "input file no_such.dat does not exist")
    assert "FAILED_INPUT (exit 2)" in done.stdout


def test_unreachable_database_exits_3_with_one_sentence(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 100, seed=1)
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--db", UNREACHABLE_PG,
                   "--no-progress")
    assert_plain_error(done, 3, "database error", "Connection refused")
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1


def test_bad_configuration_names_the_key(tmp_path: Path) -> None:
    write_job(tmp_path / "bad.toml", ("processors = 2", 'processors = "two"'))
    done = run_cli(tmp_path, "run", "bad.toml")
    assert_plain_error(done, 2, "workers.processors", "expected an integer")
    assert done.stderr.count("\n") == 1


def test_missing_configuration_file(tmp_path: Path) -> None:
    assert_plain_error(run_cli(tmp_path, "runs", "nowhere.toml"), 2, "nowhere.toml does not exist")


@pytest.mark.slow
def test_report_on_a_database_without_audit_tables(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    done = run_cli(tmp_path, "report", "--db", f"sqlite:///{tmp_path}/empty.db")
    assert_plain_error(done, 2, "has no audit tables", "batch_run")
    done = run_cli(tmp_path, "runs", "--db", f"sqlite:///{tmp_path}/empty.db")
    assert_plain_error(done, 2, "has no audit tables")


def test_report_never_creates_a_missing_sqlite_file(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "report", "--db", f"sqlite:///{tmp_path}/nothing.db")
    assert_plain_error(done, 2, "nothing.db does not exist")
    assert not (tmp_path / "nothing.db").exists()


def test_report_on_an_unreachable_database_exits_3(tmp_path: Path) -> None:
    assert_plain_error(run_cli(tmp_path, "runs", "--db", UNREACHABLE_PG), 3, "database error")


@pytest.mark.slow
def test_report_of_an_unknown_run_and_bad_arguments(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 100, seed=1)
    db = f"sqlite:///{tmp_path}/p.db"
    assert run_cli(tmp_path, "run", "--input", str(made.path), "--db", db).returncode == 0
    assert_plain_error(run_cli(tmp_path, "report", "20000101T000000-00000000", "--db", db), 2,
                               "no run 20000101T000000-00000000")
    assert_plain_error(run_cli(tmp_path, "runs", "--db", db, "--limit", "0"), 2, "--limit")
    assert_plain_error(run_cli(tmp_path, "report", "a", "b", "--db", db), 2, "at most one RUN_ID")
    assert_plain_error(run_cli(tmp_path, "report", "--no-such-flag"), 2, "unrecognized arguments")


def test_json_log_format_makes_errors_json_too(tmp_path: Path) -> None:
    import json

    done = run_cli(tmp_path, "runs", "--db", f"sqlite:///{tmp_path}/none.db",
                   "--log-format", "json")
    assert done.returncode == 2
    entry = json.loads(done.stderr)
    assert entry["level"] == "ERROR" and "does not exist" in entry["message"]


@pytest.mark.slow
def test_a_piped_run_shows_no_terminal_codes_and_no_progress_flag_is_accepted(
        tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 2_000, seed=1)
    db = f"sqlite:///{tmp_path}/p.db"
    # the same file twice: the second run says it is a rerun on purpose
    for flags in ([], ["--no-progress", "--rerun"]):
        done = run_cli(tmp_path, "run", "--input", str(made.path), "--db", db, *flags)
        assert done.returncode == 0, done.stderr
        assert "\x1b[" not in done.stdout + done.stderr
        assert "OK: all checks passed" in done.stdout
