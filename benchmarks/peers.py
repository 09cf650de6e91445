"""What a user would write instead of the job, on the same input and database.

``python -m benchmarks.peers loop|pandas --input F --db URL`` (a fresh process each):

- ``loop``: one process reads the file line by line, slices and validates each record
  in plain Python, inserts 10k-row batches into staging with a SQLAlchemy Core
  ``insert`` (``executemany`` of dicts, which SQLAlchemy batches into multi-row INSERTs
  on psycopg), upserts staging into FINAL and counts, all in one transaction.
- ``pandas``: ``read_fwf`` with the copybook's columns, vectorized validation, then
  ``DataFrame.to_sql`` in 10k-row chunks - through the stdlib ``sqlite3`` connection
  (plain ``executemany``) on SQLite, through the ``COPY`` insertion method from the
  pandas documentation on PostgreSQL - then the same upsert and counts.

Both use the job's tables (same DDL) and store money exactly (integer minor units on
SQLite, ``Decimal``/decimal text for NUMERIC on PostgreSQL). Neither writes an audit or
handles duplicate keys inside one input: these inputs have none.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sqlite3
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    create_engine,
    insert,
    make_url,
    text,
)
from sqlalchemy.pool import NullPool

RUN_ID = "20261125T000000-peer0000"
BATCH = 10_000
BUSINESS = ["txn_id", "account_id", "txn_date", "amount", "currency", "description"]
UPSERT = (
    "INSERT INTO transactions (txn_id, account_id, txn_date, amount, currency, description, "
    "last_run_id, updated_ts) SELECT txn_id, account_id, txn_date, amount, currency, "
    "description, :last_run_id, :ts FROM stg_transactions WHERE run_id = :run_id "
    "ON CONFLICT (txn_id) DO UPDATE SET account_id = excluded.account_id, "
    "txn_date = excluded.txn_date, amount = excluded.amount, currency = excluded.currency, "
    "description = excluded.description, last_run_id = excluded.last_run_id, "
    "updated_ts = excluded.updated_ts"
)
COUNTS = ("SELECT (SELECT COUNT(*) FROM stg_transactions WHERE run_id = :run_id), "
          "(SELECT COUNT(*) FROM transactions WHERE last_run_id = :run_id)")


def create_tables(engine: Engine) -> None:
    """The job's own DDL, so every contender writes into identical tables."""
    from pipeline.config import load_config
    from pipeline.db.tables import job_tables
    from pipeline.jobs import shipped_config

    job_tables(load_config(shipped_config())).metadata.create_all(engine)


def staging_table(money_as_minor_units: bool) -> Table:
    """The staging table as a user would declare it for SQLAlchemy Core."""
    return Table(
        "stg_transactions", MetaData(),
        Column("run_id", String(50)), Column("source_line", BigInteger),
        Column("worker_id", Integer), Column("txn_id", String(16)),
        Column("account_id", String(10)), Column("txn_date", Date),
        Column("amount", BigInteger if money_as_minor_units else Numeric(13, 2)),
        Column("currency", String(3)), Column("description", String(40)),
    )


def _upsert_and_count(conn: Any, expected: int) -> dict[str, int]:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    conn.execute(text(UPSERT), {"run_id": RUN_ID, "last_run_id": RUN_ID, "ts": now})
    staged, final = conn.execute(text(COUNTS), {"run_id": RUN_ID}).one()
    if not staged == final == expected:
        raise SystemExit(f"counts do not balance: {expected} accepted, {staged} staged, "
                         f"{final} final")
    return {"staged": int(staged), "final": int(final)}


# -- (a) the straightforward loop --------------------------------------------------------


def parse_line(line: str, minor_units: bool) -> dict[str, Any] | None:
    """One detail record as a dict, or None if it breaks a rule of the layout."""
    if len(line) != 101 or line[0] != "D" or line[100] != "\n":
        return None
    txn_id, account, date, sign = line[1:17].rstrip(" "), line[17:27], line[27:35], line[35]
    amount, currency, desc = line[36:49], line[49:52], line[52:92]
    if not (txn_id.isalnum() and account.isdigit() and sign in "+-" and amount.isdigit()
            and currency.isalpha() and currency.isupper() and desc.isprintable()
            and line[92:100] == "        " and date.isdigit()):
        return None
    try:
        day = dt.date(int(date[:4]), int(date[4:6]), int(date[6:]))
    except ValueError:
        return None
    minor = -int(amount) if sign == "-" else int(amount)
    return {"txn_id": txn_id, "account_id": account, "txn_date": day,
            "amount": minor if minor_units else Decimal(minor).scaleb(-2),
            "currency": currency, "description": desc.rstrip(" ") or None}


