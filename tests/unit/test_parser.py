"""The vectorized detail parser and the input planner, checked against the spec.

Records are built here from the spec's column table (not from the layout under test), and
a tiny pure-Python reference parser decides what every record should become.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import source
from pipeline.config import load_config
from pipeline.generate import generate_file
from pipeline.jobs import shipped_config
from pipeline.layouts.fixed import DetailBatch, Reject, parse_details
from pipeline.source import ByteRange, LineChunk, read_lines
from tests.reference import is_calendar_date

pytestmark = pytest.mark.timeout(60)

CONFIG = load_config(shipped_config())
LAYOUT = CONFIG.detail
AMOUNT = CONFIG.amount
FIELD_NAMES = {f.name.upper() for f in LAYOUT.fields}
FAST = settings(deadline=None, max_examples=60, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def record(*, rtype: bytes = b"D", txn_id: bytes = b"TXN1", account: bytes = b"0123456789",
           date: bytes = b"20261125", sign: bytes = b"+", amount: bytes = b"0000000012345",
           currency: bytes = b"EUR", desc: bytes = b"CARD PAYMENT",
           filler: bytes = b" " * 8) -> bytes:
    """A 100-byte detail record by the spec's columns; text fields are space padded."""
    rec = (rtype + txn_id.ljust(16) + account + date + sign + amount + currency
           + desc.ljust(40) + filler)
    assert len(rec) == 100, (len(rec), rec)
    return rec


def parse(*records: bytes, first_line: int = 2) -> DetailBatch:
    return parse_details(LAYOUT, AMOUNT, b"".join(r + b"\n" for r in records), first_line)


def check_invariants(batch: DetailBatch, data: bytes, first_line: int) -> None:
    """Every newline-ended line is accepted, rejected or misplaced: exactly one of them."""
    lines = data.count(b"\n")
    assert batch.records_read == batch.accepted + len(batch.rejects)
    assert batch.records_read + len(batch.misplaced) == lines
    assert all(r.reason for r in batch.rejects)
    seen = [*batch.lines.tolist(), *(r.line for r in batch.rejects), *batch.misplaced]
    assert sorted(seen) == list(range(first_line, first_line + lines))
    assert [r.line for r in batch.rejects] == sorted(r.line for r in batch.rejects)
    assert 0 <= batch.unreadable_amounts <= len(batch.rejects)


def assert_accepted(rec: bytes) -> DetailBatch:
    batch = parse(rec)
    assert batch.rejects == [], batch.rejects[0].reason
    assert (batch.records_read, batch.accepted, batch.lines.tolist()) == (1, 1, [2])
    return batch


def assert_rejected(rec: bytes, field: str, *, readable: bool = True) -> Reject:
    batch = parse(rec, first_line=5)
    assert (batch.records_read, batch.accepted, len(batch.rejects)) == (1, 0, 1)
    reject = batch.rejects[0]
    assert reject.line == 5
    assert reject.raw == rec
    assert reject.reason.startswith(field) or f"; {field} " in reject.reason, reject.reason
    assert batch.unreadable_amounts == (0 if readable else 1)
    assert batch.accepted_amount == 0
    assert batch.read_amount == (12345 if readable else 0)
    return reject


# --- one rule at a time -------------------------------------------------------------------


@pytest.mark.parametrize("date", [b"20240229", b"20000229", b"20261231", b"00010101",
                                  b"99991231", b"20260131", b"20260430"])
def test_valid_calendar_dates(date: bytes) -> None:
    batch = assert_accepted(record(date=date))
    iso = date.decode()
    assert batch.columns["txn_date"].tolist() == [f"{iso[:4]}-{iso[4:6]}-{iso[6:]}"]


@pytest.mark.parametrize("date", [b"20260230", b"20250229", b"19000229", b"20260431",
                                  b"20260001", b"20261301", b"20269901", b"20260100",
                                  b"20260132", b"00000101", b"2026112 ", b"2026-1-1",
                                  b"        ", b"2026112A", b"+2026112"])
def test_invalid_calendar_dates(date: bytes) -> None:
    reject = assert_rejected(record(date=date), "TXN_DATE")
    assert "calendar date" in reject.reason


@pytest.mark.parametrize("account", [b"01234A6789", b" 123456789", b"012345678 ",
                                     b"+123456789", b"0123456789"[::-1].replace(b"5", b"\x00")])
