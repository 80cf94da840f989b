"""The one exception hierarchy of adora.

Every error adora raises on purpose derives from :class:`AdoraError`, so a
caller can catch them all at once; each subclass names what went wrong in the
user's terms and carries the facts needed to fix it::

    AdoraError
    ├── ConfigError                 bad configuration: decorator, SlurmConfig, cluster file
    │   ├── PackageNotFoundError    no (or several) training packages found
    │   ├── UnknownFieldError       a field SlurmConfig/DoraConfig lacks (also an AttributeError)
    │   └── JobArrayError           Slurm settings changed inside job_array() (also an
    │                               AssertionError)
    ├── ArgumentsError              training arguments the user's parser rejects
    ├── XPNotFoundError             a signature nobody ever initialised
    ├── SignatureCollisionError     two different experiments hash to the same signature
    ├── GridError                   a grid file that cannot be evaluated
    │   └── GridInterruptedError    ... because the grid raised KeyboardInterrupt (exit 130)
    ├── LockedError                 another adora process holds the lock
    │   └── XPBusyError             the XP runs already (a training process or a live job)
    ├── HistoryError                a metrics history that cannot be read
    ├── MetricsError                pushed metrics that are not a dict (also a TypeError)
    ├── RecordError                 a job record, submission file or .argv.json that is unreadable
    │   └── QueueError              the local backend's queue database (backends.local_queue)
    ├── OutputError                 the output folder, an XP folder or the lock is not usable
    └── BackendError                a backend could not do what was asked
        └── CommandError            an external command (sbatch, squeue, ...) failed
            └── CommandTimeoutError   ... because it took too long (also a TimeoutError)

The command-line interface turns any :class:`AdoraError` into its message and a
non-zero exit status (``exit_code``), never a traceback: 1 by default, 2 for
usage and configuration errors, 130 for an interruption.
"""

from __future__ import annotations

import errno
import os
import typing as tp

__all__ = [
    "AdoraError",
    "ArgumentsError",
    "BackendError",
    "CommandError",
    "CommandTimeoutError",
    "ConfigError",
    "GridError",
    "GridInterruptedError",
    "HistoryError",
    "JobArrayError",
    "LockedError",
    "MetricsError",
    "OutputError",
    "PackageNotFoundError",
    "RecordError",
    "SignatureCollisionError",
    "UnknownFieldError",
    "XPBusyError",
    "XPNotFoundError",
    "os_error_hint",
    "os_error_message",
]


class AdoraError(Exception):
    """Root of every error adora raises on purpose."""

    #: Exit status the CLI uses for this error.
    exit_code: int = 1


class ConfigError(AdoraError):
    """A configuration value is invalid (decorator arguments, SlurmConfig, clusters)."""

    exit_code = 2


class PackageNotFoundError(ConfigError):
    """The training package could not be found, or several candidates were found."""


class UnknownFieldError(ConfigError, AttributeError):
    """A configuration object (`SlurmConfig`, `DoraConfig`) has no such field.

    Also an `AttributeError`, what Dora raised, for grid code that catches that.
    """


class JobArrayError(ConfigError, AssertionError):
    """The Slurm settings were changed inside ``with launcher.job_array():``, or arrays
    were nested. Also an `AssertionError`, what Dora raised."""


class ArgumentsError(AdoraError):
    """The training parser rejected the arguments of an experiment.

    ``argv`` is the offending argument list, ``reason`` what the parser said.
    """

    exit_code = 2

    def __init__(self, message: str, *, argv: tp.Sequence[str] = (), reason: str = "") -> None:
        super().__init__(message)
        self.argv = list(argv)
        self.reason = reason


class XPNotFoundError(AdoraError, RuntimeError):
    """No experiment with this signature was ever initialised in the output folder.

    Also a `RuntimeError`, what Dora raised, for code that catches that.
    """

    def __init__(self, sig: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"Could not find an experiment with signature {sig!r}: no .argv.json in its "
            "folder. Run or submit it once, or initialise it with `adora grid NAME --init`."
        )
        self.sig = sig


