"""The public watch API: `adora.watch_grid`, shared by every view (table, plots, web, HiPlot)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import typing as tp
from pathlib import Path

import anyio
import pytest

import adora
from adora.engine.clock import FakeClock
from adora.engine.grids import load_explorer
from adora.engine.run import GridResult, run_grid
from adora.link import Link
from adora.package import load_main
from adora.states import JobState
from adora.testing.fake_backend import FakeBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_grid(root: Path, name: str, body: str) -> None:
    path = root / "toy" / "grids" / f"{name}.py"
    path.write_text("from adora import Explorer\n\n" + textwrap.dedent(body))


THREE_LRS = """
    @Explorer
    def explorer(launcher):
        for lr in [0.1, 0.2, 0.3]:
            launcher(lr=lr)
"""


async def submit(name: str, backend: FakeBackend) -> GridResult:
    main = load_main("toy")
    explorer, path = load_explorer(main, name)
    return await run_grid(main, explorer, name, backend=backend, grid_file=path)


def push(sig: str, *losses: float) -> None:
    main = load_main("toy")
    link = Link(main.get_xp_from_sig(sig).history)
    link.load()  # as a training run does: append to what is there
    for loss in losses:
        link.push_metrics({"valid": {"loss": loss}})


async def test_snapshots_carry_only_what_changed_for_each_consumer(toy_project: Path) -> None:
    write_grid(toy_project, "g", THREE_LRS)
    backend = FakeBackend()
    result = await submit("g", backend)
    a, b, c = (s.xp.sig for s in result.sheeps)
    push(a, 1.0, 0.9)
    clock = FakeClock()
    async with adora.watch_grid(load_main("toy"), "g", backend=backend, clock=clock,
                                interval=5) as watcher:
        first, other = watcher.subscribe(), watcher.subscribe()
        snap = await first.__anext__()
        # The first snapshot has every XP, in the table's order, all marked changed.
        assert list(snap.xps) == [a, b, c] and [x.sig for x in snap.changed] == [a, b, c]
        assert [x.name for x in snap.changed] == ["lr=0.1", "lr=0.2", "lr=0.3"]
        assert snap.grids == {"g": (a, b, c)}
        xa = snap.xps[a]
        assert xa.state == "PENDING" and xa.job_id == result.sheeps[0].current_job_id
        assert xa.argv == tuple(result.sheeps[0].xp.argv) and dict(xa.delta) == {"lr": 0.1}
        assert [m["valid"]["loss"] for m in xa.new_history] == [1.0, 0.9]
        assert xa.last_metrics == {"valid": {"loss": 0.9}} and not snap.done
        queries = backend.query_calls

        # Nothing changed: the next snapshot (one refresh, after the period) has no change.
        snap = await first.__anext__()
        assert snap.changed == () and backend.query_calls == queries + 1
        assert clock.sleeps == [5] and len(snap.xps[a].new_history) == 0
        assert len(snap.xps[a].history) == 2

        # One new metric line and one state change: only those two XPs are sent,
        # and only the new line.
        push(a, 0.8)
        backend.set_state(JobState.RUNNING, sig=b)
        snap = await first.__anext__()
        assert [x.sig for x in snap.changed] == [a, b]
        assert [m["valid"]["loss"] for m in snap.xps[a].new_history] == [0.8]
        assert len(snap.xps[a].history) == 3 and snap.xps[b].state == "RUNNING"

        # A second consumer shares the refreshes (no query of its own) and gets,
        # in its first snapshot, everything; then what changed since *its* last one.
        snap2 = await other.__anext__()
        assert backend.query_calls == queries + 2
        assert [x.sig for x in snap2.changed] == [a, b, c]
        assert [m["valid"]["loss"] for m in snap2.xps[a].new_history] == [1.0, 0.9, 0.8]
        push(c, 2.0)
        snap = await first.__anext__()
        snap2 = await other.__anext__()  # the same refresh: no new query
        assert backend.query_calls == queries + 3
        assert [x.sig for x in snap.changed] == [c] == [x.sig for x in snap2.changed]

        # A rewritten history (Link.update_history) is sent whole, flagged as reset.
        Link(load_main("toy").get_xp_from_sig(a).history).update_history(
            [{"valid": {"loss": 5.0}}])
        snap = await first.__anext__()
        assert [x.sig for x in snap.changed] == [a] and snap.xps[a].history_reset
        assert list(snap.xps[a].new_history) == [{"valid": {"loss": 5.0}}]

        # Every job ends: wait() returns the final snapshot; iteration stops after it.
        backend.set_state(JobState.COMPLETED)
        backend.set_state(JobState.FAILED, sig=c, exit_code=3)
        push(b, 0.5)
        final = await watcher.wait()
        assert final.done and {x.state for x in final.xps.values()} == {"COMPLETED", "FAILED"}
        assert final.xps[c].exit_code == 3 and final.xps[c].done
        assert [m["valid"]["loss"] for m in final.xps[b].history] == [0.5]
        assert [s async for s in first][-1].done
        assert [s async for s in first] == []  # ended


async def test_consumers_waiting_together_share_one_refresh(toy_project: Path) -> None:
    write_grid(toy_project, "g", THREE_LRS)
    backend = FakeBackend()
    await submit("g", backend)
    watcher = adora.watch_grid(load_main("toy"), "g", backend=backend, clock=FakeClock(),
                               interval=1)
    await watcher.snapshot()
    before = backend.query_calls
    got: list[adora.Snapshot] = []

    async def consume(sub: tp.Any) -> None:
        await sub.__anext__()  # the first: the snapshot already taken
        got.append(await sub.__anext__())

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(consume, watcher.subscribe())
    assert len(got) == 5 and backend.query_calls == before + 1
    assert len({s.generation for s in got}) == 1


async def test_watch_by_signatures_and_patterns(toy_project: Path) -> None:
    write_grid(toy_project, "g", THREE_LRS)
    backend = FakeBackend()
    result = await submit("g", backend)
    sigs = [s.xp.sig for s in result.sheeps]
    push(sigs[1], 0.3)
    main = load_main("toy")
    snap = await adora.watch_grid(main, sigs=sigs[1:], backend=backend).snapshot()
    assert list(snap.xps) == sigs[1:] and snap.xps[sigs[1]].last_metrics is not None
    assert snap.xps[sigs[1]].name == "lr=0.2"
    snap = await adora.watch_grid(main, "g", ["0.3"], backend=backend).snapshot()
    assert list(snap.xps) == [sigs[2]]
    with pytest.raises(ValueError):
        adora.watch_grid(main)


async def test_watch_a_local_grid_until_done(toy_project: Path) -> None:
    main = load_main("toy")
    write_grid(toy_project, "fast", """
        @Explorer
        def explorer(launcher):
            launcher.bind_(epochs=3)
            for lr in [0.01, 0.1]:
                launcher(lr=lr)
    """)
    explorer, path = load_explorer(main, "fast")
    result = await run_grid(main, explorer, "fast", backend="local", grid_file=path)
    assert len(result.submitted) == 2
    seen: dict[str, int] = {}
    with anyio.fail_after(120):
        async with adora.watch_results(main, [result], interval=1) as watcher:
            async for snap in watcher:
                for xp in snap.changed:
                    seen[xp.sig] = seen.get(xp.sig, 0) + len(xp.new_history)
    assert snap.done and {x.state for x in snap.xps.values()} == {"COMPLETED"}
    # Each entry was sent once, whatever the number of snapshots it took.
    assert seen == {s.xp.sig: 3 for s in result.sheeps}
    assert all(len(x.history) == 3 for x in snap.xps.values())


def test_import_adora_stays_light() -> None:
    code = ("import sys, adora; adora.watch_grid; "
            "print(sorted(m for m in ('anyio', 'matplotlib', 'hiplot') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", "import sys, adora; print('anyio' in "
                          "sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "['anyio']"
