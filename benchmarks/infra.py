"""Infrastructure fault trials: when the database or the disk fails, is the failure
recorded with its real cause, and does the run end within its bounds?

    python -m benchmarks.infra --trials 60 [--records 20000] [--pg-url URL]
                               [--restart-cluster 15/sweep] [--seed 1] [--kinds a,b]

Each trial runs the shipped job once in a process of its own (``child`` mode) and hits it
with one infrastructure fault (root is needed for the mounts, chattr and SIGSTOP):

- ``terminate_load`` / ``terminate_merge`` (PostgreSQL): every backend of the run's
  database terminated once a writer committed a batch / right before the MERGE;
- ``conn_limit`` (PostgreSQL): the database's CONNECTION LIMIT leaves no slot for the
  writers (the run connects as a role of its own: superusers are exempt);
- ``frozen_merge`` (PostgreSQL): the backend that runs the MERGE SIGSTOPped, with a short
  ``statement_timeout``: the run must end by the watchdog, not wait forever;
- ``lock_held`` (both): another session holds a lock the MERGE needs (``lock_timeout``);
- ``out_full`` (both): the output folder on a tiny tmpfs the reject file overflows;
- ``db_full`` / ``db_immutable`` (SQLite): the database on a tiny tmpfs / made immutable
  (``chattr +i``) after the load: the end can only be journalled;
- ``parent_killed`` (PostgreSQL): the parent SIGKILLed during the MERGE; a rerun at once
  must be refused naming the dead holder, or succeed once the server let go;
- ``restart_load`` / ``outage_merge`` (a PostgreSQL cluster of the sweep's own, given by
  ``--restart-cluster VERSION/NAME``, never the shared server): the server restarted 1.5 s
  into the load / stopped for 8 s just before the MERGE.

After each trial a clean run of the job follows (it settles an end that was journalled),
then, from the database alone: BATCH_RUN of the faulted run states the exit code the
process ended with and a cause (never "killed?" but for the SIGKILL), FINAL holds no row
of a failed run (``benchmarks.faults.disagreements``), the run ended within its bound +
15 s, and no traceback, shared-memory segment or worker outlived it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from benchmarks.faults import (
    SHM,
    _lock_sessions,
    _processes_with,
    disagreements,
    remove_leftovers,
    sweep_parser,
)

SQLITE_KINDS = ["lock_held", "out_full", "db_full", "db_immutable"]
PG_KINDS = ["terminate_load", "terminate_merge", "conn_limit", "frozen_merge", "lock_held",
            "out_full", "parent_killed"]
RESTART_KINDS = ["restart_load", "outage_merge"]
STATEMENT_TIMEOUT = 5.0  # the frozen_merge trials' bound: + the watchdog's 10 s + 3 s
LOCK_TIMEOUT = 2.0
RETRY_WINDOW = 30.0
OUTAGE_S = 8.0
SLACK_S = 15.0  # the goal: every run ends within its configured bounds + 15 s


# --- one run, in its own process -----------------------------------------------------------


def child(spec: dict[str, Any]) -> int:
    """Run the job once with the trial's in-process fault; exit with the run's code."""
    from pipeline import interrupts
    from pipeline.config import load_config
    from pipeline.identity import Overrides
    from pipeline.job import run_job
    from pipeline.jobs import shipped_config
    from pipeline.logs import configure_logging

    configure_logging("INFO")  # as the CLI: what an operator would see on stderr
    work = Path(spec["work"])
    config = load_config(shipped_config()).with_overrides(
        output_dir=Path(spec.get("out", work / "out")), database_url=spec["url"],
        input_path=Path(spec["input"]), processors=2, heartbeat_timeout=20.0,
        statement_timeout=STATEMENT_TIMEOUT if spec["kind"] == "frozen_merge" else None,
        lock_timeout=LOCK_TIMEOUT, retry_window=RETRY_WINDOW)
    fault = Fault(spec, config.database_url)
    with interrupts.handling():
        outcome = run_job(config, after_load=fault.after_load, on_tick=fault.on_tick,
                          overrides=Overrides(rerun=True))
        print(json.dumps({"run_id": outcome.run_id, "status": outcome.status,
                          "message": outcome.message}), flush=True)
    return outcome.exit_code


@dataclass
class Fault:
    """The in-process side of a fault: hooks the run calls after the load and per tick."""

    spec: dict[str, Any]
    url: str
    done: bool = False
    held: list[Any] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])

    def on_tick(self, bus: Any) -> None:
        from pipeline.metrics.bus import Col, WorkerType

        if self.done or self.kind not in ("terminate_load", "restart_load"):
            return
        if self.kind == "restart_load":  # the outside restarts the server now
            (Path(self.spec["work"]) / "loading").write_text("")
            self.done = True
            return
        snap = bus.snapshot()
        writers = [w for w in range(len(snap)) if snap[w, Col.WORKER_TYPE] == WorkerType.WRITER]
        if any(snap[w, Col.BATCHES] >= 1 for w in writers):
            self.done = True
            _terminate_all(self.url)

    def after_load(self, engine: Engine, run_id: str) -> None:
        work = Path(self.spec["work"])
        if self.kind == "terminate_merge":
            _terminate_all(self.url)
        elif self.kind == "frozen_merge":
            pids = _lock_sessions(self.url)
            (work / "frozen.json").write_text(json.dumps(pids))
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
        elif self.kind == "lock_held":
            self._hold_final_lock(engine)
        elif self.kind == "db_immutable":
            subprocess.run(["chattr", "+i", make_url(self.url).database], check=True)
        elif self.kind == "parent_killed":
            _kill_self_during_merge(engine)
        elif self.kind == "outage_merge":
            (work / "loaded").write_text(run_id)
            _wait_for(work / "stopped", 60)

    def _hold_final_lock(self, engine: Engine) -> None:
        """Another session locks FINAL until the run's driver reports an error."""
        if self.url.startswith("sqlite"):
            import sqlite3

            holder: Any = sqlite3.connect(make_url(self.url).database, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            holder = psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://"))
            holder.execute("LOCK TABLE transactions IN EXCLUSIVE MODE")
        self.held.append(holder)

        def release(_context: Any) -> None:
            while self.held:
                other = self.held.pop()
                other.rollback()
                other.close()

        event.listen(Engine, "handle_error", release)


def _kill_self_during_merge(engine: Engine) -> None:
    def on_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("MERGE", "INSERT INTO TRANSACTIONS")):
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGKILL)).start()

    event.listen(engine, "before_cursor_execute", on_statement)


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _admin(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def _as_admin(url: str, *statements: str) -> None:
    """Each statement in autocommit, on a connection of its own to ``url``."""
    eng = _admin(url)
    try:
        with eng.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        eng.dispose()


def _terminate_all(url: str) -> None:
    """Every backend of the database but this one, as a restart would."""
    _as_admin(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                   "datname = current_database() AND pid <> pg_backend_pid()")


# --- the trial -----------------------------------------------------------------------------


@dataclass
class Tally:
    trials: int = 0
    told: int = 0  # BATCH_RUN states the exit code and a cause (at once or settled)
    at_once: int = 0
    hangs: int = 0
    leaks: int = 0
    orphans: int = 0
    tracebacks: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [trials, good]
    seconds: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass
class Target:
    name: str  # sqlite, postgresql, restart
    url: str
    kinds: list[str]
    cluster: str = ""  # VERSION/NAME of a cluster the sweep may restart


def _launch(spec: dict[str, Any], token: str) -> subprocess.Popen[bytes]:
    work = Path(spec["work"])
    work.mkdir(parents=True, exist_ok=True)
    name = spec.get("name", "run")
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.infra", "child", json.dumps(spec), token],
        stdout=open(work / f"{name}.out", "wb"),  # noqa: SIM115
        stderr=open(work / f"{name}.err", "wb"),  # noqa: SIM115
        start_new_session=True)


