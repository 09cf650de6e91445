"""Exact money helpers: sums never wrap, splits round-trip, decimals parse exactly."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import money
from pipeline.money import (
    INT64_MAX,
    INT64_MIN,
    SPLIT_BASE,
    checked_sum,
    format_minor,
    join_amount,
    parse_decimal_to_minor,
    split_amount,
    sum_split,
)

pytestmark = pytest.mark.timeout(30)


def _random_arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(20240611)
    near_edges = [INT64_MIN, INT64_MIN + 1, INT64_MAX, -(2**62), 2**62, 2**62 + 1, -1, 0, 1]
    arrays = [np.array(near_edges, dtype=np.int64)]
    for size in (1, 2, 3, 17, 1000):
        arrays.append(rng.integers(INT64_MIN, INT64_MAX, size=size, dtype=np.int64, endpoint=True))
        arrays.append(rng.integers(-(2**62) - 5, -(2**62) + 5, size=size, dtype=np.int64))
        arrays.append(rng.integers(2**62 - 5, 2**62 + 5, size=size, dtype=np.int64))
        arrays.append(rng.choice(np.array(near_edges, dtype=np.int64), size=size))
        arrays.append(rng.integers(-(10**6), 10**6, size=size, dtype=np.int64))
    arrays.append(np.full(64, INT64_MIN, dtype=np.int64))
    arrays.append(np.full(64, INT64_MAX, dtype=np.int64))
    return arrays


@pytest.mark.parametrize("values", _random_arrays(), ids=lambda a: f"n{a.size}")
def test_checked_sum_matches_python_sum(values: np.ndarray) -> None:
    assert checked_sum(values) == sum(int(v) for v in values.tolist())


def test_checked_sum_does_not_wrap_where_numpy_does() -> None:
    values = np.array([2**62, 2**62, 5], dtype=np.int64)
    assert int(values.sum()) < 0  # the silent wrap from facts.md: the guard is needed
    assert checked_sum(values) == 2**63 + 5


def test_checked_sum_int64_min_alone_and_twice() -> None:
    assert checked_sum(np.array([INT64_MIN], dtype=np.int64)) == INT64_MIN
    assert checked_sum(np.array([INT64_MIN, INT64_MIN], dtype=np.int64)) == 2 * INT64_MIN


def test_checked_sum_safe_input_takes_the_vectorized_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(chunk: np.ndarray) -> int:
        raise AssertionError("fallback used for a provably safe sum")

    monkeypatch.setattr(money, "_sum_halves", fail)
    assert checked_sum(np.arange(-1000, 5000, dtype=np.int64)) == sum(range(-1000, 5000))


def test_checked_sum_fallback_over_several_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(money, "_FALLBACK_CHUNK", 3)
    values = np.array([INT64_MAX, INT64_MAX, INT64_MIN, 2**62, 2**62, -7, 11], dtype=np.int64)
    assert checked_sum(values) == sum(values.tolist())


def test_checked_sum_other_integer_dtypes_and_shapes() -> None:
    assert checked_sum(np.array([], dtype=np.int64)) == 0
    assert checked_sum(np.array([[1, 2], [3, 4]], dtype=np.int32)) == 10
    assert checked_sum(np.array([2**64 - 1, 2**64 - 1], dtype=np.uint64)) == 2**65 - 2


def test_checked_sum_refuses_floats() -> None:
    with pytest.raises(TypeError):
        checked_sum(np.array([1.5, 2.5]))


SPLIT_CASES = [
    0, 1, -1, 12345, -12345, SPLIT_BASE - 1, SPLIT_BASE, -SPLIT_BASE, -SPLIT_BASE - 1,
    2**53 + 1, INT64_MAX, INT64_MIN, 2**63, -(2**63) - 1, 10**25, -(10**25),
    2**94 - 1, -(2**94),
]  # fmt: skip


@pytest.mark.parametrize("total", SPLIT_CASES)
def test_split_join_round_trip(total: int) -> None:
    hi, lo = split_amount(total)
    assert 0 <= lo < SPLIT_BASE
    assert INT64_MIN <= hi <= INT64_MAX
    assert join_amount(hi, lo) == total


@pytest.mark.parametrize("total", [2**94, -(2**94) - 1, 10**40])
def test_split_amount_overflow(total: int) -> None:
    with pytest.raises(OverflowError):
        split_amount(total)


def test_split_amount_refuses_float_and_join_refuses_bad_lo() -> None:
    with pytest.raises(TypeError):
        split_amount(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        join_amount(0, SPLIT_BASE)
    with pytest.raises(ValueError):
        join_amount(0, -1)


def test_split_accepts_numpy_integers() -> None:
    assert split_amount(np.int64(-5)) == (-1, SPLIT_BASE - 5)


def test_sum_split_many_rows_exact() -> None:
    rng = np.random.default_rng(7)
    totals = [int(x) * 2**30 for x in rng.integers(-(2**62), 2**62, size=500)]
    totals += [2**93, -(2**93), 2**94 - 1]
    cells = np.array([split_amount(t) for t in totals], dtype=np.int64)
    assert sum_split(cells[:, 0], cells[:, 1]) == sum(totals)


@pytest.mark.parametrize(
    ("minor", "scale", "text"),
    [
        (-12345, 2, "-123.45"),
        (12345, 2, "123.45"),
        (5, 2, "0.05"),
        (-5, 2, "-0.05"),
        (0, 2, "0.00"),
        (100, 2, "1.00"),
        (-12345, 0, "-12345"),
        (0, 0, "0"),
        (7, 3, "0.007"),
        (2**70, 2, "11805916207174113034.24"),
    ],
)
def test_format_and_parse(minor: int, scale: int, text: str) -> None:
    assert format_minor(minor, scale) == text
    assert parse_decimal_to_minor(text, scale) == minor


@pytest.mark.parametrize(
    ("text", "scale", "minor"),
    [("1.5", 2, 150), ("+1.5", 2, 150), ("  -7 ", 2, -700), ("12", 0, 12), ("-0", 2, 0)],
)
def test_parse_accepted_forms(text: str, scale: int, minor: int) -> None:
    assert parse_decimal_to_minor(text, scale) == minor


@pytest.mark.parametrize(
    ("text", "scale"),
    [
        ("1.234", 2),
        ("12.0", 0),
        ("", 2),
        ("abc", 2),
        ("1e5", 2),
        ("1,00", 2),
        ("1_000", 2),
        ("+-1", 2),
        ("1.", 2),
        (".5", 2),
        ("nan", 2),
        ("\u0661\u0662", 2),  # Arabic-Indic digits: int() would take them, money must not
    ],
)
def test_parse_rejects(text: str, scale: int) -> None:
    with pytest.raises(ValueError):
        parse_decimal_to_minor(text, scale)


def test_format_parse_round_trip_random() -> None:
    rng = np.random.default_rng(3)
    for scale in (0, 2, 4):
        for value in rng.integers(INT64_MIN, INT64_MAX, size=200).tolist() + [INT64_MIN]:
            assert parse_decimal_to_minor(format_minor(value, scale), scale) == value


def test_negative_scale_rejected() -> None:
    with pytest.raises(ValueError):
        format_minor(1, -1)
    with pytest.raises(ValueError):
        parse_decimal_to_minor("1", -1)
