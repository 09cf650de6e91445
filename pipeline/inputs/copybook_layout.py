"""A binary input's records as a copybook describes them: the [copybook] section and the
input's framing (FB/VB) turned into RecordDecoders (how the bytes are read) and the
job's Layouts (what the tables store)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.errors import ConfigError
from pipeline.layouts.codepages import code_page
from pipeline.layouts.copybook import MAX_RECORD_BYTES, Item, Record, Usage, parse_copybook_file
from pipeline.layouts.fields import Charset, Field, FieldType, Layout
from pipeline.layouts.mainframe import INT64_DIGITS, Column, RecordDecoder
from pipeline.layouts.recfm import RecordFormat
from pipeline.settings import IDENTIFIER, get, section

ROLES = ("header", "detail", "trailer")
MAX_CONTROL_DIGITS = 31
FRAMING_KEYS = ("file_start_offset", "file_end_offset", "rdw_big_endian", "rdw_adjustment")
COPYBOOK_KEYS = {"path", "header", "detail", "trailer", "record_type", "header_type",
                 "detail_type", "trailer_type", "dates", "library"}


class Copybook(NamedTuple):
    fmt: RecordFormat
    header: RecordDecoder
    detail: RecordDecoder
    trailer: RecordDecoder
    layouts: tuple[Layout, Layout, Layout]
    sha256: str  # of the copybook file as read, recorded in BATCH_RUN


def read_copybook(kind: str, data: Mapping[str, Any], source: Path) -> Copybook:
    """The records of a fb/vb job: its [copybook], its framing keys of [input], and the
    fields [tables] and [control] give a role to."""
    if data.get("layout"):
        raise ConfigError("[layout]: a fb/vb job takes its layout from [copybook]")
    book = section(data, "copybook", COPYBOOK_KEYS)
    inp, tables, control = data.get("input", {}), data.get("tables", {}), data.get("control", {})
    length = get(inp, "input.record_length", int, 0 if kind == "vb" else None)
    blocked = get(inp, "input.blocked", bool, False)
    if kind == "fb" and (length < 1 or blocked):
        raise ConfigError("input.record_length: a fb input needs a positive record length "
                          "(and no blocked = true)")
    if length > MAX_RECORD_BYTES:
        raise ConfigError(f"input.record_length: {length} is more than a record holds "
                          f"({MAX_RECORD_BYTES})")
    key = tables.get("key", "")
    roles = Roles(frozenset(key if isinstance(key, list) else [key]), str(tables.get("amount", "")),
                  str(control.get("trailer_count", "")), str(control.get("trailer_amount", "")))
    return build_mainframe(book, _record_format(inp, kind, length, blocked),
                           get(inp, "input.encoding", str, "cp037"), source, roles)


def _record_format(inp: Mapping[str, Any], kind: str, length: int,
                   blocked: bool) -> RecordFormat:
    """The FB/VB framing: record length, blocks, bytes around the records, the RDW's shape."""
    offsets = [get(inp, f"input.{key}", int, 0) for key in FRAMING_KEYS[:2]]
    if any(not 0 <= n <= 1 << 40 for n in offsets):
        raise ConfigError("input.file_start_offset, input.file_end_offset: a number of bytes "
                          "(0 or more)")
    big_endian = get(inp, "input.rdw_big_endian", bool, True)
    adjustment = get(inp, "input.rdw_adjustment", int, 0)
    if kind == "fb" and ("rdw_big_endian" in inp or "rdw_adjustment" in inp):
        raise ConfigError("input.rdw_big_endian, input.rdw_adjustment: only for input.format "
                          "vb (FB records have no RDW)")
    if not -MAX_RECORD_BYTES <= adjustment <= MAX_RECORD_BYTES:
        raise ConfigError(f"input.rdw_adjustment: {adjustment} is no RDW adjustment")
    return RecordFormat(kind, length or 32756, blocked, offsets[0], offsets[1], big_endian,
                        adjustment)


