"""The history and run pages as a person sees them: rendered by headless Chromium, which
must draw every plot (SVG paths of non-zero length, bars of non-zero size), sort the runs
table on a click and log nothing to the console. A screenshot of each page is kept in
``test-artifacts/`` (ignored by git) for a person to look at.

Chromium is Debian's ``chromium`` package; without it these tests skip with the reason,
and with PIPELINE_REQUIRE_CHROMIUM=1 (as .ci/run sets) they fail instead.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.audit.reader import RunReport, RunRow, open_audit
from pipeline.reporting.history import load_history
from pipeline.reporting.historypage import write_history_page
from pipeline.reporting.htmlpage import render_html
from recon import checks
from recon.values import ReconciliationResult, VolumeRule, WorkerMetrics
from tests.conftest import engine_for
from tests.nights import build_history, odd_nights

pytestmark = pytest.mark.timeout(120)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Runs after the page's own script: what the browser drew, written into the DOM that
# --dump-dom prints (a console line would count as a console error of the page).
PROBE = """<script>
(function () {
  var out = {paths: [], marks: 0, svgs: [], sorted: null};
  document.querySelectorAll('svg path').forEach(function (p) {
    out.paths.push({svg: p.closest('svg').id, cls: p.getAttribute('class'),
                    length: p.getTotalLength()});
  });
  document.querySelectorAll('svg circle, svg rect').forEach(function (m) {
    var box = m.getBBox(); if (box.width > 0 && box.height > 0) { out.marks += 1; }
  });
  document.querySelectorAll('svg').forEach(function (s) {
    var r = s.getBoundingClientRect(); out.svgs.push({id: s.id, width: r.width, height: r.height});
  });
  var th = document.querySelectorAll('#runs th')[3];
  if (th) {
    th.click();
    out.sorted = Array.from(document.querySelectorAll('#runs tbody tr')).map(function (tr) {
      return tr.cells[3].getAttribute('data-v');
    });
  }
  var pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
})();
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium is not installed (apt-get install chromium): pages not rendered"
        if os.environ.get("PIPELINE_REQUIRE_CHROMIUM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page``; its own profile, so sessions running side by side
    never share one (root needs --no-sandbox)."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args,
               page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def rendered(page: Path, tmp_path: Path) -> dict[str, Any]:
    """What Chromium drew of ``page`` (the probe's findings); no console message allowed."""
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    done = browse(probed, tmp_path / "profile-dom", "--window-size=1200,1600", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stdout[-2000:]
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, tmp_path: Path, size: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{page.stem}-{size.replace(',', 'x')}.png"
    done = browse(page, tmp_path / f"profile-{size}", f"--window-size={size}",
                  f"--screenshot={target}")
    assert done.returncode == 0 and target.stat().st_size > 10_000, done.stderr[-2000:]
    print(f"screenshot: {target}")
    return target


def test_history_page_draws_every_plot_and_sorts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with engine_for(url) as engine:
        build_history(engine, "daily_transactions", odd_nights(90)[0])
    with open_audit(url) as engine:
        history = load_history(engine, "daily_transactions", 90, VolumeRule(), 2)
    page = tmp_path / "history.html"
    write_history_page(page, history, tmp_path / "work")
    drawn = rendered(page, tmp_path)
    lines = {p["svg"] for p in drawn["paths"] if p["cls"] == "line" and p["length"] > 100}
    assert lines == {"records-read", "reject-rate", "amount-total"}, drawn["paths"]
    bands = {p["svg"] for p in drawn["paths"] if p["cls"] == "band" and p["length"] > 100}
    assert bands == {"records-read", "reject-rate", "wall-time"}
    assert drawn["marks"] >= 4 * 90  # a point (or a bar) per night on every plot
    assert all(s["width"] > 200 and s["height"] > 80 for s in drawn["svgs"]), drawn["svgs"]
    values = [float(v) if v else float("-inf") for v in drawn["sorted"]]
    assert values == sorted(values) and len(values) == 90  # sorted by records read
    screenshot(page, tmp_path, "1200,1700")
    screenshot(page, tmp_path, "390,1400")  # a phone


def test_run_page_draws_its_timeline(tmp_path: Path) -> None:
    t0 = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
    workers = [WorkerMetrics(i, kind, 50_000, 3, t0 + timedelta(seconds=0.4),
                             t0 + timedelta(seconds=9), amount=123_456_789, state="done",
                             exit_code=0) for i, kind in enumerate(("processor", "writer"))]
    run = RunRow("20261203T020000-0000abcd", "daily_transactions", "SUCCEEDED", 0, t0,
                 t0 + timedelta(seconds=12), records_read=100_000,
                 stages={"plan": 400, "load": 8600, "checks": 1500, "merge": 1300, "audit": 100})
    results = [ReconciliationResult(checks.SOURCE_TRAILER_COUNT, 100_000, 100_000, True)]
    page = tmp_path / "report.html"
    page.write_text(render_html(RunReport(run, 2, results, workers)), encoding="utf-8")
    drawn = rendered(page, tmp_path)
    assert drawn["marks"] == 5 + 2  # every stage and every worker drawn with a size
    assert [s["id"] for s in drawn["svgs"]] == ["timeline"]
    screenshot(page, tmp_path, "1000,900")
