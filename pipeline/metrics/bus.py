"""The metrics bus: one shared-memory int64 array, one row per worker, no locks.

The parent creates the bus *before* forking; forked workers inherit the object and write
their own row through the inherited mapping. They never attach by name and never unlink
(facts.md: "A child that calls unlink() destroys the parent's segment", and mixing the
stdlib ``multiprocessing.shared_memory`` with ``multiprocess`` gives a second tracker that
deletes the segment). Only the creating process closes and unlinks.

Workers update the bus once per batch (facts.md: a local int plus one ``+=`` per 10k batch
costs ~1.03x a plain local count; a shared ``+=`` per record costs 8x). Each worker owns
its row: two processes doing ``+=`` on the same cell lose updates, distinct cells do not.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import warnings
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import numpy as np
from multiprocess import resource_tracker, shared_memory

from pipeline.money import split_amount

_SHM_DIR = Path("/dev/shm")
# POSIX shm names become one file name: keep the prefix to a safe, short character set.
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ITEM = np.dtype(np.int64).itemsize


class Col(IntEnum):
    """Columns of the bus. Amounts are split in two cells (money.split_amount)."""

    PID = 0
    WORKER_TYPE = 1  # WorkerType
    STATE = 2  # State
    START_NS = 3  # time.time_ns() at register
    END_NS = 4  # time.time_ns() at finish
    HEARTBEAT_NS = 5  # time.monotonic_ns(): CLOCK_MONOTONIC is system-wide on Linux
    RECORDS = 6  # processor: records read; writer: rows committed
    ERRORS = 7  # processor: records rejected; writer: rows refused by the database
    AMOUNT_HI = 8  # processor: sum of accepted amounts; writer: sum of committed amounts
    AMOUNT_LO = 9
    READ_AMOUNT_HI = 10  # processor: sum of every readable detail amount (accepted+rejected)
    READ_AMOUNT_LO = 11
    UNREADABLE = 12  # processor: rejected records whose amount could not be read
    BATCHES = 13
    MISPLACED = 14  # processor: header/trailer records found inside the detail range
    ROW_DIGEST = 15  # processor: exact sum of its accepted rows' digests (pipeline.db.digests)
    # processor, with a trailer hash total: the hashed field summed over the records read
    # and accepted, each kept to the trailer field's digits (< 10**18), and the records
    # whose field could not be read (recon.values.HashTotal)
    HASH_READ = 16
    HASH_ACCEPTED = 17
    UNHASHED = 18
    # processor: exact sum of its accepted rows' value digests, over the stored columns
    # alone, as FINAL holds them (pipeline.db.digests)
    VALUE_DIGEST = 19


class State(IntEnum):
    NOT_STARTED = 0
    RUNNING = 1
    DONE = 2
    FAILED = 3  # the worker caught an exception and is exiting non-zero


class WorkerType(IntEnum):
    PROCESSOR = 0
    WRITER = 1

    @property
    def label(self) -> str:
        """The designers' spelling: 'processor' or 'writer'."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: WorkerType | int | str) -> WorkerType:
        if isinstance(value, str):
            return cls[value.upper()]
        return cls(value)


class BusClosedError(RuntimeError):
    """The bus was closed; its memory is gone and must not be touched."""


