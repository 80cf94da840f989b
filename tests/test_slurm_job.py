"""The pickles of Slurm submissions: one per array, one per task made when it starts.

No cluster needed: ``sbatch`` is replaced by a stub, and the task's environment is set
as Slurm sets it.
"""

from __future__ import annotations

import types
import typing as tp
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from submitit.helpers import DelayedSubmission

from adora.backends import slurm_job
from adora.backends.slurm import _executor_class
from adora.backends.slurm_job import ARRAY, SlurmTarget, pickle_name


@pytest.fixture(autouse=True)
def _no_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No real Slurm command can be reached from these tests, whatever they patch: a
    # PATH of stubs that fail (submitit's executor wants an ``srun`` to exist).
    stubs = tmp_path / "stub-bin"
    stubs.mkdir()
    for tool in ("srun", "sbatch", "scontrol", "squeue", "sacct", "scancel"):
        (stubs / tool).write_text("#!/bin/sh\necho not in this test >&2\nexit 1\n")
        (stubs / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(stubs))


def _executor(folder: Path, commands: list[str], monkeypatch: pytest.MonkeyPatch,
              job_id: str = "1234") -> tp.Any:
    cls = _executor_class()

    def submit_command(self: tp.Any, command: str) -> tp.Any:
        commands.append(command)
        return types.SimpleNamespace(job_id=job_id)
    # On the class: an array is submitted by a copy of the executor.
    monkeypatch.setattr(cls, "_submit_command", submit_command)
    executor = cls(folder=folder, max_num_timeout=3, python="python3")
    executor.update_parameters(time=10)
    return executor


def _as_task(monkeypatch: pytest.MonkeyPatch, array_id: str, index: int, rank: int = 0
             ) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", str(int(array_id) + index + 1))
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", array_id)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(index))
    monkeypatch.setenv("SLURM_PROCID", str(rank))
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # as submitit's sbatch script sets it


ARGVS = [[f"seed={i}", f"lr={0.1 * i}"] for i in range(5)]


def test_an_array_has_one_pickle_and_each_task_reads_its_own_argv(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[str] = []
    target = SlurmTarget("pkg", "train", str(tmp_path), folder=str(tmp_path))
    ids = _executor(tmp_path, commands, monkeypatch).submit_all(target, ARGVS, array=True,
                                                                job_name="adora_t")
    assert ids == [f"1234_{i}" for i in range(5)]
    assert sorted(p.name for p in tmp_path.glob("*.pkl")) == [pickle_name("adora_t", ARRAY)]
    assert len(commands) == 1 and commands[0].split()[-3:] == [str(tmp_path), "adora_t", ARRAY]

    for index in (3, 0, 4):
        _as_task(monkeypatch, "1234", index)
        slurm_job.take_array_pickle(tmp_path, "adora_t")
        submission = DelayedSubmission.load(tmp_path / f"1234_{index}_submitted.pkl")
        assert submission.args == (ARGVS[index],)
        assert isinstance(submission.function, SlurmTarget)
        assert submission.function.package == "pkg"
        assert (submission._timeout_min, submission._timeout_countdown) == (10, 3)
    # The array's pickle stays for the other tasks; no temporary file is left.
    assert (tmp_path / pickle_name("adora_t", ARRAY)).exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_a_requeued_task_keeps_its_checkpointed_pickle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = SlurmTarget("pkg", "train", str(tmp_path))
    _executor(tmp_path, [], monkeypatch).submit_all(target, ARGVS, array=True,
                                                    job_name="adora_t")
    _as_task(monkeypatch, "1234", 2)
    slurm_job.take_array_pickle(tmp_path, "adora_t")
    submitted = tmp_path / "1234_2_submitted.pkl"
    # What submitit's checkpoint writes before the requeue: the task's next submission.
    checkpoint = DelayedSubmission(target, ["resumed"])
    checkpoint.dump(submitted)
    slurm_job.take_array_pickle(tmp_path, "adora_t")  # the requeued task starts again
    assert DelayedSubmission.load(submitted).args == (["resumed"],)
    # The second task (rank 1) of a multi-task job leaves the first one's pickle too.
    _as_task(monkeypatch, "1234", 2, rank=1)
    slurm_job.take_array_pickle(tmp_path, "adora_t")
    assert DelayedSubmission.load(submitted).args == (["resumed"],)


def test_the_second_task_of_a_job_finds_the_pickle_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both tasks race for the same file; whichever comes second links nothing.
    target = SlurmTarget("pkg", "train", str(tmp_path))
    _executor(tmp_path, [], monkeypatch).submit_all(target, ARGVS, array=True,
                                                    job_name="adora_t")
    _as_task(monkeypatch, "1234", 1, rank=1)
    slurm_job.take_array_pickle(tmp_path, "adora_t")
    submitted = tmp_path / "1234_1_submitted.pkl"
    first = submitted.read_bytes()
    monkeypatch.setattr(Path, "exists", lambda self: False)  # as if both checked at once
    slurm_job.take_array_pickle(tmp_path, "adora_t")
    monkeypatch.undo()
    assert submitted.read_bytes() == first
    assert not list(tmp_path.glob(".*tmp"))


def test_a_single_job_has_its_own_pickle_renamed_when_it_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[str] = []
    target = SlurmTarget("pkg", "train", str(tmp_path))
    ids = _executor(tmp_path, commands, monkeypatch, job_id="77").submit_all(
        target, [ARGVS[1]], array=False, job_name="adora_s")
    assert ids == ["77"]
    assert [p.name for p in tmp_path.glob("*.pkl")] == [pickle_name("adora_s", 0)]
    assert commands[0].split()[-2:] == [str(tmp_path), "adora_s"]
    for var in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_PROCID", "0")
    slurm_job.take_pickle(tmp_path, "adora_s")
    assert DelayedSubmission.load(tmp_path / "77_submitted.pkl").args == (ARGVS[1],)
    assert not (tmp_path / pickle_name("adora_s", 0)).exists()


@pytest.mark.parametrize("which", [ARRAY, None])
def test_the_entry_point_takes_the_pickle_its_command_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str | None) -> None:
    # `None`: a task of an array submitted by an adora that pickled every task (a job
    # still queued across an upgrade) finds its own pickle as before.
    import submitit.core.submission

    target = SlurmTarget("pkg", "train", str(tmp_path))
    if which == ARRAY:
        _executor(tmp_path, [], monkeypatch).submit_all(target, ARGVS, array=True,
                                                    job_name="adora_t")
    else:
        for index, argv in enumerate(ARGVS):
            DelayedSubmission(target, argv).dump(tmp_path / pickle_name("adora_t", index))
    processed: list[str] = []
    monkeypatch.setattr(submitit.core.submission, "process_job", processed.append)
    _as_task(monkeypatch, "1234", 4)
    slurm_job.main([str(tmp_path), "adora_t", *([which] if which else [])])
    assert processed == [str(tmp_path)]
    assert DelayedSubmission.load(tmp_path / "1234_4_submitted.pkl").args == (ARGVS[4],)