def bound_of(kind: str, clean_s: float) -> float:
    """The seconds a run under this fault may take: a clean run plus the bound that the
    fault makes it wait out (a configured one: its settings are the sweep's)."""
    waits = {"frozen_merge": STATEMENT_TIMEOUT + 10 + 3, "lock_held": LOCK_TIMEOUT,
             "outage_merge": OUTAGE_S + RETRY_WINDOW, "restart_load": RETRY_WINDOW,
             "conn_limit": RETRY_WINDOW, "db_full": 0.0}
    return clean_s + waits.get(kind, 0.0)


def trial(n: int, kind: str, target: Target, base: Path, source: Path, empty: Path,
          clean_s: float, tally: Tally) -> None:
    work = base / f"t{n:04d}-{kind}"
    work.mkdir(parents=True)
    url, out = target.url, work / "out"
    spec: dict[str, Any] = {"kind": kind, "work": str(work), "input": str(source),
                            "empty": str(empty)}
    mounts: list[Path] = []
    admin_url = url
    try:
        if kind == "out_full":
            out = _tmpfs(work / "out", "48k", mounts)
        if kind == "db_full":
            url = f"sqlite:///{_tmpfs(work / 'db', '1m', mounts) / 'infra.db'}"
        if kind == "db_immutable":
            url = f"sqlite:///{work / 'infra.db'}"
        if kind == "conn_limit":
            url = _limited_role(admin_url)
        spec.update(url=url, out=str(out))
        token = f"infra-{os.getpid()}-{n}"
        started = time.monotonic()
        proc = _launch(spec, token)
        code, refusal = _drive(kind, proc, target, work)
        took = time.monotonic() - started
        frozen = work / "frozen.json"
        if frozen.exists():  # let the frozen backend go: it finds its client gone
            for pid in json.loads(frozen.read_text()):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        if kind == "conn_limit":
            _unlimit(admin_url)
        if kind == "db_full":
            subprocess.run(["mount", "-o", "remount,size=256m", str(work / "db")], check=True)
        if kind == "db_immutable":
            subprocess.run(["chattr", "-i", str(work / "infra.db")], check=True)
        err = (work / "run.err").read_text(errors="replace")
        told_at_once = _told(url if kind != "conn_limit" else admin_url, proc.pid, code, kind)
        # the settling run loads no record: FINAL keeps the faulted run's rows as it left them
        settle = {**spec, "kind": "clean", "name": "settle", "out": str(out),
                  "input": str(empty)}
        if kind == "conn_limit":
            settle["url"] = admin_url
        settled = _launch(settle, token).wait(timeout=600)
        problems = _story(url if kind != "conn_limit" else admin_url, proc.pid, code, kind)
        problems += [f"settling run exit {settled}"] if settled not in (0, 3) else []
        problems += refusal
        orphans, leaks = _leftovers(token, proc.pid)
    finally:
        for mount in reversed(mounts):
            subprocess.run(["umount", "-l", str(mount)], check=False)
    limit = bound_of(kind, clean_s) + SLACK_S
    hang = took > limit
    bad_trace = "Traceback" in err
    good = not problems and not hang and not bad_trace and not leaks and not orphans
    tally.trials += 1
    tally.told += not problems
    tally.at_once += told_at_once
    tally.hangs += hang
    tally.tracebacks += bad_trace
    tally.leaks += bool(leaks)
    tally.orphans += bool(orphans)
    tally.by_kind.setdefault(f"{target.name}:{kind}", [0, 0])[0] += 1
    tally.by_kind[f"{target.name}:{kind}"][1] += good
    tally.seconds.setdefault(f"{target.name}:{kind}", []).append(took)
    if not good:
        tally.failures.append(f"trial {n} {target.name}:{kind} exit {code} in {took:.1f} s "
                              f"(limit {limit:.0f}): {problems} leaks={leaks} "
                              f"orphans={orphans} traceback={bad_trace}")
    remove_leftovers(orphans, leaks)


