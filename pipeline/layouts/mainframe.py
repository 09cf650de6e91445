"""Vectorized decoding of mainframe records: a batch is one (B, L) uint8 matrix.

Text goes through the code page's 256-entry table straight to UCS-4 (a numpy ``U``
view), packed decimal by nibble arithmetic, zoned decimal through lookup tables of the
digit and the overpunched sign, binary through big-endian dtype views. The happy path
has no per-record Python; reasons (with the byte offset and a hex dump) are formatted
only for the records that are rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.layouts.codepages import CodePage
from pipeline.layouts.copybook import Item, Odo, Usage
from pipeline.layouts.fields import FieldType
from pipeline.layouts.fixed import (
    DetailBatch,
    Reject,
    RuleFailures,
    _as_str,
    _calendar_dates,
    hash_figures,
)
from pipeline.money import checked_sum

INT64_DIGITS = 18  # 10**18 - 1 fits int64; wider values take the Python-int path
_POSITIVE_NIBBLES = (0xA, 0xC, 0xE, 0xF)
_NEGATIVE_NIBBLES = (0xB, 0xD)
# a packed byte as two digits (0-99), 255 where a nibble is not a digit
_PACKED_PAIR = np.array([10 * (b >> 4) + (b & 15) if b >> 4 < 10 and b & 15 < 10 else 255
                         for b in range(256)], dtype=np.uint8)
# a sign nibble: +1, -1, or 0 (not a sign)
_PACKED_SIGN = np.array([1 if n in _POSITIVE_NIBBLES else -1 if n in _NEGATIVE_NIBBLES else 0
                         for n in range(16)], dtype=np.int8)


@dataclass(frozen=True)
class Column:
    """An item of a record and how the job keeps it."""

    item: Item
    kind: FieldType  # TEXT, DIGITS, DATE, AMOUNT or NUMBER
    required: bool = False  # TEXT: must not be blank

    @property
    def name(self) -> str:
        return self.item.name


@dataclass(frozen=True)
class RecordDecoder:
    """One 01-level record of the copybook as the job reads it."""

    name: str
    size: int
    columns: tuple[Column, ...]
    code_page: CodePage
    type_item: Item | None = None  # the record-type field, if records carry one
    type_value: bytes = b""  # its value in this record, in the code page
    control_values: tuple[bytes, ...] = ()  # detail only: the header's and trailer's values
    odo: Odo | None = None  # detail only: its OCCURS DEPENDING ON table (copybook.Odo)


@dataclass
class Decoded:
    ok: np.ndarray  # bool (B,)
    failures: RuleFailures
    values: dict[str, np.ndarray]  # int64 numbers (object for > 18 digits), str for text
    readable: dict[str, np.ndarray]  # per numeric column: the value could be decoded


def decode(spec: RecordDecoder, rec: np.ndarray) -> Decoded:
    """Decode and validate every column of every row of ``rec`` (B, >= spec.size)."""
    failures = RuleFailures(show_bytes=True)
    values: dict[str, np.ndarray] = {}
    readable: dict[str, np.ndarray] = {}
    if spec.type_item is not None:
        t = spec.type_item
        want = np.frombuffer(spec.type_value, dtype=np.uint8)
        expected = _text(spec.code_page, spec.type_value)
        failures.add(~(rec[:, t.offset:t.end] == want).all(axis=1), t,
                     lambda raw: f"is not the record type {expected!r}")
    every = np.ones(len(rec), dtype=bool)
    counts = np.zeros(len(rec), dtype=np.int64)  # entries of an OCCURS DEPENDING ON table
    for col in spec.columns:
        cols = rec[:, col.item.offset:col.item.end]
        # an entry past the record's count is absent: its bytes are not the record's
        there = counts >= col.item.occurrence if col.item.occurrence else every
        if col.item.numeric:
            value, ok, explain = decode_number(col.item, cols, spec.code_page)
            failures.add(~ok & there, col.item, explain)
            if col.kind is FieldType.DATE:
                ok = _date_rule(col.item, value, ok & there, failures, spec.code_page)
            values[col.name], readable[col.name] = value, ok
            if spec.odo is not None and col.name == spec.odo.counter:
                counts = _count_rule(spec.odo, col.item, value, ok, failures)
        else:
            text, ok = decode_text(cols, spec.code_page)
            failures.add(~ok & there, col.item, lambda raw: "holds a byte that is not a "
                         f"printable character in {spec.code_page.name}"
                         f"{read_as(spec.code_page, raw)}")
            if col.required:
                failures.add(np.strings.str_len(text) == 0, col.item, lambda raw: "is blank")
            values[col.name] = text
    return Decoded(~failures.any_failed(len(rec)), failures, values, readable)


def _count_rule(odo: Odo, item: Item, value: np.ndarray, ok: np.ndarray,
                failures: RuleFailures) -> np.ndarray:
    """The entries each record holds; a count outside the table's bounds is a failure."""
    failures.add(ok & (value > odo.most), item,
                 lambda raw: f"is more than the {odo.most} entries of {odo.clause()}")
    failures.add(ok & (value < odo.least), item,
                 lambda raw: f"is fewer than the {odo.least} entries of {odo.clause()}")
    return np.where(ok, np.clip(value, 0, odo.most), 0)


