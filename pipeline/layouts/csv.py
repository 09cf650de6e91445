"""CSV records, validated by the fixed-width rules: one set of rules for both formats.

Each CSV row becomes a *virtual fixed-width record* of the same layout: text, dates and
literals left-justified and space padded to the field's ``length``, digits and numbers
right-justified and zero padded, and each amount split into a sign column and
``length`` zero-padded digits with ``scale`` implied decimals. The (B, L) matrix of those
records then goes through ``check_records`` / ``columns_of`` unchanged. Only what a
fixed-width record cannot express is judged here: the quoting, the column count, a cell
wider than its field, and the decimal text of an amount ("-1234.56", exact: string
operations, never a float).

A CSV amount carries its own optional sign, so a CSV layout names no sign field: the
virtual record gets one, named ``<amount>.sign`` (a name no config can use).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipeline.layouts.fields import Field, FieldType, Layout
from pipeline.layouts.fixed import (
    CheckedRecords,
    DetailBatch,
    Reject,
    check_records,
    columns_of,
    hash_figures,
    hashed_field,
)
from pipeline.money import checked_sum, decimal_parts

CONTROL_TYPES = ("H", "T")  # as the fixed parser: a header or trailer inside the details
SIGN_SUFFIX = ".sign"
ZERO_PADDED = frozenset({FieldType.DIGITS, FieldType.NUMBER})
_AMOUNT_EXAMPLE = "a decimal amount such as -1234.56"


@dataclass(frozen=True)
class CsvLayout(Layout):
    """A layout whose records are delimited lines: fields in column order, each ``length``
    the widest its cell may be (for an amount: its digits, sign and point not counted)."""

    delimiter: str = ","
    quote: str = '"'  # what encloses a cell holding the delimiter


class NotARecord(ValueError):
    """A CSV line that is no record of its layout; the message says why."""


@functools.cache
def virtual_layout(layout: Layout) -> Layout:
    """The fixed-width twin of a CSV layout: each amount gains a sign column in front."""
    fields: list[Field] = []
    start = 1
    for fld in layout.fields:
        if fld.type is FieldType.AMOUNT:
            sign = Field(fld.name + SIGN_SUFFIX, start, 1, FieldType.SIGN)
            fields.append(sign)
            start += 1
            fld = replace(fld, sign=sign.name)
        fields.append(replace(fld, start=start))
        start += fld.length
    return Layout(layout.record_type, start - 1, tuple(fields))


# --- splitting lines into cells --------------------------------------------------------


def split_rows(lines: Sequence[str], delimiter: str, quote: str = '"') -> list[list[str] | str]:
    """The cells of each line, or the reason the line is no CSV record."""
    if not any("\r" in line for line in lines):
        # the common case: one C-speed reader over the whole batch
        reader = csv.reader(lines, delimiter=delimiter, quotechar=quote, strict=True)
        try:
            rows: list[list[str] | str] = list(reader)
        except csv.Error:
            rows = []
        # an open quote makes the reader swallow the next line: judge line by line then
        if len(rows) == len(lines) and reader.line_num == len(lines):
            return [row or "record is empty" for row in rows]
    return [split_line(line, delimiter, quote) for line in lines]


def split_line(line: str, delimiter: str, quote: str = '"') -> list[str] | str:
    if line.endswith("\r"):
        return "record ends with CR LF (a Windows line end); expected LF only"
    if "\r" in line:
        return "record holds a CR (carriage return) character"
    if not line:
        return "record is empty"
    try:
        return next(csv.reader((line,), delimiter=delimiter, quotechar=quote, strict=True))
    except csv.Error as exc:
        if str(exc) == "unexpected end of data":
            return "bad quoting: a quote is not closed on its line (no newlines in fields)"
        if "expected after" in str(exc):
            return f"bad quoting: {exc}"
        return f"not a CSV record: {exc}"


def column_count_reason(row: list[str], layout: Layout) -> str:
    if len(row) == len(layout.fields):
        return ""
    return f"record has {len(row)} columns, expected {len(layout.fields)}"


# --- cells to virtual fixed-width records ----------------------------------------------


@dataclass
class VirtualRecords:
    """CSV rows as fixed-width records, with what the fixed-width rules cannot see."""

    layout: Layout  # the fixed-width twin (virtual_layout)
    rec: np.ndarray  # (R, layout.length) uint8
    cell_bad: np.ndarray  # bool (R,): a cell was refused here (too wide, bad amount)
    cell_reasons: dict[int, list[tuple[str, str]]]  # row -> [(field name, reason)]

    def reason(self, row: int, checked: CheckedRecords) -> str:
        """The reasons of one row in field order; a refused cell is explained once."""
        own = dict(self.cell_reasons.get(row, []))
        order = {f.name: i for i, f in enumerate(self.layout.fields)}
        parts = [(order[name], f"{name.upper()} {why}") for name, why in own.items()]
        for bad, fld, explain in checked.failures.rules:
            if bad[row] and fld.name not in own:
                raw = self.rec[row, fld.offset : fld.end].tobytes()
                parts.append((order[fld.name], f"{fld.name.upper()} {explain(raw)}"))
        return "; ".join(text for _, text in sorted(parts, key=lambda p: p[0]))


def virtual_records(layout: Layout, rows: Sequence[list[str]]) -> VirtualRecords:
    """Rows with the right column count as a (R, L) matrix of virtual fixed-width records."""
    twin = virtual_layout(layout)
    rec = np.full((len(rows), twin.length), ord(" "), dtype=np.uint8)
    out = VirtualRecords(twin, rec, np.zeros(len(rows), dtype=bool), {})
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in layout.fields]
    for fld, cells in zip(layout.fields, columns, strict=True):
        target = twin.field(fld.name)
        if fld.type is FieldType.AMOUNT:
            _put_amounts(out, twin, target, cells)
        else:
            _put_cells(out, target, cells)
    return out


def _put_cells(out: VirtualRecords, fld: Field, cells: Sequence[str]) -> None:
    width = fld.length
    widths = np.fromiter(map(len, cells), np.int64, len(cells))
    for row in np.flatnonzero(widths > width).tolist():
        cell = cells[row]
        _refuse(out, row, fld, f"{ascii(cell)} is {len(cell)} characters, at most {width}")
    if fld.type in ZERO_PADDED:
        # an empty cell stays blank, so the digit rule refuses it instead of reading 0
        padded = [c.rjust(width, "0")[:width] if c else " " * width for c in cells]
    else:
        padded = [c.ljust(width)[:width] for c in cells]
    _fill(out.rec, fld, padded)


def _put_amounts(out: VirtualRecords, twin: Layout, fld: Field, cells: Sequence[str]) -> None:
    signs, digits = [], []
    for row, cell in enumerate(cells):
        parsed = amount_digits(cell, fld.length, fld.scale)
        if isinstance(parsed, str):
            _refuse(out, row, fld, parsed)
            parsed = ("+", " " * fld.length)  # blank digits: the amount is unreadable
        signs.append(parsed[0])
        digits.append(parsed[1])
    _fill(out.rec, twin.field(fld.sign), signs)
    _fill(out.rec, fld, digits)


def amount_digits(cell: str, length: int, scale: int) -> tuple[str, str] | str:
    """("+" or "-", ``length`` digits with ``scale`` implied decimals), or why not."""
    parts = decimal_parts(cell)
    if parts is None:
        return f"is empty, expected {_AMOUNT_EXAMPLE}" if not cell else \
            f"{ascii(cell)} is not {_AMOUNT_EXAMPLE}"
    sign, whole, fraction = parts[0], parts[1].lstrip("0"), parts[2]
    if len(fraction) > scale:
        # never rounded: money is refused rather than changed
        return f"{ascii(cell)} has more than {scale} decimals"
    if len(whole) > length - scale:
        return f"{ascii(cell)} has more than {length - scale} digits before the decimal point"
    return ("-" if sign == "-" else "+"), whole.rjust(length - scale, "0") + fraction.ljust(
        scale, "0")


def _refuse(out: VirtualRecords, row: int, fld: Field, reason: str) -> None:
    out.cell_bad[row] = True
    out.cell_reasons.setdefault(row, []).append((fld.name, reason))


def _fill(rec: np.ndarray, fld: Field, cells: list[str]) -> None:
    # latin-1 maps each byte of the input to one character and back: widths are bytes
    block = np.frombuffer("".join(cells).encode("latin-1"), dtype=np.uint8)
    rec[:, fld.offset : fld.end] = block.reshape(len(cells), fld.length)


# --- batches of detail lines and control records ---------------------------------------


def parse_csv_details(layout: CsvLayout, amount: str, data: bytes, first_line: int,
                      control_types: str = "".join(CONTROL_TYPES),
                      hash_of: str | None = None) -> DetailBatch:
    """Parse whole, newline-ended CSV detail lines that start at line ``first_line``
    (``hash_of``: the field a trailer hash total sums)."""
    lines = data.decode("latin-1").split("\n")[:-1]
    good: list[int] = []
    cells: list[list[str]] = []
    misplaced: list[int] = []
    rejects: list[Reject] = []
    for i, row in enumerate(split_rows(lines, layout.delimiter, layout.quote)):
        if isinstance(row, str):
            rejects.append(Reject(first_line + i, row, lines[i].encode("latin-1")))
        elif row[0] in control_types and len(row[0]) == 1:
            misplaced.append(first_line + i)
        elif why := column_count_reason(row, layout):
            rejects.append(Reject(first_line + i, why, lines[i].encode("latin-1")))
        else:
            good.append(i)
            cells.append(row)
    virtual = virtual_records(layout, cells)
    return _detail_batch(virtual, amount, lines, np.array(good, dtype=np.int64), first_line,
                         rejects, misplaced, hash_of)


def _detail_batch(virtual: VirtualRecords, amount: str, lines: list[str], good: np.ndarray,
                  first_line: int, rejects: list[Reject], misplaced: list[int],
                  hash_of: str | None) -> DetailBatch:
    checked = check_records(virtual.layout, virtual.rec)
    ok = checked.ok & ~virtual.cell_bad
    amounts, readable = checked.numbers[amount], checked.readable[amount]
    for row in np.flatnonzero(~ok):
        i = int(good[row])
        rejects.append(Reject(first_line + i, virtual.reason(int(row), checked),
                              lines[i].encode("latin-1")))
    rejects.sort(key=lambda r: r.line)
    unsplit = len(lines) - len(good) - len(misplaced)  # no cells: amount unknowable
    return DetailBatch(
        first_line=first_line,
        lines=first_line + good[ok],
        columns=columns_of(virtual.layout, virtual.rec[ok]),
        records_read=len(lines) - len(misplaced),
        rejects=rejects,
        accepted_amount=checked_sum(amounts[ok]),
        read_amount=checked_sum(amounts[readable]),
        unreadable_amounts=int(np.count_nonzero(~readable)) + unsplit,
        misplaced=misplaced,
        **({} if hash_of is None else hash_figures(
            *hashed_field(virtual.layout, virtual.rec, checked, hash_of), ok,
            np.ones(len(ok), dtype=bool), unsplit)),
    )


def control_record(layout: CsvLayout, line: bytes) -> tuple[Layout, np.ndarray]:
    """The valid virtual record (1, L) of one header or trailer line without its newline."""
    row = split_line(line.decode("latin-1"), layout.delimiter, layout.quote)
    if isinstance(row, str):
        raise NotARecord(row)
    if row[0] != layout.record_type:
        if len(row) == 1 and row[0].startswith(layout.record_type):
            # a whole line in one cell: most likely a fixed-width file given to a CSV job
            raise NotARecord(f"it holds no {layout.delimiter!r} delimiter (a "
                             f"{len(row[0])}-character line starting {ascii(row[0][:12])}): "
                             f"expected a {layout.delimiter!r}-separated line whose first "
                             f"column is {layout.record_type!r}; is this a fixed-width file?")
        raise NotARecord(f"its first column is {ascii(row[0][:40])}, expected "
                         f"{layout.record_type!r}")
    if why := column_count_reason(row, layout):
        raise NotARecord(why)
    virtual = virtual_records(layout, [row])
    checked = check_records(virtual.layout, virtual.rec)
    if virtual.cell_bad[0] or not checked.ok[0]:
        raise NotARecord(virtual.reason(0, checked))
    return virtual.layout, virtual.rec
