"""A job's history as one self-contained HTML page: small multiples over the nights
(records read, reject rate, amount total, wall time by stage) with the usual band drawn,
anomalous nights and failed runs marked, every point and row a link to that run's page,
and a runs table sortable by column.

No external asset (inline CSS, inline SVG, a few lines of inline script for sorting), so it
opens from a mail, a ticket or an air-gapped share; the plots are SVG with a viewBox, so a
phone scales them to its width.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

from pipeline.audit.reader import RunRow
from pipeline.reporting.history import (
    MARK,
    History,
    Night,
    format_count,
    format_rate,
    grouped_amount,
)
from pipeline.reporting.text import format_duration, format_exit
from pipeline.stages import STAGES
from recon.checks import Band
from recon.trends import DURATION, RECORDS, REJECTS
from recon.values import RUNNING, SUCCEEDED

RunPage = Callable[[str], str]  # run id -> the href of its report.html

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em auto;max-width:1100px;padding:0 1em;
color:#1d2330}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.4em 0 .4em}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:1em}
figure{margin:0} figcaption{font-weight:600;margin-bottom:.2em}
svg{width:100%;height:auto;display:block} svg text{font:10px system-ui,sans-serif;fill:#556}
.axis{fill:none;stroke:#99a;stroke-width:.5} .band{fill:#2e7d32;fill-opacity:.12;stroke:none}
.line{fill:none;stroke:#3f6fd8;stroke-width:1.5}
circle.ok{fill:#3f6fd8} circle.anomaly{fill:#e0891b;stroke:#8a4b00;stroke-width:1}
.failed{fill:#c62828} rect.stage{fill:#7b8794} rect.stage.load{fill:#3f6fd8}
rect.stage.merge{fill:#8e44ad} rect.stage.checks{fill:#16a085} rect.stage.audit{fill:#b0b6c0}
.legend span{display:inline-block;margin-right:1em} .swatch{display:inline-block;width:.8em;
height:.8em;margin-right:.3em;vertical-align:middle}
.scroll{overflow-x:auto} table{border-collapse:collapse;font-variant-numeric:tabular-nums}
td,th{padding:.2em .6em;border-bottom:1px solid #dde;white-space:nowrap}
th{text-align:left;background:#f3f4f8;cursor:pointer;user-select:none} td.n{text-align:right}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
tr.failed td{background:#fde4e4} tr.anomaly td{background:#fff3e0} td.mark{color:#b35c00;
font-weight:bold}
"""

