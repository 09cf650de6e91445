"""A deliberately simple, per-record decoder (and encoder) of mainframe fields.

Written from the IBM rules, one byte at a time, so the vectorized decoders in
pipeline/layouts/mainframe.py can be checked against something obviously right.
"""

from __future__ import annotations

POSITIVE, NEGATIVE = (0xA, 0xC, 0xE, 0xF), (0xB, 0xD)


def packed(raw: bytes, digits: int, signed: bool = True) -> int | None:
    """COMP-3 value, or None when the bytes are not valid packed decimal."""
    nibbles = []
    for b in raw:
        nibbles += [b >> 4, b & 0xF]
    *body, sign = nibbles
    if any(n > 9 for n in body):
        return None
    if len(body) > digits and body[0] != 0:
        return None
    if sign not in POSITIVE and not (signed and sign in NEGATIVE):
        return None
    value = 0
    for n in body:
        value = value * 10 + n
    return -value if sign in NEGATIVE else value


def encode_packed(value: int, digits: int, sign_nibble: int | None = None) -> bytes:
    text = str(abs(value)).rjust(digits + (1 if digits % 2 == 0 else 0), "0")
    nibble = sign_nibble if sign_nibble is not None else (0xD if value < 0 else 0xC)
    nibbles = [int(c) for c in text] + [nibble]
    return bytes(nibbles[i] << 4 | nibbles[i + 1] for i in range(0, len(nibbles), 2))


def zoned_ebcdic(raw: bytes, signed: bool, leading: bool = False,
                 separate: bool = False) -> int | None:
    """EBCDIC zoned decimal value, or None."""
    data = list(raw)
    negative = False
    if signed and separate:
        s = data.pop(0 if leading else -1)
        if s not in (0x4E, 0x60):  # '+' and '-' in EBCDIC
            return None
        negative = s == 0x60
    elif signed:
        i = 0 if leading else len(data) - 1
        zone, digit = data[i] >> 4, data[i] & 0xF
        if zone not in POSITIVE + NEGATIVE or digit > 9:
            return None
        negative = zone in NEGATIVE
        data[i] = 0xF0 | digit
    value = 0
    for b in data:
        if not 0xF0 <= b <= 0xF9:
            return None
        value = value * 10 + (b - 0xF0)
    return -value if negative else value


def encode_zoned_ebcdic(value: int, digits: int, signed: bool = True) -> bytes:
    out = bytearray(0xF0 + int(c) for c in str(abs(value)).rjust(digits, "0"))
    if signed:
        out[-1] = (0xD0 if value < 0 else 0xC0) | (out[-1] & 0xF)
    return bytes(out)


def binary(raw: bytes, signed: bool) -> int:
    return int.from_bytes(raw, "big", signed=signed)
