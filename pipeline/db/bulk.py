"""The fastest correct staging load per database.

A loader has two halves: ``encode`` runs in the processor (in parallel) and turns a
batch of parsed columns into one ``bytes`` payload; ``load`` runs in the writer and
hands that payload to the driver's bulk path. Payloads are bytes because
``multiprocess.Queue`` pickles with dill's pure-Python pickler (~10 us per small
object, facts.md): one bytes object per batch crosses the queue at memcpy speed.
Row tuples of str, int and None travel as ``marshal`` (both ends are the same forked
interpreter): 2.5x faster to write than pickle with its memo, as fast to read.

The generic loader here is the stdlib ``executemany`` of row tuples; each database's
module in ``pipeline.db.backends`` chooses its loader:

- SQLite: the rows' values in one flat list (``unmemoized``), inserted many rows a
  statement (2.6x SQLAlchemy's insert); the writer commits every 100k rows or when it
  has nothing waiting (pipeline.workers.writer).
- PostgreSQL: ``COPY ... FROM STDIN`` with text the processors build in numpy
  (~10x executemany; pipeline.db.copy_text, not in the writer).
- Oracle: python-oracledb array ``executemany`` with ``batcherrors=True``: a refused
  row is counted, not fatal, and the reconciliation shows it.
"""

from __future__ import annotations

import io
import marshal
import pickle
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import insert
from sqlalchemy.engine import Dialect

from pipeline.db.backends import backend_for
from pipeline.db.digests import column_digests
from pipeline.db.tables import JobTables
from pipeline.layouts.fields import FieldType, Layout


@dataclass(frozen=True)
class StagingBatch:
    run_id: str
    worker_id: int
    lines: np.ndarray  # int64 source line numbers
    columns: dict[str, np.ndarray]  # stored fields, as pipeline.layouts.fixed.columns_of


class Encoded(NamedTuple):
    """A batch's payload for the writer, and each row's two digests
    (pipeline.db.digests): over the staging row, and over its stored values alone."""

    payload: bytes
    row_digests: np.ndarray
    value_digests: np.ndarray


@dataclass(frozen=True)
class LoadResult:
    loaded: int
    refused: int = 0
    refused_amount: int = 0  # minor units of the refused rows


class BulkLoader:
    """Row tuples in staging column order; subclasses override the wire format."""

    def __init__(self, tables: JobTables, layout: Layout, dialect: Dialect) -> None:
        self.table = tables.staging
        self.fields = [layout.field(name) for name in tables.business_columns]
        self.insert_sql = str(insert(self.table).compile(dialect=dialect))

    def rows(self, batch: StagingBatch) -> list[tuple[Any, ...]]:
        return list(zip(*self._staged(batch), strict=True))

    def _staged(self, batch: StagingBatch) -> list[list[Any]]:
        """The batch's staging rows column by column: run id, source line, worker id,
        then the stored fields."""
        n = len(batch.lines)
        return [[batch.run_id] * n, batch.lines.tolist(), [batch.worker_id] * n,
                *(self._values(f, batch.columns[f.name]) for f in self.fields)]

    def _values(self, field: Any, column: np.ndarray) -> list[Any]:
        values = column.tolist()
        # blank text is NULL everywhere: Oracle cannot store an empty string (numpy looks
        # for one in a third of the time a Python loop takes to replace it)
        if field.type is FieldType.TEXT and (column == "").any():
            return [v or None for v in values]
        return values

    def encode(self, batch: StagingBatch) -> bytes:
        return self._payload(self._staged(batch))

    def encode_digested(self, batch: StagingBatch) -> Encoded:
        """The payload and each row's digests (pipeline.db.digests), from one set of
        values: the whole rows', and the stored values' alone. The rows are zipped as they
        are hashed, never kept: a list of them cost as much as both digests (1M rows: 0.25 s
        of the processors' CPU)."""
        staged = self._staged(batch)
        return Encoded(self._payload(staged), column_digests(staged),
                       column_digests(staged[len(staged) - len(self.fields):]))

    def _payload(self, staged: list[list[Any]]) -> bytes:
        """What the writer gets: the batch's rows, given column by column (``staged``)."""
        return marshal.dumps(list(zip(*staged, strict=True)))

    def decode(self, payload: bytes) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = marshal.loads(payload)
        return rows

    def load(self, connection: Any, payload: bytes) -> LoadResult:
        rows = self.decode(payload)
        cursor = connection.cursor()
        try:
            cursor.executemany(self.insert_sql, rows)
        finally:
            cursor.close()
        return LoadResult(len(rows))


def unmemoized(values: Any) -> bytes:
    """``values`` (scalars, lists, tuples: nothing that holds itself) pickled without the
    pickler's memo. The memo records every object held more than once, and a batch's
    values each are (by their column and their row): pickling 10,000 rows of 9 values
    took 0.57 us a row with it (marshal's references the same), 0.14 us without."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo; documented as deprecated since 3.0, still C's fast path
    pickler.dump(values)
    return out.getvalue()


def loader_for(tables: JobTables, layout: Layout, amount: str, dialect: Dialect,
               batch_size: int) -> BulkLoader:
    return backend_for(dialect.name).loader(tables, layout, amount, dialect, batch_size)
