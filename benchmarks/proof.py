"""The column proofs' own cost: ``python -m benchmarks.proof [--records N] [--pg-url URL]``.

Two parts, both measured on the shipped job and a generated file:

- in the processors: encoding the accepted batches with their row digests
  (``encode_digested``) against encoding them alone (``encode``), in this process, per
  database's loader, best of 3: the digests' share of the processors' work;
- in the parent: one job run per database on a fresh database, with
  ``processed_to_staging_columns`` (the database's digest sum, in a pass in a thread
  beside the MERGE with staging's other totals, pipeline.staging_totals: the pass, and
  how long the MERGE's transaction then waited for it) and ``staging_to_final_columns``
  (FINAL's digest, in the pass that counts its rows, against the processors' less the
  superseded rows'; the join only on a mismatch) timed inside it (benchmarks.runjob), the
  counting pass included, against the whole run: the share is what the run waited for.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Target, pg_reachable, postmaster_pid, run_job


def encode_seconds(path: Path, backend: str, digested: bool) -> float:
    """Seconds to encode every accepted batch of ``path`` for ``backend``'s loader."""
    from sqlalchemy.dialects import postgresql, sqlite

    from pipeline.config import load_config
    from pipeline.db.bulk import StagingBatch, loader_for
    from pipeline.db.tables import job_tables
    from pipeline.jobs import shipped_config
    from pipeline.workers.processor import detail_batches_of

    config = load_config(shipped_config()).with_overrides(input_path=path)
    dialect = sqlite.dialect() if backend == "sqlite" else postgresql.dialect()
    loader = loader_for(job_tables(config), config.detail, config.amount, dialect, 10_000)
    plan = config.input_format.plan(path, 1)
    batches = [StagingBatch("bench", 0, b.lines, b.columns)
               for b in detail_batches_of(config, plan.path, plan.ranges[0], 10_000)]
    encode = loader.encode_digested if digested else loader.encode
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for batch in batches:
            encode(batch)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.proof")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default="postgresql+psycopg://root@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    from pipeline.generate import generate_file

    with tempfile.TemporaryDirectory(prefix="proof-") as tmp:
        work = Path(tmp)
        path = work / "in.dat"
        generate_file(path, args.records, seed=11, reject_rate=0.001, duplicate_rate=0.001)
        backends = ["sqlite"] + ([] if pg_reachable(args.pg_url) else ["postgresql"])
        print(f"{args.records:,} records; times in seconds")
        print(f"{'database':<11} {'encode':>7} {'+digests':>9} {'share':>6}   "
              f"{'run':>7} {'staging proof':>14} {'waited':>7} {'final proof':>12} "
              f"{'share':>6}")
        for backend in backends:
            plain = encode_seconds(path, backend, False)
            digested = encode_seconds(path, backend, True)
            target = Target(backend, work, args.pg_url if backend != "sqlite" else None,
                            postmaster_pid() if backend != "sqlite" else None)
            phases = run_job(target, path).report["phases"]
            run = phases["run_job"]
            staging = phases.get("staging_totals_beside", 0.0)
            waited = phases.get("proof_staging", 0.0) + phases.get("staging_totals_wait", 0.0)
            # FINAL's own digest is taken in the pass that counts its rows (the phase
            # checks_after_merge), the staging side's in proof_final: both are the proof
            final = phases.get("proof_final", 0.0) + phases.get("checks_after_merge", 0.0)
            print(f"{backend:<11} {plain:>7.2f} {digested - plain:>+9.2f} "
                  f"{(digested - plain) / plain:>6.0%}   {run:>7.2f} {staging:>14.2f} "
                  f"{waited:>7.2f} {final:>12.2f} {(waited + final) / run:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