def test_account_id_must_be_digits(account: bytes) -> None:
    assert_rejected(record(account=account), "ACCOUNT_ID")


@pytest.mark.parametrize("sign", [b" ", b"0", b"*", b"\x00", b"p"])
def test_sign_must_be_plus_or_minus(sign: bytes) -> None:
    assert_rejected(record(sign=sign), "SIGN", readable=False)


@pytest.mark.parametrize("amount", [b"00000000 2345", b"000000012345 ", b" 000000012345",
                                    b"+000000012345", b"0000000+12345", b"-000000012345",
                                    b"00000000123.4", b"0000000001e45", b"\x00" + b"0" * 12])
def test_amount_must_be_13_digits(amount: bytes) -> None:
    reject = assert_rejected(record(amount=amount), "AMOUNT", readable=False)
    assert "13 digits" in reject.reason


@pytest.mark.parametrize("currency", [b"eur", b"EU ", b" EU", b"E1R", b"\xc3\x89U", b"E-R"])
def test_currency_must_be_three_upper_case_letters(currency: bytes) -> None:
    assert_rejected(record(currency=currency), "CURRENCY")


@pytest.mark.parametrize("txn_id", [b" TXN1", b"TXN 1", b"TXN-1", b"TXN_1", b"TXN1.",
                                    b"\tTXN1", b"TXN1\x00", b"TX\xc3\x89"])
def test_txn_id_must_be_left_justified_letters_and_digits(txn_id: bytes) -> None:
    reject = assert_rejected(record(txn_id=txn_id), "TXN_ID")
    assert "letters and digits" in reject.reason


def test_blank_txn_id_is_rejected() -> None:
    reject = assert_rejected(record(txn_id=b""), "TXN_ID")
    assert "blank" in reject.reason


@pytest.mark.parametrize("txn_id", [b"T", b"txn1", b"ABCDEFGHIJKLMNOP", b"0000000000000000"])
def test_valid_txn_ids(txn_id: bytes) -> None:
    batch = assert_accepted(record(txn_id=txn_id))
    assert batch.columns["txn_id"].tolist() == [txn_id.decode()]


@pytest.mark.parametrize("bad", [b"\x7f", b"\x1f", b"\x80", b"\xff", b"\x00", b"\t", b"\r",
                                 b"\xc3\xa9"])
def test_description_must_be_printable_ascii(bad: bytes) -> None:
    reject = assert_rejected(record(desc=b"CAF" + bad + b" PAYMENT"), "DESCRIPTION")
    assert "printable ASCII" in reject.reason


@pytest.mark.parametrize("desc", [b"", b" ", bytes(range(32, 72)), bytes(range(72, 112))])
def test_every_printable_description_is_accepted(desc: bytes) -> None:
    batch = assert_accepted(record(desc=desc))
    assert batch.columns["description"].tolist() == [desc.decode().rstrip(" ")]


@pytest.mark.parametrize("filler", [b"       X", b"X       ", b"\x00" * 8, b"\t       "])
def test_filler_must_be_spaces(filler: bytes) -> None:
    assert_rejected(record(filler=filler), "FILLER")


@pytest.mark.parametrize("rtype", [b"X", b"d", b" ", b"\x00", b"E"])
def test_unknown_record_type_is_rejected(rtype: bytes) -> None:
    reject = assert_rejected(record(rtype=rtype), "RECORD_TYPE")
    assert "'D'" in reject.reason


def test_several_broken_rules_are_all_named() -> None:
    reject = assert_rejected(record(account=b"ABCDEFGHIJ", currency=b"eur", date=b"20260230"),
                             "ACCOUNT_ID")
    for name in ("ACCOUNT_ID", "TXN_DATE", "CURRENCY"):
        assert name in reject.reason


@pytest.mark.parametrize(("line", "reason"), [
    (record()[:99], "record is 99 bytes long, expected 100"),
    (record() + b" ", "record is 101 bytes long, expected 100"),
    (b"", "record is 0 bytes long, expected 100"),
    (record() * 2, "record is 200 bytes long, expected 100"),
    (record() + b"\r", "CR LF"),
])
def test_wrong_record_length(line: bytes, reason: str) -> None:
    batch = parse(record(), line, record(txn_id=b"TXN2"), first_line=10)
    assert (batch.records_read, batch.accepted) == (3, 2)
    assert batch.lines.tolist() == [10, 12]
    [reject] = batch.rejects
    assert (reject.line, reject.raw) == (11, line)
    assert reason in reject.reason
    assert batch.unreadable_amounts == 1
    assert batch.read_amount == batch.accepted_amount == 2 * 12345


