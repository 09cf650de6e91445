"""Job-instance identity: a night's file is loaded once, and never after a newer one.

Spring Batch refuses to run a completed job instance again; here the instance is the input
file, known by its SHA-256 (not its name: a scheduler picking last night's file up again
under another name is the case to catch) and by its header's business date
(``control.business_date``). Before anything is loaded, once the run holds the job's lock:

- a file whose SHA-256 equals that of a SUCCEEDED run of the job is refused, unless the
  operator says ``run --rerun``;
- a file whose business date is earlier than the latest one a SUCCEEDED run loaded is
  refused, unless ``run --allow-older`` (it would overwrite newer values with older ones:
  each key's last record wins, across nights too). The same date again is allowed: several
  cycles a day.

Both refusals exit 2 (status FAILED_INPUT), name the earlier run and its business date,
and say how to override; the overrides used are recorded in BATCH_RUN (RERUN,
ALLOW_OLDER). `run --resume` finishes an existing instance: it is never refused here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Engine, Table

from pipeline.audit import history
from pipeline.errors import InputStructureError, PipelineError
from pipeline.source import InputPlan

log = logging.getLogger(__name__)


class InputAlreadyLoaded(PipelineError):
    """A SUCCEEDED run of the job already loaded this very file (exit 2)."""

    exit_code = 2


class InputOlderThanLoaded(PipelineError):
    """The file's business date is earlier than the latest the job loaded (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Overrides:
    """The operator's overrides of the identity refusals (the command line's flags)."""

    rerun: bool = False  # load a file a SUCCEEDED run already loaded
    allow_older: bool = False  # load a file older than the latest business date loaded

    def columns(self) -> list[str]:
        """The BATCH_RUN columns that record these overrides ('Y' each)."""
        return [name for name in ("rerun", "allow_older") if getattr(self, name)]

    def flags(self) -> list[str]:
        """As the command line spells them."""
        return [f"--{name.replace('_', '-')}" for name in self.columns()]


NO_OVERRIDES = Overrides()


def business_date(plan: InputPlan, field: str | None) -> date | None:
    """The header's business date (text layouts give YYYY-MM-DD, copybooks YYYYMMDD)."""
    if field is None:
        return None
    value = str(plan.header[field])
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputStructureError(f"the header's business date ({field}) {value!r} is not a "
                                  "date") from None


def check_identity(engine: Engine, batch_run: Table, job_name: str, plan: InputPlan,
                   day: date | None, overrides: Overrides) -> None:
    """Refuse the input if the job already loaded it or a later business date (see the
    module); with an override, say in the log what it let through."""
    loaded = history.loaded_input(engine, batch_run, job_name, plan.sha256)
    if loaded is not None:
        fact = (f"input {plan.path} was already loaded by run {loaded.run_id} (SUCCEEDED, "
                f"business date {_day(loaded.business_date)}; the same SHA-256 "
                f"{plan.sha256[:16]}..., whatever the file's name)")
        _refuse_or_allow(InputAlreadyLoaded, fact, "not loading it twice",
                         "To load it again on purpose, run with --rerun", overrides.rerun)
    newest = history.latest_business_date(engine, batch_run, job_name) if day else None
    if newest is not None and newest.business_date and day and day < newest.business_date:
        fact = (f"input {plan.path} has business date {_day(day)}, earlier than "
                f"{_day(newest.business_date)} loaded by run {newest.run_id}")
        _refuse_or_allow(InputOlderThanLoaded, fact,
                         "its records would overwrite newer values",
                         "To load it on purpose, run with --allow-older",
                         overrides.allow_older)


def _refuse_or_allow(refusal: type[PipelineError], fact: str, why: str, how: str,
                     allowed: bool) -> None:
    if not allowed:
        raise refusal(f"{fact}: {why}. {how}")
    log.warning("%s; loading it as the operator asked", fact)


def _day(day: date | None) -> str:
    return "-" if day is None else day.isoformat()