# Sorts the runs table by the clicked column: numbers by data-v, the rest as text.
SCRIPT = """
document.querySelectorAll('#runs th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var up = th.getAttribute('aria-sort') !== 'ascending';
    th.parentNode.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
    var key = function (tr) {
      var td = tr.cells[col], v = td.getAttribute('data-v');
      return v === null ? td.textContent : (v === '' ? -Infinity : parseFloat(v));
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""

W, H, LEFT, RIGHT, TOP, BOTTOM = 320, 150, 46, 8, 8, 20


def run_page_link(output_dir: Path, page_dir: Path) -> RunPage:
    """The href of a run's report.html (``runs/<run id>/report.html`` under the job's
    output folder) from a page written in ``page_dir``."""
    runs = os.path.relpath(output_dir.resolve() / "runs", page_dir.resolve())

    def link(run_id: str) -> str:
        return Path(runs, run_id, "report.html").as_posix()

    return link


def write_history_page(path: Path, history: History, output_dir: Path) -> None:
    """The page at ``path``, its links to the run pages under ``output_dir/runs``."""
    path.write_text(render_history(history, run_page_link(output_dir, path.parent)),
                    encoding="utf-8")


def render_history(history: History, run_page: RunPage) -> str:
    nights = history.nights[::-1]  # oldest first: time runs left to right
    failed = sum(_failed(n.run) for n in nights)
    marked = sum(bool(n.anomalies) for n in nights)
    span = f"from {nights[0].night} to {nights[-1].night}" if nights else "none recorded"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>history - {escape(history.job_name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(history.job_name)} &middot; history</h1>",
        f"<p>{len(nights)} run(s) {span}; {failed} failed; {marked} outside the usual band "
        f"(+/-{history.rule.band:.0%} of the median of the last {history.rule.history_runs} "
        "succeeded runs). Every point and row opens that run's page.</p>",
    ]
    if nights:
        parts += ['<div class="plots">', *_plots(nights, history.scale, run_page), "</div>",
                  _legend(), "<h2>Runs</h2>",
                  f'<div class="scroll">{_runs_table(history, run_page)}</div>',
                  f"<script>{SCRIPT}</script>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _legend() -> str:
    items = [("band", "#2e7d3240", "usual band"), ("ok", "#3f6fd8", "run"),
             ("anomaly", "#e0891b", "outside the band"), ("failed", "#c62828", "failed run")]
    items += [(s, c, s) for s, c in (("load", "#3f6fd8"), ("checks", "#16a085"),
                                     ("merge", "#8e44ad"), ("audit", "#b0b6c0"))]
    spans = "".join(f'<span><i class="swatch" style="background:{c}"></i>{escape(t)}</span>'
                    for _, c, t in items)
    return f'<p class="legend">{spans}</p>'


def _plots(nights: list[Night], scale: int, run_page: RunPage) -> list[str]:
    amounts = [None if n.amount_total is None else n.amount_total / 10 ** scale
               for n in nights]
    return [
        _series("records-read", "Records read", nights, [n.run.records_read for n in nights],
                RECORDS, run_page, lambda v: f"{v:,.0f}"),
        _series("reject-rate", "Reject rate", nights, [n.reject_rate for n in nights],
                REJECTS, run_page, lambda v: f"{v:.2%}"),
        _series("amount-total", "Amount total", nights, amounts, None, run_page,
                lambda v: f"{v:,.2f}"),
        _stage_bars(nights, run_page),
    ]


class _Frame:
    """The plot area of one small multiple: night index and value to SVG coordinates."""

    def __init__(self, count: int, low: float, high: float) -> None:
        self.count, self.low = count, low
        self.high = high if high > low else low + 1

    def x(self, i: int) -> float:
        inner = W - LEFT - RIGHT
        return LEFT + (inner / 2 if self.count == 1 else inner * i / (self.count - 1))

    def y(self, value: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1 - (value - self.low) / (self.high - self.low))


def _frame(nights: list[Night], values: Sequence[float | None], figure: str | None) -> _Frame:
    """Counts, rates and times from zero, so a bar's height reads as its size; an amount
    total (often far from zero, often negative) over its own range, so it is not flat."""
    bands = [n.judgement.bands.get(figure) for n in nights] if figure else []
    seen = [v for v in values if v is not None]
    seen += [b.high for b in bands if b] + [b.low for b in bands if b]
    zero = [0.0] if figure is not None or not seen else []
    return _Frame(len(nights), min([*zero, *seen]), max([*zero, *seen]))


def _series(plot_id: str, title: str, nights: list[Night], values: Sequence[float | None],
            figure: str | None, run_page: RunPage, shown: Callable[[float], str]) -> str:
    frame = _frame(nights, values, figure)
    if not any(_tick_labels(frame, shown)):  # the range in full, where the axis cannot
        title = f"{title} ({shown(frame.low)} to {shown(frame.high)})"
    out = [_svg_open(plot_id, title), *_axes(frame, shown, nights)]
    if figure is not None:
        out.append(_band(frame, [n.judgement.bands.get(figure) for n in nights]))
    out.append(_line(frame, values))
    for i, (night, value) in enumerate(zip(nights, values, strict=True)):
        out.append(_point(frame, i, night, value, figure, run_page, shown))
    out.append("</svg>")
    return f"<figure><figcaption>{escape(title)}</figcaption>{''.join(out)}</figure>"


def _svg_open(plot_id: str, title: str) -> str:
    return (f'<svg id="{plot_id}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" '
            f'role="img" aria-label="{escape(title)} per night">')


def _axes(frame: _Frame, shown: Callable[[float], str], nights: list[Night]) -> list[str]:
    bottom = H - BOTTOM
    out = [f'<path class="axis" d="M{LEFT} {TOP}V{bottom}H{W - RIGHT}"/>']
    for value, label in zip(_ticks(frame), _tick_labels(frame, shown), strict=True):
        out.append(f'<text x="{LEFT - 3}" y="{frame.y(value) + 3:.1f}" text-anchor="end">'
                   f"{escape(label)}</text>")
    for i in sorted({0, len(nights) - 1}):
        anchor = "start" if i == 0 else "end"
        out.append(f'<text x="{frame.x(i):.1f}" y="{H - 6}" text-anchor="{anchor}">'
                   f"{nights[i].night}</text>")
    return out


def _ticks(frame: _Frame) -> tuple[float, float, float]:
    return frame.low, (frame.low + frame.high) / 2, frame.high


def _tick_labels(frame: _Frame, shown: Callable[[float], str]) -> list[str]:
    """The axis's three labels, or three blanks where the margin cannot tell them apart
    (a total far from zero varying in its last digits reads -1.235G three times): the
    caption then gives the range in full."""
    labels = [_short(shown(v)) for v in _ticks(frame)]
    return labels if len(set(labels)) == len(labels) else ["", "", ""]


def _short(label: str) -> str:
    """An axis label fits the margin: 1,234,567 reads 1.2M."""
    if len(label) <= 8:
        return label
    try:
        value = float(label.replace(",", ""))
    except ValueError:
        return label
    for size, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.4g}{unit}"
    return label


def _band(frame: _Frame, bands: list[Band | None]) -> str:
    """The usual band of each night as one shaded area (absent where not yet judged)."""
    runs: list[list[tuple[int, Band]]] = [[]]
    for i, band in enumerate(bands):
        if band is None:
            runs.append([])
        else:
            runs[-1].append((i, band))
    paths = []
    for run in (r for r in runs if r):
        top = [f"{frame.x(i):.1f} {frame.y(b.high):.1f}" for i, b in run]
        low = [f"{frame.x(i):.1f} {frame.y(max(b.low, frame.low)):.1f}" for i, b in run[::-1]]
        if len(run) == 1:  # one night: a short bar, or nothing would show
            i, b = run[0]
            top.append(f"{frame.x(i) + 2:.1f} {frame.y(b.high):.1f}")
            low.insert(0, f"{frame.x(i) + 2:.1f} {frame.y(max(b.low, frame.low)):.1f}")
        paths.append("M" + "L".join(top + low) + "Z")
    return f'<path class="band" d="{"".join(paths)}"/>' if paths else ""


def _line(frame: _Frame, values: Sequence[float | None]) -> str:
    """The nights joined in order; a night without the figure breaks the line."""
    d, pen_down = [], False
    for i, value in enumerate(values):
        if value is None:
            pen_down = False
            continue
        d.append(f"{'L' if pen_down else 'M'}{frame.x(i):.1f} {frame.y(value):.1f}")
        pen_down = True
    return f'<path class="line" d="{"".join(d)}"/>' if d else ""


def _point(frame: _Frame, i: int, night: Night, value: float | None, figure: str | None,
           run_page: RunPage, shown: Callable[[float], str]) -> str:
    failed = _failed(night.run)
    outside = figure in night.judgement.anomalies
    tip = (f"{night.night} {night.run.status}: "
           f"{'-' if value is None else shown(value)}"
           + (f" ({MARK} outside the usual band)" if outside else ""))
    x = frame.x(i)
    if value is None:  # a run that never got this far: a mark on the axis, still a link
        mark = (f'<rect class="failed" x="{x - 3:.1f}" y="{H - BOTTOM - 3}" width="6" '
                f'height="6"><title>{escape(tip)}</title></rect>')
    else:
        cls = "failed" if failed else "anomaly" if outside else "ok"
        radius = 4 if failed or outside else 2.5
        mark = (f'<circle class="{cls}" cx="{x:.1f}" cy="{frame.y(value):.1f}" r="{radius}">'
                f"<title>{escape(tip)}</title></circle>")
    return f'<a href="{escape(run_page(night.run.run_id))}">{mark}</a>'


def _stage_bars(nights: list[Night], run_page: RunPage) -> str:
    """Wall time per night, each bar split by stage; the duration's band behind them."""
    totals = [n.run.duration_s for n in nights]
    frame = _frame(nights, totals, DURATION)
    width = max(min((W - LEFT - RIGHT) / max(len(nights), 1) * 0.7, 12), 1.5)
    out = [_svg_open("wall-time", "Wall time by stage"),
           *_axes(frame, lambda v: f"{v:.1f} s", nights),
           _band(frame, [n.judgement.bands.get(DURATION) for n in nights])]
    for i, night in enumerate(nights):
        out.append(_stage_bar(frame, i, night, width, run_page))
    out.append("</svg>")
    return f"<figure><figcaption>Wall time by stage</figcaption>{''.join(out)}</figure>"


