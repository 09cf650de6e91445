"""Run the job once in this (fresh) process and report its phases as JSON on stdout.

Used by the benchmarks as ``python -m benchmarks.runjob --input F --db URL ...``: it does
what ``python -m pipeline run`` does (shipped config, the same overrides, ``run_job``),
and wraps a few of the job's functions with timers. A timer costs ~1 us a call and is
called a handful of times per run, so it does not move the figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

PHASES: dict[str, float] = defaultdict(float)
CPU: dict[str, float] = defaultdict(float)  # CPU-seconds of this process and its children


def cpu_seconds() -> float:
    """User + system CPU of this process and of its children that have been waited for."""
    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(owner: Any, name: str, phase: str) -> None:
    original = getattr(owner, name, None)
    if original is None:
        # the job was refactored: a phase silently missing would shift its time into
        # another and make the figures lie, so the benchmark stops instead
        raise SystemExit(f"benchmarks.runjob: no {owner.__name__}.{name} to time; "
                         "update instrument() to the job's new shape")

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), cpu_seconds()
        try:
            return original(*args, **kwargs)
        finally:
            PHASES[phase] += time.perf_counter() - start
            CPU[phase] += cpu_seconds() - cpu

    setattr(owner, name, wrapper)


def instrument() -> None:
    """Phase timers: plan (hash + split), load (workers), MERGE, checks, audit."""
    from pipeline import job
    from pipeline.audit.runs import RunRepository
    from pipeline.audit.writer import AuditWriter
    from pipeline.db.repositories import FinalRepository, StagingRepository
    from pipeline.inputs.lines import TextLines
    from pipeline.reconcile import ReconciliationService
    from pipeline.repeats import Repeated
    from pipeline.staging_totals import StagingTotals

    _timed(TextLines, "plan", "plan")  # the shipped job's input is text
    _timed(job, "create_missing_tables", "ddl")
    _timed(job.WorkerPool, "run", "load")
    _timed(ReconciliationService, "load_checks", "checks_before_merge")
    _timed(StagingRepository, "surviving_count_and_amount", "checks_duplicates")
    # the records a repeat supersedes: from the whole keys spilled, else from the database
    _timed(job, "repeated_lines", "spill_read")
    _timed(Repeated, "superseded", "checks_repeated_lines")
    _timed(StagingRepository, "collapsed_at_lines", "checks_repeated_lines")
    _timed(FinalRepository, "merge_run", "merge")
    _timed(FinalRepository, "count_and_amount_for_run", "checks_after_merge")
    # the MERGE's transaction: connect + MERGE + checks + commit; the rest is the commit
    _timed(ReconciliationService, "merge_and_verify", "merge_transaction")
    # the column proofs (pipeline.db.digests, the MERGE's join): their own cost. Staging's
    # totals and digest sum are summed in a thread beside the MERGE: how long that pass
    # took, and how long the MERGE's transaction then waited for it. staging_totals adds
    # every pass over staging's totals: the one beside, or the checks' own (a resume)
    _timed(StagingRepository, "count_and_amount", "staging_totals")
    _timed(StagingTotals, "_sum", "staging_totals_beside")
    _timed(StagingTotals, "result", "staging_totals_wait")
    _timed(ReconciliationService, "_staging_columns", "proof_staging")
    _timed(ReconciliationService, "_final_columns", "proof_final")
    _timed(RunRepository, "start_run", "audit")
    _timed(AuditWriter, "finish_run", "audit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.runjob")
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--processors", type=int)
    parser.add_argument("--writers", type=int)
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    instrument()
    from pipeline.config import load_config
    from pipeline.job import run_job
    from pipeline.jobs import shipped_config

    config = load_config(shipped_config()).with_overrides(
        input_path=args.input, database_url=args.db, processors=args.processors,
        writers=args.writers, output_dir=args.output_dir)
    start = time.perf_counter()
    outcome = run_job(config)
    PHASES["run_job"] = time.perf_counter() - start
    phases = dict(PHASES)
    phases["merge_commit"] = max(0.0, phases.get("merge_transaction", 0.0)
                                 - phases.get("merge", 0.0)
                                 - phases.get("checks_after_merge", 0.0))
    read = outcome.metrics.total_read if outcome.metrics else 0
    json.dump({"exit_code": outcome.exit_code, "message": outcome.message,
               "records": read, "phases": phases, "stages": outcome.stages,
               "cpu": dict(CPU)}, sys.stdout)
    return 0


if __name__ == "__main__":
    from pipeline.__main__ import exit_process

    exit_process(main())  # as ``python -m pipeline`` ends