def _drive(kind: str, proc: subprocess.Popen[bytes], target: Target,
           work: Path) -> tuple[int, list[str]]:
    """The outside side of a fault, then the run's exit code (negative: killed) and what
    was wrong with a rerun's refusal (parent_killed)."""
    if kind == "restart_load":
        _wait_for(work / "loading", 120)
        _cluster(target.cluster, "restart")
    elif kind == "outage_merge":
        _wait_for(work / "loaded", 120)
        _cluster(target.cluster, "stop")
        (work / "stopped").write_text("")
        _wait_for(work / "never", OUTAGE_S)
        _cluster(target.cluster, "start")
    try:
        code = proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if kind != "parent_killed":
        return code, []
    # at once: the killed run's server session may still hold the job lock
    spec = json.loads(proc.args[4])  # type: ignore[index]
    rerun = _launch({**spec, "kind": "clean", "name": "rerun", "input": spec["empty"]},
                    f"infra-rerun-{proc.pid}")
    rerun.wait(timeout=600)
    said = (work / "rerun.err").read_text(errors="replace")
    if "already running" in said and "process gone" not in said:
        return code, ["the rerun's refusal did not say the holder's process is gone"]
    return code, []


def _cluster(cluster: str, action: str) -> None:
    version, name = cluster.split("/")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
                   check=True, capture_output=True)


