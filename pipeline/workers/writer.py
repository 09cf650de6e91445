"""The writer: bulk-load batches into staging, committing once the queue runs dry or
every ``COMMIT_ROWS`` rows.

Rows are counted on the bus only after the transaction holding them has committed, so
the bus never claims a row the database could still roll back. A commit per batch cost
SQLite 0.4-0.6 s per 1M rows (100 journal syncs) with the writer the load's bottleneck;
while the writer waits for the processors, each batch still commits at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from pipeline.db.engine import database_errors, make_engine
from pipeline.metrics.bus import WorkerType
from pipeline.workers.context import WorkerContext, worker_main

COMMIT_ROWS = 100_000


def run_writer(ctx: WorkerContext, worker_id: int) -> None:
    worker_main(ctx, worker_id, lambda: _write(ctx, worker_id))


def _write(ctx: WorkerContext, worker_id: int) -> None:
    ctx.bus.register(worker_id, WorkerType.WRITER)
    engine = make_engine(ctx.database_url)
    written_amount = batches = loaded = refused = 0  # the last three: not yet committed
    # [[details]]: per detail type, the same figures for its own bus (amount: so far)
    per_type = [[0, 0, 0, 0] for _ in ctx.types]
    with _loading(engine):  # its connect errors are the driver's own too
        connection = engine.raw_connection()
    try:
        while True:
            item = ctx.get(worker_id)  # None: no batch will come
            if item is not None:
                _source, _rows, amount, payload, detail_type = item
                with _loading(engine):
                    result = ctx.loader_of(detail_type).load(connection, payload)
                batches, loaded, refused = batches + 1, loaded + result.loaded, \
                    refused + result.refused
                written_amount += amount - result.refused_amount
                if ctx.types:
                    figures = per_type[detail_type]
                    figures[0] += amount - result.refused_amount
                    figures[1] += 1
                    figures[2] += result.loaded
                    figures[3] += result.refused
            if batches and (item is None or loaded + refused >= COMMIT_ROWS
                            or ctx.batches.empty()):
                with _loading(engine):
                    connection.commit()
                ctx.bus.add_batch(worker_id, loaded, refused, written_amount, batches=batches)
                batches = loaded = refused = 0
                for load, figures in zip(ctx.types, per_type, strict=True):
                    if figures[1]:
                        load.bus.add_batch(worker_id, figures[2], figures[3], figures[0],
                                           batches=figures[1])
                        figures[1:] = [0, 0, 0]
            if item is None:
                return
    except BaseException:
        # the connection may be dead (a restart, a terminated backend): returning it to the
        # pool would try a rollback on it and log that failure with a traceback
        connection.invalidate()
        raise
    finally:
        connection.close()
        engine.dispose()


@contextmanager
def _loading(engine: Engine) -> Iterator[None]:
    """``database_errors`` for the raw driver connection the bulk paths use.

    Its errors are the driver's own, not SQLAlchemy's, so ``database_errors`` alone would
    let them through as a bare "AdminShutdown: ..." without the step or the database.
    """
    driver_error = engine.dialect.loaded_dbapi.Error
    with database_errors(engine, "loading staging"):
        try:
            yield
        except driver_error as exc:
            raise DBAPIError.instance(None, None, exc, driver_error) from exc
