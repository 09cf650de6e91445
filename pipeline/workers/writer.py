"""The writer: bulk-load batches into staging, one transaction per batch.

Rows are counted on the bus only after the transaction holding them has committed, so
the bus never claims a row the database could still roll back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from pipeline.db.engine import database_errors, make_engine
from pipeline.metrics.bus import WorkerType
from pipeline.workers.context import WorkerContext, worker_main


def run_writer(ctx: WorkerContext, worker_id: int) -> None:
    worker_main(ctx, worker_id, lambda: _write(ctx, worker_id))


def _write(ctx: WorkerContext, worker_id: int) -> None:
    ctx.bus.register(worker_id, WorkerType.WRITER)
    engine = make_engine(ctx.database_url)
    written_amount = 0
    with database_errors(engine, "loading staging"):
        connection = engine.raw_connection()
    try:
        while (item := ctx.get(worker_id)) is not None:
            _source, _rows, amount, payload = item
            with _loading(engine):
                result = ctx.loader.load(connection, payload)
                connection.commit()
            written_amount += amount - result.refused_amount
            ctx.bus.add_batch(worker_id, result.loaded, result.refused, written_amount)
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
