"""Reading the metrics of many XPs incrementally: only the bytes added since the last read.

One `HistoryTail` per XP keeps an offset into ``history.jsonl``; a refresh
stats every file and reads only those that grew, concurrently (bounded), via
the backend (local files with aiofiles, or SFTP). A Dora folder with only
``history.json`` is re-read when its size changes.
"""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import anyio

from ..errors import BackendError
from ..link import HistoryTail, jsonl_path

if tp.TYPE_CHECKING:
    from ..backends.base import Backend, FileStamp

__all__ = ["MetricsTailer"]

ReadFile = tp.Callable[..., tp.Awaitable["tuple[bytes, FileStamp] | None"]]


class MetricsTailer:
    """Keeps the histories of a set of XP folders up to date."""

    def __init__(self, read_file: ReadFile, *, concurrency: int = 32) -> None:
        self.read_file = read_file
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.tails: dict[str, HistoryTail] = {}
        self._legacy: dict[str, tuple[FileStamp, list[dict[str, tp.Any]]]] = {}
        self.stamps: dict[str, FileStamp] = {}
        #: Reads that failed (connection lost...); their XPs keep their last history.
        self.errors = 0
        self.last_error: BaseException | None = None
        #: Bytes read by the last `refresh` (to check that reads are incremental).
        self.bytes_read = 0

    @classmethod
    def for_backend(cls, backend: Backend, **kwargs: tp.Any) -> MetricsTailer:
        return cls(backend.read_file, **kwargs)

    def history(self, history_file: Path) -> list[dict[str, tp.Any]]:
        key = str(history_file)
        tail = self.tails.get(key)
        if tail is not None and (tail.history or key not in self._legacy):
            return tail.history
        return self._legacy.get(key, (0, []))[1]

    async def refresh(self, history_files: tp.Iterable[Path]) -> None:
        """Read what was added to each of these histories (``history.json`` paths)."""
        self.bytes_read = 0
        async with anyio.create_task_group() as tg:
            for path in history_files:
                tg.start_soon(self._refresh_one, path)

    async def _refresh_one(self, history_file: Path) -> None:
        try:
            await self._refresh_one_unsafe(history_file)
        except BackendError as exc:
            # Connection lost or file unreadable right now: keep what was read, retry
            # on the next refresh.
            self.errors += 1
            self.last_error = exc

    async def _refresh_one_unsafe(self, history_file: Path) -> None:
        async with self.limiter:
            key = str(history_file)
            tail = self.tails.setdefault(key, HistoryTail())
            for _ in range(2):
                known = self.stamps.get(key)
                got = await self.read_file(str(jsonl_path(history_file)), tail.read_from(),
                                           known=known)
                if got is None:
                    tail.reset()
                    self.stamps.pop(key, None)
                    await self._refresh_legacy(history_file)
                    return
                data, stamp = got
                if stamp == known:
                    return  # unchanged: nothing read
                self.stamps[key] = stamp
                self.bytes_read += len(data)
                before = tail.offset
                tail.feed(data, size=stamp.size)
                if tail.offset == 0 and before != 0:
                    # Rewritten (update_history): read it again from the start.
                    self.stamps.pop(key, None)
                    continue
                return

    async def _refresh_legacy(self, history_file: Path) -> None:
        # Dora's history.json: re-read only when it changed.
        key = str(history_file)
        known = self._legacy.get(key)
        got = await self.read_file(str(history_file), 0,
                                   known=None if known is None else known[0])
        if got is None or (known is not None and got[1] == known[0]):
            return
        data, stamp = got
        self.bytes_read += len(data)
        try:
            history = json.loads(data)
        except ValueError:
            return  # being rewritten: try again on the next refresh
        if isinstance(history, list):
            self._legacy[key] = (stamp, history)
