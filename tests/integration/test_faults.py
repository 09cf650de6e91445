"""Faults that really happen, really caused: no mocks, no sleeps as synchronisation.

Workers are killed (SIGKILL) and stopped (SIGSTOP) from the supervisor's ``on_tick``
callback, which the parent calls every ~0.25 s with the metrics bus; the parent of a CLI
run is signalled once its workers are observed loading (its bus segment, read straight from
/dev/shm, and its process tree); the database drops the writers' connections. Every case
checks the same promises: exit 3 within seconds, FINAL exactly as before, the run audited
with what happened to which worker, no process and no shared-memory segment left behind.

Rerunning an input that already ran is covered by
``tests/integration/test_job.py::test_rerun_of_the_same_input_leaves_the_same_final_and_audits_both``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from pipeline.config import JobConfig, load_config
from pipeline.db.tables import job_tables
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from pipeline.metrics.bus import Col, MetricsBus, State, WorkerType, leaked_segments
from tests.conftest import final_rows, run_cli, seed_final, write_job
from tests.reference import detail, expected_from_file, write_input

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # kills and hangs of 30k-record runs

RECORDS = 30_000
BATCH = 50  # 600 batches: the run lasts many supervisor ticks, so kill points spread
PROCESSORS = 2
SLOW_BEAT = 120.0  # heartbeat timeout where hangs are not the subject (busy, slow machine)
SHM = Path("/dev/shm")
POLL_S = 0.02  # pause between two looks at observable state in bounded polling loops
GONE_WITHIN_S = 15.0


# -- helpers ----------------------------------------------------------------------------


def held_segments() -> set[str]:
    """Bus segments some live process has open or mapped (a run in progress)."""
    held: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            with open(proc / "maps", encoding="ascii", errors="replace") as maps:
                held |= {line.rsplit("/", 1)[-1].split()[0] for line in maps
                         if f"{SHM}/pipeline_" in line}
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith(f"{SHM}/pipeline_"):
                    held.add(target.removeprefix(f"{SHM}/"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return held


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Overrides conftest's: other suites may run on this machine at the same time, and the
    segments of their runs in progress appear in /dev/shm too. A segment has leaked when it
    is still there with no process holding it. (Each test here also checks its own run's
    segment by name.)"""
    before = set(leaked_segments())
    yield

    def leaks() -> list[str]:
        return sorted(set(leaked_segments()) - before - held_segments())

    if leaks():  # give a concurrent run between unmapping and unlinking a moment
        poll(lambda: not leaks(), 5.0, f"shared-memory segments leaked: {leaks()}")


@pytest.fixture(scope="module")
def fault_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_file(tmp_path_factory.mktemp("faults") / "in.dat", RECORDS, seed=17).path


