"""``python -m benchmarks --quick`` (a few minutes) or ``--full``: measure, print, write.

Writes ``benchmarks/results/latest.md`` (the tables) and ``latest.json`` (every figure),
the same as ``MODE.md``/``MODE.json`` (quick, full or custom) so a quick run does not
overwrite the last full one, and the plots ``scaling-MODE.png``, ``comparison-MODE.png``.
PostgreSQL runs against ``--pg`` (default: the BENCH_PG_URL variable, else
``postgresql+psycopg://root@127.0.0.1:5432/postgres``), in a fresh database per run; it
is skipped, and said so, when the server does not answer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import bus, compare, machine, mainframe, night, report, scaling
from benchmarks.harness import Target, measure, pg_reachable, postmaster_pid

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PG = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
SECTIONS = ("bus", "scaling", "compare", "mainframe", "night")


@dataclass(frozen=True)
class Plan:
    bus_records: int
    bus_reps: int
    scaling_records: int
    sizes: tuple[int, int]  # floor sizes; the peers run at the first, recon is judged at 1M
    reps: int
    pg_sizes: tuple[int, ...]  # PostgreSQL is ~2x the CPU of SQLite per run


# quick: ~5 CPU-minutes, so a few minutes on an idle 1-core machine
QUICK = Plan(bus_records=1_000_000, bus_reps=15, scaling_records=100_000,
             sizes=(200_000, 1_000_000), reps=3, pg_sizes=(200_000,))
FULL = Plan(bus_records=5_000_000, bus_reps=21, scaling_records=1_000_000,
            sizes=(1_000_000, 10_000_000), reps=3, pg_sizes=(1_000_000, 10_000_000))


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def input_file(workdir: Path, records: int) -> Path:
    """A clean input (no rejects, no duplicate keys), generated once per run."""
    from pipeline.generate import generate_file

    path = workdir / f"transactions_{records}.dat"
    if not path.exists():
        log(f"generating {records:,} records")
        generate_file(path, records, seed=42)
    return path


def prepared_rows(workdir: Path, path: Path, backend: str) -> Path:
    out = path.with_suffix(f".{backend}.floor")
    if not out.exists():
        log(f"pre-parsing {path.name} for the {backend} floor (not timed)")
        measure(["-m", "benchmarks.floor", "--prepare", "--input", str(path),
                 "--backend", backend, "--out", str(out)])
    return out


def targets(args: argparse.Namespace, workdir: Path, skipped: list[str]) -> list[Target]:
    found = [Target("sqlite", workdir)]
    if args.no_pg:
        skipped.append("PostgreSQL (--no-pg)")
        return found
    why = pg_reachable(args.pg)
    if why:
        skipped.append(f"PostgreSQL: {args.pg} does not answer: {why}")
        log(skipped[-1])
        return found
    found.append(Target("postgresql", workdir, args.pg, postmaster_pid()))
    return found


def run_compare(plan: Plan, reps: int, tgts: list[Target], workdir: Path) -> list[Any]:
    groups = []
    for records in plan.sizes:
        path = input_file(workdir, records)
        for t in tgts:
            if t.backend == "postgresql" and records not in plan.pg_sizes:
                continue
            prepared = prepared_rows(workdir, path, t.backend)
            groups.append(compare.measure_group(t, records, path, prepared,
                                                peers=records == plan.sizes[0], reps=reps,
                                                progress=log))
            prepared.unlink()
    return groups


def memory_growth(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for backend in dict.fromkeys(g["backend"] for g in groups):
        mine = sorted((g for g in groups if g["backend"] == backend), key=lambda g: g["records"])
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        out.append({"backend": backend,
                    "sizes": f"{small['records']:,} -> {large['records']:,}",
                    "small": small["job"]["peak_pss"], "large": large["job"]["peak_pss"],
                    "small_rss": small["job"]["peak_rss"], "large_rss": large["job"]["peak_rss"],
                    "ratio": large["job"]["peak_pss"] / small["job"]["peak_pss"]})
    return out


def mode_of(args: argparse.Namespace) -> str:
    if args.sizes or args.sections or args.reps or args.no_pg:
        return "custom"
    return "full" if args.full else "quick"


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    plan = FULL if args.full else QUICK
    if args.sizes:
        small, large = (int(x) for x in args.sizes.split(","))
        plan = replace(plan, sizes=(small, large), scaling_records=small,
                       pg_sizes=(small, large))
    reps = args.reps or plan.reps
    sections = set(args.sections.split(",")) if args.sections else set(SECTIONS)
    skipped: list[str] = []
    started = time.perf_counter()
    result: dict[str, Any] = {
        "mode": mode_of(args), "command": " ".join(["python -m benchmarks",
                                                                       *sys.argv[1:]]),
        "started": f"{dt.datetime.now():%Y-%m-%d %H:%M}", "load_start": machine.load_average(),
        "recon_size": 1_000_000 if 1_000_000 in plan.sizes else plan.sizes[-1],
        "skipped": skipped,
    }
    tgts = targets(args, workdir, skipped)
    left_out = [n for n in plan.sizes if n not in plan.pg_sizes]
    if len(tgts) > 1 and left_out and "compare" in sections:
        skipped.append(f"PostgreSQL floor comparison at {left_out[0]:,} records and PostgreSQL "
                       "processor scaling (quick mode; --full runs them)")
    result["machine"] = machine.describe(args.pg if len(tgts) > 1 else None)
    if "bus" in sections:
        log("bus - counting cost per record")
        result["bus"] = bus.measure(plan.bus_records, plan.bus_reps)
    if "scaling" in sections:
        path = input_file(workdir, plan.scaling_records)
        result["scaling"] = []
        for s in scaling.series_for(tgts, args.full):
            rows = scaling.measure_series(s, path, plan.scaling_records, reps, log)
            result["scaling"].append({"name": s.name, "records": plan.scaling_records,
                                      "reps": reps, "rows": rows})
        scaling.plot(result["scaling"], RESULTS / f"scaling-{result['mode']}.png")
    if "compare" in sections:
        result["compare"] = run_compare(plan, reps, tgts, workdir)
        result["memory"] = memory_growth(result["compare"])
        compare.plot(result["compare"], RESULTS / f"comparison-{result['mode']}.png")
    if "mainframe" in sections:
        log("mainframe - decoding EBCDIC records, the EBCDIC job vs the text job")
        result["mainframe"] = mainframe.measure(plan.bus_records, plan.sizes[0], reps, workdir)
    if "night" in sections:
        log("night - FINAL already full, 30% random updates, 0.1%, 1% and 10% extra "
            "repeats: the job vs its floor")
        # a full-size night takes ~4 min a run on each database: once there; the quick
        # one ~25 s, and its ratio drifts with the machine: 5 alternating repetitions
        # (each share of repeats is measured: 3 x 5 job and floor pairs per database)
        result["night"] = night.measure_all(tgts, night.FULL if args.full else night.QUICK,
                                            workdir, log, 1 if args.full else max(reps, 5))
    result["load_end"] = machine.load_average()
    result["elapsed"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few minutes (the default)")
    mode.add_argument("--full", action="store_true", help="1M and 10M records; long")
    parser.add_argument("--reps", type=int, help="repetitions per comparison (default 3)")
    parser.add_argument("--sizes", help="SMALL,LARGE record counts instead of the mode's "
                        "(scaling runs at SMALL)")
    parser.add_argument("--sections", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG),
                        help="PostgreSQL admin URL (fresh databases are created there)")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--workdir", type=Path, help="for inputs and databases (default: a "
                        "temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report.render(result)
    figures = json.dumps(result, indent=1, default=str) + "\n"
    for name in ("latest", result["mode"]):
        (RESULTS / f"{name}.md").write_text(text, encoding="utf-8")
        (RESULTS / f"{name}.json").write_text(figures, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
