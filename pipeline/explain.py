"""`pipeline explain RUN_ID`: the records behind each failed check, not just how many.

- processed_to_staging / written_to_staging (and the amount twin): the source lines the
  processors accepted but staging lacks, the staging rows whose line was not accepted, and
  any line staged twice. The accepted lines are known exactly without any bookkeeping at
  run time: the processors' ranges cover the detail lines 2..N+1 in file order, each
  processor reads its range whole (RECON_WORKER_AUDIT gives its count), and every line it
  did not accept is in the run's reject file. One column of staging (SOURCE_LINE) is read
  and compared in numpy (sorted set differences).
- staging_to_final (and the amount twin): the surviving keys missing from FINAL or
  carrying another amount, and the FINAL rows of the run that staging does not explain,
  as set differences in the database. A failed MERGE was rolled back, so explain replays
  it in a transaction it always rolls back (under the job's lock), and compares inside it.
- source_trailer_count / _amount: the per-range counts and totals of the processors.
- processed_to_staging_columns / staging_to_final_columns: the rows, columns and both
  values, as the run kept them in RECON_EVIDENCE when the check failed (its cause, a
  trigger or another writer, may be gone by now; nothing is replayed).
- reject_limit: the run's reject file, its rejects per reason and the first records in it.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, and_, or_, select

from pipeline.audit.reader import RunReport, load_evidence, load_report
from pipeline.audit.schema import utc_now
from pipeline.config import JobConfig
from pipeline.db.engine import database_errors
from pipeline.db.lock import job_lock
from pipeline.db.merge import surviving_rows
from pipeline.db.repositories import FinalRepository
from pipeline.db.tables import JobTables, job_tables
from pipeline.inputs import KeysUnreadable, join_key
from pipeline.metrics.aggregator import PROCESSOR
from pipeline.rejects import read_rejects, reason_counts, reason_lines, rejected_lines
from recon import checks
from recon.checks import failure_summary
from recon.values import COLUMNS, HASH_TOTAL, Evidence

FIRST_LINE = 2  # line 1 is the header
# the checks whose records explain traces, per stage (a failed column check's rows were
# kept as evidence when it failed: nothing to trace)
STAGING_CHECKS = checks.of_stage(checks.STAGING, without=(COLUMNS,))
FINAL_CHECKS = checks.of_stage(checks.FINAL, without=(COLUMNS,))
TRAILER_CHECKS = checks.of_stage(checks.TRAILER)

NOT_IN_STAGING = "accepted, not in staging"
NOT_ACCEPTED = "in staging, not accepted"
STAGED_TWICE = "in staging more than once"
MISSING_FROM_FINAL = "not in FINAL"
OTHER_RUN_IN_FINAL = "in FINAL from another run"
OTHER_AMOUNT = "other amount in FINAL"
NOT_FROM_STAGING = "in FINAL for this run, not in staging"


@dataclass(frozen=True)
class Finding:
    """One record behind a difference. Amounts are minor units at the job's scale."""

    section: str  # 'staging' or 'final'
    kind: str
    source_line: int | None = None
    key: str | None = None
    staged_amount: int | None = None
    final_amount: int | None = None


@dataclass(frozen=True)
class RangeRow:
    worker_id: int
    first_line: int
    last_line: int
    read: int
    rejected: int
    accepted_amount: int
    state: str


