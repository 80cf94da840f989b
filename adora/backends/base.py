"""The protocol every backend implements, and the values it exchanges with the engine."""

from __future__ import annotations

import abc
import os
import sys
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from ..conf import SlurmConfig
from ..jobs import JobRecord
from ..states import JobState

if tp.TYPE_CHECKING:
    from ..engine.tail import ReadRequest, ReadResult
    from ..xp import XP

__all__ = ["Backend", "FileStamp", "JobStatus", "LaunchSpec", "SubmitRequest",
           "list_local_folder", "read_local_file", "read_local_many"]


@dataclass(frozen=True)
class JobStatus:
    """What a backend knows of one job right now.

    ``stale`` is True when the backend could not ask (controller down,
    connection lost): ``state`` is then the last known one, or UNKNOWN.
    ``reason`` says why a job failed or waits, where the backend says it;
    ``started_at``/``ended_at`` (epoch seconds) where the backend knows them;
    ``elapsed``: how long an ended job ran, where the backend gives a duration only.
    ``job_id``: for a chain of dependent jobs, the link this status is of (the one
    running, waiting, or that ended the chain); None when it is the record's job.
    """

    state: JobState
    exit_code: int | None = None
    reason: str = ""
    stale: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    elapsed: float | None = None
    job_id: str | None = None

    @classmethod
    def of_final(cls, record: JobRecord) -> JobStatus:
        """The status a record's persisted final state stands for (no query needed)."""
        assert record.final is not None
        extra = record.extra
        return cls(record.final, record.exit_code, reason=str(extra.get("reason") or ""),
                   started_at=extra.get("started_at"), ended_at=extra.get("ended_at"),
                   elapsed=extra.get("elapsed"), job_id=extra.get("final_job_id"))

    def persist(self, record: JobRecord) -> None:
        """Write this final status into ``record`` (saved by the caller)."""
        record.final_state = self.state.value
        record.exit_code = self.exit_code
        for key, value in (("reason", self.reason), ("started_at", self.started_at),
                           ("ended_at", self.ended_at), ("elapsed", self.elapsed),
                           ("final_job_id", self.job_id)):
            if value:
                record.extra[key] = value


@dataclass(frozen=True)
class LaunchSpec:
    """How to start the user's training code for one XP (`adora.job`, lighter than the CLI)."""

    package: str
    main_module: str
    cwd: Path
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def command(self, argv: tp.Sequence[str]) -> list[str]:
        return [self.python, "-m", "adora.job", "--package", self.package, "--main-module",
                self.main_module, "--", *argv]


@dataclass
class SubmitRequest:
    """A group of XPs to submit together (one job array when ``array`` is True)."""

    xps: list[XP]
    slurm: SlurmConfig
    token: str
    job_name: str
    launch: LaunchSpec
    array: bool = True


class FileStamp(tp.NamedTuple):
    """What tells two versions of a file apart without reading it."""

    size: int
    mtime_ns: int
    inode: int


def _stamp(st: os.stat_result) -> FileStamp:
    return FileStamp(st.st_size, st.st_mtime_ns, st.st_ino)


def _read_range(path: str, offset: int, known: FileStamp | None
                ) -> tuple[bytes, FileStamp] | None:
    # Plain syscalls: this runs for every XP of a grid on every refresh.
    try:
        stamp = _stamp(os.stat(path))
        if stamp.size <= offset or stamp == known:
            return b"", stamp
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        stamp = _stamp(os.fstat(fd))  # the file read, if it was just replaced
        return os.pread(fd, max(0, stamp.size - offset), offset), stamp
    finally:
        os.close(fd)


def _read_one(request: ReadRequest) -> ReadResult:
    try:
        return _read_range(request.path, request.offset, request.known)
    except OSError as exc:
        return exc


async def read_local_many(requests: tp.Sequence[ReadRequest]) -> list[ReadResult]:
    """Read many local files from one worker thread (which fans out to a few more for
    big batches): one round trip to the event loop, not one per file."""
    import anyio.to_thread

    from ..files import map_threads

    where = requests[0].path if requests else None
    return await anyio.to_thread.run_sync(lambda: map_threads(_read_one, requests, where=where))