@dataclass(frozen=True)
class Roles:
    """The fields the job gives a role to (for types and checks)."""

    keys: frozenset[str]  # the key field(s): one name, or several for a composite key
    amount: str
    trailer_count: str
    trailer_amount: str


def build_mainframe(section: Mapping[str, Any], fmt: RecordFormat, encoding: str,
                    source: Path, roles: Roles) -> Copybook:
    """The decoders and the job's layouts of a [copybook] section."""
    path = section.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError("copybook.path: missing")
    records = parse_copybook_file(source.parent / path, _library(section, source, path))
    sha256 = hashlib.sha256((source.parent / path).read_bytes()).hexdigest()
    cp = code_page(encoding)
    dates = section.get("dates", [])
    if not isinstance(dates, list) or not all(isinstance(d, str) for d in dates):
        raise ConfigError("copybook.dates: expected a list of field names")
    type_name = _text_key(section, "record_type")
    values = {r: _text_key(section, f"{r}_type") for r in ROLES}
    if type_name and not all(values.values()):
        raise ConfigError("copybook: record_type needs header_type, detail_type and trailer_type")
    decoders, layouts = {}, {}
    for role in ROLES:
        name = section.get(role)
        if not isinstance(name, str) or name.lower().replace("-", "_") not in records:
            raise ConfigError(f"copybook.{role}: expected the name of a 01 record of {path} "
                              f"({sorted(records)}), got {name!r}")
        record = records[name.lower().replace("-", "_")]
        _check_length(record, role, fmt)
        _check_names(record)
        if record.odo is not None and role != "detail":
            raise ConfigError(f"copybook.{role}: {record.name} has {record.odo.clause()}; "
                              "a variable table is read in a detail record only")
        decoder = _decoder(record, role, cp, type_name, values, set(dates), roles)
        decoders[role] = decoder
        layouts[role] = _layout(decoder, values[role] or role[0].upper())
    return Copybook(fmt, decoders["header"], decoders["detail"], decoders["trailer"],
                    (layouts["header"], layouts["detail"], layouts["trailer"]), sha256)


def _check_length(record: Record, role: str, fmt: RecordFormat) -> None:
    """An FB detail is exactly LRECL: a shorter copybook would read every field after the
    missing bytes shifted, and still balance. Header and trailer may be shorter (the rest
    of the record is filler nobody reads)."""
    if fmt.kind != "fb" or record.size == fmt.record_length:
        return
    if role == "detail" or record.size > fmt.record_length:
        than = "longer" if record.size > fmt.record_length else "shorter"
        raise ConfigError(f"copybook.{role}: record {record.name} is {record.size} bytes, "
                          f"{than} than input.record_length {fmt.record_length}: the copybook "
                          "does not describe these records (a field missing or too long?)")


def _library(section: Mapping[str, Any], source: Path, path: str) -> list[Path]:
    """The folders COPY members are read from (copybook.library, relative to the config;
    by default the copybook's own folder)."""
    library = section.get("library", [str(Path(path).parent)])
    if not isinstance(library, list) or not all(isinstance(f, str) and f for f in library):
        raise ConfigError("copybook.library: expected a list of folders")
    return [source.parent / folder for folder in library]


def _text_key(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key, "")
    if not isinstance(value, str) or not (value.isascii() and value.isprintable()):
        raise ConfigError(f"copybook.{key}: expected printable ASCII text, got {value!r}")
    return value


MAX_COLUMNS = 1000  # Oracle's limit per table


def _check_names(record: Record) -> None:
    """Every item becomes a column: a plain identifier, once per record."""
    seen: set[str] = set()
    for it in record.items:
        where = record.at(it.line)
        if not IDENTIFIER.fullmatch(it.name):
            raise ConfigError(f"{where}: {it.name!r} cannot be a column name (a letter, then "
                              "letters, digits or _, at most 30; name it FILLER if unused)")
        if it.name in seen:
            raise ConfigError(f"{where}: {it.name!r} appears twice in {record.name} "
                              "(COBOL qualifies it with OF; a table cannot)")
        seen.add(it.name)
    if len(record.items) > MAX_COLUMNS:
        raise ConfigError(f"{record.at(record.line)}: {record.name} flattens to "
                          f"{len(record.items)} fields, more than a table holds ({MAX_COLUMNS})")


