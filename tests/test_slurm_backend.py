"""The Slurm backend on the real single-node test cluster (started by the fixtures)."""

from __future__ import annotations

import subprocess
import textwrap
import time
import typing as tp
from pathlib import Path

import anyio
import pytest

from adora import SubmitRules
from adora.backends.slurm import SlurmBackend
from adora.engine.grids import load_explorer
from adora.engine.run import GridResult, RunGridArgs, run_grid
from adora.engine.watch import GridWatch
from adora.jobs import load_record
from adora.package import load_main
from adora.states import JobState

pytestmark = [pytest.mark.slurm, pytest.mark.anyio]

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_grid(root: Path, name: str, body: str) -> None:
    (root / "toy" / "grids" / f"{name}.py").write_text(
        "from adora import Explorer\n\n" + textwrap.dedent(body))


async def grid(name: str, backend: SlurmBackend, **kwargs: tp.Any) -> GridResult:
    main = load_main("toy")
    explorer, path = load_explorer(main, name)
    return await run_grid(main, explorer, name, backend=backend, grid_file=path, **kwargs)


async def wait_for(result: GridResult, backend: SlurmBackend,
                   predicate: tp.Callable[[dict[str, JobState]], bool],
                   timeout: float = 300) -> dict[str, JobState]:
    """Poll (as `adora grid --watch` does) until ``predicate(states by sig)``."""
    watch = GridWatch(load_main("toy"), [result])
    with anyio.fail_after(timeout):
        while True:
            await watch.refresh_states()
            states = {s.xp.sig: s.job_state for s in result.sheeps}
            if predicate(states):  # type: ignore[arg-type]
                return states  # type: ignore[return-value]
            await anyio.sleep(1)


def all_in(*wanted: JobState) -> tp.Callable[[dict[str, JobState]], bool]:
    return lambda states: all(s in wanted for s in states.values())


async def test_250_xps_in_one_sbatch_run_to_completion(toy_project: Path, cluster: tp.Any
                                                       ) -> None:
    write_grid(toy_project, "big", """
        import treetable as tt

        class E(Explorer):
            def get_grid_metrics(self):
                return [tt.group("valid", [tt.leaf("loss", ".3f")])]

        @E
        def explorer(launcher):
            launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)
            for seed in range(250):
                launcher(seed=seed, epochs=1, hidden=2)
    """)
    backend = SlurmBackend(toy_project / "outputs")
    started = time.monotonic()
    result = await grid("big", backend)
    submit_seconds = time.monotonic() - started
    assert len(result.submitted) == 250
    array_ids = {load_record(s.xp.folder).array_id for s in result.sheeps}  # type: ignore[union-attr]
    assert len(array_ids) == 1, array_ids  # one sbatch for 250 XPs
    print(f"submitted 250 XPs in {submit_seconds:.2f} s")
    states = await wait_for(result, backend, all_in(JobState.COMPLETED, JobState.FAILED),
                            timeout=600)
    assert set(states.values()) == {JobState.COMPLETED}
    watch = GridWatch(load_main("toy"), [result])
    await watch.refresh_metrics()
    assert all(len(watch.history(s)) == 1 and watch.history(s)[0]["valid"]["loss"] > 0
               for s in result.sheeps)
    commands = dict(backend.commands.count)
    again = await grid("big", SlurmBackend(toy_project / "outputs"))
    assert again.submitted == []
    assert all(s.state() == "COMPLETED" for s in again.sheeps)
    # Each XP's run time from Slurm (sacct's elapsed), kept in its record: the table's
    # elapsed column, never the time since submission.
    assert all(s.status is not None and s.status.elapsed is not None
               and 0 <= s.status.elapsed < 600 for s in again.sheeps)
    print("slurm commands while waiting:", commands)


async def test_remove_retry_replace_cancel(toy_project: Path, cluster: tp.Any) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)
            launcher(seed=1, epochs=500, epoch_time=0.2)
            launcher(seed=2, epochs=500, epoch_time=0.2)
            launcher(seed=3, epochs=3, fail_at=1)
    """)
    backend = SlurmBackend(toy_project / "outputs")
    first = await grid("g", backend)
    run1, run2, failing = (s.xp.sig for s in first.sheeps)
    await wait_for(first, backend, lambda st: st[run1] is JobState.RUNNING
                   and st[run2] is JobState.RUNNING and st[failing] is JobState.FAILED
                   and not first.by_sig()[failing].stale)  # exit code known (sacct)
    failed = first.by_sig()[failing]
    assert failed.status is not None and failed.status.exit_code == 1

    # -r resubmits the failed XP only.
    retried = await grid("g", backend, rules=SubmitRules(retry=True))
    assert retried.submitted == [failing]

    # -R replaces the running ones (cancel + submit).
    old_job = first.by_sig()[run1].job.job_id  # type: ignore[union-attr]
    replaced = await grid("g", backend, rules=SubmitRules(replace=True), args=RunGridArgs(
        patterns=["seed=1"]))
    assert replaced.submitted == [run1] and replaced.cancelled == [run1]
    assert replaced.by_sig()[run1].job.job_id != old_job  # type: ignore[union-attr]

    # Removing seed=2 from the grid cancels exactly it, once confirmed.
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)
            launcher(seed=1, epochs=500, epoch_time=0.2)
            launcher(seed=3, epochs=3, fail_at=1)
    """)
    asked = []
    shrunk = await grid("g", backend, confirm=lambda m: asked.append(m) or True)
    assert asked and shrunk.cancelled == [run2]
    states = await wait_for(shrunk, backend, lambda st: st[run1] is JobState.RUNNING)
    assert states[run1] is JobState.RUNNING
    assert (await backend.query([load_record(first.by_sig()[run2].xp.folder)]))[  # type: ignore[list-item]
        first.by_sig()[run2].job.job_id].state is JobState.CANCELLED  # type: ignore[union-attr]

    # -C cancels everything in one scancel.
    before = backend.commands.count.get("scancel", 0)
    cancelled = await grid("g", backend, args=RunGridArgs(cancel=True))
    assert cancelled.cancelled == [run1]
    assert backend.commands.count.get("scancel", 0) == before + 1
    await wait_for(cancelled, backend, lambda st: st[run1] is JobState.CANCELLED)


