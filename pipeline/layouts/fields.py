"""A record layout is data: named fields with a position, a length and a type.

The example job's layouts live in ``pipeline/jobs/*.toml``; a second job is a new
config file, not new code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FieldType(StrEnum):
    LITERAL = "literal"  # a fixed value, e.g. the record type "D"
    TEXT = "text"  # stored trimmed of trailing spaces
    DIGITS = "digits"  # all digits, stored as text so leading zeros survive
    NUMBER = "number"  # all digits, read as an integer (e.g. a trailer count)
    DATE = "date"  # YYYYMMDD, a real calendar date
    SIGN = "sign"  # "+" or "-", belongs to an amount
    AMOUNT = "amount"  # digits with implied decimals, signed by its sign field
    FILLER = "filler"  # spaces only


class Charset(StrEnum):
    PRINTABLE = "printable"  # ASCII 0x20-0x7E
    ALNUM = "alnum"  # letters and digits, left-justified, space padded
    UPPER = "upper"  # upper-case letters only, no padding


STORED_TYPES = frozenset({FieldType.TEXT, FieldType.DIGITS, FieldType.DATE, FieldType.AMOUNT})


@dataclass(frozen=True)
class Field:
    name: str
    start: int  # 1-based, inclusive, as a mainframe copybook gives it
    length: int
    type: FieldType
    value: str = ""  # LITERAL only
    charset: Charset = Charset.PRINTABLE  # TEXT only
    required: bool = False  # TEXT: must not be blank
    scale: int = 0  # AMOUNT: implied decimal places
    sign: str = ""  # AMOUNT: name of its SIGN field; empty means always positive
    # NULL where the record does not hold it: an OCCURS DEPENDING ON entry past the count
    optional: bool = False

    @property
    def offset(self) -> int:
        return self.start - 1

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def stored(self) -> bool:
        return self.type in STORED_TYPES


@dataclass(frozen=True)
class Layout:
    """The fields of one record type, covering the record exactly."""

    record_type: str  # the LITERAL value that identifies it, e.g. "D"
    length: int
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def stored_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.stored)