def test_header_and_trailer_in_the_middle_are_misplaced_not_read() -> None:
    header = b"H20261125" + b"GENERATOR".ljust(20) + b" " * 71
    trailer = b"T0000000002+" + b"0" * 18 + b" " * 70
    batch = parse(record(), header, record(txn_id=b"TXN2"), trailer, first_line=2)
    assert batch.misplaced == [3, 5]
    assert batch.records_read == 2
    assert batch.rejects == []
    assert batch.lines.tolist() == [2, 4]
    assert batch.unreadable_amounts == 0
    check_invariants(batch, b"".join(r + b"\n" for r in (record(), header, record(),
                                                          trailer)), 2)


# --- exact values ----------------------------------------------------------------------


def test_accepted_columns_and_totals_are_exact() -> None:
    records = [
        record(txn_id=b"A1", desc=b"  lead kept, trail cut   ", amount=b"0000000012345"),
        record(txn_id=b"B2", date=b"20260230", sign=b"-", amount=b"0000000000500"),  # readable
        record(txn_id=b"C3", sign=b"-", amount=b"9999999999999", currency=b"USD",
               date=b"20240229"),
        record(txn_id=b"D4", amount=b"00000 0000001"),  # unreadable
        record(txn_id=b"E5", account=b"12345678X0", amount=b"0000000001000"),  # readable
        record(txn_id=b"F6")[:99],  # wrong length: unreadable
        record(txn_id=b"G7", sign=b"-", amount=b"0000000000000", desc=b""),
    ]
    batch = parse(*records, first_line=100)
    assert batch.lines.dtype == np.int64
    assert batch.lines.tolist() == [100, 102, 106]
    assert [r.line for r in batch.rejects] == [101, 103, 104, 105]
    assert batch.columns["txn_id"].tolist() == ["A1", "C3", "G7"]
    assert batch.columns["account_id"].tolist() == ["0123456789"] * 3
    assert batch.columns["txn_date"].tolist() == ["2026-11-25", "2024-02-29", "2026-11-25"]
    assert batch.columns["currency"].tolist() == ["EUR", "USD", "EUR"]
    assert batch.columns["description"].tolist() == ["  lead kept, trail cut", "CARD PAYMENT",
                                                     ""]
    amounts = batch.columns["amount"]
    assert amounts.dtype == np.int64
    assert amounts.tolist() == [12345, -9999999999999, 0]
    assert set(batch.columns) == {"txn_id", "account_id", "txn_date", "amount", "currency",
                                  "description"}
    assert batch.accepted_amount == 12345 - 9999999999999
    assert batch.read_amount == 12345 - 500 - 9999999999999 + 1000
    assert batch.unreadable_amounts == 2
    assert (batch.records_read, batch.accepted, len(batch.rejects)) == (7, 3, 4)
    assert batch.first_line == 100


def test_empty_batch() -> None:
    batch = parse_details(LAYOUT, AMOUNT, b"", 2)
    assert (batch.records_read, batch.accepted, batch.rejects, batch.misplaced) == (0, 0, [], [])
    assert (batch.accepted_amount, batch.read_amount, batch.unreadable_amounts) == (0, 0, 0)


def test_data_without_any_newline_holds_no_line() -> None:
    batch = parse_details(LAYOUT, AMOUNT, record(), 2)
    assert batch.records_read == batch.accepted + len(batch.rejects)
    assert batch.records_read == 0


# --- the reference parser: the spec in a few lines of plain Python ----------------------


@dataclass(frozen=True)
class Ref:
    kind: str  # "accepted" | "rejected" | "misplaced"
    fields: frozenset[str] = frozenset()  # names of the broken rules
    amount: int | None = None  # signed minor units, None when unreadable
    values: tuple[str, ...] = ()  # txn_id, account, ISO date, currency, description


_ALNUM_LEFT = re.compile(rb"[A-Za-z0-9]+ *")


