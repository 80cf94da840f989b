"""What runs inside a Slurm job: the XP's ``main``, re-imported by package path.

submitit pickles a `SlurmTarget` and the XP's argv; on the node it imports
``<package>.<main_module>`` from the submission directory and runs ``main``
inside the XP. Before the time limit (or on preemption) submitit calls
`SlurmTarget.checkpoint`: registered callbacks run (save a checkpoint), then
the job is requeued and, on restart, resumes from the XP folder.

The job starts as ``python -m adora.backends.slurm_job FOLDER JOB_NAME [WHICH]``: it
makes its pickle under the name submitit looks for, then runs submitit's job process.
A single job renames the pickle written for it before ``sbatch``, ``<job name>_0.pkl``
(a link of a chain: ``<job name>_link<k>.pkl``). An array (``WHICH`` is ``array``)
has one pickle for all its tasks, ``<job name>_array.pkl`` (`ArraySubmission`: the
target and every task's argv): each task writes its own from it, by its
``SLURM_ARRAY_TASK_ID`` (`take_array_pickle`). Pickling each of 10,000 tasks took
3-18 s of a submission on the test cluster; one pickle for the array, under 0.1 s.
"""

from __future__ import annotations

import os
import sys
import typing as tp
from pathlib import Path

__all__ = ["ARRAY", "ArraySubmission", "SlurmTarget", "chain_link", "link_latest", "main",
           "pickle_name", "register_preemption_callback", "take_array_pickle", "take_pickle"]

PreemptionCallback = tp.Callable[[], None]
_callbacks: list[PreemptionCallback] = []


def register_preemption_callback(callback: PreemptionCallback) -> None:
    """Call ``callback()`` before the job is requeued (time limit, preemption)."""
    _callbacks.append(callback)


#: Dora's spelling, kept so Dora training code runs unchanged.
register_preemption_callaback = register_preemption_callback


def link_latest(xp_folder: Path, submitit_folder: str | None) -> None:
    """Point ``<xp folder>/latest`` to the submitit folder of the running job (Dora's
    layout: where its logs are), with a short relative link.

    The job does it when it starts, not the submitting command: a 1,000-XP
    submission then makes one file per XP fewer. Best effort: a job never fails
    for want of a convenience link.
    """
    if not submitit_folder:
        return
    try:
        xp_folder.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(os.path.realpath(submitit_folder), os.path.realpath(xp_folder))
        tmp = xp_folder / f".latest.{os.getpid()}.tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, xp_folder / "latest")
    except OSError:
        pass


class SlurmTarget:
    """The callable submitit runs on the node."""

    def __init__(self, package: str, main_module: str, cwd: str, requeue: bool = True,
                 folder: str | None = None) -> None:
        self.package = package
        self.main_module = main_module
        self.cwd = cwd
        self.requeue = requeue
        #: The submitit folder of the submission (logs), linked as the XP's ``latest``.
        self.folder = folder

    def __call__(self, argv: list[str]) -> tp.Any:
        from ..distrib import get_distrib_spec
        from ..package import load_main
        from ..run import run_xp

        if os.path.realpath(self.cwd) != os.path.realpath(os.getcwd()):
            # git_save: run from the code snapshot; relative paths (the output dir)
            # still resolve against the folder the job was submitted from.
            from ..git_save import ORIGINAL_DIR_ENV

            os.environ.setdefault(ORIGINAL_DIR_ENV, os.getcwd())
            os.chdir(self.cwd)
        if self.cwd not in sys.path:
            sys.path.insert(0, self.cwd)
        spec = get_distrib_spec()
        os.environ.setdefault("RANK", str(spec.rank))
        os.environ.setdefault("WORLD_SIZE", str(spec.world_size))
        os.environ.setdefault("LOCAL_RANK", str(spec.local_rank))
        main = load_main(self.package, self.main_module)
        link_latest(main.get_xp(argv).folder, getattr(self, "folder", None))
        return run_xp(main, argv)

    def checkpoint(self, argv: list[str]) -> tp.Any:
        import submitit

        for callback in _callbacks:
            callback()
        if not self.requeue:
            sys.exit(1)
        from ..xp import get_xp, is_xp

        if is_xp():
            rendezvous = get_xp().rendezvous_file
            if rendezvous.exists():
                rendezvous.unlink()
        return submitit.helpers.DelayedSubmission(self, argv)


