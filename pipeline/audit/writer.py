"""Writes RECON_AUDIT, RECON_WORKER_AUDIT and RECON_EVIDENCE: the run's evidence, and its
end in BATCH_RUN through the run repository (pipeline.audit.runs, BATCH_RUN's one writer).

A run that passed commits them in the MERGE's own transaction (``finish_on``): FINAL and
the audit that describes it commit together or not at all. A failed run commits them in a
transaction of their own (``finish_run``), so a rolled-back MERGE never takes its audit
with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine

from pipeline.audit.runs import RunRepository
from pipeline.audit.schema import naive_utc, to_audit, utc_now
from pipeline.db.engine import database_errors
from pipeline.db.tables import JobTables
from recon.values import SUCCEEDED, Evidence, ReconciliationResult, WorkerMetrics


class AuditWriter:
    def __init__(self, engine: Engine, tables: JobTables, amount_scale: int) -> None:
        self.engine, self.tables, self.scale = engine, tables, amount_scale
        self.runs = RunRepository(engine, tables.batch_run, amount_scale)

    def finish_run(self, run_id: str, status: str, exit_code: int, message: str,
                   results: Sequence[ReconciliationResult],
                   workers: Sequence[WorkerMetrics],
                   stages: Mapping[str, int] | None = None, *,
                   resumed: datetime | None = None,
                   evidence: Sequence[Evidence] = (),
                   staging_proven: datetime | None = None) -> str:
        """Commit the end of a run that did not pass in a transaction of its own; returns
        the status BATCH_RUN holds now (SUCCEEDED if the MERGE's transaction committed).
        ``stages``: milliseconds per stage name (pipeline.stages), kept in BATCH_RUN;
        ``resumed``: when the `run --resume` writing this end started (RESUMED_TS)."""
        with database_errors(self.engine, "committing the audit"), self.engine.begin() as c:
            committed = self.runs.status_for_end(c, run_id)
            if committed == SUCCEEDED:
                # the MERGE's transaction, audit included, did commit (its reply was lost):
                # that is the truth, and what FINAL holds
                return committed
            self.finish_on(c, run_id, status, exit_code, message, results, workers, stages,
                           resumed=resumed, staging_proven=staging_proven)
            if evidence:
                c.execute(self.tables.recon_evidence.insert(),
                          [_evidence_row(run_id, i, e) for i, e in enumerate(evidence)])
            return status

    def finish_on(self, c: Connection, run_id: str, status: str, exit_code: int, message: str,
                  results: Sequence[ReconciliationResult],
                  workers: Sequence[WorkerMetrics],
                  stages: Mapping[str, int] | None = None, *,
                  resumed: datetime | None = None,
                  staging_proven: datetime | None = None) -> None:
        """The run's end, written on ``c`` in the caller's transaction (the MERGE's).

        Every check row gets the same CHECK_TS: the audit reader tells one attempt's checks
        from a later `run --resume`'s by it. A resume's RESUMED_TS commits with its checks.
        ``staging_proven``: when processed_to_staging_columns proved staging held the
        processors' rows, for a later resume without the input file.
        """
        t = self.tables
        now = utc_now()
        if results:
            c.execute(t.recon_audit.insert(), [self._check_row(run_id, r, now)
                                               for r in results])
        if workers:
            c.execute(t.worker_audit.insert(), [self._worker_row(run_id, w)
                                                for w in workers])
        self.runs.end_on(c, run_id, status, exit_code, message, now, stages, resumed=resumed,
                         staging_proven=staging_proven)

    def _amount(self, minor: int | None) -> int | None:
        return to_audit(minor, self.scale)

    def _check_row(self, run_id: str, r: ReconciliationResult, now: datetime) -> dict:
        return {
            "run_id": run_id, "check_name": r.check_name, "expected_cnt": r.expected_count,
            "actual_cnt": r.actual_count, "passed": "Y" if r.passed else "N",
            "discrepancy": r.discrepancy, "check_ts": now,
            "expected_amt": self._amount(r.expected_amount),
            "actual_amt": self._amount(r.actual_amount),
            "discrepancy_amt": self._amount(r.amount_discrepancy),
            "detail": r.detail[:1000] or None,
        }

    def _worker_row(self, run_id: str, w: WorkerMetrics) -> dict:
        return {
            "run_id": run_id, "worker_id": w.worker_id, "worker_type": w.worker_type,
            "records_processed": w.records_processed, "errors_count": w.errors_count,
            "amount": self._amount(w.amount), "start_ts": naive_utc(w.start_time),
            "end_ts": naive_utc(w.end_time), "state": w.state, "exit_code": w.exit_code,
            "pid": w.pid,
        }


def _evidence_row(run_id: str, seq: int, e: Evidence) -> dict:
    return {"run_id": run_id, "seq": seq, "check_name": e.check_name,
            "source_line": e.source_line, "key_value": e.key[:200],
            "column_name": e.column[:128],
            "expected_value": None if e.expected is None else e.expected[:1000],
            "actual_value": None if e.actual is None else e.actual[:1000]}

