"""Oracle, proven without a server: every statement the job issues, compiled for Oracle.

The job's own code runs against a recorder that stands in for the Engine/Connection: the
repositories, the audit writer and the job lock execute their real statements, which are
compiled with SQLAlchemy's Oracle dialect exactly as ``Connection.execute`` compiles them
(sorted parameter keys, executemany for lists of rows), together with the DDL of
``create_all``, the Oracle bulk loader's staging insert and both MERGE variants. Each one
must parse with sqlglot's Oracle dialect and respect what Oracle refuses or limits.

``test_the_job_runs_end_to_end_on_a_live_oracle`` (marked ``oracle``) runs the whole job
on the server named by PIPELINE_TEST_ORACLE_URL and is opt-in: ``pytest -m oracle``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlalchemy import DateTime, create_engine, func, select
from sqlalchemy.dialects import oracle
from sqlalchemy.engine import create_mock_engine, make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import ExecutableDDLElement
from sqlglot import exp

from pipeline.audit import history
from pipeline.audit.runs import RunRepository
from pipeline.audit.writer import AuditWriter
from pipeline.config import JobConfig, load_config
from pipeline.db.audit_tables import AUDIT_PRECISION, AUDIT_SCALE
from pipeline.db.bulk import loader_for
from pipeline.db.lock import JobAlreadyRunning, job_lock
from pipeline.db.merge import merge_statement
from pipeline.db.repositories import FinalRepository, StagingRepository
from pipeline.db.tables import JobTables, job_tables
from pipeline.db.types import Money
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from recon.values import Evidence, ReconciliationResult, WorkerMetrics

ORACLE_ENV = "PIPELINE_TEST_ORACLE_URL"
MAX_IDENTIFIER_BYTES = 30  # Oracle before 12.2; identifiers and bind variable names
RUN_ID = "20261125T010203-0a1b2c3d"

# Oracle's reserved words (V$RESERVED_WORDS, RESERVED = 'Y'): never a plain identifier.
ORACLE_RESERVED = set("""
ACCESS ADD ALL ALTER AND ANY AS ASC AUDIT BETWEEN BY CHAR CHECK CLUSTER COLUMN COMMENT
COMPRESS CONNECT CREATE CURRENT DATE DECIMAL DEFAULT DELETE DESC DISTINCT DROP ELSE
EXCLUSIVE EXISTS FILE FLOAT FOR FROM GRANT GROUP HAVING IDENTIFIED IMMEDIATE IN INCREMENT
INDEX INITIAL INSERT INTEGER INTERSECT INTO IS LEVEL LIKE LOCK LONG MAXEXTENTS MINUS
MLSLABEL MODE MODIFY NOAUDIT NOCOMPRESS NOT NOWAIT NULL NUMBER OF OFFLINE ON ONLINE OPTION
OR ORDER PCTFREE PRIOR PUBLIC RAW RENAME RESOURCE REVOKE ROW ROWID ROWNUM ROWS SELECT
SESSION SET SHARE SIZE SMALLINT START SUCCESSFUL SYNONYM SYSDATE TABLE THEN TO TRIGGER UID
UNION UNIQUE UPDATE USER VALIDATE VALUES VARCHAR VARCHAR2 VIEW WHENEVER WHERE WITH
""".split())

pytestmark = pytest.mark.timeout(60)


# --- recording what the job's code executes ----------------------------------------------


class _Result:
    """Enough of a Result for the code under test: zero rows counted, zero summed."""

    rowcount = 0

    def one(self) -> tuple[int, ...]:
        return (0, 0, 0)

    def scalar_one(self) -> int:
        return 0

    def first(self) -> tuple[str]:  # "a row exists": the code goes on to its next statement
        return ("20261125T010203-00000000",)

    def __iter__(self) -> Iterator[tuple[str]]:  # one row: e.g. one staging run to purge
        return iter([self.first()])

    def all(self) -> list[tuple[str]]:  # no rows: e.g. no run of the job is RUNNING
        return []

    def scalars(self) -> Iterator[int]:  # no values: e.g. no history of records read
        return iter(())


class Recorder:
    """Stands in for the Engine, Connection and Transaction the code is given, on the
    Oracle dialect, and records every statement it executes with its parameters."""

    dialect = oracle.dialect()
    url = make_url("oracle+oracledb://scott@dbhost:1521/?service_name=FREEPDB1")

    def __init__(self) -> None:
        self.executed: list[tuple[Any, Any]] = []

    def execute(self, statement: Any, parameters: Any = None, execution_options: Any = None
                ) -> _Result:
        self.executed.append((statement, parameters))
        return _Result()

    def begin(self) -> Recorder:
        return self

    connect = begin

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Issued:
    """One statement the job issues, as Oracle would receive it."""

    what: str
    kind: str  # the SQLAlchemy construct: CreateTable, Insert, Merge, ...
    sql: str
    binds: tuple[str, ...]


def compiled(what: str, statement: Any, parameters: Any = None) -> Issued:
    """Compile as ``Connection.execute`` does: sorted keys of the first parameter set,
    executemany for a list of more than one, "post-compile" values (a LIMIT's row count)
    rendered in."""
    kind = type(statement).__name__
    if isinstance(statement, ExecutableDDLElement):
        return Issued(what, kind, str(statement.compile(dialect=Recorder.dialect)).strip(), ())
    rows = parameters if isinstance(parameters, list) else [parameters] if parameters else []
    result = statement.compile(dialect=Recorder.dialect,
                               column_keys=sorted(rows[0]) if rows else None,
                               for_executemany=len(rows) > 1,
                               compile_kwargs={"render_postcompile": True})
    assert not result.positional, f"{what}: positional binds"
    binds = {name for bind, name in result.bind_names.items()
             if bind not in result.literal_execute_params}  # those are rendered in
    return Issued(what, kind, str(result).strip(), tuple(binds))


# the text job, and the EBCDIC job (its copybook's columns) under the text job's table
# names, so every check below reads the same for both
@pytest.fixture(scope="module", params=["daily_transactions", "daily_transactions_ebcdic"])
def config(request: pytest.FixtureRequest) -> JobConfig:
    return load_config(shipped_config(request.param)).with_overrides(
        staging_table="stg_transactions", final_table="transactions")


@pytest.fixture(scope="module")
def tables(config: JobConfig) -> JobTables:
    return job_tables(config)


def ddl_statements(tables: JobTables) -> list[Issued]:
    recorded: list[Any] = []
    engine = create_mock_engine(Recorder.url, lambda sql, *a, **kw: recorded.append(sql))
    tables.metadata.create_all(engine, checkfirst=False)
    return [compiled(f"{type(s).__name__} {s.element.name}", s) for s in recorded]


def job_statements(config: JobConfig, tables: JobTables) -> list[Issued]:
    """Every DML statement and query the job issues, from the code that issues it."""
    rec = Recorder()
    names: list[str] = []

    def step(name: str) -> None:
        names.extend([name] * (len(rec.executed) - len(names)))

    staging = StagingRepository(rec, tables, config.key_columns, config.amount)  # type: ignore[arg-type]
    final = FinalRepository(rec, tables, config.key_columns, config.amount)  # type: ignore[arg-type]
    staging.count_and_amount(RUN_ID)
    step("staging count and sum")
    staging.surviving_count_and_amount(RUN_ID)
    step("surviving count and sum")
    runs = RunRepository(rec, tables.batch_run, config.amount_field.scale)  # type: ignore[arg-type]
    runs.purge_staging(rec, config.name, 3, staging.purge_runs)  # type: ignore[arg-type]
    step("purge staging runs")
    final.merge_run(RUN_ID, datetime(2026, 11, 25, 1, 2, 3), deduplicate=True)
    step("merge deduplicate=True")
    final.merge_run(RUN_ID, datetime(2026, 11, 25, 1, 2, 3), deduplicate=False)
    step("merge deduplicate=False")
    final.count_and_amount_for_run(RUN_ID)
    step("final count and sum")
    source, params = final.survivors(RUN_ID, deduplicate=True)
    final.columns_equal_count(source, params)
    step("final rows equal to staging, column by column")
    final.columns_differing(source, params, 1_000)
    step("final rows differing from staging")

    audit = AuditWriter(rec, tables, config.amount_field.scale)  # type: ignore[arg-type]
    runs.start_run(RUN_ID, config.name, Path("/data/in/TXN.D20261125.dat"),
                   datetime(2026, 11, 25, 1, 2, 3), ["rerun", "allow_older"])
    step("batch_run insert")
    runs.record_input(RUN_ID, "ab" * 32, date(2026, 11, 25))
    step("batch_run input")
    runs.record_refusal(RUN_ID, config.name, Path("/data/in/TXN.D20261125.dat"),
                        datetime(2026, 11, 25, 1, 2, 3), JobAlreadyRunning("already running"))
    step("batch_run refusal")
    history.running_run(rec, tables.batch_run, config.name)  # type: ignore[arg-type]
    step("the running run")
    with contextlib.suppress(AttributeError):  # the recorder's row is not a BATCH_RUN row
        history.loaded_input(rec, tables.batch_run, config.name, "ab" * 32)  # type: ignore[arg-type]
    step("an input already loaded")
    with contextlib.suppress(AttributeError):
        history.latest_business_date(rec, tables.batch_run, config.name)  # type: ignore[arg-type]
    step("the latest business date")
    history.records_read_before(rec, tables.batch_run, config.name,  # type: ignore[arg-type]
                                datetime(2026, 11, 25, 1, 2, 3), 10)
    step("records read by the last runs")
    check = ReconciliationResult("staging_to_final_amount", 10, 10, True, 12345, 12345, "ok")
    worker = WorkerMetrics(0, "processor", 10, 0, datetime(2026, 11, 25), datetime(2026, 11, 25),
                           amount=12345, state="done", exit_code=0, pid=4242)
    audit.finish_run(RUN_ID, "SUCCEEDED", 0, "ok", [check], [worker])
    step("audit, one row each")
    audit.finish_run(RUN_ID, "SUCCEEDED", 0, "ok", [check] * 7, [worker] * 4)
    step("audit, many rows")
    evidence = Evidence("staging_to_final_columns", "T1", "description", "a", None, 7)
    audit.finish_run(RUN_ID, "FAILED_RECON", 1, "failed", [check], [worker],
                     evidence=[evidence] * 3)
    step("audit with evidence")

    with job_lock(rec, tables.job_lock, config.name):  # type: ignore[arg-type]
        step("job lock")

    issued = [compiled(name, s, p)
              for name, (s, p) in zip(names, rec.executed, strict=True)]
    loader = loader_for(tables, config.detail, config.amount, Recorder.dialect, 50_000)
    issued.append(Issued("staging bulk insert", "Insert", loader.insert_sql,
                         tuple(re.findall(r"(?<![\w:]):(\w+)", loader.insert_sql))))
    return issued


@pytest.fixture(scope="module")
def statements(config: JobConfig, tables: JobTables) -> list[Issued]:
    return ddl_statements(tables) + job_statements(config, tables)


def parsed(issued: Issued) -> exp.Expression:
    return sqlglot.parse_one(issued.sql, read="oracle")


def merge_sql(tables: JobTables, config: JobConfig, deduplicate: bool) -> str:
    statement = merge_statement(tables.staging, tables.final, config.key_columns,
                                tables.business_columns, deduplicate)
    return str(statement.compile(dialect=Recorder.dialect))


# --- what the job issues --------------------------------------------------------------------


def test_the_recorder_saw_every_kind_of_statement(statements: list[Issued]) -> None:
    assert {s.kind for s in statements} == set(EXPECTED_TYPE)
    what = " | ".join(s.what for s in statements)
    for expected in ("CreateTable stg_transactions", "CreateTable transactions",
                     "CreateTable recon_audit", "CreateTable recon_worker_audit",
                     "CreateTable batch_run", "CreateIndex ix_transactions_run",
                     "CreateIndex ix_recon_audit_run", "merge deduplicate=True",
                     "merge deduplicate=False", "surviving count and sum", "staging count and sum",
                     "final count and sum", "batch_run insert", "batch_run input",
                     "batch_run refusal", "the running run", "an input already loaded",
                     "the latest business date", "records read by the last runs",
                     "staging bulk insert"):
        assert expected in what


EXPECTED_TYPE = {"CreateTable": exp.Create, "CreateIndex": exp.Create, "Merge": exp.Merge,
                 "Select": exp.Select, "Insert": exp.Insert, "Update": exp.Update,
                 "Delete": exp.Delete}


def test_every_statement_parses_as_oracle_sql_of_its_kind(statements: list[Issued]) -> None:
    for issued in statements:
        tree = parsed(issued)  # raises sqlglot.ParseError on SQL Oracle's grammar refuses
        assert isinstance(tree, EXPECTED_TYPE[issued.kind]), \
            f"{issued.what}: {type(tree).__name__}\n{issued.sql}"


def _identifiers(issued: Issued) -> set[str]:
    tree = parsed(issued)
    return {i.name for i in tree.find_all(exp.Identifier)} | set(issued.binds)


def too_long(issued: Issued) -> set[str]:
    return {n for n in _identifiers(issued) if len(n.encode()) > MAX_IDENTIFIER_BYTES}


def not_plain(issued: Issued) -> set[str]:
    """Quoted identifiers and Oracle reserved words (SQLAlchemy quotes a reserved word or
    a mixed-case name; the spec wants plain, unquoted names)."""
    quoted = set(re.findall(r'"[^"]*"', issued.sql))
    return quoted | {n for n in _identifiers(issued) if n.upper() in ORACLE_RESERVED}


def bind_problems(issued: Issued) -> list[str]:
    """Anything but ``:name`` placeholders, or placeholders the compiler does not know."""
    named = set(re.findall(r"(?<![\w:]):([A-Za-z_]\w*)", issued.sql))
    problems = [m.group(0) for m in re.finditer(r"\?|%s|%\(\w+\)s|\$\d+|(?<![\w:]):\d+",
                                                issued.sql)]
    if named != set(issued.binds):
        problems.append(f"placeholders {sorted(named)} != binds {sorted(issued.binds)}")
    return problems


def boolean_use(issued: Issued) -> list[str]:
    # Oracle SQL had no BOOLEAN type or TRUE/FALSE literals before 23ai
    return re.findall(r"\b(?:BOOLEAN|TRUE|FALSE)\b", issued.sql, re.I)


def test_every_identifier_and_bind_name_fits_30_bytes(statements: list[Issued]) -> None:
    for issued in statements:
        assert not too_long(issued), f"{issued.what}: longer than 30 bytes: {too_long(issued)}"


def test_identifiers_are_plain_and_not_reserved(statements: list[Issued]) -> None:
    for issued in statements:
        assert not not_plain(issued), f"{issued.what}: {not_plain(issued)}\n{issued.sql}"


def test_binds_are_named_colon_parameters(statements: list[Issued]) -> None:
    for issued in statements:
        if issued.kind.startswith("Create"):
            assert not issued.binds and ":" not in issued.sql, issued.sql
        else:
            assert issued.binds, f"{issued.what}: no bind parameters\n{issued.sql}"
            assert bind_problems(issued) == [], f"{issued.what}\n{issued.sql}"


def test_no_boolean_anywhere(statements: list[Issued]) -> None:
    for issued in statements:
        assert boolean_use(issued) == [], f"{issued.what}\n{issued.sql}"


@pytest.mark.parametrize(("sql", "binds", "check"), [
    ("SELECT a FROM recon_worker_audit_of_every_worker_run WHERE b = :b", ("b",), too_long),
    (f"SELECT a FROM t WHERE b = :{'b' * 31}", ("b" * 31,), too_long),
    ('SELECT "Amount" FROM t WHERE b = :b', ("b",), not_plain),
    ("SELECT a FROM t WHERE t.uid = :b", ("b",), not_plain),
    ("SELECT a FROM t WHERE b = ?", (), bind_problems),
    ("SELECT a FROM t WHERE b = %(b)s", ("b",), bind_problems),
    ("SELECT a FROM t WHERE b = :1", (), bind_problems),
    ("SELECT a FROM t WHERE b = :b AND c = :c", ("b",), bind_problems),
    ("CREATE TABLE t (passed BOOLEAN)", (), boolean_use),
    ("INSERT INTO t SELECT * FROM s WHERE true", (), boolean_use),
])
def test_the_checks_catch_bad_sql(sql: str, binds: tuple[str, ...], check: Any) -> None:
    assert check(Issued("bad", "Select", sql, binds))


def table_aliases_with_as(sql: str) -> list[str]:
    """Each ``AS alias`` written after a table or a FROM/USING/JOIN subquery: Oracle
    refuses AS for table aliases (ORA-00933), while column aliases may have it."""
    found = [m.group(0) for m in re.finditer(
        r"\b(?:FROM|JOIN|USING|INTO|UPDATE)\s+\w+(?:\.\w+)?\s+AS\s+\w+", sql, re.I)]
    for m in re.finditer(r"\b(?:FROM|JOIN|USING)\s*\(", sql, re.I):
        depth, pos = 0, m.end() - 1
        for pos in range(m.end() - 1, len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[pos], 0)
            if depth == 0:
                break
        alias = re.match(r"\s+AS\s+\w+", sql[pos + 1:], re.I)
        if alias:
            found.append(f"(...){alias.group(0)}")
    return found


def test_the_alias_check_catches_as_before_a_table_alias(tables: JobTables,
                                                         config: JobConfig) -> None:
    from sqlalchemy.dialects import postgresql

    # PostgreSQL's compiler writes "FROM (...) AS ranked": the check must see it
    pg_merge = str(merge_statement(tables.staging, tables.final, config.key_columns,
                                   tables.business_columns, True)
                   .compile(dialect=postgresql.dialect()))
    assert table_aliases_with_as(pg_merge) == ["(...) AS ranked"]
    assert table_aliases_with_as("SELECT a FROM t AS x") == ["FROM t AS x"]
    assert table_aliases_with_as("SELECT count(*) AS n FROM t x") == []


def test_no_table_alias_has_as(statements: list[Issued]) -> None:
    for issued in statements:
        assert table_aliases_with_as(issued.sql) == [], f"{issued.what}\n{issued.sql}"


# --- the DDL --------------------------------------------------------------------------------


def columns_of(statements: list[Issued], table: str) -> dict[str, tuple[str, exp.ColumnDef]]:
    issued = next(s for s in statements if s.what == f"CreateTable {table}")
    tree = parsed(issued)
    lines = {m.group(1): m.group(2).strip() for m in
             re.finditer(r"^\s*(\w+) (.+?),?\s*$", issued.sql, re.M)}
    return {c.name: (lines[c.name], c) for c in tree.find_all(exp.ColumnDef)}


def test_money_columns_are_exact_numbers(statements: list[Issued], tables: JobTables,
                                         config: JobConfig) -> None:
    amount = config.amount_field
    expected = {("stg_transactions", config.amount): (amount.length, amount.scale),
                ("transactions", config.amount): (amount.length, amount.scale)}
    for table in (tables.recon_audit, tables.worker_audit):
        for column in table.columns:
            if isinstance(column.type, Money):
                expected[(table.name, column.name)] = (AUDIT_PRECISION, AUDIT_SCALE)
    assert len(expected) == 6
    for (table, column), (precision, scale) in expected.items():
        text, definition = columns_of(statements, table)[column]
        # NUMERIC(p, s) is ANSI for Oracle's NUMBER(p, s), and stored as such
        assert re.match(rf"(NUMBER|NUMERIC)\({precision}, ?{scale}\)( NOT NULL)?$", text), text
        assert definition.args["kind"].sql(dialect="oracle") == f"NUMBER({precision}, {scale})"


def test_counts_are_64_bit_numbers(statements: list[Issued], tables: JobTables) -> None:
    counts = {"recon_audit": ["expected_cnt", "actual_cnt", "discrepancy"],
              "recon_worker_audit": ["records_processed", "errors_count"],
              "stg_transactions": ["source_line"]}
    for table, names in counts.items():
        cols = columns_of(statements, table)
        for name in names:
            assert cols[name][0].startswith("NUMBER(19)"), (table, cols[name][0])


def test_passed_is_char_1_with_a_y_n_check(statements: list[Issued]) -> None:
    text, definition = columns_of(statements, "recon_audit")["passed"]
    assert text.startswith("CHAR(1) ")
    check = definition.find(exp.CheckColumnConstraint)
    assert check is not None
    assert check.this.sql(dialect="oracle") == "passed IN ('Y', 'N')"


def test_recon_id_is_an_identity_primary_key(statements: list[Issued]) -> None:
    issued = next(s for s in statements if s.what == "CreateTable recon_audit")
    assert re.search(r"^\s*recon_id INTEGER GENERATED ALWAYS AS IDENTITY", issued.sql, re.M)
    assert re.search(r"PRIMARY KEY \(recon_id\)", issued.sql)
    identity = parsed(issued).find(exp.GeneratedAsIdentityColumnConstraint)
    assert identity is not None and identity.this is True  # ALWAYS


def test_text_is_varchar2_and_dates_are_date(statements: list[Issued]) -> None:
    for issued in statements:
        if issued.what.startswith("CreateTable"):
            assert not re.search(r"\bVARCHAR\(", issued.sql), issued.sql
    assert columns_of(statements, "transactions")["txn_date"][0].startswith("DATE NOT NULL")


def test_timestamps_are_timestamp(statements: list[Issued], tables: JobTables) -> None:
    for table in tables.metadata.sorted_tables:
        cols = columns_of(statements, table.name)
        for column in table.columns:
            if isinstance(column.type, DateTime):
                assert cols[column.name][0].startswith("TIMESTAMP"), (table.name, column.name)


# --- the MERGE ------------------------------------------------------------------------------


@pytest.mark.parametrize("deduplicate", [True, False])
def test_merge_is_oracle_merge(tables: JobTables, config: JobConfig, deduplicate: bool) -> None:
    sql = merge_sql(tables, config, deduplicate)
    tree = sqlglot.parse_one(sql, read="oracle")
    assert isinstance(tree, exp.Merge)
    # Oracle needs the ON condition in parentheses
    assert isinstance(tree.args["on"], exp.Paren)
    (key,) = config.key_columns
    assert re.search(rf"\) s ON \(f\.{key} = s\.{key}\) WHEN MATCHED THEN", sql)
    assert table_aliases_with_as(sql) == []
    assert set(re.findall(r"(?<![\w:]):(\w+)", sql)) == {"run_id", "updated_ts"}
    whens = list(tree.find_all(exp.When))
    update = next(w.args["then"] for w in whens if w.args.get("matched"))
    insert = next(w.args["then"] for w in whens if not w.args.get("matched"))
    # ORA-38104: a column of the ON clause cannot be updated
    updated = {eq.this.name for eq in update.expressions}
    assert key not in updated
    assert updated == {c.name for c in tables.final.columns} - {key}
    assert {c.name for c in insert.this.expressions} == {c.name for c in tables.final.columns}


def test_the_deduplicating_merge_keeps_the_last_line_of_each_key(tables: JobTables,
                                                                  config: JobConfig) -> None:
    tree = sqlglot.parse_one(merge_sql(tables, config, True), read="oracle")
    windows = [w for w in tree.find_all(exp.Window) if isinstance(w.this, exp.RowNumber)]
    assert len(windows) == 1
    window = windows[0]
    assert [p.name for p in window.args["partition_by"]] == list(config.key_columns)
    (order,) = window.args["order"].expressions
    assert order.this.name == "source_line" and order.args.get("desc")
    rn = window.parent
    assert isinstance(rn, exp.Alias)
    ranked = window.find_ancestor(exp.Subquery)
    filters = ranked.parent_select.args["where"].this  # type: ignore[union-attr]
    assert filters.sql(dialect="oracle") == f"{ranked.alias}.{rn.alias} = 1"


def test_the_plain_merge_does_not_rank(tables: JobTables, config: JobConfig) -> None:
    sql = merge_sql(tables, config, False)
    assert "row_number" not in sql.lower()
    assert "stg_transactions.run_id = :run_id" in sql


def test_oracle_counts_repeats_by_ranking_every_row(tables: JobTables,
                                                     config: JobConfig) -> None:
    """No one-parameter list of lines on Oracle: the repeated lines are not looked up
    (nothing is issued, no temporary table), and the caller ranks every row instead, with
    the surviving-rows query and the de-duplicating MERGE checked above."""
    rec = Recorder()
    staging = StagingRepository(rec, tables, config.key_columns, config.amount)  # type: ignore[arg-type]
    assert staging.collapsed_at_lines(RUN_ID, [3, 4, 9]) is None
    assert rec.executed == []


def test_the_staging_insert_names_every_column(tables: JobTables, config: JobConfig) -> None:
    loader = loader_for(tables, config.detail, config.amount, Recorder.dialect, 50_000)
    tree = sqlglot.parse_one(loader.insert_sql, read="oracle")
    assert isinstance(tree, exp.Insert)
    names = [c.name for c in tables.staging.columns]
    assert [i.name for i in tree.this.expressions] == names
    # the loader binds row tuples by position: placeholders in column order
    assert re.findall(r":(\w+)", loader.insert_sql) == names


# --- a composite key ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def composite() -> tuple[JobConfig, JobTables]:
    """The shipped job keyed by (account_id, txn_date, seq_no)."""
    config = load_config(shipped_config("account_postings"))
    tables = job_tables(config)
    assert len(config.key_columns) == 3 and tables.key_columns == config.key_columns
    return config, tables


def test_every_statement_of_a_composite_key_job_is_good_oracle_sql(
        composite: tuple[JobConfig, JobTables]) -> None:
    config, tables = composite
    issued = ddl_statements(tables) + job_statements(config, tables)
    assert {"merge deduplicate=True", "merge deduplicate=False",
            "surviving count and sum"} <= {s.what for s in issued}
    for one in issued:
        assert isinstance(parsed(one), EXPECTED_TYPE[one.kind]), f"{one.what}\n{one.sql}"
        assert not too_long(one) and not not_plain(one), f"{one.what}\n{one.sql}"
        assert boolean_use(one) == [] and table_aliases_with_as(one.sql) == [], one.sql
        if not one.kind.startswith("Create"):
            assert bind_problems(one) == [], f"{one.what}\n{one.sql}"


def test_the_composite_primary_key_is_every_key_column_in_order(
        composite: tuple[JobConfig, JobTables]) -> None:
    config, tables = composite
    issued = next(s for s in ddl_statements(tables) if s.what == "CreateTable account_postings")
    (pk,) = parsed(issued).find_all(exp.PrimaryKey)
    assert [e.name for e in pk.expressions] == list(config.key_columns)
    # the key's columns lead the FINAL table, in key order
    columns = [c.name for c in parsed(issued).find_all(exp.ColumnDef)]
    assert columns[:3] == list(config.key_columns)


@pytest.mark.parametrize("deduplicate", [True, False])
def test_the_composite_merge_matches_on_every_key_column(
        composite: tuple[JobConfig, JobTables], deduplicate: bool) -> None:
    config, tables = composite
    sql = merge_sql(tables, config, deduplicate)
    tree = sqlglot.parse_one(sql, read="oracle")
    assert isinstance(tree, exp.Merge)
    on = tree.args["on"]
    assert isinstance(on, exp.Paren) and isinstance(on.this, exp.And)
    pairs = [(eq.this.table, eq.this.name, eq.expression.table, eq.expression.name)
             for eq in on.find_all(exp.EQ)]
    assert sorted(pairs) == sorted(("f", k, "s", k) for k in config.key_columns)
    whens = list(tree.find_all(exp.When))
    update = next(w.args["then"] for w in whens if w.args.get("matched"))
    insert = next(w.args["then"] for w in whens if not w.args.get("matched"))
    # ORA-38104: no column of the ON clause may be updated
    updated = {eq.this.name for eq in update.expressions}
    assert updated == {c.name for c in tables.final.columns} - set(config.key_columns)
    assert {c.name for c in insert.this.expressions} == {c.name for c in tables.final.columns}


def test_the_composite_deduplication_partitions_by_every_key_column(
        composite: tuple[JobConfig, JobTables]) -> None:
    config, tables = composite
    tree = sqlglot.parse_one(merge_sql(tables, config, True), read="oracle")
    (window,) = [w for w in tree.find_all(exp.Window) if isinstance(w.this, exp.RowNumber)]
    assert [p.name for p in window.args["partition_by"]] == list(config.key_columns)
    (order,) = window.args["order"].expressions
    assert order.this.name == "source_line" and order.args.get("desc")


# --- live Oracle, opt-in ----------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.timeout(900)
def test_the_job_runs_end_to_end_on_a_live_oracle(tmp_path: Path, config: JobConfig) -> None:
    url = os.environ.get(ORACLE_ENV)
    if not url:
        pytest.skip(f"{ORACLE_ENV} is not set: no Oracle server to run the job against "
                    "(e.g. oracle+oracledb://user:pw@host:1521/?service_name=FREEPDB1)")
    made = generate_file(tmp_path / "in.dat", 20_000, seed=11, reject_rate=0.01,
                         duplicate_rate=0.01)
    outcome = run_job(config.with_overrides(database_url=url, input_path=made.path,
                                            output_dir=tmp_path / "work"))
    assert outcome.exit_code == 0, outcome.message
    assert all(r.passed for r in outcome.results), outcome.results

    tables = job_tables(config)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            final = tables.final
            count = conn.execute(select(func.count()).select_from(final)
                                 .where(final.c.last_run_id == outcome.run_id)).scalar_one()
            status = conn.execute(select(tables.batch_run.c.status)
                                  .where(tables.batch_run.c.run_id == outcome.run_id)
                                  ).scalar_one()
            audited = conn.execute(select(func.count()).select_from(tables.recon_audit)
                                   .where(tables.recon_audit.c.run_id == outcome.run_id)
                                   .where(tables.recon_audit.c.passed == "Y")).scalar_one()
    finally:
        engine.dispose()
    assert count == made.records - made.rejects - made.duplicates
    assert status == "SUCCEEDED"
    assert audited == len(outcome.results)