def decode_text(cols: np.ndarray, cp: CodePage) -> tuple[np.ndarray, np.ndarray]:
    """(str array trimmed of trailing spaces and LOW-VALUES, row holds only printables)."""
    rows, n = cols.shape
    raw = np.ascontiguousarray(cols).tobytes()
    if any(raw.find(b) >= 0 for b in cp.wide):  # a character past Latin-1 (cp1140's euro)
        ucs4 = np.take(cp.codepoints, cols)
    else:  # bytes.translate at C speed, then widened: cheaper than a uint32 gather
        ucs4 = np.frombuffer(raw.translate(cp.latin1), np.uint8).astype(np.uint32)
    text = np.strings.rstrip(ucs4.view(f"<U{n}").reshape(rows), " ")
    # the whole batch at C speed first: a per-row check only when some byte is not printable
    if not raw.translate(None, cp.printable_bytes):
        return text, np.ones(rows, dtype=bool)
    return text, np.asarray(np.take(cp.printable, cols).all(axis=1))


def decode_number(item: Item, cols: np.ndarray,
                  cp: CodePage) -> tuple[np.ndarray, np.ndarray, Callable[[bytes], str]]:
    """(value in units of 10**-max(scale, 0), decodable, explainer) of a numeric item."""
    if item.usage is Usage.PACKED:
        value, ok = decode_packed(cols, item.digits, item.signed)
        explain = _explain_packed(item)
    elif item.usage is Usage.DISPLAY:
        value, ok = decode_zoned(cols, item, cp)
        explain = _explain_zoned(item, cp)
    else:
        value, ok = decode_binary(cols, item)
        explain = _explain_binary(item)
    if item.scale < 0:  # trailing P: the digits stand for a multiple of 10**-scale
        value = value * 10 ** (-item.scale)
    return np.where(ok, value, 0), ok, explain


