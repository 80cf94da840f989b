"""The metrics link between training code and adora.

Training code calls ``get_xp().link.push_metrics({...})`` once per epoch. Dora
rewrites a whole JSON file on each push (quadratic in the number of epochs, and
a monitor must re-parse everything). adora appends one JSON line per push to
``history.jsonl`` next to Dora's ``history.json``:

- a push is one ``write(2)`` of complete lines in append mode: killing the
  process mid-push can at worst leave a partial last line, which readers skip
  and the next writer trims; earlier entries are never touched;
- a reader keeps an offset and reads only the bytes added since (`HistoryTail`);
- `Link.update_history` (e.g. truncating after reloading a checkpoint)
  replaces the file atomically (write + rename); tails notice and start over.

A Dora XP folder with only ``history.json`` is read as is, and converted to
``history.jsonl`` on the first write.
"""

from __future__ import annotations

import json
import os
import typing as tp
from pathlib import Path

from .distrib import is_master
from .errors import HistoryError, MetricsError

__all__ = ["HistoryTail", "Link", "jsonl_path", "read_history"]

JSONL_SUFFIX = ".jsonl"


def jsonl_path(history_file: Path) -> Path:
    """The adora history file that goes with Dora's ``history.json`` path."""
    return history_file.with_suffix(JSONL_SUFFIX)


def _dumps(entry: tp.Any) -> bytes:
    return (json.dumps(entry) + "\n").encode("utf8")


def parse_lines(data: bytes) -> tuple[list[dict[str, tp.Any]], int]:
    """Parse the complete lines of ``data``; return the entries and bytes consumed.

    A trailing partial line (a write in progress or cut by a crash) is left
    unconsumed. A complete line that is not JSON is skipped.
    """
    end = data.rfind(b"\n") + 1
    lines = [line for line in data[:end].split(b"\n") if line.strip()]
    if not lines:
        return [], end
    try:  # one parse for the whole chunk: much faster than one per line
        entries = json.loads(b"[" + b",".join(lines) + b"]")
        if isinstance(entries, list) and len(entries) == len(lines):
            return entries, end
    except ValueError:
        pass
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries, end


def read_history(history_file: Path) -> list[dict[str, tp.Any]] | None:
    """Read the history of an XP, or None if it has none yet.

    ``history_file`` is Dora's ``history.json`` path; ``history.jsonl`` is
    preferred when present.
    """
    jsonl = jsonl_path(history_file)
    try:
        data = jsonl.read_bytes()
    except FileNotFoundError:
        pass
    else:
        return parse_lines(data)[0]
    try:
        text = history_file.read_text()
    except FileNotFoundError:
        return None
    try:
        history = json.loads(text)
    except ValueError as exc:
        raise HistoryError(f"{history_file} is not valid JSON: {exc}") from exc
    if not isinstance(history, list):
        raise HistoryError(f"{history_file} does not hold a list of metrics.")
    return history


class Link:
    """Connection between training code and adora: the metrics history of one XP.

    ``history`` is the list of pushed metric dicts; inside ``adora run`` and
    grid jobs it is loaded before ``main`` starts, so training code can resume
    at ``len(xp.link.history)``. ``Link(None)`` is a fake link that stores
    nothing on disk.
    """

    def __init__(self, history_file: Path | None = None) -> None:
        self.history: list[dict[str, tp.Any]] = []
        #: Dora's ``history.json`` path; adora writes ``history.jsonl`` beside it.
        self.history_file = history_file
        # How many entries of `self.history` are known to be in the jsonl file,
        # in order. None: unknown, the next commit rewrites the whole file.
        self._synced: int | None = None
        self._tail_checked = False

    @property
    def jsonl_file(self) -> Path | None:
        return None if self.history_file is None else jsonl_path(self.history_file)

    def load(self) -> None:
        """(Re)load the history from disk."""
        if self.history_file is None:
            return
        jsonl = jsonl_path(self.history_file)
        history = read_history(self.history_file)
        if history is None:
            self.history = []
            self._synced = None
            return
        self.history = history
        self._synced = len(history) if jsonl.exists() else None

    def push_metrics(self, metrics: dict[str, tp.Any]) -> None:
        """Append one entry (a dict, possibly nested) to the history.

        Anything else is refused (`MetricsError`, also a `TypeError`): the table of
        the grid reads each entry as the metrics of one epoch.
        """
        from .xp import jsonable

        if not isinstance(metrics, dict):
            raise MetricsError(
                f"push_metrics takes a dict of metrics (e.g. {{'loss': 0.1}}), not "
                f"{type(metrics).__name__} {_short(metrics)}: nothing was pushed.")
        self.history.append(jsonable(metrics))
        self._commit()

    def update_history(self, history: list[dict[str, tp.Any]]) -> None:
        """Replace the whole history, e.g. with the one saved in a checkpoint."""
        from .xp import jsonable

        history = jsonable(history)
        if not isinstance(history, list):
            raise ValueError(f"history must be a list, but got {type(history)}")
        bad = next((entry for entry in history if not isinstance(entry, dict)), None)
        if bad is not None:
            raise MetricsError(f"update_history takes a list of dicts of metrics, but one "
                               f"entry is {type(bad).__name__} {_short(bad)}: nothing was "
                               "changed.")
        self.history[:] = history
        self._synced = None
        self._commit()

    def _commit(self) -> None:
        if self.history_file is None or not is_master():
            return
        path = jsonl_path(self.history_file)
        if self._synced is None or self._synced > len(self.history):
            self._rewrite(path)
        elif self._synced < len(self.history):
            self._append(path, self.history[self._synced:])
        self._synced = len(self.history)

    def _rewrite(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace(path, b"".join(_dumps(entry) for entry in self.history))
        self._tail_checked = True

    def _append(self, path: Path, entries: list[dict[str, tp.Any]]) -> None:
        if not self._tail_checked:
            _drop_partial_line(path)
            self._tail_checked = True
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"".join(_dumps(entry) for entry in entries))
        finally:
            os.close(fd)


