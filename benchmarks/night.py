"""A real night: FINAL already full, tonight's file updates some keys and repeats a few.

``python -m benchmarks --sections night`` (or ``python -m benchmarks.night``): FINAL holds
``final`` rows (quick 4M, full 40M) before the run; tonight's file has ``night`` records
(quick 1M, full 10M), 30% of them updating keys FINAL already has, 0.1% repeating a key
of the same file (the later record must win), no rejects. The job and its floor run
alternately, each on a fresh copy of that database, ``reps`` times (default 5; 1 for the
full size in ``python -m benchmarks --full``); the ratio of each job run to the floor run
beside it, and the median of those ratios, is reported:

- the job: ``benchmarks.runjob`` (the shipped job, its phase timers and stage clock);
- the floor: the file pre-parsed by the job's own parser (not timed), then the fastest
  bulk load into the same staging table (SQLite: stdlib ``executemany`` in one
  transaction; PostgreSQL: one ``COPY``) and one de-duplicating MERGE (the job's own
  ``merge_statement(deduplicate=True)``) into the same FINAL with the same indexes.
  The floor knows nothing of the file, so its MERGE ranks every row to keep each key's
  last record; the job's MERGE leaves out the few records its key hashes showed to be
  superseded instead (pipeline.reconcile), which is most of what it gains at the MERGE.

Reported: job/floor (goal <= 1.3x) and the job's post-load time (everything after the
last row reached staging: checks, MERGE, audit) over the floor's MERGE alone (goal
<= 1.5x); a miss is marked as a miss.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from benchmarks.harness import Target, measure, median

UPDATES = 0.30
REPEATS = 0.001
JOB_GOAL, POST_LOAD_GOAL = 1.3, 1.5
BASE_RUN = "20261124T000000-base0000"


@dataclass(frozen=True)
class Shape:
    final: int
    night: int


QUICK, FULL = Shape(4_000_000, 1_000_000), Shape(40_000_000, 10_000_000)


def key(i: int) -> str:
    return f"T{i:015d}"


def night_file(path: Path, shape: Shape, seed: int = 9) -> Path:
    """Tonight's file: new keys after FINAL's, 30% of FINAL's keys again, 0.1% repeats."""
    rng = np.random.default_rng(seed)
    n = shape.night
    updates = int(n * UPDATES)
    repeats = int(n * REPEATS)
    keys = np.concatenate([rng.choice(shape.final, updates, replace=False),
                           np.arange(shape.final, shape.final + n - updates - repeats)])
    rng.shuffle(keys)
    # a repeat is a later record of a key seen earlier in the file
    at = np.sort(rng.choice(np.arange(1, len(keys)), repeats, replace=False))
    keys = np.insert(keys, at, keys[(at * rng.random(repeats)).astype(np.int64)])
    amounts = rng.integers(-9_999_999, 99_999_999, len(keys))
    total = int(amounts.sum())
    with open(path, "w", encoding="ascii") as out:
        out.write(f"H20261125{'NIGHT':<20}{'':71}\n")
        for k, a in zip(keys.tolist(), amounts.tolist(), strict=True):
            sign = "-" if a < 0 else "+"
            out.write(f"D{key(k):<16}0000000001{20261124}{sign}{abs(a):013d}EUR"
                      f"{'night':<40}{'':8}\n")
        sign = "-" if total < 0 else "+"
        out.write(f"T{len(keys):010d}{sign}{abs(total):018d}{'':70}\n")
    return path


def fill_final(url: str, rows: int) -> None:
    """The job's tables, FINAL holding ``rows`` earlier rows, with statistics."""
    from pipeline.config import load_config
    from pipeline.db.engine import create_missing_tables, make_engine
    from pipeline.db.tables import job_tables
    from pipeline.jobs import shipped_config

    engine = make_engine(url)
    create_missing_tables(engine, job_tables(load_config(shipped_config())))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :last) "
                "INSERT INTO transactions SELECT printf('T%015d', i), '0000000001', "
                "'2026-11-23', i % 100000, 'EUR', 'earlier', :run, '2026-11-24 00:00:00' "
                "FROM n"), {"last": rows - 1, "run": BASE_RUN})
        else:
            conn.execute(text(
                "INSERT INTO transactions SELECT 'T' || lpad(i::text, 15, '0'), '0000000001', "
                "DATE '2026-11-23', (i % 100000) / 100.0, 'EUR', 'earlier', :run, "
                "TIMESTAMP '2026-11-24 00:00:00' FROM generate_series(0, :last) AS i"),
                {"last": rows - 1, "run": BASE_RUN})
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


