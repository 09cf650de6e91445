"""The vectorized mainframe decoders, on records built byte by byte with known values,
cross-checked against the per-record reference decoder in tests/mainframe_reference.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.layouts.codepages import CODE_PAGES, code_page
from pipeline.layouts.copybook import Item, Usage
from pipeline.layouts.fields import FieldType
from pipeline.layouts.mainframe import (
    Column,
    RecordDecoder,
    decode,
    decode_binary,
    decode_details,
    decode_number,
    decode_packed,
    decode_text,
    decode_zoned,
)
from tests import mainframe_reference as ref

pytestmark = pytest.mark.timeout(60)
FAST = settings(deadline=None, max_examples=150, database=None,
                suppress_health_check=[HealthCheck.too_slow])
CP037 = code_page("cp037")


def rows(*records: bytes) -> np.ndarray:
    return np.array([list(r) for r in records], dtype=np.uint8)


def num(usage: Usage, digits: int, size: int, *, scale: int = 0, signed: bool = True,
        leading: bool = False, separate: bool = False) -> Item:
    return Item("n", 0, size, True, usage, digits, scale, signed, leading, separate)


# --- packed decimal --------------------------------------------------------------------


def test_packed_known_values() -> None:
    value, ok = decode_packed(rows(b"\x12\x34\x5c", b"\x12\x34\x5d", b"\x12\x34\x5f",
                                   b"\x00\x00\x0c", b"\x99\x99\x9b"), 5, True)
    assert ok.all()
    assert value.tolist() == [12345, -12345, 12345, 0, -99999]


@pytest.mark.parametrize("raw, why", [
    (b"\x1a\x34\x5c", "a digit nibble A"),
    (b"\x12\x34\x59", "sign nibble 9"),
    (b"\x12\x34\x50", "sign nibble 0"),
    (b"\x40\x40\x40", "EBCDIC spaces"),
])
def test_packed_invalid_bytes_are_not_readable(raw: bytes, why: str) -> None:
    _, ok = decode_packed(rows(raw), 5, True)
    assert not ok[0], why


def test_packed_even_digit_count_needs_a_zero_pad_nibble() -> None:
    value, ok = decode_packed(rows(b"\x01\x23\x4c", b"\x11\x23\x4c"), 4, True)
    assert ok.tolist() == [True, False]
    assert value[0] == 1234


def test_packed_unsigned_refuses_a_negative_sign() -> None:
    _, ok = decode_packed(rows(b"\x12\x34\x5d", b"\x12\x34\x5f"), 5, False)
    assert ok.tolist() == [False, True]


def test_packed_31_digits_are_exact() -> None:
    big = 10**31 - 1
    raws = [ref.encode_packed(v, 31) for v in (big, -big, 1234567890123456789012345678901)]
    value, ok = decode_packed(rows(*raws), 31, True)
    assert ok.all()
    assert [int(v) for v in value] == [big, -big, 1234567890123456789012345678901]


def test_packed_18_digits_stay_int64() -> None:
    value, ok = decode_packed(rows(ref.encode_packed(-(10**18 - 1), 18)), 18, True)
    assert ok[0] and value.dtype == np.int64 and value[0] == -(10**18 - 1)


@FAST
@given(st.lists(st.binary(min_size=4, max_size=4), min_size=1, max_size=40),
       st.sampled_from([6, 7]), st.booleans())
def test_packed_agrees_with_the_reference_on_any_bytes(raws: list[bytes], digits: int,
                                                       signed: bool) -> None:
    value, ok = decode_packed(rows(*raws), digits, signed)
    for i, raw in enumerate(raws):
        expected = ref.packed(raw, digits, signed)
        assert ok[i] == (expected is not None), raw.hex()
        if expected is not None:
            assert value[i] == expected


@FAST
@given(st.lists(st.integers(-(10**15 - 1), 10**15 - 1), min_size=1, max_size=40))
def test_packed_round_trips_the_reference_encoder(values: list[int]) -> None:
    value, ok = decode_packed(rows(*(ref.encode_packed(v, 15) for v in values)), 15, True)
    assert ok.all() and value.tolist() == values


# --- zoned decimal ---------------------------------------------------------------------


def test_zoned_overpunch_cp037() -> None:
    item = num(Usage.DISPLAY, 5, 5)
    raws = [CP037.encode(t) for t in ("1234J", "1234A", "1234{", "1234}", "12345")]
    value, ok = decode_zoned(rows(*raws), item, CP037)
    assert ok.all()
    assert value.tolist() == [-12341, 12341, 12340, -12340, 12345]


def test_zoned_rejects_non_digits_and_misplaced_signs() -> None:
    item = num(Usage.DISPLAY, 5, 5)
    raws = [CP037.encode(t) for t in ("12A45", "J2345", "1234 ", "12 45")]
    _, ok = decode_zoned(rows(*raws), item, CP037)
    assert not ok.any()


def test_zoned_reasons_name_the_bad_byte() -> None:
    _, _, explain = decode_number(num(Usage.DISPLAY, 5, 5), rows(CP037.encode("12A45")), CP037)
    assert explain(CP037.encode("12A45")).endswith(
        "byte 3 X'C1' is not a digit (read as '12A45')")
    assert explain(CP037.encode("1234 ")).endswith(
        "byte 5 X'40' is not a sign (read as '1234 ')")


def test_packed_sign_reasons_name_every_valid_sign() -> None:
    """The reason said "not C, D or F" where A, B and E are signs too."""
    signed = decode_number(num(Usage.PACKED, 5, 3), rows(b"\x12\x34\x57"), CP037)[2]
    assert signed(b"\x12\x34\x57").endswith(
        "sign nibble 7 is not a sign (A, C, E, F positive; B, D negative)")
    unsigned = decode_number(num(Usage.PACKED, 5, 3, signed=False),
                             rows(b"\x12\x34\x5b"), CP037)[2]
    assert unsigned(b"\x12\x34\x5b") == ("is negative (sign nibble B) but PIC 9(5) COMP-3 "
                                          "is unsigned")


def test_binary_and_date_reasons_show_the_value_beside_the_hex() -> None:
    binary = decode_number(num(Usage.BINARY, 4, 2), rows(b"\x27\x10"), CP037)[2]
    assert binary(b"\x27\x10") == "is 10000: out of range for 4 digits"
    spec = RecordDecoder("r", 8, (Column(Item("d", 0, 8, True, Usage.DISPLAY, 8), FieldType.DATE),),
                         code_page("cp500"))
    decoded = decode(spec, rows(code_page("cp500").encode("20261345")))
    assert decoded.failures.reason(0, code_page("cp500").encode("20261345")) == (
        "D (bytes 1-8) X'F2F0F2F6F1F3F4F5' is not a calendar date YYYYMMDD "
        "(read as '20261345')")


def test_the_value_read_stays_ascii_and_groups_with_its_kind() -> None:
    from pipeline.rejects import reason_group

    cp = code_page("cp037")
    spec = RecordDecoder("r", 4, (Column(Item("t", 0, 4, False, Usage.DISPLAY), FieldType.TEXT),),
                         cp)
    raw = b"\xc1\x07\x51\x7d"  # A, a control character, e acute, a quote
    reason = decode(spec, rows(raw)).failures.reason(0, raw)
    assert reason.endswith("""not a printable character in cp037 (read as "A\\x7f\\xe9'")""")
    assert reason.isascii()
    other = decode(spec, rows(b"\x07\x07\x07\x07")).failures.reason(0, b"\x07" * 4)
    assert reason_group(reason) == reason_group(other) == (
        "T (bytes 1-4) X'..' holds a byte that is not a printable character in cp037")


def test_zoned_unsigned_needs_plain_digits() -> None:
    item = num(Usage.DISPLAY, 4, 4, signed=False)
    value, ok = decode_zoned(rows(b"\xf1\xf2\xf3\xf4", b"\xf1\xf2\xf3\xc4"), item, CP037)
    assert ok.tolist() == [True, False] and value[0] == 1234


def test_zoned_sign_leading_and_separate() -> None:
    lead = num(Usage.DISPLAY, 4, 4, leading=True)
    value, ok = decode_zoned(rows(CP037.encode("J234"), CP037.encode("1234")), lead, CP037)
    assert ok.all() and value.tolist() == [-1234, 1234]
    sep_t = num(Usage.DISPLAY, 4, 5, separate=True)
    value, ok = decode_zoned(rows(CP037.encode("1234-"), CP037.encode("1234+"),
                                  CP037.encode("1234 ")), sep_t, CP037)
    assert ok.tolist() == [True, True, False] and value[:2].tolist() == [-1234, 1234]
    sep_l = num(Usage.DISPLAY, 4, 5, leading=True, separate=True)
    value, ok = decode_zoned(rows(CP037.encode("-1234")), sep_l, CP037)
    assert ok[0] and value[0] == -1234


def test_zoned_ascii_overpunch() -> None:
    cp = code_page("ascii")
    value, ok = decode_zoned(rows(b"1234J", b"1234A", b"12345", b"1234x"),
                             num(Usage.DISPLAY, 5, 5), cp)
    assert ok.tolist() == [True, True, True, False]
    assert value[:3].tolist() == [-12341, 12341, 12345]


@FAST
@given(st.lists(st.binary(min_size=5, max_size=5), min_size=1, max_size=40), st.booleans(),
       st.booleans(), st.booleans())
def test_zoned_agrees_with_the_reference_on_any_bytes(raws: list[bytes], signed: bool,
                                                      leading: bool, separate: bool) -> None:
    digits = 4 if signed and separate else 5
    item = num(Usage.DISPLAY, digits, 5, signed=signed, leading=leading, separate=separate)
    value, ok = decode_zoned(rows(*raws), item, CP037)
    for i, raw in enumerate(raws):
        expected = ref.zoned_ebcdic(raw, signed, leading, separate)
        assert ok[i] == (expected is not None), raw.hex()
        if expected is not None:
            assert value[i] == expected


@FAST
@given(st.lists(st.integers(-(10**9 - 1), 10**9 - 1), min_size=1, max_size=40))
def test_zoned_round_trips_the_reference_encoder(values: list[int]) -> None:
    raws = [ref.encode_zoned_ebcdic(v, 9) for v in values]
    value, ok = decode_zoned(rows(*raws), num(Usage.DISPLAY, 9, 9), CP037)
    assert ok.all() and value.tolist() == values


# --- binary ------------------------------------------------------------------------------


def test_binary_big_endian_views() -> None:
    v, ok = decode_binary(rows(b"\xff\xfe", b"\x00\x07"), num(Usage.BINARY, 4, 2))
    assert ok.all() and v.tolist() == [-2, 7]
    v, ok = decode_binary(rows((-123456789).to_bytes(4, "big", signed=True)),
                          num(Usage.BINARY, 9, 4))
    assert ok[0] and v[0] == -123456789
    v, ok = decode_binary(rows((10**18 - 1).to_bytes(8, "big")), num(Usage.BINARY, 18, 8))
    assert ok[0] and v[0] == 10**18 - 1


def test_comp_is_limited_to_its_digits_but_comp5_is_not() -> None:
    raw = rows((12345).to_bytes(2, "big"))
    assert not decode_binary(raw, num(Usage.BINARY, 4, 2))[1][0]
    v, ok = decode_binary(raw, num(Usage.NATIVE, 4, 2))
    assert ok[0] and v[0] == 12345


def test_unsigned_doubleword_past_int64_is_not_readable() -> None:
    v, ok = decode_binary(rows(b"\xff" * 8, (5).to_bytes(8, "big")),
                          num(Usage.NATIVE, 18, 8, signed=False))
    assert ok.tolist() == [False, True] and v[1] == 5


@FAST
@given(st.lists(st.binary(min_size=4, max_size=4), min_size=1, max_size=40), st.booleans())
def test_binary_agrees_with_the_reference(raws: list[bytes], signed: bool) -> None:
    v, ok = decode_binary(rows(*raws), num(Usage.NATIVE, 9, 4, signed=signed))
    assert ok.all()
    assert v.tolist() == [ref.binary(r, signed) for r in raws]


def test_p_scaling() -> None:
    up = num(Usage.PACKED, 3, 2, scale=-2)  # PIC S999PP: hundreds
    value, ok, _ = decode_number(up, rows(b"\x12\x3c"), CP037)
    assert ok[0] and value[0] == 12300


# --- text and code pages -----------------------------------------------------------------


def test_text_trims_spaces_and_low_values() -> None:
    raws = [CP037.encode("HELLO   "), CP037.encode("HELLO") + b"\x00\x00\x00",
            CP037.encode("HI") + b"\x00" + CP037.encode("X    ")]
    text, ok = decode_text(rows(*raws), CP037)
    assert ok.all()
    assert text.tolist() == ["HELLO", "HELLO", "HI X"]


def test_text_refuses_control_bytes() -> None:
    text, ok = decode_text(rows(CP037.encode("AB") + b"\x05\x40", b"\x15" + CP037.encode("ABC")),
                           CP037)
    assert not ok.any()


@pytest.mark.parametrize("name", [c for c in CODE_PAGES if c not in ("ascii", "cp1047")])
def test_code_page_tables_agree_with_python(name: str) -> None:
    cp = code_page(name)
    every = bytes(range(256))
    text, _ = decode_text(rows(every[1:]), cp)  # without X'00', which is padding
    assert text[0] == every[1:].decode(name).rstrip(" ")
    printable = "".join(chr(c) for c in range(32, 127))
    assert cp.encode(printable).decode(name) == printable


def test_cp1047_matches_the_ebcdic_package() -> None:
    ebcdic = pytest.importorskip("ebcdic")
    assert ebcdic
    cp = code_page("cp1047")
    assert cp.chars == bytes(range(256)).decode("cp1047")
    assert (cp.chars[0xAD], cp.chars[0xBD], cp.chars[0x5F], cp.chars[0x15]) == ("[", "]", "^", "\n")


def test_cp1047_known_code_points_without_the_package() -> None:
    cp = code_page("cp1047")
    assert cp.encode("[]^") == b"\xad\xbd\x5f"
    assert code_page("cp037").encode("[]^") == b"\xba\xbb\xb0"


# --- a record of the example job -----------------------------------------------------


def _detail_spec() -> RecordDecoder:
    items = [Item("txn_id", 1, 6, False, Usage.DISPLAY),
             Item("txn_date", 7, 8, True, Usage.DISPLAY, 8, 0, False),
             Item("amount", 15, 4, True, Usage.PACKED, 7, 2, True)]
    kinds = [FieldType.TEXT, FieldType.DATE, FieldType.AMOUNT]
    cols = tuple(Column(i, k, required=i.name == "txn_id") for i, k in zip(items, kinds,
                                                                         strict=True))
    return RecordDecoder("detail", 19, cols, CP037, Item("rec_type", 0, 1, False, Usage.DISPLAY),
                         CP037.encode("D"), (CP037.encode("H"), CP037.encode("T")))


def _rec(rtype: str = "D", txn: str = "A1", date: str = "20261124",
         amount: bytes = b"\x01\x23\x45\x6d") -> bytes:
    return CP037.encode(rtype) + CP037.encode(txn.ljust(6)) + CP037.encode(date) + amount


def test_details_accept_reject_and_misplaced() -> None:
    spec = _detail_spec()
    recs = [_rec(), _rec(txn=""), _rec(date="20260230"), _rec(amount=b"\x01\x23\x45\x67"),
            _rec("T"), _rec("X")]
    rec = rows(*recs)
    batch = decode_details(spec, "amount", rec, np.full(len(recs), 19),
                           np.arange(len(recs)) * 19 + 100, 2)
    assert batch.records_read == 5 and batch.accepted == 1 and len(batch.rejects) == 4
    assert batch.misplaced == [6]
    assert batch.columns["amount"].tolist() == [-123456]
    assert batch.columns["txn_date"].tolist() == ["2026-11-24"]
    assert batch.columns["txn_id"].tolist() == ["A1"]
    reasons = {r.line: r.reason for r in batch.rejects}
    assert "TXN_ID" in reasons[3] and "blank" in reasons[3]
    assert "calendar date" in reasons[4]
    assert "sign nibble 7" in reasons[5] and "byte offset 157" in reasons[5]
    assert "record type" in reasons[7]
    assert batch.rejects[0].raw.decode().replace(" ", "") == recs[1].hex().upper()
    # the bad amount is unreadable: its total cannot be proven
    assert batch.unreadable_amounts == 1
    assert batch.read_amount == -123456 * 4  # every readable amount, the X record too


def test_decode_marks_wrong_length_vb_records() -> None:
    spec = _detail_spec()
    rec = rows(_rec(), _rec())
    batch = decode_details(spec, "amount", rec[:, :19], np.array([19, 12]), np.array([0, 23]), 1)
    assert batch.accepted == 1
    assert "12 bytes long" in batch.rejects[0].reason


def test_decode_reports_every_broken_field() -> None:
    spec = _detail_spec()
    d = decode(spec, rows(_rec(txn="", amount=b"\xff\xff\xff\xff")))
    reason = d.failures.reason(0, _rec(txn="", amount=b"\xff\xff\xff\xff"))
    assert "TXN_ID" in reason and "AMOUNT" in reason and "X'FFFFFFFF'" in reason


# --- VB framing ----------------------------------------------------------------------


@FAST
@given(st.lists(st.one_of(st.just(20), st.integers(5, 40)), max_size=300),
       st.integers(0, 30))
def test_frame_vb_agrees_with_a_walk_of_the_rdws(lengths: list[int], cut: int) -> None:
    from pipeline.layouts.recfm import frame_vb

    data = b"".join(n.to_bytes(2, "big") + b"\0\0" + bytes([n]) * (n - 4) for n in lengths)
    data = data[: max(0, len(data) - cut)]
    expected_starts, expected_lengths, pos = [], [], 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos:pos + 2], "big")
        if pos + n > len(data):
            break
        expected_starts.append(pos)
        expected_lengths.append(n - 4)
        pos += n
    starts, got_lengths, used = frame_vb(np.frombuffer(data, np.uint8), 0)
    assert starts.tolist() == expected_starts
    assert got_lengths.tolist() == expected_lengths
    assert used == pos


def test_cp1140_euro_sign_takes_the_wide_path() -> None:
    cp = code_page("cp1140")
    euro = "PRICE \u20ac5".encode("cp1140")
    text, ok = decode_text(rows(euro.ljust(12, b"\x40"), cp.encode("PLAIN").ljust(12, b"\x40")),
                           cp)
    assert ok.all() and text.tolist() == ["PRICE \u20ac5", "PLAIN"]
    text, _ = decode_text(rows(cp.encode("PLAIN").ljust(12, b"\x40")), cp)
    assert text.tolist() == ["PLAIN"]
