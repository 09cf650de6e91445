"""Staging's sum of row digests, summed beside the MERGE.

processed_to_staging_columns compares the processors' sum of row digests with the sum of
the run's staging rows (pipeline.db.digests). Staging's is a pass over every row of the
run, and on SQLite a Python function per row: 0.6-0.7 s for 1M rows, a tenth of the night
benchmark's MERGE. Nothing needs the sum before the MERGE commits: so it is summed on a
connection of its own, in a thread, while the job checks the rest and MERGEs. The
database does that work on another core (sqlite3 and psycopg release the GIL while a
statement runs; SQLite calls the row hash back in this thread, which the MERGE's leaves
free). ReconciliationService waits for the sum before it decides anything (a commit, a
failed check, the audit); should it differ from the processors', the MERGE is rolled back
and the checks are decided again with the sum known first: the same results, the same
audit, FINAL untouched.

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

    from pipeline.reconcile import Store


class StagingDigest:
    """``with StagingDigest(store, run_id) as beside:`` the run's staging rows and their
    digest sum, counted in a thread from the moment the block starts; ``result()`` waits
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
        self._found: tuple[int, int] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._sum, name="staging-digest", daemon=True)

    def __enter__(self) -> StagingDigest:
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
                        self._found = self._store.staging(connection).digest_total(
                            self._run_id)
                finally:
                    with self._lock:
                        self._connection = None
        except BaseException as exc:  # the caller's to raise, in its own thread
            self._error = exc
        finally:
            self._reading.set()

    def result(self) -> tuple[int, int]:
        """(rows, their digest sum); the pass's error, if it failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._found is not None
        return self._found

    def known(self) -> tuple[int, int] | None:
        """``result()`` if the pass is over and succeeded, else None (no wait)."""
        if self._thread.is_alive() or self._error is not None:
            return None
        return self._found
