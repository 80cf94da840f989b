"""The grid pipeline against an in-memory backend: dedup, rules, removal, faults."""

from __future__ import annotations

import textwrap
import typing as tp
from pathlib import Path

import anyio
import pytest

from adora import SubmitRules
from adora.engine.grids import grid_members, load_explorer
from adora.engine.run import GridResult, RunGridArgs, run_grid
from adora.errors import BackendError, GridError, SignatureCollisionError
from adora.jobs import load_record
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


async def grid(name: str, backend: FakeBackend, **kwargs: tp.Any) -> GridResult:
    main = load_main("toy")
    explorer, path = load_explorer(main, name)
    return await run_grid(main, explorer, name, backend=backend, grid_file=path, **kwargs)


async def test_dedup_and_rerun_submits_nothing(toy_project: Path) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
            launcher(lr=0.1)                    # the same XP twice
            launcher("--lr=0.10")               # the same again, other spelling
            launcher(lr=0.2, hidden=3)
            launcher(hidden=3, lr=0.2)          # the same, other order
    """)
    backend = FakeBackend()
    result = await grid("g", backend)
    assert len(result.sheeps) == 2
    assert sorted(result.submitted) == sorted(s.xp.sig for s in result.sheeps)
    assert len(backend.jobs) == 2
    # Both XPs share the default Slurm config: one submission (an array).
    assert len(backend.submissions) == 1 and backend.submissions[0].array
    for sheep in result.sheeps:
        record = load_record(sheep.xp.folder)
        assert record is not None and record.job_id == sheep.job.job_id  # type: ignore[union-attr]
        assert (sheep.xp.folder / ".argv.json").exists()
    assert sorted(grid_members(load_main("toy"), "g")) == sorted(s.xp.sig for s in result.sheeps)

    again = await grid("g", backend)
    assert again.submitted == [] and len(backend.jobs) == 2
    assert [s.state() for s in again.sheeps] == ["PENDING", "PENDING"]


async def _one_failed_one_running(root: Path) -> tuple[FakeBackend, GridResult, str, str]:
    # Grid g of two XPs submitted: the first failed (exit code 3), the second runs.
    write_grid(root, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
            launcher(lr=0.2)
    """)
    backend = FakeBackend()
    first = await grid("g", backend)
    a, b = (s.xp.sig for s in first.sheeps)
    backend.set_state(JobState.FAILED, sig=a, exit_code=3)
    backend.set_state(JobState.RUNNING, sig=b)
    return backend, first, a, b


async def test_rules_retry_replace(toy_project: Path) -> None:
    backend, first, a, b = await _one_failed_one_running(toy_project)

    plain = await grid("g", backend)
    assert plain.submitted == []
    assert plain.by_sig()[a].state() == "FAILED"

    retried = await grid("g", backend, rules=SubmitRules(retry=True))
    assert retried.submitted == [a]
    record = load_record(retried.by_sig()[a].xp.folder)
    assert record is not None and record.previous == [first.by_sig()[a].job.job_id]  # type: ignore[union-attr]

    backend.set_state(JobState.COMPLETED, sig=a, exit_code=0)
    replaced = await grid("g", backend, rules=SubmitRules(replace=True))
    assert replaced.submitted == [b] and replaced.cancelled == [b]
    assert backend.cancel_calls[-1] == [first.by_sig()[b].job.job_id]  # type: ignore[union-attr]
    assert len(backend.jobs_of(b)) == 2


