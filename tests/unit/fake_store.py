"""An in-memory Store for ReconciliationService (pipeline.reconcile.Store): staging and
FINAL as Python rows, so the service's rules run with no database, as httpx's
MockTransport stands in for the network.

It does what the SQL does, in the plainest way: a key's last row (by source line)
survives, the MERGE writes each surviving row with the run's id, a rollback puts FINAL
back as it was. ``trigger`` stands for whatever else changes FINAL inside the MERGE's
transaction (a trigger, another writer): the checks after the MERGE must see it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.db.lock import FinalTransaction, HeldLock
from pipeline.db.repositories import Totals

Row = dict[str, Any]


@dataclass
class FakeStore:
    columns: tuple[str, ...]  # the business columns, key and amount among them
    key: tuple[str, ...]
    amount: str
    hash_of: str | None = None
    staged_rows: list[Row] = field(default_factory=list)  # each with run_id and source_line
    final_rows: dict[tuple[Any, ...], Row] = field(default_factory=dict)  # key -> row
    trigger: Callable[[dict[tuple[Any, ...], Row]], object] | None = None
    merges: list[bool] = field(default_factory=list)  # each MERGE's ``deduplicate``
    commits: int = 0
    rollbacks: int = 0
    staged_passes: int = 0  # passes over the surviving staging rows to digest them
    digest_passes: int = 0  # passes over the run's staging rows that sum their digests
    joins: int = 0  # exact comparisons of surviving staging rows with FINAL's

    # Store
    def connect(self) -> Any:
        return nullcontext(self)

    def reading(self) -> Any:
        return nullcontext(self)

    def cancel(self, conn: Any) -> None:
        """Nothing to stop: the pass beside the MERGE sums the lists at once."""

    @contextmanager
    def final_transaction(self, lock: HeldLock | None) -> Iterator[FinalTransaction]:
        before = {k: dict(row) for k, row in self.final_rows.items()}
        done = []

        def commit() -> None:
            self.commits += 1
            done.append(True)

        def rollback() -> None:
            self.final_rows = before
            self.rollbacks += 1
            done.append(True)

        try:
            yield FinalTransaction(self, commit, rollback)  # type: ignore[arg-type]
        finally:
            if not done:  # as own_transaction: rolled back unless committed
                rollback()

    def staging(self, conn: Any) -> FakeStore:
        return self

    def final(self, conn: Any) -> FakeStore:
        return self

    # staging
    def count_and_amount(self, run_id: str, digest: bool = False) -> Totals:
        rows = self._staged(run_id)
        found = self._totals(rows)
        if not digest:
            return found
        self.digest_passes += 1
        return found._replace(digest=sum(map(self.digest, rows)))

    def surviving_count_and_amount(self, run_id: str) -> Totals:
        return self._totals(self._last_per_key(self._staged(run_id)))

    def collapsed_at_lines(self, run_id: str, lines: Sequence[int]
                           ) -> tuple[Totals, list[int]] | None:
        at = [r for r in self._staged(run_id) if r["source_line"] in set(lines)]
        kept = {id(r) for r in self._last_per_key(at)}
        dropped = [r for r in at if id(r) not in kept]
        return self._totals(dropped), sorted(r["source_line"] for r in dropped)

    # FINAL
    def merge_run(self, run_id: str, updated_ts: datetime, deduplicate: bool = True,
                  superseded: Sequence[int] = ()) -> int:
        self.merges.append(deduplicate)
        source, _ = self.survivors(run_id, deduplicate, superseded)
        for row in source:
            self.final_rows[self._key(row)] = {**{c: row[c] for c in self.columns},
                                          "last_run_id": run_id, "updated_ts": updated_ts}
        if self.trigger is not None:
            self.trigger(self.final_rows)
        # a key met twice in the plain MERGE's source is one FINAL row touched (SQLite)
        return len({self._key(r) for r in source})

    def count_and_amount_for_run(self, run_id: str, digest: bool = False) -> Totals:
        rows = [r for r in self.final_rows.values() if r["last_run_id"] == run_id]
        found = self._totals(rows)
        return found._replace(digest=sum(map(self.digest, rows))) if digest else found

    def get_count_for_run(self, run_id: str) -> int:
        return self.count_and_amount_for_run(run_id).rows

    def survivors(self, run_id: str, deduplicate: bool, superseded: Sequence[int] = ()
                  ) -> tuple[list[Row], dict[str, Any]]:
        staged = self._staged(run_id)
        if deduplicate:
            return self._last_per_key(staged), {"run_id": run_id}
        return [r for r in staged if r["source_line"] not in set(superseded)], {"run_id": run_id}

    def staged_digest(self, source: list[Row], params: dict[str, Any]) -> int | None:
        self.staged_passes += 1
        return sum(map(self.digest, source))

    def columns_equal_count(self, source: list[Row], params: dict[str, Any]) -> int:
        self.joins += 1
        return sum(self._final_of(r, params) == self._values(r) for r in source)

    def columns_differing(self, source: list[Row], params: dict[str, Any],
                          limit: int) -> list[Any]:
        """As FinalRepository's: (key..., line, staging values..., FINAL values...,
        present) for the columns that are not the key."""
        compared = [c for c in self.columns if c not in self.key]
        found = []
        for row in sorted(source, key=lambda r: r["source_line"]):
            final = self._final_of(row, params)
            if final == self._values(row):
                continue
            theirs = [None] * len(compared) if final is None else [final[c] for c in compared]
            found.append((*self._key(row), row["source_line"], *(row[c] for c in compared),
                          *theirs, final is not None))
        return found[:limit]

    # helpers
    def digest(self, row: Row) -> int:
        """A row's digest over every stored column (pipeline.db.digests' stand-in)."""
        return hash(tuple(row[c] for c in self.columns)) & (2**63 - 1)

    def _staged(self, run_id: str) -> list[Row]:
        return [r for r in self.staged_rows if r["run_id"] == run_id]

    def _key(self, row: Row) -> tuple[Any, ...]:
        return tuple(row[k] for k in self.key)

    def _values(self, row: Row) -> Row:
        return {c: row[c] for c in self.columns}

    def _final_of(self, row: Row, params: dict[str, Any]) -> Row | None:
        final = self.final_rows.get(self._key(row))
        if final is None or final["last_run_id"] != params["run_id"]:
            return None
        return self._values(final)

    def _last_per_key(self, rows: list[Row]) -> list[Row]:
        last = {self._key(r): r for r in sorted(rows, key=lambda r: r["source_line"])}
        return sorted(last.values(), key=lambda r: r["source_line"])

    def _totals(self, rows: list[Row]) -> Totals:
        hashed = None if self.hash_of is None else sum(int(r[self.hash_of]) for r in rows)
        return Totals(len(rows), sum(r[self.amount] for r in rows), hashed)
