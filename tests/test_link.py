"""The metrics link: history.jsonl on disk, incremental tails, crash safety, Dora files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import adora.link as link_module
from adora.link import HistoryTail, Link, jsonl_path, read_history


@pytest.fixture(autouse=True)
def _single_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# -- round trips ------------------------------------------------------------------------------

def test_push_then_load_round_trip_with_nested_values(tmp_path: Path) -> None:
    history_file = tmp_path / "xp" / "history.json"
    link = Link(history_file)
    link.push_metrics({"epoch": 1, "train": {"loss": 0.5, "acc": [0.1, 0.2]}})
    link.push_metrics({"epoch": 2, "train": {"loss": 0.25, "sub": {"deep": (1, 2)}},
                       "path": Path("/data/set")})
    expected = [
        {"epoch": 1, "train": {"loss": 0.5, "acc": [0.1, 0.2]}},
        # tuples become lists and Paths strings, as Dora's jsonable().
        {"epoch": 2, "train": {"loss": 0.25, "sub": {"deep": [1, 2]}}, "path": "/data/set"},
    ]
    assert link.history == expected

    other = Link(history_file)
    assert other.history == []
    other.load()
    assert other.history == expected
    assert read_history(history_file) == expected


def test_jsonl_format_on_disk(tmp_path: Path) -> None:
    history_file = tmp_path / "history.json"
    link = Link(history_file)
    entries = [{"i": i, "m": {"loss": 1 / (i + 1)}} for i in range(5)]
    for entry in entries:
        link.push_metrics(entry)
    jsonl = tmp_path / "history.jsonl"
    assert jsonl_path(history_file) == jsonl
    assert link.jsonl_file == jsonl
    # One compact JSON object per line, newline-terminated; Dora's history.json is not written.
    lines = _lines(jsonl)
    assert len(lines) == 5
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert [json.loads(line) for line in lines] == entries
    assert not history_file.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl"]


def test_push_appends_without_rewriting_earlier_bytes(tmp_path: Path) -> None:
    link = Link(tmp_path / "history.json")
    link.push_metrics({"i": 0})
    jsonl = tmp_path / "history.jsonl"
    inode = jsonl.stat().st_ino
    before = jsonl.read_bytes()
    link.push_metrics({"i": 1})
    after = jsonl.read_bytes()
    # Same file (no rename) and the old bytes are a prefix: an append, not a rewrite.
    assert jsonl.stat().st_ino == inode
    assert after.startswith(before)
    assert after[len(before):] == b'{"i": 1}\n'


def test_update_history_replaces_the_file(tmp_path: Path) -> None:
    history_file = tmp_path / "history.json"
    link = Link(history_file)
    for i in range(5):
        link.push_metrics({"i": i})
    link.update_history([{"i": 0}, {"i": 1, "restored": True}])
    assert link.history == [{"i": 0}, {"i": 1, "restored": True}]
    assert [json.loads(line) for line in _lines(tmp_path / "history.jsonl")] == link.history
    assert not list(tmp_path.glob("*.tmp"))

    link.push_metrics({"i": 2})
    reloaded = Link(history_file)
    reloaded.load()
    assert reloaded.history == [{"i": 0}, {"i": 1, "restored": True}, {"i": 2}]

    with pytest.raises(ValueError):
        link.update_history({"not": "a list"})  # type: ignore[arg-type]


def test_load_missing_file_gives_empty_history(tmp_path: Path) -> None:
    link = Link(tmp_path / "nothing" / "history.json")
    link.load()
    assert link.history == []
    assert read_history(tmp_path / "nothing" / "history.json") is None


def test_fake_link_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    link = Link(None)
    link.load()
    link.push_metrics({"a": 1})
    link.update_history([{"a": 2}])
    link.push_metrics({"a": 3})
    assert link.history == [{"a": 2}, {"a": 3}]
    assert link.jsonl_file is None
    assert list(tmp_path.iterdir()) == []


def test_only_rank_zero_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history_file = tmp_path / "history.json"
    master = Link(history_file)
    master.push_metrics({"i": 0})
    jsonl = tmp_path / "history.jsonl"
    before = jsonl.read_bytes()

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    worker = Link(history_file)
    worker.load()
    worker.push_metrics({"i": 1})
    worker.update_history([{"i": 42}])
    assert worker.history == [{"i": 42}]  # kept in memory...
    assert jsonl.read_bytes() == before   # ...but never written by rank 1

    other_dir = tmp_path / "fresh"
    Link(other_dir / "history.json").push_metrics({"i": 0})
    assert not other_dir.exists()


# -- Dora's history.json ----------------------------------------------------------------------

def test_reads_dora_history_json_and_converts_on_first_push(tmp_path: Path) -> None:
    history_file = tmp_path / "history.json"
    dora_history = [{"train": {"loss": 1.0}, "epoch": 1}, {"train": {"loss": 0.5}, "epoch": 2}]
    history_file.write_text(json.dumps(dora_history, indent=2))  # what Dora writes
    dora_bytes = history_file.read_bytes()

    assert read_history(history_file) == dora_history
    link = Link(history_file)
    link.load()
    assert link.history == dora_history
    assert not (tmp_path / "history.jsonl").exists()  # reading converts nothing

    link.push_metrics({"train": {"loss": 0.25}, "epoch": 3})
    lines = _lines(tmp_path / "history.jsonl")
    assert [json.loads(line) for line in lines] == dora_history + [
        {"train": {"loss": 0.25}, "epoch": 3}]
    assert history_file.read_bytes() == dora_bytes  # Dora's file is left as it was
    # From now on the jsonl file is the one read.
    assert read_history(history_file) == link.history
    link.push_metrics({"epoch": 4})
    assert len(_lines(tmp_path / "history.jsonl")) == 4


def test_corrupt_dora_history_is_a_history_error(tmp_path: Path) -> None:
    from adora.errors import HistoryError

    history_file = tmp_path / "history.json"
    history_file.write_text('[{"a": 1}, ')
    with pytest.raises(HistoryError, match="history.json"):
        read_history(history_file)
    history_file.write_text('{"a": 1}')
    with pytest.raises(HistoryError, match="list"):
        Link(history_file).load()


# -- HistoryTail --------------------------------------------------------------------------------

class _CountingFile:
    def __init__(self, f, counter: list[int]) -> None:
        self._f = f
        self._counter = counter

    def read(self, *args):
        data = self._f.read(*args)
        self._counter.append(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def bytes_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many bytes `HistoryTail.poll_file` reads from disk, per read."""
    counter: list[int] = []

    def counting_open(path, mode="r", *args, **kwargs):
        return _CountingFile(open(path, mode, *args, **kwargs), counter)

    monkeypatch.setattr(link_module, "open", counting_open, raising=False)
    return counter


