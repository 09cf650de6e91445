"""What the text formats share: records are newline-ended lines, the header is the first
line and the trailer the last; details are parsed a batch of lines at a time."""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from pipeline.errors import ConfigError, InputStructureError
from pipeline.inputs.contract import InputFormat, KeysUnreadable
from pipeline.inputs.copybook_layout import FRAMING_KEYS
from pipeline.layouts.fields import FieldType, Layout
from pipeline.layouts.fixed import DetailBatch, check_records, columns_of
from pipeline.source import (
    ByteRange,
    InputPlan,
    LineChunk,
    RangeDigest,
    Reject,
    plan_file,
    read_lines,
)


@dataclass(frozen=True)
class TextLines(InputFormat):
    """A text format: it plans with split_lines and reads with read_lines (pipeline.source);
    a subclass gives its control records (_plan), its detail parser and its key text."""

    header: Layout
    detail: Layout
    trailer: Layout

    input_keys: ClassVar[frozenset[str]] = frozenset({"record_length", "delimiter"})

    def layouts(self) -> tuple[Layout, Layout, Layout]:
        return self.header, self.detail, self.trailer

    def plan(self, path: Path, parts: int) -> InputPlan:
        return plan_file(path, lambda f, size: self._plan(f, path, size, parts))

    @abstractmethod
    def _plan(self, f: BinaryIO, path: Path, size: int, parts: int) -> InputPlan:
        """Read the header and the trailer, then split_lines the details between them."""

    @abstractmethod
    def parse(self, data: bytes, first_line: int, amount: str,
              hash_of: str | None) -> DetailBatch:
        """The batch of whole, newline-ended detail lines starting at ``first_line``."""

    @abstractmethod
    def key_text(self, record: bytes, key_columns: Sequence[str]) -> str:
        """The key of one record (its line without the newline), as `explain` shows it."""

    def read(self, path: Path, rng: ByteRange, batch_size: int, amount: str,
             hash_of: str | None = None, digest: RangeDigest | None = None
             ) -> Iterator[DetailBatch]:
        for item in read_lines(path, rng, batch_size, self.detail.length, digest):
            if isinstance(item, LineChunk):
                yield self.parse(item.data, item.first_line, amount, hash_of)
            else:
                yield _unreadable(item)

    def read_keys(self, path: Path, sha256: str, lines: np.ndarray,
                  key_columns: Sequence[str]) -> dict[int, str]:
        """One streaming pass that hashes the file and keeps the wanted lines: the file
        is never held whole."""
        wanted, raw = np.sort(lines), {}
        digest, line, carry = hashlib.sha256(), 1, b""
        with open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                digest.update(chunk)
                data = carry + chunk
                cut = data.rfind(b"\n") + 1
                block, carry = data[:cut], data[cut:]
                count = block.count(b"\n")
                lo, hi = np.searchsorted(wanted, [line, line + count])
                if hi > lo:
                    texts = block.split(b"\n")
                    raw.update({n: texts[n - line] for n in wanted[lo:hi].tolist()})
                line += count
        if digest.hexdigest() != sha256:
            raise KeysUnreadable(f"{path} changed since the run: keys of lost lines not shown")
        return {n: self.key_text(text, key_columns) for n, text in raw.items()}

    @property
    def control_types(self) -> str:
        """The record types that mark a header or trailer misplaced among the details."""
        return self.header.record_type[:1] + self.trailer.record_type[:1]


def refuse_binary_keys(data: Mapping[str, Any]) -> None:
    """A text job names no copybook and no binary framing."""
    if "copybook" in data or {"encoding", "blocked", *FRAMING_KEYS} & set(
            data.get("input", {})):
        raise ConfigError(f"[copybook], input.encoding, input.blocked and input."
                          f"{', input.'.join(FRAMING_KEYS)}: only for input.format fb or vb")


def check_last_newline(tail: bytes) -> None:
    if not tail.endswith(b"\n"):
        raise InputStructureError("the last record does not end with a newline: "
                                  "the file looks truncated")


def control_values(layout: Layout, rec: np.ndarray, what: str) -> dict[str, Any]:
    """Validate a header or trailer record (1, L) and return its values (numbers as ints)."""
    checked = check_records(layout, rec)
    if not checked.ok[0]:
        raise InputStructureError(f"the {what} record is invalid: "
                                  f"{checked.failures.reason(0, rec[0])}")
    values: dict[str, Any] = {k: int(v[0]) for k, v in checked.numbers.items()}
    for fld in layout.fields:
        if fld.type in (FieldType.TEXT, FieldType.DATE, FieldType.DIGITS):
            values[fld.name] = str(columns_of(layout, rec)[fld.name][0])
    return values


def _unreadable(reject: Reject) -> DetailBatch:
    """An over-long line: one record read, rejected, its amount (and hashed field)
    unknowable."""
    return DetailBatch(reject.line, np.empty(0, np.int64), {}, 1, [reject], 0, 0, 1, [],
                       unhashed=1)