@pytest.fixture(scope="module")
def long_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten times fault_input: each processor reads for many supervisor ticks (0.25 s),
    where 15,000 records each were sometimes read between two of them."""
    return generate_file(tmp_path_factory.mktemp("faults") / "long.dat", 10 * RECORDS,
                         seed=17).path


@pytest.fixture
def engine(job_config: JobConfig) -> Iterator[Engine]:
    eng = create_engine(job_config.database_url, poolclass=NullPool)
    yield eng
    eng.dispose()


def is_merged(engine: Engine, config: JobConfig, before: dict, path: Path, run_id: str) -> bool:
    """FINAL is ``before`` with every key of the input merged by ``run_id``."""
    expected = expected_from_file(path).final
    now = final_rows(engine, config)
    if set(now) != set(before) | set(expected):
        return False
    final = job_tables(config).final
    cols = [c.name for c in final.columns]
    for key, row in now.items():
        values = dict(zip(cols, row, strict=True))
        if key not in expected:
            if row != before[key]:
                return False
        elif (values["last_run_id"], values["amount"]) != (run_id, expected[key].amount):
            return False
    return True


def alive(pid: int) -> bool:
    """A zombie is dead: it runs nothing and only waits for its parent to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def poll(predicate: Callable[[], Any], within: float, what: str) -> Any:
    """Bounded polling of observable state (never a fixed sleep standing in for an event)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within:g} s: {what}")
        time.sleep(POLL_S)


def assert_all_gone(pids: set[int]) -> None:
    assert pids, "no worker pid was observed"
    poll(lambda: not [p for p in pids if alive(p)], GONE_WITHIN_S,
         f"processes still alive: {sorted(p for p in pids if alive(p))}")


def worker_audit(engine: Engine, run_id: str) -> dict[int, Any]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT worker_id, worker_type, state, exit_code, pid "
                                 "FROM recon_worker_audit WHERE run_id = :r"), {"r": run_id})
        return {r.worker_id: r for r in rows}


def batch_run(engine: Engine, run_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, exit_code, message, end_ts FROM batch_run "
                                 "WHERE run_id = :r"), {"r": run_id}).one()


def merge_passed(engine: Engine, run_id: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT COUNT(*) FROM recon_audit WHERE run_id = :r AND passed = 'Y' AND "
            "check_name = 'staging_to_final'"), {"r": run_id}).scalar_one())


def rows_of(snapshot: np.ndarray, kind: WorkerType) -> list[int]:
    return [i for i in range(len(snapshot)) if snapshot[i, Col.WORKER_TYPE] == kind]


@dataclass
class Watcher:
    """on_tick base: remembers the bus name and every worker pid it ever saw."""

    bus_name: str = ""
    pids: set[int] = field(default_factory=set)
    ticks: int = 0

    def observe(self, bus: MetricsBus) -> np.ndarray:
        self.bus_name = bus.name
        self.ticks += 1
        snap = bus.snapshot()
        self.pids |= {int(p) for p in snap[:, Col.PID] if p}
        return snap


def assert_clean_failure(engine: Engine, config: JobConfig, outcome: Any, before: dict,
                         watcher: Watcher) -> dict[int, Any]:
    """Exit 3, audited as a runtime failure, FINAL untouched, nothing left behind."""
    assert outcome.exit_code == 3, outcome.message
    assert outcome.status == "FAILED_RUNTIME", outcome.message
    run = batch_run(engine, outcome.run_id)
    assert (run.status, run.exit_code) == ("FAILED_RUNTIME", 3) and run.end_ts is not None
    assert final_rows(engine, config) == before
    assert not merge_passed(engine, outcome.run_id)
    workers = worker_audit(engine, outcome.run_id)
    assert len(workers) == len(outcome.workers) > 0
    # every worker was reaped by the pool: none is still 'running' or without an exit code
    assert all(w.exit_code is not None for w in workers.values()), workers
    assert {w.state for w in workers.values()} <= {"done", "killed", "failed"}, workers
    assert_all_gone(watcher.pids | {w.pid for w in workers.values() if w.pid})
    assert watcher.bus_name and not (SHM / watcher.bus_name).exists()
    return workers


# -- SIGKILL of one worker at a random point -------------------------------------------

# seed -> (which worker of the kind, after how many batches): (0, 17), (1, 0), (1, 102),
# (0, 0), (1, 11), (1, 110), (1, 51), (1, 117); with one writer (SQLite) always writer 0
KILL_SEEDS = [3, 36, 5, 15, 23, 11, 7, 13]


@dataclass
class Killer(Watcher):
    """Kills one worker with SIGKILL once it has published ``after`` batches.

    ``after == 0``: at the first sight of the worker, before or just after its first batch.
    A run of small batches can outpace the supervisor's ticks, so ``hold`` makes the victim
    stop itself (SIGSTOP) once it has published them, until the SIGKILL comes.
    """

    kind: WorkerType = WorkerType.PROCESSOR
    seed: int = 0
    victim: tuple[int, int, int] | None = None  # worker id, pid, batches published
    killed_at: float = 0.0
    missed: str = ""

    def target(self, snap: np.ndarray) -> tuple[int, int]:
        """(worker id, after how many batches), the same in the parent and every child."""
        rng = random.Random(self.seed)
        candidates = rows_of(snap, self.kind)
        wid = candidates[rng.randrange(len(candidates))]
        return wid, 0 if rng.random() < 0.25 else rng.randint(1, 120)

    def hold(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Patched before the fork, so every worker inherits it."""
        publish = MetricsBus.add_batch

        def add_batch(bus: MetricsBus, worker_id: int, *args: Any, **kwargs: Any) -> None:
            publish(bus, worker_id, *args, **kwargs)
            wid, after = self.target(bus.snapshot())
            if worker_id == wid and bus.row(wid)[Col.BATCHES] >= max(after, 1):
                os.kill(os.getpid(), signal.SIGSTOP)

        monkeypatch.setattr(MetricsBus, "add_batch", add_batch)

    def __call__(self, bus: MetricsBus) -> None:
        snap = self.observe(bus)
        if self.victim or self.missed:
            return
        wid, after = self.target(snap)
        row = snap[wid]
        if row[Col.STATE] == State.DONE:
            self.missed = f"worker {wid} finished before it published {after} batches"
        elif row[Col.STATE] == State.RUNNING and row[Col.BATCHES] >= after:
            os.kill(int(row[Col.PID]), signal.SIGKILL)
            self.killed_at = time.monotonic()
            self.victim = (wid, int(row[Col.PID]), int(row[Col.BATCHES]))


