"""Operator commands at scale: `run --resume` vs a full re-run, and the cost of `explain`.

    python -m benchmarks.operators --records 1000000 [--db sqlite|postgresql] [--pg URL]

- resume: a run whose MERGE the database refused (an injected trigger), resumed from
  staging once the trigger is gone, vs a full run of the same file into the same (empty)
  FINAL. Resume = the checks, the MERGE and the audit; the full run adds the plan (hash),
  the parse and the load.
- explain: a run that lost 10 staging rows (processed_to_staging), and a run whose FINAL
  changed one amount behind the MERGE (staging_to_final_amount: explain replays the
  rolled-back MERGE). Both with every finding kept (as for --csv).

Each case on a fresh SQLite file (or a fresh PostgreSQL database); figures are wall
seconds of this process, one repetition (the MERGE dominates and varies little).
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

SQLITE_BREAK = ["CREATE TRIGGER break_merge BEFORE INSERT ON transactions "
                "BEGIN SELECT RAISE(ABORT, 'injected MERGE failure'); END"]
PG_BREAK = ["CREATE FUNCTION break_merge() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected MERGE failure'; END $$",
            "CREATE TRIGGER break_merge BEFORE INSERT ON transactions "
            "FOR EACH ROW EXECUTE FUNCTION break_merge()"]
SQLITE_ALTER = ["CREATE TRIGGER alter_one AFTER INSERT ON transactions WHEN NEW.txn_id = "
                ":key BEGIN UPDATE transactions SET amount = amount + 1 "
                "WHERE txn_id = NEW.txn_id; END"]
PG_ALTER = ["CREATE FUNCTION alter_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.txn_id = :key THEN NEW.amount := NEW.amount + 0.01; END IF; "
            "RETURN NEW; END $$",
            "CREATE TRIGGER alter_one BEFORE INSERT ON transactions "
            "FOR EACH ROW EXECUTE FUNCTION alter_one()"]


@contextmanager
def database(kind: str, pg_url: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{secrets.token_hex(4)}.db'}"
        return
    admin_url = make_url(pg_url)
    name = f"bench_{secrets.token_hex(5)}"
    admin = create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def execute(engine: Engine, statements: list[str], key: str = "") -> None:
    with engine.begin() as conn:
        for s in statements:
            # DDL takes no bind parameters: the key is a plain generated identifier
            conn.execute(text(s.replace(":key", f"'{key}'")))


def first_key(path: Path) -> str:
    with open(path, "rb") as f:
        f.readline()
        return f.readline()[1:17].decode("ascii").strip()


def bench(records: int, kind: str, pg_url: str) -> list[tuple[str, float, str]]:
    from pipeline.config import load_config
    from pipeline.explain import explain_run
    from pipeline.generate import generate_file
    from pipeline.job import run_job
    from pipeline.jobs import shipped_config
    from pipeline.resume import resume_run

    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench_ops_") as tmp:
        folder = Path(tmp)
        made = generate_file(folder / "in.dat", records, seed=11)
        base = load_config(shipped_config()).with_overrides(input_path=made.path,
                                                            output_dir=folder / "work")

        with database(kind, pg_url, folder) as url:
            config = base.with_overrides(database_url=url)
            seconds, outcome = timed(lambda: run_job(config))
            assert outcome.exit_code == 0, outcome.message
            rows.append(("full run (plan, parse, load, checks, MERGE, audit)", seconds,
                         outcome.status))

        with database(kind, pg_url, folder) as url:
            config = base.with_overrides(database_url=url)
            engine = create_engine(url)
            run_job(config.with_overrides(input_path=_tiny(folder, generate_file)))
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM transactions"))
            execute(engine, SQLITE_BREAK if kind == "sqlite" else PG_BREAK)
            seconds, failed = timed(lambda: run_job(config))
            assert failed.exit_code == 3, failed.message
            rows.append(("run whose MERGE failed (exit 3)", seconds, failed.status))
            execute(engine, ["DROP TRIGGER break_merge" + ("" if kind == "sqlite"
                                                           else " ON transactions")])
            seconds, resumed = timed(lambda: resume_run(config, failed.run_id))
            assert resumed.exit_code == 0, resumed.message
            rows.append(("run --resume of it (checks, MERGE, audit)", seconds, resumed.status))
            engine.dispose()

        with database(kind, pg_url, folder) as url:
            config = base.with_overrides(database_url=url)
            engine = create_engine(url)

            def lose(eng: Engine, run_id: str) -> None:
                with eng.begin() as conn:
                    conn.execute(text("DELETE FROM stg_transactions WHERE run_id = :r AND "
                                      "source_line IN (2, 1000, 500000, 999999)"),
                                 {"r": run_id})

            lost = run_job(config, after_load=lose)
            seconds, found = timed(lambda: explain_run(config, engine, lost.run_id,
                                                       everything=True))
            rows.append(("explain: lines lost before staging", seconds,
                         f"{sum(found.counts.values())} records"))
            execute(engine, SQLITE_ALTER if kind == "sqlite" else PG_ALTER,
                    first_key(made.path))
            altered = run_job(config)
            seconds, found = timed(lambda: explain_run(config, engine, altered.run_id,
                                                       everything=True))
            rows.append(("explain: FINAL amount changed (replays the MERGE)", seconds,
                         f"{sum(found.counts.values())} records"))
            engine.dispose()
    return rows


def _tiny(folder: Path, generate: Any) -> Path:
    """A 10-record file: its run creates the tables the trigger is put on."""
    return Path(generate(folder / "tiny.dat", 10, seed=1).path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg", default=os.environ.get(
        "BENCH_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    rows = bench(args.records, args.db, args.pg)
    print(f"\n{args.records:,} records, {args.db}\n")
    print(f"| {'case':<52} | {'seconds':>8} | result |")
    print(f"|{'-' * 54}|{'-' * 10}|--------|")
    for name, seconds, result in rows:
        print(f"| {name:<52} | {seconds:>8.1f} | {result} |")


if __name__ == "__main__":
    main()