def run_loop(path: Path, url: str) -> dict[str, Any]:
    engine = create_engine(url, poolclass=NullPool)
    create_tables(engine)
    minor_units = engine.dialect.name == "sqlite"
    stmt = insert(staging_table(minor_units))
    read = rejected = 0
    with engine.begin() as conn, open(path, encoding="ascii", newline="") as f:
        f.readline()  # the header
        batch: list[dict[str, Any]] = []
        for number, line in enumerate(f, start=2):
            if line[0] == "T":
                break
            read += 1
            row = parse_line(line, minor_units)
            if row is None:
                rejected += 1
                continue
            row.update(run_id=RUN_ID, source_line=number, worker_id=0)
            batch.append(row)
            if len(batch) == BATCH:
                conn.execute(stmt, batch)
                batch = []
        if batch:
            conn.execute(stmt, batch)
        counts = _upsert_and_count(conn, read - rejected)
    engine.dispose()
    return {"read": read, "rejected": rejected, **counts}


# -- (b) pandas --------------------------------------------------------------------------


COLSPECS = [(0, 1), (1, 17), (17, 27), (27, 35), (35, 36), (36, 49), (49, 52), (52, 92),
            (92, 100)]
NAMES = ["record_type", "txn_id", "account_id", "txn_date", "sign", "amount", "currency",
         "description", "filler"]


def psql_insert_copy(table: Any, conn: Any, keys: list[str], data_iter: Any) -> int:
    """The COPY insertion method from the pandas ``to_sql`` documentation (psycopg 3)."""
    dbapi_conn = conn.connection
    buf = io.StringIO()
    csv.writer(buf).writerows(data_iter)
    columns = ", ".join(f'"{k}"' for k in keys)
    with dbapi_conn.cursor() as cur:
        with cur.copy(f"COPY {table.name} ({columns}) FROM STDIN WITH CSV") as copy:
            copy.write(buf.getvalue())
    return buf.getvalue().count("\n")


def read_and_validate(path: Path, minor_units: bool) -> tuple[Any, int]:
    import pandas as pd

    # delimiter="\n": keep every field exactly as read (the default strips spaces)
    df = pd.read_fwf(path, colspecs=COLSPECS, names=NAMES, header=None, dtype=str,
                     keep_default_na=False, skiprows=1, delimiter="\n")
    df = df.iloc[:-1]  # the trailer
    df.index = pd.RangeIndex(2, len(df) + 2)  # source line numbers
    date = pd.to_datetime(df.txn_date, format="%Y%m%d", errors="coerce")
    ok = ((df.record_type == "D") & df.txn_id.str.fullmatch(r"[A-Za-z0-9]+ *")
          & df.account_id.str.fullmatch(r"\d{10}") & date.notna()
          & df.sign.isin(["+", "-"]) & df.amount.str.fullmatch(r"\d{13}")
          & df.currency.str.fullmatch(r"[A-Z]{3}") & df.description.str.fullmatch(r"[ -~]*")
          & (df.filler == " " * 8))
    good = df[ok]
    minor = good.amount.astype("int64").where(good.sign == "+", -good.amount.astype("int64"))
    out = pd.DataFrame({
        "run_id": RUN_ID, "source_line": good.index, "worker_id": 0,
        "txn_id": good.txn_id.str.rstrip(" "),
        "account_id": good.account_id, "txn_date": date[ok].dt.strftime("%Y-%m-%d"),
        "amount": minor if minor_units else _decimal_text(minor),
        "currency": good.currency, "description": good.description.str.rstrip(" "),
    })
    out["description"] = out.description.where(out.description != "", None)
    return out, len(df)


def _decimal_text(minor: Any) -> Any:
    """Exact decimal text of integer minor units: NUMERIC gets no float on the way."""
    magnitude = minor.abs()
    text_ = (magnitude // 100).astype(str) + "." + (magnitude % 100).astype(str).str.zfill(2)
    return text_.where(minor >= 0, "-" + text_)


def run_pandas(path: Path, url: str) -> dict[str, Any]:
    engine = create_engine(url, poolclass=NullPool)
    create_tables(engine)
    minor_units = engine.dialect.name == "sqlite"
    frame, read = read_and_validate(path, minor_units)
    if minor_units:
        connection = sqlite3.connect(str(make_url(url).database))
        with connection:
            frame.to_sql("stg_transactions", connection, if_exists="append", index=False,
                         chunksize=BATCH)
        connection.close()
        with engine.begin() as conn:
            counts = _upsert_and_count(conn, len(frame))
    else:
        with engine.begin() as conn:
            frame.to_sql("stg_transactions", conn, if_exists="append", index=False,
                         chunksize=BATCH, method=psql_insert_copy)
            counts = _upsert_and_count(conn, len(frame))
    engine.dispose()
    return {"read": read, "rejected": read - len(frame), **counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.peers")
    parser.add_argument("peer", choices=["loop", "pandas"])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = (run_loop if args.peer == "loop" else run_pandas)(args.input, args.db)
    result["phases"] = {"total": time.perf_counter() - start}
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
