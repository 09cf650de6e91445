"""Reports read back from the audit tables (text, JSON, HTML) and the Prometheus textfile."""

from __future__ import annotations

import json
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pipeline.audit.reader import RunReport, list_runs, load_report, open_audit
from pipeline.config import JobConfig
from pipeline.generate import generate_file
from pipeline.identity import Overrides
from pipeline.job import run_job
from pipeline.metrics.prometheus import Family, exposition, run_families, write_textfile
from pipeline.money import format_minor
from pipeline.outcome import RunOutcome
from pipeline.reporting.htmlpage import render_html
from pipeline.reporting.jsondoc import report_document
from pipeline.reporting.text import format_report, format_runs
from recon import checks
from tests.conftest import run_cli
from tests.reference import detail, write_input

pytestmark = pytest.mark.timeout(120)

BIGGEST = 10**13 - 1  # the largest amount the layout holds, in minor units


def big_amount_input(tmp_path: Path, count: int | None = None) -> tuple[Path, int]:
    """Totals beyond 2**53 minor units: a float anywhere would lose the cents."""
    records = [detail(f"B{i}", BIGGEST - i) for i in range(1_500)]
    total = sum(BIGGEST - i for i in range(1_500))
    assert total > 2**53
    return write_input(tmp_path / "big.dat", records, count=count), total


def report_for(config: JobConfig, outcome: RunOutcome) -> RunReport:
    with open_audit(config.database_url) as engine:
        return load_report(engine, outcome.run_id, {config.name: config.amount_field.scale})