async def test_cancel_all_in_one_call(toy_project: Path) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            for lr in [0.1, 0.2, 0.3]:
                launcher(lr=lr)
    """)
    backend = FakeBackend()
    await grid("g", backend)
    result = await grid("g", backend, args=RunGridArgs(cancel=True))
    assert len(backend.cancel_calls) == 1 and len(backend.cancel_calls[0]) == 3
    assert result.submitted == []
    assert all(j.state is JobState.CANCELLED for j in backend.jobs.values())
    # The returned sheeps show what the action did, as Dora's do.
    assert [s.state() for s in result.sheeps] == ["CANCELLED"] * 3
    # adora cancelled them: not failures for the exit status, on this run or later ones.
    from adora.engine.failures import is_failure

    later = await grid("g", backend)
    assert [s.state() for s in later.sheeps] == ["CANCELLED"] * 3
    assert not any(is_failure(s) for s in later.sheeps)


async def test_states_after_replace_and_retry(toy_project: Path) -> None:
    backend, first, a, b = await _one_failed_one_running(toy_project)
    result = await grid("g", backend, rules=SubmitRules(retry=True, replace=True))
    assert sorted(result.submitted) == sorted([a, b])
    assert [s.state() for s in result.sheeps] == ["PENDING", "PENDING"]


async def test_removed_xps_cancelled_only_after_confirmation(toy_project: Path) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
            launcher(lr=0.2)
    """)
    backend = FakeBackend()
    first = await grid("g", backend)
    removed = first.sheeps[1].xp.sig
    backend.set_state(JobState.RUNNING)
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
    """)
    asked: list[str] = []

    def refuse(message: str) -> bool:
        asked.append(message)
        return False

    kept = await grid("g", backend, confirm=refuse)
    assert len(asked) == 1 and removed in asked[0]
    assert kept.kept_removed == [removed] and backend.cancel_calls == []
    # Still a member: the next run asks again.
    assert removed in grid_members(load_main("toy"), "g")

    # No way to confirm (no terminal, no --yes): reported, not cancelled.
    await grid("g", backend, confirm=None)
    assert backend.cancel_calls == []

    done = await grid("g", backend, confirm=lambda message: True)
    assert done.cancelled == [removed]
    assert backend.cancel_calls == [[first.sheeps[1].job.job_id]]  # type: ignore[union-attr]
    assert removed not in grid_members(load_main("toy"), "g")


async def test_removed_xp_claimed_by_another_grid_is_not_cancelled(toy_project: Path) -> None:
    both = """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
            launcher(lr=0.2)
    """
    write_grid(toy_project, "a", both)
    write_grid(toy_project, "b", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.2)
    """)
    backend = FakeBackend()
    first = await grid("a", backend)
    await grid("b", backend)
    assert len(backend.jobs) == 2  # b's XP is a's: shared, not submitted twice
    backend.set_state(JobState.RUNNING)
    write_grid(toy_project, "a", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
    """)
    result = await grid("a", backend, args=RunGridArgs(yes=True))
    moved = first.sheeps[1].xp.sig
    assert backend.cancel_calls == [] and result.plan.claimed_elsewhere == [moved]
    assert moved not in grid_members(load_main("toy"), "a")
    assert moved in grid_members(load_main("toy"), "b")


async def test_dry_run_and_read_only_change_nothing(toy_project: Path) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
    """)
    backend = FakeBackend()
    dry = await grid("g", backend, args=RunGridArgs(dry_run=True))
    assert dry.plan.submit == [dry.sheeps[0].xp.sig] and backend.submissions == []
    # Only the grid's folder, empty, as Dora makes it before evaluating (#14).
    assert list((toy_project / "outputs" / "grids" / "g").iterdir()) == []
    assert not (toy_project / "outputs" / "xps").exists()
    await grid("g", backend)
    backend.set_state(JobState.RUNNING)
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.3)
    """)
    # -f/-l/-t: read-only, even when the grid shrank (Dora cancelled here).
    await grid("g", backend, args=RunGridArgs(read_only=True, yes=True))
    assert backend.cancel_calls == [] and len(backend.submissions) == 1


async def test_patterns_select(toy_project: Path) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            for lr in [0.1, 0.2]:
                for hidden in [3, 5]:
                    launcher(lr=lr, hidden=hidden)
    """)
    backend = FakeBackend()
    result = await grid("g", backend, args=RunGridArgs(patterns=["lr=0.1", "!hidden=5"]))
    assert result.names == ["lr=0.1 hidden=3"]
    assert len(backend.jobs) == 1
    indexed = await grid("g", backend, args=RunGridArgs(patterns=["hidden=5", "1"],
                                                           dry_run=True))
    assert indexed.names == ["lr=0.2 hidden=5"]


