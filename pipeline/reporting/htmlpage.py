"""One self-contained HTML page per run: no external asset, so it opens from a mail, a
ticket or an air-gapped share exactly as written (inline CSS, inline SVG, no script)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from html import escape
from typing import Any

from pipeline.audit.reader import RunReport
from pipeline.money import format_grouped, group_digits
from pipeline.reporting.text import format_duration, format_exit, format_ts
from pipeline.summary import check_figures
from recon.values import ReconciliationResult, WorkerMetrics

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1d2330}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.6em 0 .4em}
table{border-collapse:collapse} td,th{padding:.25em .7em;border-bottom:1px solid #dde}
th{text-align:left;background:#f3f4f8} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.pass td.ok{background:#dff5e1;color:#135c1d;font-weight:bold}
tr.fail td{background:#fde4e4} tr.fail td.ok{color:#9b1111;font-weight:bold}
.status{display:inline-block;padding:.1em .6em;border-radius:.3em;color:#fff}
.status.good{background:#2e7d32} .status.bad{background:#c62828}
dl{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;margin:0}
dt{color:#667} dd{margin:0;font-family:ui-monospace,monospace}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
rect.processor{fill:#3f6fd8} rect.writer{fill:#e0891b} rect.failed{stroke:#c62828;stroke-width:2}
rect.stage{fill:#7b8794} rect.stage.load{fill:#3f6fd8} rect.stage.merge{fill:#8e44ad}
"""

BAR_H, ROW_H, LABEL_W, PLOT_W = 16, 24, 120, 640