@contextmanager
def base_database(target: Target, shape: Shape, log: Callable[[str], None]) -> Iterator[str]:
    with target.fresh_database() as url:
        log(f"night - {target.label}: FINAL filled with {shape.final:,} rows (not timed)")
        started = time.perf_counter()
        fill_final(url, shape.final)
        log(f"night - {target.label}: filled in {time.perf_counter() - started:.0f} s")
        yield url


@contextmanager
def copy_of(target: Target, base: str) -> Iterator[str]:
    """A copy of the base database: a file copy (SQLite), a template (PostgreSQL)."""
    if target.backend == "sqlite":
        source = Path(str(make_url(base).database))
        copy = source.with_name(f"copy-{source.name}")
        shutil.copyfile(source, copy)
        # on disk before the clock starts: else whichever run commits first (the job's
        # BATCH_RUN row, the floor's load) also pays for writing back the copy's pages
        with open(copy, "rb+") as f:
            os.fsync(f.fileno())
        try:
            yield f"sqlite:///{copy}"
        finally:
            copy.unlink(missing_ok=True)
            Path(f"{copy}-journal").unlink(missing_ok=True)
        return
    assert target.pg_admin_url is not None
    admin = create_engine(target.pg_admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    name, template = f"{make_url(base).database}_copy", make_url(base).database
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        try:
            yield make_url(base).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def floor(url: str, prepared: Path) -> dict[str, float]:
    """Bulk load + one de-duplicating MERGE into the filled FINAL, timed here."""
    from benchmarks.floor import RUN_ID, _job, _load_postgres, _load_sqlite
    from pipeline.audit.schema import utc_now
    from pipeline.db.engine import make_engine
    from pipeline.db.merge import merge_params, merge_statement
    from pipeline.db.partitions import create_run_partition

    config, tables = _job()
    engine = make_engine(url)
    with engine.begin() as conn:  # the job's staging layout: the run's own partition
        create_run_partition(conn, tables.staging, RUN_ID)
    with open(prepared, "rb") as f:
        insert_sql, copy_sql, payloads = pickle.load(f)
    start = time.perf_counter()
    if engine.dialect.name == "sqlite":
        _load_sqlite(str(make_url(url).database), insert_sql, payloads)
    else:
        _load_postgres(engine, copy_sql, payloads)
    loaded = time.perf_counter()
    statement = merge_statement(tables.staging, tables.final, config.key_columns,
                                tables.business_columns, deduplicate=True)
    with engine.begin() as conn:
        conn.execute(statement, merge_params(RUN_ID, utc_now()))
    done = time.perf_counter()
    engine.dispose()
    return {"load": loaded - start, "merge": done - loaded, "floor": done - start}


def measure_one(target: Target, shape: Shape, path: Path, log: Callable[[str], None],
                reps: int = 1) -> dict[str, Any]:
    """The job and its floor, alternating on fresh copies of one filled base; medians.

    The job's memory is not sampled here (section 5 measures it): the sampler's CPU
    would be charged to the job and not to the floor, which runs in this process.
    """
    from benchmarks.floor import prepare

    prepared = path.with_suffix(f".{target.backend}.floor")
    if not prepared.exists():
        log(f"night - pre-parsing {path.name} for the {target.backend} floor (not timed)")
        prepare(path, target.backend, prepared)
    runs: list[dict[str, Any]] = []
    with base_database(target, shape, log) as base:
        for rep in range(1, reps + 1):
            with copy_of(target, base) as url, target.scratch_dir() as out:
                log(f"night - {target.label}: the job ({rep}/{reps})")
                job = measure(["-m", "benchmarks.runjob", "--input", str(path), "--db", url,
                               "--output-dir", str(out)], target.postmaster,
                              sample_memory=False)
                if job.report.get("exit_code") != 0:
                    raise SystemExit(f"night job failed: {job.report.get('message')}")
            with copy_of(target, base) as url:
                log(f"night - {target.label}: the floor ({rep}/{reps})")
                floor_s = floor(url, prepared)
            stages = job.report.get("stages", {})
            run_s = job.report["phases"]["run_job"]
            # after the last row reached staging: the repeat check, checks, MERGE, audit
            post_load = run_s - (stages.get("plan", 0) + stages.get("load", 0)) / 1000
            runs.append({"job_wall": job.wall, "job_run": run_s, "stages_ms": stages,
                         "post_load": post_load, "floor": floor_s,
                         "job_phases": job.report["phases"]})
    prepared.unlink()
    # ratios per repetition (a job and the floor run next to it), then their median: this
    # machine's speed drifts by a third from one minute to the next (section 1 does the same)
    typical = sorted(runs, key=lambda r: r["job_wall"])[len(runs) // 2]  # its stages shown
    return {"backend": target.backend, "final": shape.final, "night": shape.night,
            "reps": reps, "job_wall": median([r["job_wall"] for r in runs]),
            "stages_ms": typical["stages_ms"],
            "post_load": median([r["post_load"] for r in runs]),
            "floor": {k: median([r["floor"][k] for r in runs]) for k in runs[0]["floor"]},
            "job_over_floor": median([r["job_wall"] / r["floor"]["floor"] for r in runs]),
            "post_load_over_floor_merge": median([r["post_load"] / r["floor"]["merge"]
                                                  for r in runs]),
            "runs": runs}


def measure_all(targets: list[Target], shape: Shape, workdir: Path,
                log: Callable[[str], None], reps: int = 1) -> list[dict[str, Any]]:
    path = workdir / f"night_{shape.night}.dat"
    if not path.exists():
        log(f"night - writing tonight's file: {shape.night:,} records")
        night_file(path, shape)
    return [measure_one(t, shape, path, log, reps) for t in targets]


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def render(rows: list[dict[str, Any]]) -> str:
    from benchmarks.report import table, verdict

    lines = []
    for r in rows:
        s = r["stages_ms"]
        lines.append([
            "SQLite" if r["backend"] == "sqlite" else "PostgreSQL",
            f"{r['final']:,} + {r['night']:,}", f"{r['job_wall']:.1f}",
            f"{r['floor']['floor']:.1f}",
            f"{r['job_over_floor']:.2f}x {verdict(r['job_over_floor'], JOB_GOAL)}",
            f"{s.get('load', 0) / 1000:.1f}", f"{r['post_load']:.1f}",
            f"{r['floor']['merge']:.1f}",
            f"{r['post_load_over_floor_merge']:.2f}x "
            f"{verdict(r['post_load_over_floor_merge'], POST_LOAD_GOAL)}",
            ", ".join(f"{k} {v / 1000:.1f}" for k, v in s.items())])
    return ("## A real night: FINAL already full, 30% updates, 0.1% repeated keys\n\n"
            "The job against its floor on copies of the same database (bulk load + one "
            "de-duplicating MERGE into the same FINAL), alternating, "
            f"{_runs(rows[0]['reps'] if rows else 0)} each: medians of the times and of the "
            "ratios of each job run to the floor run beside it; the stages are those of the "
            "median job run. Post-load: the job's time after the "
            f"last row reached staging. Goals: job/floor <= {JOB_GOAL}x, post-load / floor "
            f"MERGE <= {POST_LOAD_GOAL}x.\n\n"
            + table(["database", "FINAL + night", "job s", "floor s", "job/floor", "load s",
                     "post-load s", "floor MERGE s", "post-load/floor MERGE", "stages s"],
                    lines))


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from benchmarks.__main__ import DEFAULT_PG, log
    from benchmarks.harness import pg_reachable, postmaster_pid

    parser = argparse.ArgumentParser(prog="benchmarks.night")
    parser.add_argument("--final", type=int, default=QUICK.final)
    parser.add_argument("--night", type=int, default=QUICK.night)
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--reps", type=int, default=5, help="job and floor runs, alternating")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-night-"))
    try:
        targets = [Target("sqlite", workdir)]
        if not args.no_pg and pg_reachable(args.pg) is None:
            targets.append(Target("postgresql", workdir, args.pg, postmaster_pid()))
        rows = measure_all(targets, Shape(args.final, args.night), workdir, log, args.reps)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(render(rows))
    print(json.dumps(rows, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
