"""The copybook reader never crashes: real copybooks, mutated as a new user's typing would.

Every mutation either loads (exit 0) or is refused with a one-line CopybookError/
ConfigError (exit 2): never another exception, never more than 2 s, never more than
200 MB of new address space (RLIMIT_AS lowered around each example, so a runaway
allocation is a MemoryError, which fails the test, not a machine that swaps). A small
sample goes through ``python -m pipeline validate`` in a real process, its peak memory
taken from the kernel (wait4).
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.jobs import shipped_config
from pipeline.layouts.copybook import parse_copybook
from tests.integration.test_copybook import REALISTIC

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SHIPPED_BOOK = (shipped_config("daily_transactions_ebcdic").parent
                / "daily_transactions_ebcdic.cpy").read_text()
CONFIG = shipped_config("daily_transactions_ebcdic").read_text()
MEMORY_LIMIT = 200 << 20
SECONDS = 2.0

# what people type by mistake, or what real copybooks hold that this reader must survive
SNIPPETS = [
    "           05  FILLER PIC X OCCURS 999999999999 TIMES.",
    "           05  BIG PIC X(99999999999).",
    "           05  NONE PIC X(0).",
    "           05  ALT REDEFINES NOSUCH PIC X(4).",
    "           05  ALT REDEFINES AMOUNT PIC X(400).",
    "           05  TWO PIC X PIC 9.",
    "           05  T OCCURS 0 TIMES PIC X.",
    "           05  T OCCURS 30000 TIMES.",
    "               10  U OCCURS 30000 TIMES PIC X.",
    "      -    TEM PIC X(3).",
    "           05  LONG-NAME-THAT-RUNS-ON-AND-ON                     PIC X(40).    X",
    "           COPY MEMBER.",
    "           05  N PIC S9(40) COMP-3.",
    "           05  D OCCURS 1 TO 5 TIMES DEPENDING ON N PIC X.",
    "       66  R RENAMES A THRU B.",
    "           88  FLAG VALUE 'Y' 'N'.",
    "      *    A COMMENT",
    "       01  OTHER-REC.",
    "           05  X PIC X(2)V9.",
    "           05  Q PIC 9(2)P(3)V9.",
    "           05  Q PIC S9(5) SIGN LEADING SEPARATE COMP-3.",
    "           05  Q PIC X(5) VALUE 'UNCLOSED",
    "\t05\tTAB PIC X.",
    "\x00\xff\ufeff 05 WEIRD PIC X.",
]
NUMBERS = st.one_of(st.integers(0, 40), st.integers(0, 40_000),
                    st.sampled_from([0, 1, 32760, 32761, 99999999999, 999999999999, 10**30]))


@st.composite
def mutated(draw: st.DrawFn, book: str) -> str:
    """``book`` after 1-4 edits: lines deleted, duplicated, inserted, numbers changed,
    tokens swapped, characters and random text put anywhere."""
    lines = book.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        op = draw(st.sampled_from(["delete", "duplicate", "insert", "number", "number",
                                   "swap", "char", "text", "truncate"]))
        if not lines:
            lines = [draw(st.sampled_from(SNIPPETS))]
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(SNIPPETS + lines)))
        elif op == "number":
            lines[i] = _new_number(lines[i], draw(NUMBERS), draw(st.integers(0, 10)))
        elif op == "swap":
            words = lines[i].split(" ")
            a, b = draw(st.integers(0, len(words) - 1)), draw(st.integers(0, len(words) - 1))
            words[a], words[b] = words[b], words[a]
            lines[i] = " ".join(words)
        elif op == "char":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.sampled_from(list(".()'\"-*> 9XS"))) + lines[i][at:]
        elif op == "text":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(max_size=12)) + lines[i][at:]
        else:
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
    return "\n".join(lines) + "\n"


def _new_number(line: str, number: int, which: int) -> str:
    found = list(re.finditer(r"[0-9]+", line))
    if not found:
        return line
    m = found[which % len(found)]
    return line[:m.start()] + str(number) + line[m.end():]


@contextmanager
def bounded_memory(extra: int) -> Iterator[None]:
    """This process may map at most ``extra`` more bytes until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class TooSlow(Exception):
    """The example spun for more than SECONDS of CPU."""


