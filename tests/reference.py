"""An independent, deliberately naive reading of the example job's input, for test oracles.

Pure Python, one record at a time, straight from the spec's column table: what the
vectorized job must agree with.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Txn:
    line: int
    txn_id: str
    account_id: str
    txn_date: dt.date
    amount: int  # minor units
    currency: str
    description: str | None


@dataclass(frozen=True)
class Expected:
    read: int
    rejected_lines: list[int]
    accepted: list[Txn]
    final: dict[str, Txn]  # the last accepted record of each key
    trailer_count: int
    trailer_amount: int

    @property
    def accepted_amount(self) -> int:
        return sum(t.amount for t in self.accepted)


def detail(txn_id: str, amount: int, *, account: str = "0000000001", date: str = "20261124",
           currency: str = "EUR", description: str = "test") -> bytes:
    """One valid 100-byte detail record (plus newline)."""
    sign = "-" if amount < 0 else "+"
    text = (f"D{txn_id:<16}{account}{date}{sign}{abs(amount):013d}{currency}"
            f"{description:<40}{'':8}")
    assert len(text) == 100, len(text)
    return text.encode("ascii") + b"\n"


def header(date: str = "20261125", source: str = "TESTS") -> bytes:
    return f"H{date}{source:<20}{'':71}".encode("ascii") + b"\n"


def trailer(count: int, amount: int) -> bytes:
    sign = "-" if amount < 0 else "+"
    return f"T{count:010d}{sign}{abs(amount):018d}{'':70}".encode("ascii") + b"\n"


def write_input(path: Path, details: list[bytes], *, count: int | None = None,
                amount: int | None = None) -> Path:
    """A file of the given details with a correct trailer unless count/amount override it."""
    total = sum(_amount(d.decode("latin-1")) or 0 for d in details)
    path.write_bytes(header() + b"".join(details)
                     + trailer(len(details) if count is None else count,
                               total if amount is None else amount))
    return path


def expected_from_file(path: Path) -> Expected:
    lines = path.read_bytes().split(b"\n")[:-1]
    body = lines[1:-1]
    tail = lines[-1].decode("ascii")
    accepted, rejected = [], []
    for n, raw in enumerate(body, start=2):
        txn = _parse(n, raw)
        (accepted if txn else rejected).append(txn or n)
    final: dict[str, Txn] = {}
    for t in accepted:
        final[t.txn_id] = t
    sign = -1 if tail[11] == "-" else 1
    return Expected(len(body), rejected, accepted, final, int(tail[1:11]),
                    sign * int(tail[12:30]))


def is_calendar_date(text: str | bytes) -> bool:
    """YYYYMMDD, ASCII digits, a date that exists."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    if not (len(text) == 8 and text.isascii() and text.isdigit()):
        return False
    try:
        dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def _parse(line: int, raw: bytes) -> Txn | None:
    if len(raw) != 100 or any(b < 32 or b > 126 for b in raw):
        return None
    s = raw.decode("ascii")
    key = s[1:17].rstrip(" ")
    try:
        date = dt.date(int(s[27:31]), int(s[31:33]), int(s[33:35]))
    except ValueError:
        return None
    ok = (s[0] == "D" and key.isalnum() and s[1] != " " and s[17:27].isdigit()
          and s[27:35].isdigit() and s[35] in "+-" and s[36:49].isdigit()
          and s[49:52].isalpha() and s[49:52].isupper() and s[92:100] == " " * 8)
    if not ok:
        return None
    amount = _amount(s)
    assert amount is not None
    return Txn(line, key, s[17:27], date, amount, s[49:52], s[52:92].rstrip(" ") or None)


def _amount(s: str) -> int | None:
    if s[35] not in "+-" or not s[36:49].isdigit():
        return None
    return -int(s[36:49]) if s[35] == "-" else int(s[36:49])