def _tmpfs(path: Path, size: str, mounts: list[Path]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    mounts.append(path)
    return path


def _limited_role(admin_url: str) -> str:
    """A role of its own owning the database, the database limited to 2 connections (the
    parent's lock and one more): the writers find no slot."""
    parsed = make_url(admin_url)
    role = _role(parsed.database)
    eng = _admin(admin_url)
    try:
        with eng.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                                {"r": role}).first():
                conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            conn.execute(text(f'ALTER DATABASE "{parsed.database}" OWNER TO "{role}"'))
            conn.execute(text(f'GRANT ALL ON SCHEMA public TO "{role}"'))
            for table in ("transactions", "stg_transactions", "batch_run", "recon_audit",
                          "recon_worker_audit", "recon_evidence", "job_lock"):
                conn.execute(text(f'ALTER TABLE IF EXISTS {table} OWNER TO "{role}"'))
            conn.execute(text(f'ALTER DATABASE "{parsed.database}" CONNECTION LIMIT 2'))
    finally:
        eng.dispose()
    return parsed.set(username=role).render_as_string(hide_password=False)


def _role(database: str | None) -> str:
    return f"infra_{database}"[:63]


def _unlimit(admin_url: str) -> None:
    """The limit lifted, and the role gone (its objects back to the admin)."""
    database = make_url(admin_url).database
    role = _role(database)
    _as_admin(admin_url, f'ALTER DATABASE "{database}" CONNECTION LIMIT -1',
              f'REASSIGN OWNED BY "{role}" TO CURRENT_USER', f'DROP OWNED BY "{role}"',
              f'DROP ROLE "{role}"')


def _row(url: str, pid: int) -> Any:
    eng = create_engine(url, poolclass=NullPool)
    try:
        with eng.connect() as conn:
            return conn.execute(text("SELECT run_id, status, exit_code, message FROM batch_run "
                                     "WHERE pid = :p ORDER BY start_ts DESC"), {"p": pid}).first()
    finally:
        eng.dispose()


def _told(url: str, pid: int, code: int, kind: str) -> bool:
    """BATCH_RUN stated the exit code and a cause as soon as the run ended."""
    with suppress(Exception):  # a database still unreadable counts as not told
        row = _row(url, pid)
        return row is not None and row.status != "RUNNING" and row.exit_code == code
    return False


def _story(url: str, pid: int, code: int, kind: str) -> list[str]:
    """After the settling run: exit code, BATCH_RUN, RECON_AUDIT and FINAL agree, and the
    cause is there (ABENDED only for a process that truly vanished)."""
    eng = create_engine(url, poolclass=NullPool)
    try:
        problems = disagreements(eng, None, code, pid=pid)
    finally:
        eng.dispose()
    row = _row(url, pid)
    if row is None:
        return problems if code != 0 else [*problems, "no BATCH_RUN row"]
    if code >= 0 and row.status in ("RUNNING", "ABENDED"):
        problems.append(f"exit {code} but BATCH_RUN says {row.status}: {row.message}")
    if code >= 0 and not row.message:
        problems.append("no cause in BATCH_RUN.MESSAGE")
    if kind == "parent_killed" and code == -signal.SIGKILL and row.status != "ABENDED":
        problems.append(f"SIGKILLed mid-MERGE but BATCH_RUN says {row.status}")
    return problems


def _leftovers(token: str, pid: int) -> tuple[list[int], list[str]]:
    deadline = time.monotonic() + 3
    orphans: list[int] = _processes_with(token)
    leaks: list[str] = []
    while time.monotonic() < deadline:
        orphans = _processes_with(token)
        leaks = sorted(p.name for p in SHM.glob(f"pipeline_{pid}_*"))
        if not orphans and not leaks:
            break
        time.sleep(0.05)
    return orphans, leaks


# --- the sweep -----------------------------------------------------------------------------


def clean_seconds(target: Target, base: Path, source: Path) -> float:
    work = base / f"clean-{target.name}"
    started = time.monotonic()
    code = _launch({"kind": "clean", "work": str(work), "url": target.url,
                    "input": str(source)}, f"infra-clean-{os.getpid()}").wait(timeout=600)
    if code != 0:
        raise SystemExit(f"clean run on {target.name} failed (exit {code}): "
                         f"{(work / 'run.err').read_text()[-2000:]}")
    return time.monotonic() - started


