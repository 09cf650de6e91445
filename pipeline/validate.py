"""`pipeline validate`: parse a whole input with the job's layout and check its trailer,
touching no database.

The same planner and the same vectorized parser as a run, in this process (one pass over
the file, no workers, no staging): what a run would reject, validate rejects, with the
same reasons, into a reject file of its own, and the run's checks on the file alone: the
trailer's count and amount, and the job's reject limit. Exit codes as for `run`: 0 they
pass, 1 one fails (the trailer does not balance, a rejected amount makes it unprovable,
more rejects than the limit or every record rejected), 2 the file is not a header,
details and a trailer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import JobConfig, trailer_totals
from pipeline.errors import InputStructureError
from pipeline.layouts.codepage_check import Reading, other_reading_lines
from pipeline.source import InputPlan
from pipeline.workers.processor import typed_batches_of, write_rejects
from recon import checks
from recon.values import AggregatedMetrics, ReconciliationResult

log = logging.getLogger(__name__)


@dataclass
class Validation:
    input_path: Path
    reject_file: Path
    plan: InputPlan | None = None
    records_read: int = 0
    rejects: int = 0
    read_amount: int = 0
    unreadable_amounts: int = 0
    hash_read: int = 0  # with a trailer hash total: the hashed field's sum, as a run's
    unhashed: int = 0
    misplaced: int = 0
    type_read: list[int] = field(default_factory=list)  # [[details]]: records of each type
    results: list[ReconciliationResult] = field(default_factory=list)
    code_page: str = "ascii"
    copybook_sha256: str | None = None
    other_readings: list[Reading] = field(default_factory=list)  # other EBCDIC code pages

    @property
    def exit_code(self) -> int:
        return 0 if all(r.passed for r in self.results) else 1


def validate_input(config: JobConfig, input_path: Path, out_dir: Path) -> Validation:
    """Parse ``input_path`` whole; rejects go to ``out_dir``/rejects.txt.

    Raises InputStructureError (exit 2) for a file that is not a valid input.
    """
    plan = config.input_format.plan(input_path, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = Validation(input_path, out_dir / "rejects.txt", plan,
                       code_page=config.code_page, copybook_sha256=config.copybook_sha256,
                       type_read=[0] * len(config.details))
    with open(found.reject_file, "w", encoding="ascii") as rejects:
        for rng in plan.ranges:
            for batch, parts in typed_batches_of(config, input_path, rng,
                                                 config.batch_size or 10_000):
                for t, part in enumerate(parts):
                    found.type_read[t] += part.records_read if part else 0
                write_rejects(rejects, batch)
                found.records_read += batch.records_read
                found.rejects += len(batch.rejects)
                found.read_amount += batch.read_amount
                found.unreadable_amounts += batch.unreadable_amounts
                found.hash_read += batch.hash_read
                found.unhashed += batch.unhashed
                found.misplaced += len(batch.misplaced)
    if found.misplaced:
        raise InputStructureError(f"{found.misplaced} header or trailer record(s) inside the "
                                  f"details (see {found.reject_file}): not a valid input")
    found.other_readings = config.input_format.other_readings(input_path, plan)
    found.results = file_checks(config, plan, found)
    found.results += [checks.count_check(f"{t.label}:{checks.SOURCE_TRAILER_COUNT}",
                                         int(plan.trailer[t.trailer_count]), read)
                      for t, read in zip(config.details, found.type_read, strict=True)
                      if t.trailer_count is not None]
    return found


def file_checks(config: JobConfig, plan: InputPlan,
                found: Validation) -> list[ReconciliationResult]:
    """The run's whole-file checks (recon.checks.file_checks), on what this pass read."""
    read = AggregatedMetrics(
        total_read=found.records_read, total_written=0, total_errors=found.rejects,
        accepted_amount=0, read_amount=found.read_amount, written_amount=0,
        unreadable_amounts=found.unreadable_amounts, misplaced_control=found.misplaced,
        writer_errors=0, workers=(), hash_read=found.hash_read, unhashed=found.unhashed)
    return checks.file_checks(trailer_totals(config, plan.trailer), read,
                              config.reject_limit)


def format_validation(found: Validation, job_name: str, scale: int) -> str:
    from pipeline.rejects import reason_counts, reason_lines
    from pipeline.summary import check_lines, reading_lines

    plan = found.plan
    lines = [
        f"validate {found.input_path}",
        f"job      {job_name}",
        f"sha256   {plan.sha256 if plan else '-'}",
        *reading_lines(found.code_page, found.copybook_sha256),
        *other_reading_lines(found.other_readings),
        f"records  {found.records_read:,} read, {found.records_read - found.rejects:,} "
        f"accepted, {found.rejects:,} rejected",
    ]
    lines += check_lines(found.results, scale)
    lines.append("")
    if found.rejects:
        lines.append(f"rejects  {found.rejects:,} -> {found.reject_file}")
        lines += reason_lines(reason_counts(found.reject_file))
    if found.exit_code == 0:
        lines.append("OK: the file parses and its trailer balances, its rejects within the "
                      "limit; no database was touched")
    else:
        failed = ", ".join(r.check_name for r in found.results if not r.passed)
        lines.append(f"FAILED: {failed}; no database was touched")
    return "\n".join(lines)
