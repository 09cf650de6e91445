"""Tests for pipeline.generate, checked by an independent pure-Python reader of the spec."""

from __future__ import annotations

import datetime
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.generate import MAX_RECORDS, GeneratedInput, generate_file
from tests.reference import is_calendar_date

pytestmark = pytest.mark.timeout(60)

BUSINESS_DATE = datetime.date(2026, 11, 25)
_DIGITS = re.compile(r"[0-9]+")
_UPPER3 = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class Detail:
    line_no: int
    txn_id: str  # the key, trailing spaces trimmed
    amount: int | None  # signed minor units; None when unreadable
    errors: tuple[str, ...]  # names of the spec rules the record breaks


@dataclass(frozen=True)
class Parsed:
    business_date: str
    source_system: str
    trailer_count: int
    trailer_total: int
    details: list[Detail]


def _detail_errors(s: str) -> list[str]:
    """Every non-amount spec rule that a 100-char detail record breaks (columns 1-based)."""
    key = s[1:17].rstrip(" ")
    checks = {
        "record_type": s[0] == "D",
        "txn_id": bool(key) and key.isascii() and key.isalnum(),
        "account_id": bool(_DIGITS.fullmatch(s[17:27])) and len(s[17:27]) == 10,
        "txn_date": is_calendar_date(s[27:35]),
        "currency": bool(_UPPER3.fullmatch(s[49:52])),
        "description": all(32 <= ord(c) <= 126 for c in s[52:92]),
        "filler": s[92:100] == " " * 8,
    }
    return [name for name, ok in checks.items() if not ok]


def _amount(s: str) -> int | None:
    sign, digits = s[35], s[36:49]
    if sign not in "+-" or not _DIGITS.fullmatch(digits):
        return None
    return -int(digits) if sign == "-" else int(digits)


def read_input(path: Path) -> Parsed:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data[:-1].split(b"\n")
    assert all(len(line) == 100 for line in lines), "every record is 100 bytes + newline"
    assert len(data) == 101 * len(lines)
    text = [line.decode("latin-1") for line in lines]
    head, tail, body = text[0], text[-1], text[1:-1]
    assert head[0] == "H" and head[29:] == " " * 71
    assert tail[0] == "T" and tail[30:] == " " * 70
    assert _DIGITS.fullmatch(tail[1:11]) and tail[11] in "+-" and _DIGITS.fullmatch(tail[12:30])
    total = int(tail[12:30]) * (-1 if tail[11] == "-" else 1)
    details = [
        Detail(n, s[1:17].rstrip(" "), _amount(s), tuple(_detail_errors(s)))
        for n, s in enumerate(body, start=2)
    ]
    return Parsed(head[1:9], head[9:29], int(tail[1:11]), total, details)


def _gen(tmp_path: Path, records: int, **kw: object) -> tuple[GeneratedInput, Parsed]:
    result = generate_file(tmp_path / "in.dat", records, **kw)  # type: ignore[arg-type]
    return result, read_input(result.path)


def _assert_reconciles(result: GeneratedInput, parsed: Parsed) -> None:
    assert parsed.trailer_count == len(parsed.details) == result.records
    assert all(d.amount is not None for d in parsed.details), "every amount stays readable"
    assert parsed.trailer_total == sum(d.amount or 0 for d in parsed.details)
    assert parsed.trailer_total == result.amount_total


def test_clean_file_is_valid_and_reconciles(tmp_path: Path) -> None:
    result, parsed = _gen(tmp_path, 20_000, seed=7)
    assert parsed.business_date == "20261125"
    assert parsed.source_system == "GENERATOR".ljust(20)
    _assert_reconciles(result, parsed)
    assert result.rejects == 0 and result.duplicates == 0
    assert [d for d in parsed.details if d.errors] == []
    keys = [d.txn_id for d in parsed.details]
    assert len(set(keys)) == len(keys)
    assert len({len(k) for k in keys}) > 2, "TXN_ID lengths vary"


def test_clean_file_field_contents(tmp_path: Path) -> None:
    result = generate_file(tmp_path / "in.dat", 20_000, seed=3)
    body = result.path.read_text("ascii").splitlines()[1:-1]
    earliest = BUSINESS_DATE - datetime.timedelta(days=61)
    dates = {datetime.datetime.strptime(s[27:35], "%Y%m%d").date() for s in body}
    assert earliest <= min(dates) and max(dates) <= BUSINESS_DATE
    assert {s[49:52] for s in body} == {"EUR", "USD", "GBP", "CHF", "JPY"}
    assert all(s[35] == "+" for s in body if int(s[36:49]) == 0), "zero amounts use +"
    assert any(int(s[36:49]) == 0 for s in body)
    assert any(int(s[36:49]) > 10_000_000 for s in body), "some large amounts"
    assert {s[35] for s in body} == {"+", "-"}
    assert any("\\" in s[52:92] for s in body)
    assert any(s[52:92].rstrip().endswith("\\") for s in body)