async def test_patterns_link_only_the_selected_xps(toy_project: Path) -> None:
    # As in Dora: grids/<name>/ lists what was scheduled (evaluation grids list it to find
    # trained XPs), and XPs outside the patterns are neither linked nor cancelled.
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            for lr in [0.1, 0.2]:
                launcher(lr=lr)
    """)
    backend = FakeBackend()
    first = await grid("g", backend, args=RunGridArgs(patterns=["lr=0.1"]))
    assert [s.xp.sig for s in first.sheeps] == grid_members(load_main("toy"), "g")
    everything = await grid("g", backend)
    assert backend.cancel_calls == [] and len(backend.jobs) == 2
    assert sorted(grid_members(load_main("toy"), "g")) == \
        sorted(s.xp.sig for s in everything.sheeps)


async def test_interrupted_submission_is_recovered(toy_project: Path) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
            launcher.slurm(gpus=2)(lr=0.2)
    """)
    crashing = FakeBackend(crash_after_submit=True)
    with pytest.raises(BackendError):
        await grid("g", crashing)
    # The jobs exist but their ids were never recorded: intents are left.
    assert len(crashing.jobs) == 2
    main = load_main("toy")
    explorer, path = load_explorer(main, "g")
    crashing.crash_after_submit = False
    result = await run_grid(main, explorer, "g", backend=crashing, grid_file=path)
    assert result.submitted == []  # adopted, not submitted again
    assert len(crashing.jobs) == 2
    for sheep in result.sheeps:
        record = load_record(sheep.xp.folder)
        assert record is not None and record.job_id in crashing.jobs


async def test_ctrl_c_mid_submission_then_rerun_submits_exactly_the_missing(
        toy_project: Path) -> None:
    # Three Slurm configs: three submissions; cancel (Ctrl-C) while they run.
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            for gpus in [1, 2, 3]:
                launcher.slurm(gpus=gpus)(lr=gpus / 10)
    """)
    backend = FakeBackend(submit_delay=0.3)
    with anyio.move_on_after(0.1):
        await grid("g", backend)
    # Whatever reached the backend was recorded, despite the cancellation.
    main = load_main("toy")
    explorer, path = load_explorer(main, "g")
    recorded = {}
    for sheep in (await run_grid(main, explorer, "g", backend=backend, grid_file=path,
                                 args=RunGridArgs(dry_run=True))).sheeps:
        record = load_record(sheep.xp.folder)
        if record is not None and record.job_id:
            recorded[sheep.xp.sig] = record.job_id
    assert recorded == {j.sig: j.job_id for j in backend.jobs.values()}
    before = len(backend.jobs)
    backend.submit_delay = 0
    result = await run_grid(main, explorer, "g", backend=backend, grid_file=path)
    assert len(backend.jobs) == 3
    assert len(result.submitted) == 3 - before
    assert {j.sig for j in backend.jobs.values()} == {s.xp.sig for s in result.sheeps}


async def test_stale_states_never_fail_or_resubmit(toy_project: Path) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
    """)
    backend = FakeBackend()
    await grid("g", backend)
    backend.fail_queries = True
    result = await grid("g", backend, rules=SubmitRules(retry=True))
    sheep = result.sheeps[0]
    assert sheep.state() == "UNKNOWN" and sheep.stale and not sheep.is_done()
    assert result.submitted == [] and len(backend.jobs) == 1


