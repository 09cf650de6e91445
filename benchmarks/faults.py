"""Randomized fault trials: does the audit always agree with the exit code and FINAL?

    python -m benchmarks.faults --trials 200 [--records 20000] [--pg-url URL] [--seed 1]

Each trial runs the shipped job once, in a process of its own (``child()``: run_job with
an ``after_load`` hook), and hits it with one fault at a random point:

- ``sigterm_stmt``: SIGTERM to itself as the k-th statement after the load starts, or a
  few milliseconds into it (k random up to the statements a clean run issues: the checks,
  the MERGE, the checks after it, the audit inserts, the status update);
- ``sigterm_commit``: SIGTERM to itself as the j-th COMMIT after the load starts;
- ``sigterm_delay`` / ``kill9_delay``: SIGTERM or SIGKILL from outside at a random moment
  of the whole run (planning, load, reconciliation, merge, audit);
- ``pwrite`` / ``rename``: the input changed in place (one key rewritten) or replaced by a
  same-size file, at a random moment;
- ``lock_kill`` (PostgreSQL): the session holding the job lock terminated at a random moment.

After each trial, from the database alone (``disagreements``): BATCH_RUN's status and exit
code, the RECON_AUDIT rows, and the rows of FINAL the run merged must tell one story, which
the process's exit code must match; plus no shared-memory segment left, no worker left
alive, no traceback on stderr. Reports agreement, leaks, orphans, tracebacks and the
SIGTERM -> exit time (median, max).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

SHM = Path("/dev/shm")
FINAL = "transactions"
RECORD = 101  # the shipped job's fixed record and its newline
EXIT_OF = {"SUCCEEDED": 0, "FAILED_RECON": 1, "FAILED_INPUT": 2, "FAILED_RUNTIME": 3,
           "INTERRUPTED": 3, "REFUSED": 3}
KINDS = ["sigterm_stmt", "sigterm_commit", "sigterm_delay", "kill9_delay", "pwrite", "rename"]
PG_KINDS = [*KINDS, "lock_kill"]


# --- the invariant, from the database alone ------------------------------------------------


def disagreements(engine: Engine, run_id: str | None, exit_code: int, *,
                  pid: int | None = None) -> list[str]:
    """What does not agree between the exit code, BATCH_RUN, RECON_AUDIT and FINAL.

    ``run_id`` or ``pid`` (BATCH_RUN.pid) names the run; a negative exit code is a process
    killed by that signal, which may have ended either side of its commit.
    """
    with engine.connect() as conn:
        where, value = ("run_id", run_id) if run_id else ("pid", pid)
        row = conn.execute(text(f"SELECT run_id, status, exit_code FROM batch_run WHERE "
                                f"{where} = :v ORDER BY start_ts DESC"), {"v": value}).first()
        if row is None:  # stopped before it reached the database: nothing may say otherwise
            return [] if exit_code != 0 else ["exit 0 without a BATCH_RUN row"]
        run_id = row.run_id
        merged = conn.execute(text(f"SELECT COUNT(*) FROM {FINAL} WHERE last_run_id = :r"),
                              {"r": run_id}).scalar_one()
        checks = conn.execute(text("SELECT check_name, expected_cnt, passed FROM recon_audit "
                                   "WHERE run_id = :r"), {"r": run_id}).all()
    problems: list[str] = []
    status = row.status
    succeeded = status == "SUCCEEDED"
    if exit_code >= 0:
        if EXIT_OF.get(status) != exit_code:
            problems.append(f"exit {exit_code} but BATCH_RUN says {status}")
        if row.exit_code != exit_code:
            problems.append(f"exit {exit_code} but BATCH_RUN.exit_code {row.exit_code}")
    elif status not in ("RUNNING", "ABENDED", "SUCCEEDED"):
        problems.append(f"killed by signal {-exit_code}, yet BATCH_RUN says {status}")
    if succeeded:
        final = [c for c in checks if c.check_name == "staging_to_final"]
        if len(checks) < 7 or not all(c.passed == "Y" for c in checks):
            problems.append(f"SUCCEEDED with {len(checks)} checks, not all passed")
        if not final or final[0].expected_cnt != merged:
            problems.append(f"SUCCEEDED but FINAL holds {merged} rows of the run, the audit "
                            f"says {final[0].expected_cnt if final else None}")
    else:
        if merged:
            problems.append(f"{status} but FINAL holds {merged} rows of the run")
        if status in ("RUNNING", "ABENDED") and checks:
            problems.append(f"{status} with {len(checks)} RECON_AUDIT rows")
    return problems


# --- one trial, in its own process ---------------------------------------------------------


def child(spec: dict[str, Any]) -> int:
    """Run the job once with the trial's in-process fault; exit with the run's code."""
    from pipeline import interrupts
    from pipeline.config import load_config
    from pipeline.identity import Overrides
    from pipeline.job import run_job
    from pipeline.jobs import shipped_config

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = load_config(shipped_config()).with_overrides(
        output_dir=Path(spec["work"]), database_url=spec["url"],
        input_path=Path(spec["input"]), processors=2, heartbeat_timeout=10.0)
    kill_file = Path(spec["work"]) / "kill.ns"

    def kill_self(delay: float) -> None:
        def fire() -> None:
            kill_file.write_text(str(time.monotonic_ns()))
            os.kill(os.getpid(), signal.SIGTERM)
        if delay <= 0:
            fire()
        else:
            threading.Timer(delay, fire).start()

    def after_load(engine: Engine, _run_id: str) -> None:
        counts = {"stmt": 0, "commit": 0}
        kind, at, delay = spec["kind"], spec.get("at", -1), spec.get("delay", 0.0)

        @event.listens_for(engine, "before_cursor_execute")
        def on_statement(*_args: Any) -> None:
            counts["stmt"] += 1
            if kind == "sigterm_stmt" and counts["stmt"] == at:
                kill_self(delay)

        @event.listens_for(engine, "commit")
        def on_commit(*_args: Any) -> None:
            counts["commit"] += 1
            if kind == "sigterm_commit" and counts["commit"] == at:
                kill_self(0.0)

        if kind == "calibrate":
            def report(*_args: Any) -> None:
                (Path(spec["work"]) / "counts.json").write_text(json.dumps(counts))
            event.listen(engine, "after_cursor_execute", report)
            event.listen(engine, "commit", report)

    with interrupts.handling():  # as `pipeline run` does, until the process exits
        # every trial loads the same input again, on purpose
        outcome = run_job(config, after_load=after_load, overrides=Overrides(rerun=True))
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status}), flush=True)
    return outcome.exit_code


# --- the sweep -----------------------------------------------------------------------------


@dataclass
class Tally:
    trials: int = 0
    agree: int = 0
    leaks: int = 0
    orphans: int = 0
    tracebacks: int = 0
    exit_s: list[float] = field(default_factory=list)
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    codes: dict[str, dict[int, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# A trial's process starts as ``python -m pipeline`` does: SIGTERM/SIGINT recorded from its
# first statement, before anything heavy is imported, and never fatal until it exits.
# Started as ``-m benchmarks.faults``, it installed no handler until the run: a signal
# during its imports killed it with signal 15, where the real command ends with exit 3
# (only the interpreter's own first 50-70 ms still end with signal 15).
CHILD = ("import json, sys; from pipeline import interrupts; interrupts.record_early(); "
         "from benchmarks.faults import child; sys.exit(child(json.loads(sys.argv[1])))")


def _launch(spec: dict[str, Any], token: str) -> subprocess.Popen[bytes]:
    work = Path(spec["work"])
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec), token],
        stdout=open(work / "out", "wb"), stderr=open(work / "err", "wb"),  # noqa: SIM115
        start_new_session=True)


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _mutate_in_place(path: Path, record: int) -> None:
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), f"ZZMUTATED{record:07d}".encode(), RECORD * (record + 1) + 1)


def _mutated_copy(path: Path, record: int) -> bytes:
    data = bytearray(path.read_bytes())
    at = RECORD * (record + 1) + 1
    data[at:at + 16] = f"ZZMUTATED{record:07d}".encode()
    return bytes(data)


def _lock_sessions(url: str) -> list[int]:
    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as conn:
            return [r.pid for r in conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                "pid <> pg_backend_pid() AND state LIKE 'idle in transaction%' AND "
                "query ILIKE '%job_lock%'"))]
    finally:
        eng.dispose()


def _terminate(url: str, pids: list[int]) -> None:
    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as conn:
            for pid in pids:
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    finally:
        eng.dispose()


def calibrate(url: str, base: Path, source: Path) -> dict[str, Any]:
    """A clean run: how long it takes, how many statements and commits follow the load."""
    work = base / "calibrate"
    spec = {"kind": "calibrate", "work": str(work), "url": url, "input": str(source)}
    started = time.monotonic()
    proc = _launch(spec, f"faults-cal-{os.getpid()}")
    code = proc.wait(timeout=600)
    took = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"calibration run failed (exit {code}): "
                         f"{(work / 'err').read_text()[-2000:]}")
    counts = json.loads((work / "counts.json").read_text())
    return {"seconds": took, "statements": counts["stmt"], "commits": counts["commit"]}


def trial(n: int, kind: str, url: str, base: Path, source: Path, cal: dict[str, Any],
          rng: random.Random, tally: Tally, records: int) -> None:
    work = base / f"t{n:04d}"
    work.mkdir(parents=True)
    # each trial reads its own copy: a mutation must not leak into the next trial
    trial_input = work / "in.dat"
    trial_input.write_bytes(source.read_bytes())
    original = hashlib.sha256(trial_input.read_bytes()).hexdigest()
    victim = rng.randrange(records)
    mutated = hashlib.sha256(_mutated_copy(trial_input, victim)).hexdigest()
    spec: dict[str, Any] = {"kind": kind, "work": str(work), "url": url,
                            "input": str(trial_input)}
    if kind == "sigterm_stmt":
        spec["at"] = rng.randint(1, cal["statements"] + 1)
        spec["delay"] = rng.choice([0.0, 0.0, rng.uniform(0.001, 0.05)])
    elif kind == "sigterm_commit":
        spec["at"] = rng.randint(1, cal["commits"] + 1)
    delay = rng.uniform(0.0, cal["seconds"] * 1.1)
    token = f"faults-{os.getpid()}-{n}"
    proc = _launch(spec, token)
    killed_at = None
    try:
        if kind in ("sigterm_delay", "kill9_delay", "pwrite", "rename", "lock_kill"):
            deadline = time.monotonic() + delay
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)  # a fault injector's clock, not synchronisation
            if proc.poll() is None:
                if kind == "sigterm_delay":
                    killed_at = time.monotonic_ns()
                    os.kill(proc.pid, signal.SIGTERM)
                elif kind == "kill9_delay":
                    os.kill(proc.pid, signal.SIGKILL)
                elif kind == "pwrite":
                    _mutate_in_place(trial_input, victim)
                elif kind == "rename":
                    spare = work / "replacement.dat"
                    spare.write_bytes(_mutated_copy(trial_input, victim))
                    os.rename(spare, trial_input)
                elif kind == "lock_kill":
                    _terminate(url, _lock_sessions(url))
        code = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        tally.failures.append(f"trial {n} {kind}: timed out")
    exited = time.monotonic_ns()
    kill_file = work / "kill.ns"
    if killed_at is None and kill_file.exists():
        killed_at = int(kill_file.read_text())
    if killed_at is not None and code >= 0:
        tally.exit_s.append((exited - killed_at) / 1e9)
    # the workers die with their parent (PR_SET_PDEATHSIG): give the kernel a moment
    orphans: list[int] = []
    for _ in range(100):
        orphans = _processes_with(token)
        if not orphans:
            break
        time.sleep(0.02)
    # a killed parent's segment is unlinked by its resource tracker once the last worker
    # is gone: wait for that, as the next run would
    for _ in range(100):
        leaks = sorted(p.name for p in SHM.glob(f"pipeline_{proc.pid}_*"))
        if not leaks:
            break
        time.sleep(0.02)
    err = (work / "err").read_text(errors="replace")
    engine = create_engine(url, poolclass=NullPool)
    try:
        problems = disagreements(engine, None, code, pid=proc.pid)
        if code == 0 and kind in ("pwrite", "rename"):
            problems += _mutation_story(engine, proc.pid, victim, original, mutated)
    finally:
        engine.dispose()
    tally.trials += 1
    ok = not problems
    tally.agree += ok
    tally.leaks += bool(leaks)
    tally.orphans += bool(orphans)
    tally.tracebacks += "Traceback" in err
    tally.by_kind.setdefault(kind, [0, 0])[0] += 1
    tally.by_kind[kind][1] += ok
    seen = tally.codes.setdefault(kind, {})
    seen[code] = seen.get(code, 0) + 1
    if problems or leaks or orphans or "Traceback" in err:
        tally.failures.append(f"trial {n} {kind} {spec.get('at', '')} exit {code}: "
                              f"{problems} leaks={leaks} orphans={orphans} "
                              f"traceback={'Traceback' in err}")
    remove_leftovers(orphans, leaks)


def remove_leftovers(orphans: list[int], leaks: list[str]) -> None:
    """What a trial left behind is counted, then removed: the next trial starts clean."""
    for pid in orphans:
        with_suppress_kill(pid)
    for name in leaks:
        (SHM / name).unlink(missing_ok=True)


def _mutation_story(engine: Engine, pid: int, victim: int, original: str,
                    mutated: str) -> list[str]:
    """A run that loaded exit 0 loaded the bytes its recorded SHA-256 names."""
    key = f"ZZMUTATED{victim:07d}"
    with engine.connect() as conn:
        row = conn.execute(text("SELECT run_id, input_sha256 FROM batch_run WHERE pid = :p "
                                "ORDER BY start_ts DESC"), {"p": pid}).first()
        assert row is not None
        has_key = conn.execute(text(f"SELECT COUNT(*) FROM {FINAL} WHERE txn_id = :k AND "
                                    "last_run_id = :r"), {"k": key, "r": row.run_id}
                               ).scalar_one()
    if row.input_sha256 == mutated and not has_key:
        return ["recorded the mutated file's hash, but FINAL lacks its key"]
    if row.input_sha256 == original and has_key:
        return ["recorded the original file's hash, but FINAL holds the mutated key"]
    if row.input_sha256 not in (original, mutated):
        return ["recorded a hash of neither file"]
    return []


def with_suppress_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def sweep(trials: int, records: int, pg_url: str | None, seed: int,
          only: set[str] | None = None) -> Tally:
    from pipeline.generate import generate_file

    rng = random.Random(seed)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        base = Path(tmp)
        source = generate_file(base / "source.dat", records, seed=seed).path
        targets = [("sqlite", f"sqlite:///{base / 'sqlite' / 'faults.db'}", KINDS)]
        if only:
            targets = [(n, u, [k for k in ks if k in only]) for n, u, ks in targets]
        (base / "sqlite").mkdir()
        admin = create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT") \
            if pg_url else None
        database = f"faults_{os.getpid()}"
        if admin is not None and pg_url:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{database}"'))
            targets.append(("postgresql", admin.url.set(database=database)
                            .render_as_string(hide_password=False),
                            [k for k in PG_KINDS if not only or k in only]))
        try:
            cals = {name: calibrate(url, base / name, source) for name, url, _ in targets}
            print(f"calibration: {cals}", flush=True)
            for n in range(trials):
                name, url, kinds = targets[n % len(targets)]
                kind = kinds[rng.randrange(len(kinds))]
                trial(n, kind, url, base / name, source, cals[name], rng, tally, records)
                if (n + 1) % 20 == 0:
                    print(f"{n + 1} trials: {tally.agree} agree", flush=True)
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
                admin.dispose()
    return tally


def report(tally: Tally) -> str:
    lines = [f"trials {tally.trials}: agree {tally.agree} "
             f"({100 * tally.agree / max(tally.trials, 1):.1f}%), leaks {tally.leaks}, "
             f"orphans {tally.orphans}, tracebacks {tally.tracebacks}"]
    if tally.exit_s:
        lines.append(f"SIGTERM -> exit: median {statistics.median(tally.exit_s):.3f} s, "
                     f"max {max(tally.exit_s):.3f} s over {len(tally.exit_s)} trials")
    for kind, (n, ok) in sorted(tally.by_kind.items()):
        codes = ", ".join(f"exit {c}: {k}" for c, k in sorted(tally.codes[kind].items()))
        lines.append(f"  {kind:15s} {ok}/{n} agree ({codes})")
    lines += [f"  FAIL {f}" for f in tally.failures[:30]]
    return "\n".join(lines)


def sweep_parser(prog: str, trials: int) -> argparse.ArgumentParser:
    """The options every fault sweep takes (this one's, benchmarks.infra's)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--trials", type=int, default=trials)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--pg-url", default=os.environ.get("PIPELINE_TEST_PG_URL"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default="", help="comma-separated subset of the faults")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = sweep_parser("python -m benchmarks.faults", 200).parse_args(argv)
    only = set(filter(None, args.kinds.split(",")))
    tally = sweep(args.trials, args.records, args.pg_url, args.seed, only)
    print(report(tally))
    bad = tally.trials - tally.agree + tally.leaks + tally.orphans + tally.tracebacks
    return 0 if not bad and all(s <= 2.0 for s in tally.exit_s) else 1


if __name__ == "__main__":
    sys.exit(main())
