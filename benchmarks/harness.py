"""Measuring a command in a fresh process: wall time, CPU-seconds, peak memory.

- CPU: ``getrusage(RUSAGE_CHILDREN)`` deltas around the child, which include every
  descendant the child waited for (the job joins its workers); on PostgreSQL also the
  server's CPU, from the postmaster's own and reaped-children times plus its live
  children (backends, WAL writer, checkpointer) - shared with anyone else on the server.
- Bytecode: the project's modules are compiled once before the first command, as an
  installed package's are (pip compiles on install): this machine sets
  PYTHONDONTWRITEBYTECODE, and a checkout's modules would otherwise be compiled again at
  every start (0.2 s of the job's wall time against a floor that imports nothing timed).
- Memory: a thread samples the child's process tree every ``SAMPLE_S`` and keeps the
  peak of the sums of PSS (each shared page split among the processes sharing it: the
  tree's real footprint) and of RSS (shared pages counted in every process: an upper
  bound). Peaks shorter than the sampling interval can be missed.
"""

from __future__ import annotations

import compileall
import functools
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

SAMPLE_S = 0.2
REAP_S = 0.3
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Measurement:
    wall: float
    cpu: float  # client processes: the child and all its descendants
    server_cpu: float | None  # PostgreSQL server processes, None on SQLite
    peak_rss: int  # bytes, sum over the child's process tree
    peak_pss: int
    report: dict[str, Any] = field(default_factory=dict)  # the child's JSON on stdout

    @property
    def total_cpu(self) -> float:
        return self.cpu + (self.server_cpu or 0.0)


class BenchmarkError(RuntimeError):
    """A measured command failed: its output is in the message."""


# -- process trees -----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Direct children, from /proc (cheap); psutil where /proc has no children files."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        try:
            found = [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    return found


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) summed over ``pid`` and all its descendants, in bytes."""
    rss = pss = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            info = psutil.Process(current).memory_full_info()
        except psutil.Error:
            continue
        rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
        todo += _children(current)
    return rss, pss


class PeakSampler:
    """Peaks of the summed RSS and PSS of a process tree, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_rss, self.peak_pss = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = tree_memory(self.pid)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def postmaster_pid() -> int | None:
    """The local PostgreSQL postmaster: a ``postgres`` process whose parent is not one."""
    for proc in psutil.process_iter(["name", "ppid"]):
        if proc.info["name"] != "postgres":
            continue
        try:
            if psutil.Process(proc.info["ppid"]).name() != "postgres":
                return proc.pid
        except psutil.Error:
            continue
    return None


def server_cpu(postmaster: int | None) -> float | None:
    """CPU-seconds of the whole server so far: postmaster, reaped and live children."""
    if postmaster is None:
        return None
    try:
        root = psutil.Process(postmaster)
        t = root.cpu_times()
        children = root.children()
    except psutil.Error:
        return None
    total = t.user + t.system + t.children_user + t.children_system
    for child in children:
        try:
            times = child.cpu_times()
        except psutil.Error:  # exited since the listing: reaped, so in children_* next time
            continue
        total += times.user + times.system
    return total


# -- running a command -------------------------------------------------------------------


@functools.cache
def compiled() -> None:
    """The project's modules compiled to bytecode (``__pycache__``), once a process."""
    for package in ("pipeline", "recon", "benchmarks"):
        compileall.compile_dir(ROOT / package, quiet=1)


def measure(argv: Sequence[str], postmaster: int | None = None,
            timeout: float = 7200, sample_memory: bool = True) -> Measurement:
    """Run ``python -m ...`` argv in a fresh process and measure it.

    ``sample_memory=False``: no peak memory (0), for a wall time compared with a floor
    timed in process: the sampler reads /proc/PID/smaps of the whole tree five times a
    second, ~0.4 s of CPU over a 10 s run, taken from the job on a small machine.
    """
    compiled()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    server_before, cpu_before = server_cpu(postmaster), _children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)
    sampler = PeakSampler(proc.pid)
    if sample_memory:
        with sampler:
            out, err = proc.communicate(timeout=timeout)
    else:
        out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - start
    cpu = _children_cpu() - cpu_before
    if postmaster is not None:
        time.sleep(REAP_S)  # let the postmaster reap the run's backends: their CPU counts
    server_after = server_cpu(postmaster)
    if proc.returncode != 0:
        raise BenchmarkError(f"{' '.join(argv)} exited {proc.returncode}:\n"
                             f"{err.decode(errors='replace')[-2000:]}")
    report = json.loads(out) if out.strip().startswith(b"{") else {}
    server = (server_after - server_before
              if server_after is not None and server_before is not None else None)
    return Measurement(wall, cpu, server, sampler.peak_rss, sampler.peak_pss, report)


# -- fresh databases ---------------------------------------------------------------------


@dataclass
class Target:
    """Where runs go: ``sqlite`` (a new file each run) or a PostgreSQL server."""

    backend: str
    workdir: Path
    pg_admin_url: str | None = None
    postmaster: int | None = None

    @property
    def label(self) -> str:
        return "SQLite" if self.backend == "sqlite" else "PostgreSQL"

    @contextmanager
    def fresh_database(self) -> Iterator[str]:
        """A URL of an empty database, removed afterwards."""
        name = f"bench_{secrets.token_hex(6)}"
        if self.backend == "sqlite":
            path = self.workdir / f"{name}.db"
            try:
                yield f"sqlite:///{path}"
            finally:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        assert self.pg_admin_url is not None
        admin = create_engine(self.pg_admin_url, poolclass=NullPool,
                              isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                yield make_url(self.pg_admin_url).set(database=name).render_as_string(
                    hide_password=False)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()

    @contextmanager
    def scratch_dir(self) -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def pg_reachable(url: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: skip PostgreSQL
        return str(exc).splitlines()[0]


# -- the commands measured ---------------------------------------------------------------


def run_job(target: Target, path: Path, processors: int | None = None,
            writers: int | None = None) -> Measurement:
    """The job, as a user runs it, in a fresh process against a fresh database."""
    with target.fresh_database() as url, target.scratch_dir() as out:
        argv = ["-m", "benchmarks.runjob", "--input", str(path), "--db", url,
                "--output-dir", str(out)]
        if processors:
            argv += ["--processors", str(processors)]
        if writers:
            argv += ["--writers", str(writers)]
        m = measure(argv, target.postmaster)
    if m.report.get("exit_code") != 0:
        raise BenchmarkError(f"job failed: {m.report}")
    return m


def run_module(target: Target, module: str, path: Path, *extra: str) -> Measurement:
    """A benchmark module (floor, a peer) that takes ``--input`` and ``--db``."""
    with target.fresh_database() as url:
        return measure(["-m", module, "--input", str(path), "--db", url, *extra],
                       target.postmaster)


# -- alternation -------------------------------------------------------------------------


Variant = Callable[[], Measurement]


def alternate(variants: dict[str, Variant], reps: int,
              progress: Callable[[str], None]) -> dict[str, list[Measurement]]:
    """Each repetition runs every variant once, starting at a rotating position."""
    names = list(variants)
    results: dict[str, list[Measurement]] = {n: [] for n in names}
    for rep in range(reps):
        for i in range(len(names)):
            name = names[(rep + i) % len(names)]
            m = variants[name]()
            results[name].append(m)
            progress(f"  rep {rep + 1}/{reps} {name}: {m.wall:.2f} s")
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def med(ms: Sequence[Measurement], key: Callable[[Measurement], float]) -> float:
    return median([key(m) for m in ms])


def phase(m: Measurement, name: str) -> float:
    return float(m.report.get("phases", {}).get(name, 0.0))
