"""A mainframe input as a job reads it: copybook records, code page, record format.

The config names the copybook and which 01 records are the header, the detail and the
trailer; this module turns them into the job's Layouts (what the tables store) and
RecordDecoders (how the bytes are read), plans the file and yields detail batches.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, InputStructureError
from pipeline.layouts.codepages import code_page
from pipeline.layouts.copybook import Item, Record, Usage, parse_copybook_file
from pipeline.layouts.fields import Charset, Field, FieldType, Layout
from pipeline.layouts.fixed import DetailBatch
from pipeline.layouts.mainframe import (
    INT64_DIGITS,
    Column,
    RecordDecoder,
    decode,
    decode_details,
)
from pipeline.layouts.recfm import RecordFormat, framing_hint, read_batches, walk_file
from pipeline.source import ByteRange, FileIdentity, InputPlan, range_digests, with_identity

ROLES = ("header", "detail", "trailer")
MAX_CONTROL_DIGITS = 31


@dataclass(frozen=True)
class MainframeInput:
    fmt: RecordFormat
    header: RecordDecoder
    detail: RecordDecoder
    trailer: RecordDecoder
    copybook_sha256: str = ""  # of the copybook file as read, recorded in BATCH_RUN


@dataclass(frozen=True)
class Roles:
    """The fields the job gives a role to (for types and checks)."""

    keys: frozenset[str]  # the key field(s): one name, or several for a composite key
    amount: str
    trailer_count: str
    trailer_amount: str


def build_mainframe(section: Mapping[str, Any], fmt: RecordFormat, encoding: str,
                    source: Path, roles: Roles) -> tuple[MainframeInput, dict[str, Layout]]:
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
    mf = MainframeInput(fmt, decoders["header"], decoders["detail"], decoders["trailer"],
                        sha256)
    return mf, layouts


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
    from pipeline.config import IDENTIFIER

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


# --- planning and reading ------------------------------------------------------------


def plan_mainframe(path: Path, mf: MainframeInput, parts: int) -> InputPlan:
    """Walk the file once: hash, header, trailer, ranges of detail records; then hash
    each range (the processors verify what they read against it: pipeline.source)."""
    try:
        before = FileIdentity.of(os.stat(path))
        walk = walk_file(path, mf.fmt, parts)
    except FileNotFoundError:
        raise InputStructureError(f"input file {path} does not exist") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise InputStructureError(f"input file {path} cannot be read: {exc}") from None
    with open(path, "rb") as f:
        if walk.records < 2:
            raise InputStructureError(_one_record(f, walk.header, mf))
        try:
            header = _control(f, walk.header, mf.header, "first", "header")
            trailer = _control(f, walk.trailer, mf.trailer, "last", "trailer")
        except InputStructureError as exc:  # the first reason a header fails: VB read as FB
            raise InputStructureError(f"{exc}{framing_hint(path, mf.fmt)}") from None
    ranges = range_digests(path, _ranges(walk, mf.fmt, before.size))
    plan = InputPlan(path, before.size, walk.sha256, header, trailer, ranges)
    return with_identity(plan, before, FileIdentity.of(os.stat(path)))


def _ranges(walk: Any, fmt: RecordFormat, size: int) -> tuple[ByteRange, ...]:
    last = walk.records - 1  # 0-based number of the trailer
    if fmt.blocked:
        starts = [(o, r) for o, r in walk.cuts if r < last]
        end = size - fmt.file_end
    else:
        first_detail = walk.header[0] + walk.header[1]
        starts = [(first_detail, 1)] + [(o, r) for o, r in walk.cuts if 1 < r < last]
        end = walk.trailer_start
    starts = sorted(set(starts))
    ranges = []
    for i, (offset, r) in enumerate(starts):
        nxt_offset, nxt_r = starts[i + 1] if i + 1 < len(starts) else (end, last)
        first = max(r, 1)
        ranges.append(ByteRange(offset, nxt_offset, first + 1, nxt_r - first))
    return tuple(rg for rg in ranges if rg.lines > 0) or (ranges[0],)


def _one_record(f: Any, where: tuple[int, int], mf: MainframeInput) -> str:
    """What a one-record file holds, for its message: a header or a trailer alone."""
    for spec, what, missing in ((mf.header, "a header", "trailer"),
                                (mf.trailer, "a trailer", "header")):
        try:
            _control(f, where, spec, "only", what)
        except InputStructureError:
            continue
        return f"the file holds one record, {what} only: no {missing}"
    return "the file holds one record, neither a header nor a trailer"


def _control(f: Any, where: tuple[int, int], spec: RecordDecoder, position: str,
             what: str) -> dict[str, Any]:
    f.seek(where[0])
    raw = f.read(where[1])
    if len(raw) < spec.size:
        raise InputStructureError(f"the {position} record is {len(raw)} bytes, a {what} "
                                  f"({spec.name}) is {spec.size}")
    rec = np.frombuffer(raw, np.uint8).reshape(1, -1)
    decoded = decode(spec, rec)
    if not decoded.ok[0]:
        raise InputStructureError(f"the {position} record is not a valid {what}: "
                                  f"{decoded.failures.reason(0, raw)}")
    values: dict[str, Any] = {}
    for col in spec.columns:
        v = decoded.values[col.name][0]
        values[col.name] = str(v) if col.kind in (FieldType.TEXT, FieldType.DATE) else int(v)
    return values


def detail_batches(mf: MainframeInput, amount: str, path: Path, rng: ByteRange,
                   batch: int, digest: Any = None,
                   hash_of: str | None = None) -> Iterator[DetailBatch]:
    size = mf.fmt.record_length if mf.fmt.kind == "fb" else mf.detail.size + 4
    for b in read_batches(path, mf.fmt, rng.start, rng.end, rng.first_line, rng.lines, batch,
                          size, digest):
        yield decode_details(mf.detail, amount, b.rec, b.lengths, b.offsets, b.first_record,
                             exact_length=mf.fmt.kind == "vb", hash_of=hash_of)
