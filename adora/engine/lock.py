"""One lock per output directory, so two `adora grid` runs never submit the same XP twice.

The lock is held while job records are read, the plan is made and carried out
(seconds), not while monitoring. A second run waits for it, then sees the jobs
the first one recorded.
"""

from __future__ import annotations

import json
import os
import sys
import typing as tp
from pathlib import Path

from ..errors import LockedError, OutputError
from ..files import FileLock, make_folder, with_filename
from .clock import Clock, SystemClock

__all__ = ["DirLock"]


class DirLock:
    """Async context manager around a `FileLock` at ``<dir>/.adora/lock``.

    Polls without blocking the event loop; gives up with `LockedError` after
    ``timeout`` seconds; ``on_wait`` is called once with the holder's details.
    """

    def __init__(self, root: Path, *, timeout: float = 600.0, clock: Clock | None = None,
                 on_wait: tp.Callable[[str], None] | None = None) -> None:
        folder = Path(root) / ".adora"
        make_folder(folder, "adora's folder")
        self.path = folder / "lock"
        self.info_path = folder / "lock.holder"
        self.timeout = timeout
        self.clock = clock or SystemClock()
        self.on_wait = on_wait
        self._lock = FileLock(self.path)

    def holder(self) -> str:
        try:
            info = json.loads(self.info_path.read_text())
            return f"pid {info['pid']} ({info['command']})"
        except (OSError, ValueError, KeyError):
            return "another adora process"

    async def __aenter__(self) -> DirLock:
        start = self.clock.now()
        warned = False
        while not self._try_acquire():
            if not warned and self.on_wait is not None:
                self.on_wait(f"Waiting for the lock on {self.path.parent.parent}, held by "
                             f"{self.holder()}...")
                warned = True
            if self.clock.now() - start > self.timeout:
                raise LockedError(f"{self.path} is held by {self.holder()} for more than "
                                  f"{self.timeout:.0f} s. Is another adora process running "
                                  "on this output folder?")
            await self.clock.sleep(0.1)
        try:
            self.info_path.write_text(json.dumps({"pid": os.getpid(),
                                                  "command": " ".join(sys.argv[:4])}))
        except OSError as exc:  # e.g. a full disk: nothing can be recorded, stop here
            self._lock.release()
            raise with_filename(exc, self.info_path) from None
        return self

    def _try_acquire(self) -> bool:
        try:
            return self._lock.try_acquire()
        except IsADirectoryError as exc:
            raise OutputError(
                f"adora's lock file {self.path} is a folder. It must be a file: if no adora "
                f"process is running on {self.path.parent.parent}, delete that folder "
                f"(`rm -r {self.path}`), then run again.", path=str(self.path)) from exc

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
