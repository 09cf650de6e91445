"""Worker scaling: records/s and CPU-seconds per record as processors/writers are added.

On a machine whose vCPUs deliver one core, records/s cannot grow; what must hold is
that adding workers does not add work: CPU-seconds per record (all the job's processes,
parent and workers; on PostgreSQL the server's too, shown apart) stays flat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import Measurement, Target, alternate, med, run_job

PROCESSORS = [1, 2, 4, 8]
WRITERS = [1, 2, 4]


@dataclass(frozen=True)
class Series:
    name: str  # e.g. "SQLite, processors"
    target: Target
    knob: str  # "processors" or "writers"
    counts: list[int]


def series_for(targets: list[Target], full: bool) -> list[Series]:
    out = []
    for t in targets:
        if t.backend == "sqlite" or full:
            out.append(Series(f"{t.label}: processors (writers: default)", t, "processors",
                              PROCESSORS))
        if t.backend == "postgresql":
            out.append(Series(f"{t.label}: writers (2 processors)", t, "writers", WRITERS))
    return out


def measure_series(s: Series, path: Path, records: int, reps: int,
                   progress: Callable[[str], None]) -> list[dict[str, Any]]:
    def variant(n: int) -> Callable[[], Measurement]:
        if s.knob == "processors":
            return lambda: run_job(s.target, path, processors=n)
        return lambda: run_job(s.target, path, processors=2, writers=n)

    progress(f"scaling - {s.name}, {records:,} records")
    runs = alternate({str(n): variant(n) for n in s.counts}, reps, progress)
    rows = []
    for n in s.counts:
        ms = runs[str(n)]
        rows.append({
            "workers": n,
            "wall": med(ms, lambda m: m.wall),
            "records_per_s": records / med(ms, lambda m: m.wall),
            "cpu_us_per_record": med(ms, lambda m: m.cpu) / records * 1e6,
            "total_cpu_us_per_record": (med(ms, lambda m: m.total_cpu) / records * 1e6
                                        if ms[0].server_cpu is not None else None),
        })
    base = rows[0]["cpu_us_per_record"]
    for row in rows:
        row["cpu_ratio"] = row["cpu_us_per_record"] / base
    return rows


def plot(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        x = [row["workers"] for row in r["rows"]]
        (line,) = rate.plot(x, [row["records_per_s"] / 1e3 for row in r["rows"]], "o-",
                            label=r["name"])
        cpu.plot(x, [row["cpu_us_per_record"] for row in r["rows"]], "o-",
                 color=line.get_color(), label=f"{r['name']} - job processes")
        if r["rows"][0]["total_cpu_us_per_record"] is not None:
            cpu.plot(x, [row["total_cpu_us_per_record"] for row in r["rows"]], "s--",
                     color=line.get_color(), label=f"{r['name']} - job + server")
    for ax, title in ((rate, "throughput (k records/s)"),
                      (cpu, "CPU µs per record (all processes)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        ax.set_xlabel("workers")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    rate.legend(fontsize=7)
    cpu.legend(fontsize=7)
    fig.suptitle(f"Worker scaling, {results[0]['records']:,} records (median of "
                 f"{results[0]['reps']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
