"""Exact money helpers: amounts are integer minor units (cents), never floats.

facts.md, "Money in numpy": ``np.array([2**62, 2**62, 5]).sum()`` wraps to a negative
number *silently*, even with warnings as errors. Every sum here is therefore either
proven safe before numpy runs it, or done exactly another way.
"""

from __future__ import annotations

import operator
import re

import numpy as np

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Base of the hi/lo split of one amount into two int64 bus cells. lo is in [0, 2**31),
#: so up to 2**32 rows' lo cells sum in int64 without any chance of overflow.
SPLIT_BASE = 2**31

# The exact fallback sums 32-bit halves; hi in [-2**31, 2**31) and lo in [0, 2**32), so
# a chunk of 2**30 values keeps both partial sums below 2**62: no overflow possible.
_HALF_BITS = 32
_LO_MASK = (1 << _HALF_BITS) - 1
_FALLBACK_CHUNK = 2**30

# ASCII digits only: Python's \d and int() also accept e.g. Arabic-Indic digits.
_DECIMAL_RE = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?", re.ASCII)


def _as_int_array(values: np.ndarray) -> np.ndarray:
    """Flatten to an integer array; refuse floats, which cannot hold money exactly."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"money must be an integer array, got dtype {arr.dtype}")
    return arr.ravel()


def _fits_vectorized(arr: np.ndarray) -> bool:
    """Bound check max|x| * n < 2**63, in Python ints so abs(INT64_MIN) cannot overflow."""
    largest = max(abs(int(arr.max())), abs(int(arr.min())))
    return largest * arr.size < 2**63


def _sum_halves(chunk: np.ndarray) -> int:
    """Exact sum of <= 2**30 int64 values: x = hi * 2**32 + lo, each half summed in int64."""
    hi = chunk >> _HALF_BITS  # arithmetic shift: floor division by 2**32, keeps the sign
    lo = chunk & _LO_MASK  # always in [0, 2**32)
    return int(hi.sum(dtype=np.int64)) * (1 << _HALF_BITS) + int(lo.sum(dtype=np.int64))


def checked_sum(values: np.ndarray) -> int:
    """Exact sum of an integer array as a Python int; never wraps.

    Vectorized ``np.sum`` when the bound check proves it cannot overflow, otherwise an exact
    hi/lo 32-bit split (still vectorized). Unsigned 64-bit input goes through Python ints.
    """
    arr = _as_int_array(values)
    if arr.size == 0:
        return 0
    if arr.dtype == np.uint64:  # values up to 2**64 - 1 do not fit the int64 halves below
        return sum(arr.tolist())
    arr = arr.astype(np.int64, copy=False)
    if _fits_vectorized(arr):
        return int(arr.sum(dtype=np.int64))
    return sum(
        _sum_halves(arr[start : start + _FALLBACK_CHUNK])
        for start in range(0, arr.size, _FALLBACK_CHUNK)
    )


def split_amount(total: int | np.integer) -> tuple[int, int]:
    """Split an arbitrary-size amount into (hi, lo) int64 bus cells, lo in [0, 2**31).

    total == hi * 2**31 + lo. Raises OverflowError when hi does not fit int64 (|total| above
    ~2**94 minor units), TypeError for floats.
    """
    hi, lo = divmod(operator.index(total), SPLIT_BASE)
    if not INT64_MIN <= hi <= INT64_MAX:
        raise OverflowError(f"amount {total} is too large for two int64 bus cells")
    return hi, lo


def join_amount(hi: int | np.integer, lo: int | np.integer) -> int:
    """Inverse of split_amount for one row's pair of cells."""
    hi, lo = operator.index(hi), operator.index(lo)
    if not 0 <= lo < SPLIT_BASE:
        raise ValueError(f"lo cell {lo} outside [0, 2**31): not a split_amount pair")
    return hi * SPLIT_BASE + lo


def sum_split(hi: np.ndarray, lo: np.ndarray) -> int:
    """Exact total over many rows of split amounts (each column summed with checked_sum)."""
    return checked_sum(hi) * SPLIT_BASE + checked_sum(lo)


def format_grouped(minor: int | np.integer, scale: int) -> str:
    """Minor units with thousands separators, as counts are shown: "-1,234,567.89"."""
    return group_digits(format_minor(minor, scale))


def group_digits(amount: str) -> str:
    """A plain decimal string ("-1234567.89") with thousands separators; "" stays ""."""
    sign, digits = ("-", amount[1:]) if amount.startswith("-") else ("", amount)
    whole, dot, fraction = digits.partition(".")
    return f"{sign}{int(whole):,}{dot}{fraction}" if whole else amount


def format_minor(minor: int | np.integer, scale: int) -> str:
    """Minor units to a plain decimal string: format_minor(-12345, 2) == "-123.45"."""
    minor = operator.index(minor)
    if scale <= 0:
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        return str(minor)
    # slicing the digits is ~1.6x divmod and a nested format spec, and as fast per value
    # as numpy's string functions over a whole column: the PostgreSQL COPY text uses it
    digits = str(-minor if minor < 0 else minor).rjust(scale + 1, "0")
    return ("-" if minor < 0 else "") + digits[:-scale] + "." + digits[-scale:]


def decimal_parts(text: str) -> tuple[str, str, str] | None:
    """(sign, whole digits, fraction digits) of ``[+-]digits[.digits]``, or None if not that.

    decimal_parts("-123.45") == ("-", "123", "45"); the sign and fraction may be "".
    """
    match = _DECIMAL_RE.fullmatch(text)
    if match is None:
        return None
    return match.group(1), match.group(2), match.group(3) or ""


def parse_decimal_to_minor(text: str, scale: int) -> int:
    """Exact decimal string to minor units: parse_decimal_to_minor("-123.45", 2) == -12345.

    Accepts ``[+-]digits[.digits]`` (surrounding whitespace ignored). Raises ValueError on
    junk, exponents, or more decimals than ``scale`` (no silent rounding of money).
    """
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    parts = decimal_parts(text.strip())
    if parts is None:
        raise ValueError(f"not a decimal amount: {text!r}")
    sign, whole, fraction = parts
    if len(fraction) > scale:
        raise ValueError(f"{text!r} has more than {scale} decimal places")
    minor = int(whole) * 10**scale + int(fraction.ljust(scale, "0") or "0")
    return -minor if sign == "-" else minor
