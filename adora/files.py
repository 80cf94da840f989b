"""Work on many small files at once: XP folders, job records, links, metric stats.

A grid of 1,000 XPs means thousands of tiny file-system operations per run
(create a folder, write a record, make a link, stat a history). On the network
file systems where clusters keep their outputs (NFS, Lustre, GPFS...), each is
a round trip to a server, about a millisecond: that is latency, and system
calls release the GIL, so a few threads do the work several times faster. On a
local disk the same operations are CPU work in the kernel; measured on this
project's 2-core VM, threads there made reading 1,000 job records 2-3 times
slower (0.035 s in one thread, 0.08-0.12 s in four) and did not speed up
writes. So `map_threads` spreads work over threads only where the files live
on a network file system (``$ADORA_FILE_THREADS`` overrides: 1 turns threads
off, N uses up to N).

`map_threads` is meant to be called from a worker thread (the engine runs all
blocking work through ``anyio.to_thread``), never from the event loop.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import typing as tp
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import OutputError, os_error_hint

__all__ = ["FileLock", "clear_folder", "folder_error", "make_folder", "map_threads",
           "read_small", "relative_prefix", "threads_for", "with_filename"]

T = tp.TypeVar("T")
R = tp.TypeVar("R")

#: Threads for bulk file work on a network file system.
NETWORK_THREADS = 8
#: Fewer items than this per thread are not worth a thread.
MIN_PER_THREAD = 32
#: File system types (``/proc/self/mounts``) whose operations are network round trips.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "cephfs",
    "fuse.ceph", "fuse.sshfs", "fuse.gcsfuse", "fuse.s3fs", "panfs", "wekafs", "9p",
    "glusterfs", "fuse.glusterfs", "afs", "ocfs2", "gfs2",
})


def _unescape(field: str) -> str:
    # /proc/self/mounts escapes spaces, tabs, newlines and backslashes as octal
    # (other characters, UTF-8 included, are as they are).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_type(folder: str, mounts: str) -> str:
    """The file system type of ``folder`` (a real path) given ``/proc/self/mounts``. Pure."""
    best, fstype = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        inside = folder == point or folder.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, fields[2]
    return fstype


@functools.lru_cache(maxsize=64)
def _fs_type(folder: str) -> str:
    try:
        with open("/proc/self/mounts") as f:
            return mount_type(folder, f.read())
    except OSError:
        return ""


def threads_for(where: str | os.PathLike[str] | None) -> int:
    """How many threads bulk file work under ``where`` should use (see the module doc)."""
    env = os.environ.get("ADORA_FILE_THREADS")
    if env:
        return max(1, int(env))
    if where is None:
        return 1
    # The nearest existing folder (``where`` may be about to be created).
    path = os.path.abspath(where)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return NETWORK_THREADS if _fs_type(os.path.realpath(path)) in NETWORK_FS else 1


def map_threads(fn: tp.Callable[[T], R], items: tp.Sequence[T], *,
                where: str | os.PathLike[str] | None = None, threads: int | None = None,
                min_per_thread: int = MIN_PER_THREAD) -> list[R]:
    """``[fn(item) for item in items]``, spread over up to ``threads`` threads
    (by default `threads_for(where)`, ``where`` being the folder the files are in).

    Results come in the order of ``items``. Every item is processed before this
    returns, even when one raises: the first exception (in item order) is then
    raised, so a caller never returns while writes it started are still running.
    ``fn`` must be safe to call from several threads at once.
    """
    if threads is None:
        threads = threads_for(where) if len(items) >= 2 * min_per_thread else 1
    count = min(threads, len(items) // max(1, min_per_thread))
    if count <= 1:
        return [fn(item) for item in items]
    size = -(-len(items) // count)
    chunks = [items[start:start + size] for start in range(0, len(items), size)]

    def _chunk(chunk: tp.Sequence[T]) -> tuple[list[R], BaseException | None]:
        out: list[R] = []
        error: BaseException | None = None
        for item in chunk:
            try:
                out.append(fn(item))
            except Exception as exc:  # finish the chunk; report the first error
                if error is None:
                    error = exc
        return out, error

    with ThreadPoolExecutor(max_workers=len(chunks), thread_name_prefix="adora-files") as pool:
        done = list(pool.map(_chunk, chunks))
    results: list[R] = []
    for out, error in done:
        if error is not None:
            raise error
        results.extend(out)
    return results


def relative_prefix(target_dir: Path, link_dir: Path) -> str:
    """How a link placed in ``link_dir`` reaches ``target_dir``, relatively.

    Links to ``os.path.join(prefix, name)`` stay correct when the output folder
    moves, and are short: ext4 stores a target of under 60 bytes in the inode
    itself, while a longer one needs a data block of its own, which made each
    absolute link of a large submission about 20 times slower to create than
    a folder. Symlinked folders on the way are resolved first, so the relative
    path is right wherever they point.
    """
    return os.path.relpath(os.path.realpath(target_dir), os.path.realpath(link_dir))


class FileLock:
    """An exclusive advisory lock (``flock``) on ``path``, created if needed.

    Held by one open file at a time, so two processes, or two users of the same
    process, exclude each other; the kernel releases it when its holder dies, so
    a crash never leaves it taken. `try_acquire` never blocks: callers poll with
    their own clock and never stall an event loop. (POSIX only, as adora; the
    ``filelock`` package does the same but costs ~10 ms of start-up, which
    every ``adora grid`` paid.)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if someone holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this lock object")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _in_the_way(path: Path) -> Path | None:
    # The first of ``path`` and its parents that exists (or is a link) but is no folder.
    for candidate in [*reversed(path.parents), path]:
        if os.path.lexists(candidate) and not os.path.isdir(candidate):
            return candidate
    return None


