"""A real night: FINAL already full; tonight's file updates keys drawn at random and
repeats some.

``python -m benchmarks --sections night`` (or ``python -m benchmarks.night``): FINAL holds
``final`` rows (quick 4M, full 40M) before the run; tonight's file has ``night`` records
(quick 1M, full 10M), no rejects:

- 30% of them update keys of FINAL drawn at random, with replacement, as a real feed's
  updates fall: random draws repeat keys (n draws over N keys repeat about n**2/2N of
  them: 300k over 4M, ~11k, i.e. ~1.1% of the night's records repeat a key before any
  repeat is added on purpose);
- ``--repeats`` (default 0.1%, 1% and 10%): extra records that repeat the key of an
  earlier record of the same file, as a share of the night's records (an account
  updated twice in a night); the later record must win. The share of records that
  really repeat a key (records less distinct keys: both kinds) is reported beside it.

One FINAL is filled per database and each share of repeats is measured on copies of it.
The job and its floor run alternately (which goes first alternates too), each on a fresh
copy of that database, ``reps`` times (default 5; 1 for the full size in ``python -m
benchmarks --full``); the ratio of each job run to the floor run beside it, and the
median of those ratios, is reported (this machine's speed drifts by a third from one
minute to the next: a ratio is only taken between neighbours):

- the job: ``benchmarks.runjob`` (the shipped job, its phase timers and stage clock), and
  its own stage times as BATCH_RUN recorded them (PLAN_MS .. AUDIT_MS);
- the floor: the file pre-parsed by the job's own parser (not timed), then the fastest
  bulk load into the same staging table (SQLite: stdlib ``executemany`` of the job's
  many-rows-a-statement INSERT in one transaction; PostgreSQL: one ``COPY``) and one
  de-duplicating MERGE (the job's own ``merge_statement(deduplicate=True)``) into the
  same FINAL with the same indexes.
  The floor knows nothing of the file, so its MERGE ranks every row to keep each key's
  last record; the job's MERGE leaves out the records its key hashes showed to be
  superseded instead (pipeline.reconcile).

Reported: job/floor (goal <= 1.3x) and the job's post-load time (everything after the
last row reached staging: checks, MERGE, audit) over the floor's MERGE alone (goal
<= 1.5x); a miss is marked as a miss. ``python -m benchmarks.night`` writes its tables and
figures to ``benchmarks/results/night-<size>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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
REPEATS = (0.001, 0.01, 0.1)  # extra records repeating an earlier key, shares of the night
JOB_GOAL, POST_LOAD_GOAL = 1.3, 1.5
BASE_RUN = "20261124T000000-base0000"
STAGES = ("plan", "load", "checks", "merge", "audit")  # BATCH_RUN's <STAGE>_MS columns
CHUNK = 1 << 20  # records built at a time when writing the file: ~100 MB of numpy


@dataclass(frozen=True)
class Shape:
    final: int
    night: int


QUICK, FULL = Shape(4_000_000, 1_000_000), Shape(40_000_000, 10_000_000)


def key(i: int) -> str:
    return f"T{i:015d}"


def night_keys(shape: Shape, repeats: float, seed: int = 9) -> np.ndarray:
    """Tonight's keys (numbers: key ``i`` is ``T`` + ``i`` in 15 digits), in file order.

    FINAL holds keys 0 .. final-1. 30% of the records draw one of them at random, with
    replacement (so some draws repeat a key); ``repeats`` of them repeat the key of an
    earlier record of the file on purpose; the rest are new keys, after FINAL's.
    """
    if not 0 <= repeats <= 0.5:
        raise ValueError(f"repeats is a share of the night's records, 0 to 0.5: {repeats}")
    rng = np.random.default_rng(seed)
    n = shape.night
    extra = round(n * repeats)
    updates = round(n * UPDATES) if shape.final else 0
    keys = np.concatenate([rng.integers(0, shape.final, updates),
                           np.arange(shape.final, shape.final + n - updates - extra)])
    rng.shuffle(keys)
    if extra:
        # a repeat is a later record of a key seen earlier in the file: inserted before
        # position ``at``, it copies the key of a record before that position
        at = np.sort(rng.choice(np.arange(1, len(keys)), extra, replace=False))
        keys = np.insert(keys, at, keys[(at * rng.random(extra)).astype(np.int64)])
    return keys


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded ASCII digits of non-negative ints, an (n, width) uint8 array."""
    out = np.empty((len(values), width), np.uint8)
    rest = values.astype(np.int64)
    for col in range(width - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        out[:, col] = digit + ord("0")
    return out


def _template() -> np.ndarray:
    """A detail line with every constant column filled (key, sign, amount left blank)."""
    line = f"D{'':16}0000000001{20261124} {'':13}EUR{'night':<40}{'':8}\n"
    assert len(line) == 101
    return np.frombuffer(line.encode("ascii"), np.uint8)


def night_file(path: Path, shape: Shape, repeats: float = REPEATS[0],
               seed: int = 9) -> dict[str, int]:
    """Write tonight's file (numpy, a chunk at a time); returns what it holds."""
    keys = night_keys(shape, repeats, seed)
    amounts = np.random.default_rng(seed + 1).integers(-9_999_999, 99_999_999, len(keys))
    template, total = _template(), 0
    with open(path, "wb") as out:
        out.write(f"H20261125{'NIGHT':<20}{'':71}\n".encode("ascii"))
        for start in range(0, len(keys), CHUNK):
            k, a = keys[start:start + CHUNK], amounts[start:start + CHUNK]
            lines = np.tile(template, (len(k), 1))
            lines[:, 1] = ord("T")
            lines[:, 2:17] = _digits(k, 15)
            lines[:, 35] = np.where(a < 0, ord("-"), ord("+"))
            lines[:, 36:49] = _digits(np.abs(a), 13)
            out.write(lines.tobytes())
            total += int(a.sum())  # at most 1M x 1e8: far inside int64
        sign = "-" if total < 0 else "+"
        out.write(f"T{len(keys):010d}{sign}{abs(total):018d}{'':70}\n".encode("ascii"))
    distinct = len(np.unique(keys))
    return {"records": len(keys), "updates": int(np.count_nonzero(keys < shape.final)),
            "extra_repeats": round(shape.night * repeats), "distinct_keys": distinct,
            "repeating_records": len(keys) - distinct}


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


def batch_run_stages(url: str) -> dict[str, int]:
    """The job's own stage times, as BATCH_RUN recorded them (milliseconds)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(text(
                f"SELECT {', '.join(f'{s}_ms' for s in STAGES)} FROM batch_run "
                "WHERE run_id <> :base ORDER BY start_ts DESC"), {"base": BASE_RUN}).first()
    finally:
        engine.dispose()
    return {} if row is None else {s: int(v) for s, v in zip(STAGES, row, strict=True)
                                   if v is not None}


def measure_one(target: Target, base: str, night: dict[str, Any], path: Path,
                log: Callable[[str], None], reps: int = 1) -> dict[str, Any]:
    """The job and its floor, alternating on fresh copies of one filled base; medians.

    The job's memory is not sampled here (section 5 measures it): the sampler's CPU
    would be charged to the job and not to the floor, which runs in this process.
    """
    from benchmarks.floor import prepare

    prepared = path.with_suffix(f".{target.backend}.floor")
    if not prepared.exists():
        log(f"night - pre-parsing {path.name} for the {target.backend} floor (not timed)")
        prepare(path, target.backend, prepared)
    share = f"{night['repeats']:.1%} repeats"
    runs: list[dict[str, Any]] = []

    def job(rep: int) -> dict[str, Any]:
        with copy_of(target, base) as url, target.scratch_dir() as out:
            log(f"night - {target.label}, {share}: the job ({rep}/{reps})")
            m = measure(["-m", "benchmarks.runjob", "--input", str(path), "--db", url,
                         "--output-dir", str(out)], target.postmaster, sample_memory=False)
            if m.report.get("exit_code") != 0:
                raise SystemExit(f"night job failed: {m.report.get('message')}")
            stages = batch_run_stages(url)
        run_s = m.report["phases"]["run_job"]
        # after the last row reached staging: the repeat check, checks, MERGE, audit
        post_load = run_s - (stages.get("plan", 0) + stages.get("load", 0)) / 1000
        return {"job_wall": m.wall, "job_run": run_s, "stages_ms": stages,
                "post_load": post_load, "job_phases": m.report["phases"]}

    def the_floor(rep: int) -> dict[str, float]:
        with copy_of(target, base) as url:
            log(f"night - {target.label}, {share}: the floor ({rep}/{reps})")
            return floor(url, prepared)

    try:
        for rep in range(1, reps + 1):
            # which one goes first alternates: neither always runs on the warmer machine
            if rep % 2:
                run = job(rep)
                run["floor"] = the_floor(rep)
            else:
                floor_s = the_floor(rep)
                run = {**job(rep), "floor": floor_s}
            run["ratio"] = run["job_wall"] / run["floor"]["floor"]
            log(f"night - {target.label}, {share}: job {run['job_wall']:.1f} s, floor "
                f"{run['floor']['floor']:.1f} s: {run['ratio']:.2f}x")
            runs.append(run)
    finally:
        prepared.unlink(missing_ok=True)
    # ratios per repetition (a job and the floor run next to it), then their median: this
    # machine's speed drifts by a third from one minute to the next (section 1 does the same)
    typical = sorted(runs, key=lambda r: r["job_wall"])[len(runs) // 2]  # its stages shown
    return {"backend": target.backend, **night, "reps": reps,
            "job_wall": median([r["job_wall"] for r in runs]),
            "stages_ms": typical["stages_ms"],
            "post_load": median([r["post_load"] for r in runs]),
            "floor": {k: median([r["floor"][k] for r in runs]) for k in runs[0]["floor"]},
            "job_over_floor": median([r["ratio"] for r in runs]),
            "post_load_over_floor_merge": median([r["post_load"] / r["floor"]["merge"]
                                                  for r in runs]),
            "runs": runs}


def measure_all(targets: list[Target], shape: Shape, workdir: Path,
                log: Callable[[str], None], reps: int = 1,
                repeats: Sequence[float] = REPEATS) -> list[dict[str, Any]]:
    """Every share of ``repeats`` on every target; one FINAL filled per target."""
    nights: list[tuple[dict[str, Any], Path]] = []
    for share in repeats:
        path = workdir / f"night_{shape.night}_{share:g}.dat"
        log(f"night - writing tonight's file: {shape.night:,} records, {share:.1%} "
            "extra repeats")
        held = night_file(path, shape, share)
        log(f"night - {held['repeating_records']:,} records repeat a key "
            f"({held['repeating_records'] / held['records']:.2%})")
        nights.append(({"final": shape.final, "night": shape.night, "repeats": share,
                        **held}, path))
    rows = []
    for target in targets:
        with base_database(target, shape, log) as base:
            rows += [measure_one(target, base, night, path, log, reps)
                     for night, path in nights]
    for _, path in nights:
        path.unlink(missing_ok=True)
    return rows


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _stages(ms: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 1000:.1f}" for k, v in ms.items())


def render(rows: list[dict[str, Any]]) -> str:
    from benchmarks.report import table, verdict

    lines, each = [], []
    for r in rows:
        name = "SQLite" if r["backend"] == "sqlite" else "PostgreSQL"
        repeating = r["repeating_records"] / r["records"]
        lines.append([
            name, f"{r['final']:,} + {r['night']:,}",
            f"{r['repeats']:.1%} / {repeating:.2%}", f"{r['job_wall']:.1f}",
            f"{r['floor']['floor']:.1f}",
            f"{r['job_over_floor']:.2f}x {verdict(r['job_over_floor'], JOB_GOAL)}",
            f"{r['post_load']:.1f}", f"{r['floor']['merge']:.1f}",
            f"{r['post_load_over_floor_merge']:.2f}x "
            f"{verdict(r['post_load_over_floor_merge'], POST_LOAD_GOAL)}",
            _stages(r["stages_ms"])])
        for i, run in enumerate(r["runs"], 1):
            each.append([name, f"{r['repeats']:.1%}", str(i), f"{run['job_wall']:.1f}",
                         f"{run['floor']['floor']:.1f}", f"{run['ratio']:.2f}x",
                         f"{run['floor']['load']:.1f}", f"{run['floor']['merge']:.1f}",
                         _stages(run["stages_ms"])])
    return ("## A real night: FINAL already full, 30% random updates, extra repeated keys\n\n"
            "The job against its floor on copies of the same database (bulk load + one "
            "de-duplicating MERGE into the same FINAL), alternating, "
            f"{_runs(rows[0]['reps'] if rows else 0)} each: medians of the times and of the "
            "ratios of each job run to the floor run beside it; the stages (BATCH_RUN's "
            "PLAN_MS .. AUDIT_MS, seconds) are those of the median job run. Repeats: the "
            "extra records that repeat an earlier key / all records that repeat a key "
            "(the random updates repeat some too). Post-load: the job's time after the "
            f"last row reached staging. Goals: job/floor <= {JOB_GOAL}x, post-load / floor "
            f"MERGE <= {POST_LOAD_GOAL}x.\n\n"
            + table(["database", "FINAL + night", "repeats", "job s", "floor s", "job/floor",
                     "post-load s", "floor MERGE s", "post-load/floor MERGE",
                     "job stages s"], lines)
            + "\n\nEach repetition: the job, the floor beside it, their ratio, the floor's "
            "load and MERGE, the job's stages.\n\n"
            + table(["database", "repeats", "rep", "job s", "floor s", "job/floor",
                     "floor load s", "floor MERGE s", "job stages s"], each))


def _revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _size_name(shape: Shape) -> str:
    return {QUICK: "quick", FULL: "full"}.get(shape, f"{shape.final}+{shape.night}")


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from benchmarks.__main__ import DEFAULT_PG, RESULTS, log
    from benchmarks.harness import pg_reachable, postmaster_pid
    from benchmarks.machine import load_average

    parser = argparse.ArgumentParser(prog="benchmarks.night")
    parser.add_argument("--final", type=int, default=QUICK.final)
    parser.add_argument("--night", type=int, default=QUICK.night)
    parser.add_argument("--repeats", default=",".join(f"{r:g}" for r in REPEATS),
                        help="extra records repeating an earlier key, as shares of the "
                        "night, comma-separated: each is measured (default %(default)s)")
    parser.add_argument("--pg", "--pg-url", dest="pg", default=DEFAULT_PG,
                        help="PostgreSQL admin URL (fresh databases are created there)")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--reps", type=int, default=5, help="job and floor runs, alternating")
    parser.add_argument("--results", help="name of the results files (default: "
                        "night-quick, night-full, or night-FINAL+NIGHT)")
    args = parser.parse_args(argv)
    repeats = [float(r) for r in args.repeats.split(",") if r.strip()]
    shape = Shape(args.final, args.night)
    started, load_start = dt.datetime.now(dt.UTC), load_average()
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-night-"))
    try:
        targets = [] if args.no_sqlite else [Target("sqlite", workdir)]
        if not args.no_pg and pg_reachable(args.pg) is None:
            targets.append(Target("postgresql", workdir, args.pg, postmaster_pid()))
        rows = measure_all(targets, shape, workdir, log, args.reps, repeats)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    command = " ".join(["python -m benchmarks.night", *(argv if argv is not None
                                                        else sys.argv[1:])])
    head = (f"# Night benchmark ({_size_name(shape)}: FINAL {shape.final:,} + night "
            f"{shape.night:,}), {started:%Y-%m-%d %H:%M} UTC\n\n"
            f"Command: `{command}` at {_revision()}; load average {load_start} at the start, "
            f"{load_average()} at the end.\n\n")
    name = args.results or f"night-{_size_name(shape)}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(head + render(rows) + "\n", encoding="utf-8")
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1, default=str) + "\n",
                                          encoding="utf-8")
    print(head + render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