def _stage_bar(frame: _Frame, i: int, night: Night, width: float, run_page: RunPage) -> str:
    run, x = night.run, frame.x(i) - width / 2
    at, rects = 0.0, []
    outside = DURATION in night.judgement.anomalies
    for stage in STAGES:
        seconds = run.stages.get(stage, 0) / 1000
        if seconds <= 0:
            continue
        top, bottom = frame.y(at + seconds), frame.y(at)
        rects.append(f'<rect class="stage {stage}" x="{x:.1f}" y="{top:.1f}" '
                     f'width="{width:.1f}" height="{max(bottom - top, 0.5):.1f}"/>')
        at += seconds
    total = run.duration_s
    tip = (f"{night.night} {run.status}: {format_duration(total)}, "
           + ", ".join(f"{s} {ms / 1000:.1f} s" for s, ms in run.stages.items())
           + (f" ({MARK} outside the usual band)" if outside else ""))
    if _failed(run) or outside:  # marked above the bar, as on the other plots
        cls = "failed" if _failed(run) else "anomaly"
        rects.append(f'<circle class="{cls}" cx="{frame.x(i):.1f}" '
                     f'cy="{frame.y(max(total or 0.0, at)) - 5:.1f}" r="3"/>')
    return (f'<a href="{escape(run_page(run.run_id))}"><g><title>{escape(tip)}</title>'
            + "".join(rects) + "</g></a>")


