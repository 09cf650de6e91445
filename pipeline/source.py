"""The input file, whatever its format: its identity, byte ranges for the processors,
their reading and digests. What the records are is the input format's (pipeline.inputs).

The parent's input format reads the header and the trailer and splits the details into
byte ranges on record boundaries; one streaming pass hashes the file and counts the lines of
each range, so every processor knows the line number its range starts at. No step
holds more than a chunk of the file in memory, whatever its size or shape.

The same pass keeps a CRC-32 per range and the file's identity (device, inode, size,
mtime): each processor checksums the bytes it parses as it reads them and checks the identity
when it opens the file and when it is done (``reading_range``). A file rewritten in place
or replaced under the job fails the run (InputChanged, exit 3) before anything is merged:
what FINAL receives is what the audit's SHA-256 names.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pipeline import interrupts
from pipeline.errors import InputChanged, InputStructureError

CHUNK = 8 << 20
MAX_LINE = 1 << 20  # a "record" longer than this is rejected without being held whole


CHANGED = "input changed while being read"


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int
    first_line: int
    lines: int
    # CRC-32 of the bytes [start, end) as planned; None when not planned (tests)
    crc32: int | None = None


@dataclass(frozen=True)
class FileIdentity:
    """What a file is and was when hashed: a rename or a rewrite changes one of these."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class InputPlan:
    path: Path
    size: int
    sha256: str
    header: dict[str, Any]
    trailer: dict[str, Any]
    ranges: tuple[ByteRange, ...]
    identity: FileIdentity | None = field(default=None, compare=False)

    @property
    def detail_lines(self) -> int:
        return sum(r.lines for r in self.ranges)


def plan_file(path: Path, plan: Callable[[BinaryIO, int], InputPlan]) -> InputPlan:
    """``plan(file, size)`` of the opened input, with the identity its hashing saw."""
    try:
        with open(path, "rb") as f:
            before = FileIdentity.of(os.fstat(f.fileno()))
            if before.size == 0:
                raise InputStructureError(f"input file {path} is empty: no header, no trailer")
            planned = plan(f, before.size)
            return with_identity(planned, before, FileIdentity.of(os.fstat(f.fileno())))
    except FileNotFoundError:
        raise InputStructureError(f"input file {path} does not exist") from None
    except IsADirectoryError:
        raise InputStructureError(f"input file {path} is a directory") from None
    except PermissionError:
        raise InputStructureError(f"input file {path} cannot be read: permission denied") from None


def with_identity(plan: InputPlan, before: FileIdentity, after: FileIdentity) -> InputPlan:
    """The plan with the identity its hashing saw; a change during the hashing fails."""
    if before != after:
        raise InputChanged(f"{CHANGED}: {plan.path} changed while it was being hashed")
    return InputPlan(plan.path, plan.size, plan.sha256, plan.header, plan.trailer, plan.ranges,
                     after)


def split_lines(f: Any, path: Path, size: int, header_values: dict[str, Any],
                trailer_values: dict[str, Any], details: tuple[int, int],
                parts: int) -> InputPlan:
    """Hash the file and split the detail bytes [first, last) into ranges of whole lines."""
    cuts = _cut_points(f, *details, parts)
    digest, counts, digests = _hash_and_count(f, cuts)
    ranges, line = [], 2
    for start, end, count, part in zip(cuts, cuts[1:], counts, digests, strict=False):
        ranges.append(ByteRange(start, end, line, count, part))
        line += count
    return InputPlan(path, size, digest, header_values, trailer_values, tuple(ranges))


