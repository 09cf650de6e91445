"""Delimited text (CSV): cells in column order, the amount a decimal with its own sign,
quoted cells as Python's csv module reads them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pipeline.errors import InputStructureError
from pipeline.inputs.contract import join_key
from pipeline.inputs.lines import TextLines, check_last_newline, control_values, refuse_binary_keys
from pipeline.inputs.text_layout import csv_layouts, delimiter_of
from pipeline.layouts.csv import (
    CsvLayout,
    NotARecord,
    control_record,
    parse_csv_details,
    split_line,
)
from pipeline.layouts.fixed import DetailBatch
from pipeline.settings import get
from pipeline.source import InputPlan, split_lines

MAX_CONTROL = 64 << 10  # a header or trailer line is short; more is no control record


@dataclass(frozen=True)
class CsvText(TextLines):
    header: CsvLayout
    detail: CsvLayout
    trailer: CsvLayout

    # the dialect: a delimited format of another quoting is a subclass that sets these
    quote: ClassVar[str] = '"'
    default_delimiter: ClassVar[str] = ","

    @classmethod
    def from_config(cls, name: str, data: Mapping[str, Any], source: Path) -> CsvText:
        inp = data.get("input", {})
        get(inp, "input.record_length", int, 0)  # a line has no fixed length: checked, unused
        delimiter = delimiter_of(inp, cls.default_delimiter, cls.quote)
        refuse_binary_keys(data)
        return cls(*csv_layouts(data.get("layout", {}), delimiter, cls.quote))

    def _plan(self, f: BinaryIO, path: Path, size: int, parts: int) -> InputPlan:
        """Lines have no fixed width: the header is the first line, the trailer the last."""
        head = f.read(min(size, MAX_CONTROL))
        head = head[: head.find(b"\n") + 1] or head
        header_values = _control(self.header, head, "first", "header")
        f.seek(max(0, size - MAX_CONTROL))
        tail = f.read()
        check_last_newline(tail)
        if size == len(head):
            raise InputStructureError("the file holds a header only: no trailer")
        start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
        if start == 0 and size > len(tail):
            raise InputStructureError(f"the last record is longer than {MAX_CONTROL} bytes: "
                                      "not a trailer")
        trailer_values = _control(self.trailer, tail[start:], "last", "trailer")
        return split_lines(f, path, size, header_values, trailer_values,
                           (len(head), size - len(tail) + start), parts)

    def parse(self, data: bytes, first_line: int, amount: str,
              hash_of: str | None) -> DetailBatch:
        return parse_csv_details(self.detail, amount, data, first_line, self.control_types,
                                 hash_of)

    def key_text(self, record: bytes, key_columns: Sequence[str]) -> str:
        """Split as the parser splits: a quoted key may hold the delimiter."""
        cells = split_line(record.decode("latin-1"), self.detail.delimiter, self.detail.quote)
        if isinstance(cells, str):  # no record: its reason is no key
            cells = []
        names = [f.name for f in self.detail.fields]
        indexes = [names.index(k) for k in key_columns]
        return join_key([cells[i] if i < len(cells) else "" for i in indexes])


def _control(layout: CsvLayout, record: bytes, where: str, what: str) -> dict[str, Any]:
    """The values of a header or trailer line, checked as its virtual fixed-width twin."""
    if record[-1:] != b"\n":
        raise InputStructureError(f"the {where} record is not a {what} line ended by a newline")
    try:
        twin, rec = control_record(layout, record[:-1])
    except NotARecord as exc:
        raise InputStructureError(f"the {where} record is not a valid {what}: {exc}") from None
    return control_values(twin, rec, what)