async def test_final_states_are_persisted_and_not_queried_again(toy_project: Path) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
    """)
    backend = FakeBackend()
    await grid("g", backend)
    backend.set_state(JobState.COMPLETED, exit_code=0)
    await grid("g", backend)
    calls = backend.query_calls
    again = await grid("g", backend)
    assert backend.query_calls == calls  # nothing left to ask the backend
    assert again.sheeps[0].state() == "COMPLETED"


@pytest.mark.parametrize(("body", "needle", "line"), [
    ("def explorer(launcher)\n    pass\n", "Syntax error", 3),
    ("@Explorer\ndef explorer(launcher):\n    launcher(lr=0.1)\n    1 / 0\n",
     "ZeroDivisionError", 6),
    ("@Explorer\ndef explorer(launcher):\n    launcher(nope=3)\n", "unrecognized arguments", 5),
    ("@Explorer\ndef explorer(launcher):\n    launcher(lr='fast')\n", "invalid float value", 5),
    ("@Explorer\ndef explorer(launcher):\n    launcher.slurm_(gpu=2)\n",
     "Unknown SlurmConfig field 'gpu'", 5),
    ("import not_a_module\n", "No module named 'not_a_module'", 3),
    ("x = 1\n", "defines no `explorer`", None),
])
async def test_bad_grids_point_into_the_file_and_submit_nothing(
        toy_project: Path, body: str, needle: str, line: int | None) -> None:
    (toy_project / "toy" / "grids" / "bad.py").write_text(
        "from adora import Explorer\n\n" + body)
    backend = FakeBackend()
    with pytest.raises(GridError) as info:
        await grid("bad", backend)
    message = str(info.value)
    assert needle in message
    assert "bad.py" in message
    if line is not None:
        assert f"bad.py:{line}:" in message
    assert backend.submissions == []
    assert not (toy_project / "outputs" / "xps").exists()


async def test_unknown_grid_lists_grids(toy_project: Path) -> None:
    with pytest.raises(GridError) as info:
        await grid("nope", FakeBackend())
    assert "Available grids: sweep" in str(info.value)


async def test_collision_inside_a_grid(toy_project: Path, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    import adora.xp

    monkeypatch.setattr(adora.xp, "get_sig", lambda delta: "deadbeef")
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
            launcher(lr=0.2)
    """)
    with pytest.raises(GridError) as info:
        await grid("g", FakeBackend())
    assert "collision" in str(info.value).lower() and "g.py:7:" in str(info.value)
    assert isinstance(info.value.__cause__, SignatureCollisionError)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_run_grid_from_any_event_loop(toy_project: Path, anyio_backend: str) -> None:
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
    """)
    backend = FakeBackend()
    result = await grid("g", backend)
    assert len(result.sheeps) == 1 and len(backend.jobs) == 1


def test_run_grid_sync_refuses_a_running_loop(toy_project: Path) -> None:
    import asyncio

    import adora

    main = load_main("toy")
    explorer = adora.load_explorer(main, "sweep")

    async def inside() -> None:
        adora.run_grid_sync(main, explorer, "sweep", backend=FakeBackend())

    with pytest.raises(RuntimeError, match="await adora.run_grid"):
        asyncio.run(inside())
    result = adora.run_grid_sync(main, explorer, "sweep", backend=FakeBackend())
    assert len(result.sheeps) == 5


async def test_slurm_changes_after_launching_never_alter_launched_xps(toy_project: Path) -> None:
    # Launcher copies share their Slurm config until one changes it: an XP keeps
    # the config it was launched with.
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)                      # default config
            two = launcher.slurm(gpus=2)
            two(lr=0.2)                           # gpus=2
            two.slurm_(gpus=4)
            two(lr=0.3)                           # gpus=4
            launcher.slurm_(gpus=8)
            launcher(lr=0.4)                      # gpus=8
            two(lr=0.5)                           # still gpus=4
    """)
    backend = FakeBackend()
    result = await grid("g", backend)
    gpus = {dict(s.xp.delta or [])["lr"]: s.job.slurm["gpus"]  # type: ignore[union-attr]
            for s in result.sheeps}
    default = load_main("toy").get_slurm_config().gpus
    assert gpus == {0.1: default, 0.2: 2, 0.3: 4, 0.4: 8, 0.5: 4}


async def test_a_large_grid_is_recorded_and_linked_for_every_xp(toy_project: Path) -> None:
    # Enough XPs for the file work to be spread over threads.
    write_grid(toy_project, "big", """
        @Explorer
        def explorer(launcher):
            for seed in range(300):
                launcher(lr=0.1, hidden=seed + 1)
    """)
    backend = FakeBackend()
    result = await grid("big", backend)
    assert len(result.submitted) == 300
    from adora.cli_grid import folder_of_job

    main = load_main("toy")
    members = set(grid_members(main, "big"))
    for sheep in result.sheeps:
        record = load_record(sheep.xp.folder)
        assert record is not None and record.job_id == sheep.job.job_id  # type: ignore[union-attr]
        assert (sheep.xp.folder / ".argv.json").exists()
        assert sheep.xp.sig in members
        assert folder_of_job(main, record.job_id) == sheep.xp.folder  # `adora info -j`
    again = await grid("big", backend)
    assert again.submitted == [] and len(backend.jobs) == 300


