"""The DDL in sql/ and the tables the code creates (pipeline/db/tables.py,
pipeline/audit/schema.py) agree.

SQLite and PostgreSQL: the sql/ files go into one database (or schema), the code's
``create_all`` into another; both are reflected and compared on tables, columns (name,
order, type with length/precision/scale, nullability, identity, default), primary keys,
indexes, unique/foreign keys and check constraints. Oracle has no server here: the
sql/oracle files and the DDL SQLAlchemy compiles for Oracle are both parsed with sqlglot
and compared the same way. Every comparison is also shown to catch a broken file.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlalchemy import Engine, MetaData, create_engine, inspect, text
from sqlalchemy.dialects import oracle
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlglot import exp

from pipeline.config import load_config
from pipeline.db.tables import job_tables
from pipeline.jobs import shipped_config

pytestmark = pytest.mark.timeout(60)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
FILES = ("daily_transactions.sql", "audit.sql")
# the spec's tables; the code may add more (e.g. JOB_LOCK), which sql/ must then hold too
SPEC_TABLES = {"stg_transactions", "transactions", "recon_audit", "recon_worker_audit",
               "batch_run"}

Model = dict[str, dict[str, Any]]  # table -> aspect -> normalised value


def code_metadata() -> MetaData:
    return job_tables(load_config(shipped_config())).metadata


def ddl_text(database: str) -> str:
    return "\n".join(f"{(SQL_DIR / database / name).read_text()}\n" for name in FILES)


# --- comparing two models -----------------------------------------------------------------


def differences(code: Model, sql: Model) -> list[str]:
    """Every way the sql/ model differs from the code's, one readable line each."""
    found = []
    for table in sorted(code.keys() | sql.keys()):
        if table not in sql:
            found.append(f"table {table}: created by the code, missing from sql/")
        elif table not in code:
            found.append(f"table {table}: in sql/, not created by the code")
        else:
            found += _table_differences(table, code[table], sql[table])
    return found


def _table_differences(table: str, code: dict[str, Any], sql: dict[str, Any]) -> list[str]:
    found = []
    code_cols = {c[0]: c for c in code["columns"]}
    sql_cols = {c[0]: c for c in sql["columns"]}
    for name in sorted(code_cols.keys() | sql_cols.keys()):
        if name not in sql_cols:
            found.append(f"column {table}.{name}: missing from sql/")
        elif name not in code_cols:
            found.append(f"column {table}.{name}: in sql/, not created by the code")
        elif code_cols[name] != sql_cols[name]:
            found.append(f"column {table}.{name}: code {code_cols[name][1:]} "
                         f"!= sql/ {sql_cols[name][1:]} (type, nullable, identity, default)")
    if not found and list(code_cols) != list(sql_cols):
        found.append(f"table {table}: column order {list(sql_cols)} != code {list(code_cols)}")
    for aspect in sorted(code.keys() - {"columns"}):
        if code[aspect] != sql[aspect]:
            found.append(f"{aspect} of {table}: code {code[aspect]} != sql/ {sql[aspect]}")
    return found


def _sql_text(sql: str) -> str:
    """Check constraint text without case, spacing or enclosing parentheses."""
    norm = re.sub(r"\s+", " ", sql).strip().lower()
    while norm.startswith("(") and norm.endswith(")") and _balanced(norm[1:-1]):
        norm = norm[1:-1].strip()
    return norm


def _balanced(sql: str) -> bool:
    depth = 0
    for char in sql:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


# --- SQLite and PostgreSQL: reflect both -------------------------------------------------


def reflected(engine: Engine, schema: str | None = None) -> Model:
    inspector = inspect(engine)
    # the get_multi_* calls take one query per aspect for all tables (PostgreSQL)
    columns = inspector.get_multi_columns(schema=schema)
    pks = inspector.get_multi_pk_constraint(schema=schema)
    indexes = inspector.get_multi_indexes(schema=schema)
    checks = inspector.get_multi_check_constraints(schema=schema)
    uniques = inspector.get_multi_unique_constraints(schema=schema)
    foreign = inspector.get_multi_foreign_keys(schema=schema)
    model: Model = {}
    for key in columns:
        pk = pks[key]
        model[key[1]] = {
            "columns": [_reflected_column(c, engine) for c in columns[key]],
            "primary key": (pk.get("name"), tuple(pk.get("constrained_columns") or ())),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in indexes[key]),
            "check constraints": sorted((c["name"], _sql_text(c["sqltext"])) for c in checks[key]),
            "unique constraints": sorted((u["name"], tuple(u["column_names"]))
                                         for u in uniques[key]),
            "foreign keys": sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                                   for f in foreign[key]),
        }
    return model


