"""The run's stages and how long each took: plan, load, checks, MERGE, audit.

After the load the parent runs SQL for a while with no worker to watch; the stage clock
tells the progress display (and the log) which stage runs, so the operator never stares
at a frozen bar, and it keeps each stage's duration for BATCH_RUN, the summary and the
reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

log = logging.getLogger(__name__)

PLAN, LOAD, CHECKS, MERGE, AUDIT = "plan", "load", "checks", "merge", "audit"
STAGES = (PLAN, LOAD, CHECKS, MERGE, AUDIT)  # in run order; BATCH_RUN has a <NAME>_MS each


class StageListener(Protocol):
    """Told when a stage starts (a progress display): ``detail`` is e.g. "1,000 keys"."""

    def stage(self, name: str | None, detail: str = "") -> None: ...


class StageClock:
    """Times the run's stages; a stage entered twice (e.g. a resume) adds up. A stage run
    inside another (the audit written in the MERGE's transaction) counts for itself only:
    its time is taken out of the outer stage's."""

    def __init__(self, listener: StageListener | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.listener, self.clock = listener, clock
        self.seconds: dict[str, float] = {}
        self._open: list[str] = []
        self._started: dict[str, float] = {}
        self._logged: set[str] = set()  # the open stages whose "done" line is written

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        started = self.clock()
        if self._open:
            self._log_done(self._open[-1], started)
        if self.listener is not None:
            self.listener.stage(name, detail)
        if name != LOAD:  # the load has its own log lines (progress, "load done")
            log.info("stage %s started%s", name, f": {detail}" if detail else "",
                     extra={"stage": name})
        self._open.append(name)
        self._started[name] = started
        try:
            yield
        finally:
            self._open.pop()
            ended = self.clock()
            elapsed = ended - started
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self._open:
                outer = self._open[-1]
                self.seconds[outer] = self.seconds.get(outer, 0.0) - elapsed
            self._log_done(name, ended)
            self._logged.discard(name)

    def _log_done(self, name: str, now: float) -> None:
        """``stage NAME done``, once per entry: a stage entered inside another (the audit
        in the MERGE's transaction) closes the outer one's log lines first, so the log
        reads merge started, merge done, audit started, audit done, in that order; what
        the outer stage does after the inner one (the COMMIT) still counts for it."""
        if name == LOAD or name in self._logged:  # the load has its own log lines
            return
        self._logged.add(name)
        elapsed = now - self._started[name]
        log.info("stage %s done in %.1f s", name, elapsed,
                 extra={"stage": name, "seconds": round(elapsed, 3)})

    def milliseconds(self) -> dict[str, int]:
        """{stage: whole milliseconds} of the stages that ran, in run order."""
        return {s: round(self.seconds[s] * 1000) for s in STAGES if s in self.seconds}


@contextmanager
def maybe(clock: StageClock | None, name: str, detail: str = "") -> Iterator[None]:
    """``clock.stage(...)``, or nothing when the caller keeps no clock."""
    if clock is None:
        yield
        return
    with clock.stage(name, detail):
        yield
