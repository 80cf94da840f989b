"""The one exception hierarchy of adora.

Every error adora raises on purpose derives from :class:`AdoraError`, so a
caller can catch them all at once; each subclass names what went wrong in the
user's terms and carries the facts needed to fix it::

    AdoraError
    ├── ConfigError                 bad configuration: decorator, SlurmConfig, cluster file
    │   └── PackageNotFoundError    no (or several) training packages found
    ├── ArgumentsError              training arguments the user's parser rejects
    ├── XPNotFoundError             a signature nobody ever initialised
    ├── SignatureCollisionError     two different experiments hash to the same signature
    ├── GridError                   a grid file that cannot be evaluated
    ├── LockedError                 another adora process holds the lock
    │   └── XPBusyError             the XP runs already (a training process or a live job)
    ├── HistoryError                a metrics history that cannot be read
    ├── RecordError                 a job record or submission file that cannot be read
    │   └── QueueError              the local backend's queue database (backends.local_queue)
    └── BackendError                a backend could not do what was asked
        └── CommandError            an external command (sbatch, squeue, ...) failed
            └── CommandTimeoutError   ... because it took too long (also a TimeoutError)

The command-line interface turns any :class:`AdoraError` into its message and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import typing as tp

__all__ = [
    "AdoraError",
    "ArgumentsError",
    "BackendError",
    "CommandError",
    "CommandTimeoutError",
    "ConfigError",
    "GridError",
    "HistoryError",
    "LockedError",
    "PackageNotFoundError",
    "RecordError",
    "SignatureCollisionError",
    "XPBusyError",
    "XPNotFoundError",
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


class LockedError(AdoraError):
    """Another adora process holds the lock on this output directory or grid."""


class XPBusyError(LockedError):
    """The XP is being trained already: by a process holding its folder's run lock, or
    by a job that is still pending or running. Two trainings in one folder would
    interleave their metrics and overwrite each other's checkpoints."""


class HistoryError(AdoraError):
    """A metrics history file is unreadable (not written by adora or Dora)."""


class RecordError(AdoraError):
    """A job record or submission file of adora's is unreadable."""


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