@contextmanager
def bounded_cpu(seconds: float) -> Iterator[None]:
    """TooSlow raised inside the block after ``seconds`` of CPU (SIGPROF: SIGALRM belongs
    to pytest-timeout), so a spinning parser fails this example instead of hanging."""
    def stop(signum: int, frame: object) -> None:
        raise TooSlow(f"more than {seconds} s of CPU")

    previous = signal.signal(signal.SIGPROF, stop)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def outcome(load: Callable[[], object]) -> str:
    """'ok', or 'refused' for a one-line ConfigError; anything else fails the test."""
    start = time.monotonic()
    try:
        with bounded_cpu(SECONDS), bounded_memory(MEMORY_LIMIT):
            load()
        result = "ok"
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc), repr(exc)
        result = "refused"
    except TooSlow:
        # re-raised from here: a traceback through the signal handler can lack line numbers
        raise AssertionError(f"took more than {SECONDS} s of CPU") from None
    assert time.monotonic() - start < SECONDS
    return result


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "job.toml").write_text(CONFIG)
    return d


FUZZ = settings(max_examples=1500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(book=mutated(SHIPPED_BOOK))
def test_a_mutated_shipped_copybook_loads_or_is_refused(job_dir: Path, book: str) -> None:
    """The whole copybook -> job layout path (config, decoders, column names)."""
    (job_dir / "daily_transactions_ebcdic.cpy").write_text(book, encoding="utf-8")
    outcome(lambda: load_config(job_dir / "job.toml"))


@settings(FUZZ, max_examples=700)
@given(book=mutated(REALISTIC))
def test_a_mutated_realistic_copybook_parses_or_is_refused(book: str) -> None:
    outcome(lambda: parse_copybook(book, "book.cpy"))


def test_the_mutations_do_reach_both_outcomes(job_dir: Path) -> None:
    """The fuzz tests above would pass vacuously if every mutant were refused (or none)."""
    (job_dir / "daily_transactions_ebcdic.cpy").write_text(SHIPPED_BOOK)
    assert outcome(lambda: load_config(job_dir / "job.toml")) == "ok"
    (job_dir / "daily_transactions_ebcdic.cpy").write_text(SHIPPED_BOOK.replace(
        "PIC X(40).", "PIC X(99999999999)."))
    assert outcome(lambda: load_config(job_dir / "job.toml")) == "refused"
    with pytest.raises(MemoryError), bounded_memory(MEMORY_LIMIT):
        # untouched pages, so harmless if the bound did not hold; far past it, so that
        # heap the process freed earlier (still mapped) cannot hold it either
        np.empty(2 << 30, np.uint8)
    with pytest.raises(TooSlow), bounded_cpu(0.2):
        while True:
            pass


# Linux keeps a process's peak RSS across exec: a child forked from this test process (a
# few hundred MB late in the suite) would report this process's size as its own. A small
# launcher forks the measured process instead, and reports its peak from wait4.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_bounded(cwd: Path, *args: str, timeout: float) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of ``python -m pipeline ARGS``."""
    peak = cwd / "peak.txt"
    with open(cwd / "err.txt", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(peak), "-m", "pipeline",
                                 *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        # a hang fails the test: the launcher and the run, killed together (exit -9)
        killer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        killer.start()
        try:
            code = proc.wait()
        finally:
            killer.cancel()
        err.seek(0)
        return code, err.read(), int(peak.read_text()) if peak.exists() else 0


@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(book=mutated(SHIPPED_BOOK))
def test_validate_on_a_mutated_copybook_never_shows_a_traceback(
        tmp_path_factory: pytest.TempPathFactory, book: str) -> None:
    from pipeline.generate_mainframe import generate_mainframe_file

    d = tmp_path_factory.mktemp("validate")
    (d / "job.toml").write_text(CONFIG)
    (d / "daily_transactions_ebcdic.cpy").write_text(book, encoding="utf-8")
    generate_mainframe_file(d / "in.bin", 50, seed=3)
    code, stderr, peak = run_bounded(d, "validate", "job.toml", "--input", "in.bin",
                                     timeout=60)
    # 1: the mutant still loads but reads the sample differently (rejects, a trailer off)
    assert code in (0, 1, 2), stderr
    assert "Traceback" not in stderr
    assert peak < MEMORY_LIMIT, peak  # the whole process, interpreter included (~60 MB)
