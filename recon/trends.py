"""Which nights fall outside a job's usual band: records read, reject rate, duration.

Pure: the figures of the job's runs in, each run's anomalies out. A run is held against
the SUCCEEDED runs before it, with the band ``volume_vs_history`` uses
(``recon.checks.usual_band``: the median of the last ``history_runs`` ± ``band``), so
the history and the check never disagree about what a usual night is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from recon.checks import Band, usual_band
from recon.values import VolumeRule

RECORDS, REJECTS, DURATION = "records_read", "reject_rate", "duration"
FIGURES = (RECORDS, REJECTS, DURATION)
# Below these a difference is noise whatever the band says: a reject rate of 0.02%
# against a usual 0.01% is twice the median and still nothing to wake anyone for, and a
# two-second job that takes three on a busy host is no slower job.
REJECT_RATE_FLOOR = 0.005  # half a percentage point above the median
DURATION_FLOOR_S = 1.0  # a second above the median


@dataclass(frozen=True)
class NightFigures:
    """What one run did, as far as its trend is judged."""

    succeeded: bool
    records_read: int | None  # None: the run read nothing (refused before its load)
    rejected: int | None
    duration_s: float | None

    @property
    def reject_rate(self) -> float | None:
        if not self.records_read or self.rejected is None:
            return None
        return self.rejected / self.records_read

    def figure(self, name: str) -> float | None:
        return {RECORDS: self.records_read, REJECTS: self.reject_rate,
                DURATION: self.duration_s}[name]


@dataclass(frozen=True)
class Judgement:
    """The figures of a run outside their band (empty: a usual night), and the bands it
    was held against (a figure is absent until the job has enough history)."""

    anomalies: tuple[str, ...]
    bands: dict[str, Band] = field(default_factory=dict)


def judge_nights(nights: Sequence[NightFigures], rule: VolumeRule) -> list[Judgement]:
    """One Judgement per night, ``nights`` oldest first (as they ran)."""
    judged = []
    for i, night in enumerate(nights):
        before = [n for n in reversed(nights[:i]) if n.succeeded]
        judged.append(_judge(night, before, rule))
    return judged


def _judge(night: NightFigures, before: list[NightFigures], rule: VolumeRule) -> Judgement:
    bands, outside = {}, []
    for name in FIGURES:
        history = [v for n in before if (v := n.figure(name)) is not None]
        band = usual_band(rule, history)
        if band is None:
            continue
        bands[name] = band
        value = night.figure(name)
        # a failed run's duration says how far it got, not how slow it was
        if value is not None and not (name == DURATION and not night.succeeded) \
                and _outside(name, value, band):
            outside.append(name)
    return Judgement(tuple(outside), bands)


def _outside(name: str, value: float, band: Band) -> bool:
    if name == RECORDS:  # too few and too many records are both news
        return not band.holds(value)
    # fewer rejects and a faster night are good news: only the high side is marked
    floor = REJECT_RATE_FLOOR if name == REJECTS else DURATION_FLOOR_S
    return value > band.high and value - band.median > floor