def _cut_points(f: Any, first: int, last: int, parts: int) -> list[int]:
    """Byte offsets that split [first, last) into ``parts`` ranges on line boundaries."""
    cuts = [first]
    for k in range(1, parts):
        target = max(first + (last - first) * k // parts, cuts[-1])
        cuts.append(min(_next_line_start(f, target), last))
    cuts.append(last)
    return cuts


def _next_line_start(f: Any, offset: int) -> int:
    if offset == 0:
        return 0
    f.seek(offset - 1)
    while chunk := f.read(64 << 10):
        newline = chunk.find(b"\n")
        if newline >= 0:
            return f.tell() - len(chunk) + newline + 1
    return f.tell()


def _hash_and_count(f: Any, cuts: list[int]) -> tuple[str, list[int], list[int]]:
    """The file's SHA-256, and each range's line count and CRC-32, in one pass."""
    digest = hashlib.sha256()
    counts = [0] * (len(cuts) - 1)
    parts = [RangeDigest() for _ in counts]
    f.seek(0)
    pos = 0
    while chunk := f.read(CHUNK):
        interrupts.check()  # hashing a large file is a phase of its own: stop promptly
        digest.update(chunk)
        view = memoryview(chunk)
        for i in range(len(counts)):
            lo, hi = max(cuts[i], pos), min(cuts[i + 1], pos + len(chunk))
            if lo < hi:
                counts[i] += chunk.count(b"\n", lo - pos, hi - pos)
                parts[i].update(view[lo - pos:hi - pos])
        pos += len(chunk)
    return digest.hexdigest(), counts, [p.crc32 for p in parts]


def range_digests(path: Path, ranges: tuple[ByteRange, ...]) -> tuple[ByteRange, ...]:
    """The ranges with the CRC-32 of their bytes (for a planner that cut them first)."""
    out = []
    with open(path, "rb", buffering=0) as f:
        for rng in ranges:
            part = RangeDigest()
            f.seek(rng.start)
            left = rng.end - rng.start
            while left > 0 and (block := f.read(min(CHUNK, left))):
                interrupts.check()
                part.update(block)
                left -= len(block)
            out.append(ByteRange(rng.start, rng.end, rng.first_line, rng.lines,
                                 part.crc32))
    return tuple(out)


class RangeDigest:
    """CRC-32 of the bytes a reader consumed, and how many: the reader calls update().

    Each range's bytes are checked twice (planned, then read by its processor), so the
    check costs two passes over the file besides the file's own SHA-256 for BATCH_RUN.
    It guards against a file changed under the job, not against forgery: the size, inode
    and modification time are checked too (FileIdentity), and CRC-32 misses a change
    with odds of 2**-32 at 4.5 GB/s, where SHA-256 runs at 1.7 GB/s here.
    """

    def __init__(self) -> None:
        self.crc32 = 0
        self.count = 0

    def update(self, data: bytes | memoryview) -> None:
        self.crc32 = zlib.crc32(data, self.crc32)
        self.count += len(data)


@dataclass
class RangeReading:
    """A processor's view of its range: the file as planned, and the hash of what it read."""

    path: Path  # /proc/self/fd/N: the very file opened and checked, whatever its name now
    digest: RangeDigest


@contextmanager
def reading_range(plan: InputPlan, rng: ByteRange) -> Iterator[RangeReading | None]:
    """Open the planned file, check it is the one hashed, and verify the range's bytes.

    Yields None (no checks) for a plan without an identity or a range without a digest.
    """
    if plan.identity is None or rng.crc32 is None:
        yield None
        return
    try:
        fd = os.open(plan.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputChanged(f"{CHANGED}: {plan.path} was removed after planning") from None
    try:
        _same_file(plan, fd, "when opened")
        proc = Path(f"/proc/self/fd/{fd}")
        reading = RangeReading(proc if proc.exists() else plan.path, RangeDigest())
        yield reading
        _hash_rest(fd, rng, reading.digest)
        _same_file(plan, fd, "after it was read")
        if reading.digest.crc32 != rng.crc32:
            raise InputChanged(f"{CHANGED}: bytes {rng.start}-{rng.end} of {plan.path} differ "
                               "from those hashed when the run planned it")
    finally:
        os.close(fd)


def _hash_rest(fd: int, rng: ByteRange, digest: RangeDigest) -> None:
    """A reader that had all its records before the range's end (a blocked file's last
    block holds the trailer) leaves bytes unread: they are part of the range's hash."""
    position = rng.start + digest.count
    while position < rng.end:
        block = os.pread(fd, min(CHUNK, rng.end - position), position)
        if not block:
            break
        digest.update(block)
        position += len(block)


def _same_file(plan: InputPlan, fd: int, when: str) -> None:
    now = FileIdentity.of(os.fstat(fd))
    if now != plan.identity:
        raise InputChanged(f"{CHANGED}: {plan.path} is not the file hashed at planning "
                           f"({when}: size, inode or modification time differ)")


@dataclass(frozen=True)
class Reject:
    """A record refused, by the reader (a line too long) or by a layout's rules: its line
    number, why, and its first bytes."""

    line: int
    reason: str
    raw: bytes


@dataclass(frozen=True)
class LineChunk:
    data: bytes  # whole, newline-ended lines
    first_line: int


def read_lines(path: Path, rng: ByteRange, batch_lines: int, record_length: int,
               digest: Any = None) -> Iterator[LineChunk | Reject]:
    """Whole lines of a byte range, about ``batch_lines`` at a time.

    A line longer than MAX_LINE is streamed past and yielded as a Reject, so a
    multi-gigabyte blob without newlines never sits in memory. ``digest`` (a hashlib
    object) is updated with every byte of the range as it is read.
    """
    want = batch_lines * (record_length + 1)
    line = rng.first_line
    with open(path, "rb", buffering=0) as f:
        f.seek(rng.start)
        left, carry = rng.end - rng.start, b""
        while left > 0 or carry:
            data = f.read(min(want, left)) if left > 0 else b""
            if left > 0 and not data:
                raise InputChanged(f"{CHANGED}: {path} became shorter while it was being read")
            if digest is not None:
                digest.update(data)
            left -= len(data)
            data = carry + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) > MAX_LINE or left <= 0:
                    reject, left = _skip_long_line(f, data, left, line, digest)
                    yield reject
                    line += 1
                    carry = b""
                else:
                    carry = data
                continue
            carry = data[cut:]
            chunk = data[:cut]
            yield LineChunk(chunk, line)
            line += chunk.count(b"\n")


def _skip_long_line(f: Any, head: bytes, left: int, line: int,
                    digest: Any = None) -> tuple[Reject, int]:
    length = len(head)
    while left > 0:
        block = f.read(min(CHUNK, left))
        if not block:
            break
        newline = block.find(b"\n")
        if newline >= 0:
            length += newline
            left -= newline + 1
            f.seek(-(len(block) - newline - 1), os.SEEK_CUR)
            if digest is not None:  # the rest of the block is read (and hashed) again
                digest.update(block[:newline + 1])
            break
        if digest is not None:
            digest.update(block)
        length += len(block)
        left -= len(block)
    reason = f"record is {length} bytes long without a newline"
    return Reject(line, reason, head[:200]), left
