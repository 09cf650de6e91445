"""Mainframe binary input: FB or VB records of a copybook, in an EBCDIC code page.

The planner walks the file once (hash, header, trailer, ranges of detail records), then
hashes each range: the processors verify what they read against it (pipeline.source).
A [[details]] job reads the same file, its detail records told apart by a type field.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.errors import ConfigError, InputStructureError
from pipeline.inputs.contract import InputFormat, KeysUnreadable
from pipeline.inputs.copybook_layout import FRAMING_KEYS, read_copybook
from pipeline.inputs.text_layout import delimiter_of
from pipeline.layouts.codepage_check import Reading, other_readings
from pipeline.layouts.detail_types import Typed, TypeSpec, typed_batches
from pipeline.layouts.fields import FieldType, Layout
from pipeline.layouts.fixed import DetailBatch
from pipeline.layouts.mainframe import RecordDecoder, decode, decode_details
from pipeline.layouts.recfm import RecordFormat, framing_hint, read_batches, walk_file
from pipeline.source import (
    ByteRange,
    FileIdentity,
    InputPlan,
    RangeDigest,
    range_digests,
    with_identity,
)


@dataclass(frozen=True)
class MainframeInput(InputFormat):
    fmt: RecordFormat
    header: RecordDecoder
    detail: RecordDecoder
    trailer: RecordDecoder
    copybook_sha256: str = ""  # of the copybook file as read, recorded in BATCH_RUN
    job_layouts: tuple[Layout, ...] = ()  # header, detail, trailer as the tables store them

    sample_suffix: ClassVar[str] = ".bin"
    several_types: ClassVar[bool] = True
    input_keys: ClassVar[frozenset[str]] = frozenset(
        {"record_length", "encoding", "blocked", "delimiter", *FRAMING_KEYS})

    @classmethod
    def from_config(cls, name: str, data: Mapping[str, Any], source: Path) -> MainframeInput:
        delimiter_of(data.get("input", {}))  # checked as for every job, though unused
        book = read_copybook(name, data, source)
        return cls(book.fmt, book.header, book.detail, book.trailer, book.sha256, book.layouts)

    def layouts(self) -> tuple[Layout, Layout, Layout]:
        header, detail, trailer = self.job_layouts
        return header, detail, trailer

    @property
    def code_page(self) -> str:
        return self.detail.code_page.name

    def plan(self, path: Path, parts: int) -> InputPlan:
        """Walk the file once: hash, header, trailer, ranges of detail records; then hash
        each range."""
        try:
            before = FileIdentity.of(os.stat(path))
            walk = walk_file(path, self.fmt, parts)
        except FileNotFoundError:
            raise InputStructureError(f"input file {path} does not exist") from None
        except (IsADirectoryError, PermissionError) as exc:
            raise InputStructureError(f"input file {path} cannot be read: {exc}") from None
        with open(path, "rb") as f:
            if walk.records < 2:
                raise InputStructureError(_one_record(f, walk.header, self))
            try:
                header = _control(f, walk.header, self.header, "first", "header")
                trailer = _control(f, walk.trailer, self.trailer, "last", "trailer")
            except InputStructureError as exc:  # the first reason a header fails: VB read as FB
                raise InputStructureError(f"{exc}{framing_hint(path, self.fmt)}") from None
        ranges = range_digests(path, _ranges(walk, self.fmt, before.size))
        plan = InputPlan(path, before.size, walk.sha256, header, trailer, ranges)
        return with_identity(plan, before, FileIdentity.of(os.stat(path)))

    def read(self, path: Path, rng: ByteRange, batch_size: int, amount: str,
             hash_of: str | None = None, digest: RangeDigest | None = None
             ) -> Iterator[DetailBatch]:
        fmt = self.fmt
        size = fmt.record_bytes(self.detail.size)
        for b in read_batches(path, fmt, rng.start, rng.end, rng.first_line, rng.lines,
                              batch_size, size, digest):
            yield decode_details(self.detail, amount, b.rec, b.lengths, b.offsets,
                                 b.first_record, exact_length=fmt.kind == "vb", hash_of=hash_of)

    def read_keys(self, path: Path, sha256: str, lines: np.ndarray,
                  key_columns: Sequence[str]) -> dict[int, str]:
        raise KeysUnreadable("keys of lost records are not read back from a copybook job's "
                             "file: see the source lines")

    def other_readings(self, path: Path, plan: InputPlan) -> list[Reading]:
        return other_readings(self.fmt, [self.detail], path, plan)

    def with_types(self, types: Sequence[tuple[InputFormat, str]]) -> InputFormat:
        specs = [(t.detail, amount) for t, amount in types if isinstance(t, MainframeInput)]
        where = {(it.offset, it.size) for spec, _ in specs if (it := spec.type_item)}
        if len(where) != 1:
            raise ConfigError("copybook.record_type: must be at the same place in every "
                              "detail record")
        return DetailTypesInput(**{f.name: getattr(self, f.name) for f in fields(self)},
                                types=tuple(specs))

    @property
    def sample_format(self) -> str:
        return f"ebcdic-{self.fmt.kind}"


@dataclass(frozen=True)
class DetailTypesInput(MainframeInput):
    """A [[details]] job's input: the first type's as the job's (header, trailer, framing),
    and every type's detail record with its amount field."""

    types: tuple[TypeSpec, ...] = ()

    def read_typed(self, path: Path, rng: ByteRange, batch_size: int, amount: str,
                   hash_of: str | None = None, digest: RangeDigest | None = None
                   ) -> Iterator[Typed]:
        return typed_batches(self.fmt, self.types, path, rng, batch_size, digest)

    def other_readings(self, path: Path, plan: InputPlan) -> list[Reading]:
        return other_readings(self.fmt, [spec for spec, _ in self.types], path, plan)


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
