"""The local runner's tick reads only what it can act on, whatever the queue's size."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from adora.backends.local_queue import LocalQueue
from adora.backends.local_runner import Runner


def _queue(tmp_path: Path, n: int, max_parallel: int = 2) -> LocalQueue:
    queue = LocalQueue(tmp_path / "local")
    queue.ensure()
    queue.set_max_parallel(max_parallel)
    queue.add_jobs([{"name": "sub", "sig": f"{i:08x}", "cwd": str(tmp_path),
                     "cmd": [sys.executable, "-c", "pass"], "log": str(tmp_path / "{id}.log")}
                    for i in range(n)])
    return queue


def test_active_with_a_limit_keeps_running_jobs_and_cancel_requests(tmp_path: Path) -> None:
    queue = _queue(tmp_path, 10)
    queue.write_state("1", "RUNNING", pid=0)
    queue.write_state("2", "COMPLETED", exit_code=0)
    queue.request_cancel(["9", "2"])
    everything = [job["id"] for job in queue.active()]
    assert everything == ["1", "3", "4", "5", "6", "7", "8", "9", "10"]
    limited = {job["id"]: job for job in queue.active(pending_limit=3)}
    assert sorted(limited, key=int) == ["1", "3", "4", "5", "9"]
    assert limited["9"]["cancel"] and not limited["3"]["cancel"]
    assert [job["id"] for job in queue.active(pending_limit=0)] == ["1", "9"]


def test_a_tick_of_a_big_queue_reads_a_few_rows(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    queue = _queue(tmp_path, 5_000)
    read: list[int] = []
    original = LocalQueue.active

    def counted(self: LocalQueue, pending_limit: int | None = None) -> list[dict]:
        rows = original(self, pending_limit)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(LocalQueue, "active", counted)
    runner = Runner(queue, sleep=lambda _: None)
    try:
        assert runner.tick() > 0  # 2 started, more queued: busy
        assert read == [3]  # max_parallel + 1 pending rows, not 5,000
        assert sorted(runner.children) == ["1", "2"]
        # A cancel request far down the queue is seen at once.
        queue.request_cancel(["4000"])
        runner.tick()
        assert queue.state("4000")["state"] == "CANCELLED"
        assert read[-1] <= 2 + 3 + 1
        assert queue.state("5")["state"] == "PENDING"
        # Everything else cancelled: the runner drains and goes idle.
        queue.request_cancel([str(i) for i in range(3, 5_001)])
        deadline = time.monotonic() + 60
        while runner.tick() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.tick() == 0
    finally:
        for proc in runner.children.values():
            proc.wait()
    states = queue.states()
    assert {states[i]["state"] for i in ("1", "2")} == {"COMPLETED"}
    assert {s["state"] for job_id, s in states.items() if job_id not in ("1", "2")} == {
        "CANCELLED"}
