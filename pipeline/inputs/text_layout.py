"""The [layout] section of a text input: header, detail and trailer fields by column
(fixed-width) or by position in the line (delimited)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import ConfigError
from pipeline.layouts.csv import CsvLayout
from pipeline.layouts.fields import Charset, Field, FieldType, Layout
from pipeline.settings import IDENTIFIER, get, identifier, refuse_unknown

MAX_AMOUNT_DIGITS = 18  # 10**18 - 1 still fits int64 after parsing
ROLES = ("header", "detail", "trailer")


def fixed_layouts(section: Mapping[str, Any], record_length: int) -> tuple[Layout, ...]:
    """Header, detail and trailer, each covering ``record_length`` columns exactly."""
    layouts = []
    for name in ROLES:
        layout = Layout(*_record(section, name, csv=False))
        if layout.length != record_length:
            raise ConfigError(f"layout.{name}: fields cover {layout.length} columns, "
                              f"input.record_length is {record_length}")
        _check_layout(layout, name)
        layouts.append(layout)
    return tuple(layouts)


def csv_layouts(section: Mapping[str, Any], delimiter: str,
                quote: str = '"') -> tuple[CsvLayout, ...]:
    """Header, detail and trailer of delimited lines; each layout carries its framing, so
    whoever reads records with it can split them."""
    layouts = []
    for name in ROLES:
        record_type, length, fields = _record(section, name, csv=True)
        _check_csv_fields(list(fields), name)
        layout = CsvLayout(record_type, length, fields, delimiter, quote)
        _check_layout(layout, name)
        layouts.append(layout)
    return tuple(layouts)


def delimiter_of(inp: Mapping[str, Any], default: str = ",", quote: str = '"') -> str:
    """input.delimiter: one ASCII character that is neither the quote nor a line end."""
    delimiter = get(inp, "input.delimiter", str, default)
    if len(delimiter) != 1 or delimiter in quote + "\r\n" or not delimiter.isascii():
        raise ConfigError(f"input.delimiter: expected one ASCII character other than a quote "
                          f"or a line end, got {delimiter!r}")
    return delimiter


def _record(section: Mapping[str, Any], name: str,
            csv: bool) -> tuple[str, int, tuple[Field, ...]]:
    """(record type, length, fields) of layout.<name>: fields cover the record in order."""
    raw = section.get(name)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"layout.{name}: expected a list of fields")
    fields: list[Field] = []
    position = 1
    for i, item in enumerate(raw):
        key = _field_key(name, i, item)
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: expected a table of field settings")
        field = _field(item, key, position if csv else None)
        if field.start != position:
            raise ConfigError(f"{key}: field {field.name!r} starts at column {field.start}, "
                              f"expected {position} (fields must cover the record in order)")
        position = field.end + 1
        fields.append(field)
    return fields[0].value, position - 1, tuple(fields)


def _field_key(layout: str, index: int, item: Any) -> str:
    """How a message names a field: by its name, which the operator finds in the TOML, or
    by its 1-based position when the name itself is missing or not an identifier."""
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and IDENTIFIER.fullmatch(name):
        return f"layout.{layout}.{name}"
    return f"layout.{layout} field {index + 1}"


def _field(item: Mapping[str, Any], key: str, csv_start: int | None) -> Field:
    allowed = {"name", "start", "length", "type", "value", "charset", "required", "scale", "sign"}
    refuse_unknown(item, key, allowed)
    type_name = get(item, f"{key}.type", str)
    try:
        ftype = FieldType(type_name)
    except ValueError:
        raise ConfigError(f"{key}.type: expected one of {[t.value for t in FieldType]}, "
                          f"got {type_name!r}") from None
    charset = get(item, f"{key}.charset", str, "printable")
    try:
        chars = Charset(charset)
    except ValueError:
        raise ConfigError(f"{key}.charset: expected one of {[c.value for c in Charset]}, "
                          f"got {charset!r}") from None
    start = csv_start if csv_start is not None else get(item, f"{key}.start", int)
    field = Field(
        name=identifier(item, f"{key}.name"),
        start=start,
        length=get(item, f"{key}.length", int),
        type=ftype,
        value=get(item, f"{key}.value", str, ""),
        charset=chars,
        required=get(item, f"{key}.required", bool, False),
        scale=get(item, f"{key}.scale", int, 0),
        sign=get(item, f"{key}.sign", str, ""),
    )
    _check_field(field, key)
    return field


def _check_field(field: Field, key: str) -> None:
    if field.length < 1:
        raise ConfigError(f"{key}.length: expected a positive length")
    if field.type is FieldType.LITERAL and (len(field.value) != field.length
                                            or not field.value.isascii()):
        raise ConfigError(f"{key}.value: expected {field.length} ASCII characters")
    if field.type is FieldType.DATE and field.length != 8:
        raise ConfigError(f"{key}.length: a date is YYYYMMDD, 8 columns")
    if field.type is FieldType.SIGN and field.length != 1:
        raise ConfigError(f"{key}.length: a sign is 1 column")
    if field.type in (FieldType.AMOUNT, FieldType.NUMBER) and field.length > MAX_AMOUNT_DIGITS:
        raise ConfigError(f"{key}.length: at most {MAX_AMOUNT_DIGITS} digits fit exactly")
    if field.type is FieldType.AMOUNT and not 0 <= field.scale < field.length:
        raise ConfigError(f"{key}.scale: expected 0 to {field.length - 1}")


def _check_layout(layout: Layout, name: str) -> None:
    if layout.fields[0].type is not FieldType.LITERAL:
        raise ConfigError(f"layout.{name} field 1: the first field must be the record type "
                          "literal")
    names = [f.name for f in layout.fields if f.type is not FieldType.FILLER]
    if len(names) != len(set(names)):
        raise ConfigError(f"layout.{name}: field names must be unique")
    for f in layout.fields:
        if f.type is FieldType.AMOUNT and f.sign:
            sign = next((s for s in layout.fields if s.name == f.sign), None)
            if sign is None or sign.type is not FieldType.SIGN:
                raise ConfigError(f"layout.{name}: amount {f.name!r} names sign {f.sign!r}, "
                                  "which is not a sign field of the layout")


def _check_csv_fields(fields: list[Field], name: str) -> None:
    for i, f in enumerate(fields):
        if f.type is FieldType.SIGN or (f.type is FieldType.AMOUNT and f.sign):
            raise ConfigError(f"{_field_key(name, i, {'name': f.name})}: a csv amount carries "
                              'its own sign (e.g. "-1234.56"): no sign field, no amount sign key')
