"""The physical floor: bare bulk load of pre-parsed rows + the bare MERGE, nothing else.

``python -m benchmarks.floor --prepare --input F --backend B --out P`` parses the input
once with the job's own parser and encodes it with the job's own loader (the rows' values
in one flat list for SQLite, with the statement they are bound to, COPY text for
PostgreSQL) into a pickle. ``python -m
benchmarks.floor --input P --db URL`` then loads it (untimed) and times only what the
database must do: load an identical staging table by the fastest method (SQLite: stdlib
``executemany`` of the job's many-rows-a-statement INSERT in one transaction, with the
job's connection pragmas; PostgreSQL: one ``COPY ... FROM STDIN``) and run the job's own
``merge_statement(..., deduplicate=False)`` into the empty FINAL table, committed.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.dialects import postgresql, sqlite

RUN_ID = "20261125T000000-floor000"
BATCH = 10_000


def _job() -> tuple[Any, Any]:
    from pipeline.config import load_config
    from pipeline.db.tables import job_tables
    from pipeline.jobs import shipped_config

    config = load_config(shipped_config())
    return config, job_tables(config)


def _batches(config: Any, path: Path) -> Iterator[Any]:
    from pipeline.db.bulk import StagingBatch
    from pipeline.layouts.fixed import parse_details
    from pipeline.source import LineChunk, read_lines

    plan = config.input_format.plan(path, 1)
    for rng in plan.ranges:
        for chunk in read_lines(path, rng, BATCH, config.detail.length):
            assert isinstance(chunk, LineChunk)
            batch = parse_details(config.detail, config.amount, chunk.data, chunk.first_line)
            if batch.rejects:
                raise SystemExit("the floor needs an input without rejects")
            yield StagingBatch(RUN_ID, 0, batch.lines, batch.columns)


def prepare(path: Path, backend: str, out: Path) -> None:
    """Pre-parsed rows exactly as the job's loader hands them to the driver (SQLite: the
    rows' values one after another, for the job's statement with the batch's run id and
    worker id written in, pipeline.db.backends.sqlite.insert_rows)."""
    from pipeline.db.backends.sqlite import SqliteLoader
    from pipeline.db.bulk import loader_for

    config, tables = _job()
    dialect = sqlite.dialect() if backend == "sqlite" else postgresql.psycopg.dialect()
    loader = loader_for(tables, config.detail, config.amount, dialect, BATCH)
    insert_sql, payloads = loader.insert_sql, []
    for batch in _batches(config, path):
        if isinstance(loader, SqliteLoader):
            insert_sql, values = loader.unpack(loader.encode(batch))
            payloads.extend(values)
        else:
            payloads.append(loader.encode(batch))
    with open(out, "wb") as f:
        pickle.dump((insert_sql, getattr(loader, "copy_sql", ""), payloads), f,
                    protocol=pickle.HIGHEST_PROTOCOL)


def _load_sqlite(database: str, insert_sql: str, values: list[Any]) -> None:
    from pipeline.db.backends.sqlite import SQLITE_CACHE_KIB, insert_rows

    connection = sqlite3.connect(database)
    connection.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")  # as the job's connections
    try:
        with connection:
            # the job's own multi-row statements: one-row executemany cost 1.5x (its writer)
            insert_rows(connection.cursor(), insert_sql, values, insert_sql.count("?"))
    finally:
        connection.close()


def _load_postgres(engine: Any, copy_sql: str, chunks: list[bytes]) -> None:
    connection = engine.raw_connection()
    try:
        with connection.cursor().copy(copy_sql) as copy:
            for chunk in chunks:
                copy.write(chunk)
        connection.commit()
    finally:
        connection.close()


def _merge(engine: Any, config: Any, tables: Any) -> int:
    from pipeline.audit.schema import utc_now
    from pipeline.db.merge import merge_params, merge_statement

    statement = merge_statement(tables.staging, tables.final, config.key_columns,
                                tables.business_columns, deduplicate=False)
    with engine.begin() as connection:
        return int(connection.execute(statement, merge_params(RUN_ID, utc_now())).rowcount)


def measure(prepared: Path, url: str) -> dict[str, Any]:
    config, tables = _job()
    # the job's engine: the same connection settings (SQLite's page cache and journal), so
    # the floor's MERGE is as fast as the database can do it, not slower than the job's
    from pipeline.db.engine import make_engine

    engine = make_engine(url)
    tables.metadata.create_all(engine)
    with open(prepared, "rb") as f:
        insert_sql, copy_sql, payloads = pickle.load(f)
    rows = len(payloads) if engine.dialect.name == "sqlite" else \
        sum(chunk.count(b"\n") for chunk in payloads)
    start, cpu = time.perf_counter(), _cpu()
    if engine.dialect.name == "sqlite":
        _load_sqlite(str(make_url(url).database), insert_sql, payloads)
    else:
        _load_postgres(engine, copy_sql, payloads)
    loaded = time.perf_counter()
    merged = _merge(engine, config, tables)
    done, cpu = time.perf_counter(), _cpu() - cpu
    engine.dispose()
    if merged != rows:
        raise SystemExit(f"floor MERGE touched {merged} rows, expected {rows}")
    return {"rows": rows, "phases": {"load": loaded - start, "merge": done - loaded,
                                     "floor": done - start, "floor_cpu": cpu}}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.floor")
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--db", help="measure: a fresh database's URL")
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(args.input, args.backend, args.out)
        return 0
    json.dump(measure(args.input, args.db), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