def pickle_name(job_name: str, index: int | str) -> str:
    """The file name of a job's pickle before it starts: known before ``sbatch``."""
    return f"{job_name}_{index}.pkl"


def chain_link(link: int) -> str:
    """What names the pickle of link ``link`` of a chain of dependent jobs (all written
    before the first ``sbatch``), in place of an array index."""
    return f"link{link}"


#: What names an array's one pickle (`ArraySubmission`), in place of an index.
ARRAY = "array"


class ArraySubmission:
    """What every task of a job array runs: one ``target``, and each task's argv.

    Pickled once per array before ``sbatch``; `take_array_pickle` makes a task's own
    submitit submission from it (``target(argvs[index])``, with the time limit and
    requeue count of the submission).
    """

    def __init__(self, target: tp.Any, argvs: list[list[str]], timeout_min: int,
                 max_num_timeout: int) -> None:
        self.target = target
        self.argvs = argvs
        self.timeout_min = timeout_min
        self.max_num_timeout = max_num_timeout

    def task(self, index: int) -> tp.Any:
        """submitit's ``DelayedSubmission`` of task ``index``."""
        from submitit.helpers import DelayedSubmission

        submission = DelayedSubmission(self.target, self.argvs[index])
        submission.set_timeout(self.timeout_min, self.max_num_timeout)
        return submission

    def dump(self, path: str | Path) -> None:
        import pickle

        # Plain pickle, not cloudpickle: the target's class is imported by name anyway,
        # and the argvs are lists of strings.
        with open(path, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)


def take_array_pickle(folder: str | Path, job_name: str) -> None:
    """Write this array task's submitit pickle, ``<job id>_submitted.pkl``, from the
    array's `ArraySubmission`, unless it exists.

    The array's pickle is only read (every task needs it). Once written, a task's
    pickle stays: a requeued task (whose checkpoint rewrote it) finds it again.
    Written under a temporary name and linked in place: every task of a multi-task job
    tries, the first one wins, and none ever reads a half-written file.
    """
    import pickle

    from submitit import JobEnvironment
    from submitit.core.utils import JobPaths

    env = JobEnvironment()
    paths = JobPaths(folder, job_id=env.job_id, task_id=env.global_rank)
    target = paths.submitted_pickle
    if target.exists():
        return
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    source = JobPaths.get_first_id_independent_folder(folder) / pickle_name(job_name, ARRAY)
    with open(source, "rb") as f:
        array = pickle.load(f)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        array.task(index).dump(tmp)
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass  # another task of this job was first: the same content
        except OSError:
            os.replace(tmp, target)  # a file system without hard links
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def take_pickle(folder: str | Path, job_name: str, index: str | None = None) -> None:
    """Give this job's pickle submitit's name, ``<job id>_submitted.pkl``, unless it has it.

    ``index``: the array index, or the `chain_link` the pickle is named after (default:
    the array task id, 0 for a single job). Once renamed it stays: a requeued job
    (whose checkpoint rewrote that file) finds it again. Every task of a multi-task job
    tries; one rename wins.
    """
    from submitit import JobEnvironment
    from submitit.core.utils import JobPaths

    env = JobEnvironment()
    paths = JobPaths(folder, job_id=env.job_id, task_id=env.global_rank)
    if paths.submitted_pickle.exists():
        return
    if index is None:
        index = os.environ.get("SLURM_ARRAY_TASK_ID", "0")
    source = JobPaths.get_first_id_independent_folder(folder) / pickle_name(job_name, index)
    try:
        os.rename(source, paths.submitted_pickle)
    except FileNotFoundError:
        if not paths.submitted_pickle.exists():
            raise


def main(argv: list[str] | None = None) -> None:
    """``python -m adora.backends.slurm_job FOLDER JOB_NAME [WHICH]``: the job's entry
    point (``WHICH``: `ARRAY` for a task of an array, or its `chain_link` in a chain of
    dependent jobs; none for a single job, or a task of an array submitted by an adora
    that pickled each task)."""
    from submitit.core.submission import process_job

    args = sys.argv[1:] if argv is None else argv
    folder, job_name = args[:2]
    which = args[2] if len(args) > 2 else None
    if which == ARRAY:
        take_array_pickle(folder, job_name)
    else:
        take_pickle(folder, job_name, which)
    process_job(folder)


if __name__ == "__main__":
    # The pickled SlurmTarget refers to the imported module: run that one, not a copy.
    from adora.backends.slurm_job import main as _main

    _main()