def test_submission_entries_leave_out_defaults_and_read_back_equal(tmp_path: Path) -> None:
    import json

    from adora.jobs import JobRecord, load_records, save_submission, submission_path

    full = JobRecord(backend="slurm", token="tok", job_id="7_0", array_id="7", array_index=0,
                     job_name="adora_tok", log="/l/7_0.log", submitted_at=5.0,
                     final_state="FAILED", exit_code=0, previous=["3"], dependents=["8"],
                     slurm={"time": 1}, extra={"reason": "x"})
    bare = JobRecord(backend="slurm", token="tok", job_id="7_1", job_name="adora_tok",
                     submitted_at=6.0, slurm={"time": 1})
    save_submission(tmp_path, "tok", [full, bare], ["aaaa0000", "bbbb1111"])
    entries = json.loads(submission_path(tmp_path, "tok").read_text())["records"]
    # Only what differs from a record's defaults is written (0 and False are values)...
    assert entries[1] == {"sig": "bbbb1111", "job_id": "7_1", "submitted_at": 6.0}
    assert entries[0]["array_index"] == 0 and entries[0]["exit_code"] == 0
    # ...and every record reads back whole.
    assert load_records([tmp_path / "xps" / "aaaa0000", tmp_path / "xps" / "bbbb1111"]) \
        == [full, bare]


async def test_one_submission_file_records_the_jobs_of_its_xps(toy_project: Path) -> None:
    import json

    from adora.jobs import JOB_FILE, submission_path

    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            for lr in [0.1, 0.2, 0.3]:
                launcher(lr=lr)
    """)
    backend = FakeBackend()
    result = await grid("g", backend)
    main = load_main("toy")
    token = backend.submissions[0].token
    path = submission_path(main.dora.dir, token)
    # One file for the submission, none per XP.
    entries = json.loads(path.read_text())["records"]
    assert [e["sig"] for e in entries] == [s.xp.sig for s in result.sheeps]
    for sheep in result.sheeps:
        assert not (sheep.xp.folder / JOB_FILE).exists()
        record = load_record(sheep.xp.folder)
        assert record is not None and record.job_id == sheep.job.job_id  # type: ignore[union-attr]
        assert record.token == token and backend.jobs[record.job_id].sig == sheep.xp.sig
    # Once final, records go to the XP folders and the submission file goes away.
    for job in list(backend.jobs.values())[:2]:
        job.state = JobState.COMPLETED
    await grid("g", backend)
    assert path.exists()  # one job still needs it
    for job in backend.jobs.values():
        job.state = JobState.COMPLETED
    await grid("g", backend)
    assert not path.exists() and (path.parent / "done" / path.name).exists()
    for sheep in result.sheeps:
        raw = json.loads((sheep.xp.folder / JOB_FILE).read_text())
        assert raw["job_id"] == sheep.job.job_id and raw["final_state"] == "COMPLETED"  # type: ignore[union-attr]
    assert len(backend.submissions) == 1
    # A resubmission (-D) supersedes the final records in the folders.
    again = await grid("g", backend, rules=SubmitRules(replace_done=True))
    assert len(again.submitted) == 3 and len(backend.submissions) == 2
    for sheep in again.sheeps:
        record = load_record(sheep.xp.folder)
        assert record is not None and record.final_state is None
        assert record.token == backend.submissions[1].token
        assert record.previous == [sheep_job.job_id for sheep_job in [  # type: ignore[union-attr]
            s.job for s in result.sheeps if s.xp.sig == sheep.xp.sig]]


async def test_an_unreadable_submission_file_stops_the_run_and_submits_nothing(
        toy_project: Path) -> None:
    from adora.errors import RecordError
    from adora.jobs import submission_path

    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            for lr in [0.1, 0.2]:
                launcher(lr=lr)
    """)
    backend = FakeBackend()
    await grid("g", backend)
    main = load_main("toy")
    path = submission_path(main.dora.dir, backend.submissions[0].token)
    path.write_text('{"token": "tru')  # corrupted behind adora's back
    with pytest.raises(RecordError, match="unreadable.*cancel them"):
        await grid("g", backend)
    assert len(backend.jobs) == 2