def test_tail_reads_only_new_bytes(tmp_path: Path, bytes_read: list[int]) -> None:
    link = Link(tmp_path / "history.json")
    for i in range(20):
        link.push_metrics({"i": i, "pad": "x" * 100})
    jsonl = tmp_path / "history.jsonl"
    tail = HistoryTail()
    assert tail.poll_file(jsonl) is True
    assert tail.history == link.history
    size = jsonl.stat().st_size
    assert tail.offset == size
    assert sum(bytes_read) == size

    # Nothing new: only the last line is re-read (to detect rewrites).
    last_line = _lines(jsonl)[-1]
    bytes_read.clear()
    assert tail.read_from() == size - len(last_line)
    assert tail.poll_file(jsonl) is False
    assert sum(bytes_read) == len(last_line)

    # One new entry: the last line again plus the new one, not the 20 old entries.
    link.push_metrics({"i": 20})
    bytes_read.clear()
    assert tail.poll_file(jsonl) is True
    assert sum(bytes_read) == len(last_line) + len(b'{"i": 20}\n')
    assert tail.history == link.history
    assert tail.offset == jsonl.stat().st_size


def test_tail_feed_protocol(tmp_path: Path) -> None:
    data = b'{"a": 1}\n{"a": 2}\n{"a": 3'
    tail = HistoryTail()
    assert tail.read_from() == 0
    assert tail.feed(data) is True
    assert tail.history == [{"a": 1}, {"a": 2}]
    assert tail.offset == len(b'{"a": 1}\n{"a": 2}\n')  # the partial line is not consumed
    start = tail.read_from()
    assert start == len(b'{"a": 1}\n')
    data += b'}\n'
    assert tail.feed(data[start:]) is True
    assert tail.history == [{"a": 1}, {"a": 2}, {"a": 3}]
    # Bytes that do not start with the last line seen: the file was replaced.
    assert tail.feed(b'{"b": 0}\n', size=9) is True
    assert tail.history == [] and tail.offset == 0