def _short(value: tp.Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _drop_partial_line(path: Path) -> None:
    # A writer killed mid-write may have left a partial last line: drop it so the next
    # entry starts on a line of its own. Not by truncating in place: a reader that
    # read the partial bytes and then reads on (its next read(), or the next block of
    # an SFTP read) would get the new line's end glued to them, a line that never
    # existed (`{"i": 123456, "pad": "xxxx` + `xxx", ...}` parsed as an entry: seen by
    # a concurrent tail on a loaded machine). The complete lines go to a new file that
    # replaces the old one, whose bytes never change under a reader.
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        data = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    _replace(path, data[:data.rfind(b"\n") + 1])


def _replace(path: Path, data: bytes) -> None:
    # A new file with ``data`` takes the place of ``path`` (readers see one or the other).
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class HistoryTail:
    """Incremental reader of one ``history.jsonl``: reads only the bytes added since.

    This is the pure state machine; callers do the I/O (local files, aiofiles,
    SFTP) and feed it. Protocol: call `read_from` to know where to read, read
    from there to the end of file, pass the bytes to `feed`. When the file was
    replaced (`Link.update_history`), the bytes before the offset no longer
    match the last line seen, and the tail starts over from the beginning.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, tp.Any]] = []
        self.offset = 0
        self._last_line = b""

    def read_from(self) -> int:
        """Offset to read from: the last complete line is re-read to detect rewrites."""
        return self.offset - len(self._last_line)

    def feed(self, data: bytes, *, size: int | None = None) -> bool:
        """Consume ``data`` read from `read_from` on; return True if history changed.

        ``size`` is the current file size if known (a shrunk file means a rewrite).
        """
        if (size is not None and size < self.offset) or not data.startswith(self._last_line):
            self.reset()
            return True  # caller must re-read from 0
        data = data[len(self._last_line):]
        entries, consumed = parse_lines(data)
        if consumed:
            last_nl = data.rfind(b"\n", 0, consumed - 1) + 1
            self._last_line = data[last_nl:consumed]
            self.offset += consumed
        self.history.extend(entries)
        return bool(entries)

    def reset(self) -> None:
        self.history = []
        self.offset = 0
        self._last_line = b""

    def poll_file(self, path: Path) -> bool:
        """Synchronous helper: read new bytes of ``path`` (a jsonl file) and feed them."""
        shrunk = False
        for _ in range(2):
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    start = self.read_from()
                    if size < self.offset:
                        # Rewritten shorter (possibly empty): changed even if no entry is read.
                        shrunk = shrunk or bool(self.history)
                        self.reset()
                        start = 0
                    f.seek(start)
                    data = f.read()
            except FileNotFoundError:
                changed = bool(self.history)
                self.reset()
                return changed
            before = self.offset
            changed = self.feed(data, size=size)
            if self.offset == 0 and before != 0:
                continue  # rewritten: read again from the start
            return changed or shrunk
        return True