@dataclass
class Explanation:
    report: RunReport
    scale: int
    counts: Counter[str] = field(default_factory=Counter)  # findings per kind (all of them)
    findings: list[Finding] = field(default_factory=list)  # the first ``limit`` per section
    ranges: list[RangeRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    full: list[Finding] | None = None  # every finding, when a CSV was asked for
    evidence: list[Evidence] = field(default_factory=list)  # behind failed column checks
    limit: int = 20  # rows shown per section in text
    # reject_limit failed: the run's reject file, its rejects per reason, the first ones
    reject_file: Path | None = None
    reject_reasons: list[tuple[str, int]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    @property
    def failed_checks(self) -> list[str]:
        return [r.check_name for r in self.report.results if not r.passed]


def explain_run(config: JobConfig, engine: Engine, run_id: str | None, *, limit: int = 20,
                everything: bool = False, replay: bool = True) -> Explanation:
    """Explain the failed checks of ``run_id`` (default: the latest run).

    ``everything`` keeps every finding (for a CSV); ``replay=False`` never replays a
    rolled-back MERGE (a read-only report).
    """
    report = load_report(engine, run_id, {config.name: config.amount_field.scale},
                         None if run_id else config.name)
    found = Explanation(report, config.amount_field.scale, limit=limit)
    if report.run.job_name != config.name:
        found.notes.append(f"run of job {report.run.job_name}: explain it with that job's "
                           "config to see its records")
        return found
    failed = set(found.failed_checks)
    tables = job_tables(config)
    run_dir = config.output_dir / "runs" / report.run.run_id
    found.ranges = _ranges(report)
    if checks.VOLUME_VS_HISTORY in failed:  # no record is behind it: the night is short
        detail = next(r.detail for r in report.results
                      if r.check_name == checks.VOLUME_VS_HISTORY)
        found.notes.append(f"{checks.VOLUME_VS_HISTORY}: {detail}; `pipeline runs` lists "
                           "the nights behind the median")
    sink: list[Finding] | None = [] if everything else None
    if checks.REJECT_LIMIT in failed:
        _explain_rejects(found, run_dir / "rejects.txt", limit)
    if config.details:
        _explain_types(found, engine, config, failed, limit, sink, replay)
    if failed & set(STAGING_CHECKS):
        _explain_staging(found, engine, tables, config, run_dir, limit, sink)
    if failed & set(FINAL_CHECKS) and not _not_evaluated(report, FINAL_CHECKS):
        _explain_final(found, engine, tables, config, limit, sink, replay)
    if {checks.plain_name(name) for name in failed} & set(checks.COLUMN_CHECKS):
        found.evidence = load_evidence(engine, report.run.run_id)
    found.full = sink
    return found


def _explain_types(found: Explanation, engine: Engine, config: JobConfig, failed: set[str],
                   limit: int, sink: list[Finding] | None, replay: bool) -> None:
    """[[details]]: each type's failed FINAL checks as a single-detail job's (its MERGE
    replayed alone). Its staging checks are not traced to lines: the processors' ranges
    mix the types, so the lines a type accepted are not known from them."""
    for t in config.details:
        own = {checks.plain_name(n) for n in failed if n.startswith(f"{t.label}:")}
        if own & set(STAGING_CHECKS):
            found.notes.append(f"{t.label}: the lines behind its staging checks are not "
                               f"named per detail type; {t.config.staging_table} holds the "
                               "run's rows (RUN_ID) and rejects.txt its rejects")
        names = tuple(f"{t.label}:{n}" for n in FINAL_CHECKS)
        if own & set(FINAL_CHECKS) and not _not_evaluated(found.report, names):
            _explain_final(found, engine, job_tables(t.config), t.config, limit, sink, replay)


def _not_evaluated(report: RunReport, names: tuple[str, ...]) -> bool:
    return all(not r.evaluated for r in report.results if r.check_name in names)


def _ranges(report: RunReport) -> list[RangeRow]:
    """The processors' ranges in file order: each starts where the one before ended."""
    rows, line = [], FIRST_LINE
    for w in report.workers:
        if w.worker_type != PROCESSOR:
            continue
        rows.append(RangeRow(w.worker_id, line, line + w.records_processed - 1,
                             w.records_processed, w.errors_count, w.amount, w.state))
        line += w.records_processed
    return rows


# --- rejects: the records the limit counted ----------------------------------------------


def _explain_rejects(found: Explanation, path: Path, limit: int) -> None:
    """Too many rejects: what they are lies in the reject file, one line per record."""
    if not path.is_file():
        found.notes.append(f"the reject file {path} is missing: the rejects cannot be named")
        return
    found.reject_file = path
    found.reject_reasons = reason_counts(path)
    found.rejected = list(itertools.islice(read_rejects(path), limit))


# --- staging: accepted lines vs staged lines ---------------------------------------------


def _explain_staging(found: Explanation, engine: Engine, tables: JobTables, config: JobConfig,
                     run_dir: Path, limit: int, sink: list[Finding] | None) -> None:
    unfinished = [r for r in found.ranges if r.state != "done"]
    if unfinished or not found.ranges:
        found.notes.append("the processors did not all finish: the accepted lines cannot be "
                           "derived from their ranges")
        return
    rejected = rejected_lines(run_dir / "rejects.txt")
    if len(rejected) != sum(r.rejected for r in found.ranges):
        found.notes.append(f"the reject file {run_dir / 'rejects.txt'} is missing or "
                           "incomplete: lines it lacks are reported as not in staging")
    last = found.ranges[-1].last_line
    accepted = np.ones(last - FIRST_LINE + 1, dtype=bool)
    inside = rejected[(rejected >= FIRST_LINE) & (rejected <= last)]
    accepted[inside - FIRST_LINE] = False
    staged = _staged_lines(engine, tables, found.report.run.run_id)
    lines, times = np.unique(staged, return_counts=True)
    in_range = (lines >= FIRST_LINE) & (lines <= last)
    staged_mask = np.zeros_like(accepted)
    staged_mask[lines[in_range] - FIRST_LINE] = True
    missing = np.flatnonzero(accepted & ~staged_mask) + FIRST_LINE
    extra = np.concatenate([lines[~in_range],
                            lines[in_range][~accepted[lines[in_range] - FIRST_LINE]]])
    extra.sort()
    twice = lines[times > 1]
    for kind, found_lines in ((NOT_IN_STAGING, missing), (NOT_ACCEPTED, extra),
                              (STAGED_TWICE, twice)):
        found.counts[kind] = len(found_lines)
        shown = found_lines if sink is not None else found_lines[:limit]
        keyed = _file_keys(found, config, shown) if kind == NOT_IN_STAGING else _staged_keys(
            engine, tables, config, found.report.run.run_id, shown)
        for line in shown.tolist():
            key, amount = keyed.get(line, (None, None))
            finding = Finding("staging", kind, line, key, amount)
            if sink is not None:
                sink.append(finding)
            if len([f for f in found.findings if f.kind == kind]) < limit:
                found.findings.append(finding)


def _file_keys(found: Explanation, config: JobConfig,
               lines: np.ndarray) -> dict[int, tuple[str, None]]:
    """The keys of lines staging lacks, read back from the input file when it is still there
    and unchanged (same SHA-256): one streaming pass, the file is never held whole."""
    run = found.report.run
    path = Path(run.input_path)
    if not len(lines) or not path.is_file() or run.input_sha256 is None:
        return {}
    try:
        keys = config.input_format.read_keys(path, run.input_sha256, lines, config.key_columns)
    except KeysUnreadable as exc:
        found.notes.append(str(exc))
        return {}
    return {n: (key, None) for n, key in keys.items()}


def _staged_lines(engine: Engine, tables: JobTables, run_id: str) -> np.ndarray:
    staging = tables.staging
    query = select(staging.c.source_line).where(staging.c.run_id == run_id)
    with database_errors(engine, "reading the staged lines"), engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(query)
        parts = [np.fromiter((r[0] for r in chunk), dtype=np.int64)
                 for chunk in iter(lambda: result.fetchmany(100_000), [])]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _staged_keys(engine: Engine, tables: JobTables, config: JobConfig, run_id: str,
                 lines: np.ndarray) -> dict[int, tuple[str, int]]:
    staging = tables.staging
    out: dict[int, tuple[str, int]] = {}
    with database_errors(engine, "reading staging rows"), engine.connect() as conn:
        for start in range(0, len(lines), 500):  # bind-parameter limits
            part = [int(x) for x in lines[start:start + 500]]
            keys = [staging.c[k] for k in config.key_columns]
            rows = conn.execute(select(staging.c.source_line, staging.c[config.amount], *keys)
                                .where(staging.c.run_id == run_id,
                                       staging.c.source_line.in_(part)))
            out.update({int(r[0]): (join_key(r[2:]), int(r[1])) for r in rows})
    return out


# --- final: surviving staging rows vs FINAL ------------------------------------------------


def _explain_final(found: Explanation, engine: Engine, tables: JobTables, config: JobConfig,
                   limit: int, sink: list[Finding] | None, replay: bool) -> None:
    run_id = found.report.run.run_id
    with database_errors(engine, "comparing staging with FINAL"), engine.connect() as conn:
        final = FinalRepository(conn, tables, config.key_columns, config.amount)
        if final.get_count_for_run(run_id):
            _final_differences(found, conn, tables, config, limit, sink)
            return
    if not replay:
        found.notes.append("the MERGE was rolled back: `pipeline explain` replays it to name "
                           "the keys")
        return
    with job_lock(engine, tables.job_lock, config.name), \
            database_errors(engine, "replaying the MERGE"), engine.connect() as conn:
        transaction = conn.begin()
        try:
            FinalRepository(conn, tables, config.key_columns, config.amount).merge_run(
                run_id, utc_now(), deduplicate=True)
            _final_differences(found, conn, tables, config, limit, sink)
        finally:
            transaction.rollback()
    found.notes.append("the MERGE was rolled back; explain replayed it in a transaction it "
                       "rolled back again: FINAL is unchanged")


def _final_differences(found: Explanation, conn: Connection, tables: JobTables,
                       config: JobConfig, limit: int, sink: list[Finding] | None) -> None:
    run_id = found.report.run.run_id
    final, keys, amount = tables.final, config.key_columns, config.amount
    survivors = surviving_rows(tables.staging, keys, tables.business_columns).subquery("s")
    params = {"run_id": run_id}
    same_key = and_(*(final.c[k] == survivors.c[k] for k in keys))
    joined = survivors.outerjoin(final, same_key)
    kinds = {
        MISSING_FROM_FINAL: final.c[keys[0]].is_(None),
        OTHER_RUN_IN_FINAL: final.c.last_run_id != run_id,
        OTHER_AMOUNT: and_(final.c.last_run_id == run_id,
                           final.c[amount] != survivors.c[amount]),
    }
    # one pass per query, each difference counted as it streams by (the first ``limit``
    # kept): a separate COUNT would recompute the survivors' window over staging again
    lost = (select(survivors.c[amount], final.c[amount], final.c.last_run_id,
                   *(survivors.c[k] for k in keys))
            .select_from(joined).where(or_(*kinds.values()))
            .order_by(*(survivors.c[k] for k in keys)))
    extra = (select(final.c[amount], *(final.c[k] for k in keys))
             .select_from(final.outerjoin(survivors, same_key))
             .where(final.c.last_run_id == run_id, survivors.c[keys[0]].is_(None))
             .order_by(*(final.c[k] for k in keys)))
    for row in conn.execution_options(stream_results=True).execute(lost, params):
        kind = (MISSING_FROM_FINAL if row[2] is None else
                OTHER_RUN_IN_FINAL if row[2] != run_id else OTHER_AMOUNT)
        _add(found, sink, limit, Finding("final", kind, None, join_key(row[3:]),
                                         int(row[0]), None if row[1] is None else int(row[1])))
    for row in conn.execution_options(stream_results=True).execute(extra, params):
        _add(found, sink, limit, Finding("final", NOT_FROM_STAGING, None, join_key(row[1:]),
                                         None, int(row[0])))


def _add(found: Explanation, sink: list[Finding] | None, limit: int, finding: Finding) -> None:
    found.counts[finding.kind] += 1
    if sink is not None:
        sink.append(finding)
    if found.counts[finding.kind] <= limit:
        found.findings.append(finding)


# --- output --------------------------------------------------------------------------------


# A cell a spreadsheet would read as a formula (OWASP "CSV injection"): a key is input
# data, and `=cmd|calc!A1` must reach the person who opens the file as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def spreadsheet_safe(cell: str) -> str:
    """``cell``, with a leading ``'`` when a spreadsheet would run it as a formula; a plain
    number (a negative amount) stays a number."""
    if cell.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def write_csv(path: Path, found: Explanation) -> int:
    from pipeline.money import format_minor

    def amount(minor: int | None) -> str:
        return "" if minor is None else format_minor(minor, found.scale)

    rows = found.full if found.full is not None else found.findings
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["run_id", "section", "kind", "source_line", "key", "staged_amount",
                      "final_amount"])
        for x in rows:
            cells = [found.report.run.run_id, x.section, x.kind, str(x.source_line or ""),
                     x.key or "", amount(x.staged_amount), amount(x.final_amount)]
            out.writerow([spreadsheet_safe(c) for c in cells])
    return len(rows)


def format_explanation(found: Explanation) -> str:
    from pipeline.money import format_minor

    run = found.report.run

    def money(v: int | None) -> str:
        return "" if v is None else format_minor(v, found.scale)

    lines = [f"explain  run {run.run_id} (job {run.job_name}, {run.status}, exit "
             f"{'-' if run.exit_code is None else run.exit_code})"]
    failed = found.failed_checks
    if not found.report.results:
        lines.append(f"no check was recorded: the run ended before its checks ({run.message})")
    elif not failed:
        lines.append("every check passed: nothing to explain")
    else:
        lines.append(f"failed   {failure_summary(found.report.results)}")
    lines += _reject_lines(found)
    for section, title in (("staging", "accepted source lines vs staging rows"),
                           ("final", "surviving staging rows (last record per key) vs FINAL")):
        kinds = [k for k in found.counts if _section_of(k) == section]
        if not kinds:
            continue
        lines += ["", f"{section}: {title}"]
        lines += [f"  {found.counts[k]:>12,}  {k}" for k in kinds]
        shown = [f for f in found.findings if f.section == section]
        lines.append(f"  {'line':>12}  {'key':<20} {'staged amount':>18} {'final amount':>18}"
                     "  what")
        for f in shown:
            line = "" if f.source_line is None else f"{f.source_line:,}"
            lines.append(f"  {line:>12}  {f.key or '':<20} {money(f.staged_amount):>18} "
                         f"{money(f.final_amount):>18}  {f.kind}")
        if len(shown) < sum(found.counts[k] for k in kinds):
            lines.append(f"  (first {len(shown)} shown; --csv PATH writes them all)")
    if found.ranges and set(failed) & {*TRAILER_CHECKS, *STAGING_CHECKS}:
        lines += ["", "ranges: the processors' lines, in file order",
                  f"  {'worker':>6} {'lines':>23} {'read':>12} {'rejected':>9} "
                  f"{'accepted amount':>20}  state"]
        for r in found.ranges:
            span = f"{r.first_line:,}-{r.last_line:,}"
            lines.append(f"  {r.worker_id:>6} {span:>23} {r.read:>12,} {r.rejected:>9,} "
                         f"{money(r.accepted_amount):>20}  {r.state}")
        lines += _trailer_lines(found, money)
    lines += _evidence_lines(found)
    if found.notes:
        lines += ["", *(f"note: {n}" for n in found.notes)]
    return "\n".join(lines)


def _evidence_lines(found: Explanation) -> list[str]:
    """The differing values of the failed column checks, per check, as kept at the time."""
    out = []
    for name in checks.COLUMN_CHECKS:
        rows = [e for e in found.evidence if e.check_name == name]
        if not rows:
            continue
        side = "staging" if checks.STAGES[name] == checks.STAGING else "FINAL"
        out += ["", f"{name}: the values that differ (kept when the check failed)",
                f"  {'line':>12}  {'key':<20} {'column':<16} {'expected':<24} {side}"]
        for e in rows[:found.limit]:
            line = "" if e.source_line is None else f"{e.source_line:,}"
            out.append(f"  {line:>12}  {e.key:<20} {e.column:<16} {_value(e.expected):<24} "
                       f"{_value(e.actual)}")
        if len(rows) > found.limit:
            out.append(f"  (first {found.limit} of {len(rows):,} shown; "
                       "--limit N shows more)")
    return out


def _value(text: str | None) -> str:
    return "NULL" if text is None else repr(text)


def _reject_lines(found: Explanation) -> list[str]:
    if found.reject_file is None:
        return []
    result = next(r for r in found.report.results if r.check_name == checks.REJECT_LIMIT)
    out = ["", f"rejects: {result.detail}", f"  every one, with its reason and record: "
                                              f"{found.reject_file}", "  by reason:",
           *reason_lines(found.reject_reasons), f"  {'line':>12}  reason"]
    out += [f"  {line:>12,}  {reason}" for line, reason in found.rejected]
    if len(found.rejected) < result.actual_count:
        out.append(f"  (first {len(found.rejected)} shown; the reject file lists them all)")
    return out


def _trailer_lines(found: Explanation, money: Any) -> list[str]:
    out = []
    for r in found.report.results:
        if r.check_name in TRAILER_CHECKS and not r.passed:
            if r.is_amount_check:
                out.append(f"  trailer amount {money(r.expected_amount) or '?'}, read "
                           f"{money(r.actual_amount) or '?'} ({r.detail or 'differs'})")
            elif r.kind == HASH_TOTAL:
                out.append(f"  trailer hash total {r.expected_count:,}, read "
                           f"{r.actual_count:,} ({r.detail})")
            else:
                out.append(f"  trailer count {r.expected_count:,}, read {r.actual_count:,} "
                           f"({r.discrepancy:+,})")
    return out


def _section_of(kind: str) -> str:
    return "staging" if kind in (NOT_IN_STAGING, NOT_ACCEPTED, STAGED_TWICE) else "final"


def explanation_document(found: Explanation) -> dict[str, Any]:
    """The JSON twin of the text: amounts as exact strings."""
    from pipeline.money import format_minor

    def money(v: int | None) -> str | None:
        return None if v is None else format_minor(v, found.scale)

    return {
        "failed_checks": found.failed_checks,
        "counts": dict(found.counts),
        "records": [{"section": f.section, "kind": f.kind, "source_line": f.source_line,
                     "key": f.key, "staged_amount": money(f.staged_amount),
                     "final_amount": money(f.final_amount)} for f in found.findings],
        "ranges": [{"worker_id": r.worker_id, "first_line": r.first_line,
                    "last_line": r.last_line, "read": r.read, "rejected": r.rejected,
                    "accepted_amount": money(r.accepted_amount), "state": r.state}
                   for r in found.ranges],
        "evidence": [{"check_name": e.check_name, "source_line": e.source_line,
                      "key": e.key, "column": e.column, "expected": e.expected,
                      "actual": e.actual} for e in found.evidence],
        "notes": found.notes,
        "rejects": None if found.reject_file is None else {
            "file": str(found.reject_file),
            "by_reason": [{"reason": reason, "records": n} for reason, n in found.reject_reasons],
            "records": [{"source_line": line, "reason": reason}
                        for line, reason in found.rejected]},
    }