@pytest.mark.parametrize("seed", KILL_SEEDS)
@pytest.mark.parametrize("kind", [WorkerType.PROCESSOR, WorkerType.WRITER],
                         ids=["processor", "writer"])
def test_sigkill_of_a_worker_fails_the_run_within_seconds(
        kind: WorkerType, seed: int, fault_input: Path, job_config: JobConfig,
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    config = job_config.with_overrides(input_path=fault_input, processors=PROCESSORS,
                                       batch_size=BATCH, heartbeat_timeout=SLOW_BEAT)
    before = seed_final(engine, config, fault_input)
    killer = Killer(kind=kind, seed=seed)
    killer.hold(monkeypatch)

    outcome = run_job(config, on_tick=killer)
    ended = time.monotonic()

    assert killer.victim, killer.missed or f"never killed; {outcome.message}"
    wid, pid, published = killer.victim
    assert ended - killer.killed_at < 30, "the run did not end within seconds of the kill"
    assert f"{kind.label} {wid} (pid {pid}) was killed by signal 9" in outcome.message
    workers = assert_clean_failure(engine, config, outcome, before, killer)
    assert (workers[wid].worker_type, workers[wid].state, workers[wid].exit_code,
            workers[wid].pid) == (kind.label, "killed", -9, pid), f"published {published}"


@dataclass
class BlockedWriterKiller(Watcher):
    """Kills writer 0 while its first COPY waits on a lock the test holds on staging."""

    url: str = ""
    victim: tuple[int, int] | None = None

    def __call__(self, bus: MetricsBus) -> None:
        snap = self.observe(bus)
        wid = rows_of(snap, WorkerType.WRITER)[0]
        pid = int(snap[wid, Col.PID])
        if self.victim or not pid:
            return
        ports = sorted(tcp_ports(pid) - tcp_ports(os.getpid()))
        eng = create_engine(self.url, poolclass=NullPool)
        try:
            with eng.connect() as conn:
                waiting = conn.execute(text(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND client_port = ANY(:ports) AND wait_event_type = 'Lock'"),
                    {"ports": ports}).scalar_one()
        finally:
            eng.dispose()
        if waiting:
            assert snap[wid, Col.BATCHES] == 0
            os.kill(pid, signal.SIGKILL)
            self.victim = (wid, pid)


@pytest.mark.postgresql
def test_a_writer_killed_before_its_first_commit(
        tmp_path: Path, pg_url: str, fault_input: Path) -> None:
    """The deterministic 'before its first batch' point: staging is locked by the test."""
    config = load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=pg_url, input_path=fault_input,
        processors=PROCESSORS, batch_size=BATCH, heartbeat_timeout=SLOW_BEAT)
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        before = seed_final(engine, config, fault_input)
        with engine.connect() as blocker:
            blocker.execute(text("LOCK TABLE stg_transactions IN SHARE MODE"))
            killer = BlockedWriterKiller(url=pg_url)
            outcome = run_job(config, on_tick=killer)
            blocker.rollback()

        assert killer.victim, outcome.message
        wid, pid = killer.victim
        assert f"writer {wid} (pid {pid}) was killed by signal 9" in outcome.message
        workers = assert_clean_failure(engine, config, outcome, before, killer)
        assert (workers[wid].state, workers[wid].exit_code) == ("killed", -9)
        with engine.connect() as conn:
            staged = conn.execute(text("SELECT COUNT(*) FROM stg_transactions WHERE run_id = :r"),
                                  {"r": outcome.run_id}).scalar_one()
        assert staged == 0
    finally:
        engine.dispose()


# -- a hung worker (SIGSTOP) ------------------------------------------------------------


@dataclass
class Stopper(Watcher):
    kind: WorkerType = WorkerType.PROCESSOR
    victim: tuple[int, int] | None = None
    stopped_at: float = 0.0

    def __call__(self, bus: MetricsBus) -> None:
        snap = self.observe(bus)
        if self.victim:
            return
        # any worker of the kind at work: the first one may already be done
        for wid in rows_of(snap, self.kind):
            if snap[wid, Col.STATE] == State.RUNNING and snap[wid, Col.BATCHES] >= 1:
                os.kill(int(snap[wid, Col.PID]), signal.SIGSTOP)
                self.stopped_at = time.monotonic()
                self.victim = (wid, int(snap[wid, Col.PID]))
                return


@pytest.mark.parametrize("kind", [WorkerType.PROCESSOR, WorkerType.WRITER],
                         ids=["processor", "writer"])
def test_a_stopped_worker_is_detected_as_hung_and_cleaned_up(
        kind: WorkerType, long_input: Path, job_config: JobConfig, engine: Engine) -> None:
    timeout = 2.0
    config = job_config.with_overrides(input_path=long_input, processors=PROCESSORS,
                                       batch_size=BATCH, heartbeat_timeout=timeout)
    before = seed_final(engine, config, long_input)
    stopper = Stopper(kind=kind)

    outcome = run_job(config, on_tick=stopper)
    ended = time.monotonic()

    assert stopper.victim, outcome.message
    wid, pid = stopper.victim
    assert f"{kind.label} {wid} (pid {pid}) hung" in outcome.message
    # detected after the timeout, and stop() did not spend its grace period on it: the
    # stopped worker was continued and died of the SIGTERM, not of the late SIGKILL
    assert timeout <= ended - stopper.stopped_at < timeout + 20
    workers = assert_clean_failure(engine, config, outcome, before, stopper)
    assert (workers[wid].state, workers[wid].exit_code) == ("killed", -signal.SIGTERM)


# -- the database drops the writers' connections -----------------------------------------


def tcp_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr}


