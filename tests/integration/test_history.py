"""`pipeline history`: a job's runs night after night, anomalies marked in text, JSON and
HTML, on every database (the nights built straight into a real audit: tests.nights)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from pipeline.audit.reader import open_audit
from pipeline.config import JobConfig
from pipeline.reporting.history import format_history, history_document, load_history
from pipeline.reporting.historypage import render_history, write_history_page
from recon.trends import NightFigures, judge_nights
from recon.values import VolumeRule
from tests.conftest import engine_for, run_cli
from tests.nights import build_history, odd_nights, ordinary_nights, run_id_of

pytestmark = pytest.mark.timeout(120)
NIGHTS = 90


@pytest.fixture
def ninety(job_config: JobConfig) -> dict[int, str]:
    """90 nights of the shipped job in the test's database; the odd ones by index."""
    nights, odd = odd_nights(NIGHTS)
    with engine_for(job_config.database_url) as engine:
        build_history(engine, job_config.name, nights)
    return odd


def history_of(config: JobConfig, nights: int = NIGHTS):
    with open_audit(config.database_url) as engine:
        return load_history(engine, config.name, nights, config.volume,
                            config.amount_field.scale)


def test_the_odd_nights_and_only_they_are_marked_in_json(
        job_config: JobConfig, ninety: dict[int, str]) -> None:
    document = history_document(history_of(job_config))
    runs = document["runs"]
    assert len(runs) == NIGHTS
    assert runs[0]["run_id"] == run_id_of(NIGHTS - 1)  # newest first
    marked = {r["run_id"]: r["anomalies"] for r in runs if r["anomalies"]}
    assert marked == {run_id_of(i): [what] for i, what in ninety.items()}
    three = next(r for r in runs if r["run_id"] == run_id_of(NIGHTS - 20))
    assert three["reject_rate"] == pytest.approx(0.03, abs=0.001)
    assert three["records_rejected"] == 3_000 and three["amount_total"].startswith("-")
    assert set(three["bands"]) == {"records", "rejects", "duration"}
    refused = next(r for r in runs if r["status"] == "FAILED_INPUT")
    assert refused["records_read"] is None and refused["anomalies"] == []
    assert runs[-1]["bands"] == {}  # the first night had no history to be judged by


