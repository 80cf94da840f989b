"""The poller's schedule, back-off and stale states, on a fake clock; incremental tails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adora.engine.clock import FakeClock
from adora.engine.poll import Poller, Schedule
from adora.engine.tail import MetricsTailer
from adora.jobs import JobRecord
from adora.link import Link
from adora.states import JobState
from adora.testing.fake_backend import FakeBackend, FakeJob

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_schedule_speeds_up_slows_down_and_backs_off() -> None:
    s = Schedule(fastest=1, slowest=30, growth=2, backoff_start=2, backoff_max=120)
    assert [s.delay(q, 0) for q in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert [s.delay(0, f) for f in range(1, 9)] == [2, 4, 8, 16, 32, 64, 120, 120]


def _backend_with_jobs(n: int) -> tuple[FakeBackend, list[JobRecord]]:
    backend = FakeBackend()
    records = []
    for i in range(n):
        backend.jobs[str(i)] = FakeJob(str(i), f"sig{i}", "adora_t", JobState.RUNNING)
        records.append(JobRecord(backend="fake", token="t", job_id=str(i)))
    return backend, records


async def test_one_query_per_tick_for_all_jobs_and_final_jobs_leave() -> None:
    backend, records = _backend_with_jobs(50)
    poller = Poller(backend, clock=FakeClock())
    poller.track(records)
    await poller.poll()
    assert backend.query_calls == 1
    assert all(poller.statuses[r.job_id].state is JobState.RUNNING for r in records)  # type: ignore[index]
    backend.set_state(JobState.COMPLETED)
    assert await poller.poll()
    assert poller.tracked == []
    await poller.poll()
    assert backend.query_calls == 2  # nothing left to ask


async def test_outage_marks_stale_keeps_last_state_and_recovers() -> None:
    backend, records = _backend_with_jobs(3)
    clock = FakeClock()
    poller = Poller(backend, clock=clock, schedule=Schedule(fastest=1, slowest=8, growth=2,
                                                            backoff_start=2, backoff_max=16))
    poller.track(records)
    await poller.poll()
    backend.fail_queries = True
    delays = []
    for _ in range(5):
        await poller.poll()
        delays.append(poller.next_delay())
    assert delays == [2, 4, 8, 16, 16]
    for record in records:
        status = poller.statuses[record.job_id]  # type: ignore[index]
        assert status.stale and status.state is JobState.RUNNING  # never FAILED
    backend.fail_queries = False
    assert await poller.poll()
    assert not any(s.stale for s in poller.statuses.values())
    assert poller.next_delay() == 1  # back to quick ticks


async def test_run_loop_sleeps_on_schedule() -> None:
    backend, records = _backend_with_jobs(1)
    clock = FakeClock()
    poller = Poller(backend, clock=clock, schedule=Schedule(fastest=1, slowest=4, growth=2))
    poller.track(records)
    await poller.run(until=lambda: poller.ticks >= 6)
    # First tick changes (unknown -> RUNNING), then quiet ticks slow down.
    assert clock.sleeps == [1, 2, 4, 4, 4]
    assert backend.query_calls == 6


async def test_tailer_reads_only_new_bytes(tmp_path: Path) -> None:
    from adora.backends.base import read_local_many

    links = []
    for i in range(20):
        link = Link(tmp_path / f"xp{i}" / "history.json")
        for epoch in range(100):
            link.push_metrics({"epoch": epoch, "loss": 1 / (epoch + 1)})
        links.append(link)
    tailer = MetricsTailer(read_local_many)
    files = [link.history_file for link in links]
    await tailer.refresh(files)  # type: ignore[arg-type]
    full = tailer.bytes_read
    assert all(len(tailer.history(f)) == 100 for f in files)  # type: ignore[arg-type]
    await tailer.refresh(files)  # type: ignore[arg-type]
    assert tailer.bytes_read == 0  # nothing new, nothing read
    for link in links:
        link.push_metrics({"epoch": 100, "loss": 0.0})
    await tailer.refresh(files)  # type: ignore[arg-type]
    assert 0 < tailer.bytes_read < full / 20
    assert all(tailer.history(f)[-1] == {"epoch": 100, "loss": 0.0} for f in files)  # type: ignore[arg-type]
    # A rewrite (update_history after reloading a checkpoint) is noticed.
    links[0].update_history(links[0].history[:10])
    links[0].push_metrics({"epoch": 10, "loss": 5.0})
    await tailer.refresh(files)  # type: ignore[arg-type]
    assert len(tailer.history(files[0])) == 11  # type: ignore[arg-type]
    assert tailer.history(files[0])[-1]["loss"] == 5.0  # type: ignore[arg-type]


async def test_tailer_reads_dora_history_json(tmp_path: Path) -> None:
    from adora.backends.base import read_local_many

    history = tmp_path / "history.json"
    history.write_text(json.dumps([{"loss": 1.0}, {"loss": 0.5}], indent=2))
    tailer = MetricsTailer(read_local_many)
    await tailer.refresh([history])
    assert tailer.history(history) == [{"loss": 1.0}, {"loss": 0.5}]
    await tailer.refresh([history])
    assert tailer.bytes_read == 0


async def test_tailer_notices_a_rewrite_of_the_same_size(tmp_path: Path) -> None:
    from adora.backends.base import read_local_many

    link = Link(tmp_path / "history.json")
    for value in range(3):
        link.push_metrics({"loss": value})
    tailer = MetricsTailer(read_local_many)
    await tailer.refresh([link.history_file])  # type: ignore[list-item]
    link.update_history([{"loss": 7}, {"loss": 8}, {"loss": 9}])  # same byte length
    await tailer.refresh([link.history_file])  # type: ignore[list-item]
    assert tailer.history(link.history_file) == [{"loss": 7}, {"loss": 8}, {"loss": 9}]  # type: ignore[arg-type]