def test_tail_ignores_partial_last_line_until_complete(tmp_path: Path) -> None:
    jsonl = tmp_path / "history.jsonl"
    jsonl.write_bytes(b'{"i": 0}\n{"i": 1}\n{"i": 2, "lo')
    tail = HistoryTail()
    assert tail.poll_file(jsonl) is True
    assert tail.history == [{"i": 0}, {"i": 1}]
    with open(jsonl, "ab") as f:
        f.write(b'ss": 0.5}\n')
    assert tail.poll_file(jsonl) is True
    assert tail.history == [{"i": 0}, {"i": 1}, {"i": 2, "loss": 0.5}]


@pytest.mark.parametrize("new_history", [
    pytest.param([{"i": 0}, {"i": 1}], id="truncated"),
    pytest.param([{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}, {"i": 99}], id="same-length-changed"),
    pytest.param([{"i": 0, "restored": True}] + [{"i": i} for i in range(1, 9)],
                 id="longer-rewritten"),
    pytest.param([], id="emptied"),
])
def test_tail_detects_update_history_rewrites(tmp_path: Path, new_history: list[dict]) -> None:
    link = Link(tmp_path / "history.json")
    for i in range(5):
        link.push_metrics({"i": i})
    jsonl = tmp_path / "history.jsonl"
    tail = HistoryTail()
    tail.poll_file(jsonl)
    assert len(tail.history) == 5

    link.update_history(new_history)
    assert tail.poll_file(jsonl) is True
    assert tail.history == new_history
    assert tail.offset == jsonl.stat().st_size
    # and keeps following appends after the rewrite
    link.push_metrics({"i": "next"})
    assert tail.poll_file(jsonl) is True
    assert tail.history == new_history + [{"i": "next"}]


def test_tail_of_missing_file(tmp_path: Path) -> None:
    tail = HistoryTail()
    assert tail.poll_file(tmp_path / "history.jsonl") is False
    assert tail.history == []
    link = Link(tmp_path / "history.json")
    link.push_metrics({"i": 0})
    assert tail.poll_file(tmp_path / "history.jsonl") is True
    (tmp_path / "history.jsonl").unlink()
    assert tail.poll_file(tmp_path / "history.jsonl") is True
    assert tail.history == []


# -- crash safety -----------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from adora.link import Link

    link = Link(Path(sys.argv[1]))
    link.load()
    start = len(link.history)
    for index, entry in enumerate(link.history):
        assert entry["i"] == index, (index, entry)
    print(start, flush=True)
    i = start
    while True:
        link.push_metrics({"i": i, "pad": "x" * (i * 97 % 1000), "nested": {"i": i, "l": [i]}})
        i += 1
