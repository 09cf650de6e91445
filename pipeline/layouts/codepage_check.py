"""Text that another EBCDIC code page would read differently: for `validate` to show once.

The EBCDIC code pages agree on letters, digits and the space, and differ on a few
punctuation bytes (cp037 X'5A' is '!', cp500 reads it as ']'). A file declared in the
wrong one of them decodes without a reject and balances, its text quietly changed, so no
check can catch it: an operator who sees the values that would read differently, and
how, can confirm the code page once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from pipeline.layouts.codepages import CODE_PAGES, CodePage, code_page
from pipeline.layouts.fields import FieldType
from pipeline.layouts.mainframe import RecordDecoder
from pipeline.layouts.recfm import RecordFormat, read_batches
from pipeline.source import InputPlan

EXAMPLES = 3


@dataclass
class Reading:
    """How another code page reads the file's detail text fields."""

    code_page: str
    values: int = 0  # text values (one field of one record) it reads differently
    examples: list[tuple[int, str, str, str]] = field(default_factory=list)
    # (record number, field, as the job reads it, as this code page reads it)


def other_readings(fmt: RecordFormat, specs: Sequence[RecordDecoder], path: Path,
                   plan: InputPlan, batch: int = 10_000) -> list[Reading]:
    """One Reading per other EBCDIC code page (none for an ASCII job). ``specs``: the
    detail record (or the detail types of a [[details]] job, each read in its own
    records)."""
    cp = specs[0].code_page
    if cp.name == "ascii":
        return []
    readings = [Reading(name) for name in CODE_PAGES if name not in ("ascii", cp.name)]
    longest = max(s.size for s in specs)
    size = fmt.record_bytes(longest)
    for rng in plan.ranges:
        for b in read_batches(path, fmt, rng.start, rng.end, rng.first_line, rng.lines,
                              batch, size):
            rec = b.rec if b.rec.shape[1] >= longest else np.pad(
                b.rec, ((0, 0), (0, longest - b.rec.shape[1])))
            for spec in specs:
                _count(spec, *_records_of(spec, rec, b.first_record, len(specs) > 1),
                       readings)
    return readings


def _records_of(spec: RecordDecoder, rec: np.ndarray, first: int,
                by_type: bool) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``rec`` that are ``spec``'s records, and their record numbers."""
    numbers = np.arange(len(rec)) + first
    if not by_type or spec.type_item is None:
        return rec, numbers
    t = spec.type_item
    mine = (rec[:, t.offset:t.end] == np.frombuffer(spec.type_value, np.uint8)).all(axis=1)
    return rec[mine], numbers[mine]


def _count(spec: RecordDecoder, rec: np.ndarray, numbers: np.ndarray,
           readings: list[Reading]) -> None:
    cp = spec.code_page
    for item in (c.item for c in spec.columns if c.kind is FieldType.TEXT):
        cols = rec[:, item.offset:item.end]
        for r in readings:
            differs = np.take(_differs(cp.name, r.code_page), cols).any(axis=1)
            r.values += int(np.count_nonzero(differs))
            for i in np.flatnonzero(differs)[:EXAMPLES - len(r.examples)]:
                raw = cols[i].tobytes()
                r.examples.append((int(numbers[i]), item.name, _read(cp, raw),
                                   _read(code_page(r.code_page), raw)))


@cache
def _differs(name: str, other: str) -> np.ndarray:
    """bool (256,): the byte reads as another character in ``other`` than in ``name``."""
    a, b = code_page(name), code_page(other)
    return np.array([a.chars[i] != b.chars[i] for i in range(256)], dtype=bool)


def _read(cp: CodePage, raw: bytes) -> str:
    return "".join(cp.chars[b] for b in raw).rstrip(" \x00")


def other_reading_lines(readings: list[Reading]) -> list[str]:
    """For `validate`: each other code page that would read some text differently."""
    lines = []
    for r in readings:
        if not r.values:
            continue
        shown = "; ".join(f"record {n} {name.upper()} {mine!r} -> {theirs!r}"
                          for n, name, mine, theirs in r.examples)
        lines.append(f"codepage {r.values:,} text value(s) would read differently in "
                     f"{r.code_page}: {shown}")
    if lines:
        lines.append("codepage confirm the job's code page once: a wrong one still balances")
    return lines
