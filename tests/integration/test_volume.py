"""volume_vs_history (issue 19): tonight's records read against the median of the job's
last SUCCEEDED runs. A truncated extract whose trailer matches balances every other
check; this check is how the night gets noticed: a warning by default, a failure (exit 1,
FINAL unchanged, MERGE skipped) with control.volume_action = "fail"."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError
from pipeline.explain import explain_run, format_explanation
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.outcome import RunOutcome
from pipeline.resume import resume_run
from pipeline.summary import format_summary
from recon import checks
from recon.checks import VOLUME_VS_HISTORY, volume_vs_history
from recon.values import ReconciliationResult, VolumeRule
from tests.conftest import final_rows, write_job

pytestmark = pytest.mark.timeout(240)

WARN, FAIL = VolumeRule(), VolumeRule(action="fail")
NIGHTS = [1_000, 1_040, 980, 1_010, 1_020]  # median_low: 1,010


# --- the rule -----------------------------------------------------------------------------


def test_without_enough_history_the_night_is_not_judged() -> None:
    result = volume_vs_history(WARN, [1_000, 1_000, 1_000, 1_000], 10)
    assert result.passed and result.detail.startswith("not enough history (4 of 5 runs)")
    assert (result.expected_count, result.actual_count) == (1_000, 10)
    first = volume_vs_history(FAIL, [], 10)  # the job's first night
    assert first.passed and "0 of 5 runs" in first.detail and first.discrepancy == 0


@pytest.mark.parametrize("tonight", [505, 1_000, 1_515])
def test_an_ordinary_night_passes_without_a_warning(tonight: int) -> None:
    result = volume_vs_history(FAIL, NIGHTS, tonight)
    assert result.passed and not result.detail.startswith(checks.WARNING), result.detail
    assert result.expected_count == 1_010 and "median of the last 5" in result.detail


@pytest.mark.parametrize("tonight", [0, 504, 1_516, 10_000])
def test_outside_the_band_warns_by_default_and_fails_on_request(tonight: int) -> None:
    warned = volume_vs_history(WARN, NIGHTS, tonight)
    assert warned.passed and warned.detail.startswith("warning: ")
    assert f"{tonight:,} records read, outside +/-50%" in warned.detail
    assert "(1,010: 505 to 1,515)" in warned.detail
    failed = volume_vs_history(FAIL, NIGHTS, tonight)
    assert not failed.passed and failed.evaluated
    assert not failed.detail.startswith(checks.WARNING)


def test_only_the_last_n_runs_count_and_the_band_is_configurable() -> None:
    rule = VolumeRule(history_runs=3, band=0.1, min_runs=3, action="fail")
    history = [100, 100, 100, 5_000, 5_000, 5_000]  # newest first: the feed shrank
    assert volume_vs_history(rule, history, 95).passed
    assert not volume_vs_history(rule, history, 89).passed
    assert volume_vs_history(rule, history, 89).expected_count == 100


def test_the_check_runs_before_the_merge_checks() -> None:
    order = checks.CHECK_ORDER
    assert order.index(checks.WRITTEN_TO_STAGING) < order.index(VOLUME_VS_HISTORY) \
        < order.index(checks.STAGING_TO_FINAL)


def test_a_warning_is_a_line_of_the_summary(tmp_path: Path) -> None:
    outcome = RunOutcome("r", "job", "SUCCEEDED", 0, "all checks passed", tmp_path / "in",
                         "sqlite:///x.db", tmp_path, results=[
                             volume_vs_history(WARN, NIGHTS, 100),
                             ReconciliationResult("staging_to_final", 1, 1, True)])
    lines = format_summary(outcome, 2).splitlines()
    warning = [line for line in lines if line.startswith("warning  ")]
    assert warning == ["warning  volume_vs_history: 100 records read, outside +/-50% of the "
                       "median of the last 5 succeeded runs (1,010: 505 to 1,515)"]


# --- the configuration --------------------------------------------------------------------


def test_the_settings_and_their_defaults(tmp_path: Path) -> None:
    assert load_config(write_job(tmp_path / "a.toml", ("[control]", "[control]"))).volume \
        == VolumeRule(history_runs=10, band=0.5, min_runs=5, action="warn")
    set_all = write_job(tmp_path / "b.toml", ("[control]", '[control]\nvolume_history_runs = '
                                              '20\nvolume_min_runs = 7\nvolume_band = 0.25\n'
                                              'volume_action = "fail"'))
    assert load_config(set_all).volume == VolumeRule(20, 0.25, 7, "fail")
    few = write_job(tmp_path / "c.toml", ("[control]", "[control]\nvolume_history_runs = 3"))
    assert load_config(few).volume.min_runs == 3  # the default never exceeds N


@pytest.mark.parametrize(("setting", "key"), [
    ("volume_history_runs = 0", "control.volume_history_runs"),
    ("volume_min_runs = 11", "control.volume_min_runs"),
    ("volume_band = 0", "control.volume_band"),
    ("volume_band = -0.5", "control.volume_band"),
    ("volume_band = nan", "control.volume_band"),
    ('volume_band = "half"', "control.volume_band"),
    ('volume_action = "stop"', "control.volume_action"),
    ("volume_window = 3", "control.volume_window"),
])
def test_a_bad_setting_names_its_key(setting: str, key: str, tmp_path: Path) -> None:
    path = write_job(tmp_path / "job.toml", ("[control]", f"[control]\n{setting}"))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path)


# --- a real history -----------------------------------------------------------------------


def history_of(tmp_path: Path, config: JobConfig, records: int, nights: int) -> list[str]:
    """``nights`` SUCCEEDED runs of ``records`` records each (distinct files)."""
    runs = []
    for seed in range(nights):
        path = generate_file(tmp_path / f"night{seed}.dat", records, seed=100 + seed).path
        outcome = run_job(config.with_overrides(input_path=path))
        assert outcome.exit_code == 0, outcome.message
        runs.append(outcome)
    return [r.run_id for r in runs]


def volume_of(outcome: RunOutcome) -> ReconciliationResult:
    return next(r for r in outcome.results if r.check_name == VOLUME_VS_HISTORY)


def test_a_short_night_after_five_is_warned_and_fails_when_asked(
        tmp_path: Path, job_config: JobConfig, engine: Engine,
        caplog: pytest.LogCaptureFixture) -> None:
    history_of(tmp_path, job_config, 400, 5)
    ordinary = run_job(job_config.with_overrides(
        input_path=generate_file(tmp_path / "ordinary.dat", 390, seed=1).path))
    assert ordinary.exit_code == 0, ordinary.message
    assert volume_of(ordinary).detail == "within +/-50% of the median of the last 5 " \
                                         "succeeded runs"

    short = generate_file(tmp_path / "short.dat", 150, seed=2).path
    with caplog.at_level(logging.WARNING, logger="pipeline.job"):
        warned = run_job(job_config.with_overrides(input_path=short))
    assert warned.exit_code == 0, warned.message
    volume = volume_of(warned)
    assert volume.passed and volume.detail.startswith("warning: 150 records read")
    assert (volume.expected_count, volume.actual_count) == (400, 150)
    assert any(r.levelno == logging.WARNING and "volume_vs_history: 150 records read"
               in r.getMessage() for r in caplog.records)

    before = final_rows(engine, job_config)
    strict = job_config.with_overrides(volume=FAIL)
    shorter = generate_file(tmp_path / "shorter.dat", 120, seed=3).path
    failed = run_job(strict.with_overrides(input_path=shorter))
    assert (failed.exit_code, failed.status) == (1, "FAILED_RECON"), failed.message
    assert "volume_vs_history" in failed.message
    assert not volume_of(failed).passed
    skipped = next(r for r in failed.results if r.check_name == checks.STAGING_TO_FINAL)
    assert not skipped.evaluated  # no MERGE ran
    assert final_rows(engine, job_config) == before
    explained = format_explanation(explain_run(strict, engine, failed.run_id))
    assert "note: volume_vs_history: 120 records read" in explained

    # a resume finishes the same instance, judged as it first was: it does not let it by
    resumed = resume_run(strict, failed.run_id)
    assert resumed.exit_code == 1 and "volume_vs_history" in resumed.message
    assert final_rows(engine, job_config) == before
