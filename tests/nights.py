"""A job's history built straight into the audit tables: 90 nights of runs take
milliseconds this way where 90 real runs would take minutes, and what ``history`` reads
is only ever the audit. Each night is what a run of the job would have committed."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, MetaData

from pipeline.audit.schema import naive_utc, to_audit
from pipeline.db.audit_tables import audit_tables
from recon import checks
from recon.values import SUCCEEDED

FIRST_NIGHT = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)
SCALE = 2


@dataclass(frozen=True)
class NightSpec:
    records: int = 100_000
    rejected: int = 100
    seconds: float = 10.0
    status: str = SUCCEEDED
    exit_code: int = 0


def ordinary_nights(count: int, seed: int = 7) -> list[NightSpec]:
    """Nights that differ as real ones do: a few percent either way."""
    rng = random.Random(seed)
    return [NightSpec(records=100_000 + rng.randint(-3_000, 3_000),
                      rejected=rng.randint(80, 130),
                      seconds=round(10.0 * rng.uniform(0.9, 1.15), 3))
            for _ in range(count)]


def odd_nights(count: int = 90) -> tuple[list[NightSpec], dict[int, str]]:
    """``count`` nights with one of each kind of anomaly and two failed runs; the index
    of each odd night and what should be marked there."""
    nights = ordinary_nights(count)
    nights[count - 30] = replace(nights[count - 30], records=41_000, rejected=41)
    nights[count - 20] = replace(nights[count - 20], rejected=3_000)  # 3% rejected
    nights[count - 10] = replace(nights[count - 10], seconds=30.0)  # three times slower
    nights[count - 40] = NightSpec(status="FAILED_RECON", exit_code=1, seconds=6.0)
    nights[count - 5] = NightSpec(records=0, rejected=0, status="FAILED_INPUT", exit_code=2,
                                  seconds=0.05)
    return nights, {count - 30: "records", count - 20: "rejects", count - 10: "duration"}


def run_id_of(i: int) -> str:
    return f"night-{i:03d}"


def build_history(engine: Engine, job: str, nights: list[NightSpec]) -> None:
    """The audit rows of each night, one night apart, oldest first."""
    metadata = MetaData()
    recon_audit, worker_audit, batch_run, _lock, _evidence = audit_tables(metadata)
    metadata.create_all(engine)
    runs, workers, audits = [], [], []
    for i, spec in enumerate(nights):
        run_id, started = run_id_of(i), FIRST_NIGHT + timedelta(days=i)
        runs.append(_batch_run(run_id, job, i, started, spec))
        if spec.status == "FAILED_INPUT":
            continue  # refused before its load: no worker, no check
        ended = naive_utc(started + timedelta(seconds=spec.seconds))
        workers += [{"run_id": run_id, "worker_id": w, "worker_type": "processor",
                     "records_processed": half, "errors_count": spec.rejected // 2,
                     "amount": 0, "start_ts": naive_utc(started), "end_ts": ended,
                     "state": "done", "exit_code": 0, "pid": 1}
                    for w, half in enumerate(_halves(spec.records))]
        audits.append({"run_id": run_id, "check_name": checks.STAGING_TO_FINAL,
                       "expected_cnt": spec.records - spec.rejected,
                       "actual_cnt": spec.records - spec.rejected if spec.exit_code == 0 else 0,
                       "passed": "Y" if spec.exit_code == 0 else "N", "discrepancy": 0,
                       "check_ts": ended})
    with engine.begin() as conn:
        conn.execute(batch_run.insert(), runs)
        conn.execute(worker_audit.insert(), workers)
        conn.execute(recon_audit.insert(), audits)


def _halves(records: int) -> tuple[int, int]:
    return records // 2, records - records // 2


def _batch_run(run_id: str, job: str, i: int, started: datetime, spec: NightSpec) -> dict:
    loaded = spec.status != "FAILED_INPUT"
    # every row names every column: one executemany takes them all
    stages = ({"plan_ms": 50, "load_ms": None, "checks_ms": None, "merge_ms": None,
               "audit_ms": None} if not loaded else
              {"plan_ms": 100, "load_ms": round(spec.seconds * 700),
               "checks_ms": round(spec.seconds * 150), "merge_ms": round(spec.seconds * 130),
               "audit_ms": 20})
    return {"run_id": run_id, "job_name": job, "input_path": f"/in/{run_id}.dat",
            "input_sha256": f"{i:064x}", "status": spec.status, "exit_code": spec.exit_code,
            "start_ts": naive_utc(started),
            "end_ts": naive_utc(started + timedelta(seconds=spec.seconds)),
            "message": "", "business_date": date(2026, 8, 31) + timedelta(days=i),
            "read_cnt": spec.records if loaded else None,
            "rejected_cnt": spec.rejected if loaded else None,
            "read_amt": to_audit(-1_234_567_890_12 - i * 1000, SCALE) if loaded else None,
            **stages}
