"""The night benchmark's input has the shape users have: random updates, extra repeats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.night import Shape, night_file, night_keys
from tests.reference import expected_from_file


def test_updates_are_drawn_at_random_and_repeat_keys_as_random_draws_do() -> None:
    shape = Shape(100_000, 20_000)
    keys = night_keys(shape, 0.0)
    updates = keys[keys < shape.final]
    assert len(keys) == 20_000 and len(updates) == 6_000
    # 6,000 draws over 100,000 keys repeat about n**2 / 2N = 180 of them
    assert 120 < len(updates) - len(np.unique(updates)) < 240
    assert (night_keys(shape, 0.0) == keys).all()  # deterministic


@pytest.mark.parametrize("repeats", [0.001, 0.01, 0.1])
def test_extra_repeats_come_on_top_and_the_file_is_valid(tmp_path: Path, repeats: float) -> None:
    shape = Shape(100_000, 20_000)
    held = night_file(tmp_path / "night.dat", shape, repeats)
    base = night_file(tmp_path / "base.dat", shape, 0.0)
    assert held["records"] == 20_000 and held["extra_repeats"] == round(20_000 * repeats)
    assert held["updates"] >= 6_000  # a repeat may copy an update's key
    # the same random updates, and each extra record repeats a key on top of theirs
    assert held["repeating_records"] == base["repeating_records"] + held["extra_repeats"]
    expected = expected_from_file(tmp_path / "night.dat")  # parses every record, the trailer
    assert not expected.rejected_lines
    assert expected.trailer_count == len(expected.accepted) == 20_000
    assert expected.trailer_amount == expected.accepted_amount
    assert len(expected.final) == held["distinct_keys"]
