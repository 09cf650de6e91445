"""Fixed-width text: every record ``record_length`` columns and a newline (the shipped
daily-transactions job)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.errors import InputStructureError
from pipeline.inputs.contract import join_key
from pipeline.inputs.lines import TextLines, check_last_newline, control_values, refuse_binary_keys
from pipeline.inputs.text_layout import delimiter_of, fixed_layouts
from pipeline.layouts.fields import Layout
from pipeline.layouts.fixed import DetailBatch, parse_details
from pipeline.settings import get
from pipeline.source import InputPlan, split_lines


class FixedWidthText(TextLines):
    @classmethod
    def from_config(cls, name: str, data: Mapping[str, Any], source: Path) -> FixedWidthText:
        inp = data.get("input", {})
        length = get(inp, "input.record_length", int)
        delimiter_of(inp)  # checked as for every text job, though no field is split on it
        refuse_binary_keys(data)
        return cls(*fixed_layouts(data.get("layout", {}), length))

    def _plan(self, f: BinaryIO, path: Path, size: int, parts: int) -> InputPlan:
        header, trailer = self.header, self.trailer
        width = header.length + 1
        header_values = _control(header, f.read(width), "first", "header")
        f.seek(max(0, size - trailer.length - 2))
        tail = f.read()
        check_last_newline(tail)
        if size == width:
            raise InputStructureError("the file holds a header only: no trailer")
        if size < 2 * width or tail[-trailer.length - 2] != ord("\n"):
            raise InputStructureError(f"the last record is not a {trailer.length}-byte trailer")
        trailer_values = _control(trailer, tail[-trailer.length - 1 :], "last", "trailer")
        return split_lines(f, path, size, header_values, trailer_values,
                           (width, size - trailer.length - 1), parts)

    def parse(self, data: bytes, first_line: int, amount: str,
              hash_of: str | None) -> DetailBatch:
        return parse_details(self.detail, amount, data, first_line, self.control_types,
                             hash_of)

    def key_text(self, record: bytes, key_columns: Sequence[str]) -> str:
        text = record.decode("latin-1")
        fields = [self.detail.field(k) for k in key_columns]
        return join_key([text[f.offset:f.end] for f in fields])

    @property
    def sample_format(self) -> str:
        return "fixed"


def _control(layout: Layout, record: bytes, where: str, what: str) -> dict[str, Any]:
    """The values of a header or trailer: exactly one record of the layout and a newline."""
    if len(record) != layout.length + 1 or record[-1:] != b"\n":
        if b"\r\n" in record or record[layout.length:layout.length + 1] == b"\r":
            raise InputStructureError(f"the {where} record ends with CR LF (Windows line "
                                      "ends); expected LF only: convert the file (dos2unix)")
        raise InputStructureError(f"the {where} record is not a {layout.length}-byte {what} "
                                  "ended by a newline")
    rec = np.frombuffer(record[:-1], dtype=np.uint8).reshape(1, -1)
    if rec[0, 0] != ord(layout.record_type):
        raise InputStructureError(f"the {where} record is not a {what}: it starts with "
                                  f"{record[:1]!r}, expected {layout.record_type!r}")
    return control_values(layout, rec, what)