def ref_parse(line: bytes) -> Ref:
    if len(line) != 100:
        return Ref("rejected", frozenset({"LENGTH"}))
    if line[:1] in (b"H", b"T"):
        return Ref("misplaced")
    broken = set()
    if line[:1] != b"D":
        broken.add("RECORD_TYPE")
    txn = line[1:17]
    if not _ALNUM_LEFT.fullmatch(txn):
        broken.add("TXN_ID")
    if not re.fullmatch(rb"[0-9]{10}", line[17:27]):
        broken.add("ACCOUNT_ID")
    if not is_calendar_date(line[27:35]):
        broken.add("TXN_DATE")
    sign_ok = line[35:36] in (b"+", b"-")
    digits_ok = re.fullmatch(rb"[0-9]{13}", line[36:49]) is not None
    if not sign_ok:
        broken.add("SIGN")
    if not digits_ok:
        broken.add("AMOUNT")
    if not re.fullmatch(rb"[A-Z]{3}", line[49:52]):
        broken.add("CURRENCY")
    if not all(32 <= b <= 126 for b in line[52:92]):
        broken.add("DESCRIPTION")
    if line[92:100] != b" " * 8:
        broken.add("FILLER")
    amount = None
    if sign_ok and digits_ok:
        amount = int(line[36:49]) * (-1 if line[35:36] == b"-" else 1)
    if broken:
        return Ref("rejected", frozenset(broken), amount)
    d = line[27:35].decode()
    values = (txn.decode().rstrip(" "), line[17:27].decode(), f"{d[:4]}-{d[4:6]}-{d[6:]}",
              line[49:52].decode(), line[52:92].decode().rstrip(" "))
    return Ref("accepted", frozenset(), amount, values)


def _reason_fields(reason: str) -> frozenset[str]:
    if reason.startswith("record ") and ("bytes long" in reason or "CR LF" in reason):
        return frozenset({"LENGTH"})
    return frozenset(p.split(" ", 1)[0] for p in reason.split("; ")) & FIELD_NAMES


def assert_matches_reference(data: bytes, first_line: int, batch: DetailBatch) -> None:
    lines = data.split(b"\n")[:-1]
    refs = [ref_parse(line) for line in lines]
    numbered = list(enumerate(refs, start=first_line))
    accepted = [(n, r) for n, r in numbered if r.kind == "accepted"]
    rejected = [(n, r) for n, r in numbered if r.kind == "rejected"]
    assert batch.lines.tolist() == [n for n, _ in accepted]
    assert batch.misplaced == [n for n, r in numbered if r.kind == "misplaced"]
    assert [r.line for r in batch.rejects] == [n for n, _ in rejected]
    for reject, (n, ref) in zip(batch.rejects, rejected, strict=True):
        assert reject.raw == lines[n - first_line]
        assert _reason_fields(reject.reason) == ref.fields, (n, reject.reason)
    cols = batch.columns
    got = list(zip(cols["txn_id"].tolist(), cols["account_id"].tolist(),
                   cols["txn_date"].tolist(), cols["currency"].tolist(),
                   cols["description"].tolist(), strict=True))
    assert got == [r.values for _, r in accepted]
    assert cols["amount"].tolist() == [r.amount for _, r in accepted]
    assert batch.accepted_amount == sum(r.amount for _, r in accepted)
    assert batch.read_amount == sum(r.amount for r in refs if r.amount is not None)
    assert batch.unreadable_amounts == sum(1 for _, r in rejected if r.amount is None)
    assert batch.records_read == len(accepted) + len(rejected)


def _details_of(path: Path) -> bytes:
    content = path.read_bytes()
    return content[101:-101]


def _totals(batches: list[DetailBatch]) -> tuple:
    return (sum(b.records_read for b in batches), sum(b.accepted for b in batches),
            sum(len(b.rejects) for b in batches), sum(b.accepted_amount for b in batches),
            sum(b.read_amount for b in batches), sum(b.unreadable_amounts for b in batches),
            [n for b in batches for n in b.lines.tolist()],
            [(r.line, r.reason) for b in batches for r in b.rejects])


