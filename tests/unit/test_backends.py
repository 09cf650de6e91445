"""One module per database (issue 13): no code outside ``pipeline/db/backends/`` branches
on a database's name, and every registered module provides all of ``Backend``.

Read from the source with ``ast``: a comparison of anything with a database's name
(``dialect.name == "oracle"``, ``backend != "sqlite"``, ``name in ("sqlite", ...)``) is a
branch that belongs in that database's module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from pipeline.db.backends import _MODULES, Backend, backend_for
from pipeline.db.dialects import profile_for

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ROOT / "pipeline" / "db" / "backends"


def name_branches(source: str, names: set[str]) -> list[int]:
    """Lines comparing something with one of ``names`` (a string or a tuple/list/set of them)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            values = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) \
                else [operand]
            if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                lines.append(node.lineno)
                break
    return lines


def test_the_scan_finds_a_branch_on_a_name() -> None:
    source = ('if dialect.name == "oracle":\n    pass\n'
              'x = name in ("sqlite", "db2")\n'
              '@compiles(Merge, "sqlite")\ndef f(): pass\n')
    assert name_branches(source, {"oracle", "sqlite"}) == [1, 3]


def test_no_branch_on_a_database_name_outside_the_backends() -> None:
    names = set(_MODULES)
    found = [f"{path.relative_to(ROOT)}:{line}"
             for package in ("pipeline", "recon")
             for path in sorted((ROOT / package).rglob("*.py"))
             if BACKENDS not in path.parents
             for line in name_branches(path.read_text(encoding="utf-8"), names)]
    assert found == []


@pytest.mark.parametrize("name", sorted(_MODULES))
def test_each_registered_module_provides_the_whole_backend(name: str) -> None:
    backend = backend_for(name)
    wanted = [m for m in vars(Backend) if not m.startswith("_")] + ["profile"]
    assert [m for m in wanted if not hasattr(backend, m)] == []
    assert profile_for(name) is backend.profile and backend.profile.name == name


def test_an_unknown_database_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unsupported database 'db2'"):
        backend_for("db2")


class _DriverError(Exception):
    """A driver's error as each driver shapes it: psycopg's sqlstate, oracledb's code."""

    def __init__(self, sqlstate: str | None = None, code: int | None = None) -> None:
        super().__init__(type("Detail", (), {"code": code})())
        self.sqlstate = sqlstate


@pytest.mark.parametrize(("name", "refused", "other"), [
    ("postgresql", [_DriverError("23505"), _DriverError("21000")], _DriverError("55P03")),
    ("oracle", [_DriverError(code=1), _DriverError(code=30926)], _DriverError(code=54)),
])
def test_a_merge_refused_for_a_repeated_key_is_told_from_any_other_error(
        name: str, refused: list[_DriverError], other: _DriverError) -> None:
    """The plain MERGE's fallback (pipeline.reconcile) ranks every row after these only."""
    def wrapped(orig: Exception) -> DBAPIError:
        return DBAPIError.instance("MERGE ...", None, orig, Exception)

    backend = backend_for(name)
    assert all(backend.repeated_key(wrapped(e)) for e in refused)
    assert not backend.repeated_key(wrapped(other))
    assert not backend.repeated_key(ValueError("not a driver error"))
    assert not backend_for("sqlite").repeated_key(wrapped(refused[0]))  # never refuses