GATE = 7_262_021  # the advisory lock that holds every staging COPY of the run (load_gate)


@contextlib.contextmanager
def load_gate(engine: Engine, config: JobConfig) -> Iterator[Any]:
    """Every COPY into the job's staging waits on an advisory lock this connection holds
    until the terminator lets it go: the writers are provably mid-load when their
    backends die, however fast the machine (waiting for a first commit and hoping the
    load was not over by the next tick failed 1 run in 3 on a fast one)."""
    staging = job_tables(config).staging.name
    with engine.connect() as gate:
        gate.execute(text(f"""CREATE OR REPLACE FUNCTION load_gate() RETURNS trigger
            LANGUAGE plpgsql AS $$ BEGIN
              PERFORM pg_advisory_lock_shared({GATE}); PERFORM pg_advisory_unlock_shared({GATE});
              RETURN NULL; END $$"""))
        gate.execute(text(f"CREATE TRIGGER load_gate BEFORE INSERT ON {staging} "
                          "FOR EACH STATEMENT EXECUTE FUNCTION load_gate()"))
        gate.execute(text("SELECT pg_advisory_lock(:g)"), {"g": GATE})
        gate.commit()
        try:
            yield gate
        finally:
            gate.execute(text("SELECT pg_advisory_unlock_all()"))
            gate.execute(text(f"DROP TRIGGER load_gate ON {staging}"))
            gate.commit()


