"""`SlurmConfig.dependents` on the real test cluster: chains of ``afternotok`` jobs.

The toy's ``--fail_once_at`` makes the first job of a chain fail (a marker file in the
XP folder remembers it) and the next one, taking over, resume and complete. The
pure parts (the chain's state, cancellation order, scripts): tests/test_dependents.py.
"""

from __future__ import annotations

import subprocess
import time
import typing as tp
from pathlib import Path

import anyio
import pytest

from adora.backends.slurm import SlurmBackend
from adora.engine.run import GridResult, RunGridArgs
from adora.engine.watch import GridWatch
from adora.jobs import JobRecord, load_record, sig_of_job
from adora.package import load_main
from adora.states import JobState
from tests.conftest import adora_cli
from tests.test_slurm_backend import grid, write_grid

pytestmark = [pytest.mark.slurm, pytest.mark.anyio]

CPU = "gpus=0, mem_per_gpu=None, cpus_per_gpu=1, time=10"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def watch_until(result: GridResult, predicate: tp.Callable[[dict[str, JobState]], bool],
                      seen: set[JobState] | None = None, timeout: float = 120
                      ) -> dict[str, JobState]:
    """Refresh as `adora grid --watch` does until ``predicate(states by sig)``; every
    state shown on the way goes to ``seen``."""
    watch = GridWatch(load_main("toy"), [result])
    deadline = time.monotonic() + timeout
    while True:
        await watch.refresh_states()
        states = {s.xp.sig: s.job_state for s in result.sheeps}
        if seen is not None:
            seen.update(tp.cast(JobState, s) for s in states.values())
        if predicate(states):  # type: ignore[arg-type]
            return states  # type: ignore[return-value]
        assert time.monotonic() < deadline, [(s, s.status) for s in result.sheeps]
        await anyio.sleep(0.5)