def folder_error(path: Path, exc: OSError, what: str) -> OutputError:
    """An `OutputError` for ``exc``, raised while creating or using folder ``path``
    (``what`` it is, e.g. "the XP folder"): names the file or dangling link in the way."""
    blocker = _in_the_way(path)
    if blocker is not None:
        if os.path.islink(blocker):
            kind = f"a link to {os.readlink(blocker)}, which does not exist"
            fix = "create the folder it points to, or delete the link"
        else:
            kind = "a file, not a folder"
            fix = "move it out of the way"
        if blocker == path:
            message = f"{what[0].upper()}{what[1:]} {path} is {kind}."
        else:
            message = f"Cannot create {what} {path}: {blocker} is {kind}."
        return OutputError(f"{message} {fix[0].upper()}{fix[1:]}, then run again.",
                           path=str(blocker))
    reason = exc.strerror or str(exc)
    if exc.filename is not None and os.fsdecode(exc.filename) != str(path):
        reason += f" ({os.fsdecode(exc.filename)})"
    return OutputError(f"Cannot create {what} {path}: {reason}.{os_error_hint(exc)}",
                       path=str(path))


def make_folder(path: Path, what: str) -> None:
    """``mkdir -p path``; failures are `OutputError`s that say what is in the way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise folder_error(path, exc, what) from exc


def clear_folder(path: Path) -> bool:
    """Delete the content of folder ``path`` and the folder itself; if ``path`` is a
    link to a folder, delete what is in the folder it points to and keep the link
    (an XP folder kept on another disk stays there). True if there was anything.

    Errors are raised: a folder reported cleared is really empty.
    """
    if os.path.islink(path):
        target = Path(os.path.realpath(path))
        if not target.is_dir():
            return False
        for entry in os.scandir(target):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        return True
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True


def with_filename(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """``exc``, or the same error naming ``path`` if it names no file: a failed
    ``write`` (disk full) does not say which file, and the user needs to know."""
    if exc.filename is not None or exc.errno is None:
        return exc
    new = type(exc)(exc.errno, exc.strerror, os.fspath(path))
    new.__cause__ = exc.__cause__
    new.__traceback__ = exc.__traceback__
    return new


def read_small(path: str) -> bytes:
    """The bytes of a small file (an XP's ``.argv.json`` or job record). Blocking."""
    # Plain system calls on a string path: a re-run reads every XP's .argv.json, and
    # ``Path.read_bytes`` (a buffered file object: fstat, ioctl, seek) took 3 times
    # longer (1.1 s against 0.34 s for 100,000 files on this project's VM).
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