@dataclass
class BackendTerminator(Watcher):
    """Once every writer waits at the load gate (load_gate), terminate the writers' server
    backends (``everything``: every backend of the database but the test's own, as a
    restart would), then open the gate."""

    url: str = ""
    everything: bool = False
    gate: Any = None
    terminated: list[int] = field(default_factory=list)

    def __call__(self, bus: MetricsBus) -> None:
        snap = self.observe(bus)
        writers = rows_of(snap, WorkerType.WRITER)
        if self.terminated or not all(snap[w, Col.PID] for w in writers):
            return
        # forked writers also hold the parent's sockets (its job-lock connection): a
        # writer's own connection is one its parent does not have
        ports = set().union(*(tcp_ports(int(snap[w, Col.PID])) for w in writers)) \
            - tcp_ports(os.getpid())
        eng = create_engine(self.url, poolclass=NullPool)
        try:
            with eng.connect() as conn:
                waiting = conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                    "WHERE l.locktype = 'advisory' AND NOT l.granted "
                    "AND a.client_port = ANY(:ports)"), {"ports": sorted(ports)}).scalar_one()
                if waiting < len(writers):
                    return
                mine = self.gate.execute(text("SELECT pg_backend_pid()")).scalar_one()
                which = "" if self.everything else "AND client_port = ANY(:ports)"
                # in the select list, not the WHERE: only the rows that pass are terminated
                self.terminated = [r.pid for r in conn.execute(text(
                    "SELECT pid, pg_terminate_backend(pid) AS done FROM pg_stat_activity "
                    f"WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    f"AND pid <> :mine {which}"), {"ports": sorted(ports), "mine": mine})
                    if r.done]
        finally:
            eng.dispose()
        self.gate.execute(text("SELECT pg_advisory_unlock(:g)"), {"g": GATE})
        self.gate.commit()


@pytest.mark.postgresql
@pytest.mark.parametrize("everything", [
    False,
    True,
], ids=["writers", "every_backend"])
def test_losing_the_database_mid_load_fails_the_run(
        everything: bool, tmp_path: Path, pg_url: str, fault_input: Path) -> None:
    config = load_config(shipped_config()).with_overrides(
        output_dir=tmp_path / "work", database_url=pg_url, input_path=fault_input,
        processors=PROCESSORS, batch_size=BATCH, heartbeat_timeout=SLOW_BEAT)
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        before = seed_final(engine, config, fault_input)
        with load_gate(engine, config) as gate:
            terminator = BackendTerminator(url=pg_url, everything=everything, gate=gate)
            outcome = run_job(config, on_tick=terminator)

        assert terminator.terminated, outcome.message
        assert len(terminator.terminated) >= (3 if everything else 1)  # + the job lock's
        assert "database error while loading staging" in outcome.message
        workers = assert_clean_failure(engine, config, outcome, before, terminator)
        assert any(w.worker_type == "writer" and (w.state, w.exit_code) == ("failed", 1)
                   for w in workers.values()), workers
    finally:
        engine.dispose()


# -- the parent process: SIGKILL, SIGTERM, SIGINT (the CLI, in its own session) ----------


def cli(tmp_path: Path, *args: str, name: str = "cli") -> subprocess.Popen:
    out = open(tmp_path / f"{name}.out", "w")  # noqa: SIM115 - closed by finish()
    err = open(tmp_path / f"{name}.err", "w")  # noqa: SIM115
    cmd = [sys.executable, "-m", "pipeline", "run", *args]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=out, stderr=err, start_new_session=True)


def finish(proc: subprocess.Popen, tmp_path: Path, name: str = "cli",
           timeout: float = 180) -> tuple[int, str, str]:
    code = proc.wait(timeout=timeout)
    return (code, (tmp_path / f"{name}.out").read_text(),
            (tmp_path / f"{name}.err").read_text())


def bus_segment_of(pid: int) -> str | None:
    """The bus a run's parent holds open (its fd on /dev/shm/pipeline_*)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(f"{SHM}/pipeline_"):
                return target.removeprefix(f"{SHM}/")
    except OSError:
        return None
    return None


def read_bus(name: str) -> np.ndarray | None:
    """Read the segment as a plain file: no SharedMemory object, so no tracker unlinks it."""
    try:
        return np.fromfile(SHM / name, dtype=np.int64).reshape(-1, len(Col))
    except (OSError, ValueError):
        return None


def wait_for_bus(proc: subprocess.Popen, ready: Callable[[np.ndarray], bool],
                 within: float = 120) -> tuple[str, np.ndarray]:
    """Poll the run's bus until ``ready(rows)``; fail if the run or its bus ends first."""
    deadline = time.monotonic() + within
    name = None
    while True:
        try:
            proc.wait(timeout=POLL_S)  # the pause between two looks, cut short by an exit
            pytest.fail(f"the run ended (exit {proc.returncode}) before the awaited state")
        except subprocess.TimeoutExpired:
            pass
        name = name or bus_segment_of(proc.pid)
        rows = read_bus(name) if name else None
        if rows is not None and len(rows) and ready(rows):
            return name, rows
        if name and rows is None:
            pytest.fail(f"bus {name} closed before the awaited state")
        if time.monotonic() > deadline:
            pytest.fail(f"no such bus state within {within:g} s (bus {name}, rows {rows})")


def wait_for_load_end(proc: subprocess.Popen, name: str, within: float = 120) -> None:
    """Every worker done, or the bus already closed, or the whole run already over."""
    def over() -> bool:
        if proc.poll() is not None:
            return True
        rows = read_bus(name)
        return rows is None or bool((rows[:, Col.STATE] == State.DONE).all())
    poll(over, within, "the load to end")


def loading(rows: np.ndarray) -> bool:
    """Every worker registered and running, and a writer has committed a batch."""
    return bool((rows[:, Col.PID] != 0).all() and (rows[:, Col.STATE] == State.RUNNING).all()
                and rows[rows[:, Col.WORKER_TYPE] == WorkerType.WRITER, Col.BATCHES].max() >= 1)


def descendants(pid: int) -> set[int]:
    return {p.pid for p in psutil.Process(pid).children(recursive=True)}


def the_run(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT run_id, status, exit_code, message "
                                 "FROM batch_run ORDER BY start_ts DESC")).first()