def sacct(ids: tp.Sequence[str]) -> dict[str, tuple[str, str]]:
    """State and nodes of each job, from accounting ("None assigned": it never ran)."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,NodeList",
                          "-j", ",".join(ids)], capture_output=True, text=True, check=True)
    rows = [line.split("|") for line in out.stdout.splitlines() if line]
    return {row[0]: (row[1].split()[0], row[2]) for row in rows}


async def wait_sacct(ids: tp.Sequence[str], states: tp.Sequence[str], timeout: float = 60
                     ) -> dict[str, tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        got = sacct(ids)
        if [got.get(i, ("?", ""))[0] for i in ids] == list(states):
            return got
        assert time.monotonic() < deadline, got
        await anyio.sleep(0.5)


def record_of(result: GridResult, index: int = 0) -> JobRecord:
    record = load_record(result.sheeps[index].xp.folder)
    assert record is not None
    return record


async def test_a_failed_first_job_hands_over_to_the_next(toy_project: Path, cluster: tp.Any
                                                         ) -> None:
    write_grid(toy_project, "chain", f"""
        @Explorer
        def explorer(launcher):
            launcher.slurm_({CPU}, dependents=1)
            launcher(epochs=3, fail_once_at=1)
    """)
    backend = SlurmBackend(toy_project / "outputs")
    result = await grid("chain", backend)
    record = record_of(result)
    assert len(record.links) == 2  # both jobs tracked from the submission on
    first, second = record.links
    seen: set[JobState] = set()
    await watch_until(result, lambda st: all(s.is_final for s in st.values()), seen)
    sheep = result.sheeps[0]
    assert sheep.job_state is JobState.COMPLETED
    assert JobState.FAILED not in seen, seen  # the second job was waiting to take over
    assert JobState.RUNNING in seen or JobState.PENDING in seen
    assert {k: v[0] for k, v in sacct(record.links).items()} == {
        first: "FAILED", second: "COMPLETED"}
    # The XP shows the job that completed it, and that job's log.
    assert sheep.current_job_id == second
    assert sheep.log is not None and sheep.log.name.startswith(f"{second}_")
    assert f"Resuming {sheep.xp.sig} at epoch 1" in sheep.log.read_text()
    assert len((sheep.xp.folder / "history.jsonl").read_text().splitlines()) == 3
    again = await grid("chain", SlurmBackend(toy_project / "outputs"))
    assert again.submitted == [] and again.sheeps[0].current_job_id == second
    persisted = load_record(sheep.xp.folder)  # the grid run keeps the final state
    assert persisted is not None and persisted.final_state == "COMPLETED"
    assert persisted.extra["final_job_id"] == second
    info = adora_cli("info", "--", "--epochs", "3", "--fail_once_at", "1", cwd=toy_project,
                     env={"ADORA_BACKEND": "slurm"})
    assert f"job: {second} on slurm, COMPLETED" in info.stdout, info.stdout + info.stderr
    assert f"jobs of its chain (dependents): {first}, {second}" in info.stdout
    assert f"log: {sheep.log}" in info.stdout
    assert sig_of_job(toy_project / "outputs", second) == sheep.xp.sig  # info -j of a link


async def test_a_completed_first_job_means_the_others_never_run(toy_project: Path,
                                                                cluster: tp.Any) -> None:
    write_grid(toy_project, "chain", f"""
        @Explorer
        def explorer(launcher):
            launcher.slurm_({CPU}, dependents=2)
            launcher(epochs=2)
    """)
    backend = SlurmBackend(toy_project / "outputs")
    result = await grid("chain", backend)
    record = record_of(result)
    assert len(record.links) == 3
    seen: set[JobState] = set()
    await watch_until(result, lambda st: all(s.is_final for s in st.values()), seen)
    assert result.sheeps[0].job_state is JobState.COMPLETED
    assert seen <= {JobState.PENDING, JobState.RUNNING, JobState.COMPLETING,
                    JobState.COMPLETED, JobState.UNKNOWN}, seen
    # Slurm cancels the later jobs (their dependency can never be met): they never ran.
    got = await wait_sacct(record.links, ["COMPLETED", "CANCELLED", "CANCELLED"])
    assert all(got[i][1] == "None assigned" for i in record.dependents), got
    logs = result.sheeps[0].xp.folder / "submitit"
    assert not [i for i in record.dependents if (logs / f"{i}_0_log.out").exists()]
    assert (logs / f"{record.job_id}_0_log.out").exists()
    again = await grid("chain", SlurmBackend(toy_project / "outputs"))
    assert again.submitted == [] and again.sheeps[0].job_state is JobState.COMPLETED


async def test_cancel_and_removal_cancel_every_link(toy_project: Path, cluster: tp.Any) -> None:
    write_grid(toy_project, "chain", f"""
        @Explorer
        def explorer(launcher):
            launcher.slurm_({CPU}, dependents=2)
            launcher(seed=1, epochs=500, epoch_time=0.2)
            launcher(seed=2, epochs=500, epoch_time=0.2)
    """)
    backend = SlurmBackend(toy_project / "outputs")
    result = await grid("chain", backend)
    assert len(result.submitted) == 2  # two chains: single jobs, not an array
    one, two = record_of(result, 0), record_of(result, 1)
    await watch_until(result, lambda st: all(s is JobState.RUNNING for s in st.values()))

    # `grid -C` on one XP cancels its three jobs: the running one and the two waiting.
    cancelled = await grid("chain", backend, args=RunGridArgs(cancel=True, patterns=["seed=1"]))
    assert cancelled.cancelled == [result.sheeps[0].xp.sig]
    got = await wait_sacct(one.links, ["CANCELLED"] * 3)
    assert all(got[i][1] == "None assigned" for i in one.dependents), got

    # Removed from the grid (confirmed): the same for the other XP.
    write_grid(toy_project, "chain", f"""
        @Explorer
        def explorer(launcher):
            launcher.slurm_({CPU}, dependents=2)
            launcher(seed=1, epochs=500, epoch_time=0.2)
    """)
    shrunk = await grid("chain", backend, confirm=lambda message: True)
    assert shrunk.cancelled == [result.sheeps[1].xp.sig]
    got = await wait_sacct(two.links, ["CANCELLED"] * 3)
    assert all(got[i][1] == "None assigned" for i in two.dependents), got
    shown = await watch_until(shrunk, lambda st: all(s.is_final for s in st.values()))
    assert set(shown.values()) == {JobState.CANCELLED}