def render_html(report: RunReport, rejects: list[tuple[str, int]] | None = None,
                explanation: dict[str, Any] | None = None, history: str | None = None) -> str:
    """``rejects``: counts per reason (pipeline.rejects); ``explanation``: the records
    behind the failed checks (pipeline.explain.explanation_document); ``history``: the
    href of the job's history page, when the page is written beside it."""
    run = report.run
    good = run.exit_code == 0
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>run {escape(run.run_id)} - {escape(run.job_name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(run.job_name)} &middot; run {escape(run.run_id)}</h1>",
        f'<p><span class="status {"good" if good else "bad"}">{escape(run.status)} '
        f"(exit {format_exit(run.exit_code)})</span> {escape(run.message)}</p>",
        *([f'<p><a href="{escape(history)}">the nights before</a> (history of '
           f"{escape(run.job_name)})</p>"] if history else []),
        _facts(report),
        "<h2>Checks</h2>",
        _checks_table(report.results, report.scale),
        *_earlier_section(report),
        *_explain_section(explanation),
        *_rejected_section(explanation),
        *_rejects_section(rejects),
        "<h2>Stages and workers</h2>",
        *_stages_and_workers(report),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _facts(report: RunReport) -> str:
    run = report.run
    rows = [("input", run.input_path), ("sha256", run.input_sha256 or "-"),
            ("code page", run.code_page or "-"),
            ("copybook sha256", run.copybook_sha256 or "-"),
            ("business date", "-" if run.business_date is None else str(run.business_date)),
            ("overrides", ", ".join(run.overrides) or "none"),
            ("started (UTC)", format_ts(run.start_ts)), ("ended (UTC)", format_ts(run.end_ts)),
            ("duration", format_duration(run.duration_s)),
            ("records read", "-" if run.records_read is None else f"{run.records_read:,}"),
            ("checks failed", f"{report.checks_failed} of {len(report.results)}"
             if report.results else "none run: the run ended before its checks")]
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    return f"<dl>{items}</dl>"


def _table(table_id: str, headings: Iterable[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headings)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>' \
           + "".join(rows) + "</tbody></table>"


def _td(value: str, numeric: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("n" if numeric else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{escape(value)}</td>"


def _earlier_section(report: RunReport) -> list[str]:
    """The checks a `run --resume` superseded: RECON_AUDIT holds them, the page shows them."""
    if not report.earlier_results:
        return []
    return ["<h2>Checks of earlier attempts (before <code>run --resume</code>)</h2>",
            _checks_table(report.earlier_results, report.scale, "earlier-checks")]


def _checks_table(results: list[ReconciliationResult], scale: int,
                  table_id: str = "checks") -> str:
    if not results:
        return "<p>No check was recorded: the run ended before its checks.</p>"
    rows = []
    for r in results:
        # the summary's figures, amounts grouped in thousands as the counts are
        cells = check_figures(r, scale, format_grouped)
        rows.append(f'<tr class="{"pass" if r.passed else "fail"}">' + _td(r.check_name)
                    + "".join(_td(c, numeric=True) for c in cells)
                    + _td("Y" if r.passed else "N", cls="ok") + _td(r.detail) + "</tr>")
    return _table(table_id, ["check", "expected", "actual", "discrepancy", "passed", "detail"],
                  rows)


def _stages_and_workers(report: RunReport) -> list[str]:
    """The timeline and the workers; a run that ended before any worker started (refused
    input, the job's lock held) gets a sentence: a time axis over a plan of a few
    milliseconds and a table of headings only said nothing."""
    run = report.run
    if report.workers:
        return [_timeline(report.workers, run.end_ts, run.stages, run.start_ts),
                _workers_table(report.workers, report.scale)]
    took = ", ".join(f"{name} {ms / 1000:.2f} s" for name, ms in run.stages.items())
    return [f"<p>No worker started: the run ended before its load"
            f"{f' ({escape(took)})' if took else ''}.</p>"]


def _workers_table(workers: list[WorkerMetrics], scale: int) -> str:
    rows = []
    for w in workers:
        rows.append("<tr>" + _td(str(w.worker_id), numeric=True) + _td(w.worker_type)
                    + _td(f"{w.records_processed:,}", numeric=True)
                    + _td(f"{w.errors_count:,}", numeric=True)
                    + _td(format_grouped(w.amount, scale), numeric=True)
                    + _td(format_ts(w.start_time)) + _td(format_ts(w.end_time)) + _td(w.state)
                    + _td("" if w.exit_code is None else str(w.exit_code)) + "</tr>")
    return _table("workers", ["worker", "type", "records", "errors", "amount", "start (UTC)",
                              "end (UTC)", "state", "exit"], rows)


def _timeline(workers: list[WorkerMetrics], run_end: datetime | None = None,
              stages: dict[str, int] | None = None, run_start: datetime | None = None) -> str:
    """One bar per stage of the run (plan, load, checks, merge, audit: BATCH_RUN's
    durations, laid end to end from the run's start), then one bar per worker from
    START_TS to END_TS, on a shared time axis (inline SVG)."""
    stages = stages or {}
    starts = [w.start_time for w in workers if w.start_time]
    if not starts and not stages:
        return "<p>No worker started.</p>"
    t0 = run_start if stages and run_start else min(starts)
    # an interrupted run's workers have no END_TS: the axis runs to the run's end
    ends = [w.end_time for w in workers if w.end_time]
    staged_end = t0 + timedelta(milliseconds=sum(stages.values()))
    t1 = max(ends + starts + [staged_end] + ([run_end] if run_end and run_end > t0 else []))
    span = max((t1 - t0).total_seconds(), 1e-3)
    rows = len(stages) + len(workers)
    out = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 20}"'
           f' height="{ROW_H * rows + 24}" role="img" aria-label="stage and worker timeline">']
    # the stages are laid end to end around the load, which starts with the first worker
    load_at = (min(starts) - t0).total_seconds() if starts and "load" in stages else None
    at = 0.0 if load_at is None else max(load_at - stages.get("plan", 0) / 1000, 0.0)
    for i, (name, ms) in enumerate(stages.items()):
        if name == "load" and load_at is not None:
            at = load_at
        x, width = LABEL_W + PLOT_W * at / span, max(PLOT_W * ms / 1000 / span, 1.0)
        out.append(f'<text x="0" y="{i * ROW_H + BAR_H - 3}">{escape(name)}</text>'
                   f'<rect class="stage {escape(name)}" data-stage="{escape(name)}" '
                   f'x="{x:.1f}" y="{i * ROW_H}" width="{width:.1f}" height="{BAR_H}">'
                   f"<title>{escape(name)}: {ms / 1000:.2f} s</title></rect>")
        at += ms / 1000
    for i, w in enumerate(workers, start=len(stages)):
        y = i * ROW_H
        out.append(f'<text x="0" y="{y + BAR_H - 3}">{escape(w.worker_type)} {w.worker_id}</text>')
        if w.start_time:
            out.append(_bar(w, t0, t1, span, y))
    out += _axis(span, ROW_H * rows + 14)
    out.append("</svg>")
    return "".join(out)


def _bar(w: WorkerMetrics, t0: datetime, t1: datetime, span: float, y: int) -> str:
    assert w.start_time is not None
    end = w.end_time or t1  # a worker killed before END_TS: drawn to the end of the run
    x = LABEL_W + PLOT_W * (w.start_time - t0).total_seconds() / span
    width = max(PLOT_W * (end - w.start_time).total_seconds() / span, 1.0)
    seconds = (end - w.start_time).total_seconds()
    cls = w.worker_type + ("" if w.state == "done" else " failed")
    tip = f"{w.worker_type} {w.worker_id}: {w.records_processed:,} records in {seconds:.2f} s"
    return (f'<rect class="{cls}" data-worker-id="{w.worker_id}" x="{x:.1f}" y="{y}" '
            f'width="{width:.1f}" height="{BAR_H}"><title>{escape(tip)} ({escape(w.state)})'
            "</title></rect>")


def _axis(span: float, y: int) -> list[str]:
    ticks = []
    # enough decimals for five distinct ticks: a 0.2 s run reads 0.00, 0.05, 0.10 ...
    decimals = next((d for d in range(4) if span / 4 >= 10**-d), 3)
    for i in range(5):
        x = LABEL_W + PLOT_W * i / 4
        ticks.append(f'<text x="{x:.0f}" y="{y}" text-anchor="middle">'
                     f"{span * i / 4:.{decimals}f} s</text>")
    return ticks


def _rejects_section(rejects: list[tuple[str, int]] | None) -> list[str]:
    if not rejects:
        return []
    rows = ["<tr>" + _td(f"{count:,}", numeric=True) + _td(reason) + "</tr>"
            for reason, count in rejects]
    return ["<h2>Rejects by reason</h2>", _table("rejects", ["records", "reason"], rows)]


def _rejected_section(explanation: dict[str, Any] | None) -> list[str]:
    """reject_limit failed: where every reject is, and the first of them."""
    rejects = (explanation or {}).get("rejects")
    if not rejects:
        return []
    rows = ["<tr>" + _td(f"{r['source_line']:,}", numeric=True) + _td(r["reason"]) + "</tr>"
            for r in rejects["records"]]
    return ["<h2>Rejected records (over the reject limit)</h2>",
            f"<p>Every rejected record, with its reason: <code>{escape(rejects['file'])}"
            "</code></p>", _table("rejected", ["line", "reason"], rows)]


def _explain_section(explanation: dict[str, Any] | None) -> list[str]:
    """The records behind the failed checks (`pipeline explain`, bounded)."""
    if not explanation or not (explanation["counts"] or explanation["notes"]):
        return []
    counts = ["<tr>" + _td(f"{n:,}", numeric=True) + _td(kind) + "</tr>"
              for kind, n in explanation["counts"].items()]
    records = ["<tr>" + _td("" if r["source_line"] is None else f"{r['source_line']:,}",
                            numeric=True)
               + _td(r["key"] or "") + _td(group_digits(r["staged_amount"] or ""), numeric=True)
               + _td(group_digits(r["final_amount"] or ""), numeric=True) + _td(r["kind"])
               + "</tr>"
               for r in explanation["records"]]
    notes = "".join(f"<p>{escape(n)}</p>" for n in explanation["notes"])
    return ["<h2>Records behind the failed checks</h2>",
            _table("explain-counts", ["records", "difference"], counts),
            _table("explain", ["line", "key", "staged amount", "final amount", "difference"],
                   records), notes]
