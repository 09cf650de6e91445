"""Deterministic, vectorized generator of daily-transactions fixed-width input files.

Every record is built in numpy, a chunk at a time, so a 1 GB file costs seconds and memory
is bounded by ``chunk_records``, never by the file size.

Which records are rejected or duplicated is decided by a seeded bijection over the record
numbers (a Feistel permutation): record *i* is rejected iff its rank is below the reject
count. That makes "is record j rejected?" answerable for any earlier record without keeping
per-record state, which duplicates need (they may only copy a clean, original key), and it
makes the shares exact: ``round(records * rate)``.
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pipeline.money import checked_sum

__all__ = ["MAX_RECORDS", "GeneratedInput", "generate_file"]

RECORD_LEN = 100
LINE_LEN = RECORD_LEN + 1
MAX_RECORDS = 9_999_999_999  # the trailer count has 10 digits
MAX_TOTAL = 10**18 - 1  # the trailer total has 18 digits
_SPACE = ord(" ")

# 0-based, end-exclusive column slices of a detail record (the spec counts from 1).
_TYPE = 0
_TXN_ID = slice(1, 17)
_ACCOUNT = slice(17, 27)
_DATE = slice(27, 35)
_SIGN = 35
_AMOUNT = slice(36, 49)
_CURRENCY = slice(49, 52)
_DESC = slice(52, 92)
_TXN_ID_LEN = _TXN_ID.stop - _TXN_ID.start
_DESC_LEN = _DESC.stop - _DESC.start

_DATE_WINDOW_DAYS = 60
_CURRENCIES = np.frombuffer(b"EURUSDGBPCHFJPY", dtype=np.uint8).reshape(-1, 3)
# Punctuation, quotes, lower case and backslashes are all valid; they are here so that
# loaders' CSV/COPY/SQL escaping gets exercised. Some end in a backslash on purpose.
_PHRASES = (
    "CARD PAYMENT",
    "SEPA TRANSFER REF 2026/11-A",
    "Salary November",
    "ATM WITHDRAWAL 0042",
    "Refund: order #A-1093",
    "C:\\PAYMENTS\\INBOUND\\BATCH7",
    "O'BRIEN & SONS LTD",
    'Invoice "Q4" 50% paid; rest due',
    "REF\\2026\\11\\25",
    "back\\slash at the end\\",
    "tab\\tnot-a-tab, newline\\n literal",
    "a,b;c|d {x: [1, 2]} <y/> ~`^",
    "FEE",
    "Interest credit (monthly) @ 1.25%",
    "Direct debit - Stadtwerke Zuerich AG",
    "1234567890123456789012345678901234567890",
)
_PHRASE_TABLE = np.array(
    [np.frombuffer(p.ljust(_DESC_LEN).encode("ascii"), dtype=np.uint8) for p in _PHRASES]
)
_RANDOM_DESC_SHARE = 0.25

# Reject kinds: each breaks exactly one non-amount rule of a detail record.
_BAD_DATE, _BAD_ACCOUNT, _LOWER_CURRENCY, _BLANK_TXN_ID, _CONTROL_BYTE, _BAD_TYPE = range(6)
_REJECT_KINDS = 6
_BAD_DATE_SUFFIXES = ("0230", "1301", "0431", "0000", "1232", "0100", "0631", "0931")
# Control bytes that str.strip()/rstrip() do not eat and that cannot split a line
# (no \t \n \v \f \r, no 0x1c-0x1f, no NUL).
_CONTROL_BYTES = np.array([0x01, 0x07, 0x08, 0x1B, 0x7F], dtype=np.uint8)
_BAD_TYPES = np.frombuffer(b"XEQZ", dtype=np.uint8)

# Amount mix: mostly everyday sizes, a few large and very large ones, some exact zeros.
_EVERYDAY_MAX = 10_000_000
_LARGE_SHARE, _LARGE_MAX = 0.01, 10**10
_HUGE_SHARE, _HUGE_MAX = 0.001, 10**13 - 1
_ZERO_SHARE = 0.005

# Giving up after this many draws only happens when clean originals are vanishingly rare;
# the fallback target (the first original) is always valid.
_MAX_TARGET_DRAWS = 64
_SCAN_STEP = 1 << 16
_QUADS = np.array([np.frombuffer(f"{i:04d}".encode(), dtype=np.uint8) for i in range(10_000)])
_POW10 = np.array([10**k for k in range(1, 10)], dtype=np.int64)


@dataclass(frozen=True)
class GeneratedInput:
    path: Path
    records: int  # detail records written
    rejects: int  # detail records deliberately made invalid
    duplicates: int  # detail records that reuse an earlier record's TXN_ID
    amount_total: int  # trailer total in minor units: all details, rejects included


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a cheap, well-mixing uint64 hash (wraps on purpose)."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB
    return x ^ (x >> 31)


@dataclass(frozen=True)
class _Permutation:
    """Seeded bijection of [0, size): cycle-walking Feistel network over 2 * half bits."""

    size: int
    half: int
    keys: tuple[int, ...]

    @classmethod
    def create(cls, size: int, keys: tuple[int, ...]) -> _Permutation:
        bits = max(2, (size - 1).bit_length())
        return cls(size, (bits + 1) // 2, keys)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        mask = np.uint64((1 << self.half) - 1)
        left, right = x >> np.uint64(self.half), x & mask
        for key in self.keys:
            left, right = right, left ^ (_mix64(right ^ np.uint64(key)) & mask)
        return (left << np.uint64(self.half)) | right

    def rank(self, idx: np.ndarray) -> np.ndarray:
        y = self._encrypt(idx.astype(np.uint64))
        # The Feistel domain is up to 4x larger than size; walking the cycle until we land
        # back inside keeps it a bijection of [0, size).
        todo = np.flatnonzero(y >= self.size)
        while todo.size:
            y[todo] = self._encrypt(y[todo])
            todo = todo[y[todo] >= self.size]
        return y.astype(np.int64)


@dataclass(frozen=True)
class _Plan:
    """Everything about the file that does not depend on the chunk being built."""

    records: int
    rejects: int
    duplicates: int  # target; leading records with no earlier original cannot duplicate
    perm: _Permutation
    id_key: int
    first_original: int  # first record that is neither rejected nor a duplicate candidate
    dates: np.ndarray  # (61, 8) valid TXN_DATEs
    bad_dates: np.ndarray  # (k, 8) well-formed digits, impossible dates

    def is_original(self, idx: np.ndarray) -> np.ndarray:
        return self.perm.rank(idx) >= self.rejects + self.duplicates


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded ASCII digits of non-negative ints < 10**width, as an (n, width) array."""
    quads = -(-width // 4)
    out = np.empty((values.size, quads * 4), dtype=np.uint8)
    rest = values.astype(np.int64)
    # Four digits per divmod via a lookup table: 4x fewer passes than digit by digit.
    for q in range(quads - 1, -1, -1):
        rest, low = np.divmod(rest, 10_000)
        out[:, 4 * q : 4 * q + 4] = _QUADS[low]
    return out[:, quads * 4 - width :]


def _txn_ids(idx: np.ndarray, key: int) -> np.ndarray:
    """TXN_ID of record number idx: 1-3 hashed letters + (idx + 1) without leading zeros.

    Letters then a zero-free number parse back to idx + 1, so distinct records always get
    distinct keys, and any record's key can be rebuilt from its number alone.
    """
    n = idx.size
    seq = idx + 1
    h = _mix64(idx.astype(np.uint64) ^ np.uint64(key))
    # Source row: 3 letters, 10 zero-padded digits, 1 space; each output column then
    # gathers from it, which is much cheaper than masked scatters of variable-length parts.
    src = np.empty((n, 14), dtype=np.uint8)
    for k in range(3):
        src[:, k] = 65 + (h >> np.uint64(8 * k + 8)) % np.uint64(26)
    src[:, 3:13] = _digits(seq, 10)
    src[:, 13] = _SPACE
    prefix = (1 + h % np.uint64(3)).astype(np.intp)[:, None]
    n_digits = 1 + np.searchsorted(_POW10, seq, side="right")[:, None]
    col = np.arange(_TXN_ID_LEN, dtype=np.intp)[None, :]
    digit_col = col - prefix + 13 - n_digits
    gather = np.where(col < prefix, col, np.where(col < prefix + n_digits, digit_col, 13))
    return np.take_along_axis(src, gather, axis=1)


def _yyyymmdd(d: datetime.date) -> str:
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def _ascii_rows(texts: list[str]) -> np.ndarray:
    return np.array([np.frombuffer(t.encode("ascii"), dtype=np.uint8) for t in texts])


def _make_plan(
    rng: np.random.Generator,
    records: int,
    reject_rate: float,
    duplicate_rate: float,
    business_date: datetime.date,
) -> _Plan:
    rejects = min(records, round(records * reject_rate))
    # Rounding both shares up could overshoot the file; duplicates give way.
    duplicates = min(records - rejects, round(records * duplicate_rate))
    keys = rng.integers(0, 2**64 - 1, size=5, dtype=np.uint64, endpoint=True)
    perm = _Permutation.create(records, tuple(int(k) for k in keys[:4]))
    first = _first_original(perm, rejects + duplicates, records)
    dates = [business_date - datetime.timedelta(days=k) for k in range(_DATE_WINDOW_DAYS + 1)]
    year = f"{business_date.year:04d}"
    return _Plan(
        records,
        rejects,
        duplicates,
        perm,
        int(keys[4]),
        first,
        _ascii_rows([_yyyymmdd(d) for d in dates]),
        _ascii_rows([year + s for s in _BAD_DATE_SUFFIXES]),
    )


def _first_original(perm: _Permutation, threshold: int, size: int) -> int:
    for start in range(0, size, _SCAN_STEP):
        idx = np.arange(start, min(size, start + _SCAN_STEP), dtype=np.int64)
        hits = np.flatnonzero(perm.rank(idx) >= threshold)
        if hits.size:
            return start + int(hits[0])
    return size


def _dup_targets(rng: np.random.Generator, plan: _Plan, idx: np.ndarray) -> np.ndarray:
    """A random earlier original record for each duplicate (all idx > first_original)."""
    low = plan.first_original
    target = rng.integers(low, idx)
    for _ in range(_MAX_TARGET_DRAWS):
        bad = np.flatnonzero(~plan.is_original(target))
        if not bad.size:
            return target
        target[bad] = rng.integers(low, idx[bad])
    target[~plan.is_original(target)] = low
    return target


def _amounts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Signed int64 amounts in minor units, |a| < 10**13 so they fit 13 digits."""
    mag = rng.integers(0, _EVERYDAY_MAX, n, endpoint=True)
    u = rng.random(n)
    large = u < _LARGE_SHARE
    mag[large] = rng.integers(0, _LARGE_MAX, int(large.sum()))
    huge = u < _HUGE_SHARE
    mag[huge] = rng.integers(_LARGE_MAX, _HUGE_MAX, int(huge.sum()), endpoint=True)
    mag[u > 1 - _ZERO_SHARE] = 0
    return np.where(rng.random(n) < 0.5, -mag, mag)


def _descriptions(rng: np.random.Generator, n: int) -> np.ndarray:
    desc = _PHRASE_TABLE[rng.integers(0, len(_PHRASES), n)]
    rows = np.flatnonzero(rng.random(n) < _RANDOM_DESC_SHARE)
    chars = rng.integers(32, 127, (rows.size, _DESC_LEN), dtype=np.uint8)
    # A leading non-space keeps the text from trimming to empty (NULL on Oracle).
    chars[:, 0] = np.where(chars[:, 0] == _SPACE, ord("#"), chars[:, 0])
    length = rng.integers(1, _DESC_LEN, rows.size, endpoint=True)
    chars[np.arange(_DESC_LEN)[None, :] >= length[:, None]] = _SPACE
    desc[rows] = chars
    return desc


def _break_records(rng: np.random.Generator, plan: _Plan, arr: np.ndarray) -> None:
    """Make each row of arr invalid in exactly one non-amount way; amounts stay readable."""
    kind = rng.integers(0, _REJECT_KINDS, len(arr))
    pick = rng.integers(0, 1 << 30, len(arr))  # one spare draw per row for the details
    for k, rows in ((k, np.flatnonzero(kind == k)) for k in range(_REJECT_KINDS)):
        p = pick[rows]
        if k == _BAD_DATE:
            arr[rows, _DATE] = plan.bad_dates[p % len(plan.bad_dates)]
        elif k == _BAD_ACCOUNT:
            arr[rows, _ACCOUNT.start + p % 10] = (65 + (p // 10) % 26).astype(np.uint8)
        elif k == _LOWER_CURRENCY:
            arr[rows, _CURRENCY] += 32
        elif k == _BLANK_TXN_ID:
            arr[rows, _TXN_ID] = _SPACE
        elif k == _CONTROL_BYTE:
            arr[rows, _DESC.start + p % _DESC_LEN] = _CONTROL_BYTES[p // _DESC_LEN % 5]
        else:
            arr[rows, _TYPE] = _BAD_TYPES[p % len(_BAD_TYPES)]


def _build_chunk(
    rng: np.random.Generator, plan: _Plan, start: int, n: int
) -> tuple[np.ndarray, int, int, int]:
    """Detail lines start..start+n-1 as an (n, 101) array, plus (total, rejects, dups)."""
    idx = np.arange(start, start + n, dtype=np.int64)
    rank = plan.perm.rank(idx)
    reject = rank < plan.rejects
    dup = ~reject & (rank < plan.rejects + plan.duplicates) & (idx > plan.first_original)
    key_idx = idx.copy()
    key_idx[dup] = _dup_targets(rng, plan, idx[dup])

    arr = np.full((n, LINE_LEN), _SPACE, dtype=np.uint8)
    arr[:, _TYPE] = ord("D")
    arr[:, RECORD_LEN] = ord("\n")
    arr[:, _TXN_ID] = _txn_ids(key_idx, plan.id_key)
    arr[:, _ACCOUNT] = rng.integers(0, 10, (n, 10), dtype=np.uint8) + ord("0")
    arr[:, _DATE] = plan.dates[rng.integers(0, len(plan.dates), n)]
    amounts = _amounts(rng, n)
    arr[:, _SIGN] = np.where(amounts < 0, ord("-"), ord("+"))
    arr[:, _AMOUNT] = _digits(np.abs(amounts), 13)
    arr[:, _CURRENCY] = _CURRENCIES[rng.integers(0, len(_CURRENCIES), n)]
    arr[:, _DESC] = _descriptions(rng, n)
    reject_rows = np.flatnonzero(reject)
    broken = arr[reject_rows]
    _break_records(rng, plan, broken)
    arr[reject_rows] = broken
    return arr, checked_sum(amounts), reject_rows.size, int(dup.sum())


def _header(business_date: datetime.date, source_system: str) -> bytes:
    text = "H" + _yyyymmdd(business_date) + source_system.ljust(20)
    return text.ljust(RECORD_LEN).encode("ascii") + b"\n"


def _trailer(count: int, total: int) -> bytes:
    if not 0 <= count <= MAX_RECORDS:
        raise ValueError(f"detail count {count} does not fit the trailer's 10 digits")
    if abs(total) > MAX_TOTAL:
        raise ValueError(f"amount total {total} does not fit the trailer's 18 digits")
    text = f"T{count:010d}{'-' if total < 0 else '+'}{abs(total):018d}"
    return text.ljust(RECORD_LEN).encode("ascii") + b"\n"


def _check_args(
    records: int,
    reject_rate: float,
    duplicate_rate: float,
    source_system: str,
    chunk_records: int,
) -> None:
    if not 0 <= records <= MAX_RECORDS:
        raise ValueError(f"records must be in 0..{MAX_RECORDS}, got {records}")
    for name, rate in (("reject_rate", reject_rate), ("duplicate_rate", duplicate_rate)):
        if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    if reject_rate + duplicate_rate > 1.0:
        raise ValueError("reject_rate + duplicate_rate must not exceed 1")
    if len(source_system) > 20 or not (source_system.isascii() and source_system.isprintable()):
        raise ValueError(f"source_system must be <= 20 printable ASCII chars: {source_system!r}")
    if chunk_records < 1:
        raise ValueError(f"chunk_records must be >= 1, got {chunk_records}")


def _write_details(
    f: BinaryIO, rng: np.random.Generator, plan: _Plan, chunk_records: int
) -> tuple[int, int, int]:
    total = rejects = dups = 0
    for start in range(0, plan.records, chunk_records):
        n = min(chunk_records, plan.records - start)
        arr, chunk_total, chunk_rejects, chunk_dups = _build_chunk(rng, plan, start, n)
        f.write(arr.tobytes())
        total, rejects, dups = total + chunk_total, rejects + chunk_rejects, dups + chunk_dups
    return total, rejects, dups


def generate_file(
    path: str | os.PathLike[str],
    records: int,
    *,
    seed: int = 0,
    reject_rate: float = 0.0,
    duplicate_rate: float = 0.0,
    business_date: datetime.date = datetime.date(2026, 11, 25),
    source_system: str = "GENERATOR",
    chunk_records: int = 100_000,
) -> GeneratedInput:
    """Write a daily-transactions input file; same arguments give a byte-identical file.

    Exactly ``round(records * reject_rate)`` details are invalid in one non-amount way;
    up to ``round(records * duplicate_rate)`` clean details reuse an earlier clean record's
    TXN_ID (fewer only when the very first records have no earlier clean record to copy).
    The file appears at ``path`` only once complete; a failure leaves ``path`` untouched.
    """
    _check_args(records, reject_rate, duplicate_rate, source_system, chunk_records)
    rng = np.random.default_rng(seed)
    plan = _make_plan(rng, records, reject_rate, duplicate_rate, business_date)
    out = Path(path)
    # A sibling temp file (same file system, so the rename is atomic) that gets the usual
    # umask permissions, unlike mkstemp's 0600.
    if not out.parent.is_dir():  # say so for the file asked for, not the temporary one
        raise FileNotFoundError(f"cannot write {out}: folder {out.parent} does not exist")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            f.write(_header(business_date, source_system))
            total, rejects, dups = _write_details(f, rng, plan, chunk_records)
            f.write(_trailer(records, total))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return GeneratedInput(out, records, rejects, dups, total)