def list_local_folder(path: str) -> set[str] | None:
    """``set(os.listdir(path))``; empty if ``path`` does not exist, None if unreadable."""
    try:
        return set(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except OSError:
        return None


async def read_local_file(path: str, offset: int, *, known: FileStamp | None = None
                          ) -> tuple[bytes, FileStamp] | None:
    """Read a local file from ``offset``, unless its stamp equals ``known``.

    Never blocks the event loop: aiofiles under asyncio, a worker thread under
    other event loops (trio), where aiofiles does not work.
    """
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(_read_range, path, offset, known)
    import aiofiles
    import aiofiles.os

    try:
        stamp = _stamp(await aiofiles.os.stat(path))
        if stamp.size <= offset or stamp == known:
            return b"", stamp
        async with aiofiles.open(path, "rb") as f:
            await f.seek(offset)
            return await f.read(), stamp
    except (FileNotFoundError, NotADirectoryError):
        return None


class Backend(abc.ABC):
    """Runs jobs. Every method is a coroutine that never blocks the event loop."""

    #: Short name stored in job records (``local``, ``slurm``, ``ssh:<cluster>``).
    name: str = "backend"
    #: Most XPs one submission (job array) may hold; None: no limit.
    max_group_size: int | None = None

    def set_poll_period(self, seconds: float) -> None:  # noqa: B027 - optional hook
        """The watcher refreshes every ``seconds``: results that fresh may be shared."""

    def check_config(self, slurm: SlurmConfig) -> None:  # noqa: B027 - optional hook
        """Raise `ConfigError` for settings of ``slurm`` this backend cannot honour
        (called before anything is submitted). The local backend ignores Slurm's."""

    async def prepare(self) -> None:  # noqa: B027 - optional hook
        """Learn the backend's limits (e.g. ``max_group_size``) before submitting."""

    async def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Start slow set-up (a connection) while the grid is being evaluated. Must not
        raise: a failure shows in the first real call."""

    @abc.abstractmethod
    async def submit(self, request: SubmitRequest) -> list[JobRecord]:
        """Submit the XPs of ``request``; return their records, job ids filled, in order."""

    @abc.abstractmethod
    async def cancel(self, records: tp.Sequence[JobRecord]) -> None:
        """Cancel these jobs (one batched call where the backend allows)."""

    @abc.abstractmethod
    async def query(self, records: tp.Sequence[JobRecord]) -> dict[str, JobStatus]:
        """States of these jobs by job id, in one batched query."""

    @abc.abstractmethod
    async def recover(self, intents: tp.Sequence[tuple[str, JobRecord]],
                      folders: tp.Mapping[str, Path] | None = None) -> list[str | None]:
        """Job ids of interrupted submissions, or None where nothing was submitted.

        ``intents`` pairs each XP signature with its intent record (``job_id``
        None; ``token``, ``job_name`` and ``array_index`` set). Used to adopt
        jobs whose submission was cut before adora recorded their id. For a chain
        of dependent jobs the id returned is its first link's, and the later links
        found go to the intent's ``dependents`` (in place). ``folders``: the XP folders
        by signature, for backends that keep submission files there.
        """

    async def read_file(self, path: str, offset: int, *, known: FileStamp | None = None
                        ) -> tuple[bytes, FileStamp] | None:
        """Bytes of ``path`` from ``offset`` to its end and the file's stamp; None if absent.

        Nothing is read when the file's stamp equals ``known`` (unchanged).
        """
        return await read_local_file(path, offset, known=known)

    async def read_many(self, requests: tp.Sequence[ReadRequest]) -> tp.Sequence[ReadResult]:
        """`read_file` for many files at once (metrics of a whole grid): results in order,
        an exception in place of a file that could not be read."""
        return await read_local_many(requests)

    async def list_folder(self, path: str) -> set[str] | None:
        """The names in folder ``path`` (a local path under the output directory; empty
        if it does not exist), or None when this backend cannot tell cheaply.

        The engine reads the metrics of XPs whose folder exists only: one listing
        instead of a ``stat`` per XP (a 100,000-XP grid that never ran has none).
        """
        import anyio.to_thread

        return await anyio.to_thread.run_sync(list_local_folder, path)

    def describe(self) -> str:
        return self.name

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release here
        """Release connections and background tasks."""