""")


def _check_history_file(jsonl: Path) -> int:
    """Every complete line is a valid entry numbered in order; return how many."""
    data = jsonl.read_bytes()
    lines = data.split(b"\n")
    complete, partial = lines[:-1], lines[-1]
    for index, line in enumerate(complete):
        entry = json.loads(line)
        assert entry["i"] == index
        assert entry["nested"] == {"i": index, "l": [index]}
        assert entry["pad"] == "x" * (index * 97 % 1000)
    if partial:  # a push cut by the kill: never parsed as an entry
        with pytest.raises(ValueError):
            json.loads(partial)
    assert [e["i"] for e in read_history(jsonl.with_suffix(".json")) or []] == list(
        range(len(complete)))
    return len(complete)


def test_sigkill_while_pushing_never_corrupts_history(tmp_path: Path) -> None:
    history_file = tmp_path / "xp" / "history.json"
    jsonl = jsonl_path(history_file)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    rng = random.Random(1234)
    tail = HistoryTail()
    previous = 0
    for round_ in range(6):
        if round_ == 3:
            # Simulate a push cut in the middle of its line: the next writer must trim it.
            with open(jsonl, "ab") as f:
                f.write(b'{"i": 123456, "pad": "xxxx')
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(history_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            start = int(proc.stdout.readline())  # type: ignore[union-attr]
            # The new writer resumes exactly after the last complete entry.
            assert start == previous
            # Read concurrently with the writer: until it has pushed something (however
            # loaded the machine), then for a random while before killing it.
            deadline = time.monotonic() + 60
            while len(tail.history) <= previous:
                assert time.monotonic() < deadline, "the writer made no progress"
                tail.poll_file(jsonl)
            kill_at = time.monotonic() + rng.uniform(0, 0.06)
            while time.monotonic() < kill_at:
                tail.poll_file(jsonl)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            _, stderr = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, stderr
        count = _check_history_file(jsonl)
        assert count > previous, "the writer made no progress"
        previous = count
        # The concurrent reader only ever saw a prefix of the real history.
        tail.poll_file(jsonl)
        assert [e["i"] for e in tail.history] == list(range(count))

    # A final writer (e.g. the resumed job) appends cleanly after the last crash.
    link = Link(history_file)
    link.load()
    assert len(link.history) == previous
    link.push_metrics({"i": previous, "pad": "x" * (previous * 97 % 1000),
                       "nested": {"i": previous, "l": [previous]}})
    assert jsonl.read_bytes().endswith(b"\n")
    assert _check_history_file(jsonl) == previous + 1


def test_a_reader_never_sees_a_dropped_partial_line_glued_to_a_new_one(tmp_path: Path) -> None:
    # A job killed mid-push left a partial last line; a reader (a watch) has read it and
    # reads on from where it stopped, as readall() or the next block of an SFTP read do,
    # while the resumed job drops that line and pushes a new entry. In-place truncation
    # handed the reader the new line's end glued to the partial bytes: the entry
    # {"i": 123456, ...} that never existed (seen once in a suite run on a loaded machine).
    history_file = tmp_path / "history.json"
    jsonl = jsonl_path(history_file)
    first = Link(history_file)
    for i in range(3):
        first.push_metrics({"i": i, "pad": "x" * 40})
    with open(jsonl, "ab") as f:
        f.write(b'{"i": 123456, "pad": "xxxx')  # the cut push
    original = jsonl.read_bytes()
    fd = os.open(jsonl, os.O_RDONLY)
    try:
        seen = os.read(fd, len(original))  # the reader's first read: the partial bytes too
        resumed = Link(history_file)
        resumed.load()
        resumed.push_metrics({"i": 3, "pad": "x" * 40})
        seen += os.read(fd, 1 << 16)  # ...and its next read, from the same offset
        assert os.pread(fd, 1 << 16, 0) == original  # nothing changed under the reader
    finally:
        os.close(fd)
    tail = HistoryTail()
    tail.feed(seen)
    assert [e["i"] for e in tail.history] == [0, 1, 2]
    # The file itself: the complete lines, then the new entry.
    assert [e["i"] for e in read_history(history_file) or []] == [0, 1, 2, 3]
    assert not jsonl.with_name(jsonl.name + ".tmp").exists()
    tail.poll_file(jsonl)
    assert [e["i"] for e in tail.history] == [0, 1, 2, 3]


def test_new_writer_trims_partial_last_line(tmp_path: Path) -> None:
    history_file = tmp_path / "history.json"
    jsonl = tmp_path / "history.jsonl"
    jsonl.write_bytes(b'{"i": 0}\n{"i": 1}\n{"i": 2, "pa')
    link = Link(history_file)
    link.load()
    assert link.history == [{"i": 0}, {"i": 1}]
    link.push_metrics({"i": 2})
    assert jsonl.read_bytes() == b'{"i": 0}\n{"i": 1}\n{"i": 2}\n'
    link.push_metrics({"i": 3})
    assert [json.loads(line) for line in _lines(jsonl)] == [{"i": i} for i in range(4)]


def test_partial_line_longer_than_a_block_is_trimmed(tmp_path: Path) -> None:
    jsonl = tmp_path / "history.jsonl"
    jsonl.write_bytes(b'{"i": 0}\n' + b'{"i": 1, "pad": "' + b"y" * 10000)
    link = Link(tmp_path / "history.json")
    link.load()
    link.push_metrics({"i": 1})
    assert jsonl.read_bytes() == b'{"i": 0}\n{"i": 1}\n'
    # A file holding only a partial line is emptied before the append.
    jsonl.write_bytes(b'{"i": 0, "pad": "' + b"z" * 9000)
    link = Link(tmp_path / "history.json")
    link.load()
    assert link.history == []
    link.push_metrics({"i": 0})
    assert jsonl.read_bytes() == b'{"i": 0}\n'