class SignatureCollisionError(AdoraError):
    """Two experiments with different deltas share one signature (32-bit hash).

    Dora silently merges them into one folder; adora refuses.
    """

    def __init__(self, sig: str, delta: tp.Any, other_delta: tp.Any, where: str = "") -> None:
        msg = (
            f"Signature collision on {sig}: the experiment with delta {delta!r} and the "
            f"experiment with delta {other_delta!r} hash to the same signature"
        )
        if where:
            msg += f" ({where})"
        msg += (
            ". Refusing to mix two experiments in one folder. Add an argument that tells "
            "them apart (even an unused one such as a tag) to one of them."
        )
        super().__init__(msg)
        self.sig = sig
        self.delta = delta
        self.other_delta = other_delta


class GridError(AdoraError):
    """A grid file could not be found, imported or evaluated.

    ``filename`` and ``lineno`` point into the user's grid file when known.
    """

    exit_code = 2

    def __init__(self, message: str, *, filename: str | None = None,
                 lineno: int | None = None) -> None:
        where = ""
        if filename is not None:
            where = f"{filename}:{lineno}: " if lineno is not None else f"{filename}: "
        super().__init__(where + message)
        self.filename = filename
        self.lineno = lineno


class GridInterruptedError(GridError):
    """The grid's explore function (or its module) raised `KeyboardInterrupt`.

    Nothing was submitted; the CLI exits with 130, as for Ctrl-C.
    """

    exit_code = 130


class LockedError(AdoraError):
    """Another adora process holds the lock on this output directory or grid."""


class XPBusyError(LockedError):
    """The XP is being trained already: by a process holding its folder's run lock, or
    by a job that is still pending or running. Two trainings in one folder would
    interleave their metrics and overwrite each other's checkpoints."""


class HistoryError(AdoraError):
    """A metrics history file is unreadable (not written by adora or Dora)."""


class MetricsError(AdoraError, TypeError):
    """Training code pushed metrics adora cannot keep (``push_metrics`` takes a dict).

    Also a `TypeError`, for code that catches that.
    """


class RecordError(AdoraError):
    """A job record, submission file or ``.argv.json`` of adora's is unreadable."""


class OutputError(AdoraError):
    """A path of the output folder is not what adora needs: an XP folder that is a
    file or a dangling link, a lock that is a folder, a folder that cannot be written.

    ``path`` is the offending path.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class BackendError(AdoraError):
    """A backend (local, Slurm, SSH) could not carry out an action."""


class CommandError(BackendError):
    """An external command failed; carries its exit status and output."""

    def __init__(self, command: tp.Sequence[str], exit_status: int | None,
                 stdout: str = "", stderr: str = "", message: str | None = None) -> None:
        self.command = list(command)
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr
        if message is None:
            name = self.command[0] if self.command else "command"
            message = f"`{name}` failed with exit status {exit_status}"
            detail = (stderr or stdout).strip()
            if detail:
                message += ": " + detail.splitlines()[-1]
        super().__init__(message)


class CommandTimeoutError(CommandError, TimeoutError):
    """An external command did not answer in time."""


_OS_HINTS = {
    errno.ENOSPC: "The disk is full: free some space, then run the same command again (what "
                  "adora recorded before is kept).",
    errno.EDQUOT: "Your disk quota is exhausted: free some space, then run the same command "
                  "again (what adora recorded before is kept).",
    errno.EROFS: "adora needs to write there: use a writable output folder (the `dir` of "
                 "your main).",
    errno.EACCES: "adora needs to write there: check the folder's permissions, or use another "
                  "output folder (the `dir` of your main).",
    errno.EPERM: "adora needs to write there: check the folder's permissions, or use another "
                 "output folder (the `dir` of your main).",
    errno.ENOTDIR: "A file stands where adora expects a folder: move it out of the way.",
    errno.EISDIR: "A folder stands where adora expects a file: move it out of the way.",
}


def os_error_message(exc: OSError) -> str:
    """What the CLI prints for an `OSError` that reached it: the file, the system's
    reason and, for the usual causes (disk full, read-only, a file in the way), the fix::

        file system error on /data/outputs/.adora/lock: No space left on device. The disk ...
    """
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = ""
    if exc.filename is not None:
        where = f" on {os.fsdecode(exc.filename)}"
        if exc.filename2 is not None:
            where += f" -> {os.fsdecode(exc.filename2)}"
    return f"file system error{where}: {reason}." + os_error_hint(exc)


def os_error_hint(exc: OSError) -> str:
    """How to fix the usual causes of ``exc`` (disk full, read-only...), with a leading
    space; "" when there is nothing general to say."""
    hint = _OS_HINTS.get(exc.errno or 0)
    return f" {hint}" if hint else ""
