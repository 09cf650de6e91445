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


class FileSystemFailure(PipelineError):
    """A file of the run could not be read or written: a full or read-only disk, an
    immutable file, a folder removed or unmounted."""

    exit_code = 3


# what an OS error means to an operator, and what to do about it, by errno name
_OS_MEANINGS = {
    "ENOSPC": ("no space is left on its device", "free space there, or point the job at "
               "another disk (output.dir, database.url)"),
    "EDQUOT": ("the disk quota is exhausted", "free space there, or raise the quota"),
    "EROFS": ("its file system is mounted read-only", "remount it read-write, or point "
              "the job at another disk (output.dir, database.url)"),
    "EACCES": ("permission is denied", "check the permissions of the file and its folder"),
    "EPERM": ("the operation is not permitted (an immutable or append-only file?)",
              "check `lsattr` and remove the attribute (chattr -i) or the restriction"),
    "ENOENT": ("it does not exist (removed, or its file system unmounted?)",
               "check that the path and its file system are there"),
    "EIO": ("the device reported an I/O error", "check the disk and its mount"),
}


def os_failure(exc: OSError, doing: str, folder: object = None) -> FileSystemFailure:
    """``exc`` as one sentence: what the run was doing, where, why, and what to do.
    ``folder``: where it was writing, for an error that names no file (a full disk)."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    if not exc.filename and folder is not None and name in ("ENOSPC", "EDQUOT", "EROFS"):
        doing, exc.filename = "writing in", folder  # a full or read-only disk: a write
    where = f" {exc.filename}" if exc.filename else ""
    meaning, todo = _OS_MEANINGS.get(name, (exc.strerror or str(exc), ""))
    said = f"{doing}{where}: {meaning} ({name or type(exc).__name__})"
    return FileSystemFailure(f"{said}; {todo}" if todo else said)
