"""The job against its floor and its peers, and where its wall time goes.

One group per database and input size, measured alternating in the same run: the job
(end to end, as a user runs it), the floor (bare load + bare MERGE of the same rows,
``benchmarks.floor``) and, at the peers' size, the two peers (``benchmarks.peers``).
The job's runs also give the reconciliation's share of the wall time (phase timers of
``benchmarks.runjob``) and the peak memory of its process tree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Measurement, Target, alternate, med, phase, run_job, run_module

CHECK_PHASES = ("checks_before_merge", "checks_duplicates", "checks_after_merge")
MERGE_PHASES = ("merge", "merge_commit")
JOB_PHASES = {
    "plan": ("plan",),  # SHA-256 of the input + split into ranges
    "load": ("load",),  # processors + writers: parse, encode, stage
    "checks": CHECK_PHASES,
    "merge": MERGE_PHASES,
    "audit": ("audit", "ddl"),
}


def _sum(m: Measurement, names: tuple[str, ...]) -> float:
    return sum(phase(m, n) for n in names)


def job_summary(ms: list[Measurement], records: int) -> dict[str, Any]:
    wall = med(ms, lambda m: m.wall)
    phases = {k: med(ms, lambda m, names=names: _sum(m, names)) for k, names in
              JOB_PHASES.items()}
    phases["startup+other"] = wall - sum(phases.values())
    return {
        "wall": wall,
        "run_job": med(ms, lambda m: phase(m, "run_job")),
        "cpu": med(ms, lambda m: m.cpu),
        "server_cpu": med(ms, lambda m: m.server_cpu or 0.0) if ms[0].server_cpu is not None
        else None,
        "peak_rss": med(ms, lambda m: float(m.peak_rss)),
        "peak_pss": med(ms, lambda m: float(m.peak_pss)),
        "phases": phases,
        "check_share": med(ms, lambda m: _sum(m, CHECK_PHASES) / m.wall),
        "merge_share": med(ms, lambda m: _sum(m, MERGE_PHASES) / m.wall),
        "records_per_s": records / wall,
        "walls": [m.wall for m in ms],
        "raw_phases": {k: med(ms, lambda m, k=k: phase(m, k))
                       for k in ms[0].report.get("phases", {})},
    }


def other_summary(ms: list[Measurement], timed: str | None = None) -> dict[str, Any]:
    out = {
        "wall": med(ms, lambda m: m.wall),
        "cpu": med(ms, lambda m: m.cpu),
        "server_cpu": med(ms, lambda m: m.server_cpu or 0.0) if ms[0].server_cpu is not None
        else None,
        "peak_rss": med(ms, lambda m: float(m.peak_rss)),
        "peak_pss": med(ms, lambda m: float(m.peak_pss)),
        "walls": [m.wall for m in ms],
    }
    if timed:
        out["timed"] = med(ms, lambda m: phase(m, timed))
        # CPU of the timed part only: the client's, plus the server's for the whole run
        # (nearly all of it is the load and the MERGE)
        out["timed_cpu"] = med(ms, lambda m: phase(m, "floor_cpu") + (m.server_cpu or 0.0))
        out["phases"] = {k: med(ms, lambda m, k=k: phase(m, k)) for k in ("load", "merge")}
    return out


def measure_group(target: Target, records: int, path: Path, prepared: Path, peers: bool,
                  reps: int, progress: Callable[[str], None]) -> dict[str, Any]:
    variants: dict[str, Callable[[], Measurement]] = {
        "job": lambda: run_job(target, path),
        "floor": lambda: run_module(target, "benchmarks.floor", prepared),
    }
    if peers:
        variants["loop peer"] = lambda: run_module(target, "benchmarks.peers", path, "loop")
        variants["pandas peer"] = lambda: run_module(target, "benchmarks.peers", path,
                                                     "pandas")
    progress(f"compare - {target.label}, {records:,} records: {', '.join(variants)}")
    runs = alternate(variants, reps, progress)
    job = job_summary(runs["job"], records)
    floor = other_summary(runs["floor"], timed="floor")
    group: dict[str, Any] = {
        "backend": target.label, "records": records, "reps": reps, "job": job,
        "floor": floor, "floor_ratio": job["wall"] / floor["timed"],
        "floor_cpu_ratio": (job["cpu"] + (job["server_cpu"] or 0.0)) / floor["timed_cpu"],
        "floor_ratio_in_process": job["run_job"] / floor["timed"],
    }
    if peers:
        group["peers"] = {name: other_summary(runs[name]) for name in ("loop peer",
                                                                       "pandas peer")}
        for p in group["peers"].values():
            p["ratio"] = p["wall"] / job["wall"]
            p["cpu_ratio"] = (p["cpu"] + (p["server_cpu"] or 0.0)) / (
                job["cpu"] + (job["server_cpu"] or 0.0))
    return group


def plot(groups: list[dict[str, Any]], out: Path) -> None:
    """Wall time of each contender, relative to the job, per database and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{g['backend']}\n{g['records']:,}" for g in groups]
    contenders = ["floor", "job", "loop peer", "pandas peer"]
    fig, ax = plt.subplots(figsize=(max(6, 1.9 * len(groups)), 4.2))
    width = 0.2
    for i, name in enumerate(contenders):
        values = []
        for g in groups:
            if name == "job":
                values.append(1.0)
            elif name == "floor":
                values.append(g["floor"]["timed"] / g["job"]["wall"])
            else:
                values.append(g.get("peers", {}).get(name, {}).get("ratio", 0.0))
        xs = [k + (i - 1.5) * width for k in range(len(groups))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, [f"{v:.2f}" if v else "" for v in values], fontsize=7)
    ax.set_xticks(range(len(groups)), labels, fontsize=8)
    ax.set_ylabel("wall time / the job's wall time")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_title("Job vs floor (bare load + MERGE) and peers; lower is faster", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
