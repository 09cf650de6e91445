"""Column types the job's tables and the audit's share: exact money, timestamps, run ids."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import TIMESTAMP, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from pipeline.db.dialects import profile_for

RUN_ID_LENGTH = 50
# TIMESTAMP, not DateTime: SQLAlchemy's DateTime is DATE on Oracle, which drops the
# fractional seconds
Timestamp = TIMESTAMP


class Money(TypeDecorator[int]):
    """Exact money: Python side always integer minor units.

    NUMERIC(p, s) where the database has it; integer minor units on SQLite.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision, self.scale = precision, scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        from pipeline.db.backends import backend_for

        # each database's own (pipeline.db.backends), e.g. Oracle's NUMBER(p, s)
        return backend_for(dialect.name).money_type(dialect, self.precision, self.scale)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or profile_for(dialect).money_as_minor_units:
            return value
        return Decimal(int(value)).scaleb(-self.scale)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return to_minor(value, 0 if profile_for(dialect).money_as_minor_units else self.scale)


def to_minor(value: int | Decimal, scale: int) -> int:
    """Exact minor units of a database value; refuses anything that is not whole."""
    if isinstance(value, int):
        return value * 10**scale
    minor = Decimal(value).scaleb(scale)
    if minor != minor.to_integral_value():
        raise ValueError(f"{value} has more than {scale} decimals")
    return int(minor)