def _runs_table(history: History, run_page: RunPage) -> str:
    headings = ["date", "status", "exit", "read", "rejected", "reject rate", "merged",
                "amount total", "duration", "longest stage", "outside the band", "run"]
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headings)
    rows = [_runs_row(n, history.scale, run_page) for n in history.nights]
    return f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _runs_row(n: Night, scale: int, run_page: RunPage) -> str:
    run = n.run
    longest = n.longest_stage
    cls = "failed" if _failed(run) else "anomaly" if n.anomalies else ""
    cells = [
        _cell(str(n.night)), _cell(run.status), _num(format_exit(run.exit_code), run.exit_code),
        _num(format_count(run.records_read), run.records_read),
        _num(format_count(run.rejected), run.rejected),
        _num(format_rate(n.reject_rate), n.reject_rate),
        _num(format_count(run.keys_merged), run.keys_merged),
        _num(grouped_amount(n.amount_total, scale), n.amount_total),
        _num(format_duration(run.duration_s), run.duration_s),
        _cell("-" if longest is None else f"{longest[0]} {longest[1] / 1000:.1f} s"),
        f'<td class="mark">{escape(", ".join(n.anomalies))}</td>',
        f'<td><a href="{escape(run_page(run.run_id))}">{escape(run.run_id)}</a></td>',
    ]
    return f'<tr class="{cls}">' + "".join(cells) + "</tr>"


def _failed(run: RunRow) -> bool:
    """Ended, and not SUCCEEDED (a run still RUNNING is neither good nor bad yet)."""
    return run.status not in (SUCCEEDED, RUNNING)


def _cell(text: str) -> str:
    return f"<td>{escape(text)}</td>"


def _num(text: str, value: float | None) -> str:
    """A figure, right-aligned, with its raw value for the sort."""
    return f'<td class="n" data-v="{"" if value is None else value}">{escape(text)}</td>'

