"""The column checks' evidence: which rows differ, in which columns, and both values.

``processed_to_staging_columns`` passes on one comparison of sums (pipeline.db.digests);
only when the sums differ, or on `run --resume` (a new interpreter, whose digests are
not the workers'), are the processors' rows derived again from the input file
(``InputRows``) and compared with staging line by line. ``staging_to_final_columns``
compares in SQL inside the MERGE's transaction (pipeline.reconcile); its differing rows
are turned into evidence here too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Table, select

from pipeline.config import JobConfig
from pipeline.db.backends import backend_for
from pipeline.db.bulk import BulkLoader, StagingBatch
from pipeline.db.types import Money
from pipeline.layouts.fields import FieldType
from pipeline.layouts.fixed import DetailBatch
from pipeline.money import format_minor
from pipeline.source import InputPlan
from recon.checks import PROCESSED_TO_STAGING_COLUMNS as NAME
from recon.checks import columns_check
from recon.values import ROW, Evidence, ReconciliationResult

EVIDENCE_ROWS = 1_000  # differing rows kept in the audit per check, in line order
BATCH = 10_000  # records parsed at a time when the input is read again
NOT_STAGED = np.iinfo(np.int64).min  # no digest is this: the record has no staging row


@dataclass
class ColumnFinding:
    """What a column comparison found: rows compared, rows equal, the evidence."""

    compared: int
    equal: int
    evidence: list[Evidence] = field(default_factory=list)
    note: str = ""

    def result(self, check_name: str) -> ReconciliationResult:
        differing = Counter(e.column for e in self.evidence)
        return columns_check(check_name, self.compared, self.equal, dict(differing),
                             self.note)


def shown(column: Any, value: Any) -> str | None:
    """A value as the evidence shows it, stored or parsed: amounts in decimals (the
    processors' are minor units), dates in ISO (the processors' are ISO text already)."""
    if value is None:
        return None
    if isinstance(column.type, Money):
        return format_minor(int(value), column.type.scale)
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class InputRows:
    """The processors' accepted rows again, parsed from the input file in the parent."""

    def __init__(self, config: JobConfig, path: Path, sha256: str | None, run_id: str,
                 loader: BulkLoader) -> None:
        self.config, self.path, self.sha256 = config, path, sha256
        self.run_id, self.loader = run_id, loader
        self._plan: InputPlan
        # a resume asks twice (its refusal test, then the run): the file is hashed and
        # parsed once
        self._why: str | None = None
        self._digests: tuple[np.ndarray, np.ndarray] | None = None

    def unavailable(self) -> str:
        """Why the rows cannot be read again ("" when they can): the file is gone, or is
        not the one the run read (its SHA-256 in BATCH_RUN). Plans the file: call it
        before anything else."""
        if self._why is None:
            self._why = self._plan_again()
        return self._why

    def _plan_again(self) -> str:
        from pipeline.errors import PipelineError

        if not self.path.is_file():
            return f"the input file {self.path} is not there"
        try:
            self._plan = self.config.input_format.plan(self.path, 1)
        except PipelineError as exc:
            return f"the input file {self.path} cannot be read again ({exc})"
        if self.sha256 and self._plan.sha256 != self.sha256:
            return f"the input file {self.path} is not the one the run read (SHA-256 differs)"
        return ""

    def batches(self) -> Iterator[DetailBatch]:
        from pipeline.workers.processor import detail_batches_of

        for rng in self._plan.ranges:
            yield from detail_batches_of(self.config, self._plan.path, rng, BATCH)

    def digests(self, worker_of: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(lines, digests) of the accepted records that staging holds a row of, each as
        the processor named by ``worker_of`` (staging's WORKER_ID) digested it; the
        first call's, again on a later one."""
        if self._digests is None:
            self._digests = self._digested(worker_of)
        return self._digests

    def _digested(self, worker_of: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
        lines, digests = [], []
        for batch in self.batches():
            workers = np.array([worker_of.get(n, -1) for n in batch.lines.tolist()])
            for worker in np.unique(workers[workers >= 0]).tolist():
                mask = workers == worker
                staged = StagingBatch(self.run_id, worker, batch.lines[mask],
                                      {k: v[mask] for k, v in batch.columns.items()})
                lines.append(staged.lines)
                digests.append(self.loader.encode_digested(staged).row_digests)
            lines.append(batch.lines[workers < 0])  # not staged: missing, whatever it holds
            digests.append(np.full(int((workers < 0).sum()), NOT_STAGED, dtype=np.int64))
        if not lines:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(lines), np.concatenate(digests)

    def values(self, wanted: set[int]) -> dict[int, dict[str, Any]]:
        """The stored values of the records at the ``wanted`` lines, as loaded: text
        blank as None, amounts in minor units, dates in ISO."""
        fields = self.config.detail.stored_fields
        found: dict[int, dict[str, Any]] = {}
        for batch in self.batches():
            for i in np.flatnonzero(np.isin(batch.lines, list(wanted))).tolist():
                found[int(batch.lines[i])] = {
                    f.name: _loaded(f.type, batch.columns[f.name][i].item()) for f in fields}
        return found


def _loaded(kind: FieldType, value: Any) -> Any:
    return (value or None) if kind is FieldType.TEXT else value


def compare_staging(connection: Connection, staging: Table, key: Sequence[str], run_id: str,
                    rows: InputRows, accepted: int) -> ColumnFinding:
    """STAGING's rows of the run against the input's accepted records, line by line."""
    lines_s, workers_s, digests_s = backend_for(connection.dialect.name).staging_digests(
        connection, staging, run_id)
    worker_of = dict(zip(lines_s.tolist(), workers_s.tolist(), strict=True))
    lines_p, digests_p = rows.digests(worker_of)
    expected = dict(zip(lines_p.tolist(), digests_p.tolist(), strict=True))
    staged = Counter(zip(lines_s.tolist(), digests_s.tolist(), strict=True))
    equal = sum(1 for pair in expected.items() if staged.get(pair, 0) == 1)
    bad_lines = sorted({n for n, d in expected.items() if staged.get((n, d), 0) != 1}
                       | {n for n, _ in staged if n not in expected})
    shown_lines = bad_lines[:EVIDENCE_ROWS]
    evidence = _staging_evidence(connection, staging, key, run_id, shown_lines,
                                 rows.values(set(shown_lines)))
    note = (f"{len(bad_lines):,} row(s) differ; the first {len(shown_lines):,} are in "
            "the evidence" if len(bad_lines) > len(shown_lines) else "")
    return ColumnFinding(accepted, equal, evidence, note)


def _staging_evidence(connection: Connection, staging: Table, key: Sequence[str],
                      run_id: str, lines: list[int],
                      expected: dict[int, dict[str, Any]]) -> list[Evidence]:
    columns = [c for c in staging.columns if c.name not in ("run_id", "source_line",
                                                              "worker_id")]
    held: dict[int, list[Any]] = {}
    if lines:
        query = select(staging.c.source_line, *columns).where(
            staging.c.run_id == run_id, staging.c.source_line.in_(lines))
        for row in connection.execute(query):
            held.setdefault(int(row[0]), []).append(row[1:])
    evidence = []
    for line in lines:
        want = expected.get(line)
        rows_held = held.get(line, [])
        if want is None or len(rows_held) != 1:  # a line staged once or never, or twice
            values = want if want is not None else dict(
                zip([c.name for c in columns], rows_held[0], strict=True))
            evidence.append(Evidence(NAME, _key_text(key, values), ROW,
                                     "1 row" if want is not None else "no such record",
                                     f"{len(rows_held)} row(s) in staging", line))
            continue
        for column, value in zip(columns, rows_held[0], strict=True):
            should, found = shown(column, want[column.name]), shown(column, value)
            if should != found:
                evidence.append(Evidence(NAME, _key_text(key, want), column.name, should,
                                         found, line))
    return evidence


def _key_text(key: Sequence[str], values: dict[str, Any]) -> str:
    return "|".join(str(values.get(k, "")) for k in key)