def test_text_marks_the_same_nights_and_fits_100_columns(
        job_config: JobConfig, ninety: dict[int, str]) -> None:
    text = format_history(history_of(job_config))
    assert max(len(line) for line in text.splitlines()) <= 100, text
    rows = [line for line in text.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert len(rows) == NIGHTS
    marked = [i for i, line in enumerate(rows) if "!" in line]
    assert marked == sorted(NIGHTS - 1 - i for i in ninety)
    # each mark stands after the figure that is outside its band
    slow = rows[NIGHTS - 1 - (NIGHTS - 10)]
    assert re.search(r"30\.0s!", slow), slow
    assert re.search(r"3\.04%!", rows[NIGHTS - 1 - (NIGHTS - 20)])
    assert re.search(r"41,000!", rows[NIGHTS - 1 - (NIGHTS - 30)])


def test_html_marks_them_links_every_run_and_is_small_and_quick(
        tmp_path: Path, job_config: JobConfig, ninety: dict[int, str]) -> None:
    started = time.perf_counter()
    page = tmp_path / "history.html"
    write_history_page(page, history_of(job_config), job_config.output_dir)
    took = time.perf_counter() - started
    html = page.read_text(encoding="utf-8")
    assert took < 1.0 and len(html.encode()) < 1_000_000, (took, len(html))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from a network
    anomalous = re.findall(r'<tr class="anomaly">.*?>(night-\d+)</a>', html)
    assert sorted(anomalous) == sorted(run_id_of(i) for i in ninety)
    assert len(re.findall(r'<tr class="failed">', html)) == 2
    for plot in ("records-read", "reject-rate", "amount-total", "wall-time"):
        svg = re.search(rf'<svg id="{plot}".*?</svg>', html, re.S)
        assert svg and re.search(r'<path class="(line|band)" d="M[\d.]', svg.group()), plot
        assert len(re.findall(r"<a href=", svg.group())) == NIGHTS, plot
    # the links reach the run pages from where the page was written
    link = f"work/runs/{run_id_of(0)}/report.html"
    assert f'href="{link}"' in html and (tmp_path / "work").resolve() == \
        job_config.output_dir.resolve()
    assert 'name="viewport"' in html and "aria-sort" in html


def test_an_amount_axis_it_cannot_label_apart_gives_the_range_in_full(
        tmp_path: Path, job_config: JobConfig, ninety: dict[int, str]) -> None:
    """The nights' totals are about -1,234,568,000.00, a few thousand apart: labelled to
    four digits, the three ticks would all read -1.235G."""
    page = tmp_path / "history.html"
    write_history_page(page, history_of(job_config), job_config.output_dir)
    html = page.read_text(encoding="utf-8")
    svg = re.search(r'<svg id="amount-total".*?</svg>', html, re.S)
    assert svg and "G</text>" not in svg.group()
    caption = re.search(r"<figcaption>(Amount total[^<]*)</figcaption>", html)
    assert caption and re.fullmatch(r"Amount total \(-1,234,56\d,\d{3}\.\d\d to "
                                    r"-1,234,56\d,\d{3}\.\d\d\)", caption.group(1)), caption
    records = re.search(r'<svg id="records-read".*?</svg>', html, re.S)
    assert records and re.search(r">\d[\d,]*</text>", records.group())  # labelled as ever


def test_ordinary_nights_are_not_marked() -> None:
    nights = [NightFigures(True, s.records, s.rejected, s.seconds)
              for s in ordinary_nights(200, seed=3)]
    assert not any(j.anomalies for j in judge_nights(nights, VolumeRule()))


def test_the_band_is_volume_vs_historys() -> None:
    """The history and the check agree on what a usual night is: the same band."""
    from recon.checks import volume_vs_history, warning_of

    rule = VolumeRule(history_runs=4, band=0.2, min_runs=3)
    reads = [100, 100, 120, 100, 79]
    judged = judge_nights([NightFigures(True, r, 0, 1.0) for r in reads], rule)
    for i, j in enumerate(judged):
        check = volume_vs_history(rule, reads[:i][::-1], reads[i])
        assert ("records_read" in j.anomalies) == bool(warning_of(check)), i


def test_history_command_on_the_shipped_job(tmp_path: Path, job_config: JobConfig,
                                            ninety: dict[int, str]) -> None:
    db = ["--db", job_config.database_url]
    text = run_cli(tmp_path, "history", *db, "--nights", "12")
    assert text.returncode == 0, text.stderr
    assert text.stdout.count("\n20") == 12  # one line per night, dated
    shown = run_cli(tmp_path, "history", *db, "--json", "--nights", "25")
    runs = json.loads(shown.stdout)["runs"]
    # the shipped job's output folder, from where the command ran, as an absolute path
    assert runs[0]["report"] == str(tmp_path.resolve() / "pipeline_work" / "runs"
                                    / runs[0]["run_id"] / "report.html")
    assert [r["anomalies"] for r in runs if r["anomalies"]] == [["duration"], ["rejects"]]
    page = run_cli(tmp_path, "history", *db, "--html", str(tmp_path / "h.html"))
    assert page.returncode == 0 and (tmp_path / "h.html").exists(), page.stderr
    bad = run_cli(tmp_path, "history", *db, "--nights", "0")
    assert bad.returncode == 2 and "--nights" in bad.stderr


def test_a_job_without_runs(tmp_path: Path, job_config: JobConfig, ninety: dict) -> None:
    with open_audit(job_config.database_url) as engine:
        history = load_history(engine, "no_such_job", 30, job_config.volume)
    assert format_history(history) == "no runs of job no_such_job recorded"
    assert "0 run(s)" in render_history(history, str)
