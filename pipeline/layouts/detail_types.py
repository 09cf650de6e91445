"""Several detail record types in one file ([[details]]): each batch is split by the
record-type field, and each type's rows are decoded by its own record's decoder.

A record whose type is none of the job's (nor the header's or trailer's) is a reject with
that reason; its amount is unknowable, so the trailer's amount total cannot be proven.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.layouts.fixed import DetailBatch
from pipeline.layouts.mainframe import RecordDecoder, decode_details, hex_dump
from pipeline.layouts.recfm import RecordFormat, read_batches
from pipeline.source import ByteRange, Reject

# a type's decoder and the name of its amount field
TypeSpec = tuple[RecordDecoder, str]
Typed = tuple[DetailBatch, tuple[DetailBatch | None, ...]]


def typed_batches(fmt: RecordFormat, specs: Sequence[TypeSpec], path: Path, rng: ByteRange,
                  batch: int, digest: Any = None) -> Iterator[Typed]:
    """Per batch of the range: the whole batch's figures and rejects (every type's, and
    the unknown types'), and each type's own DetailBatch (None: none of that type)."""
    size = fmt.record_bytes(max(s.size for s, _ in specs))
    for b in read_batches(path, fmt, rng.start, rng.end, rng.first_line, rng.lines, batch,
                          size, digest):
        yield split_types(specs, b.rec, b.lengths, b.offsets, b.first_record,
                          exact_length=fmt.kind == "vb")


def split_types(specs: Sequence[TypeSpec], rec: np.ndarray, lengths: np.ndarray,
                offsets: np.ndarray, first_record: int, exact_length: bool) -> Typed:
    first = specs[0][0]
    assert first.type_item is not None  # config: [[details]] needs copybook.record_type
    t = first.type_item
    if rec.shape[1] < t.end:  # records too short to hold a type: unknown, and rejected
        rec = np.pad(rec, ((0, 0), (0, t.end - rec.shape[1])))
    numbers = np.arange(len(rec), dtype=np.int64) + first_record
    types = rec[:, t.offset:t.end]

    def having(value: bytes) -> np.ndarray:
        return np.asarray((types == np.frombuffer(value, np.uint8)).all(axis=1))

    known = np.zeros(len(rec), dtype=bool)
    parts: list[DetailBatch | None] = []
    for spec, amount in specs:
        mask = having(spec.type_value)
        known |= mask
        if not mask.any():
            parts.append(None)
            continue
        rows = rec if mask.all() else rec[mask]  # a batch of one type: no copy
        parts.append(decode_details(spec, amount, rows, lengths[mask], offsets[mask],
                                    int(numbers[mask][0]), exact_length,
                                    numbers=numbers[mask]))
    control = np.zeros(len(rec), dtype=bool)
    for value in first.control_values:
        control |= having(value)
    unknown = np.flatnonzero(~known & ~control)
    found = [p for p in parts if p is not None]
    rejects = [r for p in found for r in p.rejects]
    rejects += [_unknown(specs, rec, lengths, offsets, numbers, int(i)) for i in unknown]
    whole = DetailBatch(
        first_line=first_record, lines=np.empty(0, np.int64), columns={},
        records_read=len(rec) - int(control.sum()),
        rejects=sorted(rejects, key=lambda r: r.line),
        accepted_amount=sum(p.accepted_amount for p in found),
        read_amount=sum(p.read_amount for p in found),
        unreadable_amounts=sum(p.unreadable_amounts for p in found) + len(unknown),
        misplaced=numbers[control].tolist())
    return whole, tuple(parts)


def _unknown(specs: Sequence[TypeSpec], rec: np.ndarray, lengths: np.ndarray,
             offsets: np.ndarray, numbers: np.ndarray, i: int) -> Reject:
    first = specs[0][0]
    assert first.type_item is not None
    t, cp = first.type_item, first.code_page
    shown = "".join(cp.chars[b] for b in rec[i, t.offset:t.end].tobytes())
    known = ", ".join(repr("".join(cp.chars[b] for b in s.type_value)) for s, _ in specs)
    raw = rec[i, : lengths[i]].tobytes()
    return Reject(int(numbers[i]), f"record type {shown!r} is not a detail type of the job "
                  f"({known}) (record at byte offset {int(offsets[i])})",
                  hex_dump(raw).encode("ascii"))