def _reflected_column(column: dict[str, Any], engine: Engine) -> tuple[Any, ...]:
    # the reflected type compiled back for its database: VARCHAR(50), NUMERIC(13, 2), ...
    type_sql = re.sub(r"\s+", " ", column["type"].compile(dialect=engine.dialect)).upper()
    identity = column.get("identity")
    always = None if identity is None else ("ALWAYS" if identity.get("always") else "DEFAULT")
    return column["name"], type_sql, column["nullable"], always, column.get("default")


def sqlite_from_file(path: Path, script: str) -> Engine:
    connection = sqlite3.connect(path)
    try:
        connection.executescript(script)
    finally:
        connection.close()
    return create_engine(f"sqlite:///{path}", poolclass=NullPool)


def sqlite_from_code(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    code_metadata().create_all(engine)
    return engine


@pytest.fixture(scope="module")
def sqlite_code(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return reflected(sqlite_from_code(tmp_path_factory.mktemp("ddl") / "code.db"))


def test_sqlite_ddl_matches_the_code(tmp_path: Path, sqlite_code: Model) -> None:
    sql = reflected(sqlite_from_file(tmp_path / "sql.db", ddl_text("sqlite")))
    assert set(sqlite_code) >= SPEC_TABLES
    assert differences(sqlite_code, sql) == []


def _pg_schema_from_file(engine: Engine, schema: str, script: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        conn.exec_driver_sql(f"SET LOCAL search_path TO {schema}")
        # no parameters: psycopg then sends the whole script, several statements, at once
        conn.execution_options(no_parameters=True).exec_driver_sql(script)


def _pg_schema_from_code(engine: Engine, schema: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        code_metadata().create_all(conn.execution_options(schema_translate_map={None: schema}))


@pytest.mark.postgresql
def test_postgresql_ddl_matches_the_code(pg_url: str) -> None:
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        _pg_schema_from_file(engine, "from_sql", ddl_text("postgresql"))
        _pg_schema_from_code(engine, "from_code")
        sql, code = reflected(engine, "from_sql"), reflected(engine, "from_code")
    finally:
        engine.dispose()
    assert set(code) >= SPEC_TABLES
    assert differences(code, sql) == []


# --- Oracle: parse both with sqlglot -----------------------------------------------------



def oracle_model(statements: Iterable[exp.Expression | None]) -> Model:
    model: Model = {}
    indexes: list[tuple[str, str, tuple[str, ...], bool]] = []
    for statement in statements:
        if statement is None:
            continue
        assert isinstance(statement, exp.Create), f"not a CREATE statement: {statement.sql()}"
        kind = statement.args.get("kind")
        if kind == "TABLE":
            name, table = _oracle_table(statement.this)
            assert name not in model, f"table {name} created twice"
            model[name] = table
        elif kind == "INDEX":
            index = statement.this
            columns = tuple(_oracle_index_column(c) for c in index.args["params"].args["columns"])
            indexes.append((index.name.lower(), index.args["table"].name.lower(), columns,
                            bool(statement.args.get("unique"))))
        else:
            raise AssertionError(f"unexpected CREATE {kind}: {statement.sql()}")
    for name, table, columns, unique in indexes:
        assert table in model, f"index {name} on {table}, which is not created"
        model[table]["indexes"].append((name, columns, unique))
    for table in model.values():
        table["indexes"].sort()
        table["check constraints"].sort()
        table["other constraints"].sort()
    return model


def _oracle_index_column(ordered: exp.Expression) -> str:
    column = ordered.this if isinstance(ordered, exp.Ordered) else ordered
    return column.name.lower() + (" DESC" if ordered.args.get("desc") else "")


def _oracle_type(data_type: exp.DataType) -> str:
    type_sql = re.sub(r"\s+", " ", data_type.sql(dialect="oracle")).upper()
    return re.sub(r"^NUMERIC\b", "NUMBER", type_sql)  # ANSI NUMERIC is stored as NUMBER


def _oracle_table(schema: exp.Schema) -> tuple[str, dict[str, Any]]:
    columns: list[list[Any]] = []
    primary_key: tuple[str | None, tuple[str, ...]] = (None, ())
    checks: list[tuple[str | None, str]] = []
    other: list[str] = []

    def constraint(name: str | None, kind: exp.Expression, column: str | None) -> None:
        nonlocal primary_key
        if isinstance(kind, exp.PrimaryKeyColumnConstraint):
            primary_key = (name, (column,))
        elif isinstance(kind, exp.PrimaryKey):
            primary_key = (name, tuple(e.name.lower() for e in kind.expressions))
        elif isinstance(kind, exp.CheckColumnConstraint):
            checks.append((name, _sql_text(kind.this.sql(dialect="oracle"))))
        else:
            other.append(f"{name} {column} {kind.sql(dialect='oracle')}")

    for item in schema.expressions:
        if isinstance(item, exp.ColumnDef):
            name = item.name.lower()
            column = [name, _oracle_type(item.args["kind"]), True, None]
            for c in item.args.get("constraints") or []:
                kind = c.args["kind"]
                if isinstance(kind, exp.NotNullColumnConstraint):
                    column[2] = False
                elif isinstance(kind, exp.GeneratedAsIdentityColumnConstraint):
                    column[3] = "ALWAYS" if kind.this else "DEFAULT"
                else:
                    constraint(c.name.lower() or None, kind, name)
            columns.append(column)
        elif isinstance(item, exp.Constraint):
            for kind in item.expressions:
                constraint(item.name.lower(), kind, None)
        else:
            constraint(None, item, None)
    for column in columns:
        if column[0] in primary_key[1]:
            column[2] = False  # a primary key column is NOT NULL
    return schema.this.name.lower(), {
        "columns": [tuple(c) for c in columns],
        "primary key": primary_key,
        "indexes": [],
        "check constraints": checks,
        "other constraints": other,
    }


def oracle_model_of_files(texts: Iterable[str]) -> Model:
    return oracle_model(s for t in texts for s in sqlglot.parse(t, read="oracle"))


def oracle_model_of_code(metadata: MetaData) -> Model:
    dialect = oracle.dialect()
    ddl = [str(CreateTable(t).compile(dialect=dialect)) for t in metadata.sorted_tables]
    ddl += [str(CreateIndex(i).compile(dialect=dialect))
            for t in metadata.sorted_tables for i in t.indexes]
    return oracle_model(sqlglot.parse_one(s, read="oracle") for s in ddl)


@pytest.mark.parametrize("name", FILES)
def test_every_oracle_file_parses_into_create_statements(name: str) -> None:
    statements = [s for s in sqlglot.parse((SQL_DIR / "oracle" / name).read_text(),
                                           read="oracle") if s is not None]
    assert statements
    assert all(isinstance(s, exp.Create) for s in statements)


def test_oracle_files_create_every_table() -> None:
    created = {s.this.this.name.lower()
               for name in FILES
               for s in sqlglot.parse((SQL_DIR / "oracle" / name).read_text(), read="oracle")
               if isinstance(s, exp.Create) and s.args.get("kind") == "TABLE"}
    assert created == {t.name for t in code_metadata().sorted_tables}
    assert created >= SPEC_TABLES


@pytest.fixture(scope="module")
def oracle_code() -> Model:
    return oracle_model_of_code(code_metadata())


def test_oracle_ddl_matches_the_code(oracle_code: Model) -> None:
    code = oracle_code
    sql = oracle_model_of_files((SQL_DIR / "oracle" / name).read_text() for name in FILES)
    assert set(code) >= SPEC_TABLES
    assert differences(code, sql) == []


def test_every_dialect_ships_both_files() -> None:
    # and the upgrade of an earlier version's audit tables (tests/integration/test_upgrade.py)
    for database in ("oracle", "postgresql", "sqlite"):
        assert sorted(p.name for p in (SQL_DIR / database).glob("*.sql")) == sorted(
            [*FILES, "upgrade_audit.sql"])
    assert (SQL_DIR / "README.md").is_file()


# --- the comparisons catch a broken file -------------------------------------------------

Mutation = tuple[str, str, str, str]  # (file, old text, new text, what must be reported)

SQLITE_MUTATIONS: list[Mutation] = [
    ("daily_transactions.sql", "CHAR(3) NOT NULL,\n    description  VARCHAR(40)            -- trailing",
     "CHAR(3) NOT NULL\n    -- trailing", "column stg_transactions.description: missing from sql/"),
    ("daily_transactions.sql", "amount       BIGINT      NOT NULL,  -- minor units (2 implied "
     "decimals)\n    currency     CHAR(3) NOT NULL,\n    description  VARCHAR(40),",
     "amount       INTEGER     NOT NULL,\n    currency     CHAR(3) NOT NULL,\n    description  "
     "VARCHAR(40),", "column transactions.amount"),
    ("daily_transactions.sql", "txn_id       VARCHAR(16) NOT NULL,\n    account_id   VARCHAR(10) "
     "NOT NULL,  -- digits", "txn_id       VARCHAR(16),\n    account_id   VARCHAR(10) NOT NULL,"
     "  -- digits", "column stg_transactions.txn_id"),
    ("daily_transactions.sql", "CREATE INDEX ix_transactions_run ON transactions (last_run_id);",
     "", "indexes of transactions"),
    ("daily_transactions.sql", "currency     CHAR(3) NOT NULL,\n    description  VARCHAR(40),",
     "currency     CHAR(4),\n    description  VARCHAR(40),", "column transactions.currency"),
    ("audit.sql", "CHECK (passed IN ('Y', 'N'))", "CHECK (passed IN ('Y', 'N', 'X'))",
     "check constraints of recon_audit"),
    ("audit.sql", "    CONSTRAINT ck_worker_type CHECK (worker_type IN ('processor', 'writer'))\n",
     "    CHECK (worker_type IN ('processor', 'writer'))\n", "check constraints of "
     "recon_worker_audit"),
    ("audit.sql", "PRIMARY KEY (run_id, worker_id)", "PRIMARY KEY (run_id)",
     "primary key of recon_worker_audit"),
    ("audit.sql", "TIMESTAMP      NOT NULL,\n    expected_amt", "DATETIME      NOT NULL,\n"
     "    expected_amt", "column recon_audit.check_ts"),
    ("audit.sql", "    pid                INTEGER,\n", "    pid                INTEGER,\n"
     "    host               VARCHAR(64),\n", "column recon_worker_audit.host: in sql/"),
]


def mutated(database: str, mutation: Mutation) -> str:
    """The sql/ text of one database with one file changed; the change must apply."""
    file, old, new, _ = mutation
    texts = []
    for name in FILES:
        content = (SQL_DIR / database / name).read_text()
        if name == file:
            assert content.count(old) == 1, f"mutation does not apply to {database}/{name}"
            content = content.replace(old, new)
        texts.append(content)
    return "\n".join(texts)


def assert_reported(found: list[str], expected: str) -> None:
    assert any(expected in line for line in found), f"{expected!r} not in {found}"


@pytest.mark.parametrize("mutation", SQLITE_MUTATIONS, ids=lambda m: m[3][:40])
def test_sqlite_comparison_catches_a_broken_file(tmp_path: Path, sqlite_code: Model,
                                                 mutation: Mutation) -> None:
    broken = reflected(sqlite_from_file(tmp_path / "broken.db", mutated("sqlite", mutation)))
    assert_reported(differences(sqlite_code, broken), mutation[3])


PG_MUTATIONS: list[Mutation] = [
    ("daily_transactions.sql", "amount       NUMERIC(13, 2) NOT NULL,\n    currency     CHAR(3) NOT NULL,"
     "\n    description  VARCHAR(40)  ", "amount       NUMERIC(13, 3) NOT NULL,\n    currency  "
     "   CHAR(3) NOT NULL,\n    description  VARCHAR(40)  ", "column stg_transactions.amount"),
    ("daily_transactions.sql", "updated_ts   TIMESTAMP      NOT NULL", "updated_ts   TIMESTAMPTZ "
     "    NOT NULL", "column transactions.updated_ts"),
    ("audit.sql", "INTEGER        GENERATED ALWAYS AS IDENTITY", "INTEGER        GENERATED BY "
     "DEFAULT AS IDENTITY", "column recon_audit.recon_id"),
    ("audit.sql", "CHECK (passed IN ('Y', 'N'))", "CHECK (passed IN ('Y', 'N', 'X'))",
     "check constraints of recon_audit"),
    ("audit.sql", "CREATE INDEX ix_recon_audit_run ON recon_audit (run_id);",
     "CREATE INDEX ix_recon_audit_run ON recon_audit (run_id, check_name);",
     "indexes of recon_audit"),
    ("daily_transactions.sql", "CHAR(3) NOT NULL,\n    description  VARCHAR(40)               -- trailing",
     "CHAR(3) NOT NULL\n    -- trailing", "column stg_transactions.description: missing from sql/"),
]


@pytest.mark.postgresql
def test_postgresql_comparison_catches_a_broken_file(pg_url: str) -> None:
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        _pg_schema_from_code(engine, "from_code")
        code = reflected(engine, "from_code")
        for i, mutation in enumerate(PG_MUTATIONS):
            _pg_schema_from_file(engine, f"broken_{i}", mutated("postgresql", mutation))
            assert_reported(differences(code, reflected(engine, f"broken_{i}")), mutation[3])
        with engine.connect() as conn:  # the schemas really were created from the files
            assert conn.execute(text("SELECT count(*) FROM information_schema.schemata "
                                     "WHERE schema_name LIKE 'broken_%'")).scalar_one() \
                == len(PG_MUTATIONS)
    finally:
        engine.dispose()


ORACLE_MUTATIONS: list[Mutation] = [
    ("daily_transactions.sql", "CHAR(3) NOT NULL,\n    description  VARCHAR2(40 CHAR)            -- trail",
     "CHAR(3) NOT NULL\n    -- trail", "column stg_transactions.description: missing from sql/"),
    ("daily_transactions.sql", "amount       NUMBER(13, 2)     NOT NULL,\n    currency     CHAR(3) NOT NULL,"
     "\n    description  VARCHAR2(40 CHAR),", "amount       NUMBER(13, 3)     NOT NULL,\n    "
     "currency     CHAR(3) NOT NULL,\n    description  VARCHAR2(40 CHAR),", "column transactions.amount"),
    ("daily_transactions.sql", "txn_date     DATE              NOT NULL,\n    amount       "
     "NUMBER(13, 2)     NOT NULL,\n    currency     CHAR(3) NOT NULL,\n    description  VARCHAR2(40 "
     "CHAR)  ", "txn_date     TIMESTAMP         NOT NULL,\n    amount       NUMBER(13, 2)     "
     "NOT NULL,\n    currency     CHAR(3) NOT NULL,\n    description  VARCHAR2(40 CHAR)  ",
     "column stg_transactions.txn_date"),
    ("daily_transactions.sql", "updated_ts   TIMESTAMP         NOT NULL", "updated_ts   DATE "
     "             NOT NULL", "column transactions.updated_ts"),
    ("audit.sql", "expected_cnt     NUMBER(19)          NOT NULL", "expected_cnt     INTEGER "
     "            NOT NULL", "column recon_audit.expected_cnt"),
    ("audit.sql", "recon_id         INTEGER GENERATED ALWAYS AS IDENTITY", "recon_id         "
     "INTEGER NOT NULL", "column recon_audit.recon_id"),
    ("audit.sql", "run_id           VARCHAR2(50 CHAR)   NOT NULL", "run_id           "
     "VARCHAR2(50 CHAR)", "column recon_audit.run_id"),
    ("audit.sql", "CONSTRAINT ck_recon_passed CHECK", "CONSTRAINT ck_passed CHECK",
     "check constraints of recon_audit"),
    ("audit.sql", "CREATE INDEX ix_recon_audit_run ON recon_audit (run_id);", "",
     "indexes of recon_audit"),
    ("audit.sql", "CONSTRAINT pk_recon_worker_audit PRIMARY KEY", "CONSTRAINT pk_rwa PRIMARY KEY",
     "primary key of recon_worker_audit"),
    ("audit.sql", "    CONSTRAINT pk_batch_run PRIMARY KEY (run_id)\n", "    CONSTRAINT pk_batch_run PRIMARY KEY (run_id),\n    UNIQUE (job_name)"
     "\n", "other constraints of batch_run"),
    ("audit.sql", "    pid                INTEGER,\n", "    pid                INTEGER,\n"
     "    host               VARCHAR2(64 CHAR),\n", "column recon_worker_audit.host: in sql/"),
]


@pytest.mark.parametrize("mutation", ORACLE_MUTATIONS, ids=lambda m: m[3][:40])
def test_oracle_comparison_catches_a_broken_file(oracle_code: Model, mutation: Mutation) -> None:
    broken = oracle_model_of_files([mutated("oracle", mutation)])
    assert_reported(differences(oracle_code, broken), mutation[3])
