"""One module per database: everything that differs between them, and the registry.

Each module (``sqlite.py``, ``postgresql.py``, ``oracle.py``) holds its database's
profile (the values: dlt's capabilities object), its engine options and connect hooks,
its bulk loader, its job lock, its driver-error classification and its money type; the
code they share stays in ``pipeline.db`` (the generic executemany loader in ``bulk.py``,
the row lock in ``lock.py``, the error wrapper in ``engine.py``) and statements that
differ are compiled per dialect with ``@compiles`` (``merge.py``).

Adding a database = adding one module that satisfies ``Backend`` and one line in
``_MODULES``. The modules are imported on first use, by name: the shared modules call
``backend_for`` at run time, the backends import the shared modules, and no import cycle
forms (Oracle's imports are paid only by Oracle runs).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy import Connection, Engine, Table
    from sqlalchemy.engine import URL, Dialect
    from sqlalchemy.sql.elements import ColumnElement
    from sqlalchemy.types import TypeEngine

    from pipeline.db.bulk import BulkLoader
    from pipeline.db.dialects import DialectProfile
    from pipeline.db.engine import Timeouts
    from pipeline.db.lock import HeldLock
    from pipeline.db.tables import JobTables
    from pipeline.layouts.fields import Layout

_MODULES = {
    "sqlite": "pipeline.db.backends.sqlite",
    "postgresql": "pipeline.db.backends.postgresql",
    "oracle": "pipeline.db.backends.oracle",
}


class Backend(Protocol):
    """What a database module provides (its module-level names)."""

    profile: DialectProfile

    def database_file(self, url: URL) -> str | None:
        """The file holding the database, for a database that is a file; else None."""

    def engine_kwargs(self, url: URL, timeouts: Timeouts | None) -> dict[str, Any]:
        """``create_engine`` options beyond the pool (connect_args, driver mode)."""

    def on_engine(self, engine: Engine, timeouts: Timeouts | None) -> None:
        """Connect hooks on a new engine (pragmas, call timeouts)."""

    def before_create_tables(self, connection: Connection) -> None:
        """Runs in the DDL transaction before ``create_all``."""

    def classify(self, cause: str) -> str:
        """A driver error's first line, saying which bound ran out if one did."""

    def transient(self, exc: BaseException | None) -> bool:
        """The error (SQLAlchemy's) says the database is away for a while (restarting,
        unreachable, out of connection slots): trying again later may succeed."""

    def cancel(self, dbapi_connection: Any) -> None:
        """Ask the database to stop the connection's statement (from another thread)."""

    def abandon(self, dbapi_connection: Any) -> None:
        """Make the connection's statement in flight fail at once, the database silent
        (from another thread): the statement watchdog's last resort."""

    def loader(self, tables: JobTables, layout: Layout, amount: str, dialect: Dialect,
               batch_size: int) -> BulkLoader:
        """The fastest correct staging load (pipeline.db.bulk)."""

    def job_lock(self, engine: Engine, table: Table, job_name: str,
                 run_id: str | None) -> AbstractContextManager[HeldLock]:
        """The job's lock for one run (pipeline.db.lock); JobAlreadyRunning when held."""

    def money_type(self, dialect: Dialect, precision: int, scale: int) -> TypeEngine[Any]:
        """The column type of exact money (pipeline.db.tables.Money)."""

    def lines_in(self, column: ColumnElement[Any],
                 lines: list[int]) -> tuple[ColumnElement[bool], Any] | None:
        """``column`` among ``lines`` with one bound parameter ``lines`` and its value;
        None where the database has no one-parameter list."""

    def merging(self, connection: Connection) -> AbstractContextManager[None]:
        """Around the MERGE statement, in its transaction: the plan it must take."""

    def key_sorts_as_bytes(self, connection: Connection, table: Table,
                           key: tuple[str, ...]) -> bool:
        """FINAL's key index orders its text by bytes: the MERGE's source may then sort
        it byte by byte, the cheapest comparison (pipeline.db.merge.sort_key)."""

    def rare(self, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        """``condition``, said to hold for few of its table's rows where the planner would
        rather trust statistics that say otherwise (SQLite): a run's rows of FINAL."""

    def read_beside(self, connection: Connection) -> None:
        """Make ``connection``, until its transaction ends, a reader beside the MERGE
        (pipeline.staging_totals): one that the MERGE cannot shut out, and that leaves it
        the cores it runs on."""

    def repeated_key(self, exc: BaseException) -> bool:
        """The MERGE was refused because its source holds a key twice."""

    def staging_digests(self, connection: Connection, staging: Table,
                        run_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source lines, worker ids, digests) of the run's staging rows, as the loader's
        ``encode_digested`` digests them (pipeline.db.digests), in no particular order."""

    def row_digest(self, connection: Connection, staging: Table) -> ColumnElement[Any] | None:
        """Each staging row's digest (32 bits), as ``staging_digests`` gives it, to be
        summed with other totals in one pass; None where the database cannot compute it
        (``staging_digests`` then fetches the rows)."""

    def value_digest(self, connection: Connection, columns: list[ColumnElement[Any]]
                     ) -> ColumnElement[Any] | None:
        """Each row's value digest over ``columns`` (32 bits, the same for the same
        values, NULL-safe; as the loader's ``encode_digested`` digests the stored values),
        computed by the database over FINAL's rows for staging_to_final_columns; None:
        compare the rows by a join instead."""


def backend_for(name: str) -> Backend:
    """The module of the database ``name`` (a SQLAlchemy backend name, e.g. ``sqlite``)."""
    return _loaded[name] if name in _loaded else _load(name)


# Money's conversions ask for every value they bind or read: one dict lookup then
_loaded: dict[str, Backend] = {}


def _load(name: str) -> Backend:
    try:
        module = _MODULES[name]
    except KeyError:
        raise ValueError(f"unsupported database {name!r}: expected {sorted(_MODULES)}") from None
    _loaded[name] = cast(Backend, import_module(module))
    return _loaded[name]


if TYPE_CHECKING:  # mypy checks every registered module against Backend
    from pipeline.db.backends import oracle, postgresql, sqlite

    _checked: tuple[Backend, ...] = (sqlite, postgresql, oracle)