def _decoder(record: Record, role: str, cp: Any, type_name: str, values: dict[str, str],
             dates: set[str], roles: Roles) -> RecordDecoder:
    type_item = None
    if type_name:
        try:
            type_item = record.item(type_name)
        except KeyError:
            raise ConfigError(f"copybook.record_type: no field {type_name!r} in "
                              f"{record.name}") from None
    columns = tuple(_column(it, record.at(it.line), role, dates, roles)
                    for it in record.items if it is not type_item)
    if type_item is not None and any(len(v) > type_item.size for v in values.values()):
        raise ConfigError(f"copybook: a record type value is longer than {type_name} "
                          f"({type_item.size} bytes)")
    encoded = {r: cp.encode(v.ljust(type_item.size)) if type_item else b""
               for r, v in values.items()}
    others = tuple(encoded[r] for r in ("header", "trailer")) if role == "detail" else ()
    return RecordDecoder(record.name, record.size, columns, cp, type_item, encoded[role], others,
                         record.odo)


def _column(item: Item, line: str, role: str, dates: set[str], roles: Roles) -> Column:
    where = f"{line}: {item.name}"
    if item.occurrence and item.name in roles.keys | {roles.amount}:
        raise ConfigError(f"{where}: a key or the amount cannot be inside OCCURS DEPENDING "
                          "ON (an entry past the count is absent)")
    if not item.numeric:
        if item.name in dates:
            raise ConfigError(f"{where}: a date must be PIC 9(8) (YYYYMMDD)")
        return Column(item, FieldType.TEXT, required=role == "detail" and item.name in roles.keys)
    width = item.digits + max(0, -item.scale)
    if item.name in dates:
        if item.digits != 8 or item.signed or item.scale or item.usage is not Usage.DISPLAY:
            raise ConfigError(f"{where}: a date must be PIC 9(8) (YYYYMMDD)")
        return Column(item, FieldType.DATE)
    limit = INT64_DIGITS if role == "detail" else MAX_CONTROL_DIGITS
    if width > limit:
        raise ConfigError(f"{where}: {width} digits; a {role} number holds at most {limit} "
                          "exactly (name it FILLER if the job does not need it)")
    integer = item.scale <= 0
    if role == "detail":
        # unsigned whole numbers are kept as digits (leading zeros too): DISPLAY ones, and
        # a numeric key of any usage that is limited to its PIC's digits
        limited = item.usage is Usage.DISPLAY or (item.name in roles.keys
                                                  and item.usage is not Usage.NATIVE)
        plain = integer and item.scale == 0 and not item.signed and limited
        kind = FieldType.DIGITS if plain and item.name != roles.amount else FieldType.AMOUNT
    else:
        count = integer and item.name != roles.trailer_amount
        kind = FieldType.NUMBER if count else FieldType.AMOUNT
    return Column(item, kind)


def _layout(decoder: RecordDecoder, type_value: str) -> Layout:
    """The job's view of the record: stored fields with their database types."""
    fields = [Field("record_type", 1, max(len(type_value), 1), FieldType.LITERAL,
                    value=type_value)]
    for col in decoder.columns:
        it = col.item
        absent = it.occurrence > 0  # past an OCCURS DEPENDING ON count: NULL
        if col.kind is FieldType.TEXT:
            fields.append(Field(it.name, it.offset + 1, it.size, FieldType.TEXT,
                                charset=Charset.PRINTABLE, required=col.required,
                                optional=absent))
        elif col.kind in (FieldType.DATE, FieldType.DIGITS):
            fields.append(Field(it.name, it.offset + 1, it.digits, col.kind, optional=absent))
        else:
            fields.append(Field(it.name, it.offset + 1, it.digits + max(0, -it.scale), col.kind,
                                scale=max(it.scale, 0), optional=absent))
    return Layout(type_value, decoder.size, tuple(fields))
