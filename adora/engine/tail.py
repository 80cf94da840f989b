"""Reading the metrics of many XPs incrementally: only the bytes added since the last read.

One `HistoryTail` per XP keeps an offset into ``history.jsonl``. A refresh asks
the backend for the new bytes of every file in one batch (`Backend.read_many`:
one worker thread for local files, concurrent SFTP reads over SSH), then parses
them in a worker thread. Files whose stamp (size, mtime, inode) did not change
are not read at all. A Dora folder with only ``history.json`` is re-read when
that file changes.
"""

from __future__ import annotations

import json
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from ..link import JSONL_SUFFIX, HistoryTail, jsonl_path

if tp.TYPE_CHECKING:
    from ..backends.base import Backend, FileStamp

__all__ = ["MetricsTailer", "ReadRequest"]


@dataclass(frozen=True)
class ReadRequest:
    """Read ``path`` from ``offset`` to its end, unless its stamp is still ``known``."""

    path: str
    offset: int = 0
    known: FileStamp | None = None


#: What a batch read returns for each request: the bytes and the file's stamp, None
#: when the file does not exist, or the exception met (connection lost...).
ReadResult = tp.Union["tuple[bytes, FileStamp]", None, BaseException]
ReadMany = tp.Callable[[tp.Sequence[ReadRequest]], tp.Awaitable[tp.Sequence[ReadResult]]]


def _jsonl_of(key: str) -> str:
    # ``str(jsonl_path(Path(key)))`` for the usual ``.../history.json``, without pathlib.
    if key.endswith("/history.json"):
        return key[:-5] + JSONL_SUFFIX
    return str(jsonl_path(Path(key)))


class MetricsTailer:
    """Keeps the histories of a set of XP folders up to date."""

    def __init__(self, read_many: ReadMany) -> None:
        self.read_many = read_many
        self.tails: dict[str, HistoryTail] = {}
        self._legacy: dict[str, tuple[FileStamp, list[dict[str, tp.Any]]]] = {}
        self.stamps: dict[str, FileStamp] = {}
        self._jsonl: dict[str, str] = {}
        #: Reads that failed (connection lost...); their XPs keep their last history.
        self.errors = 0
        self.last_error: BaseException | None = None
        #: Bytes read by the last `refresh` (to check that reads are incremental).
        self.bytes_read = 0

    @classmethod
    def for_backend(cls, backend: Backend) -> MetricsTailer:
        return cls(backend.read_many)

    def history(self, history_file: Path | str) -> list[dict[str, tp.Any]]:
        key = str(history_file)
        tail = self.tails.get(key)
        if tail is not None and (tail.history or key not in self._legacy):
            return tail.history
        return self._legacy.get(key, (None, []))[1]  # type: ignore[return-value]

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = exc

    async def refresh(self, history_files: tp.Iterable[Path | str]) -> None:
        """Read what was added to each of these histories (``history.json`` paths)."""
        self.bytes_read = 0
        keys = [str(path) for path in history_files]
        tails = self.tails
        for key in keys:
            if key not in tails:
                tails[key] = HistoryTail()
                self._jsonl[key] = _jsonl_of(key)
        results = await self.read_many([
            ReadRequest(self._jsonl[key], self.tails[key].read_from(), self.stamps.get(key))
            for key in keys])
        again, legacy = await anyio.to_thread.run_sync(self._feed, keys, results)
        if not again and not legacy:
            return
        requests = [ReadRequest(self._jsonl[key]) for key in again]
        requests += [ReadRequest(key, 0, self._legacy[key][0] if key in self._legacy else None)
                     for key in legacy]
        results = await self.read_many(requests)
        await anyio.to_thread.run_sync(self._feed, again, results[:len(again)])
        await anyio.to_thread.run_sync(self._feed_legacy, legacy, results[len(again):])

    def _feed(self, keys: list[str], results: tp.Sequence[ReadResult]
              ) -> tuple[list[str], list[str]]:
        # -> (files rewritten, to read again from 0; XPs with no jsonl, to read legacy)
        again: list[str] = []
        legacy: list[str] = []
        for key, got in zip(keys, results):
            tail = self.tails[key]
            if isinstance(got, BaseException):
                self._failed(got)
                continue
            if got is None:
                tail.reset()
                self.stamps.pop(key, None)
                legacy.append(key)
                continue
            data, stamp = got
            if stamp == self.stamps.get(key):
                continue  # unchanged: nothing was read
            self.stamps[key] = stamp
            self.bytes_read += len(data)
            before = tail.offset
            tail.feed(data, size=stamp.size)
            if tail.offset == 0 and before != 0:
                self.stamps.pop(key, None)  # rewritten (update_history): read again
                again.append(key)
        return again, legacy

    def _feed_legacy(self, keys: list[str], results: tp.Sequence[ReadResult]) -> None:
        # Dora's history.json: a whole JSON list, re-read only when it changed.
        for key, got in zip(keys, results):
            if isinstance(got, BaseException):
                self._failed(got)
                continue
            known = self._legacy.get(key)
            if got is None or (known is not None and got[1] == known[0]):
                continue
            data, stamp = got
            self.bytes_read += len(data)
            try:
                history = json.loads(data)
            except ValueError:
                continue  # being rewritten: try again on the next refresh
            if isinstance(history, list):
                self._legacy[key] = (stamp, history)