def cli_args(config: JobConfig, path: Path) -> list[str]:
    return ["--input", str(path), "--db", config.database_url, "--processors",
            str(PROCESSORS), "--batch-size", str(BATCH)]


@pytest.mark.parametrize("point", ["loading", "after_load"])
def test_sigkill_of_the_parent_takes_the_workers_and_the_segment_with_it(
        point: str, tmp_path: Path, fault_input: Path, job_config: JobConfig,
        engine: Engine) -> None:
    before = seed_final(engine, job_config, fault_input)
    proc = cli(tmp_path, *cli_args(job_config, fault_input))
    try:
        name, rows = wait_for_bus(proc, loading)
        family = descendants(proc.pid)  # the workers and the resource tracker
        assert {int(p) for p in rows[:, Col.PID]} <= family
        if point == "after_load":  # the parent reconciles and merges (or is already done)
            wait_for_load_end(proc, name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        code, _out, err = finish(proc, tmp_path)
    assert code == -signal.SIGKILL or (point == "after_load" and code == 0), err
    # PR_SET_PDEATHSIG takes the workers; the tracker then unlinks the segment and exits
    assert_all_gone(family)
    poll(lambda: not (SHM / name).exists(), GONE_WITHIN_S, f"segment {name} still exists")

    run = the_run(engine)
    if point == "loading":
        assert final_rows(engine, job_config) == before
        assert run.status == "RUNNING"  # nobody was left to write its end
    else:  # the MERGE is one transaction: all of it or nothing, never in between
        merged = is_merged(engine, job_config, before, fault_input, run.run_id)
        assert merged or final_rows(engine, job_config) == before, err
        assert run.status == "RUNNING" or (run.status == "SUCCEEDED" and merged), run
    # a killed run leaves no stale job lock: the next run of the job proceeds
    small = generate_file(tmp_path / "next.dat", 500, seed=5).path
    assert run_job(job_config.with_overrides(input_path=small)).exit_code == 0


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT],
                                     [signal.SIGINT, signal.SIGINT, signal.SIGTERM]],
                         ids=["SIGTERM", "SIGINT", "impatient"])
def test_sigterm_or_sigint_of_the_parent_stops_the_run_cleanly(
        signals: list[signal.Signals], tmp_path: Path, fault_input: Path,
        job_config: JobConfig, engine: Engine) -> None:
    before = seed_final(engine, job_config, fault_input)
    proc = cli(tmp_path, *cli_args(job_config, fault_input))
    try:
        name, rows = wait_for_bus(proc, loading)
        family = descendants(proc.pid)
        for sig in signals:  # an impatient operator: more signals while it cleans up
            os.kill(proc.pid, sig)
    finally:
        code, out, err = finish(proc, tmp_path)

    assert code == 3, err
    assert "INTERRUPTED" in out and "Traceback" not in out + err, err
    run = the_run(engine)
    assert (run.status, run.exit_code) == ("INTERRUPTED", 3)
    assert f"interrupted by signal {signals[0].name}" in run.message
    assert final_rows(engine, job_config) == before
    workers = worker_audit(engine, run.run_id)
    assert {int(p) for p in rows[:, Col.PID]} == {w.pid for w in workers.values()}
    assert all(w.exit_code is not None for w in workers.values()), workers
    assert_all_gone(family)
    assert not (SHM / name).exists()