@pytest.mark.parametrize("seed", [1, 2, 3, 11])
def test_generated_file_matches_reference_parser(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "in.dat"
    made = generate_file(path, 400, seed=seed, reject_rate=0.2, duplicate_rate=0.1)
    data = _details_of(path)
    batch = parse_details(LAYOUT, AMOUNT, data, 2)
    assert_matches_reference(data, 2, batch)
    assert len(batch.rejects) == made.rejects == 80
    assert batch.read_amount == made.amount_total  # generated rejects keep their amounts
    assert batch.unreadable_amounts == 0

    whole = _totals([batch])
    lines = data.split(b"\n")[:-1]
    for size in (1, 7, 64, 399, 1000):
        parts = []
        for i in range(0, len(lines), size):
            chunk = b"".join(line + b"\n" for line in lines[i : i + size])
            parts.append(parse_details(LAYOUT, AMOUNT, chunk, 2 + i))
        assert _totals(parts) == whole, size


@pytest.mark.parametrize("parts", [1, 3, 8])
@pytest.mark.parametrize("batch_lines", [1, 13, 10_000])
def test_planned_ranges_read_in_batches_give_the_same_totals(tmp_path: Path, parts: int,
                                                             batch_lines: int) -> None:
    path = tmp_path / "in.dat"
    generate_file(path, 300, seed=5, reject_rate=0.2, duplicate_rate=0.1)
    whole = _totals([parse_details(LAYOUT, AMOUNT, _details_of(path), 2)])
    plan = CONFIG.input_format.plan(path, parts)
    batches = []
    for rng in plan.ranges:
        for item in read_lines(path, rng, batch_lines, LAYOUT.length):
            assert isinstance(item, LineChunk)
            batches.append(parse_details(LAYOUT, AMOUNT, item.data, item.first_line))
    assert _totals(batches) == whole


# --- properties --------------------------------------------------------------------------

_VALID = [record(), record(txn_id=b"ZZ9", sign=b"-", amount=b"0000987654321", desc=b""),
          record(txn_id=b"ABCDEFGHIJKLMNOP", date=b"20240229", currency=b"JPY",
                 desc=bytes(range(33, 73)))]
_INTERESTING = list(b" +-0129AZaz\x00\x7f\x80\xff\r\t\nHTD")


@st.composite
def mutated_lines(draw: st.DrawFn) -> bytes:
    """Valid records with byte flips, truncations, extensions and inserted newlines."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        rec = bytearray(draw(st.sampled_from(_VALID)))
        for _ in range(draw(st.integers(0, 3))):
            pos = draw(st.integers(0, 99))
            rec[pos] = draw(st.sampled_from(_INTERESTING) | st.integers(0, 255))
        action = draw(st.sampled_from(["keep", "keep", "truncate", "extend", "newline"]))
        if action == "truncate":
            rec = rec[: draw(st.integers(0, 99))]
        elif action == "extend":
            rec += draw(st.binary(min_size=1, max_size=3)).replace(b"\n", b" ")
        elif action == "newline":
            rec.insert(draw(st.integers(0, 100)), ord("\n"))
        lines.append(bytes(rec) + b"\n")
    return b"".join(lines)


@FAST
@given(data=st.binary(max_size=600), first_line=st.integers(1, 10**9))
def test_arbitrary_bytes_never_raise(data: bytes, first_line: int) -> None:
    batch = parse_details(LAYOUT, AMOUNT, data, first_line)
    lines = data.count(b"\n")
    assert all(r.reason for r in batch.rejects)
    assert all(first_line <= r.line < first_line + lines for r in batch.rejects)
    assert batch.records_read == batch.accepted + len(batch.rejects)


@FAST
@given(pieces=st.lists(st.binary(max_size=130), max_size=8), first_line=st.integers(1, 10**6))
def test_arbitrary_lines_are_each_accounted_for_once(pieces: list[bytes],
                                                     first_line: int) -> None:
    data = b"".join(p + b"\n" for p in pieces)
    batch = parse_details(LAYOUT, AMOUNT, data, first_line)
    check_invariants(batch, data, first_line)
    assert_matches_reference(data, first_line, batch)


@FAST
@given(data=mutated_lines(), first_line=st.integers(1, 10**6))
def test_mutated_records_match_the_reference(data: bytes, first_line: int) -> None:
    batch = parse_details(LAYOUT, AMOUNT, data, first_line)
    check_invariants(batch, data, first_line)
    assert_matches_reference(data, first_line, batch)


@st.composite
def line_file(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """Lines of random bytes (no newline inside), some longer than the patched MAX_LINE."""
    body = st.binary(max_size=3).map(lambda b: b.replace(b"\n", b"x"))
    lines = draw(st.lists(st.one_of(
        body,
        st.integers(0, 120).map(lambda n: b"R" * n),
        st.builds(lambda b, n: b * n, st.sampled_from([b"D", b"\x00", b"\xff"]),
                  st.integers(0, 200))), max_size=12))
    tail = draw(st.sampled_from([b"", b"frag", b"\x00" * 90]))
    return lines, tail


@settings(deadline=None, max_examples=80, database=None)
@given(sample=line_file(), batch_lines=st.integers(1, 4), record_length=st.integers(1, 12),
       cut=st.data())
def test_read_lines_covers_the_range_exactly(tmp_path_factory: pytest.TempPathFactory,
                                             sample: tuple[list[bytes], bytes],
                                             batch_lines: int, record_length: int,
                                             cut: st.DataObject) -> None:
    lines, tail = sample
    content = b"".join(line + b"\n" for line in lines) + tail
    path = tmp_path_factory.mktemp("read_lines") / "blob.dat"
    path.write_bytes(content)
    # a range of whole lines [lo, hi), or the whole file with its newline-less tail
    lo = cut.draw(st.integers(0, len(lines)))
    hi = cut.draw(st.integers(lo, len(lines)))
    whole = cut.draw(st.booleans())
    offsets = np.cumsum([0] + [len(line) + 1 for line in lines]).tolist()
    if whole:
        lo, start, end = 0, 0, len(content)
        expected = lines + ([tail] if tail else [])
    else:
        start, end = offsets[lo], offsets[hi]
        expected = lines[lo:hi]
    first_line = 1 + lo
    rng = ByteRange(start, end, first_line, len(expected))
    limit = 50
    with mock.patch.object(source, "MAX_LINE", limit), mock.patch.object(source, "CHUNK", 7):
        items = list(read_lines(path, rng, batch_lines, record_length))
    got: list[bytes | None] = []
    line = first_line
    for item in items:
        if isinstance(item, LineChunk):
            assert item.first_line == line
            assert item.data.endswith(b"\n")
            got.extend(item.data.split(b"\n")[:-1])
        else:
            assert isinstance(item, Reject)
            assert item.line == line
            assert item.reason
            original = expected[line - first_line]
            assert f"record is {len(original)} bytes long" in item.reason
            assert len(original) > limit or (whole and line - first_line == len(lines))
            assert original.startswith(item.raw) and len(item.raw) <= 200
            got.append(None)
        line = first_line + len(got)
    assert len(got) == len(expected)
    for text, original in zip(got, expected, strict=True):
        assert text is None or text == original


# --- planning a text input (FixedText.plan) ---------------------------------------------


def _check_plan(path: Path, details: int, parts: int) -> source.InputPlan:
    content = path.read_bytes()
    plan = CONFIG.input_format.plan(path, parts)
    ranges = plan.ranges
    assert len(ranges) == parts
    assert ranges[0].start == 101
    assert ranges[-1].end == len(content) - 101
    assert ranges[0].first_line == 2
    for a, b in zip(ranges, ranges[1:], strict=False):
        assert a.end == b.start
        assert b.first_line == a.first_line + a.lines
    for r in ranges:
        assert r.start <= r.end
        assert content[r.start - 1] == ord("\n")  # starts on a line boundary
        assert r.lines == content[r.start : r.end].count(b"\n")
    assert plan.detail_lines == details
    assert plan.size == len(content)
    assert plan.sha256 == hashlib.sha256(content).hexdigest()
    return plan


@pytest.mark.parametrize("parts", range(1, 9))
@pytest.mark.parametrize("details", [0, 1, 2, 3, 50])
def test_a_text_plan_cuts_ranges(tmp_path: Path, details: int, parts: int) -> None:
    path = tmp_path / "in.dat"
    made = generate_file(path, details, seed=details, reject_rate=0.2)
    plan = _check_plan(path, details, parts)
    assert plan.header == {"business_date": "2026-11-25", "source_system": "GENERATOR"}
    assert plan.trailer["detail_count"] == details
    assert plan.trailer["amount_total"] == made.amount_total


@settings(deadline=None, max_examples=40, database=None)
@given(lengths=st.lists(st.integers(0, 250), max_size=12), parts=st.integers(1, 8))
def test_a_text_plan_cuts_irregular_lines_on_boundaries(tmp_path_factory: pytest.TempPathFactory,
                                                       lengths: list[int], parts: int) -> None:
    header = b"H20261125" + b"X".ljust(20) + b" " * 71 + b"\n"
    trailer = b"T" + b"%010d" % len(lengths) + b"+" + b"0" * 18 + b" " * 70 + b"\n"
    body = b"".join(b"D" * n + b"\n" for n in lengths)
    path = tmp_path_factory.mktemp("plan") / "in.dat"
    path.write_bytes(header + body + trailer)
    _check_plan(path, len(lengths), parts)
