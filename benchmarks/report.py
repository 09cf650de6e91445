"""The results as Markdown: printed, and written to ``benchmarks/results/latest.md``."""

from __future__ import annotations

from typing import Any

MB = 2**20


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value: float, limit: float, lower_is_better: bool = True) -> str:
    ok = value <= limit if lower_is_better else value > limit
    if ok:
        return "met"
    miss = value / limit - 1 if lower_is_better else limit / value - 1
    return f"**missed** by {miss:.0%}"


def _s(x: float) -> str:
    return f"{x:.2f}"


def machine_section(r: dict[str, Any]) -> str:
    m = r["machine"]
    rows = [[k, v] for k, v in m.items()]
    rows.append(["load average at start / end", f"{r['load_start']} / {r['load_end']}"])
    return "## Machine\n\n" + table(["", ""], rows)


def summary_section(r: dict[str, Any]) -> str:
    rows = []
    if "bus" in r:
        b = r["bus"]
        rows.append(["1. bus counting cost vs local int", f"{b['job_ratio']:.3f}x", "<= 1.1x",
                     verdict(b["job_ratio"], 1.1)])
    for s in r.get("scaling", []):
        last = s["rows"][-1]
        rows.append([f"2. CPU/record at {last['workers']} vs 1, {s['name']}",
                     f"{last['cpu_ratio']:.2f}x", "<= 1.15x", verdict(last["cpu_ratio"], 1.15)])
    for g in r.get("compare", []):
        rows.append([f"3. job / floor, {g['backend']}, {g['records']:,}",
                     f"{g['floor_ratio']:.2f}x", "<= 1.3x", verdict(g["floor_ratio"], 1.3)])
    for g in r.get("compare", []):
        for name, p in g.get("peers", {}).items():
            rows.append([f"4. {name} / job, {g['backend']}, {g['records']:,}",
                         f"{p['ratio']:.2f}x", "> 1x (job faster)",
                         verdict(p["ratio"], 1.0, lower_is_better=False)])
    for g in r.get("compare", []):
        if g["records"] == r["recon_size"]:
            share = g["job"]["check_share"]
            rows.append([f"5. reconciliation checks share, {g['backend']}, {g['records']:,}",
                         f"{share:.1%}", "<= 5%", verdict(share, 0.05)])
    for mem in r.get("memory", []):
        rows.append([f"5. peak memory {mem['sizes']}, {mem['backend']}",
                     f"{mem['ratio']:.2f}x", "flat (<= 1.2x)", verdict(mem["ratio"], 1.2)])
    return "## Targets\n\n" + table(["target", "measured", "goal", "verdict"], rows)


def bus_section(b: dict[str, Any]) -> str:
    rows = [[x["method"], f"{x['ns_per_record']:.1f}", f"{x['ratio']:.2f}x",
             f"{x['spread'][0]:.2f}-{x['spread'][1]:.2f}"] for x in b["rows"]]
    return (f"## 1. Metrics bus: counting cost per record\n\n"
            f"Forked worker, {b['records']:,} records per repetition (fewer for the slow "
            f"methods), worker CPU time, median of {b['reps']} alternating repetitions, "
            f"each divided by the floor of the same repetition.\n\n"
            + table(["method", "CPU ns/record", "x floor", "range"], rows)
            + f"\n\nOne `add_batch` call alone costs {b['add_batch_ns'] / 1000:.1f} us of CPU: "
              f"{b['add_batch_ns'] / 10_000:.2f} ns per record at 10k records per batch, i.e. "
              f"{b['derived_ratio']:.3f}x the floor measured here - the direct comparison "
              f"above differs from 1 mostly by noise.")


def scaling_section(results: list[dict[str, Any]], mode: str) -> str:
    out = [f"## 2. Worker scaling\n\n{results[0]['records']:,} records, end-to-end runs in a "
           f"fresh process and database each, median of {results[0]['reps']}. CPU = user + "
           f"system of the job's processes (getrusage of the waited-for children); "
           f"'+ server' adds the PostgreSQL server's processes.\n\n"
           f"![scaling](scaling-{mode}.png)\n"]
    for s in results:
        rows = [[row["workers"], _s(row["wall"]), f"{row['records_per_s']:,.0f}",
                 f"{row['cpu_us_per_record']:.1f}", f"{row['cpu_ratio']:.2f}x",
                 "" if row["total_cpu_us_per_record"] is None
                 else f"{row['total_cpu_us_per_record']:.1f}"] for row in s["rows"]]
        out.append(f"**{s['name']}**\n\n" + table(
            ["workers", "wall s", "records/s", "CPU us/record", "x 1 worker",
             "CPU us/record + server"], rows))
    return "\n\n".join(out)


def _phases(p: dict[str, float]) -> str:
    return " / ".join(f"{p[k]:.1f}" for k in ("plan", "load", "checks", "merge", "audit",
                                               "startup+other"))


def floor_section(groups: list[dict[str, Any]], mode: str) -> str:
    rows = []
    for g in groups:
        j, f = g["job"], g["floor"]
        rows.append([g["backend"], f"{g['records']:,}", _s(j["wall"]), _s(f["timed"]),
                     f"**{g['floor_ratio']:.2f}x**", f"{g['floor_ratio_in_process']:.2f}x",
                     f"{g['floor_cpu_ratio']:.2f}x",
                     _phases(j["phases"]),
                     f"{f['phases']['load']:.1f} / {f['phases']['merge']:.1f}"])
    return ("## 3. The job against the physical floor\n\n"
            "Floor = bare load of the same pre-parsed rows into an identical staging table "
            "(SQLite: stdlib executemany of the job's multi-row INSERT, one transaction; "
            "PostgreSQL: one COPY) + the job's "
            "own MERGE (`deduplicate=False`) into an empty FINAL, in a fresh database; job = "
            "`run_job` end to end in a fresh process (interpreter start included; "
            "'in-process' leaves it out). CPU job/floor compares CPU-seconds (client + "
            "PostgreSQL server), which other load on the machine disturbs less than wall "
            "time. Median of the alternating repetitions.\n\n"
            f"![comparison](comparison-{mode}.png)\n\n"
            + table(["database", "records", "job s", "floor s", "job/floor",
                     "in-process/floor", "CPU job/floor",
                     "job: plan / load / checks / MERGE / audit / other s",
                     "floor: load / MERGE s"], rows))