# -- runs at the same time ---------------------------------------------------------------


def renamed_job(tmp_path: Path, name: str) -> Path:
    """The shipped job under another name: its own lock, the SAME tables."""
    return write_job(tmp_path / f"{name}.toml", ('name = "daily_transactions"', f'name = "{name}"'))


def keyed_input(path: Path, prefix: str, n: int) -> Path:
    return write_input(path, [detail(f"{prefix}{i}", (i * 37) % 100_000 - 40_000)
                              for i in range(n)])


@pytest.mark.postgresql
@pytest.mark.parametrize("tables", [
    "deployed",
    "missing",
])
def test_two_jobs_at_once_load_apart_and_merge_into_the_same_final(
        tables: str, tmp_path: Path, pg_url: str) -> None:
    engine = create_engine(pg_url, poolclass=NullPool)
    if tables == "deployed":
        job_tables(load_config(shipped_config())).metadata.create_all(engine)
    inputs = {"daily_a": keyed_input(tmp_path / "a.dat", "A", 20_000),
              "daily_b": keyed_input(tmp_path / "b.dat", "B", 15_000)}
    procs = {job: cli(tmp_path, str(renamed_job(tmp_path, job)), "--input", str(path),
                      "--db", pg_url, "--batch-size", "500", name=job)
             for job, path in inputs.items()}
    results = {job: finish(proc, tmp_path, job) for job, proc in procs.items()}
    try:
        for job, (code, out, err) in results.items():
            assert code == 0, f"{job}: {out}\n{err}"
        with engine.connect() as conn:
            runs = dict(conn.execute(text("SELECT job_name, run_id FROM batch_run")).all())
            assert set(runs) == set(inputs)
            for job, path in inputs.items():
                n = len(expected_from_file(path).final)
                staged = conn.execute(text("SELECT COUNT(*) FROM stg_transactions "
                                           "WHERE run_id = :r"), {"r": runs[job]}).scalar_one()
                merged = conn.execute(text("SELECT COUNT(*) FROM transactions "
                                           "WHERE last_run_id = :r"), {"r": runs[job]})
                failed = conn.execute(text("SELECT COUNT(*) FROM recon_audit WHERE run_id = :r "
                                           "AND passed = 'N'"), {"r": runs[job]})
                assert (staged, merged.scalar_one(), failed.scalar_one()) == (n, n, 0), job
            total = conn.execute(text("SELECT COUNT(*) FROM transactions")).scalar_one()
        assert total == 35_000
    finally:
        engine.dispose()


def test_a_second_run_of_the_same_job_is_refused_while_the_first_holds_the_lock(
        tmp_path: Path, job_config: JobConfig, engine: Engine) -> None:
    made = generate_file(tmp_path / "in.dat", 3_000, seed=8)
    config = job_config.with_overrides(input_path=made.path, heartbeat_timeout=SLOW_BEAT)
    second: dict[str, Any] = {}

    def run_the_second(_engine: Engine, _run_id: str) -> None:
        # the first run is loaded and holds the job lock until it has merged
        second["done"] = run_cli(tmp_path, "run", "--input", str(made.path),
                                 "--db", config.database_url, timeout=180)

    first = run_job(config, after_load=run_the_second)

    refused = second["done"]
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "already running" in refused.stdout + refused.stderr
    assert first.exit_code == 0, first.message
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT run_id, status, exit_code FROM batch_run")).all()
        merged = conn.execute(text("SELECT COUNT(*) FROM transactions WHERE last_run_id = :r"),
                              {"r": first.run_id}).scalar_one()
    assert sorted((r.status, r.exit_code) for r in runs) == [("REFUSED", 3), ("SUCCEEDED", 0)]
    assert merged == len(expected_from_file(made.path).final)
