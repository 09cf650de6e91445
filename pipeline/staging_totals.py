"""Staging's totals and digest sum, summed beside the MERGE.

The checks trailer -> read -> staging compare the processors' figures with the run's
staging rows: their count, amount total, hash total and sum of row digests
(processed_to_staging_columns, pipeline.db.digests). Staging's side is one pass over every
row of the run, and on SQLite a Python function per row for the digests: 0.8-1.0 s for
1M rows, a seventh of the night benchmark's MERGE. Nothing needs staging's figures before
the MERGE commits: the checks take the processors' as staging's (each check compares
staging with them, so the checks pass exactly when staging's are the same) and the pass
runs on a connection of its own, in a thread, while the job MERGEs. The database does
that work on another core (sqlite3 and psycopg release the GIL while a statement runs;
SQLite calls the row hash back in this thread, which the MERGE's leaves free).
ReconciliationService waits for staging's figures before it decides anything (a commit, a
failed check, the audit); should any differ from the processors', the MERGE is rolled
back and the checks are decided again with staging's figures read first: the same
results, the same audit, FINAL untouched.

SQLite shares its file by locks: the thread takes its read lock before the MERGE starts
(``read_beside``), so the MERGE cannot shut it out. A MERGE that must write pages to the
file before the pass is done waits for it (its busy handler) or, past the lock timeout,
keeps them in its cache a while longer: never an error, and never a wait longer than the
pass. PostgreSQL would plan the pass with parallel workers, which would take the cores
the MERGE runs on: it keeps to one process.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import TracebackType

    from pipeline.db.repositories import Totals
    from pipeline.reconcile import Store


class StagingTotals:
    """``with StagingTotals(store, run_id) as beside:`` the run's staging totals, digest
    sum included, summed in a thread from the moment the block starts; ``result()`` waits
    for them. Leaving the block cancels the pass if it still runs, and waits for the
    thread (a cancelled statement ends at once)."""

    def __init__(self, store: Store, run_id: str) -> None:
        self._store, self._run_id = store, run_id
        self._reading = threading.Event()  # the thread holds its view (or failed to)
        self._stop = threading.Event()
        # the pass's connection while it is open: cancelled under the lock, so never
        # after the thread has closed it (a closed sqlite3 connection refuses interrupt())
        self._lock = threading.Lock()
        self._connection: Any = None
        self._found: Totals | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._sum, name="staging-totals", daemon=True)

    def __enter__(self) -> StagingTotals:
        self._thread.start()
        self._reading.wait()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        with self._lock:
            if self._connection is not None:
                self._store.cancel(self._connection)
        self._thread.join()

    def _sum(self) -> None:
        try:
            with self._store.reading() as connection:
                with self._lock:
                    self._connection = connection
                self._reading.set()
                try:
                    if not self._stop.is_set():
                        self._found = self._store.staging(connection).count_and_amount(
                            self._run_id, digest=True)
                finally:
                    with self._lock:
                        self._connection = None
        except BaseException as exc:  # the caller's to raise, in its own thread
            self._error = exc
        finally:
            self._reading.set()

    def result(self) -> Totals:
        """The run's staging totals, digest sum included; the pass's error, if it failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._found is not None
        return self._found

    def known(self) -> Totals | None:
        """``result()`` if the pass is over and succeeded, else None (no wait)."""
        if self._thread.is_alive() or self._error is not None:
            return None
        return self._found