class Page(HTMLParser):
    """The parts of report.html a reader looks at: table rows and the timeline's bars."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self.bars: list[dict[str, str]] = []  # the workers' bars
        self.stages: list[dict[str, str]] = []  # the run's stages' bars, above them
        self.external: list[str] = []
        self._table: str | None = None
        self._row: tuple[str, list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        # an anchor to a page beside it (the job's history) is no fetch; any URL with a
        # scheme or a host is
        href = a.get("href", "")
        if tag in ("link", "script", "img") or (tag == "a" and (":" in href
                                                                or href.startswith("//"))):
            self.external.append(tag)
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = (a.get("class", ""), [])
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "rect":
            (self.stages if "data-stage" in a else self.bars).append(a)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row[1].append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row[1]:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def parse_page(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


@pytest.mark.slow
def test_json_report_has_every_check_and_worker_with_exact_amounts(
        tmp_path: Path, job_config: JobConfig) -> None:
    path, total = big_amount_input(tmp_path)
    config = job_config.with_overrides(input_path=path, processors=2, batch_size=400)
    outcome = run_job(config)
    assert outcome.exit_code == 0, outcome.message

    done = run_cli(tmp_path, "report", outcome.run_id, "--db", config.database_url, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc == report_document(report_for(config, outcome))
    assert doc["run"]["run_id"] == outcome.run_id and doc["run"]["status"] == "SUCCEEDED"
    assert doc["run"]["records_read"] == 1_500 and doc["amount_scale"] == 2
    stages = doc["run"]["stage_seconds"]
    assert list(stages) == ["plan", "load", "checks", "merge", "audit"]
    assert {k: round(v * 1000) for k, v in stages.items()} == outcome.stages
    assert [c["check_name"] for c in doc["checks"]] == list(checks.CHECK_ORDER)
    exact = format_minor(total, 2)
    for check in doc["checks"]:
        assert check["passed"] is True and check["discrepancy"] == 0
        if check["check_name"].endswith("_amount"):
            assert check["expected_amount"] == check["actual_amount"] == exact
            assert check["amount_discrepancy"] == "0.00"
    processors = [w for w in doc["workers"] if w["worker_type"] == "processor"]
    assert len(processors) == 2 and {w["state"] for w in doc["workers"]} == {"done"}
    # amounts are strings everywhere: no JSON number can carry them exactly
    assert all(isinstance(w["amount"], str) for w in doc["workers"])
    assert sum(int(w["amount"].replace(".", "")) for w in processors) == total


@pytest.mark.slow
def test_text_report_and_runs_list(tmp_path: Path, job_config: JobConfig) -> None:
    made = generate_file(tmp_path / "in.dat", 800, seed=4)
    config = job_config.with_overrides(input_path=made.path)
    first, second = run_job(config), run_job(config, overrides=Overrides(rerun=True))
    assert (first.exit_code, second.exit_code) == (0, 0)

    with open_audit(config.database_url) as engine:
        runs = list_runs(engine, limit=10)
        latest = load_report(engine)  # no run id: the latest run
    assert [r.run_id for r in runs] == [second.run_id, first.run_id]
    assert all(r.records_read == 800 and r.exit_code == 0 for r in runs)
    assert latest.run.run_id == second.run_id
    listing = format_runs(runs)
    assert second.run_id in listing and "SUCCEEDED" in listing and "800" in listing
    report = format_report(latest)
    for name in checks.CHECK_ORDER:
        assert name in report
    assert "processor" in report and "writer" in report

    done = run_cli(tmp_path, "runs", "--db", config.database_url, "--limit", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["run_id"] for r in json.loads(done.stdout)] == [second.run_id]


def test_amounts_of_an_unknown_job_show_the_fewest_exact_decimals(
        tmp_path: Path, job_config: JobConfig) -> None:
    # issue 12: "15883.740000" for another job's run; the amounts are exact at 2 decimals
    path, total = big_amount_input(tmp_path)
    outcome = run_job(job_config.with_overrides(input_path=path))
    with open_audit(job_config.database_url) as engine:
        report = load_report(engine, outcome.run_id)  # no job scale known
    doc = report_document(report)
    assert doc["amount_scale"] == 2
    amounts = {c["actual_amount"] for c in doc["checks"] if c["actual_amount"]}
    assert amounts == {format_minor(total, 2)}


@pytest.mark.slow
def test_html_report_of_a_passed_run_is_self_contained(
        tmp_path: Path, job_config: JobConfig) -> None:
    made = generate_file(tmp_path / "in.dat", 3_000, seed=6, reject_rate=0.01)
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--db", job_config.database_url,
                   "--processors", "3")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    written = tmp_path / "pipeline_work" / "runs" / run_id / "report.html"
    assert f"report   {written.relative_to(tmp_path)}" in done.stdout
    page = parse_page(written.read_text())

    rows = page.tables["checks"]
    assert [cells[0] for _, cells in rows] == list(checks.CHECK_ORDER)
    assert {cls for cls, _ in rows} == {"pass"} and {cells[4] for _, cells in rows} == {"Y"}
    assert rows[0][1][1:4] == ["3,000", "3,000", "0"]
    workers = page.tables["workers"]
    ids = [cells[0] for _, cells in workers]
    assert [b["data-worker-id"] for b in page.bars] == ids and len(ids) >= 4
    assert [b["class"] for b in page.bars][:3] == ["processor"] * 3
    assert all(float(b["width"]) >= 1 for b in page.bars)
    # the run's stages, from BATCH_RUN, drawn above the workers and named in the summary
    assert [b["data-stage"] for b in page.stages] == ["plan", "load", "checks", "merge",
                                                      "audit"]
    assert "stages   plan " in done.stdout and ", audit " in done.stdout
    assert page.external == [] and "url(" not in written.read_text()  # nothing to fetch

    # the same page again, beside the first: its link to the job's history page included
    again = written.with_name("again.html")
    done = run_cli(tmp_path, "report", run_id, "--db", job_config.database_url,
                   "--html", str(again))
    assert done.returncode == 0, done.stderr
    assert again.read_text() == written.read_text()
    assert '<a href="../history-daily_transactions.html">' in again.read_text()


def test_html_report_of_a_failed_run_marks_the_failed_checks(
        tmp_path: Path, job_config: JobConfig) -> None:
    path, _ = big_amount_input(tmp_path, count=1_501)
    outcome = run_job(job_config.with_overrides(input_path=path))
    assert outcome.exit_code == 1
    page = parse_page(render_html(report_for(job_config, outcome)))
    rows = {cells[0]: (cls, cells) for cls, cells in page.tables["checks"]}
    cls, cells = rows[checks.SOURCE_TRAILER_COUNT]
    assert cls == "fail" and cells[1:5] == ["1,501", "1,500", "-1", "N"]
    assert rows[checks.SOURCE_TRAILER_AMOUNT][0] == "pass"
    assert rows[checks.STAGING_TO_FINAL][0] == "fail"


# -- Prometheus textfile ------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|'
                    r'\\[\\"n])*"(?:,|(?=\})))*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$')


def parse_exposition(text: str) -> dict[str, dict[str, float]]:
    """A strict reader of the text format: HELP and TYPE before each family's samples,
    no family twice, no series twice; returns {metric: {labels: value}}."""
    assert text.endswith("\n")
    families: dict[str, dict[str, float]] = {}
    typed: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert current not in families, f"family {current} twice"
            families[current] = {}
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == current and kind in ("gauge", "counter")
            typed[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            assert match[1] == current and current in typed
            labels = match[2] or ""
            assert labels not in families[current], f"series twice: {line}"
            families[current][labels] = float(match[3])
    return families


@pytest.mark.slow
def test_prometheus_file_of_a_run_is_valid_and_replaced_atomically(
        tmp_path: Path, job_config: JobConfig) -> None:
    made = generate_file(tmp_path / "in.dat", 2_000, seed=3, reject_rate=0.01)
    target = tmp_path / "textfile" / "pipeline.prom"
    target.parent.mkdir()
    target.write_text("# an older run\n")
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--db", job_config.database_url,
                   "--prometheus-textfile", str(target))
    assert done.returncode == 0, done.stderr

    assert os.listdir(target.parent) == ["pipeline.prom"]  # no temp file left behind
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    metrics = parse_exposition(target.read_text())
    labels = '{job="daily_transactions",status="SUCCEEDED"}'
    assert metrics["pipeline_records_read"] == {labels: 2_000}
    assert metrics["pipeline_records_rejected"] == {labels: made.rejects}
    assert metrics["pipeline_last_run_exit_code"] == {labels: 0}
    assert metrics["pipeline_checks_failed"] == {labels: 0}
    assert metrics["pipeline_checks"] == {labels: len(checks.CHECK_ORDER)}
    assert metrics["pipeline_last_run_duration_seconds"][labels] > 0
    assert abs(metrics["pipeline_last_run_timestamp_seconds"][labels] - time.time()) < 120
    per_worker = metrics["pipeline_worker_records"]
    processors = {k: v for k, v in per_worker.items() if 'worker_type="processor"' in k}
    assert len(processors) == 2 and sum(processors.values()) == 2_000


def test_prometheus_file_of_a_failed_run_says_exit_3(tmp_path: Path) -> None:
    made = generate_file(tmp_path / "in.dat", 100, seed=3)
    target = tmp_path / "pipeline.prom"
    done = run_cli(tmp_path, "run", "--input", str(made.path), "--prometheus-textfile", str(target),
                   "--db", "postgresql+psycopg://nobody@127.0.0.1:1/nothing")
    assert done.returncode == 3
    metrics = parse_exposition(target.read_text())
    labels = '{job="daily_transactions",status="FAILED_RUNTIME"}'
    assert metrics["pipeline_last_run_exit_code"] == {labels: 3}
    assert metrics["pipeline_last_run_success"] == {labels: 0}


def test_prometheus_labels_are_escaped_and_a_failed_write_keeps_the_old_file(
        tmp_path: Path) -> None:
    outcome = RunOutcome('20261125T000000-0000000a', 'odd"job\\name', "SUCCEEDED", 0, "ok",
                         Path("in"), "sqlite://", tmp_path)
    families = run_families(outcome, 1.5, ended_at=1.0)
    text_out = exposition(families)
    metrics = parse_exposition(text_out)
    assert '{job="odd\\"job\\\\name",status="SUCCEEDED"}' in metrics["pipeline_checks"]

    target = tmp_path / "x.prom"
    write_textfile(target, families)
    broken = Family("pipeline_broken", "a label no encoding holds", [({"job": "\ud800"}, 1)])
    with pytest.raises(UnicodeEncodeError):
        write_textfile(target, [broken])  # fails half way through the write
    assert target.read_text() == text_out
    assert sorted(os.listdir(tmp_path)) == ["x.prom"]


def test_report_reads_the_same_audit_the_job_wrote(tmp_path: Path, job_config: JobConfig) -> None:
    made = generate_file(tmp_path / "in.dat", 500, seed=9)
    outcome = run_job(job_config.with_overrides(input_path=made.path))
    report = report_for(job_config, outcome)
    engine = create_engine(job_config.database_url)
    try:
        with engine.connect() as conn:
            failed = conn.execute(text("SELECT COUNT(*) FROM recon_audit WHERE run_id = :r "
                                       "AND passed = 'N'"), {"r": outcome.run_id}).scalar_one()
    finally:
        engine.dispose()
    assert report.checks_failed == failed == 0
    assert [r.check_name for r in report.results] == [r.check_name for r in outcome.results]
    assert [(w.worker_id, w.records_processed, w.state) for w in report.workers] == \
        [(w.worker_id, w.records_processed, w.state) for w in outcome.workers]
