"""How a run ends is decided in one place (pipeline.audit.runs.run_status): the contract's
exit codes, and the status BATCH_RUN holds beside each."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.audit.runs import conclude, run_status
from pipeline.db.lock import JobAlreadyRunning
from pipeline.errors import (
    ConfigError,
    DatabaseFailure,
    InputChanged,
    InputStructureError,
    Interrupted,
    PipelineError,
    WorkerFailure,
)
from pipeline.outcome import RunOutcome
from recon.values import (
    FAILED_INPUT,
    FAILED_RECONCILIATION,
    FAILED_RUNTIME,
    INTERRUPTED,
    REFUSED,
    RUNNING,
    SUCCEEDED,
)


@pytest.mark.parametrize(("error", "passed", "ended"), [
    (None, True, (SUCCEEDED, 0)),
    (None, False, (FAILED_RECONCILIATION, 1)),
    (ConfigError("bad key"), True, (FAILED_INPUT, 2)),
    (InputStructureError("no trailer"), True, (FAILED_INPUT, 2)),
    (WorkerFailure("processor 1 died"), True, (FAILED_RUNTIME, 3)),
    (DatabaseFailure("gone"), True, (FAILED_RUNTIME, 3)),
    (InputChanged("changed"), True, (FAILED_RUNTIME, 3)),
    (Interrupted("SIGTERM"), True, (INTERRUPTED, 3)),
    (JobAlreadyRunning("held"), True, (REFUSED, 3)),
])
def test_a_run_ends_by_its_error_else_by_its_checks(
        error: PipelineError | None, passed: bool, ended: tuple[str, int]) -> None:
    assert run_status(error, passed) == ended


def test_conclude_sets_the_outcome_as_run_status_decides(tmp_path: Path) -> None:
    outcome = RunOutcome("r1", "job", RUNNING, 0, "", tmp_path / "in.dat", "sqlite://",
                         tmp_path)
    conclude(outcome, "stopped", error=Interrupted("stopped"))
    assert (outcome.status, outcome.exit_code, outcome.message) == (INTERRUPTED, 3, "stopped")
    conclude(outcome, "checks failed", passed=False)
    assert (outcome.status, outcome.exit_code) == (FAILED_RECONCILIATION, 1)