def excess_section(groups: list[dict[str, Any]]) -> str:
    """Where the job's time above the floor goes, phase against phase."""
    rows = []
    for g in groups:
        p, f = g["job"]["phases"], g["floor"]["phases"]
        extra = g["job"]["wall"] - g["floor"]["timed"]
        parts = {"load": p["load"] - f["load"], "MERGE + commit": p["merge"] - f["merge"],
                 "checks": p["checks"],
                 "start, plan, audit": p["plan"] + p["audit"] + p["startup+other"]}
        rows.append([g["backend"], f"{g['records']:,}", _s(extra)]
                    + [f"{v:+.1f} ({v / extra:.0%})" for v in parts.values()])
    return ("Where the job's time above the floor goes (job phase minus floor phase, s):\n\n"
            + table(["database", "records", "job - floor s", "load", "MERGE + commit",
                     "checks", "start, plan, audit"], rows))


def _mb(x: float) -> str:
    return f"{x / MB:,.0f}"


def peers_section(groups: list[dict[str, Any]]) -> str:
    rows = []
    for g in groups:
        if "peers" not in g:
            continue
        j = g["job"]
        server = j["server_cpu"]
        rows.append([g["backend"], f"{g['records']:,}", "job", _s(j["wall"]), "1.00x",
                     _s(j["cpu"] + (server or 0)), _mb(j["peak_pss"])])
        for name, p in g["peers"].items():
            rows.append(["", "", name, _s(p["wall"]), f"**{p['ratio']:.2f}x**",
                         _s(p["cpu"] + (p["server_cpu"] or 0)), _mb(p["peak_pss"])])
    if not rows:
        return ""
    return ("## 4. Peers: what a user would write instead\n\n"
            "loop = one process, slice + validate each line in Python, SQLAlchemy Core insert "
            "of 10k-dict batches, upsert, counts; pandas = `read_fwf` + vectorized checks + "
            "`to_sql` (stdlib sqlite3 executemany / the pandas docs' COPY method) + upsert. "
            "Same input, same tables, fresh database each.\n\n"
            + table(["database", "records", "contender", "wall s", "/ job wall",
                     "CPU s (incl. server)", "peak PSS MB"], rows))


def recon_section(groups: list[dict[str, Any]], memory: list[dict[str, Any]]) -> str:
    rows = []
    for g in groups:
        j = g["job"]
        p = j["phases"]
        rows.append([g["backend"], f"{g['records']:,}", _s(j["wall"]), _s(p["checks"]),
                     f"{j['check_share']:.1%}", _s(p["merge"]), f"{j['merge_share']:.1%}",
                     _s(p["audit"]), _mb(j["peak_pss"]), _mb(j["peak_rss"])])
    mem_rows = [[m["backend"], m["sizes"], f"{_mb(m['small'])} -> {_mb(m['large'])}",
                 f"{m['ratio']:.2f}x",
                 f"{_mb(m['small_rss'])} -> {_mb(m['large_rss'])}"] for m in memory]
    return ("## 5. Reconciliation cost and memory\n\n"
            "checks = the count/amount queries before the MERGE, the duplicate-key probe and "
            "the two checks after it (timed inside the job's process); MERGE includes its "
            "commit; audit = BATCH_RUN/RECON_AUDIT writes and the DDL check. Peak memory = "
            "sampled every 0.2 s, summed over the job's process tree: PSS (shared pages "
            "split among the processes sharing them) and RSS (counted in each; an upper "
            "bound). PostgreSQL server memory is not included.\n\n"
            + table(["database", "records", "job s", "checks s", "checks share", "MERGE s",
                     "MERGE share", "audit s", "peak PSS MB", "peak RSS MB"], rows)
            + "\n\n" + table(["database", "records", "peak PSS MB", "growth", "peak RSS MB"],
                             mem_rows))


def render(r: dict[str, Any]) -> str:
    parts = [f"# Benchmarks ({r['mode']}) - {r['started']}",
             f"Command: `{r['command']}`; total time {r['elapsed'] / 60:.1f} min. "
             "Every comparison is measured in the same run, alternating, median of the "
             "repetitions, reported as a ratio.",
             summary_section(r)]
    if "bus" in r:
        parts.append(bus_section(r["bus"]))
    if r.get("scaling"):
        parts.append(scaling_section(r["scaling"], r["mode"]))
    if r.get("compare"):
        parts += [floor_section(r["compare"], r["mode"]), excess_section(r["compare"]),
                  peers_section(r["compare"]),
                  recon_section(r["compare"], r.get("memory", []))]
    if "mainframe" in r:
        from benchmarks import mainframe

        parts.append(mainframe.render(r["mainframe"]))
    if r.get("night"):
        from benchmarks import night

        parts.append(night.render(r["night"]))
    parts += [machine_section(r)] + [f"Skipped: {s}" for s in r.get("skipped", [])]
    return "\n\n".join(p for p in parts if p) + "\n"