def decode_packed(cols: np.ndarray, digits: int, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """COMP-3: two digits a byte, the sign in the last low nibble."""
    if digits > INT64_DIGITS:
        return _decode_wide_packed(cols, digits, signed)
    # (bytes, B): each byte position contiguous, so the loop below runs on whole rows
    pairs = np.take(_PACKED_PAIR, cols[:, :-1].T)  # 0-99, or 255: not two digits
    last = cols[:, -1]
    high = last >> 4
    sign = np.take(_PACKED_SIGN, last & 0x0F)
    ok = (high <= 9) & ((sign > 0) | ((sign < 0) if signed else False))
    if len(pairs):
        ok &= pairs.max(axis=0) < 100
        if digits % 2 == 0:  # an even digit count leaves one leading nibble: zero
            ok &= pairs[0] < 10
    value = _horner(pairs, 100) * 10 + high
    np.negative(value, out=value, where=sign < 0)
    return value, ok


def _decode_wide_packed(cols: np.ndarray, digits: int,
                        signed: bool) -> tuple[np.ndarray, np.ndarray]:
    hi, lo = cols >> 4, cols & 0x0F
    nibbles = np.empty((len(cols), 2 * cols.shape[1]), dtype=np.uint8)
    nibbles[:, 0::2], nibbles[:, 1::2] = hi, lo
    sign, body = np.take(_PACKED_SIGN, nibbles[:, -1]), nibbles[:, :-1]
    ok = (body <= 9).all(axis=1) & ((sign > 0) | ((sign < 0) if signed else False))
    pad = body.shape[1] - digits
    if pad:
        ok &= (body[:, :pad] == 0).all(axis=1)
    value = digits_value(np.where(body[:, pad:] <= 9, body[:, pad:], 0))
    return np.where(sign < 0, -value, value), ok


def decode_zoned(cols: np.ndarray, item: Item, cp: CodePage) -> tuple[np.ndarray, np.ndarray]:
    """DISPLAY numeric: one digit a byte, the sign overpunched or separate."""
    digit_of, zone_sign = _zoned_tables(cp.name)
    body = cols
    negative = np.zeros(len(cols), dtype=bool)
    ok = np.ones(len(cols), dtype=bool)
    if item.signed and item.sign_separate:
        s = cols[:, 0] if item.sign_leading else cols[:, -1]
        ok &= (s == cp.plus) | (s == cp.minus)
        negative = s == cp.minus
        body = cols[:, 1:] if item.sign_leading else cols[:, :-1]
    elif item.signed:
        pos = 0 if item.sign_leading else -1
        sign = zone_sign[body[:, pos]]
        ok &= sign != 0
        negative = sign < 0
    digits = np.take(digit_of, body.T)  # (digits, B), as in decode_packed
    plain = digits < 10  # a plain digit byte: F0-F9 in EBCDIC
    if item.signed and not item.sign_separate:
        pos = 0 if item.sign_leading else len(digits) - 1
        plain[pos] = True
        last = digits[pos]  # an overpunched byte: its digit is the low nibble
        digits[pos] = np.where(last < 10, last, last % 16)
    ok &= plain.all(axis=0) & (digits.max(axis=0) < 10)
    value = digits_value(digits.T) if len(digits) > INT64_DIGITS else _horner(digits, 10)
    return np.where(negative, -value, value), ok


def _horner(rows: np.ndarray, base: int) -> np.ndarray:
    """The int64 value of (n, B) digits (or digit pairs) in ``base``, most significant first.

    In place, one vector operation per position; rows that are not digits give garbage,
    masked by the caller. The callers keep n small enough for int64 (18 digits).
    """
    if not len(rows):
        return np.zeros(rows.shape[1], dtype=np.int64)
    value = rows[0].astype(np.int64)
    for row in rows[1:]:
        value *= base
        value += row
    return value


def decode_binary(cols: np.ndarray, item: Item) -> tuple[np.ndarray, np.ndarray]:
    """COMP / COMP-4 / BINARY / COMP-5: big-endian two's complement (or unsigned)."""
    n = cols.shape[1]
    kind = ">i" if item.signed else ">u"
    raw = np.ascontiguousarray(cols).view(f"{kind}{n}").reshape(len(cols))
    ok = np.ones(len(cols), dtype=bool)
    if not item.signed and n == 8:  # an unsigned doubleword can pass int64
        ok &= raw <= np.iinfo(np.int64).max
        raw = np.where(ok, raw, 0)
    value = raw.astype(np.int64)
    if item.usage is Usage.BINARY:  # COMP holds only what its PIC's digits allow
        ok &= np.abs(value) < 10**item.digits
    return value, ok


def digits_value(digits: np.ndarray) -> np.ndarray:
    """The number a (B, n) matrix of decimal digits spells: int64, or Python ints past 18."""
    n = digits.shape[1]
    d = digits.astype(np.int64)
    if n <= INT64_DIGITS:
        return d @ (10 ** np.arange(n - 1, -1, -1, dtype=np.int64))
    # two limbs, each exact in int64, joined as Python ints (the rare wide field)
    hi = digits_value(digits[:, : n - INT64_DIGITS]).astype(object)
    lo = digits_value(digits[:, n - INT64_DIGITS:]).astype(object)
    return np.asarray(hi * 10**INT64_DIGITS + lo, dtype=object)


def _date_rule(item: Item, value: np.ndarray, ok: np.ndarray, failures: RuleFailures,
               cp: CodePage) -> np.ndarray:
    good = _calendar_dates(ascii_digits(np.where(ok, value, 0), 8))
    failures.add(ok & ~good, item,
                 lambda raw: f"is not a calendar date YYYYMMDD{read_as(cp, raw)}")
    return ok & good


def read_as(cp: CodePage, raw: bytes) -> str:
    """' (read as '20261345')': a reject's bytes as the code page reads them, beside the
    hex, so an operator sees the value (ASCII escapes keep the reject file ASCII)."""
    return f" (read as {ascii(_text(cp, raw))})"


_zoned_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _zoned_tables(cp_name: str) -> tuple[np.ndarray, np.ndarray]:
    """digit_of[byte] (0-9, or >= 10: not a plain digit) and zone_sign[byte] (+1/-1/0)."""
    if cp_name not in _zoned_cache:
        digit_of = np.full(256, 255, dtype=np.uint8)
        zone_sign = np.zeros(256, dtype=np.int8)
        if cp_name == "ascii":
            digit_of[0x30:0x3A] = np.arange(10)
            zone_sign[0x30:0x3A] = 1
            # the usual ASCII overpunch: {A-I positive, }J-R negative (low nibble = digit)
            for d, (p, m) in enumerate(zip("{ABCDEFGHI", "}JKLMNOPQR", strict=True)):
                zone_sign[ord(p)], zone_sign[ord(m)] = 1, -1
                digit_of[ord(p)], digit_of[ord(m)] = 16 * 15 + d, 16 * 15 + d
        else:
            for zone in _POSITIVE_NIBBLES + _NEGATIVE_NIBBLES:
                zone_sign[zone * 16: zone * 16 + 10] = 1 if zone in _POSITIVE_NIBBLES else -1
                digit_of[zone * 16: zone * 16 + 10] = zone * 16 + np.arange(10)
            digit_of[0xF0:0xFA] = np.arange(10)  # a plain digit; also positive as a sign
        _zoned_cache[cp_name] = (digit_of, zone_sign)
    digit_of, zone_sign = _zoned_cache[cp_name]
    return digit_of, zone_sign


def _explain_packed(item: Item) -> Callable[[bytes], str]:
    def explain(raw: bytes) -> str:
        nibbles = [n for b in raw for n in (b >> 4, b & 15)]
        for i, n in enumerate(nibbles[:-1]):
            if n > 9:
                return f"is not packed decimal: nibble {i + 1} is {n:X}, not a digit"
        if len(nibbles) - 1 > item.digits and nibbles[0]:
            return f"is not packed decimal: the pad nibble is {nibbles[0]:X}, not 0"
        sign = nibbles[-1]
        if sign in _NEGATIVE_NIBBLES:  # a valid sign, but the PIC has no S
            return (f"is negative (sign nibble {sign:X}) but PIC 9({item.digits}) COMP-3 "
                    "is unsigned")
        return (f"is not packed decimal: sign nibble {sign:X} is not a sign "
                "(A, C, E, F positive; B, D negative)")
    return explain


def _explain_zoned(item: Item, cp: CodePage) -> Callable[[bytes], str]:
    pic = f"PIC {'S' if item.signed else ''}9({item.digits})"

    def explain(raw: bytes) -> str:
        digit_of, zone_sign = _zoned_tables(cp.name)
        sign_at = -1
        if item.signed:
            sign_at = (0 if item.sign_leading else len(raw) - 1)
        for i, b in enumerate(raw):
            if i == sign_at:
                fine = (b in (cp.plus, cp.minus)) if item.sign_separate else zone_sign[b] != 0
                what = "a sign"
            else:
                fine, what = bool(digit_of[b] < 10), "a digit"
            if not fine:
                return (f"is not zoned decimal {pic} in {cp.name}: byte {i + 1} X'{b:02X}' "
                        f"is not {what}{read_as(cp, raw)}")
        return f"is not zoned decimal {pic} in {cp.name}{read_as(cp, raw)}"
    return explain


def _explain_binary(item: Item) -> Callable[[bytes], str]:
    def explain(raw: bytes) -> str:
        value = int.from_bytes(raw, "big", signed=item.signed)
        return f"is {value}: out of range for {item.digits} digits"
    return explain


def _text(cp: CodePage, raw: bytes) -> str:
    return "".join(cp.chars[b] for b in raw)


# --- batches of detail records -------------------------------------------------------


def decode_details(spec: RecordDecoder, amount: str, rec: np.ndarray, lengths: np.ndarray,
                   offsets: np.ndarray, first_record: int,
                   exact_length: bool = True, hash_of: str | None = None,
                   numbers: np.ndarray | None = None) -> DetailBatch:
    """Decode a batch of detail records (rows of ``rec``; ``lengths`` their true size).

    A VB record must be exactly the detail's length (``exact_length``); an FB record may
    be longer than the 01 record (LRECL covers the longest record type). ``numbers``: the
    rows' record numbers when they are not ``first_record`` onwards (one type of several).
    """
    if numbers is None:
        numbers = np.arange(len(rec), dtype=np.int64) + first_record
    if rec.shape[1] < spec.size:  # short VB records: rejected by length, decoded as zeros
        rec = np.pad(rec, ((0, 0), (0, spec.size - rec.shape[1])))
    control = np.zeros(len(rec), dtype=bool)
    if spec.type_item is not None:
        t = spec.type_item
        for value in spec.control_values:
            control |= (rec[:, t.offset:t.end] == np.frombuffer(value, np.uint8)).all(axis=1)
    decoded = decode(spec, rec)
    size = _sizes(spec, decoded, lengths if exact_length else 0)
    full = (lengths == size) if exact_length else (lengths >= size)
    ok = decoded.ok & full & ~control
    amounts = decoded.values[amount]
    readable = decoded.readable[amount] & full & ~control
    rejects = [_reject(spec, decoded, rec, lengths, offsets, numbers, full, size, int(i))
               for i in np.flatnonzero(~ok & ~control)]
    everything = bool(ok.all())  # the usual batch: no copies of the columns to select
    stored = {name: v if everything else v[ok] for name, v in decoded.values.items()}
    for col in spec.columns:
        if col.kind is FieldType.DATE:
            stored[col.name] = _iso_dates(stored[col.name])
        elif col.kind is FieldType.DIGITS:
            stored[col.name] = _as_str(ascii_digits(stored[col.name], col.item.digits))
    if spec.odo is not None:
        held = decoded.values[spec.odo.counter]
        _absent_as_null(spec, stored, held if everything else held[ok])
    return DetailBatch(
        first_line=first_record,
        lines=numbers if everything else numbers[ok],
        columns=stored,
        records_read=len(rec) - int(control.sum()),
        rejects=rejects,
        accepted_amount=checked_sum(amounts if everything else amounts[ok]),
        read_amount=checked_sum(amounts if everything else amounts[readable]),
        unreadable_amounts=int(np.count_nonzero(~readable & ~control)),
        misplaced=numbers[control].tolist(),
        **({} if hash_of is None else hash_figures(
            decoded.values[hash_of], decoded.readable[hash_of] & full, ok, ~control)),
    )


def _sizes(spec: RecordDecoder, decoded: Decoded, unknown: np.ndarray | int) -> np.ndarray | int:
    """The length each record must have: the 01 record's, or with an OCCURS DEPENDING ON
    table the fixed part and the entries its count says (``unknown`` where the count is
    itself wrong: that failure is the reason given, not the length it implies)."""
    odo = spec.odo
    if odo is None:
        return spec.size
    count = decoded.values[odo.counter]
    known = decoded.readable[odo.counter] & (count >= odo.least) & (count <= odo.most)
    return np.where(known, odo.start + count * odo.entry, unknown)


def _absent_as_null(spec: RecordDecoder, stored: dict[str, np.ndarray],
                    held: np.ndarray) -> None:
    """The entries past each record's count are NULL (object columns, None)."""
    for col in spec.columns:
        if col.item.occurrence:
            absent = held < col.item.occurrence
            if absent.any():
                column = stored[col.name].astype(object)
                column[absent] = None
                stored[col.name] = column


def _reject(spec: RecordDecoder, decoded: Decoded, rec: np.ndarray, lengths: np.ndarray,
            offsets: np.ndarray, numbers: np.ndarray, full: np.ndarray,
            size: np.ndarray | int, i: int) -> Reject:
    raw = rec[i, : lengths[i]].tobytes()
    if not full[i]:
        want = int(size if isinstance(size, int) else size[i])
        counted = ("" if spec.odo is None else
                   f" with {spec.odo.counter} = {int(decoded.values[spec.odo.counter][i])}")
        reason = f"record is {lengths[i]} bytes long, the {spec.name} record{counted} is {want}"
    else:
        reason = decoded.failures.reason(i, raw)
    return Reject(int(numbers[i]), f"{reason} (record at byte offset {int(offsets[i])})",
                  hex_dump(raw).encode("ascii"))


def hex_dump(raw: bytes) -> str:
    """The record's bytes as hex, grouped by 4 bytes, for the reject file."""
    return raw.hex(" ", -4).upper()


def ascii_digits(values: np.ndarray, n: int) -> np.ndarray:
    """(B, n) ASCII digit bytes of non-negative int64 values, zero padded on the left."""
    powers = 10 ** np.arange(n - 1, -1, -1, dtype=np.int64)
    return ((values.astype(np.int64)[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def _iso_dates(values: np.ndarray) -> np.ndarray:
    d = ascii_digits(values, 8)
    dash = np.full((len(d), 1), ord("-"), dtype=np.uint8)
    return _as_str(np.hstack([d[:, 0:4], dash, d[:, 4:6], dash, d[:, 6:8]]))
