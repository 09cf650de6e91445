"""Sample input for the EBCDIC example job: the text generator's records, as a mainframe
writes them (cp037, zoned digits, COMP-3 amounts, FB or VB records, no line ends).

The records are those of ``pipeline.generate`` for the same seed, so the EBCDIC job and
the text job can be compared on the same data; each record the text generator made
invalid stays invalid here (a lower-case currency, which EBCDIC text allows, becomes a
non-digit in the zoned ACCOUNT-ID instead). One detail in seven pads its description
with LOW-VALUES (X'00') instead of spaces, as real extracts do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.generate import LINE_LEN, GeneratedInput, generate_file
from pipeline.layouts.codepages import _encode_table

FORMATS = ("ebcdic-fb", "ebcdic-vb")
RECORD_LEN = 100
_CHUNK = 100_000


def generate_input(path: str | os.PathLike[str], records: int, fmt: str = "fixed",
                   **options: Any) -> GeneratedInput:
    """`pipeline generate --format`: the fixed-width text file, or its EBCDIC twin."""
    if fmt == "fixed":
        return generate_file(path, records, **options)
    return generate_mainframe_file(path, records, fmt, **options)


def generate_mainframe_file(path: str | os.PathLike[str], records: int, fmt: str = "ebcdic-fb",
                            **options: Any) -> GeneratedInput:
    """Write the EBCDIC twin of ``generate_file``'s output (same arguments, same data)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = Path(path)
    text = out.with_name(f"{out.name}.{os.getpid()}.txt")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    try:
        made = generate_file(text, records, **options)
        with open(text, "rb") as src, open(tmp, "wb") as dst:
            _transcode(src, dst, records, fmt == "ebcdic-vb")
        os.replace(tmp, out)
    finally:
        text.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return GeneratedInput(out, made.records, made.rejects, made.duplicates, made.amount_total)


def _transcode(src: BinaryIO, dst: BinaryIO, records: int, vb: bool) -> None:
    table = np.frombuffer(_encode_table("cp037"), dtype=np.uint8)
    header = np.frombuffer(src.readline()[:-1], np.uint8)
    _write(dst, _header(table, header)[None, :], vb)
    for start in range(0, records, _CHUNK):
        n = min(_CHUNK, records - start)
        arr = np.frombuffer(src.read(n * LINE_LEN), np.uint8).reshape(n, LINE_LEN)
        _write(dst, _details(table, arr, start), vb)
    trailer = np.frombuffer(src.readline()[:-1], np.uint8)
    _write(dst, _trailer(table, trailer)[None, :], vb)


def _write(dst: BinaryIO, rec: np.ndarray, vb: bool) -> None:
    if vb:
        rdw = np.zeros((len(rec), 4), np.uint8)
        rdw[:, 0], rdw[:, 1] = (rec.shape[1] + 4) >> 8, (rec.shape[1] + 4) & 255
        rec = np.hstack([rdw, rec])
    dst.write(rec.tobytes())


def _header(table: np.ndarray, line: np.ndarray) -> np.ndarray:
    return table[line[:RECORD_LEN]]


def _details(table: np.ndarray, a: np.ndarray, start: int) -> np.ndarray:
    out = np.full((len(a), RECORD_LEN), 0x40, dtype=np.uint8)
    out[:, 0:27] = table[a[:, 0:27]]  # type, TXN-ID, ACCOUNT-ID
    out[:, 27:35] = table[a[:, 27:35]]  # TXN-DATE
    digits = a[:, 36:49].astype(np.int64) - ord("0")
    sign = np.where(a[:, 35] == ord("-"), 0xD, 0xC)
    out[:, 35:42] = pack(digits, sign)
    currency = a[:, 49:52]
    lower = ((currency >= ord("a")) & (currency <= ord("z"))).any(axis=1)
    out[:, 42:45] = table[np.where((currency >= ord("a")) & (currency <= ord("z")),
                                   currency - 32, currency)]
    out[lower, 17] = 0xC1  # 'A' in a zoned digit: still a reject
    out[:, 45:85] = table[a[:, 52:92]]
    low_values = (np.arange(start, start + len(a)) % 7) == 3
    desc = out[:, 45:85]
    trailing = np.flip(np.logical_and.accumulate(np.flip(desc == 0x40, 1), 1), 1)
    desc[trailing & low_values[:, None]] = 0x00
    return out


def pack(digits: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """COMP-3 bytes of (B, n) decimal digits and (B,) sign nibbles (n odd, or padded)."""
    if digits.shape[1] % 2 == 0:
        digits = np.hstack([np.zeros((len(digits), 1), np.int64), digits])
    nibbles = np.hstack([digits, np.asarray(sign, np.int64)[:, None]])
    return (nibbles[:, 0::2] << 4 | nibbles[:, 1::2]).astype(np.uint8)


def _trailer(table: np.ndarray, line: np.ndarray) -> np.ndarray:
    out = np.full(RECORD_LEN, 0x40, dtype=np.uint8)
    out[0:11] = table[line[0:11]]  # type, DETAIL-COUNT
    digits = line[12:30].astype(np.int64)[None, :] - ord("0")
    out[11:21] = pack(digits, np.array([0xD if line[11] == ord("-") else 0xC]))[0]
    return out