def _pg_database(admin_url: str, name: str) -> str:
    _as_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
              f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(url: str) -> None:
    parsed = make_url(url)
    _as_admin(parsed.set(database="postgres").render_as_string(hide_password=False),
              f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)',
              f'DROP ROLE IF EXISTS "{_role(parsed.database)}"')


def sweep(trials: int, records: int, pg_url: str | None, cluster: str | None, seed: int,
          only: set[str] | None = None, progress: bool = True, keep: Path | None = None
          ) -> Tally:
    """``keep``: the folder to work in, kept afterwards (default: a temporary one)."""
    from pipeline.generate import generate_file

    rng = random.Random(seed)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="infra-") as tmp:
        base = keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        # rejects enough to overflow the tiny output folder (the reject limit is 5%)
        source = generate_file(base / "source.dat", records, seed=seed,
                               reject_rate=0.02).path
        empty = generate_file(base / "empty.dat", 0, seed=seed).path
        (base / "sqlite").mkdir()
        name = f"infra_{os.getpid()}"
        targets = [Target("sqlite", f"sqlite:///{base / 'sqlite' / 'infra.db'}",
                          SQLITE_KINDS)]
        if pg_url:
            targets.append(Target("postgresql", pg_url, PG_KINDS))
        if cluster:
            local = make_url(pg_url or "postgresql+psycopg://root@127.0.0.1/postgres")
            targets.append(Target("restart", local.set(port=_cluster_port(cluster))
                                  .render_as_string(hide_password=False), RESTART_KINDS,
                                  cluster))
        for target in targets:
            target.kinds = [k for k in target.kinds if not only or k in only]
        targets = [t for t in targets if t.kinds]
        for target in targets:  # a database of the sweep's own on each server it uses
            if target.name != "sqlite":
                target.url = _pg_database(target.url, name)
        start = rng.randrange(len(PG_KINDS))
        try:
            cleans = {t.name: clean_seconds(t, base, source) for t in targets}
            if progress:
                print(f"clean runs (s): {cleans}", flush=True)
            for n in range(trials):
                # every fault as often as the others: the targets in turn, each one's
                # faults in turn, starting at a random one
                target = targets[n % len(targets)]
                kind = target.kinds[(start + n // len(targets)) % len(target.kinds)]
                trial(n, kind, target, base / target.name, source, empty, cleans[target.name],
                      tally)
                if progress and (n + 1) % 10 == 0:
                    print(f"{n + 1} trials: {tally.told} told", flush=True)
        finally:
            for target in targets:
                if target.name != "sqlite":
                    _drop_pg_database(target.url)
    return tally


def _cluster_port(cluster: str) -> int:
    version, name = cluster.split("/")
    conf = Path(f"/etc/postgresql/{version}/{name}/postgresql.conf").read_text()
    return int(next(line.split("=")[1].split()[0] for line in conf.splitlines()
                    if line.strip().startswith("port")))


def report(tally: Tally) -> str:
    n = max(tally.trials, 1)
    lines = [f"trials {tally.trials}: BATCH_RUN told exit code and cause {tally.told} "
             f"({100 * tally.told / n:.0f}%; at once {tally.at_once}), hangs {tally.hangs}, "
             f"tracebacks {tally.tracebacks}, leaks {tally.leaks}, orphans {tally.orphans}"]
    for kind, (k, ok) in sorted(tally.by_kind.items()):
        secs = tally.seconds[kind]
        lines.append(f"  {kind:28s} {ok}/{k} good, run {min(secs):.1f}-{max(secs):.1f} s")
    lines += [f"  FAIL {f}" for f in tally.failures[:30]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":
        return child(json.loads(argv[1]))
    logging.basicConfig(level=logging.WARNING)
    parser = sweep_parser("python -m benchmarks.infra", 60)
    parser.add_argument("--restart-cluster", default=None, metavar="VERSION/NAME",
                        help="a PostgreSQL cluster of the sweep's own to restart and stop "
                             "(pg_createcluster 15 sweep --port 5433); never a shared one")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep every trial's files there")
    args = parser.parse_args(argv)
    only = set(filter(None, args.kinds.split(",")))
    tally = sweep(args.trials, args.records, args.pg_url, args.restart_cluster, args.seed,
                  only, keep=args.keep)
    print(report(tally))
    bad = (tally.trials - tally.told + tally.hangs + tally.tracebacks + tally.leaks
           + tally.orphans + len(tally.failures))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
