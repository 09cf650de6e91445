"""The job's own errors. Each maps to one exit code at the CLI edge (see __main__)."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the job reports to the operator in one sentence."""

    exit_code = 3

    def __reduce__(self):  # survive the trip back from a worker process
        return (type(self), self.args)


class ConfigError(PipelineError):
    """The job configuration or the command line is not valid."""

    exit_code = 2


class InputStructureError(PipelineError):
    """The input file is not a header, details and a trailer in that order."""

    exit_code = 2


class WorkerFailure(PipelineError):
    """A worker died, hung or failed; the run cannot prove its numbers."""

    exit_code = 3


class DatabaseFailure(PipelineError):
    """The database refused or lost a statement the run depends on."""

    exit_code = 3


class Interrupted(PipelineError):
    """The run was stopped by a signal (SIGTERM, SIGINT) before it finished."""

    exit_code = 3  # the contract has no code of its own for it: a runtime failure


class InputChanged(PipelineError):
    """The input file changed between planning and parsing: what was read is not what
    was hashed, so the run cannot prove its numbers. FINAL is left untouched."""

    exit_code = 3
