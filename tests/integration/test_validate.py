"""`pipeline validate`: the run's parser and trailer checks, without any database."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from tests.conftest import run_cli, write_job
from tests.reference import detail, write_input

pytestmark = pytest.mark.timeout(120)


def reason_groups(stdout: str) -> list[str]:
    """The rejects' lines per reason: those indented under the ``rejects`` line (a check's
    detail is indented too, above it)."""
    lines = stdout.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("rejects  "))
    return [x for x in lines[start + 1:] if x.startswith("    ")]


def reject_file(done: subprocess.CompletedProcess[str], cwd: Path) -> Path:
    line = next(x for x in done.stdout.splitlines() if x.startswith("rejects  "))
    return cwd / line.split(" -> ")[1]


@pytest.mark.slow
def test_validate_rejects_what_a_run_rejects_and_touches_no_database(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 5_000, seed=4, reject_rate=0.02)

    done = run_cli(tmp_path, "validate", "--input", "in.dat")

    assert done.returncode == 0, done.stderr
    assert "OK: the file parses and its trailer balances" in done.stdout
    assert f"{made.rejects:,} rejected" in done.stdout
    assert not list(tmp_path.rglob("*.db")), "validate created a database"
    # grouped by reason, the counts add up to the rejects
    groups = reason_groups(done.stdout)
    assert sum(int(g.split()[0].replace(",", "")) for g in groups) == made.rejects
    assert all("'" not in g.split("  ")[-1] or "is not 'D'" in g for g in groups)

    config = load_config(shipped_config()).with_overrides(
        input_path=made.path, output_dir=tmp_path / "run", processors=3,
        database_url=f"sqlite:///{tmp_path / 'p.db'}")
    outcome = run_job(config)
    assert outcome.exit_code == 0 and outcome.reject_file is not None
    assert reject_file(done, tmp_path).read_bytes() == outcome.reject_file.read_bytes()


def test_validate_a_trailer_that_does_not_balance_exits_1(tmp_path: Path) -> None:
    path = write_input(tmp_path / "off.dat", [detail(f"K{i}", 100 + i) for i in range(50)],
                       count=49)
    done = run_cli(tmp_path, "validate", "--input", str(path))
    assert done.returncode == 1, done.stderr
    assert "FAILED: source_trailer_count; no database was touched" in done.stdout


def test_validate_a_file_without_trailer_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"H" + b" " * 99 + b"\n")
    done = run_cli(tmp_path, "validate", "--input", str(bad))
    assert done.returncode == 2
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_validate_takes_a_config_and_its_input(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 100, seed=1)
    write_job(tmp_path / "job.toml")
    done = run_cli(tmp_path, "validate", "job.toml", "--input", str(made.path))
    assert done.returncode == 0, done.stderr
    assert "100 read, 100 accepted, 0 rejected" in done.stdout


def test_validate_a_copybook_job_groups_binary_reasons(tmp_path: Path) -> None:
    from pipeline.generate_mainframe import generate_mainframe_file

    made = generate_mainframe_file(tmp_path / "in.fb", 3_000, "ebcdic-fb", seed=5,
                                   reject_rate=0.01)

    done = run_cli(tmp_path, "validate", "daily_transactions_ebcdic", "--input", "in.fb")

    assert done.returncode == 0, done.stderr
    assert f"{made.rejects:,} rejected" in done.stdout
    groups = reason_groups(done.stdout)
    # a hex dump and a byte offset are the record's own: equal faults count together
    assert len(groups) <= 8 and "byte offset" not in done.stdout
    assert sum(int(g.split()[0]) for g in groups) == made.rejects