class MetricsBus:
    """Shared-memory int64 array of shape (n_workers, len(Col)); see the module docstring."""

    def __init__(self, shm: shared_memory.SharedMemory, n_workers: int) -> None:
        self._shm: shared_memory.SharedMemory | None = shm
        self._n_workers = n_workers
        self._name: str = shm.name
        self._owner_pid = os.getpid()
        # frombuffer, not np.ndarray(buffer=...): it holds a buffer export, so a view that
        # outlives close() makes shm.close() raise BufferError instead of the later read
        # segfaulting (facts.md, "Shared memory": ndarray(buffer=) + close + read = segfault).
        count = n_workers * len(Col)
        flat = np.frombuffer(shm.buf, dtype=np.int64, count=count)
        self._array: np.ndarray | None = flat.reshape(n_workers, len(Col))

    # -- creation and teardown (parent only) -------------------------------------------

    @classmethod
    def create(
        cls,
        n_workers: int,
        *,
        prefix: str = "pipeline",
        worker_types: Sequence[WorkerType | int | str] | None = None,
    ) -> MetricsBus:
        """Create a zero-filled bus under an unguessable name ``{prefix}_{16 hex}``.

        ``worker_types`` (optional, one per worker id) pre-fills WORKER_TYPE so a worker that
        never started is still reported with the right type.
        """
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"bad shared-memory prefix {prefix!r}")
        # The stdlib creates the segment O_CREAT|O_EXCL with mode 0600: nobody else can
        # read it, and an unguessable name means nobody can pre-create it either.
        name = f"{prefix}_{secrets.token_hex(8)}"
        size = n_workers * len(Col) * _ITEM
        # the segment is registered with the resource tracker right after it is created:
        # start the tracker first, so a tracker that cannot start leaves no segment behind
        resource_tracker.ensure_running()
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except BaseException:
            _unlink_quietly(name)  # created, then its registration failed
            raise
        bus = cls(shm, n_workers)
        bus._live().fill(0)
        if worker_types is not None:
            bus._prefill_types(worker_types)
        return bus

    def _prefill_types(self, worker_types: Sequence[WorkerType | int | str]) -> None:
        if len(worker_types) != self._n_workers:
            raise ValueError(f"worker_types has {len(worker_types)} entries, not {self._n_workers}")
        types = [WorkerType.parse(t) for t in worker_types]
        self._live()[:, Col.WORKER_TYPE] = np.array(types, dtype=np.int64)

    def close(self) -> None:
        """Drop the views, unmap and unlink the segment. Idempotent.

        In a forked child this only unmaps: a child's unlink would destroy the parent's
        segment (facts.md).
        """
        if self._shm is None:
            return
        shm, self._shm, self._array = self._shm, None, None  # views dropped BEFORE close
        try:
            shm.close()
        except BufferError:
            # A caller still holds a row()/view: the mapping stays alive until it is released
            # (no segfault), but the name is still unlinked below so nothing leaks.
            warnings.warn(
                f"metrics bus {self._name}: a numpy view outlived close()",
                ResourceWarning,
                stacklevel=2,
            )
        if os.getpid() == self._owner_pid:
            shm.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __reduce__(self) -> NoReturn:
        # Attaching by name in a non-forked process unlinks the segment at its exit unless
        # it unregisters from its tracker (facts.md): the bus travels by fork only.
        raise TypeError("MetricsBus is inherited by fork, never pickled")

    # -- reading ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The segment name, without the leading slash (the file name in /dev/shm)."""
        return self._name

    @property
    def n_workers(self) -> int:
        return self._n_workers

    @property
    def closed(self) -> bool:
        return self._shm is None

    def _live(self) -> np.ndarray:
        if self._array is None:
            raise BusClosedError(f"metrics bus {self._name} is closed")
        return self._array

    def row(self, worker_id: int) -> np.ndarray:
        """A 1-D view of one worker's row (writes go straight to shared memory)."""
        array = self._live()
        # Negative ids would silently address another worker's row.
        if not 0 <= worker_id < self._n_workers:
            raise IndexError(f"worker id {worker_id} outside 0..{self._n_workers - 1}")
        return array[worker_id]

    def snapshot(self) -> np.ndarray:
        """A private copy of the whole bus (~1 us for 64x16, facts.md)."""
        return np.copy(self._live())

    # -- writing (a worker, its own row only) -------------------------------------------

    def register(self, worker_id: int, worker_type: WorkerType | int | str) -> None:
        """Mark the calling process as the running owner of row ``worker_id``."""
        row = self.row(worker_id)
        row[Col.PID] = os.getpid()
        row[Col.WORKER_TYPE] = WorkerType.parse(worker_type)
        row[Col.START_NS] = time.time_ns()
        row[Col.HEARTBEAT_NS] = time.monotonic_ns()
        row[Col.STATE] = State.RUNNING

    def beat(self, worker_id: int) -> None:
        self.row(worker_id)[Col.HEARTBEAT_NS] = time.monotonic_ns()

    def add_batch(
        self,
        worker_id: int,
        records: int,
        errors: int,
        amount_total_so_far: int,
        read_amount_total_so_far: int = 0,
        unreadable: int = 0,
        misplaced: int = 0,
        batches: int = 1,
        digest_total_so_far: int = 0,
        hashes_so_far: tuple[int, int] = (0, 0),
        value_digest_so_far: int = 0,
        unhashed: int = 0,
    ) -> None:
        """Publish one batch (or ``batches``, committed together): counts are added,
        amounts (and a processor's digest and hash sums: read, accepted) overwritten
        from running totals.

        Workers keep exact Python-int running totals and pass them here, so a lost or
        repeated call can never corrupt the amount; the int64 cells cannot overflow.
        """
        row = self.row(worker_id)
        # Split first: an OverflowError must leave the row untouched.
        amount = split_amount(amount_total_so_far)
        read_amount = split_amount(read_amount_total_so_far)
        digest = np.int64(digest_total_so_far)  # 2**31 rows of 32-bit digests fit
        values = np.int64(value_digest_so_far)
        hash_read, hash_accepted = (np.int64(h) for h in hashes_so_far)
        row[Col.RECORDS] += records
        row[Col.ERRORS] += errors
        row[Col.UNREADABLE] += unreadable
        row[Col.MISPLACED] += misplaced
        row[Col.AMOUNT_HI], row[Col.AMOUNT_LO] = amount
        row[Col.READ_AMOUNT_HI], row[Col.READ_AMOUNT_LO] = read_amount
        row[Col.ROW_DIGEST] = digest
        row[Col.VALUE_DIGEST] = values
        row[Col.HASH_READ], row[Col.HASH_ACCEPTED] = hash_read, hash_accepted
        row[Col.UNHASHED] += unhashed
        row[Col.BATCHES] += batches
        row[Col.HEARTBEAT_NS] = time.monotonic_ns()

    def finish(self, worker_id: int, state: State | int) -> None:
        """Record how the worker ended (DONE or FAILED) just before it exits."""
        row = self.row(worker_id)
        row[Col.END_NS] = time.time_ns()
        row[Col.HEARTBEAT_NS] = time.monotonic_ns()
        row[Col.STATE] = State(state)


def leaked_segments(prefix: str = "pipeline") -> list[str]:
    """Names in /dev/shm starting with ``prefix`` (for tests and troubleshooting)."""
    if not _SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in _SHM_DIR.iterdir() if p.name.startswith(prefix))


def _unlink_quietly(name: str) -> None:
    try:
        (_SHM_DIR / name).unlink()
    except OSError:
        pass  # never created, or not on Linux's /dev/shm
