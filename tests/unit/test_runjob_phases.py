"""benchmarks.runjob times the job's phases by wrapping its functions: a phase whose
function a refactoring renamed must stop the benchmark, not vanish from its figures."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import runjob


def test_every_phase_the_benchmark_times_is_a_function_of_the_job(
        monkeypatch: pytest.MonkeyPatch) -> None:
    timed: list[str] = []

    def check(owner: Any, name: str, phase: str) -> None:
        assert callable(getattr(owner, name, None)), f"{owner.__name__}.{name} is gone"
        timed.append(phase)

    monkeypatch.setattr(runjob, "_timed", check)
    runjob.instrument()
    assert {"load", "merge", "staging_totals", "checks_repeated_lines"} <= set(timed)


def test_a_phase_whose_function_is_gone_stops_the_benchmark() -> None:
    class Job:
        pass

    with pytest.raises(SystemExit, match=r"no Job\.merge_run to time"):
        runjob._timed(Job, "merge_run", "merge")