def test_rejects_break_exactly_one_rule(tmp_path: Path) -> None:
    result, parsed = _gen(tmp_path, 20_000, seed=11, reject_rate=0.2)
    _assert_reconciles(result, parsed)
    invalid = [d for d in parsed.details if d.errors]
    assert len(invalid) == result.rejects == 4_000
    assert all(len(d.errors) == 1 for d in invalid), [d for d in invalid if len(d.errors) > 1]
    kinds = Counter(d.errors[0] for d in invalid)
    expected = {"record_type", "txn_id", "account_id", "txn_date", "currency", "description"}
    assert set(kinds) == expected, kinds


def test_duplicates_reuse_only_clean_keys(tmp_path: Path) -> None:
    # A small chunk size makes most duplicates copy a key from an earlier chunk.
    result, parsed = _gen(
        tmp_path, 30_000, seed=5, reject_rate=0.1, duplicate_rate=0.15, chunk_records=997
    )
    _assert_reconciles(result, parsed)
    valid = [d for d in parsed.details if not d.errors]
    rejected = [d for d in parsed.details if d.errors]
    assert len(rejected) == result.rejects == 3_000
    seen: set[str] = set()
    dups = 0
    for d in valid:
        dups += d.txn_id in seen
        seen.add(d.txn_id)
    assert dups == result.duplicates == 4_500
    rejected_keys = {d.txn_id for d in rejected if d.txn_id}
    assert not rejected_keys & seen, "no valid record shares a rejected record's key"
    assert len(rejected_keys) == sum(1 for d in rejected if d.txn_id), "rejected keys unique"


def test_deterministic_per_seed(tmp_path: Path) -> None:
    def make(name: str, seed: int) -> bytes:
        result = generate_file(
            tmp_path / name, 5_000, seed=seed, reject_rate=0.1, duplicate_rate=0.1
        )
        return result.path.read_bytes()

    a, b, c = make("a.dat", 1), make("b.dat", 1), make("c.dat", 2)
    assert a == b
    assert a != c
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dat", "b.dat", "c.dat"]


def test_zero_records_is_header_and_trailer(tmp_path: Path) -> None:
    result, parsed = _gen(tmp_path, 0, reject_rate=0.5, duplicate_rate=0.5)
    assert result == GeneratedInput(result.path, 0, 0, 0, 0)
    assert parsed.details == [] and parsed.trailer_count == 0
    assert result.path.read_bytes().splitlines()[1][:30] == b"T0000000000+" + b"0" * 18


def test_header_arguments(tmp_path: Path) -> None:
    day = datetime.date(2024, 2, 29)
    _, parsed = _gen(tmp_path, 10, business_date=day, source_system="CORE-BANKING\\01")
    assert parsed.business_date == "20240229"
    assert parsed.source_system == "CORE-BANKING\\01".ljust(20)


@pytest.mark.parametrize(
    ("records", "reject_rate", "duplicate_rate"),
    [(1, 0.0, 1.0), (7, 1.0, 0.0), (1_000, 0.5, 0.5), (999, 0.0, 0.9), (3, 0.5, 0.5)],
)
def test_extreme_rates_still_valid(
    tmp_path: Path, records: int, reject_rate: float, duplicate_rate: float
) -> None:
    result, parsed = _gen(
        tmp_path,
        records,
        seed=9,
        reject_rate=reject_rate,
        duplicate_rate=duplicate_rate,
        chunk_records=64,
    )
    _assert_reconciles(result, parsed)
    invalid = [d for d in parsed.details if d.errors]
    assert len(invalid) == result.rejects == round(records * reject_rate)
    assert all(len(d.errors) == 1 for d in invalid)
    keys = [d.txn_id for d in parsed.details if not d.errors]
    assert len(keys) - len(set(keys)) == result.duplicates
    assert result.rejects + result.duplicates <= records


@pytest.mark.parametrize(
    "kwargs",
    [
        {"records": MAX_RECORDS + 1},
        {"records": -1},
        {"records": 10, "reject_rate": 1.5},
        {"records": 10, "duplicate_rate": float("nan")},
        {"records": 10, "reject_rate": 0.6, "duplicate_rate": 0.6},
        {"records": 10, "source_system": "X" * 21},
        {"records": 10, "chunk_records": 0},
    ],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        generate_file(tmp_path / "x.dat", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_trailer_total_must_fit_18_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    import pipeline.generate as gen

    def huge(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, 10**13 - 1, dtype=np.int64)

    monkeypatch.setattr(gen, "_amounts", huge)
    path = tmp_path / "big.dat"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="18 digits"):
        generate_file(path, 100_001, chunk_records=50_000)
    assert path.read_bytes() == b"previous", "a failed run leaves the old file untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["big.dat"]