async def test_time_limit_requeues_and_resumes(toy_project: Path, cluster: tp.Any) -> None:
    # A 1-minute job is told to checkpoint (USR2) 15 to 45 s after it starts (slurmctld
    # checks limits every 30 s; see `signal_delay`): 100 epochs of 0.5 s (50 s) always
    # are, so the job is requeued and resumes from its history.
    write_grid(toy_project, "slow", """
        @Explorer
        def explorer(launcher):
            launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=1)
            launcher(epochs=100, epoch_time=0.5)
    """)
    backend = SlurmBackend(toy_project / "outputs")
    result = await grid("slow", backend)
    await wait_for(result, backend, all_in(JobState.COMPLETED, JobState.FAILED,
                                           JobState.TIMEOUT), timeout=400)
    sheep = result.sheeps[0]
    assert sheep.job_state is JobState.COMPLETED
    history = [line for line in (sheep.xp.folder / "history.jsonl").read_text().splitlines()]
    assert len(history) == 100
    log = Path(sheep.log).read_text()  # type: ignore[arg-type]
    assert "Resuming" in log


async def requeue_after_3_epochs(sheep: tp.Any) -> Path:
    """``scontrol requeue`` the XP's job once it has 3 epochs; its history file."""
    history: Path = sheep.xp.folder / "history.jsonl"
    with anyio.fail_after(120):
        while not history.exists() or len(history.read_text().splitlines()) < 3:
            await anyio.sleep(0.5)
    subprocess.run(["scontrol", "requeue", sheep.job.job_id], check=True)
    return history


async def test_scontrol_requeue_resumes(toy_project: Path, cluster: tp.Any) -> None:
    write_grid(toy_project, "rq", """
        @Explorer
        def explorer(launcher):
            launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)
            launcher(epochs=30, epoch_time=0.4)
    """)
    backend = SlurmBackend(toy_project / "outputs")
    result = await grid("rq", backend)
    sheep = result.sheeps[0]
    history = await requeue_after_3_epochs(sheep)
    await wait_for(result, backend, all_in(JobState.COMPLETED, JobState.FAILED), timeout=300)
    assert sheep.job_state is JobState.COMPLETED
    lines = history.read_text().splitlines()
    assert len(lines) == 30
    assert "Resuming" in Path(sheep.log).read_text()  # type: ignore[arg-type]


async def test_a_requeued_array_task_resumes_its_own_xp(toy_project: Path, cluster: tp.Any
                                                       ) -> None:
    # An array has one pickle for all its tasks: each task takes its own argv by its
    # index, and a requeued task resumes its XP (not another task's).
    write_grid(toy_project, "rqa", """
        @Explorer
        def explorer(launcher):
            launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)
            for seed in range(3):
                launcher(seed=seed, epochs=20, epoch_time=0.4)
    """)
    backend = SlurmBackend(toy_project / "outputs")
    result = await grid("rqa", backend)
    records = [load_record(s.xp.folder) for s in result.sheeps]
    assert len({r.array_id for r in records}) == 1  # type: ignore[union-attr]
    folder = toy_project / "outputs" / "arrays" / records[0].job_name  # type: ignore[union-attr,operator]
    assert sorted(p.name for p in folder.glob("*.pkl")) == [
        f"{records[0].job_name}_array.pkl"]  # type: ignore[union-attr]
    sheep = result.sheeps[1]
    await requeue_after_3_epochs(sheep)
    await wait_for(result, backend, all_in(JobState.COMPLETED, JobState.FAILED), timeout=300)
    assert [s.job_state for s in result.sheeps] == [JobState.COMPLETED] * 3
    for other in result.sheeps:
        lines = (other.xp.folder / "history.jsonl").read_text().splitlines()
        assert len(lines) == 20
    assert "Resuming" in Path(sheep.log).read_text()  # type: ignore[arg-type]


async def test_controller_outage_marks_states_stale_then_recovers(
        toy_project: Path, cluster: tp.Any, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    from adora.testing.slurm_cluster import client_conf

    # A client config that gives up after 3 s instead of 30 when the controller is down.
    monkeypatch.setenv("SLURM_CONF", str(client_conf(tmp_path / "client.conf",
                                                     message_timeout=3)))
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher.slurm_(gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10)
            launcher(epochs=400, epoch_time=0.2)
    """)
    backend = SlurmBackend(toy_project / "outputs", share_polls=False)
    result = await grid("g", backend)
    await wait_for(result, backend, all_in(JobState.RUNNING))
    watch = GridWatch(load_main("toy"), [result])
    sheep = result.sheeps[0]
    with cluster.controller_stopped():
        started = time.monotonic()
        seen_stale = 0
        while time.monotonic() - started < 30:
            await watch.refresh_states()
            assert sheep.job_state is JobState.RUNNING  # last known, never FAILED
            seen_stale += sheep.stale
            await anyio.sleep(1)
        assert seen_stale >= 2
        assert not watch.all_done()
    await wait_for(result, backend, lambda st: not sheep.stale, timeout=120)
    assert sheep.job_state is JobState.RUNNING
