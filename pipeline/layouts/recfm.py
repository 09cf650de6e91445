"""Mainframe record formats: FB (fixed length, no line ends) and VB (a 4-byte RDW before
each record, optionally grouped in blocks that each start with a 4-byte BDW).

The planning pass hashes the file and walks its records once, so it finds the header
(first record), the trailer (last record) and cut points on record (VB: block)
boundaries; any structural break (a short last record, an RDW running past the file, a
block whose records do not fill it) is an InputStructureError, exit 2. Within a run of
records of one length the walk is vectorized: one guess, checked for all at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputStructureError

CHUNK = 8 << 20


@dataclass(frozen=True)
class RecordFormat:
    kind: str  # "fb" or "vb"
    record_length: int  # FB: every record; VB: the longest record's data (without the RDW)
    blocked: bool = False  # VB: blocks with a BDW
    # bytes before the first record and after the last that are no records (a transfer
    # tool's file header or footer: Cobrix's file_start_offset / file_end_offset)
    file_start: int = 0
    file_end: int = 0
    # the RDW as some tools write it: little-endian (X'0000' then the length low byte
    # first, Cobrix's is_rdw_big_endian = false), and a value that is not the record's
    # length with its RDW: that length = the value + rdw_adjustment (4: the value counts
    # the data only)
    rdw_big_endian: bool = True
    rdw_adjustment: int = 0

    def record_bytes(self, longest: int) -> int:
        """What one record takes in the file, RDW included, for records whose data is at
        most ``longest`` bytes (read_batches' ``record_bytes``)."""
        return self.record_length if self.kind == "fb" else longest + 4

    def rdw(self, length: int) -> bytes:
        """The 4 bytes of the RDW of a record of ``length`` bytes, RDW included."""
        value = (length - self.rdw_adjustment).to_bytes(2, "big")
        return value + b"\0\0" if self.rdw_big_endian else b"\0\0" + value[::-1]


IBM_VB = RecordFormat("vb", 32756)  # a standard RDW: big-endian, counting itself


@dataclass(frozen=True)
class RecordBatch:
    rec: np.ndarray  # (B, W) uint8: each record's data, zero-filled past its length
    lengths: np.ndarray  # int64 (B,): each record's data length
    offsets: np.ndarray  # int64 (B,): byte offset of each record (its RDW for VB) in the file
    first_record: int  # 1-based number of the first record in the file


@dataclass(frozen=True)
class Walk:
    """What the planning pass learned: (offset, length) of the records it needs."""

    sha256: str
    records: int
    header: tuple[int, int]  # data offset, data length
    trailer: tuple[int, int]
    trailer_start: int  # where the trailer record (its RDW) starts
    cuts: list[tuple[int, int]]  # (byte offset, 0-based record number) of range starts


def frame_vb(buf: np.ndarray, base: int,
             fmt: RecordFormat = IBM_VB) -> tuple[np.ndarray, np.ndarray, int]:
    """(RDW offsets, data lengths, bytes used) of the whole VB records at the start of buf.

    While records keep one length, a window of RDWs ahead is guessed and checked at
    once, the window growing as the guesses hold; where lengths vary, the RDWs are read
    one by one in plain Python (cheaper than numpy calls on a few elements).
    """
    raw = buf.tobytes()
    segments: list[tuple[int, int, int]] = []  # (offset, record length with RDW, records)
    pos, n, window = 0, len(raw), _MIN_WINDOW
    while pos + 4 <= n:
        length = _rdw(raw, pos, base, fmt)
        if pos + length > n:
            break
        run, fits = 1, min((n - pos) // length, window)
        if fits > 1:
            guess = pos + np.arange(fits, dtype=np.int64) * length
            b0, b1, b2, b3 = raw[pos:pos + 4]  # this RDW: the next ones are guessed equal
            same = ((buf[guess] == b0) & (buf[guess + 1] == b1)
                    & (buf[guess + 2] == b2) & (buf[guess + 3] == b3))
            run = fits if same.all() else max(int(np.argmin(same)), 1)
        window = min(window * 4, _MAX_WINDOW) if run == fits else _MIN_WINDOW
        segments.append((pos, length, run))
        pos += run * length
        # lengths vary: one RDW at a time, back to guessing once _MIN_WINDOW records in a
        # row keep one length. Not at the first repeat: two record types of different
        # lengths (P P F P P F ...) repeat every other record, and a numpy guess per pair
        # walked 120k records/s where this loop walks over 1M
        same, previous = 0, -1
        while window == _MIN_WINDOW and pos + 4 <= n:
            length = _rdw(raw, pos, base, fmt)
            if pos + length > n:
                break
            same = same + 1 if length == previous else 0
            if same >= _MIN_WINDOW:
                break
            previous = length
            segments.append((pos, length, 1))
            pos += length
    return (*_expand(segments), pos)


_MIN_WINDOW, _MAX_WINDOW = 8, 1 << 16


def _expand(segments: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """RDW offsets and data lengths of every record of the (offset, length, count) runs."""
    if not segments:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    seg = np.array(segments, dtype=np.int64)
    counts = seg[:, 2]
    first = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(int(counts.sum()), dtype=np.int64) - first
    lengths = np.repeat(seg[:, 1], counts)
    return np.repeat(seg[:, 0], counts) + k * lengths, lengths - 4


def _rdw(raw: bytes, pos: int, base: int, fmt: RecordFormat) -> int:
    """The length, RDW included, of the record whose RDW is at ``pos``."""
    if fmt.rdw_big_endian:
        value, zeros = raw[pos] << 8 | raw[pos + 1], raw[pos + 2] | raw[pos + 3]
    else:
        value, zeros = raw[pos + 3] << 8 | raw[pos + 2], raw[pos] | raw[pos + 1]
    length = value + fmt.rdw_adjustment
    if length < 5 or zeros:
        expected = ("a 2-byte length including the RDW, then 2 zero bytes" if fmt.rdw_big_endian
                    else "2 zero bytes, then a 2-byte little-endian length")
        if fmt.rdw_adjustment:
            expected += f", plus input.rdw_adjustment {fmt.rdw_adjustment}"
        raise InputStructureError(
            f"the record descriptor word at byte offset {base + pos} is "
            f"X'{raw[pos:pos + 4].hex().upper()}': not a record length "
            f"(RECFM=VB expects {expected})")
    return length


def walk_file(path: Path, fmt: RecordFormat, parts: int) -> Walk:
    if path.is_dir():  # its st_size (4096) would pass for a file of 4096 bytes
        raise InputStructureError(f"input file {path} is a directory, not a file")
    size = path.stat().st_size
    if size == 0:
        raise InputStructureError(f"input file {path} is empty: no header, no trailer")
    body = size - fmt.file_start - fmt.file_end
    if body <= 0:
        raise InputStructureError(
            f"input file {path} is {size} bytes: nothing between input.file_start_offset "
            f"{fmt.file_start} and input.file_end_offset {fmt.file_end}")
    if fmt.kind == "fb":
        return _walk_fb(path, fmt, size, parts)
    targets = [fmt.file_start + body * k // parts for k in range(1, parts)]
    with open(path, "rb") as f:
        return _walk_vb(f, fmt, size, targets)


def _walk_fb(path: Path, fmt: RecordFormat, size: int, parts: int) -> Walk:
    length, start = fmt.record_length, fmt.file_start
    body = size - start - fmt.file_end
    if body % length:
        offsets = (f" (between input.file_start_offset {start} and input.file_end_offset "
                   f"{fmt.file_end})" if start or fmt.file_end else "")
        raise InputStructureError(
            f"the file{offsets} is {body} bytes, not a multiple of the record length "
            f"{length}: the last record is short ({body % length} bytes)"
            f"{framing_hint(path, fmt)}")
    records = body // length
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    details = max(records - 2, 0)
    cuts = sorted({1 + details * k // parts for k in range(parts)})
    last = start + (records - 1) * length
    return Walk(digest.hexdigest(), records, (start, length), (last, length), last,
                [(start + r * length, r) for r in cuts])


def framing_hint(path: Path, fmt: RecordFormat) -> str:
    """'; it looks like ...' when the file's first bytes are the descriptor words of
    another record format than the job's (an FB job given a VB file, a VB job a blocked
    one), else ''. A hint for an error message, never a guess acted on."""
    with open(path, "rb") as f:
        f.seek(fmt.file_start)
        head = f.read(1 << 16)
    first = _descriptor(head, 0)
    if first is None or fmt.blocked:
        return ""
    shown = f"X'{head[:4].hex().upper()}'"
    inner = _descriptor(head, 4)
    if inner is not None and inner <= first - 4:
        return (f"; it looks like blocked VB: its first 8 bytes X'{head[:8].hex().upper()}' "
                f"read as a block descriptor (a {first}-byte block) and a record descriptor "
                f"(a {inner}-byte record): input.format = \"vb\" and input.blocked = true")
    if fmt.kind == "fb" and (first == len(head) or _descriptor(head, first) is not None):
        return (f"; it looks like RECFM=VB: its first 4 bytes {shown} read as a record "
                f"descriptor word (a {first}-byte record, the next one where it ends): "
                "input.format = \"vb\"")
    return ""


def _descriptor(head: bytes, pos: int) -> int | None:
    """The length an RDW/BDW at ``pos`` holds, or None where the bytes cannot be one."""
    if pos + 4 > len(head) or head[pos + 2] or head[pos + 3]:
        return None
    length = head[pos] << 8 | head[pos + 1]
    return length if length >= 5 else None


def _walk_vb(f: Any, fmt: RecordFormat, size: int, targets: list[int]) -> Walk:
    digest = hashlib.sha256(f.read(fmt.file_start))  # the whole file is its identity
    carry, base, recno = np.empty(0, np.uint8), fmt.file_start, 0
    header = trailer = (0, 0)
    trailer_start = 0
    cuts: list[tuple[int, int]] = []
    end = size - fmt.file_end
    while chunk := f.read(min(CHUNK, end - base - len(carry))):
        digest.update(chunk)
        buf = np.concatenate([carry, np.frombuffer(chunk, np.uint8)])
        if fmt.blocked:
            units, used = _frame_blocks(buf, base)
            starts, lengths = _records_of(buf, base, units, used, fmt)
        else:  # one walk of the RDWs gives both (not a second one over what it framed)
            starts, lengths, used = frame_vb(buf, base, fmt)
            units = starts
        if len(starts):
            if recno == 0:
                header = (base + int(starts[0]) + 4, int(lengths[0]))
            trailer = (base + int(starts[-1]) + 4, int(lengths[-1]))
            trailer_start = base + int(starts[-1])
            unit_starts = units if fmt.blocked else starts
            # a block's first record: the first RDW at or after the block's start
            unit_recno = (np.searchsorted(starts, units) if fmt.blocked
                          else np.arange(len(starts)))
            while targets and targets[0] <= base + int(unit_starts[-1]):
                i = int(np.searchsorted(unit_starts + base, targets.pop(0)))
                cuts.append((base + int(unit_starts[i]), recno + int(unit_recno[i])))
        recno += len(starts)
        carry, base = buf[used:], base + used
    if len(carry):
        raise InputStructureError(
            f"the last {len(carry)} bytes (from byte offset {base}) are not a whole record: "
            "the file looks truncated or its RDW/BDW lengths disagree with it")
    while chunk := f.read(CHUNK):  # the file_end_offset bytes: hashed, not read
        digest.update(chunk)
    if fmt.blocked:
        cuts.insert(0, (fmt.file_start, 0))
    return Walk(digest.hexdigest(), recno, header, trailer, trailer_start, cuts)


def _frame_blocks(buf: np.ndarray, base: int) -> tuple[np.ndarray, int]:
    starts, pos = [], 0
    while pos + 4 <= len(buf):
        length = int(buf[pos]) << 8 | int(buf[pos + 1])
        if length < 9 or buf[pos + 2] or buf[pos + 3]:
            raise InputStructureError(
                f"the block descriptor word at byte offset {base + pos} is "
                f"X'{buf[pos:pos + 4].tobytes().hex().upper()}': not a block length")
        if pos + length > len(buf):
            break
        starts.append(pos)
        pos += length
    return np.array(starts, dtype=np.int64), pos


def _records_of(buf: np.ndarray, base: int, units: np.ndarray, used: int,
                fmt: RecordFormat) -> tuple[np.ndarray, np.ndarray]:
    """RDW offsets and data lengths of the records in buf[:used]."""
    if not fmt.blocked:
        starts, lengths, _ = frame_vb(buf[:used], base, fmt)
        return starts, lengths
    all_starts, all_lengths = [], []
    for b in units.tolist():
        blen = int(buf[b]) << 8 | int(buf[b + 1])
        starts, lengths, used_in = frame_vb(buf[b + 4 : b + blen], base + b + 4, fmt)
        if used_in != blen - 4:
            raise InputStructureError(f"the block at byte offset {base + b} is {blen} bytes "
                                      "(its BDW) but its records do not fill it")
        all_starts.append(starts + b + 4)
        all_lengths.append(lengths)
    if not all_starts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(all_starts), np.concatenate(all_lengths)


def read_batches(path: Path, fmt: RecordFormat, start: int, end: int, first_record: int,
                 records: int, batch: int, record_bytes: int,
                 digest: Any = None) -> Iterator[RecordBatch]:
    """The records [first_record, first_record + records) of the byte range [start, end).

    About ``batch`` records of ``record_bytes`` (RDW included) are read at a time; a
    longer record or block is read whole all the same. A range that starts at the first
    record (byte 0, or input.file_start_offset) begins with the header, which is skipped.
    ``digest`` (hashlib) is updated with every byte read (pipeline.source.reading_range
    verifies the range).
    """
    skip = 1 if start == fmt.file_start else 0
    left = records
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        base, carry = start, np.empty(0, np.uint8)
        while left > 0:
            want = batch * record_bytes
            data = f.read(min(want, end - base - len(carry))) if base + len(carry) < end else b""
            if digest is not None:
                digest.update(data)
            if not data and not len(carry):
                raise InputStructureError(f"{path} became shorter while it was being read")
            buf = np.concatenate([carry, np.frombuffer(data, np.uint8)])
            starts, lengths, used, data_off = _frame(buf, base, fmt)
            if not len(starts) and not data:
                raise InputStructureError(f"{path} changed while it was being read")
            dropped = min(skip, len(starts))  # the header, once it has been framed
            starts, lengths, data_off = starts[dropped:], lengths[dropped:], data_off[dropped:]
            skip -= dropped
            take = min(left, len(starts))
            if take:
                yield _batch(buf, base, starts[:take], lengths[:take], data_off[:take],
                             first_record + records - left)
            left -= take
            carry, base = buf[used:], base + used


def _frame(buf: np.ndarray, base: int,
           fmt: RecordFormat) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """(record offsets, data lengths, bytes used, data offsets) of whole records in buf."""
    if fmt.kind == "fb":
        n = len(buf) // fmt.record_length
        starts = np.arange(n, dtype=np.int64) * fmt.record_length
        return starts, np.full(n, fmt.record_length), n * fmt.record_length, starts
    if fmt.blocked:
        units, used = _frame_blocks(buf, base)
        starts, lengths = _records_of(buf, base, units, used, fmt)
    else:
        starts, lengths, used = frame_vb(buf, base, fmt)
    return starts, lengths, used, starts + 4


def _batch(buf: np.ndarray, base: int, starts: np.ndarray, lengths: np.ndarray,
           data_off: np.ndarray, first: int) -> RecordBatch:
    width = int(lengths.max())
    contiguous = int(data_off[-1] - data_off[0]) == (len(starts) - 1) * width
    if contiguous and (lengths == width).all():  # FB: the records are the buffer, a view
        rec = buf[data_off[0]: data_off[0] + len(starts) * width].reshape(-1, width)
        return RecordBatch(rec, lengths, base + starts, first)
    idx = data_off[:, None] + np.arange(width)
    inside = np.arange(width) < lengths[:, None]
    rec = np.where(inside, buf[np.minimum(idx, len(buf) - 1)], 0).astype(np.uint8)
    return RecordBatch(rec, lengths, base + starts, first)