async def test_membership_links_are_relative_and_survive_moving_the_output_folder(
        toy_project: Path) -> None:
    import os
    import shutil

    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            launcher(lr=0.1)
    """)
    backend = FakeBackend()
    result = await grid("g", backend)
    main = load_main("toy")
    sig = result.sheeps[0].xp.sig
    record = load_record(result.sheeps[0].xp.folder)
    assert record is not None
    member = main.dora.dir / "grids" / "g" / sig
    assert not os.path.isabs(os.readlink(member))
    assert len(os.readlink(member)) < 60  # stored in the inode: cheap to create
    moved = main.dora.dir.with_name("moved_outputs")
    shutil.move(str(main.dora.dir), moved)
    relocated = moved / member.relative_to(main.dora.dir)
    assert relocated.resolve() == (moved / "xps" / sig).resolve()


async def test_info_j_finds_xps_of_dora_by_id_links_and_says_what_it_looked_for(
        toy_project: Path) -> None:
    from adora.cli_grid import folder_of_job
    from adora.errors import XPNotFoundError

    main = load_main("toy")
    xp = main.get_xp(["--lr=0.3"])
    main.init_xp(xp)
    by_id = main.dora.dir / main.dora.shep.by_id
    by_id.mkdir(parents=True)
    (by_id / "4242_3").symlink_to(xp.folder)  # as Dora made them
    assert folder_of_job(main, "4242_3") == xp.folder.resolve()
    with pytest.raises(XPNotFoundError, match="no submission"):
        folder_of_job(main, "777")


async def test_the_backend_warms_up_while_the_grid_is_evaluated(toy_project: Path) -> None:
    import threading

    import toy.grids as grids_pkg

    warmed = threading.Event()
    grids_pkg.WARMED = warmed  # type: ignore[attr-defined]
    write_grid(toy_project, "g", """
        import toy.grids as pkg

        @Explorer
        def explorer(launcher):
            # Evaluation can only finish if warm_up runs at the same time.
            assert pkg.WARMED.wait(10), "the backend did not warm up during evaluation"
            launcher(lr=0.1)
    """)

    class Warming(FakeBackend):
        async def warm_up(self) -> None:
            warmed.set()

    result = await grid("g", Warming())
    assert len(result.submitted) == 1


async def test_xps_submitted_into_new_folders_are_not_looked_up_for_metrics_at_once(
        toy_project: Path) -> None:
    from adora.engine.watch import GridWatch

    main = load_main("toy")
    for lr in (0.1, 0.2):  # folders of XPs that ran before (e.g. under Dora)
        main.init_xp(main.get_xp([f"--lr={lr}"]))
    write_grid(toy_project, "g", """
        @Explorer
        def explorer(launcher):
            for lr in [0.1, 0.2, 0.3]:
                launcher(lr=lr)
    """)
    result = await grid("g", FakeBackend())
    new = {s.xp.sig for s in result.sheeps if dict(s.xp.delta or [])["lr"] == 0.3}
    assert result.fresh == new and len(result.submitted) == 3
    later = GridWatch(load_main("toy"), [result])  # results kept for later: read everything
    watch = GridWatch(load_main("toy"), [result], just_submitted=True)
    asked: list[set[str]] = []
    read_many = watch.tailer.read_many

    async def spy(requests: tp.Any) -> tp.Any:
        asked.append({Path(r.path).parent.name for r in requests})
        return await read_many(requests)
    watch.tailer.read_many = spy  # type: ignore[method-assign]
    await watch.refresh_metrics()
    assert asked[0] == {s.xp.sig for s in result.sheeps} - new  # the old folders only
    await watch.refresh_metrics()
    assert asked[-1] == {s.xp.sig for s in result.sheeps}  # then every XP
    later.tailer.read_many = spy  # type: ignore[method-assign]
    await later.refresh_metrics()
    assert asked[-1] == {s.xp.sig for s in result.sheeps}
